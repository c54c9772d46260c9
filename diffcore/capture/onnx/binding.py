"""ONNX Runtime on CUDA: inputs bound where they live, outputs kept on the device (IOBinding, DLPack)."""
from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np

from ..._deps import require
from .values import ELEM_OF_DTYPE, _dtype_of, _framework, _to_numpy


def _bind_input(binding, name: str, value) -> None:
    """Bind a host array by copy, or device memory (torch / CuPy / OrtValue) without one."""
    kind = _framework(value)
    if kind == "numpy":  # ascontiguousarray makes a 0-d value 1-d: a scalar cut value must stay 0-d
        binding.bind_cpu_input(name, np.ascontiguousarray(value).reshape(value.shape))
    elif kind == "onnxruntime":
        binding.bind_ortvalue_input(name, value)
    elif kind == "torch":
        value = value.contiguous()
        device = "cuda" if value.is_cuda else "cpu"
        index = value.device.index if value.is_cuda else 0
        binding.bind_input(name, device, index, ELEM_OF_DTYPE[_dtype_of(value)], tuple(value.shape),
                           value.data_ptr())
    elif kind == "cupy":
        value = value if value.flags.c_contiguous else value.copy()
        binding.bind_input(name, "cuda", value.device.id, value.dtype, tuple(value.shape), value.data.ptr)
    else:
        value = _to_numpy(value)
        binding.bind_cpu_input(name, np.ascontiguousarray(value).reshape(value.shape))


def _sync_torch_inputs(feed: Mapping) -> None:
    """ORT reads bound torch memory on its own stream: finish torch's pending writes first."""
    torch = sys.modules.get("torch")
    if torch is not None and any(_framework(v) == "torch" and v.is_cuda for v in feed.values()):
        torch.cuda.current_stream().synchronize()


def _from_ortvalue(value, device_id: int):
    """A device OrtValue as a torch CUDA tensor (zero-copy through DLPack), else a CuPy array, else as is.

    The DLPack capsule holds its own reference to ORT's buffer, so the tensor outlives the OrtValue.
    """
    if value.device_name().lower() == "cpu":
        return value.numpy()
    source = value if hasattr(value, "__dlpack__") else getattr(value, "_ortvalue", value)
    torch = _optional("torch")
    if torch is not None and torch.cuda.is_available():
        if hasattr(source, "__dlpack__"):
            return torch.from_dlpack(source)
        if hasattr(source, "to_dlpack"):
            return torch.utils.dlpack.from_dlpack(source.to_dlpack())
        # an onnxruntime without DLPack (before 1.21): one copy through the host, still handed out on GPU
        return torch.from_numpy(value.numpy()).to(f"cuda:{device_id}")
    cupy = _optional("cupy")
    if cupy is not None and hasattr(source, "__dlpack__"):
        return cupy.from_dlpack(source)
    return value


def _optional(module: str):
    try:
        return require(module)
    except ImportError:
        return None


def _run_bound(session, feed: Mapping, names: list, device: tuple) -> list:
    """One run with inputs bound where they live and outputs allocated on ``device`` ("cuda", id)."""
    binding = session.io_binding()
    for name, value in feed.items():
        _bind_input(binding, name, value)
    for name in names:
        binding.bind_output(name, *device)
    _sync_torch_inputs(feed)
    session.run_with_iobinding(binding)
    binding.synchronize_outputs()
    return [_from_ortvalue(v, device[1]) for v in binding.get_outputs()]
