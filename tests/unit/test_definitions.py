"""The definitions of the statistics, pinned by hand-computed values and independent references."""
import math

import numpy as np
import pytest

import diffcore
from diffcore.stats import layout as L
from diffcore.stats.formats import FORMATS
from diffcore.stats.oracle import hist_bins

F16, BF16, F32, F64 = (FORMATS[n] for n in ("float16", "bfloat16", "float32", "float64"))


def oracle(ref, test, **kw):
    return diffcore.drift(np.asarray(ref), np.asarray(test), backend="numpy", **kw)


def test_hand_computed_pair():
    s = oracle(np.array([1.0, 2.0, 3.0], np.float32), np.array([1.0, 2.0, 4.0], np.float32))
    assert s.count == 3 and s.finite_count == 3
    assert s.max_abs == 1.0 and s.max_abs_index == (2,)
    assert s.mean_abs == pytest.approx(1 / 3)
    assert s.rms == pytest.approx(math.sqrt(1 / 3))
    assert s.rel_l2 == pytest.approx(1 / math.sqrt(14))
    assert s.cosine == pytest.approx(17 / math.sqrt(14 * 21))
    assert s.snr_db == pytest.approx(10 * math.log10(14))
    assert s.max_rel == pytest.approx(1 / 3)
    assert s.mismatch_count == 1 and s.mismatch_frac == pytest.approx(1 / 3)
    assert s.max_ulp == 2.0 ** 21  # |d| = 1 in float32 spacings at max(|3|, |4|) = 4: 2**-21
    assert (s.ref_min, s.ref_max, s.ref_mean) == (1.0, 3.0, 2.0)
    assert s.ref_std == pytest.approx(math.sqrt(2 / 3))
    assert not s.passed and not bool(s)


def test_identical_inputs_are_perfect():
    x = np.linspace(-3, 3, 101).astype(np.float32)
    s = oracle(x, x.copy())
    assert (s.max_abs, s.rel_l2, s.mismatch_count, s.max_ulp) == (0.0, 0.0, 0, 0.0)
    assert s.cosine == 1.0 and s.snr_db == math.inf and s.passed
    assert s.p99_abs == 0.0


def test_relative_error_is_finite_where_reference_is_zero():
    s = oracle(np.zeros(4, np.float32), np.full(4, 1e-3, np.float32), atol=1e-5, rtol=1e-3)
    assert math.isfinite(s.max_rel) and s.max_rel == pytest.approx(np.float32(1e-3) / 1e-5)
    assert s.rel_l2 == math.inf and s.snr_db == -math.inf and s.cosine == 0.0


def test_nan_and_inf_are_counted_not_folded_into_max_abs():
    ref = np.array([1.0, np.nan, np.inf, 4.0, np.nan, -np.inf], np.float32)
    test = np.array([1.5, 2.0, np.inf, np.nan, np.nan, np.inf], np.float32)
    s = oracle(ref, test)
    assert s.max_abs == 0.5 and s.finite_count == 1
    assert (s.nan_ref, s.nan_test, s.nan_both) == (2, 2, 1)
    assert (s.inf_ref, s.inf_test, s.inf_both) == (2, 2, 1)
    assert s.first_nan_ref == (1,) and s.first_nan_test == (3,)
    assert s.first_inf_ref == (2,) and s.first_inf_test == (2,)
    # 0: finite mismatch; 1: NaN only in ref; 3: NaN only in test; 5: opposite infinities. 2 and 4 match.
    assert s.mismatch_count == 4
    assert s.nonfinite_mismatch


def test_max_abs_ties_take_the_smallest_index():
    s = oracle(np.zeros((2, 3), np.float32), np.array([[0, 1, 0], [1, 0, 1]], np.float32))
    assert s.max_abs_index == (0, 1)


def test_empty_pair_is_defined_and_silent(recwarn):
    s = oracle(np.zeros((0, 4), np.float32), np.zeros((0, 4), np.float32))
    assert s.count == 0 and s.max_abs == 0.0 and s.max_abs_index is None
    assert s.ref_min is None and s.ref_std is None and s.mismatch_frac == 0.0
    assert s.cosine == 1.0 and s.p50_abs == 0.0
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_zero_dimensional_pair_reports_an_empty_index():
    s = oracle(np.float32(1.0), np.float32(1.5))
    assert s.shape == () and s.max_abs == 0.5 and s.max_abs_index == ()


@pytest.mark.parametrize("fmt", [F16, F32], ids=lambda f: f.name)
def test_overflow_threshold_is_where_the_cast_rounds_to_inf(fmt):
    dtype = np.dtype(fmt.name)
    below = np.nextafter(fmt.overflow_threshold, 0.0)
    with np.errstate(over="ignore"):
        assert np.isinf(np.array(fmt.overflow_threshold).astype(dtype))
    assert np.isfinite(np.array(below).astype(dtype))


@pytest.mark.parametrize("fmt", [F16, F32], ids=lambda f: f.name)
def test_underflow_threshold_is_where_the_cast_rounds_to_zero(fmt):
    dtype = np.dtype(fmt.name)
    above = np.nextafter(fmt.underflow_threshold, 1.0)
    assert np.array(fmt.underflow_threshold).astype(dtype) == 0
    assert np.array(above).astype(dtype) != 0


def test_bfloat16_thresholds_match_torch_casts_from_float32():
    # torch casts float64 -> bfloat16 through float32, so start where real activations are: float32.
    torch = pytest.importorskip("torch")
    up = np.float32(BF16.overflow_threshold)
    assert float(up) == BF16.overflow_threshold
    pair = torch.tensor(np.array([up, np.nextafter(up, np.float32(0))]))
    assert pair.to(torch.bfloat16).isinf().tolist() == [True, False]
    low = np.float32(BF16.underflow_threshold)
    pair = torch.tensor(np.array([low, np.nextafter(low, np.float32(1))]))
    assert (pair.to(torch.bfloat16) == 0).tolist() == [True, False]


def test_headroom_counts_reference_values_the_test_dtype_cannot_hold():
    ref = np.array([70000.0, 65504.0, 1e-8, 0.0, 1e-3, -1e6], np.float32)
    with np.errstate(over="ignore"):
        s = oracle(ref, ref.astype(np.float16))
    assert s.overflow_risk == 2 and s.underflow_risk == 1
    assert s.inf_test == 2 and s.mismatch_count >= 2


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_ulp_spacing_matches_numpy_spacing(dtype):
    fmt = FORMATS[dtype]
    rng = np.random.default_rng(1)
    values = np.concatenate([rng.standard_normal(200) * 10.0 ** rng.integers(-6, 4, 200),
                             [1.0, 2.0, 0.5, 1024.0]]).astype(dtype)
    values = values[np.isfinite(values) & (values != 0)]
    want = np.abs(np.spacing(np.abs(values)).astype(np.float64))
    got = np.array([fmt.ulp_spacing(float(v)) for v in values])
    assert np.array_equal(got, want)


def test_ulps_near_a_zero_reference_stay_bounded():
    ref, test = np.array([1e-30, 0.0, 5.0], np.float32), np.array([1e-7, 1e-3, 5.0], np.float32)
    s = oracle(ref, test)
    per_pair = (test.astype(np.float64) - ref) / np.spacing(np.maximum(np.abs(ref), np.abs(test)))
    assert s.max_ulp == pytest.approx(per_pair.max(), rel=1e-6)
    assert s.max_ulp <= 2.0 ** 24  # not 1e30: measured at the larger magnitude of the pair


def test_ulp_spacing_of_zero_is_the_smallest_subnormal():
    assert F16.ulp_spacing(0.0) == 2.0 ** -24 and F32.ulp_spacing(0.0) == 2.0 ** -149


SPECIAL_ABS = [0.0, 5e-324, 2.0 ** -65, 2.0 ** -64, np.nextafter(2.0 ** -64, 0), 1.0, 1.124, 1.125, 1.126,
               np.nextafter(2.0, 0), 2.0, 3.0, 2.0 ** 63, np.nextafter(2.0 ** 64, 0), 2.0 ** 64, 1e300, np.inf]


def _bits(x: float) -> int:
    return int(np.array([x], np.float64).view(np.int64)[0])


def test_histogram_bins_agree_between_bits_and_frexp():
    values = np.array(SPECIAL_ABS + list(np.random.default_rng(2).exponential(1.0, 500)))
    from_bits = [L.hist_bin_from_bits(float(v), _bits(float(v))) for v in values]
    assert from_bits == hist_bins(values).tolist()


def test_histogram_edges_bracket_each_value():
    values = np.array([v for v in SPECIAL_ABS if 0 < v < np.inf] + [0.3, 7.7, 1e-5])
    bins = hist_bins(values)
    lower, upper = L.hist_lower_edges(), L.hist_upper_edges()
    assert np.all(lower[bins] <= values) and np.all(values < upper[bins])


def test_percentiles_bound_the_nearest_rank_value_within_the_stated_resolution():
    rng = np.random.default_rng(3)
    ref = rng.standard_normal(10_000)
    test = ref + rng.standard_normal(10_000) * 1e-3
    s = oracle(ref, test)
    ad = np.sort(np.abs(test - ref))
    for q, got in ((0.5, s.p50_abs), (0.9, s.p90_abs), (0.99, s.p99_abs)):
        exact = ad[math.ceil(q * ad.size) - 1]
        assert exact <= got <= exact * (1 + 1 / L.HIST_SUB)


def test_std_is_accurate_for_large_offsets():
    x = 1e6 + np.arange(1000, dtype=np.float64) * 1e-3
    s = oracle(x, x)
    assert s.ref_std == pytest.approx(np.std(x), rel=1e-9)


def test_to_dict_is_json_ready():
    import json

    s = oracle(np.array([1.0, np.nan], np.float32), np.array([1.5, np.nan], np.float32))
    d = s.to_dict()
    text = json.dumps(d)
    assert d["max_abs_index"] == [0] and d["first_nan_ref"] == [1]
    assert d["tolerance"]["source"] == "default:float32" and "resolution" in d["histogram"]
    assert "max_abs" in text and "DriftStats" in repr(s)
