"""An ONNX model converted to float16 by onnxconverter-common with chosen nodes kept in float32.

The converter's ``node_block_list`` leaves the named nodes in float32 and puts Casts at their boundaries
(adjacent blocked nodes pass float32 between them: the converter removes the Cast pairs in between where
the value has one consumer, ``join_float32_islands`` where it has several).
"""
from __future__ import annotations

import os

from .._deps import require
from ..errors import DiffcoreError

__all__ = ["OnnxTarget", "join_float32_islands"]


def _load(model):
    onnx = require("onnx", "suggesting float32 nodes of an ONNX model")
    if isinstance(model, (str, os.PathLike)):
        return onnx.load(os.fspath(model)), os.fspath(model)
    if type(model).__name__ != "ModelProto":
        raise DiffcoreError(f"suggest_fp32 needs an ONNX model as TEST, got {type(model).__name__}")
    return model, None


def _is_float16(model) -> bool:
    return any(init.data_type == 10 for init in model.graph.initializer) or \
        any(v.type.tensor_type.elem_type == 10 for v in list(model.graph.input) + list(model.graph.value_info))


class OnnxTarget:
    """How to run a float32 ONNX TEST model converted to float16 with a set of its nodes in float32."""

    kind = "onnx float16"
    dtype = "float16"

    def __init__(self, model, *, keep_io_types: bool = True, providers=None):
        self.model, self.path = _load(model)
        if _is_float16(self.model):
            raise DiffcoreError("suggest_fp32 needs the float32 ONNX model as TEST with test_dtype='float16' "
                                "(it regenerates the float16 conversion with some nodes kept in float32); this "
                                "model is already float16")
        self.keep_io_types, self.providers = keep_io_types, providers
        self.nodes = {node.name for node in self.model.graph.node}
        self.outputs_of = {node.name: list(node.output) for node in self.model.graph.node if node.name}
        self.producer = {out: node.name for node in self.model.graph.node for out in node.output if node.name}

    def unit_of(self, row) -> str | None:
        """The node producing a row's tensor: value names survive the conversion, and the converter names
        the float32 value it casts after a blocked node ``<node>_output_cast_<i>``."""
        for name in (row.test_tensor, row.ref_tensor):
            if name in self.producer:
                return self.producer[name]
        node, sep, index = row.test_tensor.rpartition("_output_cast_")
        if sep and index.isdigit() and node in self.nodes:
            return node
        return None

    def consumers(self, unit: str) -> list:
        """The nodes reading ``unit``'s outputs, in graph order."""
        outputs = set(self.outputs_of.get(unit, ()))
        return [n.name for n in self.model.graph.node if n.name and outputs.intersection(n.input)]

    def build(self, units):
        """The float16 ModelProto with ``units`` (node names) left in float32."""
        from ..capture.onnx.convert import _retarget_float_casts

        float16 = require("onnxconverter_common.float16", "converting a model to float16")
        onnx = require("onnx", "converting a model to float16")
        copy = onnx.ModelProto()
        copy.CopyFrom(self.model)
        try:
            converted = float16.convert_float_to_float16(copy, keep_io_types=self.keep_io_types,
                                                         node_block_list=list(units))
        except Exception as exc:
            raise DiffcoreError(f"converting the ONNX model to float16 failed: {exc}") from exc
        _retarget_float_casts(converted.graph)
        join_float32_islands(converted)
        return converted

    def runner(self, units):
        from ..capture.onnx import OnnxRunner

        return OnnxRunner(self.build(units), providers=self.providers, name="test")

    def code(self, units) -> str:
        names = "[" + ", ".join(repr(u) for u in units) + "]"
        source = repr(self.path) if self.path else "'model.onnx'"
        joined = join_float32_islands(self.build_plain(units))
        return (_SNIPPET_JOIN if joined else _SNIPPET).format(source=source, keep=self.keep_io_types,
                                                              names=names)

    def build_plain(self, units):
        """onnxconverter-common's conversion alone (what the snippet's first call makes)."""
        float16 = require("onnxconverter_common.float16", "converting a model to float16")
        onnx = require("onnx", "converting a model to float16")
        copy = onnx.ModelProto()
        copy.CopyFrom(self.model)
        return float16.convert_float_to_float16(copy, keep_io_types=self.keep_io_types,
                                                node_block_list=list(units))


def join_float32_islands(model) -> int:
    """Remove float16 round trips between float32 values: a ``Cast(to=float)`` reading the output of a
    ``Cast(to=float16)`` of a float32 value reads that value instead. onnxconverter-common removes such
    pairs only where the value has one consumer; where it fans out (GELU's input feeds Div and Mul) a value
    past 65504 would still overflow between two float32 nodes. Returns the Casts rewired (in place)."""
    graph = model.graph
    float32 = {v.name for v in list(graph.value_info) + list(graph.input) if v.type.tensor_type.elem_type == 1}
    to_half = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast" and _cast_to(n) == 10
               and n.input[0] in float32}
    rewired = 0
    for node in graph.node:
        if node.op_type == "Cast" and _cast_to(node) == 1 and node.input[0] in to_half:
            node.input[0] = to_half[node.input[0]]
            rewired += 1
    return rewired


def _cast_to(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


_SNIPPET = '''import onnx
from onnxconverter_common import float16
model = onnx.load({source})
fp16 = float16.convert_float_to_float16(model, keep_io_types={keep},
                                        node_block_list={names})
onnx.save(fp16, "model_fp16.onnx")'''

_SNIPPET_JOIN = '''import onnx
from onnxconverter_common import float16
from diffcore.precision import join_float32_islands
model = onnx.load({source})
fp16 = float16.convert_float_to_float16(model, keep_io_types={keep},
                                        node_block_list={names})
join_float32_islands(fp16)  # no float16 round trip where a float32 value feeds several float32 nodes
onnx.save(fp16, "model_fp16.onnx")'''
