"""Turning user arrays (NumPy, torch, CuPy, CUDA-array-interface objects) into operands the backends read.

Nothing here imports a framework: an object is recognised by its type's module, and the framework module is
taken from ``sys.modules`` (it is loaded, since the object exists). Host data becomes a flat NumPy view,
without a copy wherever NumPy can express one; GPU data stays on its device.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from . import _deps
from .errors import DiffcoreError
from .stats.formats import FORMATS, FloatFormat

__all__ = ["Operand", "as_operand", "check_pair", "host_array", "host_values", "array_sha256"]

# How kernels read an element: native floats directly; 16-bit floats as uint16 bit patterns decoded exactly.
STORAGE_F16 = "f16bits"
STORAGE_BF16 = "bf16bits"

_INT_DTYPES = {"int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"}
_SUPPORTED = "float16, bfloat16, float32, float64 (integers are promoted to float64)"


@dataclass
class Operand:
    """One side of a pair, normalised: ``data`` is 1-D in C order of the logical array.

    ``dtype`` is the user's dtype name; ``storage`` says how ``data`` holds it (``float32``, ``float64``,
    ``f16bits``, ``bf16bits``). ``device`` is ``cpu`` or ``cuda:N``. ``framework`` names where it came from.
    """

    data: object
    shape: tuple
    dtype: str
    storage: str
    device: str
    framework: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def format(self) -> FloatFormat:
        """The float format values are measured in (integers: float64)."""
        return FORMATS.get(self.dtype, FORMATS["float64"])

    @property
    def on_gpu(self) -> bool:
        return self.device.startswith("cuda")


def _kind(obj) -> str:
    module = type(obj).__module__.split(".")[0]
    if isinstance(obj, (np.ndarray, np.generic)):
        return "numpy"
    if module == "torch" and hasattr(obj, "device"):
        return "torch"
    if module == "cupy":
        return "cupy"
    if module in ("numba", "numba_cuda") and hasattr(obj, "copy_to_host"):
        return "numba"  # before the CAI check: simulated device arrays have no __cuda_array_interface__
    if hasattr(obj, "__cuda_array_interface__"):
        return "cuda_array_interface"
    return ""


def _check_dtype(name: str, role: str) -> str:
    if name in FORMATS or name in _INT_DTYPES:
        return name
    if name in ("bool", "bool_"):
        raise DiffcoreError(f"{role} is a bool tensor: drift needs numbers; cast it explicitly if you mean 0/1")
    if name.startswith("complex"):
        raise DiffcoreError(f"{role} has complex dtype {name}: compare real and imaginary parts separately")
    raise DiffcoreError(f"{role} has unsupported dtype {name}; supported: {_SUPPORTED}")


def _numpy_operand(arr: np.ndarray, role: str, framework: str = "numpy") -> Operand:
    arr = np.asarray(arr)
    dtype = _check_dtype(arr.dtype.name, role)
    if not arr.dtype.isnative:
        # Kernels read raw bytes (and 16-bit floats as bit patterns): a big-endian '>f2' array read as is
        # gives byte-swapped values, and Numba refuses non-native float32/float64 outright. A copy only here.
        arr = arr.astype(arr.dtype.newbyteorder("="))
    flat = arr.reshape(-1)  # a view whenever the strides allow one, else a copy
    if dtype == "float16":
        flat, storage = flat.view(np.uint16), STORAGE_F16
    elif dtype == "bfloat16":  # ml_dtypes.bfloat16
        flat, storage = flat.view(np.uint16), STORAGE_BF16
    elif dtype in _INT_DTYPES:
        flat, storage = flat.astype(np.float64), "float64"
    else:
        storage = dtype
    return Operand(flat, tuple(arr.shape), dtype, storage, "cpu", framework)


def _torch_dtype_name(tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def _torch_operand(tensor, role: str) -> Operand:
    torch = _deps.loaded("torch")
    tensor = tensor.detach()
    dtype = _check_dtype(_torch_dtype_name(tensor), role)
    device = str(tensor.device)
    if device == "cpu":
        if dtype == "bfloat16":  # NumPy has no bfloat16: hand over the bit patterns, zero-copy
            bits = tensor.view(torch.int16).numpy().view(np.uint16)
            return Operand(bits.reshape(-1), tuple(tensor.shape), dtype, STORAGE_BF16, "cpu", "torch")
        return _numpy_operand(tensor.numpy(), role, "torch")
    if not device.startswith("cuda"):
        raise DiffcoreError(f"{role} lives on {device}; diffcore reads cpu and cuda tensors: move it there")
    if device == "cuda":
        device = f"cuda:{tensor.device.index or 0}"
    flat = tensor.reshape(-1)
    if dtype in _INT_DTYPES:
        flat, storage = flat.to(torch.float64), "float64"
    elif dtype in ("float16", "bfloat16"):
        flat, storage = flat.view(torch.int16), STORAGE_F16 if dtype == "float16" else STORAGE_BF16
    else:
        storage = dtype
    return Operand(flat, tuple(tensor.shape), dtype, storage, device, "torch")


def _cupy_operand(arr, role: str) -> Operand:
    dtype = _check_dtype(arr.dtype.name, role)
    flat = arr.reshape(-1)
    if dtype == "float16":
        flat, storage = flat.view("uint16"), STORAGE_F16
    elif dtype in _INT_DTYPES:
        flat, storage = flat.astype("float64"), "float64"
    else:
        storage = dtype
    return Operand(flat, tuple(arr.shape), dtype, storage, f"cuda:{arr.device.id}", "cupy")


def _numba_operand(arr, role: str) -> Operand:
    """A Numba device array (a simulated one under NUMBA_ENABLE_CUDASIM too), read in place."""
    dtype = _check_dtype(np.dtype(arr.dtype).name, role)
    if dtype in _INT_DTYPES:
        raise DiffcoreError(f"{role} is a {dtype} Numba device array; pass integer GPU data as a torch tensor "
                            "or CuPy array")
    shape = tuple(arr.shape)
    try:
        flat = arr if len(shape) == 1 else arr.reshape(int(np.prod(shape, dtype=np.int64)))
    except NotImplementedError as exc:  # Numba cannot flatten a non-contiguous array without a copy
        raise DiffcoreError(f"{role} is a non-contiguous Numba device array; pass a contiguous one") from exc
    storage = {"float16": STORAGE_F16, "bfloat16": STORAGE_BF16}.get(dtype, dtype)
    if storage != dtype:
        flat = flat.view(np.uint16)
    return Operand(flat, shape, dtype, storage, "cuda:0", "numba")


def _cai_operand(obj, role: str) -> Operand:
    cai = obj.__cuda_array_interface__
    dtype = _check_dtype(np.dtype(cai["typestr"]).name, role)
    shape = tuple(cai["shape"])
    if cai.get("strides") is not None and len(shape) > 1:
        raise DiffcoreError(f"{role} is a non-contiguous CUDA array interface object; pass a contiguous one "
                            "or a torch/CuPy array")
    if dtype not in ("float32", "float64"):
        raise DiffcoreError(f"{role} is a {dtype} CUDA array interface object; pass float16/bfloat16/integer "
                            "GPU data as a torch tensor or CuPy array")
    return Operand(obj, shape, dtype, dtype, "cuda:0", "cuda_array_interface")


def as_operand(obj, role: str = "array") -> Operand:
    """Normalise ``obj`` (NumPy array or scalar, torch tensor, CuPy array, CUDA array) into an ``Operand``.

    Raises:
        DiffcoreError: ``obj`` is not an array, or has a dtype or device diffcore does not read.
    """
    kind = _kind(obj)
    if kind == "numpy":
        return _numpy_operand(obj, role)
    if kind == "torch":
        return _torch_operand(obj, role)
    if kind == "cupy":
        return _cupy_operand(obj, role)
    if kind == "numba":
        return _numba_operand(obj, role)
    if kind == "cuda_array_interface":
        return _cai_operand(obj, role)
    raise DiffcoreError(
        f"{role} must be an array (numpy.ndarray, torch.Tensor or cupy.ndarray), got {type(obj).__name__}"
        + ("; wrap it with numpy.asarray(...) if you mean it" if isinstance(obj, (list, tuple, float, int))
           else "")
    )


def _float64_values(op: Operand):
    """``op``'s values as a float64 array of its framework (16-bit bit patterns decoded), or None."""
    data = op.data
    if op.framework in ("numpy", "torch") and op.device == "cpu" and isinstance(data, np.ndarray):
        if op.storage == STORAGE_F16:
            return data.view(np.float16).astype(np.float64)
        if op.storage == STORAGE_BF16:
            return (data.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return data.astype(np.float64)
    if op.framework == "torch":
        torch = _deps.loaded("torch")
        if op.storage in (STORAGE_F16, STORAGE_BF16):
            data = data.view(torch.float16 if op.storage == STORAGE_F16 else torch.bfloat16)
        return data.to(torch.float64)
    if op.framework == "cupy" and op.storage != STORAGE_BF16:
        return (data.view("float16") if op.storage == STORAGE_F16 else data).astype("float64")
    if op.framework == "numba":  # Numba device arrays have no arithmetic: through the host (rare case)
        host = Operand(data.copy_to_host(), op.shape, op.dtype, op.storage, "cpu", "numpy")
        return _float64_values(host)
    return None


def scaled_operand(op: Operand, exponent: int) -> Operand | None:
    """A float64 copy of ``op`` times 2^-exponent (exact: a power of two), for the rescaled pass that
    recovers overflowed sums of squares (stats/overflow.py); None where no such copy can be made."""
    values = _float64_values(op)
    if values is None:
        return None
    half = -exponent // 2  # two factors: 2^-k alone may be outside float64's range (k up to ~1600)
    values = values * math.ldexp(1.0, half) * math.ldexp(1.0, -exponent - half)
    if op.framework == "numba":
        values = _deps.loaded("numba").cuda.to_device(values)
    return Operand(values, op.shape, op.dtype, "float64", op.device, op.framework)


def differences_operands(ref: Operand, test: Operand, exponent: int):
    """(zeros, (t - r) * 2^-exponent where both are finite, else 0) as float64 operands, for the pass that
    recovers sums of tiny differences between huge values (stats/overflow.py); (None, None) where the
    data cannot be combined here."""
    r, t = _float64_values(ref), _float64_values(test)
    if r is None or t is None:
        return None, None
    on_host = isinstance(r, np.ndarray) and isinstance(t, np.ndarray)
    xp = np if on_host else _deps.loaded("torch") if ref.framework == "torch" else _deps.loaded("cupy")
    d = xp.where(xp.isfinite(r) & xp.isfinite(t), t - r, xp.zeros_like(r))
    half = -exponent // 2
    d = d * math.ldexp(1.0, half) * math.ldexp(1.0, -exponent - half)
    zeros = xp.zeros_like(d)
    if ref.framework == "numba":
        cuda = _deps.loaded("numba").cuda
        d, zeros = cuda.to_device(d), cuda.to_device(zeros)
    return (Operand(zeros, ref.shape, ref.dtype, "float64", ref.device, ref.framework),
            Operand(d, ref.shape, ref.dtype, "float64", ref.device, ref.framework))


def check_pair(ref: Operand, test: Operand, name: str = "") -> None:
    """Raise ``DiffcoreError`` unless ``ref`` and ``test`` have the same shape and live on the same device."""
    where = f" for {name}" if name else ""
    if ref.shape != test.shape:
        raise DiffcoreError(
            f"shape mismatch{where}: ref has shape {ref.shape}, test has shape {test.shape} "
            "(diffcore does not broadcast)"
        )
    if ref.device != test.device:
        raise DiffcoreError(
            f"device mismatch{where}: ref is on {ref.device}, test is on {test.device}; "
            "move both to the same device"
        )


def host_array(value, what: str = "store") -> tuple[np.ndarray, str]:
    """(a host NumPy array holding ``value`` exactly, its logical dtype name), for files diffcore writes.

    torch tensors, CuPy arrays and OrtValues are copied to the host; bfloat16 (which NumPy lacks) comes as its
    uint16 bit patterns. Object arrays are refused: files hold numeric arrays only.
    """
    kind = type(value).__module__.split(".")[0]
    if kind == "torch":
        tensor = value.detach().cpu()
        name = str(tensor.dtype).replace("torch.", "")
        if name == "bfloat16":
            return tensor.contiguous().view(_deps.loaded("torch").int16).numpy().view(np.uint16), name
        return tensor.resolve_conj().resolve_neg().numpy(), name
    if kind == "cupy":
        value = value.get()
    elif kind == "onnxruntime":
        value = value.numpy()
    arr = np.asarray(value)
    if arr.dtype.name == "bfloat16":  # ml_dtypes.bfloat16
        return arr.view(np.uint16), "bfloat16"
    if arr.dtype.hasobject:
        raise DiffcoreError(f"cannot {what} an object array ({arr.dtype}): only numeric arrays")
    return arr, arr.dtype.name


def host_values(value, what: str = "store") -> tuple[np.ndarray, str]:
    """``host_array`` with bfloat16 widened exactly to float32, for comparing values."""
    arr, dtype = host_array(value, what)
    if dtype == "bfloat16":
        return (arr.astype(np.uint32) << 16).view(np.float32), dtype
    return arr, dtype


def array_sha256(arr: np.ndarray) -> str:
    """sha256 of an array's bytes in C order (what files record to detect truncation or edits)."""
    return hashlib.sha256(np.ascontiguousarray(arr).reshape(-1).view(np.uint8)).hexdigest()


def c_contiguous(array) -> np.ndarray:
    """``array`` as a C-contiguous NumPy array of the same shape, copied only when needed.

    ``np.ascontiguousarray`` turns a 0-d array into shape (1,), which changes what a model is fed (a scalar
    sample-rate input of Silero VAD) and what a golden set records; this keeps scalars scalar.
    """
    array = np.asarray(array)
    return array if array.flags.c_contiguous else np.array(array, order="C")
