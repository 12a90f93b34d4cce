// im2win: the epilogue. What is written for each sum of the convolution,
//   y = act(alpha * sum + bias + beta * residual),
// applied by the convolution kernels to a thread's accumulators before the output tile stores
// them, and by the split reduction (support.cu.tera) to the complete sums, with the same
// functions: one order of operations everywhere (the CPU backend's too,
// runtime/src/epilogue.rs `Epilogue::apply_f32`). With alpha = 1, no residual and the identity,
// exactly sum + bias.
//
// Everything is chosen at run time (ConvParams) but costs nothing when unused: each step is
// one pass over the registers behind a uniform branch, in this order: scale and bias, residual
// (loads at the output's offsets), activation. Keeping the steps apart, rather than one
// templated functor per activation inside the store loop, keeps each kernel's code (and its
// compile time) near that of the plain store: the store loop exists once.
//
// Element types (numeric.cuh, a Conv2dTypes): the arithmetic is in ElementAcc, which the bias
// (ElementY) and the residual (ElementX) are converted to where they are read; the results are
// converted to the stored type as they are stored. The math functions are float's (fmaf,
// expf, erff, tanhf), and alpha and beta are ConvParams floats: the accumulator is float.
#pragma once

#include <type_traits>

#include "copy.cuh"
#include "numeric.cuh"
#include "tile_shape.cuh"

// The values of ConvParams::activation (runtime/src/epilogue.rs, Activation::code).
enum Im2winActivation {
    IM2WIN_IDENTITY = 0,
    IM2WIN_RELU = 1,
    IM2WIN_SILU = 2,        // x * sigmoid(x)
    IM2WIN_GELU = 3,        // x * Phi(x), with erf (PyTorch's default)
    IM2WIN_GELU_TANH = 4,   // PyTorch's approximate="tanh"
};

namespace im2win {

// The accumulator types the epilogue computes in.
template <class Types>
constexpr bool epilogue_supports = std::is_same_v<typename Types::ElementAcc, float>;

// The activations with transcendental functions, out of line: one copy per module instead of
// one per output of every kernel (whose unrolled epilogues would each inline erff, tanhf and
// expf 64 times).
#if defined(__CUDACC__)
#define IM2WIN_NOINLINE __noinline__
#else
#define IM2WIN_NOINLINE   // the host emulation (__noinline__ is an attribute word there)
#endif
__device__ IM2WIN_NOINLINE float activate_smooth(int act, float x) {
    if (act == IM2WIN_SILU) {
        return x / (1.0f + expf(-x));
    }
    if (act == IM2WIN_GELU) {
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));   // 1/sqrt(2)
    }
    const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);   // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(inner));
}

__device__ __forceinline__ float activate(int act, float x) {
    if (act == IM2WIN_IDENTITY) {
        return x;
    }
    if (act == IM2WIN_RELU) {
        return fmaxf(x, 0.0f);
    }
    return activate_smooth(act, x);
}

// The same for every element of a register array (a uniform branch, then one pass).
template <int N>
__device__ __forceinline__ void activate_all(int act, float* v) {
    if (act == IM2WIN_IDENTITY) {
        return;
    }
    if (act == IM2WIN_RELU) {
#pragma unroll
        for (int e = 0; e < N; ++e) {
            v[e] = fmaxf(v[e], 0.0f);
        }
        return;
    }
#pragma unroll
    for (int e = 0; e < N; ++e) {
        v[e] = activate_smooth(act, v[e]);
    }
}

// One element: act(alpha * sum + bias + beta * residual), in the accumulator type; `residual`
// is read only when the epilogue has one (the split reduction's per-element form).
template <class Types>
__device__ __forceinline__ typename Types::ElementAcc linear_combination(const ConvParams& prm,
    typename Types::ElementAcc sum, typename Types::ElementAcc bias, const typename Types::ElementX* residual) {
    static_assert(epilogue_supports<Types>, "the epilogue computes in float");
    typename Types::ElementAcc v = fmaf(prm.alpha, sum, bias);
    if (prm.has_residual) {
        v = fmaf(prm.beta, Types::to_accumulator(*residual), v);
    }
    return activate(prm.activation, v);
}

// Where a thread's TM x TN accumulators go in Y: output (m0 + Tile::row(i, ty), j0 +
// Smem::column(jj, tx)). visit() calls f(at, i, jj, vector) for each stored unit: `at` is the
// offset in Y (or the residual) of accumulator (i, jj); with vector = Im2winFlag<true> the unit
// is V consecutive elements of Y holding acc[i + e*DI][jj + e*DJ], e < V, else the one element
// acc[i][jj]. Every unit is bounds-checked (K, N*P*Q).
template <class Tile, class Smem, int LAYOUT>
struct OutputTile;

// NCHW: Y[n][k][p][q]. A group of VN pixels starts at a pixel index that is a multiple of VN;
// when P*Q is a multiple of VN too, the group lies in one image and is VN consecutive elements.
template <class Tile, class Smem>
struct OutputTile<Tile, Smem, IM2WIN_NCHW> {
    static_assert(Smem::INTERLEAVE == 1, "NCHW outputs come from row-major windows");
    static constexpr int V = Tile::VN;
    static constexpr int DI = 0;
    static constexpr int DJ = 1;
    static __device__ __forceinline__ bool vectors(const ConvParams& prm) {
        return V > 1 && ((long long)prm.p * prm.q) % V == 0;
    }
    template <class F>
    static __device__ __forceinline__ void visit(const ConvParams& prm, int m0, long long j0, int tx, int ty, bool vec, F&& f) {
        const int K = prm.k;
        const long long PQ = (long long)prm.p * prm.q;
        const Divider div_pq(PQ);
        // Group by group of VN pixels, so that only the group's offsets are live beside the
        // accumulators (registers are what the epilogue is short of): base[e] is the offset
        // of (n, 0, p, q) in Y for the group's e-th pixel, or -1 past N*P*Q; channel k adds
        // k * P * Q.
#pragma unroll
        for (int g = 0; g < Tile::TN / V; ++g) {
            long long base[V];
#pragma unroll
            for (int e = 0; e < V; ++e) {
                const long long j = j0 + Smem::column(g * V + e, tx);
                base[e] = -1;
                if (j < prm.npq) {
                    const long long n = div_pq.div(j);
                    base[e] = n * K * PQ + (j - n * PQ);
                }
            }
            const bool whole = vec && base[V - 1] >= 0;
#pragma unroll
            for (int i = 0; i < Tile::TM; ++i) {
                const int m = m0 + Tile::row(i, ty);
                if (m < K) {
                    const long long row = (long long)m * PQ;
                    if (whole) {
                        f(base[0] + row, i, g * V, Im2winFlag<true>{});
                    } else {
#pragma unroll
                        for (int e = 0; e < V; ++e) {
                            if (base[e] >= 0) {
                                f(base[e] + row, i, g * V + e, Im2winFlag<false>{});
                            }
                        }
                    }
                }
            }
        }
    }
};

// NHWC: Y[n][p][q][k] = Y[j][k]. A thread's channels come in groups of VM consecutive ones:
// when K is a multiple of VM, a group is VM consecutive elements.
template <class Tile, class Smem>
struct OutputTile<Tile, Smem, IM2WIN_NHWC> {
    static constexpr int V = Tile::VM;
    static constexpr int DI = 1;
    static constexpr int DJ = 0;
    static __device__ __forceinline__ bool vectors(const ConvParams& prm) { return V > 1 && prm.k % V == 0; }
    template <class F>
    static __device__ __forceinline__ void visit(const ConvParams& prm, int m0, long long j0, int tx, int ty, bool vec, F&& f) {
        const int K = prm.k;
#pragma unroll
        for (int jj = 0; jj < Tile::TN; ++jj) {
            const long long j = j0 + Smem::column(jj, tx);
            if (j < prm.npq) {
                const long long base = j * K;
#pragma unroll
                for (int g = 0; g < Tile::TM / V; ++g) {
                    const int m = m0 + Tile::row(g * V, ty);
                    if (vec && m + V - 1 < K) {
                        f(base + m, g * V, jj, Im2winFlag<true>{});
                    } else {
#pragma unroll
                        for (int e = 0; e < V; ++e) {
                            if (m + e < K) {
                                f(base + m + e, g * V + e, jj, Im2winFlag<false>{});
                            }
                        }
                    }
                }
            }
        }
    }
};

// Writes a thread's accumulators to `out` through Output (an OutputTile), after applying the
// epilogue of prm unless `partial` (a split reduction's partial sums are written as they are).
// `out` holds ElementOut: the output type ElementY, or the accumulator type for partial sums.
template <class Tile, class Output, class ElementOut>
__device__ __forceinline__ void write_outputs(typename Tile::Types::ElementAcc (&acc)[Tile::TM][Tile::TN],
    bool partial, ElementOut* out, const typename Tile::ElementY* bias, const typename Tile::ElementX* residual,
    const ConvParams& prm, int m0, long long j0, int tx, int ty) {
    using Types = typename Tile::Types;
    using ElementAcc = typename Types::ElementAcc;
    static_assert(epilogue_supports<Types>, "the epilogue computes in float");
    constexpr int V = Output::V;
    const bool vectors = Output::vectors(prm) && im2win_aligned<V>(out);
    if (!partial) {
        // alpha * sum + bias: per output channel (the tile's row).
        const bool add_bias = prm.has_bias != 0;
#pragma unroll
        for (int i = 0; i < Tile::TM; ++i) {
            const int m = m0 + Tile::row(i, ty);
            const ElementAcc b = add_bias && m < prm.k ? Types::to_accumulator(bias[m]) : ElementAcc(0);
#pragma unroll
            for (int jj = 0; jj < Tile::TN; ++jj) {
                acc[i][jj] = fmaf(prm.alpha, acc[i][jj], b);
            }
        }
        // + beta * residual, read at the outputs' own offsets.
        if (prm.has_residual) {
            const ElementAcc beta = prm.beta;
            const bool res_vectors = vectors && im2win_aligned<V>(residual);
            Output::visit(prm, m0, j0, tx, ty, res_vectors, [&](long long at, int i, int jj, auto vector) {
                if constexpr (decltype(vector)::value) {
                    typename Types::ElementX r[V];
                    im2win_load<V>(residual + at, r);
#pragma unroll
                    for (int e = 0; e < V; ++e) {
                        ElementAcc& a = acc[i + e * Output::DI][jj + e * Output::DJ];
                        a = fmaf(beta, Types::to_accumulator(r[e]), a);
                    }
                } else {
                    acc[i][jj] = fmaf(beta, Types::to_accumulator(residual[at]), acc[i][jj]);
                }
            });
        }
        activate_all<Tile::TM * Tile::TN>(prm.activation, &acc[0][0]);
    }
    Output::visit(prm, m0, j0, tx, ty, vectors, [&](long long at, int i, int jj, auto vector) {
        if constexpr (decltype(vector)::value) {
            ElementOut v[V];
#pragma unroll
            for (int e = 0; e < V; ++e) {
                v[e] = Types::template from_accumulator<ElementOut>(acc[i + e * Output::DI][jj + e * Output::DJ]);
            }
            im2win_store<V>(out + at, v);
        } else {
            out[at] = Types::template from_accumulator<ElementOut>(acc[i][jj]);
        }
    });
}

}  // namespace im2win
