"""The dataset section of a report: each row's error over samples (p50, p90, worst and which sample), and
how many samples fail it (diffcore/dataset). One table, shown as text, HTML and (p50..worst) on the plot."""
from __future__ import annotations

HEADERS = ["#", "name", "p50", "p90", "worst", "worst sample", "failing"]


def spread_rows(report, max_rows: int = 40) -> tuple[str, list[list], int]:
    """(title, table rows, rows left out) of the per-sample spread; an empty title for one input."""
    if not getattr(report, "dataset", None):
        return "", [], 0
    rows = [r for r in report.layers + report.outputs if getattr(r, "samples", None)]
    table = []
    for row in rows[:max_rows]:
        s = row.samples
        table.append([row.index, row.name, _pct(s.get("p50")), _pct(s.get("p90")), _pct(s.get("max")),
                      s.get("worst_sample"), f"{len(s.get('failing_samples', []))}/{s.get('count')}"])
    title = f"Over samples ({report.dataset['samples']}): rel L2 % per sample"
    return title, table, max(0, len(rows) - max_rows)


def samples_section(report, max_rows: int = 40) -> list[str]:
    """Lines of the per-sample spread table; empty for a single-input comparison."""
    from tabulate import tabulate

    title, table, left = spread_rows(report, max_rows)
    if not title:
        return []
    lines = [title] + tabulate(table, headers=HEADERS, disable_numparse=True).splitlines()
    if left:
        lines.append(f"... {left} more rows (--json has them all)")
    return lines


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.3g}"
