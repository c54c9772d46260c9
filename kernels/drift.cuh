/* drift.cuh: the per-element drift semantics of the CuPy backend, shared by the CUDA kernels (drift.cu)
 * and by a CPU host harness (tests/conformance/cuda_host_harness.cpp) that proves them against the NumPy
 * oracle in CI, where there is no GPU.
 *
 * It mirrors, line for line, diffcore/backends/_numba_source.py (accumulate_range, ulp_spacing,
 * side_moments) and diffcore/stats/layout.py (state layout, hist_bin_from_bits, merge_into); the layout
 * constants below must equal layout.py/params.py (a test compares them through the harness).
 *
 * Everything is float64. Storage is decoded with integer operations only: CuPy always compiles with
 * -ftz=true, which turns a float->double conversion into cvt.ftz and would flush float32/bfloat16
 * subnormals to zero. Compile with --fmad=false (g++: -ffp-contract=off) so that products are not fused
 * into the sums or into the mismatch threshold atol + rtol*|r|.
 *
 * The file compiles as plain C++ (g++) and as CUDA (nvcc, NVRTC); it includes no header under NVRTC.
 */
#pragma once
// C++17 (if constexpr): the default of NVRTC 12+, nvcc 12+ and g++ 11+.

#if !defined(__CUDACC_RTC__)
#include <cstring>
#endif

#ifndef __CUDACC__
#define __host__
#define __device__
#define DC_HD inline
#define DC_UNROLL
#define DC_NO_UNROLL
#else
#define DC_HD __host__ __device__ __forceinline__
#define DC_UNROLL _Pragma("unroll")
#define DC_NO_UNROLL _Pragma("unroll 1")
#endif

namespace dc {

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;

// ---- state layout (stats/layout.py) -------------------------------------------------------------------
constexpr int I_N = 0, I_NF = 1, I_NAN_R = 2, I_NAN_T = 3, I_NAN_BOTH = 4, I_INF_R = 5, I_INF_T = 6,
              I_INF_BOTH = 7, I_MISMATCH = 8, I_FIRST_NAN_R = 9, I_FIRST_NAN_T = 10, I_FIRST_INF_R = 11,
              I_FIRST_INF_T = 12, I_ARGMAX = 13, I_OVERFLOW = 14, I_UNDERFLOW = 15, I_NR = 16, I_NT = 17,
              NI = 18;
constexpr int F_MAX_ABS = 0, F_SUM_ABS = 1, F_SUM_D2 = 2, F_SUM_R2 = 3, F_SUM_T2 = 4, F_SUM_RT = 5,
              F_MAX_REL = 6, F_SUM_REL = 7, F_MAX_ULP = 8, F_SUM_ULP = 9, F_R_MIN = 10, F_R_MAX = 11,
              F_R_MEAN = 12, F_R_M2 = 13, F_T_MIN = 14, F_T_MAX = 15, F_T_MEAN = 16, F_T_M2 = 17, NF = 18;
constexpr i64 NO_INDEX = 0x7FFFFFFFFFFFFFFFLL;
constexpr int HIST_EMIN = -64, HIST_EMAX = 64, HIST_SUB_BITS = 3, HIST_SUB = 1 << HIST_SUB_BITS;
constexpr int NB = 2 + (HIST_EMAX - HIST_EMIN) * HIST_SUB;

// ---- per-pair parameters (stats/params.py) ------------------------------------------------------------
constexpr int P_ATOL = 0, P_RTOL = 1, P_REL_FLOOR = 2, P_PRECISION = 3, P_EMIN = 4, P_EMAX = 5,
              P_OVERFLOW = 6, P_UNDERFLOW = 7, NP = 8;

// ---- storage codes (cupy_backend.STORAGE_CODES) -------------------------------------------------------
constexpr int S_F64 = 0, S_F32 = 1, S_F16 = 2, S_BF16 = 3;

// ---- device work table: one int64 buffer (cupy_backend.pack_table) -------------------------------------
// header [n_pairs, n_tiles]; then one record per pair; then one record per tile.
constexpr int T_NPAIRS = 0, T_NTILES = 1, HEADER_W = 2;
// pair record: raw pointers, element strides, storage codes, its tiles [first, end), params as f64 bits
constexpr int PR_PTR_R = 0, PR_PTR_T = 1, PR_STRIDE_R = 2, PR_STRIDE_T = 3, PR_CODE_R = 4, PR_CODE_T = 5,
              PR_FIRST = 6, PR_END = 7, PR_PARAMS = 8, PAIR_W = PR_PARAMS + NP;
constexpr int TR_PAIR = 0, TR_START = 1, TR_STOP = 2, TILE_W = 3;
// a partial (per tile) row: I then F (as bits); an output row adds the pair's histogram (uint64 counts)
constexpr int ROW_W = NI + NF, OUT_W = NI + NF + NB;

// ---- bit casts ------------------------------------------------------------------------------------------
DC_HD i64 f64_as_i64(double x) {
#ifdef __CUDA_ARCH__
    return __double_as_longlong(x);
#else
    i64 b;
    memcpy(&b, &x, sizeof b);
    return b;
#endif
}

DC_HD double i64_as_f64(i64 b) {
#ifdef __CUDA_ARCH__
    return __longlong_as_double(b);
#else
    double x;
    memcpy(&x, &b, sizeof x);
    return x;
#endif
}

DC_HD double inf64() { return i64_as_f64(0x7FF0000000000000LL); }  // +inf without <cmath> (NVRTC: no headers)

// ---- exact decoding of stored elements to float64 (integer operations only; see the header note) -----
DC_HD double f32_bits_to_f64(u32 b) {
    const u32 e = (b >> 23) & 0xFFu, m = b & 0x7FFFFFu;
    double v;
    if (e == 0xFFu) {
        v = m ? i64_as_f64(0x7FF8000000000000LL) : inf64();
    } else if (e == 0) {
        v = (double)m * 1.4012984643248171e-45;  // m * 2**-149: exact (a power-of-two scaling)
    } else {
        v = i64_as_f64(((i64)(e - 127 + 1023) << 52) | ((i64)m << 29));
    }
    return (b >> 31) ? -v : v;
}

DC_HD double f16_bits_to_f64(u32 h) {
    const u32 e = (h >> 10) & 0x1Fu, m = h & 0x3FFu;
    double v;
    if (e == 0x1Fu) {
        v = m ? i64_as_f64(0x7FF8000000000000LL) : inf64();
    } else if (e == 0) {
        v = (double)m * 5.9604644775390625e-08;  // m * 2**-24: exact
    } else {
        v = i64_as_f64(((i64)(e - 15 + 1023) << 52) | ((i64)m << 42));
    }
    return ((h >> 15) & 1u) ? -v : v;
}

template <int C> struct Storage;
template <> struct Storage<S_F64> { static constexpr int size = 8; };
template <> struct Storage<S_F32> { static constexpr int size = 4; };
template <> struct Storage<S_F16> { static constexpr int size = 2; };
template <> struct Storage<S_BF16> { static constexpr int size = 2; };

/* The float64 value of one element whose raw bits (zero-extended) are ``raw``. */
template <int C> DC_HD double decode(u64 raw) {
    if constexpr (C == S_F64) return i64_as_f64((i64)raw);
    else if constexpr (C == S_F32) return f32_bits_to_f64((u32)raw);
    else if constexpr (C == S_F16) return f16_bits_to_f64((u32)raw & 0xFFFFu);
    else return f32_bits_to_f64(((u32)raw & 0xFFFFu) << 16);  // bfloat16: the top half of a float32
}

/* Raw bits of element ``pos`` of an operand with element stride ``stride`` (may be negative). */
template <int C> DC_HD u64 load_raw(const unsigned char* base, i64 pos, i64 stride) {
    const unsigned char* p = base + pos * stride * Storage<C>::size;
#ifdef __CUDA_ARCH__
    if constexpr (Storage<C>::size == 8) return (u64)__ldg((const unsigned long long*)p);
    else if constexpr (Storage<C>::size == 4) return (u64)__ldg((const unsigned int*)p);
    else return (u64)__ldg((const unsigned short*)p);
#else
    u64 raw = 0;  // little-endian host: the low bytes
    memcpy(&raw, p, Storage<C>::size);
    return raw;
#endif
}

/* NW 32-bit words from an address aligned to 4*NW bytes: one 128/64/32-bit load on the GPU. */
template <int NW> DC_HD void load_words(const unsigned char* p, u32* w) {
#ifdef __CUDA_ARCH__
    if constexpr (NW == 4) {
        const uint4 v = __ldg((const uint4*)p);
        w[0] = v.x; w[1] = v.y; w[2] = v.z; w[3] = v.w;
    } else if constexpr (NW == 2) {
        const uint2 v = __ldg((const uint2*)p);
        w[0] = v.x; w[1] = v.y;
    } else {
        w[0] = __ldg((const unsigned int*)p);
    }
#else
    memcpy(w, p, 4 * NW);
#endif
}

/* Raw bits of the first element of a group loaded with load_words (little-endian packing). */
template <int C> DC_HD u64 group_first(const u32* w) {
    if constexpr (Storage<C>::size == 8) return (u64)w[0] | ((u64)w[1] << 32);
    else if constexpr (Storage<C>::size == 4) return (u64)w[0];
    else return (u64)(w[0] & 0xFFFFu);
}

/* Move the next element of the group to the front. Constant indices keep the words in registers, so one
 * non-unrolled loop (one inlined acc_push per path: a ~4 s compile instead of ~20 s for 16 storage pairs)
 * walks any group width. */
template <int C, int NW> DC_HD void group_advance(u32* w) {
    if constexpr (Storage<C>::size == 2) {
DC_UNROLL
        for (int k = 0; k + 1 < NW; ++k) w[k] = (w[k] >> 16) | (w[k + 1] << 16);
        w[NW - 1] >>= 16;
    } else {
        constexpr int step = Storage<C>::size / 4;
DC_UNROLL
        for (int k = 0; k + step < NW; ++k) w[k] = w[k + step];
    }
}

// ---- parameters -----------------------------------------------------------------------------------------
struct Params {
    double atol, rtol, rel_floor, overflow_at, underflow_at;
    int precision, emin, emax;
};

/* Params from a P_* vector whose entries are float64 bit patterns stored as int64 (the work table). */
DC_HD Params params_from_bits(const i64* w) {
    Params p;
    p.atol = i64_as_f64(w[P_ATOL]);
    p.rtol = i64_as_f64(w[P_RTOL]);
    p.rel_floor = i64_as_f64(w[P_REL_FLOOR]);
    p.precision = (int)i64_as_f64(w[P_PRECISION]);
    p.emin = (int)i64_as_f64(w[P_EMIN]);
    p.emax = (int)i64_as_f64(w[P_EMAX]);
    p.overflow_at = i64_as_f64(w[P_OVERFLOW]);
    p.underflow_at = i64_as_f64(w[P_UNDERFLOW]);
    return p;
}

// ---- per-element helpers (_numba_source.py, layout.py) ------------------------------------------------
// Python's max(a, b) / min(a, b): the first argument unless the second is strictly larger / smaller.
DC_HD double py_max(double a, double b) { return b > a ? b : a; }
DC_HD double py_min(double a, double b) { return b < a ? b : a; }
DC_HD i64 min_i64(i64 a, i64 b) { return b < a ? b : a; }

/* |d| in ULPs of the test format at the pair's larger magnitude (ulp_spacing of max(|r|, |t|)). The
 * spacing is a power of two 2**k; for normal spacings we multiply by the exact reciprocal 2**-k, which
 * rounds the same real number as the division (so the result is bit-identical) at a fraction of the cost
 * of a float64 divide. */
DC_HD double ulps_at(double abs_d, double magnitude, const Params& p) {
    int exponent = (int)((f64_as_i64(magnitude) >> 52) & 0x7FF) - 1023;
    exponent = exponent < p.emin ? p.emin : (exponent > p.emax ? p.emax : exponent);
    const int k = exponent - p.precision + 1;
    if (k >= -1022) return abs_d * i64_as_f64((i64)(1023 - k) << 52);
    return abs_d / i64_as_f64((i64)1 << (k + 1074));  // a float64 subnormal spacing (float64 test only)
}

/* Histogram bin of v = |d| >= 0 from its float64 bits (layout.hist_bin_from_bits). */
DC_HD int hist_bin(double v) {
    if (v == 0.0) return 0;
    if (v == inf64()) return NB - 1;
    const i64 bits = f64_as_i64(v);
    const int exponent = (int)((bits >> 52) & 0x7FF) - 1023;
    if (exponent < HIST_EMIN) return 1;
    if (exponent >= HIST_EMAX) return NB - 1;
    return 2 + (exponent - HIST_EMIN) * HIST_SUB + (int)((bits >> (52 - HIST_SUB_BITS)) & (HIST_SUB - 1));
}

// ---- the running accumulator of one thread (the locals of accumulate_range) -----------------------------
// Counts are 32-bit: one thread sees at most one tile's share (tiles hold < 2**31 elements).
struct Acc {
    int n, nf, nan_r, nan_t, nan_both, inf_r, inf_t, inf_both, mismatch, overflow, underflow, r_n, t_n;
    i64 first_nan_r, first_nan_t, first_inf_r, first_inf_t, argmax;
    double max_abs, sum_abs, sum_d2, sum_r2, sum_t2, sum_rt, max_rel, sum_rel, max_ulp, sum_ulp;
    double r_shift, r_s1, r_s2, r_min, r_max, t_shift, t_s1, t_s2, t_min, t_max;
};

DC_HD void acc_init(Acc& a) {
    a.n = a.nf = a.nan_r = a.nan_t = a.nan_both = a.inf_r = a.inf_t = a.inf_both = 0;
    a.mismatch = a.overflow = a.underflow = a.r_n = a.t_n = 0;
    a.first_nan_r = a.first_nan_t = a.first_inf_r = a.first_inf_t = NO_INDEX;
    a.argmax = -1;
    a.max_abs = -1.0;
    a.sum_abs = a.sum_d2 = a.sum_r2 = a.sum_t2 = a.sum_rt = 0.0;
    a.max_rel = a.sum_rel = a.max_ulp = a.sum_ulp = 0.0;
    a.r_shift = a.r_s1 = a.r_s2 = a.t_shift = a.t_s1 = a.t_s2 = 0.0;
    a.r_min = a.t_min = inf64();
    a.r_max = a.t_max = -inf64();
}

/* One side's finite value into its shifted sums (shifting by the first value keeps s2 - s1^2/n stable). */
DC_HD void side_push(int& n, double& shift, double& s1, double& s2, double& lo, double& hi, double x) {
    if (n == 0) shift = x;
    n += 1;
    const double dev = x - shift;
    s1 += dev;
    s2 += dev * dev;
    lo = py_min(lo, x);
    hi = py_max(hi, x);
}

/* Reduce one element pair (rv, tv) at flat index idx into a. Returns the |d| histogram bin of a finite
 * pair, or -1 when the pair is not finite (the caller adds the bin: per warp on the GPU). Visit elements
 * in increasing idx: the strict '>' then keeps the smallest index among equal maxima. */
DC_HD int acc_push(Acc& a, double rv, double tv, i64 idx, const Params& p) {
    a.n += 1;
    const bool r_nan = rv != rv, t_nan = tv != tv;
    const bool r_inf = rv == inf64() || rv == -inf64(), t_inf = tv == inf64() || tv == -inf64();
    if (r_nan) {
        a.nan_r += 1;
        a.first_nan_r = min_i64(a.first_nan_r, idx);
    } else if (r_inf) {
        a.inf_r += 1;
        a.first_inf_r = min_i64(a.first_inf_r, idx);
    } else {
        side_push(a.r_n, a.r_shift, a.r_s1, a.r_s2, a.r_min, a.r_max, rv);
        const double abs_r = rv < 0.0 ? -rv : rv;
        if (abs_r >= p.overflow_at) {
            a.overflow += 1;
        } else if (abs_r != 0.0 && abs_r <= p.underflow_at) {
            a.underflow += 1;
        }
    }
    if (t_nan) {
        a.nan_t += 1;
        a.first_nan_t = min_i64(a.first_nan_t, idx);
    } else if (t_inf) {
        a.inf_t += 1;
        a.first_inf_t = min_i64(a.first_inf_t, idx);
    } else {
        side_push(a.t_n, a.t_shift, a.t_s1, a.t_s2, a.t_min, a.t_max, tv);
    }
    if (r_nan || r_inf || t_nan || t_inf) {
        if (r_nan && t_nan) {
            a.nan_both += 1;
        } else if (r_inf && t_inf && rv == tv) {
            a.inf_both += 1;
        } else {
            a.mismatch += 1;
        }
        return -1;
    }
    a.nf += 1;
    const double d = tv - rv;
    const double abs_d = d < 0.0 ? -d : d;
    const double abs_r = rv < 0.0 ? -rv : rv;
    if (abs_d > a.max_abs) {
        a.max_abs = abs_d;
        a.argmax = idx;
    }
    a.sum_abs += abs_d;
    a.sum_d2 += d * d;
    a.sum_r2 += rv * rv;
    a.sum_t2 += tv * tv;
    a.sum_rt += rv * tv;
    const double rel = abs_d / py_max(abs_r, p.rel_floor);
    a.max_rel = py_max(a.max_rel, rel);
    a.sum_rel += rel;
    const double abs_t = tv < 0.0 ? -tv : tv;
    const double ulps = ulps_at(abs_d, py_max(abs_r, abs_t), p);
    a.max_ulp = py_max(a.max_ulp, ulps);
    a.sum_ulp += ulps;
    if (abs_d > p.atol + p.rtol * abs_r) a.mismatch += 1;
    return hist_bin(abs_d);
}

// ---- the mergeable state (layout.py) ----------------------------------------------------------------------
struct State {
    i64 i[NI];
    double f[NF];
};

DC_HD void state_identity(State& s) {
    for (int k = 0; k < NI; ++k) s.i[k] = 0;
    for (int k = 0; k < NF; ++k) s.f[k] = 0.0;
    for (int k = I_FIRST_NAN_R; k <= I_FIRST_INF_T; ++k) s.i[k] = NO_INDEX;
    s.i[I_ARGMAX] = -1;
    s.f[F_MAX_ABS] = -1.0;
    s.f[F_R_MIN] = s.f[F_T_MIN] = inf64();
    s.f[F_R_MAX] = s.f[F_T_MAX] = -inf64();
}

/* (mean, M2) from shifted sums (side_moments). */
DC_HD void side_moments(int n, double shift, double s1, double s2, double& mean, double& m2) {
    if (n == 0) {
        mean = 0.0;
        m2 = 0.0;
        return;
    }
    const double dn = (double)n;
    mean = shift + s1 / dn;
    const double x = s2 - s1 * s1 / dn;
    m2 = 0.0 > x ? 0.0 : x;  // Python's max(x, 0.0)
}

/* The state of a finished accumulator (the out_i/out_f writes at the end of accumulate_range). */
DC_HD State acc_state(const Acc& a) {
    State s;
    s.i[I_N] = a.n; s.i[I_NF] = a.nf;
    s.i[I_NAN_R] = a.nan_r; s.i[I_NAN_T] = a.nan_t; s.i[I_NAN_BOTH] = a.nan_both;
    s.i[I_INF_R] = a.inf_r; s.i[I_INF_T] = a.inf_t; s.i[I_INF_BOTH] = a.inf_both;
    s.i[I_MISMATCH] = a.mismatch;
    s.i[I_FIRST_NAN_R] = a.first_nan_r; s.i[I_FIRST_NAN_T] = a.first_nan_t;
    s.i[I_FIRST_INF_R] = a.first_inf_r; s.i[I_FIRST_INF_T] = a.first_inf_t;
    s.i[I_ARGMAX] = a.argmax;
    s.i[I_OVERFLOW] = a.overflow; s.i[I_UNDERFLOW] = a.underflow;
    s.i[I_NR] = a.r_n; s.i[I_NT] = a.t_n;
    s.f[F_MAX_ABS] = a.max_abs; s.f[F_SUM_ABS] = a.sum_abs; s.f[F_SUM_D2] = a.sum_d2;
    s.f[F_SUM_R2] = a.sum_r2; s.f[F_SUM_T2] = a.sum_t2; s.f[F_SUM_RT] = a.sum_rt;
    s.f[F_MAX_REL] = a.max_rel; s.f[F_SUM_REL] = a.sum_rel;
    s.f[F_MAX_ULP] = a.max_ulp; s.f[F_SUM_ULP] = a.sum_ulp;
    s.f[F_R_MIN] = a.r_min; s.f[F_R_MAX] = a.r_max;
    side_moments(a.r_n, a.r_shift, a.r_s1, a.r_s2, s.f[F_R_MEAN], s.f[F_R_M2]);
    s.f[F_T_MIN] = a.t_min; s.f[F_T_MAX] = a.t_max;
    side_moments(a.t_n, a.t_shift, a.t_s1, a.t_s2, s.f[F_T_MEAN], s.f[F_T_M2]);
    return s;
}

/* Chan, Golub & LeVeque's pairwise update of (mean, M2) (layout._merge_moments). */
DC_HD void merge_moments(double& d_mean, double& d_m2, i64 n_dst, double s_mean, double s_m2, i64 n_src) {
    if (n_src == 0) return;
    if (n_dst == 0) {
        d_mean = s_mean;
        d_m2 = s_m2;
        return;
    }
    const double n = (double)n_dst + (double)n_src;
    const double delta = s_mean - d_mean;
    d_mean = d_mean + delta * ((double)n_src / n);
    d_m2 = d_m2 + s_m2 + delta * delta * ((double)n_dst * (double)n_src / n);
}

/* Merge state s into d (layout.merge_into): argmax ties -> smallest index, firsts -> min, counts add. */
DC_HD void merge_into(State& d, const State& s) {
    if (s.f[F_MAX_ABS] > d.f[F_MAX_ABS] ||
        (s.f[F_MAX_ABS] == d.f[F_MAX_ABS] && s.i[I_ARGMAX] < d.i[I_ARGMAX])) {
        d.f[F_MAX_ABS] = s.f[F_MAX_ABS];
        d.i[I_ARGMAX] = s.i[I_ARGMAX];
    }
    merge_moments(d.f[F_R_MEAN], d.f[F_R_M2], d.i[I_NR], s.f[F_R_MEAN], s.f[F_R_M2], s.i[I_NR]);
    merge_moments(d.f[F_T_MEAN], d.f[F_T_M2], d.i[I_NT], s.f[F_T_MEAN], s.f[F_T_M2], s.i[I_NT]);
DC_UNROLL
    for (int k = 0; k < NI; ++k) {
        if (k >= I_FIRST_NAN_R && k <= I_FIRST_INF_T) {
            d.i[k] = min_i64(d.i[k], s.i[k]);
        } else if (k != I_ARGMAX) {
            d.i[k] += s.i[k];
        }
    }
    d.f[F_SUM_ABS] += s.f[F_SUM_ABS];
    d.f[F_SUM_D2] += s.f[F_SUM_D2];
    d.f[F_SUM_R2] += s.f[F_SUM_R2];
    d.f[F_SUM_T2] += s.f[F_SUM_T2];
    d.f[F_SUM_RT] += s.f[F_SUM_RT];
    d.f[F_SUM_REL] += s.f[F_SUM_REL];
    d.f[F_SUM_ULP] += s.f[F_SUM_ULP];
    d.f[F_MAX_REL] = py_max(d.f[F_MAX_REL], s.f[F_MAX_REL]);
    d.f[F_MAX_ULP] = py_max(d.f[F_MAX_ULP], s.f[F_MAX_ULP]);
    d.f[F_R_MAX] = py_max(d.f[F_R_MAX], s.f[F_R_MAX]);
    d.f[F_T_MAX] = py_max(d.f[F_T_MAX], s.f[F_T_MAX]);
    d.f[F_R_MIN] = py_min(d.f[F_R_MIN], s.f[F_R_MIN]);
    d.f[F_T_MIN] = py_min(d.f[F_T_MIN], s.f[F_T_MIN]);
}

/* A state row of ROW_W int64 words: I, then F as float64 bits (partial rows and output rows). */
DC_HD void write_row(i64* row, const State& s) {
    for (int k = 0; k < NI; ++k) row[k] = s.i[k];
    for (int k = 0; k < NF; ++k) row[NI + k] = f64_as_i64(s.f[k]);
}

DC_HD State read_row(const i64* row) {
    State s;
    for (int k = 0; k < NI; ++k) s.i[k] = row[k];
    for (int k = 0; k < NF; ++k) s.f[k] = i64_as_f64(row[NI + k]);
    return s;
}

// ---- tiles of the work table --------------------------------------------------------------------------------
/* Everything one block needs to reduce tile t: elements [start, stop) of one pair. */
struct Tile {
    const unsigned char* ref;
    const unsigned char* test;
    i64 stride_r, stride_t, start, stop, pair;
    int code_r, code_t;
    Params p;
};

DC_HD const i64* pair_record(const i64* table, i64 pair) { return table + HEADER_W + pair * PAIR_W; }

DC_HD const i64* tile_record(const i64* table, i64 t) {
    return table + HEADER_W + table[T_NPAIRS] * PAIR_W + t * TILE_W;
}

DC_HD Tile tile_from_table(const i64* table, i64 t) {
    const i64* tr = tile_record(table, t);
    const i64* pr = pair_record(table, tr[TR_PAIR]);
    Tile tl;
    tl.ref = (const unsigned char*)(u64)pr[PR_PTR_R];
    tl.test = (const unsigned char*)(u64)pr[PR_PTR_T];
    tl.stride_r = pr[PR_STRIDE_R];
    tl.stride_t = pr[PR_STRIDE_T];
    tl.code_r = (int)pr[PR_CODE_R];
    tl.code_t = (int)pr[PR_CODE_T];
    tl.pair = tr[TR_PAIR];
    tl.start = tr[TR_START];
    tl.stop = tr[TR_STOP];
    tl.p = params_from_bits(pr + PR_PARAMS);
    return tl;
}

// Scalar loads issued per thread before its elements are processed: memory-level parallelism.
constexpr int SCALAR_UNROLL = 4;

/* Elements per vector group: one 16-byte load of the wider operand (and 4-8 bytes of the narrower). */
template <int CR, int CT> struct Group {
    static constexpr int wide = Storage<CR>::size > Storage<CT>::size ? Storage<CR>::size : Storage<CT>::size;
    static constexpr int width = 16 / wide;
    static constexpr int words_r = width * Storage<CR>::size / 4;
    static constexpr int words_t = width * Storage<CT>::size / 4;
};

/* True when tile tl can be read with vector loads: unit strides and both group loads aligned. */
template <int CR, int CT> DC_HD bool vector_ok(const Tile& tl) {
    typedef Group<CR, CT> G;
    const u64 ar = (u64)(tl.ref + tl.start * Storage<CR>::size);
    const u64 at = (u64)(tl.test + tl.start * Storage<CT>::size);
    return tl.stride_r == 1 && tl.stride_t == 1 && ar % (4 * G::words_r) == 0 && at % (4 * G::words_t) == 0;
}

/* The vector part of a tile for thread tid of nthreads: groups tid, tid + nthreads, ... Every thread runs
 * the same number of rounds (lanes past the end push nothing and add bin -1), so the per-warp histogram
 * may use warp-synchronous intrinsics. Returns the position where the scalar tail starts. */
template <int CR, int CT, class Hist>
DC_HD i64 vector_part(const Tile& tl, int tid, int nthreads, Acc& a, Hist& hist) {
    typedef Group<CR, CT> G;
    const i64 ngroups = (tl.stop - tl.start) / G::width;
    for (i64 round = 0; round < ngroups; round += nthreads) {
        const i64 g = round + tid;
        const bool live = g < ngroups;
        const i64 pos = tl.start + g * G::width;
        u32 wr[G::words_r] = {}, wt[G::words_t] = {};
        if (live) {
            load_words<G::words_r>(tl.ref + pos * Storage<CR>::size, wr);
            load_words<G::words_t>(tl.test + pos * Storage<CT>::size, wt);
        }
DC_NO_UNROLL
        for (int j = 0; j < G::width; ++j) {
            const int b = live ? acc_push(a, decode<CR>(group_first<CR>(wr)), decode<CT>(group_first<CT>(wt)),
                                          pos + j, tl.p)
                               : -1;
            hist.add(b);
            group_advance<CR, G::words_r>(wr);
            group_advance<CT, G::words_t>(wt);
        }
    }
    return tl.start + ngroups * G::width;
}

/* Elements [from, tl.stop) one by one (strided or unaligned data, and the tail after the vector part);
 * SCALAR_UNROLL loads are in flight per thread before the elements are processed. */
template <int CR, int CT, class Hist>
DC_HD void scalar_part(const Tile& tl, i64 from, int tid, int nthreads, Acc& a, Hist& hist) {
    const i64 count = tl.stop - from;
    const i64 per_round = (i64)nthreads * SCALAR_UNROLL;
    for (i64 round = 0; round < count; round += per_round) {
        u64 rr[SCALAR_UNROLL], rt[SCALAR_UNROLL];
DC_UNROLL
        for (int u = 0; u < SCALAR_UNROLL; ++u) {
            const i64 k = round + (i64)u * nthreads + tid;
            rr[u] = rt[u] = 0;
            if (k < count) {
                rr[u] = load_raw<CR>(tl.ref, from + k, tl.stride_r);
                rt[u] = load_raw<CT>(tl.test, from + k, tl.stride_t);
            }
        }
DC_NO_UNROLL
        for (int u = 0; u < SCALAR_UNROLL; ++u) {
            const i64 k = round + (i64)u * nthreads + tid;
            const int b = k < count ? acc_push(a, decode<CR>(rr[0]), decode<CT>(rt[0]), from + k, tl.p) : -1;
            hist.add(b);
DC_UNROLL
            for (int v = 0; v + 1 < SCALAR_UNROLL; ++v) {  // rotate the next load to the front
                rr[v] = rr[v + 1];
                rt[v] = rt[v + 1];
            }
        }
    }
}

/* Thread tid's share of tile tl into a (its elements in increasing order), bins into hist. */
template <int CR, int CT, class Hist>
DC_HD void thread_tile(const Tile& tl, int tid, int nthreads, Acc& a, Hist& hist) {
    i64 from = tl.start;
    if (vector_ok<CR, CT>(tl)) from = vector_part<CR, CT>(tl, tid, nthreads, a, hist);
    scalar_part<CR, CT>(tl, from, tid, nthreads, a, hist);
}

/* The storage codes are per pair: pick the specialisation (uniform across a block, so no divergence). */
template <int CR, class Hist>
DC_HD void dispatch_test(const Tile& tl, int tid, int nthreads, Acc& a, Hist& hist) {
    switch (tl.code_t) {
        case S_F64: thread_tile<CR, S_F64>(tl, tid, nthreads, a, hist); break;
        case S_F32: thread_tile<CR, S_F32>(tl, tid, nthreads, a, hist); break;
        case S_F16: thread_tile<CR, S_F16>(tl, tid, nthreads, a, hist); break;
        case S_BF16: thread_tile<CR, S_BF16>(tl, tid, nthreads, a, hist); break;
        default: break;  // cupy_backend validates the codes before packing the table
    }
}

template <class Hist>
DC_HD void dispatch_tile(const Tile& tl, int tid, int nthreads, Acc& a, Hist& hist) {
    switch (tl.code_r) {
        case S_F64: dispatch_test<S_F64>(tl, tid, nthreads, a, hist); break;
        case S_F32: dispatch_test<S_F32>(tl, tid, nthreads, a, hist); break;
        case S_F16: dispatch_test<S_F16>(tl, tid, nthreads, a, hist); break;
        case S_BF16: dispatch_test<S_BF16>(tl, tid, nthreads, a, hist); break;
        default: break;
    }
}

}  // namespace dc
