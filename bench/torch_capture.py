"""torch vs torch float16: diffcore compare (local errors everywhere) against the two plain forwards.

A 12-block residual MLP with wide activations, the batch chosen so its captured module outputs total
``--gib`` GiB at float32 (issue 15 measured 2.4 GiB: 62 s against 1.1 s + 1.3 s). Each measurement runs in a
fresh subprocess (peak RSS is per process); ``--tree`` compares another checkout of diffcore (e.g. the code
before a change, from ``git archive``) side by side with this one.

    python bench/torch_capture.py --gib 0.6 --budget 256 [--tree before=/tmp/before]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEPTH, D, WIDE = 12, 512, 4


def build(gib: float):
    """(model, inputs): probes per token are 12 x (lin1 4d + gelu 4d + lin2 d + ln d + block d) floats."""
    import torch
    from torch import nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin1, self.act = nn.Linear(D, WIDE * D), nn.GELU()
            self.lin2, self.ln = nn.Linear(WIDE * D, D), nn.LayerNorm(D)

        def forward(self, x):
            return self.ln(x + self.lin2(self.act(self.lin1(x))))

    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(*(Block() for _ in range(DEPTH)))

        def forward(self, x):
            return self.blocks(x)

    torch.manual_seed(0)
    per_token = DEPTH * (2 * WIDE * D + 3 * D) * 4
    tokens = max(1, int(gib * (1 << 30) / per_token))
    return Model().eval(), {"x": torch.randn(tokens, D)}


def worker(mode: str, gib: float, budget: int) -> dict:
    import torch

    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", "2")))
    model, inputs = build(gib)
    out = {"mode": mode, "tokens": inputs["x"].shape[0]}
    if mode == "plain":
        half = __import__("copy").deepcopy(model).half()
        with torch.no_grad():
            model(**inputs), half(x=inputs["x"].half())  # warm-up
            start = time.perf_counter()
            model(**inputs)
            out["ref_s"] = time.perf_counter() - start
            start = time.perf_counter()
            half(x=inputs["x"].half())
            out["test_s"] = time.perf_counter() - start
    else:
        import diffcore

        start = time.perf_counter()
        report = diffcore.compare(model, model, inputs, test_dtype="float16", memory_budget_mb=budget)
        out["total_s"] = time.perf_counter() - start
        out["timings"] = report.timings
        out["verdict"], out["layers"] = report.verdict, len(report.layers)
        out["with_local"] = sum(r.local_rel_l2 is not None for r in report.layers)
    out["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1 << 20)
    return out


def run(mode: str, tree: Path, args) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{ROOT}"}
    cmd = [sys.executable, __file__, "--worker", mode, "--gib", str(args.gib), "--budget", str(args.budget)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{mode} in {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gib", type=float, default=2.4, help="GiB of float32 module outputs")
    parser.add_argument("--budget", type=int, default=256, help="memory_budget_mb")
    parser.add_argument("--tree", action="append", default=[], help="label=path of another diffcore checkout")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.gib, args.budget)))
        return
    trees = [("this", ROOT)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1])) for t in args.tree]
    plain = run("plain", ROOT, args)
    floor = plain["ref_s"] + plain["test_s"]
    print(f"{DEPTH} blocks d={D}, {plain['tokens']} tokens ({args.gib} GiB of fp32 outputs), budget "
          f"{args.budget} MiB, load {os.getloadavg()[0]:.1f}")
    print(f"plain forwards: fp32 {plain['ref_s']:.2f} s + fp16 {plain['test_s']:.2f} s = {floor:.2f} s, "
          f"peak RSS {plain['peak_rss_gib']:.2f} GiB")
    results = {"plain": plain}
    for label, tree in trees:
        got = results[label] = run("diffcore", tree, args)
        split = ", ".join(f"{k} {v:.2f}" for k, v in got["timings"].items())
        print(f"diffcore [{label}]: {got['total_s']:.2f} s = {got['total_s'] / floor:.1f}x the plain forwards "
              f"({split}); peak RSS {got['peak_rss_gib']:.2f} GiB; {got['verdict']}, {got['with_local']}/"
              f"{got['layers']} layers with local errors")
    sys.path.insert(0, str(ROOT))
    from bench.common import write_result

    print(write_result("torch-capture", {"gib": args.gib, "budget_mb": args.budget, "results": results}))


if __name__ == "__main__":
    main()
