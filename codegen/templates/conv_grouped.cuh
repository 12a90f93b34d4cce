// im2win: grouped and depthwise convolution (groups > 1), one launch for any group count.
//
// A grouped convolution splits the C input and K output channels into `groups` groups; output
// channel k reads only the Cg = C / groups input channels of its group, through the filter
// F[K][Cg][R][S] (KCRS) or F[K][R][S][Cg] (KRSC), read in place: no transform, no workspace.
// Its reduction (Cg * R * S) is short, so it is memory-bound, not compute-bound: these kernels
// have no shared-memory stages and no register outer product, only direct loads of the input
// (coalesced along the output's fastest axis) and of the filter (few values, L1-resident).
//
//   DepthwiseNchw<Types, Geometry, THREADS, VQ>       groups == C (Cg = 1), NCHW: each thread
//       computes VQ adjacent outputs of one output row of one channel; the warp's threads walk
//       the row, so each input row is read as one contiguous (coalesced) run per warp. With a
//       fixed geometry, the span of input columns under a thread's VQ windows is loaded into
//       registers once per filter row and every tap reads it from there.
//   DepthwiseNhwc<Types, Geometry, THREADS, VC, VQ>   groups == C, NHWC: each thread computes
//       VC consecutive channels (one 16-byte vector of the element type) of VQ adjacent pixels;
//       consecutive threads take consecutive channel vectors, so a warp's loads are contiguous.
//       Each tap's VC weights are loaded once for the VQ pixels (the filter, K x R x S, is
//       strided by R * S between channels: no vector loads); with a fixed geometry the pixels
//       under the VQ windows of a filter row are loaded once into registers.
//       With a channel multiplier K / C > 1 (each input channel feeds several outputs) or
//       misaligned operands the channels are read one by one (same results).
//   GroupedDirect<Types, Geometry, THREADS, LAYOUT>   any groups: one output per thread in
//       the output's memory order, a plain loop over its group's Cg channels and the R x S taps.
//
// The group structure is derived from ConvParams, which has no field of its own for it (the
// ABI is that of every other kernel): crs = Cg * R * S, so Cg = crs / (R * S), groups = C / Cg
// and output channels per group Kg = K / groups (Conv2dProblem::shape checks the divisions).
//
// Arithmetic is float (FP32 on CUDA cores) for every element type: bf16 and f16 operands are
// converted as they are loaded (Types::to_accumulator) and results converted as they are stored.
// alpha is applied here (there is no filter transform to fold it into), then the common
// element-wise epilogue, linear_combination (epilogue.cuh): bias, beta * residual, activation.
//
// Grids: 1-D, one thread per work item (KernelSpec's tile says how many outputs a thread
// computes; dispatch.rs `grouped_grid` sizes the grid from the same numbers).
//
// Spills: the dense kernels' epilogue calls the smooth activations out of line
// (activate_smooth); here, without shared-memory staging, a thread's live values across such a
// call (its other sums, a loop's state) exceeded the ABI's callee-saved registers and spilled,
// so these kernels inline them (linear_combination<Types, INLINE_ACTIVATION = true>).
#pragma once

#include "common.cuh"
#include "epilogue.cuh"
#include "geometry.cuh"
#include "numeric.cuh"

namespace im2win {

// The group structure of a problem, from ConvParams (see the top of this file).
struct GroupShape {
    int cg;   // input channels per group (1: depthwise)
    int kg;   // output channels per group (the channel multiplier of a depthwise problem)
    __device__ __forceinline__ explicit GroupShape(const ConvParams& prm) {
        // In 32 bits: Cg * R * S fits in an int (Conv2dProblem::shape), and a 64-bit division
        // is a call (see the note on divisions below).
        cg = (int)prm.crs / (prm.r * prm.s);
        kg = prm.k / (prm.c / cg);
    }
};

// Work items are decomposed with 32-bit unsigned divisions (dispatch keeps a launch's items
// below 2^32): the compiler inlines those, while a Divider's constructor and its 64-bit
// fallback call the 64-bit division routine; across such a call, the values a thread keeps
// live beyond the ABI's callee-saved registers spilled (and building three Dividers per thread
// costs about as much as a depthwise thread's whole convolution).

// The work item of this thread of a 1-D launch that has one thread per item (the grid covers
// `items`: dispatch.rs `grouped_grid`), if any.
template <int THREADS, class Body>
__device__ __forceinline__ void for_this_item(long long items, Body body) {
    const long long item = (long long)blockIdx.x * THREADS + threadIdx.x;
    if (item < items) {
        body((unsigned int)item);
    }
}

// One output: alpha * sum, then the shared epilogue (bias, residual, activation), stored in Y's
// type. `at` is the output's offset (the residual's too: same shape and layout).
template <class Types>
__device__ __forceinline__ void store_output(const ConvParams& prm, float sum, int k,
    const typename Types::ElementY* bias, const typename Types::ElementX* residual,
    typename Types::ElementY* y, long long at) {
    const float b = prm.has_bias ? Types::to_accumulator(bias[k]) : 0.0f;
    y[at] = Types::from_accumulator(linear_combination<Types, /*INLINE_ACTIVATION=*/true>(prm, prm.alpha * sum, b, residual + at));
}

// ---- Depthwise, NCHW ------------------------------------------------------------------------
// Work item: (n, k, p, segment of VQ outputs along q), the segment fastest, so that a warp's
// threads cover consecutive segments of a row (or of consecutive rows of one plane).
template <class Types, class G, int THREADS, int VQ>
struct DepthwiseNchw {
    using X = typename Types::ElementX;
    using F = typename Types::ElementF;
    using Y = typename Types::ElementY;

    static __device__ __forceinline__ void run(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        const G g(prm);
        const GroupShape groups(prm);
        const int segments = (prm.q + VQ - 1) / VQ;
        const unsigned int segments_u = (unsigned int)segments, p_u = (unsigned int)prm.p, k_u = (unsigned int)prm.k;
        const long long items = (long long)prm.n * prm.k * prm.p * segments;
        for_this_item<THREADS>(items, [&](unsigned int item) {
            const unsigned int row = item / segments_u;              // (n * K + k) * P + p
            const int q0 = (int)(item - row * segments_u) * VQ;
            const unsigned int plane = row / p_u;                    // n * K + k
            const int p = (int)(row - plane * p_u);
            const long long n = plane / k_u;
            const int k = (int)(plane - (unsigned int)n * k_u);
            // Output channel k reads input channel k / Kg (Cg = 1).
            const int c = k / groups.kg;
            const X* xc = x + (n * prm.c + c) * (long long)prm.h * prm.w;
            const F* fk = f + (long long)k * g.R * g.S;
            const int x0 = q0 * g.SW - prm.pad_left;
            float acc[VQ];
#pragma unroll
            for (int v = 0; v < VQ; ++v) {
                acc[v] = 0.0f;
            }
#pragma unroll
            for (int r = 0; r < g.R; ++r) {
                const int iy = p * g.SH - prm.pad_top + r * g.DH;
                if (iy < 0 || iy >= prm.h) {
                    continue;
                }
                const X* row_x = xc + (long long)iy * prm.w;
                if constexpr (G::FIXED) {
                    // The input columns under the segment's VQ windows, once: every tap of
                    // this filter row reads them from registers (0 in the padding).
                    constexpr int SPAN = (VQ - 1) * G::SW + G::S;
                    float span[SPAN];
#pragma unroll
                    for (int i = 0; i < SPAN; ++i) {
                        const int ix = x0 + i;
                        span[i] = (ix >= 0 && ix < prm.w) ? Types::to_accumulator(row_x[ix]) : 0.0f;
                    }
#pragma unroll
                    for (int s = 0; s < G::S; ++s) {
                        const float w = Types::to_accumulator(fk[r * G::S + s]);
#pragma unroll
                        for (int v = 0; v < VQ; ++v) {
                            acc[v] = fmaf(span[v * G::SW + s], w, acc[v]);
                        }
                    }
                } else {
                    for (int s = 0; s < g.S; ++s) {
                        const float w = Types::to_accumulator(fk[r * g.S + s]);
#pragma unroll
                        for (int v = 0; v < VQ; ++v) {
                            const int ix = x0 + v * g.SW + s * g.DW;
                            if (ix >= 0 && ix < prm.w) {
                                acc[v] = fmaf(Types::to_accumulator(row_x[ix]), w, acc[v]);
                            }
                        }
                    }
                }
            }
            const long long out = (long long)row * prm.q + q0;
#pragma unroll
            for (int v = 0; v < VQ; ++v) {
                if (q0 + v < prm.q) {
                    store_output<Types>(prm, acc[v], k, bias, residual, y, out + v);
                }
            }
        });
    }
};

// ---- Depthwise, NHWC ------------------------------------------------------------------------
// Work item: (n, p, segment of VQ pixels along q, vector of VC output channels), the channel
// vector fastest: a warp reads 32 consecutive vectors of a pixel's channels (or of consecutive
// pixels' when C is small).
template <class Types, class G, int THREADS, int VC, int VQ>
struct DepthwiseNhwc {
    using X = typename Types::ElementX;
    using F = typename Types::ElementF;
    using Y = typename Types::ElementY;
    using VectorX = ElementVector<X, VC>;
    using VectorY = ElementVector<Y, VC>;
    static_assert(sizeof(X) * VC <= MAX_ACCESS_BYTES && sizeof(Y) * VC <= MAX_ACCESS_BYTES,
        "a channel vector is one access of at most 16 bytes");

    static __device__ __forceinline__ bool aligned(const void* ptr) {
        return reinterpret_cast<unsigned long long>(ptr) % (sizeof(X) * VC) == 0;
    }

    static __device__ __forceinline__ void run(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        const G g(prm);
        const GroupShape groups(prm);
        const int vectors = (prm.k + VC - 1) / VC;
        const int segments = (prm.q + VQ - 1) / VQ;
        const unsigned int vectors_u = (unsigned int)vectors, segments_u = (unsigned int)segments, p_u = (unsigned int)prm.p;
        const long long items = (long long)prm.n * prm.p * segments * vectors;
        // Whole vectors of consecutive input channels: multiplier 1 (k reads channel k), C a
        // multiple of VC (every vector whole, every pixel's row aligned) and aligned buffers.
        // Uniform over the launch.
        const bool vector = groups.kg == 1 && prm.c % VC == 0 && aligned(x) && aligned(y) &&
            (!prm.has_residual || aligned(residual));
        for_this_item<THREADS>(items, [&](unsigned int item) {
            const unsigned int rest = item / vectors_u;              // (n * P + p) * segments + segment
            const int k0 = (int)(item - rest * vectors_u) * VC;
            const unsigned int row = rest / segments_u;              // n * P + p
            const int q0 = (int)(rest - row * segments_u) * VQ;
            const long long n = row / p_u;
            const int p = (int)(row - (unsigned int)n * p_u);
            float acc[VQ][VC];
#pragma unroll
            for (int v = 0; v < VQ; ++v) {
#pragma unroll
                for (int e = 0; e < VC; ++e) {
                    acc[v][e] = 0.0f;
                }
            }
            // Depthwise filters are [K][R][S] in either filter layout (Cg = 1).
            const int taps = g.R * g.S;
            // The thread's VC channels of input pixel `ix` of a row (zeros in the padding): one
            // 16-byte load on the vector path, else channel by channel (the multiplier's input
            // channel k / Kg; channels past K read channel K - 1 and are never stored).
            auto load = [&](const X* row_x, int ix, X (&in)[VC]) {
                if (ix < 0 || ix >= prm.w) {
#pragma unroll
                    for (int e = 0; e < VC; ++e) {
                        in[e] = Types::template from_accumulator<X>(0.0f);
                    }
                    return;
                }
                const X* pixel = row_x + (long long)ix * prm.c;
                if (vector) {
                    VectorX::unpack(*reinterpret_cast<const typename VectorX::type*>(pixel + k0), in);
                } else {
#pragma unroll
                    for (int e = 0; e < VC; ++e) {
                        const int k = k0 + e < prm.k ? k0 + e : prm.k - 1;
                        in[e] = pixel[k / groups.kg];
                    }
                }
            };
            // The tap's weight for each of the thread's channels, reused by its VQ pixels.
            auto weights = [&](int tap, float (&w)[VC]) {
#pragma unroll
                for (int e = 0; e < VC; ++e) {
                    const int k = k0 + e < prm.k ? k0 + e : prm.k - 1;
                    w[e] = Types::to_accumulator(f[(long long)k * taps + tap]);
                }
            };
            const int x0 = q0 * g.SW - prm.pad_left;
#pragma unroll
            for (int r = 0; r < g.R; ++r) {
                const int iy = p * g.SH - prm.pad_top + r * g.DH;
                if (iy < 0 || iy >= prm.h) {
                    continue;
                }
                const X* row_x = x + (n * prm.h + iy) * (long long)prm.w * prm.c;
                if constexpr (G::FIXED) {
                    // The pixels under the VQ windows of this filter row, loaded once (in the
                    // stored type): each of the S taps reads them from registers.
                    constexpr int SPAN = (VQ - 1) * G::SW + G::S;
                    X span[SPAN][VC];
#pragma unroll
                    for (int i = 0; i < SPAN; ++i) {
                        load(row_x, x0 + i, span[i]);
                    }
#pragma unroll
                    for (int s = 0; s < G::S; ++s) {
                        float w[VC];
                        weights(r * G::S + s, w);
#pragma unroll
                        for (int v = 0; v < VQ; ++v) {
#pragma unroll
                            for (int e = 0; e < VC; ++e) {
                                acc[v][e] = fmaf(Types::to_accumulator(span[v * G::SW + s][e]), w[e], acc[v][e]);
                            }
                        }
                    }
                } else {
                    for (int s = 0; s < g.S; ++s) {
                        float w[VC];
                        weights(r * g.S + s, w);
#pragma unroll
                        for (int v = 0; v < VQ; ++v) {
                            X in[VC];
                            load(row_x, x0 + v * g.SW + s * g.DW, in);
#pragma unroll
                            for (int e = 0; e < VC; ++e) {
                                acc[v][e] = fmaf(Types::to_accumulator(in[e]), w[e], acc[v][e]);
                            }
                        }
                    }
                }
            }
#pragma unroll
            for (int v = 0; v < VQ; ++v) {
                if (q0 + v >= prm.q) {
                    continue;
                }
                const long long out = ((long long)row * prm.q + q0 + v) * prm.k + k0;
                if (vector) {
                    Y result[VC];
#pragma unroll
                    for (int e = 0; e < VC; ++e) {
                        const float b = prm.has_bias ? Types::to_accumulator(bias[k0 + e]) : 0.0f;
                        result[e] = Types::from_accumulator(
                            linear_combination<Types, /*INLINE_ACTIVATION=*/true>(prm, prm.alpha * acc[v][e], b, residual + out + e));
                    }
                    *reinterpret_cast<typename VectorY::type*>(y + out) = VectorY::pack(result);
                } else {
#pragma unroll
                    for (int e = 0; e < VC; ++e) {
                        if (k0 + e < prm.k) {
                            store_output<Types>(prm, acc[v][e], k0 + e, bias, residual, y, out + e);
                        }
                    }
                }
            }
        });
    }
};

// ---- Any group count: the direct convolution ------------------------------------------------
// Work item: one output, in the output's memory order (stores coalesce). Each output reads its
// group's Cg input channels under its R x S window: Cg * R * S loads of the input and of the
// filter per output, mostly from L1 (neighbouring threads share them), no reuse in registers.
template <class Types, class G, int THREADS, int LAYOUT>
struct GroupedDirect {
    using X = typename Types::ElementX;
    using F = typename Types::ElementF;
    using Y = typename Types::ElementY;

    static __device__ __forceinline__ void run(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        const G g(prm);
        const GroupShape groups(prm);
        const unsigned int q_u = (unsigned int)prm.q, p_u = (unsigned int)prm.p, k_u = (unsigned int)prm.k;
        const long long items = (long long)prm.n * prm.k * prm.p * prm.q;
        // Strides of the input (channel, row, column) in its layout and of the filter
        // (channel, row, column) in its own.
        const long long hw = (long long)prm.h * prm.w;
        const long long xs_c = LAYOUT == IM2WIN_NCHW ? hw : 1;
        const long long xs_h = LAYOUT == IM2WIN_NCHW ? prm.w : (long long)prm.w * prm.c;
        const long long xs_w = LAYOUT == IM2WIN_NCHW ? 1 : prm.c;
        const bool krsc = prm.filter_layout == IM2WIN_KRSC;
        const int fs_c = krsc ? 1 : g.R * g.S;
        const int fs_r = krsc ? g.S * groups.cg : g.S;
        const int fs_s = krsc ? groups.cg : 1;
        for_this_item<THREADS>(items, [&](unsigned int item) {
            int k, p, q;
            long long n;
            if (LAYOUT == IM2WIN_NCHW) {
                const unsigned int row = item / q_u;
                q = (int)(item - row * q_u);
                const unsigned int plane = row / p_u;
                p = (int)(row - plane * p_u);
                n = plane / k_u;
                k = (int)(plane - (unsigned int)n * k_u);
            } else {
                const unsigned int pixel = item / k_u;
                k = (int)(item - pixel * k_u);
                const unsigned int row = pixel / q_u;
                q = (int)(pixel - row * q_u);
                n = row / p_u;
                p = (int)(row - (unsigned int)n * p_u);
            }
            const int c0 = k / groups.kg * groups.cg;   // the group's first input channel
            const X* xg = x + (LAYOUT == IM2WIN_NCHW ? (n * prm.c + c0) * hw : n * hw * prm.c + c0);
            const F* fk = f + (long long)k * groups.cg * g.R * g.S;
            float acc = 0.0f;
            for (int r = 0; r < g.R; ++r) {
                const int iy = p * g.SH - prm.pad_top + r * g.DH;
                if (iy < 0 || iy >= prm.h) {
                    continue;
                }
                for (int s = 0; s < g.S; ++s) {
                    const int ix = q * g.SW - prm.pad_left + s * g.DW;
                    if (ix < 0 || ix >= prm.w) {
                        continue;
                    }
                    const X* tap = xg + iy * xs_h + ix * xs_w;
                    const F* weights = fk + r * fs_r + s * fs_s;
                    for (int ci = 0; ci < groups.cg; ++ci) {
                        acc = fmaf(Types::to_accumulator(tap[ci * xs_c]),
                            Types::to_accumulator(weights[ci * fs_c]), acc);
                    }
                }
            }
            store_output<Types>(prm, acc, k, bias, residual, y, item);
        });
    }
};

}  // namespace im2win
