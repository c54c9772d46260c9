"""The layerwise comparison against just running both models, and against Polygraphy on the same pair.

    python bench/harness.py [--layers 12] [--d-model 256] [--heads 8] [--batch 8] [--seq 128]
                            [--cnn-batch 8] [--cnn-size 128] [--cnn-width 32] [--memory-budget-mb 256]
                            [--models transformer,cnn] [--skip-polygraphy] [--polygraphy /tmp/polyvenv/bin/polygraphy]
                            [--profile] [--quick] [--workdir DIR] [--out DIR]

Two models are built in code with seeded random weights: a transformer (token + position embeddings,
``--layers`` pre-norm ``nn.TransformerEncoderLayer`` blocks with LayerNorm, GELU, a 4x MLP and an additive
padding mask, final LayerNorm) and a CNN (Conv/BatchNorm/ReLU stages down and bilinear upsampling back up).
Each is exported with the TorchScript exporter (``dynamo=False``, opset 17). The ONNX-vs-ONNX pair is
A = the fp32 export and B = its onnxconverter-common float16 conversion (``keep_io_types=True``, the model
diffcore itself builds for ``test_dtype="float16"``); diffcore and Polygraphy are given these same two files
and the same inputs.

Every measurement runs in a fresh child process (``--worker``) started through ``/usr/bin/time``, which
records its wall time and peak RSS:

- ``ort``: both models once each on plain ONNX Runtime sessions (then a few more runs for the forward time);
- ``diffcore``: ``diffcore.compare(A, B, inputs)`` end to end, with ``report.timings``; then the same with
  ``local="none"`` and with Numba's kernels compiled before the timed call, to say where the time goes; for
  the CNN also ``diffcore.compare(torch_model, A, inputs)`` (torch vs its ONNX export);
- ``polygraphy``: ``polygraphy run A --onnxrt --onnx-outputs mark all --save-outputs``, then B with
  ``--load-outputs`` (Polygraphy lives in its own venv: ``python3 -m venv /tmp/polyvenv &&
  /tmp/polyvenv/bin/pip install polygraphy onnxruntime numpy onnx``; it is not a diffcore dependency).

"One model's activations" is the byte size of every float value model A computes (diffcore's probes,
captured at once). ``--profile`` adds a cProfile'd diffcore run (not timed) and prints where its time goes. Prints a table and writes bench/results/harness-<time>.json with the environment.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import peak_extra_bytes, read_bandwidth, time_calls, write_result  # noqa: E402

POLYGRAPHY = "/tmp/polyvenv/bin/polygraphy"
TIME = "/usr/bin/time"  # GNU time: the peak RSS of one child
FULL = {"layers": 12, "d_model": 256, "heads": 8, "batch": 8, "seq": 128, "vocab": 1000,
        "cnn_batch": 8, "cnn_size": 128, "cnn_width": 32}
QUICK = {"layers": 2, "d_model": 64, "heads": 4, "batch": 2, "seq": 16, "vocab": 100,
         "cnn_batch": 2, "cnn_size": 32, "cnn_width": 8}
OPSET = 17
FORWARD_REPEATS = 5


# ---------------------------------------------------------------------------------------------- models


def build_transformer(cfg: dict):
    """A pre-norm transformer encoder with seeded random weights; forward(input_ids, attention_mask)."""
    import torch
    from torch import nn

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            d, heads = cfg["d_model"], cfg["heads"]
            self.heads = heads
            self.tok = nn.Embedding(cfg["vocab"], d)
            self.pos = nn.Embedding(cfg["seq"], d)
            self.blocks = nn.ModuleList([
                nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, activation="gelu", batch_first=True,
                                           norm_first=True) for _ in range(cfg["layers"])])
            self.ln_f = nn.LayerNorm(d)

        def forward(self, input_ids, attention_mask):
            batch, seq = input_ids.shape
            x = self.tok(input_ids) + self.pos(torch.arange(seq, device=input_ids.device))
            # padded keys get -1e4, in x's dtype (a float16 copy of the model runs on the GPU in bench/gpu.py)
            bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e4
            bias = bias.expand(batch, self.heads, seq, seq).reshape(batch * self.heads, seq, seq)
            for block in self.blocks:
                x = block(x, src_mask=bias)
            return self.ln_f(x)

    torch.manual_seed(0)
    return Transformer().eval()


def build_cnn(cfg: dict):
    """Conv/BatchNorm/ReLU stages (two stride-2 downsamplings) and two bilinear upsamplings back up."""
    import torch
    from torch import nn

    def conv_bn_relu(cin, cout, stride=1):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                             nn.BatchNorm2d(cout), nn.ReLU())

    def up(cin, cout):
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                             conv_bn_relu(cin, cout))

    class CNN(nn.Module):
        def __init__(self, w):
            super().__init__()
            self.down = nn.Sequential(conv_bn_relu(3, w), conv_bn_relu(w, 2 * w, 2), conv_bn_relu(2 * w, 2 * w),
                                      conv_bn_relu(2 * w, 4 * w, 2), conv_bn_relu(4 * w, 4 * w))
            self.up = nn.Sequential(up(4 * w, 2 * w), up(2 * w, w))
            self.head = nn.Conv2d(w, 8, 1)

        def forward(self, image):
            return self.head(self.up(self.down(image)))

    torch.manual_seed(0)
    model = CNN(cfg["cnn_width"])
    with torch.no_grad():  # non-trivial BatchNorm statistics, so folding them into the convs matters
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.2, 0.2)
    return model.eval()


BUILDERS = {"transformer": build_transformer, "cnn": build_cnn}


def make_inputs(kind: str, cfg: dict) -> dict:
    """Seeded inputs: token ids with the last quarter of each sequence padded, or a batch of images."""
    rng = np.random.default_rng(1)
    if kind == "cnn":
        shape = (cfg["cnn_batch"], 3, cfg["cnn_size"], cfg["cnn_size"])
        return {"image": rng.standard_normal(shape, dtype=np.float32)}
    ids = rng.integers(0, cfg["vocab"], (cfg["batch"], cfg["seq"]), dtype=np.int64)
    mask = np.ones_like(ids)
    mask[:, cfg["seq"] - cfg["seq"] // 4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def export_pair(kind: str, cfg: dict, inputs: dict, folder: Path) -> dict:
    """A.onnx (TorchScript export, fp32) and B.onnx (its float16 conversion); node counts."""
    import onnx
    import torch

    from diffcore.capture.onnx import to_float16  # the conversion diffcore does for test_dtype=float16

    model, a, b = BUILDERS[kind](cfg), folder / f"{kind}-A.onnx", folder / f"{kind}-B.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, tuple(torch.from_numpy(v) for v in inputs.values()), str(a), dynamo=False,
                          input_names=list(inputs), output_names=["y"], opset_version=OPSET)
        half = to_float16(onnx.load(str(a)), keep_io_types=True)
    onnx.save(half, str(b))
    return {"a": str(a), "b": str(b), "a_nodes": len(onnx.load(str(a)).graph.node),
            "b_nodes": len(half.graph.node)}


def activation_bytes(path: str, inputs: dict) -> int:
    """Bytes of every float value the model computes (its intermediate and output activations), measured by
    capturing them all at once (shape inference leaves some shapes unknown, e.g. after a computed Expand)."""
    from diffcore.capture.onnx import OnnxRunner

    with OnnxRunner(path) as runner:
        values = runner.capture(inputs, [p.key for p in runner.probes(inputs)])
    return sum(np.asarray(v).nbytes for v in values.values())


# --------------------------------------------------------------------------------- child processes


def run_child(cmd: list, log: Path) -> dict:
    """Run ``cmd`` in a fresh process: its wall time, peak RSS, CPU time and exit code.

    The child is started by ``/usr/bin/time``, a small process: Linux carries a process's peak RSS across
    fork and exec, so a child forked straight from this (large) process would report this one's peak.
    """
    load, usage = os.getloadavg()[0], Path(str(log) + ".rusage")
    with open(log, "ab") as out:
        start = time.perf_counter()
        rc = subprocess.call([TIME, "-f", "%M %U %S", "-o", str(usage), *cmd], stdout=out,
                             stderr=subprocess.STDOUT, cwd=ROOT)
        wall = time.perf_counter() - start
    peak_kib, user, system = usage.read_text().split()[-3:]
    return {"wall_s": wall, "peak_rss_bytes": int(peak_kib) * 1024, "rc": rc,
            "cpu_s": float(user) + float(system), "load_before": load}


def run_worker(job: dict, folder: Path) -> dict:
    """Run one measurement (``worker_main``) in a fresh Python; its own result merged with the child's."""
    name = f"{job['kind']}-{job['name']}".replace(" ", "_").replace("=", "-")
    job = {**job, "result": str(folder / f"{name}.json")}
    spec = folder / f"{name}-job.json"
    spec.write_text(json.dumps(job))
    child = run_child([sys.executable, str(Path(__file__).resolve()), "--worker", str(spec)],
                      folder / f"{name}.log")
    if child["rc"] != 0:
        raise RuntimeError(f"worker {name} failed (rc {child['rc']}); see {folder / (name + '.log')}")
    return {**json.loads(Path(job["result"]).read_text()), "process": child}


LOADER = """import numpy as np


def load_data():
    with np.load({path!r}, allow_pickle=False) as archive:
        yield {{name: archive[name] for name in archive.files}}
"""


def run_polygraphy(pair: dict, folder: Path, polygraphy: str) -> dict:
    """Polygraphy's layerwise ONNX-vs-ONNX: save every value of A to JSON, then run B and compare."""
    kind = pair["kind"]
    loader, saved = folder / f"{kind}-polygraphy-loader.py", folder / f"{kind}-polygraphy-A.json"
    loader.write_text(LOADER.format(path=pair["inputs"]))  # the same inputs as diffcore's
    common = ["--onnxrt", "--onnx-outputs", "mark", "all", "--data-loader-script", f"{loader}:load_data"]
    log = folder / f"{kind}-polygraphy.log"
    save = run_child([polygraphy, "run", pair["a"], *common, "--save-outputs", str(saved)], log)
    load = run_child([polygraphy, "run", pair["b"], *common, "--load-outputs", str(saved)], log)
    if save["rc"] != 0 or load["rc"] not in (0, 1):  # 1: the comparison failed, which is a result
        raise RuntimeError(f"polygraphy failed (rc {save['rc']}, {load['rc']}); see {log}")
    size = saved.stat().st_size
    saved.unlink()
    return {"save": save, "load": load, "saved_json_bytes": size, "compare_passed": load["rc"] == 0,
            "wall_s": save["wall_s"] + load["wall_s"],
            "peak_rss_bytes": max(save["peak_rss_bytes"], load["peak_rss_bytes"])}


def polygraphy_version(polygraphy: str) -> str | None:
    python = Path(polygraphy).with_name("python")
    try:
        out = subprocess.run([str(python), "-c", "import polygraphy; print(polygraphy.__version__)"],
                             capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return out.stdout.strip()


# ------------------------------------------------------------------------------------------- workers


def _load_inputs(path: str) -> dict:
    with np.load(path, allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def worker_ort(job: dict) -> dict:
    """Both models on plain ONNX Runtime sessions: session creation, one run each, then forward times."""
    start = time.perf_counter()
    import onnxruntime as ort

    inputs, out = _load_inputs(job["inputs"]), {"import_s": time.perf_counter() - start}
    for side in ("a", "b"):
        t0 = time.perf_counter()
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(job[side], options, providers=["CPUExecutionProvider"])
        t1 = time.perf_counter()
        session.run(None, inputs)
        t2 = time.perf_counter()
        out[side] = {"session_s": t1 - t0, "first_run_s": t2 - t1,
                     "forward": time_calls(lambda s=session: s.run(None, inputs), FORWARD_REPEATS, warmup=0)}
    out["once_each_s"] = sum(out[s]["session_s"] + out[s]["first_run_s"] for s in ("a", "b"))
    out["two_forward_s"] = out["a"]["forward"]["median_s"] + out["b"]["forward"]["median_s"]
    return out


def _ref_spec(job: dict):
    return BUILDERS[job["kind"]](job["cfg"]) if job["mode"] == "diffcore-torch" else job["a"]


def _test_spec(job: dict):
    return job["a"] if job["mode"] == "diffcore-torch" else job["b"]


def worker_diffcore(job: dict) -> dict:
    """diffcore.compare end to end (optionally under cProfile), with its report's timings."""
    import diffcore

    inputs, ref, test = _load_inputs(job["inputs"]), _ref_spec(job), _test_spec(job)
    box = {"prejit_s": _prejit() if job.get("prejit") else None}
    budget = {"memory_budget_mb": job["memory_budget_mb"]} if job["memory_budget_mb"] else {}
    kwargs = {**budget, **job.get("compare", {})}

    def call():
        box["start"] = time.perf_counter()
        box["report"] = diffcore.compare(ref, test, inputs, **kwargs)
        box["end"] = time.perf_counter()

    if job.get("profile"):
        return _profiled(call, box, job)
    extra = peak_extra_bytes(call)
    report = box["report"]
    return {"compare_s": box["end"] - box["start"], "timings": report.timings, "peak_extra_bytes": extra,
            "prejit_s": box["prejit_s"], "verdict": report.verdict, "summary": report.summary, "layers": len(report.layers),
            "unmatched": len(report.unmatched), "warnings": report.warnings}


def _prejit() -> float:
    """Compile the statistics kernels for the storage dtype pairs a comparison meets (float32/16 on each
    side), so that the timed compare() shows steady-state statistics without Numba's compilation."""
    import diffcore

    start, small = time.perf_counter(), np.linspace(-1, 1, 4096, dtype=np.float32)
    for ref in (small, small.astype(np.float16)):
        for test in (small, small.astype(np.float16)):
            diffcore.drift(ref, test)
    return time.perf_counter() - start


def _profiled(call, box, job) -> dict:
    import cProfile
    import io
    import pstats

    profile = cProfile.Profile()
    profile.runcall(call)
    stream = io.StringIO()
    stats = pstats.Stats(profile, stream=stream)
    stats.sort_stats("tottime").print_stats(15)
    top = stream.getvalue()
    stats.sort_stats("cumulative").print_stats(40)
    return {"compare_s": box["end"] - box["start"], "timings": box["report"].timings,
            "top": top[top.index("ncalls"):].rstrip(), "full": stream.getvalue()}


WORKERS = {"ort": worker_ort, "diffcore": worker_diffcore, "diffcore-torch": worker_diffcore}
# name -> (worker mode, extra job fields): the default comparison, then two that say where its time goes
DIFFCORE_RUNS = {
    "diffcore": ("diffcore", {}),
    "diffcore local=none": ("diffcore", {"compare": {"local": "none"}}),
    "diffcore Numba pre-compiled": ("diffcore", {"prejit": True}),
}
TORCH_RUNS = {"diffcore torch-vs-ONNX": ("diffcore-torch", {})}


def worker_main(spec_path: str) -> int:
    job = json.loads(Path(spec_path).read_text())
    result = WORKERS[job["mode"]](job)
    Path(job["result"]).write_text(json.dumps(result, default=str))
    return 0


# -------------------------------------------------------------------------------------------- driver


def bench_model(kind: str, cfg: dict, folder: Path, args) -> dict:
    from diffcore.files import write_npz

    inputs = make_inputs(kind, cfg)
    pair = {"kind": kind, "inputs": str(folder / f"{kind}-inputs.npz"), **export_pair(kind, cfg, inputs, folder)}
    write_npz(pair["inputs"], inputs, force=True)
    act = activation_bytes(pair["a"], inputs)
    print(f"[{kind}] A: {pair['a_nodes']} ONNX nodes, B (fp16): {pair['b_nodes']}; "
          f"one model's activations {act / 2**20:.0f} MiB", flush=True)
    job = {"kind": kind, "cfg": cfg, "a": pair["a"], "b": pair["b"], "inputs": pair["inputs"],
           "memory_budget_mb": args.memory_budget_mb}
    out = {"pair": pair, "activation_bytes_a": act, "activation_bytes_b": activation_bytes(pair["b"], inputs),
           "read_bytes_per_s": read_bandwidth()}
    runs = {"ort": ("ort", {}), **DIFFCORE_RUNS, **(TORCH_RUNS if kind == "cnn" else {}),
            **({"diffcore cProfile": ("diffcore", {"profile": True, "prejit": True})} if args.profile else {})}
    for name, (mode, extra) in runs.items():
        print(f"[{kind}] {name} ...", flush=True)
        out[name] = run_worker({**job, "name": name, "mode": mode, **extra}, folder)
    if not args.skip_polygraphy:
        print(f"[{kind}] polygraphy ...", flush=True)
        out["polygraphy"] = run_polygraphy(pair, folder, args.polygraphy)
    out["targets"] = targets(out)
    return out


def targets(res: dict) -> dict:
    """The issue's targets, as measured ratios, for each diffcore run on the A-vs-B pair."""
    ort, poly = res["ort"], res.get("polygraphy")
    compared = res["activation_bytes_a"] + res["activation_bytes_b"]
    out = {"two_forward_s": ort["two_forward_s"], "read_bytes_per_s": res["read_bytes_per_s"],
           # reading every compared activation once: the least any statistics pass can take here
           "read_floor_s": {"local=none": compared / res["read_bytes_per_s"],
                            "with local errors": 2 * compared / res["read_bytes_per_s"]}}
    for name in DIFFCORE_RUNS:
        dc = res[name]
        stats_match = dc["timings"].get("statistics", 0.0) + dc["timings"].get("match", 0.0)
        row = {"stats_match_s": stats_match, "stats_match_over_forward": stats_match / ort["two_forward_s"],
               "wall_over_ort_once": dc["process"]["wall_s"] / ort["process"]["wall_s"],
               "peak_over_activations": dc["process"]["peak_rss_bytes"] / res["activation_bytes_a"]}
        if poly:
            row["polygraphy_over_wall"] = poly["wall_s"] / dc["process"]["wall_s"]
            row["polygraphy_over_compare"] = poly["wall_s"] / dc["compare_s"]
            row["peak_over_polygraphy"] = dc["process"]["peak_rss_bytes"] / poly["peak_rss_bytes"]
        out[name] = row
    return out


# --------------------------------------------------------------------------------------------- table


def _mib(n) -> str:
    return "" if n is None else f"{n / 2**20:,.0f}"


def print_tables(results: dict) -> None:
    from tabulate import tabulate

    for kind, res in results.items():
        rows = [["ORT: both models once (plain sessions)", f"{res['ort']['process']['wall_s']:.2f}",
                 f"{res['ort']['once_each_s']:.2f}", _mib(res["ort"]["process"]["peak_rss_bytes"]),
                 f"fwd A {1e3 * res['ort']['a']['forward']['median_s']:.1f} ms, "
                 f"B {1e3 * res['ort']['b']['forward']['median_s']:.1f} ms"]]
        for name in [*DIFFCORE_RUNS, *TORCH_RUNS]:
            if name in res:
                dc = res[name]
                what = name + (" (A vs B)" if name in DIFFCORE_RUNS else " (torch vs A)")
                rows.append([what, f"{dc['process']['wall_s']:.2f}", f"{dc['compare_s']:.2f}",
                             _mib(dc["process"]["peak_rss_bytes"]),
                             ", ".join(f"{k} {v:.2f}" for k, v in dc["timings"].items())])
        poly = res.get("polygraphy")
        if poly:
            for step in ("save", "load"):
                rows.append([f"Polygraphy run {'A --save-outputs' if step == 'save' else 'B --load-outputs'}",
                             f"{poly[step]['wall_s']:.2f}", "", _mib(poly[step]["peak_rss_bytes"]),
                             f"JSON {poly['saved_json_bytes'] / 1e9:.2f} GB" if step == "save" else
                             f"compare {'passed' if poly['compare_passed'] else 'failed'}"])
            rows.append(["Polygraphy total", f"{poly['wall_s']:.2f}", "", _mib(poly["peak_rss_bytes"]), ""])
        print(f"\n{kind}: A {res['pair']['a_nodes']} nodes (fp32), B {res['pair']['b_nodes']} nodes (fp16); "
              f"one model's activations {_mib(res['activation_bytes_a'])} MiB (B: "
              f"{_mib(res['activation_bytes_b'])} MiB)")
        print(tabulate(rows, headers=["run (fresh process each)", "process wall s", "in-process s",
                                      "peak RSS MiB", "detail"]))
        print_targets(res["targets"])
        print_profile(res)


def print_targets(t: dict) -> None:
    from tabulate import tabulate

    rows = []
    for name in DIFFCORE_RUNS:
        r = t[name]
        rows.append([name, f"{r['stats_match_s']:.3f} s = {100 * r['stats_match_over_forward']:.0f} %",
                     f"{r['wall_over_ort_once']:.1f}x", f"{r['peak_over_activations']:.2f}x",
                     f"{r['polygraphy_over_wall']:.1f}x ({r['polygraphy_over_compare']:.1f}x)"
                     if "polygraphy_over_wall" in r else "",
                     f"{r['peak_over_polygraphy']:.2f}x" if "peak_over_polygraphy" in r else ""])
    floor = t["read_floor_s"]
    print(f"\n  targets (two forward passes: {t['two_forward_s']:.3f} s; reading the compared activations once at "
          f"{t['read_bytes_per_s'] / 1e9:.1f} GB/s takes {floor['local=none']:.3f} s, twice with local errors "
          f"{floor['with local errors']:.3f} s)")
    print(tabulate(rows, headers=["", "stats+match / 2 fwd [<=10 %]", "wall / ORT once",
                                  "peak / activations", "Polygraphy / diffcore wall (/compare) [>=20x]",
                                  "peak / Polygraphy peak [<=0.25x]"]))


def print_profile(res: dict) -> None:
    prof = res.get("diffcore cProfile")
    if prof:
        print("\n  cProfile of diffcore.compare (Numba pre-compiled), by own time:")
        print("\n".join("    " + line for line in prof["top"].splitlines()))


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    for key, value in FULL.items():
        parser.add_argument("--" + key.replace("_", "-"), type=int, default=None, help=f"default {value}")
    parser.add_argument("--models", default="transformer,cnn")
    parser.add_argument("--memory-budget-mb", type=int, default=None,
                        help="diffcore.compare's (default: its own, DEFAULT_MEMORY_BUDGET_MB)")
    parser.add_argument("--skip-polygraphy", action="store_true")
    parser.add_argument("--polygraphy", default=POLYGRAPHY, help=f"the polygraphy CLI (default {POLYGRAPHY})")
    parser.add_argument("--profile", action="store_true", help="also profile a diffcore run with cProfile")
    parser.add_argument("--quick", action="store_true", help="small models: a smoke run")
    parser.add_argument("--workdir", default=None, help="keep the models and logs here (default: a temp dir)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    return parser.parse_args(argv)


def config(args) -> dict:
    base = QUICK if args.quick else FULL
    return {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in base.items()}


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.worker:
        return worker_main(args.worker)
    cfg = config(args)
    if not args.skip_polygraphy and not Path(args.polygraphy).exists():
        sys.exit(f"polygraphy not found at {args.polygraphy} (see the module docstring, or --skip-polygraphy)")
    with tempfile.TemporaryDirectory(prefix="diffcore-harness-") as tmp:
        folder = Path(args.workdir or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = {kind: bench_model(kind, cfg, folder, args) for kind in args.models.split(",")}
    print_tables(results)
    from diffcore.comparison import DEFAULT_MEMORY_BUDGET_MB

    payload = {"config": cfg, "opset": OPSET, "memory_budget_mb": args.memory_budget_mb or DEFAULT_MEMORY_BUDGET_MB,
               "pair": "A = TorchScript export (fp32), B = onnxconverter-common float16 of A, keep_io_types=True",
               "polygraphy_version": None if args.skip_polygraphy else polygraphy_version(args.polygraphy),
               "load_average_end": os.getloadavg(), "results": results}
    path = write_result("harness" + ("-quick" if args.quick else ""), payload,
                        Path(args.out) if args.out else None)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
