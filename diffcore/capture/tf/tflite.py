"""TFLite models run with the LiteRT interpreter (ai-edge-litert), every tensor preserved.

Probes: the output of every op except DEQUANTIZE of a constant (a float16/int8 model's weights, not
activations), keyed by tensor name, in op order. ``module`` is the Keras layer the converter's tensor name
carries: TFLite names a fused tensor after all the ops it fused, last op first (``model/conv/Relu;
model/conv/BiasAdd;...``), so the layer of the first name is the one whose output this is.

Integer I/O (a fully quantized model): inputs are quantized with the input tensor's scale and zero point,
outputs and intermediates dequantized with theirs; ``notes`` says so for the report.
"""
from __future__ import annotations

import os
from collections.abc import Collection, Mapping

import numpy as np

from ... import _deps
from ...errors import DiffcoreError, format_choices
from ..base import InputSpec, Probe, Runner
from .common import check_inputs


def layer_of(tensor_name: str) -> str | None:
    """The Keras layer a converter tensor name carries: ``model/dense_1/MatMul;...`` -> ``dense_1``."""
    parts = tensor_name.split(";")[0].split("/")
    return parts[1] if len(parts) >= 3 else None


def layer_names(tensor_name: str) -> list:
    """The layer names a tensor may belong to: Keras 3 traces a model a second time when converting it, so
    its scopes carry a ``_1`` suffix (``fc1_1`` for layer ``fc1``); both spellings are offered."""
    layer = layer_of(tensor_name)
    if layer is None:
        return []
    head, sep, tail = layer.rpartition("_")
    return [layer, head] if sep and tail.isdigit() else [layer]


def tf_op_of(tensor_name: str, names: set) -> str:
    """The TensorFlow op a tensor is the output of. The converter keeps the op's name, but where a constant
    took it first (a Dense's weight is ``net_1/fc1_1/MatMul``) the output gets a digit appended
    (``MatMul1``, ``MatMul2`` after a float16 weight's dequantized copy): that digit is dropped again."""
    first = tensor_name.split(";")[0]
    base = first.rstrip("0123456789")
    return base if base != first and base in names else first


def input_name(tensor_name: str) -> str:
    """``serving_default_x:0`` -> ``x`` (the name the Keras model gave the input)."""
    name = tensor_name.split(":")[0]
    return name[len("serving_default_"):] if name.startswith("serving_default_") else name


def _quantized(detail) -> tuple | None:
    scale, zero = detail.get("quantization", (0.0, 0))
    return (float(scale), int(zero)) if scale else None


class TfliteRunner(Runner):
    """A ``.tflite`` flatbuffer on the LiteRT interpreter with ``experimental_preserve_all_tensors``."""

    kind = "tflite"

    def __init__(self, path: str, *, name: str | None = None):
        litert = _deps.require("ai_edge_litert.interpreter", "running TFLite models")
        self.name, self.path = name or "model", os.fspath(path)
        try:
            self._interp = litert.Interpreter(model_path=self.path, experimental_preserve_all_tensors=True)
            self._interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise DiffcoreError(f"{self.name}: cannot load TFLite model {self.path}: "
                                f"{str(exc).splitlines()[0]}") from exc
        self._inputs = self._interp.get_input_details()
        self._outputs = self._interp.get_output_details()
        self.notes = self._io_notes()
        self.description = f"TFLite model {self.path} (LiteRT)" + (f"; {'; '.join(self.notes)}" if self.notes else "")
        self._specs = [InputSpec(input_name(d["name"]), "float32" if _quantized(d) and d["dtype"] != np.float32
                                 else np.dtype(d["dtype"]).name, tuple(int(x) for x in d["shape"]))
                       for d in self._inputs]
        self._probes = self._list_probes()

    def _io_notes(self) -> list:
        notes = []
        for kind, details in (("inputs", self._inputs), ("outputs", self._outputs)):
            ints = [d for d in details if np.dtype(d["dtype"]).kind in "iu" and _quantized(d)]
            for d in ints:
                scale, zero = _quantized(d)
                verb = "quantized" if kind == "inputs" else "dequantized"
                notes.append(f"integer {kind[:-1]} {input_name(d['name'])!r} ({np.dtype(d['dtype']).name}) "
                             f"{verb} with scale {scale:g}, zero point {zero}")
        return notes

    def _list_probes(self) -> list:
        details = {d["index"]: d for d in self._interp.get_tensor_details()}
        out_pos = {d["index"]: j for j, d in enumerate(self._outputs)}
        probes, seen = [], {d["index"] for d in self._inputs}
        names = {d["name"] for d in details.values()}
        for op in self._interp._get_ops_details():  # noqa: SLF001 - the only op list LiteRT exposes
            if op["op_name"] == "DELEGATE":
                continue  # XNNPACK's node repeats ops already listed: a constant's Dequantize came back as a layer
            if op["op_name"] == "DEQUANTIZE" and not set(op["inputs"]) & seen:
                continue  # a constant's dequantization: weights, not activations
            for index in op["outputs"]:
                if index < 0 or index in seen or index not in details:
                    continue
                seen.add(index)
                d = details[index]
                dtype = "float32" if _quantized(d) else np.dtype(d["dtype"]).name
                probes.append(Probe(d["name"], len(probes), tuple(int(x) for x in d["shape"]), dtype,
                                    module=layer_of(d["name"]), op_type=op["op_name"],
                                    output_index=out_pos.get(index), meta={"graph": True, "tensor": index,
                                                                     "modules": layer_names(d["name"]),
                                                                     "tf_op": tf_op_of(d["name"], names)}))
        return probes

    def input_specs(self) -> list[InputSpec]:
        return list(self._specs)

    def prepare_inputs(self, inputs: Mapping) -> dict:
        return check_inputs(self.name, self._specs, inputs)

    def probes(self, inputs: Mapping | None = None) -> list[Probe]:
        return list(self._probes)

    def _invoke(self, inputs: Mapping) -> None:
        feed = self.prepare_inputs(inputs)
        for spec, d in zip(self._specs, self._inputs):
            value = feed[spec.name]
            q = _quantized(d)
            if q and np.dtype(d["dtype"]).kind in "iu":
                info = np.iinfo(d["dtype"])
                value = np.clip(np.round(value / q[0]) + q[1], info.min, info.max)
            self._interp.set_tensor(d["index"], value.astype(d["dtype"]))
        self._interp.invoke()

    def _read(self, probe: Probe) -> np.ndarray:
        index = probe.meta["tensor"]
        value = np.array(self._interp.get_tensor(index))
        d = next((t for t in (self._outputs + self._inputs) if t["index"] == index), None)
        q = _quantized(d) if d is not None else self._quant_of(index)
        if q and value.dtype.kind in "iu":
            value = (value.astype(np.float32) - q[1]) * q[0]
        return value

    def _quant_of(self, index: int):
        d = next((t for t in self._interp.get_tensor_details() if t["index"] == index), None)
        return _quantized(d) if d else None

    def capture(self, inputs: Mapping, keys: Collection[str]) -> dict:
        by_key = {p.key: p for p in self._probes}
        unknown = [k for k in keys if k not in by_key]
        if unknown:
            raise DiffcoreError(f"{self.name}: unknown probes {format_choices(unknown)}")
        self._invoke(inputs)
        return {k: self._read(by_key[k]) for k in keys}

    def outputs(self, inputs: Mapping) -> dict:
        keys = [p.key for p in self._probes if p.is_output]
        return self.capture(inputs, keys)

