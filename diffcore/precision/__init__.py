"""What to keep in float32: a small set of layers that, run in float32 while the rest stays in float16 or
bfloat16, brings a failing low-precision comparison back within tolerance, proved by running it.

``suggest_fp32(ref, test, inputs, test_dtype=...)`` (or ``report.suggest_fp32(ref, test, inputs)``) handles a
torch model cast to float16/bfloat16, a torch model under autocast, and a float32 ONNX model converted to
float16 by onnxconverter-common. The search (search.py) reruns the comparison with candidate sets; torch_mixed.py
and onnx_mixed.py build the mixed-precision models. Frameworks are imported only when used.
"""
from __future__ import annotations

import os

from ..errors import DiffcoreError
from .result import NOT_NEEDED, Fp32Suggestion, OutputFigure
from .search import passes

__all__ = ["Fp32Suggestion", "exclude_from_autocast", "join_float32_islands", "keep_in_float32", "suggest_fp32"]

DEFAULT_MAX_RUNS = 12


def keep_in_float32(model, modules, dtype: str = "float16"):
    """A copy of the torch ``model`` in ``dtype`` whose ``modules`` run in float32 (torch_mixed.py)."""
    from .torch_mixed import keep_in_float32 as keep

    return keep(model, modules, dtype)


def exclude_from_autocast(model, modules) -> None:
    """Run ``modules`` of the torch ``model`` in float32 under torch.autocast, in place (torch_mixed.py)."""
    from .torch_mixed import exclude_from_autocast as exclude

    exclude(model, modules)


def join_float32_islands(model) -> int:
    """Rewire float16 round trips between float32 nodes of an onnxconverter-common model (onnx_mixed.py)."""
    from .onnx_mixed import join_float32_islands as join

    return join(model)


def _is_onnx(test) -> bool:
    if isinstance(test, (str, os.PathLike)):
        return os.fspath(test).endswith(".onnx")
    return type(test).__module__.split(".")[0] == "onnx"


def _target(test, test_dtype, test_autocast, device, keep_io_types, providers):
    """The target (how to build mixed models) and the torch example inputs of a factory spec, if any."""
    if _is_onnx(test):
        if test_autocast or test_dtype != "float16":
            raise DiffcoreError("suggest_fp32 with an ONNX TEST needs test_dtype='float16' (the float32 model, "
                                "converted by onnxconverter-common)")
        from .onnx_mixed import OnnxTarget

        return OnnxTarget(test, keep_io_types=keep_io_types, providers=providers), None
    examples = None
    if isinstance(test, str):
        from ..capture.torch_runner import load_factory

        test, examples = load_factory(test)
    from .torch_mixed import TorchTarget

    return TorchTarget(test, dtype=test_dtype, autocast=test_autocast, device=device), examples


def suggest_fp32(ref, test, inputs=None, *, test_dtype: str | None = None, test_autocast: str | None = None,
                 report=None, max_runs: int = DEFAULT_MAX_RUNS, device: str = "cpu", providers=None,
                 test_providers=None, keep_io_types: bool = True, **compare_options) -> Fp32Suggestion:
    """Find layers to keep in float32 so that TEST (in float16/bfloat16) passes against REF, and prove it.

    Args:
        ref, test, inputs, test_dtype, test_autocast, device, providers, keep_io_types: as for
            ``diffcore.compare``. TEST is a torch model (cast with ``test_dtype``, under ``test_autocast``, or
            already in float16/bfloat16) or a float32 ONNX model with ``test_dtype="float16"``.
        report: the comparison of ``ref`` and ``test`` already made with these options (else it is made).
        max_runs: at most this many runs of mixed-precision models.
        compare_options: atol, rtol, ref_dtype, ref_providers, backend, local, memory_budget_mb.

    Returns:
        Fp32Suggestion: the set (torch module paths or ONNX node names), the outputs' errors before and after,
        whether it is minimal, the runs used, and code applying it; ``status`` "not needed" when the
        comparison passes, "not found" when no set within ``max_runs`` does (with the best set tried).
    """
    from ..comparison import compare

    if int(max_runs) < 1:
        raise DiffcoreError(f"max_runs must be at least 1, got {max_runs!r}")
    target, examples = _target(test, test_dtype, test_autocast, device, keep_io_types,
                               test_providers or providers)
    inputs = examples if inputs is None else inputs
    options = dict(compare_options, device=device, providers=providers)
    if report is None:
        report = compare(ref, test, inputs, test_dtype=test_dtype, test_autocast=test_autocast,
                         keep_io_types=keep_io_types, test_providers=test_providers, **options)
    base = {"kind": target.kind, "dtype": target.dtype, "before": [OutputFigure.of(o) for o in report.outputs],
            "max_runs": int(max_runs)}
    if passes(report):
        return Fp32Suggestion(status=NOT_NEEDED, message=_not_needed(report), **base)
    return _search(ref, target, inputs, report, int(max_runs), options, base)


def _not_needed(report) -> str:
    text = "no suggestion needed: every output is within tolerance in the low-precision dtype"
    if not report.passed and report.first_divergence is not None:
        text += f" (the comparison still fails on layer {report.first_divergence.name}, not on an output)"
    return text


def _search(ref, target, inputs, report, max_runs, options, base) -> Fp32Suggestion:
    from ..comparison import compare
    from .search import search

    def run(units):
        runner = target.runner(units)
        try:
            return compare(ref, runner, inputs, **options)
        finally:
            runner.close()

    found = search(target, run, report, max_runs)
    return Fp32Suggestion(code=target.code(found["units"]) if found["units"] else "", **base, **found)
