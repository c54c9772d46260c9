"""The CuPy backend's CUDA C (kernels/drift.cuh, kernels/drift.cu) against the NumPy oracle.

Three tiers:
- host: drift.cuh built with g++ into a small library (cuda_host_harness.cpp) and run on the CPU through
  ctypes: the per-element semantics, the merge, and the kernels' per-thread tile walk (vector groups,
  scalar tails, strides) over a work table packed by cupy_backend.pack_table with host pointers;
- nvcc: drift.cu (as NVRTC receives it) compiles for sm_90 to float64-only, FMA-free code;
- gpu: the backend itself on a real GPU (skipped with the backend's own reason elsewhere).
"""
from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from diffcore.arrays import Operand
from diffcore.backends import cupy_backend as cb
from diffcore.backends.base import PairJob, plan_tiles
from diffcore.errors import DiffcoreError
from diffcore.stats import layout as L
from diffcore.stats import params as P
from diffcore.stats.formats import FORMATS
from diffcore.stats.oracle import hist_bins, oracle_state
from diffcore.stats.params import StatParams
from diffcore.stats.tolerance import resolve_tolerance
from tests.conformance.cases import EDGE_SIZES
from tests.conformance import cases
from tests.helpers import assert_state_matches

ROOT = Path(__file__).resolve().parents[2]
HARNESS_SOURCE = Path(__file__).with_name("cuda_host_harness.cpp")
STORAGE = {"float64": "float64", "float32": "float32", "float16": "f16bits", "bfloat16": "bf16bits"}
DTYPE_PAIRS = [("float32", "float32"), ("float64", "float64"), ("float32", "float16"),
               ("float16", "float16"), ("bfloat16", "bfloat16"), ("float64", "bfloat16"),
               ("float16", "float32")]
I64P = ctypes.POINTER(ctypes.c_int64)


# ---- building and calling the host harness -------------------------------------------------------------
@pytest.fixture(scope="session")
def harness(tmp_path_factory):
    """drift.cuh + cuda_host_harness.cpp as a shared library (skipped where g++ is missing)."""
    gxx = shutil.which("g++")
    if gxx is None:
        pytest.skip("g++ is not installed: the CUDA C host harness cannot be built")
    lib = tmp_path_factory.mktemp("cuda_harness") / "libdrift_harness.so"
    cmd = [gxx, "-std=c++17", "-O2", "-ffp-contract=off", "-Wall", "-Werror", "-shared", "-fPIC",
           f"-I{ROOT / 'kernels'}", str(HARNESS_SOURCE), "-o", str(lib)]
    built = subprocess.run(cmd, capture_output=True, text=True)
    assert built.returncode == 0, f"g++ failed:\n{built.stderr}"
    h = ctypes.CDLL(str(lib))
    p = ctypes.c_void_p
    i64, i32 = ctypes.c_int64, ctypes.c_int
    h.dc_constants.argtypes, h.dc_constants.restype = [I64P, i32], i32
    h.dc_decode.argtypes, h.dc_decode.restype = [i32, ctypes.c_uint64], ctypes.c_double
    h.dc_hist_bin.argtypes, h.dc_hist_bin.restype = [ctypes.c_double], i32
    h.dc_accumulate.argtypes = [p, i32, i64, p, i32, i64, i64, i64, i64, i64, p, p, p, p]
    h.dc_merge.argtypes = [p, p, p, p]
    h.dc_identity.argtypes = [p, p]
    h.dc_run_table.argtypes = [p, i32, p, p]
    h.dc_tile_vectorised.argtypes, h.dc_tile_vectorised.restype = [p, i64], i32
    return h


def _ptr(arr: np.ndarray) -> int:
    return arr.ctypes.data


def params_for(test_dtype: str) -> StatParams:
    fmt = FORMATS[test_dtype]
    return StatParams(resolve_tolerance(None, None, fmt), fmt)


def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """Round float64 -> float32 -> bfloat16 (nearest even) as uint16 patterns, without ml_dtypes."""
    with np.errstate(over="ignore", invalid="ignore"):
        bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    rounded[nan] = np.where(np.signbit(values[nan]), 0xFFC0, 0x7FC0)
    return rounded


def store(values: np.ndarray, dtype: str):
    """(storage array as the kernels read it, the exact float64 values it holds) for float64 ``values``."""
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "float16":
            bits = values.astype(np.float16).view(np.uint16)
            return bits, bits.view(np.float16).astype(np.float64)
        if dtype == "bfloat16":
            bits = _bf16_bits(values)
            return bits, (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        arr = values.astype(dtype)
        return arr, arr.astype(np.float64)


def code_of(dtype: str) -> int:
    return cb.STORAGE_CODES[STORAGE[dtype]]


def view_of(arr: np.ndarray, dtype: str) -> cb.DeviceView:
    stride = arr.strides[0] // arr.itemsize if arr.size else 1
    return cb.DeviceView(_ptr(arr), stride, code_of(dtype))


def accumulate(h, ref, rdt, test, tdt, params, start=0, stop=None, step=1, base=0):
    """The harness's accumulate_range over storage arrays ``ref``/``test``: an (I, F, H) state."""
    stop = ref.size if stop is None else stop
    out_i, out_f, out_h = (np.ascontiguousarray(x[0]) for x in L.empty_rows(1))
    pvec = params.vector()
    rv, tv = view_of(ref, rdt), view_of(test, tdt)
    h.dc_accumulate(rv.ptr, rv.code, rv.stride, tv.ptr, tv.code, tv.stride, start, stop, step, base,
                    _ptr(pvec), _ptr(out_i), _ptr(out_f), _ptr(out_h))
    return out_i, out_f, out_h


def oracle(ref_values, test_values, params, index_offset=0):
    i, f, h = oracle_state(ref_values, test_values, params, index_offset)
    return i[0], f[0], h[0]


def scale_of(*arrays) -> float:
    """Magnitude of the data for the absolute floor of sum comparisons (n * max|x|^2)."""
    finite = np.concatenate([a[np.isfinite(a)] for a in arrays] + [np.zeros(1)])
    return max(1.0, float(np.max(np.abs(finite))) ** 2 * max(1, finite.size))


def values_for(size: int, flavour: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return cases.base_values(size, flavour, np.random.default_rng([seed, size]))


# ---- host tier: constants and decoding -------------------------------------------------------------------
def test_cuda_constants_equal_the_python_layout(harness):
    got = (ctypes.c_int64 * 128)()
    n = harness.dc_constants(got, 128)
    want = [L.NI, L.NF, L.NB, P.NP, L.NO_INDEX, L.HIST_EMIN, L.HIST_EMAX, L.HIST_SUB_BITS,
            *(getattr(L, name) for name in ("I_N", "I_NF", "I_NAN_R", "I_NAN_T", "I_NAN_BOTH", "I_INF_R",
                                            "I_INF_T", "I_INF_BOTH", "I_MISMATCH", "I_FIRST_NAN_R",
                                            "I_FIRST_NAN_T", "I_FIRST_INF_R", "I_FIRST_INF_T", "I_ARGMAX",
                                            "I_OVERFLOW", "I_UNDERFLOW", "I_NR", "I_NT")),
            *range(L.NF),  # F_* are 0..NF-1 in order (checked by name below)
            P.P_ATOL, P.P_RTOL, P.P_REL_FLOOR, P.P_PRECISION, P.P_EMIN, P.P_EMAX, P.P_OVERFLOW, P.P_UNDERFLOW,
            *(cb.STORAGE_CODES[s] for s in ("float64", "float32", "f16bits", "bf16bits")),
            cb.HEADER_W, cb.PAIR_W, cb.TILE_W, cb.ROW_W, cb.OUT_W, cb.PR_PTR_R, cb.PR_PTR_T, cb.PR_STRIDE_R,
            cb.PR_STRIDE_T, cb.PR_CODE_R, cb.PR_CODE_T, cb.PR_FIRST, cb.PR_END, cb.PR_PARAMS, 0, 1, 2]
    f_names = ("F_MAX_ABS", "F_SUM_ABS", "F_SUM_D2", "F_SUM_R2", "F_SUM_T2", "F_SUM_RT", "F_MAX_REL",
               "F_SUM_REL", "F_MAX_ULP", "F_SUM_ULP", "F_R_MIN", "F_R_MAX", "F_R_MEAN", "F_R_M2", "F_T_MIN",
               "F_T_MAX", "F_T_MEAN", "F_T_M2")
    assert [getattr(L, name) for name in f_names] == list(range(L.NF))
    assert list(got[:n]) == want


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_every_16bit_pattern_decodes_exactly(harness, dtype):
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    with np.errstate(invalid="ignore"):
        want = (bits.view(np.float16).astype(np.float64) if dtype == "float16"
                else (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64))
    code = code_of(dtype)
    got = np.array([harness.dc_decode(code, int(b)) for b in bits])
    np.testing.assert_array_equal(got, want)  # NaN == NaN here; signed zeros compared next
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_float32_patterns_decode_exactly_including_subnormals(harness):
    rng = np.random.default_rng(3)
    bits = np.concatenate([rng.integers(0, 1 << 32, 20000, dtype=np.uint64).astype(np.uint32),
                           np.array([0, 1, 0x007FFFFF, 0x00800000, 0x7F7FFFFF, 0x7F800000, 0x7FC00000,
                                     0x80000000, 0x80000001, 0xFF800000], dtype=np.uint32)])
    with np.errstate(invalid="ignore"):
        want = bits.view(np.float32).astype(np.float64)
    got = np.array([harness.dc_decode(code_of("float32"), int(b)) for b in bits])
    np.testing.assert_array_equal(got, want)
    assert np.array_equal(np.signbit(got), np.signbit(want))


def test_histogram_bins_equal_layout_and_oracle(harness):
    edges = [0.0, 5e-324, 2.0 ** -64 * 0.999, 2.0 ** -64, 2.0 ** -63 * 1.1, 1.0, 1.124, 1.125, 3.0,
             2.0 ** 63 * 1.99, 2.0 ** 64, 1e300, np.inf]
    values = np.abs(np.concatenate([edges, np.random.default_rng(1).standard_normal(2000) * 1e3]))
    got = [harness.dc_hist_bin(float(v)) for v in values]
    bits = values.view(np.int64)
    assert got == [L.hist_bin_from_bits(float(v), int(b)) for v, b in zip(values, bits)]
    assert got == hist_bins(values).tolist()


# ---- host tier: the per-element semantics ---------------------------------------------------------------
@pytest.mark.parametrize("size", EDGE_SIZES)
@pytest.mark.parametrize("pair", DTYPE_PAIRS, ids="-".join)
@pytest.mark.parametrize("flavour", ["random", "specials", "zeros"])
def test_accumulate_matches_oracle(harness, size, pair, flavour):
    ref_values, test_values = values_for(size, flavour)
    ref, rvals = store(ref_values, pair[0])
    test, tvals = store(test_values, pair[1])
    params = params_for(pair[1])
    got = accumulate(harness, ref, pair[0], test, pair[1], params)
    assert_state_matches(got, oracle(rvals, tvals, params), rel=1e-12, scale=scale_of(rvals, tvals))


@pytest.mark.parametrize("pair", [("float32", "float32"), ("float64", "float64"), ("float16", "float16")],
                         ids="-".join)
def test_nan_and_inf_on_either_side_and_both(harness, pair):
    nan, inf = np.nan, np.inf
    ref_values = np.array([nan, 1.0, nan, inf, inf, -inf, 2.0, inf, nan, -inf, 0.0, 3.0])
    test_values = np.array([1.0, nan, nan, inf, -inf, -inf, inf, nan, -inf, 7.0, -inf, 3.5])
    ref, rvals = store(ref_values, pair[0])
    test, tvals = store(test_values, pair[1])
    params = params_for(pair[1])
    got_i, got_f, got_h = accumulate(harness, ref, pair[0], test, pair[1], params)
    assert_state_matches((got_i, got_f, got_h), oracle(rvals, tvals, params), rel=1e-12)
    assert got_i[L.I_NAN_BOTH] == 1 and got_i[L.I_INF_BOTH] == 2  # (nan, nan); (inf, inf), (-inf, -inf)
    assert got_i[L.I_NF] == 1 and got_i[L.I_MISMATCH] == 8 + 1  # 8 unmatched non-finite + |3.5 - 3| > tol
    assert (got_i[L.I_FIRST_NAN_R], got_i[L.I_FIRST_NAN_T], got_i[L.I_FIRST_INF_R], got_i[L.I_FIRST_INF_T]) \
        == (0, 1, 3, 3)


def test_all_zeros_and_zero_reference(harness):
    params = params_for("float32")
    for ref_values, test_values in [(np.zeros(129), np.zeros(129)), (np.zeros(33), np.full(33, 1e-3)),
                                    (np.r_[0.0, -0.0, 0.0], np.r_[-0.0, 0.0, 1e-30])]:
        ref, rvals = store(ref_values, "float32")
        test, tvals = store(test_values, "float32")
        got = accumulate(harness, ref, "float32", test, "float32", params)
        assert_state_matches(got, oracle(rvals, tvals, params), rel=1e-12)
        assert np.isfinite(got[1][L.F_MAX_REL])  # the rel floor keeps r == 0 finite


def test_float16_extremes_and_headroom(harness):
    # A float32 reference measured in float16: 65504 is the largest finite, 65520 rounds to inf, 2**-24 the
    # smallest subnormal, 2**-25 rounds to 0 (ties to even), and a float32 subnormal underflows.
    ref_values = np.array([65504.0, -65504.0, 65519.0, 65520.0, 7e4, -1e5, 2.0 ** -24, 2.0 ** -25,
                           2.0 ** -26, 2.0 ** -14, 1e-45, 0.0, 6.0e-8, 2.9e-8])
    test_values = np.array([65504.0, -65504.0, 65504.0, np.inf, np.inf, -np.inf, 2.0 ** -24, 0.0, 0.0,
                            2.0 ** -14, 0.0, 0.0, 2.0 ** -24, 0.0])
    ref, rvals = store(ref_values, "float32")
    test, tvals = store(test_values, "float16")
    params = params_for("float16")
    got = accumulate(harness, ref, "float32", test, "float16", params)
    assert_state_matches(got, oracle(rvals, tvals, params), rel=1e-12, scale=scale_of(rvals, tvals))
    assert got[0][L.I_OVERFLOW] == 3 and got[0][L.I_UNDERFLOW] == 4


def test_bfloat16_bit_patterns_including_specials(harness):
    rng = np.random.default_rng(5)
    ref = rng.integers(0, 1 << 16, 1025, dtype=np.uint32).astype(np.uint16)
    test = ref.copy()
    test[::7] ^= 0x0001  # one bf16 ULP apart
    test[::11] = rng.integers(0, 1 << 16, test[::11].size, dtype=np.uint32).astype(np.uint16)
    ref[:6] = [0x7F80, 0xFF80, 0x7FC0, 0x0001, 0x8001, 0x0000]  # +inf, -inf, NaN, subnormals, zero
    with np.errstate(invalid="ignore"):
        rvals = (ref.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        tvals = (test.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    params = params_for("bfloat16")
    got = accumulate(harness, ref, "bfloat16", test, "bfloat16", params)
    assert_state_matches(got, oracle(rvals, tvals, params), rel=1e-12, scale=scale_of(rvals, tvals))


@pytest.mark.parametrize("pair", [("float32", "float16"), ("float64", "float64")], ids="-".join)
def test_split_and_merge_equals_whole(harness, pair):
    ref_values, test_values = values_for(1025, "specials", seed=9)
    ref, rvals = store(ref_values, pair[0])
    test, tvals = store(test_values, pair[1])
    params = params_for(pair[1])
    merged_i, merged_f, merged_h = (np.ascontiguousarray(x[0]) for x in L.empty_rows(1))
    harness.dc_identity(_ptr(merged_i), _ptr(merged_f))
    cuts = [0, 1, 16, 17, 500, 1024, 1025]
    for lo, hi in zip(cuts, cuts[1:]):
        part_i, part_f, part_h = accumulate(harness, ref, pair[0], test, pair[1], params, lo, hi)
        harness.dc_merge(_ptr(merged_i), _ptr(merged_f), _ptr(part_i), _ptr(part_f))
        merged_h += part_h
    want = oracle(rvals, tvals, params)
    assert_state_matches((merged_i, merged_f, merged_h), want, rel=1e-12, scale=scale_of(rvals, tvals))
    # interleaved shares (one thread's grid-stride view) merge to the whole too
    for start in range(3):
        part = accumulate(harness, ref, pair[0], test, pair[1], params, start, ref.size, 3)
        if start == 0:
            merged = [np.ascontiguousarray(x) for x in part]
        else:
            harness.dc_merge(_ptr(merged[0]), _ptr(merged[1]), _ptr(part[0]), _ptr(part[1]))
            merged[2] += part[2]
    assert_state_matches(merged, want, rel=1e-12, scale=scale_of(rvals, tvals))


@pytest.mark.parametrize("pair", [("float32", "float16"), ("float64", "float64")], ids="-".join)
def test_accumulate_equals_numba_cpu_bit_for_bit(harness, pair):
    """One sequential pass is the numba-cpu pass line for line: every field identical, bit for bit."""
    from diffcore.backends.numba_cpu import NumbaCpuBackend

    ref_values, test_values = values_for(1025, "specials", seed=4)
    ref, _ = store(ref_values, pair[0])
    test, _ = store(test_values, pair[1])
    params = params_for(pair[1])
    job = PairJob(Operand(ref, ref.shape, pair[0], STORAGE[pair[0]], "cpu", "numpy"),
                  Operand(test, test.shape, pair[1], STORAGE[pair[1]], "cpu", "numpy"), params)
    want_i, want_f, want_h = NumbaCpuBackend().reduce([job])[0]
    got_i, got_f, got_h = accumulate(harness, ref, pair[0], test, pair[1], params)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_h, want_h)
    np.testing.assert_array_equal(got_f.view(np.int64), want_f.view(np.int64))


# ---- host tier: the kernels' tile walk over a packed work table -------------------------------------------
def _table_case(specs, tile):
    """Storage arrays (the caller keeps them alive while the table's raw pointers are read), the packed
    table, its tiles and the oracle states for ``specs`` = [(size, pair, flavour, layouts)]."""
    keep, refs, tests, params, wants = [], [], [], [], []
    for k, (size, pair, flavour, layouts) in enumerate(specs):
        ref_values, test_values = values_for(size, flavour, seed=k)
        ref, rvals = _laid_out(ref_values, pair[0], layouts[0])
        test, tvals = _laid_out(test_values, pair[1], layouts[1])
        keep += [ref, test]
        refs.append(view_of(ref, pair[0]))
        tests.append(view_of(test, pair[1]))
        params.append(params_for(pair[1]))
        wants.append((oracle(rvals, tvals, params[-1]), scale_of(rvals, tvals)))
    sizes = [s[0] for s in specs]
    work = plan_tiles(sizes, tile)
    table = cb.pack_table(refs, tests, np.stack([p.vector() for p in params]), work)
    return keep, table, work, wants


def _laid_out(values, dtype, layout):
    """``values`` stored contiguously, misaligned by one element, every other element, or backwards."""
    if layout == "contiguous":
        return store(values, dtype)
    wide = np.repeat(values, 2) if layout == "strided" else np.r_[0.0, values]
    arr, decoded = store(wide, dtype)
    if layout == "strided":
        return arr[::2], decoded[::2]
    if layout == "misaligned":
        return arr[1:], decoded[1:]
    arr, decoded = store(values[::-1].copy(), dtype)  # "reversed": a negative stride over the same values
    return arr[::-1], decoded[::-1]


def run_table(h, table, work, n_pairs, nthreads):
    partials = np.zeros(max(work.count, 1) * cb.ROW_W, dtype=np.int64)
    out = np.zeros(n_pairs * cb.OUT_W, dtype=np.int64)
    h.dc_run_table(_ptr(table), nthreads, _ptr(partials), _ptr(out))
    return cb.unpack_output(out, n_pairs)


# (size, dtype pair, flavour, layout of ref and test); one layout names both sides
TABLE_SPECS = [(size, pair, flavour, layout if isinstance(layout, tuple) else (layout, layout))
               for size, pair, flavour, layout in [
                   (0, ("float32", "float32"), "random", "contiguous"),
                   (1, ("float32", "float16"), "specials", "contiguous"),
                   (15, ("float16", "float16"), "random", "contiguous"),
                   (17, ("float64", "bfloat16"), "zeros", "contiguous"),
                   (129, ("bfloat16", "bfloat16"), "specials", "contiguous"),
                   (1023, ("float32", "float16"), "random", "misaligned"),
                   (1025, ("float64", "float64"), "specials", "strided"),
                   (1024, ("float32", "float32"), "zeros", "reversed"),
                   (5000, ("float32", "bfloat16"), "random", "contiguous"),
                   (4099, ("float16", "float32"), "specials", "contiguous"),
                   (777, ("float32", "float16"), "random", ("contiguous", "strided")),
                   (640, ("float32", "float32"), "specials", ("misaligned", "contiguous")),
                   (1029, ("float64", "float16"), "random", ("contiguous", "misaligned")),
               ]]


@pytest.mark.parametrize("nthreads", [32, 256])
def test_kernel_tile_walk_matches_oracle(harness, nthreads):
    keep, table, work, wants = _table_case(TABLE_SPECS, tile=512)
    states = run_table(harness, table, work, len(TABLE_SPECS), nthreads)
    for spec, got, (want, scale) in zip(TABLE_SPECS, states, wants):
        assert_state_matches(got, want, rel=1e-12, scale=scale), spec


def test_vector_path_is_taken_exactly_for_aligned_unit_stride_tiles(harness):
    keep, table, work, _ = _table_case(TABLE_SPECS, tile=512)
    vectorised = {int(work.pair[t]) for t in range(work.count) if harness.dc_tile_vectorised(_ptr(table), t)}
    contiguous = {k for k, spec in enumerate(TABLE_SPECS) if spec[3] == ("contiguous",) * 2 and spec[0] > 0}
    assert vectorised == contiguous


def test_many_pairs_in_one_table_equal_one_by_one_bitwise(harness):
    keep, table, work, _ = _table_case(TABLE_SPECS, tile=512)
    many = run_table(harness, table, work, len(TABLE_SPECS), 64)
    for k, spec in enumerate(TABLE_SPECS):
        arrays, table1, work1 = _table_case_at(spec, seed=k, tile=512)  # the same data, alone (arrays: kept
        # alive while the table's raw pointers are read)
        one = run_table(harness, table1, work1, 1, 64)[0]
        for got, want in zip(many[k], one):
            np.testing.assert_array_equal(np.asarray(got).view(np.int64), np.asarray(want).view(np.int64))


def _table_case_at(spec, seed, tile):
    size, pair, flavour, layouts = spec
    ref_values, test_values = values_for(size, flavour, seed=seed)
    ref, _ = _laid_out(ref_values, pair[0], layouts[0])
    test, _ = _laid_out(test_values, pair[1], layouts[1])
    work = plan_tiles([size], tile)
    params = params_for(pair[1]).vector()[None, :]
    table = cb.pack_table([view_of(ref, pair[0])], [view_of(test, pair[1])], params, work)
    return (ref, test), table, work


# ---- host tier: the Python side of the backend ------------------------------------------------------------
def test_kernel_source_is_drift_cu_with_the_header_inlined():
    source = cb.kernel_source()
    assert '#include "drift.cuh"' not in source and "#pragma once" not in source
    assert 'extern "C" __global__' in source and "drift_tiles" in source and "drift_finish" in source
    assert "merge_into" in source  # from drift.cuh


def test_tile_sizes_depend_on_each_pair_alone():
    sizes = np.array([0, 1, 10_000, 1 << 24, 1 << 40])
    tiles = cb.tile_sizes(sizes, blocks=264)
    assert np.all(tiles % cb.TILE_ALIGN == 0)
    assert np.all((tiles >= cb.MIN_TILE) & (tiles <= cb.MAX_TILE))
    assert tiles[0] == tiles[1] == tiles[2] == cb.MIN_TILE and tiles[4] == cb.MAX_TILE
    per_block = -(-(1 << 24) // (264 * cb.TILES_PER_BLOCK))
    assert tiles[3] == -(-per_block // cb.TILE_ALIGN) * cb.TILE_ALIGN  # ~TILES_PER_BLOCK tiles per block
    np.testing.assert_array_equal(cb.tile_sizes(sizes[2:3], 264), tiles[2:3])


def test_pack_table_layout():
    refs = [cb.DeviceView(1 << 40, 1, 1), cb.DeviceView(2**63 + 16, -2, 2)]
    tests = [cb.DeviceView(16, 3, 0), cb.DeviceView(32, 1, 3)]
    params = np.arange(2 * P.NP, dtype=np.float64).reshape(2, P.NP) + 0.5
    work = plan_tiles([5, 0], 2)
    table = cb.pack_table(refs, tests, params, work)
    assert table[:2].tolist() == [2, 3]
    pairs = table[cb.HEADER_W:cb.HEADER_W + 2 * cb.PAIR_W].reshape(2, cb.PAIR_W)
    assert pairs[0, :cb.PR_PARAMS].tolist() == [1 << 40, 16, 1, 3, 1, 0, 0, 3]
    assert pairs[1, cb.PR_PTR_R].view(np.uint64) == 2**63 + 16 and pairs[1, cb.PR_FIRST] == 3
    np.testing.assert_array_equal(pairs[:, cb.PR_PARAMS:].view(np.float64), params)
    assert table[cb.HEADER_W + 2 * cb.PAIR_W:].reshape(3, 3).tolist() == [[0, 0, 2], [0, 2, 4], [0, 4, 5]]


def test_availability_never_raises_and_says_why(monkeypatch):
    ok, reason = cb.CupyBackend().availability()
    assert isinstance(ok, bool) and reason
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` fail: "not installed"
    ok, reason = cb.CupyBackend().availability()
    assert not ok and re.search(r"cupy is not installed .*pip install 'diffcore\[gpu\]'", reason)


def test_availability_reports_a_missing_driver(monkeypatch):
    def no_driver():
        raise RuntimeError("cudaErrorInsufficientDriver: CUDA driver version is insufficient")

    runtime = types.SimpleNamespace(getDeviceCount=no_driver)
    fake = types.SimpleNamespace(__version__="13.0.0", cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    ok, reason = cb.CupyBackend().availability()
    assert not ok and re.search(r"cupy 13\.0\.0 is installed but no CUDA device is usable .*driver", reason)


def test_reduce_rejects_host_data_before_touching_cupy():
    ref = np.zeros(4, np.float32)
    job = PairJob(Operand(ref, (4,), "float32", "float32", "cpu", "numpy"),
                  Operand(ref, (4,), "float32", "float32", "cpu", "numpy"), params_for("float32"))
    with pytest.raises(DiffcoreError, match=r"reads GPU data, but an operand lives on cpu"):
        cb.CupyBackend().reduce([job])
    assert cb.CupyBackend().reduce([]) == []


# ---- nvcc tier -------------------------------------------------------------------------------------------
def _nvcc():
    found = shutil.which("nvcc")
    if found is None and Path("/usr/local/cuda/bin/nvcc").exists():
        found = "/usr/local/cuda/bin/nvcc"
    if found is None:
        pytest.skip("nvcc is not installed: drift.cu cannot be compiled here")
    return found


def test_drift_cu_compiles_for_sm90_to_float64_code_without_fma(tmp_path):
    nvcc = _nvcc()
    source = tmp_path / "drift_nvrtc.cu"
    source.write_text(cb.kernel_source())  # exactly what NVRTC compiles at run time
    ptx, cubin = tmp_path / "drift.ptx", tmp_path / "drift.cubin"
    # -ftz=true as CuPy always adds it; the code must not depend on it
    flags = ["-arch=sm_90", *cb.COMPILE_OPTIONS, "-ftz=true"]
    built = subprocess.run([nvcc, *flags, "-ptx", str(source), "-o", str(ptx)], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    text = ptx.read_text()
    assert ".entry drift_tiles" in text and ".entry drift_finish" in text
    assert not re.search(r"\bfma\.", text), "FMA contraction must be off (--fmad=false)"
    assert not re.search(r"\.f32\b", text), "no float32 arithmetic: storage is decoded with integer ops"
    assert "ld.global.nc.v4.u32" in text, "128-bit vector loads"
    ptxas = Path(nvcc).with_name("ptxas")
    if ptxas.exists():
        assembled = subprocess.run([str(ptxas), "-arch=sm_90", str(ptx), "-o", str(cubin)],
                                   capture_output=True, text=True)
        assert assembled.returncode == 0, assembled.stderr


def test_nvrtc_compiles_the_shipped_source_with_cupys_options():
    """Where CuPy can load NVRTC (no GPU needed), compile exactly what RawModule compiles."""
    pytest.importorskip("cupy")
    try:
        from cupy_backends.cuda.libs import nvrtc

        nvrtc.getVersion()
    except Exception as exc:
        pytest.skip(f"CuPy cannot load NVRTC here: {exc}")
    prog = nvrtc.createProgram(cb.kernel_source(), "drift.cu", [], [])
    options = [*cb.COMPILE_OPTIONS, "-ftz=true", "--gpu-architecture=compute_90"]  # CuPy adds -ftz=true
    try:
        nvrtc.compileProgram(prog, options)
    except Exception as exc:
        pytest.fail(f"NVRTC rejected drift.cu: {exc}\n{nvrtc.getProgramLog(prog)}")
    ptx = nvrtc.getPTX(prog)
    ptx = ptx.decode() if isinstance(ptx, bytes) else ptx
    assert ".entry drift_tiles" in ptx and not re.search(r"\bfma\.|\.f32\b", ptx)


# ---- gpu tier --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_backend():
    backend = cb.CupyBackend()
    ok, reason = backend.availability()
    if not ok:
        pytest.skip(f"cupy backend unavailable: {reason}")
    return backend


def _torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    return torch


def _gpu_job(ref, test):
    from diffcore.arrays import as_operand

    ref_op, test_op = as_operand(ref, "ref"), as_operand(test, "test")
    fmt = test_op.format
    return PairJob(ref_op, test_op, StatParams(resolve_tolerance(None, None, fmt), fmt))


def _torch_pair(torch, size, pair, flavour, seed=0):
    ref_values, test_values = values_for(size, flavour, seed)
    ref = torch.from_numpy(ref_values).to(getattr(torch, pair[0])).cuda()
    test = torch.from_numpy(test_values).to(getattr(torch, pair[1])).cuda()
    return ref, test


def _host_values(tensor):
    return tensor.detach().double().cpu().numpy().reshape(-1)


def _check_gpu(backend, ref, test, rel=1e-12):
    job = _gpu_job(ref, test)
    got = backend.reduce([job])[0]
    rvals, tvals = _host_values(ref), _host_values(test)
    assert_state_matches(got, oracle(rvals, tvals, job.params), rel=rel, scale=scale_of(rvals, tvals))
    return got


@pytest.mark.gpu
@pytest.mark.parametrize("size", EDGE_SIZES + ((1 << 20) + 3,))
@pytest.mark.parametrize("pair", DTYPE_PAIRS, ids="-".join)
@pytest.mark.parametrize("flavour", ["random", "specials"])
def test_gpu_matches_oracle(gpu_backend, size, pair, flavour):
    torch = _torch_cuda()
    _check_gpu(gpu_backend, *_torch_pair(torch, size, pair, flavour))


@pytest.mark.gpu
def test_gpu_non_contiguous_torch_inputs(gpu_backend):
    torch = _torch_cuda()
    ref, test = _torch_pair(torch, 4099, ("float32", "float16"), "specials")
    _check_gpu(gpu_backend, ref[::2], test[::2])             # a 1-D stride of 2
    _check_gpu(gpu_backend, ref[1:], test[1:])               # misaligned: the scalar path
    _check_gpu(gpu_backend, ref[1:], test[:-1])              # only one side misaligned
    wide_r, wide_t = ref[:4096].reshape(64, 64), test[:4096].reshape(64, 64)
    _check_gpu(gpu_backend, wide_r.T, wide_t.T)              # transposed (flattened by a copy on device)
    _check_gpu(gpu_backend, wide_r[:, 3], wide_t[:, 3])      # a column: stride 64


@pytest.mark.gpu
def test_gpu_cupy_inputs_including_negative_strides(gpu_backend):
    cupy = pytest.importorskip("cupy")
    ref_values, test_values = values_for(1025, "specials")
    ref, test = cupy.asarray(ref_values.astype(np.float32)), cupy.asarray(test_values.astype(np.float16))
    for r, t in [(ref, test), (ref[::-1], test[::-1]), (ref[::3], test[::3])]:
        job = _gpu_job(r, t)
        got = gpu_backend.reduce([job])[0]
        rvals, tvals = cupy.asnumpy(r).astype(np.float64), cupy.asnumpy(t).astype(np.float64)
        assert_state_matches(got, oracle(rvals, tvals, job.params), rel=1e-12, scale=scale_of(rvals, tvals))


@pytest.mark.gpu
def test_gpu_many_pairs_in_one_call_equal_one_by_one(gpu_backend):
    torch = _torch_cuda()
    specs = [(size, pair, flavour) for size in (0, 1, 17, 129, 1025, 70_000)
             for pair in DTYPE_PAIRS[:4] for flavour in ("random", "specials")]
    pairs = [_torch_pair(torch, size, pair, flavour, seed=k) for k, (size, pair, flavour) in enumerate(specs)]
    many = gpu_backend.reduce([_gpu_job(r, t) for r, t in pairs])
    for (ref, test), got in zip(pairs, many):
        one = gpu_backend.reduce([_gpu_job(ref, test)])[0]
        for g, o in zip(got, one):
            np.testing.assert_array_equal(np.asarray(g).view(np.int64), np.asarray(o).view(np.int64))


@pytest.mark.gpu
def test_gpu_runs_after_work_queued_on_torchs_current_stream(gpu_backend):
    torch = _torch_cuda()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        ref = torch.randn(1 << 22, device="cuda")
        for _ in range(20):  # keep the side stream busy so an unordered launch would read stale data
            ref = ref * 1.0001
        test = ref.half()
        got = gpu_backend.reduce([_gpu_job(ref, test)])[0]
    side.synchronize()
    rvals, tvals = _host_values(ref), _host_values(test)
    assert_state_matches(got, oracle(rvals, tvals, params_for("float16")), rel=1e-12, scale=scale_of(rvals, tvals))
