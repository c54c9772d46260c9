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

import math
from collections.abc import Callable, Mapping

from ..._deps import require
from .edits import _value_info
from .graph import _NONDETERMINISTIC, GraphIndex, ValueType, node_inputs
from .values import _elem_type

__all__ = ["fold_constants", "foldable", "run_types", "shape_variant", "unknown_values", "with_constants"]

_FOLD_TYPES = frozenset({6, 7})  # int32, int64: shape arithmetic
_FOLD_LIMIT = 4096  # elements: a folded value larger than this is data, not a shape, and is left alone

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


def foldable(nodes, constants: set, types: Mapping) -> tuple[list, list]:
    """(indices of the nodes that compute from ``constants`` alone, their integer outputs of known type).

    ``constants`` are the initializers held in the model itself (large weights are not: nothing about a
    shape is computed from them); a foldable node's outputs count as constants for the nodes after it."""
    known, ids, outputs = set(constants), [], []
    for i, node in enumerate(nodes):
        if node.op_type in _NONDETERMINISTIC or not all(n in known for n in node_inputs(node)):
            continue
        ids.append(i)
        known.update(out for out in node.output if out)
        outputs += [out for out in node.output if out and _small_int(types.get(out))]
    return ids, outputs


def _small_int(vtype) -> bool:
    if vtype is None or vtype.elem_type not in _FOLD_TYPES:
        return False
    shape = vtype.shape
    return shape is None or None in shape or math.prod(shape) <= _FOLD_LIMIT


def fold_constants(run: Callable, ids: list, outputs: list) -> dict:
    """{name: array} of the small integer ``outputs`` computed by ``run(ids, outputs)`` (one session of
    just those nodes); empty when it fails (the shape run then finds the shapes)."""
    if not outputs:
        return {}
    try:
        values = run(ids, outputs)
    except Exception:  # folding refines shapes; a shape run still finds them
        return {}
    return {name: value for name, value in values.items()
            if getattr(value, "size", _FOLD_LIMIT + 1) <= _FOLD_LIMIT and _elem_type(value) in _FOLD_TYPES}


def with_constants(model, values: Mapping) -> None:
    """Make the folded ``values`` initializers of ``model`` (a copy given to shape inference) in place of
    the nodes that computed them."""
    if not values:
        return
    onnx = require("onnx")
    folded = [any(node.output) and all(out in values for out in node.output if out) for node in model.graph.node]
    names = [out for node, gone in zip(model.graph.node, folded) if gone for out in node.output if out]
    kept = [node for node, gone in zip(model.graph.node, folded) if not gone]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    model.graph.initializer.extend(onnx.numpy_helper.from_array(values[name], name) for name in names)


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
