"""Shapes and dtypes of ONNX values taken from a run, where static shape inference leaves them unknown.

ONNX shape inference cannot see through contrib ops (``com.microsoft`` Attention, SkipLayerNormalization),
a Pad whose amount is computed at run time, or a Loop; ORT only knows element types. A *probe run* computes
those values on the actual inputs, chunk by chunk through the runner's segmented capture (so it costs about
one forward pass and holds one chunk at a time), and keeps only each value's shape and element type.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping

from .graph import GraphIndex, ValueType
from .values import _elem_type

__all__ = ["run_types", "unknown_values"]

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
