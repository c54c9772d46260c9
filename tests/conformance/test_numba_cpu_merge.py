"""numba-cpu merges its tile rows in plain Python (no compile on a first run): to the bits of the compiled
merge it replaced, on real tile rows and on rows with the edge values a merge meets (-0.0, ±Inf, NaN)."""
from __future__ import annotations

import numpy as np
import pytest

from diffcore.backends import numba_cpu
from diffcore.stats import layout as L

pytest.importorskip("numba")


def _real_rows(rng, tiles):
    """Tile rows the kernel itself produced for one pair cut into ``tiles`` tiles."""
    from diffcore.backends import _numba_build, _numba_cpu_kernels as k

    size = 3000 * tiles
    ref = rng.standard_normal(size).astype(np.float32)
    ref[rng.integers(0, size, 20)] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45], 20)
    test = (ref + rng.standard_normal(size).astype(np.float32) * 1e-3).astype(np.float32)
    f16, bf16 = _numba_build.decode_tables()
    bounds = np.linspace(0, size, tiles + 1).astype(np.int64)
    operands = np.array([[ref.ctypes.data, 4, test.ctypes.data, 4, size]], dtype=np.int64)
    params = np.stack([_params_vector()])
    i_rows, f_rows, h_rows = L.empty_rows(tiles)
    k.reduce_tiles(operands, np.array([[1, 1]], dtype=np.int64), f16, bf16, params,
                   np.zeros(tiles, dtype=np.int64), bounds[:-1], bounds[1:], 0, 1, i_rows, f_rows, h_rows)
    return i_rows, f_rows, h_rows


def _params_vector():
    from diffcore.arrays import as_operand
    from diffcore.stats.params import StatParams
    from diffcore.stats.tolerance import resolve_tolerance

    fmt = as_operand(np.zeros(1, np.float32), "test").format
    return StatParams(resolve_tolerance(None, None, fmt), fmt).vector()


def _edge_rows(rng, count):
    i_rows, f_rows, h_rows = L.empty_rows(count)
    i_rows[:] = rng.integers(0, 50, i_rows.shape)
    picks = np.array([0.0, -0.0, np.inf, -np.inf, 1e-308, 5e-324, -1.5, 2.5, 1e300])
    f_rows[:] = rng.choice(picks, f_rows.shape)
    h_rows[:] = rng.integers(0, 9, h_rows.shape)
    return i_rows, f_rows, h_rows


def _both(first, rows):
    from diffcore.backends import _numba_cpu_kernels as k

    out = []
    for merge in (numba_cpu.merge_pairs, k.merge_pairs):
        oi, of, oh = L.empty_rows(first.size - 1)
        merge(first, *rows, oi, of, oh)
        out.append((oi, of.view(np.int64), oh))
    return out


def test_python_merge_equals_the_compiled_merge_bit_for_bit_on_real_tile_rows():
    rng = np.random.default_rng(0)
    for tiles in (1, 2, 5):
        rows = _real_rows(rng, tiles)
        python, compiled = _both(np.array([0, tiles], dtype=np.int64), rows)
        for a, b in zip(python, compiled):
            np.testing.assert_array_equal(a, b)


def test_python_merge_equals_the_compiled_merge_bit_for_bit_on_edge_rows():
    rng = np.random.default_rng(1)
    rows = _edge_rows(rng, 40)
    first = np.array([0, 1, 4, 4, 13, 40], dtype=np.int64)  # one tile, several, none, many
    python, compiled = _both(first, rows)
    for a, b in zip(python, compiled):
        np.testing.assert_array_equal(a, b)
