"""The float16 conversion diffcore makes of an ONNX model (onnxconverter-common), and its repairs.

What the conversion changed is reported, not hidden (diffcore/findings.py): the constants and weights the
converter clamped (by default finite values beyond ±1e4 become ±1e4 and nonzero values within ±1e-7 become
±1e-7; onnxconverter-common only prints Python warnings about them) and the Cast nodes diffcore retargets.
"""
from __future__ import annotations

import warnings

from ..._deps import require
from ...errors import DiffcoreError
from ...findings import REPAIR, clamps, float_constants

CAST_ISSUE = "microsoft/onnxconverter-common#320"


def to_float16(model, keep_io_types: bool):
    """``model`` (an onnx.ModelProto) with float weights and computation in float16: the conversion
    diffcore compares against for ``test_dtype="float16"`` (onnxconverter-common, with its Cast targets
    repaired so ONNX Runtime loads the result)."""
    return convert_float16(model, keep_io_types)[0]


def convert_float16(model, keep_io_types: bool) -> tuple:
    """(converted model, findings): ``to_float16``'s model, and the clamps and repairs it took, as findings
    whose ``nodes``/``values`` are still empty (``findings.with_readers`` fills them from the graph)."""
    float16 = require("onnxconverter_common.float16", "converting a model to float16")
    before = float_constants(model.graph)  # the converter works on a copy (its shape inference makes one)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its "will be truncated" warnings become findings instead
            converted = float16.convert_float_to_float16(model, keep_io_types=keep_io_types)
    except Exception as exc:
        raise DiffcoreError(f"converting the ONNX model to float16 failed: {exc}") from exc
    found = clamps(before, float_constants(converted.graph))
    retargeted = _retarget_float_casts(converted.graph)
    if retargeted:
        found.append(_cast_repair(retargeted))
    return converted, found


def _cast_repair(casts: list) -> dict:
    names = ", ".join(n for n, _ in casts[:3]) + (" ..." if len(casts) > 3 else "")
    return {"kind": REPAIR, "tensor": None, "nodes": [n for n, _ in casts], "values": [o for _, o in casts],
            "message": f"diffcore retargeted {len(casts)} Cast node(s) ({names}) from float32 to float16: "
                       f"onnxconverter-common declared their outputs float16 but left them casting to float32, "
                       f"which ONNX Runtime refuses to load ({CAST_ISSUE}); the converter's own output does not "
                       f"load without this repair"}


def _retarget_float_casts(graph) -> list:
    """Make ``Cast(to=float)`` nodes whose output the converter declared float16 cast to float16; return
    [(node name, output)] of the nodes changed.

    onnxconverter-common rewrites value types but not Cast targets, which leaves a model ONNX Runtime
    refuses to load (microsoft/onnxconverter-common#320); its own inserted Casts to float keep float outputs.
    """
    changed = []
    half = {v.name for v in graph.value_info if v.type.tensor_type.elem_type == 10}
    for node in graph.node:
        if node.op_type == "Cast" and node.output and node.output[0] in half:
            for attr in node.attribute:
                if attr.name == "to" and attr.i == 1:
                    attr.i = 10
                    changed.append((node.name or node.output[0], node.output[0]))
        for attr in node.attribute:
            for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                changed += _retarget_float_casts(sub)
    return changed
