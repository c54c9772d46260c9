"""Did my fix help? Two reports of the same comparison, before and after a change, side by side.

Layers are matched across the reports by name (the torch module path or ONNX value name), then by the
reference tensor. A layer is *fixed* when its status improved (diverged/carried -> drift/ok, or
diverged -> carried), *regressed* when it got worse, *unchanged* otherwise; a layer in one report only is
listed as such. The first divergence's move is stated, and the comparison of the two verdicts. Any
regression (a layer, an output, or the verdict) makes the CLI exit 1.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ..errors import DiffcoreError
from .model import CARRIED, DIVERGED, DRIFT, OK

_RANK = {OK: 0, DRIFT: 1, CARRIED: 2, DIVERGED: 3}
_VERDICT_RANK = {"pass": 0, "inconclusive": 1, "fail": 2}
FIXED, REGRESSED, UNCHANGED, ONLY_BEFORE, ONLY_AFTER = "fixed", "regressed", "unchanged", "only before", \
    "only after"


@dataclass
class RowChange:
    """One layer (or output) in both reports."""

    name: str
    change: str                    # fixed | regressed | unchanged | only before | only after
    status_before: str | None
    status_after: str | None
    rel_l2_before: float | None
    rel_l2_after: float | None
    local_before: float | None
    local_after: float | None
    is_output: bool = False


@dataclass
class ReportDiff:
    """What changed between two reports (``DiffReport.diff``)."""

    verdict_before: str
    verdict_after: str
    first_before: str | None
    first_after: str | None
    rows: list = field(default_factory=list)   # RowChange, in the after report's order, then dropped rows

    def count(self, change: str) -> int:
        return sum(1 for r in self.rows if r.change == change)

    @property
    def regressed(self) -> bool:
        worse_verdict = _VERDICT_RANK.get(self.verdict_after, 2) > _VERDICT_RANK.get(self.verdict_before, 2)
        return worse_verdict or self.count(REGRESSED) > 0

    @property
    def exit_code(self) -> int:
        return 1 if self.regressed else 0

    @property
    def summary(self) -> str:
        moved = _first_moved(self.first_before, self.first_after)
        return (f"verdict {self.verdict_before} -> {self.verdict_after}; {moved}; {self.count(FIXED)} fixed, "
                f"{self.count(REGRESSED)} regressed, {self.count(UNCHANGED)} unchanged"
                + (f", {self.count(ONLY_BEFORE)} only before" if self.count(ONLY_BEFORE) else "")
                + (f", {self.count(ONLY_AFTER)} only after" if self.count(ONLY_AFTER) else ""))

    def to_dict(self) -> dict:
        return {"schema_version": "diffcore.report-diff/1", "summary": self.summary,
                "regressed": self.regressed, **{k: v for k, v in asdict(self).items()}}

    def to_text(self, changed_only: bool = True) -> str:
        from tabulate import tabulate

        shown = [r for r in self.rows if r.change != UNCHANGED or not changed_only]
        table = [(r.name + (" (output)" if r.is_output else ""), r.change,
                  f"{r.status_before or '-'} -> {r.status_after or '-'}",
                  f"{_pct(r.rel_l2_before)} -> {_pct(r.rel_l2_after)}",
                  f"{_pct(r.local_before)} -> {_pct(r.local_after)}") for r in shown]
        head = ("REGRESSED: " if self.regressed else "OK: ") + self.summary
        if not table:
            return head + "\nno layer changed status."
        return head + "\n" + tabulate(table, headers=["layer", "change", "status", "rel L2", "local rel L2"])

    def __str__(self) -> str:
        return self.to_text()


def _pct(value) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.3g} %" if math.isfinite(value) else str(value)


def _first_moved(before, after) -> str:
    if before == after:
        return "first divergence unchanged" + (f" ({before})" if before else " (none)")
    if after is None:
        return f"first divergence gone (was {before})"
    if before is None:
        return f"first divergence appeared at {after}"
    return f"first divergence moved from {before} to {after}"


def _key(row) -> tuple:
    return row.name, row.ref_tensor


def _index(rows) -> tuple[dict, dict]:
    by_name, by_ref = {}, {}
    for row in rows:
        by_name.setdefault(row.name, row)
        by_ref.setdefault(row.ref_tensor, row)
    return by_name, by_ref


def _change(before, after) -> str:
    rank_before, rank_after = _RANK.get(before.status, 3), _RANK.get(after.status, 3)
    if rank_after < rank_before:
        return FIXED
    return REGRESSED if rank_after > rank_before else UNCHANGED


def _row_change(name, before, after, is_output) -> RowChange:
    change = ONLY_AFTER if before is None else ONLY_BEFORE if after is None else _change(before, after)
    get = lambda row, attr: None if row is None else getattr(row, attr)  # noqa: E731
    return RowChange(name, change, get(before, "status"), get(after, "status"), get(before, "rel_l2"),
                     get(after, "rel_l2"), get(before, "local_rel_l2"), get(after, "local_rel_l2"), is_output)


def _diff_rows(before_rows, after_rows, is_output: bool) -> list:
    by_name, by_ref = _index(before_rows)
    seen, changes = set(), []
    for row in after_rows:
        old = by_name.get(row.name) or by_ref.get(row.ref_tensor)
        if old is not None:
            seen.add(id(old))
        changes.append(_row_change(row.name, old, row, is_output))
    changes += [_row_change(r.name, r, None, is_output) for r in before_rows if id(r) not in seen]
    return changes


def diff_reports(before, after) -> ReportDiff:
    """Compare two DiffReports of the same models (see the module docstring).

    Raises:
        DiffcoreError: the reports were written under different report schemas.
    """
    if before.schema_version != after.schema_version:
        raise DiffcoreError(f"cannot diff reports of different schemas: {before.schema_version!r} vs "
                            f"{after.schema_version!r}; re-run both comparisons with one diffcore version")
    name = lambda row: None if row is None else row.name  # noqa: E731
    rows = _diff_rows(before.layers, after.layers, False) + _diff_rows(before.outputs, after.outputs, True)
    return ReportDiff(before.verdict, after.verdict, name(before.first_divergence),
                      name(after.first_divergence), rows)


def load_report(path):
    """A DiffReport from a JSON file written by ``compare --json``, checked against the published report
    schema (DiffcoreError, one line, for anything else)."""
    from ..files import decode_nonfinite, read_json
    from .model import DiffReport, check_report_document

    what = f"report {path}"
    data = check_report_document(read_json(path, "report"), what)
    try:
        return DiffReport.from_dict(decode_nonfinite(data))
    except (KeyError, TypeError, ValueError) as exc:
        raise DiffcoreError(f"{path} is not a diffcore report: {exc}") from None
