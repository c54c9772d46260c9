"""What to keep in float32 in a quantized ONNX model: ``nodes_to_exclude`` for ONNX Runtime's quantizers,
proved by re-quantizing the float32 reference without them and comparing again.

The settings of the original quantization are read from the quantized graph (settings.py); calibration
data for ``quantize_static`` are the comparison's inputs. Each attempt is a real re-quantization and a real
comparison, so the suggestion is a measured fact, not a guess.
"""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field, replace

from ..errors import DiffcoreError
from ..report.model import DIVERGED
from .graph import layer_precisions
from .settings import QuantSettings, read_settings

MAX_ROUNDS = 3


@dataclass
class Attempt:
    """One re-quantization and its comparison."""

    nodes: list
    settings: dict
    verdict: str
    output_rel_l2: float
    path: str


@dataclass
class ExclusionSuggestion:
    """The nodes to exclude from quantization and the comparisons that prove it."""

    nodes: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    before: float | None = None
    attempts: list = field(default_factory=list)
    found: bool = False
    reason: str = ""

    def to_text(self) -> str:
        lines = ["What to keep in float32 (nodes_to_exclude, proved by re-quantizing and comparing again):"]
        if self.reason:
            lines.append(f"  {self.reason}")
        for attempt in self.attempts:
            what = f"nodes_to_exclude={attempt.nodes}" if attempt.nodes else "no nodes excluded"
            lines.append(f"  - {what}, {_settings_words(attempt.settings)}: {attempt.verdict.upper()}, output "
                         f"rel L2 {100 * attempt.output_rel_l2:.3g} % (before {100 * (self.before or 0):.3g} %)"
                         f" -> {attempt.path}")
        if self.found and not self.nodes:
            lines.append(f"  => quantize with {_settings_words(self.settings)}: nothing needs to stay in float32")
        elif self.found:
            lines.append(f"  => quantize with nodes_to_exclude={self.nodes} ({_settings_words(self.settings)})")
        elif self.attempts:
            lines.append("  => no attempt passed; the layers above lose the most")
        return "\n".join(lines) + "\n"


def _settings_words(settings: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in settings.items() if k != "format") + f" ({settings.get('format')})"


def _worst_output(report) -> float:
    values = [r.rel_l2 for r in report.outputs if not r.exact]
    return max(values) if values else 0.0


def culprit_nodes(report, quantized_model, excluded=()) -> list[str]:
    """The names ``nodes_to_exclude`` knows the diverging quantized layers by, in execution order: the
    quantizers name a node they replace after the float32 node (``/fc1/Gemm_quant`` for ``/fc1/Gemm``;
    dynamic quantization first splits a Gemm into ``/fc1/Gemm_MatMul``), and keep a QDQ op's own name.
    Where no quantized layer diverges (the error accumulated over many), the one losing the most that is
    not ``excluded`` yet."""
    layers = layer_precisions(quantized_model)
    rows = [r for r in report.layers + report.outputs if r.precision and r.test_tensor in layers]
    nodes = [layers[r.test_tensor].node for r in rows if r.status == DIVERGED]
    if not nodes:
        ranked = sorted((r for r in rows if r.local_rel_l2 is not None and r.predicted_rel_l2 is not None),
                        key=lambda r: -r.local_rel_l2)
        nodes = [n for n in (layers[r.test_tensor].node for r in ranked)
                 if n and n.removesuffix("_quant") not in excluded][:1]
    return list(dict.fromkeys(n.removesuffix("_quant") for n in nodes if n))


def suggest_exclusions(ref, test, inputs, report, *, out_dir: str | None = None,
                       max_rounds: int = MAX_ROUNDS) -> ExclusionSuggestion:
    """Re-quantize the float32 ONNX ``ref`` as ``test`` was quantized, excluding the diverging layers'
    nodes, until the comparison passes (at most ``max_rounds``).

    Args:
        ref, test: paths of the float32 and the quantized ONNX models; report: their comparison.
        inputs: the comparison's inputs (dict name -> array): also the calibration data.
        out_dir: a folder in which a new folder receives the re-quantized models (default: the system's
            temporary folder).
    """
    onnx = __import__("onnx")
    if not (isinstance(ref, str) and isinstance(test, str)):
        raise DiffcoreError("suggesting nodes_to_exclude needs the float32 and quantized models as .onnx paths")
    if inputs is None:
        raise DiffcoreError("suggesting nodes_to_exclude needs --inputs: they calibrate the re-quantization")
    quantized = onnx.load(test)
    settings = read_settings(quantized)
    suggestion = ExclusionSuggestion(settings=settings.to_dict(), before=_worst_output(report))
    if report.passed:
        suggestion.reason = "the comparison passes: nothing to exclude"
        return suggestion
    nodes = culprit_nodes(report, quantized)
    if not nodes:
        suggestion.reason = "no quantized layer was compared: the failure is not in a quantized layer"
        return suggestion
    if out_dir:  # a new folder inside it, so no earlier attempt is overwritten
        os.makedirs(out_dir, exist_ok=True)
    out_dir = tempfile.mkdtemp(prefix="diffcore-requant-", dir=out_dir or None)
    if _saturation_suspect(report, settings):  # 7-bit weights first: nothing stays in float32
        reduced = replace(settings, reduce_range=True)
        attempt, new_report = _attempt(ref, inputs, [], reduced, os.path.join(out_dir, "reduce_range.onnx"))
        suggestion.attempts.append(attempt)
        if new_report.passed:
            suggestion.settings, suggestion.found = reduced.to_dict(), True
            return suggestion
    for round_ in range(max_rounds):
        path = os.path.join(out_dir, f"excluded_{round_}.onnx")
        attempt, new_report = _attempt(ref, inputs, nodes, settings, path)
        suggestion.attempts.append(attempt)
        if new_report.passed:
            suggestion.nodes, suggestion.found = nodes, True
            return suggestion
        more = [n for n in culprit_nodes(new_report, onnx.load(path), nodes) if n not in nodes]
        if not more:
            break
        nodes = nodes + more
    suggestion.nodes = nodes
    return suggestion


def _saturation_suspect(report, settings: QuantSettings) -> bool:
    """int8 weights with 8-bit activations, a layer far above what its scales predict and no wrong
    parameter to blame: ONNX Runtime's x86 int8 kernels without VNNI add pairs of u8*s8 products in 16 bits
    and saturate; 7-bit weights (``reduce_range``) avoid it."""
    if settings.weight_type != "int8" or settings.reduce_range:
        return False
    return any(r.status == DIVERGED and r.predicted_rel_l2 and not r.quant_issue and r.local_rel_l2 and
               r.local_rel_l2 > 4 * r.predicted_rel_l2 for r in report.layers + report.outputs)


def _attempt(ref, inputs, nodes, settings: QuantSettings, path):
    from ..comparison import compare

    settings.quantize(ref, path, inputs, nodes)
    report = compare(ref, path, inputs, progress=False)
    return Attempt(list(nodes), settings.to_dict(), report.verdict, _worst_output(report), path), report
