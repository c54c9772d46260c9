"""Torch module scopes as the exporters write them into ONNX graphs, and as graph rewriters leave them.

Pure functions on names and node metadata; ``GraphIndex`` (graph.py) applies them to a whole graph.
"""
from __future__ import annotations

import ast
import re
from collections import defaultdict

from ...errors import DiffcoreError

SCOPE_KEY = "pkg.torch.onnx.name_scopes"
_REPEAT = re.compile(r"(.+)_(\d+)")
# TorchScript exporter value names: the producing node's name plus ``_output_<slot>``. Graph rewriters
# (ORT's transformer optimizer, ORT's own fusions) rename the nodes they fuse but keep the value names.
_TS_VALUE = re.compile(r"(/.+)_output_\d+")
FUSED_DOMAINS = frozenset({"com.microsoft"})
# Fused contrib ops that add a bias taken from a Linear before them: op -> index of the bias input.
BIAS_INPUT = {"SkipLayerNormalization": 4, "SkipSimplifiedLayerNormalization": 3, "BiasGelu": 1,
              "FastGelu": 1, "BiasAdd": 1, "BiasSplitGelu": 1, "BiasDropout": 1, "MultiHeadAttention": 3}
_BARE_MATMULS = frozenset({"MatMul", "FusedMatMul"})
# Fused ops ending in a normalization: the input holding its gain, whose parameter name is the module the
# output belongs to (the other parameters may be a folded Linear's bias or the embeddings before it).
GAIN_INPUT = {"SkipLayerNormalization": 2, "SkipSimplifiedLayerNormalization": 2, "EmbedLayerNormalization": 5,
              "LayerNormalization": 1, "SimplifiedLayerNormalization": 1}


def torchscript_levels(name: str) -> list | None:
    """Scope levels of a TorchScript-exported node name (``/blocks.0/ln/LayerNormalization``), or None."""
    if not name.startswith("/"):
        return None
    return [level for level in name.split("/")[1:-1] if level]


def value_levels(name: str) -> list | None:
    """Scope levels of a TorchScript-exported value name (``/blocks.0/ln/Add_1_output_0``), or None."""
    found = _TS_VALUE.fullmatch(name or "")
    return torchscript_levels(found.group(1)) if found else None


def node_value_levels(node) -> list | None:
    """Scope levels read from the first output value named the TorchScript way, or None."""
    return next((levels for out in node.output if (levels := value_levels(out)) is not None), None)


def param_module(name: str) -> str | None:
    """The torch module path of a parameter-named initializer (``enc.ln.weight`` -> ``enc.ln``), or None."""
    if "." not in name or name.startswith(("onnx::", "/")) or " " in name:
        return None
    return name.rsplit(".", 1)[0]


def dynamo_levels(node) -> list | None:
    """Full module paths from the dynamo exporter's name-scope metadata, or None when absent."""
    for prop in node.metadata_props:
        if prop.key == SCOPE_KEY:
            try:
                scopes = ast.literal_eval(prop.value[:1 << 16])
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                scopes = None
            if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
                raise DiffcoreError(f"ONNX node {node.name!r} has malformed {SCOPE_KEY} metadata "
                                    f"({prop.value[:60]!r}): expected a list of module paths as the torch "
                                    "exporter writes it; remove or fix that metadata")
            return [s for s in scopes[:-1] if s]
    return None


def join_level(path: str, level: str) -> str:
    """Append a TorchScript scope level: ``mlp.0`` under ``blocks.0.mlp`` gives ``blocks.0.mlp.0``."""
    if not path:
        return level
    last = path.rsplit(".", 1)[-1]
    if level.startswith(last + "."):
        return f"{path}.{level[len(last) + 1:]}"
    return f"{path}.{level}"


def torchscript_chain(levels: list, prefixes: set) -> list:
    """[(module path, raw instance prefix)] outermost first; ``relu_1`` beside ``relu`` is a repeated call."""
    chain, path, prefix = [], "", ""
    for level in levels:
        parent, prefix = prefix, f"{prefix}/{level}"
        repeat = _REPEAT.fullmatch(level)
        if repeat and f"{parent}/{repeat.group(1)}" in prefixes:
            level = repeat.group(1)
        path = join_level(path, level)
        chain.append((path, prefix))
    return chain


class _UnionFind:
    def __init__(self):
        self.parent: dict = {}

    def find(self, item):
        parent = self.parent.setdefault(item, item)
        if parent != item:
            parent = self.parent[item] = self.find(parent)
        return parent

    def union(self, a, b):
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[rb] = ra  # any root will do: calls are numbered by first node, not by root


def _prefixes(levels):
    prefix = ""
    for level in levels:
        prefix = f"{prefix}/{level}"
        yield prefix


def _number_calls(calls: list) -> dict:
    """(path, identity) -> ``path`` for the first call of a path, ``path#k`` for the k-th later one."""
    keys: dict = {}
    count: dict = defaultdict(int)
    for chain in calls:
        for path, ident in chain or ():
            if (path, ident) not in keys:
                k = count[path]
                count[path] += 1
                keys[(path, ident)] = path if k == 0 else f"{path}#{k}"
    return keys


def _common_path(paths: list) -> str:
    """The longest dotted prefix every path shares (``a.b.c``, ``a.b.d`` -> ``a.b``)."""
    parts = [p.split(".") for p in paths]
    return ".".join(_common_prefix([tuple(p) for p in parts]))


def _chain_of_path(path: str, known: dict) -> tuple:
    """Chain keys for a module path: the known chain of its longest known prefix, extended by the rest."""
    parts = path.split(".") if path else []
    for n in range(len(parts), 0, -1):
        base = known.get(".".join(parts[:n]))
        if base is not None:
            return base + tuple(".".join(parts[:m]) for m in range(n + 1, len(parts) + 1))
    return tuple(".".join(parts[:m]) for m in range(1, len(parts) + 1))


def _common_prefix(chains: list) -> tuple:
    if not chains:
        return ()
    first = chains[0]
    size = min(len(c) for c in chains)
    for k in range(size):
        if any(c[k] != first[k] for c in chains):
            return tuple(first[:k])
    return tuple(first[:size])
