// im2win: the main loop. Owns the shared-memory stages and the order of copies, waits,
// barriers and multiplies; knows nothing of convolution: `copy(stage, buf)` issues the
// asynchronous copies of reduction stage `stage` into buffer `buf`, `multiply(buf)` multiplies
// buffer `buf` into the accumulators. The block's stages are [first, last); the branch on them
// is uniform (every thread of the block has the same share).
#pragma once

#include "copy.cuh"

namespace im2win {

template <int STAGES>
struct Mainloop;

// Two stages: while the threads multiply out one stage, the next stage's copies (cp.async:
// straight into shared memory, no staging registers) are in flight into the other.
// Iteration `stage`: wait for this thread's copies of the stage, then a barrier, after which
// every thread's copies have landed and every thread has finished multiplying the previous
// stage, whose buffer the next stage's copies may then overwrite while this one is
// multiplied. One barrier per stage.
template <>
struct Mainloop<2> {
    template <class Copy, class Multiply>
    static __device__ __forceinline__ void run(unsigned int first, unsigned int last, Copy&& copy, Multiply&& multiply) {
        if (first < last) {
            copy(first, 0);
            for (unsigned int stage = first; stage < last; ++stage) {
                const int buf = (stage - first) & 1;
                im2win_cp_async_wait_all();
                __syncthreads();
                if (stage + 1 < last) {
                    copy(stage + 1, buf ^ 1);   // in flight while the FMAs below run
                }
                multiply(buf);
            }
        }
    }
};

// One stage (the ablation's kernel without double buffering and prefetch): copy, wait,
// barrier (every copy has landed), multiply, barrier (every thread is done with the buffer
// before the next copy overwrites it); nothing overlaps the copies.
template <>
struct Mainloop<1> {
    template <class Copy, class Multiply>
    static __device__ __forceinline__ void run(unsigned int first, unsigned int last, Copy&& copy, Multiply&& multiply) {
        for (unsigned int stage = first; stage < last; ++stage) {
            copy(stage, 0);
            im2win_cp_async_wait_all();
            __syncthreads();
            multiply(0);
            __syncthreads();
        }
    }
};

}  // namespace im2win
