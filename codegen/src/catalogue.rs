//! The catalogue: the list of kernel specialisations one fatbin holds, and the names of the
//! other kernels in it: the [`support`] kernels (in every fatbin) and the benchmark's
//! [`baselines`] (only where [`Catalogue::baselines`] asks for them).
//!
//! build.rs compiles [`Catalogue::default_catalogue`], the runtime dispatches from the
//! catalogue that travels with a fatbin, and the macro checks requests against the same list.

use serde::{Deserialize, Serialize};

use crate::layout::Layout;
use crate::spec::{
    DType, FixedGeometry, Geometry, Grouping, KernelSpec, SpecError, TileConfig, Variant,
};

/// The filter/stride pairs of the paper's 12 layers, ResNet-50 and VGG-16.
pub const DEFAULT_GEOMETRIES: [FixedGeometry; 7] = [
    FixedGeometry::square(1, 1),
    FixedGeometry::square(1, 2),
    FixedGeometry::square(3, 1),
    FixedGeometry::square(3, 2),
    FixedGeometry::square(5, 1),
    FixedGeometry::square(7, 2),
    FixedGeometry::square(11, 4),
];

/// The fixed geometries of the default catalogue's depthwise kernels (3×3, stride 1 and 2:
/// MobileNet's and EfficientNet's); other depthwise geometries take the generic depthwise
/// kernel ([`Catalogue::grouped_kernels`]).
pub const DEPTHWISE_GEOMETRIES: [FixedGeometry; 2] =
    [FixedGeometry::square(3, 1), FixedGeometry::square(3, 2)];

/// The tiles every default geometry (and the generic kernel) is compiled with. Dispatch picks
/// among them per problem (runtime `dispatch.rs`); `im2win tune` times them.
///
/// * 128×128×8, 8×8 per thread (the paper's): large problems with K ≥ 128.
/// * 128×128×16: the same with half the barriers and loop overhead per multiply-add.
/// * 64×128×8: K = 64 (a 128-row tile would waste half its rows).
/// * 128×64×8: few output pixels (deep layers), with K ≥ 128.
/// * 64×64×8 (64 threads): small problems, many blocks; with the split reduction the batch-1
///   layers.
///
/// Every tile keeps 8×8 outputs per thread: 64 accumulators, the best ratio of multiply-adds
/// to shared-memory reads that fits 128 registers (two to eight resident blocks per SM).
pub const DEFAULT_TILES: [TileConfig; 5] = [
    TileConfig::PAPER,
    TileConfig {
        block_k: 16,
        ..TileConfig::PAPER
    },
    TileConfig {
        block_m: 64,
        ..TileConfig::PAPER
    },
    TileConfig {
        block_n: 64,
        ..TileConfig::PAPER
    },
    TileConfig {
        block_m: 64,
        block_n: 64,
        ..TileConfig::PAPER
    },
];

/// The tiles of the fused variant ([`Variant::FUSED`]), compiled for every default geometry
/// and the generic kernel: [`DEFAULT_TILES`] but 128×64 (left out to keep the build time in
/// check): the paper's 128×128×8, the 128×128×16 that tuning picks for the largest layers,
/// 64×128×8 for K = 64 and 64×64×8 for the batch-1 layers.
pub const FUSED_TILES: [TileConfig; 4] = [
    DEFAULT_TILES[0],
    DEFAULT_TILES[1],
    DEFAULT_TILES[2],
    DEFAULT_TILES[4],
];

/// The tiles of the fused NHWC kernels: [`FUSED_TILES`] but
/// 128×128×16, whose NHWC kernels need more than the 128 registers that two blocks per SM leave
/// (ptxas spills with the staged epilogue, `codegen/templates/epilogue.cuh`).
pub const NHWC_TILES: [TileConfig; 3] = [FUSED_TILES[0], FUSED_TILES[2], FUSED_TILES[3]];

/// The window-buffer kernels for NHWC ([`Variant::MATERIALISED`] with [`Layout::Nhwc`]) of
/// the default catalogue: the input transform builds the im2win buffer from the NHWC input
/// (reading it channels-last), the kernel reads it as its NCHW twin does, and the epilogue
/// writes NHWC. Where the NCHW problem runs the window buffer (the stems: C = 3, where the
/// fused gather of NHWC windows moves 12 bytes a pixel), the NHWC one then runs at NCHW's
/// speed. These four are the ones `im2win tune --layout nhwc` picked for the paper's layers
/// on an H100 (2026-12-07, `bench/results/h100/`): the 11×11 stride-4 stems' 96×128×8 (conv1,
/// conv2), 7×7 stride 2 with 64×128×8 (conv3, conv4), 5×5 stride 1 with 128×128×8 (conv5) and
/// 3×3 stride 1 with 128×128×16 (conv6, over the NHWC gather, whose widest tile spills).
pub const NHWC_WINDOW_BUFFER_KERNELS: [(Geometry, TileConfig); 4] = [
    (
        Geometry::Fixed(FixedGeometry::square(11, 4)),
        EXTRA_TILES[0].1,
    ),
    (
        Geometry::Fixed(FixedGeometry::square(7, 2)),
        DEFAULT_TILES[2],
    ),
    (
        Geometry::Fixed(FixedGeometry::square(5, 1)),
        DEFAULT_TILES[0],
    ),
    (
        Geometry::Fixed(FixedGeometry::square(3, 1)),
        DEFAULT_TILES[1],
    ),
];

/// More NHWC window-buffer kernels, not in the default catalogue (tune picked none of them
/// on the paper's layers: the NHWC gather was faster there), for a crate's own catalogue
/// ([`Catalogue::nhwc_window_buffer`]): 3×3 stride 1 with 64×128×8 and 128×128×8, and the
/// generic 64×64×8 (the generic 64×128 and 128×128×8 tiles spill 28 bytes with the NHWC
/// epilogue, ptxas -v).
pub const NHWC_WINDOW_BUFFER_EXTRA: [(Geometry, TileConfig); 3] = [
    (
        Geometry::Fixed(FixedGeometry::square(3, 1)),
        DEFAULT_TILES[2],
    ),
    (
        Geometry::Fixed(FixedGeometry::square(3, 1)),
        DEFAULT_TILES[0],
    ),
    (Geometry::Generic, DEFAULT_TILES[4]),
];

/// The float32 NHWC window-buffer specs of `list` (geometry and tile each).
fn nhwc_window_buffer_specs(list: &[(Geometry, TileConfig)]) -> Vec<KernelSpec> {
    list.iter()
        .map(|&(geometry, tile)| {
            let spec = match geometry {
                Geometry::Fixed(g) => KernelSpec::fixed(DType::F32, g, tile),
                Geometry::Generic => KernelSpec::generic(DType::F32, tile),
            };
            spec.with_layout(Layout::Nhwc)
        })
        .collect()
}

/// Tiles compiled for some geometries only, beside [`DEFAULT_TILES`]: 96×128×8 with 6×8 per
/// thread for the 11×11 stride-4 layers (AlexNet-style, K = 96, where 128 rows waste a
/// quarter).
pub const EXTRA_TILES: [(FixedGeometry, TileConfig); 1] = [(
    FixedGeometry::square(11, 4),
    TileConfig {
        block_m: 96,
        block_n: 128,
        block_k: 8,
        thread_m: 6,
        thread_n: 8,
    },
)];

/// A tensor-core tile in the terms of the template (`TensorOpTileShape` in
/// `codegen/templates/tile_tensorop.cuh`) and of `scripts/tc/NOTES.md`: output pixels ×
/// output channels per block, the warp tile, and the bytes of reduction a stage keeps per
/// shared-memory row. [`TensorOpTile::tile`] writes it as the [`TileConfig`] of one element
/// type (the row's bytes are `block_k` elements: 32 bf16 or 16 floats for 64-byte rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorOpTile {
    /// Output pixels per block (the template's `BM`; [`TileConfig::block_n`]).
    pub pixels: u32,
    /// Output channels per block (the template's `BN`; [`TileConfig::block_m`]).
    pub channels: u32,
    /// Output pixels per warp (`WM`; [`TileConfig::thread_n`]).
    pub warp_pixels: u32,
    /// Output channels per warp (`WN`; [`TileConfig::thread_m`]).
    pub warp_channels: u32,
    /// Bytes of reduction per shared-memory row and stage (`ROW_BYTES`: 32, 64 or 128);
    /// the stages follow from it ([`KernelSpec::stages`]).
    pub row_bytes: u32,
}

impl TensorOpTile {
    /// The tile as the [`TileConfig`] of tensor-core kernels of element type `dtype`.
    pub const fn tile(self, dtype: DType) -> TileConfig {
        TileConfig {
            block_m: self.channels,
            block_n: self.pixels,
            block_k: self.row_bytes / dtype.size_bytes() as u32,
            thread_m: self.warp_channels,
            thread_n: self.warp_pixels,
        }
    }
}

/// 128 pixels × 128 channels, 2 × 2 warps of 64 × 64, 64-byte rows (4 stages, 64 KiB).
pub const TENSOR_OP_128X128_R64: TensorOpTile = TensorOpTile {
    pixels: 128,
    channels: 128,
    warp_pixels: 64,
    warp_channels: 64,
    row_bytes: 64,
};
/// 128 pixels × 64 channels, 2 × 2 warps of 64 × 32, 64-byte rows (4 stages, 48 KiB; up to
/// three blocks per SM).
pub const TENSOR_OP_128X64_R64: TensorOpTile = TensorOpTile {
    pixels: 128,
    channels: 64,
    warp_pixels: 64,
    warp_channels: 32,
    row_bytes: 64,
};
/// 128 × 128 with 128-byte rows (3 stages, 96 KiB): half the barriers and tap
/// decompositions per MMA.
pub const TENSOR_OP_128X128_R128: TensorOpTile = TensorOpTile {
    row_bytes: 128,
    ..TENSOR_OP_128X128_R64
};
/// 128 × 64 with 128-byte rows (3 stages, 72 KiB).
pub const TENSOR_OP_128X64_R128: TensorOpTile = TensorOpTile {
    row_bytes: 128,
    ..TENSOR_OP_128X64_R64
};
/// 128 pixels × 96 channels, 2 × 2 warps of 64 × 48, 64-byte rows (4 stages, 56 KiB): the
/// K = 96 stems (AlexNet's 11 × 11 stride-4 layers).
pub const TENSOR_OP_128X96_R64: TensorOpTile = TensorOpTile {
    pixels: 128,
    channels: 96,
    warp_pixels: 64,
    warp_channels: 48,
    row_bytes: 64,
};

/// The tiles of the tensor-core kernels with vector loads (`C` a multiple of 8, or 4 for
/// TF32), the four that won on the paper's and ResNet-50's layers on the H100
/// (`scripts/tc/NOTES.md`): 128 × 128 for large layers with long reductions, 128 × 64 for
/// most of the rest (more blocks, up to three per SM), each with 64- or 128-byte rows.
pub const TENSOR_OP_TILES: [TensorOpTile; 4] = [
    TENSOR_OP_128X128_R64,
    TENSOR_OP_128X64_R64,
    TENSOR_OP_128X128_R128,
    TENSOR_OP_128X64_R128,
];

/// The default catalogue's tensor-core kernels of each element type (bf16, f16, TF32), all
/// NHWC with a KRSC filter: `(geometry, tile, vector loads)`.
///
/// * With vector loads (`C` a multiple of the 16-byte piece): every tile of
///   [`TENSOR_OP_TILES`] for 1×1 stride 1, 3×3 stride 1 and the generic kernel; 128 × 64
///   (both row sizes) for 3×3 stride 2 (ResNet's downsampling layers).
/// * Element by element (any `C`: the C = 3 stems): 128 × 64 for 3×3 stride 1 (VGG's and
///   the paper's conv7), 7×7 stride 2 (ResNet's stem) and the generic kernel; 128 × 96 for
///   11×11 stride 4 (K = 96) and the generic kernel.
///
/// 17 kernels per type: 128 × 128 with 128-byte rows has no fixed 1×1 and 3×3 kernels (with
/// the staged epilogue they spill 8-12 bytes; on sm_90 the warpgroup kernels take those
/// layers, elsewhere the generic one). Fixed geometries cost a kernel each and gain little where vector
/// copies dominate (the tap test is one AND instead of two compares), so the list stays at
/// the geometries of the networks measured; every other problem takes the generic kernels.
pub const TENSOR_OP_KERNELS: [(Geometry, TensorOpTile, bool); 17] = {
    const G1: Geometry = Geometry::Fixed(FixedGeometry::square(1, 1));
    const G3: Geometry = Geometry::Fixed(FixedGeometry::square(3, 1));
    const G3S2: Geometry = Geometry::Fixed(FixedGeometry::square(3, 2));
    const G7S2: Geometry = Geometry::Fixed(FixedGeometry::square(7, 2));
    const G11S4: Geometry = Geometry::Fixed(FixedGeometry::square(11, 4));
    const GEN: Geometry = Geometry::Generic;
    let [a, b, c, d] = TENSOR_OP_TILES;
    [
        (G1, a, true),
        (G1, b, true),
        (G1, d, true),
        (G3, a, true),
        (G3, b, true),
        (G3, d, true),
        (G3S2, b, true),
        (G3S2, d, true),
        (GEN, a, true),
        (GEN, b, true),
        (GEN, c, true),
        (GEN, d, true),
        (G3, TENSOR_OP_128X64_R64, false),
        (G7S2, TENSOR_OP_128X64_R64, false),
        (G11S4, TENSOR_OP_128X96_R64, false),
        (GEN, TENSOR_OP_128X64_R64, false),
        (GEN, TENSOR_OP_128X96_R64, false),
    ]
};

/// The default catalogue's 3xTF32 kernels ([`crate::Math::TensorOpFastF32`], names
/// `im2win_f32x3_..`: float32 at FP32 accuracy on tensor cores), NHWC with a KRSC filter:
/// `(geometry, tile, vector loads)`. Six, all on the 128 × 64 tile of 8 warps of 32 × 32
/// ([`TENSOR_OP_128X64_W32_R64`], [`TENSOR_OP_128X64_W32_R128`]): the big and small fragments,
/// each tile's per-k-step sum and the block sums (`mma_tensorop.cuh`) do not fit beside
/// larger warp tiles' sums in 255 registers:
///
/// * with vector loads (`C` a multiple of 4): 1×1 stride 1 and 3×3 stride 1, each with 64-
///   and 128-byte rows (dispatch's choice of rows as for TF32), and the generic kernel with
///   64-byte rows (with 128-byte rows it needs 255 registers and spills on sm_80);
/// * element by element (any `C`, the C = 3 stems): the generic kernel, 64-byte rows.
///
/// Each kernel adds about as much compile time as a TF32 kernel; every other geometry takes
/// the generic kernels.
pub const TENSOR_OP_FAST_F32_KERNELS: [(Geometry, TensorOpTile, bool); 6] = {
    const G1: Geometry = Geometry::Fixed(FixedGeometry::square(1, 1));
    const G3: Geometry = Geometry::Fixed(FixedGeometry::square(3, 1));
    const GEN: Geometry = Geometry::Generic;
    [
        (G1, TENSOR_OP_128X64_W32_R64, true),
        (G1, TENSOR_OP_128X64_W32_R128, true),
        (G3, TENSOR_OP_128X64_W32_R64, true),
        (G3, TENSOR_OP_128X64_W32_R128, true),
        (GEN, TENSOR_OP_128X64_W32_R64, true),
        (GEN, TENSOR_OP_128X64_W32_R64, false),
    ]
};

/// 128 pixels × 64 channels, 4 × 2 warps of 32 × 32 (256 threads), 64-byte rows (4 stages,
/// 48 KiB): the 3xTF32 tile. Its warps hold 32 sums each, so that every tile's per-k-step
/// sum (the three MMAs start from zero and are added to the sums on the CUDA cores, see
/// `mma_tensorop.cuh`) fits beside the big and small fragments: with the 64 × 32 warp tiles
/// of [`TENSOR_OP_128X64_R64`] ptxas interleaves all 16 tiles' MMAs and spills at 255
/// registers; with 32 × 32 it needs 166-226 and none.
pub const TENSOR_OP_128X64_W32_R64: TensorOpTile = TensorOpTile {
    pixels: 128,
    channels: 64,
    warp_pixels: 32,
    warp_channels: 32,
    row_bytes: 64,
};
/// [`TENSOR_OP_128X64_W32_R64`] with 128-byte rows (3 stages, 72 KiB).
pub const TENSOR_OP_128X64_W32_R128: TensorOpTile = TensorOpTile {
    row_bytes: 128,
    ..TENSOR_OP_128X64_W32_R64
};

/// A warpgroup tile (the `_wgmma` kernels, [`KernelSpec::tensor_op_warpgroup`]): one
/// warpgroup of 4 warps, each holding 32 (or 16) pixels' sums of every channel.
const fn warpgroup_tile(pixels: u32, channels: u32, warps: u32, row_bytes: u32) -> TensorOpTile {
    TensorOpTile {
        pixels,
        channels,
        warp_pixels: pixels / warps,
        warp_channels: channels,
        row_bytes,
    }
}

/// 128 pixels × 128 channels, one warpgroup, 128-byte rows (3 stages, 96 KiB: two blocks
/// per SM): the tile that won most of the paper's and ResNet-50's layers with wgmma.
pub const WARPGROUP_128X128_R128: TensorOpTile = warpgroup_tile(128, 128, 4, 128);
/// 64 pixels × 128 channels, one warpgroup (each warp 16 pixels: one m64 instruction per
/// k-step), 128-byte rows (3 stages, 72 KiB): small grids.
pub const WARPGROUP_64X128_R128: TensorOpTile = warpgroup_tile(64, 128, 4, 128);
/// 128 pixels × 64 channels, one warpgroup, 128-byte rows (3 stages, 72 KiB): K = 64 layers.
pub const WARPGROUP_128X64_R128: TensorOpTile = warpgroup_tile(128, 64, 4, 128);
/// 128 pixels × 256 channels, two warpgroups sharing the filter tile (each 64 pixels × 256
/// channels, one m64n256 instruction per k-step), 128-byte rows (3 stages, 144 KiB): the
/// largest layers.
pub const WARPGROUP_128X256_R128: TensorOpTile = warpgroup_tile(128, 256, 8, 128);
/// 64 pixels × 256 channels, one warpgroup, 64-byte rows (4 stages, 80 KiB): 1 × 1 layers
/// that widen to many channels.
pub const WARPGROUP_64X256_R64: TensorOpTile = warpgroup_tile(64, 256, 4, 64);

/// The default catalogue's warpgroup-MMA kernels (`_wgmma`, sm_90a) of bf16 and f16, all
/// with vector loads: `(geometry, tile)`. The generic kernel for the four general tiles
/// and the 1 × 1 stride-1 kernel for those and the 1 × 1-only 64 × 256 tile: 9 kernels per
/// type. Measured in `scripts/tc` (H100, BF16, one warpgroup's sums per 64-row slice): 1.2-1.5×
/// the warp-MMA kernels on the paper's channel-rich layers; ResNet-50 batch 32 1.58 against
/// 1.87 ms.
pub const TENSOR_OP_WARPGROUP_KERNELS: [(Geometry, TensorOpTile); 9] = {
    const G1: Geometry = Geometry::Fixed(FixedGeometry::square(1, 1));
    const GEN: Geometry = Geometry::Generic;
    [
        (G1, WARPGROUP_128X128_R128),
        (G1, WARPGROUP_64X128_R128),
        (G1, WARPGROUP_128X64_R128),
        (G1, WARPGROUP_128X256_R128),
        (G1, WARPGROUP_64X256_R64),
        (GEN, WARPGROUP_128X128_R128),
        (GEN, WARPGROUP_64X128_R128),
        (GEN, WARPGROUP_128X64_R128),
        (GEN, WARPGROUP_128X256_R128),
    ]
};

/// The 128 × 128 tile of two MMA warpgroups sharing it (each 64 pixels × 128 channels, one
/// m64n128 instruction per k-step), 128-byte rows: the one-team warp-specialised kernels.
pub const WARP_SPECIALIZED_SHARED_128X128: TensorOpTile = warpgroup_tile(128, 128, 8, 128);
/// The 128 × 128 tile of one warpgroup (each warp 32 pixels × 128 channels): a ping-pong team.
pub const WARP_SPECIALIZED_TEAM_128X128: TensorOpTile = warpgroup_tile(128, 128, 4, 128);
/// The 128 × 64 tile of one warpgroup (each warp 32 pixels × 64 channels): a ping-pong team
/// for `K` = 64 and for small grids.
pub const WARP_SPECIALIZED_TEAM_128X64: TensorOpTile = warpgroup_tile(128, 64, 4, 128);
/// [`WARP_SPECIALIZED_TEAM_128X128`] with 64-byte rows (32 bf16 channels of one tap a stage,
/// 6 stages): the TMA kernel for `C` a multiple of 32 but not of 64 (the paper's conv5, `C` =
/// 96).
pub const WARP_SPECIALIZED_TEAM_128X128_R64: TensorOpTile = warpgroup_tile(128, 128, 4, 64);

/// The default catalogue's TMA kernels (`_wgmma_ws_tma`, `_wgmma_ws_pingpong_tma`, sm_90a) of
/// bf16 and f16 (and, opt-in, nine of them of TF32: [`Catalogue::tf32_tma`]) (`codegen/templates/mainloop_warp_specialized.cuh`, `tma.cuh`): `(geometry,
/// tile, ping-pong)`. Persistent blocks; one producer thread copies both operands with the
/// tensor memory accelerator (the windows as an im2col box of 128 output pixels × 64
/// channels of one filter tap, the filter as a tiled box; `C` a multiple of 64), into a ring
/// of 4 stages of 128-byte rows; the MMA warpgroups multiply. Three tiles (one team of two
/// warpgroups on 128 × 128; ping-pong teams on 128 × 128 and 128 × 64) × the generic, 3 × 3
/// and 1 × 1 stride-1 geometries, and the generic ping-pong kernel with 64-byte rows for
/// `C` a multiple of 32 ([`WARP_SPECIALIZED_TEAM_128X128_R64`]): 10 kernels per type, about a
/// second of ptxas each (they hold no gather code). Measured in the standalone harness (`scripts/tc/NOTES.md` items
/// 8-9, H100, BF16): 17-25% faster than the best `cp.async` kernel on the paper's layers
/// with `C` % 64 == 0, conv6 and conv12 at or past cuDNN; the three tiles each won some of
/// ResNet-50's batch-32 layers (dispatch: `choose_tma` in the runtime).
pub const TMA_KERNELS: [(Geometry, TensorOpTile, bool); 10] = {
    const G1: Geometry = Geometry::Fixed(FixedGeometry::square(1, 1));
    const G3: Geometry = Geometry::Fixed(FixedGeometry::square(3, 1));
    const GEN: Geometry = Geometry::Generic;
    [
        (GEN, WARP_SPECIALIZED_SHARED_128X128, false),
        (G3, WARP_SPECIALIZED_SHARED_128X128, false),
        (G1, WARP_SPECIALIZED_SHARED_128X128, false),
        (GEN, WARP_SPECIALIZED_TEAM_128X128, true),
        (G3, WARP_SPECIALIZED_TEAM_128X128, true),
        (G1, WARP_SPECIALIZED_TEAM_128X128, true),
        (GEN, WARP_SPECIALIZED_TEAM_128X64, true),
        (G3, WARP_SPECIALIZED_TEAM_128X64, true),
        (G1, WARP_SPECIALIZED_TEAM_128X64, true),
        (GEN, WARP_SPECIALIZED_TEAM_128X128_R64, true),
    ]
};

/// The warp-specialised kernels whose producer warpgroup copies with `cp.async` (`_wgmma_ws`,
/// `_wgmma_ws_pingpong`, sm_90a) of bf16 and f16: `(geometry, tile, ping-pong)`, the first six
/// of [`TMA_KERNELS`] (the 128 × 128 tiles of 128-byte rows) without the tensor memory
/// accelerator (any `C` a multiple of 8). Not in the default catalogue
/// ([`Catalogue::warp_specialized`], feature `tc-warp-specialized`): in the harness they won no
/// layer that the TMA kernels can take and lost to the multistage `_wgmma` kernels on the
/// others (`scripts/tc/NOTES.md`).
pub const WARP_SPECIALIZED_KERNELS: [(Geometry, TensorOpTile, bool); 6] = {
    let mut kernels = [TMA_KERNELS[0]; 6];
    let mut i = 1;
    while i < kernels.len() {
        kernels[i] = TMA_KERNELS[i];
        i += 1;
    }
    kernels
};

/// The element types of the default catalogue's tensor-core kernels, in catalogue order:
/// bf16, f16 and float32 (TF32).
pub const TENSOR_OP_TYPES: [DType; 3] = [DType::Bf16, DType::F16, DType::F32];

/// Kernels that every fatbin holds beside the convolution specialisations: the layout
/// transforms, the split reduction and the float64 direct convolution used as the GPU oracle
/// (`Engine::direct_reference_f64`, the tests and the benchmark check against it). The
/// runtime launches each of them.
pub mod support {
    /// The im2win input transform (padding and dilation inside) from an NCHW input, float32.
    pub const INPUT_TRANSFORM_F32: &str = "im2win_input_transform_f32";
    /// The same transform from an NHWC input, float32: through shared memory, in tiles of 32
    /// columns by 8 channels of an output row, when `C` ≥ [`NHWC_TILED_MIN_C`] and `R` ≤
    /// [`NHWC_TILED_MAX_R`] (where a gather would fetch a 32-byte sector of the input per
    /// element); else the gather of [`INPUT_TRANSFORM_F32`], stepping columns `C` apart.
    pub const INPUT_TRANSFORM_NHWC_F32: &str = "im2win_input_transform_nhwc_f32";
    /// The tallest filter (R) of [`INPUT_TRANSFORM_NHWC_F32`]'s tiles: a tile holds
    /// 32 columns × R rows × 9 words of shared memory (18 KiB at 16).
    pub const NHWC_TILED_MAX_R: usize = 16;
    /// The fewest input channels for [`INPUT_TRANSFORM_NHWC_F32`]'s tiles: below a
    /// sector's 8 floats, neighbouring columns of one channel still share sectors and the
    /// gather reads each about once.
    pub const NHWC_TILED_MIN_C: usize = 8;
    /// The filter transform for the materialised kernels: `A[kk][k] = F[k][c][r][s]` with
    /// `kk = c·S·R + s·R + r` (the im2win window's order), float32.
    pub const FILTER_TRANSFORM_F32: &str = "im2win_filter_transform_f32";
    /// The filter transform for the fused kernels: `A[kk][k] = F[k][c][r][s]` with
    /// `kk = (r·S + s)·C + c` (channels fastest), float32.
    pub const FILTER_TRANSFORM_FUSED_F32: &str = "im2win_filter_transform_fused_f32";
    /// Direct convolution of float32 data accumulated in float64 (the GPU oracle).
    pub const DIRECT_F64: &str = "im2win_direct_reference_f64";
    /// Sums the partial results of a split reduction and applies the epilogue, float32.
    pub const SPLIT_REDUCE_F32: &str = "im2win_split_reduce_f32";
    /// The same for bf16 output, bias and residual (float32 partial sums): the tensor-core
    /// kernels' split reduction.
    pub const SPLIT_REDUCE_BF16: &str = "im2win_split_reduce_bf16";
    /// The same for f16 output, bias and residual (float32 partial sums).
    pub const SPLIT_REDUCE_F16: &str = "im2win_split_reduce_f16";
    /// The channels-last transpose of 2-byte elements (bf16, f16):
    /// `dst[b][i][c] = src[b][c][i]`, an NCHW input to NHWC or a KCRS filter to KRSC, for
    /// the tensor-core kernels, which read NHWC windows and KRSC filter rows.
    pub const CHANNELS_LAST_B16: &str = "im2win_channels_last_b16";
    /// The channels-last transpose of 4-byte elements (float32, for the TF32 kernels).
    pub const CHANNELS_LAST_B32: &str = "im2win_channels_last_b32";
    /// Every support kernel, for checks that a fatbin is complete.
    pub const ALL: [&str; 10] = [
        INPUT_TRANSFORM_F32,
        INPUT_TRANSFORM_NHWC_F32,
        FILTER_TRANSFORM_F32,
        FILTER_TRANSFORM_FUSED_F32,
        SPLIT_REDUCE_F32,
        SPLIT_REDUCE_BF16,
        SPLIT_REDUCE_F16,
        DIRECT_F64,
        CHANNELS_LAST_B16,
        CHANNELS_LAST_B32,
    ];

    /// The channels-last transpose of elements of `dtype` ([`CHANNELS_LAST_B16`] or
    /// [`CHANNELS_LAST_B32`]: it moves their bits).
    pub const fn channels_last(dtype: DType) -> &'static str {
        match dtype.size_bytes() {
            2 => CHANNELS_LAST_B16,
            _ => CHANNELS_LAST_B32,
        }
    }

    use crate::layout::Layout;
    use crate::spec::DType;

    /// The input transform that builds the window buffer from an input of `layout`.
    pub const fn input_transform(layout: Layout) -> &'static str {
        match layout {
            Layout::Nchw => INPUT_TRANSFORM_F32,
            Layout::Nhwc => INPUT_TRANSFORM_NHWC_F32,
        }
    }

    /// Whether [`INPUT_TRANSFORM_NHWC_F32`] takes its shared-memory tiles (one block per
    /// tile of 32 columns by 8 channels of an output row: the runtime sizes the grid by
    /// them) for an input of `channels` channels and a filter of `filter_h` rows, rather than
    /// the gather (grid-stride over chunks of the buffer).
    pub const fn nhwc_input_tiled(channels: usize, filter_h: usize) -> bool {
        channels >= NHWC_TILED_MIN_C && filter_h <= NHWC_TILED_MAX_R
    }

    /// The filter transform that the SIMT kernels of element type `dtype` read their filter
    /// from: [`FILTER_TRANSFORM_FUSED_F32`] or [`FILTER_TRANSFORM_F32`] for float32, and for
    /// bf16 and f16 the names `im2win_filter_transform_fused_bf16` / `_f16` (the fused
    /// order). No fatbin holds the 16-bit ones, and they are not in [`ALL`]: every bf16 and
    /// f16 kernel (and every TF32 one) is a tensor-core kernel, which reads the KRSC filter
    /// in place (no transform, no workspace), so nothing launches them.
    pub const fn filter_transform(dtype: DType, fused: bool) -> &'static str {
        match (dtype, fused) {
            (DType::F32, true) => FILTER_TRANSFORM_FUSED_F32,
            (DType::F32, false) => FILTER_TRANSFORM_F32,
            (DType::Bf16, _) => "im2win_filter_transform_fused_bf16",
            (DType::F16, _) => "im2win_filter_transform_fused_f16",
        }
    }

    /// The split reduction of the kernels of element type `dtype` (float32 partial sums,
    /// output, bias and residual of `dtype`): [`SPLIT_REDUCE_F32`], [`SPLIT_REDUCE_BF16`]
    /// or [`SPLIT_REDUCE_F16`].
    pub const fn split_reduce(dtype: DType) -> &'static str {
        match dtype {
            DType::F32 => SPLIT_REDUCE_F32,
            DType::Bf16 => SPLIT_REDUCE_BF16,
            DType::F16 => SPLIT_REDUCE_F16,
        }
    }
}

/// The benchmark's baseline kernels, which dispatch never picks: only a fatbin whose
/// catalogue asks for them ([`Catalogue::baselines`]) holds them. im2win-bench builds them
/// into its own module (`bench/build.rs`, `Builder::with_baselines`); the library's default
/// fatbin and a user's `Builder` output leave them out.
pub mod baselines {
    /// Plain direct convolution in float32, one thread per output (the benchmark's
    /// `direct`).
    pub const DIRECT_F32: &str = "im2win_direct_f32";
    /// The im2col transform of the benchmark's im2col + cuBLAS baseline.
    pub const IM2COL_F32: &str = "im2win_im2col_f32";
    /// The same im2col transform of 2-byte elements (bf16 or f16: a copy of their bits), for
    /// the baseline at 16-bit precision.
    pub const IM2COL_B16: &str = "im2win_im2col_b16";
    /// Every baseline kernel, for checks that a fatbin with baselines is complete.
    pub const ALL: [&str; 3] = [DIRECT_F32, IM2COL_F32, IM2COL_B16];
}

/// An ordered list of kernel specialisations, and whether the fatbin compiled from it also
/// holds the benchmark's [`baselines`]. Every such fatbin holds the [`support`] kernels.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Catalogue {
    /// The specialisations, without duplicates.
    pub kernels: Vec<KernelSpec>,
    /// Whether the fatbin also holds the [`baselines`] kernels (only im2win-bench's does).
    /// Left out of the JSON when false, so that catalogues without baselines read and write
    /// as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub baselines: bool,
}

impl Catalogue {
    /// A catalogue of the given specs; fails on an invalid spec or a duplicate.
    pub fn new(kernels: Vec<KernelSpec>) -> Result<Self, SpecError> {
        let mut seen = std::collections::HashSet::new();
        for spec in &kernels {
            spec.validate()?;
            if !seen.insert(*spec) {
                return Err(SpecError::BadName(format!("{spec} appears twice")));
            }
        }
        Ok(Catalogue {
            kernels,
            baselines: false,
        })
    }

    /// The same catalogue, with the benchmark's [`baselines`] compiled into its fatbin.
    pub fn with_baselines(mut self) -> Self {
        self.baselines = true;
        self
    }

    /// The names of the kernels that a fatbin of this catalogue holds beside the
    /// specialisations: the [`support`] kernels, then the [`baselines`] if it has them.
    pub fn support_kernels(&self) -> impl Iterator<Item = &'static str> {
        let extra: &'static [&'static str] = if self.baselines { &baselines::ALL } else { &[] };
        support::ALL.into_iter().chain(extra.iter().copied())
    }

    /// The catalogue that im2win compiles by default: the strict float32 kernels
    /// ([`Catalogue::default_f32`]), then the tensor-core kernels of bf16, f16 and float32
    /// (TF32 and 3xTF32: [`Catalogue::tensor_op_kernels`], [`Catalogue::fast_f32_kernels`]).
    pub fn default_catalogue() -> Self {
        Catalogue::default_for(&TENSOR_OP_TYPES)
    }

    /// The default catalogue with the tensor-core kernels of the element types `tensor_op`
    /// only (`DType::F32` meaning float32 on tensor cores: the TF32 kernels, then the 3xTF32
    /// ones), in that order: what the im2win crate compiles with some of its `tc-bf16`,
    /// `tc-f16`, `tc-tf32` features off. Duplicates are ignored.
    pub fn default_for(tensor_op: &[DType]) -> Self {
        let mut catalogue = Catalogue::default_f32();
        catalogue
            .kernels
            .extend(Catalogue::grouped_kernels(DType::F32));
        let mut seen = Vec::new();
        for &dtype in tensor_op {
            if !seen.contains(&dtype) {
                seen.push(dtype);
                catalogue
                    .kernels
                    .extend(Catalogue::tensor_op_kernels(dtype));
                if dtype == DType::F32 {
                    catalogue.kernels.extend(Catalogue::fast_f32_kernels());
                } else {
                    catalogue.kernels.extend(Catalogue::grouped_kernels(dtype));
                }
            }
        }
        catalogue
    }

    /// The grouped family of `dtype` (`codegen/templates/conv_grouped.cuh`), per layout
    /// (NCHW, NHWC): the depthwise kernels of [`DEPTHWISE_GEOMETRIES`] and the generic
    /// depthwise kernel, then the direct grouped kernel (any group count, generic geometry).
    /// Four kernels per layout; in the default catalogue for float32 always, for bf16 and
    /// f16 with their tensor-core family (the cargo features `tc-bf16`, `tc-f16`).
    pub fn grouped_kernels(dtype: DType) -> Vec<KernelSpec> {
        let mut kernels = Vec::new();
        for layout in [Layout::Nchw, Layout::Nhwc] {
            let geometries = DEPTHWISE_GEOMETRIES
                .iter()
                .map(|&g| Geometry::Fixed(g))
                .chain([Geometry::Generic]);
            for geometry in geometries {
                kernels.extend(KernelSpec::grouped(
                    dtype,
                    Grouping::Depthwise,
                    geometry,
                    layout,
                ));
            }
            kernels.extend(KernelSpec::grouped(
                dtype,
                Grouping::Grouped,
                Geometry::Generic,
                layout,
            ));
        }
        kernels
    }

    /// The tensor-core kernels of the default catalogue for element type `dtype` (float32:
    /// TF32), in [`TENSOR_OP_KERNELS`] order, then (bf16, f16) [`TENSOR_OP_WARPGROUP_KERNELS`]
    /// and [`TMA_KERNELS`].
    pub fn tensor_op_kernels(dtype: DType) -> Vec<KernelSpec> {
        let warp = TENSOR_OP_KERNELS.iter().map(|&(geometry, tile, vector)| {
            KernelSpec::tensor_op(dtype, geometry, tile.tile(dtype), vector)
        });
        // The warpgroup MMA takes two-byte operands here; TF32's warpgroup kernels (TMA only)
        // are not measured yet and stay opt-in (`Catalogue::tf32_tma`).
        let two_byte = matches!(dtype, DType::Bf16 | DType::F16);
        let warpgroup =
            TENSOR_OP_WARPGROUP_KERNELS
                .iter()
                .filter(|_| two_byte)
                .map(|&(geometry, tile)| {
                    KernelSpec::tensor_op_warpgroup(dtype, geometry, tile.tile(dtype))
                });
        let tma = TMA_KERNELS
            .iter()
            .filter(|_| two_byte)
            .map(|&(geometry, tile, pingpong)| {
                KernelSpec::tensor_op_warpgroup(dtype, geometry, tile.tile(dtype))
                    .warp_specialized(pingpong)
                    .tma()
            });
        warp.chain(warpgroup).chain(tma).collect()
    }

    /// The TF32 kernels of the warpgroup MMA (`im2win_tf32_.._wgmma_ws[_pingpong]_tma`,
    /// sm_90a): the nine [`TMA_KERNELS`] with 128-byte rows (32 floats of one tap a stage, the
    /// bytes of 64 two-byte channels, so the same rings and stages; `C` a multiple of 32; the
    /// one with 64-byte rows would add only `C` = 16 and 48). Their tensor maps are TFLOAT32:
    /// the copy engine rounds each float to TF32 on its way into shared memory, where the
    /// tensor cores would otherwise truncate it (the multistage `cp.async` kernels cannot
    /// round, so TF32 has none: `KernelSpec::validate`). Not in the default catalogue until
    /// they have run on a GPU: the im2win crate compiles them with its feature `tc-tf32-tma`,
    /// and dispatch then prefers them to the warp MMA's where they apply and the grid fills
    /// the GPU.
    pub fn tf32_tma() -> Self {
        let kernels = TMA_KERNELS
            .iter()
            .filter(|&&(_, tile, _)| tile.row_bytes == 128)
            .map(|&(geometry, tile, pingpong)| {
                KernelSpec::tensor_op_warpgroup(DType::F32, geometry, tile.tile(DType::F32))
                    .warp_specialized(pingpong)
                    .tma()
            })
            .collect();
        Catalogue {
            kernels,
            baselines: false,
        }
    }

    /// The 3xTF32 kernels of the default catalogue ([`crate::Math::TensorOpFastF32`]), in
    /// [`TENSOR_OP_FAST_F32_KERNELS`] order.
    pub fn fast_f32_kernels() -> Vec<KernelSpec> {
        TENSOR_OP_FAST_F32_KERNELS
            .iter()
            .map(|&(geometry, tile, vector)| {
                KernelSpec::tensor_op_fast_f32(geometry, tile.tile(DType::F32), vector)
            })
            .collect()
    }

    /// The strict float32 kernels of the default catalogue: for NCHW, every geometry of
    /// [`DEFAULT_GEOMETRIES`] and the generic kernel, each with every tile of
    /// [`DEFAULT_TILES`], then the [`EXTRA_TILES`], then the fused variant with every tile
    /// of [`FUSED_TILES`]; for NHWC the fused variant with every tile of [`NHWC_TILES`], then
    /// the window-buffer kernels of [`NHWC_WINDOW_BUFFER_KERNELS`].
    pub fn default_f32() -> Self {
        let mut kernels = Vec::new();
        for tile in DEFAULT_TILES {
            for geometry in DEFAULT_GEOMETRIES {
                kernels.push(KernelSpec::fixed(DType::F32, geometry, tile));
            }
            kernels.push(KernelSpec::generic(DType::F32, tile));
        }
        for (geometry, tile) in EXTRA_TILES {
            kernels.push(KernelSpec::fixed(DType::F32, geometry, tile));
        }
        for tile in FUSED_TILES {
            for geometry in DEFAULT_GEOMETRIES {
                kernels.push(
                    KernelSpec::fixed(DType::F32, geometry, tile).with_variant(Variant::FUSED),
                );
            }
            kernels.push(KernelSpec::generic(DType::F32, tile).with_variant(Variant::FUSED));
        }
        for tile in NHWC_TILES {
            for geometry in DEFAULT_GEOMETRIES {
                kernels.push(
                    KernelSpec::fixed(DType::F32, geometry, tile)
                        .with_variant(Variant::FUSED)
                        .with_layout(Layout::Nhwc),
                );
            }
            kernels.push(
                KernelSpec::generic(DType::F32, tile)
                    .with_variant(Variant::FUSED)
                    .with_layout(Layout::Nhwc),
            );
        }
        kernels.extend(nhwc_window_buffer_specs(&NHWC_WINDOW_BUFFER_KERNELS));
        Catalogue {
            kernels,
            baselines: false,
        }
    }

    /// The warp-specialised kernels that copy with `cp.async` ([`WARP_SPECIALIZED_KERNELS`]) of
    /// bf16 and f16, for a crate's own catalogue (sm_90a: the runtime launches them on a GPU
    /// of compute capability 9.0 only, with persistent grids); the im2win crate compiles them
    /// with its feature `tc-warp-specialized`.
    pub fn warp_specialized() -> Self {
        let kernels = [DType::Bf16, DType::F16]
            .into_iter()
            .flat_map(|dtype| {
                WARP_SPECIALIZED_KERNELS
                    .iter()
                    .map(move |&(geometry, tile, pingpong)| {
                        KernelSpec::tensor_op_warpgroup(dtype, geometry, tile.tile(dtype))
                            .warp_specialized(pingpong)
                    })
            })
            .collect();
        Catalogue {
            kernels,
            baselines: false,
        }
    }

    /// Every NHWC window-buffer kernel, float32: those of the default catalogue
    /// ([`NHWC_WINDOW_BUFFER_KERNELS`]) and [`NHWC_WINDOW_BUFFER_EXTRA`], which a crate's own
    /// catalogue may hold (the runtime dispatches, transforms and launches them like any
    /// other kernel: merge the catalogues, `Kernels::merged`).
    pub fn nhwc_window_buffer() -> Self {
        let mut kernels = nhwc_window_buffer_specs(&NHWC_WINDOW_BUFFER_KERNELS);
        kernels.extend(nhwc_window_buffer_specs(&NHWC_WINDOW_BUFFER_EXTRA));
        Catalogue {
            kernels,
            baselines: false,
        }
    }

    /// The kernels of the ablation (`im2win bench --methods ablation`), which the benchmark
    /// builds into its own fatbin: the paper's 128×128×8 tile (8×8 per thread) in the generic
    /// geometry with one technique switched off at a time ([`Variant`]): the register
    /// micro-kernel, the vector loads, double buffering with prefetch. The complete kernel
    /// they are compared with, `im2win_f32_generic_b128x128x8_t8x8`, and its fused twin are
    /// in [`Catalogue::default_catalogue`].
    pub fn ablation() -> Self {
        let complete = KernelSpec::generic(DType::F32, TileConfig::PAPER);
        let without = |switch: fn(&mut Variant)| {
            let mut variant = Variant::MATERIALISED;
            switch(&mut variant);
            complete.with_variant(variant)
        };
        Catalogue {
            kernels: vec![
                without(|v| v.micro_kernel = false),
                without(|v| v.vector_loads = false),
                without(|v| v.double_buffering = false),
            ],
            baselines: false,
        }
    }

    /// The dense specs (groups = 1: [`Grouping::Dense`]) for one geometry (fixed or
    /// generic), data type and layout, in catalogue order.
    pub fn matching(
        &self,
        dtype: DType,
        layout: Layout,
        geometry: Geometry,
    ) -> impl Iterator<Item = &KernelSpec> {
        self.kernels.iter().filter(move |k| {
            k.dtype == dtype
                && k.layout == layout
                && k.geometry == geometry
                && k.grouping == Grouping::Dense
        })
    }

    /// The spec with this kernel name, if the catalogue holds it.
    pub fn find(&self, name: &str) -> Option<&KernelSpec> {
        let spec: KernelSpec = name.parse().ok()?;
        self.kernels.iter().find(|k| **k == spec)
    }

    /// The catalogue as JSON (what build.rs writes beside the fatbin).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a catalogue always serialises")
    }

    /// Reads a catalogue written by [`Catalogue::to_json`].
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}
