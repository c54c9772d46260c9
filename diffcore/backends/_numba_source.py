"""The drift statistics of one element and the per-element loop, written once as plain Python and compiled
per target by ``_numba_build``.

These functions never run as they are: ``_numba_build.compile_for`` rebinds their global names
(``f64_as_i64``, ``i64_as_f64``, ``hist_add`` and each other) to the target's compiled versions and
compiles them with ``numba.njit`` (numba-cpu) or ``numba.cuda.jit(device=True)`` (numba-cuda, which runs
them as Python under the CUDA simulator). Everything is float64 (the accumulation policy of
stats/result.py).

What an element contributes is defined once, by ``side_terms``, ``range_risk``, ``pair_terms`` and
``count_nonfinite``; a loop only adds those terms up in element order. Two loops do: ``accumulate_range``
here, one element after another (a GPU thread runs it over its strided share), and the CPU's blocked loop
(``_numba_cpu_kernels.accumulate_blocks``), which first computes the terms of a block of elements, the part
its vector units can take, and then adds them to the running sums in the same order, so both give the same
bits.

Elements that are NaN or ±Inf contribute the identity of each reduction instead of being skipped: +0.0 to
a sum (no sum can be -0.0: each starts at +0.0, and x + y is -0.0 only when both are, so adding +0.0 never
changes a sum's bits), and NaN to a min or max (``min(a, b)``/``max(a, b)`` keep ``a`` unless ``b``
compares smaller/larger, which NaN never does). So the terms need no branch on NaN/Inf.
"""
import math

from ..stats.layout import (
    F_MAX_ABS, F_MAX_REL, F_MAX_ULP, F_R_M2, F_R_MAX, F_R_MEAN, F_R_MIN, F_SUM_ABS, F_SUM_D2, F_SUM_R2,
    F_SUM_REL, F_SUM_RT, F_SUM_T2, F_SUM_ULP, F_T_M2, F_T_MAX, F_T_MEAN, F_T_MIN, I_ARGMAX, I_FIRST_INF_R,
    I_FIRST_INF_T, I_FIRST_NAN_R, I_FIRST_NAN_T, I_INF_BOTH, I_INF_R, I_INF_T, I_MISMATCH, I_N, I_NAN_BOTH,
    I_NAN_R, I_NAN_T, I_NF, I_NR, I_NT, I_OVERFLOW, I_UNDERFLOW, NB, NO_INDEX,
)
from ..stats.params import (
    P_ATOL, P_EMAX, P_EMIN, P_OVERFLOW, P_PRECISION, P_REL_FLOOR, P_RTOL, P_UNDERFLOW,
)

NO_BIN = NB  # the "bin" of a pair that is not finite: it is counted in no histogram bin


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


def unpack_params(p):
    """The parameter vector (stats/params.py) as scalars: (atol, rtol, rel_floor, precision, emin, emax,
    overflow_at, underflow_at)."""
    return (p[P_ATOL], p[P_RTOL], p[P_REL_FLOOR], int(p[P_PRECISION]), int(p[P_EMIN]), int(p[P_EMAX]),
            p[P_OVERFLOW], p[P_UNDERFLOW])


def pow2(e):
    """2.0**e exactly, from its float64 bits, for -1074 <= e <= 1023 (a subnormal below -1022)."""
    if e >= -1022:
        return i64_as_f64((e + 1023) << 52)
    return i64_as_f64(1 << (e + 1074))


def ulps_at(abs_d, magnitude, precision, emin, emax):
    """|d| in spacings of the test format at ``magnitude`` (FloatFormat.ulp_spacing), from float64 bits.

    The spacing is 2**k (k <= 1023). |d| / 2**k is computed as a product with the exact power of two
    2**-k, which rounds the same real number as the division: bit-identical, without a float64 divide.
    Below k = -1022 (a float64 subnormal spacing, float64 test format only) 2**-k exceeds float64, so the
    product takes two steps: |d| * 2**52 is exact (when it overflows, so does the result), then one
    rounding by 2**(-k-52).
    """
    exponent = ((f64_as_i64(magnitude) >> 52) & 0x7FF) - 1023
    exponent = min(max(exponent, emin), emax)
    k = exponent - precision + 1
    if k >= -1022:
        return abs_d * pow2(-k)
    return abs_d * 4503599627370496.0 * pow2(-k - 52)  # 4503599627370496.0 == 2.0**52


def side_moments(n, shift, s1, s2):
    """(mean, M2) from sums of x - shift: shifting by a sample value keeps s2 - s1^2/n well conditioned."""
    if n == 0:
        return 0.0, 0.0
    return shift + s1 / n, max(s2 - s1 * s1 / n, 0.0)


def first_finite(values, table, decode, start, stop, step):
    """The first finite element of start, start+step, ... < stop (0.0 if none): the shift of its side."""
    for pos in range(start, stop, step):
        v = load(values, table, decode, pos)
        if abs(v) < math.inf:
            return v
    return 0.0


def side_terms(v, shift):
    """What one side's element adds to that side's own statistics: (finite, v - shift, v), or the
    identities (False, 0.0, NaN) when it is NaN or ±Inf."""
    finite = abs(v) < math.inf
    dev = v - shift
    # Each value is masked on its own (no early return), so compilers turn the masks into selects.
    return finite, (dev if finite else 0.0), (v if finite else math.nan)


def range_risk(rv, finite, overflow_at, underflow_at):
    """(overflows, underflows): a finite reference value whose magnitude rounds to ±Inf, or (nonzero) to 0,
    in the test format."""
    abs_r = abs(rv)
    overflows = finite & (abs_r >= overflow_at)
    underflows = finite & (abs_r < overflow_at) & (abs_r != 0.0) & (abs_r <= underflow_at)
    return overflows, underflows


def pair_terms(rv, tv, finite, atol, rtol, rel_floor, precision, emin, emax):
    """What a pair adds to the error statistics: (|d|, relative error, ULPs, mismatches, histogram bin).

    A pair that is not ``finite`` (both sides finite) adds the identities (0.0, 0.0, 0.0, False, NO_BIN).
    d^2, r^2, t^2 and r*t are the loops' products of |d|, rv and tv (|d|*|d| rounds exactly like d*d).
    """
    abs_r = abs(rv)
    abs_d = abs(tv - rv)
    rel = abs_d / max(abs_r, rel_floor)  # rel_floor > 0 (stats/tolerance.py): never a division by zero
    ulps = ulps_at(abs_d, max(abs_r, abs(tv)), precision, emin, emax)
    mismatches = abs_d > atol + rtol * abs_r
    b = hist_bin_from_bits(abs_d, f64_as_i64(abs_d))
    return ((abs_d if finite else 0.0), (rel if finite else 0.0), (ulps if finite else 0.0),
            finite & mismatches, (b if finite else NO_BIN))


def reset_nonfinite(out_i):
    """Zero the fields ``count_nonfinite`` adds to (the first indices to NO_INDEX), and the mismatches."""
    for k in (I_NAN_R, I_NAN_T, I_NAN_BOTH, I_INF_R, I_INF_T, I_INF_BOTH, I_MISMATCH):
        out_i[k] = 0
    for k in (I_FIRST_NAN_R, I_FIRST_NAN_T, I_FIRST_INF_R, I_FIRST_INF_T):
        out_i[k] = NO_INDEX


def count_nonfinite(rv, tv, idx, out_i):
    """Count a pair with a NaN or ±Inf on either side (element ``idx``) into the state row ``out_i``.

    Such pairs are rare, so their counters live in the row itself rather than in registers.
    """
    r_nan = rv != rv
    t_nan = tv != tv
    r_inf = abs(rv) == math.inf
    t_inf = abs(tv) == math.inf
    if r_nan:
        out_i[I_NAN_R] += 1
        out_i[I_FIRST_NAN_R] = min(out_i[I_FIRST_NAN_R], idx)
    elif r_inf:
        out_i[I_INF_R] += 1
        out_i[I_FIRST_INF_R] = min(out_i[I_FIRST_INF_R], idx)
    if t_nan:
        out_i[I_NAN_T] += 1
        out_i[I_FIRST_NAN_T] = min(out_i[I_FIRST_NAN_T], idx)
    elif t_inf:
        out_i[I_INF_T] += 1
        out_i[I_FIRST_INF_T] = min(out_i[I_FIRST_INF_T], idx)
    if r_nan and t_nan:
        out_i[I_NAN_BOTH] += 1
    elif r_inf and t_inf and rv == tv:
        out_i[I_INF_BOTH] += 1
    else:
        out_i[I_MISMATCH] += 1


def store_state(out_i, out_f, counts, pair_sums, ref_side, test_side):
    """Write a range's reduction into its state rows (stats/layout.py): the one place every loop does.

    counts: (n, nf, mismatch, argmax, overflow, underflow); mismatch is added to what count_nonfinite
    already wrote. pair_sums: (max_abs, sum_abs, sum_d2, sum_r2, sum_t2, sum_rt, max_rel, sum_rel,
    max_ulp, sum_ulp). ref_side, test_side: (count, shift, s1, s2, min, max) of the finite values.
    """
    n, nf, mismatch, argmax, overflow, underflow = counts
    max_abs, sum_abs, sum_d2, sum_r2, sum_t2, sum_rt, max_rel, sum_rel, max_ulp, sum_ulp = pair_sums
    r_n, r_shift, r_s1, r_s2, r_min, r_max = ref_side
    t_n, t_shift, t_s1, t_s2, t_min, t_max = test_side
    out_i[I_N] = n
    out_i[I_NF] = nf
    out_i[I_MISMATCH] += mismatch
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


def accumulate_range(ref, test, table_r, table_t, decode_r, decode_t, start, stop, step, base, p,
                     out_i, out_f, hist):
    """Reduce elements start, start+step, ... < stop of one pair into the state rows out_i/out_f and ``hist``.

    ``base`` is subtracted from the element position to give its flat index in the pair. out_i/out_f are
    overwritten; ``hist`` is added to. Elements are visited in increasing order, so a strict ``>`` keeps the
    smallest index among equal maxima.
    """
    atol, rtol, rel_floor, precision, emin, emax, overflow_at, underflow_at = unpack_params(p)
    reset_nonfinite(out_i)
    n = 0
    nf = 0
    mismatch = 0
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
    r_shift = first_finite(ref, table_r, decode_r, start, stop, step)
    r_s1 = 0.0
    r_s2 = 0.0
    r_min = math.inf
    r_max = -math.inf
    t_n = 0
    t_shift = first_finite(test, table_t, decode_t, start, stop, step)
    t_s1 = 0.0
    t_s2 = 0.0
    t_min = math.inf
    t_max = -math.inf

    for pos in range(start, stop, step):
        rv = load(ref, table_r, decode_r, pos)
        tv = load(test, table_t, decode_t, pos)
        n += 1
        r_finite, r_dev, r_value = side_terms(rv, r_shift)
        r_n += r_finite
        r_s1 += r_dev
        r_s2 += r_dev * r_dev
        r_min = min(r_min, r_value)
        r_max = max(r_max, r_value)
        overflows, underflows = range_risk(rv, r_finite, overflow_at, underflow_at)
        overflow += overflows
        underflow += underflows
        t_finite, t_dev, t_value = side_terms(tv, t_shift)
        t_n += t_finite
        t_s1 += t_dev
        t_s2 += t_dev * t_dev
        t_min = min(t_min, t_value)
        t_max = max(t_max, t_value)

        if not (r_finite and t_finite):
            count_nonfinite(rv, tv, pos - base, out_i)
            continue
        abs_d, rel, ulps, mismatches, b = pair_terms(rv, tv, True, atol, rtol, rel_floor, precision, emin,
                                                     emax)
        nf += 1
        if abs_d > max_abs:
            max_abs = abs_d
            argmax = pos - base
        sum_abs += abs_d
        sum_d2 += abs_d * abs_d
        sum_r2 += rv * rv
        sum_t2 += tv * tv
        sum_rt += rv * tv
        max_rel = max(max_rel, rel)
        sum_rel += rel
        max_ulp = max(max_ulp, ulps)
        sum_ulp += ulps
        mismatch += mismatches
        hist_add(hist, b)

    store_state(out_i, out_f, (n, nf, mismatch, argmax, overflow, underflow),
                (max_abs, sum_abs, sum_d2, sum_r2, sum_t2, sum_rt, max_rel, sum_rel, max_ulp, sum_ulp),
                (r_n, r_shift, r_s1, r_s2, r_min, r_max), (t_n, t_shift, t_s1, t_s2, t_min, t_max))
