"""How a layerwise comparison scales with depth, beside just running the models and beside Polygraphy.

    python bench/scaling.py [--quick] [--depths 6,12,24,48] [--repeats 3] [--polygraphy-depths 12,24]
                            [--polygraphy /tmp/polyvenv/bin/polygraphy] [--workdir DIR] [--out DIR]
                            [--cases onnx-vs-onnx,torch-vs-onnx,torch-fp16] [--memory-budget-mb MIB]
                            [--baseline CHECKOUT]

The model is bench/harness.py's transformer (d=256, 8 heads, batch 8 x 128 tokens, ``--depths`` blocks).
A = its fp32 TorchScript export (opset 17); B = the same model with one LayerNorm epsilon changed (the
first norm of the middle block, 1e-5 -> 1e-3) and exported the same way. Per depth, each in a fresh child
process started through ``/usr/bin/time`` (wall time, peak RSS):

- ``plain``: both models on plain ONNX Runtime CPU sessions, session creation and one run each (the floor);
- ``diffcore``: ``diffcore.compare(A, B, inputs, local="all")`` (local errors at every layer), in-process
  time, its report's timings and the seconds Numba spent compiling (0 once the kernel cache is warm: a
  warm-up child fills it before any timed run);
- ``polygraphy``: ``polygraphy run A --onnxrt --onnx-outputs mark all --save-outputs``, then B with
  ``--load-outputs`` (its own venv, see bench/harness.py; at ``--polygraphy-depths`` only: it is slow).

At depth 12 also torch vs ONNX (the torch model A against A.onnx; floor: a torch forward plus A on ORT) and
torch fp32 vs torch fp16 (``test_dtype="float16"``; floor: the fp32 forward plus a float16 copy's).

Runs are interleaved (depth after depth, ``--repeats`` rounds) and each cell is the minimum over rounds.
``--cases`` limits the cases run (default all three); ``--memory-budget-mb`` is passed to
``diffcore.compare`` (default its own). ``--baseline``: another checkout of diffcore (e.g. main) whose
``diffcore`` worker runs right after this one's in every round (column "baseline", same models and
machine state: a before/after in one run). ``--quick``: depths 6 and 12, one round, no Polygraphy. Prints the table and writes
bench/results/scaling-<time>.json with the environment manifest.
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import harness  # noqa: E402
from bench.common import write_result  # noqa: E402

DEPTHS = (6, 12, 24, 48)
QUICK_DEPTHS = (6, 12)
TORCH_DEPTH = 12
EPS_CHANGED = 1e-3
BASE = {k: harness.FULL[k] for k in ("d_model", "heads", "batch", "seq", "vocab")}


# ---------------------------------------------------------------------------------------------- models
def config(depth: int) -> dict:
    return {**BASE, "layers": depth}


def build(cfg: dict, changed: bool = False):
    """harness.build_transformer; ``changed``: one LayerNorm epsilon changed (model B)."""
    model = harness.build_transformer(cfg)
    if changed:
        model.blocks[cfg["layers"] // 2].norm1.eps = EPS_CHANGED
    return model


def export(model, inputs: dict, path: Path) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(v) for v in inputs.values()), str(path), dynamo=False,
                          input_names=list(inputs), output_names=["y"], opset_version=harness.OPSET)


def prepare(depth: int, folder: Path) -> dict:
    """A.onnx, B.onnx and the inputs of one depth; the job fields every worker gets."""
    from diffcore.files import write_npz

    cfg = config(depth)
    inputs = harness.make_inputs("transformer", cfg)
    a, b, npz = folder / f"d{depth}-A.onnx", folder / f"d{depth}-B.onnx", folder / f"d{depth}-inputs.npz"
    export(build(cfg), inputs, a)
    export(build(cfg, changed=True), inputs, b)
    write_npz(str(npz), inputs, force=True)
    return {"kind": "transformer", "depth": depth, "cfg": cfg, "a": str(a), "b": str(b), "inputs": str(npz)}


# --------------------------------------------------------------------------------------------- workers
def _torch_inputs(job: dict) -> tuple:
    import torch

    return tuple(torch.from_numpy(v) for v in harness._load_inputs(job["inputs"]).values())


def _ort_once(path: str, inputs: dict) -> float:
    import onnxruntime as ort

    start = time.perf_counter()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"]).run(None, inputs)
    return time.perf_counter() - start


def _torch_once(model, args: tuple) -> float:
    import torch

    start = time.perf_counter()
    with torch.inference_mode():
        model(*args)
    return time.perf_counter() - start


def worker_plain(job: dict) -> dict:
    """The floor of a case: both sides run once, plainly, in-process seconds."""
    inputs = harness._load_inputs(job["inputs"])
    case = job["case"]
    if case == "onnx-vs-onnx":
        _ort_once(job["a"], inputs)  # warm-up: ORT's first session in a process pays one-time costs
        return {"floor_s": _ort_once(job["a"], inputs) + _ort_once(job["b"], inputs)}
    model, args = build(job["cfg"]), _torch_inputs(job)
    _torch_once(model, args)  # warm-up, as above
    ref_s = _torch_once(model, args)
    if case == "torch-vs-onnx":
        return {"floor_s": ref_s + _ort_once(job["a"], inputs), "ref_s": ref_s}
    start = time.perf_counter()
    half = copy.deepcopy(model).half()  # what diffcore's test_dtype="float16" runs: a cast copy
    cast_s = time.perf_counter() - start
    return {"floor_s": ref_s + cast_s + _torch_once(half, args), "ref_s": ref_s, "cast_s": cast_s}


def worker_diffcore(job: dict) -> dict:
    """diffcore.compare with local errors everywhere; its report's timings and Numba's compile seconds."""
    import diffcore
    from diffcore.backends import _numba_cache

    import numba  # noqa: F401  (the compile timer listens to Numba's events)

    inputs, case = harness._load_inputs(job["inputs"]), job["case"]
    ref = job["a"] if case == "onnx-vs-onnx" else build(job["cfg"])
    test = {"onnx-vs-onnx": job["b"], "torch-vs-onnx": job["a"], "torch-fp16": ref}[case]
    extra = {"test_dtype": "float16"} if case == "torch-fp16" else {}
    if job.get("memory_budget_mb"):
        extra["memory_budget_mb"] = job["memory_budget_mb"]
    with _numba_cache.CompileTimer() as timer:
        start = time.perf_counter()
        report = diffcore.compare(ref, test, inputs, local="all", **extra)
        compare_s = time.perf_counter() - start
    return {"compare_s": compare_s, "timings": report.timings, "compile_s": timer.seconds,
            "compile_cpu_s": timer.cpu_seconds,
            "verdict": report.verdict, "layers": len(report.layers)}


def worker_warmup(job: dict) -> dict:
    """Fill the kernel cache (float32 and float16 operands) so that timed runs measure no compilation."""
    from diffcore.backends import _numba_cache

    import numba  # noqa: F401

    import diffcore

    small = np.linspace(-1, 1, 4096, dtype=np.float32)
    with _numba_cache.CompileTimer() as timer:
        for ref in (small, small.astype(np.float16)):
            for test in (small, small.astype(np.float16)):
                diffcore.drift(ref, test)
    return {"compile_s": timer.seconds}


WORKERS = {"plain": worker_plain, "diffcore": worker_diffcore, "warmup": worker_warmup}


def run(job: dict, folder: Path, checkout: Path | None = None) -> dict:
    """One worker in a fresh process (through /usr/bin/time): its result plus wall time and peak RSS;
    ``checkout``: run that checkout's bench/scaling.py worker (it imports its own diffcore first)."""
    label = "baseline" if checkout else job["mode"]
    name = f"d{job.get('depth', 0)}-{job.get('case', '')}-{label}-{job.get('round', 0)}"
    spec, result = folder / f"{name}-job.json", folder / f"{name}.json"
    spec.write_text(json.dumps({**job, "result": str(result)}))
    script = (Path(checkout) / "bench" / "scaling.py").resolve() if checkout else Path(__file__).resolve()
    child = harness.run_child([sys.executable, str(script), "--worker", str(spec)], folder / f"{name}.log")
    if child["rc"] != 0:
        raise RuntimeError(f"worker {name} failed (rc {child['rc']}); see {folder / (name + '.log')}")
    return {**json.loads(result.read_text()), "process": child}


def worker_main(spec_path: str) -> int:
    job = json.loads(Path(spec_path).read_text())
    Path(job["result"]).write_text(json.dumps(WORKERS[job["mode"]](job), default=str))
    return 0


# ---------------------------------------------------------------------------------------------- driver
CASES = ("onnx-vs-onnx", "torch-vs-onnx", "torch-fp16")


def cases_for(depth: int, cases=CASES) -> list[str]:
    """The cases run at ``depth``: ONNX vs ONNX at every depth, the torch ones at TORCH_DEPTH only."""
    return [c for c in CASES if c in cases and (c == "onnx-vs-onnx" or depth == TORCH_DEPTH)]


def best(runs: list[dict], key: str) -> dict:
    """The run with the smallest ``key`` (the minimum over rounds), with every round's value beside it."""
    chosen = min(runs, key=lambda r: r[key])
    return {**chosen, f"{key}_rounds": [r[key] for r in runs]}


def measure(args, folder: Path) -> list[dict]:
    jobs = {depth: prepare(depth, folder) for depth in args.depths}
    print(f"models exported at depths {list(jobs)}", flush=True)
    warm = run({"mode": "warmup"}, folder)
    if args.baseline:
        run({"mode": "warmup"}, folder, args.baseline)
    print(f"kernel cache warmed ({warm['compile_s']:.1f} s compiling)", flush=True)
    raw = {(d, c): {"plain": [], "diffcore": [], "baseline": []} for d in jobs for c in cases_for(d, args.cases)}
    for round_ in range(args.repeats):
        for depth, job in jobs.items():
            for case in cases_for(depth, args.cases):
                for mode in ("plain", "diffcore"):
                    out = run({**job, "case": case, "mode": mode, "round": round_,
                               "memory_budget_mb": args.memory_budget_mb}, folder)
                    raw[depth, case][mode].append(out)
                if args.baseline:
                    raw[depth, case]["baseline"].append(run({**job, "case": case, "mode": "diffcore",
                                                             "round": round_, "memory_budget_mb":
                                                             args.memory_budget_mb}, folder, args.baseline))
                print(f"round {round_ + 1}/{args.repeats} depth {depth} {case}: plain "
                      f"{raw[depth, case]['plain'][-1]['floor_s']:.2f} s, diffcore "
                      f"{raw[depth, case]['diffcore'][-1]['compare_s']:.2f} s", flush=True)
    rows = []
    for (depth, case), runs in raw.items():
        plain, dc = best(runs["plain"], "floor_s"), best(runs["diffcore"], "compare_s")
        row = {"depth": depth, "case": case, "plain": plain, "diffcore": dc,
               "ratio": dc["compare_s"] / plain["floor_s"], "polygraphy": None,
               "baseline": best(runs["baseline"], "compare_s") if runs["baseline"] else None}
        if case == "onnx-vs-onnx" and depth in args.polygraphy_depths:
            print(f"depth {depth}: polygraphy ...", flush=True)
            pair = {"kind": f"d{depth}", "a": jobs[depth]["a"], "b": jobs[depth]["b"],
                    "inputs": jobs[depth]["inputs"]}
            row["polygraphy"] = harness.run_polygraphy(pair, folder, args.polygraphy)
        rows.append(row)
    return rows


def print_table(rows: list[dict], polygraphy_note: str | None) -> None:
    from tabulate import tabulate

    table = []
    for r in rows:
        poly = r["polygraphy"]
        table.append([r["depth"], r["case"], f"{r['plain']['floor_s']:.2f}", f"{r['diffcore']['compare_s']:.2f}",
                      f"{r['ratio']:.1f}x", f"{poly['wall_s']:.1f}" if poly else "-",
                      f"{poly['wall_s'] / r['diffcore']['compare_s']:.0f}x" if poly else "-",
                      f"{r['diffcore']['process']['peak_rss_bytes'] / 2**20:,.0f}",
                      f"{r['plain']['process']['peak_rss_bytes'] / 2**20:,.0f}",
                      f"{r['diffcore']['compile_s']:.2f}",
                      ", ".join(f"{k} {v:.2f}" for k, v in r["diffcore"]["timings"].items())])
        if r.get("baseline"):
            base = r["baseline"]
            table.append(["", "baseline", "", f"{base['compare_s']:.2f}",
                          f"{base['compare_s'] / r['plain']['floor_s']:.1f}x", "", "",
                          f"{base['process']['peak_rss_bytes'] / 2**20:,.0f}", "", f"{base['compile_s']:.2f}",
                          ", ".join(f"{k} {v:.2f}" for k, v in base["timings"].items())])
    print(tabulate(table, headers=["depth", "case", "plain both (s)", "diffcore local=all (s)", "ratio",
                                   "Polygraphy (s)", "Polygraphy / diffcore", "diffcore peak RSS MiB",
                                   "plain peak RSS MiB", "compile s", "diffcore timings (s)"]))
    if polygraphy_note:
        print(f"\nPolygraphy: {polygraphy_note}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="depths 6 and 12, one round, no Polygraphy")
    parser.add_argument("--depths", default=None, help="comma-separated (default 6,12,24,48)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved rounds (default 3; quick 1)")
    parser.add_argument("--polygraphy-depths", default="12,24", help="depths Polygraphy runs at")
    parser.add_argument("--polygraphy", default=harness.POLYGRAPHY, help="the polygraphy CLI")
    parser.add_argument("--workdir", default=None, help="keep the models and logs here (default: a temp dir)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases to run")
    parser.add_argument("--memory-budget-mb", type=int, default=None, help="diffcore.compare's budget")
    parser.add_argument("--baseline", default=None, help="another diffcore checkout run beside this one")
    args = parser.parse_args(argv)
    if args.worker:
        return args
    args.depths = [int(d) for d in args.depths.split(",")] if args.depths else list(
        QUICK_DEPTHS if args.quick else DEPTHS)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.cases = [c for c in args.cases.split(",") if c]
    unknown = [c for c in args.cases if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; known: {', '.join(CASES)}")
    args.polygraphy_depths = [] if args.quick else [int(d) for d in args.polygraphy_depths.split(",") if d]
    return args


def polygraphy_status(args) -> str | None:
    """None when Polygraphy will run; else why its column is empty."""
    if args.quick:
        return "skipped (--quick)"
    if not args.polygraphy_depths:
        return "skipped (--polygraphy-depths is empty)"
    if not Path(args.polygraphy).exists():
        return f"skipped: not found at {args.polygraphy} (see bench/harness.py for its venv)"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    note = polygraphy_status(args)
    if note:
        args.polygraphy_depths = []
    with tempfile.TemporaryDirectory(prefix="diffcore-scaling-") as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        load_start = os.getloadavg()
        rows = measure(args, folder)
    print_table(rows, note)
    payload = {"config": BASE, "depths": args.depths, "repeats": args.repeats, "opset": harness.OPSET,
               "cases": args.cases, "baseline": args.baseline,
               "memory_budget_mb": args.memory_budget_mb, "cpu_count": os.cpu_count(),
               "pair": f"A = TorchScript export (fp32); B = the same with blocks[depth//2].norm1.eps = {EPS_CHANGED}",
               "compare": "diffcore.compare(ref, test, inputs, local='all'), in-process seconds, min over rounds",
               "floor": "both sides run once plainly (ORT: session creation + run; torch: forward; fp16: cast "
                        "copy + forward), in-process seconds, min over rounds",
               "polygraphy_version": None if note else harness.polygraphy_version(args.polygraphy),
               "polygraphy_note": note, "load_average_start": load_start, "load_average_end": os.getloadavg(),
               "rows": rows}
    path = write_result("scaling" + ("-quick" if args.quick else ""), payload, Path(args.out) if args.out else None)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
