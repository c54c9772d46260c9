"""Pair a float32 value with what a QDQ graph's next layer reads of it: the DequantizeLinear output.

A QDQ layer's own float output (before its QuantizeLinear) is not what the model computes with: the next
layer reads the value after QuantizeLinear -> DequantizeLinear, rounded to the output grid and clipped to
its range. ONNX Runtime's quantizer even folds a following Relu into that range (the Conv's float output
then has negatives the reference's Relu output has not). So a matched value that feeds exactly one
QuantizeLinear -> DequantizeLinear is compared at the DequantizeLinear output instead.
"""
from __future__ import annotations

from dataclasses import replace

from ..report.model import Unmatched


def dequantized_pairs(match, test_probes, layers: dict) -> int:
    """Move the test side of layer pairs to the DequantizeLinear output that stands for the same value
    (``layers``: graph.layer_precisions of the test model); return how many moved."""
    probes = {p.key: p for p in test_probes}
    moved = 0
    for pair in match.layer_pairs:
        target = _dequantized_of(pair.test.key, layers)
        if target is None or target not in probes:
            continue
        match.unmatched = [u for u in match.unmatched if not (u.side == "test" and u.key == target)]
        match.unmatched.append(Unmatched("test", pair.test.key, "the layer's float output before its "
                                         f"QuantizeLinear: compared after dequantization ({target!r}), "
                                         "what the next layer reads", pair.name))
        pair.notes.append(f"compared after QuantizeLinear -> DequantizeLinear ({target!r})")
        # a local run of the layer reading this value feeds the reference's value before its QuantizeLinear
        match.aliases[pair.test.key] = pair.ref.key
        # the row shows the layer's op (Conv, Gemm), not the DequantizeLinear that ends it; ``dequantized``:
        # its capture must leave it without a reader in the same run (comparison.py, segments.py)
        pair.test = replace(probes[target], op_type=layers[target].op_type,
                            meta={**probes[target].meta, "dequantized": True})
        moved += 1
    return moved


def _dequantized_of(key: str, layers: dict) -> str | None:
    layer = layers.get(key)
    if layer is None or layer.output is not None:
        return None
    for name, other in layers.items():
        if other.node == layer.node and other.output is not None and name != key:
            return name
    return None
