// Host harness for kernels/drift.cuh: runs the CUDA backend's per-element and per-tile code on the CPU so
// CI (no GPU) can compare it with the NumPy oracle. Built with g++ by test_cupy_kernels.py and loaded with
// ctypes. Only the warp/block plumbing of drift.cu (shuffles, shared-memory bins, atomics) is not run here.
#include "drift.cuh"

using namespace dc;

namespace {

struct HostHist {
    i64* bins;
    void add(int b) {
        if (b >= 0) bins[b] += 1;
    }
};

void write_state(const State& s, i64* out_i, double* out_f) {
    for (int k = 0; k < NI; ++k) out_i[k] = s.i[k];
    for (int k = 0; k < NF; ++k) out_f[k] = s.f[k];
}

State read_state(const i64* in_i, const double* in_f) {
    State s;
    for (int k = 0; k < NI; ++k) s.i[k] = in_i[k];
    for (int k = 0; k < NF; ++k) s.f[k] = in_f[k];
    return s;
}

double load_value(const unsigned char* base, int code, i64 pos, i64 stride) {
    switch (code) {
        case S_F64: return decode<S_F64>(load_raw<S_F64>(base, pos, stride));
        case S_F32: return decode<S_F32>(load_raw<S_F32>(base, pos, stride));
        case S_F16: return decode<S_F16>(load_raw<S_F16>(base, pos, stride));
        default: return decode<S_BF16>(load_raw<S_BF16>(base, pos, stride));
    }
}

template <int CR> bool vector_ok_for(const Tile& tl) {
    switch (tl.code_t) {
        case S_F64: return vector_ok<CR, S_F64>(tl);
        case S_F32: return vector_ok<CR, S_F32>(tl);
        case S_F16: return vector_ok<CR, S_F16>(tl);
        default: return vector_ok<CR, S_BF16>(tl);
    }
}

}  // namespace

extern "C" {

// Layout constants, in a fixed order, so the test can check them against layout.py / params.py /
// cupy_backend.py. Returns how many were written.
int dc_constants(i64* out, int capacity) {
    const i64 values[] = {NI, NF, NB, NP, NO_INDEX, HIST_EMIN, HIST_EMAX, HIST_SUB_BITS,
                          I_N, I_NF, I_NAN_R, I_NAN_T, I_NAN_BOTH, I_INF_R, I_INF_T, I_INF_BOTH, I_MISMATCH,
                          I_FIRST_NAN_R, I_FIRST_NAN_T, I_FIRST_INF_R, I_FIRST_INF_T, I_ARGMAX, I_OVERFLOW,
                          I_UNDERFLOW, I_NR, I_NT,
                          F_MAX_ABS, F_SUM_ABS, F_SUM_D2, F_SUM_R2, F_SUM_T2, F_SUM_RT, F_MAX_REL, F_SUM_REL,
                          F_MAX_ULP, F_SUM_ULP, F_R_MIN, F_R_MAX, F_R_MEAN, F_R_M2, F_T_MIN, F_T_MAX, F_T_MEAN,
                          F_T_M2,
                          P_ATOL, P_RTOL, P_REL_FLOOR, P_PRECISION, P_EMIN, P_EMAX, P_OVERFLOW, P_UNDERFLOW,
                          S_F64, S_F32, S_F16, S_BF16,
                          HEADER_W, PAIR_W, TILE_W, ROW_W, OUT_W, PR_PTR_R, PR_PTR_T, PR_STRIDE_R, PR_STRIDE_T,
                          PR_CODE_R, PR_CODE_T, PR_FIRST, PR_END, PR_PARAMS, TR_PAIR, TR_START, TR_STOP};
    const int n = (int)(sizeof values / sizeof values[0]);
    for (int k = 0; k < n && k < capacity; ++k) out[k] = values[k];
    return n;
}

double dc_decode(int code, unsigned long long raw) {
    switch (code) {
        case S_F64: return decode<S_F64>(raw);
        case S_F32: return decode<S_F32>(raw);
        case S_F16: return decode<S_F16>(raw);
        default: return decode<S_BF16>(raw);
    }
}

int dc_hist_bin(double v) { return hist_bin(v); }

// accumulate_range of _numba_source.py, element by element through acc_push: out rows overwritten,
// hist added to. params is a P_* float64 vector.
void dc_accumulate(const unsigned char* ref, int code_r, i64 stride_r, const unsigned char* test, int code_t,
                   i64 stride_t, i64 start, i64 stop, i64 step, i64 base, const double* params, i64* out_i,
                   double* out_f, i64* hist) {
    i64 bits[NP];
    for (int k = 0; k < NP; ++k) bits[k] = f64_as_i64(params[k]);
    const Params p = params_from_bits(bits);
    Acc a;
    acc_init(a);
    HostHist h{hist};
    for (i64 pos = start; pos < stop; pos += step) {
        const double rv = load_value(ref, code_r, pos, stride_r);
        const double tv = load_value(test, code_t, pos, stride_t);
        h.add(acc_push(a, rv, tv, pos - base, p));
    }
    write_state(acc_state(a), out_i, out_f);
}

// merge_into of layout.py on (I, F) rows, in place into dst.
void dc_merge(i64* dst_i, double* dst_f, const i64* src_i, const double* src_f) {
    State d = read_state(dst_i, dst_f);
    merge_into(d, read_state(src_i, src_f));
    write_state(d, dst_i, dst_f);
}

void dc_identity(i64* out_i, double* out_f) {
    State s;
    state_identity(s);
    write_state(s, out_i, out_f);
}

// 1 when tile t of the table is read with vector loads (aligned, unit strides), else 0.
int dc_tile_vectorised(const i64* table, i64 t) {
    const Tile tl = tile_from_table(table, t);
    switch (tl.code_r) {
        case S_F64: return vector_ok_for<S_F64>(tl);
        case S_F32: return vector_ok_for<S_F32>(tl);
        case S_F16: return vector_ok_for<S_F16>(tl);
        default: return vector_ok_for<S_BF16>(tl);
    }
}

// Both kernels of drift.cu over a packed work table (cupy_backend.pack_table with host pointers), with
// `nthreads` emulated threads per block running the very thread_tile code of the GPU; thread states merge
// sequentially here instead of by shuffles. out has n_pairs rows of OUT_W words and must come zeroed
// (as cupy_backend zeroes it), partials has n_tiles rows of ROW_W words.
void dc_run_table(const i64* table, int nthreads, i64* partials, i64* out) {
    const i64 npairs = table[T_NPAIRS], ntiles = table[T_NTILES];
    for (i64 t = 0; t < ntiles; ++t) {
        const Tile tl = tile_from_table(table, t);
        HostHist h{out + tl.pair * OUT_W + ROW_W};
        State block;
        state_identity(block);
        for (int tid = 0; tid < nthreads; ++tid) {
            Acc a;
            acc_init(a);
            dispatch_tile(tl, tid, nthreads, a, h);
            merge_into(block, acc_state(a));
        }
        write_row(partials + t * ROW_W, block);
    }
    for (i64 pair = 0; pair < npairs; ++pair) {
        const i64* pr = pair_record(table, pair);
        State s;
        state_identity(s);
        for (i64 t = pr[PR_FIRST]; t < pr[PR_END]; ++t) merge_into(s, read_row(partials + t * ROW_W));
        write_row(out + pair * OUT_W, s);
    }
}

}  // extern "C"
