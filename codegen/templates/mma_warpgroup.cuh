// im2win: the warpgroup MMA policy (Hopper, sm_90a): how a warpgroup of 4 warps multiplies a
// whole BM x BN block tile of one stage, reading both operands straight from shared memory with
// wgmma.mma_async. The other policy, WarpMmaTensorOp (mma_tensorop.cuh), runs on every GPU from
// sm_80 and moves each fragment through registers with ldmatrix first; this one does not touch
// the operands at all: the tensor cores read them from shared memory themselves, so the issue
// slots and registers that ldmatrix took are free for the copies of the next stage.
//
// Operands in shared memory are exactly what the loaders already write (tile_tensorop.cuh): a
// stage's rows, ROW_BYTES apart, reduction-major ("K-major": the reduction runs along a row),
// 16-byte pieces XOR-swizzled by SwizzledRows<ROW_BYTES>. That swizzle is the hardware's own:
// for 128-byte rows piece ^ (row % 8) is wgmma's 128-byte swizzle, for 64-byte rows
// piece ^ ((row / 2) % 4) its 64-byte swizzle (the XOR of address bits [4, 7) with bits
// [7, 10)), so a matrix descriptor (below) names a stage's operand as it lies, provided each
// operand starts on a whole swizzle pattern (8 rows: 1024 bytes for 128-byte rows, 512 for
// 64-byte rows; the kernel's shared buffer is aligned to 1024 bytes and every stage and operand
// is a multiple of that).
//
// Instruction: wgmma.mma_async.sync.aligned.m64nNk16.f32.{bf16,f16}.{bf16,f16} or
// m64nNk8.f32.tf32.tf32, N = BN, both operands K-major (no transposition), FP32 sums. A k-step
// is 32 bytes of a row (16 two-byte elements or 8 floats), so k-step ks of a stage starts
// 32 * ks bytes into the rows: the descriptor's start address moves by that (the swizzle is
// applied by the hardware to the final address, which is why the operand must start on a
// whole pattern). The block tile is BM / 64 instructions tall.
//
// Accumulators (PTX ISA, "wgmma register fragment for D", m64nNk16 with f32 D): warp w of the
// warpgroup holds rows 16 w .. 16 w + 15 of each 64-row slice; lane (g = lane / 4, t = lane % 4)
// holds, for each 8-column slice nt, d[4 nt + 0, 1] = row g, columns 8 nt + 2t, 2t + 1, and
// d[4 nt + 2, 3] = row g + 8, the same columns: the mma.sync C fragment repeated along N, so
// the epilogue (epilogue_tensorop.cuh) only asks the policy where its rows and columns start.
//
// Ordering (PTX ISA, "asynchronous warpgroup level matrix operations"): the operands are written
// by cp.async and st.shared, the generic proxy, and read by wgmma through the async proxy, so
// every writing thread runs fence.proxy.async.shared::cta after its writes have landed and
// before the barrier that publishes them (the main loop's ASYNC_PROXY_FENCE); wgmma.fence
// orders the accumulator registers' earlier uses before the first wgmma; no wgmma may still read
// a buffer when copies overwrite it: the multiply waits for the group that read it before it
// issues them (WarpgroupMmaTensorOp::PENDING), and finish() for all before the epilogue.
#pragma once

#include "copy.cuh"
#include "numeric.cuh"
#include "tile_tensorop.cuh"

namespace im2win {

// The operand types of the wgmma instruction: the suffix written after the shape, and whether
// the instruction takes the transposition immediates (PTX ISA: only the 16-bit types may ask
// for an MN-major operand; .tf32 is K-major only and its form has no imm-trans-a, -b). A k-step
// is 32 bytes of a row for every type: 16 two-byte elements (k16) or 8 floats (k8).
template <class Element>
struct WarpgroupMmaType;
template <>
struct WarpgroupMmaType<__nv_bfloat16> {
    static constexpr int KIND = 0;   // k16.f32.bf16.bf16
};
template <>
struct WarpgroupMmaType<__half> {
    static constexpr int KIND = 1;   // k16.f32.f16.f16
};
// TF32: float operands as they lie in shared memory. The tensor cores read a float's sign,
// exponent and the top 10 bits of its mantissa; the kernels that feed this policy round the
// operands to TF32 on their way into shared memory (the TMA copies of a TFLOAT32 tensor map,
// tma.cuh), so that the product is that of the rounded values, as with mma.sync's cvt.rna.
template <>
struct WarpgroupMmaType<float> {
    static constexpr int KIND = 2;   // k8.f32.tf32.tf32
};

// Shared-memory matrix descriptor (PTX ISA, "matrix descriptor format"): start address,
// leading-dimension byte offset (not used by swizzled K-major operands; 1 by convention),
// stride-dimension byte offset (from one group of 8 rows to the next: 8 * ROW_BYTES) and the
// swizzle mode (1: 128-byte, 2: 64-byte, 3: 32-byte). Addresses are in 16-byte units.
template <int ROW_BYTES>
__device__ __forceinline__ unsigned long long warpgroup_descriptor(unsigned int shared_address) {
    constexpr unsigned long long SWIZZLE = ROW_BYTES == 128 ? 1ull : ROW_BYTES == 64 ? 2ull : 3ull;
    constexpr unsigned long long STRIDE = (8ull * ROW_BYTES) >> 4;
    return (unsigned long long)((shared_address & 0x3FFFF) >> 4) | (1ull << 16) | (STRIDE << 32) | (SWIZZLE << 62);
}

__device__ __forceinline__ void warpgroup_fence() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#endif
}
__device__ __forceinline__ void warpgroup_commit() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
#endif
}
template <int PENDING>
__device__ __forceinline__ void warpgroup_wait() {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(PENDING) : "memory");
#endif
}
// Keeps the compiler from moving an accumulator register across an asynchronous MMA: it may
// neither read it early nor reuse it while the tensor cores still write it.
__device__ __forceinline__ void warpgroup_fence_operand(float& x) { asm volatile("" : "+f"(x)::"memory"); }

// The accumulator operands of one instruction: acc[nt][0..3] for nt = 0 .. N / 8 - 1.
#define IM2WIN_WG_ACC4(d, i) "+f"(d[i][0]), "+f"(d[i][1]), "+f"(d[i][2]), "+f"(d[i][3])
#define IM2WIN_WG_ACC32(d, i)                                                                         \
    IM2WIN_WG_ACC4(d, i), IM2WIN_WG_ACC4(d, i + 1), IM2WIN_WG_ACC4(d, i + 2), IM2WIN_WG_ACC4(d, i + 3), \
        IM2WIN_WG_ACC4(d, i + 4), IM2WIN_WG_ACC4(d, i + 5), IM2WIN_WG_ACC4(d, i + 6), IM2WIN_WG_ACC4(d, i + 7)
#define IM2WIN_WG_REGS32                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31}"
#define IM2WIN_WG_REGS64                                                                                         \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, " \
    "%23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, "  \
    "%44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}"
#define IM2WIN_WG_REGS128 \
    "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, " \
    "%21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, " \
    "%40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, " \
    "%59, %60, %61, %62, %63, %64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, " \
    "%78, %79, %80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, %96, " \
    "%97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, %112, " \
    "%113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127}"
// d += A * B: scale-d = 1 (a predicate; the accumulators start at zero), imm-scale-a, -b = 1,
// imm-trans-a, -b = 0 (both operands K-major).
// One instruction of N columns: its register list, the operand numbers of the descriptors and of
// the scale-d predicate's source (after the N / 2 accumulators), and its operand types.
#define IM2WIN_WGMMA(N, REGS, A, B, P, TYPES, TAIL, ...)                                                  \
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #P ", 0;\n"                                       \
                 "wgmma.mma_async.sync.aligned.m64n" #N TYPES " " REGS ", %" #A ", %" #B ", p, 1, 1" TAIL \
                 ";\n}\n"                                                                                \
                 : __VA_ARGS__                                                                          \
                 : "l"(a), "l"(b), "r"(1))
// The three operand types: the suffix and the transposition immediates (none for .tf32).
#define IM2WIN_WGMMA_TYPED(N, REGS, A, B, P, ...)                                                        \
    if constexpr (KIND == 0) {                                                                         \
        IM2WIN_WGMMA(N, REGS, A, B, P, "k16.f32.bf16.bf16", ", 0, 0", __VA_ARGS__);                    \
    } else if constexpr (KIND == 1) {                                                                  \
        IM2WIN_WGMMA(N, REGS, A, B, P, "k16.f32.f16.f16", ", 0, 0", __VA_ARGS__);                      \
    } else {                                                                                           \
        IM2WIN_WGMMA(N, REGS, A, B, P, "k8.f32.tf32.tf32", "", __VA_ARGS__);                           \
    }
// d += A * B: scale-d = 1 (a predicate; the accumulators start at zero), imm-scale-a, -b = 1,
// imm-trans-a, -b = 0 where the type has them (both operands K-major).
template <int N, class Element>
__device__ __forceinline__ void warpgroup_mma(float (&d)[N / 8][4], unsigned long long a, unsigned long long b) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
    constexpr int KIND = WarpgroupMmaType<Element>::KIND;
    if constexpr (N == 64) {
        IM2WIN_WGMMA_TYPED(64, IM2WIN_WG_REGS32, 32, 33, 34, IM2WIN_WG_ACC32(d, 0))
    } else if constexpr (N == 128) {
        IM2WIN_WGMMA_TYPED(128, IM2WIN_WG_REGS64, 64, 65, 66, IM2WIN_WG_ACC32(d, 0), IM2WIN_WG_ACC32(d, 8))
    } else if constexpr (N == 256) {
        IM2WIN_WGMMA_TYPED(256, IM2WIN_WG_REGS128, 128, 129, 130, IM2WIN_WG_ACC32(d, 0), IM2WIN_WG_ACC32(d, 8),
                           IM2WIN_WG_ACC32(d, 16), IM2WIN_WG_ACC32(d, 24))
    } else {
        static_assert(N == 64 || N == 128 || N == 256, "block tiles of 64, 128 or 256 channels");
    }
#else
    (void)d;
    (void)a;
    (void)b;
    // Not an sm_90a image: dispatch never launches this kernel there (it checks the device's
    // capability); if it is launched anyway, it stops rather than return garbage.
    __trap();
#endif
}
#undef IM2WIN_WGMMA
#undef IM2WIN_WGMMA_TYPED
#undef IM2WIN_WG_ACC4
#undef IM2WIN_WG_ACC32
#undef IM2WIN_WG_REGS32
#undef IM2WIN_WG_REGS64
#undef IM2WIN_WG_REGS128

// The warpgroup MMA of a whole block tile: the block's WARPGROUPS = THREADS / 128 warpgroups
// split its rows, warpgroup wg taking rows [wg * BM / WARPGROUPS, (wg + 1) * BM / WARPGROUPS)
// against all BN channels (every warpgroup reads the same B tile: more warpgroups, less shared
// traffic per multiply-add). The tile shape writes it WM = BM / WARPS, WN = BN: each warp holds
// BM / WARPS rows of sums, 16 of each of its warpgroup's 64-row slices.
template <class Tile>
struct WarpgroupMmaTensorOp {
    using Element = typename Tile::ElementX;
    static constexpr int WARPGROUPS = Tile::THREADS / 128;
    static_assert(Tile::THREADS % 128 == 0, "whole warpgroups");
    static_assert(Tile::BM % (64 * WARPGROUPS) == 0 && Tile::WM * Tile::WARPS == Tile::BM && Tile::WN == Tile::BN,
                  "the warpgroups split the block's rows in 64-row slices: WM = BM / WARPS, WN = BN");
    static_assert(Tile::ROW_BYTES == 128 || Tile::ROW_BYTES == 64, "128- or 64-byte swizzled rows");
    // The main loop fences each thread's shared writes into the async proxy before its barrier.
    static constexpr bool ASYNC_PROXY_FENCE = true;
    static constexpr int MT = Tile::BM / (64 * WARPGROUPS);   // 64-pixel instructions per k-step
    static constexpr int NT = Tile::BN / 8;                   // 8-channel slices of each one's sums
    static constexpr int MT_ROWS = 64;                        // rows from one m-tile's fragment to the next
    static constexpr int KSTEP_BYTES = 32;
    static constexpr int KSTEPS = Tile::ROW_BYTES / KSTEP_BYTES;

    float acc[MT][NT][4];
    int row0;   // block-relative pixel of this lane's fragment row g in m-tile 0
    int col0;   // block-relative channel of this lane's first column (2t) in n-tile 0

    int a_rows;   // byte offset of this warpgroup's first A row in a stage

    __device__ __forceinline__ WarpgroupMmaTensorOp(int warp, int lane) {
        for_each_sum(acc, [](float& sum) { sum = 0.0f; });
        const int first_row = (warp / 4) * MT * 64;
        a_rows = first_row * Tile::ROW_BYTES;
        row0 = first_row + 16 * (warp % 4) + lane / 4;
        col0 = 2 * (lane % 4);
    }

    // Zero sums, for the next tile of a persistent block.
    __device__ __forceinline__ void clear() {
        for_each_sum(acc, [](float& sum) { sum = 0.0f; });
    }

    __device__ __forceinline__ void fence_accumulators() {
        for_each_sum(acc, [](float& sum) { warpgroup_fence_operand(sum); });
    }

    // wgmma groups left in flight when multiply returns. With one warpgroup, 1: the stage's
    // group keeps the tensor cores busy across the main loop's next wait and barrier, and the
    // next multiply waits for it (wait_group 1 there) before its copies overwrite its buffer:
    // the copies of iteration `it` go into the buffer that stage it - 1 was read from
    // (mainloop_multistage.cuh), whose group is then the older of the two. With two
    // warpgroups, 0: a warpgroup's copies also overwrite the B tile that the other one's group
    // reads, which only the barrier after both waited orders.
    static constexpr int PENDING = WARPGROUPS == 1 ? 1 : 0;

    // Issues the wgmma of one stage (`a`, `b`: shared addresses of its A and B rows) as one
    // group, which runs in the background.
    __device__ __forceinline__ void issue(unsigned int a, unsigned int b) {
        const unsigned long long a_desc = warpgroup_descriptor<Tile::ROW_BYTES>(a + a_rows);
        const unsigned long long b_desc = warpgroup_descriptor<Tile::ROW_BYTES>(b);
        fence_accumulators();
        warpgroup_fence();
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                // Descriptor addresses are in 16-byte units: a k-step is 2, an m-tile 64 rows.
                warpgroup_mma<Tile::BN, Element>(acc[mt], a_desc + (unsigned long long)(2 * ks + mt * 4 * Tile::ROW_BYTES),
                                                 b_desc + (unsigned long long)(2 * ks));
            }
        }
        warpgroup_commit();
        fence_accumulators();
    }

    // Waits until at most N of this warpgroup's groups are still running.
    template <int N>
    __device__ __forceinline__ void wait() {
        warpgroup_wait<N>();
        fence_accumulators();
    }

    // Multiplies one stage in the multistage main loop: issue(), then, once the previous
    // stage's group is done, between(ks) for every k-step (the next stage's copies, which run
    // while the tensor cores work); this stage's group completes in the background (PENDING)
    // or before returning.
    template <class Between>
    __device__ __forceinline__ void multiply(unsigned int a, unsigned int b, Between&& between) {
        issue(a, b);
        wait<PENDING>();
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            between(ks);
        }
        fence_accumulators();
    }

    // After the last multiply: waits for every group, so that the sums are final and the
    // stages free for the epilogue.
    __device__ __forceinline__ void finish() {
        warpgroup_wait<0>();
        fence_accumulators();
    }
};

}  // namespace im2win
