"""How a model was quantized, read back from its graph, so it can be quantized again the same way.

``read_settings`` recognises the three layouts onnxruntime.quantization writes (QDQ, QOperator, dynamic) and
the options visible in the graph: activation and weight types, per-channel weight scales, and
``reduce_range`` (7-bit weights: every int8 weight within [-64, 64]).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .graph import DYNAMIC, QDQ, QOPERATOR, layer_precisions


@dataclass
class QuantSettings:
    format: str
    activation_type: str = "uint8"
    weight_type: str = "int8"
    per_channel: bool = False
    reduce_range: bool = False

    def to_dict(self) -> dict:
        return {"format": self.format, "activation_type": self.activation_type, "weight_type": self.weight_type,
                "per_channel": self.per_channel, "reduce_range": self.reduce_range}

    def quantize(self, model_input: str, model_output: str, inputs: dict, nodes_to_exclude) -> None:
        """Quantize the float32 ``model_input`` with these settings, calibrated on ``inputs``."""
        from onnxruntime.quantization import (
            QuantFormat,
            QuantType,
            quantize_dynamic,
            quantize_static,
        )

        types = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
        common = {"per_channel": self.per_channel, "reduce_range": self.reduce_range,
                  "nodes_to_exclude": list(nodes_to_exclude), "weight_type": types[self.weight_type]}
        if self.format == DYNAMIC:
            quantize_dynamic(model_input, model_output, **common)
            return
        fmt = QuantFormat.QDQ if self.format == QDQ else QuantFormat.QOperator
        quantize_static(model_input, model_output, _Reader(inputs), quant_format=fmt,
                        activation_type=types[self.activation_type], **common)


class _Reader:
    """A CalibrationDataReader over one input set (onnxruntime.quantization duck-types ``get_next``)."""

    def __init__(self, inputs: dict):
        self._items = iter([{k: np.asarray(v) for k, v in inputs.items()}])

    def get_next(self):
        return next(self._items, None)

    def rewind(self):  # some calibrators rewind; one pass over one set is all there is
        return None


def read_settings(model) -> QuantSettings:
    """The settings ``model`` (a quantized onnx.ModelProto) was quantized with, as far as the graph shows."""
    layers = list(layer_precisions(model).values())
    kinds = {layer.kind for layer in layers}
    fmt = DYNAMIC if DYNAMIC in kinds else QOPERATOR if QOPERATOR in kinds else QDQ
    weights = [w for layer in layers for w in layer.weights if w.dtype in ("int8", "uint8")]
    activations = [a for layer in layers for a in layer.activations if not a.dynamic]
    settings = QuantSettings(fmt)
    if weights:
        settings.weight_type = weights[0].dtype
        settings.per_channel = any(w.per_channel for w in weights)
        settings.reduce_range = _reduced(weights)
    if activations:
        settings.activation_type = activations[0].dtype
    return settings


def _reduced(weights) -> bool:
    """7-bit weights: quantized int8 values within [-64, 64], uint8 ones within [0, 127]."""
    for w in weights:
        ints = np.rint(w.weight / w.scale.reshape(_shape(w))) + w.zero_point.reshape(_shape(w))
        if (w.dtype == "int8" and np.abs(ints).max() > 64) or (w.dtype == "uint8" and ints.max() > 127):
            return False
    return True


def _shape(w):
    if w.scale.size == 1:
        return (1,) * w.weight.ndim
    shape = [1] * w.weight.ndim
    shape[w.axis if w.axis is not None else 1] = w.scale.size
    return tuple(shape)
