// im2win: memory primitives of the kernels (vector loads, asynchronous copies to shared memory).
// Each moves V consecutive elements of a type T as one access of V * sizeof(T) bytes; the
// element types come from the caller (numeric.cuh). Copied verbatim next to the rendered
// sources; see common.cuh.
#pragma once

#include "common.cuh"
#include "numeric.cuh"

// Whether p is aligned for an access of V elements (V * sizeof(T) bytes, a power of two).
template <int V, class T>
__device__ __forceinline__ bool im2win_aligned(const T* p) {
    return ((unsigned long long)p & (unsigned long long)(sizeof(T) * V - 1)) == 0;
}

// Copies V consecutive elements (2, 4, 8 or 16 bytes; both addresses aligned to that) from
// global to shared memory without passing through registers (cp.async, sm_80 and later), or
// stores zeros when !valid: then nothing is read (the source size is 0), but `src` must still
// be an address inside the buffer (callers pass a safe one when theirs might not be). The copy
// is only complete after im2win_cp_async_wait_all(). 16-byte copies bypass L1 (.cg), smaller
// ones cannot. cp.async moves 4, 8 or 16 bytes: a 2-byte copy is an ordinary load and store,
// complete (like the others) by the barrier that follows the wait. Before sm_80 (and on the
// host, in the tests' emulation) every copy is ordinary loads and stores; there `safe` (a
// valid element) stands in for a source outside the buffer.
template <int V, class T>
__device__ __forceinline__ void im2win_cp_async(T* dst, const T* src, bool valid, const T* safe) {
    constexpr int BYTES = V * (int)sizeof(T);
    static_assert(BYTES == 2 || BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    (void)safe;
    if constexpr (BYTES == 2) {
        *dst = valid ? *src : T{};
    } else {
        const unsigned int shared = (unsigned int)__cvta_generic_to_shared(dst);
        if constexpr (BYTES == 16) {
            asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared), "l"(src),
                "r"(valid ? 16 : 0)
                : "memory");
        } else {
            asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(shared), "l"(src), "n"(BYTES),
                "r"(valid ? BYTES : 0)
                : "memory");
        }
    }
#else
    (void)safe;
    for (int e = 0; e < V; ++e) {
        dst[e] = valid ? src[e] : T{};
    }
#endif
}

// Waits until every cp.async of the calling thread has completed.
__device__ __forceinline__ void im2win_cp_async_wait_all() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_all;\n" ::: "memory");
#endif
}

// Loads V consecutive elements as one access (im2win::ElementVector); p must be aligned to
// V * sizeof(T) bytes.
template <int V, class T>
__device__ __forceinline__ void im2win_load(const T* p, T* out) {
    using Vector = im2win::ElementVector<T, V>;
    const typename Vector::type v = *reinterpret_cast<const typename Vector::type*>(p);
    Vector::unpack(v, out);
}

// im2win_load<2> of floats from shared memory, as exactly one 8-byte access: the compiler may
// not merge it with the load of the neighbouring 8 bytes into one 16-byte load (which it does
// with plain loads), because the merged load's 4 registers per pixel are what the caller (the
// FP32 MMA, mma_simt.cuh) cannot afford. `volatile` keeps it from being moved across the
// barriers that guard the shared tiles.
__device__ __forceinline__ void im2win_load_shared_pair(const float* p, float* out) {
#if defined(__CUDA_ARCH__)
    const unsigned int shared = (unsigned int)__cvta_generic_to_shared(p);
    asm volatile("ld.shared.v2.f32 {%0, %1}, [%2];\n" : "=f"(out[0]), "=f"(out[1]) : "r"(shared));
#else
    im2win_load<2>(p, out);
#endif
}

// Stores one float to shared memory as exactly one 4-byte store: the compiler may not merge
// neighbouring ones into a vector store, whose 4 source registers would have to be 4 aligned,
// consecutive registers. The epilogue stages the accumulators this way (epilogue.cuh): a
// merged store pins them to aligned quads for the whole main loop, which puts most of its
// FFMAs' operands in one register bank. `volatile` also keeps it on its side of the barriers.
__device__ __forceinline__ void im2win_store_shared(float* p, float v) {
#if defined(__CUDA_ARCH__)
    const unsigned int shared = (unsigned int)__cvta_generic_to_shared(p);
    asm volatile("st.shared.f32 [%0], %1;\n" ::"r"(shared), "f"(v));
#else
    *p = v;
#endif
}

// Stores V consecutive elements as one access; p must be aligned to V * sizeof(T) bytes.
template <int V, class T>
__device__ __forceinline__ void im2win_store(T* p, const T* v) {
    using Vector = im2win::ElementVector<T, V>;
    *reinterpret_cast<typename Vector::type*>(p) = Vector::pack(v);
}

// ---- cp.async groups (the multistage main loop of the tensor-core kernels) ------------------
// im2win_cp_async_wait_all above waits for every copy; a pipeline several stages deep instead
// closes each stage's copies into a group and waits until at most N groups are still in
// flight, so the younger stages keep loading while the oldest is multiplied. Copies made with
// ordinary loads and stores (2-byte elements, before sm_80) belong to no group and are
// complete at once.
__device__ __forceinline__ void im2win_cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

template <int N>
__device__ __forceinline__ void im2win_cp_async_wait_group() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
// One 16-byte cp.async (.cg) to a shared address given as a 32-bit shared-window offset (what
// the tensor-core kernels compute their swizzled addresses in), zero-filled when !valid:
// then nothing is read, and `src` must still be an address inside the buffer.
__device__ __forceinline__ void im2win_cp_async_16(unsigned int dst_shared, const void* src, bool valid) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst_shared), "l"(src), "r"(valid ? 16 : 0)
                 : "memory");
#else
    (void)dst_shared;
    (void)src;
    (void)valid;
#endif
}
// This thread's landed shared-memory writes (cp.async, st.shared: the generic proxy) made
// visible to the async proxy (wgmma, the bulk copy engine), which reads them next: run by each
// writing thread before the barrier that publishes them.
__device__ __forceinline__ void fence_proxy_async_shared() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
#endif
}
// ---- end of cp.async groups ------------------------------------------------------------------
