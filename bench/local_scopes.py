"""Local errors torch vs ONNX on a real post-norm encoder: all-MiniLM-L6-v2 (the BERT layout), offline.

    HF_HUB_OFFLINE=1 python bench/local_scopes.py [--out bench/results/local-scopes-<date>.txt]

Exports the model with both exporters, compares each with torch (default ``local="auto"``), then plants a
LayerNorm epsilon of 1e-2 in two post-norm LayerNorms (an error under the 5 % band) and says where and why
each comparison diverges; last, torch against the float16 conversion. One line per comparison.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.real_model import export, load_model, tokenize  # noqa: E402

PLANTS = [("encoder.encoder.layer.2.output.LayerNorm", "/encoder/encoder/layer.2/output/LayerNorm/"),
          ("encoder.encoder.layer.3.attention.output.LayerNorm",
           "/encoder/encoder/layer.3/attention/output/LayerNorm/")]


def line(title: str, report, wall: float) -> str:
    have = sum(r.local_rel_l2 is not None for r in report.layers)
    worst = max((r.local_rel_l2 or 0.0) for r in report.layers)
    first = report.first_divergence
    where = "no divergence" if first is None else (
        f"first divergence {first.name} ({first.status}, rel L2 {100 * first.rel_l2:.3g} %): {first.cause}")
    return (f"{title}: {report.verdict.upper()}, local error on {have}/{len(report.layers)} layers, max local "
            f"{100 * worst:.3g} %, {where}; wall {wall:.1f} s (local {report.timings.get('local', 0.0):.1f} s)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    import diffcore
    from tests.integration import onnx_edits

    model, model_dir = load_model()
    inputs = tokenize(model_dir)
    lines = []

    def run(title, test, **kwargs):
        start = time.perf_counter()
        report = diffcore.compare(model, test, inputs, **kwargs)
        lines.append(line(title, report, time.perf_counter() - start))
        print(lines[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="diffcore-local-") as tmp:
        for exporter, dynamo in (("torchscript", False), ("dynamo", True)):
            path = export(model, inputs, Path(tmp) / f"{exporter}.onnx", dynamo=dynamo)
            run(f"torch vs ONNX ({exporter})", path)
            for module, scope in PLANTS:
                def plant(onnx_model, module=module, scope=scope):
                    node = onnx_edits.find_node(onnx_model, module, "LayerNormalization", scope)
                    onnx_edits.set_attribute(node, "epsilon", 1e-2)
                broken = onnx_edits.edited(path, str(Path(tmp) / "eps.onnx"), plant)
                run(f"torch vs ONNX ({exporter}), epsilon 1e-2 in {module}", broken)
            if not dynamo:
                run("torch vs ONNX (torchscript) converted to float16", path, test_dtype="float16")
    out = Path(args.out or ROOT / "bench" / "results" / f"local-scopes-{time.strftime('%Y%m%d')}.txt")
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
