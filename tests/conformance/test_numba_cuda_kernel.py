"""The numba-cuda kernels against the NumPy float64 oracle, at the sizes where tiles, warps and blocks split.

Under the CUDA simulator (no GPU here) the kernels run as Python threads: these tests prove semantics at
small sizes, with a launch shape of 2 blocks x 64 threads (two warps) and tiles of at least 64 elements,
so sizes around 32, 64 and 128 cross warp, tile and block boundaries. Jobs are built directly (Operand /
PairJob, as drift.py does) so float16 and bfloat16 reach the kernel as bit patterns on the device.
Tests marked ``gpu`` need a real GPU and are skipped elsewhere by tests/conftest.py.
"""
from __future__ import annotations

import numpy as np
import pytest

from diffcore.arrays import Operand
from diffcore.backends.base import PairJob
from diffcore.backends.numpy_backend import to_float64
from diffcore.stats.formats import FORMATS
from diffcore.stats.oracle import oracle_state
from diffcore.stats.params import StatParams
from diffcore.stats.tolerance import resolve_tolerance
from tests.helpers import assert_state_matches

EDGE_SIZES = (0, 1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 128, 129)
DTYPE_PAIRS = (("float32", "float32"), ("float32", "float16"), ("float16", "float16"),
               ("bfloat16", "bfloat16"), ("float32", "bfloat16"), ("float64", "float32"))
FLAVOURS = ("specials", "zeros", "f16_extremes", "ties")
SUM_REL = 1e-12  # sums differ from the oracle's only by summation order


@pytest.fixture(scope="module")
def cuda():
    """numba.cuda, skipping the module where neither a GPU nor the simulator can run the kernels."""
    from diffcore.backends.numba_cuda import NumbaCudaBackend

    ok, reason = NumbaCudaBackend().availability()
    if not ok:
        pytest.skip(f"numba-cuda unavailable: {reason}")
    from numba import cuda as numba_cuda

    return numba_cuda


@pytest.fixture(scope="module")
def backend(cuda):
    from diffcore.backends.numba_cuda import NumbaCudaBackend

    return NumbaCudaBackend()


# ---- building jobs ----------------------------------------------------------------------------------------
def _bf16_bits(values: np.ndarray) -> np.ndarray:
    """bfloat16 bit patterns of ``values``, rounded to nearest even (NaN stays a quiet NaN)."""
    bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(np.isnan(values), np.uint16(0x7FC0), rounded)


def _host_storage(values: np.ndarray, dtype: str) -> tuple[np.ndarray, str]:
    """``values`` (float64) as the flat host array a backend reads, and its storage name."""
    with np.errstate(over="ignore", invalid="ignore"):
        if dtype == "float16":
            return values.astype(np.float16).view(np.uint16), "f16bits"
        if dtype == "bfloat16":
            return _bf16_bits(values), "bf16bits"
        return values.astype(dtype), dtype


class Side:
    """One operand on the host (for the oracle) and on the device (for the kernel)."""

    def __init__(self, cuda, values: np.ndarray, dtype: str, layout: str = "contiguous"):
        stored, storage = _host_storage(values, dtype)
        if layout == "contiguous":
            host, device = stored, cuda.to_device(stored)
        elif layout == "every_third":  # a strided view into a wider device buffer
            wide = np.repeat(stored, 3)
            host, device = wide[::3], cuda.to_device(wide)[::3]
        else:  # "reversed": a negative stride
            host, device = stored[::-1].copy(), cuda.to_device(stored)[::-1]
        shape = (values.size,)
        self.host = Operand(host, shape, dtype, storage, "cpu", "numpy")
        self.device = Operand(device, shape, dtype, storage, "cuda:0", "numba")


def _params(test_dtype: str) -> StatParams:
    fmt = FORMATS[test_dtype]
    return StatParams(resolve_tolerance(None, None, fmt), fmt)


def make_job(cuda, ref, test, pair, layout="contiguous"):
    """(device job, oracle state) for float64 values ``ref``/``test`` stored as the dtypes in ``pair``."""
    r, t = Side(cuda, ref, pair[0], layout), Side(cuda, test, pair[1], layout)
    params = _params(pair[1])
    want = oracle_state(to_float64(r.host), to_float64(t.host), params)
    return PairJob(r.device, t.device, params), tuple(row[0] for row in want)


def _values(size: int, flavour: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, size, len(flavour)])
    ref = rng.standard_normal(size) * 4.0
    test = ref + rng.standard_normal(size) * 1e-3 * np.abs(ref)
    if flavour == "specials":
        _plant(ref, test, [(0, np.nan, 1.0), (size // 2, 2.0, np.nan), (size - 1, np.nan, np.nan),
                           (1, np.inf, -np.inf), (2, np.inf, np.inf), (31, -np.inf, 5.0), (33, np.nan, np.nan),
                           (size // 3, 1.0, np.inf), (64, -np.inf, -np.inf), (65, np.nan, -np.inf)])
    elif flavour == "zeros":
        ref[: size // 2] = 0.0
        test[size // 4: size // 2] = 0.0
        test[: size // 8] = -0.0
    elif flavour == "f16_extremes":  # float16 max, its overflow edge, subnormals and values that flush to 0
        ref = np.resize(np.array([65504.0, -65504.0, 65519.0, 65520.0, 7e4, 6.0e-8, 2.9e-8, 1e-9, -2.0**-24]),
                        size)
        test = ref * (1.0 + 1e-3)
    elif flavour == "ties":  # equal max |d| in different threads, warps and tiles: the smallest index wins
        ref, test = np.ones(size), np.ones(size) + 2.0 ** -10
        _plant(ref, test, [(p, 1.0, 1.5) for p in (size - 1, 100, 70, 40, size // 2, 7)])
    return ref, test


def _plant(ref, test, plan):
    for pos, r, t in plan:
        if 0 <= pos < ref.size:
            ref[pos], test[pos] = r, t


def _check_all(backend, jobs_and_wants, ids):
    got = backend.reduce([job for job, _ in jobs_and_wants])
    for case_id, state, (_, want) in zip(ids, got, jobs_and_wants):
        try:
            assert_state_matches(state, want, rel=SUM_REL)
        except AssertionError as exc:
            raise AssertionError(f"{case_id}: {exc}") from None
    return got


# ---- tests ------------------------------------------------------------------------------------------------
def test_availability_names_the_simulator(cuda):
    import numba

    from diffcore.backends.numba_cuda import NumbaCudaBackend

    ok, reason = NumbaCudaBackend().availability()
    assert ok
    assert ("CUDA simulator" in reason) == bool(numba.config.ENABLE_CUDASIM)


@pytest.mark.parametrize("pair", DTYPE_PAIRS, ids="-".join)
def test_block_edge_sizes_match_oracle(cuda, backend, pair):
    jobs = [make_job(cuda, *_values(n, "random"), pair) for n in EDGE_SIZES]
    _check_all(backend, jobs, [f"size {n}" for n in EDGE_SIZES])


@pytest.mark.parametrize("pair", DTYPE_PAIRS, ids="-".join)
def test_nan_inf_zeros_extremes_and_ties_match_oracle(cuda, backend, pair):
    cases = [(n, flavour) for flavour in FLAVOURS for n in (1, 17, 66, 129)]
    jobs = [make_job(cuda, *_values(n, flavour), pair) for n, flavour in cases]
    _check_all(backend, jobs, [f"{flavour} size {n}" for n, flavour in cases])


@pytest.mark.parametrize("pair", (("float32", "float32"), ("float16", "float16"), ("float32", "bfloat16")),
                         ids="-".join)
def test_strided_inputs_are_read_in_place(cuda, backend, pair):
    cases = [(n, flavour) for n, flavour in ((33, "random"), (129, "specials"))]
    jobs = [make_job(cuda, *_values(n, flavour), pair, layout="every_third") for n, flavour in cases]
    _check_all(backend, jobs, [f"{flavour} size {n}" for n, flavour in cases])


def test_reversed_views_are_read_in_place(cuda, backend):
    import numba

    if not numba.config.ENABLE_CUDASIM:
        pytest.skip("on a GPU a reversed Numba device array exports the lowest address of its buffer, not its "
                    "first element; negative strides reach the GPU backends from CuPy, tested there")
    jobs = [make_job(cuda, *_values(65, "specials"), ("float32", "float16"), layout="reversed")]
    _check_all(backend, jobs, ["reversed"])


def test_many_pairs_in_one_call_equal_one_by_one(cuda, backend):
    plan = [(17, ("float32", "float16"), "random"), (0, ("float32", "float32"), "random"),
            (129, ("float32", "bfloat16"), "specials"), (128, ("float64", "float64"), "zeros"),
            (33, ("float16", "float16"), "f16_extremes"), (70, ("bfloat16", "bfloat16"), "ties"),
            (65, ("float32", "float16"), "specials"), (1, ("float32", "float32"), "random")]
    jobs = [make_job(cuda, *_values(n, flavour, seed=k), pair) for k, (n, pair, flavour) in enumerate(plan)]
    together = _check_all(backend, jobs, [f"pair {k}" for k in range(len(plan))])
    for k, (job, _) in enumerate(jobs):
        alone = backend.reduce([job])[0]
        for row_together, row_alone in zip(together[k], alone):
            assert np.array_equal(row_together, row_alone, equal_nan=True), f"pair {k} differs when batched"


def test_histogram_flushes_mid_pair_keep_counts_exact(cuda):
    from diffcore.backends.numba_cuda import NumbaCudaBackend

    # One block walks all tiles of the pair and must flush its shared histogram every ~100 elements.
    backend = NumbaCudaBackend(blocks=1, min_tile=48, hist_flush_at=100)
    jobs = [make_job(cuda, *_values(n, "specials"), ("float32", "float16")) for n in (129, 200)]
    _check_all(backend, jobs, ["129", "200"])


def test_one_warp_launch_shape_matches_oracle(cuda):
    from diffcore.backends.numba_cuda import NumbaCudaBackend

    backend = NumbaCudaBackend(threads=32, blocks=3, min_tile=32)
    sizes = (31, 32, 33, 97)
    jobs = [make_job(cuda, *_values(n, "specials"), ("float16", "float16")) for n in sizes]
    _check_all(backend, jobs, [f"size {n}" for n in sizes])


def test_drift_reads_numba_device_arrays_of_every_float_dtype(cuda):
    import diffcore
    from tests.helpers import assert_stats_match

    ref, test = _values(40, "specials")
    for dtype in ("float16", "float32", "float64"):
        with np.errstate(over="ignore", invalid="ignore"):
            r, t = ref.astype(dtype), test.astype(dtype)
        got = diffcore.drift(cuda.to_device(r), cuda.to_device(t), backend="auto")
        assert got.backend == "numba-cuda"
        assert_stats_match(got, diffcore.drift(r, t, backend="numpy"))


@pytest.mark.gpu
def test_large_pairs_on_a_real_gpu_match_oracle(cuda):
    from diffcore.backends.numba_cuda import NumbaCudaBackend

    backend = NumbaCudaBackend()
    sizes = ((1 << 22) + 3, 1 << 16, 5000)
    pairs = (("float32", "float16"), ("float32", "float32"), ("bfloat16", "bfloat16"))
    jobs = [make_job(cuda, *_values(n, "specials", seed=n), pair) for n, pair in zip(sizes, pairs)]
    got = backend.reduce([job for job, _ in jobs])
    for state, (_, want) in zip(got, jobs):
        assert_state_matches(state, want, rel=1e-9, scale=float(max(sizes)))


@pytest.mark.gpu
def test_torch_cuda_tensors_are_read_in_place(cuda):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA device")
    import diffcore
    from tests.helpers import assert_stats_match

    ref, test = _values(100_003, "specials")
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        r, t = torch.from_numpy(ref).to(dtype), torch.from_numpy(test).to(dtype)
        want = diffcore.drift(r, t, backend="numpy")
        # column 0 of a two-column tensor: a strided 1-D view, read without a copy
        r_gpu, t_gpu = (torch.stack([x, x], dim=1).cuda()[:, 0] for x in (r, t))
        got = diffcore.drift(r_gpu, t_gpu, backend="numba-cuda")
        assert_stats_match(got, want)
