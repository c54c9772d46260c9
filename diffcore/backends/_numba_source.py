"""The per-element drift update, written once as plain Python and compiled per target by ``_numba_build``.

These functions never run as they are: ``_numba_build.compile_for`` rebinds their global names
(``f64_as_i64``, ``i64_as_f64``, ``hist_add`` and each other) to the target's compiled versions and
compiles them with ``numba.njit`` (numba-cpu) or ``numba.cuda.jit(device=True)`` (numba-cuda, which runs
them as Python under the CUDA simulator). So the CPU and GPU kernels execute the same source line for line.
Everything is float64 (the accumulation policy of stats/result.py).
"""
import math

from ..stats.layout import (
    F_MAX_ABS, F_MAX_REL, F_MAX_ULP, F_R_M2, F_R_MAX, F_R_MEAN, F_R_MIN, F_SUM_ABS, F_SUM_D2, F_SUM_R2,
    F_SUM_REL, F_SUM_RT, F_SUM_T2, F_SUM_ULP, F_T_M2, F_T_MAX, F_T_MEAN, F_T_MIN, I_ARGMAX, I_FIRST_INF_R,
    I_FIRST_INF_T, I_FIRST_NAN_R, I_FIRST_NAN_T, I_INF_BOTH, I_INF_R, I_INF_T, I_MISMATCH, I_N, I_NAN_BOTH,
    I_NAN_R, I_NAN_T, I_NF, I_NR, I_NT, I_OVERFLOW, I_UNDERFLOW, NO_INDEX,
)
from ..stats.params import (
    P_ATOL, P_EMAX, P_EMIN, P_OVERFLOW, P_PRECISION, P_REL_FLOOR, P_RTOL, P_UNDERFLOW,
)


def f64_as_i64(x):  # rebound per target: reinterpret float64 bits as int64
    raise NotImplementedError


def i64_as_f64(x):  # rebound per target: reinterpret int64 bits as float64
    raise NotImplementedError


def hist_add(hist, b):  # rebound per target: hist[b] += 1 (atomically on a GPU)
    raise NotImplementedError


def hist_bin_from_bits(value, bits):  # rebound to stats.layout.hist_bin_from_bits, compiled
    raise NotImplementedError


def load(values, table, decode, i):
    """Element i as float64: 16-bit floats arrive as bit patterns and are decoded through an exact table."""
    if decode:
        return table[int(values[i])]
    return float(values[i])


def ulps_at(abs_d, magnitude, precision, emin, emax):
    """|d| in spacings of the test format at ``magnitude`` (FloatFormat.ulp_spacing), from float64 bits.

    The spacing is 2**k; for a normal spacing we multiply by the exact reciprocal 2**-k, which rounds the
    same real number as the division (bit-identical) without a float64 divide in the hot loop.
    """
    exponent = ((f64_as_i64(magnitude) >> 52) & 0x7FF) - 1023
    exponent = min(max(exponent, emin), emax)
    k = exponent - precision + 1
    if k >= -1022 and k <= 1022:
        return abs_d * i64_as_f64((1023 - k) << 52)
    if k > 1022:
        return abs_d / i64_as_f64((k + 1023) << 52)
    return abs_d / i64_as_f64(1 << (k + 1074))  # a float64 subnormal spacing (float64 test format only)


def side_moments(n, shift, s1, s2):
    """(mean, M2) from sums of x - shift: shifting by a sample value keeps s2 - s1^2/n well conditioned."""
    if n == 0:
        return 0.0, 0.0
    return shift + s1 / n, max(s2 - s1 * s1 / n, 0.0)


def accumulate_range(ref, test, table_r, table_t, decode_r, decode_t, start, stop, step, base, p,
                     out_i, out_f, hist):
    """Reduce elements start, start+step, ... < stop of one pair into the state rows out_i/out_f and ``hist``.

    ``base`` is subtracted from the element position to give its flat index in the pair. out_i/out_f are
    overwritten; ``hist`` is added to. Elements are visited in increasing order, so a strict ``>`` keeps the
    smallest index among equal maxima.
    """
    atol = p[P_ATOL]
    rtol = p[P_RTOL]
    rel_floor = p[P_REL_FLOOR]
    precision = int(p[P_PRECISION])
    emin = int(p[P_EMIN])
    emax = int(p[P_EMAX])
    overflow_at = p[P_OVERFLOW]
    underflow_at = p[P_UNDERFLOW]
    inf = math.inf

    n = 0
    nf = 0
    nan_r = 0
    nan_t = 0
    nan_both = 0
    inf_r = 0
    inf_t = 0
    inf_both = 0
    mismatch = 0
    first_nan_r = NO_INDEX
    first_nan_t = NO_INDEX
    first_inf_r = NO_INDEX
    first_inf_t = NO_INDEX
    argmax = -1
    overflow = 0
    underflow = 0
    max_abs = -1.0
    sum_abs = 0.0
    sum_d2 = 0.0
    sum_r2 = 0.0
    sum_t2 = 0.0
    sum_rt = 0.0
    max_rel = 0.0
    sum_rel = 0.0
    max_ulp = 0.0
    sum_ulp = 0.0
    r_n = 0
    r_shift = 0.0
    r_s1 = 0.0
    r_s2 = 0.0
    r_min = inf
    r_max = -inf
    t_n = 0
    t_shift = 0.0
    t_s1 = 0.0
    t_s2 = 0.0
    t_min = inf
    t_max = -inf

    for pos in range(start, stop, step):
        rv = load(ref, table_r, decode_r, pos)
        tv = load(test, table_t, decode_t, pos)
        idx = pos - base
        n += 1
        r_is_nan = rv != rv
        t_is_nan = tv != tv
        r_is_inf = rv == inf or rv == -inf
        t_is_inf = tv == inf or tv == -inf
        if r_is_nan:
            nan_r += 1
            first_nan_r = min(first_nan_r, idx)
        elif r_is_inf:
            inf_r += 1
            first_inf_r = min(first_inf_r, idx)
        else:
            if r_n == 0:
                r_shift = rv
            r_n += 1
            dev = rv - r_shift
            r_s1 += dev
            r_s2 += dev * dev
            r_min = min(r_min, rv)
            r_max = max(r_max, rv)
            abs_r = abs(rv)
            if abs_r >= overflow_at:
                overflow += 1
            elif abs_r != 0.0 and abs_r <= underflow_at:
                underflow += 1
        if t_is_nan:
            nan_t += 1
            first_nan_t = min(first_nan_t, idx)
        elif t_is_inf:
            inf_t += 1
            first_inf_t = min(first_inf_t, idx)
        else:
            if t_n == 0:
                t_shift = tv
            t_n += 1
            dev = tv - t_shift
            t_s1 += dev
            t_s2 += dev * dev
            t_min = min(t_min, tv)
            t_max = max(t_max, tv)

        if r_is_nan or r_is_inf or t_is_nan or t_is_inf:
            if r_is_nan and t_is_nan:
                nan_both += 1
            elif r_is_inf and t_is_inf and rv == tv:
                inf_both += 1
            else:
                mismatch += 1
            continue

        nf += 1
        d = tv - rv
        abs_d = abs(d)
        abs_r = abs(rv)
        if abs_d > max_abs:
            max_abs = abs_d
            argmax = idx
        sum_abs += abs_d
        sum_d2 += d * d
        sum_r2 += rv * rv
        sum_t2 += tv * tv
        sum_rt += rv * tv
        rel = abs_d / max(abs_r, rel_floor)
        max_rel = max(max_rel, rel)
        sum_rel += rel
        ulps = ulps_at(abs_d, max(abs_r, abs(tv)), precision, emin, emax)
        max_ulp = max(max_ulp, ulps)
        sum_ulp += ulps
        if abs_d > atol + rtol * abs_r:
            mismatch += 1
        hist_add(hist, hist_bin_from_bits(abs_d, f64_as_i64(abs_d)))

    out_i[I_N] = n
    out_i[I_NF] = nf
    out_i[I_NAN_R] = nan_r
    out_i[I_NAN_T] = nan_t
    out_i[I_NAN_BOTH] = nan_both
    out_i[I_INF_R] = inf_r
    out_i[I_INF_T] = inf_t
    out_i[I_INF_BOTH] = inf_both
    out_i[I_MISMATCH] = mismatch
    out_i[I_FIRST_NAN_R] = first_nan_r
    out_i[I_FIRST_NAN_T] = first_nan_t
    out_i[I_FIRST_INF_R] = first_inf_r
    out_i[I_FIRST_INF_T] = first_inf_t
    out_i[I_ARGMAX] = argmax
    out_i[I_OVERFLOW] = overflow
    out_i[I_UNDERFLOW] = underflow
    out_i[I_NR] = r_n
    out_i[I_NT] = t_n
    out_f[F_MAX_ABS] = max_abs
    out_f[F_SUM_ABS] = sum_abs
    out_f[F_SUM_D2] = sum_d2
    out_f[F_SUM_R2] = sum_r2
    out_f[F_SUM_T2] = sum_t2
    out_f[F_SUM_RT] = sum_rt
    out_f[F_MAX_REL] = max_rel
    out_f[F_SUM_REL] = sum_rel
    out_f[F_MAX_ULP] = max_ulp
    out_f[F_SUM_ULP] = sum_ulp
    out_f[F_R_MIN] = r_min
    out_f[F_R_MAX] = r_max
    out_f[F_R_MEAN], out_f[F_R_M2] = side_moments(r_n, r_shift, r_s1, r_s2)
    out_f[F_T_MIN] = t_min
    out_f[F_T_MAX] = t_max
    out_f[F_T_MEAN], out_f[F_T_M2] = side_moments(t_n, t_shift, t_s1, t_s2)
