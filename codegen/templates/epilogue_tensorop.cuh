// im2win: the epilogue of the tensor-core kernels: what is written. The same function as the
// SIMT kernels' (epilogue.cuh), y = act(alpha * sum + bias + beta * residual), with its
// activation code and order of operations (fmaf(alpha, sum, bias), then fmaf(beta, residual,
// .), then activate_all), computed in float and converted to ElementY as it is stored.
//
// A thread's sums come as MMA fragments: for each 16 x 8 piece, pixels g and g + 8 (g = lane / 4)
// of the piece's rows and channels 2t, 2t + 1 (t = lane % 4) of its 8 columns (the mma.sync C
// fragment, which the warpgroup MMA's sums repeat, mma_warpgroup.cuh). The MMA policy says where
// its pieces lie: rows row0 + mt * MT_ROWS (+ 8), columns col0 + 8 nt, relative to the block's
// first pixel and channel. Stored straight from there, a warp would write 4 bytes (one channel
// pair) per thread spread over 8 pixels; so the sums are staged through shared memory first
// (below), and written in whole runs of the output, NHWC or NCHW. (Measured on the H100, BF16 ResNet-50
// batch 32: 1.575 ms against 1.645 ms with the fragment stores, the 1 x 1 layers that write 256
// to 2048 channels 10-20% faster; the paper's layers within 1%.)
#pragma once

#include "copy.cuh"
#include "epilogue.cuh"
#include "numeric.cuh"
#include "tile_tensorop.cuh"

namespace im2win {

// ---- The staged epilogue --------------------------------------------------------------------
// The sums of the block tile go through shared memory first (the operand stages are free once
// the main loop is over), so that the output, and the residual, move in whole runs: each
// thread then takes 4 sums at a time, 4 floats read from shared memory in one access, 4
// residual elements loaded and 4 outputs stored in one access each where they are contiguous
// and aligned (8 bytes of BF16 / FP16, 16 of float), consecutive threads on consecutive
// elements, so that a warp writes one contiguous run of the output, where the fragment stores
// wrote 4 bytes (a channel pair) per thread, spread over 8 pixels.
//
// Which 4 sums depends on the output's layout (ConvParams::layout, a run-time choice: the same
// kernel serves both, since the main loop always reads NHWC windows, from the input itself or
// from its NHWC copy):
//   NHWC  4 consecutive channels of one pixel (StagedRowsNhwc): a pixel's channels are
//         contiguous;
//   NCHW  4 consecutive pixels of one channel (StagedColumnsNchw): the block's BM pixels are
//         consecutive output pixels, so within one image they are contiguous in a channel's
//         P x Q plane.
// Each staging order has its shared layout, chosen so that both the fragment stores and the
// walk's reads are free of bank conflicts, and goes through in ROUNDS rounds when the operand
// stages hold fewer bytes than the block's sums (e.g. a 128x256 tile with 64-byte rows: 96 KiB
// of stages, 128 KiB of sums).

// The largest count of `units` (halving from `total`) whose `unit_bytes` each fit in `bytes`.
__host__ __device__ constexpr int im2win_units_per_round(int total, int unit_bytes, int bytes) {
    int units = total;
    while (units * unit_bytes > bytes && units % 2 == 0) {
        units /= 2;
    }
    return units;
}

// NHWC: BM rows (pixels) of BN floats, 16-byte pieces XORed with 2 * (row % 4) within each
// group of 8 pieces; rounds of ROWS rows. Why: a fragment store (8 bytes, half a warp per
// 128-byte phase) writes rows g = 0..3, pieces 2 nt + {0, 1} each, which the XOR spreads over
// the 8 pieces of one 128-byte line; a walk read (16 bytes, 8 lanes a phase) reads 8
// consecutive pieces of one row, which the XOR only permutes (BN a multiple of 32).
template <class Tile>
struct StagedRowsNhwc {
    static constexpr int ROW_BYTES = Tile::BN * 4;
    static constexpr int ROWS = im2win_units_per_round(Tile::BM, ROW_BYTES, Tile::STAGING_BYTES);
    static constexpr int ROUNDS = Tile::BM / ROWS;
    static constexpr int SECOND_COLUMN_FLOATS = 1;   // column col + 1 (col even): the next float
    static_assert(Tile::BN % 32 == 0, "rows of whole 128-byte lines");
    static_assert(ROWS * ROW_BYTES <= Tile::STAGING_BYTES, "a round's sums fit in the staging area");
    // Whether the sum of tile row `row`, column `col` is staged in round `round`.
    static __device__ __forceinline__ bool holds(int round, int row, int) {
        return ROUNDS == 1 || row / ROWS == round;
    }
    // Where the sum of row `row` of a round (tile row - round * ROWS), column `col` is staged
    // (unsigned: a row's swizzle is then its low bits, which a walk stepping by a multiple of
    // 4 rows keeps, and the compiler can see it).
    static __device__ __forceinline__ int offset_in_round(unsigned row, unsigned col) {
        const unsigned piece = (col / 4) ^ (2 * (row % 4));
        return int(row * ROW_BYTES + piece * 16 + (col % 4) * 4);
    }
    static __device__ __forceinline__ int offset(int round, int row, int col) {
        return offset_in_round(unsigned(row - round * ROWS), unsigned(col));
    }
};

// NCHW: BN columns (channels) of BM + 4 floats; rounds of COLS columns. A fragment store's
// 32 lanes write columns 2t + {0, 1} (t = lane % 4) at rows g (lane / 4): with columns
// BM + 4 floats apart (BM a multiple of 32), 2t columns are 8t banks apart, and rows g add
// g: 32 distinct banks. A walk read takes 4 consecutive rows of one column, consecutive
// lanes the next 4: one contiguous run (BM + 4 keeps every column 16-byte aligned).
template <class Tile>
struct StagedColumnsNchw {
    static constexpr int COLUMN_BYTES = (Tile::BM + 4) * 4;
    static constexpr int COLS = im2win_units_per_round(Tile::BN, COLUMN_BYTES, Tile::STAGING_BYTES);
    static constexpr int ROUNDS = Tile::BN / COLS;
    static constexpr int SECOND_COLUMN_FLOATS = COLUMN_BYTES / 4;   // column col + 1: the next column
    static_assert(Tile::BM % 32 == 0, "columns of whole 128-byte lines");
    static_assert(COLS % 8 == 0, "a round holds whole 8-channel MMA pieces");
    static_assert(COLS * COLUMN_BYTES <= Tile::STAGING_BYTES, "a round's sums fit in the staging area");
    static __device__ __forceinline__ bool holds(int round, int, int col) {
        return ROUNDS == 1 || col / COLS == round;
    }
    static __device__ __forceinline__ int offset(int round, int row, int col) {
        return (col - round * COLS) * COLUMN_BYTES + row * 4;
    }
};

// What the walks share: where they write, the epilogue's scalars and the bias. The output
// `y`, or, for a split block, `part`, its slice of the partial sums (float): then the block
// writes alpha * sum alone (no bias, residual or activation: the split reduction applies them
// to the complete sums). Both go through the same staging and walks, the destination chosen
// only at each store, so that the kernel keeps one register allocation (fragment stores of
// the partial sums, a second way out of the main loop, cost the 64 x 64 warp tiles 28 bytes of
// spills on sm_80; a second instantiation of the walks for float outputs, 40). SPLITS: whether
// the kernel splits at all (Conv2dFpropTensorOp); without, `part` is never read.
template <class Tile, bool SPLITS>
struct TensorOpEpilogueArgs {
    using Types = typename Tile::Types;
    using ElementY = typename Tile::ElementY;
    static constexpr int V = 4;   // sums a thread moves per access
    ElementY* __restrict__ y;
    float* __restrict__ part;     // null unless the block writes partial sums
    const typename Tile::ElementY* __restrict__ bias;
    const typename Tile::ElementX* __restrict__ residual;
    float alpha;
    float beta;
    int act;
    bool add_residual;
    bool add_bias;

    __device__ __forceinline__ float bias_of(const ConvParams& prm, int k) const {
        return add_bias && k < prm.k ? Types::to_accumulator(bias[k]) : 0.0f;
    }

    // act(alpha * sum + bias + beta * residual) of V sums, residual r (ignored without one).
    __device__ __forceinline__ void finish(const float (&sum)[V], const float (&b)[V],
        const typename Tile::ElementX (&r)[V], float (&v)[V]) const {
#pragma unroll
        for (int e = 0; e < V; ++e) {
            v[e] = fmaf(alpha, sum[e], b[e]);
            if (add_residual) {
                v[e] = fmaf(beta, Types::to_accumulator(r[e]), v[e]);
            }
        }
        activate_all<V>(act, v);
    }

    // Whether the block writes partial sums.
    __device__ __forceinline__ bool partial() const {
        if constexpr (SPLITS) {
            return part != nullptr;
        } else {
            return false;
        }
    }

    // Whether output index `at` of the destination starts a V-aligned vector.
    __device__ __forceinline__ bool aligned(long long at) const {
        return partial() ? im2win_aligned<V>(part + at) : im2win_aligned<V>(y + at);
    }

    // V results at `at`, one vector access (aligned: the caller checked), converted to the
    // output type unless they are partial sums.
    __device__ __forceinline__ void store_vector(long long at, const float (&v)[V]) const {
        if (partial()) {
            im2win_store<V>(part + at, v);
            return;
        }
        ElementY o[V];
#pragma unroll
        for (int e = 0; e < V; ++e) {
            o[e] = Types::template from_accumulator<ElementY>(v[e]);
        }
        im2win_store<V>(y + at, o);
    }

    // One result at `at`.
    __device__ __forceinline__ void store_one(long long at, float v) const {
        if (partial()) {
            part[at] = v;
        } else {
            y[at] = Types::template from_accumulator<ElementY>(v);
        }
    }
};

// The thread's index within its MMA team. Hidden from the optimiser in a persistent block
// (mainloop_warp_specialized.cuh), which walks once per tile: what a walk derives from it
// would otherwise be computed once, before the tile loop, and held in registers (or spilled)
// through the main loop, like the staging addresses (stage_and_walk).
template <class Tile>
__device__ __forceinline__ unsigned thread_in_team() {
    unsigned tid = Tile::MMA_GROUPS > 1 ? threadIdx.x % Tile::THREADS : threadIdx.x;
    if constexpr (Tile::WARP_SPECIALIZED) {
        asm volatile("" : "+r"(tid));
    }
    return tid;
}

// The walks below keep each item cheap: what is the same for every item of a thread (its
// column and bias in NHWC, its pixels' image and place in NCHW, the round's first output index,
// how many of its rows exist) is worked out once per round, and an item then costs a compare,
// one shared load, an index (a 64-bit base plus an offset), the epilogue's arithmetic and one
// store. (Measured in ncu on the H100, bf16 conv8: the walk with everything recomputed per item,
// 64-bit division and tests included, took 62 instructions an item, 40% of a persistent
// kernel's instructions.)

// NHWC walk of one round: 4 channels of one pixel per item. A thread keeps one column (its 4
// channels and their bias) when THREADS is a multiple of the threads across a row (FIXED_COLUMN:
// every tile but 128 x 96), stepping down ROW_STEP rows an item.
template <class Tile, class Ep>
__device__ __forceinline__ void walk_nhwc(const Ep& ep, const unsigned char* shared,
    const ConvParams& prm, long long j0, int n0, int round) {
    using Staged = StagedRowsNhwc<Tile>;
    using ElementX = typename Tile::ElementX;
    constexpr int V = Ep::V;
    constexpr int PER_ROW = Tile::BN / V;       // threads across one row of the tile
    constexpr int ITEMS = Staged::ROWS * PER_ROW / Tile::THREADS;   // per thread and round
    static_assert(Staged::ROWS * PER_ROW % Tile::THREADS == 0, "the walk covers a round in whole passes");
    constexpr bool FIXED_COLUMN = Tile::THREADS % PER_ROW == 0;
    constexpr int ROW_STEP = Tile::THREADS / PER_ROW;   // with FIXED_COLUMN
    const int K = prm.k;
    const bool vectors = K % V == 0 && ep.aligned(0) && (!ep.add_residual || im2win_aligned<V>(ep.residual));
    const unsigned tid = thread_in_team<Tile>();
    // The round's first pixel, its output index, and how many of its rows exist (the last
    // tile of the grid may run past the last pixel).
    const long long first = j0 + (long long)round * Staged::ROWS;
    const long long first_at = first * K + n0;
    const long long pixels_left = prm.npq - first;
    const int rows = pixels_left < Staged::ROWS ? int(pixels_left) : Staged::ROWS;
    float b[V];
    auto load_bias = [&](int k) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
            b[e] = ep.bias_of(prm, k + e);
        }
    };
    if constexpr (FIXED_COLUMN) {
        load_bias(n0 + int(tid % PER_ROW) * V);
    }
#pragma unroll 1
    for (int i = 0; i < ITEMS; ++i) {
        // Row (of the round) and column (of the tile) of the item.
        const int row = FIXED_COLUMN ? int(tid / PER_ROW) + i * ROW_STEP : int((tid + i * Tile::THREADS) / PER_ROW);
        const int col = FIXED_COLUMN ? int(tid % PER_ROW) * V : int((tid + i * Tile::THREADS) % PER_ROW) * V;
        const int k = n0 + col;
        if (row >= rows || k >= K) {
            continue;
        }
        if constexpr (!FIXED_COLUMN) {
            load_bias(k);
        }
        const float4 s4 = *reinterpret_cast<const float4*>(shared + Staged::offset_in_round(unsigned(row), unsigned(col)));
        const float sum[V] = {s4.x, s4.y, s4.z, s4.w};
        const long long at = first_at + (long long)row * K + col;
        const bool whole = vectors && k + V <= K;
        ElementX r[V];
        if (ep.add_residual) {
            if (whole) {
                im2win_load<V>(ep.residual + at, r);
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    r[e] = k + e < K ? ep.residual[at + e] : ElementX(0.0f);
                }
            }
        }
        float v[V];
        ep.finish(sum, b, r, v);
        if (whole) {
            ep.store_vector(at, v);
        } else {
#pragma unroll
            for (int e = 0; e < V; ++e) {
                if (k + e < K) {
                    ep.store_one(at + e, v[e]);
                }
            }
        }
    }
}

// NCHW walk of one round: 4 consecutive pixels of one channel per item. Pixel j = n * PQ + pq
// sits at Y[(n * K + k) * PQ + pq]: the 4 pixels are one run when they lie in one image, and
// one access when that run is also aligned; else they go one by one. A thread keeps its 4
// pixels (THREADS is a multiple of the threads down a column, FIXED_ROW: every tile), so their
// image, place and whether they form a run are worked out once; its channel steps by COL_STEP
// an item.
template <class Tile, class Ep>
__device__ __forceinline__ void walk_nchw(const Ep& ep, const unsigned char* shared,
    const ConvParams& prm, long long j0, int n0, int round) {
    using Staged = StagedColumnsNchw<Tile>;
    using ElementX = typename Tile::ElementX;
    constexpr int V = Ep::V;
    constexpr int PER_COLUMN = Tile::BM / V;    // threads down one column of the tile
    constexpr int ITEMS = Staged::COLS * PER_COLUMN / Tile::THREADS;   // per thread and round
    static_assert(Staged::COLS * PER_COLUMN % Tile::THREADS == 0, "the walk covers a round in whole passes");
    static_assert(Tile::THREADS % PER_COLUMN == 0, "a thread keeps its pixels (FIXED_ROW)");
    constexpr int COL_STEP = Tile::THREADS / PER_COLUMN;
    const int K = prm.k;
    const long long pq = (long long)prm.p * prm.q;
    const unsigned tid = thread_in_team<Tile>();
    const int row = int(tid % PER_COLUMN) * V;   // of the tile: pixels j .. j + V - 1
    const long long j = j0 + row;
    const long long n = Divider(pq).div(j);
    const long long p0 = j - n * pq;
    const long long image_at = n * K * pq + p0;   // channel 0 of pixel j
    // One run: all 4 pixels exist and lie in image n.
    const bool run = p0 + V <= pq && j + V <= prm.npq;
    // Where pixel j + e lies in channel k, for pixels that do not form a run.
    auto place = [&](int e, int k) {
        long long p = p0 + e;
        long long m = n;
        while (p >= pq) {   // pq may be smaller than V
            p -= pq;
            ++m;
        }
        return (m * K + k) * pq + p;
    };
#pragma unroll 1
    for (int i = 0; i < ITEMS; ++i) {
        const int col = round * Staged::COLS + int(tid / PER_COLUMN) + i * COL_STEP;   // of the tile
        const int k = n0 + col;
        if (j >= prm.npq || k >= K) {
            continue;
        }
        const float4 s4 = *reinterpret_cast<const float4*>(shared + Staged::offset(round, row, col));
        const float sum[V] = {s4.x, s4.y, s4.z, s4.w};
        const float bk = ep.bias_of(prm, k);
        const float b[V] = {bk, bk, bk, bk};
        const long long at = image_at + (long long)k * pq;
        const bool whole = run && ep.aligned(at) && (!ep.add_residual || im2win_aligned<V>(ep.residual + at));
        ElementX r[V];
        if (ep.add_residual) {
            if (whole) {
                im2win_load<V>(ep.residual + at, r);
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    r[e] = j + e < prm.npq ? ep.residual[run ? at + e : place(e, k)] : ElementX(0.0f);
                }
            }
        }
        float v[V];
        ep.finish(sum, b, r, v);
        if (whole) {
            ep.store_vector(at, v);
        } else {
#pragma unroll
            for (int e = 0; e < V; ++e) {
                if (j + e < prm.npq) {
                    ep.store_one(run ? at + e : place(e, k), v[e]);
                }
            }
        }
    }
}

// Stages the MMA's sums in `Staged` order, one round at a time, and walks each round.
template <class Tile, class Staged, class Mma, class Walk>
__device__ __forceinline__ void stage_and_walk(const Mma& mma, unsigned char* shared, Walk&& walk) {
    // The fragment's first row and column, hidden from the optimiser in a persistent block
    // (mainloop_warp_specialized.cuh), which calls this once per tile: the compiler would
    // otherwise compute every fragment's staging address once, before the tile loop, and keep
    // them all in registers (or spill them) through the main loop; recomputed, they are a few
    // ALU instructions a tile.
    int row0 = mma.row0;
    int col0 = mma.col0;
    if constexpr (Tile::WARP_SPECIALIZED) {
        asm volatile("" : "+r"(row0), "+r"(col0));
    }
#pragma unroll 1
    for (int round = 0; round < Staged::ROUNDS; ++round) {
        if (round > 0) {
            mma_warps_sync<Tile>();   // the walk of the round before has read its sums
        }
#pragma unroll
        for (int mt = 0; mt < Mma::MT; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = row0 + mt * Mma::MT_ROWS + 8 * half;
#pragma unroll
                for (int nt = 0; nt < Mma::NT; ++nt) {
                    const int col = col0 + 8 * nt;
                    if (Staged::holds(round, row, col)) {
                        float* at = reinterpret_cast<float*>(shared + Staged::offset(round, row, col));
                        at[0] = mma.acc[mt][nt][2 * half];
                        // Column col + 1: the next float in a row (NHWC), the next column (NCHW).
                        at[Staged::SECOND_COLUMN_FLOATS] = mma.acc[mt][nt][2 * half + 1];
                    }
                }
            }
        }
        mma_warps_sync<Tile>();
        walk(round);
    }
}

// The block's outputs, or, in a kernel that SPLITS, with gridDim.z > 1 its split's partial sums
// (alpha * sum, float) at their outputs' indices in slice blockIdx.z of the partial buffer
// that `y` then points to.
template <class Tile, bool SPLITS, class Mma>
__device__ __forceinline__ void write_outputs_tensorop(const Mma& mma, unsigned char* shared,
    typename Tile::ElementY* __restrict__ y, const typename Tile::ElementY* __restrict__ bias,
    const typename Tile::ElementX* __restrict__ residual, const ConvParams& prm, long long j0, int n0) {
    static_assert(epilogue_supports<typename Tile::Types>, "the epilogue computes in float");
    const bool split = SPLITS && gridDim.z > 1;
    float* part = split ? reinterpret_cast<float*>(y) + (long long)blockIdx.z * prm.npq * prm.k : nullptr;
    const TensorOpEpilogueArgs<Tile, SPLITS> ep{y, part, bias, residual, prm.alpha, prm.beta,
        split ? int(IM2WIN_IDENTITY) : prm.activation, !split && prm.has_residual != 0, !split && prm.has_bias != 0};

    // Every copy into the stages has landed (the last ones are zero fills of stages past the
    // reduction, or the next share's) and every warp is done reading them: the stages become
    // the staging area.
    im2win_cp_async_wait_group<0>();
    mma_warps_sync<Tile>();
    if (prm.layout == IM2WIN_NCHW) {
        stage_and_walk<Tile, StagedColumnsNchw<Tile>>(mma, shared, [&](int round) { walk_nchw<Tile>(ep, shared, prm, j0, n0, round); });
    } else {
        stage_and_walk<Tile, StagedRowsNhwc<Tile>>(mma, shared, [&](int round) { walk_nhwc<Tile>(ep, shared, prm, j0, n0, round); });
    }
}

}  // namespace im2win
