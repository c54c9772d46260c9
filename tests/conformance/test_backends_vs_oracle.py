"""Every available backend against the NumPy float64 oracle, through the public API.

Counts, indices, extremes and histograms must be equal; sums equal up to summation order (1e-9 relative).
"""
import numpy as np
import pytest

import diffcore
from tests.conformance import cases
from tests.helpers import assert_stats_match


def _size_of(arr) -> int:
    return int(np.prod(tuple(arr.shape)))


def _dtype_of(arr) -> str:
    return str(arr.dtype).replace("torch.", "")


def _check(placement, ref, test, **kw):
    if not placement.accepts(_size_of(ref), (_dtype_of(ref), _dtype_of(test))):
        pytest.skip(f"size {_size_of(ref)} / dtypes {_dtype_of(ref)}, {_dtype_of(test)}: not for the CUDA "
                    "simulator (too large, or integers, which Numba device arrays do not cast)")
    want = diffcore.drift(ref, test, backend="numpy", **kw)
    got = diffcore.drift(placement(ref), placement(test), backend=placement.name, **kw)
    assert got.backend == placement.name
    assert_stats_match(got, want)


@pytest.mark.parametrize("case_id, size, pair, flavour", list(cases.matrix_cases()), ids=lambda v: str(v))
def test_matrix_matches_oracle(placement, case_id, size, pair, flavour):
    ref, test = cases.make_case(size, pair, flavour)
    _check(placement, ref, test)


@pytest.mark.parametrize("case_id, size, pair, flavour", list(cases.large_cases()), ids=lambda v: str(v))
def test_large_pairs_match_oracle(placement, case_id, size, pair, flavour):
    ref, test = cases.make_case(size, pair, flavour)
    _check(placement, ref, test)


@pytest.mark.parametrize("case_id, ref, test", list(cases.two_d_cases()), ids=lambda v: str(v)[:20])
def test_multidimensional_and_zero_d_match_oracle(placement, case_id, ref, test):
    _check(placement, ref, test)


def test_user_tolerances_match_oracle(placement):
    ref, test = cases.make_case(129, ("float32", "float16"), "random")
    _check(placement, ref, test, atol=1e-3, rtol=1e-2)
    _check(placement, ref, test, atol=0.0, rtol=0.0)


def test_drift_many_equals_drift_pair_by_pair_bitwise(placement):
    pairs = [cases.make_case(size, pair, flavour, seed=k)
             for k, (size, pair, flavour) in enumerate([
                 (17, ("float32", "float16"), "random"), (0, ("float32", "float32"), "random"),
                 (129, ("float32", "bfloat16"), "specials"), (128, ("float64", "float32"), "zeros"),
                 (33, ("float16", "float16"), "f16_extremes"), (200, ("float32", "float32"), "strided")])]
    placed = [(placement(r), placement(t)) for r, t in pairs
              if placement.accepts(_size_of(r), (_dtype_of(r), _dtype_of(t)))]
    many = diffcore.drift_many(placed, backend=placement.name)
    for (ref, test), got in zip(placed, many):
        one = diffcore.drift(ref, test, backend=placement.name)
        assert got.to_dict() == one.to_dict()
