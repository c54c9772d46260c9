"""Input checks shared by the TensorFlow runners."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...errors import DiffcoreError, format_choices
from ..base import InputSpec


def check_inputs(name: str, specs: list[InputSpec], inputs: Mapping) -> dict:
    """Validate names and fixed dimensions; cast float inputs to the model's dtype.

    Raises DiffcoreError naming the unknown/missing inputs and the expected ones, or the shape mismatch."""
    expected = [s.name for s in specs]
    unknown = [n for n in inputs if n not in expected]
    missing = [n for n in expected if n not in inputs]
    if unknown or missing:
        parts = ([f"unknown {format_choices(unknown)}"] if unknown else []) + \
                ([f"missing {format_choices(missing)}"] if missing else [])
        raise DiffcoreError(f"inputs of {name} do not match: {'; '.join(parts)}; "
                            f"expected inputs: {format_choices(expected)}")
    return {s.name: _one(name, s, inputs[s.name]) for s in specs}


def _one(name: str, spec: InputSpec, value) -> np.ndarray:
    array = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if spec.shape is not None:
        fixed_ok = len(spec.shape) == array.ndim and all(d is None or d == g for d, g in zip(spec.shape, array.shape))
        if not fixed_ok:
            raise DiffcoreError(f"input {spec.name!r} of {name} has shape {tuple(array.shape)}; the model expects "
                                f"{tuple('?' if d is None else d for d in spec.shape)}")
    if array.dtype.kind == "f" and array.dtype.name != spec.dtype and np.dtype(spec.dtype).kind == "f":
        array = array.astype(spec.dtype)
    return np.ascontiguousarray(array)
