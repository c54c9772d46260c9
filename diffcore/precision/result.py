"""``Fp32Suggestion``: the float32 set found by ``suggest_fp32``, its proof run, and how to apply it."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

NOT_NEEDED = "not needed"   # the comparison already passes
FOUND = "found"             # a set whose mixed-precision run passes
NOT_FOUND = "not found"     # no set within the run budget passes


@dataclass
class OutputFigure:
    """One model output's error: relative L2 over finite values, and NaN/Inf where the reference has none."""

    name: str
    rel_l2: float
    new_nonfinite: int
    passed: bool
    finite_count: int = -1   # elements finite on both sides (-1: unknown)

    @classmethod
    def of(cls, row) -> OutputFigure:
        return cls(row.name, row.rel_l2, row.new_nonfinite, row.status in ("ok", "drift"), row.finite_count)

    def text(self) -> str:
        rel = f"{100 * self.rel_l2:.3g} %" if math.isfinite(self.rel_l2) else str(self.rel_l2)
        if self.finite_count == 0:
            rel = "n/a (no finite values)"
        return f"rel L2 {rel}, {self.new_nonfinite} NaN/Inf"


@dataclass
class Attempt:
    """One run of a mixed-precision model: the float32 set and whether the comparison passed."""

    units: list
    passed: bool
    worst_rel_l2: float
    new_nonfinite: int
    purpose: str   # "add" or "drop <unit>"


@dataclass
class Fp32Suggestion:
    """What to keep in float32 so a float16/bfloat16 model passes, proved by running it.

    ``units`` are torch module paths (``kind`` "torch cast" / "torch autocast") or ONNX node names
    ("onnx float16"). ``before``/``after`` are the outputs of the original low-precision comparison and of
    the run with ``units`` in float32 (for NOT_FOUND: the best set tried). ``minimal`` is True when dropping
    any one member was tried and failed. ``code`` applies the set.
    """

    status: str
    kind: str
    dtype: str
    units: list = field(default_factory=list)
    before: list = field(default_factory=list)      # OutputFigure
    after: list = field(default_factory=list)       # OutputFigure
    minimal: bool = False
    runs: int = 0
    max_runs: int = 0
    attempts: list = field(default_factory=list)    # Attempt
    code: str = ""
    message: str = ""
    report: object = None                           # DiffReport of the final mixed run (not serialized)

    @property
    def found(self) -> bool:
        return self.status == FOUND

    def to_dict(self) -> dict:
        data = asdict(self)
        data.pop("report", None)
        return data

    def to_text(self) -> str:
        from .text import render_suggestion

        return render_suggestion(self)

    def __str__(self) -> str:
        return self.to_text()
