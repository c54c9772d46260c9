"""Candidates for float32, from what a comparison already knows about each layer.

A row is *bad* when its test values show NaN/Inf the reference lacks, its reference values lie beyond the
test dtype's range (``overflow_risk``), the localizer marked it ``diverged``, or its error is past the 5 %
band. The next step of the search takes the earliest bad row whose layer is not yet in float32 (overflow
cascades are fixed front to back: the value must stay float32 from where it leaves the range to where it
comes back), together with the layers of the overflowing rows right after it, which cannot be float16
either. A torch target widens an overflowing module to its smallest ancestor whose output is back in range
(``TorchTarget.island``): a module's output is cast back to float16 at its boundary, so siblings cannot
pass an out-of-range value between them. When no row is bad, the layer with the largest local error goes next.
"""
from __future__ import annotations

import math

from ..localize import DivergenceRule

_FAIL = DivergenceRule.fail_rel_l2


def is_bad(row) -> bool:
    return bool(row.new_nonfinite or row.overflow_risk or row.status == "diverged"
                or (math.isfinite(row.rel_l2) and row.rel_l2 > _FAIL) or (row.local_new_nonfinite or 0))


def _rows(report) -> list:
    return list(report.layers) + list(report.outputs)


def next_step(report, target, chosen) -> list:
    """The layers to put in float32 next (in execution order), or [] when the report offers none."""
    rows = [(r, target.unit_of(r)) for r in _rows(report)]
    rows = [(r, u) for r, u in rows if u is not None]
    for i, (row, unit) in enumerate(rows):
        if not is_bad(row):
            continue
        if unit in chosen:
            step = _past_boundary(row, unit, target, chosen)
            if step:
                return step
            continue
        island = getattr(target, "island", None)
        if row.overflow_risk and island is not None:
            return [island(unit, report)]
        return _with_overflowing_followers(unit, rows[i + 1:], chosen)
    ranked = sorted((r for r, u in rows if u not in chosen and r.local_rel_l2 is not None
                     and math.isfinite(r.local_rel_l2)), key=lambda r: -r.local_rel_l2)
    return [target.unit_of(ranked[0])] if ranked else []


def _past_boundary(row, unit, target, chosen) -> list:
    """A float32 node whose output still overflows: the Cast back to float16 at its boundary does it, so
    its consumers go next (ONNX: ``OnnxTarget.consumers``)."""
    consumers = getattr(target, "consumers", None)
    if consumers is None or not (row.new_nonfinite or row.overflow_risk):
        return []
    return [c for c in consumers(unit) if c not in chosen]


def _with_overflowing_followers(unit, later_rows, chosen) -> list:
    step = [unit]
    for later, later_unit in later_rows:
        if not later.overflow_risk:
            break
        if later_unit not in step and later_unit not in chosen:
            step.append(later_unit)
    return step
