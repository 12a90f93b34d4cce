// im2win: the tensor-core MMA policy. How a warp multiplies its WM x WN tile of one stage out of
// shared memory: ldmatrix fragments of both operands, then mma.sync into FP32 accumulators.
//
// The instruction depends on the operand type only (TensorOpInstruction<Element>):
//   BF16, FP16   mma.sync.aligned.m16n8k16.row.col.f32.{bf16,f16}.{bf16,f16}.f32
//   float        mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, each operand rounded to
//                TF32 first (cvt.rna.tf32.f32: to nearest, ties away from zero), since the
//                tensor cores would otherwise just drop the low 13 mantissa bits.
// Either way one k-step of an instruction spans 32 bytes of the reduction (16 two-byte
// elements, 8 floats): two 16-byte pieces of a shared row, so the fragment addressing below is
// the same for every type, in bytes.
//
// Fragments (PTX ISA, "Matrix fragments for mma.m16n8k16 / m16n8k8"; g = lane / 4, t = lane % 4):
//   A, 16 x (one k-step), four 32-bit registers: rows g / g + 8 of the first / second
//      16-byte piece: a0 (g, piece 0), a1 (g + 8, piece 0), a2 (g, piece 1), a3 (g + 8, piece 1);
//   B, (one k-step) x 8, two registers: b0 column g of piece 0, b1 column g of piece 1;
//   C, 16 x 8 floats: c0, c1 row g, columns 2t, 2t + 1; c2, c3 row g + 8, the same columns.
// In each register, the 32 bits are elements 2t, 2t+1 of the piece (two-byte types) or element
// t (floats): exactly what ldmatrix delivers (tile_tensorop.cuh).
//
// The math operator (CUTLASS's OpMultiplyAdd / OpMultiplyAddFastF32) says what the MMAs make of
// those fragments, and is the one difference between the warp MMA's two uses:
//   OpMultiplyAdd<Element>   one MMA per tile and k-step on the operands as the instruction takes
//                            them (BF16, FP16 as stored; float rounded to TF32), accumulating in
//                            the tensor cores;
//   OpMultiplyAddFastF32     3xTF32, FP32 accuracy on TF32 tensor cores: each float x is split
//                            into big = tf32(x) and small = tf32(x - big) (x - big is exact), and
//                            a*b is computed as a_small*b_big + a_big*b_small + a_big*b_big. The
//                            dropped a_small*b_small is below 2^-22 of a*b; each part carries 11
//                            significant bits, so big + small holds x to about 2^-22 (float:
//                            2^-24). Three MMAs and twice the fragment registers per k-step.
//
// Why 3xTF32 does not accumulate in the tensor cores: their FP32 addition aligns the addends
// to the largest one and truncates (round toward zero), so an accumulator carried through every
// MMA loses up to an ulp of itself, always toward zero, at each of the C*R*S/8 k-steps: an error
// that grows linearly with the reduction. Measured on the H100 with the sums in the tensor
// cores: 5-60x strict FP32's error, 1.7e-6 of the magnitude where strict has 5e-8. So each
// k-step's three MMAs start from zero (their truncation is then relative to that k-step's eight
// products, not to the whole sum), and the k-step's sum is added on the CUDA cores, rounding to
// nearest: four FADDs per three MMAs (Ootomo & Yokota, 2022, make the same observation for FP16
// tensor cores). That alone measured 2-2.5x strict FP32's error on reductions of 3,000-24,000
// terms, where the strict kernels split the reduction: a chain of C*R*S/8 roundings. So the
// k-step sums go into a block sum of BLOCK_KSTEPS k-steps (128 products), which is added to the
// sums the epilogue reads once per block: two-level (blocked) summation, whose rounding error
// grows with the number of blocks plus the block length rather than with the k-steps. A model
// of the tensor cores' arithmetic (exact products, addends aligned to the largest and
// truncated with 3 guard bits, the sum truncated to 24 bits) reproduced both measurements (1.0e-6
// in the chain, 2e-4 in the tensor cores at 24,200 terms) and gives the blocked sum 2.8e-7.
#pragma once

#include "numeric.cuh"
#include "tile_tensorop.cuh"

namespace im2win {

template <class Element>
struct TensorOpInstruction;

template <>
struct TensorOpInstruction<__nv_bfloat16> {
    static constexpr int K = 16;
    static __device__ __forceinline__ void prepare(unsigned int&) {}
    static __device__ __forceinline__ void mma(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
    }
};

template <>
struct TensorOpInstruction<__half> {
    static constexpr int K = 16;
    static __device__ __forceinline__ void prepare(unsigned int&) {}
    static __device__ __forceinline__ void mma(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
    }
};

// TF32: float tensors, operands rounded to TF32 in registers.
template <>
struct TensorOpInstruction<float> {
    static constexpr int K = 8;
    // x rounded to TF32 (to nearest, ties away from zero), as the bits of a float whose low
    // 13 mantissa bits are zero.
    static __device__ __forceinline__ unsigned int round(float x) {
        unsigned int t = __float_as_uint(x);
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(t) : "f"(x));
#endif
        return t;
    }
    static __device__ __forceinline__ void prepare(unsigned int& x) { x = round(__uint_as_float(x)); }
    // d = a * b, with C = 0 (ptxas reads it from the zero register).
    static __device__ __forceinline__ void mma_from_zero(float (&d)[4], const unsigned int (&a)[4],
                                                         const unsigned int (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%10, %10, %10, %10};\n"
            : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(0.0f));
#endif
    }
    static __device__ __forceinline__ void mma(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
        asm volatile(
            "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
            "{%0, %1, %2, %3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
    }
};

// The plain math operator: one MMA per m-tile, n-tile and k-step on the operands as the
// instruction takes them, accumulating in the tensor cores. An operator turns each fragment
// register into PARTS registers (split) and multiplies one 16 x 8 tile of a k-step from them
// (multiply_tile), adding into the sums, or into a block sum of BLOCK_KSTEPS k-steps (> 0).
template <class Element>
struct OpMultiplyAdd {
    using Instruction = TensorOpInstruction<Element>;
    static constexpr int PARTS = 1;
    // No block sums: the tensor cores accumulate (multiply_tile adds into the sums themselves).
    static constexpr int BLOCK_KSTEPS = 0;
    static __device__ __forceinline__ void split(unsigned int x, unsigned int (&parts)[PARTS]) {
        Instruction::prepare(x);
        parts[0] = x;
    }
    static __device__ __forceinline__ void multiply_tile(float (&acc)[4], const unsigned int (&a)[PARTS][4],
                                                         const unsigned int (&b)[PARTS][2]) {
        Instruction::mma(acc, a[0], b[0]);
    }
};

// 3xTF32 on float operands (see the top of this file). Parts: 0 big, 1 small. Per tile and
// k-step: small*big, big*small, big*big into a sum that starts at zero (the small products
// first, CUTLASS's order), then that sum into the FP32 accumulator, rounded to nearest.
struct OpMultiplyAddFastF32 {
    using Instruction = TensorOpInstruction<float>;
    static constexpr int PARTS = 2;
    // k-steps per block sum (multiply_tile adds into the block sum; see the top of this file).
    static constexpr int BLOCK_KSTEPS = 16;
    static __device__ __forceinline__ void split(unsigned int x, unsigned int (&parts)[PARTS]) {
        const float value = __uint_as_float(x);
        parts[0] = Instruction::round(value);
        // Exact: big is value rounded to 11 significant bits, so the difference is a multiple
        // of value's last place no larger than half of big's.
        parts[1] = Instruction::round(value - __uint_as_float(parts[0]));
    }
    static __device__ __forceinline__ void multiply_tile(float (&acc)[4], const unsigned int (&a)[PARTS][4],
                                                         const unsigned int (&b)[PARTS][2]) {
        float step[4];
        Instruction::mma_from_zero(step, a[1], b[0]);
        Instruction::mma(step, a[0], b[1]);
        Instruction::mma(step, a[0], b[0]);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            acc[i] += step[i];
        }
    }
};

// The warp-level MMA of one warp tile: MT x NT tiles of 16 x 8 per k-step (each one MMA, or
// three for 3xTF32), FP32 accumulators held as acc[mt][nt][0..3] (the C fragment above). The kernels name it
// through the one-parameter aliases below (WarpMmaTensorOp, WarpMmaTensorOpFastF32), the form a
// kernel's Conv2dFpropTensorOp takes its MMA policy in.
template <class Tile, class Operator>
struct WarpMmaSync {
    using Element = typename Tile::ElementX;
    using Instruction = typename Operator::Instruction;
    using Rows = SwizzledRows<Tile::ROW_BYTES>;
    static constexpr int MT = Tile::WM / 16;   // 16-pixel m-tiles per warp
    static constexpr int NT = Tile::WN / 8;    // 8-channel n-tiles per warp
    static constexpr int KSTEP_BYTES = Instruction::K * (int)sizeof(Element);
    static_assert(KSTEP_BYTES == 2 * TENSOROP_CHUNK_BYTES, "a k-step is two 16-byte pieces");
    static constexpr int KSTEPS = Tile::ROW_BYTES / KSTEP_BYTES;   // per stage

    static constexpr int MT_ROWS = 16;   // rows from one m-tile's fragment to the next
    // Fragments move through registers (ldmatrix): no async-proxy fence before the barrier.
    static constexpr bool ASYNC_PROXY_FENCE = false;

    // Blocked summation (3xTF32): the sums of the current block of k-steps, added into acc
    // every BLOCK_STAGES stages and by finish(). One element, unused, without it.
    static constexpr bool BLOCKED = Operator::BLOCK_KSTEPS > 0;
    static constexpr int BLOCK_STAGES = BLOCKED && Operator::BLOCK_KSTEPS > KSTEPS ? Operator::BLOCK_KSTEPS / KSTEPS : 1;

    float acc[MT][NT][4];   // the sums the epilogue reads
    float block[BLOCKED ? MT : 1][BLOCKED ? NT : 1][4];
    int block_stages;       // stages summed in block so far
    int row0;   // block-relative pixel of this lane's fragment row g in m-tile 0
    int col0;   // block-relative channel of this lane's first column (2t) in n-tile 0
    // Byte offsets, within a stage's A (B) operand, of this lane's ldmatrix row for m-tile 0
    // (n-tile pair 0) at k-step ks. The other tiles are a constant number of rows further;
    // the swizzle depends only on the row modulo 8 (tile starts are multiples of 8), so it is
    // the same for all of them.
    int a_offset[KSTEPS];
    int b_offset[KSTEPS];

    // Warp `warp` of the block takes warp tile (warp % WARPS_M, warp / WARPS_M).
    __device__ __forceinline__ WarpMmaSync(int warp, int lane) {
        const int warp_m = warp % Tile::WARPS_M;
        const int warp_n = warp / Tile::WARPS_M;
        row0 = warp_m * Tile::WM + lane / 4;
        col0 = warp_n * Tile::WN + 2 * (lane % 4);
        for_each_sum(acc, [](float& sum) { sum = 0.0f; });
        for_each_sum(block, [](float& sum) { sum = 0.0f; });
        block_stages = 0;
        // A, ldmatrix.x4 per m-tile: lanes 0-15 address rows 0-15 of piece 0 of the k-step
        // (matrices a0, a1), lanes 16-31 the same rows of piece 1 (a2, a3).
        const int a_row = warp_m * Tile::WM + lane % 16;
        // B, ldmatrix.x4 per pair of n-tiles: lanes 0-7 rows (channels) 0-7 of piece 0 (b0 of
        // n-tile 0), 8-15 the same rows of piece 1 (b1), 16-23 and 24-31 rows 8-15 (n-tile 1).
        const int b_row = warp_n * Tile::WN + lane % 8 + 8 * (lane / 16);
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            a_offset[ks] = Rows::offset(a_row, 2 * ks + lane / 16);
            b_offset[ks] = Rows::offset(b_row, 2 * ks + (lane / 8) % 2);
        }
    }

    // Nothing is in flight after a multiply (mma.sync is synchronous): nothing to wait for;
    // the last block sum goes into the sums.
    __device__ __forceinline__ void finish() {
        if constexpr (BLOCKED) {
            add_block();
        }
    }

    // acc += block; block = 0.
    __device__ __forceinline__ void add_block() {
        for_each_sum_pair(acc, block, [](float& sum, float& part) {
            sum += part;
            part = 0.0f;
        });
    }

    // Multiplies one stage: `a` and `b` are the shared addresses of the stage's A and B rows.
    // between(ks) runs after the fragments of k-step ks are requested and before its MMAs are
    // issued: the main loop puts a share of the next stage's copies there, so that their
    // address arithmetic fills the issue slots beside the MMAs and the ldmatrix latency,
    // rather than standing alone between the barrier and the first MMA.
    template <class Between>
    __device__ __forceinline__ void multiply(unsigned int a, unsigned int b, Between&& between) {
#pragma unroll
        for (int ks = 0; ks < KSTEPS; ++ks) {
            // Each fragment register as the operator's parts (one, or big and small).
            unsigned int af[MT][Operator::PARTS][4];
            unsigned int bf[NT][Operator::PARTS][2];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                unsigned int q[4];
                ldmatrix_x4(q, a + a_offset[ks] + mt * 16 * Tile::ROW_BYTES);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    unsigned int parts[Operator::PARTS];
                    Operator::split(q[e], parts);
#pragma unroll
                    for (int p = 0; p < Operator::PARTS; ++p) {
                        af[mt][p][e] = parts[p];
                    }
                }
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                unsigned int q[4];
                ldmatrix_x4(q, b + b_offset[ks] + np * 16 * Tile::ROW_BYTES);
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    // q holds b0, b1 of n-tile 2np, then b0, b1 of n-tile 2np + 1.
                    unsigned int parts[Operator::PARTS];
                    Operator::split(q[e], parts);
#pragma unroll
                    for (int p = 0; p < Operator::PARTS; ++p) {
                        bf[2 * np + e / 2][p][e % 2] = parts[p];
                    }
                }
            }
            between(ks);
            // Serpentine order over the n-tiles: consecutive tiles share an A or B fragment.
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
                for (int n = 0; n < NT; ++n) {
                    const int nt = mt % 2 == 0 ? n : NT - 1 - n;
                    if constexpr (BLOCKED) {
                        Operator::multiply_tile(block[mt][nt], af[mt], bf[nt]);
                    } else {
                        Operator::multiply_tile(acc[mt][nt], af[mt], bf[nt]);
                    }
                }
            }
        }
        if constexpr (BLOCKED) {
            if (++block_stages == BLOCK_STAGES) {
                add_block();
                block_stages = 0;
            }
        }
    }
};

// The warp MMA of the BF16, FP16 and TF32 kernels.
template <class Tile>
using WarpMmaTensorOp = WarpMmaSync<Tile, OpMultiplyAdd<typename Tile::ElementX>>;

// The warp MMA of the 3xTF32 kernels (float tensors computed to FP32 accuracy, Math::TensorOpFastF32).
template <class Tile>
using WarpMmaTensorOpFastF32 = WarpMmaSync<Tile, OpMultiplyAddFastF32>;

}  // namespace im2win
