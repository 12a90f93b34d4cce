// im2win: the multistage main loop of the tensor-core kernels: when a stage's data moves.
// Knows nothing of convolution. STAGES buffers in shared memory; while the oldest is
// multiplied, the copies of the next STAGES - 1 stages are in flight.
//
//   issue(stage, buf)              makes all the copies of reduction stage `stage` into buffer
//                                  `buf` (cp.async, or loads into registers): the prologue;
//   step(read, stage, write)       multiplies buffer `read` and, along the way (between its
//                                  k-steps), issues the copies of stage `stage` into `write`;
//   complete(buf)                  finishes the copies into `buf` (stores those registers;
//                                  nothing for cp.async).
// The loop runs stages [first, last) of the reduction: all of it, or a split block's share.
// The copies of the STAGES - 1 stages after `last` are still made into buffers that are no
// longer read (zero fills past the reduction; the next share's data, which its own blocks
// read from L2 next, for a split block): the loop body then has no branch, so that the
// compiler can interleave the copies with the MMAs, and the stage index is the only counter
// (a share's offset held beside it cost the 64 x 64 warp tiles a spilled register on sm_80).
//
// Iteration `it`: wait until this thread's copies of stage it have landed (cp.async groups: one
// per stage, committed even when empty so that the count stays exact), then one barrier, after
// which every thread's copies of stage it are visible and every thread has finished
// multiplying stage it - 1, whose buffer (it + STAGES - 1) % STAGES the copies of stage
// it + STAGES - 1 may then overwrite; register-staged copies are stored after the multiply,
// before the next barrier. One barrier per stage.
#pragma once

#include "copy.cuh"

namespace im2win {

// ASYNC_PROXY_FENCE: the stage is read by the async proxy (wgmma, mma_warpgroup.cuh), so each
// thread fences its landed writes into it before the barrier that publishes them.
template <int STAGES, bool ASYNC_PROXY_FENCE = false>
struct MultistageMainloop {
    static_assert(STAGES >= 2, "at least one stage in flight while one is multiplied");
    template <class Issue, class Step, class Complete>
    static __device__ __forceinline__ void run(int first, int last, Issue&& issue, Step&& step, Complete&& complete) {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (first + s < last) {
                issue(first + s, s);
                complete(s);
            }
            im2win_cp_async_commit();
        }
        int read = 0;              // buffer of stage it
        int write = STAGES - 1;    // buffer of stage it + STAGES - 1
        for (int it = first; it < last; ++it) {
            im2win_cp_async_wait_group<STAGES - 2>();
            if constexpr (ASYNC_PROXY_FENCE) {
                fence_proxy_async_shared();
            }
            __syncthreads();
            step(read, it + STAGES - 1, write);
            complete(write);
            im2win_cp_async_commit();
            read = read == STAGES - 1 ? 0 : read + 1;
            write = write == STAGES - 1 ? 0 : write + 1;
        }
    }
};

}  // namespace im2win
