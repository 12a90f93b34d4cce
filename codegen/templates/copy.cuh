// im2win: memory primitives of the kernels (vector loads, asynchronous copies to shared memory).
// Copied verbatim next to the rendered sources; see common.cuh.
#pragma once

#include "common.cuh"

// Whether p is aligned for a V-float vector access (V = 1, 2 or 4).
template <int V>
__device__ __forceinline__ bool im2win_aligned(const float* p) {
    return ((unsigned long long)p & (unsigned long long)(4 * V - 1)) == 0;
}

// Copies V consecutive floats (V = 1, 2 or 4; both addresses aligned to 4*V bytes) from global
// to shared memory without passing through registers (cp.async, sm_80 and later), or stores
// zeros when !valid: then nothing is read (the source size is 0), but `src` must still be an
// address inside the buffer (callers pass a safe one when theirs might not be). The copy is
// only complete after im2win_cp_async_wait_all(). 16-byte copies bypass L1 (.cg), smaller
// ones cannot. Before sm_80 (and on the host, in the tests' emulation) the copy is ordinary
// loads and stores; there `safe` (a valid element) stands in for a source outside the buffer.
template <int V>
__device__ __forceinline__ void im2win_cp_async(float* dst, const float* src, bool valid, const float* safe) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    (void)safe;
    const unsigned int shared = (unsigned int)__cvta_generic_to_shared(dst);
    if constexpr (V == 4) {
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(src),
            "r"(valid ? 16 : 0)
            : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared), "l"(src), "n"(4 * V),
            "r"(valid ? 4 * V : 0)
            : "memory");
    }
#else
    (void)safe;
    for (int e = 0; e < V; ++e) {
        dst[e] = valid ? src[e] : 0.0f;
    }
#endif
}

// Waits until every cp.async of the calling thread has completed.
__device__ __forceinline__ void im2win_cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Loads V consecutive floats (V = 1, 2 or 4) as one access; p must be aligned to 4 * V bytes.
template <int V>
__device__ __forceinline__ void im2win_load(const float* p, float* out) {
    if constexpr (V == 4) {
        const float4 v = *reinterpret_cast<const float4*>(p);
        out[0] = v.x;
        out[1] = v.y;
        out[2] = v.z;
        out[3] = v.w;
    } else if constexpr (V == 2) {
        const float2 v = *reinterpret_cast<const float2*>(p);
        out[0] = v.x;
        out[1] = v.y;
    } else {
        out[0] = *p;
    }
}

// im2win_load<2> from shared memory, as exactly one 8-byte access: the compiler may not merge
// it with the load of the neighbouring 8 bytes into one 16-byte load (which it does with plain
// loads), because the merged load's 4 registers per pixel are what the caller cannot afford.
// `volatile` keeps it from being moved across the barriers that guard the shared tiles.
__device__ __forceinline__ void im2win_load_shared_pair(const float* p, float* out) {
#if defined(__CUDA_ARCH__)
    const unsigned int shared = (unsigned int)__cvta_generic_to_shared(p);
    asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(out[0]), "=f"(out[1]) : "r"(shared));
#else
    im2win_load<2>(p, out);
#endif
}

// Stores V consecutive floats (V = 1, 2 or 4) as one access; p must be aligned to 4 * V bytes.
template <int V>
__device__ __forceinline__ void im2win_store(float* p, const float* v) {
    if constexpr (V == 4) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    } else if constexpr (V == 2) {
        *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
    } else {
        *p = v[0];
    }
}
