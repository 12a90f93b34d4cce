// im2win: definitions shared by every generated translation unit.
//
// This header is copied verbatim (it is not a Tera template) next to the rendered .cu files,
// with the other headers of codegen/templates (the kernel building blocks, docs/DESIGN.md),
// and included by each of them. It holds the kernel parameter block and the integer
// division helpers.
#pragma once

// The launch parameters of every im2win kernel, passed by value.
//
// Field for field the same as `ConvParams` in runtime/src/gpu/params.rs (`#[repr(C)]`); a test
// there checks every offset and the size (112 bytes: 21 ints, 2 floats, 4 bytes of padding,
// 2 long longs), and the ABI stamp (codegen/src/abi.rs) hashes this declaration. Change both
// or neither. Each single dimension fits in an int (the runtime validates that); every offset
// into a tensor is computed in long long. Sizes are logical (N, C, H, W whatever the layout).
struct ConvParams {
    int n, c, h, w;          // input X, logical [N][C][H][W]
    int k, r, s;             // filter F, logical [K][C][R][S]
    int p, q;                // output Y, logical [N][K][P][Q]
    int stride_h, stride_w;
    int pad_top, pad_left;   // bottom/right padding only shape P, Q and Wt
    int dil_h, dil_w;
    int win_w;               // Wt = (Q - 1) * stride_w + (S - 1) * dil_w + 1
    int has_bias;            // 0 or 1
    int layout;              // X, Y and the residual: IM2WIN_NCHW or IM2WIN_NHWC
    int filter_layout;       // F: IM2WIN_KCRS or IM2WIN_KRSC
    int activation;          // enum Im2winActivation (epilogue.cuh)
    int has_residual;        // 0 or 1: the epilogue adds beta * residual
    float alpha;             // y = act(alpha * sum + bias + beta * residual)
    float beta;
    long long crs;           // C * R * S
    long long npq;           // N * P * Q
};

// Memory orders: the values of ConvParams::layout and ::filter_layout, and the kernels'
// compile-time layout parameter (runtime/src/layout.rs has the same codes).
enum Im2winLayout { IM2WIN_NCHW = 0, IM2WIN_NHWC = 1 };

// The minimum number of resident blocks a kernel's launch bounds ask for, per architecture.
// On sm_90 ptxas fits the 8x8-per-thread tiles with the run-time epilogue in 128 registers
// (2 blocks of 256 threads per SM); sm_80's ptxas needs more and spilled at that cap, so
// there a kernel asks for one block only and may use up to 255 registers (no spills; the
// lower occupancy costs less than spilling would).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 900
#define IM2WIN_MIN_BLOCKS(n) 1
#else
#define IM2WIN_MIN_BLOCKS(n) (n)
#endif
enum Im2winFilterLayout { IM2WIN_KCRS = 0, IM2WIN_KRSC = 1 };

// Division by a divisor that is only known at run time but the same for a whole kernel.
//
// A 64-bit integer division is a long software routine on the GPU, and even a 32-bit one
// costs about twenty instructions. Index decompositions divide by the same few values
// (R, Wt, P, P*Q, ...) over and over, so each thread computes a "magic" multiplier once and
// then divides with one multiply-high, an add and a shift (Granlund and Montgomery,
// "Division by invariant integers using multiplication", 1994; the same scheme as
// PyTorch's IntDivider). The fast path covers dividends and divisors below 2^32, which is
// every realistic problem; larger values fall back to plain division, so results are exact
// for every non-negative long long.
struct Divider {
    long long divisor;    // >= 1
    unsigned int magic;   // valid when `small`
    unsigned int shift;   // ceil(log2(divisor)), valid when `small`
    bool small;           // divisor < 2^32

    __device__ __forceinline__ explicit Divider(long long d) : divisor(d), magic(0), shift(0) {
        small = d <= 0xFFFFFFFFll;
        if (small) {
            const unsigned int d32 = (unsigned int)d;
            // shift = ceil(log2(d)); __clz(0) is 32, so d = 1 gives shift 0.
            shift = 32u - (unsigned int)__clz(d32 - 1u);
            // magic = floor(2^32 * (2^shift - d) / d) + 1 < 2^32, since 2^shift < 2 * d.
            magic = (unsigned int)((((1ull << shift) - d32) << 32) / d32 + 1ull);
        }
    }

    // n / divisor for n < 2^32 (requires `small`). The sum is taken in 64 bits so that it
    // cannot wrap, which makes the result exact for every 32-bit n.
    __device__ __forceinline__ unsigned int div32(unsigned int n) const {
        return (unsigned int)(((unsigned long long)__umulhi(n, magic) + n) >> shift);
    }

    // n / divisor for any n >= 0.
    __device__ __forceinline__ long long div(long long n) const {
        if (small && (unsigned long long)n <= 0xFFFFFFFFull) {
            return (long long)div32((unsigned int)n);
        }
        return n / divisor;
    }
};

// The same interface as Divider for a divisor known at compile time: the compiler already
// turns division by a constant into a multiply and a shift. Fixed-geometry convolution
// kernels use it for R and R*S, the generic kernel uses Divider; the kernel body is the same.
template <int D>
struct ConstDivider {
    __device__ __forceinline__ unsigned int div32(unsigned int n) const { return n / (unsigned int)D; }
    __device__ __forceinline__ long long div(long long n) const { return n / D; }
};

// Greatest common divisor, for tile arithmetic in constant expressions.
__host__ __device__ constexpr int im2win_gcd(int a, int b) {
    return b == 0 ? a : im2win_gcd(b, a % b);
}

// A compile-time flag as a type, so that a generic lambda can be instantiated twice (with and
// without bounds checks) and branch on it with `if constexpr`.
template <bool B>
struct Im2winFlag {
    static constexpr bool value = B;
};
