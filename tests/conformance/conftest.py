"""Backends under conformance test, and how each receives data.

Host backends read the cases as given. GPU backends need the data on the device: on a real GPU through
torch CUDA tensors (or CuPy); under the CUDA simulator through simulated device arrays, at small sizes only.
"""
import numpy as np
import pytest

from diffcore import backends
from tests.conftest import SIMULATED_CUDA

BACKENDS = ("numba-cpu", "numba-cuda", "cupy")
SIMULATOR_MAX_SIZE = 256  # the simulator runs every GPU thread as a Python thread


def _to_gpu(arr):
    try:
        import torch

        if torch.cuda.is_available():
            tensor = arr if isinstance(arr, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(arr))
            return tensor.cuda()
    except ImportError:
        pass
    import cupy

    return cupy.asarray(arr)


def _to_simulated_gpu(arr):
    from numba import cuda

    try:
        import torch

        if isinstance(arr, torch.Tensor):
            if arr.dtype == torch.bfloat16:  # NumPy has no bfloat16: ml_dtypes gives it one, bits unchanged
                import ml_dtypes

                arr = arr.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
            else:
                arr = arr.numpy()
    except ImportError:
        pass
    return cuda.to_device(np.asarray(arr).copy(order="C"))  # keeps 0-d shapes, unlike ascontiguousarray


class Placement:
    """Moves host cases to where a backend reads them; ``max_size`` bounds slow simulated runs."""

    def __init__(self, name: str):
        self.name = name
        self.simulated = name == "numba-cuda" and SIMULATED_CUDA
        self.max_size = SIMULATOR_MAX_SIZE if self.simulated else None

    def __call__(self, arr):
        if self.name == "numba-cpu":
            return arr
        return _to_simulated_gpu(arr) if self.simulated else _to_gpu(arr)

    def accepts(self, size: int, dtypes=()) -> bool:
        if self.simulated and any(d.startswith(("int", "uint")) for d in dtypes):
            return False  # Numba device arrays have no device-side cast for integers (arrays.py refuses them)
        return self.max_size is None or size <= self.max_size


@pytest.fixture(params=BACKENDS, scope="session")
def placement(request):
    ok, reason = backends.availability_of(request.param)
    if not ok:
        pytest.skip(f"backend {request.param} unavailable: {reason}")
    return Placement(request.param)
