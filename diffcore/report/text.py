"""The plain-text view of a ``DiffReport``: a summary block (verdict, coverage, first divergence and why,
worst output), the layer table, outputs, unmatched tensors, warnings.

Every line fits the terminal (``width``; report/table.py fits the compact columns, ``wide`` shows them all).
ONNX graphs are shown by module scope by default (report/modules.py). The first divergence is marked with
``>>`` in the leftmost column; long tables keep the lines around it (and a few at each end) and say how many
were left out. Only ASCII is used outside user-given names, so the report prints on any terminal encoding.
"""
from __future__ import annotations

import math
import textwrap

from ..local import NOT_COMPUTED
from .modules import node_lines, view_lines
from .samples import samples_section
from .table import COMPACT, format_table, target_width

__all__ = ["bands", "divergence_position", "fmt_num", "fmt_pct", "render_text"]

MARKER = ">>"
HEADERS = ("", "#", "name", "op", "shape", "rel L2 %", "max |d|", "cosine", "SNR dB", "max ULP",
           "new NaN/Inf", "local rel L2 %", "status")
COLALIGN = ("left", "right", "left", "left", "left", "right", "right", "right", "right", "right", "right",
            "right", "left")
EDGE_ROWS = 3          # rows always kept at each end of an elided table, for orientation
FINE_BAND = 1e-3       # rel L2 below 0.1 %: fine
BUG_BAND = 5e-2        # rel L2 above 5 %: a conversion bug
# The text view summarises unmatched tensors (an ONNX graph leaves hundreds); JSON and HTML list them all.
UNMATCHED_LINES = 20   # lines per side
GROUP_MIN = 3          # a reason shared by this many tensors is printed once, followed by their names
GROUP_SHOWN = 5        # names shown after a shared reason


# ---- number formatting (shared with the HTML view) ----------------------------------------------------
def fmt_num(value, digits: int = 3) -> str:
    """``value`` with ``digits`` significant digits; ``inf``/``-inf``/``nan`` spelled out, ``None`` as ``-``."""
    if value is None:
        return "-"
    value = float(value)
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{digits}g}"


def fmt_pct(fraction) -> str:
    """A relative error as a percentage with 3 significant digits (``0.0123`` -> ``1.23``)."""
    if fraction is None:
        return "-"
    return fmt_num(float(fraction) * 100.0)


def fmt_cosine(value) -> str:
    # Cosines of good layers sit at 0.9999…: significant digits would print them all as "1".
    if value is None or not math.isfinite(float(value)):
        return fmt_num(value)
    return f"{float(value):.6f}"


def fmt_snr(value) -> str:
    if value is None or not math.isfinite(float(value)):
        return fmt_num(value)
    return f"{float(value):.1f}"


HALF_DTYPES = ("float16", "bfloat16")
ULP_SHOWN_MAX = 1000   # beyond this a ULP count says nothing rel L2 does not (and near zero it explodes)


def ulp_cell(row) -> str:
    """The max ULP distance where it means something: a float16/bfloat16 test, a finite, small count."""
    value = row.max_ulp
    if str(row.test_dtype).replace("torch.", "") not in HALF_DTYPES or value is None:
        return "-"
    if not math.isfinite(float(value)) or float(value) > ULP_SHOWN_MAX:
        return "-"
    return fmt_ulp(value)


def fmt_ulp(value) -> str:
    # Whole ULPs for the usual counts; two significant digits below 100 (a correctly rounded value is <= 0.5).
    if value is None or not math.isfinite(float(value)) or abs(float(value)) >= 1e6 or abs(float(value)) < 100:
        return fmt_num(value, 2)
    return f"{float(value):.0f}"


def fmt_shape(shape) -> str:
    if shape is None:
        return "?"
    return "x".join(str(s) for s in shape) if len(shape) else "scalar"


# ---- shared helpers ----------------------------------------------------------------------------------
def bands(report) -> tuple[float, float]:
    """The (fine, conversion-bug) rel-L2 bands of the divergence rule the comparison recorded in
    ``report.tolerance["rule"]``, else the defaults (0.1 %, 5 %)."""
    tolerance = report.tolerance if isinstance(report.tolerance, dict) else {}
    rule = tolerance.get("rule") if isinstance(tolerance.get("rule"), dict) else {}
    try:
        return float(rule.get("fine_rel_l2", FINE_BAND)), float(rule.get("fail_rel_l2", BUG_BAND))
    except (TypeError, ValueError):
        return FINE_BAND, BUG_BAND


def same_row(a, b) -> bool:
    """True when ``a`` and ``b`` are the same layer (identity is lost in a JSON round trip)."""
    return a is not None and b is not None and a.index == b.index and a.name == b.name


def divergence_position(rows, first) -> int | None:
    """Position in ``rows`` of the first-divergence row, or None."""
    for pos, row in enumerate(rows):
        if same_row(row, first):
            return pos
    return None


def describe_side(side: dict) -> str:
    """One line for the ``ref``/``test`` description dict: its description, then short key=value facts."""
    if not isinstance(side, dict) or not side:
        return "(not recorded)"
    main_keys = ("description", "spec", "path")
    head = next((str(side[k]) for k in main_keys if side.get(k)), "")
    # Facts the description already states (e.g. its kind) would only repeat it.
    facts = [f"{k}={_short(v)}" for k, v in side.items()
             if k not in main_keys and _is_plain(v) and v not in (None, "", []) and _short(v) not in head]
    facts_text = f" ({', '.join(facts[:6])})" if facts else ""
    return (head + facts_text).strip() or "(not recorded)"


def describe_tolerance(tolerance: dict) -> str:
    """``atol=1e-05 rtol=0.001 (user)``, or the source alone when the test dtype's defaults applied, plus
    any other plain facts the comparison recorded (nested dicts such as the divergence rule are left out)."""
    if not isinstance(tolerance, dict) or not tolerance:
        return "(not recorded)"
    parts = [f"{k}={_short(tolerance[k])}" for k in ("atol", "rtol") if tolerance.get(k) is not None]
    source = str(tolerance.get("source") or "")
    text = " ".join(parts) + (f" ({source})" if parts and source else source)
    others = [f"{k}={_short(v)}" for k, v in tolerance.items()
              if k not in ("atol", "rtol", "source") and v is not None and _is_plain(v)]
    return (text + ("; " + ", ".join(others) if others else "")) or "(not recorded)"


def _is_plain(value) -> bool:
    if isinstance(value, (list, tuple)):
        return all(_is_plain(v) for v in value)
    return value is None or isinstance(value, (str, int, float, bool))


def _short(value) -> str:
    if isinstance(value, float):
        return fmt_num(value, 4)
    if isinstance(value, (list, tuple)):
        return ",".join(_short(v) for v in value)
    return str(value)


# ---- the table -----------------------------------------------------------------------------------------
def row_cells(row, marked: bool) -> list[str]:
    """The table cells of one ``LayerRow``, in ``HEADERS`` order (an exact row, integers or bools, has no
    cosine/SNR/ULP; its mismatches are in its cause)."""
    if getattr(row, "exact", False):
        return [MARKER if marked else "", str(row.index), row.name, row.op_type or "", fmt_shape(row.shape),
                fmt_pct(row.rel_l2), fmt_num(row.max_abs), "-", "-", "-", "", "-", f"{row.status} (exact)"]
    return [
        MARKER if marked else "", str(row.index), row.name, row.op_type or "", fmt_shape(row.shape),
        fmt_pct(row.rel_l2), fmt_num(row.max_abs), fmt_cosine(row.cosine), fmt_snr(row.snr_db),
        ulp_cell(row), fmt_nonfinite(row), fmt_pct(row.local_rel_l2), row.status,
    ]


def fmt_nonfinite(row) -> str:
    """NaN/Inf the test has where the reference has none; with ``(all)`` when no finite pair is left, so
    the error columns (over finite pairs) are not read as "no error"."""
    if not row.new_nonfinite:
        return ""
    return f"{row.new_nonfinite}" + (" (all)" if row.count and not row.finite_count else "")


def kept_positions(n: int, anchor: int | None, max_rows: int | None) -> list[int]:
    """Positions of an ``n``-row table to show: all of them, or the ends plus a window around ``anchor``."""
    if max_rows is None or n <= max_rows:
        return list(range(n))
    edge = min(EDGE_ROWS, max_rows // 4)
    window = max(max_rows - 2 * edge, 1)
    centre = n // 2 if anchor is None else anchor
    start = min(max(centre - window // 2, 0), n - window)
    keep = set(range(edge)) | set(range(start, start + window)) | set(range(n - edge, n))
    return sorted(keep)


def _elision_cells(count: int, columns: int) -> list[str]:
    cells = [""] * columns
    cells[1], cells[2] = "...", f"({count} rows elided)"
    return cells


def compact_cells(line, marked: bool) -> list[str]:
    """The cells of one ``ViewLine`` in the compact column set (``table.COMPACT``)."""
    row = line.row
    status = f"{line.status} (exact)" if getattr(row, "exact", False) and len(line.members) == 1 else line.status
    return [MARKER if marked else "", str(row.index), line.name, row.op_type or "", fmt_pct(row.rel_l2),
            fmt_pct(row.local_rel_l2), status, " ".join(str(line.note or "").split())]


def _line_cells(line, marked: bool, wide: bool) -> list[str]:
    if not wide:
        return compact_cells(line, marked)
    cells = row_cells(line.row, marked)
    cells[2] = line.name
    return cells


def table_rows(lines, first, max_rows: int | None, wide: bool = False) -> list[list[str]]:
    """Cells for the ``ViewLine``s with the first divergence marked and gaps replaced by an elision line."""
    anchor = next((pos for pos, line in enumerate(lines) if line.contains(first)), None)
    if anchor is None and lines:
        anchor = _worst_position([line.row for line in lines])
    columns = len(HEADERS) if wide else len(COMPACT)
    out, previous = [], -1
    for pos in kept_positions(len(lines), anchor, max_rows):
        if pos > previous + 1:
            out.append(_elision_cells(pos - previous - 1, columns))
        out.append(_line_cells(lines[pos], lines[pos].contains(first), wide))
        previous = pos
    if lines and previous < len(lines) - 1:
        out.append(_elision_cells(len(lines) - 1 - previous, columns))
    return out


def _worst_position(rows) -> int:
    # Without a divergence the most interesting window is the one around the largest error.
    def key(pos):
        value = rows[pos].rel_l2
        return math.inf if value is None or math.isnan(value) else value
    return max(range(len(rows)), key=key)


def _tabulate(cells, wide: bool, width: int) -> str:
    if wide:
        return format_table(HEADERS, COLALIGN, cells, None)
    return format_table([h for h, _ in COMPACT], [a for _, a in COMPACT], cells, width)


# ---- sections ------------------------------------------------------------------------------------------
def verdict_word(report) -> str:
    """``PASS``, ``FAIL`` or ``INCONCLUSIVE`` (anything else is shown upper-cased)."""
    return str(report.verdict or "fail").upper()


def coverage_text(report) -> str:
    """The coverage in one line, or "(not recorded)" for a report written before coverage existed."""
    from ..coverage import coverage_line

    try:
        return coverage_line(report.coverage) or "(not recorded)"
    except (KeyError, TypeError):
        return "(not recorded)"


def worst_output(report):
    """The model output with the largest rel L2 (NaN counts as largest), or None."""
    if not report.outputs:
        return None

    def key(row):
        value = row.rel_l2
        return math.inf if value is None or math.isnan(value) else float(value)
    return max(report.outputs, key=key)


def _row_brief(row) -> str:
    local = f", local {fmt_pct(row.local_rel_l2)} %" if row.local_rel_l2 is not None else ""
    op = f" {row.op_type}" if row.op_type else ""
    return f"{row.name} (#{row.index}{op}): rel L2 {fmt_pct(row.rel_l2)} %{local}, {row.status}"


def header_lines(report) -> list[str]:
    """The summary block: verdict, coverage, first divergence and why, worst output; then the two sides,
    the tolerance and the summary paragraph."""
    first, worst = report.first_divergence, worst_output(report)
    where = f": first divergence at {first.name} (#{first.index})" if first is not None else ""
    lines = [f"diffcore {verdict_word(report)}{where}", f"  coverage:  {coverage_text(report)}"]
    if getattr(report, "reason", ""):
        lines.append(f"  why:       {report.reason}")
    if first is not None:
        lines.append(f"  first:     {_row_brief(first)}")
        if first.cause:
            lines.append(f"  cause:     {first.cause}")
    if worst is not None:
        lines.append(f"  worst out: {_row_brief(worst)}")
    lines += [f"  ref:       {describe_side(report.ref)}", f"  test:      {describe_side(report.test)}",
              f"  tolerance: {describe_tolerance(report.tolerance)}"]
    if report.summary:
        lines += ["", report.summary]
    return lines


def mark_findings(lines, findings) -> list:
    """Give a line without a cause the finding (what a converter changed) noted on one of its rows."""
    messages = {str(f.get("message")) for f in findings or () if isinstance(f, dict) and f.get("message")}
    for line in lines:
        found = [n for m in line.members for n in m.notes if n in messages] if messages else []
        if found and not line.note:
            line.note = f"finding: {found[0]}"
    return lines


def layer_section(report, max_rows: int | None, width: int, wide: bool = False, by: str | None = None
                  ) -> list[str]:
    count = len(report.layers)
    if not count:
        return ["Layers: none matched."]
    fine, bug = bands(report)
    lines = mark_findings(view_lines(report.layers, by, report.first_divergence), report.findings)
    folded = f"; {len(lines)} lines by module scope" if len(lines) != count or by == "module" else ""
    title = f"Layers ({count}{folded}; rel L2 bands: {fmt_pct(fine)} % fine, {fmt_pct(bug)} % a conversion bug):"
    return [title, _tabulate(table_rows(lines, report.first_divergence, max_rows, wide), wide, width)]


def output_section(report, width: int, wide: bool = False) -> list[str]:
    if not report.outputs:
        return ["Outputs: none compared (see coverage; never a pass)."]
    cells = table_rows(node_lines(report.outputs), report.first_divergence, None, wide)
    notes = [f"  - {r.name}: {r.cause}" for r in report.outputs
             if r.cause and (r.exact or r.status in ("not comparable", "diverged", "carried"))]
    return [f"Outputs ({len(report.outputs)}): from the uninstrumented runs", _tabulate(cells, wide, width)] + notes


FINDINGS_SHOWN = 10    # fusion-dependent / not-comparable rows listed with their cause


SET_ASIDE = (("fusion-dependent", "Fusion-dependent findings (do not fail the deployed model)"),
             ("not comparable", "Not comparable (nothing finite on both sides)"))


def set_aside_groups(report) -> list[tuple[str, list]]:
    """(title, rows) for each status that neither passes nor fails a model (shared with the HTML view)."""
    return [(title, [r for r in report.layers if r.status == status]) for status, title in SET_ASIDE]


def set_aside_section(report) -> list[str]:
    """Rows that are neither passed nor failed, with why: fusion-dependent findings, rows with nothing
    finite to compare."""
    lines = []
    for title, rows in set_aside_groups(report):
        if rows:
            lines.append(f"{title} ({len(rows)}):")
            lines += [f"  - {r.name}: {r.cause}" for r in rows[:FINDINGS_SHOWN]]
            lines += [f"  ... and {len(rows) - FINDINGS_SHOWN} more"] if len(rows) > FINDINGS_SHOWN else []
    return lines


def local_reasons(rows) -> dict[str, list]:
    """{reason: rows} for the rows without a local error, from their notes, in order of first row. A row
    with no recorded reason is listed under "no reason recorded" rather than left out."""
    reasons: dict[str, list] = {}
    for row in rows:
        if row.local_rel_l2 is not None:
            continue
        found = [str(n)[len(NOT_COMPUTED):] for n in row.notes if str(n).startswith(NOT_COMPUTED)]
        reasons.setdefault(found[0] if found else "no reason recorded", []).append(row)
    return reasons


def local_section(report) -> list[str]:
    """Why the local-error column shows ``-``: each reason once, followed by the rows it applies to."""
    rows = list(report.layers) + list(report.outputs)
    reasons = local_reasons(rows)
    if not reasons:
        return []
    missing = sum(len(group) for group in reasons.values())
    lines = [f"Local error not computed ({missing} of {len(rows)} rows):"]
    for reason, group in reasons.items():
        names = ", ".join(r.name for r in group[:GROUP_SHOWN])
        more = f", ... and {len(group) - GROUP_SHOWN} more" if len(group) > GROUP_SHOWN else ""
        lines.append(f"  - {reason}: {names}{more}")
    return lines


def unmatched_section(report) -> list[str]:
    """Unmatched tensors grouped by side; a reason shared by many tensors is printed once with them."""
    lines = []
    sides = sorted({u.side for u in report.unmatched}, key=lambda side: (side != "ref", side != "test", side))
    for side in sides:
        items = [u for u in report.unmatched if u.side == side]
        lines.append(f"Unmatched in {side} ({len(items)}):")
        lines += _unmatched_lines(items)
    return lines


def _unmatched_lines(items) -> list[str]:
    by_reason: dict[str, list] = {}
    for item in items:
        by_reason.setdefault(item.reason, []).append(item)
    lines = []
    for reason, group in by_reason.items():
        if len(group) >= GROUP_MIN:
            names = ", ".join(_unmatched_label(u) for u in group[:GROUP_SHOWN])
            more = f", ... and {len(group) - GROUP_SHOWN} more" if len(group) > GROUP_SHOWN else ""
            lines.append(f"  - {len(group)} x {reason}: {names}{more}")
        else:
            lines += [f"  - {_unmatched_label(u)}: {u.reason}" for u in group]
    if len(lines) > UNMATCHED_LINES:
        hidden = len(lines) - UNMATCHED_LINES
        lines = lines[:UNMATCHED_LINES] + [f"  ... {hidden} more lines (the JSON and HTML reports list all)"]
    return lines


def _unmatched_label(item) -> str:
    return f"{item.key} ({item.name})" if item.name and item.name != item.key else item.key


def bullets(title: str, lines: list) -> list[str]:
    """A titled list of one-line items, or nothing when there are none."""
    return [title] + [f"  - {line}" for line in lines] if lines else []


def warning_section(report) -> list[str]:
    return bullets(f"Warnings ({len(report.warnings)}):", report.warnings)


def findings_section(report) -> list[str]:
    from ..findings import lines

    found = lines(report)
    return bullets(f"Findings ({len(found)}): what the converter or diffcore changed in the models", found)


def quantized_section(report) -> list[str]:
    from ..quant.words import lines

    return bullets("Quantized layers (what each computes in, local SQNR, error against its scales' "
                   "prediction):", lines(report))


def diagnosis_section(report) -> list[str]:
    from ..ranges import diagnosis_lines

    return bullets("Error amplifiers and range (test dtype):", diagnosis_lines(report))


def _fit_lines(section: list[str], width: int) -> list[str]:
    """Wrap the lines of a section that are wider than ``width`` (tables are fitted when built), continuing
    under their own indent."""
    out = []
    for line in section:
        if "\n" in line or len(line) <= width:
            out.append(line)
            continue
        indent = " " * (len(line) - len(line.lstrip()))
        out += textwrap.wrap(line, width, subsequent_indent=indent + "    ", break_on_hyphens=False) or [""]
    return out


def render_text(report, max_rows: int | None = 60, *, width: int | None = None, wide: bool = False,
                by: str | None = None) -> str:
    """Render ``report`` as plain text for a terminal: a summary block, then the layer table.

    Args:
        report: the ``DiffReport``.
        max_rows: table lines to show at most (None for all); longer tables keep the lines around the first
            divergence (or the largest error) and a few at each end, with a line saying how many were elided.
        width: characters per line; default the terminal's width (``$COLUMNS``), 100 when not a terminal.
        wide: every column (shape, max |d|, cosine, SNR, ULP, new NaN/Inf) at their full width.
        by: ``"module"`` (rows inside one torch module scope folded into one line, shape-only ops dropped),
            ``"node"`` (one line per row), or None: module where the rows carry shared module scopes.

    Returns:
        The report, newline-terminated.
    """
    width = target_width(width)
    sections = [header_lines(report), layer_section(report, max_rows, width, wide, by),
                output_section(report, width, wide), samples_section(report), quantized_section(report),
                diagnosis_section(report),
                findings_section(report),
                set_aside_section(report), local_section(report), unmatched_section(report),
                warning_section(report)]
    return "\n\n".join("\n".join(_fit_lines(s, width)) for s in sections if s) + "\n"
