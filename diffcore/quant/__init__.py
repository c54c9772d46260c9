"""Quantized ONNX models judged by the precision each layer computes in (docs/ARCHITECTURE.md, "Quantized
models").

``graph.py`` reads each layer's precision from the graph (QDQ pairs, QOperator ops, dynamic quantization);
``noise.py`` predicts the error a correct layer with those scales shows; ``annotate.py`` puts both on the
report's rows so the divergence rule (localize.py) judges a quantized layer against its own scales, not
against float32's epsilon.
"""
from .annotate import (
           annotate_rows,
           annotate_torch_rows,
           is_quantized,
           is_torch_quantized,
           precisions_of,
)
from .graph import fed_before_quantization
from .pairing import dequantized_pairs

__all__ = ["annotate_rows", "annotate_torch_rows", "dequantized_pairs", "fed_before_quantization", "is_quantized",
           "is_torch_quantized", "precisions_of"]
