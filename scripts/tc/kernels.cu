// The tensor-core kernels of the standalone harness (scripts/tc/run.py): extern "C"
// instantiations of im2win::conv2d_fprop_tensorop, named so that the driver can read each
// kernel's configuration from its name:
//   tc_<type>_<BM>x<BN>_w<WM>x<WN>_s<STAGES>_r<row bytes>_<geometry>_<vec|any>
// type bf16 / f16 / tf32 (float tensors), geometry "gen" (any filter) or f<R>x<S>s<SH>x<SW>
// (fixed, dilation 1), vec: C % 8 == 0 (two-byte types) or C % 4 == 0 (tf32), any: every C.
// The signature is the library's kernel signature (conv.cu.tera).
#include "conv_fprop_tensorop.cuh"

// Strips the parentheses that protect a template's commas inside a macro argument.
#define IM2WIN_UNPAREN_(...) __VA_ARGS__
#define IM2WIN_UNPAREN IM2WIN_UNPAREN_

using tc_bf16 = im2win::Conv2dTypes<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, float>;
using tc_f16 = im2win::Conv2dTypes<__half, __half, __half, float>;
using tc_tf32 = im2win::Conv2dTypes<float, float, float, float>;

#define TC_KERNEL(NAME, TYPES, BM, BN, WM, WN, STAGES, ROW_BYTES, GEOMETRY, VECTOR)                          \
    using NAME##_config = im2win::Conv2dFpropTensorOp<                                                     \
        im2win::TensorOpTileShape<TYPES, BM, BN, WM, WN, STAGES, ROW_BYTES>, IM2WIN_UNPAREN GEOMETRY, VECTOR>; \
    extern "C" __global__ void __launch_bounds__(NAME##_config::Tile::THREADS, 1)                          \
    NAME(const NAME##_config::ElementX* __restrict__ x, const NAME##_config::ElementF* __restrict__ f,    \
        const NAME##_config::ElementY* __restrict__ bias, const NAME##_config::ElementX* __restrict__ res, \
        NAME##_config::ElementY* __restrict__ y, const ConvParams prm) {                                   \
        im2win::conv2d_fprop_tensorop<NAME##_config>(x, f, bias, res, y, prm);                             \
    }

// Every kernel of one element type T. Tiles (BM pixels x BN channels, warp tile, stages, bytes
// of a stage's row): 128x128 / 64x64 / 4 / 64, 128x64 / 64x32 / 4 / 64 (3 blocks per SM), the
// same two with 128-byte rows (a deeper stage: half as many barriers and tap decompositions
// per MMA), and 128x96 for the K = 96 stems. Fixed geometries for the common 1x1 and 3x3
// filters and the stems. (256x128 / 8 warps, 1 block per SM, and 128x96 for C % 8 == 0 lost
// everywhere in the first measurement, scripts/tc/NOTES.md.)
#define TC_TILE(T, BM, BN, WM, WN, S, RB, GNAME, GEOMETRY, VNAME, VECTOR)                                \
    TC_KERNEL(tc_##T##_##BM##x##BN##_w##WM##x##WN##_s##S##_r##RB##_##GNAME##_##VNAME, tc_##T, BM, BN, WM, WN, \
        S, RB, GEOMETRY, VECTOR)
#define TC_VEC_GEOMETRIES(T, BM, BN, WM, WN, S, RB)                                                     \
    TC_TILE(T, BM, BN, WM, WN, S, RB, gen, (im2win::GenericGeometry), vec, true)                       \
    TC_TILE(T, BM, BN, WM, WN, S, RB, f1x1s1x1, (im2win::FixedGeometry<1, 1, 1, 1>), vec, true)       \
    TC_TILE(T, BM, BN, WM, WN, S, RB, f3x3s1x1, (im2win::FixedGeometry<3, 3, 1, 1>), vec, true)
#define TC_TYPE(T)                                                                                       \
    TC_VEC_GEOMETRIES(T, 128, 128, 64, 64, 4, 64)                                                        \
    TC_VEC_GEOMETRIES(T, 128, 64, 64, 32, 4, 64)                                                         \
    TC_VEC_GEOMETRIES(T, 128, 128, 64, 64, 3, 128)                                                       \
    TC_VEC_GEOMETRIES(T, 128, 64, 64, 32, 3, 128)                                                        \
    TC_TILE(T, 128, 64, 64, 32, 4, 64, gen, (im2win::GenericGeometry), any, false)                       \
    TC_TILE(T, 128, 96, 64, 48, 4, 64, gen, (im2win::GenericGeometry), any, false)                       \
    TC_TILE(T, 128, 96, 64, 48, 4, 64, f11x11s4x4, (im2win::FixedGeometry<11, 11, 4, 4>), any, false)   \
    TC_TILE(T, 128, 64, 64, 32, 4, 64, f7x7s2x2, (im2win::FixedGeometry<7, 7, 2, 2>), any, false)       \
    TC_TILE(T, 128, 64, 64, 32, 4, 64, f3x3s1x1, (im2win::FixedGeometry<3, 3, 1, 1>), any, false)

#if defined(TC_ONLY)
TC_TYPE(TC_ONLY)
#else
TC_TYPE(bf16)
TC_TYPE(f16)
TC_TYPE(tf32)
#endif
