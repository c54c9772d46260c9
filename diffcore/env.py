"""The environment manifest: what a result depends on, so drift between two machines can be traced.

``collect()`` returns plain JSON-ready data. Versions come from package metadata (no import); framework
details (torch's CUDA/cuDNN/TF32, ONNX Runtime's providers, GPUs through NVML) are read only when asked,
importing the framework then.
"""
from __future__ import annotations

import importlib.metadata as metadata
import os
import platform
import sys

from ._version import __version__

SCHEMA = "diffcore.env/1"
PACKAGES = ("numpy", "numba", "numba-cuda", "llvmlite", "torch", "onnx", "onnxscript", "onnxruntime",
            "onnxruntime-gpu", "onnxconverter-common", "cupy-cuda12x", "cupy-cuda13x", "cupy",
            "nvidia-ml-py", "tabulate", "tokenizers")
# Variables that change what runs or its numerics (TF32 overrides, cuBLAS workspace, thread counts).
ENV_VARS = ("CUDA_VISIBLE_DEVICES", "NVIDIA_TF32_OVERRIDE", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE",
            "CUBLAS_WORKSPACE_CONFIG", "NUMBA_ENABLE_CUDASIM", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS")


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _cpu() -> dict:
    model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return {"model": model, "logical_cores": os.cpu_count(), "machine": platform.machine()}


def _torch(import_it: bool = True) -> dict | None:
    if _version("torch") is None:
        return None
    if not import_it and "torch" not in sys.modules:
        return {"version": _version("torch"), "note": "not imported by this process (not used): build and "
                                                      "device details not collected"}
    try:
        import torch
    except Exception as exc:  # a broken install is part of the environment, not a crash
        return {"error": str(exc)}
    info = {
        "version": torch.__version__,
        "cuda_build": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "matmul_precision": torch.get_float32_matmul_precision(),
        "tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "tf32_cudnn": torch.backends.cudnn.allow_tf32,
        "cudnn_benchmark": torch.backends.cudnn.benchmark,  # algorithm choice by timing: numerics vary
        "cudnn_deterministic": torch.backends.cudnn.deterministic,
        "threads": torch.get_num_threads(),
    }
    if torch.cuda.is_available():
        info["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def _onnxruntime() -> dict | None:
    if _version("onnxruntime") is None and _version("onnxruntime-gpu") is None:
        return None
    try:
        import onnxruntime as ort
    except Exception as exc:
        return {"error": str(exc)}
    return {"version": ort.__version__, "providers": ort.get_available_providers(),
            "device": ort.get_device()}


def _gpus() -> dict:
    """Driver and every GPU through NVML; a reason instead where there is none."""
    try:
        import pynvml
    except Exception as exc:
        return {"available": False, "reason": f"pynvml not importable: {exc}"}
    try:
        pynvml.nvmlInit()
    except Exception as exc:
        return {"available": False, "reason": f"NVML unavailable (no NVIDIA driver?): {exc}"}
    try:
        out = {"available": True, "driver": _text(pynvml.nvmlSystemGetDriverVersion()),
               "cuda_driver": pynvml.nvmlSystemGetCudaDriverVersion(), "devices": []}
        for i in range(pynvml.nvmlDeviceGetCount()):
            out["devices"].append(_gpu(pynvml, pynvml.nvmlDeviceGetHandleByIndex(i)))
        return out
    finally:
        pynvml.nvmlShutdown()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _gpu(pynvml, handle) -> dict:
    major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
    memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
    clocks = {}
    for name, kind in (("sm", pynvml.NVML_CLOCK_SM), ("memory", pynvml.NVML_CLOCK_MEM)):
        try:
            clocks[name] = {"current_mhz": pynvml.nvmlDeviceGetClockInfo(handle, kind),
                            "max_mhz": pynvml.nvmlDeviceGetMaxClockInfo(handle, kind)}
        except Exception:  # some virtualised GPUs do not report clocks
            clocks[name] = None
    return {"name": _text(pynvml.nvmlDeviceGetName(handle)), "compute_capability": f"{major}.{minor}",
            "memory_total_mib": memory.total // (1 << 20), "clocks": clocks}


def collect(frameworks: bool = True, import_torch: bool = True) -> dict:
    """The manifest of this process's environment.

    Args:
        frameworks: also import torch/onnxruntime and query NVML for build and device details.
        import_torch: with ``frameworks``, import torch for its details even when this process has not
            (a comparison of two ONNX models passes False: importing torch takes about a second).
    """
    manifest = {
        "schema": SCHEMA,
        "diffcore": __version__,
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "os": f"{platform.system()} {platform.release()}",
        "cpu": _cpu(),
        "packages": {name: _version(name) for name in PACKAGES if _version(name) is not None},
        "env_vars": {k: os.environ[k] for k in ENV_VARS if k in os.environ},
    }
    if frameworks:
        manifest["torch"] = _torch(import_torch)
        manifest["onnxruntime"] = _onnxruntime()
        manifest["gpu"] = _gpus()
    return manifest
