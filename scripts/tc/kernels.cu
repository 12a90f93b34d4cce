// The tensor-core kernels of the standalone harness (scripts/tc/run.py): extern "C"
// instantiations of im2win::conv2d_fprop_tensorop, named so that the driver can read each
// kernel's configuration from its name:
//   tc_<type>_<BM>x<BN>_w<WM>x<WN>_s<STAGES>_r<row bytes>_<geometry>_<vec|any>
// (w: mma.sync warps; g: wgmma warpgroups; p: the same warpgroups warp-specialised, one more
// warpgroup copying, persistent blocks; q: two teams of one MMA warpgroup taking turns,
// "ping-pong", each team a whole BM x BN tile)
// type bf16 / f16 / tf32 (float tensors), geometry "gen" (any filter) or f<R>x<S>s<SH>x<SW>
// (fixed, dilation 1), vec: C % 8 == 0 (two-byte types) or C % 4 == 0 (tf32), any: every C.
// The signature is the library's kernel signature (conv.cu.tera).
#include "conv_fprop_tensorop.cuh"

// Blocks per SM the launch bounds ask for: 3 for vector kernels whose threads hold at most 64 sums
// in 48 KiB of shared memory (the 128x64 tiles with 64-byte rows: 168 registers), else 1 (up to 255).
#define TC_MIN_BLOCKS(Config)                                                                            \
    ((Config::VECTOR && !Config::Tile::WARP_SPECIALIZED && Config::Tile::BM * Config::Tile::BN / Config::Tile::THREADS <= 64 &&               \
         Config::Tile::SMEM_BYTES <= 48 * 1024)                                                            \
            ? 3                                                                                          \
            : 1)

// Strips the parentheses that protect a template's commas inside a macro argument.
#define IM2WIN_UNPAREN_(...) __VA_ARGS__
#define IM2WIN_UNPAREN IM2WIN_UNPAREN_

using tc_bf16 = im2win::Conv2dTypes<__nv_bfloat16, __nv_bfloat16, __nv_bfloat16, float>;
using tc_f16 = im2win::Conv2dTypes<__half, __half, __half, float>;
using tc_tf32 = im2win::Conv2dTypes<float, float, float, float>;

#define TC_KERNEL(NAME, TYPES, BM, BN, WM, WN, STAGES, ROW_BYTES, GEOMETRY, VECTOR, MMA, ...)                \
    using NAME##_config = im2win::Conv2dFpropTensorOp<                                                     \
        im2win::TensorOpTileShape<TYPES, BM, BN, WM, WN, STAGES, ROW_BYTES __VA_OPT__(,) __VA_ARGS__>,      \
        IM2WIN_UNPAREN GEOMETRY, VECTOR, MMA>;                                                             \
    extern "C" __global__ void __launch_bounds__(NAME##_config::Tile::BLOCK_THREADS, TC_MIN_BLOCKS(NAME##_config)) \
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
        S, RB, GEOMETRY, VECTOR, im2win::WarpMmaTensorOp)
// The warpgroup (wgmma, sm_90a) kernels: "g<WM>x<WN>" (WM = BM / 4, WN = BN: one warpgroup).
#define TC_WG_TILE(T, BM, BN, WM, S, RB, GNAME, GEOMETRY)                                                \
    TC_KERNEL(tc_##T##_##BM##x##BN##_g##WM##x##BN##_s##S##_r##RB##_##GNAME##_vec, tc_##T, BM, BN, WM, BN, S, RB, \
        GEOMETRY, true, im2win::WarpgroupMmaTensorOp)
// Warp-specialised warpgroup kernels (mainloop_warp_specialized.cuh): one more warpgroup only
// copies. TAG p ("p<WM>x<WN>", TEAMS 1): the MMA warpgroups as in "g", sharing each tile; TAG q
// (TEAMS 2): ping-pong, two teams of one MMA warpgroup, each a whole BM x BN tile, in turn.
#define TC_SPECIALIZED_TILE(T, TAG, TEAMS, BM, BN, WM, S, RB, GNAME, GEOMETRY)                           \
    TC_KERNEL(tc_##T##_##BM##x##BN##_##TAG##WM##x##BN##_s##S##_r##RB##_##GNAME##_vec, tc_##T, BM, BN, WM, BN, S, \
        RB, GEOMETRY, true, im2win::WarpgroupMmaTensorOp, 128, TEAMS)
#define TC_SPECIALIZED_GEOMETRIES(T, TAG, TEAMS, BM, BN, WM, S, RB)                                     \
    TC_SPECIALIZED_TILE(T, TAG, TEAMS, BM, BN, WM, S, RB, gen, (im2win::GenericGeometry))              \
    TC_SPECIALIZED_TILE(T, TAG, TEAMS, BM, BN, WM, S, RB, f3x3s1x1, (im2win::FixedGeometry<3, 3, 1, 1>)) \
    TC_SPECIALIZED_TILE(T, TAG, TEAMS, BM, BN, WM, S, RB, f1x1s1x1, (im2win::FixedGeometry<1, 1, 1, 1>))
// The same with operands copied by TMA (tma.cuh): TAG u (one team, as p) and t (ping-pong, as q)
// the filter's rows, x (one team) and v (ping-pong) both operands (the windows in im2col mode:
// C % 64 == 0 with 128-byte rows, C % 32 == 0 with 64-byte rows). These kernels take the input's and the filter's tensor maps after ConvParams.
#define TC_TMA_TILE(T, TAG, TEAMS, ACT, BM, BN, WM, S, RB, GNAME, GEOMETRY)                                  \
    using tc_##T##_##BM##x##BN##_##TAG##WM##x##BN##_s##S##_r##RB##_##GNAME##_vec_config =                      \
        im2win::Conv2dFpropTensorOp<im2win::TensorOpTileShape<tc_##T, BM, BN, WM, BN, S, RB, 128, TEAMS>,  \
            IM2WIN_UNPAREN GEOMETRY, true, im2win::WarpgroupMmaTensorOp, false, true, ACT>;                 \
    extern "C" __global__ void __launch_bounds__(                                                          \
        tc_##T##_##BM##x##BN##_##TAG##WM##x##BN##_s##S##_r##RB##_##GNAME##_vec_config::Tile::BLOCK_THREADS, 1)  \
    tc_##T##_##BM##x##BN##_##TAG##WM##x##BN##_s##S##_r##RB##_##GNAME##_vec(const tc_##T::ElementX* __restrict__ x, \
        const tc_##T::ElementF* __restrict__ f, const tc_##T::ElementY* __restrict__ bias,                  \
        const tc_##T::ElementX* __restrict__ res, tc_##T::ElementY* __restrict__ y, const ConvParams prm,   \
        const __grid_constant__ im2win::TensorMap amap, const __grid_constant__ im2win::TensorMap fmap) {   \
        im2win::conv2d_fprop_tensorop<tc_##T##_##BM##x##BN##_##TAG##WM##x##BN##_s##S##_r##RB##_##GNAME##_vec_config>( \
            x, f, bias, res, y, prm, &amap, &fmap);                                                        \
    }
#define TC_TMA_GEOMETRIES_R(T, TAG, TEAMS, ACT, BM, BN, WM, S, RB)                                        \
    TC_TMA_TILE(T, TAG, TEAMS, ACT, BM, BN, WM, S, RB, gen, (im2win::GenericGeometry))                   \
    TC_TMA_TILE(T, TAG, TEAMS, ACT, BM, BN, WM, S, RB, f3x3s1x1, (im2win::FixedGeometry<3, 3, 1, 1>))     \
    TC_TMA_TILE(T, TAG, TEAMS, ACT, BM, BN, WM, S, RB, f1x1s1x1, (im2win::FixedGeometry<1, 1, 1, 1>))
#define TC_TMA_GEOMETRIES(T, TAG, TEAMS, ACT, BM, BN, WM, S) TC_TMA_GEOMETRIES_R(T, TAG, TEAMS, ACT, BM, BN, WM, S, 128)
#define TC_WS_TYPE(T)                                                                                    \
    TC_TMA_GEOMETRIES(T, t, 2, false, 128, 128, 32, 4)                                                   \
    TC_TMA_GEOMETRIES(T, u, 1, false, 128, 128, 16, 4)                                                   \
    TC_TMA_GEOMETRIES(T, v, 2, true, 128, 128, 32, 4)                                                    \
    TC_TMA_GEOMETRIES(T, v, 2, true, 128, 64, 32, 4)                                                     \
    TC_TMA_GEOMETRIES(T, x, 1, true, 128, 128, 16, 4)                                                    \
    TC_TMA_GEOMETRIES(T, v, 2, true, 128, 128, 32, 5)                                                    \
    TC_TMA_GEOMETRIES(T, v, 2, true, 128, 128, 32, 6)                                                    \
    TC_TMA_GEOMETRIES(T, v, 2, true, 128, 64, 32, 6)                                                     \
    TC_TMA_GEOMETRIES(T, x, 1, true, 128, 128, 16, 5)                                                    \
    TC_TMA_GEOMETRIES_R(T, v, 2, true, 128, 128, 32, 6, 64)                                              \
    TC_TMA_GEOMETRIES_R(T, v, 2, true, 128, 128, 32, 8, 64)                                              \
    TC_TMA_GEOMETRIES_R(T, x, 1, true, 128, 128, 16, 8, 64)                                              \
    TC_SPECIALIZED_GEOMETRIES(T, q, 2, 128, 128, 32, 4, 128)                                             \
    TC_SPECIALIZED_GEOMETRIES(T, q, 2, 128, 64, 32, 4, 128)                                              \
    TC_SPECIALIZED_GEOMETRIES(T, q, 2, 64, 128, 16, 4, 128)                                              \
    TC_SPECIALIZED_GEOMETRIES(T, q, 2, 128, 128, 32, 3, 128)                                             \
    TC_SPECIALIZED_GEOMETRIES(T, p, 1, 128, 128, 16, 4, 128)                                             \
    TC_SPECIALIZED_GEOMETRIES(T, p, 1, 128, 64, 16, 4, 128)
#define TC_WG_GEOMETRIES(T, BM, BN, WM, S, RB)                                                          \
    TC_WG_TILE(T, BM, BN, WM, S, RB, gen, (im2win::GenericGeometry))                                   \
    TC_WG_TILE(T, BM, BN, WM, S, RB, f1x1s1x1, (im2win::FixedGeometry<1, 1, 1, 1>))                   \
    TC_WG_TILE(T, BM, BN, WM, S, RB, f3x3s1x1, (im2win::FixedGeometry<3, 3, 1, 1>))
// Warpgroup tiles (two-byte types), one warpgroup (WM = BM / 4): 128x128 with 128-byte rows 3
// stages deep (96 KiB: 2 blocks per SM) and 64-byte rows 4 deep; 128x64 and 64x128 with
// 128-byte rows 4 deep; 64x256 (one m64n256 instruction per k-step) with 64-byte rows 4 deep.
// Two warpgroups (WM = BM / 8) sharing the B tile: 128x256 with 128-byte rows 4 and 3 deep
// (192 / 144 KiB) and 64-byte rows 4 deep; 128x128 with 128-byte rows 3 deep; 256x128 with
// 64-byte rows 4 deep.
#define TC_WG_TYPE(T)                                                                                    \
    TC_WG_GEOMETRIES(T, 128, 128, 32, 3, 128)                                                            \
    TC_WG_GEOMETRIES(T, 128, 128, 32, 4, 64)                                                             \
    TC_WG_GEOMETRIES(T, 128, 64, 32, 4, 128)                                                             \
    TC_WG_GEOMETRIES(T, 64, 128, 16, 4, 128)                                                             \
    TC_WG_GEOMETRIES(T, 64, 256, 16, 4, 64)                                                              \
    TC_WG_GEOMETRIES(T, 128, 256, 16, 4, 128)                                                            \
    TC_WG_GEOMETRIES(T, 128, 256, 16, 3, 128)                                                            \
    TC_WG_GEOMETRIES(T, 128, 256, 16, 4, 64)                                                             \
    TC_WG_GEOMETRIES(T, 128, 128, 16, 3, 128)                                                            \
    TC_WG_GEOMETRIES(T, 256, 128, 32, 4, 64)
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
// TC_WGMMA=<type> (build.sh sets it for bf16 and f16 on sm_90a).
#if defined(TC_WGMMA)
TC_WG_TYPE(TC_WGMMA)
TC_WS_TYPE(TC_WGMMA)
#endif
