// im2win: the window tile loader of the fused algorithm. Builds a stage's BK x BN tile of B in
// shared memory straight from the input X; no im2win buffer exists (docs/DESIGN.md).
//
//   B[kk][j] = X(n, c, p*sh - pad_top + r*dh, q*sw - pad_left + s*dw)   (0 outside X),
//   kk = (r*S + s)*C + c,   j = (n*P + p)*Q + q.
//
// The reduction runs channels fastest, so consecutive reduction indices of one pixel are one
// channel apart in X: in NCHW one plane apart (H*W elements), in NHWC adjacent. The layout only
// changes the strides and how a run reaches shared memory:
//   NCHW: single-element copies into RowMajorWindows (a warp's copies of one element are
//         consecutive pixels, consecutive in memory);
//   NHWC: copies of KI consecutive channels (one cp.async of KI elements) into
//         InterleavedWindows, when C is a multiple of KI; single elements otherwise (C = 3
//         stems). Here the threads are assigned the other way round: a warp's copies cover
//         few pixels, each with every channel of the stage (a 32-byte sector holds 8 floats),
//         rather than 32 pixels
//         with KI channels each, which would touch a sector per thread (4x the L1 traffic).
//         Run u is pixel u / G, and its pieces of KI channels sit at depths
//         (e*G + u % G)*KI, e = 0 .. PIECES - 1 (G = BK / B_RUN runs share a pixel).
//         With one run of two pieces per pixel (G = 1), lane pairs trade pixels (PAIRED):
//         a copy instruction then reads 16 pixels' whole 32-byte sectors, not 32 halves.
// The 16-byte copies bypass L1 (.cg, copy.cuh). Keeping their lines in L1 (.ca) raised an
// NHWC 3x3 layer's L1 hit rate from 5% but made the paper's NHWC layers 0-2% slower on the
// H200 (2026-12-03), so they stay .cg.
// Each pixel is decomposed once, when the loader is made: image offset and the window's
// top-left corner (p*sh - pad_top, q*sw - pad_left), which padding may put outside X.
#pragma once

#include "copy.cuh"
#include "geometry.cuh"
#include "tile_shape.cuh"

namespace im2win {

template <class Tile, class Geometry, int LAYOUT, class Smem_>
struct WindowGatherLoader {
    using Smem = Smem_;
    static constexpr int KI = Smem::INTERLEAVE;
    static_assert(LAYOUT == IM2WIN_NCHW ? KI == 1 : KI > 1, "NCHW gathers single elements, NHWC vectors");
    using Element = typename Tile::ElementX;
    // NHWC: runs per pixel, pieces of KI channels per run, and the depth between two pieces.
    static constexpr int G = Tile::BK / Tile::B_RUN;
    static constexpr int PIECES = Tile::B_RUN / KI;
    static constexpr int PIECE_STEP = G * KI;
    const Element* x;
    Geometry g;
    unsigned int CRS;
    int C, H, W;
    Divider div_c;
    long long chan_stride;   // distance between channels c and c + 1 in X (NCHW: H*W)
    long long row_stride;    // between rows h and h + 1 (NCHW: W; NHWC: W*C)
    bool vec_ok;             // NHWC: groups of KI channels are aligned vectors of X
    long long b_image[Tile::B_SEGS];   // offset of the run's image n in X
    int b_h[Tile::B_SEGS];             // the window's top row
    int b_w[Tile::B_SEGS];             // the window's left column
    int b_kk[Tile::B_SEGS];            // the run's depth in the stage

    __device__ __forceinline__ WindowGatherLoader(const Element* x_, const ConvParams& prm, long long j0, int tid,
        unsigned int /*first*/)
        : x(x_), g(prm), CRS((unsigned int)prm.crs), C(prm.c), H(prm.h), W(prm.w), div_c(prm.c) {
        if constexpr (LAYOUT == IM2WIN_NCHW) {
            chan_stride = (long long)prm.h * prm.w;
            row_stride = prm.w;
            vec_ok = false;
        } else {
            chan_stride = 1;
            row_stride = (long long)prm.w * prm.c;
            vec_ok = prm.c % KI == 0 && im2win_aligned<KI>(x_);
        }
        const long long PQ = (long long)prm.p * prm.q;
        const Divider div_pq(PQ);
        const Divider div_q(prm.q);
        const long long image = (long long)prm.c * prm.h * prm.w;
        // A pixel past N*P*Q gets a corner row far above X, so that every one of its copies
        // fails the row test and reads nothing.
#pragma unroll
        for (int seg = 0; seg < Tile::B_SEGS; ++seg) {
            const int u = seg * Tile::THREADS + tid;
            const long long j = j0 + pixel(u);
            b_kk[seg] = LAYOUT == IM2WIN_NCHW ? u / Tile::BN * Tile::B_RUN : u % G * KI;
            b_image[seg] = 0;
            b_h[seg] = -(1 << 30);
            b_w[seg] = 0;
            if (j < prm.npq) {
                const long long n = div_pq.div(j);
                const long long pq = j - n * PQ;
                const long long p = div_q.div(pq);
                const long long q = pq - p * prm.q;
                b_image[seg] = n * image;
                b_h[seg] = (int)p * g.SH - prm.pad_top;
                b_w[seg] = (int)q * g.SW - prm.pad_left;
            }
        }
    }

    // Runs of two pieces, one run per pixel (G = 1): each copy instruction of a warp would
    // touch 32 pixels, 32 lines, and an L1 line's part lands in shared memory as a wavefront of
    // its own (ncu: 16x the ideal wavefronts). Lane pairs trade instead: in copy e both lanes
    // of a pair copy the pixel of lane (l & ~1) | e, lane l its piece l & 1, so a copy touches
    // 16 pixels, one 32-byte sector each; each lane hands its partner the address of the piece
    // the partner copies (one shuffle).
    static constexpr bool PAIRED = LAYOUT == IM2WIN_NHWC && G == 1 && PIECES == 2;

    template <bool CHECKED>
    __device__ __forceinline__ void copy_paired(Element* bs, unsigned int kk0, int seg, int j, int c, int r, int s,
        int h, int w, bool in_x, int tid) const {
        const int odd = tid & 1;
        // Piece 0 at (c, r, s); piece 1 PIECE_STEP channels on (the next tap when C is not a
        // multiple of 2*KI).
        long long off[2];
        bool in[2];
        off[0] = in_x ? at(seg, c, h, w) : 0;
        in[0] = in_x && (!CHECKED || kk0 < CRS);
        advance(PIECE_STEP, c, r, s);
        const int h1 = b_h[seg] + r * g.DH;
        const int w1 = b_w[seg] + s * g.DW;
        const bool in1 = inside(h1, w1);
        off[1] = in1 ? at(seg, c, h1, w1) : 0;
        in[1] = in1 && (!CHECKED || kk0 + PIECE_STEP < CRS);
        // The partner copies my piece 1 - odd, and I copy its piece odd.
        const long long got_off = __shfl_xor_sync(0xffffffffu, odd ? off[0] : off[1], 1);
        const int got_in = __shfl_xor_sync(0xffffffffu, (int)(odd ? in[0] : in[1]), 1);
        const int depth = b_kk[seg] + odd * PIECE_STEP;
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const bool mine = odd == e;
            const long long src = mine ? (odd ? off[1] : off[0]) : got_off;
            const bool valid = mine ? (odd ? in[1] : in[0]) : got_in != 0;
            im2win_cp_async<KI>(bs + Smem::offset(depth, mine ? j : j ^ 1), x + (valid ? src : 0), valid, x);
        }
    }

    // The tile pixel of run u (see the top of the file).
    static __device__ __forceinline__ int pixel(int u) {
        return LAYOUT == IM2WIN_NCHW ? u % Tile::BN : u / G;
    }

    // Moves the window position (c, r, s) on by n reduction indices (channels fastest).
    __device__ __forceinline__ void advance(int n, int& c, int& r, int& s) const {
        c += n;
        while (c >= C) {   // once at most when C >= n, the usual case
            c -= C;
            if (++s == g.S) {
                s = 0;
                ++r;
            }
        }
    }

    // Whether (h, w) lies inside X, and the offset of (n, c, h, w).
    __device__ __forceinline__ bool inside(int h, int w) const {
        return (unsigned int)h < (unsigned int)H && (unsigned int)w < (unsigned int)W;
    }
    // Column w is 1 element (NCHW) or C elements (NHWC) from w - 1; channel c + 1 is
    // chan_stride elements from c.
    __device__ __forceinline__ long long at(int seg, int c, int h, int w) const {
        if constexpr (LAYOUT == IM2WIN_NCHW) {
            return b_image[seg] + c * chan_stride + (long long)h * row_stride + w;
        } else {
            return b_image[seg] + c + (long long)h * row_stride + (long long)w * C;
        }
    }

    // Issues the copies of the stage at reduction index k0 into `bs`. Elements outside X
    // (padding, pixels past N*P*Q) and (CHECKED) past the reduction are zeros: such copies read
    // nothing, from a safe address.
    template <bool CHECKED>
    __device__ __forceinline__ void copy(Element* bs, unsigned int k0, int tid) const {
#pragma unroll
        for (int seg = 0; seg < Tile::B_SEGS; ++seg) {
            const unsigned int kk0 = k0 + b_kk[seg];
            const int j = pixel(seg * Tile::THREADS + tid);
            // The run's first index kk0 = (r*S + s)*C + c; then each element is the next
            // channel, until c wraps to the next (r, s).
            const unsigned int rs = div_c.div32(kk0);
            int c = (int)(kk0 - rs * (unsigned int)C);
            int r = (int)g.div_s.div32(rs);
            int s = (int)rs - r * g.S;
            // The window element (r, s): its row and column, and whether they lie inside X.
            int h = b_h[seg] + r * g.DH;
            int w = b_w[seg] + s * g.DW;
            bool in_x = inside(h, w);
            if constexpr (LAYOUT == IM2WIN_NHWC && PAIRED) {
                if (vec_ok) {
                    copy_paired<CHECKED>(bs, kk0, seg, j, c, r, s, h, w, in_x, tid);
                    continue;
                }
            }
            if constexpr (LAYOUT == IM2WIN_NHWC) {
#pragma unroll
                for (int e = 0; e < PIECES; ++e) {
                    const int depth = b_kk[seg] + e * PIECE_STEP;
                    if (vec_ok) {
                        // C is a multiple of KI and so is the depth: the piece is one tap's
                        // consecutive channels, one aligned vector of X, inside X or not as a
                        // whole, and inside the reduction or not as a whole (C*R*S is a
                        // multiple of KI too).
                        const bool in = in_x && (!CHECKED || kk0 + e * PIECE_STEP < CRS);
                        im2win_cp_async<KI>(bs + Smem::offset(depth, j), x + (in ? at(seg, c, h, w) : 0), in, x);
                    } else {
                        // Single elements, wrapping to the next tap inside the piece.
                        int ce = c, re = r, se = s;
#pragma unroll
                        for (int i = 0; i < KI; ++i) {
                            const int he = b_h[seg] + re * g.DH;
                            const int we = b_w[seg] + se * g.DW;
                            const bool in = inside(he, we) && (!CHECKED || kk0 + e * PIECE_STEP + i < CRS);
                            im2win_cp_async<1>(bs + Smem::offset(depth + i, j), x + (in ? at(seg, ce, he, we) : 0), in, x);
                            advance(1, ce, re, se);
                        }
                    }
                    if (e + 1 < PIECES) {
                        advance(PIECE_STEP, c, r, s);
                        h = b_h[seg] + r * g.DH;
                        w = b_w[seg] + s * g.DW;
                        in_x = inside(h, w);
                    }
                }
                continue;
            } else {
                if (c + Tile::B_RUN <= C) {
                    // The usual NCHW case (C a multiple of the run, or the run not at the end
                    // of a channel block): the whole run is one (r, s), consecutive channels,
                    // inside X or not as a whole; one pointer add per element. The branch is
                    // uniform across a warp: its threads share kk0.
                    const Element* src = x + (in_x ? at(seg, c, h, w) : 0);
                    const long long step = in_x ? chan_stride : 0;
#pragma unroll
                    for (int e = 0; e < Tile::B_RUN; ++e) {
                        const bool in = in_x && (!CHECKED || kk0 + e < CRS);
                        im2win_cp_async<1>(bs + Smem::offset(b_kk[seg] + e, j), src, in, x);
                        src += step;
                    }
                    continue;
                }
            }
            // The general case: element by element, wrapping to the next (r, s).
            long long offset = at(seg, c, h, w);
#pragma unroll
            for (int e = 0; e < Tile::B_RUN; ++e) {
                const bool in = in_x && (!CHECKED || kk0 + e < CRS);
                im2win_cp_async<1>(bs + Smem::offset(b_kk[seg] + e, j), x + (in ? offset : 0), in, x);
                offset += chan_stride;
                if (++c == C) {   // uniform across a warp: its threads share kk0
                    c = 0;
                    if (++s == g.S) {
                        s = 0;
                        ++r;
                    }
                    h = b_h[seg] + r * g.DH;
                    w = b_w[seg] + s * g.DW;
                    in_x = inside(h, w);
                    offset = at(seg, 0, h, w);
                }
            }
        }
    }
};

}  // namespace im2win
