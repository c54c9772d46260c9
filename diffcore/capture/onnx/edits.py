"""Small edits of graphs and value infos used to build variants, and input-spec helpers."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping

from ..._deps import require
from ...errors import DiffcoreError
from ..base import InputSpec
from .graph import GraphIndex, read_types


class _Spec(InputSpec):
    """An InputSpec that also keeps symbolic dimension names, for error messages."""

    def __init__(self, name, dtype, shape, dims):
        super().__init__(name, dtype, shape)
        self.dims = dims


def _input_specs(graph) -> list:
    initializers = {t.name for t in graph.initializer}
    types = read_types(graph)
    specs = []
    for info in graph.input:
        if info.name not in initializers:
            vtype = types[info.name]
            specs.append(_Spec(info.name, vtype.dtype or "unknown", vtype.shape, vtype.dims))
    return specs


def _format_dims(dims) -> str:
    shown = [str(d) if d is not None else "?" for d in dims]
    return "(" + ", ".join(shown) + ("," if len(shown) == 1 else "") + ")"


def _check_shape(model: str, spec: _Spec, shape: tuple) -> None:
    """DiffcoreError when the rank or a fixed dimension of ``spec`` contradicts ``shape``."""
    if spec.dims is None:
        return
    wrong_rank = len(spec.dims) != len(shape)
    fixed = [k for k, d in enumerate(spec.dims) if isinstance(d, int) and not wrong_rank and d != shape[k]]
    if wrong_rank or fixed:
        why = (f"rank {len(shape)} instead of {len(spec.dims)}" if wrong_rank else
               f"dimension {fixed[0]} is fixed to {spec.dims[fixed[0]]} in the model (re-export it with a "
               f"dynamic axis to change it)")
        raise DiffcoreError(f"input {spec.name!r} of {model} expects shape {_format_dims(spec.dims)} but was "
                            f"given shape {_format_dims(shape)}: {why}")


def _set_dims(info, shape) -> None:
    """Overwrite a graph input's dims with concrete ``shape`` (for shape inference only)."""
    tensor = info.type.tensor_type
    tensor.ClearField("shape")
    for size in shape:
        tensor.shape.dim.add().dim_value = int(size)


def _value_info(name: str, elem_type: int | None):
    """A ValueInfo with at most the element type. Extra outputs are left untyped: ORT accepts that and
    infers the type itself, which no stale annotation in the model can contradict."""
    onnx = require("onnx")
    info = onnx.ValueInfoProto(name=name)
    if elem_type:
        info.type.tensor_type.elem_type = elem_type
    return info


def _alias(name: str, graph: GraphIndex) -> str:
    alias = f"{name}::diffcore_fed"
    while graph.is_value(alias):
        alias += "_"
    return alias


def _rename_inputs(node, alias: Mapping, shadowed: frozenset = frozenset()) -> None:
    """Point inputs named in ``alias`` at their aliases, in subgraphs too unless redefined there."""
    for k, name in enumerate(node.input):
        if name in alias and name not in shadowed:
            node.input[k] = alias[name]
    for attr in node.attribute:
        for graph in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
            inner = shadowed | {v.name for v in graph.input} | {t.name for t in graph.initializer}
            for sub in graph.node:
                _rename_inputs(sub, alias, inner)
                inner = inner | set(sub.output)


def _known(types: Mapping) -> dict:
    return {name: t for name, t in types.items() if t.elem_type is not None}


def _trim(cache: OrderedDict, size: int) -> None:
    while len(cache) > size:
        cache.popitem(last=False)
