"""The inputs both models run on: loaded from an .npz, taken from a trace or the model, or synthesized."""
from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from .errors import DiffcoreError
from .files import read_npz

SEED = 0


def native_order(array: np.ndarray) -> np.ndarray:
    """``array`` in the machine's byte order: a copy only when it is not already (ONNX Runtime and torch
    read the raw bytes, so a big-endian ``>f4`` array would be read byte-swapped)."""
    if array.dtype.isnative or array.dtype.byteorder == "|":
        return array
    return array.astype(array.dtype.newbyteorder("="))


def normalize_array(value, what: str) -> np.ndarray:
    """One input array as every runner, drift and golden file sees it: a NumPy array of a numeric or bool
    dtype, in native byte order.

    Raises:
        DiffcoreError: an object, string, bytes, record or date array.
    """
    array = _to_numpy(value)
    kind = array.dtype.kind
    if array.dtype.hasobject or kind not in "biufc" or array.dtype.fields is not None:
        raise DiffcoreError(f"{what} has dtype {array.dtype}: inputs must be numeric or bool arrays")
    return native_order(array)


def normalize_inputs(inputs: Mapping, where: str = "inputs") -> dict:
    """``{name: normalize_array(value)}`` for a mapping of inputs (see ``normalize_array``)."""
    out = {}
    for name, value in inputs.items():
        if not isinstance(name, str):
            raise DiffcoreError(f"{where}: input names must be strings, got {type(name).__name__} {name!r}")
        out[name] = normalize_array(value, f"input {name!r} in {where}")
    return out


def _to_numpy(value):
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, (bytes, str)):
        raise DiffcoreError(f"an input is {type(value).__name__}, not an array")
    if hasattr(value, "detach"):  # torch tensor
        tensor = value.detach().cpu()
        return tensor.float().numpy() if str(tensor.dtype) == "torch.bfloat16" else tensor.numpy()
    return np.asarray(value)


def _synthesize(specs) -> tuple[dict, str]:
    rng = np.random.default_rng(SEED)
    out = {}
    for spec in specs:
        if spec.shape is None or any(d is None for d in spec.shape):
            raise DiffcoreError(
                f"cannot synthesize input {spec.name!r}: its shape {spec.shape} has dynamic or unknown "
                "dimensions; give the inputs with --inputs FILE.npz (keys: "
                f"{', '.join(s.name for s in specs)})")
        if spec.dtype.startswith(("float", "bfloat")):
            out[spec.name] = rng.standard_normal(spec.shape).astype(np.float32)
        elif spec.dtype == "bool":
            out[spec.name] = np.ones(spec.shape, dtype=bool)
        else:
            out[spec.name] = np.zeros(spec.shape, dtype=spec.dtype)
    note = ("inputs were synthesized (float: standard normal, seed 0; integer: zeros; bool: ones) from the "
            "model's input shapes: give --inputs for meaningful data")
    return out, note


def resolve_inputs(inputs, ref_runner, test_runner) -> tuple[dict, list[str]]:
    """The inputs as a dict name -> NumPy array, and notes on where they came from.

    ``inputs`` may be a mapping, an .npz path, or None: then a recorded trace's inputs, a model's example
    inputs, or inputs synthesized from static input shapes are used, in that order.
    """
    if isinstance(inputs, (str, os.PathLike)):
        return normalize_inputs(read_npz(inputs, "inputs"), f"inputs file {os.fspath(inputs)}"), []
    if isinstance(inputs, Mapping):
        return normalize_inputs(inputs), []
    if inputs is not None:
        raise DiffcoreError(f"inputs must be a dict name -> array or an .npz path, got {type(inputs).__name__}")
    for runner in (ref_runner, test_runner):
        recorded = getattr(getattr(runner, "trace", None), "inputs", None)
        if recorded:
            return {k: _to_numpy(v) for k, v in recorded.items()}, ["inputs taken from the recorded trace"]
    for runner in (ref_runner, test_runner):
        example = getattr(runner, "example_inputs", None)
        if example:
            return {k: _to_numpy(v) for k, v in example.items()}, ["inputs are the model's example inputs"]
    for runner in (test_runner, ref_runner):
        specs = runner.input_specs()
        if specs and all(s.shape is not None for s in specs):
            data, note = _synthesize(specs)
            return data, [note]
    raise DiffcoreError("no inputs given and none can be synthesized: give --inputs FILE.npz keyed by the "
                        f"model's input names ({', '.join(s.name for s in ref_runner.input_specs())})")
