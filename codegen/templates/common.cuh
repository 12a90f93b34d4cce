// im2win: definitions shared by every generated translation unit.
//
// This header is copied verbatim (it is not a Tera template) next to the rendered .cu files
// and included by each of them. It holds the kernel parameter block and the integer
// division helpers; everything else lives in the rendered sources.
#pragma once

// The launch parameters of every im2win kernel, passed by value.
//
// Field for field the same as `ConvParams` in runtime/src/gpu/params.rs (`#[repr(C)]`); a test
// there checks the size (88 bytes: 17 ints, 4 bytes of padding, 2 long longs). Change both or
// neither. Each single dimension fits in an int (the runtime validates that); every offset
// into a tensor is computed in long long.
struct ConvParams {
    int n, c, h, w;          // input X[N][C][H][W]
    int k, r, s;             // filter F[K][C][R][S]
    int p, q;                // output Y[N][K][P][Q]
    int stride_h, stride_w;
    int pad_top, pad_left;   // bottom/right padding only shape P, Q and Wt
    int dil_h, dil_w;
    int win_w;               // Wt = (Q - 1) * stride_w + (S - 1) * dil_w + 1
    int has_bias;            // 0 or 1
    long long crs;           // C * R * S
    long long npq;           // N * P * Q
};

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
