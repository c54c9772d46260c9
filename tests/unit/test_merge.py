"""Merging a row's statistics across samples (diffcore/dataset/merge.py): the merged row is the row of the
concatenated tensors, exactly for counts, extrema, indices and histograms, to float64 rounding for sums."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diffcore.dataset.merge import RowMerger
from diffcore.drift import drift, drift_many

EXACT = ("count", "finite_count", "max_abs", "max_abs_index", "nan_ref", "nan_test", "nan_both", "inf_ref",
         "inf_test", "inf_both", "first_nan_ref", "first_nan_test", "first_inf_ref", "first_inf_test",
         "mismatch_count", "max_ulp", "max_rel", "ref_min", "ref_max", "test_min", "test_max", "overflow_risk",
         "underflow_risk", "p50_abs", "p90_abs", "p99_abs")
SUMS = ("rel_l2", "mean_abs", "rms", "cosine", "mean_ulp", "mean_rel", "ref_mean", "ref_std")


def _merged(parts):
    merger = RowMerger()
    for ref, test in parts:
        states = []
        stats = drift_many([(ref, test)], states=states)[0]
        merger.add(states[0], stats.shape, (stats.ref_dtype, stats.test_dtype, stats.tolerance, stats.backend))
    return merger.finalize()


def _tensors(seed, rows, dtype, specials):
    rng = np.random.default_rng(seed)
    ref = rng.standard_normal((rows, 7)).astype(dtype)
    test = (ref + rng.standard_normal(ref.shape) * 1e-3).astype(dtype)
    if specials:
        test.flat[rng.integers(ref.size)] = np.nan
        ref.flat[rng.integers(ref.size)] = np.inf
    return ref, test


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**31), rows=st.integers(1, 40), cuts=st.lists(st.integers(1, 39), max_size=6),
       dtype=st.sampled_from([np.float32, np.float16]), specials=st.booleans())
def test_merged_samples_equal_the_concatenation(seed, rows, cuts, dtype, specials):
    ref, test = _tensors(seed, rows, dtype, specials)
    bounds = sorted({c for c in cuts if c < rows})
    parts = [(r, t) for r, t in zip(np.split(ref, bounds), np.split(test, bounds))]
    merged, whole = _merged(parts), drift(ref, test)
    for name in EXACT:
        assert getattr(merged, name) == getattr(whole, name) or \
            (getattr(merged, name) != getattr(merged, name) and getattr(whole, name) != getattr(whole, name)), name
    assert np.array_equal(merged.histogram.counts, whole.histogram.counts)
    for name in SUMS:
        a, b = getattr(merged, name), getattr(whole, name)
        assert a == pytest.approx(b, rel=1e-9, abs=1e-300, nan_ok=True), name


def test_the_merge_order_is_the_sample_order_whatever_the_grouping():
    ref, test = _tensors(3, 30, np.float32, True)
    one = _merged([(ref[k:k + 1], test[k:k + 1]) for k in range(30)])
    again = _merged([(ref[k:k + 1], test[k:k + 1]) for k in range(30)])
    assert repr(one.to_dict()) == repr(again.to_dict())  # bit for bit: NaN-safe through repr
