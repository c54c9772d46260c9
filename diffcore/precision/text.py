"""The text view of an ``Fp32Suggestion`` (printed by ``diffcore compare --suggest-fp32``)."""
from __future__ import annotations

from .result import FOUND, NOT_NEEDED


def render_suggestion(s) -> str:
    head = f"What to keep in float32 ({s.kind}, {s.dtype})"
    lines = [head, "-" * len(head)]
    if s.status == NOT_NEEDED:
        return "\n".join(lines + [s.message or "no suggestion needed: the comparison already passes", ""])
    lines += _set_lines(s) + _figure_lines(s)
    lines.append(f"  model runs: {s.runs} of at most {s.max_runs}")
    if s.message:
        lines.append(f"  {s.message}")
    if s.status == FOUND and s.code:
        lines += ["  apply it:"] + ["    " + line for line in s.code.splitlines()]
    return "\n".join(lines + [""])


def _set_lines(s) -> list:
    if s.status == FOUND:
        minimal = "minimal: dropping any one fails" if s.minimal else "not proved minimal (run budget spent)"
        lines = [f"  {len(s.units)} in float32 bring every output within tolerance ({minimal}):"]
    else:
        lines = [f"  NO set within {s.max_runs} runs passes; the best set tried ({len(s.units)}):"]
    return lines + [f"    {u}" for u in s.units]


def _figure_lines(s) -> list:
    lines = ["  verified by running the mixed-precision model (outputs, before -> after):"]
    after = {f.name: f for f in s.after}
    for before in s.before:
        now = after.get(before.name)
        lines.append(f"    {before.name}: {before.text()}  ->  {now.text() if now else 'not compared'}")
    return lines
