// im2win: the MMA policies on CUDA cores (strict FP32). A policy owns a thread's accumulators
// and multiplies one shared-memory stage into them; it knows the tile shape (and through it the
// element types) and the window tile's shared layout, nothing of convolution. Tensor-core MMAs
// are further policies with the same two calls.
#pragma once

#include <type_traits>

#include "copy.cuh"
#include "tile_shape.cuh"

namespace im2win {

// The types the SIMT policies multiply: float operands into float accumulators, one fmaf per
// product (strict FP32). Other element types are other policies' (tensor cores).
template <class Types>
constexpr bool simt_supports = std::is_same_v<typename Types::ElementX, float>
    && std::is_same_v<typename Types::ElementF, float> && std::is_same_v<typename Types::ElementAcc, float>;

// The register micro-kernel: per reduction step, TM filter and TN window values from shared
// memory into registers, then TM * TN multiply-adds (an outer product).
template <class Tile, class Smem>
struct SimtOuterProduct {
    static_assert(simt_supports<typename Tile::Types>, "SimtOuterProduct multiplies floats into floats (fmaf)");
    using ElementA = typename Tile::ElementF;
    using ElementB = typename Tile::ElementX;
    using ElementAcc = typename Tile::Types::ElementAcc;
    ElementAcc acc[Tile::TM][Tile::TN];

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i) {
#pragma unroll
            for (int jj = 0; jj < Tile::TN; ++jj) {
                acc[i][jj] = 0.0f;
            }
        }
    }

    // acc[i][jj] += a[i] * b[jj]: one reduction step, TM * TN fused multiply-adds.
    //
    // Pixel by pixel (jj outer), not channel by channel. The loop order is the main lever on
    // ptxas's register allocation of the accumulators, which decides how many of these FFMAs
    // read two operands from the same register bank (one extra cycle each; the loop is
    // FFMA-bound). Measured with scripts/sass-bank-conflicts.py on every default NCHW kernel
    // (sm_90, nvcc 13.0): about 100 same-bank pairs per 512 FFMAs this way against 300-450
    // with i outer, and 3-10% of the kernels' time on the H100/H200 (scripts/kernel-ab.py).
    __device__ __forceinline__ void outer_product(const ElementA (&a)[Tile::TM], const ElementB (&b)[Tile::TN]) {
#pragma unroll
        for (int jj = 0; jj < Tile::TN; ++jj) {
#pragma unroll
            for (int i = 0; i < Tile::TM; ++i) {
                acc[i][jj] = fmaf(a[i], b[jj], acc[i][jj]);
            }
        }
    }

    // a[] += As[k][rows of ty], for reduction step k.
    __device__ __forceinline__ static void load_a(const ElementA* as, int k, int ty, ElementA (&a)[Tile::TM]) {
#pragma unroll
        for (int g = 0; g < Tile::TM / Tile::VM; ++g) {
            im2win_load<Tile::VM>(as + k * Tile::BM + (g * Tile::TY + ty) * Tile::VM, &a[g * Tile::VM]);
        }
    }

    __device__ __forceinline__ void multiply(const ElementA* as, const ElementB* bs, int tx, int ty) {
        constexpr int KI = Smem::INTERLEAVE;
        if constexpr (KI == 1) {
#pragma unroll
            for (int k = 0; k < Tile::BK; ++k) {
                ElementA a[Tile::TM];
                ElementB b[Tile::TN];
                load_a(as, k, ty, a);
#pragma unroll
                for (int g = 0; g < Tile::TN / Tile::VN; ++g) {
                    im2win_load<Tile::VN>(bs + Smem::offset(k, (g * Tile::TX + tx) * Tile::VN), &b[g * Tile::VN]);
                }
                outer_product(a, b);
            }
        } else {
            // Interleaved windows: one vector read gives KR reduction steps of a pixel. KR is at
            // most 2 whatever the interleave: the window values of all TN pixels then take 16
            // registers (with KR = 4, 16 more than two blocks per SM leave: the kernel spills).
            // The 8-byte reads are kept from being merged into 16-byte reads
            // (im2win_load_shared_pair).
            //
            // With KI = 4 a pixel's group of 4 steps is one 16-byte chunk, so a warp's reads of
            // one pair of steps from its 16 pixels are 16 bytes apart: two wavefronts. Threads
            // tx / 8 odd take the two pairs of each group in the other order (steps 2, 3, 0, 1),
            // so that half the warp reads the chunks' first halves and half their second, and
            // the 16 reads fill one 128-byte wavefront; their filter rows follow the same order
            // (the same sum, in another order). 3-4% on the paper's NHWC 3x3 layers (H100,
            // scripts/kernel-ab.py, 2026-12-07).
            constexpr int KR = KI < 2 ? KI : 2;
            const int swap = KI == 4 ? ((tx / 8) & 1) * 2 : 0;
#pragma unroll
            for (int k = 0; k < Tile::BK; k += KR) {
                const int kp = KI == 4 ? (k % 4 < 2 ? k + swap : k - swap) : k;
                ElementB b[Tile::TN][KR];
#pragma unroll
                for (int jj = 0; jj < Tile::TN; ++jj) {
                    if constexpr (KR < KI) {
                        im2win_load_shared_pair(bs + Smem::offset(k, Smem::column(jj, tx)) + (kp - k), b[jj]);
                    } else {
                        im2win_load<KR>(bs + Smem::offset(k, Smem::column(jj, tx)), b[jj]);
                    }
                }
#pragma unroll
                for (int e = 0; e < KR; ++e) {
                    ElementA a[Tile::TM];
                    ElementB be[Tile::TN];
                    load_a(as, kp + e, ty, a);
#pragma unroll
                    for (int jj = 0; jj < Tile::TN; ++jj) {
                        be[jj] = b[jj][e];
                    }
                    outer_product(a, be);
                }
            }
        }
    }
};

// The ablation's kernel without the register micro-kernel: each of the thread's outputs is a
// dot product over the stage with both operands read from shared memory for every
// multiply-add. The k loop stays rolled so that the compiler cannot turn it back into an
// outer product.
template <class Tile, class Smem>
struct SimtDotProduct {
    static_assert(simt_supports<typename Tile::Types>, "SimtDotProduct multiplies floats into floats (fmaf)");
    using ElementA = typename Tile::ElementF;
    using ElementB = typename Tile::ElementX;
    using ElementAcc = typename Tile::Types::ElementAcc;
    ElementAcc acc[Tile::TM][Tile::TN];

    __device__ __forceinline__ void zero() {
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i) {
#pragma unroll
            for (int jj = 0; jj < Tile::TN; ++jj) {
                acc[i][jj] = 0.0f;
            }
        }
    }

    __device__ __forceinline__ void multiply(const ElementA* as, const ElementB* bs, int tx, int ty) {
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i) {
            const int m = Tile::row(i, ty);
#pragma unroll
            for (int jj = 0; jj < Tile::TN; ++jj) {
                const int jn = Smem::column(jj, tx);
                ElementAcc sum = acc[i][jj];
#pragma unroll 1
                for (int k = 0; k < Tile::BK; ++k) {
                    sum = fmaf(as[k * Tile::BM + m], bs[Smem::offset(k, jn)], sum);
                }
                acc[i][jj] = sum;
            }
        }
    }
};

}  // namespace im2win
