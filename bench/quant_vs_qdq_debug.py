"""diffcore against ONNX Runtime's own qdq_loss_debug on the same quantized models (issue 16).

    PYTHONPATH=. python bench/quant_vs_qdq_debug.py [--out bench/results/quant-vs-qdq-debug-<date>.txt]

For each case (tests/integration/quant_models.py: the issue's MLP, clean and with planted bugs, and one
with a square fc2 quantized dynamically), it prints what each tool says: qdq_loss_debug's per-activation SQNR (float activations vs the QDQ model's, both
"xmodel" and "qdq" errors) and weight SQNR, with the lowest-SQNR layer; diffcore's verdict, first divergence
and its cause. qdq_loss_debug reads QDQ graphs only (QOperator and dynamic models are skipped for it).
"""
from __future__ import annotations

import argparse
import datetime
import io
import logging
import math
import sys
import tempfile
import time
from contextlib import redirect_stdout
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "integration")]
logging.disable(logging.WARNING)

import quant_models as qm

import diffcore
from bench.common import print_and_save


def cases(folder: Path) -> list:
    from onnxruntime.quantization import QuantType

    fp32 = qm.export(qm.mlp(), qm.mlp_inputs(), folder / "fp32.onnx")
    outlier = qm.export(qm.mlp(outlier_in_fc2=60.0), qm.mlp_inputs(), folder / "outlier.onnx")
    square = qm.export(qm.mlp(square=True), qm.mlp_inputs(), folder / "square.onnx")
    qdq = qm.quantize(fp32, str(folder / "qdq.onnx"), "qdq", reduce_range=True)
    return [
        ("clean QDQ (reduce_range)", fp32, qdq),
        ("clean QOperator (reduce_range)", fp32, qm.quantize(fp32, str(folder / "qop.onnx"), "qoperator",
                                                           reduce_range=True)),
        ("clean dynamic (uint8 W)", fp32, qm.quantize(fp32, str(folder / "dyn.onnx"), "dynamic",
                                                     weight_type=QuantType.QUInt8)),
        ("clean dynamic, square fc2 (int8 W, reduce_range)", square,
         qm.quantize(square, str(folder / "square_dyn.onnx"), "dynamic", weight_type=QuantType.QInt8,
                     reduce_range=True)),
        ("default QDQ (8-bit int8 W)", fp32, qm.quantize(fp32, str(folder / "default.onnx"), "qdq")),
        ("outlier weight in fc2", outlier, qm.quantize(outlier, str(folder / "outlier_q.onnx"), "qdq",
                                                       reduce_range=True)),
        ("clipped range of act", fp32, qm.edit_initializer(qdq, str(folder / "clip.onnx"),
                                                           "/act/Gelu_output_0_scale", lambda s: s / 8)),
        ("fc2 weight zero point +3", fp32, qm.edit_initializer(qdq, str(folder / "wzp.onnx"),
                                                               "fc2.weight_zero_point", lambda z: z + 3)),
        ("act zero point misread", fp32, qm.misread_zero_point(qdq, str(folder / "zp.onnx"), "/act/Gelu_output_0")),
    ]


def qdq_debug(fp32: str, test: str, folder: Path) -> str:
    """qdq_loss_debug's answer: the activation with the lowest SQNR (dB), and the weakest weight."""
    from onnxruntime.quantization import qdq_loss_debug as dbg

    if "DequantizeLinear" not in {n.op_type for n in __import__("onnx").load(test).graph.node} or \
            any(n.op_type.startswith(("QLinear", "QGemm", "MatMulInteger")) for n in __import__("onnx").load(test).graph.node):
        return "n/a (not a QDQ graph)"
    f_aug, q_aug = str(folder / "f_aug.onnx"), str(folder / "q_aug.onnx")
    dbg.modify_model_output_intermediate_tensors(fp32, f_aug)
    dbg.modify_model_output_intermediate_tensors(test, q_aug)
    f_act = dbg.collect_activations(f_aug, [qm.mlp_inputs()])  # the comparison's inputs
    q_act = dbg.collect_activations(q_aug, [qm.mlp_inputs()])
    errors = dbg.compute_activation_error(dbg.create_activation_matching(q_act, f_act))
    weights = dbg.compute_weight_error(dbg.create_weight_matching(fp32, test))
    xmodel = {k: v["xmodel_err"] for k, v in errors.items() if "xmodel_err" in v}
    qdq = {k: v["qdq_err"] for k, v in errors.items()}
    worst_x = min(xmodel, key=xmodel.get)
    worst_q = min(qdq, key=qdq.get)
    weights = {k: v for k, v in weights.items() if v > 0 and not math.isnan(v)}  # an all-zero bias has 0 dB by definition
    worst_w = min(weights, key=weights.get)
    return (f"lowest xmodel SQNR {xmodel[worst_x]:.1f} dB at {worst_x}; lowest qdq SQNR {qdq[worst_q]:.1f} dB at "
            f"{worst_q}; weakest weight {weights[worst_w]:.1f} dB at {worst_w}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    lines = [f"# diffcore vs qdq_loss_debug, {datetime.datetime.now():%Y-%m-%d %H:%M}, 2-core CPU, ORT CPU EP"]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for title, fp32, test in cases(folder):
            start = time.perf_counter()
            report = diffcore.compare(fp32, test, qm.mlp_inputs(), progress=False)
            took = time.perf_counter() - start
            first = report.first_divergence
            where = f"{first.name}: {first.cause[:160]}" if first is not None else "-"
            with redirect_stdout(io.StringIO()):
                debug = qdq_debug(fp32, test, folder)
            out = max(r.rel_l2 for r in report.outputs)
            diverged = ", ".join(f"{r.name} (local {100 * r.local_rel_l2:.3g} %, predicted "
                                 f"{100 * r.predicted_rel_l2:.3g} %)" if r.local_rel_l2 is not None and
                                 r.predicted_rel_l2 is not None else r.name
                                 for r in report.layers if r.status == "diverged") or "-"
            lines += [f"\n## {title}", f"diffcore ({took:.2f} s): {report.verdict.upper()}, output rel L2 "
                      f"{100 * out:.3g} %, first divergence {where}", f"diffcore diverged rows: {diverged}",
                      f"qdq_loss_debug: {debug}"]
    print_and_save("\n".join(lines) + "\n", "quant-vs-qdq-debug", args.out)


if __name__ == "__main__":
    main()
