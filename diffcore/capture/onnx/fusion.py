"""Which values the deployed graph computes: ONNX Runtime's own optimized graph, read back.

Exposing a value as an output stops ORT from fusing across it, so a capture can see a value the deployed
session never computes: an fp16 RMSNorm's ``Pow`` that overflows when run alone, while the fused
SimplifiedLayerNormalization computes in float32 and is right. ORT writes the graph it actually runs when
``SessionOptions.optimized_model_filepath`` is set; a value of the original graph absent from it was fused
away (or folded) in the deployed run. The CPU provider runs some float16 ops in float32 and renames the
values between them ``InsertedPrecisionFreeCast_<name>``: those values are still computed, so the prefix
is read as the original name.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from ..._deps import require

__all__ = ["PRECISION_FREE_CAST", "deployed_value_names", "fused_away"]

PRECISION_FREE_CAST = "InsertedPrecisionFreeCast_"
OPTIMIZED_FILE = "deployed-optimized.onnx"
# weights go beside the optimized graph: only its structure is read, and protobuf stops at 2 GiB
EXTERNAL_FILE = "deployed-optimized.onnx.data"


def save_options(options, folder: str) -> str:
    """Make ``options`` (a SessionOptions) write the optimized graph into ``folder``; return its path."""
    path = str(Path(folder) / OPTIMIZED_FILE)
    options.optimized_model_filepath = path
    options.add_session_config_entry("session.optimized_model_external_initializers_file_name", EXTERNAL_FILE)
    options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
    return path


def _graph_names(graph, names: set) -> None:
    names.update(v.name for v in graph.input)
    names.update(v.name for v in graph.output)
    names.update(t.name for t in graph.initializer)
    for node in graph.node:
        names.update(node.input)
        names.update(node.output)
        for attr in node.attribute:
            if attr.HasField("g"):
                _graph_names(attr.g, names)
            for sub in attr.graphs:
                _graph_names(sub, names)


def deployed_value_names(path: str) -> set[str]:
    """Every value name in the optimized model at ``path`` (subgraphs included; the precision-free-cast
    prefix removed)."""
    onnx = require("onnx")
    model = onnx.load(path, load_external_data=False)
    names: set = set()
    _graph_names(model.graph, names)
    return {n[len(PRECISION_FREE_CAST):] if n.startswith(PRECISION_FREE_CAST) else n for n in names if n}


def fused_away(original: Iterable[str], deployed: set[str]) -> set[str]:
    """The ``original`` value names the deployed graph no longer has."""
    return {name for name in original if name and name not in deployed}
