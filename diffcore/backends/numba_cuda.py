"""The ``numba-cuda`` backend: one fused pass over both arrays on the GPU, the data never leaving the device.

The kernel runs the shared per-element loop (``_numba_source.accumulate_range``, compiled here with
``numba.cuda.jit(device=True)`` by ``_numba_build.compile_for``), whose per-element terms the numba-cpu
blocked loop also uses (held bit-equal by tests), and merges partial states with the same
``stats.layout.merge_into``, so every statistic is still defined once.

Launches per group of pairs (the pairs of one call that share a device and element types):

1. ``zero_hist`` clears the per-pair int64 |d| histograms.
2. ``reduce_tiles`` walks a work table of tiles (grid-stride over tiles). For each tile every thread runs
   ``accumulate_range`` over its strided share (start = tile start + threadIdx, step = blockDim) into local
   state rows; the rows are merged across each warp with shuffles (``shfl_down_sync`` on every field, then
   ``merge_into``), the warp leaders' rows through shared memory by thread 0, which writes the tile's row to
   global memory. |d| counts go to a per-block shared uint32 histogram (``cuda.atomic.add``), flushed with
   global atomics (nonzero bins only) when the block moves to another pair, before any bin could wrap, and
   at the end.
3. ``merge_pairs`` (one thread per pair) merges each pair's tile rows in tile order. Only the per-pair rows
   (I, F, H: under 9 KiB a pair) come back to the host.

Many pairs, one launch: a raw-pointer work table. Each pair's two operands enter the kernel as
(address, element count, byte stride) in an int64 table, and the kernel builds an array from them per tile
(``_gpu_view``: an ``@intrinsic`` doing ``inttoptr`` plus ``populate_array``, the way numba-cuda's own
``carray`` does, but with a byte stride so strided and reversed 1-D views are read in place). So one launch
reduces any number of pairs with zero copies; the alternative, concatenating the pairs into one buffer,
would read and write every input once more (3x the memory traffic of the reduction itself). The cost of the
table: pairs are grouped by (device, element types), where the element type is float32, float64 or 16-bit
patterns (float16 and bfloat16 share a group and pick their decode table per pair), so a call launches one
reduction per such group; a model compared against its float16 conversion is one group. Loads go through
generic (not ``ld.global.nc``) pointers, and the inputs must stay alive until ``reduce`` returns (it holds
them). A pair's tiling depends only on its own size and the device, so its result is bit-identical whether
it is reduced alone or with others.

Streams: torch tensors are read on torch's current stream of their device, CUDA-array-interface objects
(CuPy) on the stream they export, so no host synchronisation is needed; if a group mixes streams, each is
synchronised first and the default stream is used.

Real GPU vs the CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``, where device code runs as Python threads):

- bit casts: libdevice ``double_as_longlong``/``longlong_as_double`` on a GPU, ``struct`` in the simulator;
- warp exchange: ``shfl_down_sync`` on a GPU; the simulator has no shuffles, so ``_sim_exchange_down``
  emulates one (shuffle-down semantics, lanes past the warp's end keep their own row) through shared
  memory and a barrier;
- views: the intrinsic on a GPU; ``ctypes`` + ``numpy.ndarray`` over the (host) address in the simulator;
- launch sizes: 256 threads and 4 blocks per SM on a GPU; 2 blocks of 64 threads (two warps, so the
  cross-warp merge runs) and tiles of at least 64 elements in the simulator, which is very slow.

The simulator proves the semantics (tiling, strides, merges, histogram flushes), not compilation: the GPU
variants are only proven by running on a real GPU.
"""
from __future__ import annotations

import contextlib
import ctypes
import functools
import struct
import warnings

import numpy as np

from .. import _deps
from ..errors import InternalError
from ..stats import layout as L
from . import _numba_build
from .base import Backend, PairJob, WorkTable, plan_tiles

try:  # a module global on purpose: the simulator swaps the ``cuda`` global of kernels for its fake module
    import numba
    from numba import cuda
except Exception as exc:  # numba-cuda missing or broken: the backend is unavailable, the module still loads
    numba = cuda = None
    _IMPORT_ERROR = f"{type(exc).__name__}: {exc}"
else:
    _IMPORT_ERROR = ""

NI, NF, NB = L.NI, L.NF, L.NB
WARP = 32
FULL_MASK = 0xFFFFFFFF
MAX_THREADS = 1024
MAX_WARPS = MAX_THREADS // WARP

# Real GPU launch shape: a few resident blocks per SM hide memory latency; tiles of at least 8 elements a
# thread amortise the block merge; about TILES_PER_BLOCK tiles a block balance a large pair.
THREADS = 256
BLOCKS_PER_SM = 4
MIN_TILE = THREADS * 8
TILES_PER_BLOCK = 2
# Simulator launch shape: every simulated thread is a Python thread.
SIM_THREADS = 64
SIM_BLOCKS = 2
SIM_MIN_TILE = 64
# A block flushes its uint32 histogram before it has counted this many elements of one pair.
HIST_FLUSH_AT = 1 << 31

# Pair table columns (int64): operand addresses, byte strides, element count, decode codes, tile range.
P_PTR_R, P_PTR_T, P_STRIDE_R, P_STRIDE_T, P_SIZE, P_DEC_R, P_DEC_T, P_FIRST, P_END = range(9)
PAIR_COLS = 9
# Tile table columns (int64).
T_PAIR, T_START, T_STOP = range(3)

# How each storage is read by the kernel: its element type.
_ELEMENT = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64),
            "f16bits": np.dtype(np.uint16), "bf16bits": np.dtype(np.uint16)}


def _simulated() -> bool:
    return bool(numba is not None and numba.config.ENABLE_CUDASIM)


# ---- target helpers: the GPU and simulator variants of what differs --------------------------------------
def _sim_f64_as_i64(x):
    return struct.unpack("<q", struct.pack("<d", x))[0]


def _sim_i64_as_f64(x):
    return struct.unpack("<d", struct.pack("<q", x))[0]


def _hist_add(hist, b):
    cuda.atomic.add(hist, b, 1)


def _gpu_exchange_down(li, lf, oi, of, offset):
    """(oi, of) = the state row of lane + offset (shuffle-down: past the warp's end, the lane's own row)."""
    for k in range(NI):
        oi[k] = cuda.shfl_down_sync(FULL_MASK, li[k], offset)
    for k in range(NF):
        of[k] = cuda.shfl_down_sync(FULL_MASK, lf[k], offset)


def _sim_exchange_down(li, lf, oi, of, offset):
    """The simulator's shuffle-down of a whole row (it has no shuffles), through shared memory. Every thread
    of the block calls it together, as every lane of a warp calls a shuffle. Consecutive rounds (offsets
    16, 8, ..., 1) alternate between two buffers, so one barrier a round suffices: a buffer is rewritten
    two rounds later, after every thread has passed the barrier that follows its reads."""
    box_i = cuda.shared.array((2, MAX_THREADS, NI), np.int64)
    box_f = cuda.shared.array((2, MAX_THREADS, NF), np.float64)
    side = int(offset).bit_length() % 2
    tid = cuda.threadIdx.x
    box_i[side, tid, :] = li
    box_f[side, tid, :] = lf
    cuda.syncthreads()
    if tid % WARP + offset < WARP and tid + offset < cuda.blockDim.x:
        oi[:] = box_i[side, tid + offset]
        of[:] = box_f[side, tid + offset]
    else:
        oi[:] = li
        of[:] = lf


def _sim_view(dtype: np.dtype):
    """Simulator view: the array of ``size`` elements at host address ``ptr``, ``stride`` bytes apart."""
    itemsize = dtype.itemsize

    def view(ptr, size, stride):
        ptr, size, stride = int(ptr), int(size), int(stride)
        low = ptr + min(0, (size - 1) * stride)
        high = ptr + max(0, (size - 1) * stride) + itemsize
        buffer = (ctypes.c_char * (high - low)).from_address(low)
        return np.ndarray((size,), dtype, buffer=buffer, offset=ptr - low, strides=(stride,))

    return view


def _gpu_view(dtype: np.dtype):
    """Device intrinsic: a 1-D array (layout 'A') of ``size`` elements at ``ptr``, ``stride`` bytes apart."""
    from numba.cuda import types
    from numba.cuda.extending import intrinsic
    from numba.cuda.np.arrayobj import make_array, populate_array
    from numba.cuda.np.numpy_support import from_dtype

    element = from_dtype(dtype)
    array_type = types.Array(element, 1, "A")

    @intrinsic
    def view(typingctx, ptr, size, stride):
        if not all(isinstance(arg, types.Integer) for arg in (ptr, size, stride)):
            return None

        def codegen(context, builder, signature, args):
            address, count, step = args
            ary = make_array(array_type)(context, builder)
            data = builder.inttoptr(address, context.get_data_type(element).as_pointer())
            populate_array(ary, data=data, shape=[count], strides=[step], itemsize=dtype.itemsize,
                           meminfo=None)
            return ary._getvalue()

        return array_type(types.int64, types.int64, types.int64), codegen

    return view


# ---- kernels ---------------------------------------------------------------------------------------------
@functools.cache
def _common():
    """Compile (lazily, once per process) the shared source for CUDA, the block merge and the small kernels."""
    simulated = _simulated()
    device = cuda.jit(device=True)
    if simulated:
        casts = {"f64_as_i64": _sim_f64_as_i64, "i64_as_f64": _sim_i64_as_f64}
        exchange_down = device(_sim_exchange_down)
    else:
        from numba.cuda import libdevice

        casts = {"f64_as_i64": libdevice.double_as_longlong, "i64_as_f64": libdevice.longlong_as_double}
        exchange_down = device(_gpu_exchange_down)
    src = _numba_build.compile_for(device, hist_add=device(_hist_add), **casts)
    merge_into = src.merge_into

    @device
    def warp_merge(li, lf, oi, of):
        # A shuffle-down tree: lane 0 ends with the merge of the warp's 32 rows. Lanes whose partner is past
        # the warp's end skip the merge: only lane 0's row is used, and it never depends on theirs.
        lane = cuda.threadIdx.x % WARP
        offset = WARP // 2
        while offset > 0:
            exchange_down(li, lf, oi, of, offset)
            if lane + offset < WARP:
                merge_into(li, lf, oi, of)
            offset //= 2

    @device
    def block_merge(li, lf, oi, of, s_i, s_f):
        # Thread 0 ends with the merge of every thread's row. Every thread of the block calls it.
        warp_merge(li, lf, oi, of)
        tid = cuda.threadIdx.x
        cuda.syncthreads()  # thread 0 has read the previous tile's warp rows
        if tid % WARP == 0:
            for k in range(NI):
                s_i[tid // WARP, k] = li[k]
            for k in range(NF):
                s_f[tid // WARP, k] = lf[k]
        cuda.syncthreads()
        if tid == 0:
            for w in range(1, (cuda.blockDim.x + WARP - 1) // WARP):
                merge_into(li, lf, s_i[w], s_f[w])

    @device
    def zero_shared(s_hist):
        for b in range(cuda.threadIdx.x, NB, cuda.blockDim.x):
            s_hist[b] = 0

    @device
    def flush_hist(s_hist, hist, p):
        # Only nonzero bins cost a global atomic; the block's histogram is left zeroed.
        for b in range(cuda.threadIdx.x, NB, cuda.blockDim.x):
            count = s_hist[b]
            if count != 0:
                cuda.atomic.add(hist, (p, b), count)
                s_hist[b] = 0

    @cuda.jit
    def zero_hist(hist):
        for j in range(cuda.grid(1), hist.shape[0] * NB, cuda.gridsize(1)):
            hist[j // NB, j % NB] = 0

    @cuda.jit
    def merge_pairs(pairs, tile_i, tile_f, ident_i, ident_f, out_i, out_f):
        p = cuda.grid(1)
        if p < pairs.shape[0]:
            for k in range(NI):
                out_i[p, k] = ident_i[k]
            for k in range(NF):
                out_f[p, k] = ident_f[k]
            for t in range(pairs[p, P_FIRST], pairs[p, P_END]):
                merge_into(out_i[p], out_f[p], tile_i[t], tile_f[t])

    return {"accumulate_range": src.accumulate_range, "block_merge": block_merge, "zero_shared": zero_shared,
            "flush_hist": flush_hist, "zero_hist": zero_hist, "merge_pairs": merge_pairs}


@functools.cache
def _reduce_kernel(dtype_r: np.dtype, dtype_t: np.dtype):
    """The tile reduction for one pair of element types (compiled lazily, once per process)."""
    common = _common()
    accumulate_range, block_merge = common["accumulate_range"], common["block_merge"]
    zero_shared, flush_hist = common["zero_shared"], common["flush_hist"]
    make_view = _sim_view if _simulated() else _gpu_view
    view_r, view_t = make_view(dtype_r), make_view(dtype_t)
    i64, f64, u32 = numba.int64, numba.float64, numba.uint32
    decode_f16 = _numba_build.DECODE_F16

    @cuda.jit
    def reduce_tiles(pairs, tiles, params, table_f16, table_bf16, flush_at, tile_i, tile_f, hist):
        s_hist = cuda.shared.array(NB, u32)
        s_i = cuda.shared.array((MAX_WARPS, NI), i64)
        s_f = cuda.shared.array((MAX_WARPS, NF), f64)
        li = cuda.local.array(NI, i64)
        lf = cuda.local.array(NF, f64)
        oi = cuda.local.array(NI, i64)
        of = cuda.local.array(NF, f64)
        tid = cuda.threadIdx.x
        zero_shared(s_hist)
        cuda.syncthreads()
        held = -1  # the pair whose counts s_hist holds; the branch below is uniform across the block
        held_n = 0
        for t in range(cuda.blockIdx.x, tiles.shape[0], cuda.gridDim.x):
            p = tiles[t, T_PAIR]
            start = tiles[t, T_START]
            stop = tiles[t, T_STOP]
            if held >= 0 and (p != held or held_n + (stop - start) > flush_at):
                cuda.syncthreads()
                flush_hist(s_hist, hist, held)
                cuda.syncthreads()
                held_n = 0
            held = p
            held_n += stop - start
            ref = view_r(pairs[p, P_PTR_R], pairs[p, P_SIZE], pairs[p, P_STRIDE_R])
            test = view_t(pairs[p, P_PTR_T], pairs[p, P_SIZE], pairs[p, P_STRIDE_T])
            dec_r = pairs[p, P_DEC_R]
            dec_t = pairs[p, P_DEC_T]
            table_r = table_f16 if dec_r == decode_f16 else table_bf16
            table_t = table_f16 if dec_t == decode_f16 else table_bf16
            accumulate_range(ref, test, table_r, table_t, dec_r != 0, dec_t != 0, start + tid, stop,
                             cuda.blockDim.x, 0, params[p], li, lf, s_hist)
            block_merge(li, lf, oi, of, s_i, s_f)
            if tid == 0:
                for k in range(NI):
                    tile_i[t, k] = li[k]
                for k in range(NF):
                    tile_f[t, k] = lf[k]
        cuda.syncthreads()
        if held >= 0:
            flush_hist(s_hist, hist, held)

    return reduce_tiles


@functools.cache
def _device_constants(device: int):
    """Decode tables and the identity state row, uploaded once per device."""
    table_f16, table_bf16 = _numba_build.decode_tables()
    ident_i, ident_f, _ = L.empty_rows(1)
    return {"table_f16": cuda.to_device(table_f16), "table_bf16": cuda.to_device(table_bf16),
            "ident_i": cuda.to_device(ident_i[0]), "ident_f": cuda.to_device(ident_f[0])}


# ---- host side -------------------------------------------------------------------------------------------
def _device_index(device: str) -> int:
    return int(device.split(":")[1]) if ":" in device else 0


def _element(op) -> np.dtype:
    if op.storage not in _ELEMENT:
        raise InternalError(f"numba-cuda cannot read storage {op.storage!r}")
    return _ELEMENT[op.storage]


def _flat_stride(shape, strides, itemsize: int) -> int:
    """Byte stride between consecutive elements of a 1-D (or C-contiguous) array."""
    shape = tuple(int(s) for s in shape)
    if strides is None or len(shape) == 0:
        return itemsize
    if len(shape) == 1:
        return int(strides[0])
    c_strides = tuple(int(np.prod(shape[k + 1:], dtype=np.int64)) * itemsize for k in range(len(shape)))
    if int(np.prod(shape, dtype=np.int64)) > 1 and tuple(int(s) for s in strides) != c_strides:
        raise InternalError("numba-cuda received a non-contiguous multi-dimensional operand")
    return itemsize


def _locate(op) -> tuple[int, int]:
    """(address, byte stride) of an operand's flat data, after checking its element size."""
    data, element = op.data, _element(op)
    if _simulated():  # simulated device arrays (and NumPy arrays) live in host memory
        address, shape, strides, itemsize = data.ctypes.data, data.shape, data.strides, data.dtype.itemsize
    else:
        cai = data.__cuda_array_interface__
        address, shape, strides = cai["data"][0], cai["shape"], cai.get("strides")
        itemsize = np.dtype(cai["typestr"]).itemsize
    if itemsize != element.itemsize:
        raise InternalError(f"operand of storage {op.storage} has {itemsize}-byte elements")
    return int(address or 0), _flat_stride(shape, strides, itemsize)


def _stream_handle(op):
    """The stream the producer of ``op`` works on (None where it does not say)."""
    if op.framework == "torch":
        torch = _deps.loaded("torch")
        return int(torch.cuda.current_stream(op.data.device).cuda_stream)
    cai = getattr(op.data, "__cuda_array_interface__", None) or {}
    return cai.get("stream")


def _wrap_stream(handle: int):
    if handle == 0:
        return cuda.default_stream()
    if handle == 1:
        return cuda.legacy_default_stream()
    if handle == 2:
        return cuda.per_thread_default_stream()
    return cuda.external_stream(handle)


def _launch_stream(jobs):
    """Order the launches after the producers' work: on their stream, or after synchronising them."""
    if _simulated():
        return cuda.stream()
    handles = {h for job in jobs for h in (_stream_handle(job.ref), _stream_handle(job.test)) if h is not None}
    if len(handles) == 1:
        return _wrap_stream(handles.pop())
    for handle in handles:
        _wrap_stream(handle).synchronize()
    return cuda.default_stream()


def _pair_table(jobs, table: WorkTable) -> np.ndarray:
    pairs = np.zeros((len(jobs), PAIR_COLS), dtype=np.int64)
    for k, job in enumerate(jobs):
        pairs[k, P_PTR_R], pairs[k, P_STRIDE_R] = _locate(job.ref)
        pairs[k, P_PTR_T], pairs[k, P_STRIDE_T] = _locate(job.test)
        pairs[k, P_DEC_R] = _numba_build.decode_code(job.ref.storage)
        pairs[k, P_DEC_T] = _numba_build.decode_code(job.test.storage)
    pairs[:, P_SIZE] = [job.size for job in jobs]
    pairs[:, P_FIRST] = table.first[:-1]
    pairs[:, P_END] = table.first[1:]
    return pairs


@contextlib.contextmanager
def _quiet_launches():
    # Small groups give small grids; Numba's low-occupancy warning says nothing the user can act on.
    with warnings.catch_warnings():
        if not _simulated():
            from numba.cuda.core.errors import NumbaPerformanceWarning

            warnings.simplefilter("ignore", NumbaPerformanceWarning)
        yield


class NumbaCudaBackend(Backend):
    """Statistics on the GPU with Numba CUDA kernels (or the CUDA simulator, for tests).

    Args:
        threads, blocks, min_tile: launch shape (threads a block, at most this many blocks, the smallest
            tile); None picks them from the device (from the simulator's tiny defaults under it).
        hist_flush_at: a block flushes its shared histogram before counting more elements of one pair.
    """

    name = "numba-cuda"
    device = "cuda"

    def __init__(self, threads=None, blocks=None, min_tile=None, hist_flush_at=HIST_FLUSH_AT):
        if threads is not None and (threads % WARP or not WARP <= threads <= MAX_THREADS):
            raise InternalError(f"threads must be a multiple of {WARP} up to {MAX_THREADS}, got {threads}")
        self.threads, self.blocks, self.min_tile = threads, blocks, min_tile
        self.hist_flush_at = int(hist_flush_at)

    def availability(self):
        if cuda is None:
            return False, f"numba.cuda cannot be imported ({_IMPORT_ERROR})"
        try:
            present = cuda.is_available()
        except Exception as exc:  # a broken driver is "unavailable", never an exception here
            return False, f"the CUDA driver failed: {exc}"
        if not present:
            return False, "no CUDA GPU or driver found"
        version = getattr(cuda, "__version__", None) or _numba_cuda_version()
        if _simulated():
            return True, f"CUDA simulator (NUMBA_ENABLE_CUDASIM=1), numba-cuda {version}: correct but very slow"
        return True, f"numba-cuda {version}"

    def reduce(self, jobs: list[PairJob]):
        states = [None] * len(jobs)
        groups = {}
        for k, job in enumerate(jobs):
            key = (_device_index(job.ref.device), _element(job.ref), _element(job.test))
            groups.setdefault(key, []).append(k)
        for (device, dtype_r, dtype_t), indices in groups.items():
            group = [jobs[k] for k in indices]
            for k, state in zip(indices, self._reduce_group(device, dtype_r, dtype_t, group)):
                states[k] = state
        return states

    def _shape(self):
        """(threads, max blocks, min tile) for the current device."""
        if _simulated():
            return (self.threads or SIM_THREADS, self.blocks or SIM_BLOCKS, self.min_tile or SIM_MIN_TILE)
        sms = cuda.get_current_device().MULTIPROCESSOR_COUNT
        threads = self.threads or THREADS
        return threads, self.blocks or sms * BLOCKS_PER_SM, self.min_tile or threads * (MIN_TILE // THREADS)

    def _reduce_group(self, device, dtype_r, dtype_t, jobs):
        sizes = np.array([job.size for job in jobs], dtype=np.int64)
        with cuda.gpus[device]:
            threads, blocks, min_tile = self._shape()
            tile_sizes = np.maximum(min_tile, -(-sizes // (blocks * TILES_PER_BLOCK)))
            table = plan_tiles(sizes, tile_sizes)
            if table.count == 0:  # only empty pairs: nothing to launch
                return list(zip(*L.empty_rows(len(jobs))))
            return self._launch(device, dtype_r, dtype_t, jobs, table, threads, min(blocks, table.count))

    def _launch(self, device, dtype_r, dtype_t, jobs, table, threads, blocks):
        kernels, consts = _common(), _device_constants(device)
        reduce_tiles = _reduce_kernel(dtype_r, dtype_t)
        stream = _launch_stream(jobs)
        pairs = cuda.to_device(_pair_table(jobs, table), stream=stream)
        tiles = cuda.to_device(np.stack([table.pair, table.start, table.stop], axis=1), stream=stream)
        params = cuda.to_device(np.stack([job.params.vector() for job in jobs]), stream=stream)
        tile_i = cuda.device_array((table.count, NI), np.int64, stream=stream)
        tile_f = cuda.device_array((table.count, NF), np.float64, stream=stream)
        hist = cuda.device_array((len(jobs), NB), np.int64, stream=stream)
        out_i = cuda.device_array((len(jobs), NI), np.int64, stream=stream)
        out_f = cuda.device_array((len(jobs), NF), np.float64, stream=stream)
        with _quiet_launches():
            kernels["zero_hist"][blocks, threads, stream](hist)
            reduce_tiles[blocks, threads, stream](pairs, tiles, params, consts["table_f16"],
                                                  consts["table_bf16"], self.hist_flush_at, tile_i, tile_f,
                                                  hist)
            kernels["merge_pairs"][-(-len(jobs) // threads), threads, stream](
                pairs, tile_i, tile_f, consts["ident_i"], consts["ident_f"], out_i, out_f)
        host = [out_i.copy_to_host(stream=stream), out_f.copy_to_host(stream=stream),
                hist.copy_to_host(stream=stream)]
        stream.synchronize()  # also keeps the jobs' operands alive until the kernels are done
        return [(host[0][k], host[1][k], host[2][k]) for k in range(len(jobs))]


def _numba_cuda_version() -> str:
    try:
        from importlib.metadata import version

        return version("numba-cuda")
    except Exception:  # metadata missing: the version is informational only
        return "unknown version"
