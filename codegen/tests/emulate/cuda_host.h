// Runs the generated CUDA kernels on the host, for tests on machines without a GPU.
//
// Just enough CUDA for im2win's kernels: the blocks of a grid run one after another on one
// std::thread per CUDA thread of a block (kept between launches: BlockThreads),
// __syncthreads is a std::barrier over those threads, and __shared__ variables are
// function-local statics (shared by the threads of the one running block).
// Every buffer the test passes is an exactly sized heap allocation, so AddressSanitizer
// reports any out-of-bounds access of a kernel.
#pragma once

#include <barrier>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
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

inline std::barrier<>* block_barrier;
inline void __syncthreads() { block_barrier->arrive_and_wait(); }

// __shfl_xor_sync(mask, v, m): lane l gets v of lane l ^ m of its warp. im2win's kernels call
// it only where every thread of the block does (uniform control flow), so the emulation
// exchanges through one slot per thread between two block barriers.
inline unsigned long long shuffle_slots[1024];
template <class T>
inline T __shfl_xor_sync(unsigned /*mask*/, T value, int lane_mask) {
    static_assert(sizeof(T) <= sizeof(unsigned long long), "one slot per thread");
    const unsigned t = threadIdx.x;
    unsigned long long bits = 0;
    std::memcpy(&bits, &value, sizeof(T));
    shuffle_slots[t] = bits;
    __syncthreads();
    bits = shuffle_slots[(t & ~31u) | ((t & 31u) ^ (unsigned)lane_mask)];
    __syncthreads();
    T out;
    std::memcpy(&out, &bits, sizeof(T));
    return out;
}

// The threads of a block of `size` threads, kept for every launch of that block size: creating
// a block's threads for each launch cost more than the kernels themselves (hundreds of
// thousands of thread creations per run of the catalogue's driver, most of its time spent in
// the system). Each launch hands its block loop to the pool's threads and waits for them.
struct BlockThreads {
    explicit BlockThreads(unsigned size) : size(size), barrier(size), start(size + 1), done(size + 1) {
        for (unsigned t = 0; t < size; ++t) {
            // Detached: they wait at `start` until the process ends.
            std::thread([this, t] {
                threadIdx = dim3{t, 0, 0};
                for (;;) {
                    start.arrive_and_wait();
                    (*job)();
                    done.arrive_and_wait();
                }
            }).detach();
        }
    }
    unsigned size;
    std::barrier<> barrier;       // __syncthreads of the running block
    std::barrier<> start, done;   // the launching thread and the block's threads
    std::function<void()>* job = nullptr;
};

// The pool of `size` threads, made at its first launch and never destroyed (its threads wait
// on its barriers until the process exits).
inline BlockThreads& block_threads(unsigned size) {
    static std::map<unsigned, BlockThreads*>* pools = new std::map<unsigned, BlockThreads*>();
    BlockThreads*& pool = (*pools)[size];
    if (pool == nullptr) {
        pool = new BlockThreads(size);
    }
    return *pool;
}

// kernel<<<grid, threads>>>(...), with the arguments bound in `kernel` (a lambda).
template <class Kernel>
void launch(dim3 grid, unsigned threads, Kernel kernel) {
    gridDim = grid;
    blockDim = dim3{threads, 1, 1};
    BlockThreads& block = block_threads(threads);
    block_barrier = &block.barrier;
    std::function<void()> job = [&kernel, &block, grid] {
        for (unsigned z = 0; z < grid.z; ++z) {
            for (unsigned y = 0; y < grid.y; ++y) {
                for (unsigned x = 0; x < grid.x; ++x) {
                    blockIdx = dim3{x, y, z};
                    kernel();
                    // No thread may start the next block, and overwrite shared memory,
                    // while another still works on this one.
                    block.barrier.arrive_and_wait();
                }
            }
        }
    };
    block.job = &job;
    block.start.arrive_and_wait();
    block.done.arrive_and_wait();
}
