"""The float16 conversion diffcore makes of an ONNX model (onnxconverter-common), and its repairs."""
from __future__ import annotations

from ..._deps import require
from ...errors import DiffcoreError


def to_float16(model, keep_io_types: bool):
    """``model`` (an onnx.ModelProto) with float weights and computation in float16: the conversion
    diffcore compares against for ``test_dtype="float16"`` (onnxconverter-common, with its Cast targets
    repaired so ONNX Runtime loads the result)."""
    float16 = require("onnxconverter_common.float16", "converting a model to float16")
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    except Exception as exc:
        raise DiffcoreError(f"converting the ONNX model to float16 failed: {exc}") from exc
    _retarget_float_casts(converted.graph)
    return converted


def _retarget_float_casts(graph) -> None:
    """Make ``Cast(to=float)`` nodes whose output the converter declared float16 cast to float16.

    onnxconverter-common rewrites value types but not Cast targets, which leaves a model ONNX Runtime
    refuses to load (microsoft/onnxconverter-common#320); its own inserted Casts to float keep float outputs.
    """
    half = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == 10}
    for node in graph.node:
        if node.op_type == "Cast" and node.output and node.output[0] in half:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == 1:
                    attr.i = 10
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                _retarget_float_casts(sub)
