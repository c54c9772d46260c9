"""TensorFlow converter names and layouts for the matcher.

tf2onnx and the TFLite converter keep TensorFlow's op names, which carry the Keras layer:
``net_1/conv_1/Relu`` is inside layer ``conv`` (Keras 3 traces a model a second time when converting it,
adding a ``_1`` suffix to the model's and each layer's scope). tf2onnx runs convolutions in NCHW while Keras
and TFLite keep NHWC: a value whose shape is the other layout's permutation is transposed before comparing,
and the row says so.
"""
from __future__ import annotations

NHWC_TO_NCHW = (0, 3, 1, 2)
NCHW_TO_NHWC = (0, 2, 3, 1)


def tf_layers(name: str | None) -> list:
    """Layer names a TensorFlow op name may belong to: ``net_1/fc1_1/MatMul;...`` -> ``['fc1_1', 'fc1']``."""
    parts = (name or "").split(";")[0].split(":")[0].split("/")
    if len(parts) < 3 or not parts[0]:  # torch.onnx scopes start with "/" (/blocks.0/ln/Add): not TF
        return []
    layer = parts[1]
    head, sep, tail = layer.rpartition("_")
    return [layer, head] if sep and tail.isdigit() else [layer]


def layout_transpose(ref_shape, test_shape) -> tuple | None:
    """Axes that bring a 4-D test tensor into the reference's layout (NCHW <-> NHWC), or None when the
    shapes are equal, not 4-D, or not such a permutation."""
    if ref_shape is None or test_shape is None or len(ref_shape) != 4 or len(test_shape) != 4:
        return None
    ref_shape, test_shape = tuple(ref_shape), tuple(test_shape)
    same = lambda a, b: all(x is None or y is None or x == y for x, y in zip(a, b))  # noqa: E731
    if same(ref_shape, test_shape):
        return None
    for axes in (NCHW_TO_NHWC, NHWC_TO_NCHW):
        if same(tuple(test_shape[a] for a in axes), ref_shape):
            return axes
    return None


def layout_note(axes: tuple) -> str:
    return ("layout: test NCHW transposed to the reference's NHWC" if axes == NCHW_TO_NHWC
            else "layout: test NHWC transposed to the reference's NCHW")


def tf_op_name(probe) -> str | None:
    """The TensorFlow op a converted graph's value is the output of, as both converters keep it:
    ``net_1/conv_1/Relu`` for tf2onnx's ``net_1/conv_1/Relu:0`` and TFLite's fused
    ``net_1/conv_1/Relu;net_1/conv_1/BiasAdd``; None for a value without a TensorFlow scope."""
    name = probe.meta.get("tf_op") or (probe.key or "").split(";")[0]  # TFLite: the name before uniquifying
    head, sep, tail = name.rpartition(":")
    name = head if sep and tail.isdigit() else name
    return name if tf_layers(name) else None


def helper_ops(probes) -> set:
    """TensorFlow op names a converter expanded into several nodes: tf2onnx names its helper nodes
    ``<op>__<n>`` (``SquaredDifference`` -> a Sub named after the op, then ``SquaredDifference__10``), so the
    value named after the op may not be the op's output: such names are never paired by name."""
    out = set()
    for probe in probes:
        name = (probe.key or "").split(";")[0].rsplit(":", 1)[0]
        head, sep, tail = name.rpartition("__")
        if sep and tail.isdigit():
            out.add(head)
    return out
