/* drift.cu: the CuPy backend's kernels. Many pairs are reduced in one launch over a device-side work
 * table (drift.cuh: pair records with raw pointers, strides, storage codes and params; tile records
 * (pair, start, stop)), then one tiny launch merges each pair's per-tile partial rows.
 *
 *   drift_tiles  : a few blocks per SM loop over the tiles. Each thread reduces its share of a tile
 *                  (128-bit vector loads where aligned, a scalar tail), the block merges the thread states
 *                  with warp shuffles and writes one partial row per tile. |d| bins go to per-warp shared
 *                  histograms, flushed (nonzero bins only) with 64-bit atomics into the pair's output
 *                  histogram when the block moves to another pair.
 *   drift_finish : one warp per pair merges its partial rows into the pair's output row.
 *
 * The host (cupy_backend.py) zeroes the output buffer, launches both kernels on one stream and copies the
 * small output rows back. Compile with --fmad=false (see drift.cuh).
 */
#include "drift.cuh"

using namespace dc;

constexpr int BLOCK = 256;               // threads of drift_tiles (cupy_backend.BLOCK)
constexpr int WARPS = BLOCK / 32;
constexpr int MIN_BLOCKS_PER_SM = 2;     // caps registers at 128 so two blocks fit on an SM
constexpr int FINISH_BLOCK = 128;        // drift_finish: one warp per pair (cupy_backend.FINISH_BLOCK)
constexpr unsigned FULL = 0xFFFFFFFFu;
// A warp's shared-memory bin is 32-bit: flush before any bin could pass 2**32 even on one huge pair.
constexpr i64 FLUSH_EVERY = (i64)1 << 31;

/* Per-warp histogram in shared memory. add() is called by all 32 lanes together (thread_tile keeps its
 * rounds uniform), so a warp whose live lanes share one bin (identical layers: all in bin 0) makes one
 * atomic instead of 32 conflicting ones. */
struct WarpHist {
    u32* bins;

    __device__ __forceinline__ void add(int b) {
#if __CUDA_ARCH__ >= 800
        const u32 lo = __reduce_min_sync(FULL, b < 0 ? 0xFFFFFFFFu : (u32)b);
        const u32 hi = __reduce_max_sync(FULL, b < 0 ? 0u : (u32)b);
        if (lo == hi) {  // every live lane has bin lo (with no live lane lo > hi)
            const u32 live = __popc(__ballot_sync(FULL, b >= 0));
            if ((threadIdx.x & 31) == 0) atomicAdd(bins + lo, live);
            return;
        }
#endif
        if (b >= 0) atomicAdd(bins + b, 1u);
    }
};

/* Tree-merge the states of a warp with shuffles; lane 0 ends with the merge of all 32. */
__device__ __forceinline__ void warp_merge(State& s) {
#pragma unroll 1
    for (int offset = 16; offset > 0; offset >>= 1) {
        State o;
#pragma unroll
        for (int k = 0; k < NI; ++k) o.i[k] = __shfl_down_sync(FULL, s.i[k], offset);
#pragma unroll
        for (int k = 0; k < NF; ++k) o.f[k] = __shfl_down_sync(FULL, s.f[k], offset);
        merge_into(s, o);  // lanes >= 32 - offset merge garbage, but only lane 0's result is used
    }
}

/* Merge the states of the whole block; thread 0 ends with the result. Leaves `scratch` free for reuse. */
__device__ __forceinline__ void block_merge(State& s, State* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    warp_merge(s);
    if (lane == 0) scratch[warp] = s;
    __syncthreads();
    if (warp == 0) {
        if (lane < WARPS) {
            s = scratch[lane];
        } else {
            state_identity(s);
        }
        warp_merge(s);
    }
    __syncthreads();
}

/* Add the block's per-warp bins (nonzero ones only) to the pair's uint64 histogram and zero them. */
__device__ __forceinline__ void flush_hist(u32 (*bins)[NB], u64* pair_hist) {
    for (int b = threadIdx.x; b < NB; b += BLOCK) {
        u64 count = 0;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) {
            count += bins[w][b];
            bins[w][b] = 0;
        }
        if (count) atomicAdd(pair_hist + b, count);
    }
}

/* Reduce every tile of the table into partials[t] (ROW_W words); histograms into out's pair rows. */
extern "C" __global__ void __launch_bounds__(BLOCK, MIN_BLOCKS_PER_SM)
drift_tiles(const i64* __restrict__ table, i64* __restrict__ partials, i64* __restrict__ out) {
    __shared__ u32 bins[WARPS][NB];
    __shared__ State scratch[WARPS];
    for (int b = threadIdx.x; b < WARPS * NB; b += BLOCK) bins[b / NB][b % NB] = 0;
    __syncthreads();

    const i64 ntiles = table[T_NTILES];
    i64 unflushed = 0;
    WarpHist hist{bins[threadIdx.x >> 5]};
    for (i64 t = blockIdx.x; t < ntiles; t += gridDim.x) {
        const Tile tl = tile_from_table(table, t);
        Acc a;
        acc_init(a);
        dispatch_tile(tl, (int)threadIdx.x, BLOCK, a, hist);
        State s = acc_state(a);
        block_merge(s, scratch);  // also orders every bin add of the tile before the flush below
        if (threadIdx.x == 0) write_row(partials + t * ROW_W, s);

        // Keep bins across consecutive tiles of one pair (a large pair): flush when the pair changes.
        unflushed += tl.stop - tl.start;
        const i64 next = t + gridDim.x;
        if (next >= ntiles || tile_record(table, next)[TR_PAIR] != tl.pair || unflushed >= FLUSH_EVERY) {
            flush_hist(bins, (u64*)(out + tl.pair * OUT_W + ROW_W));
            unflushed = 0;
            __syncthreads();
        }
    }
}

/* One warp per pair: merge its tiles' partial rows (identity for an empty pair) into out's pair row. */
extern "C" __global__ void __launch_bounds__(FINISH_BLOCK)
drift_finish(const i64* __restrict__ table, const i64* __restrict__ partials, i64* __restrict__ out) {
    const i64 pair = (i64)blockIdx.x * (FINISH_BLOCK / 32) + (threadIdx.x >> 5);
    const int lane = threadIdx.x & 31;
    if (pair >= table[T_NPAIRS]) return;  // whole warps leave together: the shuffles stay full-warp
    const i64* pr = pair_record(table, pair);
    State s;
    state_identity(s);
    for (i64 t = pr[PR_FIRST] + lane; t < pr[PR_END]; t += 32) merge_into(s, read_row(partials + t * ROW_W));
    warp_merge(s);
    if (lane == 0) write_row(out + pair * OUT_W, s);
}
