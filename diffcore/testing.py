"""Assertions for test suites, in the manner of ``torch.testing.assert_close``.

    from diffcore.testing import assert_close

    def test_export_matches(model, tmp_path):
        torch.onnx.export(model, args, tmp_path / "m.onnx", ...)
        assert_close(model, tmp_path / "m.onnx", inputs)

A failing (or inconclusive) comparison raises ``AssertionError`` whose message is the report's summary and
first divergence; the exception carries the report as ``.report``, which diffcore's pytest plugin
(``diffcore.pytest_plugin``, registered as a pytest11 entry point) attaches to the test's report as HTML.
"""
from __future__ import annotations

__all__ = ["assert_close", "DiffcoreAssertionError"]


class DiffcoreAssertionError(AssertionError):
    """An AssertionError that carries the DiffReport that failed (``.report``)."""

    def __init__(self, message: str, report):
        super().__init__(message)
        self.report = report


def failure_message(report) -> str:
    """The lines a person reads first: the verdict's summary, the first divergent row, where to look next."""
    lines = [report.summary]
    first = report.first_divergence
    if first is not None:
        local = "-" if first.local_rel_l2 is None else f"{100 * first.local_rel_l2:.3g} %"
        lines.append(f"first divergence: {first.name} [{first.op_type or '?'}] rel L2 "
                     f"{100 * first.rel_l2:.3g} %, local {local}, status {first.status}: {first.cause}")
    lines.extend(f"warning: {w}" for w in report.warnings[:3])
    return "\n".join(lines)


def assert_close(ref, test, inputs=None, *, atol=None, rtol=None, **compare_options):
    """Compare ``ref`` with ``test`` layer by layer (``diffcore.compare``) and raise unless it passes.

    Args:
        ref, test, inputs: as for :func:`diffcore.compare` (modules, ONNX paths, factories, traces).
        atol, rtol: element tolerance, both or neither (default: the divergence rule alone).
        **compare_options: anything else :func:`diffcore.compare` takes (``test_dtype``, ``providers``...).

    Returns:
        DiffReport: the passing report, for further checks.

    Raises:
        DiffcoreAssertionError: the comparison failed or was inconclusive (nothing comparable is never a
            pass); its message is the summary and the first divergence, ``.report`` the whole report.
        DiffcoreError: bad models or inputs, as from ``compare``.
    """
    from .comparison import compare

    report = compare(ref, test, inputs, atol=atol, rtol=rtol, **compare_options)
    if report.verdict != "pass":
        raise DiffcoreAssertionError(failure_message(report), report)
    return report
