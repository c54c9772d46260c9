"""``diffcore compare`` and ``diffcore capture``: check the arguments, call the library, write the results.

Everything that can be checked without loading a model (tolerance pairs, files named by specs, output
paths, the inputs archive) is checked first, so a typo fails in milliseconds rather than after a model run.
"""
from __future__ import annotations

import sys

from ..errors import DiffcoreError
from ..spec import check_spec
from .files import check_outputs, input_paths, load_inputs, write_text_atomic

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


def _write_reports(args, report) -> None:
    if args.json:
        write_text_atomic(args.json, report.to_json(), force=args.force, what="--json")
        print(f"diffcore: wrote {args.json}", file=sys.stderr)
    if args.html:
        write_text_atomic(args.html, report.to_html(), force=args.force, what="--html")
        print(f"diffcore: wrote {args.html}", file=sys.stderr)


def run_compare(args) -> int:
    """``diffcore compare REF TEST``: print the text report, write --json/--html; the report's exit code."""
    check_tolerance_pair(args.atol, args.rtol)
    check_spec(args.ref, "REF")
    check_spec(args.test, "TEST")
    check_flags(args)
    check_outputs({"--json": args.json, "--html": args.html},
                  input_paths(REF=args.ref, TEST=args.test, **{"--inputs": args.inputs}), args.force)
    if getattr(args, "suggest_fp32", False) and args.test.endswith(".onnx") and args.test_dtype != "float16":
        raise DiffcoreError("--suggest-fp32 with an ONNX TEST needs --test-dtype float16 (TEST is the float32 "
                            "model that onnxconverter-common converts)")
    inputs = load_inputs(args.inputs) if args.inputs else None
    report = compare_function()(
        args.ref, args.test, inputs, atol=args.atol, rtol=args.rtol, ref_dtype=args.ref_dtype,
        test_dtype=args.test_dtype, test_autocast=args.test_autocast, device=args.device,
        providers=args.providers, ref_providers=args.ref_providers, test_providers=args.test_providers,
        backend=args.backend, local=args.local, progress=progress_wanted(),
        **({"memory_budget_mb": args.memory_budget_mb} if args.memory_budget_mb else {}),
    )
    # Files first: a reader that closes stdout early (| head) must not cost the user the JSON.
    _write_reports(args, report)
    sys.stdout.write(report.to_text(max_rows=args.max_rows or None))
    sys.stdout.flush()
    if getattr(args, "suggest_fp32", False):
        _suggest_fp32(args, report, inputs)
    return report.exit_code


def _suggest_fp32(args, report, inputs) -> None:
    """``--suggest-fp32``: the float32 set after the report (diffcore/precision)."""
    suggestion = report.suggest_fp32(
        args.ref, args.test, inputs, test_dtype=args.test_dtype, test_autocast=args.test_autocast,
        max_runs=args.fp32_max_runs, atol=args.atol, rtol=args.rtol, ref_dtype=args.ref_dtype,
        device=args.device, providers=args.providers, ref_providers=args.ref_providers,
        test_providers=args.test_providers, backend=args.backend, local=args.local,
        **({"memory_budget_mb": args.memory_budget_mb} if args.memory_budget_mb else {}))
    sys.stdout.write("\n" + suggestion.to_text())
    sys.stdout.flush()


def run_capture(args) -> int:
    """``diffcore capture MODEL --inputs X --out TRACE``: record every probe of MODEL to a trace file."""
    check_spec(args.model, "MODEL")
    check_outputs({"trace": args.out}, input_paths(MODEL=args.model, **{"--inputs": args.inputs}), args.force)
    inputs = load_inputs(args.inputs)
    from ..capture.trace import record  # imported on use: they reach for the frameworks
    from ..spec import open_runner

    runner = open_runner(args.model, role="model", dtype=args.dtype, device=args.device,
                         providers=args.providers)
    try:
        trace = record(runner, inputs, description={"model": args.model})
    finally:
        runner.close()
    trace.save(args.out, force=args.force)
    print(f"diffcore: recorded {len(trace)} tensors of {args.model} to {args.out}")
    return 0
