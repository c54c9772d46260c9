"""Per-node drift in the node-data format of Google's Model Explorer (package ai-edge-model-explorer).

A user opens their ONNX model in Model Explorer (with the model-explorer-onnx adapter) and loads the file
this writes as node data: every node whose output diffcore compared is coloured by its status (green ok,
yellow drift, orange carried, red diverged) and labelled with its relative L2 error in percent; the first
divergence is the red node upstream of all others. Beside it, ``<stem>.local.json`` carries the local error
where it was computed.

The format (``model_explorer.node_data_builder.ModelNodeData``) is written as plain JSON here, so writing
needs no Model Explorer install; the tests read the files back with Model Explorer's own classes. Results
are keyed by node id, which the ONNX adapter takes from the node name; an unnamed node gets the name the
adapter would give it is unknown, so rows of unnamed nodes are left out (and counted in the return value).
"""
from __future__ import annotations

from pathlib import Path

from .._deps import require
from ..errors import DiffcoreError
from ..files import write_json
from .model import CARRIED, DIVERGED, DRIFT, OK

STATUS_COLORS = {OK: "#8fd694", DRIFT: "#f6e27f", CARRIED: "#f4a259", DIVERGED: "#e4572e"}


def _producers(model) -> tuple[str, dict]:
    """(main graph name, {value name: producing node name}) of an ONNX model."""
    producers = {}
    for node in model.graph.node:
        for out in node.output:
            if out and node.name:
                producers[out] = node.name
    return model.graph.name or "main_graph", producers


def _load(onnx_model):
    onnx = require("onnx", "writing Model Explorer node data")
    if isinstance(onnx_model, onnx.ModelProto):
        return onnx_model
    try:
        return onnx.load(str(onnx_model), load_external_data=False)
    except Exception as exc:
        raise DiffcoreError(f"cannot read {onnx_model} as ONNX for Model Explorer: {exc}") from exc


def _tensor_of(row, side: str) -> str:
    return row.test_tensor if side == "test" else row.ref_tensor


def node_results(report, onnx_model, side: str = "test") -> tuple[str, dict, dict, int]:
    """(graph id, {node: (rel L2 %, status)}, {node: local rel L2 %}, rows left out) for ``side``'s graph."""
    graph_id, producers = _producers(_load(onnx_model))
    drift, local, missing = {}, {}, 0
    for row in report.layers + report.outputs:
        node = producers.get(_tensor_of(row, side))
        if node is None:
            missing += 1
            continue
        if node not in drift or _worse(row.status, drift[node][1]):
            drift[node] = (100.0 * row.rel_l2, row.status)
        if row.local_rel_l2 is not None:
            local[node] = max(local.get(node, 0.0), 100.0 * row.local_rel_l2)
    return graph_id, drift, local, missing


def _worse(status: str, than: str) -> bool:
    order = (OK, DRIFT, CARRIED, DIVERGED)
    return order.index(status) > order.index(than) if status in order and than in order else False


def _finite(value: float) -> float:
    return value if value == value and abs(value) != float("inf") else 1e9


def write_model_explorer(report, onnx_model, path, *, side: str = "test", force: bool = False) -> dict:
    """Write Model Explorer node data for the ONNX graph of ``side`` ("test" or "ref").

    Args:
        report: a DiffReport whose ``side`` is that ONNX model.
        onnx_model: the ONNX model (path or ModelProto) the user will open in Model Explorer.
        path: the node-data JSON (relative L2 error in %, coloured by status); the local error goes to
            ``<stem>.local.json`` beside it when any was computed.
        force: overwrite existing files.

    Returns:
        {"drift": path, "local": path or None, "nodes": count, "left_out": rows without a named node}.
    """
    if side not in ("test", "ref"):
        raise DiffcoreError(f"side must be 'test' or 'ref', got {side!r}")
    graph_id, drift, local, missing = node_results(report, onnx_model, side)
    if not drift:
        raise DiffcoreError(f"no compared row of the report names a node of {onnx_model}: is it the {side} "
                            "model of this comparison?")
    results = {node: {"value": _finite(value), "bgColor": STATUS_COLORS.get(status, "#cccccc")}
               for node, (value, status) in drift.items()}
    written = write_json(path, {graph_id: {"name": "diffcore rel L2 %", "results": results}}, force=force,
                         what="Model Explorer node data")
    local_path = None
    if local:
        local_path = str(Path(path).with_suffix("")) + ".local.json"
        gradient = [{"stop": 0, "bgColor": "#ffffff"}, {"stop": 1, "bgColor": "#e4572e"}]
        local_results = {node: {"value": _finite(value)} for node, value in local.items()}
        write_json(local_path, {graph_id: {"name": "diffcore local rel L2 %", "results": local_results,
                                           "gradient": gradient}}, force=force, what="Model Explorer node data")
    return {"drift": written, "local": local_path, "nodes": len(results), "left_out": missing}
