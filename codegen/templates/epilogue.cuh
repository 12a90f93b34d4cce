// im2win: the epilogue. What is written for each sum of the convolution,
//   y = act(alpha * sum + bias + beta * residual),
// applied by the convolution kernels to a thread's accumulators before the output tile stores
// them, and by the split reduction (support.cu.tera) to the complete sums, with the same
// functions: one order of operations for bias, residual and activation everywhere (the CPU
// backend's too, runtime/src/epilogue.rs `Epilogue::apply_f32`). With alpha = 1, no residual
// and the identity, exactly sum + bias.
//
// alpha is not applied here: the filter transforms (support.cu.tera) scale the transformed
// filter by it, so the sums arrive as alpha * sum (each product rounded once more: alpha * w is
// rounded to float; exact for alpha = 1 and powers of two) and the epilogue adds to them. Why: an FFMA
// with alpha as a common operand of all TM * TN accumulators leads ptxas to place the
// accumulators in one register bank for the whole kernel, where the main loop's FFMAs then
// read two operands of one bank (scripts/sass-bank-conflicts.py: 400-450 same-bank pairs per
// 512 FFMAs against about 100 with a plain add; 3-10% of the FP32 kernels' time).
//
// Everything else is chosen at run time (ConvParams) but costs nothing when unused: each stored
// unit's values are computed in fresh registers, in this order: bias, residual (loads at the
// output's offsets), activation. Keeping the steps behind uniform branches, rather than one
// templated functor per activation, keeps each kernel's code (and its compile time) near
// that of the plain store: the store loop exists once.
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
__device__ __forceinline__ float activate_smooth_inline(int act, float x) {
    if (act == IM2WIN_SILU) {
        return x / (1.0f + expf(-x));
    }
    if (act == IM2WIN_GELU) {
        return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));   // 1/sqrt(2)
    }
    const float inner = 0.79788456080286536f * (x + 0.044715f * x * x * x);   // sqrt(2/pi)
    return 0.5f * x * (1.0f + tanhf(inner));
}

__device__ IM2WIN_NOINLINE float activate_smooth(int act, float x) {
    return activate_smooth_inline(act, x);
}

// INLINE: the smooth activations inlined rather than called. For kernels without shared-memory
// staging whose epilogue holds many live values (conv_grouped.cuh): across a call, values that
// do not fit the ABI's callee-saved registers are spilled.
template <bool INLINE = false>
__device__ __forceinline__ float activate(int act, float x) {
    if (act == IM2WIN_IDENTITY) {
        return x;
    }
    if (act == IM2WIN_RELU) {
        return fmaxf(x, 0.0f);
    }
    if constexpr (INLINE) {
        return activate_smooth_inline(act, x);
    } else {
        return activate_smooth(act, x);
    }
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

// One element: act(sum + bias + beta * residual), in the accumulator type, for a sum that
// already holds alpha (the transformed filter's); `residual` is read only when the epilogue has
// one (the split reduction's per-element form).
// INLINE_ACTIVATION: see activate.
template <class Types, bool INLINE_ACTIVATION = false>
__device__ __forceinline__ typename Types::ElementAcc linear_combination(const ConvParams& prm,
    typename Types::ElementAcc sum, typename Types::ElementAcc bias, const typename Types::ElementX* residual) {
    static_assert(epilogue_supports<Types>, "the epilogue computes in float");
    typename Types::ElementAcc v = sum + bias;
    if (prm.has_residual) {
        v = fmaf(prm.beta, Types::to_accumulator(*residual), v);
    }
    return activate<INLINE_ACTIVATION>(prm.activation, v);
}

// ---- The output tile, staged through shared memory -----------------------------------------
//
// A thread's TM x TN accumulators are scattered over the block's BM x BN tile (rows
// Tile::row(i, ty), columns Smem::column(jj, tx)), which suits the main loop and no store. So
// the block writes them to shared memory one group of rows at a time (the freed main-loop
// stages hold a group: StagedOutput::ELEMENTS), and then walks the group in the output's own
// memory order, each thread taking consecutive vectors of Y: every store, residual load and bias
// load coalesces, and the walk is a short rolled loop instead of TM * TN unrolled units.
//
// Why the detour: the unrolled per-accumulator epilogue compiled to about 10,000 instructions
// of straight-line code per kernel (each unit with its bias, residual and activation branches),
// executed once per block from a cold instruction cache; on the 1x1 layers, whose main loops are
// short, that was 5-25% of the kernel's time. Its loads also could not be issued before the
// previous unit's store (they might alias), so a residual cost one memory latency per unit.
//
// Group g is the thread rows i = g*VM ... g*VM + VM - 1 of every thread: block rows
// [g*ROWS, (g+1)*ROWS), ROWS = TY * VM consecutive output channels. A layout says how a group is
// staged (lines of consecutive elements of Y) and where a line's elements go in Y:
//   NCHW: a line is one channel's BN pixels (consecutive in Y within an image);
//   NHWC: a line is one pixel's ROWS channels (consecutive in Y).
template <class Tile, class Smem, int LAYOUT>
struct StagedOutput;

template <class Tile, class Smem>
struct StagedOutput<Tile, Smem, IM2WIN_NCHW> {
    static_assert(Smem::INTERLEAVE == 1, "NCHW outputs come from row-major windows");
    static constexpr int ROWS = Tile::TY * Tile::VM;
    static constexpr int LINES = ROWS;          // a line per channel
    static constexpr int LINE = Tile::BN;       // its pixels
    static constexpr int STRIDE = LINE;
    static constexpr int ELEMENTS = LINES * STRIDE;
    // The bias is added as the sums are staged (one value per line, and see write_outputs).
    static constexpr bool STAGES_BIAS = true;
    // Whether the channels of each pair are staged in swapped order (NHWC, below).
    static constexpr bool SWAPS_PAIRS = false;
    // Thread (tx, ty) writes value(e, jj), the group's e-th row and jj-th pixel, e < VM,
    // jj < TN: VN consecutive pixels of a row at a time, one 16-byte write.
    template <class Value>
    static __device__ __forceinline__ void stage(typename Tile::Types::ElementAcc* staging, int tx, int ty, Value&& value) {
#pragma unroll
        for (int e = 0; e < Tile::VM; ++e) {
#pragma unroll
            for (int jj = 0; jj < Tile::TN; jj += Tile::VN) {
                typename Tile::Types::ElementAcc v[Tile::VN];
#pragma unroll
                for (int d = 0; d < Tile::VN; ++d) {
                    v[d] = value(e, jj + d);
                }
                im2win_store<Tile::VN>(staging + (ty * Tile::VM + e) * STRIDE + Smem::column(jj, tx), v);
            }
        }
    }
    // Units of V pixels are V consecutive elements of Y when P*Q is a multiple of V (a unit
    // starts at a multiple of V, so it never crosses an image).
    template <int V>
    static __device__ __forceinline__ bool vectors(const ConvParams& prm) {
        return ((long long)prm.p * prm.q) % V == 0;
    }
    // Where the walk's units go in Y[N][K][P][Q], for a thread whose units all start at
    // element `pos` of their lines: one pixel j0 + pos, so its offset in Y is found once, and
    // line `line` of group g (channel m0 + g*ROWS + line) adds m * P * Q.
    struct Walk {
        const ConvParams& prm;
        long long pixel;   // offset of (n, 0, p, q) in Y, or -1 past N*P*Q
        int m0;
        __device__ __forceinline__ Walk(const ConvParams& prm_, int m0_, long long j0, int pos)
            : prm(prm_), pixel(-1), m0(m0_) {
            const long long PQ = (long long)prm.p * prm.q;
            const long long j = j0 + pos;
            if (j < prm.npq) {
                const long long n = j / PQ;   // once per thread
                pixel = n * prm.k * PQ + (j - n * PQ);
            }
        }
        // The channel of element `pos` of the line, and the offset of the unit in Y or -1.
        __device__ __forceinline__ int channel(int g, int line, int /*pos*/) const { return m0 + g * ROWS + line; }
        __device__ __forceinline__ long long at(int g, int line) const {
            const int m = m0 + g * ROWS + line;
            return pixel >= 0 && m < prm.k ? pixel + (long long)m * prm.p * prm.q : -1;
        }
    };
};

template <class Tile, class Smem>
struct StagedOutput<Tile, Smem, IM2WIN_NHWC> {
    static constexpr int ROWS = Tile::TY * Tile::VM;
    static constexpr int LINES = Tile::BN;      // a line per pixel
    static constexpr int LINE = ROWS;           // its channels of the group
    // Lines padded to 4 words past a multiple of 32, so that the walk's 16-byte reads stay
    // aligned and the threads' writes of one channel pair for consecutive pixels spread over
    // the banks.
    static constexpr int STRIDE = LINE + (36 - LINE % 32) % 32;
    static constexpr int ELEMENTS = LINES * STRIDE;
    // The bias is added by the walk, V channels at a time (adding it as the sums are staged
    // made ptxas spill in the 64x64 tiles).
    static constexpr bool STAGES_BIAS = false;
    // Channels 2i and 2i + 1 of a line are staged in swapped order (see stage()).
    static constexpr bool SWAPS_PAIRS = true;
    // Thread (tx, ty) writes value(e, jj), the group's e-th row and jj-th pixel, two channels
    // at a time: a 16-byte write of VM channels would need the VM values in 4 aligned registers,
    // which here (a column of the accumulators) makes ptxas spill; single writes did too in
    // other tiles (ptxas -v on every NHWC kernel, nvcc 13.0).
    template <class Value>
    static __device__ __forceinline__ void stage(typename Tile::Types::ElementAcc* staging, int tx, int ty, Value&& value) {
#pragma unroll
        for (int e = 0; e < Tile::VM; e += 2) {
#pragma unroll
            for (int jj = 0; jj < Tile::TN; ++jj) {
                // The pair swapped (channel e + 1 first; the walk swaps it back): the 8-byte
                // write puts its two values in an aligned register pair, and ptxas keeps the
                // accumulators there for the whole main loop. In channel order accumulator i
                // would share a register bank with filter value i, loaded by 16-byte reads
                // into aligned quads: one extra cycle in most main-loop FFMAs
                // (scripts/sass-bank-conflicts.py: 416 same-bank pairs per 512 FFMAs in the
                // 128x128x8 tile, 216 swapped; 6% of its time on the paper's NHWC 3x3 layers,
                // H100, scripts/kernel-ab.py, 2026-12-07).
                typename Tile::Types::ElementAcc v[2] = {value(e + 1, jj), value(e, jj)};
                im2win_store<2>(staging + Smem::column(jj, tx) * STRIDE + ty * Tile::VM + e, v);
            }
        }
    }
    template <int V>
    static __device__ __forceinline__ bool vectors(const ConvParams& prm) {
        return prm.k % V == 0;
    }
    // Where the walk's units go in Y[N][P][Q][K] = Y[j][K], for a thread whose units all start
    // at element `pos` of their lines: channel m0 + g*ROWS + pos of pixel j0 + line.
    struct Walk {
        const ConvParams& prm;
        long long j0;
        int m0, pos;
        __device__ __forceinline__ Walk(const ConvParams& prm_, int m0_, long long j0_, int pos_)
            : prm(prm_), j0(j0_), m0(m0_), pos(pos_) {}
        __device__ __forceinline__ int channel(int g, int /*line*/, int p) const { return m0 + g * ROWS + p; }
        __device__ __forceinline__ long long at(int g, int line) const {
            const long long j = j0 + line;
            const int m = m0 + g * ROWS + pos;
            return j < prm.npq && m < prm.k ? j * prm.k + m : -1;
        }
    };
};

// Writes the block's outputs: the thread's accumulators `acc`, through the shared staging area
// `staging` (StagedOutput::ELEMENTS of ElementAcc; the main loop's stages, free now), to `out`.
// Applies the epilogue of prm unless `partial` (a split reduction's partial sums are written as
// they are). `out` holds ElementOut: the output type ElementY, or the accumulator type for
// partial sums. Every thread of the block calls it (it has barriers), after the main loop.
template <class Tile, class Staged, class ElementOut>
__device__ __forceinline__ void write_outputs(const typename Tile::Types::ElementAcc (&acc)[Tile::TM][Tile::TN],
    typename Tile::Types::ElementAcc* staging, bool partial, ElementOut* out, const typename Tile::ElementY* bias,
    const typename Tile::ElementX* residual, const ConvParams& prm, int m0, long long j0, int tx, int ty) {
    using Types = typename Tile::Types;
    using ElementAcc = typename Types::ElementAcc;
    static_assert(epilogue_supports<Types>, "the epilogue computes in float");
    // Units of V elements: as many as one 16-byte access of the widest type moved holds, and a
    // divisor of the line.
    constexpr int V = vector_width(access_elements<ElementAcc, ElementOut, typename Types::ElementX>(), Staged::LINE);
    const bool add_bias = !partial && prm.has_bias != 0;
    const bool add_residual = !partial && prm.has_residual != 0;
    const ElementAcc beta = add_residual ? ElementAcc(prm.beta) : ElementAcc(0);
    const int act = partial ? int(IM2WIN_IDENTITY) : prm.activation;
    const bool vectors = V > 1 && Staged::template vectors<V>(prm) && im2win_aligned<V>(out)
        && (!add_residual || im2win_aligned<V>(residual));
    const int tid = ty * Tile::TX + tx;
#pragma unroll
    for (int g = 0; g < Tile::TM / Tile::VM; ++g) {
        // The main loop's last reads of shared memory (or the previous group's) are done.
        __syncthreads();
        // sum + bias, one element at a time. The sums already hold alpha (the top of this file
        // says why), and adding the bias here, in registers, is also what keeps ptxas's
        // allocation of the accumulators good: consumed only by stores, they are placed in
        // aligned quads that share a register bank with the window values in most of the main
        // loop's FFMAs (scripts/sass-bank-conflicts.py: 346 same-bank pairs per 512 FFMAs
        // against 98). Single stores for the same reason (im2win_store_shared).
        if constexpr (Staged::STAGES_BIAS) {
            ElementAcc b[Tile::VM];
#pragma unroll
            for (int e = 0; e < Tile::VM; ++e) {
                const int m = m0 + Tile::row(g * Tile::VM + e, ty);
                b[e] = add_bias && m < prm.k ? Types::to_accumulator(bias[m]) : ElementAcc(0);
            }
            Staged::stage(staging, tx, ty, [&](int e, int jj) { return acc[g * Tile::VM + e][jj] + b[e]; });
        } else {
            Staged::stage(staging, tx, ty, [&](int e, int jj) { return acc[g * Tile::VM + e][jj]; });
        }
        __syncthreads();
        // The walk: unit u is elements [u*U, u*U + U) of the group in line order; consecutive
        // threads take consecutive units, so that each thread's units all start at the same
        // element `pos` of their lines (THREADS is a multiple of the units per line). A round
        // first loads what its units need (staged values and residuals, independent and in
        // flight together: a residual costs one memory latency per round), then stores.
        auto walk = [&](auto unit) {
            constexpr int U = decltype(unit)::value;
            constexpr int PER_LINE = Staged::LINE / U;
            static_assert(Tile::THREADS % PER_LINE == 0, "a thread's units start at one position of their lines");
            constexpr int LINES_PER_PASS = Tile::THREADS / PER_LINE;
            // Every unit of the thread in the group (up to 8) in one round.
            constexpr int UNITS = Staged::LINES * PER_LINE / Tile::THREADS;
            // Two units a round: more keep too many registers live beside the accumulators of
            // the groups still to come (ptxas spills with 4 or 8).
            constexpr int PER_ROUND = UNITS >= 2 ? 2 : 1;
            const int pos = tid % PER_LINE * U;
            const typename Staged::Walk Y(prm, m0, j0, pos);
#pragma unroll 1
            for (int line0 = tid / PER_LINE; line0 < Staged::LINES; line0 += PER_ROUND * LINES_PER_PASS) {
                ElementAcc v[PER_ROUND][U];
                long long at[PER_ROUND];
#pragma unroll
                for (int q = 0; q < PER_ROUND; ++q) {
                    const int line = line0 + q * LINES_PER_PASS;
                    at[q] = line < Staged::LINES ? Y.at(g, line) : -1;
                    typename Types::ElementX r[U];
#pragma unroll
                    for (int e = 0; e < U; ++e) {
                        v[q][e] = ElementAcc(0);
                        r[e] = typename Types::ElementX(0);
                    }
                    if (at[q] >= 0) {
                        if constexpr (Staged::SWAPS_PAIRS && U == 1) {
                            v[q][0] = staging[line * Staged::STRIDE + (pos ^ 1)];
                        } else {
                            im2win_load<U>(staging + line * Staged::STRIDE + pos, v[q]);
                        }
                        if constexpr (Staged::SWAPS_PAIRS && U > 1) {
#pragma unroll
                            for (int e = 0; e < U; e += 2) {
                                const ElementAcc t = v[q][e];
                                v[q][e] = v[q][e + 1];
                                v[q][e + 1] = t;
                            }
                        }
                        if (add_residual) {
                            im2win_load<U>(residual + at[q], r);
                        }
                        if (!Staged::STAGES_BIAS && add_bias) {
                            // V consecutive channels (NHWC): one vector when the bias allows.
                            const int m = Y.channel(g, line, pos);
                            typename Types::ElementY b[U];
                            if (U > 1 && im2win_aligned<U>(bias)) {
                                im2win_load<U>(bias + m, b);
                            } else {
#pragma unroll
                                for (int e = 0; e < U; ++e) {
                                    b[e] = bias[m + e];
                                }
                            }
#pragma unroll
                            for (int e = 0; e < U; ++e) {
                                v[q][e] += Types::to_accumulator(b[e]);
                            }
                        }
                    }
                    // + beta * residual (beta = 0 and r = 0 without one).
#pragma unroll
                    for (int e = 0; e < U; ++e) {
                        v[q][e] = fmaf(beta, Types::to_accumulator(r[e]), v[q][e]);
                    }
                }
#pragma unroll
                for (int q = 0; q < PER_ROUND; ++q) {
                    activate_all<U>(act, v[q]);
                    if (at[q] >= 0) {
                        ElementOut o[U];
#pragma unroll
                        for (int e = 0; e < U; ++e) {
                            o[e] = Types::template from_accumulator<ElementOut>(v[q][e]);
                        }
                        im2win_store<U>(out + at[q], o);
                    }
                }
            }
        };
        if (vectors) {
            walk(std::integral_constant<int, V>{});
        } else {
            walk(std::integral_constant<int, 1>{});
        }
    }
}

}  // namespace im2win
