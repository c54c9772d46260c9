"""The module view of a report's layer rows: one line per torch module scope instead of one per ONNX node.

An ONNX export of a transformer block has dozens of values (every MatMul, Add, Reshape, Transpose, Cast…)
inside a handful of module scopes. The module view folds the rows that live in one scope into one line:
the module's exit value (its last row), with the worst error inside it, and drops the shape-only ops
(Reshape, Transpose, Cast…) that sit outside any scope, since they move values without computing them. A
row the localizer marks ``diverged`` is never dropped, and a line holding the first divergence says so.

The node view (``by="node"``) is one line per row, as the report holds them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

__all__ = ["SHAPE_OPS", "ViewLine", "default_view", "is_shape_only", "module_lines", "node_lines", "view_lines"]

# Ops that only move or re-type values; their error is their input's.
SHAPE_OPS = frozenset({"Reshape", "Transpose", "Cast", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Shape",
                       "Expand", "CastLike"})
# Ops that are shape-only when they compute on integer shape tensors (compared exactly).
SHAPE_WHEN_INTEGER = frozenset({"Gather", "Concat", "Slice", "Range", "ConstantOfShape", "Mul", "Add", "Div",
                                "Sub", "Equal", "Where", "ReduceProd"})
VIEWS = ("module", "node")
# Worse statuses win when a module line summarizes its rows.
_SEVERITY = {"diverged": 5, "carried": 4, "not comparable": 3, "fusion-dependent": 2, "drift": 1, "ok": 0}


@dataclass
class ViewLine:
    """One line of a layer table: ``row`` gives its numbers (a module's exit value), ``members`` the rows
    it stands for (itself alone in the node view)."""

    row: object                       # LayerRow shown
    name: str                         # the module path (module view) or the row's name
    members: list = field(default_factory=list)
    status: str = ""                  # the worst status of the members
    note: str = ""                    # short cause or what the line folds

    def contains(self, other) -> bool:
        """True when ``other`` (a LayerRow) is one of the rows this line stands for."""
        return any(m.index == other.index and m.name == other.name for m in self.members) if other else False


def is_shape_only(row) -> bool:
    """True for a row whose op only moves, re-types or computes the shape of values."""
    op = row.op_type or ""
    return op in SHAPE_OPS or (op in SHAPE_WHEN_INTEGER and bool(getattr(row, "exact", False)))


def default_view(rows) -> str:
    """``module`` where rows carry module scopes and several share one (an ONNX graph), else ``node``."""
    scopes = [r.module for r in rows if r.module]
    return "module" if scopes and len(set(scopes)) < len(rows) else "node"


def node_lines(rows) -> list[ViewLine]:
    """One line per row."""
    return [ViewLine(r, r.name, [r], r.status, r.cause) for r in rows]


def _worst_status(rows) -> str:
    return max((r.status for r in rows), key=lambda s: _SEVERITY.get(s, 0))


def _rel(row) -> float:
    value = row.rel_l2
    return math.inf if value is None or math.isnan(value) else float(value)


def _module_line(module: str, members: list, first) -> ViewLine:
    exit_row = members[-1]
    line = ViewLine(exit_row, module, members, _worst_status(members))
    held = next((m for m in members if first is not None and m.index == first.index and m.name == first.name),
                None)
    worst = max(members, key=_rel)
    if held is not None:
        line.note = f"first divergence at {held.name}" + (f": {held.cause}" if held.cause else "")
    elif worst is not exit_row and _rel(worst) > _rel(exit_row):
        from .text import fmt_pct

        line.note = f"worst {fmt_pct(worst.rel_l2)} % at {worst.name}" + (f": {worst.cause}" if worst.cause
                                                                          else "")
    else:
        line.note = exit_row.cause or (f"{len(members)} values" if len(members) > 1 else "")
    return line


def module_lines(rows, first=None) -> list[ViewLine]:
    """Rows folded by module scope (each line placed at its module's last row); shape-only rows outside any
    scope dropped unless the localizer marked them diverged."""
    groups: dict[str, list] = {}
    for row in rows:
        if row.module:
            groups.setdefault(row.module, []).append(row)
    last = {id(members[-1]): module for module, members in groups.items()}
    lines = []
    for row in rows:
        if row.module:
            if id(row) in last:
                lines.append(_module_line(last[id(row)], groups[last[id(row)]], first))
        elif not is_shape_only(row) or row.status == "diverged":
            lines.append(ViewLine(row, row.name, [row], row.status, row.cause))
    return lines


def view_lines(rows, by: str | None, first=None) -> list[ViewLine]:
    """The lines of ``rows`` in view ``by`` (``"module"``, ``"node"`` or None: ``default_view``)."""
    from ..errors import DiffcoreError, format_choices

    by = by or default_view(rows)
    if by not in VIEWS:
        raise DiffcoreError(f"unknown view {by!r}; valid: {format_choices(VIEWS)}")
    return module_lines(rows, first) if by == "module" else node_lines(rows)
