"""Numbers right at the edges of float64: sums of squares that overflow (values above ~1e154) or underflow
(below ~1e-154) are recovered exactly, on every backend, in agreement with the NumPy float64 oracle."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diffcore

BACKENDS = ["numpy", "numba-cpu"] + (["numba-cuda"] if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" else [])


def _on(backend: str, ref, test):
    ref, test = np.array(ref), np.array(test)
    if backend != "numba-cuda":
        return ref, test
    from numba import cuda

    return cuda.to_device(ref), cuda.to_device(test)


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_above_1e154_give_the_true_rel_l2_snr_and_std(backend):
    stats = diffcore.drift(*_on(backend, [1e200, 2e200], [1.1e200, 2.2e200]), backend=backend)
    assert stats.rel_l2 == pytest.approx(0.1, rel=1e-12)
    assert stats.snr_db == pytest.approx(20.0, rel=1e-12)
    assert stats.ref_std == pytest.approx(5e199, rel=1e-12) and stats.test_std == pytest.approx(5.5e199, rel=1e-12)
    assert stats.rms == pytest.approx(1e199 * math.sqrt(2.5), rel=1e-12)
    assert stats.cosine == pytest.approx(1.0, rel=1e-12) and stats.mean_abs == pytest.approx(1.5e199, rel=1e-12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_values_below_1e154_keep_their_rms_and_std(backend):
    stats = diffcore.drift(*_on(backend, [1e-200, 2e-200], [1.1e-200, 2.2e-200]), backend=backend)
    assert stats.rel_l2 == pytest.approx(0.1, rel=1e-12) and stats.snr_db == pytest.approx(20.0, rel=1e-12)
    assert stats.rms == pytest.approx(1e-201 * math.sqrt(2.5), rel=1e-12)
    assert stats.ref_std == pytest.approx(5e-201, rel=1e-12)


def test_a_difference_that_itself_overflows_gives_the_true_rel_l2():
    stats = diffcore.drift(np.array([-1.5e308, 1.5e308]), np.array([1.5e308, -1.5e308]))
    assert stats.rel_l2 == pytest.approx(2.0) and stats.cosine == -1.0
    assert stats.ref_std == pytest.approx(1.5e308) and stats.ref_mean == 0.0


def test_ordinary_values_take_the_single_pass_bit_for_bit():
    a = np.random.default_rng(1).standard_normal(5000)
    b = a + 1e-3 * np.random.default_rng(2).standard_normal(5000)
    stats = diffcore.drift(a, b, backend="numpy")
    d = b - a
    assert stats.rel_l2 == math.sqrt(float(np.sum(d * d))) / math.sqrt(float(np.sum(a * a))) or \
        stats.rel_l2 == pytest.approx(math.sqrt(np.sum(d * d)) / math.sqrt(np.sum(a * a)), rel=1e-13)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
       st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
       st.sampled_from([-700, -560, 560, 700, 1000]))
def test_scaling_by_a_power_of_two_leaves_every_scale_free_statistic_unchanged(ref, test, exponent):
    n = min(len(ref), len(test))
    r, t = np.array(ref[:n]), np.array(test[:n])
    r2, t2 = np.ldexp(r, exponent), np.ldexp(t, exponent)
    exact = all(np.array_equal(np.ldexp(np.ldexp(x, exponent), -exponent), x) and
                np.all((x == 0) | (np.abs(np.ldexp(x, exponent)) >= 2.0 ** -1022)) for x in (r, t))
    if not exact:
        return  # the scaled inputs themselves differ (subnormal or zero): nothing to compare
    base = diffcore.drift(r, t, backend="numpy")
    for backend in ("numpy", "numba-cpu"):
        big = diffcore.drift(r2, t2, backend=backend)
        for name in ("rel_l2", "cosine", "snr_db"):
            want, got = getattr(base, name), getattr(big, name)
            if math.isinf(want) or want == 0.0:
                continue  # exact zeros scaled below the subnormal range legitimately change these
            assert got == pytest.approx(want, rel=1e-9, abs=1e-9), (name, backend, exponent)
        if base.rms > 0 and exponent > 0:
            assert big.rms == pytest.approx(math.ldexp(base.rms, exponent), rel=1e-9)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tiny_differences_between_huge_values_keep_their_rms_and_snr(backend):
    stats = diffcore.drift(*_on(backend, [1e300, 1e-300, 1.0], [1e300, 2e-300, 1.0]), backend=backend)
    assert stats.rms == pytest.approx(1e-300 / math.sqrt(3), rel=1e-12)
    assert stats.mean_abs == pytest.approx(1e-300 / 3, rel=1e-12)
    assert stats.snr_db == pytest.approx(12000.0, rel=1e-12) and stats.rel_l2 == 0.0  # 1e-600: below float64
