"""Keras models (``.keras`` files or in-memory ``keras.Model``) and TensorFlow SavedModel folders as sides.

Keras: every layer's output is a probe (key and module = the layer name), captured in one run of a
functional sub-model whose outputs are all the layers' outputs. Layers with several output tensors and
nested models are listed by their outer output only. Model outputs are ``output.i``.

SavedModel (no Keras model to rebuild: Keras 3 loads a SavedModel only as an opaque layer): the serving
signature's outputs (``output.<name>``) and, from its function frozen into one graph, every float op's
output under the TensorFlow op name the converters keep (savedmodel_graph.py); where freezing fails, the
outputs only, said in the description. Name another signature with ``DIR#name``.
"""
from __future__ import annotations

import os
from collections.abc import Collection, Mapping

import numpy as np

from ... import _deps
from ...errors import DiffcoreError, format_choices
from ..base import InputSpec, Probe, Runner
from .common import check_inputs


def _keras():
    return _deps.require("keras")


def _dtype(tensor) -> str:
    return getattr(tensor.dtype, "name", str(tensor.dtype))


def _shape(tensor) -> tuple:
    return tuple(None if d is None else int(d) for d in tensor.shape)


class KerasRunner(Runner):
    """A Keras functional or Sequential model (built with an Input); layers are the probes."""

    kind = "keras"

    def __init__(self, model, *, name: str | None = None):
        keras = _keras()
        if isinstance(model, (str, os.PathLike)):
            self.description = f"Keras model {os.fspath(model)}"
            try:
                model = keras.models.load_model(os.fspath(model), compile=False)
            except (ValueError, OSError) as exc:
                raise DiffcoreError(f"{name or 'model'}: cannot load Keras model {os.fspath(model)}: "
                                    f"{str(exc).splitlines()[0]}") from exc
        else:
            self.description = f"Keras model {model.name}"
        self.model, self.name = model, name or "model"
        self._layers = [layer for layer in model.layers if self._capturable(layer)]
        outputs = [layer.output for layer in self._layers] + list(model.outputs)
        self._probe_model = keras.Model(model.inputs, outputs)
        self._specs = [InputSpec(t.name if hasattr(t, "name") else f"input_{i}", _dtype(t), _shape(t))
                       for i, t in enumerate(model.inputs)]

    @staticmethod
    def _capturable(layer) -> bool:
        if type(layer).__name__ == "InputLayer":
            return False
        try:
            out = layer.output
        except (AttributeError, ValueError):  # shared layer called several times: no single output
            return False
        return hasattr(out, "shape")

    def input_specs(self) -> list[InputSpec]:
        return list(self._specs)

    def prepare_inputs(self, inputs: Mapping) -> dict:
        return check_inputs(self.name, self._specs, inputs)

    def probes(self, inputs: Mapping | None = None) -> list[Probe]:
        probes = [Probe(layer.name, i, _shape(layer.output), _dtype(layer.output), module=layer.name,
                        op_type=type(layer).__name__) for i, layer in enumerate(self._layers)]
        n = len(probes)
        probes += [Probe(f"output.{j}", n + j, _shape(t), _dtype(t), output_index=j)
                   for j, t in enumerate(self.model.outputs)]
        return probes

    def _run_all(self, inputs: Mapping) -> list:
        feed = self.prepare_inputs(inputs)
        args = [feed[s.name] for s in self._specs]
        values = self._probe_model(args, training=False)
        return [np.asarray(v) for v in values]

    def capture(self, inputs: Mapping, keys: Collection[str]) -> dict:
        names = [p.key for p in self.probes()]
        unknown = set(keys) - set(names)
        if unknown:
            raise DiffcoreError(f"{self.name}: unknown probes {format_choices(sorted(unknown))}")
        values = dict(zip(names, self._run_all(inputs)))
        return {k: values[k] for k in keys}

    def outputs(self, inputs: Mapping) -> dict:
        values = self._run_all(inputs)[len(self._layers):]
        return {f"output.{j}": v for j, v in enumerate(values)}


class SavedModelRunner(Runner):
    """A SavedModel folder's signature (``serving_default`` unless named): its outputs only."""

    kind = "savedmodel"

    def __init__(self, path: str, *, signature: str | None = None, name: str | None = None):
        _keras()
        tf = _deps.require("tensorflow")
        self.name = name or "model"
        try:
            loaded = tf.saved_model.load(path)
        except (OSError, ValueError) as exc:
            raise DiffcoreError(f"{self.name}: cannot load SavedModel {path}: {str(exc).splitlines()[0]}") from exc
        signatures = dict(loaded.signatures)
        wanted = signature or "serving_default"
        if wanted not in signatures:
            what = "has no serving signature" if signature is None else f"has no signature {signature!r}"
            have = format_choices(sorted(signatures)) if signatures else "none"
            raise DiffcoreError(f"{self.name}: SavedModel {path} {what} (signatures: {have}); "
                                "export it with a signature, or name one as DIR#signature")
        self._loaded, self._fn = loaded, signatures[wanted]
        self._graph = _frozen(self._fn)
        layers = "intermediates from its frozen graph" if self._graph else "outputs only: its graph could not be frozen"
        self.description = f"SavedModel {path} (signature {wanted}; {layers})"
        args, kwargs = self._fn.structured_input_signature
        self._specs = [InputSpec(k, v.dtype.name, _shape(v)) for k, v in sorted(kwargs.items())]
        self._outputs = sorted(self._fn.structured_outputs.items())
        self._shapes: dict = {}

    def input_specs(self) -> list[InputSpec]:
        return list(self._specs)

    def prepare_inputs(self, inputs: Mapping) -> dict:
        return check_inputs(self.name, self._specs, inputs)

    def probes(self, inputs: Mapping | None = None) -> list[Probe]:
        outputs = [Probe(f"output.{k}", j, _shape(v), v.dtype.name, output_index=j)
                   for j, (k, v) in enumerate(self._outputs)]
        if self._graph is None:
            return outputs
        if inputs is not None and not self._shapes:  # run-time shapes: the graph's leave the batch open
            values = self._graph.run(self.prepare_inputs(inputs), self._graph.tensors)
            self._shapes = {n: (v.shape, v.dtype.name) for n, v in values.items()}
        layers = [Probe(name, j, self._shapes.get(name, (_shape(t), None))[0],
                        self._shapes.get(name, (None, t.dtype.name))[1], node=name, op_type=t.op.type,
                        meta={"graph": True})
                  for j, (name, t) in enumerate(self._graph.tensors.items())]
        return layers + [Probe(p.key, len(layers) + p.order, p.shape, p.dtype, output_index=p.output_index)
                         for p in outputs]

    def outputs(self, inputs: Mapping) -> dict:
        tf = _deps.require("tensorflow")
        feed = {k: tf.constant(v) for k, v in self.prepare_inputs(inputs).items()}
        result = self._fn(**feed)
        return {f"output.{k}": result[k].numpy() for k, _ in self._outputs}

    def capture(self, inputs: Mapping, keys: Collection[str]) -> dict:
        outputs = [k for k in keys if k.startswith("output.")]
        values = self.outputs(inputs) if outputs else {}
        inner = [k for k in keys if not k.startswith("output.")]
        unknown = [k for k in inner if self._graph is None or k not in self._graph.tensors]
        if unknown:
            raise DiffcoreError(f"{self.name}: unknown probes {format_choices(unknown)}")
        if inner:
            values.update(self._graph.run(self.prepare_inputs(inputs), inner))
        return {k: values[k] for k in keys}


def _frozen(function):
    """The signature's frozen graph, or None where TensorFlow cannot freeze it (outputs only then)."""
    from .savedmodel_graph import FrozenSignature

    try:
        return FrozenSignature(function)
    except (ValueError, TypeError, KeyError, RuntimeError):
        return None


def open_tf_model(spec: str, role: str) -> Runner:
    """The runner for a ``.keras`` file or a SavedModel folder (``DIR`` or ``DIR#signature``)."""
    if spec.endswith(".keras"):
        return KerasRunner(spec, name=role)
    path, _, signature = spec.partition("#")
    return SavedModelRunner(path, signature=signature or None, name=role)
