// im2win: the tile hierarchy of the implicit GEMM and where a tile's elements sit in shared
// memory. Every other building block reads its sizes from here.
//
// The convolution is a GEMM  Y[k][j] = sum over kk of A[kk][k] * B[kk][j]  with M = K output
// channels, N = N*P*Q output pixels and a reduction of C*R*S. A block computes a BM x BN tile
// of Y, BK reduction steps per shared-memory stage; a thread holds TM x TN outputs. Sizes count
// elements; the vector widths follow from the element types (Types, a Conv2dTypes), so that a
// vector is at most 16 bytes whatever the type: 4 floats, 8 two-byte elements.
#pragma once

#include "common.cuh"
#include "numeric.cuh"

namespace im2win {

// VECTOR = false is the ablation's "no vector loads": every access is one element.
template <class Types_, int BM_, int BN_, int BK_, int TM_, int TN_, bool VECTOR = true>
struct TileShape {
    using Types = Types_;
    using ElementX = typename Types::ElementX;
    using ElementF = typename Types::ElementF;
    using ElementY = typename Types::ElementY;
    static constexpr int BM = BM_;   // output channels per block (GEMM rows)
    static constexpr int BN = BN_;   // output pixels per block (GEMM columns)
    static constexpr int BK = BK_;   // reduction depth of one shared-memory stage
    static constexpr int TM = TM_;   // output channels per thread
    static constexpr int TN = TN_;   // output pixels per thread
    static constexpr int TX = BN / TN;   // threads along the pixels
    static constexpr int TY = BM / TM;   // threads along the channels
    static constexpr int THREADS = TX * TY;
    static constexpr int A_LOADS = BM * BK / THREADS;   // filter elements each thread copies per stage
    static constexpr int B_LOADS = BN * BK / THREADS;   // window elements each thread copies per stage
    static_assert(A_LOADS * THREADS == BM * BK && B_LOADS * THREADS == BN * BK,
        "every thread loads a whole number of elements per stage");
    // Filter copies: vectors of AV elements of A, at most 16 bytes (16 bytes for every default
    // tile: 4 floats).
    static constexpr int AV = !VECTOR ? 1 : vector_width(access_elements<ElementF>(), BM, A_LOADS);
    static constexpr int A_VECS = A_LOADS / AV;
    static constexpr int A_ROW_VECS = BM / AV;   // vectors per row of the filter tile
    // Window copies: each thread copies runs of B_RUN consecutive reduction indices of one
    // pixel, B_SEGS runs. Run u = seg*THREADS + tid is pixel u % BN at depth (u / BN) * B_RUN:
    // consecutive threads take consecutive pixels.
    static constexpr int B_RUN = im2win_gcd(B_LOADS, BK);
    static constexpr int B_SEGS = B_LOADS / B_RUN;
    // A thread's outputs come in groups of VM channels and VN pixels, spread across the tile:
    // channel group g of thread ty covers rows (g * TY + ty) * VM ... + VM - 1. With groups of
    // VM (VN) the shared-memory reads of the filter (window) tile are vectors of VM (VN)
    // elements, and so are the stores of the output's channels in NHWC (pixels in NCHW) and the
    // residual's loads: with floats float4 or float2, at most 16 bytes of the widest type
    // involved. Because neighbouring threads read neighbouring groups, a warp's reads are either
    // the same address (broadcast) or consecutive, never a bank conflict.
    static constexpr int VM = !VECTOR ? 1 : vector_width(access_elements<ElementF, ElementX, ElementY>(), TM);
    static constexpr int VN = !VECTOR ? 1 : vector_width(access_elements<ElementX, ElementY>(), TN);

    // The tile row (output channel m - m0) of a thread's i-th channel.
    static __device__ __forceinline__ int row(int i, int ty) { return (i / VM * TY + ty) * VM + i % VM; }
};

// Where element (kk, j) of a stage's window tile (reduction index kk, pixel j of the block)
// sits in shared memory, and which pixels of the tile a thread multiplies. The loader that
// fills the tile and the MMA that reads it agree through this type.
//
// RowMajorWindows: Bs[kk][j]. The reads of a reduction step are rows: a thread's pixels come in
// groups of VN consecutive ones (one vector per group), neighbouring threads take
// neighbouring groups. Filled by copies of single elements, which suits NCHW data
// (consecutive pixels are consecutive in memory).
template <class Tile>
struct RowMajorWindows {
    static constexpr int INTERLEAVE = 1;
    static __device__ __forceinline__ int offset(int kk, int j) { return kk * Tile::BN + j; }
    // The tile column of a thread's jj-th pixel.
    static __device__ __forceinline__ int column(int jj, int tx) {
        return (jj / Tile::VN * Tile::TX + tx) * Tile::VN + jj % Tile::VN;
    }
};

// InterleavedWindows<KI>: Bs[kk / KI][j][kk % KI]. KI consecutive reduction indices of one pixel
// are contiguous, so NHWC data (consecutive channels are consecutive in memory) arrives as one
// copy of KI elements per pixel; the MMA reads KI reduction steps of a pixel as one vector. A thread's
// pixels are tx, tx + TX, ...: a warp's vector reads are consecutive, never a bank conflict.
template <class Tile, int KI>
struct InterleavedWindows {
    static constexpr int INTERLEAVE = KI;
    static_assert(Tile::BK % KI == 0 && Tile::B_RUN % KI == 0, "a copy run holds whole groups of KI");
    static_assert(KI <= access_elements<typename Tile::ElementX>(), "a group of KI is one copy of at most 16 bytes");
    static __device__ __forceinline__ int offset(int kk, int j) {
        return (kk / KI) * (Tile::BN * KI) + j * KI + kk % KI;
    }
    static __device__ __forceinline__ int column(int jj, int tx) { return jj * Tile::TX + tx; }
};

}  // namespace im2win
