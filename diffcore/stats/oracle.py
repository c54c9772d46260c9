"""The NumPy float64 oracle: the plain, obviously-correct computation every backend is tested against.

It computes the accumulator state (stats/layout.py) of a pair with whole-array NumPy operations, one
quantity at a time, using ``frexp`` where the kernels read float64 bits, so the two are independent.
"""
from __future__ import annotations

import numpy as np

from . import layout as L
from .params import StatParams


def ulp_spacing(r: np.ndarray, params: StatParams) -> np.ndarray:
    """Spacing of the test format at |r| (vectorised ``FloatFormat.ulp_spacing``)."""
    fmt = params.test_format
    _, exp2 = np.frexp(np.abs(r))
    exponent = np.where(r == 0.0, fmt.min_exponent, exp2 - 1)
    exponent = np.clip(exponent, fmt.min_exponent, fmt.max_exponent)
    return np.ldexp(1.0, (exponent - fmt.precision_bits + 1).astype(np.int32))


def hist_bins(abs_diff: np.ndarray) -> np.ndarray:
    """Histogram bin of each |d| >= 0, from frexp: |d| = m 2**e with m in [0.5, 1)."""
    finite = np.isfinite(abs_diff)
    mantissa, exp2 = np.frexp(np.where(finite, abs_diff, 0.0))
    octave = exp2.astype(np.int64) - 1
    sub = np.floor((2.0 * mantissa - 1.0) * L.HIST_SUB).astype(np.int64)
    bins = 2 + (octave - L.HIST_EMIN) * L.HIST_SUB + sub
    bins = np.where(octave < L.HIST_EMIN, 1, bins)
    bins = np.where((octave >= L.HIST_EMAX) | ~finite, L.NB - 1, bins)
    return np.where(abs_diff == 0.0, 0, bins)


def _first(mask: np.ndarray, offset: int) -> int:
    hits = np.flatnonzero(mask)
    return int(hits[0]) + offset if hits.size else L.NO_INDEX


def _side_moments(values: np.ndarray):
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 0, np.inf, -np.inf, 0.0, 0.0
    mean = finite.mean()
    return finite.size, finite.min(), finite.max(), mean, float(np.sum((finite - mean) ** 2))


def oracle_state(ref: np.ndarray, test: np.ndarray, params: StatParams, index_offset: int = 0):
    """Accumulator state (I, F, H rows) of one pair; ``ref``/``test`` hold the values in C order.

    ``index_offset`` is the flat index of the first element, so states of slices merge into the whole's.
    """
    r = np.asarray(ref, dtype=np.float64).reshape(-1)
    t = np.asarray(test, dtype=np.float64).reshape(-1)
    i_rows, f_rows, h_rows = L.empty_rows(1)
    i, f, h = i_rows[0], f_rows[0], h_rows[0]
    tol = params.tolerance

    nan_r, nan_t, inf_r, inf_t = np.isnan(r), np.isnan(t), np.isinf(r), np.isinf(t)
    finite = ~(nan_r | nan_t | inf_r | inf_t)
    nan_both = nan_r & nan_t
    inf_both = inf_r & inf_t & (r == t)
    i[L.I_N] = r.size
    i[L.I_NF] = finite.sum()
    i[L.I_NAN_R], i[L.I_NAN_T], i[L.I_NAN_BOTH] = nan_r.sum(), nan_t.sum(), nan_both.sum()
    i[L.I_INF_R], i[L.I_INF_T], i[L.I_INF_BOTH] = inf_r.sum(), inf_t.sum(), inf_both.sum()
    i[L.I_FIRST_NAN_R], i[L.I_FIRST_NAN_T] = _first(nan_r, index_offset), _first(nan_t, index_offset)
    i[L.I_FIRST_INF_R], i[L.I_FIRST_INF_T] = _first(inf_r, index_offset), _first(inf_t, index_offset)

    rf, tf = r[finite], t[finite]
    with np.errstate(over="ignore", invalid="ignore"):  # float64 inputs may overflow d or d^2: inf is right
        d = tf - rf
        ad = np.abs(d)
        mismatching = ad > tol.atol + tol.rtol * np.abs(rf)
        i[L.I_MISMATCH] = mismatching.sum() + (~finite & ~nan_both & ~inf_both).sum()
        if ad.size:
            rel = ad / np.maximum(np.abs(rf), tol.rel_floor)
            ulps = ad / ulp_spacing(np.maximum(np.abs(rf), np.abs(tf)), params)
            k = int(np.argmax(ad))
            f[L.F_MAX_ABS] = ad[k]
            i[L.I_ARGMAX] = int(np.flatnonzero(finite)[k]) + index_offset
            f[L.F_SUM_ABS] = ad.sum()
            f[L.F_SUM_D2] = np.sum(d * d)
            f[L.F_SUM_R2], f[L.F_SUM_T2] = np.sum(rf * rf), np.sum(tf * tf)
            f[L.F_SUM_RT] = np.sum(rf * tf)
            f[L.F_MAX_REL], f[L.F_SUM_REL] = rel.max(), rel.sum()
            f[L.F_MAX_ULP], f[L.F_SUM_ULP] = ulps.max(), ulps.sum()
            h[:] = np.bincount(hist_bins(ad), minlength=L.NB)

    i[L.I_NR], f[L.F_R_MIN], f[L.F_R_MAX], f[L.F_R_MEAN], f[L.F_R_M2] = _side_moments(r)
    i[L.I_NT], f[L.F_T_MIN], f[L.F_T_MAX], f[L.F_T_MEAN], f[L.F_T_M2] = _side_moments(t)
    ref_finite = np.abs(r[np.isfinite(r)])
    i[L.I_OVERFLOW] = np.sum(ref_finite >= params.test_format.overflow_threshold)
    i[L.I_UNDERFLOW] = np.sum((ref_finite != 0.0) & (ref_finite <= params.test_format.underflow_threshold))
    return i_rows, f_rows, h_rows
