"""Torch module paths whose wrapper module an exporter left out of the ONNX scopes.

A model exported through a wrapper may lose one level of its module path in the node scopes: optimum's
export of a sentence-transformers pipeline names BertModel's values ``/0/encoder/layer.0/...`` where the
eager pipeline's module is ``0.model.encoder.layer.0``. Exact path equality would pair no layer at all
(and the comparison would stand on its outputs alone). The dropped level is learned from the two graphs,
never assumed: a prefix whose last component, removed, turns at least ``MIN_VOTES`` unpaired torch paths
into ONNX scopes is a dropped wrapper, and its descendants are looked up without it.
"""
from __future__ import annotations

from collections import Counter

MIN_VOTES = 2


def dropped_wrapper_aliases(torch_paths, graph_scopes) -> dict:
    """``{torch module path: ONNX scope}`` for torch paths found in the graph only without one wrapper
    level (see the module docstring); paths that are scopes already are never rewritten."""
    scopes = set(graph_scopes)
    unpaired = [p for p in torch_paths if p and p not in scopes]
    votes = Counter()
    for path in unpaired:
        parts = path.split(".")
        for i in range(len(parts) - 1):  # the last component is the module itself, not a wrapper
            if ".".join(parts[:i] + parts[i + 1:]) in scopes:
                votes[".".join(parts[:i + 1])] += 1
    aliases: dict = {}
    for prefix, count in votes.most_common():
        if count < MIN_VOTES:
            break
        level = prefix.count(".")
        for path in unpaired:
            if path not in aliases and path.startswith(prefix + "."):
                parts = path.split(".")
                alias = ".".join(parts[:level] + parts[level + 1:])
                if alias in scopes:
                    aliases[path] = alias
    return aliases
