"""Capturing intermediate tensors: torch hooks, ONNX Runtime outputs, recorded traces.

The runners import their frameworks lazily: ``from diffcore.capture.onnx import OnnxRunner``.
"""
from .base import InputSpec, Probe, Runner

__all__ = ["InputSpec", "Probe", "Runner"]
