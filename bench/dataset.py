"""A dataset comparison: 256 samples through a small transformer pair, one process against local workers.

    PYTHONPATH=. python bench/dataset.py [--samples 256] [--workers 2] [--out bench/results/dataset-<date>.txt]

The pair is diffcore.demo's transformer (bench/dataset_models.py:build) in float32 against itself in
float16, each sample a [1, seq] batch. For each mode: wall time, the peak RSS of the driver and (workers)
of the largest child, and the driver's merge time (DatasetBuilder over the per-sample reports) against the
total. Worker and Ray actor peaks come from ``report.dataset["worker_peak_rss_mib"]``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import print_and_save

SPEC = str(ROOT / "bench" / "dataset_models.py") + ":build"


def samples(count: int) -> list[dict]:
    from bench.dataset_models import sample

    return [sample(k) for k in range(count)]


def run(count: int, workers: int, ray: bool = False) -> dict:
    import diffcore

    data = samples(count)
    start = time.perf_counter()
    if ray:
        import ray as ray_module

        ray_module.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    report = diffcore.compare(SPEC, SPEC, data, test_dtype="float16", progress=False, workers=workers,
                              ray=True if ray else None)
    wall = time.perf_counter() - start
    merge = report.timings["merge"]  # the driver's merge of the per-sample rows (DatasetBuilder)
    self_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    mode = f"Ray, {workers} actors" if ray else "1 process" if workers == 1 else f"{workers} workers"
    return {"mode": mode, "wall_s": wall, "merge_s": merge,
            "driver_peak_mib": self_kib / 1024,
            "child_peak_mib": max((p for p in report.dataset.get("worker_peak_rss_mib", []) if p), default=None),
            "verdict": report.verdict, "samples": report.dataset["samples"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--mode", choices=("all", "one", "workers", "ray"), default="all")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.mode != "all":  # one measurement in this process (fresh RSS peaks)
        row = run(args.samples, 1 if args.mode == "one" else args.workers, ray=args.mode == "ray")
        print(repr(row))
        return
    import ast
    import subprocess

    rows = []
    for mode in ("one", "workers", "ray"):
        done = subprocess.run([sys.executable, __file__, "--samples", str(args.samples), "--workers",
                               str(args.workers), "--mode", mode], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        rows.append(ast.literal_eval(done.stdout.strip().splitlines()[-1]))
    load = os.getloadavg()
    lines = [f"# bench/dataset.py {datetime.datetime.now():%Y-%m-%d %H:%M}: {args.samples} samples, demo transformer "
             f"fp32 vs float16; {os.cpu_count()} CPUs, load average {load[0]:.2f}",
             "| mode | wall s | merge s (share) | driver peak MiB | largest worker peak MiB | verdict |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        child = "-" if r["child_peak_mib"] is None else f"{r['child_peak_mib']:.0f}"
        lines.append(f"| {r['mode']} | {r['wall_s']:.1f} | {r['merge_s']:.2f} ({100 * r['merge_s'] / r['wall_s']:.1f} %) | "
                     f"{r['driver_peak_mib']:.0f} | {child} | {r['verdict']} ({r['samples']} samples) |")
    print_and_save("\n".join(lines) + "\n", "dataset", args.out)


if __name__ == "__main__":
    main()
