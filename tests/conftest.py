"""Test configuration shared by every tier.

Where there is no NVIDIA GPU, Numba CUDA kernels run under the CUDA simulator: NUMBA_ENABLE_CUDASIM must be
set before numba is first imported, which is why it is set here, at collection time. On a GPU host it is
left unset so the GPU tier runs on the real device.
"""
import os
import shutil

import pytest


def _has_nvidia_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


HAS_GPU = _has_nvidia_gpu()
if not HAS_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

SIMULATED_CUDA = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"


def pytest_collection_modifyitems(config, items):
    if HAS_GPU and not SIMULATED_CUDA:
        return
    reason = "needs a real CUDA GPU: none on this machine (CUDA kernels run under the simulator instead)"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))
