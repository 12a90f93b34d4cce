// im2win: shared-memory barriers (mbarrier, sm_90), the hand-off between the copying warps and
// the MMA warps of a warp-specialised block (mainloop_warp_specialized.cuh).
//
// An mbarrier is an 8-byte object in shared memory that counts arrivals: initialised with a
// count, its current phase completes when that many arrivals have come, and the next phase
// begins with the same count. A waiter names the phase it waits for by its parity (0 for the
// first, 1 for the second, 0 again for the third, ...): try_wait.parity returns true once the
// phase of that parity has completed. A waiter is therefore never more than one phase behind,
// which the pipeline guarantees by construction (a buffer is refilled only after it was
// released, and released only after it was filled).
//
// Arrivals here come in two kinds:
//   arrive(bar)                 an ordinary arrival, with release semantics: this thread's
//                               earlier reads of the buffer (here: its warp's wgmma, completed
//                               by wgmma.wait_group) happen before the waiter's later writes;
//   arrive_on_copies(bar)       cp.async.mbarrier.arrive.noinc: the arrival happens when every
//                               cp.async this thread issued before it has landed, without the
//                               thread waiting for them (noinc: the arrival counts against the
//                               count the barrier was initialised with, one per copying thread).
// Each helper compiles to nothing before sm_90: only the wgmma kernels, which trap there, use
// them (mma_warpgroup.cuh).
#pragma once

namespace im2win {

__device__ __forceinline__ void mbarrier_init(unsigned int bar, unsigned int count) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
#else
    (void)bar;
    (void)count;
#endif
}

// Spins until the phase of `parity` of the barrier at `bar` has completed (try_wait suspends
// the thread for a while in hardware before it reports false, so the loop does not hammer
// shared memory).
__device__ __forceinline__ void mbarrier_wait(unsigned int bar, unsigned int parity) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n"
        ".reg .pred done;\n"
        "wait_%=:\n"
        "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
        "@!done bra wait_%=;\n"
        "}\n" ::"r"(bar),
        "r"(parity)
        : "memory");
#else
    (void)bar;
    (void)parity;
#endif
}

__device__ __forceinline__ void mbarrier_arrive(unsigned int bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile(
        "{\n"
        ".reg .b64 state;\n"
        "mbarrier.arrive.shared::cta.b64 state, [%0];\n"
        "}\n" ::"r"(bar)
        : "memory");
#else
    (void)bar;
#endif
}

__device__ __forceinline__ void mbarrier_arrive_on_copies(unsigned int bar) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
#else
    (void)bar;
#endif
}

// Arrives on the barrier at `bar` and adds `bytes` to what its current phase waits for: the
// bytes that bulk copies (tma.cuh) will complete on it (complete_tx). The phase completes once
// every arrival is in and every expected byte has landed.
__device__ __forceinline__ void mbarrier_arrive_expect_tx(unsigned int bar, unsigned int bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
#else
    (void)bar;
    (void)bytes;
#endif
}

}  // namespace im2win
