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
// Two ways to fill a piece, chosen at compile time (VECTOR):
//   VECTOR = true   C is a multiple of CHUNK_ELEMENTS and X, F are 16-byte aligned: a piece is
//                   one tap's consecutive channels, inside X (or the reduction, the filter's
//                   K rows) or not as a whole, and aligned: one cp.async of 16 bytes, zero-filled
//                   when outside (src-size 0; nothing is read). Asynchronous: issue() does all.
//   VECTOR = false  any C (the C = 3 stems): the piece is CHUNK_ELEMENTS single elements,
//                   each its own tap and bounds check (the padding is done here, in registers,
//                   never by copying the tensor). issue() loads them into registers (ordinary
//                   loads, in flight while the stage before is multiplied), complete() packs
//                   them into one 16-byte shared store.
// Every row past N*P*Q (K) and every index past C*R*S is a zero.
#pragma once

#include "copy.cuh"
#include "geometry.cuh"
#include "tile_tensorop.cuh"

namespace im2win {

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

// The window gather (operand A). Each of the thread's rows (pixels) keeps the offset in X of
// its window's top-left corner (channel 0) and that corner's row and column, which padding may
// put outside X; a stage adds the tap's displacement, the same for every row.
template <class Tile, class Geometry, bool VECTOR>
struct NhwcWindowGather {
    using Element = typename Tile::ElementX;
    using Bits = typename ElementBits<sizeof(Element)>::type;
    using Rows = SwizzledRows<Tile::ROW_BYTES>;
    static constexpr int PASSES = Tile::A_PASSES;
    static constexpr int CE = Tile::CHUNK_ELEMENTS;

    const Element* x;
    Geometry g;
    int C, H, W;
    unsigned int CRS;
    Divider div_c;
    int piece;                    // the thread's piece of every row: reduction indices piece*CE ..
    int smem_row0;                // its first row in the stage
    long long corner[PASSES];     // offset in X of (n, h0, w0, 0); rows past N*P*Q: 0
    int h0[PASSES];               // the window's top row (far above X past N*P*Q)
    int w0[PASSES];               // its left column
    Bits staged[PASSES][VECTOR ? 1 : CE];   // VECTOR = false: a stage's elements in flight

    __device__ __forceinline__ NhwcWindowGather(const Element* x_, const ConvParams& prm, long long j0, int tid)
        : x(x_), g(prm), C(prm.c), H(prm.h), W(prm.w), CRS((unsigned int)prm.crs), div_c(prm.c) {
        piece = tid % Tile::CHUNKS;
        smem_row0 = tid / Tile::CHUNKS;
        const long long PQ = (long long)prm.p * prm.q;
        const Divider div_pq(PQ);
        const Divider div_q(prm.q);
        const long long image = (long long)prm.h * prm.w * prm.c;
#pragma unroll
        for (int i = 0; i < PASSES; ++i) {
            const long long j = j0 + smem_row0 + i * Tile::ROWS_PER_PASS;
            corner[i] = 0;
            h0[i] = -(1 << 30);   // every row test fails: h0 + r*dh stays negative
            w0[i] = 0;
            if (j < prm.npq) {
                const long long n = div_pq.div(j);
                const long long pq = j - n * PQ;
                const int p = (int)div_q.div(pq);
                const int q = (int)(pq - (long long)p * prm.q);
                h0[i] = p * g.SH - prm.pad_top;
                w0[i] = q * g.SW - prm.pad_left;
                corner[i] = n * image + ((long long)h0[i] * W + w0[i]) * C;
            }
        }
    }

    // The tap (r, s) and channel c of reduction index kk.
    __device__ __forceinline__ void decompose(unsigned int kk, int& r, int& s, int& c) const {
        const unsigned int rs = div_c.div32(kk);
        c = (int)(kk - rs * (unsigned int)C);
        r = (int)g.div_s.div32(rs);
        s = (int)rs - r * g.S;
    }

    __device__ __forceinline__ bool inside(int h, int w) const {
        return (unsigned int)h < (unsigned int)H && (unsigned int)w < (unsigned int)W;
    }

    // Starts the copies of the stage at reduction index k0 into the stage's A rows at shared
    // address `a` (VECTOR: the copies themselves; else the loads into `staged`).
    __device__ __forceinline__ void issue(unsigned int k0, unsigned int a) {
        const unsigned int kk = k0 + piece * CE;
        int r, s, c;
        decompose(kk, r, s, c);
        if constexpr (VECTOR) {
            const int dh = r * g.DH;
            const int dw = s * g.DW;
            const long long delta = ((long long)dh * W + dw) * C + c;
            const bool in_k = kk < CRS;   // C*R*S is a multiple of CE: the piece is in or out
#pragma unroll
            for (int i = 0; i < PASSES; ++i) {
                const bool in = in_k && inside(h0[i] + dh, w0[i] + dw);
                const int row = smem_row0 + i * Tile::ROWS_PER_PASS;
                im2win_cp_async_16(a + Rows::offset(row, piece), x + (in ? corner[i] + delta : 0), in);
            }
        } else {
            const Bits* xb = reinterpret_cast<const Bits*>(x);
#pragma unroll
            for (int e = 0; e < CE; ++e) {
                // Element e: its own tap; then on to the next channel (wrapping to the next
                // tap), the same for every row.
                const int dh = r * g.DH;
                const int dw = s * g.DW;
                const long long delta = ((long long)dh * W + dw) * C + c;
                const bool in_k = kk + e < CRS;
#pragma unroll
                for (int i = 0; i < PASSES; ++i) {
                    const bool in = in_k && inside(h0[i] + dh, w0[i] + dw);
                    staged[i][e] = in ? xb[corner[i] + delta] : Bits(0);
                }
                if (++c == C) {
                    c = 0;
                    if (++s == g.S) {
                        s = 0;
                        ++r;
                    }
                }
            }
        }
    }

    // Finishes the stage begun by issue(): VECTOR = false stores the staged elements.
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

// The filter rows (operand B): F[k][kk] of a KRSC filter, row k at k * C*R*S.
template <class Tile, bool VECTOR>
struct KrscFilterRows {
    using Element = typename Tile::ElementF;
    using Bits = typename ElementBits<sizeof(Element)>::type;
    using Rows = SwizzledRows<Tile::ROW_BYTES>;
    static constexpr int PASSES = Tile::B_PASSES;
    static constexpr int CE = Tile::CHUNK_ELEMENTS;

    const Element* f;
    unsigned int CRS;
    int piece;
    int smem_row0;
    long long row_start;   // offset of the thread's first row, k = n0 + smem_row0
    int rows_valid;        // how many of its PASSES rows are below K (rows are in order)
    Bits staged[PASSES][VECTOR ? 1 : CE];

    __device__ __forceinline__ KrscFilterRows(const Element* f_, const ConvParams& prm, int n0, int tid)
        : f(f_), CRS((unsigned int)prm.crs) {
        piece = tid % Tile::CHUNKS;
        smem_row0 = tid / Tile::CHUNKS;
        const int k = n0 + smem_row0;
        row_start = (long long)k * prm.crs;
        // Rows k, k + ROWS_PER_PASS, ...: those below K.
        const int left = prm.k - k;
        rows_valid = left <= 0 ? 0 : (left + Tile::ROWS_PER_PASS - 1) / Tile::ROWS_PER_PASS;
    }

    __device__ __forceinline__ void issue(unsigned int k0, unsigned int b) {
        const unsigned int kk = k0 + piece * CE;
        const long long step = (long long)Tile::ROWS_PER_PASS * CRS;
        if constexpr (VECTOR) {
            const bool in_k = kk < CRS;
#pragma unroll
            for (int i = 0; i < PASSES; ++i) {
                const bool in = in_k && i < rows_valid;
                const int row = smem_row0 + i * Tile::ROWS_PER_PASS;
                im2win_cp_async_16(b + Rows::offset(row, piece), f + (in ? row_start + i * step + kk : 0), in);
            }
        } else {
            const Bits* fb = reinterpret_cast<const Bits*>(f);
#pragma unroll
            for (int i = 0; i < PASSES; ++i) {
                const long long at = row_start + i * step + kk;
#pragma unroll
                for (int e = 0; e < CE; ++e) {
                    const bool in = i < rows_valid && kk + e < CRS;
                    staged[i][e] = in ? fb[at + e] : Bits(0);
                }
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
