"""Quantized layers on the report's rows: what each computes in, and the error its scales predict.

``annotate_rows`` sets ``precision`` ("int8 per-channel W, uint8 A -> uint8 (QDQ)") and
``predicted_rel_l2`` (noise.py) on every row whose test value a quantized layer produces. The divergence
rule then judges that row's local error against its prediction instead of float32's epsilon (localize.py).
"""
from __future__ import annotations

import sys

import numpy as np

from .graph import QUANTIZATION_OPS, fed_before_quantization, layer_precisions
from .noise import predicted_rel_l2, weight_term


def _model_of(runner):
    """The test side's ONNX model with its initializers (quantization scales and weights), or None."""
    store = getattr(runner, "_store", None)
    if store is None:
        return None
    from onnx import ModelProto

    model = ModelProto()
    model.CopyFrom(store.skeleton)
    present = {t.name for t in model.graph.initializer}
    for name in store.initializer_names:
        if name not in present:
            tensor = store.large_tensor(name)
            if tensor is not None:
                model.graph.initializer.append(tensor)
    return model


def annotate_torch_rows(pairs, rows: dict, test_runner, test_feed) -> list[str]:
    """Rows of torch.ao dynamically quantized Linear modules: precision and predicted error (torch_ao.py)."""
    from .torch_ao import input_summaries, module_precisions, predicted

    layers = module_precisions(test_runner.module)
    quantized = [p for p in pairs if id(p) in rows and p.test.module in layers and p.test.key == p.test.module]
    if not quantized:
        return []
    summaries = input_summaries(test_runner, test_feed, {p.test.module for p in quantized})
    for pair in quantized:
        layer, row = layers[pair.test.module], rows[id(pair)]
        row.precision = layer.describe()
        row.predicted_rel_l2, terms = predicted(layer, summaries.get(pair.test.module))
        row.quant_terms = {k: round(v, 9) for k, v in terms.items()}
    return []


def is_torch_quantized(runner) -> bool:
    module = getattr(runner, "module", None)
    if module is None or "torch" not in sys.modules:
        return False
    from .torch_ao import module_precisions

    return bool(module_precisions(module))


def precisions_of(runner) -> dict:
    """{test value: graph.LayerPrecision} of an ONNX or TFLite runner's quantized (or float16-weight) layers,
    cached on the runner."""
    cached = getattr(runner, "_diffcore_quant_layers", None)
    if cached is None:
        # Every ONNX comparison asks; only a graph with quantization ops pays for its weights being read.
        if getattr(runner, "kind", "") == "tflite":  # float16 weights or int8, read off the flatbuffer
            from .tflite import tflite_precisions

            cached = tflite_precisions(runner._interp)
        else:
            store = getattr(runner, "_store", None)
            quantized = store is not None and any(n.op_type in QUANTIZATION_OPS for n in store.skeleton.graph.node)
            model = _model_of(runner) if quantized else None
            cached = layer_precisions(model) if model is not None else {}
        try:
            runner._diffcore_quant_layers = cached
        except AttributeError:
            pass
    return cached


def is_quantized(runner) -> bool:
    return bool(precisions_of(runner))


def annotate_rows(pairs, rows: dict, ref_runner, test_runner, ref_feed, test_to_ref: dict) -> list[str]:
    """Set ``precision`` and ``predicted_rel_l2`` on the rows of quantized layers; return warnings."""
    layers = precisions_of(test_runner)
    quantized = [p for p in pairs if id(p) in rows and p.test.key in layers and not rows[id(p)].exact]
    if not quantized:
        return []
    for pair in pairs:  # every other float row of a quantized model computes in float32
        row = rows.get(id(pair))
        if row is not None and not row.exact and pair.test.key not in layers and row.test_dtype == "float32":
            row.precision = "float32"
    wanted = set()
    for pair in quantized:
        wanted.add(pair.ref.key)
        wanted.update(test_to_ref[a.value] for a in layers[pair.test.key].activations if a.value in test_to_ref)
    values = ref_runner.capture(ref_feed, wanted)
    ref_weights = _initializers(ref_runner)
    for pair in quantized:
        layer, row = layers[pair.test.key], rows[id(pair)]
        # an activation another row dequantizes is that row's rounding, unless this layer is fed before it
        own = [a for a in layer.activations if a.dequantized not in test_to_ref or fed_before_quantization(layer)]
        activations = {a.value: values[test_to_ref[a.value]] for a in own if test_to_ref.get(a.value) in values}
        activations.update({a.value: ref_feed[a.value] for a in own  # graph inputs
                            if a.value not in activations and a.value in ref_feed})
        predicted, terms = predicted_rel_l2(layer, activations, values.get(pair.ref.key))
        row.precision = layer.describe()
        row.predicted_rel_l2 = predicted
        row.quant_terms = {k: round(v, 9) for k, v in terms.items()}
        row.quant_issue = _issue(layer, activations, values.get(pair.ref.key), ref_weights)
    return []


def _issue(layer, activations, output_values, ref_weights) -> str:
    """What is wrong with the layer's quantization itself, in words; empty when nothing is."""
    operands = layer.activations + ([layer.output] if layer.output is not None else [])
    words = [o.mismatch() for o in operands if o.mismatch()]
    for operand in layer.activations:
        if operand.value in activations and not operand.dynamic:
            words.append(clipped_words(operand, activations[operand.value]))
    if layer.output is not None and output_values is not None:
        words.append(clipped_words(layer.output, output_values, "its output"))
    for operand in layer.weights:
        words.append(weight_words(operand, ref_weights))
        words.append(float16_clamp_words(operand))
    return "; ".join(w for w in words if w)


FLOAT16_MAX = float(np.finfo(np.float16).max)


def float16_clamp_words(operand) -> str:
    """Words when a float16 weight holds float16's largest finite value: converters clamp a float32 weight
    beyond float16's range (65504) to it, and nothing else warns."""
    if operand.dtype != "float16" or operand.weight is None:
        return ""
    clamped = int(np.count_nonzero(np.abs(operand.weight) >= FLOAT16_MAX))
    if not clamped:
        return ""
    return (f"weight {operand.value!r} holds {clamped} value(s) at float16's limit {FLOAT16_MAX:g}: float32 weights "
            "beyond float16's range were clamped by the conversion (keep this layer in float32, or rescale it)")


# A calibration that clips a few outliers is normal (percentile and entropy calibrators do it on purpose);
# past this share of the values the range itself is wrong.
CLIP_SHARE = 0.01


def clipped_words(operand, values, what=None) -> str:
    """Words when more than ``CLIP_SHARE`` of the reference's values fall outside the range the operand's
    scale and zero point can represent (they are clipped)."""
    low, high = operand.representable()
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if not array.size:
        return ""
    step = float(np.max(operand.scale))
    outside = float(np.mean((array < low - step / 2) | (array > high + step / 2)))
    if outside <= CLIP_SHARE:
        return ""
    name = what or repr(operand.value)
    return (f"{100 * outside:.3g} % of the reference's values of {name} lie outside [{low:.4g}, {high:.4g}], the "
            f"range its {operand.dtype} scale represents (reference range [{array.min():.4g}, {array.max():.4g}]): "
            "clipped by a calibration range too narrow")


# Rounding to a grid leaves an error of about step/sqrt(12) per element; a weight off by more than this
# factor was not simply rounded (a wrong scale or zero point).
WEIGHT_FACTOR = 2.0


def weight_words(operand, ref_weights: dict) -> str:
    """Words when a dequantized weight differs from the reference's float weight by far more than rounding."""
    ref = _reference_weight(operand, ref_weights)
    if ref is None or ref.size < 16:
        return ""
    norm = float(np.linalg.norm(ref))
    if not norm:
        return ""
    measured = float(np.linalg.norm(operand.weight - ref)) / norm
    rounding = weight_term(operand) or 0.0
    if measured <= WEIGHT_FACTOR * max(rounding, 1e-12):
        return ""
    return (f"weight {operand.value!r} differs from the reference's by {100 * measured:.3g} % where rounding to its "
            f"scale gives {100 * rounding:.3g} %: a wrong scale or zero point")


def _reference_weight(operand, ref_weights: dict):
    name = operand.value
    for suffix in ("_Transposed_quantized", "_quantized", "_QuantizeLinear_Output"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            ref = ref_weights.get(base)
            if ref is None:
                return None
            ref = np.asarray(ref, np.float64)
            # quantize_dynamic stores a Gemm's weight transposed ([in, out]) and says so in the name: a square
            # weight has the reference's shape either way, and read untransposed it differs by ~140 %
            orientations = (ref.T, ref) if suffix == "_Transposed_quantized" else (ref, ref.T)
            return next((w for w in orientations if w.shape == operand.weight.shape), None)
    return None


def _initializers(runner) -> dict:
    model = _model_of(runner)
    if model is None:
        return {}
    from onnx import numpy_helper

    return {t.name: numpy_helper.to_array(t) for t in model.graph.initializer if t.data_type in (1, 10, 11)}
