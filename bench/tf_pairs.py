"""Keras, SavedModel, TFLite (LiteRT) and tf2onnx sides on one small conv net: the README's table of pairs.

    python bench/tf_pairs.py [--out bench/results]

The conv net of tests/integration/tf_models.py (Conv2D+ReLU, LayerNormalization, Flatten, Dense, GELU,
Dense), converted with tf.lite.TFLiteConverter (float32, float16 weights, dynamic-range int8, full int8
with a representative dataset) and, in its tanh variant, with tf2onnx; planted bugs: a LayerNormalization
epsilon, an approximated GELU, a weight beyond float16's range. One row per pair: layers paired, verdict,
first divergence, worst layer rel L2, time.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _files(d: Path) -> dict:
    import tensorflow as tf
    import tf2onnx

    from tests.integration.tf_models import net, tanh_net, tflite

    model = net()
    model.save(d / "net.keras")
    out = {"keras": str(d / "net.keras")}
    for mode in ("fp32", "fp16", "int8", "full8"):
        out[mode] = tflite(model, d / f"net_{mode}.tflite", mode)
    for bug, kwargs in (("eps", {"epsilon": 1.0}), ("gelu", {"approximate": True})):
        copy = net(**kwargs)
        copy.set_weights(model.get_weights())
        out[bug] = tflite(copy, d / f"net_{bug}.tflite")
    weights = model.get_weights()
    weights[[w.shape for w in weights].index((144, 16))][0, 0] = 1e5
    big = net()
    big.set_weights(weights)
    big.save(d / "big.keras")
    out["big_keras"], out["big_fp16"] = str(d / "big.keras"), tflite(big, d / "big_fp16.tflite", "fp16")
    tanh = tanh_net()
    tanh.save(d / "tanh.keras")
    spec = (tf.TensorSpec((None, 8, 8, 3), tf.float32, name="x"),)
    tf2onnx.convert.from_keras(tanh, input_signature=spec, opset=17, output_path=str(d / "tanh.onnx"))
    out.update(tanh_keras=str(d / "tanh.keras"), tanh_onnx=str(d / "tanh.onnx"),
               tanh_tflite=tflite(tanh, d / "tanh.tflite"))
    model.export(str(d / "sm"))
    out["savedmodel"] = str(d / "sm")
    return out


PAIRS = [
    ("Keras vs TFLite float32", "keras", "fp32"),
    ("Keras vs TFLite float16 weights", "keras", "fp16"),
    ("Keras vs TFLite dynamic-range int8", "keras", "int8"),
    ("Keras vs TFLite full int8 (representative dataset)", "keras", "full8"),
    ("Keras vs tf2onnx (conv net with tanh)", "tanh_keras", "tanh_onnx"),
    ("SavedModel vs TFLite float32", "savedmodel", "fp32"),
    ("TFLite vs tf2onnx (tanh net)", "tanh_tflite", "tanh_onnx"),
    ("planted: LayerNormalization epsilon 1e-3 -> 1.0", "keras", "eps"),
    ("planted: GELU replaced by its tanh approximation", "keras", "gelu"),
    ("planted: a weight of 1e5 in the float16 model", "big_keras", "big_fp16"),
]


def row(label, ref, test, inputs) -> dict:
    import diffcore

    start = time.perf_counter()
    report = diffcore.compare(ref, test, inputs, progress=False)
    seconds = time.perf_counter() - start
    worst = max(report.layers, key=lambda r: r.rel_l2 or 0.0, default=None)
    first = report.first_divergence
    return {"pair": label, "layers": f"{len(report.layers)}/{len(report.layers) + _unpaired_ref(report)}",
            "verdict": report.verdict.upper(), "first_divergence": first.name if first else "-",
            "worst_layer_rel_l2_pct": f"{100 * worst.rel_l2:.2g}" if worst else "-", "seconds": round(seconds, 1)}


def _unpaired_ref(report) -> int:
    return sum(1 for u in report.unmatched if u.side == "ref")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = parser.parse_args(argv)
    import numpy as np
    from tabulate import tabulate

    from bench.common import write_result

    inputs = {"x": np.random.default_rng(0).standard_normal((1, 8, 8, 3)).astype(np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        files = _files(Path(tmp))
        rows = [row(label, files[a], files[b], inputs) for label, a, b in PAIRS]
    print(tabulate(rows, headers="keys"))
    print("wrote", write_result("tf-pairs", {"rows": rows}, Path(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
