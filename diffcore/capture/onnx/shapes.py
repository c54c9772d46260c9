"""Shapes and dtypes of ONNX values taken from a run, where static shape inference leaves them unknown.

ONNX shape inference cannot see through contrib ops (``com.microsoft`` Attention, SkipLayerNormalization),
a Pad whose amount is computed at run time, a Reshape whose target shape is computed from other shapes (as
TorchScript exports of attention are), or a Loop; ORT only knows element types. A *shape run* computes them
on the actual inputs: one run of the whole model whose only outputs are ``Shape`` nodes added on those
values, so it costs one forward pass and holds no more than a plain run (``shape_variant``). Values whose
element type is unknown too are computed themselves instead, chunk by chunk through the runner's segmented
capture, keeping only each value's shape and element type (``run_types``).
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from ..._deps import require
from .edits import _value_info
from .graph import GraphIndex, ValueType
from .values import _elem_type

__all__ = ["run_types", "shape_variant", "unknown_values"]

_FIRST_CHUNK = 16      # values in the first run, before their sizes are known
_MAX_CHUNK = 512


def unknown_values(graph: GraphIndex, types: Mapping) -> list:
    """Non-static values computed by nodes whose element type is float or unknown and whose shape is not
    fully known, in topological order."""
    names = []
    for node in graph.nodes:
        for out in node.output:
            if not out or out in graph.static:
                continue
            vtype = types.get(out) or graph.type_of(out)
            if vtype.elem_type is not None and not vtype.is_float:
                continue
            if vtype.shape is None or any(d is None for d in vtype.shape):
                names.append(out)
    return names


def shape_variant(variant, names: list) -> list:
    """Make ``variant`` (a copy of the whole model) output the shape of each of ``names`` instead of its
    outputs, through added ``Shape`` nodes; return the output names, in the order of ``names``."""
    helper = require("onnx").helper
    shapes = [f"{name}::shape" for name in names]
    variant.graph.node.extend(helper.make_node("Shape", [name], [out], name=out)
                              for name, out in zip(names, shapes))
    variant.graph.ClearField("output")
    variant.graph.output.extend(_value_info(out, None) for out in shapes)
    return shapes


def run_types(capture: Callable, feed: Mapping, names: list, budget_bytes: int) -> dict:
    """{name: ValueType} from running ``capture(feed, chunk)`` over ``names`` in chunks whose tensors fit in
    ``budget_bytes`` (sized from the chunks already run); the values themselves are dropped at once."""
    found: dict = {}
    size, start = _FIRST_CHUNK, 0
    while start < len(names):
        chunk = names[start:start + size]
        values = capture(feed, chunk)
        total = 0
        for name in chunk:
            shape, elem, nbytes = _describe(values[name])
            found[name] = ValueType(elem, shape)
            total += nbytes
        del values
        start += len(chunk)
        per_value = max(total // max(len(chunk), 1), 1)
        size = max(1, min(_MAX_CHUNK, budget_bytes // per_value))
    return found


def _describe(value) -> tuple:
    """(shape, ONNX element type, bytes) of a captured value (NumPy, torch, CuPy or OrtValue)."""
    if callable(getattr(value, "shape", None)):  # OrtValue
        shape = tuple(value.shape())
        return shape, None, _numel(shape) * 4
    shape = tuple(int(d) for d in value.shape)
    return shape, _elem_type(value), int(getattr(value, "nbytes", _numel(shape) * 4))


def _numel(shape) -> int:
    count = 1
    for d in shape:
        count *= int(d)
    return count
