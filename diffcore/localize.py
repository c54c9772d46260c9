"""Localization: the first divergence in execution order, and whether it is born there or carried in.

The rule (``DivergenceRule``), dtype-aware so that float16 noise in every layer is not a divergence:

- A layer's *local error* compares the test layer with the reference layer, both run on the reference's
  inputs rounded to the test's input dtype. Identical input values on both sides mean the local error
  excludes input rounding and accumulated upstream error: it is what the layer itself computes differently.
- A layer **diverges here** (``diverged``) when its local error is anomalous: its relative L2 error exceeds
  both ``noise_ulps`` machine epsilons of the test dtype and ``anomaly_factor`` times the median local
  error of all layers ("many ULPs above its neighbours"), or the layer makes NaN/Inf from finite inputs.
- A layer **is past a limit** when its accumulated error shows a new NaN/Inf, a relative L2 error over
  ``fail_rel_l2`` (5 %, a conversion bug), or, where no local error was computed, a jump of
  ``jump_factor`` over every upstream layer's error (and over the noise floor). Such a layer is ``carried``
  when its local error is small (the error arrived from upstream), else ``diverged``. (Applied to quantized
  layers, diffcore/quant: one whose local error is ``born_here_share`` of its error is born there.)
- Otherwise a layer is ``drift`` above ``fine_rel_l2`` (0.1 %), ``ok`` below. Depth enters through the
  local error: accumulated noise is judged only against the 5 % band, never against per-layer noise.

The first divergence is the first ``diverged`` row; if none, the first ``carried`` one (error that grew
gradually with no single layer at fault). The comparison fails when there is a first divergence or a model
output shows a new NaN/Inf, exceeds 5 %, or (with explicit atol/rtol) mismatches under the tolerance.

Integer and bool tensors are compared exactly (stats/exact.py): any differing element fails the row. A row
with no element finite on both sides is ``not comparable``: nothing was measured, so it neither passes nor
fails (an output like that makes the comparison inconclusive, coverage.py).

The deployed run decides: model outputs come from uninstrumented runs. Where those pass and the first
divergence is on a value the deployed ONNX graph fuses away (``set_aside_fused``), the finding was made
only because exposing the value disabled the fusion: it and the rows carried from it become
``fusion-dependent`` and do not fail the model.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field

from .amplification import amplifier_of, gain_words, top_amplifiers
from .findings import blame_converter
from .quant.words import losses as quant_losses
from .ranges import overflow_words
from .report.model import CARRIED, DIVERGED, DRIFT, FUSED, NOT_COMPARABLE, OK
from .stats.formats import FORMATS


@dataclass(frozen=True)
class DivergenceRule:
    """Thresholds of the divergence rule (see the module docstring)."""

    fine_rel_l2: float = 1e-3
    fail_rel_l2: float = 5e-2
    noise_ulps: float = 32.0
    anomaly_factor: float = 20.0
    jump_factor: float = 100.0
    quant_factor: float = 4.0  # a quantized layer diverges past this many times its predicted error
    quant_peer_factor: float = 5.0  # ... or past this many times the median quantized layer's local error
    born_here_share: float = 0.5

    def noise_floor(self, dtype: str) -> float:
        """Relative error a correct layer computing in ``dtype`` may show."""
        return self.noise_ulps * _eps(dtype)

    def to_dict(self) -> dict:
        return asdict(self)


def _eps(dtype: str) -> float:
    return FORMATS.get(dtype, FORMATS["float32"]).machine_epsilon


def _finite(value) -> bool:
    return value is not None and math.isfinite(value)


@dataclass
class Localization:
    first_divergence: object  # LayerRow or None
    failed_outputs: list
    median_local: float | None
    set_aside: list = field(default_factory=list)  # fusion-dependent rows (set_aside_fused)

    @property
    def failed(self) -> bool:
        return self.first_divergence is not None or bool(self.failed_outputs)


class _Judge:
    def __init__(self, rows, rule: DivergenceRule):
        self.rule = rule
        locals_ = [r.local_rel_l2 for r in rows if _finite(r.local_rel_l2)]
        self.median_local = statistics.median(locals_) if locals_ else None
        quantized = [r.local_rel_l2 for r in rows if _finite(r.local_rel_l2) and _finite(r.predicted_rel_l2)]
        self.median_quantized = statistics.median(quantized) if len(quantized) >= 3 else None
        # a quantized test model (local errors or not): its float rows carry quantization error
        self.quantized = any(_finite(r.predicted_rel_l2) for r in rows)
        self.upstream_max = 0.0
        self.seen_limit = False

    def quantized_outlier(self, row) -> str:
        """A quantized layer losing far more than its quantized peers (an outlier weight that coarsens a
        per-tensor scale is within what that scale predicts, but not within what its neighbours lose)."""
        median = self.median_quantized
        if not _finite(row.predicted_rel_l2) or not median or row.local_rel_l2 is None:
            return ""
        if row.local_rel_l2 <= self.rule.quant_peer_factor * median or row.local_rel_l2 <= self.rule.fine_rel_l2:
            return ""
        return (f"local error {_pct(row.local_rel_l2)} is {row.local_rel_l2 / median:.3g}x the median quantized layer "
                f"({_pct(median)}; {row.precision}, predicted {_pct(row.predicted_rel_l2)} from its scales): "
                "its quantization is much coarser than its neighbours'")

    def local_threshold(self, row) -> float:
        """A quantized layer's local error is judged against what its scales predict (diffcore/quant); any
        other layer's against its dtype's noise floor and its neighbours."""
        if _finite(row.predicted_rel_l2):
            return self.rule.quant_factor * row.predicted_rel_l2
        floor = self.rule.noise_floor(row.test_dtype)
        if self.median_local is None:
            return floor
        return max(floor, self.rule.anomaly_factor * self.median_local)

    def local_fires(self, row) -> str:
        if row.local_new_nonfinite:
            return f"makes NaN/Inf from the reference's (finite) inputs: {row.local_new_nonfinite} values"
        if row.quant_issue:
            return row.quant_issue + ("" if row.local_rel_l2 is None else f" (local error {_pct(row.local_rel_l2)})")
        if row.local_rel_l2 is None:
            return ""
        threshold = self.local_threshold(row)
        if row.local_rel_l2 > threshold and _finite(row.predicted_rel_l2):
            return (f"local error {_pct(row.local_rel_l2)} is {row.local_rel_l2 / row.predicted_rel_l2:.3g}x what "
                    f"its quantization scales predict ({_pct(row.predicted_rel_l2)}, {row.precision})"
                    + _saturation_words(row))
        quantized = self.quantized_outlier(row)
        if quantized:
            return quantized
        if row.local_rel_l2 > threshold:
            ratio = "" if not self.median_local else f", {row.local_rel_l2 / self.median_local:.3g}x the median layer"
            return f"local error {_pct(row.local_rel_l2)} above its threshold {_pct(threshold)}{ratio}"
        return ""

    def limit_fires(self, row) -> str:
        if row.new_nonfinite:
            return _nonfinite_cause(row)
        if row.rel_l2 > self.rule.fail_rel_l2:
            return f"relative L2 error {_pct(row.rel_l2)} exceeds {_pct(self.rule.fail_rel_l2)}"
        if row.local_rel_l2 is None:
            floor = max(self.rule.noise_floor(row.test_dtype),
                        self.rule.jump_factor * max(self.upstream_max, _eps(row.test_dtype)))
            if _finite(row.predicted_rel_l2):  # its own quantization, on top of what arrives (no local error)
                floor = max(floor, self.rule.quant_factor * math.hypot(row.predicted_rel_l2, self.upstream_max))
            if row.rel_l2 > floor:
                return f"relative L2 error jumps to {_pct(row.rel_l2)} (upstream at most {_pct(self.upstream_max)})"
        return ""

    def judge(self, row) -> None:
        if row.exact:
            self._judge_exact(row)
            return
        if not row.comparable and not row.new_nonfinite:
            row.status, row.cause = NOT_COMPARABLE, _not_comparable_cause(row)
            return
        local_cause, limit_cause = self.local_fires(row), self.limit_fires(row)
        local_cause, limit_cause = blame_converter(row, local_cause, limit_cause)  # a clamped constant read
        if local_cause:
            row.status, row.cause = DIVERGED, local_cause + ("; " + limit_cause if limit_cause else "")
            self.seen_limit = True
        elif limit_cause:
            self._past_limit(row, limit_cause)
        elif row.rel_l2 > self.rule.fine_rel_l2:
            row.status, row.cause = DRIFT, _drift_cause(row, self.quantized)
        else:
            row.status, row.cause = OK, ""
        _with_range(row)
        if _finite(row.rel_l2):
            self.upstream_max = max(self.upstream_max, row.rel_l2)

    def _judge_exact(self, row) -> None:
        if row.mismatch_count:
            self._past_limit(row, _exact_cause(row))
        else:
            row.status, row.cause = OK, f"all {row.count} elements equal (compared exactly)"

    def _quantized_born_here(self, row) -> bool:
        """A quantized layer past a limit whose own local error is at least ``born_here_share`` of its error
        (an outlier weight a little short of the peers rule): its quantization, not upstream, made it."""
        return (_finite(row.predicted_rel_l2) and _finite(row.local_rel_l2) and _finite(row.rel_l2)
                and not row.new_nonfinite and row.local_rel_l2 >= self.rule.born_here_share * row.rel_l2)

    def _past_limit(self, row, cause: str) -> None:
        if self._quantized_born_here(row):
            row.status = DIVERGED
            row.cause = (f"{cause}; born in this layer: its local error {_pct(row.local_rel_l2)} is most of it "
                         f"({row.precision}; its scales predict {_pct(row.predicted_rel_l2)})")
        elif row.local_rel_l2 is not None:
            row.status = CARRIED
            row.cause = f"{cause}; arrived from upstream (local error only {_pct(row.local_rel_l2)})"
        elif not self.seen_limit:
            row.status, row.cause = DIVERGED, f"{cause} (local error not computed)"
        else:
            row.status, row.cause = CARRIED, f"{cause}; follows an earlier divergence"
        self.seen_limit = True


def _saturation_words(row) -> str:
    if "int8" not in (row.precision or "") or "uint8 per" in (row.precision or ""):
        return ""
    return ("; int8 weights with 8-bit activations: ONNX Runtime's x86 int8 kernels without VNNI add u8*s8 "
            "products in 16 bits and can saturate (quantize with reduce_range=True, or uint8 weights)")


def _drift_cause(row, quantized: bool = False) -> str:
    if _finite(row.predicted_rel_l2):
        local = "" if row.local_rel_l2 is None else f"local {_pct(row.local_rel_l2)} against "
        return f"{row.precision}: {local}{_pct(row.predicted_rel_l2)} predicted by its scales"
    if quantized:  # a float op between quantized layers: float32's noise is not what it shows
        local = "" if row.local_rel_l2 is None else f" (local error {_pct(row.local_rel_l2)})"
        return f"computes in {row.test_dtype}: the quantization error of the layers before it, carried{local}"
    return f"within the expected noise of {row.test_dtype}"


def _pct(value: float) -> str:
    return f"{100 * value:.3g} %" if _finite(value) else str(value)


def _nonfinite_cause(row) -> str:
    cause = f"{row.new_nonfinite} NaN/Inf in the test output where the reference has none"
    words = overflow_words(row)
    if words:
        cause += f"; {words}: an overflow ({row.overflow_risk} values)"
    elif row.overflow_risk:
        cause += (f"; {row.overflow_risk} reference values exceed the {row.test_dtype} range "
                  f"(max {FORMATS[row.test_dtype].max_finite:g}): an overflow")
    return cause


def _with_range(row) -> None:
    """A failing row whose reference is past the test dtype's maximum says so, whatever rule fired."""
    words = overflow_words(row)
    if words and row.status in (DIVERGED, CARRIED) and words not in row.cause:
        row.cause += f"; {words}: an overflow"


def _exact_cause(row) -> str:
    where = ""
    if row.first_mismatch_index is not None:
        ref, test = (row.first_mismatch_values or [None, None])[:2]
        where = f"; first at {list(row.first_mismatch_index)}: ref {ref} vs test {test}"
    return (f"{row.mismatch_count} of {row.count} elements differ ({_pct(row.mismatch_frac)}, compared "
            f"exactly as {row.test_dtype}){where}")


def _not_comparable_cause(row) -> str:
    if not row.count:
        return "empty tensor: no element to compare"
    return (f"no element is finite on both sides ({row.nan_ref + row.inf_ref} NaN/Inf in the reference, "
            f"{row.nan_test + row.inf_test} in the test): nothing was compared")


def _output_fails(row, rule: DivergenceRule, explicit_tolerance: bool) -> str:
    if row.exact:
        return _exact_cause(row) if row.mismatch_count else ""
    if row.new_nonfinite:
        return _nonfinite_cause(row)
    if row.rel_l2 > rule.fail_rel_l2:
        return f"relative L2 error {_pct(row.rel_l2)} exceeds {_pct(rule.fail_rel_l2)}"
    if explicit_tolerance and row.mismatch_frac > 0:
        return f"{_pct(row.mismatch_frac)} of the elements are outside atol/rtol"
    return ""


def localize(layers, outputs, *, rule: DivergenceRule | None = None, explicit_tolerance: bool = False
             ) -> Localization:
    """Set ``status``/``cause`` on every row and find the first divergence (rows are in execution order)."""
    rule = rule or DivergenceRule()
    judge = _Judge(layers, rule)
    for row in layers:
        judge.judge(row)
    first = next((r for r in layers if r.status == DIVERGED), None) or \
        next((r for r in layers if r.status == CARRIED), None)
    failed = []
    for row in outputs:
        cause = _output_fails(row, rule, explicit_tolerance)
        if cause:
            row.status, row.cause = (CARRIED if first is not None else DIVERGED), cause
            failed.append(row)
        elif not row.comparable:
            row.status, row.cause = NOT_COMPARABLE, _not_comparable_cause(row)
        elif row.exact:
            row.status, row.cause = OK, f"all {row.count} elements equal (compared exactly)"
        else:
            row.status = DRIFT if row.rel_l2 > rule.fine_rel_l2 else OK
            row.cause = ""
    return Localization(first, failed, judge.median_local)


FUSION_WORDS = ("seen with the fusion disabled; the deployed graph fuses it (fragile on a provider without that "
                "fusion)")


def _range_finding(row) -> bool:
    return bool(row.new_nonfinite or row.local_new_nonfinite)


def set_aside_fused(layers, loc: Localization, is_fused) -> Localization:
    """Findings made only because instrumentation broke an ORT fusion do not fail the model.

    Applies when the deployed outputs pass: from the first row on, a ``diverged`` row whose value the
    deployed graph fuses away (``is_fused(row)``) and whose finding is NaN/Inf the reference does not have
    becomes ``fusion-dependent``, and so do the ``carried`` rows after it. A fusion changes where values
    are stored and in which precision (ORT's fused kernels compute in float32 inside), not what they are:
    an overflow of a value the deployed run never materializes is an artefact of exposing it, while a value
    error (swapped channels) is there in the fused kernel too. Any other ``diverged`` row, or a ``carried``
    one before such a finding, stops the walk and stays a divergence. Returns the localization of what is
    left.
    """
    if loc.failed_outputs or loc.first_divergence is None:
        return loc
    origin = None
    for row in layers:
        if row.status == DIVERGED and _range_finding(row) and is_fused(row):
            row.status, row.cause = FUSED, f"{row.cause}; {FUSION_WORDS}"
            origin = origin or row
        elif row.status == CARRIED and origin is not None:
            row.status, row.cause = FUSED, (f"{row.cause}; carried from {origin.name}, which was "
                                            f"{FUSION_WORDS.split(';')[0]}")
        elif row.status in (DIVERGED, CARRIED):
            break
    first = next((r for r in layers if r.status == DIVERGED), None) or \
        next((r for r in layers if r.status == CARRIED), None)
    return Localization(first, loc.failed_outputs, loc.median_local, [r for r in layers if r.status == FUSED])


def _badness(row):
    return (row.new_nonfinite > 0, row.rel_l2 if _finite(row.rel_l2) else math.inf)


def _error_words(row) -> str:
    words = f"rel L2 {_pct(row.rel_l2)}"
    if row.new_nonfinite:
        words += f" over finite values, and {row.new_nonfinite} NaN/Inf where the reference has none"
    return words


def summarize(layers, outputs, loc: Localization, *, reason: str = "", coverage: dict | None = None) -> str:
    """One paragraph saying what diverged first, where, and why (or why the comparison passes, or why it is
    inconclusive when ``reason`` is given), followed by the coverage when given."""
    from .coverage import coverage_line

    text = _verdict_words(layers, outputs, loc, reason)
    line = coverage_line(coverage or {})
    return text + (f" Coverage: {line}." if line else "")


def _verdict_words(layers, outputs, loc: Localization, reason: str) -> str:
    worst_out = max(outputs, key=_badness, default=None)
    which = "Output" if len(outputs) == 1 else "Worst output"
    out_text = f" {which} {worst_out.name!r}: {_error_words(worst_out)}." if worst_out else ""
    if not loc.failed and reason:
        return f"INCONCLUSIVE: {reason}."
    if not loc.failed:
        worst = max((r for r in layers if r.status != FUSED), key=_badness, default=None)
        where = f"; largest layer error {_pct(worst.rel_l2)} at {worst.name}" if worst else ""
        return (f"PASS: {len(layers)} layers compared, no divergence{where}.{_amplifier_words(layers)}{out_text}"
                f"{_fusion_words(loc)}{quant_losses(layers)}")
    first = loc.first_divergence
    if first is None:
        return f"FAIL: no layer diverges, but the outputs do: {loc.failed_outputs[0].cause}.{out_text}"
    position = f"layer {layers.index(first) + 1} of {len(layers)}"
    op = f" ({first.op_type})" if first.op_type else ""
    if first.status == DIVERGED:
        origin = "the error is born in this layer"
    else:
        origin = _carried_origin(first, layers)
    return (f"FAIL: first divergence at {first.name}{op}, {position}: {first.cause}; {origin}."
            f"{_amplifier_words(layers)}{out_text}{quant_losses(layers)}")


def _carried_origin(first, layers) -> str:
    """Where a carried error came from: the layer that amplified it (amplification.py), else none."""
    amp = amplifier_of(first, layers)
    if amp is not None:
        return (f"the error arrived from upstream and was amplified {gain_words(amp.gain)} by {amp.name} "
                f"(input error {_pct(amp.input_rel_l2)}, output error {_pct(amp.rel_l2)}, local error only "
                f"{_pct(amp.local_rel_l2)})")
    top = max((r for r in layers if _finite(r.local_rel_l2)), key=lambda r: r.local_rel_l2, default=None)
    return "the error accumulated over upstream layers with none standing out" + (
        f" (largest local error {_pct(top.local_rel_l2)} at {top.name})" if top else "")


def _amplifier_words(layers) -> str:
    """' Largest amplifiers: ln (280x), ...' where some layer multiplies the error it receives."""
    top = top_amplifiers(layers)
    if not top:
        return ""
    return " Largest error amplifiers: " + ", ".join(f"{r.name} ({gain_words(r.gain)})" for r in top) + "."


def _fusion_words(loc: Localization) -> str:
    if not loc.set_aside:
        return ""
    first = loc.set_aside[0]
    return (f" The deployed run passes, but {len(loc.set_aside)} layer finding(s) from {first.name} on were "
            "seen only with an ONNX Runtime fusion disabled by the instrumentation: the model is right as "
            "deployed here, yet would fail on a provider or optimization level without that fusion.")
