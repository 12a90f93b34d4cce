// im2win: the forward convolution kernel, composed from the building blocks (docs/DESIGN.md):
//   tile loaders  tile_filter.cuh (A), tile_window_buffer.cuh / tile_window_gather.cuh (B):
//                 where a stage's data is;
//   main loop     mainloop.cuh: when it moves;
//   MMA           mma_simt.cuh: how it is multiplied;
//   epilogue      epilogue.cuh: what is written.
// conv.cu.tera instantiates it once per catalogue kernel, as an extern "C" __global__ function.
//
// Implicit GEMM: Y[k][j] = epilogue(sum over kk of A[kk][k] * B[kk][j]), j = (n*P + p)*Q + q.
// A block computes a BM x BN tile of Y, walking its part of the reduction BK at a time. Every
// load and store is bounds-checked (K, N*P*Q and the reduction tail), so any problem size is
// correct; out-of-range elements enter the product as zeros.
//
// Element types: Config::Types (a Conv2dTypes, numeric.cuh), which the tile shape carries: the
// pointers, the shared tiles, the accumulators and the epilogue take theirs from it.
//
// Split reduction: with gridDim.z = Z > 1, block z takes a contiguous share of the stages and
// writes its partial sums (ElementAcc), without epilogue, to slice z*N*K*P*Q of the partial
// buffer that y then points to (in the output's layout); im2win_split_reduce_f32 adds the Z
// slices and applies the epilogue. With Z = 1 the block writes Y itself.
//
// Launch: block (THREADS, 1, 1), grid (ceil(N*P*Q / BN), ceil(K / BM), Z), no dynamic shared
// memory.
#pragma once

#include <type_traits>

#include "common.cuh"
#include "epilogue.cuh"
#include "geometry.cuh"
#include "mainloop.cuh"
#include "mma_simt.cuh"
#include "tile_filter.cuh"
#include "tile_shape.cuh"
#include "tile_window_buffer.cuh"
#include "tile_window_gather.cuh"

namespace im2win {

// Where the windows come from (KernelSpec's algorithm).
enum Algorithm {
    WINDOW_BUFFER = 0,   // the materialised im2win buffer T (the input transform writes it)
    WINDOW_GATHER = 1,   // gathered from X inside the kernel (fused; no buffer)
};

// Whether the geometry is a compile-time 1x1 filter.
template <class Geometry>
constexpr bool im2win_pointwise() {
    if constexpr (Geometry::FIXED) {
        return Geometry::R * Geometry::S == 1;
    } else {
        return false;
    }
}

// One kernel family member: every compile-time choice (the element types are the tile's,
// TileShape<Types, ...>). MICRO = false and STAGES = 1 exist only for the ablation (bench
// crate).
template <class Tile_, class Geometry_, int ALGORITHM, int LAYOUT_, int STAGES_ = 2, bool MICRO = true>
struct Conv2dFpropSimt {
    using Tile = Tile_;
    using Types = typename Tile::Types;
    using ElementX = typename Types::ElementX;
    using ElementF = typename Types::ElementF;
    using ElementY = typename Types::ElementY;
    using ElementAcc = typename Types::ElementAcc;
    using Geometry = Geometry_;
    static constexpr int LAYOUT = LAYOUT_;
    static constexpr int STAGES = STAGES_;
    // Gathered NHWC windows arrive as groups of channels: groups of 4 (with floats, 16-byte
    // copies) when a thread's run of the stage is one such group (B_RUN = 4: the two threads
    // that share a pixel then read one whole 32-byte sector per copy instruction, and a warp
    // touches 16 pixels once) or two groups that make the whole stage (B_RUN = BK = 8: lane
    // pairs trade pixels, WindowGatherLoader::PAIRED, with the same effect), else groups of 2.
    // A copy instruction that touches 32 pixels costs a shared-memory wavefront per pixel:
    // the 64x128x8 NHWC kernel with 8-byte pieces, one pixel a lane, ran 1.3x slower than
    // paired (H100, conv8-12). For 1x1 filters (whose simpler addressing ptxas schedules
    // differently), and paired in the 64-thread 64x64x8 tiles (68 bytes), 16-byte copies of
    // floats need more than the 128 registers their launch bounds leave, and spill (ptxas -v;
    // codegen/tests/compile.rs checks there are none).
    static constexpr bool POINTWISE = im2win_pointwise<Geometry>();
    static constexpr bool PAIRS_PIXELS = Tile::B_RUN == 8 && Tile::BK == 8 && Tile::THREADS >= 128;
    static constexpr int NHWC_INTERLEAVE = (Tile::B_RUN == 4 || PAIRS_PIXELS) && !POINTWISE ? 4 : 2;
    // The window buffer T is the same for both layouts (the input transform reads either), so
    // its windows are row-major whatever the layout; only the output is written NHWC.
    using Smem = std::conditional_t<LAYOUT == IM2WIN_NHWC && ALGORITHM == WINDOW_GATHER,
        InterleavedWindows<Tile, NHWC_INTERLEAVE>, RowMajorWindows<Tile>>;
    using Output = StagedOutput<Tile, Smem, LAYOUT>;
    // Shared memory: the main loop's STAGES stages of the filter and window tiles, which the
    // epilogue then reuses to stage a group of output rows (epilogue.cuh). The codegen's
    // TileConfig::shared_bytes computes the same size (conv.cu.tera checks that they agree).
    static constexpr int MAINLOOP_BYTES = STAGES * Tile::BK
        * (Tile::BM * (int)sizeof(ElementF) + Tile::BN * (int)sizeof(ElementX));
    static constexpr int EPILOGUE_BYTES = Output::ELEMENTS * (int)sizeof(ElementAcc);
    static constexpr int SHARED_BYTES = MAINLOOP_BYTES > EPILOGUE_BYTES ? MAINLOOP_BYTES : EPILOGUE_BYTES;
    using WindowLoader = std::conditional_t<ALGORITHM == WINDOW_GATHER, WindowGatherLoader<Tile, Geometry, LAYOUT, Smem>,
        WindowBufferLoader<Tile, Geometry>>;
    using Mma = std::conditional_t<MICRO, SimtOuterProduct<Tile, Smem>, SimtDotProduct<Tile, Smem>>;
};

// t: the window source (T, or X for the gather); ft: A; bias: K elements or null (has_bias =
// 0); residual: Y-shaped or null (has_residual = 0); y: Y, or the partial sums (ElementAcc).
template <class Config>
__device__ __forceinline__ void conv2d_fprop(const typename Config::ElementX* __restrict__ t,
    const typename Config::ElementF* __restrict__ ft, const typename Config::ElementY* __restrict__ bias,
    const typename Config::ElementX* __restrict__ residual, typename Config::ElementY* __restrict__ y,
    const ConvParams& prm)
{
    using Tile = typename Config::Tile;
    using Types = typename Config::Types;
    constexpr int BK = Tile::BK;
    constexpr int STAGES = Config::STAGES;
    // Shared tiles are stored reduction-major (As[kk][m], B per Config::Smem) so that the MMA
    // reads rows. No padding: a warp's copies and its reads stay in one row (broadcast or
    // consecutive addresses, no bank conflict), and rows stay aligned for the vector reads.
    // Stage s of the filter tile is As + s * BK * BM, of the window tile Bs + s * BK * BN; after
    // the main loop the same bytes stage the output (write_outputs).
    __shared__ __align__(16) unsigned char shared[Config::SHARED_BYTES];
    typename Config::ElementF* const As = reinterpret_cast<typename Config::ElementF*>(shared);
    typename Config::ElementX* const Bs =
        reinterpret_cast<typename Config::ElementX*>(shared + STAGES * BK * Tile::BM * sizeof(typename Config::ElementF));
    typename Config::ElementAcc* const staging = reinterpret_cast<typename Config::ElementAcc*>(shared);

    const int tid = threadIdx.x;
    const int tx = tid % Tile::TX;
    const int ty = tid / Tile::TX;
    const int m0 = blockIdx.y * Tile::BM;                   // first output channel of the block
    const long long j0 = (long long)blockIdx.x * Tile::BN;  // first output pixel of the block

    // This block's share of the reduction: stages [first, last) of ceil(CRS / BK). The shares
    // are equal but for the last; a share may be empty when Z exceeds the stage count (the
    // block then writes zeros, so the reduction still sees a complete slice). Reduction
    // indices are unsigned: C*R*S may be as large as 2^31 - 1, and a stage may run up to
    // BK - 1 past it before the bounds checks drop the excess.
    const unsigned int CRS = (unsigned int)prm.crs;
    const unsigned int stages = (CRS + BK - 1) / BK;
    const unsigned int per_split = (stages + gridDim.z - 1) / gridDim.z;
    const unsigned int first = stages < blockIdx.z * per_split ? stages : blockIdx.z * per_split;
    const unsigned int last = stages - first < per_split ? stages : first + per_split;

    FilterTileLoader<Tile> a_tiles(ft, prm, m0, tid);
    typename Config::WindowLoader b_tiles(t, prm, j0, tid, first);
    // Copies stage `stage` into `buf`, with tail checks only where the stage reaches past the
    // reduction.
    auto copy = [&](unsigned int stage, int buf) {
        const unsigned int k0 = stage * BK;
        if (k0 + BK <= CRS) {
            a_tiles.template copy<false>(As + buf * BK * Tile::BM, k0);
            b_tiles.template copy<false>(Bs + buf * BK * Tile::BN, k0, tid);
        } else {
            a_tiles.template copy<true>(As + buf * BK * Tile::BM, k0);
            b_tiles.template copy<true>(Bs + buf * BK * Tile::BN, k0, tid);
        }
    };

    typename Config::Mma mma;
    mma.zero();
    Mainloop<STAGES>::run(first, last, copy,
        [&](int buf) { mma.multiply(As + buf * BK * Tile::BM, Bs + buf * BK * Tile::BN, tx, ty); });

    // A split block writes its partial sums to its slice; the reduction applies the epilogue.
    const bool split = gridDim.z > 1;
    using Output = typename Config::Output;
    if constexpr (Types::PARTIALS_ARE_OUTPUTS) {
        // One store path for both.
        typename Config::ElementY* const out = split ? y + (long long)blockIdx.z * prm.npq * prm.k : y;
        write_outputs<Tile, Output>(mma.acc, staging, split, out, bias, residual, prm, m0, j0, tx, ty);
    } else if (split) {
        typename Config::ElementAcc* const part =
            reinterpret_cast<typename Config::ElementAcc*>(y) + (long long)blockIdx.z * prm.npq * prm.k;
        write_outputs<Tile, Output>(mma.acc, staging, true, part, bias, residual, prm, m0, j0, tx, ty);
    } else {
        write_outputs<Tile, Output>(mma.acc, staging, false, y, bias, residual, prm, m0, j0, tx, ty);
    }
}

}  // namespace im2win
