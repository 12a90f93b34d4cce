// im2win: the operand loaders of the tensor-core kernels: where a stage's data is.
//
//   A (pixels):   Act[j][kk] = X(n, p*sh - pad_top + r*dh, q*sw - pad_left + s*dw, c), 0 outside X
//                 (the im2win window of output pixel j, gathered from the NHWC input);
//   B (channels): F[k][kk], a KRSC filter row (kk = (r*S + s)*C + c: channels fastest, the
//                 order of the NHWC gather), read in place: no filter transform.
// Each stage holds BK consecutive reduction indices of every row, in 16-byte pieces of
// CHUNK_ELEMENTS (8 two-byte elements, 4 floats); thread tid always copies piece tid % CHUNKS
// of its rows (tile_tensorop.cuh), so its reduction index, and the tap (r, s) and channel c it
// falls on, are the same for all its rows: it decomposes kk once per stage, and each row adds
// its own precomputed part.
//
// A stage's copies are made in three calls, so that the kernel can spread them between the
// k-steps of the MMA (conv_fprop_tensorop.cuh): prepare(k0) works out the stage's tap and
// channel once, copy(i, smem) fills the piece of the thread's i-th row, complete(smem) finishes.
// The per-row work of a copy is kept to a few instructions (it competes with the MMAs for issue
// slots): a 64-bit add of the stage's displacement to the row's precomputed pointer, and one
// test of whether the tap lies inside X.
//
// Two ways to fill a piece, chosen at compile time (VECTOR):
//   VECTOR = true   C is a multiple of CHUNK_ELEMENTS and X, F are 16-byte aligned: a piece is
//                   one tap's consecutive channels, inside X (or the reduction, the filter's
//                   K rows) or not as a whole, and aligned: one cp.async of 16 bytes, zero-filled
//                   when outside (src-size 0: nothing is read, so the address of an outside
//                   piece, which may lie outside X, is never dereferenced; CUTLASS's zfill
//                   copies rely on the same). copy() does it all; complete() nothing.
//   VECTOR = false  any C (the C = 3 stems): the piece is CHUNK_ELEMENTS single elements,
//                   each its own tap and bounds check (the padding is done here, in registers,
//                   never by copying the tensor). copy() loads them into registers (ordinary
//                   predicated loads, in flight while the stage before is multiplied),
//                   complete() packs them into one 16-byte shared store per row.
// Whether a tap lies inside X: fixed geometries with at most 32 taps keep, per row, a mask of
// the taps that do (bit r*S + s), so the test is one AND; the others compare the tap's row and
// column with H and W. Every row past N*P*Q (K) and every index past C*R*S is a zero.
#pragma once

#include "copy.cuh"
#include "geometry.cuh"
#include "tile_tensorop.cuh"

namespace im2win {

// R * S when the geometry fixes it, else 0.
template <class Geometry>
constexpr int fixed_taps() {
    if constexpr (Geometry::FIXED) {
        return Geometry::R * Geometry::S;
    } else {
        return 0;
    }
}

// The same number of bits as Element, for moving elements without arithmetic.
template <int BYTES>
struct ElementBits;
template <>
struct ElementBits<2> {
    using type = unsigned short;
};
template <>
struct ElementBits<4> {
    using type = unsigned int;
};

// Packs the CHUNK_ELEMENTS element values of a piece into the four words of a 16-byte store.
template <class Bits, int N>
__device__ __forceinline__ uint4 pack_piece(const Bits (&v)[N]) {
    static_assert(N * sizeof(Bits) == 16, "a piece is 16 bytes");
    unsigned int w[4];
    if constexpr (sizeof(Bits) == 2) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[i] = (unsigned int)v[2 * i] | ((unsigned int)v[2 * i + 1] << 16);
        }
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            w[i] = v[i];
        }
    }
    return make_uint4(w[0], w[1], w[2], w[3]);
}

__device__ __forceinline__ void store_shared_16(unsigned int address, const uint4& v) {
#if defined(__CUDA_ARCH__)
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};\n" ::"r"(address), "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w)
                 : "memory");
#endif
}

// The window gather (operand A). Each of the thread's rows (pixels) keeps a pointer to its
// window's top-left corner (channel 0) in X, which padding may put outside X (it is then only
// ever offset, never dereferenced), and either the mask of its taps inside X or the corner's row
// and column; a stage adds the tap's displacement, the same for every row.
template <class Tile, class Geometry, bool VECTOR>
struct NhwcWindowGather {
    using Element = typename Tile::ElementX;
    using Bits = typename ElementBits<sizeof(Element)>::type;
    using Rows = SwizzledRows<Tile::ROW_BYTES>;
    static constexpr int PASSES = Tile::A_PASSES;
    static constexpr int CE = Tile::CHUNK_ELEMENTS;
    static constexpr bool TAP_MASK = fixed_taps<Geometry>() > 0 && fixed_taps<Geometry>() <= 32;

    Geometry g;
    int C, H, W;
    unsigned int CRS;
    Divider div_c;
    int piece;                              // the thread's piece of every row: indices piece*CE ..
    int smem_row0;                          // its first row in the stage
    const unsigned char* corner[PASSES];    // (n, h0, w0, 0) in X, as a byte address
    unsigned int taps[TAP_MASK ? PASSES : 1];   // TAP_MASK: bit r*S + s, tap inside X
    int h0[TAP_MASK ? 1 : PASSES];          // else the corner's row (far above X past N*P*Q)
    int w0[TAP_MASK ? 1 : PASSES];          // and column
    Bits staged[PASSES][VECTOR ? 1 : CE];   // VECTOR = false: a stage's elements in flight
    // The stage being copied (prepare()).
    unsigned int kk;                        // the thread's first reduction index
    int r, s, c;                            // its tap and channel
    long long delta;                        // bytes from a corner to (r, s, c)
    unsigned int bit;                       // TAP_MASK: the tap's bit, 0 past C*R*S

    __device__ __forceinline__ NhwcWindowGather(const Element* x, const ConvParams& prm, long long j0, int tid)
        : g(prm), C(prm.c), H(prm.h), W(prm.w), CRS((unsigned int)prm.crs), div_c(prm.c) {
        piece = tid % Tile::CHUNKS;
        smem_row0 = tid / Tile::CHUNKS;
        const long long PQ = (long long)prm.p * prm.q;
        const Divider div_pq(PQ);
        const Divider div_q(prm.q);
        const long long image = (long long)prm.h * prm.w * prm.c;
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const long long j = j0 + smem_row0 + i * Tile::ROWS_PER_PASS;
            int top = -(1 << 30);   // every row test fails: top + r*dh stays negative
            int left = 0;
            long long at = 0;
            if (j < prm.npq) {
                const long long n = div_pq.div(j);
                const long long pq = j - n * PQ;
                const int p = (int)div_q.div(pq);
                const int q = (int)(pq - (long long)p * prm.q);
                top = p * g.SH - prm.pad_top;
                left = q * g.SW - prm.pad_left;
                at = n * image + ((long long)top * W + left) * C;
            }
            corner[i] = reinterpret_cast<const unsigned char*>(x) + at * (long long)sizeof(Element);
            if constexpr (TAP_MASK) {
                unsigned int rows = 0, cols = 0;
#pragma unroll
                for (int t = 0; t < Geometry::R; ++t) {
                    rows |= (unsigned int)((unsigned int)(top + t) < (unsigned int)H) << t;
                }
#pragma unroll
                for (int t = 0; t < Geometry::S; ++t) {
                    cols |= (unsigned int)((unsigned int)(left + t) < (unsigned int)W) << t;
                }
                unsigned int m = 0;
#pragma unroll
                for (int t = 0; t < Geometry::R; ++t) {
                    m |= ((rows >> t) & 1u) ? cols << (t * Geometry::S) : 0u;
                }
                taps[i] = m;
            } else {
                h0[i] = top;
                w0[i] = left;
            }
        }
    }

    __device__ __forceinline__ bool inside(int h, int w) const {
        return (unsigned int)h < (unsigned int)H && (unsigned int)w < (unsigned int)W;
    }

    // Bytes from a window's corner to tap (r, s), channel c.
    __device__ __forceinline__ long long displacement(int r_, int s_, int c_) const {
        return (((long long)(r_ * g.DH) * W + s_ * g.DW) * C + c_) * (long long)sizeof(Element);
    }

    // The stage at reduction index k0: the thread's index kk = (r*S + s)*C + c.
    __device__ __forceinline__ void prepare(unsigned int k0) {
        kk = k0 + piece * CE;
        const unsigned int rs = div_c.div32(kk);
        c = (int)(kk - rs * (unsigned int)C);
        r = (int)g.div_s.div32(rs);
        s = (int)rs - r * g.S;
        delta = displacement(r, s, c);
        if constexpr (TAP_MASK) {
            bit = kk < CRS ? 1u << rs : 0u;   // C*R*S is a multiple of CE (VECTOR): in or out whole
        }
    }

    // Row i's piece of the stage into the stage's A rows at shared address `a` (VECTOR), or
    // (VECTOR = false, with i = 0) every row's piece into registers.
    __device__ __forceinline__ void copy(int i, unsigned int a) {
        if constexpr (VECTOR) {
            bool in;
            if constexpr (TAP_MASK) {
                in = (taps[i] & bit) != 0;
            } else {
                in = kk < CRS && inside(h0[i] + r * g.DH, w0[i] + s * g.DW);
            }
            const int row = smem_row0 + i * Tile::ROWS_PER_PASS;
            im2win_cp_async_16(a + Rows::offset(row, piece), corner[i] + delta, in);
        } else if (i == 0) {
            // All rows at once, element by element: each element is its own tap (then on to the
            // next channel, wrapping to the next tap), and its displacement and tap are worked
            // out once for all the rows. (Row by row, the same arithmetic per row made the loop
            // twice as long and these kernels twice as slow: 1350 against 750 instructions per
            // stage on the 128x64 tile, scripts/tc/NOTES.md.)
            int re = r, se = s, ce = c;
#pragma unroll
            for (int e = 0; e < CE; ++e) {
                const bool in_k = kk + e < CRS;
                const long long d = displacement(re, se, ce);
                unsigned int tap_bit = 0;
                if constexpr (TAP_MASK) {
                    const int rs = re * Geometry::S + se;
                    tap_bit = in_k && rs < 32 ? 1u << rs : 0u;
                }
                const int dh = re * g.DH;
                const int dw = se * g.DW;
#pragma unroll
                for (int row = 0; row < PASSES; ++row) {
                    bool in;
                    if constexpr (TAP_MASK) {
                        in = (taps[row] & tap_bit) != 0;
                    } else {
                        in = in_k && inside(h0[row] + dh, w0[row] + dw);
                    }
                    staged[row][e] = in ? *reinterpret_cast<const Bits*>(corner[row] + d) : Bits(0);
                }
                if (++ce == C) {
                    ce = 0;
                    if (++se == g.S) {
                        se = 0;
                        ++re;
                    }
                }
            }
        }
    }

    // Finishes the stage: VECTOR = false stores the staged elements.
    __device__ __forceinline__ void complete(unsigned int a) const {
        if constexpr (!VECTOR) {
#pragma unroll
            for (int i = 0; i < PASSES; ++i) {
                const int row = smem_row0 + i * Tile::ROWS_PER_PASS;
                store_shared_16(a + Rows::offset(row, piece), pack_piece(staged[i]));
            }
        }
    }
};

// The filter rows (operand B): F[k][kk] of a KRSC filter, row k at k * C*R*S. Each of the
// thread's rows keeps a pointer to its piece of reduction stage 0; a stage adds k0.
template <class Tile, bool VECTOR>
struct KrscFilterRows {
    using Element = typename Tile::ElementF;
    using Bits = typename ElementBits<sizeof(Element)>::type;
    using Rows = SwizzledRows<Tile::ROW_BYTES>;
    static constexpr int PASSES = Tile::B_PASSES;
    static constexpr int CE = Tile::CHUNK_ELEMENTS;

    unsigned int CRS;
    int piece;
    int smem_row0;
    const unsigned char* row_at[PASSES];   // (k, piece*CE) of row i, k = n0 + smem_row0 + i*RPP
    unsigned int rows_in;                  // bit i: row i is below K
    Bits staged[PASSES][VECTOR ? 1 : CE];
    unsigned int kk;                       // the stage's (prepare())
    long long offset;                      // its bytes from stage 0

    __device__ __forceinline__ KrscFilterRows(const Element* f, const ConvParams& prm, int n0, int tid)
        : CRS((unsigned int)prm.crs) {
        piece = tid % Tile::CHUNKS;
        smem_row0 = tid / Tile::CHUNKS;
        rows_in = 0;
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const int k = n0 + smem_row0 + i * Tile::ROWS_PER_PASS;
            rows_in |= (unsigned int)(k < prm.k) << i;
            row_at[i] = reinterpret_cast<const unsigned char*>(f + ((long long)k * prm.crs + piece * CE));
        }
    }

    __device__ __forceinline__ void prepare(unsigned int k0) {
        kk = k0 + piece * CE;
        offset = (long long)k0 * (long long)sizeof(Element);
    }

    __device__ __forceinline__ void copy(int i, unsigned int b) {
        const bool row_in = (rows_in >> i) & 1u;
        if constexpr (VECTOR) {
            const int row = smem_row0 + i * Tile::ROWS_PER_PASS;
            im2win_cp_async_16(b + Rows::offset(row, piece), row_at[i] + offset, row_in && kk < CRS);
        } else {
            const Bits* src = reinterpret_cast<const Bits*>(row_at[i] + offset);
#pragma unroll
            for (int e = 0; e < CE; ++e) {
                staged[i][e] = row_in && kk + e < CRS ? src[e] : Bits(0);
            }
        }
    }

    __device__ __forceinline__ void complete(unsigned int b) const {
        if constexpr (!VECTOR) {
#pragma unroll
            for (int i = 0; i < PASSES; ++i) {
                const int row = smem_row0 + i * Tile::ROWS_PER_PASS;
                store_shared_16(b + Rows::offset(row, piece), pack_piece(staged[i]));
            }
        }
    }
};

}  // namespace im2win
