"""The GPU statistics path against the memory floor, measured on a real GPU (issue 5).

    python bench/gpu.py [--elements 268435456] [--repeats 20] [--pairs 500] [--pair-elements 65536]
                        [--skip-end-to-end] [--out DIR]

Written without a GPU at hand: it has not run yet. It measures, in one run and on one device:

1. ``copy``: device-to-device copy bandwidth (``dst.copy_(src)`` of one float32 tensor of ``--elements``;
   bytes read + written over time), the floor a pass that reads two tensors once is held against;
2. ``drift``: the fused pass of each GPU backend (numba-cuda, cupy) on one float32 pair and one bfloat16
   pair of ``--elements``, and torch eager computing the same statistics one by one (bench/baselines.py);
3. ``drift_many``: ``--pairs`` pairs of ``--pair-elements`` float32 elements in one call against one call per
   pair;
4. ``zero_copy``: the device pointer of a torch tensor and of the operand the backend reads (equal: no copy),
   and the host-to-device traffic torch's allocator saw during the call (none);
5. ``end_to_end``: ``diffcore.compare`` of a 12-layer torch transformer against its float16 version on
   the GPU, its statistics time against the two forward passes.

Timings are medians of ``--repeats`` runs between CUDA events on the current stream (each call returns
host statistics, so it includes the launch, the kernel and the copy of a few KiB of results). Inputs are
rotated over enough copies to exceed twice the L2 cache, so no run reads warm data. The GPU's name, clocks
and driver come from the environment manifest (NVML). Prints a table and writes bench/results/gpu-*.json.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.baselines import torch_stat_by_stat  # noqa: E402
from bench.common import write_result  # noqa: E402

BACKENDS = ("cupy", "numba-cuda")


def event_times(fn, repeats: int, inputs: list) -> dict:
    """Median/min milliseconds of ``fn(*inputs[k % len(inputs)])`` between CUDA events (one warm-up each)."""
    import torch

    for args in inputs:
        fn(*args)
    torch.cuda.synchronize()
    runs = []
    for k in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(*inputs[k % len(inputs)])
        end.record()
        end.synchronize()
        runs.append(start.elapsed_time(end))
    return {"median_ms": statistics.median(runs), "min_ms": min(runs), "runs_ms": runs}


def l2_bytes() -> int:
    import torch

    props = torch.cuda.get_device_properties(0)
    return int(getattr(props, "L2_cache_size", 0) or 50 << 20)


def rotation(make_set, set_bytes: int, limit_bytes: int = 8 << 30) -> list:
    """Enough input sets (from ``make_set()``) that consecutive runs never find their data in L2."""
    count = max(1, min(-(-2 * l2_bytes() // max(set_bytes, 1)) + 1, limit_bytes // max(set_bytes, 1)))
    return [make_set() for _ in range(count)]


def random_pair(n: int, dtype, seed: int):
    """A reference and a nearby test tensor of ``n`` elements on the GPU."""
    import torch

    gen = torch.Generator(device="cuda").manual_seed(seed)
    ref = torch.randn(n, device="cuda", generator=gen, dtype=torch.float32)
    test = ref + 1e-3 * torch.randn(n, device="cuda", generator=gen, dtype=torch.float32)
    return ref.to(dtype), test.to(dtype)


def available_backends() -> dict:
    from diffcore import backends

    return {name: backends.availability_of(name) for name in BACKENDS}


# ------------------------------------------------------------------------------------------ sections


def measure_copy(n: int, repeats: int) -> dict:
    import torch

    src = torch.empty(n, device="cuda", dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    times = event_times(lambda: dst.copy_(src), repeats, [()])
    moved = 2 * src.numel() * src.element_size()
    return {**times, "bytes_moved": moved, "gb_per_s": moved / times["median_ms"] / 1e6}


def measure_drift(n: int, repeats: int, dtype_name: str, usable: dict) -> dict:
    import torch

    import diffcore

    dtype = getattr(torch, dtype_name)
    pair_bytes = 2 * n * torch.empty(0, dtype=dtype).element_size()
    seeds = iter(range(1 << 30))
    sets = rotation(lambda: random_pair(n, dtype, seed=next(seeds)), pair_bytes)
    out = {"elements": n, "dtype": dtype_name, "pair_bytes": pair_bytes, "rotation": len(sets)}
    for name, (ok, why) in usable.items():
        if not ok:
            out[name] = {"skipped": why}
            continue
        times = event_times(lambda r, t, b=name: diffcore.drift(r, t, backend=b), repeats, sets)
        out[name] = {**times, "read_gb_per_s": pair_bytes / times["median_ms"] / 1e6}
    baseline = event_times(lambda r, t: {k: v.item() for k, v in torch_stat_by_stat(r, t).items()},
                           max(3, repeats // 4), sets[:1])
    out["torch eager stat-by-stat"] = baseline
    return out


def measure_many(pairs: int, n: int, repeats: int, usable: dict) -> dict:
    import torch

    import diffcore

    set_bytes = pairs * 2 * n * 4
    sets = rotation(lambda: [random_pair(n, torch.float32, seed=k) for k in range(pairs)], set_bytes)
    out = {"pairs": pairs, "pair_elements": n, "rotation": len(sets)}
    for name, (ok, why) in usable.items():
        if not ok:
            out[name] = {"skipped": why}
            continue
        many = event_times(lambda group, b=name: diffcore.drift_many(group, backend=b), repeats,
                           [(group,) for group in sets])
        each = event_times(lambda group, b=name: [diffcore.drift(r, t, backend=b) for r, t in group],
                           max(3, repeats // 4), [(group,) for group in sets])
        out[name] = {"one_call": many, "call_per_pair": each,
                     "speedup": each["median_ms"] / many["median_ms"]}
    return out


def measure_zero_copy(usable: dict) -> dict:
    """Pointers the backends read against the tensors' own, and host-to-device bytes during the call."""
    import torch

    import diffcore
    from diffcore.arrays import as_operand
    from diffcore.backends import cupy_backend

    ref, test = random_pair(1 << 20, torch.float32, seed=7)
    out = {"torch_data_ptr": ref.data_ptr()}
    if usable.get("cupy", (False, ""))[0]:
        out["cupy_backend_reads"] = cupy_backend.device_view(as_operand(ref, "ref")).ptr
        out["same_pointer"] = out["cupy_backend_reads"] == out["torch_data_ptr"]
    before = torch.cuda.memory_stats().get("allocated_bytes.all.allocated", 0)
    start = time.perf_counter()
    diffcore.drift(ref, test)
    out["call_s"] = time.perf_counter() - start
    out["torch_bytes_allocated_during_call"] = torch.cuda.memory_stats().get(
        "allocated_bytes.all.allocated", 0) - before
    out["ort_iobinding"] = ort_zero_copy()
    return out


def ort_zero_copy() -> dict:
    """An OrtValue from ONNX Runtime's CUDA provider handed out as a torch tensor: same device pointer."""
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"skipped": f"onnxruntime not importable: {exc}"}
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return {"skipped": f"this onnxruntime has no CUDAExecutionProvider ({ort.get_available_providers()})"}
    import numpy as np
    import torch

    from diffcore.capture.onnx.binding import _from_ortvalue

    value = ort.OrtValue.ortvalue_from_numpy(np.ones(1 << 20, np.float32), "cuda", 0)
    tensor = _from_ortvalue(value, 0)
    return {"ortvalue_ptr": value.data_ptr(), "torch_ptr": tensor.data_ptr(),
            "same_pointer": value.data_ptr() == tensor.data_ptr(), "device": str(tensor.device)}


def measure_end_to_end() -> dict:
    """compare() of a 12-layer transformer against its float16 self on the GPU: statistics vs forwards."""
    import torch

    import diffcore
    from bench.harness import FULL, build_transformer, make_inputs

    host_inputs = make_inputs("transformer", FULL)
    model = build_transformer(FULL).cuda().eval()
    inputs = {k: torch.from_numpy(v).cuda() for k, v in host_inputs.items()}
    half = build_transformer(FULL).cuda().eval().half()

    def forward(m):
        with torch.no_grad():
            m(**inputs)  # the integer inputs serve both copies

    two = event_times(lambda: (forward(model), forward(half)), 10, [()])
    start = time.perf_counter()
    report = diffcore.compare(model, model, host_inputs, test_dtype="float16", device="cuda")
    wall = time.perf_counter() - start
    stats = report.timings.get("statistics", 0.0)
    return {"two_forward_ms": two["median_ms"], "compare_s": wall, "timings": report.timings,
            "statistics_over_two_forward": stats * 1e3 / two["median_ms"], "verdict": report.verdict,
            "layers": len(report.layers)}


# -------------------------------------------------------------------------------------------- driver


def print_table(result: dict) -> None:
    from tabulate import tabulate

    copy = result["copy"]
    rows = [["device-to-device copy", "float32", f"{copy['median_ms']:.3f}", f"{copy['gb_per_s']:.0f} (r+w)", ""]]
    for section in ("drift_float32", "drift_bfloat16"):
        res = result[section]
        for name in (*BACKENDS, "torch eager stat-by-stat"):
            r = res[name]
            if "skipped" in r:
                rows.append([name, res["dtype"], "skipped", "", r["skipped"]])
                continue
            gbps = f"{r['read_gb_per_s']:.0f}" if "read_gb_per_s" in r else ""
            vs_copy = (f"{100 * r['read_gb_per_s'] / copy['gb_per_s']:.0f} % of copy"
                       if "read_gb_per_s" in r else "")
            rows.append([name, res["dtype"], f"{r['median_ms']:.3f}", gbps, vs_copy])
    print(tabulate(rows, headers=["pass", "dtype", "median ms", "GB/s", "note"]))
    many = result["drift_many"]
    for name in BACKENDS:
        r = many[name]
        if "skipped" not in r:
            print(f"drift_many {many['pairs']} x {many['pair_elements']} float32 on {name}: "
                  f"{r['one_call']['median_ms']:.3f} ms in one call, {r['call_per_pair']['median_ms']:.2f} ms "
                  f"with a call per pair ({r['speedup']:.0f}x)")
    if "end_to_end" in result:
        e2e = result["end_to_end"]
        print(f"end to end: statistics {1e3 * e2e['timings'].get('statistics', 0):.1f} ms against "
              f"{e2e['two_forward_ms']:.1f} ms for the two forward passes "
              f"({100 * e2e['statistics_over_two_forward']:.0f} %)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--elements", type=int, default=1 << 28)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--pairs", type=int, default=500)
    parser.add_argument("--pair-elements", type=int, default=1 << 16)
    parser.add_argument("--skip-end-to-end", action="store_true")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        sys.exit("bench/gpu.py needs a CUDA GPU: torch.cuda.is_available() is False here")
    usable = available_backends()
    result = {"backends": {k: {"available": ok, "reason": why} for k, (ok, why) in usable.items()},
              "copy": measure_copy(args.elements, args.repeats)}
    for dtype in ("float32", "bfloat16"):
        result[f"drift_{dtype}"] = measure_drift(args.elements, args.repeats, dtype, usable)
    result["drift_many"] = measure_many(args.pairs, args.pair_elements, args.repeats, usable)
    result["zero_copy"] = measure_zero_copy(usable)
    if not args.skip_end_to_end:
        result["end_to_end"] = measure_end_to_end()
    print_table(result)
    path = write_result("gpu", {"device": torch.cuda.get_device_name(0), "args": vars(args), **result},
                        Path(args.out) if args.out else None)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
