"""The dataset section of the text report: each row's error over samples (p50, p90, worst and which
sample), and how many samples fail it (diffcore/dataset)."""
from __future__ import annotations

from tabulate import tabulate


def samples_section(report, max_rows: int = 40) -> list[str]:
    """Lines of the per-sample spread table; empty for a single-input comparison."""
    if not getattr(report, "dataset", None):
        return []
    rows = [r for r in report.layers + report.outputs if getattr(r, "samples", None)]
    table = []
    for row in rows[:max_rows]:
        s = row.samples
        table.append([row.index, row.name, _pct(s.get("p50")), _pct(s.get("p90")), _pct(s.get("max")),
                      s.get("worst_sample"), f"{len(s.get('failing_samples', []))}/{s.get('count')}"])
    head = f"Over samples ({report.dataset['samples']}): rel L2 % per sample"
    lines = [head] + tabulate(table, headers=["#", "name", "p50", "p90", "worst", "worst sample", "failing"],
                              disable_numparse=True).splitlines()
    if len(rows) > max_rows:
        lines.append(f"... {len(rows) - max_rows} more rows (--json has them all)")
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.3g}"
