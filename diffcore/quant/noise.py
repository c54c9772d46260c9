"""The error a correct quantized layer shows, predicted from its scales.

Rounding to a grid of step ``s`` adds an error uniform in ``[-s/2, s/2]``: root mean square ``s/sqrt(12)``.
Relative to the tensor it rounds, that is one term per quantized operand:

- an activation ``x`` with scale ``s``: ``s / sqrt(12) / rms(x)`` (dynamic quantization: ``s`` is the
  run-time step ``(max(x, 0) - min(x, 0)) / 255``);
- a weight: ``sqrt(sum_c n_c s_c^2 / 12) / ||W||`` over its channels ``c`` (one channel per tensor);
- the output, where the layer requantizes it: ``s_y / sqrt(12) / rms(y)``.

A linear layer passes an input's relative error on at about the same relative size, and the terms are
independent, so the layer's predicted relative L2 error is their root sum of squares. It is a model, not a
bound: the divergence rule (localize.py) flags a layer only well above it (``QUANT_FACTOR``).
"""
from __future__ import annotations

import math

import numpy as np

SQRT12 = math.sqrt(12.0)


def _rms(values) -> float | None:
    array = np.asarray(values, dtype=np.float64)
    array = array[np.isfinite(array)]
    if not array.size:
        return None
    rms = float(np.sqrt(np.mean(array * array)))
    return rms if rms > 0 else None


def _dynamic_step(values) -> float:
    array = np.asarray(values, dtype=np.float64)
    return (max(float(np.nanmax(array)), 0.0) - min(float(np.nanmin(array)), 0.0)) / 255.0


def activation_term(operand, values) -> float | None:
    """Relative rounding error of an activation operand, from the reference's values of it."""
    rms = _rms(values)
    if rms is None:
        return None
    step = _dynamic_step(values) if operand.dynamic else float(np.max(operand.scale))
    return step / SQRT12 / rms


def weight_term(operand) -> float | None:
    """Relative rounding error of a weight, from its scales and dequantized values."""
    weight = operand.weight
    norm = float(np.linalg.norm(weight)) if weight is not None and weight.size else 0.0
    if not norm:
        return None
    scales = operand.scale.reshape(-1)
    per_channel = weight.size / scales.size
    return math.sqrt(float(np.sum(scales ** 2)) * per_channel / 12.0) / norm


def output_term(operand, values) -> float | None:
    rms = _rms(values)
    if rms is None or operand is None:
        return None
    return float(np.max(operand.scale)) / SQRT12 / rms


def predicted_rel_l2(layer, activation_values: dict, output_values) -> tuple[float | None, dict]:
    """(predicted relative L2 error, {term: value}) of ``layer`` (graph.LayerPrecision).

    ``activation_values``: {float value name: reference values} of its activation operands;
    ``output_values``: the reference values of the row's output.
    """
    terms = {}
    for operand in layer.activations:
        if operand.value in activation_values:
            terms[f"input {operand.value}"] = activation_term(operand, activation_values[operand.value])
    for operand in layer.weights:
        terms[f"weight {operand.value}"] = weight_term(operand)
    for operand in layer.constants:  # added into the output as it is (an embedding table's rows)
        terms[f"table {operand.value}"] = output_term(operand, output_values)
    if layer.output is not None and output_values is not None:
        terms["output"] = output_term(layer.output, output_values)
    terms = {k: v for k, v in terms.items() if v is not None and math.isfinite(v)}
    if not terms:
        return None, terms
    return math.sqrt(sum(v * v for v in terms.values())), terms
