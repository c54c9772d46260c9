"""The dataset report: merged rows, the worst and failing samples per row, the spread of error over samples,
the first divergence across the set and a verdict over the set.

Verdict over the set: ``fail`` when any sample fails; else ``inconclusive`` when any sample is (a sample on
which nothing decisive was compared never lets the set pass); else ``pass``. A merged row's status is the
worst status any sample gave it (diverged > carried > fusion-dependent > drift > ok), with that sample's
cause; its statistics are the exact merge of every sample (merge.py); its local error is the largest of
the samples' (local errors are not merged).
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np

from ..report.model import (
    CARRIED,
    DIVERGED,
    DRIFT,
    FAIL,
    FUSED,
    INCONCLUSIVE,
    NOT_COMPARABLE,
    OK,
    PASS,
    LayerRow,
)
from .merge import RowMerger

SEVERITY = {NOT_COMPARABLE: 0, OK: 1, DRIFT: 2, FUSED: 3, CARRIED: 4, DIVERGED: 5}
FAILING = (DIVERGED, CARRIED)


@dataclass
class _RowSeries:
    """One row (by name) across samples."""

    template: LayerRow
    merger: RowMerger = field(default_factory=RowMerger)
    mergeable: bool = True
    rel_l2: dict = field(default_factory=dict)      # sample -> rel L2
    local: dict = field(default_factory=dict)       # sample -> local rel L2
    worst: tuple = (-1, None)                       # (severity, sample index, row) of the worst status
    failing: list = field(default_factory=list)

    def add(self, index: int, row: LayerRow) -> None:
        state = getattr(row, "merge_state", None)
        if state is None:
            self.mergeable = False
        elif self.mergeable:
            stats = state[1]
            self.merger.add(state[0], stats.shape, (stats.ref_dtype, stats.test_dtype, stats.tolerance,
                                                    stats.backend))
        self.rel_l2[index] = row.rel_l2
        if row.local_rel_l2 is not None:
            self.local[index] = row.local_rel_l2
        severity = SEVERITY.get(row.status, 0)
        if severity > self.worst[0] or (severity == self.worst[0] and _larger(row.rel_l2, self.worst[2].rel_l2)):
            self.worst = (severity, index, row)
        if row.status in FAILING:
            self.failing.append(index)

    def merged_row(self) -> LayerRow:
        worst_row = self.worst[2]
        if self.mergeable and self.merger.elements:
            t = self.template
            row = LayerRow.from_stats(self.merger.finalize(), index=t.index, name=t.name, ref_tensor=t.ref_tensor,
                                      test_tensor=t.test_tensor, op_type=t.op_type, match=t.match, notes=t.notes)
            row.module = t.module
            for name in ("precision", "predicted_rel_l2"):
                setattr(row, name, getattr(worst_row, name))
        else:  # an exactly compared (integer) row: the worst sample's row stands for the set
            row = copy.copy(worst_row)
        row.local_rel_l2 = max(self.local.values()) if self.local else None
        row.status = worst_row.status
        failing = worst_row.status in FAILING and worst_row.cause
        row.cause = f"sample {self.worst[1]}: {worst_row.cause}" if failing else worst_row.cause
        row.samples = self.spread()
        return row

    def spread(self) -> dict:
        values = np.array([v for v in self.rel_l2.values() if not math.isnan(v)], dtype=np.float64)
        worst = self.worst[1]  # the worst status first (a failing sample), then the largest error
        out = {"count": len(self.rel_l2), "worst_sample": int(worst), "worst_rel_l2": float(self.rel_l2[worst]),
               "failing_samples": list(self.failing)}
        if values.size:
            out.update(p50=float(np.percentile(values, 50)), p90=float(np.percentile(values, 90)),
                       max=float(values.max()))
        return out


class DatasetBuilder:
    """Collects per-sample reports (``add`` in sample order) into one dataset report (``report``)."""

    def __init__(self):
        self.count = 0
        self.layers: dict = {}
        self.outputs: dict = {}
        self.verdicts: dict = {}
        self.reasons: dict = {}
        self.first: dict = {}  # sample -> (index, name) of its first divergence
        self.last = None
        self.merge_seconds = 0.0  # the driver's own work: merging rows (timings["merge"] of the report)

    def add(self, index: int, report) -> None:
        start = time.perf_counter()
        self._add(index, report)
        self.merge_seconds += time.perf_counter() - start

    def _add(self, index: int, report) -> None:
        self.count += 1
        for rows, series in ((report.layers, self.layers), (report.outputs, self.outputs)):
            for row in rows:
                series.setdefault(row.name, _RowSeries(row)).add(index, row)
        self.verdicts[index] = report.verdict
        if report.reason:
            self.reasons[index] = report.reason
        if report.first_divergence is not None:
            self.first[index] = (report.first_divergence.index, report.first_divergence.name)
        self.last = report

    def report(self):
        start = time.perf_counter()
        base = copy.copy(self.last)
        base.layers = sorted((s.merged_row() for s in self.layers.values()), key=lambda r: r.index)
        base.outputs = [s.merged_row() for s in self.outputs.values()]
        base.verdict, base.reason = self._verdict()
        base.first_divergence = self._first_divergence(base.layers)
        base.dataset = self._summary()
        base.summary = self._summary_text(base)
        base.timings = {**base.timings, "merge": round(self.merge_seconds + time.perf_counter() - start, 6)}
        return base

    def _verdict(self) -> tuple[str, str]:
        failing = [k for k, v in self.verdicts.items() if v == FAIL]
        inconclusive = [k for k, v in self.verdicts.items() if v == INCONCLUSIVE]
        if failing:
            return FAIL, ""
        if inconclusive:
            k = inconclusive[0]
            return INCONCLUSIVE, (f"{len(inconclusive)} of {self.count} samples inconclusive ({_list(inconclusive)}); "
                                  f"sample {k}: {self.reasons.get(k, '')}")
        return PASS, ""

    def _first_divergence(self, layers):
        if not self.first:
            return None
        _, name = min(self.first.values())
        return next((r for r in layers if r.name == name), None)

    def _summary(self) -> dict:
        first = min(self.first.values())[1] if self.first else None
        return {
            "samples": self.count,
            "verdicts": {v: sum(1 for x in self.verdicts.values() if x == v) for v in (PASS, FAIL, INCONCLUSIVE)},
            "failing_samples": [k for k, v in self.verdicts.items() if v == FAIL],
            "inconclusive_samples": [k for k, v in self.verdicts.items() if v == INCONCLUSIVE],
            "first_divergence": first,
            "first_divergence_samples": [k for k, (_, n) in self.first.items() if n == first],
        }

    def _summary_text(self, report) -> str:
        d = report.dataset
        head = f"{report.verdict.upper()} over {d['samples']} samples: {d['verdicts'][FAIL]} fail"
        if d["verdicts"][INCONCLUSIVE]:
            head += f", {d['verdicts'][INCONCLUSIVE]} inconclusive"
        parts = [head + (f" ({_list(d['failing_samples'])})" if d["failing_samples"] else "") + "."]
        if d["first_divergence"]:
            parts.append(f"First divergence across the set: {d['first_divergence']}, in samples "
                         f"{_list(d['first_divergence_samples'])}.")
        for row in report.outputs:
            s = getattr(row, "samples", None) or {}
            if "max" in s:
                parts.append(f"Output {row.name!r}: rel L2 over the set {100 * row.rel_l2:.3g} %; per sample p50 "
                             f"{100 * s['p50']:.3g} %, p90 {100 * s['p90']:.3g} %, worst {100 * s['max']:.3g} % "
                             f"(sample {s['worst_sample']}).")
        if report.reason:
            parts.append(report.reason)
        return " ".join(parts)


def _larger(a: float, b: float) -> bool:
    """``a > b`` with NaN below every number (a NaN error is judged by the status, not by its size)."""
    return not math.isnan(a) and (math.isnan(b) or a > b)


def _list(indices, limit: int = 10) -> str:
    shown = ", ".join(str(k) for k in indices[:limit])
    return shown + (f", ... ({len(indices)} in all)" if len(indices) > limit else "")
