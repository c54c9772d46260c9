"""``DriftStats``: the finished statistics of one (ref, test) pair, and ``finalize``, their single definition.

Every backend hands ``finalize`` an accumulator state (stats/layout.py); the formulas below are the only
place where a statistic is computed from it. The choices, stated once:

- d = t - r, element by element in float64 (inputs of any float dtype are promoted exactly).
- Error statistics are over *finite pairs* (both sides finite); NaN/Inf are counted, never folded into them.
- ``rel_l2`` = ||d|| / ||r||: 0 when both norms are 0, inf when only ||r|| is 0.
- ``max_rel``/``mean_rel`` use |d| / max(|r|, floor) with floor = atol (2**-126 if atol is 0): finite where r = 0.
- ``cosine`` = <r, t> / (||r|| ||t||): 1 when both norms are 0, 0 when one is, clipped to [-1, 1].
- ``snr_db`` = 10 log10(sum r^2 / sum d^2): +inf when d is all zero, -inf when only r is.
- ULP distance = |d| / ulp_test(max(|r|, |t|)): in spacings of the test format at the pair's larger
  magnitude (FloatFormat.ulp_spacing). Measuring at |r| alone would let a reference near zero inflate the
  count without bound (1e-7 from a reference of 1e-30 is 1e30 float32 ULPs there); at the larger magnitude a
  test value unrelated to its reference counts at most ~2**p ULPs, "every bit wrong".
- Mismatch: a finite pair with |d| > atol + rtol |r|; NaN in both, or the same signed Inf in both, match
  (reported as matching NaN/Inf); any other non-finite position mismatches.
- Sums that overflow float64 (values above ~1e154 squared) are recovered exactly by a power-of-two
  rescaled pass (stats/overflow.py): rel_l2, RMS, cosine, SNR and std are finite whenever they are.
- Means/percentiles over an empty population are 0 (no error observed); side min/max/mean/std are None
  when a side has no finite value. std is the population standard deviation (ddof = 0).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from . import layout as L
from . import overflow as O
from .tolerance import Tolerance

__all__ = ["DriftStats", "Histogram", "finalize"]


@dataclass(frozen=True)
class Histogram:
    """Counts of |d| over finite pairs in the log-linear bins of stats/layout.py."""

    counts: np.ndarray  # int64[NB]

    resolution = L.HIST_RESOLUTION

    def percentile(self, q: float) -> float:
        """Upper edge of the bin holding the nearest-rank q-quantile (q in (0, 1]); 0.0 when empty."""
        total = int(self.counts.sum())
        if total == 0:
            return 0.0
        rank = max(1, math.ceil(q * total))
        b = int(np.searchsorted(np.cumsum(self.counts), rank))
        return float(L.hist_upper_edges()[b])

    def nonzero_bins(self) -> list[tuple[float, float, int]]:
        """(lower edge, upper edge, count) of every non-empty bin, in increasing |d|."""
        lower, upper = L.hist_lower_edges(), L.hist_upper_edges()
        return [(float(lower[b]), float(upper[b]), int(self.counts[b])) for b in np.flatnonzero(self.counts)]

    def to_dict(self) -> dict:
        return {"resolution": self.resolution, "bins": [list(b) for b in self.nonzero_bins()]}


@dataclass(frozen=True)
class DriftStats:
    """Drift statistics of one (ref, test) pair; plain data. See the module docstring for definitions."""

    shape: tuple
    ref_dtype: str
    test_dtype: str
    count: int
    finite_count: int
    max_abs: float
    max_abs_index: tuple | None
    mean_abs: float
    rms: float
    rel_l2: float
    max_rel: float
    mean_rel: float
    cosine: float
    snr_db: float
    mismatch_count: int
    mismatch_frac: float
    nan_ref: int
    nan_test: int
    nan_both: int
    inf_ref: int
    inf_test: int
    inf_both: int
    first_nan_ref: tuple | None
    first_nan_test: tuple | None
    first_inf_ref: tuple | None
    first_inf_test: tuple | None
    max_ulp: float
    mean_ulp: float
    ref_min: float | None
    ref_max: float | None
    ref_mean: float | None
    ref_std: float | None
    test_min: float | None
    test_max: float | None
    test_mean: float | None
    test_std: float | None
    overflow_risk: int
    underflow_risk: int
    p50_abs: float
    p90_abs: float
    p99_abs: float
    histogram: Histogram = field(repr=False)
    tolerance: Tolerance = field(repr=False)
    backend: str = ""
    accumulate: str = "float64"

    @property
    def nonfinite_mismatch(self) -> bool:
        """True when a NaN or Inf appears on one side without its match on the other."""
        return (self.nan_test - self.nan_both) + (self.inf_test - self.inf_both) + \
            (self.nan_ref - self.nan_both) + (self.inf_ref - self.inf_both) > 0

    @property
    def passed(self) -> bool:
        """True when no element mismatches under the tolerance."""
        return self.mismatch_count == 0

    def __bool__(self) -> bool:
        return self.passed

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists; non-finite floats stay floats for the JSON layer)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (Histogram, Tolerance)):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out["histogram"]["p50_p90_p99"] = [self.p50_abs, self.p90_abs, self.p99_abs]
        return out

    def __repr__(self) -> str:
        """One line: shape, dtypes, the verdict under the tolerance and the main errors (``describe()`` has
        everything)."""
        bad = (f", NaN/Inf ref {self.nan_ref + self.inf_ref} test {self.nan_test + self.inf_test}"
               if self.nan_ref or self.nan_test or self.inf_ref or self.inf_test else "")
        return (f"DriftStats({'pass' if self.passed else 'FAIL'}, shape={tuple(self.shape)}, {self.ref_dtype}->"
                f"{self.test_dtype}, rel_l2={self.rel_l2:.3g}, max_abs={self.max_abs:.3g}, "
                f"mismatches={self.mismatch_count}/{self.count}{bad})")

    def describe(self) -> str:
        """Every statistic in a few lines (what ``repr`` used to print)."""
        at = "" if self.max_abs_index is None else f" at {tuple(self.max_abs_index)}"
        lines = [
            f"DriftStats(shape={self.shape}, ref={self.ref_dtype}, test={self.test_dtype}, "
            f"backend={self.backend}, {'pass' if self.passed else 'FAIL'})",
            f"  max|d|={self.max_abs:.6g}{at}  mean|d|={self.mean_abs:.6g}  rms={self.rms:.6g}  "
            f"rel_l2={self.rel_l2:.6g}",
            f"  max_rel={self.max_rel:.6g}  cosine={self.cosine:.9g}  snr={self.snr_db:.4g} dB  "
            f"ulp max/mean={self.max_ulp:.4g}/{self.mean_ulp:.4g}",
            f"  mismatches={self.mismatch_count}/{self.count} ({100 * self.mismatch_frac:.4g}%) under "
            f"atol={self.tolerance.atol:g} rtol={self.tolerance.rtol:g}",
            f"  |d| p50/p90/p99 <= {self.p50_abs:.3g}/{self.p90_abs:.3g}/{self.p99_abs:.3g}",
        ]
        if self.nan_ref or self.nan_test or self.inf_ref or self.inf_test:
            lines.append(
                f"  NaN ref/test/both={self.nan_ref}/{self.nan_test}/{self.nan_both}  "
                f"Inf ref/test/both={self.inf_ref}/{self.inf_test}/{self.inf_both}"
            )
        if self.overflow_risk or self.underflow_risk:
            lines.append(f"  {self.test_dtype} headroom: {self.overflow_risk} ref values overflow, "
                         f"{self.underflow_risk} flush to zero")
        return "\n".join(lines)

    __str__ = describe


def _ratio(num: float, den: float, both_zero: float) -> float:
    if den == 0.0:
        return both_zero if num == 0.0 else math.inf
    return num / den


def _rel_l2(d2: tuple, r2: tuple) -> float:
    if d2[1] == r2[1] == 0:  # the plain pass: exactly the definition's ||d|| / ||r||
        return _ratio(math.sqrt(d2[0]), math.sqrt(r2[0]), 0.0)
    return O.ratio(O.sqrt_of(d2), O.sqrt_of(r2), 0.0)


def _unravel(flat: int, shape: tuple) -> tuple | None:
    if flat < 0 or flat == L.NO_INDEX:
        return None
    return tuple(int(k) for k in np.unravel_index(int(flat), shape)) if shape else ()


def _side(n: int, lo: float, hi: float, mean: tuple, m2: tuple):
    if n == 0:
        return None, None, None, None
    variance = (max(m2[0], 0.0) / n, m2[1])
    return float(lo), float(hi), O.times(*mean), O.times(*O.sqrt_of(variance))


def _cosine(dot: tuple, r2: tuple, t2: tuple) -> float:
    if r2[0] == 0.0 and t2[0] == 0.0:
        return 1.0
    if r2[0] == 0.0 or t2[0] == 0.0:
        return 0.0
    if dot[1] == r2[1] == t2[1] == 0:
        product = r2[0] * t2[0]
        # sqrt(fl(x*x)) == x in IEEE arithmetic, so identical inputs give exactly 1; split on over/underflow.
        norm = math.sqrt(product) if 0.0 < product < math.inf else math.sqrt(r2[0]) * math.sqrt(t2[0])
        return max(-1.0, min(1.0, dot[0] / norm))
    (nr, er), (nt, et) = O.sqrt_of(r2), O.sqrt_of(t2)
    return max(-1.0, min(1.0, O.times(dot[0] / nr / nt, dot[1] - er - et)))


def _snr_db(r2: tuple, d2: tuple) -> float:
    if d2[0] == 0.0:
        return math.inf
    if r2[0] == 0.0:
        return -math.inf
    if r2[1] == d2[1] == 0 and math.isfinite(r2[0] / d2[0]) and r2[0] / d2[0] > 0.0:
        return 10.0 * math.log10(r2[0] / d2[0])
    return 10.0 * (O.log10_of(r2) - O.log10_of(d2))


def _per_pair(pair: tuple, n: int, root: bool = False) -> float:
    if not n:
        return 0.0
    value, e = pair[0] / n, pair[1]
    return O.times(*O.sqrt_of((value, e))) if root else O.times(value, e)


def finalize(i_row, f_row, h_row, *, shape, ref_dtype, test_dtype, tolerance, backend, scaled=None
             ) -> DriftStats:
    """Turn one merged accumulator state into ``DriftStats`` (the single definition of every statistic).

    ``scaled``: [(F row of a rescaled pass, k, the sums it supplies or None)] when a sum overflowed or
    underflowed (stats/overflow.py); each sum is then taken from the plain row where it is right, else
    from the scaled pass that fits.
    """
    i = [int(x) for x in i_row]
    f = [float(x) for x in f_row]
    n, nf = i[L.I_N], i[L.I_NF]
    s = {k: O.pick(f, scaled, k) for k in O.LINEAR + O.SQUARES}
    hist = Histogram(np.asarray(h_row, dtype=np.int64).copy())
    ref_side = _side(i[L.I_NR], f[L.F_R_MIN], f[L.F_R_MAX], s[L.F_R_MEAN], s[L.F_R_M2])
    test_side = _side(i[L.I_NT], f[L.F_T_MIN], f[L.F_T_MAX], s[L.F_T_MEAN], s[L.F_T_M2])
    return DriftStats(
        shape=tuple(shape), ref_dtype=ref_dtype, test_dtype=test_dtype,
        count=n, finite_count=nf,
        max_abs=max(f[L.F_MAX_ABS], 0.0),
        max_abs_index=_unravel(i[L.I_ARGMAX], tuple(shape)),
        mean_abs=_per_pair(s[L.F_SUM_ABS], nf),
        rms=_per_pair(s[L.F_SUM_D2], nf, root=True),
        rel_l2=_rel_l2(s[L.F_SUM_D2], s[L.F_SUM_R2]),
        max_rel=f[L.F_MAX_REL], mean_rel=_per_pair((f[L.F_SUM_REL], 0), nf),
        cosine=_cosine(s[L.F_SUM_RT], s[L.F_SUM_R2], s[L.F_SUM_T2]),
        snr_db=_snr_db(s[L.F_SUM_R2], s[L.F_SUM_D2]),
        mismatch_count=i[L.I_MISMATCH], mismatch_frac=(i[L.I_MISMATCH] / n) if n else 0.0,
        nan_ref=i[L.I_NAN_R], nan_test=i[L.I_NAN_T], nan_both=i[L.I_NAN_BOTH],
        inf_ref=i[L.I_INF_R], inf_test=i[L.I_INF_T], inf_both=i[L.I_INF_BOTH],
        first_nan_ref=_unravel(i[L.I_FIRST_NAN_R], tuple(shape)),
        first_nan_test=_unravel(i[L.I_FIRST_NAN_T], tuple(shape)),
        first_inf_ref=_unravel(i[L.I_FIRST_INF_R], tuple(shape)),
        first_inf_test=_unravel(i[L.I_FIRST_INF_T], tuple(shape)),
        max_ulp=f[L.F_MAX_ULP], mean_ulp=_per_pair((f[L.F_SUM_ULP], 0), nf),
        ref_min=ref_side[0], ref_max=ref_side[1], ref_mean=ref_side[2], ref_std=ref_side[3],
        test_min=test_side[0], test_max=test_side[1], test_mean=test_side[2], test_std=test_side[3],
        overflow_risk=i[L.I_OVERFLOW], underflow_risk=i[L.I_UNDERFLOW],
        p50_abs=hist.percentile(0.50), p90_abs=hist.percentile(0.90), p99_abs=hist.percentile(0.99),
        histogram=hist, tolerance=tolerance, backend=backend,
    )
