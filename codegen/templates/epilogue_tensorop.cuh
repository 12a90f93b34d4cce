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
// (below), and written in whole runs of an NHWC row. (Measured on the H100, BF16 ResNet-50
// batch 32: 1.575 ms against 1.645 ms with the fragment stores, the 1 x 1 layers that write 256
// to 2048 channels 10-20% faster; the paper's layers within 1%.)
#pragma once

#include "copy.cuh"
#include "epilogue.cuh"
#include "numeric.cuh"

namespace im2win {

// ---- The staged epilogue --------------------------------------------------------------------
// The sums of the block tile go through shared memory first (the operand stages are free once
// the main loop is over), so that the output, and the residual, move in whole rows: each
// thread then takes 4 consecutive channels of one pixel at a time, 4 floats read from shared
// memory in one access, 4 residual elements loaded and 4 outputs stored in one access each
// (8 bytes of BF16 / FP16, 16 of float), consecutive threads on consecutive channels, so a
// warp writes one contiguous run of an NHWC output row, where the fragment stores wrote 4 bytes
// (a pair) per thread, spread over 8 pixels.
//
// Shared layout: BM rows of BN floats, 16-byte pieces XORed with 2 * (row % 4) within each
// group of 8 pieces. Why: a fragment store (8 bytes, half a warp per 128-byte phase) writes
// rows g = 0..3, pieces 2 nt + {0, 1} each, which the XOR spreads over the 8 pieces of one
// 128-byte line; a walk read (16 bytes, 8 lanes a phase) reads 8 consecutive pieces of one row,
// which the XOR only permutes. Both are free of bank conflicts (BN a multiple of 32).
//
// Where the operand stages hold fewer bytes than the block's sums (a 128x256 tile with 64-byte
// rows: 96 KiB of stages, 128 KiB of sums), the tile goes through in ROUNDS rounds of ROWS rows.
template <class Tile>
struct TensorOpStagedSums {
    static constexpr int ROW_BYTES = Tile::BN * 4;
    static constexpr int rows_per_round() {
        int rows = Tile::BM;
        while (rows * ROW_BYTES > Tile::SMEM_BYTES && rows % 2 == 0) {
            rows /= 2;
        }
        return rows;
    }
    static constexpr int ROWS = rows_per_round();
    static constexpr int ROUNDS = Tile::BM / ROWS;
    static_assert(Tile::BN % 32 == 0, "rows of whole 128-byte lines");
    static_assert(ROWS * ROW_BYTES <= Tile::SMEM_BYTES, "a round's sums fit in the operand stages' shared memory");
    static __device__ __forceinline__ int offset(int row, int col) {
        const int piece = (col / 4) ^ (2 * (row % 4));
        return row * ROW_BYTES + piece * 16 + (col % 4) * 4;
    }
};

template <class Tile, class Mma>
__device__ __forceinline__ void write_outputs_tensorop(const Mma& mma, unsigned char* shared,
    typename Tile::ElementY* __restrict__ y, const typename Tile::ElementY* __restrict__ bias,
    const typename Tile::ElementX* __restrict__ residual, const ConvParams& prm, long long j0, int n0) {
    using Types = typename Tile::Types;
    using ElementY = typename Tile::ElementY;
    using ElementX = typename Tile::ElementX;
    using Staged = TensorOpStagedSums<Tile>;
    static_assert(epilogue_supports<Types>, "the epilogue computes in float");
    constexpr int V = 4;                        // channels a thread moves per access
    constexpr int PER_ROW = Tile::BN / V;       // threads across one row of the tile
    constexpr int ITEMS = Staged::ROWS * PER_ROW / Tile::THREADS;   // per thread and round
    static_assert(Staged::ROWS * PER_ROW % Tile::THREADS == 0, "the walk covers a round in whole passes");
    constexpr bool FIXED_COLUMN = Tile::THREADS % PER_ROW == 0;   // a thread keeps its channels

    const int K = prm.k;
    const bool add_residual = prm.has_residual != 0;
    const bool vectors = K % V == 0 && im2win_aligned<V>(y) && (!add_residual || im2win_aligned<V>(residual));
    const float alpha = prm.alpha;
    const float beta = prm.beta;
    const int act = prm.activation;
    auto bias_of = [&](int k, float (&b)[V]) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
            b[e] = prm.has_bias && k + e < K ? Types::to_accumulator(bias[k + e]) : 0.0f;
        }
    };
    const int tid = threadIdx.x;

    // One round's rows: 4 channels of one pixel per item, from shared memory to the output.
    // (The bias is read here, once the sums have left the registers, not while they are live.)
    auto walk = [&](int first) {
        float b[V];
        if constexpr (FIXED_COLUMN) {
            bias_of(n0 + (tid % PER_ROW) * V, b);
        }
#pragma unroll 1
        for (int i = 0; i < ITEMS; ++i) {
            const int item = tid + i * Tile::THREADS;
            const int row = item / PER_ROW;   // of the round
            const int col = (item % PER_ROW) * V;
            const long long j = j0 + first + row;
            const int k = n0 + col;
            if (j >= prm.npq || k >= K) {
                continue;
            }
            if constexpr (!FIXED_COLUMN) {
                bias_of(k, b);
            }
            const float4 sum = *reinterpret_cast<const float4*>(shared + Staged::offset(row, col));
            float v[V] = {fmaf(alpha, sum.x, b[0]), fmaf(alpha, sum.y, b[1]), fmaf(alpha, sum.z, b[2]),
                fmaf(alpha, sum.w, b[3])};
            const long long at = j * K + k;
            const bool whole = vectors && k + V <= K;
            if (add_residual) {
                ElementX r[V];
                if (whole) {
                    im2win_load<V>(residual + at, r);
                } else {
#pragma unroll
                    for (int e = 0; e < V; ++e) {
                        r[e] = k + e < K ? residual[at + e] : ElementX(0.0f);
                    }
                }
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    v[e] = fmaf(beta, Types::to_accumulator(r[e]), v[e]);
                }
            }
            activate_all<V>(act, v);
            ElementY o[V];
#pragma unroll
            for (int e = 0; e < V; ++e) {
                o[e] = Types::template from_accumulator<ElementY>(v[e]);
            }
            if (whole) {
                im2win_store<V>(y + at, o);
            } else {
#pragma unroll
                for (int e = 0; e < V; ++e) {
                    if (k + e < K) {
                        y[at + e] = o[e];
                    }
                }
            }
        }
    };

    // Every copy into the stages has landed (the last ones are zero fills of stages past the
    // reduction) and every warp is done reading them: the stages become the staging area.
    im2win_cp_async_wait_group<0>();
    __syncthreads();
#pragma unroll 1
    for (int round = 0; round < Staged::ROUNDS; ++round) {
        const int first = round * Staged::ROWS;   // the round's first row of the tile
        if (round > 0) {
            __syncthreads();   // the walk of the round before has read its sums
        }
#pragma unroll
        for (int mt = 0; mt < Mma::MT; ++mt) {
#pragma unroll
            for (int half = 0; half < 2; ++half) {
                const int row = mma.row0 + mt * Mma::MT_ROWS + 8 * half - first;
                if (Staged::ROUNDS == 1 || (row >= 0 && row < Staged::ROWS)) {
#pragma unroll
                    for (int nt = 0; nt < Mma::NT; ++nt) {
                        float* at = reinterpret_cast<float*>(shared + Staged::offset(row, mma.col0 + 8 * nt));
                        at[0] = mma.acc[mt][nt][2 * half];
                        at[1] = mma.acc[mt][nt][2 * half + 1];
                    }
                }
            }
        }
        __syncthreads();
        walk(first);
    }
}

}  // namespace im2win
