"""The ``diffcore`` command line: argument parsing, dispatch, and the exit-code policy.

Commands: compare, capture, demo, env (env diff), golden record|check, validate, report diff.

Conventions (every subcommand): ``--json PATH`` writes a file and ``--json -`` prints to stdout (then the
human text goes to stderr); ``--quiet`` keeps errors and the final verdict line; a file diffcore wrote
earlier of the same kind is replaced with a note, anything else needs ``--force`` (cli/outputs.py).

Exit codes: 0 within tolerance, 1 diverged, 2 a usage or input error (one line on stderr, no traceback),
3 a bug in diffcore (one line; ``DIFFCORE_DEBUG=1`` adds the traceback), 4 inconclusive: the comparison
compared nothing decisive (no model output paired, or an output with no element finite on both sides), so
it is neither a pass nor a divergence (``DiffReport.exit_code``; CI must not read it as success). 130 on
Ctrl-C, and 141 when the reader of stdout went away (what a shell reports for a process ended by SIGPIPE).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from ..errors import DiffcoreError
from .dataset_args import add_dataset_options

__all__ = ["build_parser", "entry_point", "main"]

DTYPES = ("float16", "bfloat16", "float32", "float64")
EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 3, 130, 141
EXIT_INCONCLUSIVE = 4  # DiffReport.exit_code of a comparison that compared nothing decisive


class UsageError(DiffcoreError):
    """A command line argparse rejected; printed like any other user error."""


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are exceptions, so ``main`` prints them in one line and returns 2
    (argparse itself would print the usage block and call ``sys.exit``)."""

    def error(self, message):
        raise UsageError(f"{message} (see '{self.prog} --help')")


# ---- argument types ----------------------------------------------------------------------------------
def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = _non_negative_int(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be >= 1, got 0")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _device(text: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", text):
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def _backend_names() -> tuple:
    from ..backends import NAMES  # the registry only: no backend module is imported here

    return ("auto",) + tuple(NAMES)


EXIT_CODES_HELP = ("exit codes: 0 pass, 1 diverged (or a check failed), 2 usage or input error, 3 internal "
                   "error (DIFFCORE_DEBUG=1 shows the traceback), 4 inconclusive (nothing decisive compared)")


def _epilog(*examples: str) -> str:
    import textwrap

    codes = textwrap.fill(EXIT_CODES_HELP, 100, subsequent_indent="  ")
    return "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\n" + codes


def _subparser(sub, name: str, examples: tuple, **kwargs):
    """A subcommand parser with examples and the exit codes in its --help, and --quiet."""
    import textwrap

    if "description" in kwargs:  # the raw formatter keeps the examples' lines; wrap the prose here
        kwargs["description"] = textwrap.fill(kwargs["description"], 100)
    p = sub.add_parser(name, allow_abbrev=False, epilog=_epilog(*examples),
                       formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    p.add_argument("-q", "--quiet", action="store_true", help="print only errors and the final verdict line")
    return p


def _json_flag(p, what: str) -> None:
    # nargs='?' keeps the old bare `--json` (print to stdout) working; '-' is stdout, anything else a file.
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT",
                   help=f"write the {what} as JSON to OUT ('-' or no value: standard output, the human text "
                        "then goes to stderr)")


# ---- the parser --------------------------------------------------------------------------------------
def _add_runtime_options(parser, dtype_flags) -> None:
    for flag, help_text in dtype_flags:
        parser.add_argument(flag, choices=DTYPES, default=None, help=help_text)
    parser.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--providers", nargs="+", metavar="P", default=None,
                        help="ONNX Runtime execution providers, in order of preference")


def _add_compare(sub) -> None:
    p = _subparser(sub, "compare", ("diffcore compare model.py:build model.onnx --json report.json",
                                     "diffcore compare model.onnx model.onnx --test-dtype float16 --json - | jq .verdict",
                                     "diffcore compare model.py:build model.onnx --html report.html --model-explorer nodes.json",
                                     "diffcore compare ref_trace.npz test_trace.npz -q"),
                   help="compare two models layer by layer",
                       description="Run REF and TEST on the same inputs, compare every matched layer and "
                                   "report where they first diverge. A spec is a .onnx file, a recorded "
                                   "trace .npz, file.py:factory or package.module:factory.")
    p.add_argument("ref", metavar="REF", help="the reference model spec")
    p.add_argument("test", metavar="TEST", help="the converted model spec")
    p.add_argument("--inputs", metavar="FILE.npz|FOLDER", help="named inputs (numpy.savez), or a folder of "
                   ".npz files, one sample each (a dataset comparison); default: the model's example inputs")
    add_dataset_options(p)
    _add_runtime_options(p, [("--test-dtype", "run TEST in this dtype"), ("--ref-dtype", "run REF in this dtype")])
    p.add_argument("--test-autocast", choices=("float16", "bfloat16"), default=None,
                   help="run a torch TEST under torch.autocast in this dtype")
    p.add_argument("--ref-providers", nargs="+", metavar="P", default=None,
                   help="execution providers for REF only (e.g. CPU vs CUDA: the same model on two providers)")
    p.add_argument("--test-providers", nargs="+", metavar="P", default=None,
                   help="execution providers for TEST only")
    p.add_argument("--local", choices=("auto", "all", "none"), default="auto",
                   help="where to compute local errors (the test layer on the reference's inputs)")
    _add_tolerance(p, "")
    p.add_argument("--backend", choices=_backend_names(), default="auto", help="statistics backend")
    p.add_argument("--memory-budget-mb", type=_positive_int, default=None, metavar="MIB",
                   help="MiB of activations (both sides) captured at once; larger models run in chunks "
                        "(default 256)")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON to OUT ('-': standard output)")
    p.add_argument("--html", metavar="OUT", help="write the report as a standalone HTML page ('-': stdout)")
    p.add_argument("--model-explorer", metavar="FILE.json", default=None,
                   help="write per-node drift for Google's Model Explorer (node data) for the ONNX side: TEST "
                        "when it is ONNX, else REF")
    p.add_argument("--max-rows", type=_non_negative_int, default=60, metavar="N",
                   help="layer rows to print at most, around the first divergence (0: all; default 60)")
    p.add_argument("--wide", action="store_true", help="print every statistic's column (default: the ones "
                                                        "that fit the terminal)")
    p.add_argument("--by", choices=("module", "node"), default=None,
                   help="ONNX rows folded by module scope (default where the exporter left scopes) or one per "
                        "node")
    p.add_argument("--force", action="store_true", help="overwrite existing output files (a report diffcore "
                                                         "wrote earlier is replaced without it)")
    p.add_argument("--suggest-fp32", action="store_true",
                   help="when a float16/bfloat16 TEST fails: find layers to keep in float32 so it passes, and "
                        "prove it by running that mixed-precision model (printed after the report)")
    p.add_argument("--fp32-max-runs", type=_positive_int, default=12, metavar="N",
                   help="model runs --suggest-fp32 may use at most (default 12)")
    p.set_defaults(handler="compare")


def _add_capture(sub) -> None:
    p = _subparser(sub, "capture", ("diffcore capture model.py:build --out ref.npz",
                                     "diffcore capture model.onnx --inputs inputs.npz --out test.npz"),
                   help="record a model's activations to a trace file",
                       description="Run MODEL on the inputs and record every captured tensor to a trace "
                                   ".npz that 'diffcore compare' accepts as REF or TEST.")
    p.add_argument("model", metavar="MODEL", help="the model spec")
    p.add_argument("--inputs", metavar="FILE.npz", help="named inputs (numpy.savez); default: the model's "
                                                         "example inputs (a factory's example_inputs)")
    p.add_argument("--out", metavar="TRACE.npz", required=True, help="the trace file to write")
    _add_runtime_options(p, [("--dtype", "run the model in this dtype")])
    p.add_argument("--force", action="store_true", help="overwrite an existing trace file")
    p.set_defaults(handler="capture")


def _add_demo(sub) -> None:
    p = _subparser(sub, "demo", ("diffcore demo", "diffcore demo --out demo-files"),
                   help="compare a tiny transformer with its float16 and ONNX versions",
                       description="Build a small seeded transformer, export it to ONNX, and compare it "
                                   "with its float16 version and with ONNX Runtime.")
    p.add_argument("--out", metavar="DIR", help="directory for the ONNX file and inputs (default: a new "
                                                "temporary directory); existing files are never replaced")
    p.add_argument("--backend", choices=_backend_names(), default="auto", help="statistics backend")
    p.set_defaults(handler="demo")


def _dynamic_axes(text: str) -> tuple:
    name, sep, axes = text.rpartition(":")
    try:
        parsed = [int(a) for a in axes.split(",")] if sep and name else None
    except ValueError:
        parsed = None
    if not parsed or any(a < 0 for a in parsed):
        raise argparse.ArgumentTypeError(f"expected INPUT:AXIS[,AXIS...] (e.g. input_ids:0,1), got {text!r}")
    return name, parsed


class _AxesAction(argparse.Action):
    """Collect ``--dynamic-axes a:0,1 b:0`` into {"a": [0, 1], "b": [0]}."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, dict(values))


def _add_tolerance(p, what: str) -> None:
    p.add_argument("--atol", type=_non_negative_float, help=f"absolute tolerance (with --rtol){what}")
    p.add_argument("--rtol", type=_non_negative_float, help=f"relative tolerance (with --atol){what}")


def _add_json_outputs(p, what: str) -> None:
    _json_flag(p, what)
    p.add_argument("--out", metavar="FILE.json", help=f"also write the {what} as JSON to FILE (the same as "
                                                      "--json FILE; kept for older scripts)")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out file")


def _add_env(sub) -> None:
    p = _subparser(sub, "env", ("diffcore env", "diffcore env --json here.json",
                                 "diffcore env diff here.json there.json"),
                   help="this machine's environment manifest; 'env diff A B' compares two",
                       description="Print the environment manifest (Python, OS, CPU, numpy, torch with its "
                                   "CUDA/cuDNN/TF32 settings, onnx, onnxruntime providers, numba, cupy, "
                                   "driver and GPUs, diffcore) that every report and golden set embeds.")
    _add_json_outputs(p, "manifest")
    inner = p.add_subparsers(dest="env_command", metavar="diff", parser_class=_Parser)
    d = _subparser(inner, "diff", ("diffcore env diff here.json report.json",),
                   help="what differs between two manifests",
                         description="Compare two manifests (or files embedding one: reports, golden.json, "
                                     "validate results), those likely to change numerics first. Exit 0 when "
                                     "they match, 1 when anything differs.")
    d.add_argument("a", metavar="A.json")
    d.add_argument("b", metavar="B.json")
    _json_flag(d, "differences")
    d.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.set_defaults(handler="env")


def _add_golden(sub) -> None:
    p = _subparser(sub, "golden", ("diffcore golden record model.onnx --out golden/",
                                    "diffcore golden check model.onnx golden/ --json result.json"),
                   help="record or check a golden set",
                       description="A golden set: inputs, expected outputs (optionally every layer), the "
                                   "environment manifest and content hashes, recorded once and checked on "
                                   "any machine.")
    inner = p.add_subparsers(dest="golden_command", metavar="record|check", parser_class=_Parser)
    inner.required = True
    example = "diffcore golden record model.onnx --inputs inputs.npz --out golden/ --traces --texts texts.txt"
    r = _subparser(inner, "record", (example,), help="record a golden set",
                   description="Run MODEL and store its inputs, outputs, environment and hashes in DIR.")
    r.add_argument("model", metavar="MODEL", help="the model spec")
    r.add_argument("--inputs", metavar="FILE.npz", help="named inputs (default: the model's example inputs)")
    r.add_argument("--out", metavar="DIR", required=True, help="the golden directory to write")
    r.add_argument("--traces", action="store_true", help="also record every layer, for a per-layer check")
    r.add_argument("--texts", metavar="FILE", help="golden texts, one per line: their token ids are recorded "
                                                   "with the tokenizer artifacts")
    r.add_argument("--artifacts", nargs="+", metavar="FILE", help="files that travel with the model, or "
                   "one .artifacts.json (default: <model>.artifacts.json beside the model)")
    _add_tolerance(r, "; stored as the golden's tolerance")
    _add_runtime_options(r, [])
    r.add_argument("--force", action="store_true", help="replace an existing golden in DIR")
    r.add_argument("--key-file", metavar="FILE", help="add a keyed seal (HMAC-SHA256) with the key in FILE "
                                                      "(default: $DIFFCORE_GOLDEN_KEY when set)")
    c = _subparser(inner, "check", ("diffcore golden check model.onnx golden/",
                                     "diffcore golden check model.onnx golden/ --json - --quiet"),
                   help="check a model against a golden set",
                         description="Run MODEL on the golden inputs here and compare every output (and layer, "
                                     "when traces were recorded) with the golden; show the environment "
                                     "differences beside the drift. Exit 0 pass, 1 fail, 2 a broken golden.")
    c.add_argument("model", metavar="MODEL", help="the model spec")
    c.add_argument("golden", metavar="DIR", help="the golden directory")
    _add_tolerance(c, "; default: the golden's, else per dtype")
    _add_runtime_options(c, [])
    c.add_argument("--no-layers", action="store_true", help="skip the per-layer comparison")
    c.add_argument("--artifacts", nargs="+", metavar="FILE", help="files that travel with the model, or one "
                   ".artifacts.json (default: <model>.artifacts.json beside the model): checked against the "
                   "recorded hashes and token ids, as validate does")
    c.add_argument("--key-file", metavar="FILE", help="verify the golden's keyed seal with the key in FILE "
                                                      "(default: $DIFFCORE_GOLDEN_KEY when set)")
    _add_json_outputs(c, "result")
    p.set_defaults(handler="golden")


def _add_validate(sub) -> None:
    p = _subparser(sub, "validate", ("diffcore validate model.onnx --reference model.py:build --golden golden/",
                                      "diffcore validate model.onnx --target-gpu H100 --strict --json checks.json"),
                   help="is the converted model ready to ship? one checklist",
                       description="Check that MODEL matches its original, that its preprocessing artifacts "
                                   "are present and the validated versions, that it runs on the target "
                                   "hardware and reproduces the golden set, plus the export checks for ONNX "
                                   "(opset, dynamic axes, signature). Exit 0 when no check fails, 1 when "
                                   "one does; skipped checks say why.")
    p.add_argument("model", metavar="MODEL", help="the converted model spec")
    p.add_argument("--reference", metavar="REF", help="the original model spec")
    p.add_argument("--golden", metavar="DIR", help="a golden directory (diffcore golden record)")
    p.add_argument("--inputs", metavar="FILE.npz", help="sample inputs when there is no golden")
    p.add_argument("--artifacts", nargs="+", metavar="FILE", help="files that travel with the model, or "
                   "one .artifacts.json (default: <model>.artifacts.json beside the model)")
    _add_runtime_options(p, [])
    p.add_argument("--target-gpu", metavar="NAME", help="the target GPU (a substring of its name, e.g. H100): "
                                                         "the check fails on a machine without it")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) when any check was skipped")
    _add_tolerance(p, "")
    p.add_argument("--target-opset", type=_non_negative_int, metavar="N",
                   help="the highest opset the target runtime supports")
    p.add_argument("--dynamic-axes", nargs="+", type=_dynamic_axes, action=_AxesAction, metavar="INPUT:AXES",
                   help="axes that must be dynamic, e.g. input_ids:0,1 (default: batch and sequence guessed)")
    _add_json_outputs(p, "checklist")
    p.set_defaults(handler="validate")


def _add_report(sub) -> None:
    p = _subparser(sub, "report", ("diffcore report diff before.json after.json",),
                   help="work with saved reports: 'report diff BEFORE AFTER'",
                   description="Work with reports written by 'diffcore compare --json'.")
    inner = p.add_subparsers(dest="report_command", metavar="diff", parser_class=_Parser)
    inner.required = True
    d = _subparser(inner, "diff", ("diffcore report diff before.json after.json",
                                    "diffcore report diff before.json after.json --json - | jq .summary"),
                   help="what changed between two reports of the same models",
                   description="Compare two reports of the same models (before and after a fix): layers "
                               "fixed and regressed, where the first divergence moved. Exit 0 when nothing "
                               "regressed, 1 when anything did, 2 for a file that is not a diffcore report.")
    d.add_argument("before", metavar="BEFORE.json")
    d.add_argument("after", metavar="AFTER.json")
    d.add_argument("--all", action="store_true", help="list unchanged rows too")
    _json_flag(d, "differences")
    d.add_argument("--force", action="store_true", help="overwrite an existing --json file")
    p.set_defaults(handler="report")


def build_parser() -> argparse.ArgumentParser:
    """The ``diffcore`` argument parser (its errors raise ``UsageError``)."""
    from .. import __version__

    parser = _Parser(prog="diffcore", allow_abbrev=False,
                     description="Find where a converted model stops matching its original.",
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     epilog=_epilog("diffcore demo", "diffcore compare model.py:build model.onnx --json report.json",
                                    "diffcore validate model.onnx --reference model.py:build",
                                    "diffcore report diff before.json after.json"))
    parser.add_argument("--version", action="version", version=f"diffcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_compare(sub)
    _add_capture(sub)
    _add_demo(sub)
    _add_env(sub)
    _add_golden(sub)
    _add_validate(sub)
    _add_report(sub)
    return parser


# ---- dispatch and the exit-code policy ---------------------------------------------------------------
def _run(args) -> int:
    from ..backends import _numba_cache  # the standard library only: no Numba until a kernel is needed

    _numba_cache.set_announce(True)  # a first run's compile is announced on stderr, like every status line
    # Commands are imported on use: `diffcore --help` should not pay for numpy or the demo's torch.
    if args.handler == "demo":
        from .demo_command import run_demo

        return run_demo(args)
    if args.handler == "report":
        from .report_commands import run_report

        return run_report(args)
    if args.handler in ("env", "golden", "validate"):
        from . import deploy_commands

        return {"env": deploy_commands.run_env, "golden": deploy_commands.run_golden,
                "validate": deploy_commands.run_validate}[args.handler](args)
    from . import commands

    return {"compare": commands.run_compare, "capture": commands.run_capture}[args.handler](args)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text or type(exc).__name__


def _debug() -> bool:
    return os.environ.get("DIFFCORE_DEBUG", "").strip() not in ("", "0")


def _say(message: str) -> None:
    print(f"diffcore: {message}", file=sys.stderr)


def _exit_status(code) -> int:
    # SystemExit from --help/--version carries None or 0; anything else is treated as a usage error.
    if code is None:
        return 0
    return code if isinstance(code, int) else EXIT_USAGE


def _silence_stdout() -> None:
    # After EPIPE, Python's own flush at exit would raise again: point stdout at /dev/null.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def _check_stdout() -> None:
    # Every command prints its result: with stdout closed (`>&-`) or opened read-only, say so before any
    # model runs instead of failing after it.
    import fcntl

    if sys.stdout is None:
        raise DiffcoreError("standard output is closed: diffcore prints its result there; redirect it to a "
                            "file or /dev/null instead of closing it")
    try:
        flags = fcntl.fcntl(sys.stdout.fileno(), fcntl.F_GETFL)
    except (OSError, ValueError, AttributeError):
        return  # not a real file descriptor (a test's capture): nothing to check
    if flags & os.O_ACCMODE == os.O_RDONLY:
        raise DiffcoreError("standard output is open read-only: diffcore prints its result there; redirect "
                            "it to a file or /dev/null")


def main(argv=None) -> int:
    """Run the ``diffcore`` command line and return its exit code (never raises, never exits).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 within tolerance, 1 diverged, 2 usage or input error, 3 internal error, 4 inconclusive (see the
        module doc).
    """
    try:
        args = build_parser().parse_args(argv)
        _check_stdout()
        return _run(args)
    except SystemExit as exc:
        return _exit_status(exc.code)
    except DiffcoreError as exc:
        if _debug():
            traceback.print_exc()
        _say(f"error: {_one_line(exc)}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _say("interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception as exc:  # noqa: BLE001  (a bug: one line by default, the traceback on request)
        return _internal_error(exc)


def _internal_error(exc: Exception) -> int:
    if _debug():
        traceback.print_exc()
        _say(f"internal error: {type(exc).__name__}: {_one_line(exc)}")
    else:
        _say(f"internal error: {type(exc).__name__}: {_one_line(exc)} (set DIFFCORE_DEBUG=1 for the "
             "traceback)")
    return EXIT_INTERNAL


def entry_point() -> None:
    """The console script: ``sys.exit(main())``."""
    sys.exit(main())
