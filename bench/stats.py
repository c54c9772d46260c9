"""Throughput of the drift pass: every available backend vs NumPy and torch eager, statistic by statistic.

    python bench/stats.py [--sizes 65536,1048576,16777216,67108864] [--dtypes float32,float16] [--repeats 5]

Prints a table and writes bench/results/stats-<time>.json with the environment. Throughput counts the
bytes of both inputs read once (the floor of a fused pass). Each size also times a plain NumPy read of the
same two arrays (``np.add.reduce`` of each, one thread): the machine's memory-read floor, measured in the
same run, and every backend's share of it (``% of read``; issue 15 asks numba-cpu for >= 50 % at 64M float32). Peak extra memory is the resident memory a call
adds above what the process held before it (Linux only). Host backends only: GPU timing is bench/gpu.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.baselines import torch_stat_by_stat  # noqa: E402
from bench.common import peak_extra_bytes, time_calls, write_result  # noqa: E402

SIZES = (1 << 16, 1 << 20, 1 << 24, 1 << 26)


def make_pair(size: int, dtype: str):
    rng = np.random.default_rng(size)
    ref = rng.standard_normal(size, dtype=np.float32)
    test = (ref + rng.standard_normal(size, dtype=np.float32) * np.float32(1e-3)).astype(dtype)
    return ref.astype(dtype), test


def candidates(ref, test):
    """name -> zero-argument callable computing the full set of statistics."""
    import diffcore
    from diffcore import backends

    out = {}
    for name in ("numba-cpu", "numpy"):
        if backends.is_available(name):
            out["numpy stat-by-stat (oracle)" if name == "numpy" else name] = (
                lambda name=name: diffcore.drift(ref, test, backend=name))
    try:
        import torch

        rt, tt = torch.from_numpy(ref), torch.from_numpy(test)
        out["torch eager stat-by-stat"] = lambda: torch_stat_by_stat(rt, tt)
    except ImportError:
        pass
    return out


def read_floor(ref, test):
    """A plain read of both arrays: NumPy's reduction, the cheapest pass that touches every byte once."""
    return lambda: (np.add.reduce(ref), np.add.reduce(test))


def measure(size: int, dtype: str, repeats: int, only: str | None = None) -> list[dict]:
    ref, test = make_pair(size, dtype)
    nbytes = ref.nbytes + test.nbytes
    floor = time_calls(read_floor(ref, test), max(repeats, 5))
    rows = [{"backend": "numpy read of both (floor)", "dtype": dtype, "elements": size, "input_bytes": nbytes,
             **floor, "throughput_gb_s": nbytes / floor["median_s"] / 1e9, "peak_extra_bytes": None}]
    for name, fn in candidates(ref, test).items():
        if only and not any(name.startswith(b) for b in only.split(",")):
            continue
        reps = repeats if size <= (1 << 24) or "stat-by-stat" not in name else max(2, repeats // 2)
        timing = time_calls(fn, reps)
        peak = peak_extra_bytes(fn)
        rows.append({"backend": name, "dtype": dtype, "elements": size, "input_bytes": nbytes, **timing,
                     "throughput_gb_s": nbytes / timing["median_s"] / 1e9,
                     "peak_extra_bytes": peak})
    for r in rows:  # the best run of each against the best read: both limited by the same machine state
        r["min_throughput_gb_s"] = nbytes / r["min_s"] / 1e9
        r["share_of_read"] = floor["min_s"] / r["min_s"]
    return rows


def add_speedups(rows: list[dict]) -> None:
    """Speed of each row relative to NumPy stat-by-stat at the same size and dtype."""
    base = {(r["elements"], r["dtype"]): r["median_s"] for r in rows if r["backend"].startswith("numpy stat")}
    for r in rows:
        ref_time = base.get((r["elements"], r["dtype"]))
        r["speedup_vs_numpy"] = ref_time / r["median_s"] if ref_time else None


def print_table(rows: list[dict]) -> None:
    from tabulate import tabulate

    table = [[r["dtype"], f"{r['elements']:,}", r["backend"], f"{1e3 * r['median_s']:.2f}",
              f"{r['throughput_gb_s']:.2f}", f"{r['min_throughput_gb_s']:.2f}", f"{100 * r['share_of_read']:.0f} %",
              f"{r['speedup_vs_numpy']:.1f}x" if r["speedup_vs_numpy"] else "",
              "" if r["peak_extra_bytes"] is None else f"{r['peak_extra_bytes'] / 2**20:.1f}",
              f"{r['input_bytes'] / 2 / 2**20:.1f}"]
             for r in rows]
    print(tabulate(table, headers=["dtype", "elements", "backend", "median ms", "GB/s (2 inputs)",
                                   "best GB/s", "% of read", "vs NumPy", "peak extra MiB", "one input MiB"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--dtypes", default="float32,float16")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--backends", default=None, help="comma-separated subset of the rows' backends")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    rows = []
    for dtype in args.dtypes.split(","):
        for size in map(int, args.sizes.split(",")):
            rows.extend(measure(size, dtype, args.repeats, args.backends))
    add_speedups(rows)
    print_table(rows)
    import numba

    import os

    path = write_result("stats", {"rows": rows, "numba_threads": numba.get_num_threads(),
                                  "load_average_end": os.getloadavg()},
                        Path(args.out) if args.out else None)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
