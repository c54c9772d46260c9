"""Checking a model against a golden set (``check_golden``) and what it finds (``GoldenResult``).

Split from golden.py, which records, writes and loads golden sets; ``diffcore.deploy.golden`` re-exports
everything here.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from .. import env
from ..arrays import host_values
from ..errors import DiffcoreError, format_choices
from ..files import encode_nonfinite
from .envdiff import env_diff
from .golden import Golden, _check_pair, _machine, _model_file, _open, load_golden
from .golden_store import resolve_key

__all__ = ["GoldenResult", "OutputCheck", "check_golden"]


@dataclass
class OutputCheck:
    """One model output against its golden value."""

    name: str             # the golden's name
    live_name: str        # the model's name for it
    stats: object         # DriftStats, or None when it could not be compared
    problem: str = ""     # why it fails, in words ('' when it passes)

    @property
    def passed(self) -> bool:
        return not self.problem

    def to_dict(self) -> dict:
        stats = self.stats
        return {"name": self.name, "live_name": self.live_name, "passed": self.passed, "problem": self.problem,
                "stats": None if stats is None else {
                    k: stats.to_dict()[k] for k in ("shape", "ref_dtype", "test_dtype", "count", "max_abs",
                                                    "rel_l2", "cosine", "mismatch_count", "nan_test",
                                                    "inf_test", "tolerance")}}


@dataclass
class GoldenResult:
    """What ``check_golden`` found: truthy when every output (and every layer, with a trace) matches.

    Attributes:
        outputs: OutputCheck per golden output.
        layers: the per-layer DiffReport (recorded trace vs the model now), or None without a trace.
        environment: EnvDiff, recorded -> here, numerics-relevant first.
        notes: things worth knowing that do not fail the check (a different model file, ...).
        golden: the Golden checked against.
        checks: CheckRows of the recorded artifacts (same files?) and the golden texts' token ids (same
            tokenization here?), as ``validate`` checks them; a failing one fails the golden check.
    """

    outputs: list
    environment: object
    golden: Golden
    model: str = ""
    layers: object = None
    notes: list = field(default_factory=list)
    here: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return (all(o.passed for o in self.outputs) and (self.layers is None or self.layers.passed)
                and all(self.checks))

    def __bool__(self) -> bool:
        return self.passed

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1

    def summary(self) -> str:
        """One line: the verdict with the worst output and the environment differences."""
        worst = max((o for o in self.outputs if o.stats is not None), key=lambda o: o.stats.rel_l2,
                    default=None)
        failing = [o for o in self.outputs if not o.passed]
        if failing:
            text = f"{len(failing)} of {len(self.outputs)} output(s) differ from the golden: {failing[0].problem}"
        else:
            text = f"{len(self.outputs)} output(s) match the golden"
            if worst is not None:
                text += f" (worst rel L2 {_pct(worst.stats.rel_l2)} % on {worst.name!r})"
        if self.layers is not None:
            text += "; per layer: " + _layers_summary(self.layers)
        failed = [c for c in self.checks if not c]
        if failed:
            text += "; " + "; ".join(f"{c.check} FAIL: {c.detail}" for c in failed)
        text += "; " + self.environment.summary()
        return "; ".join([text] + [f"note: {n}" for n in self.notes])

    def to_dict(self) -> dict:
        layers = None
        if self.layers is not None:
            first = self.layers.first_divergence
            layers = {"verdict": self.layers.verdict, "summary": self.layers.summary,
                      "first_divergence": None if first is None else first.name}
        return encode_nonfinite({"schema_version": "diffcore.golden-check/1", "verdict": "pass" if self.passed else "fail",
                         "model": self.model, "golden": self.golden.directory,
                         "recorded": self.golden.meta.get("created"), "outputs": [o.to_dict() for o in self.outputs],
                         "layers": layers, "checks": [c.to_dict() for c in self.checks],
                         "environment_diff": self.environment.to_dict(), "notes": self.notes,
                         "environment": self.here})

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False, default=_json_default)

    def to_text(self) -> str:
        """Verdict, per-output table, per-layer summary, and the environment differences beside them."""
        lines = [f"Golden check of {self.model} against {self.golden.directory}",
                 f"  {self.golden.summary()}", f"  checked on {_machine(self.here)}", "",
                 f"Outputs ({len(self.outputs)}):", _outputs_table(self.outputs)]
        if self.layers is not None:
            lines += ["", "Per layer (recorded trace vs the model now): " + _layers_summary(self.layers)]
        if self.checks:
            from .checklist import render_table

            lines += ["", "Recorded artifacts and token ids:", render_table(self.checks)]
        lines += ["", "Environment differences (recorded -> here), numerics-relevant first:",
                  self.environment.to_text()]
        lines += ["", f"GOLDEN {'PASS' if self.passed else 'FAIL'}: {self.summary()}", ""]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_text()


def _json_default(obj):
    if isinstance(obj, np.generic):
        return obj.item()
    return str(obj)


def _pct(value) -> str:
    from ..report.text import fmt_pct

    return fmt_pct(value)


def _layers_summary(report) -> str:
    if report.first_divergence is None:
        return f"{len(report.layers)} layers compared, no divergence ({report.verdict})"
    row = report.first_divergence
    return (f"first divergence at {row.name!r} (rel L2 {_pct(row.rel_l2)} %) of {len(report.layers)} layers: "
            f"{report.summary}")


def _outputs_table(outputs) -> str:
    from .._deps import require
    from ..report.text import fmt_num

    tabulate = require("tabulate", "text tables").tabulate
    cells = []
    for o in outputs:
        s = o.stats
        if s is None:
            cells.append([o.name, "-", "-", "-", "-", "-", "-", "FAIL: " + o.problem])
            continue
        cells.append([o.name, s.test_dtype, "x".join(map(str, s.shape)) or "scalar", fmt_num(s.max_abs),
                      _pct(s.rel_l2), f"{s.mismatch_count}/{s.count}",
                      f"{s.tolerance.atol:g}/{s.tolerance.rtol:g}", "PASS" if o.passed else "FAIL"])
    return tabulate(cells, headers=["output", "dtype", "shape", "max |d|", "rel L2 %", "mismatches",
                                    "atol/rtol", "status"], disable_numparse=True, tablefmt="simple")


def check_golden(model, golden, *, atol=None, rtol=None, device: str = "cpu", providers=None,
                 layers: bool = True, runner=None, key=None, artifacts=None,
                 verify_artifacts: bool = True) -> GoldenResult:
    """Run ``model`` on the golden inputs here and compare with the golden outputs (and layers).

    Args:
        model: a model spec (see ``diffcore.compare``), or an opened Runner.
        golden: a golden directory or a loaded Golden.
        atol, rtol: override the golden's tolerance (both or neither); default: the recorded tolerance, else
            the defaults of each output's dtype.
        device, providers: where to run.
        layers: with a recorded trace, also compare every layer (``diffcore.compare(trace, model)``).
        runner: an already opened Runner of ``model`` to use (left open).
        key: verify the golden's keyed seal with this key (default: $DIFFCORE_GOLDEN_KEY, if set).
        artifacts: the files that travel with the model here (default: ``<model>.artifacts.json`` beside it).
        verify_artifacts: check the recorded artifacts (same files) and token ids (same tokenization), as
            ``validate`` does; validate itself passes False (it has its own rows for them).

    Returns:
        GoldenResult (truthy when it passes), with the environment differences recorded -> here.

    Raises:
        GoldenIntegrityError: a golden file is missing, truncated or edited (nothing of it was read).
        DiffcoreError: the model cannot be loaded or run on the golden inputs.
    """
    _check_pair(atol, rtol)
    golden = golden if isinstance(golden, Golden) else load_golden(golden, key=key)
    if atol is None:
        atol, rtol = golden.tolerance.get("atol"), golden.tolerance.get("rtol")
    here = env.collect()
    opened = runner is None
    runner = _open(model, device, providers) if opened else runner
    try:
        live = runner.outputs(golden.inputs)
        report = _layer_report(golden, runner, atol, rtol) if layers and golden.trace is not None else None
        kind = runner.kind
    finally:
        if opened and runner is not model:
            runner.close()
    notes = []
    recorded_checks = _recorded_checks(golden, model, artifacts) if verify_artifacts else []
    checks = _compare_outputs(golden, live, atol, rtol, notes)
    notes += _model_notes(golden, model, kind)
    if "hmac" in golden.meta and resolve_key(key) is None:
        notes.append("the golden carries a keyed seal that was not verified: give the key (--key-file or "
                     "DIFFCORE_GOLDEN_KEY) to detect forgery, not only corruption")
    diff = env_diff(golden.environment, here, labels=("recorded", "here"))
    spec = model if isinstance(model, str) else type(model).__name__
    return GoldenResult(checks, diff, golden, spec, report, notes, here, recorded_checks)


def _recorded_checks(golden: Golden, model, artifacts) -> list:
    """The artifact and token-id rows of validate, for what the golden recorded (nothing when it recorded
    neither artifacts nor texts: those checks have nothing to compare)."""
    import os

    from .artifacts import check_artifacts, check_tokens, declared_artifacts

    if not golden.artifacts and not golden.texts:
        return []
    declared = declared_artifacts(model if isinstance(model, (str, os.PathLike)) else None, artifacts)
    rows = [check_artifacts(declared, golden.artifacts or [])]
    if golden.texts:
        rows.append(check_tokens(declared, golden.texts, golden.tokens))
    return rows


def _layer_report(golden: Golden, runner, atol, rtol):
    from ..capture.trace import Trace
    from ..comparison import compare

    trace = golden.trace if isinstance(golden.trace, Trace) else Trace.load(golden.trace)
    return compare(trace, runner, None, atol=atol, rtol=rtol)


def _pairing(golden: Golden, live: dict, notes: list) -> list:
    """[(golden name, live name)]: by name, else by position when the counts agree."""
    names, live_names = list(golden.outputs), list(live)
    if set(names) <= set(live_names):
        return [(n, n) for n in names]
    if len(names) == len(live_names):
        notes.append(f"output names differ (golden {format_choices(names)}, model {format_choices(live_names)}):"
                     " compared by position")
        return list(zip(names, live_names))
    raise DiffcoreError(f"the model's outputs {format_choices(live_names)} do not match the golden's "
                        f"{format_choices(names)}: is this the model the golden was recorded from?")


def _compare_outputs(golden: Golden, live: dict, atol, rtol, notes: list) -> list:
    from ..drift import drift

    checks = []
    for name, live_name in _pairing(golden, live, notes):
        expected, (actual, dtype) = golden.outputs[name], host_values(live[live_name])
        if tuple(expected.shape) != tuple(actual.shape):
            checks.append(OutputCheck(name, live_name, None, f"{name!r} has shape {tuple(actual.shape)}, the "
                                      f"golden {tuple(expected.shape)}"))
            continue
        recorded = golden.output_dtype(name)
        if recorded != dtype:
            notes.append(f"output {name!r} is {dtype} now, {recorded} when recorded")
        test_dtype = dtype if dtype in ("float16", "bfloat16", "float32", "float64") else None
        stats = drift(expected, actual, atol=atol, rtol=rtol, test_dtype=test_dtype)
        checks.append(OutputCheck(name, live_name, stats, "" if _ok(stats) else _problem(name, stats)))
    return checks


def _ok(stats) -> bool:
    return stats.mismatch_count == 0


def _problem(name: str, stats) -> str:
    from ..report.text import fmt_num

    new_nan, new_inf = stats.nan_test - stats.nan_both, stats.inf_test - stats.inf_both
    if new_nan or new_inf:
        where = stats.first_nan_test if new_nan else stats.first_inf_test
        return (f"{name!r}: {new_nan} NaN and {new_inf} Inf value(s) where the golden has none (first at "
                f"{tuple(where) if where is not None else '?'})")
    tol = stats.tolerance
    at = "" if stats.max_abs_index is None else f" at {tuple(stats.max_abs_index)}"
    return (f"{name!r}: {stats.mismatch_count} of {stats.count} values outside atol {tol.atol:g} + rtol "
            f"{tol.rtol:g}*|golden| (max |d| {fmt_num(stats.max_abs)}{at}, rel L2 {_pct(stats.rel_l2)} %)")


def _model_notes(golden: Golden, model, kind: str) -> list:
    recorded = golden.meta.get("model") or {}
    now = _model_file(model)
    if recorded.get("sha256") and now.get("sha256") and recorded["sha256"] != now["sha256"]:
        return [f"the model file differs from the one the golden was recorded with (sha256 "
                f"{recorded['sha256'][:12]}... recorded, {now['sha256'][:12]}... now)"]
    if recorded.get("kind") and recorded["kind"] != kind:
        return [f"the golden was recorded from a {recorded['kind']} model, this is a {kind} model"]
    return []
