"""The search for a float32 set: add layers greedily until the comparison passes, then prune.

Every step runs the mixed-precision model through ``diffcore.compare`` against the reference: the fresh
report gives the next candidates (candidates.py), and its verdict is the proof. Pruning drops each member
in turn and keeps it dropped when the comparison still passes, so no member of the result can be dropped.
The number of runs is bounded by ``max_runs``.
"""
from __future__ import annotations

import math

from .candidates import next_step
from .result import FOUND, NOT_FOUND, Attempt, OutputFigure


def passes(report) -> bool:
    """Every model output is within tolerance (no new NaN/Inf, under the 5 % band, within atol/rtol when
    given), and there were outputs to compare: nothing compared is never a pass. Layer rows do not count:
    a module inside a float32 island, run alone for its local error, gets float16 inputs it never sees in
    the mixed model."""
    return bool(report.outputs) and all(o.status in ("ok", "drift") for o in report.outputs)


def _score(report) -> tuple:
    """Smaller is better: failing outputs, NaN/Inf, worst output error."""
    outs = report.outputs
    failing = sum(o.status not in ("ok", "drift") for o in outs) if outs else math.inf
    nonfinite = sum(o.new_nonfinite for o in outs)
    worst = max((o.rel_l2 for o in outs if math.isfinite(o.rel_l2)), default=math.inf)
    return (not passes(report), failing, nonfinite, worst)


class Search:
    def __init__(self, target, run, max_runs: int):
        self.target, self.run_units, self.max_runs = target, run, max_runs
        self.attempts: list[Attempt] = []
        self.best = None  # (score, units, report)

    @property
    def runs(self) -> int:
        return len(self.attempts)

    def _run(self, units, purpose: str):
        report = self.run_units(list(units))
        outs = report.outputs
        self.attempts.append(Attempt(list(units), passes(report),
                                     max((o.rel_l2 for o in outs), default=math.nan),
                                     sum(o.new_nonfinite for o in outs), purpose))
        score = _score(report)
        if self.best is None or score < self.best[0]:
            self.best = (score, list(units), report)
        return report

    def grow(self, report) -> tuple[list, object]:
        """Add layers until a run passes or the budget or the candidates run out."""
        chosen: list = []
        while self.runs < self.max_runs:
            step = next_step(report, self.target, set(chosen))
            if not step:
                break
            chosen += step
            report = self._run(chosen, "add " + ", ".join(step))
            if passes(report):
                return chosen, report
        return chosen, None

    def prune(self, chosen, report) -> tuple[list, object, bool]:
        """Drop members that are not needed; minimal when every member's drop was tried."""
        for unit in list(chosen):
            if len(chosen) == 1:
                return chosen, report, True  # the empty set is the failing comparison itself
            if self.runs >= self.max_runs:
                return chosen, report, False
            trial = [u for u in chosen if u != unit]
            attempt = self._run(trial, f"drop {unit}")
            if passes(attempt):
                chosen, report = trial, attempt
        return chosen, report, True


def search(target, run, initial, max_runs: int) -> dict:
    """Grow then prune; the fields of an Fp32Suggestion (status, units, after, minimal, ...)."""
    s = Search(target, run, max_runs)
    chosen, report = s.grow(initial)
    if report is None:
        units, best = (s.best[1], s.best[2]) if s.best else ([], initial)
        return {"status": NOT_FOUND, "units": units, "report": best, "minimal": False,
                "attempts": s.attempts, "runs": s.runs, "after": [OutputFigure.of(o) for o in best.outputs],
                "message": _not_found_message(s, initial) + _no_better(s, initial)}
    chosen, report, minimal = s.prune(chosen, report)
    return {"status": FOUND, "units": chosen, "report": report, "minimal": minimal, "attempts": s.attempts,
            "runs": s.runs, "after": [OutputFigure.of(o) for o in report.outputs],
            "message": ""}


def _no_better(s, initial) -> str:
    if s.best is not None and s.best[0] >= _score(initial):
        return "; no set tried did better than the low-precision model itself"
    return ""


def _not_found_message(s, initial) -> str:
    if s.runs >= s.max_runs:
        return f"the budget of {s.max_runs} runs was spent before any set passed (raise max_runs)"
    if not s.runs:
        return "the comparison names no layer of the test model that could run in float32"
    return "no further candidate layer: the comparison's rows name no other layer of the test model"
