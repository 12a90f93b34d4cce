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

// The most dynamic shared memory a block may have on sm_90, where the warp-specialised kernels
// run (227 KiB; the driver keeps 1 KiB of the SM's 228 for itself; sm_80 allows 163 KiB).
constexpr int TENSOROP_SMEM_PER_BLOCK = 227 * 1024;

// The largest power of two not above n (n >= 1).
__host__ __device__ constexpr int im2win_pow2_at_most(int n) {
    int p = 1;
    while (p * 2 <= n) {
        p *= 2;
    }
    return p;
}

// PRODUCER_THREADS_: 0, every thread copies and multiplies (mainloop_multistage.cuh); else a
// warp-specialised block (mainloop_warp_specialized.cuh): THREADS multiply (the MMA warps,
// threads 0 .. THREADS - 1, who also write the outputs) and PRODUCER_THREADS more, after them,
// only copy.
// MMA_GROUPS_ (warp-specialised only): teams of MMA warps, each THREADS strong, each
// multiplying whole tiles of its own, in turn ("ping-pong": while one team writes a tile's
// outputs, the other keeps the tensor cores busy).
template <class Types_, int BM_, int BN_, int WM_, int WN_, int STAGES_, int ROW_BYTES_ = 64, int PRODUCER_THREADS_ = 0,
    int MMA_GROUPS_ = 1>
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
    static constexpr int THREADS = 32 * WARPS;                 // the MMA warps' threads
    static constexpr int PRODUCER_THREADS = PRODUCER_THREADS_;  // the copying warps' (0: the MMA warps copy)
    static constexpr bool WARP_SPECIALIZED = PRODUCER_THREADS > 0;
    static constexpr int MMA_GROUPS = MMA_GROUPS_;
    static_assert(MMA_GROUPS == 1 || WARP_SPECIALIZED, "teams of MMA warps need the copying warps");
    static constexpr int MMA_THREADS = THREADS * MMA_GROUPS;   // every team's
    static constexpr int BLOCK_THREADS = MMA_THREADS + PRODUCER_THREADS;
    static constexpr int COPY_THREADS = WARP_SPECIALIZED ? PRODUCER_THREADS : THREADS;
    static_assert(PRODUCER_THREADS % 128 == 0, "copying warps come in whole warpgroups (setmaxnreg's unit)");
    // Warp-specialised with more than 64 sums a thread and more than one MMA warpgroup (one
    // block per SM, 168 registers a thread at launch, too few for 128 sums and the epilogue):
    // the roles trade registers (setmaxnreg, multiples of 8): the copying warps keep
    // PRODUCER_REGISTERS, the MMA warps get the rest of the SM's 64 Ki.
    static constexpr bool REALLOCATES_REGISTERS = WARP_SPECIALIZED && BM * BN / THREADS > 64 && MMA_THREADS > 128;
    static constexpr int PRODUCER_REGISTERS = 72;
    static constexpr int CONSUMER_REGISTERS = (65536 - PRODUCER_THREADS * PRODUCER_REGISTERS) / MMA_THREADS / 8 * 8;
    static_assert(WARPS_M * WM == BM && WARPS_N * WN == BN, "warp tiles cover the block");
    // The MMA is m16n8; B fragments are loaded two n-tiles (16 channels) per ldmatrix.x4.
    static_assert(WM % 16 == 0 && WN % 16 == 0, "warp tiles are whole 16x16 pieces");

    // A stage: each pixel row and each channel row holds ROW_BYTES bytes of the reduction.
    static constexpr int ROW_BYTES = ROW_BYTES_;
    static constexpr int CHUNKS = ROW_BYTES / TENSOROP_CHUNK_BYTES;   // 16-byte pieces per row
    static_assert(CHUNKS == 2 || CHUNKS == 4 || CHUNKS == 8, "rows of 32, 64 or 128 bytes");
    static constexpr int CHUNK_ELEMENTS = TENSOROP_CHUNK_BYTES / ELEMENT_BYTES;   // 8 or 4
    static constexpr int BK = ROW_BYTES / ELEMENT_BYTES;                           // reduction per stage

    // Copies: a pass of the copying threads fills ROWS_PER_PASS whole rows, copying thread t
    // taking piece t % CHUNKS of row t / CHUNKS; a warp so fills 32 / CHUNKS rows, contiguous
    // bytes of shared memory, and reads whole 16-byte pieces of consecutive reduction indices.
    static constexpr int ROWS_PER_PASS = COPY_THREADS / CHUNKS;
    static_assert(BM % ROWS_PER_PASS == 0 && BN % ROWS_PER_PASS == 0, "copy passes cover the tile rows");
    static constexpr int A_PASSES = BM / ROWS_PER_PASS;
    static constexpr int B_PASSES = BN / ROWS_PER_PASS;

    // Shared memory: STAGES x (A rows, then B rows); the epilogue stages the sums in the
    // operand stages once the main loop is over, or, warp-specialised, in an area of its own
    // (the copying warps already fill the stages with the block's next tile: the blocks are
    // persistent, mainloop_warp_specialized.cuh), as large as the sums or what is left of
    // the SM's shared memory (in rounds then, epilogue_tensorop.cuh); then the pipeline's
    // barriers, two 8-byte mbarriers a stage.
    static constexpr int A_STAGE_BYTES = BM * ROW_BYTES;
    static constexpr int B_STAGE_BYTES = BN * ROW_BYTES;
    static constexpr int STAGE_BYTES = A_STAGE_BYTES + B_STAGE_BYTES;
    static constexpr int OPERAND_BYTES = STAGES * STAGE_BYTES;
    static constexpr int BARRIER_BYTES = WARP_SPECIALIZED ? 2 * STAGES * 8 : 0;
    static constexpr int SUM_BYTES = BM * BN * 4;
    static constexpr int STAGING_OFFSET = WARP_SPECIALIZED ? OPERAND_BYTES : 0;
    static constexpr int STAGING_ROOM = (TENSOROP_SMEM_PER_BLOCK - OPERAND_BYTES - BARRIER_BYTES) / MMA_GROUPS;
    static constexpr int STAGING_BYTES = WARP_SPECIALIZED
        ? im2win_pow2_at_most(SUM_BYTES < STAGING_ROOM ? SUM_BYTES : STAGING_ROOM)
        : OPERAND_BYTES;   // one area per team
    static constexpr int SMEM_BYTES = OPERAND_BYTES + (WARP_SPECIALIZED ? MMA_GROUPS * STAGING_BYTES : 0) + BARRIER_BYTES;
    static_assert(STAGING_BYTES >= 4096, "room for the epilogue's staging");
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

// Named barriers of the warp-specialised blocks: 1 + team for a team's epilogue
// (mma_warps_sync), TEAM_TURN_BARRIER + team for handing the main loop to a team.
constexpr unsigned int TEAM_TURN_BARRIER = 3;
__device__ __forceinline__ void named_barrier_sync(unsigned int id, unsigned int threads) {
#if defined(__CUDA_ARCH__)
    asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}
__device__ __forceinline__ void named_barrier_arrive(unsigned int id, unsigned int threads) {
#if defined(__CUDA_ARCH__)
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
#endif
}

// setmaxnreg: this warpgroup's registers per thread become REGISTERS (INCREASE: more than the
// launch gave, taken from the SM's pool once other warpgroups released theirs; else fewer).
template <int REGISTERS, bool INCREASE>
__device__ __forceinline__ void warpgroup_registers() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    if constexpr (INCREASE) {
        asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(REGISTERS));
    } else {
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(REGISTERS));
    }
#endif
}

// A barrier of the MMA warps (the epilogue's): the whole block, or, warp-specialised, only the
// THREADS MMA threads of the caller's team, on named barrier 1 + team (the copying warps do not
// take part; the other team is at another point of its own tile).
template <class Tile>
__device__ __forceinline__ void mma_warps_sync() {
    if constexpr (Tile::WARP_SPECIALIZED) {
#if defined(__CUDA_ARCH__)
        const unsigned int id = 1u + threadIdx.x / Tile::THREADS;
        asm volatile("bar.sync %0, %1;\n" ::"r"(id), "n"(Tile::THREADS) : "memory");
#endif
    } else {
        __syncthreads();
    }
}

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
