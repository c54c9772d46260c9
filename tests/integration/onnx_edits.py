"""Planting bugs in exported ONNX models, the way a broken converter or a hand edit would."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper


def _in_scope(node, module: str, torchscript_scope: str) -> bool:
    dynamo = any(p.key == "pkg.torch.onnx.name_scopes" and f"'{module}'" in p.value for p in node.metadata_props)
    return node.name.startswith(torchscript_scope) or dynamo


def find_node(model, module: str, op_type: str, torchscript_scope: str):
    """The ``op_type`` node of torch module ``module``: by the dynamo exporter's scope metadata, or by the
    TorchScript exporter's node-name prefix (e.g. "/blocks.2/mlp/mlp.1/": a called Sequential adds a level)."""
    nodes = [n for n in model.graph.node if n.op_type == op_type and _in_scope(n, module, torchscript_scope)]
    assert nodes, f"no {op_type} node in the scope of {module}"
    return nodes[0]


def set_attribute(node, name: str, value) -> None:
    for attr in node.attribute:
        if attr.name == name:
            node.attribute.remove(attr)
            break
    node.attribute.append(onnx.helper.make_attribute(name, value))


def edited(path: str, out: str, edit) -> str:
    """Load ``path``, apply ``edit(model)``, save to ``out`` (weights kept inline)."""
    model = onnx.load(path)
    edit(model)
    onnx.save(model, out)
    return out


def swap_output_channels(model, node, a: int = 0, b: int = 1) -> None:
    """Swap two output channels of a Conv's weight and bias initializers."""
    inits = {i.name: i for i in model.graph.initializer}
    for name in node.input[1:3]:
        array = numpy_helper.to_array(inits[name]).copy()
        array[[a, b]] = array[[b, a]]
        inits[name].CopyFrom(numpy_helper.from_array(np.ascontiguousarray(array), name))
