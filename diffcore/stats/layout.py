"""The accumulator state every backend produces, and how two states merge.

A state is two rows, ``I`` (int64) and ``F`` (float64), plus a histogram row ``H`` (int64). Every backend,
CPU or GPU, reduces its share of the elements into such rows; partial rows merge with ``merge_into``; one
``finalize`` (stats/result.py) turns a state into ``DriftStats``. So each statistic is defined once.

``merge_into`` and ``hist_bin_from_bits`` are plain Python on purpose: the Numba backends compile these very
functions for the CPU and for CUDA, and the property tests run them as Python.

Populations (documented once, used everywhere):
- *finite pairs*: positions where both ref and test are finite. Every error statistic (max/mean |d|, RMS,
  relative errors, ULPs, cosine, SNR, the |d| histogram) is over finite pairs only, so NaN/Inf are never
  folded into max |d|; they are counted separately.
- *finite ref values* / *finite test values*: each side's own min/max/mean/std and the range headroom.
"""
from __future__ import annotations

import functools
import math

import numpy as np

# ---- int64 fields -------------------------------------------------------------------------------------
I_N = 0             # elements seen
I_NF = 1            # finite pairs
I_NAN_R = 2         # NaN in ref
I_NAN_T = 3         # NaN in test
I_NAN_BOTH = 4      # NaN in both at the same position ("matching NaN")
I_INF_R = 5         # ±Inf in ref
I_INF_T = 6         # ±Inf in test
I_INF_BOTH = 7      # the same signed Inf in both ("matching Inf")
I_MISMATCH = 8      # elements failing the tolerance rule (non-finite rules in stats/definitions.md)
I_FIRST_NAN_R = 9   # smallest flat index of a NaN in ref (NO_INDEX when none)
I_FIRST_NAN_T = 10
I_FIRST_INF_R = 11
I_FIRST_INF_T = 12
I_ARGMAX = 13       # flat index of max |d| (smallest on ties; -1 when no finite pair)
I_OVERFLOW = 14     # finite ref values that round to ±Inf in the test format
I_UNDERFLOW = 15    # nonzero finite ref values that round to 0 in the test format
I_NR = 16           # finite ref values
I_NT = 17           # finite test values
NI = 18

# ---- float64 fields -----------------------------------------------------------------------------------
F_MAX_ABS = 0       # max |d| over finite pairs (-1 is the identity: no pair yet)
F_SUM_ABS = 1
F_SUM_D2 = 2        # sum d^2
F_SUM_R2 = 3        # sum r^2 over finite pairs
F_SUM_T2 = 4        # sum t^2 over finite pairs
F_SUM_RT = 5        # sum r*t over finite pairs
F_MAX_REL = 6
F_SUM_REL = 7
F_MAX_ULP = 8
F_SUM_ULP = 9
F_R_MIN = 10        # over finite ref values
F_R_MAX = 11
F_R_MEAN = 12
F_R_M2 = 13         # sum of squared deviations from the mean (Chan et al. mergeable form)
F_T_MIN = 14
F_T_MAX = 15
F_T_MEAN = 16
F_T_M2 = 17
NF = 18

NO_INDEX = np.iinfo(np.int64).max

# ---- |d| histogram: log-linear bins read straight from float64 bits ------------------------------------
# bin 0: |d| == 0; bin 1: 0 < |d| < 2**HIST_EMIN; then HIST_SUB linear sub-bins per power of two in
# [2**HIST_EMIN, 2**HIST_EMAX); last bin: |d| >= 2**HIST_EMAX (and Inf). A sub-bin is the top log2(HIST_SUB)
# bits of the float64 fraction, so binning is exact and identical on every backend.
HIST_EMIN = -64
HIST_EMAX = 64
HIST_SUB_BITS = 3
HIST_SUB = 1 << HIST_SUB_BITS
NB = 2 + (HIST_EMAX - HIST_EMIN) * HIST_SUB
HIST_RESOLUTION = (
    f"|d| histogram: {HIST_SUB} linear bins per power of two from 2^{HIST_EMIN} to 2^{HIST_EMAX}, plus a "
    f"bin for exact zeros and one each below and above that range; a percentile is the upper edge of the "
    f"bin holding the nearest-rank value, at most {100 / HIST_SUB:g}% above it"
)

_EXP_MASK = 0x7FF
_SUB_SHIFT = 52 - HIST_SUB_BITS
_SUB_MASK = HIST_SUB - 1


def hist_bin_from_bits(value, bits):
    """Histogram bin of ``value`` = |d| >= 0 given its float64 bit pattern ``bits`` (as int64)."""
    if value == 0.0:
        return 0
    if value == math.inf:
        return NB - 1
    exponent = ((bits >> 52) & _EXP_MASK) - 1023  # float64 subnormals give -1023: below any HIST_EMIN
    if exponent < HIST_EMIN:
        return 1
    if exponent >= HIST_EMAX:
        return NB - 1
    return 2 + (exponent - HIST_EMIN) * HIST_SUB + ((bits >> _SUB_SHIFT) & _SUB_MASK)


@functools.cache
def hist_upper_edges() -> np.ndarray:
    """Upper edge of every bin (bin 0: 0.0; last bin: inf). Read-only, computed once."""
    edges = np.empty(NB, dtype=np.float64)
    edges[0] = 0.0
    edges[1] = math.ldexp(1.0, HIST_EMIN)
    for j in range(NB - 3):
        octave, sub = divmod(j, HIST_SUB)
        edges[2 + j] = math.ldexp(1.0 + (sub + 1) / HIST_SUB, HIST_EMIN + octave)
    edges[NB - 1] = math.inf
    edges.flags.writeable = False
    return edges


@functools.cache
def hist_lower_edges() -> np.ndarray:
    """Lower edge of every bin (bins 0 and 1 start at 0.0). Read-only, computed once."""
    lower = np.empty(NB, dtype=np.float64)
    lower[0] = lower[1] = 0.0
    lower[2:] = hist_upper_edges()[1:NB - 1]
    lower.flags.writeable = False
    return lower


# ---- the state ----------------------------------------------------------------------------------------
def empty_rows(count: int = 1):
    """``count`` identity states as arrays (I[count, NI], F[count, NF], H[count, NB])."""
    i_rows = np.zeros((count, NI), dtype=np.int64)
    f_rows = np.zeros((count, NF), dtype=np.float64)
    reset_rows(i_rows, f_rows)
    return i_rows, f_rows, np.zeros((count, NB), dtype=np.int64)


def reset_rows(i_rows, f_rows):
    """Set every row to the identity of ``merge_into`` (works on NumPy arrays of shape [k, NI]/[k, NF])."""
    i_rows[:] = 0
    f_rows[:] = 0.0
    i_rows[:, I_FIRST_NAN_R:I_FIRST_INF_T + 1] = NO_INDEX
    i_rows[:, I_ARGMAX] = -1
    f_rows[:, F_MAX_ABS] = -1.0
    f_rows[:, [F_R_MIN, F_T_MIN]] = math.inf
    f_rows[:, [F_R_MAX, F_T_MAX]] = -math.inf


def _merge_moments(dst_f, mean_k, m2_k, n_dst, src_f, n_src):
    # Chan, Golub & LeVeque's pairwise update: exact in exact arithmetic, stable in floating point.
    if n_src == 0:
        return
    if n_dst == 0:
        dst_f[mean_k] = src_f[mean_k]
        dst_f[m2_k] = src_f[m2_k]
        return
    n = float(n_dst) + float(n_src)
    delta = src_f[mean_k] - dst_f[mean_k]
    dst_f[mean_k] = dst_f[mean_k] + delta * (float(n_src) / n)
    dst_f[m2_k] = dst_f[m2_k] + src_f[m2_k] + delta * delta * (float(n_dst) * float(n_src) / n)


def merge_into(dst_i, dst_f, src_i, src_f):
    """Merge the state row (src_i, src_f) into (dst_i, dst_f) in place. Histograms merge by addition."""
    if src_f[F_MAX_ABS] > dst_f[F_MAX_ABS] or (
        src_f[F_MAX_ABS] == dst_f[F_MAX_ABS] and src_i[I_ARGMAX] < dst_i[I_ARGMAX]
    ):
        dst_f[F_MAX_ABS] = src_f[F_MAX_ABS]
        dst_i[I_ARGMAX] = src_i[I_ARGMAX]
    _merge_moments(dst_f, F_R_MEAN, F_R_M2, dst_i[I_NR], src_f, src_i[I_NR])
    _merge_moments(dst_f, F_T_MEAN, F_T_M2, dst_i[I_NT], src_f, src_i[I_NT])
    for k in range(NI):
        if k >= I_FIRST_NAN_R and k <= I_FIRST_INF_T:
            dst_i[k] = min(dst_i[k], src_i[k])
        elif k != I_ARGMAX:
            dst_i[k] += src_i[k]
    for k in (F_SUM_ABS, F_SUM_D2, F_SUM_R2, F_SUM_T2, F_SUM_RT, F_SUM_REL, F_SUM_ULP):
        dst_f[k] += src_f[k]
    for k in (F_MAX_REL, F_MAX_ULP, F_R_MAX, F_T_MAX):
        dst_f[k] = max(dst_f[k], src_f[k])
    for k in (F_R_MIN, F_T_MIN):
        dst_f[k] = min(dst_f[k], src_f[k])
