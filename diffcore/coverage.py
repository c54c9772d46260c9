"""How much a comparison compared, and the verdict that follows: nothing compared is never a pass.

``coverage_of`` counts, for ``DiffReport.coverage``:

- ``layers``: reference layers (probes that are not model outputs) paired with a test tensor and compared,
  of all the reference's layers;
- ``outputs``: reference model outputs paired and compared, of all of them (``test_total``: the test's);
- ``elements``: elements of the compared outputs that are finite on both sides (the population every error
  statistic is computed over; integer and bool outputs count whole), of all their elements;
  ``layer_elements`` the same over the layer rows;
- ``per_output``: ``{"name", "finite", "count", "exact"}`` for every compared output.

``decide`` gives the verdict: ``fail`` when the localization failed; else ``inconclusive`` when no model
output was compared or an output had no element finite on both sides (e.g. all NaN on both sides from a
zero attention mask), with one line saying why; else ``pass``.
"""
from __future__ import annotations

from .report.model import FAIL, INCONCLUSIVE, PASS

__all__ = ["coverage_of", "coverage_line", "decide"]


def _elements(rows) -> dict:
    return {"finite": sum(r.finite_count for r in rows), "total": sum(r.count for r in rows)}


def coverage_of(ref_probes, test_probes, layers, outputs) -> dict:
    """The coverage dict (see the module docstring) of compared ``layers`` and ``outputs`` rows."""
    ref_layers = {p.key for p in ref_probes if not p.is_output}
    paired_layers = {r.ref_tensor for r in layers} & ref_layers
    ref_outputs = [p for p in ref_probes if p.is_output]
    return {
        "layers": {"paired": len(paired_layers), "total": len(ref_layers)},
        "outputs": {"paired": len({r.ref_tensor for r in outputs}), "total": len(ref_outputs),
                    "test_total": sum(1 for p in test_probes if p.is_output)},
        "elements": _elements(outputs),
        "layer_elements": _elements(layers),
        "per_output": [{"name": r.name, "finite": r.finite_count, "count": r.count, "exact": r.exact}
                       for r in outputs],
    }


def _unpaired_outputs(unmatched, ref_probes) -> str:
    outputs = {p.key for p in ref_probes if p.is_output}
    reasons = [f"{u.key!r}: {u.reason}" for u in unmatched if u.side == "ref" and u.key in outputs]
    return f" ({'; '.join(reasons[:3])})" if reasons else ""


def decide(failed: bool, outputs, coverage: dict, unmatched=(), ref_probes=()) -> tuple[str, str]:
    """(verdict, one-line reason when inconclusive)."""
    if failed:
        return FAIL, ""
    if not outputs:
        total = coverage.get("outputs", {}).get("total", 0)
        if not total:
            return INCONCLUSIVE, "the reference has no model output that could be compared"
        return INCONCLUSIVE, (f"no model output was compared: none of the reference's {total} output(s) "
                              f"pairs with a test output by name or by position"
                              f"{_unpaired_outputs(unmatched, ref_probes)}")
    empty = [r for r in outputs if not r.comparable]
    if empty:
        row = empty[0]
        what = "is empty" if not row.count else (f"has no element finite on both sides (all {row.count} are "
                                                  "NaN/Inf)")
        return INCONCLUSIVE, f"model output {row.name!r} {what}: nothing of it was compared"
    return PASS, ""


def coverage_line(coverage: dict) -> str:
    """One line: ``12/15 reference layers, 1/1 outputs, 4096/4096 output elements finite on both sides``."""
    if not coverage:
        return ""
    layers, outputs, elements = coverage["layers"], coverage["outputs"], coverage["elements"]
    return (f"compared {layers['paired']}/{layers['total']} reference layers, {outputs['paired']}/"
            f"{outputs['total']} model outputs, {elements['finite']}/{elements['total']} output elements "
            "finite on both sides")
