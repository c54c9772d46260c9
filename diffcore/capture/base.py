"""What the capture layer hands to matching and comparison: probes, and runners that capture them.

A *probe* is a tensor one side can capture: a module output for torch, a value for ONNX, a record for a
recorded trace. A *runner* wraps one model (or trace): it lists its probes, validates inputs, and captures
any subset of probes in one run, so memory can be bounded by capturing in chunks.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass
class Probe:
    """A capturable tensor of one side.

    Attributes:
        key: unique on its side. torch: the module path (``blocks.2.ln``), ``#k`` for the k-th repeated call
            (``blocks.2.ln#1``), ``.i``/``.name`` for flattened tuple/dict outputs; ONNX: the value name;
            model outputs of torch: ``output.i``/``output.name``.
        order: position in execution (topological) order.
        shape, dtype: as captured or inferred (None where unknown before running).
        module: the torch module path whose output this is (ONNX: resolved from the exporter's scopes when the
            value leaves that scope); None when unknown.
        op_type: ONNX op type of the producer, or the torch module's class name.
        node: ONNX node producing the value.
        output_index: position among the model's outputs, or None.
        meta: anything else worth reporting (e.g. ``{"inserted_cast_of": "x"}``).
    """

    key: str
    order: int
    shape: tuple | None = None
    dtype: str | None = None
    module: str | None = None
    op_type: str | None = None
    node: str | None = None
    output_index: int | None = None
    meta: dict = field(default_factory=dict)

    @property
    def is_output(self) -> bool:
        return self.output_index is not None


@dataclass
class InputSpec:
    """One model input: its name, dtype and shape (None for a dynamic dimension, or for an unknown shape)."""

    name: str
    dtype: str
    shape: tuple | None


class Runner:
    """One side of a comparison. Subclasses: TorchRunner, OnnxRunner, TraceRunner."""

    kind = ""  # "torch", "onnx" or "trace"
    description = ""

    def input_specs(self) -> list[InputSpec]:
        """The inputs the model takes, in order."""
        raise NotImplementedError

    def prepare_inputs(self, inputs: Mapping[str, np.ndarray]) -> dict:
        """Validate ``inputs`` against ``input_specs`` and convert them for this model (float inputs are cast
        to the model's float dtype). Raises DiffcoreError naming the bad input and the expected ones."""
        raise NotImplementedError

    def probes(self, inputs: Mapping[str, np.ndarray]) -> list[Probe]:
        """Every probe in execution order (torch runs a light shape-only pass to find them)."""
        raise NotImplementedError

    def capture(self, inputs: Mapping[str, np.ndarray], keys: Collection[str]) -> dict:
        """Run once and return {key: tensor} for ``keys`` (and nothing more held in memory). Tensors stay
        where the model computed them (GPU tensors stay on the GPU)."""
        raise NotImplementedError

    def outputs(self, inputs: Mapping[str, np.ndarray]) -> dict:
        """Run uninstrumented and return the model outputs {probe key: tensor}."""
        raise NotImplementedError

    def close(self) -> None:
        """Release sessions and temporary files."""
