"""Checklist rows and results: what every deployment check returns and how a checklist prints."""
from __future__ import annotations

import json
import textwrap
from dataclasses import dataclass, field

from ..files import encode_nonfinite

__all__ = ["CheckRow", "ChecklistResult", "PASS", "FAIL", "SKIP", "SCHEMA"]

PASS, FAIL, SKIP = "pass", "fail", "skip"
SCHEMA = "diffcore.validate/1"
_DETAIL_WIDTH = 78


@dataclass
class CheckRow:
    """One check of the checklist.

    Attributes:
        check: the check's name ("golden set", "export: dynamic axes", ...).
        status: ``"pass"``, ``"fail"`` or ``"skip"`` (a skip always says why: never a silent pass).
        detail: what was found, in words.
        fix: what to do about a failure (or how to run a skipped check).
        data: machine-readable details for JSON.
    """

    check: str
    status: str
    detail: str
    fix: str = ""
    data: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.status not in (PASS, FAIL, SKIP):
            raise ValueError(f"status must be pass, fail or skip, got {self.status!r}")

    def __bool__(self) -> bool:
        return self.status != FAIL

    def to_dict(self) -> dict:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix,
                "data": encode_nonfinite(self.data)}


def passed(check: str, detail: str, **data) -> CheckRow:
    return CheckRow(check, PASS, detail, "", data)


def failed(check: str, detail: str, fix: str, **data) -> CheckRow:
    return CheckRow(check, FAIL, detail, fix, data)


def skipped(check: str, reason: str, fix: str = "", **data) -> CheckRow:
    return CheckRow(check, SKIP, reason, fix, data)


@dataclass
class ChecklistResult:
    """The result of ``diffcore.deploy.validate``: truthy when no check failed (skips do not fail).

    Attributes:
        rows: CheckRow in checklist order.
        model: the model spec validated.
        environment: the environment manifest of this run.
        created: ISO 8601 UTC time of the run.
    """

    rows: list
    model: str = ""
    environment: dict = field(default_factory=dict)
    created: str = ""
    findings: list = field(default_factory=list)  # what diffcore or a converter changed (diffcore/findings.py)
    schema_version: str = SCHEMA
    strict: bool = False  # --strict: a skipped check fails the checklist (nothing unchecked ships)

    @property
    def passed(self) -> bool:
        return not self.failures and not (self.strict and self.skips)

    @property
    def skips(self) -> list:
        return [r for r in self.rows if r.status == SKIP]

    def __bool__(self) -> bool:
        return self.passed

    @property
    def failures(self) -> list:
        return [r for r in self.rows if r.status == FAIL]

    @property
    def exit_code(self) -> int:
        """0 when no check failed, 1 otherwise (the CLI's convention)."""
        return 0 if self.passed else 1

    def row(self, check: str) -> CheckRow:
        """The row of ``check`` (KeyError listing the checks when there is none)."""
        for row in self.rows:
            if row.check == check:
                return row
        raise KeyError(f"no check {check!r}; checks: {', '.join(r.check for r in self.rows)}")

    def counts(self) -> dict:
        return {s: sum(r.status == s for r in self.rows) for s in (PASS, FAIL, SKIP)}

    def to_dict(self) -> dict:
        return {"schema_version": self.schema_version, "verdict": "pass" if self.passed else "fail",
                "model": self.model, "created": self.created, "counts": self.counts(), "strict": self.strict,
                "skipped": [r.check for r in self.skips], "verdict_line": self.verdict_line(),
                "checks": [r.to_dict() for r in self.rows], "findings": encode_nonfinite(self.findings),
                "environment": self.environment}

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=str)

    def to_text(self) -> str:
        """The checklist table (check, status, detail with the fix below it) and the verdict line."""
        return (render_table(self.rows) + "\n" + self._findings_block() + self._skips_block()
                + self.verdict_line() + "\n")

    def _skips_block(self) -> str:
        """Every skipped check with what would make it run: a skip is something not checked, never a pass."""
        if not self.skips:
            return ""
        lines = [f"  - {r.check}: skipped — {r.fix or r.detail}" for r in self.skips]
        return f"Not checked ({len(lines)}):\n" + "\n".join(lines) + "\n"

    def _findings_block(self) -> str:
        if not self.findings:
            return ""
        lines = [f"  - {f['kind']}: {f['message']}" for f in self.findings]
        return f"Findings ({len(lines)}): what the converter or diffcore changed, and input casts\n" + \
            "\n".join(lines) + "\n"

    def verdict_line(self) -> str:
        """``VALIDATE PASS``/``FAIL`` with the counts, naming what was not checked: a PASS with skips says
        so ("PASS (6 checks skipped: ...)"), and under ``strict`` the skips are the failure."""
        c = self.counts()
        word = "PASS" if self.passed else "FAIL"
        if self.skips:
            names = ", ".join(r.check for r in self.skips)
            plural = "check" if len(self.skips) == 1 else "checks"
            word += f" ({'strict: ' if self.strict else ''}{len(self.skips)} {plural} skipped: {names})"
        return f"VALIDATE {word}: {c[PASS]} passed, {c[FAIL]} failed, {c[SKIP]} skipped"

    def __str__(self) -> str:
        return self.to_text()


def render_table(rows) -> str:
    """A plain-text table of CheckRows; long details wrap, a fix follows its detail after ``->``."""
    from .._deps import require

    tabulate = require("tabulate", "text tables").tabulate
    cells = []
    for row in rows:
        text = _wrap(row.detail)
        if row.fix and row.status != PASS:
            text += "\n" + _wrap("-> " + row.fix, indent="   ")
        cells.append([row.check, row.status.upper(), text])
    return tabulate(cells, headers=["check", "status", "detail"], disable_numparse=True, tablefmt="simple")


def _wrap(text: str, indent: str = "") -> str:
    return "\n".join(textwrap.wrap(text, _DETAIL_WIDTH, subsequent_indent=indent, break_long_words=True,
                                   break_on_hyphens=False)) or "-"
