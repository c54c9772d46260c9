"""The ``numba-cpu`` backend: one fused, parallel pass over both arrays, no temporaries of input size.

All pairs of a call with the same storage dtypes are reduced in one ``prange`` over a work table of tiles
(base.plan_tiles), each tile writing a partial state row; the rows of each pair are then merged with the
shared ``merge_into``. Inputs are read in place (16-bit floats through an exact 65536-entry table).
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


@functools.cache
def _bitcasts():
    from llvmlite import ir
    from numba import types
    from numba.extending import intrinsic

    @intrinsic
    def f64_as_i64(typingctx, x):
        if not isinstance(x, types.Float):
            return None

        def codegen(context, builder, sig, args):
            value = context.cast(builder, args[0], sig.args[0], types.float64)
            return builder.bitcast(value, ir.IntType(64))

        return types.int64(x), codegen

    @intrinsic
    def i64_as_f64(typingctx, x):
        if not isinstance(x, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            value = context.cast(builder, args[0], sig.args[0], types.int64)
            return builder.bitcast(value, ir.DoubleType())

        return types.float64(x), codegen

    return f64_as_i64, i64_as_f64


@functools.cache
def _kernels():
    """Compile (lazily, once per process; Numba caches to disk) the CPU build and its drivers."""
    import numba
    from numba import prange

    f64_as_i64, i64_as_f64 = _bitcasts()
    jit = numba.njit(nogil=True, cache=True)

    def hist_add(hist, b):
        hist[b] += 1

    k = _numba_build.compile_for(jit, f64_as_i64=f64_as_i64, i64_as_f64=i64_as_f64, hist_add=jit(hist_add))
    accumulate_range, merge_into = k.accumulate_range, k.merge_into

    @numba.njit(parallel=True, cache=True)
    def reduce_tiles(refs, tests, table_f16, table_bf16, decode, params, tile_pair, tile_start, tile_stop,
                     i_rows, f_rows, h_rows):
        for t in prange(tile_pair.size):
            p = tile_pair[t]
            table_r = table_f16 if decode[p, 0] == 1 else table_bf16
            table_t = table_f16 if decode[p, 1] == 1 else table_bf16
            accumulate_range(refs[p], tests[p], table_r, table_t, decode[p, 0] != 0, decode[p, 1] != 0,
                             tile_start[t], tile_stop[t], 1, 0, params[p], i_rows[t], f_rows[t], h_rows[t])

    @numba.njit(parallel=True, cache=True)
    def merge_pairs(first, i_rows, f_rows, h_rows, out_i, out_f, out_h):
        for p in prange(first.size - 1):
            for t in range(first[p], first[p + 1]):
                merge_into(out_i[p], out_f[p], i_rows[t], f_rows[t])
                out_h[p] += h_rows[t]

    return reduce_tiles, merge_pairs


@functools.cache
def _tables():
    return _numba_build.decode_tables()


def _typed_list(arrays):
    from numba import typeof, types
    from numba.typed import List

    # One item type of layout 'A' for contiguous and strided views alike: one compilation per dtype pair.
    out = List.empty_list(types.Array(typeof(arrays[0]).dtype, 1, "A"))
    for a in arrays:
        out.append(a)
    return out


def _tile_sizes(sizes, threads: int) -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    return np.maximum(MIN_TILE, -(-sizes // (threads * TILES_PER_THREAD)))


def _group_by_storage(jobs):
    groups = {}
    for k, job in enumerate(jobs):
        key = (np.asarray(job.ref.data).dtype, np.asarray(job.test.data).dtype)
        groups.setdefault(key, []).append(k)
    return groups.values()


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
        states = [None] * len(jobs)
        for indices in _group_by_storage(jobs):
            group = [jobs[k] for k in indices]
            for k, state in zip(indices, self._reduce_group(group)):
                states[k] = state
        return states

    def _reduce_group(self, jobs):
        import numba

        reduce_tiles, merge_pairs = _kernels()
        table_f16, table_bf16 = _tables()
        sizes = [job.size for job in jobs]
        table = plan_tiles(sizes, _tile_sizes(sizes, numba.get_num_threads()))
        decode = np.array([[_numba_build.decode_code(j.ref.storage), _numba_build.decode_code(j.test.storage)]
                           for j in jobs], dtype=np.int64)
        params = np.stack([job.params.vector() for job in jobs])
        i_rows, f_rows, h_rows = L.empty_rows(table.count)
        reduce_tiles(_typed_list([np.asarray(j.ref.data) for j in jobs]),
                     _typed_list([np.asarray(j.test.data) for j in jobs]),
                     table_f16, table_bf16, decode, params, table.pair, table.start, table.stop,
                     i_rows, f_rows, h_rows)
        out_i, out_f, out_h = L.empty_rows(len(jobs))
        merge_pairs(table.first, i_rows, f_rows, h_rows, out_i, out_f, out_h)
        return [(out_i[k], out_f[k], out_h[k]) for k in range(len(jobs))]
