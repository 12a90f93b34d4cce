// im2win: the warp-specialised main loop (sm_90): when a stage's data moves, with the copies and
// the multiplies in different warps. Knows nothing of convolution.
//
// Why: in the multistage loop (mainloop_multistage.cuh) the warps that multiply also issue the
// copies of the stages ahead, and every stage ends in a block-wide barrier; with wgmma the
// tensor cores then wait while the warps compute addresses, issue cp.async and meet at the
// barrier. Here one warpgroup (the producer) only copies, STAGES stages ahead, and the MMA
// warpgroups (the consumers) only multiply, each waiting just for the stage it reads: the
// tensor cores always have the next stage's wgmma group queued behind the current one.
//
// Hand-off, per buffer b of STAGES (mbarrier.cuh), in shared memory after the operand stages:
//   full[b]   COPY_ARRIVALS arrivals, each when one copying thread's cp.async into b have
//             landed (cp.async.mbarrier.arrive.noinc: the producer never waits for its copies;
//             PRODUCER_THREADS of them, or none when the copy engine moves everything), and
//             BULK_ARRIVALS more, each from a thread that issues bulk copies (tma.cuh) into b and
//             announces their bytes (mbarrier_arrive_expect_tx);
//   empty[b]  one arrival per warp of the team that multiplied b, once its wgmma that read b
//             have completed.
// The stages of a block, over all its tiles, go round the ring in order: the c-th goes to
// buffer c % STAGES, whose u-th use (u = c / STAGES) waits for full phase u and, u >= 1, for
// empty phase u - 1 (the release of stage c - STAGES) (PipelineState).
//   produce(issue)          the producer: issue(stage, buf) makes all the copies of `stage`
//                           into `buf` (cp.async only);
//   consume(multiply, finish)
//                           the consumers: multiply(buf) issues the wgmma of the stage in `buf`
//                           and returns once the stage before it (and its buffer) is done with;
//                           then that buffer is released; finish() waits for the last.
// Blocks are persistent: each takes tiles blockIdx.x, + gridDim.x, ... and both roles keep
// their place in the ring (PipelineState) from one tile to the next, so the producer fills
// the stages of the next tile while the consumers write the outputs of this one (from a
// staging area of their own, tile_tensorop.cuh).
// The copies land through the generic proxy and wgmma reads through the async proxy: a consumer
// fences (fence.proxy.async) after its wait and before its wgmma.
#pragma once

#include "copy.cuh"
#include "mbarrier.cuh"

namespace im2win {

// Where a role is in the ring of buffers: the buffer of its next stage, the parity of that
// buffer's current use, and how many stages it has gone through (over all of a persistent
// block's tiles: the ring does not restart between tiles).
template <int STAGES>
struct PipelineState {
    int buf = 0;
    unsigned int phase = 0;
    int count = 0;
    // Passes n stages without touching them (another team's).
    __device__ __forceinline__ void skip(int n) {
        const int b = buf + n;
        count += n;
        phase ^= (unsigned int)((b / STAGES) & 1);   // one flip per wrap of the ring
        buf = b % STAGES;
    }
    __device__ __forceinline__ void advance() {
        ++count;
        if (++buf == STAGES) {
            buf = 0;
            phase ^= 1u;
        }
    }
};

template <int STAGES, int TEAM_THREADS, int COPY_ARRIVALS, int BULK_ARRIVALS = 0>
struct WarpSpecializedMainloop {
    static_assert(STAGES >= 2, "at least one stage in flight while one is multiplied");
    static constexpr int BARRIER_BYTES = 2 * STAGES * 8;
    using State = PipelineState<STAGES>;

    unsigned int barriers;   // shared address of full[0 .. STAGES), then empty[0 .. STAGES)

    __device__ __forceinline__ unsigned int full(int buf) const { return barriers + 8u * (unsigned int)buf; }
    __device__ __forceinline__ unsigned int empty(int buf) const { return barriers + 8u * (unsigned int)(STAGES + buf); }

    // Every thread of the block: one initialises the barriers, and the block barrier publishes
    // them before anyone arrives or waits.
    __device__ __forceinline__ explicit WarpSpecializedMainloop(unsigned int barriers_) : barriers(barriers_) {
        if (threadIdx.x == 0) {
#pragma unroll
            for (int b = 0; b < STAGES; ++b) {
                mbarrier_init(full(b), COPY_ARRIVALS + BULK_ARRIVALS);
                mbarrier_init(empty(b), TEAM_THREADS / 32);
            }
        }
        __syncthreads();
    }

    // The copying threads (those that arrive), for one tile: stages [first, last).
    template <class Issue>
    __device__ __forceinline__ void produce(State& st, int first, int last, Issue&& issue) const {
        for (int it = first; it < last; ++it) {
            if (st.count >= STAGES) {
                mbarrier_wait(empty(st.buf), st.phase ^ 1u);   // the consumers' release of its last use
            }
            issue(it, st.buf);
            if constexpr (COPY_ARRIVALS > 0) {
                mbarrier_arrive_on_copies(full(st.buf));
            }
            st.advance();
        }
    }

    // The copying warps, after their last tile: leave only with every copy landed.
    __device__ __forceinline__ void produced() const { im2win_cp_async_wait_all(); }

    // The MMA warps, for one tile: multiply(buf) for each of its stages, then finish() (every
    // group of the tile done), and the tile's last buffer released.
    template <class Multiply, class Finish>
    __device__ __forceinline__ void consume(State& st, int first, int last, Multiply&& multiply, Finish&& finish) const {
        const bool leader = threadIdx.x % 32 == 0;
        int before = -1;   // the buffer of the stage before, released once multiply returns
        for (int it = first; it < last; ++it) {
            mbarrier_wait(full(st.buf), st.phase);
            fence_proxy_async_shared();
            multiply(st.buf);
            if (before >= 0 && leader) {
                mbarrier_arrive(empty(before));
            }
            before = st.buf;
            st.advance();
        }
        finish();
        if (before >= 0 && leader) {
            mbarrier_arrive(empty(before));
        }
    }
};

}  // namespace im2win
