"""``suggest_fp32`` on the real all-MiniLM-L6-v2, made to fail in float16.

    HF_HUB_OFFLINE=1 python bench/suggest_fp32_minilm.py [--scale 1e4] [--out bench/results/suggest-fp32-minilm-<date>.txt]

Layer 3's feed-forward up-projection (``intermediate.dense``) is scaled by ``--scale`` and its
down-projection (``output.dense``) by 1/scale: in float32 the model still computes sensible embeddings, but
the intermediate activations (up to about 14 in the real model) pass float16's 65504. The reference is this
modified model in float32; the tests are its float16 cast (torch) and its onnxconverter-common float16
conversion (ONNX Runtime). For each: the comparison's summary, then the suggestion (the set, its proof run,
the runs used, the code) and the wall time.
"""
from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import real_model


def planted(scale: float):
    import torch

    model, folder = real_model.load_model()
    layer = model.encoder.encoder.layer[3]
    with torch.no_grad():
        layer.intermediate.dense.weight.mul_(scale)
        layer.intermediate.dense.bias.mul_(scale)
        layer.output.dense.weight.div_(scale)
    return model, folder


def run(title: str, ref, test, inputs, **options) -> str:
    import diffcore

    start = time.perf_counter()
    report = diffcore.compare(ref, test, inputs, **options)
    compared = time.perf_counter() - start
    start = time.perf_counter()
    suggestion = report.suggest_fp32(ref, test, inputs, **options)
    searched = time.perf_counter() - start
    return (f"== {title}\ncompare: {report.summary}\n(compare {compared:.1f} s, suggest_fp32 {searched:.1f} s)\n\n"
            f"{suggestion.to_text()}\nattempts:\n" +
            "".join(f"  {a.purpose}: {'PASS' if a.passed else 'fail'} (worst output rel L2 {a.worst_rel_l2:.3g}, "
                    f"{a.new_nonfinite} NaN/Inf)\n" for a in suggestion.attempts) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1e4)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" /
                                             f"suggest-fp32-minilm-{datetime.date.today():%Y%m%d}.txt"))
    args = parser.parse_args(argv)
    model, folder = planted(args.scale)
    inputs = real_model.tokenize(folder)
    text = f"all-MiniLM-L6-v2, layer 3 FFN up-projection x{args.scale:g}, down-projection /{args.scale:g}\n\n"
    text += run("torch float32 vs torch float16 cast", model, model, inputs, test_dtype="float16")
    with tempfile.TemporaryDirectory() as tmp:
        path = real_model.export(model, inputs, Path(tmp) / "minilm.onnx", dynamo=False)
        text += run("ONNX float32 vs onnxconverter-common float16 (ONNX Runtime CPU)", path, path, inputs,
                    test_dtype="float16")
    print(text)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
