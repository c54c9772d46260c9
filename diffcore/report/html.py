"""The HTML view of a ``DiffReport``: a notebook fragment (``_repr_html_``) and a standalone page.

The fragment is self-contained: inline CSS scoped under ``.diffcore-report`` and an inline SVG sparkline of
the error against depth, so it renders without matplotlib or network access. Every string that came from a
model or a user (names, descriptions, reasons, warnings) goes through ``html.escape``.
"""
from __future__ import annotations

import html
import math

from .text import (
    HEADERS,
    bands,
    coverage_text,
    describe_side,
    describe_tolerance,
    fmt_num,
    fmt_pct,
    local_reasons,
    row_cells,
    same_row,
    set_aside_groups,
    verdict_word,
)

__all__ = ["render_html", "render_page", "row_card", "sparkline_svg"]

STYLE = """
.diffcore-report{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;font-size:13px;line-height:1.4}
.diffcore-report .dc-verdict{display:inline-block;padding:1px 8px;border-radius:3px;color:#fff;font-weight:600}
.diffcore-report .dc-pass{background:#2e7d32}
.diffcore-report .dc-fail{background:#c62828}
.diffcore-report .dc-inconclusive{background:#6d4c41}
.diffcore-report .dc-facts td{padding:0 8px 0 0;text-align:left;border:none}
.diffcore-report .dc-scroll{max-height:480px;overflow:auto}
.diffcore-report table.dc-rows{border-collapse:collapse}
.diffcore-report table.dc-rows th{position:sticky;top:0;background:#f5f5f5;text-align:right;padding:2px 6px}
.diffcore-report table.dc-rows td{text-align:right;padding:1px 6px;border-bottom:1px solid #eee;
  font-variant-numeric:tabular-nums}
.diffcore-report table.dc-rows td.dc-text{text-align:left;font-family:ui-monospace,Menlo,Consolas,monospace}
.diffcore-report .dc-status{border-radius:3px;padding:0 5px;text-align:center}
.diffcore-report .dc-s-ok{color:#1b5e20;background:#e8f5e9}
.diffcore-report .dc-s-drift{color:#7a4f01;background:#fff3cd}
.diffcore-report .dc-s-diverged{color:#fff;background:#c62828}
.diffcore-report .dc-s-carried{color:#b71c1c;background:#fde0dc}
.diffcore-report .dc-s-not-comparable{color:#4e342e;background:#efebe9}
.diffcore-report .dc-s-fusion-dependent{color:#4a148c;background:#f3e5f5}
.diffcore-report tr.dc-first td{background:#ffcdd2;font-weight:600}
.diffcore-report tr.dc-first td:first-child{box-shadow:inset 3px 0 0 #c62828}
.diffcore-report svg{display:block;margin:6px 0}
"""

# Text columns are left-aligned and monospaced; the marker column of the text view is dropped.
_TEXT_COLUMNS = {"name", "op", "shape"}
_SPARK_W, _SPARK_H, _PAD = 640, 110, 8


def _e(value) -> str:
    return html.escape(str(value), quote=True)


# ---- tables --------------------------------------------------------------------------------------------
def _header_row() -> str:
    return "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in HEADERS[1:]) + "</tr>"


def _row_html(row, first) -> str:
    cells = row_cells(row, marked=False)[1:]
    tds = []
    for header, cell in zip(HEADERS[1:], cells):
        if header == "status":
            status = str(row.status).replace(" ", "-")
            tds.append(f'<td><span class="dc-status dc-s-{_e(status)}" title="{_e(row.cause)}">{_e(cell)}'
                       "</span></td>")
        else:
            klass = ' class="dc-text"' if header in _TEXT_COLUMNS else ""
            tds.append(f"<td{klass}>{_e(cell)}</td>")
    klass = "dc-first" if same_row(row, first) else f"dc-row-{_e(str(row.status).replace(' ', '-'))}"
    title = f' title="{_e(row.cause)}"' if row.cause else ""
    return f'<tr class="{klass}"{title}>' + "".join(tds) + "</tr>"


def rows_table(rows, first) -> str:
    """A scrollable table of ``LayerRow``s with the first divergence highlighted."""
    body = "".join(_row_html(r, first) for r in rows)
    return (f'<div class="dc-scroll"><table class="dc-rows"><thead>{_header_row()}</thead>'
            f"<tbody>{body}</tbody></table></div>")


_CARD_FIELDS = (("status", "status"), ("rel L2 %", "rel_l2"), ("local rel L2 %", "local_rel_l2"),
                ("max |d|", "max_abs"), ("op", "op_type"), ("shape", "shape"), ("dtypes", None),
                ("cause", "cause"))


def _card_value(row, label: str, attr) -> str:
    if attr is None:
        return f"{row.ref_dtype} -> {row.test_dtype}"
    value = getattr(row, attr)
    if attr in ("rel_l2", "local_rel_l2"):
        return fmt_pct(value)
    if attr == "max_abs":
        return fmt_num(value)
    return "-" if value in (None, "", []) else str(value)


def row_card(row) -> str:
    """A ``LayerRow`` as a small two-column table of its key fields (its notebook view)."""
    status = str(row.status).replace(" ", "-")
    body = "".join(f"<tr><td>{_e(label)}</td><td>{_e(_card_value(row, label, attr))}</td></tr>"
                   for label, attr in _CARD_FIELDS)
    return (f'<div class="diffcore-report"><style>{STYLE}</style><b>#{row.index} {_e(row.name)}</b> '
            f'<span class="dc-status dc-s-{_e(status)}">{_e(row.status)}</span>'
            f'<table class="dc-facts">{body}</table></div>')


# ---- sparkline -----------------------------------------------------------------------------------------
def _log_values(values):
    """log10 of each value; zeros go to a floor below the smallest positive value, non-finite to None."""
    positive = [v for v in values if v is not None and math.isfinite(v) and v > 0]
    floor = min(positive) / 10 if positive else 1e-9
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(None)
        else:
            out.append(math.log10(max(v, floor)))
    return out


def _scales(n: int, lows_highs):
    lo, hi = min(lows_highs) - 0.3, max(lows_highs) + 0.3
    inner_w, inner_h = _SPARK_W - 2 * _PAD, _SPARK_H - 2 * _PAD

    def x(pos):
        return _PAD + (inner_w * pos / (n - 1) if n > 1 else inner_w / 2)

    def y(logv):
        return _PAD + inner_h * (hi - logv) / (hi - lo)
    return x, y


def _polyline(points, colour: str) -> str:
    coords = " ".join(f"{px:.1f},{py:.1f}" for px, py in points)
    return f'<polyline points="{coords}" fill="none" stroke="{colour}" stroke-width="1.5"/>'


def _dot(px: float, py: float, colour: str) -> str:
    return f'<circle cx="{px:.1f}" cy="{py:.1f}" r="1.8" fill="{colour}"/>'


def _band_line(y_px: float, label: str, colour: str) -> str:
    return (f'<line x1="{_PAD}" x2="{_SPARK_W - _PAD}" y1="{y_px:.1f}" y2="{y_px:.1f}" stroke="{colour}" '
            f'stroke-dasharray="4 3" stroke-width="1"/><text x="{_SPARK_W - _PAD}" y="{y_px - 2:.1f}" '
            f'font-size="10" text-anchor="end" fill="{colour}">{_e(label)}</text>')


def sparkline_svg(report) -> str:
    """An inline SVG of rel L2 error against depth (log scale) with the 0.1 % / 5 % bands, local error
    as dots where computed, non-finite layers as red crosses at the top, and the first divergence ringed."""
    rows = report.layers
    if not rows:
        return ""
    fine, bug = bands(report)
    logs = _log_values([r.rel_l2 for r in rows])
    locals_ = _log_values([r.local_rel_l2 for r in rows])
    known = [v for v in logs + locals_ if v is not None] + [math.log10(fine), math.log10(bug)]
    x, y = _scales(len(rows), known)
    top = _PAD
    parts = [_band_line(y(math.log10(fine)), f"{fmt_pct(fine)} %", "#2e7d32"),
             _band_line(y(math.log10(bug)), f"{fmt_pct(bug)} %", "#c62828"),
             _polyline([(x(i), y(v)) for i, v in enumerate(logs) if v is not None], "#1565c0")]
    # Local error is often computed for a few layers only: dots, since a line would invent the gaps.
    parts += [_dot(x(i), y(v), "#8e24aa") for i, v in enumerate(locals_) if v is not None]
    parts += [_cross(x(i), top + 3, rows[i].name) for i, v in enumerate(logs) if v is None]
    parts.append(_first_marker(report, rows, logs, x, y))
    title = "rel L2 error against depth (log scale)"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{_SPARK_W}" height="{_SPARK_H}" '
            f'viewBox="0 0 {_SPARK_W} {_SPARK_H}" role="img" aria-label="{_e(title)}" class="dc-sparkline">'
            f"<title>{_e(title)}</title>" + "".join(parts) + "</svg>")


def _cross(px: float, py: float, name: str) -> str:
    return (f'<g><title>{_e(name)}: non-finite error</title><path d="M{px - 3:.1f},{py - 3:.1f}l6,6m0,-6l-6,6" '
            f'stroke="#c62828" stroke-width="1.5"/></g>')


def _first_marker(report, rows, logs, x, y) -> str:
    first = report.first_divergence
    pos = next((i for i, r in enumerate(rows) if same_row(r, first)), None)
    if pos is None:
        return ""
    px = x(pos)
    py = y(logs[pos]) if logs[pos] is not None else _PAD + 3
    return (f'<g class="dc-first-divergence"><title>first divergence: {_e(first.name)}</title>'
            f'<line x1="{px:.1f}" x2="{px:.1f}" y1="{_PAD}" y2="{_SPARK_H - _PAD}" stroke="#c62828" '
            f'stroke-width="1" opacity="0.5"/><circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="none" '
            f'stroke="#c62828" stroke-width="2"/></g>')


# ---- sections ------------------------------------------------------------------------------------------
def _header(report) -> str:
    verdict = verdict_word(report)
    klass = {"PASS": "dc-pass", "INCONCLUSIVE": "dc-inconclusive"}.get(verdict, "dc-fail")
    first = report.first_divergence
    where = (f" first divergence at <code>{_e(first.name)}</code> (#{_e(first.index)})"
             if first is not None else "")
    facts = [("ref", describe_side(report.ref)), ("test", describe_side(report.test)),
             ("tolerance", describe_tolerance(report.tolerance)), ("coverage", coverage_text(report))]
    if getattr(report, "reason", ""):
        facts.append(("why", report.reason))
    if first is not None and first.cause:
        facts.append(("cause", first.cause))
    rows = "".join(f"<tr><td><b>{_e(k)}</b></td><td>{_e(v)}</td></tr>" for k, v in facts)
    summary = f"<p>{_e(report.summary)}</p>" if report.summary else ""
    return (f'<div><span class="dc-verdict {klass}">{verdict}</span>{where}</div>'
            f'<table class="dc-facts">{rows}</table>{summary}')


def _layers(report) -> str:
    if not report.layers:
        return "<h4>Layers</h4><p>No layers matched.</p>"
    legend = ('<div style="font-size:11px;color:#555">rel L2 error against depth (log scale): line = '
              "end to end, purple dots = local (the test layer on the reference's inputs)</div>")
    return (f"<h4>Layers ({len(report.layers)})</h4>{legend}{sparkline_svg(report)}"
            f"{rows_table(report.layers, report.first_divergence)}")


def _outputs(report) -> str:
    if not report.outputs:
        return "<h4>Outputs</h4><p>No outputs compared (see coverage; never a pass).</p>"
    causes = "".join(f"<li><code>{_e(r.name)}</code>: {_e(r.cause)}</li>" for r in report.outputs if r.cause)
    return (f"<h4>Outputs ({len(report.outputs)}, from the uninstrumented runs)</h4>"
            f"{rows_table(report.outputs, report.first_divergence)}" + (f"<ul>{causes}</ul>" if causes else ""))


def _set_aside(report) -> str:
    """Fusion-dependent and not-comparable rows with their causes (the text view's section)."""
    parts = []
    for title, rows in set_aside_groups(report):
        if rows:
            lis = "".join(f"<li><code>{_e(r.name)}</code>: {_e(r.cause)}</li>" for r in rows)
            parts.append(f"<h4>{_e(title)} ({len(rows)})</h4><ul>{lis}</ul>")
    return "".join(parts)


def _local_missing(report) -> str:
    """Why the local-error column shows ``-``: each reason with the rows it applies to."""
    rows = list(report.layers) + list(report.outputs)
    reasons = local_reasons(rows)
    if not reasons:
        return ""
    missing = sum(len(group) for group in reasons.values())
    lis = "".join(f'<li class="dc-local-reason">{_e(reason)}: {_names(group)}</li>'
                  for reason, group in reasons.items())
    return f"<h4>Local error not computed ({missing} of {len(rows)} rows)</h4><ul>{lis}</ul>"


def _names(rows) -> str:
    return ", ".join(f"<code>{_e(r.name)}</code>" for r in rows)


def _unmatched(report) -> str:
    if not report.unmatched:
        return ""
    parts = []
    for side in sorted({u.side for u in report.unmatched}, key=lambda s: (s != "ref", s != "test", s)):
        items = [u for u in report.unmatched if u.side == side]
        lis = "".join(f"<li><code>{_e(u.key)}</code>{_unmatched_name(u)}: {_e(u.reason)}</li>" for u in items)
        parts.append(f"<details><summary>Unmatched in {_e(side)} ({len(items)})</summary><ul>{lis}</ul>"
                     "</details>")
    return "<h4>Unmatched</h4>" + "".join(parts)


def _unmatched_name(item) -> str:
    return f" ({_e(item.name)})" if item.name and item.name != item.key else ""


def _bullet_list(title: str, lines: list) -> str:
    """A titled list of one-line items (escaped), or nothing when there are none."""
    if not lines:
        return ""
    return f"<h4>{_e(title)}</h4><ul>" + "".join(f"<li>{_e(line)}</li>" for line in lines) + "</ul>"


def _samples(report) -> str:
    """The per-sample spread of a dataset comparison (report/samples.py)."""
    from .samples import HEADERS, spread_rows

    title, table, left = spread_rows(report)
    if not title:
        return ""
    head = "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in HEADERS) + "</tr>"
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in table)
    more = f"<p>{left} more rows in the JSON.</p>" if left else ""
    return f"<h4>{_e(title)}</h4><table>{head}{body}</table>{more}"


def _warnings(report) -> str:
    return _bullet_list("Warnings", report.warnings)


def _findings(report) -> str:
    from ..findings import lines

    return _bullet_list("Findings: what the converter or diffcore changed", lines(report))


def _quantized(report) -> str:
    from ..quant.words import lines

    return _bullet_list("Quantized layers (what each computes in, local SQNR, error against its scales' "
                        "prediction)", lines(report))


def _diagnosis(report) -> str:
    from ..ranges import diagnosis_lines

    return _bullet_list("Error amplifiers and range (test dtype)", diagnosis_lines(report))


def render_html(report) -> str:
    """An HTML fragment for Jupyter (``DiffReport._repr_html_``).

    Args:
        report: the ``DiffReport``.

    Returns:
        A ``<div class="diffcore-report">`` with its own scoped ``<style>``: verdict and summary, a sparkline
        of rel L2 error against depth, the layer table with the first divergence highlighted, the outputs,
        unmatched tensors and warnings.
    """
    body = "".join([_header(report), _layers(report), _outputs(report), _samples(report), _quantized(report),
                    _diagnosis(report),
                    _findings(report), _set_aside(report),
                    _local_missing(report), _unmatched(report),
                    _warnings(report)])
    return f'<div class="diffcore-report"><style>{STYLE}</style>{body}</div>'


def render_page(report) -> str:
    """A standalone HTML document around ``render_html``'s fragment (for ``--html`` files)."""
    verdict = verdict_word(report)
    first = report.first_divergence
    title = f"diffcore {verdict}" + (f": {first.name}" if first is not None else "")
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n"
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            "</head>\n<body>\n" + render_html(report) + "\n</body>\n</html>\n")
