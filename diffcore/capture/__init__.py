"""Capturing intermediate tensors: torch hooks, ONNX Runtime outputs, recorded traces."""
from .base import InputSpec, Probe, Runner

__all__ = ["InputSpec", "Probe", "Runner"]
