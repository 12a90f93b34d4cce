// im2win: the epilogue of the tensor-core kernels: what is written. The same function as the
// SIMT kernels' (epilogue.cuh), y = act(alpha * sum + bias + beta * residual), with its
// activation code and order of operations (fmaf(alpha, sum, bias), then fmaf(beta, residual,
// .), then activate_all), computed in float and converted to ElementY as it is stored; only
// where a thread's sums sit differs: the mma.sync C fragment (mma_tensorop.cuh).
//
// A thread holds, for each 16 x 8 MMA tile, pixels g and g + 8 (g = lane / 4) of the tile's
// rows, and channels 2t, 2t + 1 (t = lane % 4) of its 8 columns. In an NHWC output the two
// channels are neighbours: one store of 2 elements (4 bytes of BF16, 8 of float) when K is
// even and the pointers aligned, else single elements. Every store is bounds-checked (N*P*Q
// rows, K columns).
#pragma once

#include "copy.cuh"
#include "epilogue.cuh"
#include "numeric.cuh"

namespace im2win {

template <class Tile, class Mma>
__device__ __forceinline__ void write_outputs_tensorop(const Mma& mma, typename Tile::ElementY* __restrict__ y,
    const typename Tile::ElementY* __restrict__ bias, const typename Tile::ElementX* __restrict__ residual,
    const ConvParams& prm, long long j0, int n0, int warp_m, int warp_n, int lane) {
    using Types = typename Tile::Types;
    using ElementY = typename Tile::ElementY;
    using ElementX = typename Tile::ElementX;
    static_assert(epilogue_supports<Types>, "the epilogue computes in float");
    const int K = prm.k;
    const int g = lane / 4;
    const int t = lane % 4;
    const bool add_residual = prm.has_residual != 0;
    const bool pairs = K % 2 == 0 && im2win_aligned<2>(y) && (!add_residual || im2win_aligned<2>(residual));
    const float alpha = prm.alpha;
    const float beta = prm.beta;
    const int act = prm.activation;

    // The bias of the thread's 2 * NT channels (0 past K), read once.
    float b[Mma::NT][2];
    const int k_warp = n0 + warp_n * Tile::WN + 2 * t;
#pragma unroll
    for (int nt = 0; nt < Mma::NT; ++nt) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int k = k_warp + nt * 8 + e;
            b[nt][e] = prm.has_bias && k < K ? Types::to_accumulator(bias[k]) : 0.0f;
        }
    }

#pragma unroll
    for (int mt = 0; mt < Mma::MT; ++mt) {
#pragma unroll
        for (int half = 0; half < 2; ++half) {
            const long long j = j0 + warp_m * Tile::WM + mt * 16 + g + 8 * half;
            if (j >= prm.npq) {
                continue;
            }
            const long long row = j * K;
#pragma unroll
            for (int nt = 0; nt < Mma::NT; ++nt) {
                const int k = k_warp + nt * 8;
                if (k >= K) {
                    continue;
                }
                const long long at = row + k;
                const bool both = k + 1 < K;
                float v[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    v[e] = fmaf(alpha, mma.acc[mt][nt][2 * half + e], b[nt][e]);
                }
                if (add_residual) {
                    ElementX r[2];
                    if (pairs) {
                        im2win_load<2>(residual + at, r);
                    } else {
                        r[0] = residual[at];
                        r[1] = both ? residual[at + 1] : ElementX(0.0f);
                    }
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        v[e] = fmaf(beta, Types::to_accumulator(r[e]), v[e]);
                    }
                }
                activate_all<2>(act, v);
                ElementY o[2];
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    o[e] = Types::template from_accumulator<ElementY>(v[e]);
                }
                if (pairs) {
                    im2win_store<2>(y + at, o);
                } else {
                    y[at] = o[0];
                    if (both) {
                        y[at + 1] = o[1];
                    }
                }
            }
        }
    }
}

}  // namespace im2win
