"""The numba-cpu build of the shared drift source, and its parallel drivers.

Everything here is a module-level function so that Numba's on-disk cache hits in every new process
(closures are keyed on their cells, which differ per process, so a closure recompiles every time), and the
cache is keyed on every source the kernels are built from (_numba_cache.py).
"""
import numba
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from . import _numba_build, _numba_cache

CACHE = _numba_cache.install()  # else no disk cache: a stale one could hold code of older sources


@intrinsic
def f64_as_i64(typingctx, x):
    """Reinterpret a float's float64 bits as int64."""
    if not isinstance(x, types.Float):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.float64)
        return builder.bitcast(value, ir.IntType(64))

    return types.int64(x), codegen


@intrinsic
def i64_as_f64(typingctx, x):
    """Reinterpret an integer's int64 bits as float64."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, sig, args):
        value = context.cast(builder, args[0], sig.args[0], types.int64)
        return builder.bitcast(value, ir.DoubleType())

    return types.float64(x), codegen


_jit = numba.njit(nogil=True, cache=CACHE)


@_jit
def hist_add(hist, b):
    hist[b] += 1


_compiled = _numba_build.compile_for(_jit, f64_as_i64=f64_as_i64, i64_as_f64=i64_as_f64, hist_add=hist_add)
accumulate_range = _compiled.accumulate_range
merge_into = _compiled.merge_into


@numba.njit(parallel=True, cache=CACHE)
def reduce_tiles(refs, tests, table_f16, table_bf16, decode, params, tile_pair, tile_start, tile_stop,
                 i_rows, f_rows, h_rows):
    """One parallel pass over the work table: tile t reduces into state row t."""
    for t in prange(tile_pair.size):
        p = tile_pair[t]
        table_r = table_f16 if decode[p, 0] == 1 else table_bf16
        table_t = table_f16 if decode[p, 1] == 1 else table_bf16
        accumulate_range(refs[p], tests[p], table_r, table_t, decode[p, 0] != 0, decode[p, 1] != 0,
                         tile_start[t], tile_stop[t], 1, 0, params[p], i_rows[t], f_rows[t], h_rows[t])


@numba.njit(parallel=True, cache=CACHE)
def merge_pairs(first, i_rows, f_rows, h_rows, out_i, out_f, out_h):
    """Merge each pair's tile rows (``first[p]:first[p + 1]``) into its output row, pairs in parallel."""
    for p in prange(first.size - 1):
        for t in range(first[p], first[p + 1]):
            merge_into(out_i[p], out_f[p], i_rows[t], f_rows[t])
            out_h[p] += h_rows[t]
