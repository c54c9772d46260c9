"""The ``cupy`` backend: native CUDA C kernels (kernels/drift.cu) launched through ``cupy.RawModule``.

All pairs of a call that live on one GPU are reduced by one launch of ``drift_tiles`` over a device-side
work table, then one launch of ``drift_finish`` merges each pair's per-tile partial rows. The table is a
single int64 buffer (layout in kernels/drift.cuh, packed by ``pack_table``): per pair the raw device
pointers, element strides and storage codes of both operands and the parameter row; per tile
(pair, start, stop) from ``base.plan_tiles``. Inputs are read in place (torch tensors and CuPy arrays alike,
strided views included); only the small result rows (I, F, H per pair) are copied back to the host.

The kernels run on the producer's stream: torch's current stream when any operand is a torch tensor,
otherwise CuPy's current stream, after waiting on the other producers' streams.

CuPy is imported only inside the functions that use it; this module imports NumPy at most.
"""
from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

import numpy as np

from ..errors import DiffcoreError, InternalError
from ..stats import layout as L
from ..stats.params import NP
from .base import Backend, PairJob, WorkTable, plan_tiles, states_from_rows

__all__ = ["CupyBackend", "DeviceView", "device_view", "kernel_source", "pack_table", "tile_sizes",
           "unpack_output"]

# ---- mirrors of kernels/drift.cuh (test_cupy_kernels checks them through the host harness) -------------
STORAGE_CODES = {"float64": 0, "float32": 1, "f16bits": 2, "bf16bits": 3}
ITEM_SIZES = {"float64": 8, "float32": 4, "f16bits": 2, "bf16bits": 2}
HEADER_W = 2                      # [n_pairs, n_tiles]
PR_PTR_R, PR_PTR_T, PR_STRIDE_R, PR_STRIDE_T, PR_CODE_R, PR_CODE_T, PR_FIRST, PR_END, PR_PARAMS = range(9)
PAIR_W = PR_PARAMS + NP
TILE_W = 3                        # (pair, start, stop)
ROW_W = L.NI + L.NF               # a partial row: I, then F as float64 bits
OUT_W = ROW_W + L.NB              # an output row adds the pair's histogram

# ---- launch geometry (drift.cu: BLOCK, MIN_BLOCKS_PER_SM, FINISH_BLOCK) ------------------------------------
BLOCK = 256
FALLBACK_BLOCKS_PER_SM = 2
FINISH_BLOCK = 128
FINISH_PAIRS_PER_BLOCK = FINISH_BLOCK // 32
# A tile ends with a block-wide merge of 36 fields and one partial row: give it at least 32 elements per
# thread. A large pair gets about TILES_PER_BLOCK tiles per resident block (slack for uneven tiles).
MIN_TILE = 32 * BLOCK
MAX_TILE = 1 << 30                # per-thread counts in the kernel are 32-bit
TILE_ALIGN = 256                  # tile starts stay 16-byte aligned for every storage
TILES_PER_BLOCK = 2

# NVRTC options: no FMA contraction (results must match the float64 oracle's rounding; the mismatch rule
# atol + rtol*|r| must not be fused). CuPy appends -ftz=true, which is why drift.cuh decodes with integers.
COMPILE_OPTIONS = ("--std=c++17", "--fmad=false")
KERNEL_PACKAGE = "diffcore._kernels"


def _kernel_folder():
    """Where drift.cu/drift.cuh are: the installed ``diffcore._kernels``, else (a source checkout on
    PYTHONPATH, as on a GPU host that installs nothing) the repository's kernels/ folder."""
    from importlib import resources
    from pathlib import Path

    try:
        return resources.files(KERNEL_PACKAGE)
    except ModuleNotFoundError:
        folder = Path(__file__).resolve().parents[2] / "kernels"
        if not (folder / "drift.cu").is_file():
            raise InternalError(f"the CUDA sources are missing: no {KERNEL_PACKAGE} and no {folder}") from None
        return folder


def kernel_source() -> str:
    """The CUDA C source compiled by NVRTC: drift.cu with drift.cuh inlined (no include path needed)."""
    folder = _kernel_folder()
    header = folder.joinpath("drift.cuh").read_text(encoding="utf-8")
    body = folder.joinpath("drift.cu").read_text(encoding="utf-8")
    include = '#include "drift.cuh"'
    if include not in body:
        raise InternalError(f"kernels/drift.cu no longer contains {include!r}")
    # `#pragma once` would warn in what becomes the main file; drift.cuh is inlined exactly once anyway
    return body.replace(include, header.replace("#pragma once", "", 1), 1)


# ---- operands as raw device views ------------------------------------------------------------------------
@dataclass(frozen=True)
class DeviceView:
    """An operand as the kernel reads it: element ``k`` is at ``ptr + k * stride * itemsize``."""

    ptr: int
    stride: int
    code: int


def _raw_view(data):
    """(pointer, element stride, itemsize) of a flat torch tensor, CuPy array or CUDA array interface."""
    if hasattr(data, "data_ptr"):  # torch.Tensor: data_ptr() includes the storage offset
        return data.data_ptr(), (data.stride(0) if data.dim() else 1), data.element_size()
    if hasattr(data, "data") and hasattr(data.data, "ptr"):  # cupy.ndarray: data.ptr includes the offset
        itemsize = data.itemsize
        return data.data.ptr, (data.strides[0] // itemsize if data.ndim else 1), itemsize
    cai = getattr(data, "__cuda_array_interface__", None)
    if cai is None:
        raise InternalError(f"the cupy backend got a {type(data).__name__}, not GPU data")
    itemsize = np.dtype(cai["typestr"]).itemsize
    strides = cai.get("strides")
    # arrays.py accepts strides only for 1-D objects; C-contiguous n-D data is read as its flat order
    return cai["data"][0], (strides[0] // itemsize if strides else 1), itemsize


def device_view(op) -> DeviceView:
    """The ``DeviceView`` of an ``Operand`` living on a GPU (zero-copy)."""
    if op.storage not in STORAGE_CODES:
        raise InternalError(f"unknown storage {op.storage!r}; expected one of {sorted(STORAGE_CODES)}")
    ptr, stride, itemsize = _raw_view(op.data)
    if itemsize != ITEM_SIZES[op.storage]:
        raise InternalError(f"storage {op.storage!r} holds {ITEM_SIZES[op.storage]}-byte items, got {itemsize}")
    return DeviceView(int(ptr), int(stride), STORAGE_CODES[op.storage])


# ---- the work table --------------------------------------------------------------------------------------
def tile_sizes(sizes, blocks: int) -> np.ndarray:
    """Tile length of each pair on a device with ``blocks`` resident blocks (multiples of TILE_ALIGN).

    A pair's tile length depends on its own size only (never on the other pairs of the call): its partial
    rows, and so its result, are then the same whether it is reduced alone or in drift_many.
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    want = -(-sizes // max(1, blocks * TILES_PER_BLOCK))
    size = np.minimum(MAX_TILE, np.maximum(MIN_TILE, want))
    return -(-size // TILE_ALIGN) * TILE_ALIGN


def _pointers(views) -> np.ndarray:
    return np.array([v.ptr for v in views], dtype=np.uint64).view(np.int64)


def pack_table(refs, tests, params, work: WorkTable) -> np.ndarray:
    """The int64 work table the kernels read (layout: kernels/drift.cuh).

    Args:
        refs, tests: one ``DeviceView`` per pair.
        params: float64 array [n_pairs, NP] (``StatParams.vector()`` rows), stored as bit patterns.
        work: the tiles of the pairs (``base.plan_tiles``).
    """
    n_pairs, n_tiles = len(refs), work.count
    table = np.zeros(HEADER_W + n_pairs * PAIR_W + n_tiles * TILE_W, dtype=np.int64)
    table[0], table[1] = n_pairs, n_tiles
    pairs = table[HEADER_W:HEADER_W + n_pairs * PAIR_W].reshape(n_pairs, PAIR_W)
    pairs[:, PR_PTR_R], pairs[:, PR_PTR_T] = _pointers(refs), _pointers(tests)
    pairs[:, PR_STRIDE_R] = [v.stride for v in refs]
    pairs[:, PR_STRIDE_T] = [v.stride for v in tests]
    pairs[:, PR_CODE_R] = [v.code for v in refs]
    pairs[:, PR_CODE_T] = [v.code for v in tests]
    pairs[:, PR_FIRST], pairs[:, PR_END] = work.first[:-1], work.first[1:]
    pairs[:, PR_PARAMS:] = np.ascontiguousarray(params, dtype=np.float64).reshape(n_pairs, NP).view(np.int64)
    tiles = table[HEADER_W + n_pairs * PAIR_W:].reshape(n_tiles, TILE_W)
    tiles[:, 0], tiles[:, 1], tiles[:, 2] = work.pair, work.start, work.stop
    return table


def unpack_output(out: np.ndarray, n_pairs: int):
    """Split the kernels' output buffer (n_pairs rows of OUT_W int64 words) into (I, F, H) states."""
    rows = np.asarray(out, dtype=np.int64).reshape(n_pairs, OUT_W)
    i_rows = rows[:, :L.NI].copy()
    f_rows = rows[:, L.NI:ROW_W].copy().view(np.float64)
    h_rows = rows[:, ROW_W:].copy()  # uint64 counts, far below 2**63
    return states_from_rows(i_rows, f_rows, h_rows)


# ---- CuPy plumbing ---------------------------------------------------------------------------------------
@functools.cache
def _module():
    import cupy

    # RawModule compiles lazily, once per device, and CuPy caches the binary on disk.
    return cupy.RawModule(code=kernel_source(), options=COMPILE_OPTIONS)


def _blocks_per_sm(kernel) -> int:
    try:
        from cupy.cuda import driver

        return max(1, driver.occupancyMaxActiveBlocksPerMultiprocessor(kernel.kernel.ptr, BLOCK, 0))
    except Exception:  # an older CuPy without the occupancy call: the kernel's launch bounds
        return FALLBACK_BLOCKS_PER_SM


@functools.cache
def _resident_blocks(device_id: int) -> int:
    """How many drift_tiles blocks run at once on the device (SMs x occupancy)."""
    import cupy

    kernel = _module().get_function("drift_tiles")
    sms = cupy.cuda.Device(device_id).attributes["MultiProcessorCount"]
    return sms * _blocks_per_sm(kernel)


def _is_torch(data) -> bool:
    return type(data).__module__.split(".")[0] == "torch"


def _is_cupy(data) -> bool:
    return type(data).__module__.split(".")[0] == "cupy"


def _producer_streams(cupy, operands):
    """Streams that may still be writing the operands: CuPy's current one for CuPy arrays, and the stream a
    CUDA-array-interface object declares (torch tensors are ordered by launching on torch's stream)."""
    streams = []
    if any(_is_cupy(op.data) for op in operands):
        streams.append(cupy.cuda.get_current_stream())
    for op in operands:
        if _is_cupy(op.data) or _is_torch(op.data):
            continue
        cai = getattr(op.data, "__cuda_array_interface__", None)
        handle = cai.get("stream") if isinstance(cai, dict) else None
        if isinstance(handle, int) and handle > 0:  # CAI v3: None/absent means "no synchronisation needed"
            streams.append(cupy.cuda.ExternalStream(handle))
    return streams


def _launch_stream(cupy, operands, device_id: int):
    """The stream to launch on, already ordered after every producer of the operands."""
    if any(_is_torch(op.data) for op in operands):
        torch = sys.modules["torch"]  # loaded: the tensors exist
        stream = cupy.cuda.ExternalStream(torch.cuda.current_stream(device_id).cuda_stream, device_id)
    else:
        stream = cupy.cuda.get_current_stream()
    for producer in _producer_streams(cupy, operands):
        if producer.ptr != stream.ptr:
            stream.wait_event(producer.record())
    return stream


def _device_id(device: str) -> int:
    if not device.startswith("cuda"):
        raise DiffcoreError(f"the cupy backend reads GPU data, but an operand lives on {device}; "
                            "use backend='auto' or 'numba-cpu'")
    return int(device.partition(":")[2] or 0)


def _reduce_on_device(jobs: list[PairJob], device_id: int):
    import cupy

    operands = [op for job in jobs for op in (job.ref, job.test)]
    refs = [device_view(job.ref) for job in jobs]
    tests = [device_view(job.test) for job in jobs]
    params = np.stack([job.params.vector() for job in jobs])
    with cupy.cuda.Device(device_id):
        blocks = _resident_blocks(device_id)
        sizes = [job.size for job in jobs]
        work = plan_tiles(sizes, tile_sizes(sizes, blocks))
        table = pack_table(refs, tests, params, work)
        module = _module()
        with _launch_stream(cupy, operands, device_id):
            d_table = cupy.asarray(table)
            partials = cupy.empty(max(work.count, 1) * ROW_W, dtype=cupy.int64)
            out = cupy.zeros(len(jobs) * OUT_W, dtype=cupy.int64)  # histograms are added atomically
            if work.count:
                grid = min(work.count, blocks)
                module.get_function("drift_tiles")((grid,), (BLOCK,), (d_table, partials, out))
            grid = -(-len(jobs) // FINISH_PAIRS_PER_BLOCK)
            module.get_function("drift_finish")((grid,), (FINISH_BLOCK,), (d_table, partials, out))
            host = out.get()  # blocks until the kernels are done; the operands (in jobs) are alive till then
    return unpack_output(host, len(jobs))


def _nvrtc_problem() -> str:
    """Why NVRTC (which compiles the kernels) cannot be used, or '' when it can (or cannot be checked)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
    except Exception:  # CuPy moved its internals: let the first compile report any problem
        return ""
    try:
        nvrtc.getVersion()
    except Exception as exc:
        return (f"CuPy cannot load NVRTC, the CUDA runtime compiler it needs for the kernels ({exc}); "
                "install a CUDA toolkit or the nvidia-cuda-nvrtc wheel matching your CuPy")
    return ""


class CupyBackend(Backend):
    """Statistics on the GPU with native CUDA C kernels compiled by CuPy (``pip install 'diffcore[gpu]'``)."""

    name = "cupy"
    device = "cuda"

    def availability(self) -> tuple[bool, str]:
        """(True, versions) when CuPy, a CUDA driver, a device and NVRTC are usable; never raises."""
        try:
            return self._availability()
        except Exception as exc:  # never raise from availability
            return False, f"cupy backend check failed: {type(exc).__name__}: {exc}"

    def _availability(self) -> tuple[bool, str]:
        try:
            import cupy
        except Exception as exc:
            return False, f"cupy is not installed ({exc}); pip install 'diffcore[gpu]'"
        try:
            count = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:
            return False, f"cupy {cupy.__version__} is installed but no CUDA device is usable ({exc})"
        if count < 1:
            return False, f"cupy {cupy.__version__} is installed but finds no CUDA device"
        problem = _nvrtc_problem()
        if problem:
            return False, problem
        return True, f"cupy {cupy.__version__}, {count} CUDA device(s)"

    def reduce(self, jobs: list[PairJob]):
        """Return the accumulator state (I, F, H rows) of each job, in order: one pair of launches per GPU.

        Raises:
            DiffcoreError: an operand is not on a GPU.
        """
        states = [None] * len(jobs)
        by_device: dict[int, list[int]] = {}
        for k, job in enumerate(jobs):
            by_device.setdefault(_device_id(job.ref.device), []).append(k)
        for device_id, indices in by_device.items():
            for k, state in zip(indices, _reduce_on_device([jobs[k] for k in indices], device_id)):
                states[k] = state
        return states
