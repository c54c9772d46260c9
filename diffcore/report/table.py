"""Layer tables that fit a terminal: the compact column set, or every column (``wide``).

The compact set is ``#, name, op, rel L2 %, local % (the local rel L2), status, why``. When the table is wider than the
target width the ``why`` column is shortened first, then the name (in the middle, keeping the end of a
module path, which says the most); when that is not enough ``why`` is dropped, then the op shortened.
"""
from __future__ import annotations

import os
import shutil
import sys

__all__ = ["COMPACT", "format_table", "shorten_middle", "target_width"]

NOT_A_TTY_WIDTH = 100
# name -> alignment, in display order
COMPACT = (("", "left"), ("#", "right"), ("name", "left"), ("op", "left"), ("rel L2 %", "right"),
           ("local %", "right"), ("status", "left"), ("why", "left"))
GAP = "  "
MIN_NAME, MIN_WHY, MIN_OP = 24, 20, 6
ELLIPSIS = "..."


def target_width(width: int | None = None) -> int:
    """``width`` if given; else ``$COLUMNS``, the terminal's width when stdout is a terminal, or 100."""
    if width is not None:
        return max(int(width), 40)
    if os.environ.get("COLUMNS", "").isdigit():
        return max(int(os.environ["COLUMNS"]), 40)
    try:
        if sys.stdout is not None and sys.stdout.isatty():
            return max(shutil.get_terminal_size((NOT_A_TTY_WIDTH, 24)).columns, 40)
    except (AttributeError, ValueError, OSError):
        pass
    return NOT_A_TTY_WIDTH


def shorten_middle(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, cut in the middle (three quarters of what is kept is the end)."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return text[-limit:] if limit > 0 else ""
    keep = limit - len(ELLIPSIS)
    head = keep // 4
    return text[:head] + ELLIPSIS + text[len(text) - (keep - head):]


def shorten_end(text: str, limit: int) -> str:
    """``text`` within ``limit`` characters, cut at the end."""
    if len(text) <= limit:
        return text
    return text[: max(limit - len(ELLIPSIS), 0)] + ELLIPSIS[: limit]


def _widths(headers, rows) -> list[int]:
    return [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]


def _total(widths) -> int:
    return sum(widths) + len(GAP) * (len(widths) - 1)


def _shrink(headers, rows, width: int, order) -> list:
    """Shorten the cells of the ``order`` columns (name, floor, how) in turn, each down to its floor, until
    the table fits ``width`` (or nothing more can give); rows are changed in place."""
    widths = _widths(headers, rows)
    for column, floor, cut in order:
        excess = _total(widths) - width
        if excess <= 0 or column not in headers:
            continue
        i = headers.index(column)
        limit = max(widths[i] - excess, min(floor, widths[i]))
        for row in rows:
            row[i] = cut(row[i], limit)
        widths[i] = max([len(headers[i])] + [len(r[i]) for r in rows])
    return widths


def fit_columns(headers, rows, width: int) -> tuple[list, list]:
    """(headers, rows) with the ``why``, ``name`` and ``op`` cells shortened so every line is at most
    ``width`` characters; without the ``why`` column when the names would otherwise be cut to their floor."""
    fitted = [list(r) for r in rows]
    keep_why = (("why", MIN_WHY, shorten_end), ("name", MIN_NAME, shorten_middle))
    if _total(_shrink(list(headers), fitted, width, keep_why)) <= width or "why" not in headers:
        return list(headers), fitted
    i = list(headers).index("why")
    headers = [h for k, h in enumerate(headers) if k != i]
    rows = [[c for k, c in enumerate(r) if k != i] for r in rows]
    _shrink(headers, rows, width, (("name", MIN_NAME, shorten_middle), ("op", MIN_OP, shorten_end)))
    return headers, rows


def format_table(headers, aligns, rows, width: int | None) -> str:
    """A plain table (header, dashes, rows); fitted to ``width`` when given. Trailing blanks are stripped."""
    align_of = dict(zip(headers, aligns))
    if width is not None:
        headers, rows = fit_columns(headers, rows, width)
    widths = _widths(headers, rows)

    def line(cells):
        parts = [c.rjust(w) if align_of.get(h) == "right" else c.ljust(w)
                 for h, c, w in zip(headers, cells, widths)]
        return GAP.join(parts).rstrip()
    out = [line(headers), GAP.join("-" * w for w in widths)]
    return "\n".join(out + [line(r) for r in rows])
