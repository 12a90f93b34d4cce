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

// The taps of a fixed geometry (R * S), 1 for the generic one (its taps are not a constant).
template <class G, bool FIXED = G::FIXED>
struct FixedTaps {
    static constexpr int value = 1;
};
template <class G>
struct FixedTaps<G, true> {
    static constexpr int value = G::R * G::S;
};

// Whether a thread's VQ outputs start on whole VX-element vectors of the input row (VQ * SW a
// multiple of VX): a fixed geometry's depthwise NCHW vector path; never the generic one.
template <class G, int VQ, int VX, bool FIXED = G::FIXED>
struct VectorRows {
    static constexpr bool value = false;
};
template <class G, int VQ, int VX>
struct VectorRows<G, VQ, VX, true> {
    static constexpr bool value = (VQ * G::SW) % VX == 0;
};

// ---- Depthwise, NCHW ------------------------------------------------------------------------
// Work item: (n, k, p, segment of VQ outputs along q), the segment fastest, so that a warp's
// threads cover consecutive segments of a row (or of consecutive rows of one plane).
//
// Two ways to read a filter row's input columns (launch-uniform choice):
//   vector (fixed geometry, rows 16-byte aligned: W a multiple of a vector, an aligned input,
//     left padding 0 to 2): each thread loads the columns its own outputs start on, OWN =
//     VQ * SW of them, as 16-byte vectors (a warp's load is one contiguous run), and takes the
//     halo its windows reach into the neighbours' columns from the neighbouring lanes
//     (__shfl_up_sync / __shfl_down_sync), loading it only at a warp's or a row's edge. The
//     first version loaded every thread's whole span element by element: a warp's load touched
//     4 lines for 32 useful elements, and ncu on an H200 had that kernel at 69% of L1
//     throughput and 70% of the SM's issue rate, 28% of DRAM bandwidth.
//   span (any other case): the span under the thread's VQ windows element by element, as the
//     first version; the generic geometry reads tap by tap.
template <class Types, class G, int THREADS, int VQ>
struct DepthwiseNchw {
    using X = typename Types::ElementX;
    using F = typename Types::ElementF;
    using Y = typename Types::ElementY;
    // Elements of a 16-byte vector of the input.
    static constexpr int VX = MAX_ACCESS_BYTES / (int)sizeof(X);

    // The work item's position.
    struct Item {
        unsigned int row;   // (n * K + k) * P + p
        int q0;             // first output column
        int segment;        // q0 / VQ
        int p;
        int k;
        long long n;
    };

    static __device__ __forceinline__ Item locate(unsigned int item, const ConvParams& prm, int segments) {
        Item it;
        const unsigned int segments_u = (unsigned int)segments, p_u = (unsigned int)prm.p, k_u = (unsigned int)prm.k;
        it.row = item / segments_u;
        it.segment = (int)(item - it.row * segments_u);
        it.q0 = it.segment * VQ;
        const unsigned int plane = it.row / p_u;                    // n * K + k
        it.p = (int)(it.row - plane * p_u);
        it.n = plane / k_u;
        it.k = (int)(plane - (unsigned int)it.n * k_u);
        return it;
    }

    static __device__ __forceinline__ void store(const ConvParams& prm, const Item& it, const float (&acc)[VQ],
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y) {
        const long long out = (long long)it.row * prm.q + it.q0;
#pragma unroll
        for (int v = 0; v < VQ; ++v) {
            if (it.q0 + v < prm.q) {
                store_output<Types>(prm, acc[v], it.k, bias, residual, y, out + v);
            }
        }
    }

    static __device__ __forceinline__ void run(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        if constexpr (VectorRows<G, VQ, VX>::value) {
            const bool rows_aligned = prm.w % VX == 0 && reinterpret_cast<unsigned long long>(x) % MAX_ACCESS_BYTES == 0;
            if (rows_aligned) {
                switch (prm.pad_left) {
                case 0: return run_vector<0>(x, f, bias, residual, y, prm);
                case 1: return run_vector<1>(x, f, bias, residual, y, prm);
                case 2: return run_vector<2>(x, f, bias, residual, y, prm);
                default: break;
                }
            }
        }
        run_span(x, f, bias, residual, y, prm);
    }

    // The vector path (see the top of this section), for left padding PAD. Every thread of the
    // launch runs it to the end (the shuffles need the whole warp): a thread past the last
    // item computes the last item again and stores nothing.
    template <int PAD>
    static __device__ __forceinline__ void run_vector(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        using VectorX = ElementVector<X, VX>;
        constexpr int OWN = VQ * G::SW;                  // columns a thread loads itself
        constexpr int NV = OWN / VX;                     // as this many vectors
        constexpr int SPAN = (VQ - 1) * G::SW + G::S;    // columns under its VQ windows
        constexpr int RIGHT = SPAN - PAD - OWN > 0 ? SPAN - PAD - OWN : 0;   // past its own
        static_assert(PAD <= OWN && RIGHT <= OWN, "the halo lies in the neighbouring lanes' columns");
        constexpr unsigned int WARP = 0xffffffffu;
        const GroupShape groups(prm);
        const int segments = (prm.q + VQ - 1) / VQ;
        const long long items = (long long)prm.n * prm.k * prm.p * segments;
        const long long mine = (long long)blockIdx.x * THREADS + threadIdx.x;
        const bool active = mine < items;
        const unsigned int item = (unsigned int)(active ? mine : items - 1);
        const Item it = locate(item, prm, segments);
        const int lane = (int)(threadIdx.x % 32);
        // The neighbouring lanes hold the previous and the next segment of the same row.
        const bool left_from_lane = lane > 0 && it.segment > 0 && active;
        const bool right_from_lane = lane < 31 && it.segment + 1 < segments && mine + 1 < items;
        const int c = it.k / groups.kg;
        const X* xc = x + (it.n * prm.c + c) * (long long)prm.h * prm.w;
        const F* fk = f + (long long)it.k * G::R * G::S;
        const int own0 = it.q0 * G::SW;                  // first own column
        auto element = [&](const X* row_x, bool row_in, int col) -> float {
            return row_in && col >= 0 && col < prm.w ? Types::to_accumulator(row_x[col]) : 0.0f;
        };
        float acc[VQ];
#pragma unroll
        for (int v = 0; v < VQ; ++v) {
            acc[v] = 0.0f;
        }
#pragma unroll
        for (int r = 0; r < G::R; ++r) {
            const int iy = it.p * G::SH - prm.pad_top + r;
            const bool row_in = iy >= 0 && iy < prm.h;
            const X* row_x = xc + (long long)(row_in ? iy : 0) * prm.w;
            // Own columns: whole vectors inside the row or past its end (W is a multiple of VX).
            float own[OWN];
#pragma unroll
            for (int j = 0; j < NV; ++j) {
                const int col = own0 + j * VX;
                X in[VX];
                if (row_in && col < prm.w) {
                    VectorX::unpack(*reinterpret_cast<const typename VectorX::type*>(row_x + col), in);
                } else {
#pragma unroll
                    for (int e = 0; e < VX; ++e) {
                        in[e] = Types::template from_accumulator<X>(0.0f);
                    }
                }
#pragma unroll
                for (int e = 0; e < VX; ++e) {
                    own[j * VX + e] = Types::to_accumulator(in[e]);
                }
            }
            float span[SPAN];
#pragma unroll
            for (int i = 0; i < PAD; ++i) {
                // Column own0 - PAD + i: the previous lane's own column OWN - PAD + i.
                const float shuffled = __shfl_up_sync(WARP, own[OWN - PAD + i], 1);
                span[i] = left_from_lane ? shuffled : element(row_x, row_in, own0 - PAD + i);
            }
#pragma unroll
            for (int i = 0; i < OWN && PAD + i < SPAN; ++i) {
                span[PAD + i] = own[i];
            }
#pragma unroll
            for (int i = 0; i < RIGHT; ++i) {
                // Column own0 + OWN + i: the next lane's own column i.
                const float shuffled = __shfl_down_sync(WARP, own[i], 1);
                span[PAD + OWN + i] = right_from_lane ? shuffled : element(row_x, row_in, own0 + OWN + i);
            }
#pragma unroll
            for (int s = 0; s < G::S; ++s) {
                const float w = Types::to_accumulator(fk[r * G::S + s]);
#pragma unroll
                for (int v = 0; v < VQ; ++v) {
                    acc[v] = fmaf(span[v * G::SW + s], w, acc[v]);
                }
            }
        }
        if (active) {
            store(prm, it, acc, bias, residual, y);
        }
    }

    // The span path (see the top of this section).
    static __device__ __forceinline__ void run_span(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        const G g(prm);
        const GroupShape groups(prm);
        const int segments = (prm.q + VQ - 1) / VQ;
        const long long items = (long long)prm.n * prm.k * prm.p * segments;
        for_this_item<THREADS>(items, [&](unsigned int item) {
            const Item it = locate(item, prm, segments);
            // Output channel k reads input channel k / Kg (Cg = 1).
            const int c = it.k / groups.kg;
            const X* xc = x + (it.n * prm.c + c) * (long long)prm.h * prm.w;
            const F* fk = f + (long long)it.k * g.R * g.S;
            const int x0 = it.q0 * g.SW - prm.pad_left;
            float acc[VQ];
#pragma unroll
            for (int v = 0; v < VQ; ++v) {
                acc[v] = 0.0f;
            }
#pragma unroll
            for (int r = 0; r < g.R; ++r) {
                const int iy = it.p * g.SH - prm.pad_top + r * g.DH;
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
            store(prm, it, acc, bias, residual, y);
        });
    }
};

// ---- Depthwise, NHWC ------------------------------------------------------------------------
// Work item: (chunk of channel vectors, n, p, segment of VQ pixels along q, vector in the chunk),
// the vector fastest. A chunk is the largest power of two of consecutive channel vectors, at
// most a warp's 32, that divides the vector count (no lane idles): a warp's lanes read `chunk`
// consecutive 16-byte vectors of one pixel (one contiguous run), for 32 / chunk pixel segments.
// Channels outermost keeps a block on one or two chunks, so the block stages their weights in
// shared memory once, transposed to [tap][channel]: each tap's VC weights are then one 16-byte
// shared-memory read. (Read from the filter, K x R x S, a lane's VC weights of a tap are VC
// loads strided by R * S; a warp's load touched up to 36 cache lines, and these loads, not the
// input's, bounded the first version of this kernel.)
//
// The staging holds STAGED_VECTORS channel vectors (9 KB for a 3 x 3 filter); a block whose
// items span more (a problem with fewer pixel segments than the block has lanes per chunk)
// reads the filter directly, as does the generic geometry (its tap count is not a constant).
template <class Types, class G, int THREADS, int VC, int VQ>
struct DepthwiseNhwc {
    using X = typename Types::ElementX;
    using F = typename Types::ElementF;
    using Y = typename Types::ElementY;
    using VectorX = ElementVector<X, VC>;
    using VectorF = ElementVector<F, VC>;
    using VectorY = ElementVector<Y, VC>;
    static_assert(sizeof(X) * VC <= MAX_ACCESS_BYTES && sizeof(Y) * VC <= MAX_ACCESS_BYTES,
        "a channel vector is one access of at most 16 bytes");
    static constexpr int STAGED_VECTORS = 64;
    static constexpr int STAGED_TAPS = FixedTaps<G>::value;

    static __device__ __forceinline__ bool aligned(const void* ptr) {
        return reinterpret_cast<unsigned long long>(ptr) % (sizeof(X) * VC) == 0;
    }

    static __device__ __forceinline__ void run(const X* __restrict__ x, const F* __restrict__ f,
        const Y* __restrict__ bias, const X* __restrict__ residual, Y* __restrict__ y, const ConvParams& prm) {
        const G g(prm);
        const GroupShape groups(prm);
        const int vectors = (prm.k + VC - 1) / VC;
        const int segments = (prm.q + VQ - 1) / VQ;
        // The chunk: vectors' lowest set bit, at most 32 (uniform; shifts, not divisions).
        const unsigned int lowest_bit = (unsigned int)(vectors & -vectors);
        const unsigned int chunk = lowest_bit < 32u ? lowest_bit : 32u;
        const unsigned int chunk_shift = (unsigned int)__ffs((int)chunk) - 1;
        const unsigned int segments_u = (unsigned int)segments, p_u = (unsigned int)prm.p;
        const long long items = (long long)prm.n * prm.p * segments * vectors;
        // Pixel segments of the whole problem (n * P * segments, below 2^32 as items is).
        const unsigned int pixsegs = (unsigned int)((long long)prm.n * prm.p * segments);
        // Whole vectors of consecutive input channels: multiplier 1 (k reads channel k), C a
        // multiple of VC (every vector whole, every pixel's row aligned) and aligned buffers.
        // Uniform over the launch.
        const bool vector = groups.kg == 1 && prm.c % VC == 0 && aligned(x) && aligned(y) &&
            (!prm.has_residual || aligned(residual));
        const int taps = g.R * g.S;
        if (items <= 0) {
            return;   // uniform: no block of an empty launch stages anything
        }

        // The block's channels, staged (every thread takes part, also those past the items).
        __shared__ __align__(16) F staged[STAGED_TAPS][STAGED_VECTORS * VC];
        int staged_first = 0;   // the first staged channel (a chunk's first)
        bool use_staged = false;
        if constexpr (G::FIXED) {
            const long long first_item = (long long)blockIdx.x * THREADS;
            const long long last_item = (first_item + THREADS < items ? first_item + THREADS : items) - 1;
            const unsigned int chunk_lo = (unsigned int)(first_item >> chunk_shift) / pixsegs;
            const unsigned int chunk_hi = (unsigned int)(last_item >> chunk_shift) / pixsegs;
            use_staged = (chunk_hi - chunk_lo + 1) * chunk <= (unsigned int)STAGED_VECTORS;
            if (use_staged) {
                staged_first = (int)(chunk_lo * chunk) * VC;
                const int count = (int)((chunk_hi - chunk_lo + 1) * chunk) * VC;
                // Channel fastest: conflict-free shared stores; the filter's reads stride by
                // the tap count, their lines reused by the next taps from L1.
                for (int i = threadIdx.x; i < STAGED_TAPS * count; i += THREADS) {
                    const int tap = i / count;
                    const int j = i - tap * count;
                    const int k = staged_first + j;
                    staged[tap][j] = k < prm.k ? f[(long long)k * STAGED_TAPS + tap]
                                               : Types::template from_accumulator<F>(0.0f);
                }
            }
            __syncthreads();
        }

        for_this_item<THREADS>(items, [&](unsigned int item) {
            const unsigned int lane_vector = item & (chunk - 1);
            const unsigned int rest = item >> chunk_shift;          // chunk * pixsegs + pixseg
            const unsigned int chunk_index = rest / pixsegs;
            const unsigned int pixseg = rest - chunk_index * pixsegs; // (n * P + p) * segments + segment
            const int k0 = (int)(chunk_index * chunk + lane_vector) * VC;
            const unsigned int row = pixseg / segments_u;           // n * P + p
            const int q0 = (int)(pixseg - row * segments_u) * VQ;
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
            // The tap's weight for each of the thread's channels (depthwise filters are
            // [K][R][S] in either filter layout: Cg = 1), reused by its VQ pixels.
            auto weights = [&](int tap, float (&w)[VC]) {
                if (use_staged) {
                    F in[VC];
                    VectorF::unpack(*reinterpret_cast<const typename VectorF::type*>(&staged[tap][k0 - staged_first]), in);
#pragma unroll
                    for (int e = 0; e < VC; ++e) {
                        w[e] = Types::to_accumulator(in[e]);
                    }
                } else {
#pragma unroll
                    for (int e = 0; e < VC; ++e) {
                        const int k = k0 + e < prm.k ? k0 + e : prm.k - 1;
                        w[e] = Types::to_accumulator(f[(long long)k * taps + tap]);
                    }
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
