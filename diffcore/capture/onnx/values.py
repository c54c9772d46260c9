"""Arrays of any framework (NumPy, torch, CuPy, OrtValue) as ONNX Runtime reads and returns them."""
from __future__ import annotations

import hashlib
import sys
from collections.abc import Mapping

import numpy as np

from ..._deps import require
from .graph import FLOAT_DTYPES

ORT_TYPES = {
    "tensor(float)": 1, "tensor(uint8)": 2, "tensor(int8)": 3, "tensor(uint16)": 4, "tensor(int16)": 5,
    "tensor(int32)": 6, "tensor(int64)": 7, "tensor(string)": 8, "tensor(bool)": 9, "tensor(float16)": 10,
    "tensor(double)": 11, "tensor(uint32)": 12, "tensor(uint64)": 13, "tensor(bfloat16)": 16,
}
ELEM_OF_DTYPE = {"float32": 1, "uint8": 2, "int8": 3, "uint16": 4, "int16": 5, "int32": 6, "int64": 7,
                 "bool": 9, "float16": 10, "float64": 11, "uint32": 12, "uint64": 13, "bfloat16": 16}


def _framework(value) -> str:
    if isinstance(value, np.ndarray):
        return "numpy"
    return type(value).__module__.split(".")[0]


def _np_dtype(name: str):
    if name == "bfloat16":
        return require("ml_dtypes", "bfloat16 arrays").bfloat16
    return np.dtype(name)


def _dtype_of(value) -> str:
    """The dtype name of a NumPy, torch or CuPy array."""
    if _framework(value) == "torch":
        return str(value.dtype).replace("torch.", "")
    return np.dtype(value.dtype).name


def _to_numpy(value) -> np.ndarray:
    """A host NumPy array from NumPy, torch (CPU or CUDA), CuPy, an OrtValue or anything array-like."""
    kind = _framework(value)
    if kind == "torch":
        return value.detach().cpu().numpy()
    if kind == "cupy":
        return value.get()
    if kind == "onnxruntime":
        return value.numpy()
    return np.asarray(value)


def _cast(value, dtype: str):
    """``value`` in ``dtype``, staying in its framework (and on its device)."""
    if _dtype_of(value) == dtype:
        return value
    if _framework(value) == "torch":
        return value.to(getattr(sys.modules["torch"], dtype))
    return value.astype(_np_dtype(dtype))


def _elem_type(value) -> int | None:
    """The ONNX element type of an array's dtype (None for an OrtValue, whose type the graph gives)."""
    try:
        return ELEM_OF_DTYPE.get(_dtype_of(value))
    except TypeError:
        return None


def _kind_of(dtype: str | None) -> str:
    if dtype in FLOAT_DTYPES:
        return "float"
    if dtype == "bool":
        return "bool"
    return "int" if dtype and ("int" in dtype) else str(dtype)


def _digest(feed: Mapping) -> str:
    """A content hash of a host feed, to reuse uninstrumented outputs for the same inputs."""
    h = hashlib.blake2b(digest_size=16)
    for name in sorted(feed):
        array = np.ascontiguousarray(feed[name])
        h.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
        h.update(array.view(np.uint8).reshape(-1) if array.size else b"")
    return h.hexdigest()


def _bitwise_equal(a, b) -> bool:
    if _framework(a) == "torch":
        torch = sys.modules["torch"]
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        ints = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[a.element_size()]
        return bool(torch.equal(a.contiguous().view(ints), b.contiguous().view(ints)))
    a, b = _to_numpy(a), _to_numpy(b)
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def _max_abs_diff(a, b) -> float:
    """max |a - b| in float64, NaN where only one side is NaN counting as inf."""
    a, b = _to_numpy(a).astype(np.float64), _to_numpy(b).astype(np.float64)
    if a.shape != b.shape:
        return float("inf")
    diff = np.abs(a - b)
    both_nan = np.isnan(a) & np.isnan(b)
    diff[both_nan] = 0.0
    diff[np.isnan(diff)] = np.inf
    return float(diff.max()) if diff.size else 0.0
