"""Sums of squares that overflow float64, and the exact power-of-two rescaling that recovers them.

The state's sums (sum d^2, r^2, t^2, r*t, |d|, the side moments) are plain float64 accumulators: with
values above about 1e154 a square overflows, and rel_l2, RMS, cosine, SNR and std came out NaN or inf
although every input was finite. A float64 accumulator cannot hold squares of the whole float64 range
(2^-2148 .. 2^2048), so no fixed scale fixes it in one pass, and an inf cannot be rescaled afterwards.

Squares of values below about 1e-154 underflow the same way (an RMS of 1e-200 came out 0); the same pass
with k < 0 (scaling up) recovers them.

The fix keeps the state layout (and every kernel, CPU and GPU) unchanged: when ``overflow_exponent`` finds
a sum that overflowed, ``drift`` reduces the pair once more with both sides multiplied by 2^-k, k derived
from the largest finite magnitude the state recorded, so that the largest term is about 2^480 and no sum
of up to 2^63 terms can overflow. Multiplying by a power of two is exact (terms it pushes below the
subnormal range are below 2^-1074 of the largest: they cannot change a sum that overflowed). ``finalize``
then takes each sum from the plain pass where it is finite (keeping tiny values exact: a 1e-200 RMS next to
a 1e200 reference stays 1e-200) and from the scaled pass, times 2^k or 2^2k, where it is not; every
statistic is computed from (value, exponent) pairs, so nothing overflows in between. The second pass runs
only in that rare case: the common path costs nothing.
"""
from __future__ import annotations

import math

from . import layout as L

__all__ = ["LINEAR", "SQUARES", "overflow_exponent", "pick"]

# Sums of first powers (times 2^k when scaled) and of squares or products (times 2^2k).
LINEAR = (L.F_SUM_ABS, L.F_R_MEAN, L.F_T_MEAN)
SQUARES = (L.F_SUM_D2, L.F_SUM_R2, L.F_SUM_T2, L.F_SUM_RT, L.F_R_M2, L.F_T_M2)
TARGET_EXPONENT = 480  # the largest magnitude is scaled to about 2^480: 2^63 squares of it stay finite


TINY = 2.0 ** -1022  # below this a sum of squares has lost precision to underflow (or is 0)


def _overflowed(i_row, f_row) -> bool:
    populated = {L.F_SUM_ABS: L.I_NF, L.F_SUM_D2: L.I_NF, L.F_SUM_R2: L.I_NF, L.F_SUM_T2: L.I_NF,
                 L.F_SUM_RT: L.I_NF, L.F_R_MEAN: L.I_NR, L.F_R_M2: L.I_NR, L.F_T_MEAN: L.I_NT,
                 L.F_T_M2: L.I_NT}
    return any(int(i_row[count]) and not math.isfinite(float(f_row[k])) for k, count in populated.items())


def _underflowed(i_row, f_row, largest_r: float, largest_t: float) -> bool:
    """A sum of squares below TINY although a term of it is not zero: the squares underflowed."""
    f = [float(x) for x in f_row]
    checks = ((f[L.F_SUM_D2], f[L.F_MAX_ABS] > 0.0), (f[L.F_SUM_R2], largest_r > 0.0 and int(i_row[L.I_NF])),
              (f[L.F_SUM_T2], largest_t > 0.0 and int(i_row[L.I_NF])),
              (f[L.F_R_M2], int(i_row[L.I_NR]) and f[L.F_R_MAX] > f[L.F_R_MIN]),
              (f[L.F_T_M2], int(i_row[L.I_NT]) and f[L.F_T_MAX] > f[L.F_T_MIN]))
    return any(bool(term) and 0.0 <= total < TINY for total, term in checks)


def _largest(i_row, f_row, count: int, lo: int, hi: int) -> float:
    return max(abs(float(f_row[lo])), abs(float(f_row[hi]))) if int(i_row[count]) else 0.0


def overflow_exponent(i_row, f_row) -> int:
    """k != 0 when a sum overflowed (k > 0) or its squares underflowed (k < 0) although its terms were
    finite: rescale both sides by 2^-k so that the largest magnitude is about 2^480; else 0."""
    largest_r = _largest(i_row, f_row, L.I_NR, L.F_R_MIN, L.F_R_MAX)
    largest_t = _largest(i_row, f_row, L.I_NT, L.F_T_MIN, L.F_T_MAX)
    largest = max(largest_r, largest_t)
    if not (0.0 < largest < math.inf):
        return 0
    k = math.frexp(largest)[1] - TARGET_EXPONENT
    if _overflowed(i_row, f_row):
        return max(k, 0)
    if _underflowed(i_row, f_row, largest_r, largest_t):
        return min(k, 0)
    return 0


def differences_exponent(i_row, f_row, k: int) -> int:
    """k_d < 0 when, besides an overflow (k > 0), the squared differences underflowed: huge values whose
    differences are tiny. One scale cannot serve both, so the differences get their own pass: d * 2^-k_d
    against zeros, whose sum of squares and of |d| are sum d^2 and sum |d| scaled (see ``drift``)."""
    max_abs = float(f_row[L.F_MAX_ABS])
    if k <= 0 or not (0.0 < max_abs < math.inf) or not (0.0 <= float(f_row[L.F_SUM_D2]) < TINY):
        return 0
    return min(math.frexp(max_abs)[1] - TARGET_EXPONENT, 0)


DIFFERENCES = (L.F_SUM_D2, L.F_SUM_ABS)  # what the differences pass supplies (as its F_SUM_D2, F_SUM_ABS)


def pick(f_row, scaled, index: int) -> tuple[float, int]:
    """(value, e): the sum ``index`` is value * 2^e, from the plain pass where it is finite (and not
    underflowed where a scaled-up pass exists), else from the scaled pass that fits.

    ``scaled`` is None or a list of (F row of a scaled pass, k, indices it supplies or None for all)."""
    value = float(f_row[index])
    for f_scaled, k, indices in scaled or ():
        if indices is not None and index not in indices:
            continue
        overflowed = not math.isfinite(value) and k > 0
        underflowed = k < 0 and index in SQUARES and abs(value) < TINY
        if overflowed or underflowed:
            return float(f_scaled[index]), (2 * k if index in SQUARES else k)
    return value, 0


def times(value: float, e: int) -> float:
    """value * 2^e without an intermediate overflow (inf only when the result itself is)."""
    try:
        return math.ldexp(value, e)
    except OverflowError:
        return math.copysign(math.inf, value)


def sqrt_of(pair: tuple[float, int]) -> tuple[float, int]:
    """The square root of value * 2^e (e even) as a pair."""
    value, e = pair
    return math.sqrt(max(value, 0.0)), e // 2


def ratio(num: tuple[float, int], den: tuple[float, int], both_zero: float) -> float:
    """num / den for pairs: ``both_zero`` when both are 0, inf when only den is."""
    if den[0] == 0.0:
        return both_zero if num[0] == 0.0 else math.inf
    return times(num[0] / den[0], num[1] - den[1])


def log10_of(pair: tuple[float, int]) -> float:
    """log10(value * 2^e) for value > 0."""
    return math.log10(pair[0]) + pair[1] * math.log10(2.0)
