"""The ``numba-cpu`` backend: one fused, parallel pass over both arrays, no temporaries of input size.

All pairs of a call, whatever their storage dtypes, are reduced in one parallel pass over a work table of
tiles (base.plan_tiles; each thread takes a share of the tiles), each tile writing a partial state row; the
rows of each pair are then merged with the shared ``merge_into``. Inputs are read in place (16-bit floats
through an exact 65536-entry table), and one compiled kernel reads every storage dtype.
"""
from __future__ import annotations

import functools

import numpy as np

from ..stats import layout as L
from . import _numba_build
from .base import Backend, PairJob, plan_tiles

# Small tiles balance many small layers across threads; large pairs use a few tiles per thread.
MIN_TILE = 1 << 15
TILES_PER_THREAD = 4


def _kernels():
    """The compiled drivers (imported on first use: this module must not import numba by itself)."""
    from . import _numba_cpu_kernels as k

    return k.reduce_tiles


def merge_pairs(first, i_rows, f_rows, h_rows, out_i, out_f, out_h) -> None:
    """Merge each pair's tile rows (``first[p]:first[p + 1]``) into its output row, in tile order.

    Plain Python over the shared ``merge_into``: a few rows a pair cost microseconds, while compiling the
    same merge with Numba (the kernels' ``merge_pairs``, kept as the reference its tests compare with) cost
    about 3 s of a first run's compile.
    """
    with np.errstate(all="ignore"):  # Inf and NaN sums are results here (as in the compiled merge), not faults
        for p in range(first.size - 1):
            for t in range(first[p], first[p + 1]):
                L.merge_into(out_i[p], out_f[p], i_rows[t], f_rows[t])
                out_h[p] += h_rows[t]


@functools.cache
def _tables():
    return _numba_build.decode_tables()


def _operand_table(refs: list, tests: list) -> np.ndarray:
    """The kernel's operand table: each pair's (address, byte stride) of both 1-D operands, and its size."""
    table = np.zeros((len(refs), 5), dtype=np.int64)
    for k, (ref, test) in enumerate(zip(refs, tests)):
        table[k] = (ref.ctypes.data, ref.strides[0], test.ctypes.data, test.strides[0], ref.size)
    return table


def _tile_sizes(sizes, threads: int) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.maximum(MIN_TILE, -(-sizes // (threads * TILES_PER_THREAD)))


def _run_threads(work, threads: int) -> None:
    """``work(k, threads)`` for k < threads, each on its own thread (the kernels release the GIL).

    Thread k takes tiles k, k + threads, ...: tiles of one pair are equal, so the shares are even.
    """
    if threads <= 1:
        work(0, 1)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads - 1) as pool:
        futures = [pool.submit(work, k, threads) for k in range(1, threads)]
        work(0, threads)
        for future in futures:
            future.result()


# storage -> the kernels' KIND_* code (_numba_cpu_kernels; kept here so that numba is not imported to plan)
_KINDS = {"float64": 0, "float32": 1, "f16bits": 2, "bf16bits": 3}


def _kind(operand) -> int:
    """How the kernel reads an operand: float64 or float32 values, or float16/bfloat16 bit patterns."""
    kind = _KINDS.get(operand.storage)
    if kind is None or np.asarray(operand.data).dtype.itemsize != (8, 4, 2, 2)[kind]:
        raise TypeError(f"numba-cpu cannot read storage {operand.storage!r} of dtype "
                        f"{np.asarray(operand.data).dtype}")  # a bug: arrays.py gives only these
    return kind


class NumbaCpuBackend(Backend):
    name = "numba-cpu"
    device = "cpu"

    def availability(self):
        try:
            import numba  # noqa: F401
        except Exception as exc:  # never raise from availability
            return False, f"numba cannot be imported ({exc}); reinstall diffcore"
        return True, "numba " + numba.__version__

    def reduce(self, jobs: list[PairJob]):
        if not jobs:
            return []
        import numba

        reduce_tiles = _kernels()
        table_f16, table_bf16 = _tables()
        sizes = [job.size for job in jobs]
        threads = numba.get_num_threads()
        table = plan_tiles(sizes, _tile_sizes(sizes, threads))
        kinds = np.array([[_kind(j.ref), _kind(j.test)] for j in jobs], dtype=np.int64)
        params = np.stack([job.params.vector() for job in jobs])
        i_rows, f_rows, h_rows = L.empty_rows(table.count)
        refs, tests = [np.asarray(j.ref.data) for j in jobs], [np.asarray(j.test.data) for j in jobs]
        operands = _operand_table(refs, tests)  # addresses: refs and tests stay referenced until the call ends
        _run_threads(lambda first, step: reduce_tiles(
            operands, kinds, table_f16, table_bf16, params, table.pair, table.start, table.stop, first, step,
            i_rows, f_rows, h_rows), min(threads, table.count))
        out_i, out_f, out_h = L.empty_rows(len(jobs))
        merge_pairs(table.first, i_rows, f_rows, h_rows, out_i, out_f, out_h)
        return [(out_i[k], out_f[k], out_h[k]) for k in range(len(jobs))]
