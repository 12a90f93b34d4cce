// im2win: element types and conversions. The one place that knows what a data type is: the
// element types of a kernel's operands (Conv2dTypes), how one value converts to another
// (NumericConverter), how many elements one vector access moves (access_elements) and which
// register vector holds them (ElementVector). The building blocks take every type from here;
// none of them names an element type itself, except the FP32 parts: the SIMT MMA policies
// (mma_simt.cuh) and the epilogue's float math (epilogue.cuh).
//
// A new data type (BF16, FP16, ...) is its own part of this header: the #include of the CUDA
// header that defines it, a NumericConverter specialisation where a C++ conversion is not the
// rounding wanted, and an ElementVector specialisation where the generic aligned array is not
// the register type wanted.
// Copied verbatim next to the rendered sources; see common.cuh.
#pragma once

#include <type_traits>

#include "common.cuh"

namespace im2win {

// Converts one value of From to To. The generic conversion is C++'s (for float -> double,
// exact); a type whose conversion is an intrinsic, or must round to nearest even where C++
// would not, specialises it. Converting a type to itself is the identity and costs nothing.
template <class To, class From>
struct NumericConverter {
    static __device__ __forceinline__ To convert(const From& x) { return static_cast<To>(x); }
};

template <class T>
struct NumericConverter<T, T> {
    static __device__ __forceinline__ T convert(const T& x) { return x; }
};

// The widest single memory access of the kernels, in bytes: one 16-byte cp.async (.cg), one
// 128-bit load or store.
constexpr int MAX_ACCESS_BYTES = 16;

// Elements of the widest of Ts that one such access moves: 4 floats, 8 two-byte elements.
// With several types, the vector is as long as the widest type allows, so that one count of
// elements serves each of them (e.g. a shared-memory read of one type and a store of another).
template <class... Ts>
__host__ __device__ constexpr int access_elements() {
    int widest = 1;
    ((widest = (int)sizeof(Ts) > widest ? (int)sizeof(Ts) : widest), ...);
    return MAX_ACCESS_BYTES / widest;
}

// The largest power of two that is at most `most` and divides every one of `counts`: how many
// elements a vector may hold when it must also tile those counts (the tile's rows, a thread's
// share of a stage).
template <class... Counts>
__host__ __device__ constexpr int vector_width(int most, Counts... counts) {
    int v = 1;
    while (2 * v <= most && ((counts % (2 * v) == 0) && ...)) {
        v *= 2;
    }
    return v;
}

// V consecutive elements of T as one register value, so that moving them is one vector
// instruction. `type` is what is loaded or stored; unpack/pack convert it from and to an
// array of V elements. The generic vector is an array aligned to its size, which nvcc loads
// and stores with one access of sizeof(T) * V bytes.
template <class T, int V>
struct ElementVector {
    struct alignas(sizeof(T) * V) type {
        T e[V];
    };
    static __device__ __forceinline__ void unpack(const type& v, T* out) {
#pragma unroll
        for (int e = 0; e < V; ++e) {
            out[e] = v.e[e];
        }
    }
    static __device__ __forceinline__ type pack(const T* in) {
        type v;
#pragma unroll
        for (int e = 0; e < V; ++e) {
            v.e[e] = in[e];
        }
        return v;
    }
};

// One element is the element itself.
template <class T>
struct ElementVector<T, 1> {
    using type = T;
    static __device__ __forceinline__ void unpack(const type& v, T* out) { out[0] = v; }
    static __device__ __forceinline__ type pack(const T* in) { return in[0]; }
};

// float: CUDA's own vector types (ld/st .v4.f32 and .v2.f32 on float registers).
template <>
struct ElementVector<float, 4> {
    using type = float4;
    static __device__ __forceinline__ void unpack(const type& v, float* out) {
        out[0] = v.x;
        out[1] = v.y;
        out[2] = v.z;
        out[3] = v.w;
    }
    static __device__ __forceinline__ type pack(const float* in) { return make_float4(in[0], in[1], in[2], in[3]); }
};

template <>
struct ElementVector<float, 2> {
    using type = float2;
    static __device__ __forceinline__ void unpack(const type& v, float* out) {
        out[0] = v.x;
        out[1] = v.y;
    }
    static __device__ __forceinline__ type pack(const float* in) { return make_float2(in[0], in[1]); }
};

// The element types of one convolution kernel (KernelSpec::elements, rendered by
// conv.cu.tera from DType::cuda_type):
//   ElementX    the input X, the im2win buffer T, the residual, and the window tile in shared
//               memory;
//   ElementF    the filter: the transformed filter A and the filter tile in shared memory;
//   ElementY    the output Y and the bias;
//   ElementAcc  the accumulators, the split reduction's partial sums and the epilogue's
//               arithmetic (float: alpha and beta are ConvParams floats, and the epilogue's
//               math functions are float's).
// Operands convert to the accumulator where they meet it (to_accumulator), results from it
// where they are stored (from_accumulator).
template <class ElementX_, class ElementF_, class ElementY_, class ElementAcc_>
struct Conv2dTypes {
    using ElementX = ElementX_;
    using ElementF = ElementF_;
    using ElementY = ElementY_;
    using ElementAcc = ElementAcc_;

    template <class T>
    static __device__ __forceinline__ ElementAcc to_accumulator(const T& x) {
        return NumericConverter<ElementAcc, T>::convert(x);
    }
    template <class To = ElementY>
    static __device__ __forceinline__ To from_accumulator(const ElementAcc& x) {
        return NumericConverter<To, ElementAcc>::convert(x);
    }
    // Whether the split partial sums have the output's type (then one store path writes
    // either).
    static constexpr bool PARTIALS_ARE_OUTPUTS = std::is_same_v<ElementY, ElementAcc>;
};

}  // namespace im2win

// ---- Two-byte floating types (BF16, FP16): the tensor-core kernels' operands ---------------
// Conversions to and from float are the CUDA intrinsics, rounding to nearest even. The
// generic ElementVector (an aligned array) serves both types: its loads and stores are single
// accesses of 2 * V bytes. Only under nvcc: the host emulation of the FP32 kernels
// (codegen/tests/emulate) compiles these headers with a plain C++ compiler, which has no
// cuda_bf16.h.
#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace im2win {

template <>
struct NumericConverter<float, __nv_bfloat16> {
    static __device__ __forceinline__ float convert(const __nv_bfloat16& x) { return __bfloat162float(x); }
};
template <>
struct NumericConverter<__nv_bfloat16, float> {
    static __device__ __forceinline__ __nv_bfloat16 convert(const float& x) { return __float2bfloat16_rn(x); }
};
template <>
struct NumericConverter<float, __half> {
    static __device__ __forceinline__ float convert(const __half& x) { return __half2float(x); }
};
template <>
struct NumericConverter<__half, float> {
    static __device__ __forceinline__ __half convert(const float& x) { return __float2half_rn(x); }
};

}  // namespace im2win
#endif  // __CUDACC__
// ---- end of the two-byte types ---------------------------------------------------------------
