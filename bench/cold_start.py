"""First use after install: the seconds ``diffcore demo`` spends compiling Numba kernels, cold and warm.

    python bench/cold_start.py [--runs 1]

Each run is a fresh process with an empty NUMBA_CACHE_DIR (a fresh install's cache), then a second fresh
process on the cache the first one filled. The compile time is measured inside the process with
``_numba_cache.CompileTimer`` (wall and CPU seconds of top-level Numba compiles); the process's own wall and
CPU time beside it. Issue 15 asks for <= 3 s compiling on the first run. Prints the table and writes
bench/results/cold-start-<time>.json with the environment.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import write_result  # noqa: E402

CHILD = r"""
import json, sys, tempfile, time
c0, w0 = time.process_time(), time.perf_counter()
import numba  # the timer listens to Numba's events
from diffcore.backends import _numba_cache
from diffcore.cli.main import main
with _numba_cache.CompileTimer() as timer:
    rc = main(["demo", "--out", tempfile.mkdtemp() + "/demo"])
print(json.dumps({"rc": rc, "compile_s": timer.seconds, "compile_cpu_s": timer.cpu_seconds,
                  "compiles": timer.compiles, "process_s": time.perf_counter() - w0,
                  "process_cpu_s": time.process_time() - c0}))
"""


def run_once(cache: str) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["announced"] = _numba_cache_message() in done.stderr
    return out


def _numba_cache_message() -> str:
    from diffcore.backends import _numba_cache

    return _numba_cache.COMPILING_MESSAGE


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="cold+warm pairs (each a new empty cache)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args(argv)
    rows = []
    for k in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="diffcore-cold-") as cache:
            for state in ("cold", "warm"):
                rows.append({"run": k, "cache": state, "load_before": os.getloadavg()[0], **run_once(cache)})
                r = rows[-1]
                print(f"{state}: compiling {r['compile_s']:.2f} s wall, {r['compile_cpu_s']:.2f} s CPU "
                      f"({r['compiles']} top-level compiles, announced: {r['announced']}); whole demo "
                      f"{r['process_s']:.2f} s wall, {r['process_cpu_s']:.2f} s CPU; load {r['load_before']:.1f}",
                      flush=True)
    path = write_result("cold-start", {"rows": rows, "target_compile_s": 3.0}, Path(args.out) if args.out else None)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
