"""What each op of a TFLite model computes in, read from the flatbuffer's tensors (LiteRT interpreter).

The three post-training conversions of ``tf.lite.TFLiteConverter``:

- **float16 weights** (``supported_types=[tf.float16]``): constants are stored as float16 and a DEQUANTIZE
  op turns each into float32; every op computes in float32. A weight read through such a DEQUANTIZE is a
  float16 operand whose rounding step is each element's float16 spacing (``ulp``), so the same
  ``step / sqrt(12)`` model (noise.py) predicts its error, element by element.
- **dynamic-range int8** (``optimizations=[DEFAULT]`` alone): large weights are int8 with per-channel
  scales; the op quantizes its float input at run time (a dynamic activation operand).
- **full int8** (with a representative dataset): activations are int8 with static scales, and each op
  requantizes its output.

The result has the shape of ``graph.layer_precisions`` for ONNX: {probe key (the op's output tensor
name): LayerPrecision}, so the same annotation and divergence rules judge TFLite rows.
"""
from __future__ import annotations

import numpy as np

from .graph import LayerPrecision, Operand

_SKIPPED_OPS = ("DELEGATE", "DEQUANTIZE", "QUANTIZE")
_INTEGER = ("int8", "uint8", "int16")


def tflite_precisions(interpreter) -> dict:
    """{output tensor name: LayerPrecision} of the quantized or float16-weight ops of a LiteRT model."""
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    ops = interpreter._get_ops_details()  # noqa: SLF001 - the only op list LiteRT exposes
    produced = {i: op for op in ops if op["op_name"] != "DELEGATE" for i in op["outputs"]}
    graph_inputs = {d["index"] for d in interpreter.get_input_details()}
    out = {}
    for op in ops:
        if op["op_name"] in _SKIPPED_OPS or not op["outputs"] or op["outputs"][0] < 0:
            continue
        layer = _layer(interpreter, op, details, produced, graph_inputs)
        if layer is not None:
            out[details[op["outputs"][0]]["name"]] = layer
    return out


def _layer(interpreter, op, details, produced, graph_inputs) -> LayerPrecision | None:
    weights, activations = [], []
    for index in op["inputs"]:
        if index < 0:
            continue
        constant = index not in produced and index not in graph_inputs
        operand = (_weight(interpreter, index, details, produced, constant) if _is_weight(index, details, produced,
                                                                                          constant) else None)
        if operand is not None:
            weights.append(operand)
        elif not constant and _dtype(details[index]) in _INTEGER and _scales(details[index]) is not None:
            activations.append(_static(details[index]))
    output = details[op["outputs"][0]]
    requantized = _static(output) if _dtype(output) in _INTEGER and _scales(output) is not None else None
    if weights and weights[0].dtype in _INTEGER and not activations:
        activations = [_dynamic(details[i]) for i in op["inputs"] if i >= 0 and (i in produced or i in graph_inputs)
                       and _dtype(details[i]) == "float32"][:1]  # a hybrid op quantizes its input at run time
    if not weights and not activations and requantized is None:
        return None
    kind = "float16 weights" if weights and weights[0].dtype == "float16" else \
        ("TFLite int8" if requantized is not None else "TFLite dynamic range")
    return LayerPrecision(kind, output["name"], op["op_name"], activations=activations, weights=weights,
                          output=requantized, float_output=output["name"])


def _is_weight(index, details, produced, constant) -> bool:
    d = details[index]
    if constant:
        return _dtype(d) in ("int8", "float16") and np.prod(d["shape"]) > 1
    source = produced.get(index)
    return source is not None and source["op_name"] == "DEQUANTIZE" and any(
        i >= 0 and _dtype(details[i]) == "float16" for i in source["inputs"])


def _weight(interpreter, index, details, produced, constant) -> Operand | None:
    d = details[index]
    if not constant:  # float16, read through its DEQUANTIZE
        source = next(i for i in produced[index]["inputs"] if i >= 0)
        values = np.asarray(interpreter.get_tensor(source)).astype(np.float64)
        return _float16(details[source]["name"], values)
    raw = np.asarray(interpreter.get_tensor(index))
    if _dtype(d) == "float16":
        return _float16(d["name"], raw.astype(np.float64))
    params = d["quantization_parameters"]
    scales, zeros, axis = params["scales"], params["zero_points"], int(params["quantized_dimension"])
    if not len(scales):
        return None
    shape = [1] * raw.ndim
    if len(scales) > 1:
        shape[axis] = len(scales)
    weight = (raw.astype(np.float64) - np.reshape(zeros, shape)) * np.reshape(scales, shape)
    return Operand(d["name"], np.asarray(scales, np.float64), np.asarray(zeros, np.int64), _dtype(d),
                   axis=axis if len(scales) > 1 else None, weight=weight)


def _float16(name: str, values: np.ndarray) -> Operand:
    """A float16 weight: its rounding step is each element's float16 spacing."""
    spacing = np.spacing(np.abs(values).astype(np.float16)).astype(np.float64)
    return Operand(name, spacing.reshape(-1), np.zeros(1, np.int64), "float16", weight=values)


def _static(d) -> Operand:
    scales, zeros = _scales(d)
    return Operand(d["name"], scales, zeros, _dtype(d))


def _dynamic(d) -> Operand:
    return Operand(d["name"], np.ones(1), np.zeros(1, np.int64), "int8", dynamic=True)


def _scales(d):
    params = d.get("quantization_parameters") or {}
    scales = np.asarray(params.get("scales", []), np.float64)
    if not scales.size:
        return None
    return scales, np.asarray(params.get("zero_points", np.zeros(scales.size)), np.int64)


def _dtype(d) -> str:
    return np.dtype(d["dtype"]).name
