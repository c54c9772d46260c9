"""The ``diffcore`` command line: argument parsing, dispatch, and the exit-code policy.

Exit codes: 0 within tolerance, 1 diverged, 2 a usage or input error (one line on stderr, no traceback),
3 a bug in diffcore (one line; ``DIFFCORE_DEBUG=1`` adds the traceback). 130 on Ctrl-C, and 141 when the
reader of stdout went away (what a shell reports for a process ended by SIGPIPE).
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from ..errors import DiffcoreError

__all__ = ["build_parser", "entry_point", "main"]

DTYPES = ("float16", "bfloat16", "float32", "float64")
EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 2, 3, 130, 141


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


# ---- the parser --------------------------------------------------------------------------------------
def _add_runtime_options(parser, dtype_flags) -> None:
    for flag, help_text in dtype_flags:
        parser.add_argument(flag, choices=DTYPES, default=None, help=help_text)
    parser.add_argument("--device", type=_device, default="cpu", help="cpu (default), cuda or cuda:N")
    parser.add_argument("--providers", nargs="+", metavar="P", default=None,
                        help="ONNX Runtime execution providers, in order of preference")


def _add_compare(sub) -> None:
    p = sub.add_parser("compare", allow_abbrev=False, help="compare two models layer by layer",
                       description="Run REF and TEST on the same inputs, compare every matched layer and "
                                   "report where they first diverge. A spec is a .onnx file, a recorded "
                                   "trace .npz, file.py:factory or package.module:factory.")
    p.add_argument("ref", metavar="REF", help="the reference model spec")
    p.add_argument("test", metavar="TEST", help="the converted model spec")
    p.add_argument("--inputs", metavar="FILE.npz", help="named inputs (numpy.savez); default: the model's "
                                                         "example inputs")
    _add_runtime_options(p, [("--test-dtype", "run TEST in this dtype"), ("--ref-dtype", "run REF in this dtype")])
    p.add_argument("--test-autocast", choices=("float16", "bfloat16"), default=None,
                   help="run a torch TEST under torch.autocast in this dtype")
    p.add_argument("--ref-providers", nargs="+", metavar="P", default=None,
                   help="execution providers for REF only (e.g. CPU vs CUDA: the same model on two providers)")
    p.add_argument("--test-providers", nargs="+", metavar="P", default=None,
                   help="execution providers for TEST only")
    p.add_argument("--local", choices=("auto", "all", "none"), default="auto",
                   help="where to compute local errors (the test layer on the reference's inputs)")
    p.add_argument("--atol", type=_non_negative_float, help="absolute tolerance (with --rtol)")
    p.add_argument("--rtol", type=_non_negative_float, help="relative tolerance (with --atol)")
    p.add_argument("--backend", choices=_backend_names(), default="auto", help="statistics backend")
    p.add_argument("--json", metavar="OUT", help="write the report as JSON")
    p.add_argument("--html", metavar="OUT", help="write the report as a standalone HTML page")
    p.add_argument("--max-rows", type=_non_negative_int, default=60, metavar="N",
                   help="layer rows to print at most, around the first divergence (0: all; default 60)")
    p.add_argument("--force", action="store_true", help="overwrite existing --json/--html files")
    p.set_defaults(handler="compare")


def _add_capture(sub) -> None:
    p = sub.add_parser("capture", allow_abbrev=False, help="record a model's activations to a trace file",
                       description="Run MODEL on the inputs and record every captured tensor to a trace "
                                   ".npz that 'diffcore compare' accepts as REF or TEST.")
    p.add_argument("model", metavar="MODEL", help="the model spec")
    p.add_argument("--inputs", metavar="FILE.npz", required=True, help="named inputs (numpy.savez)")
    p.add_argument("--out", metavar="TRACE.npz", required=True, help="the trace file to write")
    _add_runtime_options(p, [("--dtype", "run the model in this dtype")])
    p.add_argument("--force", action="store_true", help="overwrite an existing trace file")
    p.set_defaults(handler="capture")


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", allow_abbrev=False, help="compare a tiny transformer with its float16 and "
                                                        "ONNX versions",
                       description="Build a small seeded transformer, export it to ONNX, and compare it "
                                   "with its float16 version and with ONNX Runtime.")
    p.add_argument("--out", metavar="DIR", help="directory for the ONNX file and inputs (default: a new "
                                                "temporary directory); existing files are never replaced")
    p.add_argument("--backend", choices=_backend_names(), default="auto", help="statistics backend")
    p.set_defaults(handler="demo")


def build_parser() -> argparse.ArgumentParser:
    """The ``diffcore`` argument parser (its errors raise ``UsageError``)."""
    from .. import __version__

    parser = _Parser(prog="diffcore", allow_abbrev=False,
                     description="Find where a converted model stops matching its original.",
                     epilog="exit codes: 0 within tolerance, 1 diverged, 2 usage or input error, 3 internal "
                            "error")
    parser.add_argument("--version", action="version", version=f"diffcore {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_compare(sub)
    _add_capture(sub)
    _add_demo(sub)
    return parser


# ---- dispatch and the exit-code policy ---------------------------------------------------------------
def _run(args) -> int:
    # Commands are imported on use: `diffcore --help` should not pay for numpy or the demo's torch.
    if args.handler == "demo":
        from .demo_command import run_demo

        return run_demo(args)
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


def main(argv=None) -> int:
    """Run the ``diffcore`` command line and return its exit code (never raises, never exits).

    Args:
        argv: the arguments after the program name; ``sys.argv[1:]`` when None.

    Returns:
        0 within tolerance, 1 diverged, 2 usage or input error, 3 internal error (see the module doc).
    """
    try:
        return _run(build_parser().parse_args(argv))
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
