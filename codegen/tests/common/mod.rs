//! Specs shared by the codegen tests.

use im2win_codegen::{Catalogue, DType, FixedGeometry, Geometry, KernelSpec, TileConfig, Variant};

/// Unusual specs, beside the default catalogue: every loader shape and both shared-memory
/// read paths, in both window variants, and the ablation's kernels. `compile.rs` compiles
/// them with nvcc; `emulate.rs` runs them on the CPU.
#[allow(dead_code)] // render.rs uses only the tensor-core half.
pub fn unusual_specs() -> Vec<KernelSpec> {
    let tile = |block_m, block_n, block_k, thread_m, thread_n| TileConfig {
        block_m,
        block_n,
        block_k,
        thread_m,
        thread_n,
    };
    let rect = FixedGeometry {
        filter_h: 3,
        filter_w: 5,
        stride_h: 1,
        stride_w: 2,
    };
    vec![
        // Non-square filter, different strides, 4x4 per thread: runs of 2 per loader.
        KernelSpec::fixed(DType::F32, rect, tile(64, 64, 8, 4, 4)),
        // Thread tiles that are not multiples of 4 take the scalar shared-memory path; three
        // single-element runs per loader.
        KernelSpec::fixed(
            DType::F32,
            FixedGeometry::square(1, 1),
            tile(48, 32, 16, 3, 2),
        ),
        // A stage depth that is not a power of two.
        KernelSpec::generic(DType::F32, tile(64, 64, 12, 4, 4)),
        // One warp per block: each thread loads more than a stage's depth, in two runs.
        KernelSpec::generic(DType::F32, tile(64, 32, 4, 8, 8)),
        // The fused variant with the same loader shapes: runs of 2 across a 3x5 window with
        // a width stride, runs longer than a 1x1 window, and several runs per thread.
        KernelSpec::fixed(DType::F32, rect, tile(64, 64, 8, 4, 4)).with_variant(Variant::FUSED),
        KernelSpec::fixed(
            DType::F32,
            FixedGeometry::square(1, 1),
            tile(48, 32, 16, 3, 2),
        )
        .with_variant(Variant::FUSED),
        KernelSpec::generic(DType::F32, tile(64, 32, 4, 8, 8)).with_variant(Variant::FUSED),
    ]
    .into_iter()
    .chain(Catalogue::ablation().kernels)
    .chain(unusual_tensor_op_specs())
    .collect()
}

/// Tensor-core specs beside the default catalogue's: each branch of the template that the
/// catalogue does not reach (`compile.rs` compiles them; the emulation cannot run them).
pub fn unusual_tensor_op_specs() -> Vec<KernelSpec> {
    let tile = |pixels, channels, warp_pixels, warp_channels, block_k| TileConfig {
        block_m: channels,
        block_n: pixels,
        block_k,
        thread_m: warp_channels,
        thread_n: warp_pixels,
    };
    let fixed = |r, s, sh, sw| Geometry::Fixed(FixedGeometry::new([r, s], [sh, sw]));
    vec![
        // A non-square filter with unequal strides (tap masks of 15 bits).
        KernelSpec::tensor_op(
            DType::Bf16,
            fixed(5, 3, 1, 2),
            tile(128, 64, 64, 32, 32),
            true,
        ),
        // 7 × 7 = 49 taps: too many for the mask, the bounds are compared instead.
        KernelSpec::tensor_op(
            DType::F16,
            fixed(7, 7, 1, 1),
            tile(128, 64, 64, 32, 32),
            true,
        ),
        // One warp, 32-byte rows (two pieces a row), element by element.
        KernelSpec::tensor_op(
            DType::F16,
            Geometry::Generic,
            tile(64, 64, 64, 64, 16),
            false,
        ),
        // TF32 with 128-byte rows (32 floats), element by element, 1 × 1 stride 2. (With 128
        // channels it spills on sm_90: 4 passes of 4 staged floats for 32 fragments.)
        KernelSpec::tensor_op(
            DType::F32,
            fixed(1, 1, 2, 2),
            tile(128, 64, 64, 32, 32),
            false,
        ),
        // Eight warps (256 threads): two copy passes of 64 rows each.
        KernelSpec::tensor_op(
            DType::Bf16,
            Geometry::Generic,
            tile(256, 128, 64, 64, 32),
            true,
        ),
        // Warp-specialised ping-pong (two MMA teams, a copying warpgroup, persistent blocks,
        // setmaxnreg): the other warp-specialised tiles (Catalogue::warp_specialized) take the
        // same code with one team.
        KernelSpec::tensor_op_warpgroup(
            DType::Bf16,
            fixed(3, 3, 1, 1),
            tile(128, 128, 32, 128, 64),
        )
        .warp_specialized(true),
        // The same with both operands copied by the tensor memory accelerator (one producer
        // thread, tensor maps as arguments), f16, a 5 × 5 filter of stride 2 (the default
        // catalogue's TMA kernels are generic, 3 × 3 and 1 × 1 of stride 1).
        KernelSpec::tensor_op_warpgroup(DType::F16, fixed(5, 5, 2, 2), tile(128, 128, 32, 128, 64))
            .warp_specialized(true)
            .tma(),
    ]
    .into_iter()
    // The opt-in TF32 kernels of the warpgroup MMA (wgmma m64nNk8, feature `tc-tf32-tma`).
    .chain(Catalogue::tf32_tma().kernels)
    .collect()
}
