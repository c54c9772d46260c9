"""The ONNX Runtime side of a comparison (see runner.py's docstring for how values are captured).

Modules: ``loading`` (model files, providers), ``convert`` (the float16 conversion), ``store`` (skeleton
plus weights, variants), ``graph`` (topology, scopes, segments), ``values`` (arrays of any framework),
``binding`` (CUDA IOBinding), ``edits`` (variant edits, input specs), ``forcing`` (local-error runs),
``runner`` (OnnxRunner: sessions, probes, segmented capture).
"""
from .convert import to_float16
from .runner import OnnxRunner

__all__ = ["OnnxRunner", "to_float16"]
