// im2win: the tile hierarchy of the tensor-core kernels, and where a stage's operands sit in
// shared memory (XOR-swizzled rows read with ldmatrix).
//
// The GEMM of the tensor-core convolution is laid out the other way round from the SIMT
// kernels' (tile_shape.cuh): rows are output pixels, columns output channels,
//   Y[j][k] = sum over kk of Act[j][kk] * F[k][kk],   j = (n*P + p)*Q + q,  kk = (r*S + s)*C + c,
// so that an accumulator fragment holds pairs of neighbouring channels of one pixel, which are
// neighbours in an NHWC output, and both operands are reduction-major in memory: the gathered
// window of a pixel (NHWC: channels fastest) and a KRSC filter row. The mma.sync operands are
// then "row" (A = Act, M x K) and "col" (B = F, K x N) without any transposition.
//
// Sizes: a block computes BM pixels x BN channels, walking the reduction one stage of
// ROW_BYTES bytes per row at a time (BK elements: 32 two-byte elements or 16 floats with
// 64-byte rows); its warps are a WARPS_M x WARPS_N grid of WM x WN warp tiles; STAGES stages
// of both operands are in flight in dynamic shared memory.
#pragma once

#include "common.cuh"
#include "numeric.cuh"

namespace im2win {

// One 16-byte piece of a shared row: what one cp.async moves and one row of an 8x8 ldmatrix
// matrix is (8 two-byte elements, 4 floats).
constexpr int TENSOROP_CHUNK_BYTES = 16;

template <class Types_, int BM_, int BN_, int WM_, int WN_, int STAGES_, int ROW_BYTES_ = 64>
struct TensorOpTileShape {
    using Types = Types_;
    using ElementX = typename Types::ElementX;
    using ElementF = typename Types::ElementF;
    using ElementY = typename Types::ElementY;
    using ElementAcc = typename Types::ElementAcc;
    static_assert(sizeof(ElementX) == sizeof(ElementF), "both operands of one MMA have one element size");
    static constexpr int ELEMENT_BYTES = (int)sizeof(ElementX);

    static constexpr int BM = BM_;   // output pixels per block (GEMM rows)
    static constexpr int BN = BN_;   // output channels per block (GEMM columns)
    static constexpr int WM = WM_;   // pixels per warp
    static constexpr int WN = WN_;   // channels per warp
    static constexpr int STAGES = STAGES_;
    static constexpr int WARPS_M = BM / WM;
    static constexpr int WARPS_N = BN / WN;
    static constexpr int WARPS = WARPS_M * WARPS_N;
    static constexpr int THREADS = 32 * WARPS;
    static_assert(WARPS_M * WM == BM && WARPS_N * WN == BN, "warp tiles cover the block");
    // The MMA is m16n8; B fragments are loaded two n-tiles (16 channels) per ldmatrix.x4.
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tiles are whole 16x16 pieces");

    // A stage: each pixel row and each channel row holds ROW_BYTES bytes of the reduction.
    static constexpr int ROW_BYTES = ROW_BYTES_;
    static constexpr int CHUNKS = ROW_BYTES / TENSOROP_CHUNK_BYTES;   // 16-byte pieces per row
    static_assert(CHUNKS == 2 || CHUNKS == 4 || CHUNKS == 8, "rows of 32, 64 or 128 bytes");
    static constexpr int CHUNK_ELEMENTS = TENSOROP_CHUNK_BYTES / ELEMENT_BYTES;   // 8 or 4
    static constexpr int BK = ROW_BYTES / ELEMENT_BYTES;                           // reduction per stage

    // Copies: a pass of the block's threads fills ROWS_PER_PASS whole rows, thread tid taking
    // piece tid % CHUNKS of row tid / CHUNKS; a warp so fills 32 / CHUNKS rows, contiguous
    // bytes of shared memory, and reads whole 16-byte pieces of consecutive reduction indices.
    static constexpr int ROWS_PER_PASS = THREADS / CHUNKS;
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "copy passes cover the tile rows");
    static constexpr int A_PASSES = BM / ROWS_PER_PASS;
    static constexpr int B_PASSES = BN / ROWS_PER_PASS;

    // Shared memory: STAGES x (A rows, then B rows).
    static constexpr int A_STAGE_BYTES = BM * ROW_BYTES;
    static constexpr int B_STAGE_BYTES = BN * ROW_BYTES;
    static constexpr int STAGE_BYTES = A_STAGE_BYTES + B_STAGE_BYTES;
    static constexpr int SMEM_BYTES = STAGES * STAGE_BYTES;
};

// Where 16-byte piece `chunk` of row `row` of a stage's operand sits (bytes from the operand's
// start): rows are ROW_BYTES apart, and the piece index is XORed with a function of the row.
//
// Why: ldmatrix reads an 8x8 matrix as 8 rows of one piece each (one piece column), and a
// cp.async writes one piece. Unswizzled, the 8 rows of a column would lie ROW_BYTES apart: with
// 64-byte rows every second row is 128 bytes (all 32 banks) further, a 4-way bank conflict.
// The XOR gives the 8 rows of any piece column 8 different 16-byte bank groups: rows come in
// groups of G = 8 / CHUNKS that share one 128-byte line (G = 2 for 64-byte rows) and differ
// in which half (quarter) of the line they are in; groups are given distinct piece
// permutations, row group t XORing the piece with t % CHUNKS. The same function places the
// copies and the reads, so they agree by construction; copies of a warp still fill whole
// contiguous rows.
template <int ROW_BYTES>
struct SwizzledRows {
    static constexpr int CHUNKS = ROW_BYTES / TENSOROP_CHUNK_BYTES;
    static constexpr int ROWS_PER_LINE = 8 / CHUNKS;
    static __device__ __forceinline__ int swizzle(int row) { return (row / ROWS_PER_LINE) % CHUNKS; }
    static __device__ __forceinline__ int offset(int row, int chunk) {
        return row * ROW_BYTES + ((chunk ^ swizzle(row)) * TENSOROP_CHUNK_BYTES);
    }
};

// Runs f on every pair of float sums at one index of two accumulator arrays [MT][NT][4] (the
// layout of both MMA policies: one C fragment of 4 sums per 16 x 8 piece), fully unrolled so
// that every index is a compile-time constant and the sums stay in registers.
template <int MT, int NT, class F>
__device__ __forceinline__ void for_each_sum_pair(float (&a)[MT][NT][4], float (&b)[MT][NT][4], F&& f) {
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                f(a[mt][nt][e], b[mt][nt][e]);
            }
        }
    }
}

// Runs f on every float sum of a thread's MMA accumulators acc[MT][NT][4].
template <int MT, int NT, class F>
__device__ __forceinline__ void for_each_sum(float (&acc)[MT][NT][4], F&& f) {
    for_each_sum_pair(acc, acc, [&](float& sum, float&) { f(sum); });
}

// ldmatrix.x4: four 8x8 matrices of 16-bit elements; lanes 8i .. 8i+7 give the row addresses
// of matrix i (16 bytes each, in shared memory), and each lane receives one 32-bit register
// per matrix: of matrix i, row lane / 4, elements 2 (lane % 4) and 2 (lane % 4) + 1. Read as
// 32-bit elements (TF32), that is element lane % 4 of a row of 4: the same instruction loads
// the TF32 fragments.
__device__ __forceinline__ void ldmatrix_x4(unsigned int (&d)[4], unsigned int shared_address) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(d[0]), "=r"(d[1]), "=r"(d[2]), "=r"(d[3])
                 : "r"(shared_address));
#else
    (void)shared_address;
    d[0] = d[1] = d[2] = d[3] = 0;
#endif
}

}  // namespace im2win
