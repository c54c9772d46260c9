"""``diffcore demo``: one screen that shows what diffcore is for.

A small transformer whose float16 version overflows in one layer (a hand-written RMSNorm that squares in
float16): diffcore finds the first divergence, says it is born there, and proves what to keep in float32.
Then the same model's ONNX export, a clean conversion, passes with its coverage stated. Verdicts are
printed, not turned into the exit code: a demo that ran is a success.

The files (ONNX export, inputs) go to a temporary folder removed afterwards; ``--out DIR`` keeps them and
prints the ``diffcore compare`` lines that rerun each comparison.
"""
from __future__ import annotations

import importlib
import os
import shlex
import tempfile
import textwrap
import warnings

from .._deps import require
from ..errors import DiffcoreError
from ..files import write_atomic
from .commands import compare_function, progress_wanted
from .files import save_npz_atomic

__all__ = ["DEMO_SPEC", "INPUTS_NAME", "ONNX_NAME", "run_demo"]

DEMO_SPEC = "diffcore.demo:overflowing_transformer"
ONNX_NAME = "tiny_transformer.onnx"
INPUTS_NAME = "inputs.npz"
OPSET = 17
WIDTH = 100
ROWS_AROUND = 2  # rows shown before and after the first divergence


def prepare_out_dir(out: str) -> str:
    """``out`` (created if missing); refuses to replace the demo's files."""
    if os.path.exists(out) and not os.path.isdir(out):
        raise DiffcoreError(f"--out {out} exists and is not a directory")
    os.makedirs(out, exist_ok=True)
    taken = [name for name in (ONNX_NAME, INPUTS_NAME) if os.path.exists(os.path.join(out, name))]
    if taken:
        raise DiffcoreError(f"--out {out} already holds {', '.join(taken)}; the demo never replaces files: "
                            "choose another directory or remove them")
    return out


def export_onnx(model, example: dict, path: str) -> None:
    """TorchScript-based export (``dynamo=False``: much faster for a demo), written atomically."""
    torch = require("torch", "the demo")
    require("onnx", "the demo's ONNX export")
    names = list(example)

    def write(handle):
        with warnings.catch_warnings():
            # The legacy exporter announces its deprecation on every call; the demo chose it deliberately.
            warnings.simplefilter("ignore")
            torch.onnx.export(model, tuple(example.values()), handle, input_names=names,
                              output_names=["logits"], opset_version=OPSET, dynamo=False)

    write_atomic(path, write, force=False, what="ONNX", binary=True)


def write_demo_files(out_dir: str) -> tuple[str, str, dict, object]:
    """Build the demo model, write its ONNX export and inputs; (onnx path, inputs path, inputs, model)."""
    demo = importlib.import_module("diffcore.demo")
    model = demo.overflowing_transformer()
    example = model.example_inputs()
    inputs = {name: tensor.numpy() for name, tensor in example.items()}
    onnx_path, inputs_path = os.path.join(out_dir, ONNX_NAME), os.path.join(out_dir, INPUTS_NAME)
    save_npz_atomic(inputs_path, inputs)
    export_onnx(model, example, onnx_path)
    return onnx_path, inputs_path, inputs, model


def demo_runs(onnx_path: str) -> list[tuple[str, str, dict, list[str]]]:
    """(title, test spec, extra compare() arguments, extra CLI flags) of each comparison."""
    return [
        ("torch float32 vs the same model in float16 (a hand-written RMSNorm squares in float16)",
         DEMO_SPEC, {"test_dtype": "float16"}, ["--test-dtype", "float16", "--suggest-fp32"]),
        ("torch float32 vs its ONNX export (TorchScript exporter) on ONNX Runtime", onnx_path, {}, []),
    ]


def command_line(test: str, inputs_path: str, flags: list[str]) -> str:
    """The ``diffcore compare`` line equivalent to one demo comparison."""
    words = ["diffcore", "compare", DEMO_SPEC, test, "--inputs", inputs_path, *flags]
    return " ".join(shlex.quote(w) for w in words)


def _wrap(text: str, indent: str = "   ") -> str:
    return textwrap.fill(text, WIDTH, initial_indent=indent, subsequent_indent=indent + "  ")


def _pct(value) -> str:
    from ..report.text import fmt_pct

    return "-" if value is None else f"{fmt_pct(value)} %"


def _rows_around(report) -> list[str]:
    """A few rows around the first divergence, in 100 columns."""
    layers, first = report.layers, report.first_divergence
    at = next(i for i, r in enumerate(layers) if r.index == first.index and r.name == first.name)
    lines = [f"   {'':2} {'#':>3}  {'layer':<24} {'op':<14} {'rel L2':>10} {'local':>10}  status"]
    for row in layers[max(0, at - ROWS_AROUND): at + ROWS_AROUND + 1]:
        mark = ">>" if row is first else ""
        lines.append(f"   {mark:2} {row.index:>3}  {row.name[-24:]:<24} {(row.op_type or '')[:14]:<14} "
                     f"{_pct(row.rel_l2):>10} {_pct(row.local_rel_l2):>10}  {row.status}")
    return lines


def _story(report) -> list[str]:
    """What one comparison found, in a few lines."""
    from ..coverage import coverage_line

    lines = [_wrap(report.summary.split(" Coverage:")[0])]
    if report.first_divergence is not None:
        lines += _rows_around(report)
    for out in report.outputs:
        lines.append(f"   output {out.name!r}: rel L2 {_pct(out.rel_l2)}, {out.new_nonfinite} new NaN/Inf")
    if report.coverage:
        lines.append(_wrap(f"coverage: {coverage_line(report.coverage)}"))
    return lines


def _suggestion(model, inputs, report, backend) -> list[str]:
    """The float32 set that fixes the float16 version, proven by running it."""
    found = report.suggest_fp32(model, model, inputs, test_dtype="float16", backend=backend)
    if not found.units:
        return [_wrap(f"what to keep in float32: {found.message or found.status}")]
    outs = "; ".join(f"{b.name} {_pct(b.rel_l2)} -> {_pct(a.rel_l2)}" for b, a in zip(found.before, found.after))
    runs = f"{found.runs} model run{'s' if found.runs != 1 else ''}"
    return [_wrap(f"keep in float32: {', '.join(found.units)}; verified by running that mixed-precision model: "
                  f"{outs} ({runs}; --suggest-fp32)")]


def _run_all(out_dir: str, args) -> list[tuple[str, str, str]]:
    onnx_path, inputs_path, inputs, model = write_demo_files(out_dir)
    compare = compare_function()
    verdicts = []
    quiet = getattr(args, "quiet", False)  # --quiet: only the verdict lines
    for number, (title, test, extra, flags) in enumerate(demo_runs(onnx_path), start=1):
        if not quiet:
            print(f"{number}. {title}", flush=True)
        report = compare(DEMO_SPEC, test, inputs, backend=args.backend, progress=progress_wanted() and not quiet,
                         **extra)
        if quiet:
            print(f"{number}. {title}: {report.verdict.upper()}")
        else:
            print("\n".join(_story(report)))
            if extra.get("test_dtype") and not report.passed:
                print("\n".join(_suggestion(model, inputs, report, args.backend)))
            print()
        verdicts.append((title, report.verdict.upper(), command_line(test, inputs_path, flags)))
    return verdicts


def run_demo(args) -> int:
    """``diffcore demo``: two comparisons of a small transformer, told in one screen."""
    quiet = getattr(args, "quiet", False)
    if not quiet:
        print("diffcore demo: one small transformer, converted two ways\n")
    if args.out is None:
        with tempfile.TemporaryDirectory(prefix="diffcore-demo-") as tmp:
            _run_all(tmp, args)
        if not quiet:
            print("Your model: diffcore compare mymodels.py:build model.onnx --inputs inputs.npz\n"
                  "Keep the demo's files and the commands that rerun it: diffcore demo --out DIR")
        return 0
    verdicts = _run_all(prepare_out_dir(args.out), args)
    print(f"Files in {args.out}; rerun with:")
    for _, _, line in verdicts:
        print(f"  {line}")
    return 0
