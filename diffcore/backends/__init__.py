"""Statistics backends: ``numpy`` (the oracle), ``numba-cpu``, ``numba-cuda`` and ``cupy``.

Backends are loaded on first use; ``availability()`` reports each one's state without raising.
"""
from __future__ import annotations

import importlib

from ..errors import DiffcoreError, format_choices
from .base import Backend, PairJob

# name -> (module, class, the pip extra that enables it)
_REGISTRY = {
    "numpy": ("numpy_backend", "NumpyBackend", ""),
    "numba-cpu": ("numba_cpu", "NumbaCpuBackend", ""),
    "numba-cuda": ("numba_cuda", "NumbaCudaBackend", "gpu"),
    "cupy": ("cupy_backend", "CupyBackend", "gpu"),
}
NAMES = tuple(_REGISTRY)
GPU_PREFERENCE = ("cupy", "numba-cuda")
CPU_PREFERENCE = ("numba-cpu", "numpy")
_instances: dict[str, Backend] = {}


def get(name: str) -> Backend:
    """The backend called ``name`` (whether or not it is available)."""
    if name not in _REGISTRY:
        raise DiffcoreError(f"unknown backend {name!r}; valid: {format_choices(NAMES + ('auto',))}")
    if name not in _instances:
        module, cls, _ = _REGISTRY[name]
        _instances[name] = getattr(importlib.import_module(f".{module}", __name__), cls)()
    return _instances[name]


def availability() -> dict[str, tuple[bool, str]]:
    """Every backend's (available, reason). Never raises."""
    out = {}
    for name in NAMES:
        try:
            out[name] = get(name).availability()
        except Exception as exc:  # a backend module that fails to import is unavailable, not an error
            out[name] = (False, f"failed to load: {exc}")
    return out


def is_available(name: str) -> bool:
    """True when backend ``name`` can run here. Never raises (unknown names are simply unavailable)."""
    if name not in _REGISTRY:
        return False
    return availability_of(name)[0]


def availability_of(name: str) -> tuple[bool, str]:
    try:
        return get(name).availability()
    except Exception as exc:
        return False, f"failed to load: {exc}"


def _require(name: str) -> Backend:
    ok, reason = availability_of(name)
    if not ok:
        extra = _REGISTRY[name][2]
        hint = f"; install it with pip install 'diffcore[{extra}]'" if extra else ""
        raise DiffcoreError(f"backend {name!r} is not available: {reason}{hint}")
    return get(name)


def select(name: str, device: str) -> Backend:
    """The backend to run on data living on ``device`` (``cpu`` or ``cuda:N``).

    ``auto`` follows the data: GPU data goes to a GPU backend (never copied to the host for statistics);
    host data to numba-cpu, or the numpy oracle where Numba is missing.
    """
    on_gpu = device.startswith("cuda")
    if name != "auto" and name not in _REGISTRY:
        get(name)  # raises the "unknown backend" error listing the valid names
    if name == "auto":
        for candidate in GPU_PREFERENCE if on_gpu else CPU_PREFERENCE:
            if availability_of(candidate)[0]:
                return get(candidate)
        reasons = "; ".join(f"{c}: {availability_of(c)[1]}" for c in GPU_PREFERENCE)
        raise DiffcoreError(
            f"the tensors live on {device} but no GPU backend is available ({reasons}); install "
            "pip install 'diffcore[gpu]', or move the tensors to the CPU yourself"
        )
    backend = _require(name)
    if on_gpu != (backend.device == "cuda"):
        where = "the GPU" if backend.device == "cuda" else "the host"
        raise DiffcoreError(
            f"backend {name!r} runs on {where} but the tensors live on {device}; use backend='auto' "
            f"or one of {format_choices(GPU_PREFERENCE if on_gpu else CPU_PREFERENCE)}"
        )
    return backend


__all__ = ["Backend", "PairJob", "NAMES", "availability", "is_available", "get", "select"]
