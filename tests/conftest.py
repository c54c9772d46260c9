"""Test configuration shared by every tier.

Where there is no NVIDIA GPU, Numba CUDA kernels run under the CUDA simulator: NUMBA_ENABLE_CUDASIM must be
set before numba is first imported, which is why it is set here, at collection time. On a GPU host it is
left unset so the GPU tier runs on the real device.
"""
import os
import shutil
import sys
import threading

import numpy as np
import pytest


def _has_nvidia_gpu() -> bool:
    return os.path.exists("/dev/nvidiactl") or shutil.which("nvidia-smi") is not None


HAS_GPU = _has_nvidia_gpu()
if not HAS_GPU:
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

SIMULATED_CUDA = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"

# Every JSON document diffcore writes during the tests (reports, checklists, golden checks, report diffs,
# golden.json, .artifacts.json) is checked against its published schema before it is written
# (diffcore/files.py): a violation raises files.SchemaViolation, failing the test that wrote it.
os.environ["DIFFCORE_VALIDATE_WRITES"] = "1"
# transformers decides once, at its import, whether to load its TensorFlow half; with the tf extra's Keras 3
# installed that import fails (optimum's exporter reaches it), so every test process turns it off first
os.environ.setdefault("USE_TF", "0")


@pytest.fixture(autouse=True)
def report_width_of_a_pipe(monkeypatch):
    """Reports render at the width they get when stdout is not a terminal (100), whatever the runner:
    pytest-xdist's workers inherit a $COLUMNS from the controller's terminal."""
    monkeypatch.delenv("COLUMNS", raising=False)


def pytest_collection_modifyitems(config, items):
    if HAS_GPU and not SIMULATED_CUDA:
        return
    reason = "needs a real CUDA GPU: none on this machine"
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session", autouse=True)
def race_free_simulator():
    """Under the CUDA simulator: make shared-array allocation thread-safe, then switch threads more often.

    The simulator creates a shared array on first use with an unlocked check-then-insert, so two threads
    of a block can get different "shared" arrays; with Python's default 5 ms switch interval that is rare,
    with a short one (which makes the simulator's barrier polling ~6x faster) it is not. Nothing changes on
    a real GPU.
    """
    if not SIMULATED_CUDA:
        yield
        return
    from numba.cuda.simulator import kernelapi

    original, lock = kernelapi.FakeCUDAShared.array, threading.Lock()

    def locked_array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory and errors: as the simulator does
            return original(self, shape, dtype, alignment)
        caller = sys._getframe(1)  # one allocation per source line, as in the simulator
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            if key not in self._allocations:
                self._allocations[key] = np.empty(shape, _numpy_dtype(dtype))
            return self._allocations[key]

    interval = sys.getswitchinterval()
    kernelapi.FakeCUDAShared.array = locked_array
    sys.setswitchinterval(1e-4)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        kernelapi.FakeCUDAShared.array = original


def _numpy_dtype(dtype):
    from numba.cuda.np import numpy_support

    return np.dtype(dtype) if not hasattr(dtype, "bitwidth") else numpy_support.as_dtype(dtype)
