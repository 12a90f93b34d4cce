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
// The copies of a stage past the reduction are still made, as zero fills into a buffer that is
// no longer read: the loop body then has no branch, so that the compiler can interleave the
// copies with the MMAs.
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
    static __device__ __forceinline__ void run(int stages, Issue&& issue, Step&& step, Complete&& complete) {
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < stages) {
                issue(s, s);
                complete(s);
            }
            im2win_cp_async_commit();
        }
        int read = 0;              // buffer of stage it
        int write = STAGES - 1;    // buffer of stage it + STAGES - 1
        for (int it = 0; it < stages; ++it) {
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
