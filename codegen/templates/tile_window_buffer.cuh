// im2win: the window tile loader of the materialised algorithm. Copies a stage's BK x BN tile
// of B out of the im2win buffer T[N][C][P][Wt][R] that the input transform wrote
// (support.cu.tera), into RowMajorWindows.
//
//   B[kk][j] = T[n][c][p][q*sw + s*dw][r],   kk = c*S*R + s*R + r,   j = (n*P + p)*Q + q.
//
// T already applies the padding, stride_h and dil_h, so this loader never tests for them; with
// dw = 1 a channel's window is one contiguous run of R*S elements. Each pixel is decomposed once,
// when the loader is made; from stage to stage the cursor only steps by BK (a carry into the
// next channel instead of a division per element).
#pragma once

#include "copy.cuh"
#include "geometry.cuh"
#include "tile_shape.cuh"

namespace im2win {

template <class Tile, class Geometry>
struct WindowBufferLoader {
    using Smem = RowMajorWindows<Tile>;
    using Element = typename Tile::ElementX;
    const Element* t;
    Geometry g;
    unsigned int CRS;
    long long chan_stride;   // distance between channels c and c + 1 of one image row in T
    // Run seg of this thread: pixel index in the tile (column of Bs), depth in the stage, the
    // offset in T of (n, c, p, q*sw, 0) for the cursor's channel c, the index inside the
    // channel's window (s*R + r), and whether the pixel exists.
    long long b_chan[Tile::B_SEGS];
    int b_sr[Tile::B_SEGS];
    int b_kk[Tile::B_SEGS];
    bool b_ok[Tile::B_SEGS];

    // The cursors start at stage `first`.
    __device__ __forceinline__ WindowBufferLoader(const Element* t_, const ConvParams& prm, long long j0, int tid,
        unsigned int first)
        : t(t_), g(prm), CRS((unsigned int)prm.crs), chan_stride((long long)prm.p * prm.win_w * g.R) {
        const long long PQ = (long long)prm.p * prm.q;
        const Divider div_pq(PQ);
        const Divider div_q(prm.q);
#pragma unroll
        for (int seg = 0; seg < Tile::B_SEGS; ++seg) {
            const int u = seg * Tile::THREADS + tid;
            const long long j = j0 + u % Tile::BN;
            b_kk[seg] = u / Tile::BN * Tile::B_RUN;
            b_ok[seg] = j < prm.npq;
            long long base = 0;
            if (b_ok[seg]) {
                const long long n = div_pq.div(j);
                const long long pq = j - n * PQ;
                const long long p = div_q.div(pq);
                const long long q = pq - p * prm.q;
                base = ((n * prm.c * prm.p + p) * prm.win_w + q * g.SW) * g.R;
            }
            const unsigned int kk = first * Tile::BK + b_kk[seg];
            const unsigned int c = g.div_rs.div32(kk);
            b_sr[seg] = (int)(kk - c * (unsigned int)(g.R * g.S));
            b_chan[seg] = base + (long long)c * chan_stride;
        }
    }

    // Offset inside one channel's window of index sr = s*R + r: the window is contiguous when
    // dw = 1 (the im2win layout); otherwise column s sits s*dw columns from the first.
    __device__ __forceinline__ long long in_channel(int sr) const {
        if (g.DW == 1) {
            return sr;
        }
        const int s = (int)g.div_r.div32((unsigned int)sr);
        return (long long)s * g.DW * g.R + (sr - s * g.R);
    }

    // Issues the copies of the stage at reduction index k0 into `bs`, then steps the cursors
    // to the next stage. Pixels past N*P*Q and (CHECKED) indices past the reduction are zeros:
    // such copies read nothing, from a safe address.
    template <bool CHECKED>
    __device__ __forceinline__ void copy(Element* bs, unsigned int k0, int tid) {
        const int R = g.R;
        const int S = g.S;
        // In a checked stage an index past the reduction may address past T: such copies read
        // nothing (zero fill), and their address is replaced by a safe one as well.
        auto copy1 = [&](Element* dst, const Element* src, bool in) {
            im2win_cp_async<1>(dst, CHECKED && !in ? t : src, in, t);
        };
#pragma unroll
        for (int seg = 0; seg < Tile::B_SEGS; ++seg) {
            const unsigned int kk0 = k0 + b_kk[seg];
            const int j = (seg * Tile::THREADS + tid) % Tile::BN;
            // Unsigned: sr < R*S <= C*R*S < 2^31, so sr + e and sr + BK below stay under 2^32,
            // where the same sums in int could overflow (undefined) when R*S nears 2^31.
            const unsigned int sr = (unsigned int)b_sr[seg];
            const unsigned int rs = (unsigned int)(R * S);
            // A pixel past N*P*Q reads image 0 (b_chan was set up from 0), inside T in every
            // full stage; its copies are zero fills.
            if (g.DW == 1 && Tile::B_RUN <= R * S) {
                // The im2win window: the run is contiguous but for at most one step into the
                // next channel, whose window starts chan_stride further.
                const Element* lo = t + b_chan[seg] + sr;
                const Element* hi = lo + (chan_stride - R * S);
#pragma unroll
                for (int e = 0; e < Tile::B_RUN; ++e) {
                    const bool in = b_ok[seg] && (!CHECKED || kk0 + e < CRS);
                    copy1(bs + Smem::offset(b_kk[seg] + e, j), (sr + e < rs ? lo : hi) + e, in);
                }
            } else {
#pragma unroll
                for (int e = 0; e < Tile::B_RUN; ++e) {
                    // Element e is sr + e into the window of channel c; past R*S it belongs to
                    // a later channel (with short filters, several channels later).
                    const unsigned int se = sr + e;
                    const unsigned int wraps =
                        Tile::B_RUN <= R * S ? (se >= rs ? 1u : 0u) : g.div_rs.div32(se);
                    const long long offset =
                        b_chan[seg] + (long long)wraps * chan_stride + in_channel((int)(se - wraps * rs));
                    const bool in = b_ok[seg] && (!CHECKED || kk0 + e < CRS);
                    copy1(bs + Smem::offset(b_kk[seg] + e, j), t + offset, in);
                }
            }
            // Step the cursor by BK reduction indices.
            const unsigned int next = sr + Tile::BK;
            const unsigned int carry = Tile::BK < R * S ? (next >= rs ? 1u : 0u) : g.div_rs.div32(next);
            b_sr[seg] = (int)(next - carry * rs);
            b_chan[seg] += (long long)carry * chan_stride;
        }
    }
};

}  // namespace im2win
