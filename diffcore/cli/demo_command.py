"""``diffcore demo``: the tiny transformer against its float16 version and its ONNX export.

It writes the ONNX file and the inputs it used, so the user can rerun each comparison with
``diffcore compare`` (the command lines are printed). Verdicts are printed, not turned into the exit code:
a demo that ran is a success.
"""
from __future__ import annotations

import importlib
import os
import shlex
import tempfile
import warnings

from .._deps import require
from ..errors import DiffcoreError
from .commands import compare_function, progress_wanted
from ..files import write_atomic
from .files import save_npz_atomic

__all__ = ["DEMO_SPEC", "INPUTS_NAME", "ONNX_NAME", "run_demo"]

DEMO_SPEC = "diffcore.demo:transformer"
ONNX_NAME = "tiny_transformer.onnx"
INPUTS_NAME = "inputs.npz"
OPSET = 17


def prepare_out_dir(out: str | None) -> str:
    """``out`` (created if missing) or a new temporary directory; refuses to replace the demo's files."""
    if out is None:
        return tempfile.mkdtemp(prefix="diffcore-demo-")
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


def write_demo_files(out_dir: str) -> tuple[str, str, dict]:
    """Build the demo transformer, write its ONNX export and inputs; return (onnx path, inputs path, inputs)."""
    demo = importlib.import_module("diffcore.demo")
    model = demo.transformer()
    example = model.example_inputs()
    inputs = {name: tensor.numpy() for name, tensor in example.items()}
    onnx_path, inputs_path = os.path.join(out_dir, ONNX_NAME), os.path.join(out_dir, INPUTS_NAME)
    save_npz_atomic(inputs_path, inputs)
    export_onnx(model, example, onnx_path)
    return onnx_path, inputs_path, inputs


def demo_runs(onnx_path: str) -> list[tuple[str, str, dict, list[str]]]:
    """(title, test spec, extra compare() arguments, extra CLI flags) of each comparison."""
    return [
        ("torch float32 vs torch float16", DEMO_SPEC, {"test_dtype": "float16"}, ["--test-dtype", "float16"]),
        ("torch float32 vs ONNX Runtime", onnx_path, {}, []),
    ]


def command_line(test: str, inputs_path: str, flags: list[str]) -> str:
    """The ``diffcore compare`` line equivalent to one demo comparison."""
    words = ["diffcore", "compare", DEMO_SPEC, test, "--inputs", inputs_path, *flags]
    return " ".join(shlex.quote(w) for w in words)


def run_demo(args) -> int:
    """``diffcore demo``: write the files, run both comparisons, print reports, verdicts and commands."""
    out_dir = prepare_out_dir(args.out)
    onnx_path, inputs_path, inputs = write_demo_files(out_dir)
    compare = compare_function()
    verdicts = []
    quiet = getattr(args, "quiet", False)  # --quiet: only the verdict lines
    for title, test, extra, flags in demo_runs(onnx_path):
        if not quiet:
            print(f"=== {title} ===\n", flush=True)
        report = compare(DEMO_SPEC, test, inputs, backend=args.backend, progress=progress_wanted() and not quiet,
                         **extra)
        if not quiet:
            print(report.to_text())
        verdicts.append((title, report.verdict.upper(), command_line(test, inputs_path, flags)))
    if not quiet:
        print(f"Demo files in {out_dir}:\n  {onnx_path}\n  {inputs_path}\n")
    for title, verdict, line in verdicts:
        print(f"{title}: {verdict}\n  {line}")
    return 0
