"""``diffcore compare`` and ``diffcore capture``: check the arguments, call the library, write the results.

Everything that can be checked without loading a model (tolerance pairs, files named by specs, output
paths, the inputs archive) is checked first, so a typo fails in milliseconds rather than after a model run.
"""
from __future__ import annotations

import sys

from .._deps import require
from ..errors import DiffcoreError
from ..spec import check_spec
from .dataset_args import compare_inputs
from .files import check_outputs, input_paths, load_inputs

__all__ = ["compare_function", "progress_wanted", "run_capture", "run_compare"]


def compare_function():
    """``diffcore.compare``, looked up at call time (so tests and plugins can replace it)."""
    import diffcore

    return diffcore.compare


def progress_wanted() -> bool:
    """A progress bar only for a person watching: when stderr is a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed stderr
        return False


def check_tolerance_pair(atol, rtol) -> None:
    """``--atol`` and ``--rtol`` come together or not at all."""
    if (atol is None) != (rtol is None):
        given, missing = ("--atol", "--rtol") if rtol is None else ("--rtol", "--atol")
        raise DiffcoreError(f"{given} was given without {missing}: give both or neither "
                            "(neither uses the defaults of the test dtype)")


def check_flags(args) -> None:
    """Refuse flags that contradict each other instead of silently ignoring one of them."""
    if args.test_autocast and args.test.endswith((".onnx", ".npz")):
        kind = "an ONNX model" if args.test.endswith(".onnx") else "a recorded trace"
        raise DiffcoreError(f"--test-autocast applies to a torch TEST model, but TEST {args.test} is {kind}: "
                            "use --test-dtype float16 for an ONNX model, or drop --test-autocast")


def _human(outputs):
    """Where the human text goes: stderr when a document is written to stdout (``-``)."""
    return sys.stderr if outputs.to_stdout else sys.stdout


def verdict_line(report) -> str:
    """The one line ``--quiet`` keeps: the verdict and the summary's first sentence."""
    word = report.verdict.upper()
    summary = " ".join(str(report.summary or report.reason or "").split()).split(" Coverage: ")[0]
    if not summary.upper().startswith(word):  # summaries start with their verdict word (localize.summarize)
        summary = f"{word}: {summary}" if summary else word
    return "diffcore: " + (summary if len(summary) <= 240 else summary[:237] + "...")


def _model_explorer_side(args) -> tuple:
    """The ONNX model --model-explorer annotates: TEST when it is ONNX, else REF."""
    for side, spec in (("test", args.test), ("ref", args.ref)):
        if spec.endswith(".onnx"):
            return side, spec
    raise DiffcoreError(f"--model-explorer needs an ONNX model on one side, but REF {args.ref} and TEST "
                        f"{args.test} are not .onnx files")


_LOCAL = "--model-explorer (local errors)"


def _local_path(path: str) -> str:
    """Where write_model_explorer puts the local-error node data beside ``path``."""
    import os

    return os.path.splitext(path)[0] + ".local.json"


def _compare_outputs(args):
    from ..report.model import SCHEMA_VERSION
    from .outputs import NODE_DATA, Outputs, is_stdout

    local = None
    if args.model_explorer is not None:
        _model_explorer_side(args)
        if is_stdout(args.model_explorer):
            raise DiffcoreError("--model-explorer writes a file (and a .local.json beside it): '-' is not "
                                "accepted")
        local = _local_path(args.model_explorer)
    return Outputs({"--json": (args.json, SCHEMA_VERSION), "--html": (args.html, "html"),
                    "--model-explorer": (args.model_explorer, NODE_DATA), _LOCAL: (local, NODE_DATA)},
                   input_paths(REF=args.ref, TEST=args.test, **{"--inputs": args.inputs}), args.force)


def _write_reports(args, report, outputs) -> None:
    outputs.write("--json", report.to_json(), "report", args.quiet)
    outputs.write("--html", report.to_html(), "HTML report", args.quiet)
    if args.model_explorer is not None:
        _write_model_explorer(args, report, outputs)


def _write_model_explorer(args, report, outputs) -> None:
    from ..report.model_explorer import write_model_explorer

    side, model = _model_explorer_side(args)
    path = args.model_explorer
    replacing = "--model-explorer" in outputs.replacing
    # Both files were checked before the run: without --force each is absent or diffcore's own earlier node
    # data, so replacing is safe for both once either is an earlier one.
    force = args.force or bool({"--model-explorer", _LOCAL} & outputs.replacing)
    written = write_model_explorer(report, model, path, side=side, force=force)
    if not args.quiet or replacing:
        verb = "replaced the previous" if replacing else "wrote"
        extra = f" and {written['local']}" if written.get("local") else ""
        print(f"diffcore: {verb} Model Explorer node data {path}{extra} ({written['nodes']} nodes of "
              f"{side.upper()} {model})", file=sys.stderr)


def run_compare(args) -> int:
    """``diffcore compare REF TEST``: print the text report, write --json/--html; the report's exit code."""
    check_tolerance_pair(args.atol, args.rtol)
    check_spec(args.ref, "REF")
    check_spec(args.test, "TEST")
    check_flags(args)
    outputs = _compare_outputs(args)
    if getattr(args, "suggest_fp32", False) and args.test.endswith(".onnx") and args.test_dtype != "float16" \
            and not _quantized_onnx(args.test):
        raise DiffcoreError("--suggest-fp32 with an ONNX TEST needs --test-dtype float16 (TEST is the float32 "
                            "model that onnxconverter-common converts)")
    inputs = compare_inputs(args, load_inputs)
    report = compare_function()(
        args.ref, args.test, inputs, atol=args.atol, rtol=args.rtol, ref_dtype=args.ref_dtype,
        test_dtype=args.test_dtype, test_autocast=args.test_autocast, device=args.device,
        providers=args.providers, ref_providers=args.ref_providers, test_providers=args.test_providers,
        backend=args.backend, local=args.local, progress=progress_wanted() and not args.quiet,
        **({"memory_budget_mb": args.memory_budget_mb} if args.memory_budget_mb else {}),
        **({"workers": args.workers} if getattr(args, "workers", 1) != 1 else {}),
        **({"ray": args.ray} if getattr(args, "ray", None) else {}),
    )
    # Files first: a reader that closes stdout early (| head) must not cost the user the JSON.
    _write_reports(args, report, outputs)
    human = _human(outputs)
    if args.quiet:
        print(verdict_line(report), file=human)
    else:
        human.write(report.to_text(max_rows=args.max_rows or None, wide=args.wide, by=args.by))
    human.flush()
    if getattr(args, "suggest_fp32", False):
        _suggest_fp32(args, report, inputs, human)
    return report.exit_code


def _quantized_onnx(path: str) -> bool:
    """An int8 model (QDQ, QOperator or dynamic): --suggest-fp32 then suggests nodes_to_exclude."""
    onnx = require("onnx")
    from ..quant.graph import layer_precisions

    try:
        return bool(layer_precisions(onnx.load(path)))
    except Exception:  # noqa: BLE001 - an unreadable model is reported when it is loaded for the comparison
        return False


def _suggest_fp32(args, report, inputs, human) -> None:
    """``--suggest-fp32``: the float32 set after the report (diffcore/precision); for a quantized ONNX
    TEST, the nodes to exclude from quantization (diffcore/quant/exclude.py)."""
    if args.test.endswith(".onnx") and args.test_dtype is None and _quantized_onnx(args.test):
        from ..quant.exclude import suggest_exclusions

        if inputs is None:
            raise DiffcoreError("--suggest-fp32 for a quantized model needs --inputs: they calibrate the "
                                "re-quantization")
        human.write("\n" + suggest_exclusions(args.ref, args.test, inputs, report).to_text())
        human.flush()
        return
    suggestion = report.suggest_fp32(
        args.ref, args.test, inputs, test_dtype=args.test_dtype, test_autocast=args.test_autocast,
        max_runs=args.fp32_max_runs, atol=args.atol, rtol=args.rtol, ref_dtype=args.ref_dtype,
        device=args.device, providers=args.providers, ref_providers=args.ref_providers,
        test_providers=args.test_providers, backend=args.backend, local=args.local,
        **({"memory_budget_mb": args.memory_budget_mb} if args.memory_budget_mb else {}))
    human.write("\n" + suggestion.to_text())
    human.flush()


def _capture_inputs(runner, path, model: str) -> dict:
    """--inputs, else the model's example inputs (a factory's ``example_inputs``), as the README says."""
    if path:
        return load_inputs(path)
    if not getattr(runner, "example_inputs", None):
        raise DiffcoreError(f"MODEL {model} has no example inputs: give --inputs FILE.npz keyed by its input "
                            "names")
    from ..inputs import resolve_inputs

    return resolve_inputs(None, runner, runner)[0]


def run_capture(args) -> int:
    """``diffcore capture MODEL [--inputs X] --out TRACE``: record every probe of MODEL to a trace file."""
    check_spec(args.model, "MODEL")
    if args.out == "-":
        raise DiffcoreError("--out - : a trace is a binary .npz archive, not something to print; give a file "
                            "name (e.g. --out trace.npz)")
    check_outputs({"trace": args.out}, input_paths(MODEL=args.model, **{"--inputs": args.inputs}), args.force)
    inputs = load_inputs(args.inputs) if args.inputs else None
    from ..capture.trace import record  # imported on use: they reach for the frameworks
    from ..spec import open_runner

    runner = open_runner(args.model, role="model", dtype=args.dtype, device=args.device,
                         providers=args.providers)
    try:
        if inputs is None:
            inputs = _capture_inputs(runner, None, args.model)
        trace = record(runner, inputs, description={"model": args.model})
    finally:
        runner.close()
    trace.save(args.out, force=args.force)
    print(f"diffcore: recorded {len(trace)} tensors of {args.model} to {args.out}")  # the verdict line
    return 0
