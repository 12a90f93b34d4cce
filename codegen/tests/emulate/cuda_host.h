// Runs the generated CUDA kernels on the host, for tests on machines without a GPU.
//
// Just enough CUDA for im2win's kernels: the blocks of a grid run one after another on one
// std::thread per CUDA thread of a block, __syncthreads is a std::barrier over those threads,
// and __shared__ variables are function-local statics (shared by the threads of the one
// running block).
// Every buffer the test passes is an exactly sized heap allocation, so AddressSanitizer
// reports any out-of-bounds access of a kernel.
#pragma once

#include <barrier>
#include <cmath>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline thread_local dim3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

struct float4 {
    float x, y, z, w;
};
struct float2 {
    float x, y;
};
inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
inline float2 make_float2(float x, float y) { return float2{x, y}; }

inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
inline int __clz(unsigned x) { return x ? __builtin_clz(x) : 32; }
inline int __ffs(int x) { return __builtin_ffs(x); }

inline std::barrier<>* block_barrier;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }

// Warp shuffles of floats: every thread of the block must call them at the same points (the
// kernels that use them run one uniform loop); lanes are threadIdx.x % 32. A source lane
// outside the warp returns the caller's own value, as CUDA does.
inline std::vector<float> shuffle_slots;
inline float shuffle_from(float v, int offset) {
    const unsigned t = threadIdx.x;
    shuffle_slots[t] = v;
    __syncthreads();
    const int lane = (int)(t % 32), source = lane + offset;
    const float got = source >= 0 && source < 32 ? shuffle_slots[t - lane + source] : v;
    __syncthreads();
    return got;
}
inline float __shfl_up_sync(unsigned, float v, int delta) { return shuffle_from(v, -delta); }
inline float __shfl_down_sync(unsigned, float v, int delta) { return shuffle_from(v, delta); }

// kernel<<<grid, threads>>>(...), with the arguments bound in `kernel` (a lambda).
template <class Kernel>
void launch(dim3 grid, unsigned threads, Kernel kernel) {
    gridDim = grid;
    blockDim = dim3{threads, 1, 1};
    std::barrier<> barrier(threads);
    block_barrier = &barrier;
    shuffle_slots.assign(threads, 0.0f);
    std::vector<std::thread> block;
    for (unsigned t = 0; t < threads; ++t) {
        block.emplace_back([&kernel, &barrier, grid, t] {
            threadIdx = dim3{t, 0, 0};
            for (unsigned z = 0; z < grid.z; ++z) {
                for (unsigned y = 0; y < grid.y; ++y) {
                    for (unsigned x = 0; x < grid.x; ++x) {
                        blockIdx = dim3{x, y, z};
                        kernel();
                        // No thread may start the next block, and overwrite shared memory,
                        // while another still works on this one.
                        barrier.arrive_and_wait();
                    }
                }
            }
        });
    }
    for (std::thread& thread : block) {
        thread.join();
    }
}
