//! What a convolution kernel is specialised on, and the kernel name that follows from it.
//!
//! A [`KernelSpec`] is plain data: build.rs renders and compiles one kernel per spec, the
//! runtime dispatches by matching a problem against the specs, and the macro checks requests
//! against them. The kernel name is a pure function of the spec and parses back into it, so a
//! name is enough to find the spec again (and the other way round).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::layout::Layout;

/// Element type of input, filter and output (and of bias and residual).
///
/// The 16-bit types are accumulated in float32 ([`DType::accumulator`]) and multiply on
/// tensor cores ([`Math::TensorOp`]); float32 multiplies on CUDA cores ([`Math::Simt`],
/// strict FP32) unless TF32 ([`Precision::Tf32`]) or 3xTF32 ([`Precision::F32x3`],
/// [`Precision::Accurate`]) is asked for.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE float32, accumulated in float32 with fused multiply-add.
    #[default]
    F32,
    /// bfloat16 (8 exponent bits, 7 mantissa bits; CUDA's `__nv_bfloat16`), accumulated in
    /// float32.
    Bf16,
    /// IEEE binary16 (5 exponent bits, 10 mantissa bits; CUDA's `__half`), accumulated in
    /// float32.
    F16,
}

impl DType {
    /// Every element type, float32 first.
    pub const ALL: [DType; 3] = [DType::F32, DType::Bf16, DType::F16];

    /// The type's name (`f32`, `bf16`, `f16`): its spelling in manifests, in the macro and
    /// in JSON. Kernel names spell the element type together with the math
    /// ([`numeric_name`]).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::Bf16 => "bf16",
            DType::F16 => "f16",
        }
    }

    /// The CUDA C++ type that holds one element: what `conv.cu.tera` renders into each
    /// kernel's `im2win::Conv2dTypes` (`codegen/templates/numeric.cuh`) and its signature.
    pub const fn cuda_type(self) -> &'static str {
        match self {
            DType::F32 => "float",
            DType::Bf16 => "__nv_bfloat16",
            DType::F16 => "__half",
        }
    }

    /// Bytes of one element.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::Bf16 | DType::F16 => 2,
        }
    }

    /// The type products of this type are accumulated in (and split partial sums kept in):
    /// float32 for every type.
    pub const fn accumulator(self) -> DType {
        match self {
            DType::F32 | DType::Bf16 | DType::F16 => DType::F32,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DType {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Self, SpecError> {
        DType::ALL
            .into_iter()
            .find(|dtype| dtype.name() == s)
            .ok_or_else(|| SpecError::UnknownDType(s.to_string()))
    }
}

/// The arithmetic a problem asks for: how the operands are rounded before they are
/// multiplied. Part of the problem (`Conv2dProblem::precision` in the runtime), never a
/// global switch: float32 stays strict unless TF32 is asked for.
///
/// Every precision accumulates in float32. Float32 tensors have four choices: strict FP32
/// on CUDA cores (the default), TF32, and FP32 accuracy on tensor cores (3xTF32: each operand
/// split into a TF32 big and small part, three TF32 products) either forced
/// ([`Precision::F32x3`]) or as dispatch's choice between it and strict FP32
/// ([`Precision::Accurate`]). [`Precision::admits`] is the one place that maps a precision
/// to the kernel maths that honour it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// The operands as stored: float32 operands multiplied in float32 (strict FP32, CUDA
    /// cores); bf16 and f16 operands multiplied exactly (their products fit in float32,
    /// which is what tensor cores compute). The default.
    #[default]
    Strict,
    /// Float32 operands rounded to TF32 (8 exponent bits, 10 mantissa bits; round to
    /// nearest, ties away from zero, as PTX's `cvt.rna.tf32.f32`) and multiplied on tensor
    /// cores; float32 accumulation and output. For float32 tensors only.
    Tf32,
    /// FP32 accuracy on tensor cores, always: 3xTF32 kernels only
    /// ([`Math::TensorOpFastF32`]; each float32 operand `x` split into `big = tf32(x)` and
    /// `small = tf32(x − big)`, the products `small·big + big·small + big·big` accumulated in
    /// float32). Its error is that of strict FP32 (the dropped `small·small` is below 2⁻²²
    /// of a product). For float32 tensors only; named `f32x3`.
    #[serde(rename = "f32x3")]
    F32x3,
    /// FP32 accuracy, computed by whichever of strict FP32 ([`Math::Simt`]) and 3xTF32
    /// ([`Math::TensorOpFastF32`]) dispatch (or the tuning table) finds faster for the
    /// problem. For float32 tensors only; named `accurate` (its numeric name is `f32acc`).
    /// Not the default: a float32 problem is [`Precision::Strict`] unless it asks.
    Accurate,
}

impl Precision {
    /// Every precision, strict first.
    pub const ALL: [Precision; 4] = [
        Precision::Strict,
        Precision::Tf32,
        Precision::F32x3,
        Precision::Accurate,
    ];

    /// The precision's name: `strict`, `tf32`, `f32x3` or `accurate`.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::Strict => "strict",
            Precision::Tf32 => "tf32",
            Precision::F32x3 => "f32x3",
            Precision::Accurate => "accurate",
        }
    }

    /// Whether tensors of `dtype` can be computed at this precision: strict for every
    /// type, the others for float32 only.
    pub const fn applies_to(self, dtype: DType) -> bool {
        match self {
            Precision::Strict => true,
            Precision::Tf32 | Precision::F32x3 | Precision::Accurate => {
                matches!(dtype, DType::F32)
            }
        }
    }

    /// Whether a kernel of element type `dtype` multiplying with `math` computes a problem
    /// of element type `dtype` at this precision: strict float32 only on CUDA cores
    /// ([`Math::Simt`]), TF32 only on tensor cores ([`Math::TensorOp`]), `f32x3` only with
    /// 3xTF32 ([`Math::TensorOpFastF32`]), `accurate` with either strict FP32 or 3xTF32;
    /// bf16 and f16 with the SIMT or the plain tensor-core math (their products are exact
    /// in float32 both ways).
    pub const fn admits(self, dtype: DType, math: Math) -> bool {
        matches!(
            (self, dtype, math),
            (Precision::Strict, DType::F32, Math::Simt)
                | (
                    Precision::Strict,
                    DType::Bf16 | DType::F16,
                    Math::Simt | Math::TensorOp
                )
                | (Precision::Tf32, DType::F32, Math::TensorOp)
                | (Precision::F32x3, DType::F32, Math::TensorOpFastF32)
                | (
                    Precision::Accurate,
                    DType::F32,
                    Math::Simt | Math::TensorOpFastF32
                )
        )
    }

    /// The kernel math that computes `dtype` at this precision, or `None` when the
    /// precision does not apply to the type or leaves the math to dispatch
    /// ([`Precision::Accurate`]: strict FP32 or 3xTF32): the inverse of
    /// [`Precision::admits`] where it is one math, with [`Math::TensorOp`] for bf16 and f16
    /// (the only math their kernels have).
    pub const fn math(self, dtype: DType) -> Option<Math> {
        match (self, dtype) {
            (Precision::Strict, DType::F32) => Some(Math::Simt),
            (Precision::Strict, DType::Bf16 | DType::F16) => Some(Math::TensorOp),
            (Precision::Tf32, DType::F32) => Some(Math::TensorOp),
            (Precision::F32x3, DType::F32) => Some(Math::TensorOpFastF32),
            (Precision::Tf32 | Precision::F32x3 | Precision::Accurate, _) => None,
        }
    }

    /// The name of `dtype` computed at this precision, as the benchmark, result files and
    /// error messages spell it: `f32` (strict), `tf32`, `f32x3`, `f32acc` (accurate), `bf16`,
    /// `f16`; a precision that does not apply to the type gives e.g. `bf16+tf32`.
    pub const fn numeric_name(self, dtype: DType) -> &'static str {
        match (self, dtype) {
            (Precision::Accurate, DType::F32) => "f32acc",
            _ => match self.math(dtype) {
                Some(math) => numeric_name(dtype, math),
                None => match (self, dtype) {
                    (Precision::Tf32, DType::Bf16) => "bf16+tf32",
                    (Precision::Tf32, DType::F16) => "f16+tf32",
                    (Precision::F32x3, DType::Bf16) => "bf16+f32x3",
                    (Precision::F32x3, DType::F16) => "f16+f32x3",
                    (Precision::Accurate, DType::Bf16) => "bf16+accurate",
                    (Precision::Accurate, DType::F16) => "f16+accurate",
                    // Every float32 precision has a name above.
                    _ => "f32+?",
                },
            },
        }
    }

    /// The element type and precision that [`Precision::numeric_name`] spells `name`
    /// (`f32`, `tf32`, `f32x3`, `f32acc`, `bf16` or `f16`), e.g. for a `--dtype` flag.
    pub fn from_numeric_name(name: &str) -> Option<(DType, Precision)> {
        DType::ALL.into_iter().find_map(|dtype| {
            Precision::ALL
                .into_iter()
                .find(|p| p.applies_to(dtype) && p.numeric_name(dtype) == name)
                .map(|p| (dtype, p))
        })
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = SpecError;

    /// `strict`, `tf32`, `f32x3` or `accurate`.
    fn from_str(s: &str) -> Result<Self, SpecError> {
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| SpecError::BadSyntax {
                what: "precision",
                text: s.to_string(),
                expected: "`strict`, `tf32`, `f32x3` or `accurate`",
            })
    }
}

/// The first part of a kernel name after `im2win_`: the element type together with the
/// math, so that the names of today's float32 kernels stay as they were.
///
/// | dtype | math | token |
/// |---|---|---|
/// | f32 | [`Math::Simt`] | `f32` |
/// | f32 | [`Math::TensorOp`] | `tf32` |
/// | bf16 | [`Math::TensorOp`] | `bf16` |
/// | f16 | [`Math::TensorOp`] | `f16` |
/// | f32 | [`Math::TensorOpFastF32`] | `f32x3` (3xTF32) |
/// | bf16 / f16 | [`Math::Simt`] | `bf16simt` / `f16simt` (not a valid spec today) |
/// | bf16 / f16 | [`Math::TensorOpFastF32`] | `bf16x3` / `f16x3` (not a valid spec) |
///
/// [`parse_numeric_name`] is the inverse.
pub const fn numeric_name(dtype: DType, math: Math) -> &'static str {
    match (dtype, math) {
        (DType::F32, Math::Simt) => "f32",
        (DType::F32, Math::TensorOp) => "tf32",
        (DType::F32, Math::TensorOpFastF32) => "f32x3",
        (DType::Bf16, Math::TensorOp) => "bf16",
        (DType::F16, Math::TensorOp) => "f16",
        (DType::Bf16, Math::Simt) => "bf16simt",
        (DType::F16, Math::Simt) => "f16simt",
        (DType::Bf16, Math::TensorOpFastF32) => "bf16x3",
        (DType::F16, Math::TensorOpFastF32) => "f16x3",
    }
}

/// The element type and math that [`numeric_name`] spells `token`, if any.
pub fn parse_numeric_name(token: &str) -> Option<(DType, Math)> {
    DType::ALL.into_iter().find_map(|dtype| {
        Math::ALL
            .into_iter()
            .find(|&math| numeric_name(dtype, math) == token)
            .map(|math| (dtype, math))
    })
}

/// A filter size and stride fixed at compile time. Dilation is 1 in both axes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FixedGeometry {
    /// Filter height R.
    pub filter_h: u32,
    /// Filter width S.
    pub filter_w: u32,
    /// Vertical stride.
    pub stride_h: u32,
    /// Horizontal stride.
    pub stride_w: u32,
}

impl FixedGeometry {
    /// A square filter `size`×`size` with the same stride in both axes.
    pub const fn square(size: u32, stride: u32) -> Self {
        FixedGeometry {
            filter_h: size,
            filter_w: size,
            stride_h: stride,
            stride_w: stride,
        }
    }
}

/// Which filter geometry a kernel handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Geometry {
    /// Filter size and stride are compile-time constants (dilation 1), so the index
    /// arithmetic folds away.
    Fixed(FixedGeometry),
    /// Filter size, stride and dilation are run-time values: covers every valid problem.
    Generic,
}

/// The tile hierarchy of the implicit GEMM: what one block and one thread (or warp)
/// compute.
///
/// The GEMM is `M = K` output channels by `N = N·P·Q` output pixels, reduced over `C·R·S`.
/// A block computes a `block_m × block_n` tile of the output, stepping through the reduction
/// `block_k` at a time. Below the block the two maths differ ([`KernelSpec::math`]):
///
/// * [`Math::Simt`]: each thread holds a `thread_m × thread_n` tile in registers
///   ([`TileConfig::threads`] threads per block). Names spell it `b128x128x8_t8x8`.
/// * [`Math::TensorOp`]: `thread_m × thread_n` is the **warp tile** (channels × pixels one
///   warp's MMAs compute), 32 threads per warp ([`TileConfig::warps`]); `block_k · element
///   size` is the bytes of reduction a stage keeps per shared-memory row (32, 64 or 128), and
///   the main loop's depth follows from it ([`KernelSpec::stages`]: 4 stages of rows up to 64
///   bytes, 3 of 128-byte rows). Names spell the warp tile with `w`: `b64x128x32_w32x64` is
///   128 pixels × 64 channels per block, 32 reduction elements (64 bytes of bf16) per stage
///   and row, 2 × 2 warps of 64 pixels × 32 channels (the template's
///   `TensorOpTileShape<Types, BM = 128, BN = 64, WM = 64, WN = 32, STAGES = 4, ROW_BYTES = 64>`:
///   its `BM` is our `block_n`, its `BN` our `block_m`).
///
/// So [`KernelSpec::threads`], [`KernelSpec::shared_bytes`] and
/// [`KernelSpec::min_blocks_per_sm`] are the numbers of a kernel; the `TileConfig` methods of
/// the same names read the tile as a SIMT tile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TileConfig {
    /// Output channels per block.
    pub block_m: u32,
    /// Output pixels per block.
    pub block_n: u32,
    /// Reduction depth of one shared-memory stage, in elements.
    pub block_k: u32,
    /// Output channels per thread (SIMT) or per warp (tensor cores).
    pub thread_m: u32,
    /// Output pixels per thread (SIMT) or per warp (tensor cores).
    pub thread_n: u32,
}

/// The most output sums a thread of a tensor-core kernel may hold for the kernel to split its
/// reduction ([`KernelSpec::splits_reduction`]).
pub const MAX_SPLIT_SUMS_PER_THREAD: u64 = 64;

/// CUDA's limit on the static shared memory of one block, in bytes.
pub const MAX_STATIC_SHARED_BYTES: u32 = 48 * 1024;

/// The most dynamic shared memory one block of a tensor-core kernel may ask for, in bytes:
/// sm_80's opt-in limit (163 KiB; sm_90 allows 227 KiB), the smallest of the default targets.
/// The engine checks the device's own limit before a launch.
pub const MAX_DYNAMIC_SHARED_BYTES: u32 = 163 * 1024;

/// The most dynamic shared memory one block may ask for on sm_90 (227 KiB): the bound of the
/// warp-specialised kernels ([`Variant::warp_specialized`]), which only run there (wgmma).
pub const MAX_DYNAMIC_SHARED_BYTES_SM90: u32 = 227 * 1024;

/// The fewest stages of a warp-specialised kernel's ring (`mainloop_warp_specialized.cuh`):
/// the depth its epilogue's staging area is sized for ([`KernelSpec::stages`] then deepens
/// the ring into what is left).
pub const WARP_SPECIALIZED_STAGES: u32 = 4;

/// The deepest ring of a warp-specialised kernel: 6 stages, the deepest measured (harness,
/// `scripts/tc/NOTES.md` item 9: 5 stages of the 128 × 128 tiles and 6 of the 128 × 64 tile
/// 4-12% faster than 4 on the paper's layers).
pub const WARP_SPECIALIZED_MAX_STAGES: u32 = 6;

/// Threads of the warpgroup that only copies in a warp-specialised kernel.
pub const PRODUCER_THREADS: u32 = 128;

/// Bytes of one shared-memory piece of a tensor-core stage: what one `cp.async` moves and
/// one row of an `ldmatrix` 8×8 matrix holds (`TENSOROP_CHUNK_BYTES` in
/// `codegen/templates/tile_tensorop.cuh`): 8 bf16 / f16 elements or 4 floats.
pub const TENSOR_OP_CHUNK_BYTES: u32 = 16;

impl TileConfig {
    /// The paper's tile: 128×128×8 per block, 8×8 per thread, 256 threads.
    pub const PAPER: TileConfig = TileConfig {
        block_m: 128,
        block_n: 128,
        block_k: 8,
        thread_m: 8,
        thread_n: 8,
    };

    /// Threads in one block of a SIMT kernel (one per thread tile). A kernel's count for
    /// either math is [`KernelSpec::threads`].
    pub const fn threads(&self) -> u32 {
        (self.block_m / self.thread_m) * (self.block_n / self.thread_n)
    }

    /// Warps in one block of a tensor-core kernel (one per warp tile; 0 for a tile whose
    /// levels do not nest).
    pub const fn warps(&self) -> u32 {
        match (
            self.block_m.checked_div(self.thread_m),
            self.block_n.checked_div(self.thread_n),
        ) {
            (Some(m), Some(n)) => m.saturating_mul(n),
            _ => 0,
        }
    }

    /// Static shared memory of one block in bytes for elements of `dtype`: two stages of a
    /// `block_k × block_m` filter tile and a `block_k × block_n` window tile, as
    /// `codegen/templates/conv_fprop.cuh` declares them (8 KiB per 1024 elements of float32,
    /// half that for bf16 and f16). (u64: an invalid tile may be huge.)
    pub const fn shared_bytes(&self, dtype: DType) -> u64 {
        // Saturating: 2·size·block_k·(block_m + block_n) reaches 2^68 for the largest u32s.
        (self.block_m as u64 + self.block_n as u64)
            .saturating_mul(2 * dtype.size_bytes() as u64 * self.block_k as u64)
    }

    /// Blocks that the kernel's launch bounds ask to fit on one multiprocessor at once (the
    /// second argument of `__launch_bounds__`); dispatch counts on them. For a valid tile.
    ///
    /// Up to 64 accumulators per thread fit in 128 registers without spilling (the 8×8 tile
    /// needs about 120), and 128 registers per thread make 512 resident threads per SM: two
    /// 256-thread blocks, four of 128, eight of 64, so that one block's barrier waits overlap
    /// another's arithmetic. Larger thread tiles need more registers than that; they get the
    /// hardware's limit (255, or 64K / threads).
    pub const fn min_blocks_per_sm(&self) -> u32 {
        let budget = if self.thread_m * self.thread_n <= 64 {
            128
        } else {
            255
        };
        let blocks = 65_536 / (self.threads() * budget);
        if blocks == 0 { 1 } else { blocks }
    }

    /// The register cap per thread that follows from [`TileConfig::min_blocks_per_sm`].
    pub const fn max_registers(&self) -> u32 {
        let registers = 65_536 / (self.threads() * self.min_blocks_per_sm());
        if registers > 255 { 255 } else { registers }
    }

    /// Checks that some kernel can have this tile: as a SIMT tile, that the tile levels
    /// nest (thread tiles divide the block tile, the block has between 32 and 1024 threads,
    /// and every thread loads a whole number of elements of each shared-memory stage) and
    /// that its two shared-memory stages fit in CUDA's 48 KiB of static shared memory for the
    /// smallest element type (2 bytes); or else that it is a tensor-core tile for some
    /// element type ([`TileConfig::validate_tensor_op`]). [`TileConfig::validate_for`],
    /// [`TileConfig::validate_tensor_op`] and [`KernelSpec::validate`] check one element type
    /// and math.
    pub fn validate(&self) -> Result<(), SpecError> {
        let smallest = DType::ALL
            .into_iter()
            .min_by_key(|dtype| dtype.size_bytes())
            .unwrap_or(DType::F32);
        let simt = match self.validate_for(smallest) {
            Ok(()) => return Ok(()),
            Err(SpecError::InvalidTile(_, why)) => why,
            Err(other) => return Err(other),
        };
        let mut tensor_op = String::new();
        for dtype in DType::ALL {
            match self.validate_tensor_op(dtype) {
                Ok(()) => return Ok(()),
                Err(SpecError::InvalidTile(_, why)) if tensor_op.is_empty() => tensor_op = why,
                Err(_) => {}
            }
        }
        Err(SpecError::InvalidTile(
            *self,
            format!("{simt} (as a CUDA-core tile); {tensor_op} (as a tensor-core tile)"),
        ))
    }

    /// Checks the tile as the tile of a tensor-core kernel of element type `dtype` (the
    /// reading of [`TileConfig`]'s fields for [`Math::TensorOp`]; the rules of
    /// `TensorOpTileShape` in `codegen/templates/tile_tensorop.cuh`): the warp tile
    /// (`thread_m × thread_n`) divides the block tile and is whole 16 × 16 MMA pieces; the
    /// block has 1 to 32 warps; a stage's row (`block_k` elements of `dtype`) is 32, 64 or 128
    /// bytes (a whole number of MMA k-steps, [`Math::k_step`]); each copy pass of the
    /// block's threads fills whole rows of both operands; and the stages fit in
    /// [`MAX_DYNAMIC_SHARED_BYTES`].
    pub fn validate_tensor_op(&self, dtype: DType) -> Result<(), SpecError> {
        let TileConfig {
            block_m,
            block_n,
            block_k,
            thread_m,
            thread_n,
        } = *self;
        let bad = |why: String| Err(SpecError::InvalidTile(*self, why));
        if [block_m, block_n, block_k, thread_m, thread_n].contains(&0) {
            return bad("every dimension must be at least 1".to_string());
        }
        if !block_m.is_multiple_of(thread_m) || !block_n.is_multiple_of(thread_n) {
            return bad("the warp tile must divide the block tile".to_string());
        }
        if !thread_m.is_multiple_of(16) || !thread_n.is_multiple_of(16) {
            return bad(
                "a warp tile is whole 16 x 16 MMA pieces: thread_m and thread_n (the warp tile) must be multiples of 16"
                    .to_string(),
            );
        }
        let warps = u64::from(block_m / thread_m) * u64::from(block_n / thread_n);
        if !(1..=32).contains(&warps) {
            return bad("a block must have 1 to 32 warps (32 to 1024 threads)".to_string());
        }
        let row_bytes = u64::from(block_k) * dtype.size_bytes() as u64;
        if ![32, 64, 128].contains(&row_bytes) {
            return bad(format!(
                "a stage's row is 32, 64 or 128 bytes of the reduction: block_k must be {}, {} or {} {dtype} elements",
                32 / dtype.size_bytes(),
                64 / dtype.size_bytes(),
                128 / dtype.size_bytes()
            ));
        }
        let rows_per_pass = 32 * warps / (row_bytes / u64::from(TENSOR_OP_CHUNK_BYTES));
        if !u64::from(block_m).is_multiple_of(rows_per_pass)
            || !u64::from(block_n).is_multiple_of(rows_per_pass)
        {
            return bad(format!(
                "each copy pass of the block's threads fills {rows_per_pass} whole rows: block_m and block_n must be multiples of it"
            ));
        }
        let shared = tensor_op_shared_bytes(self, dtype);
        if shared > u64::from(MAX_DYNAMIC_SHARED_BYTES) {
            return bad(format!(
                "its {} stages of {dtype} take {shared} bytes of shared memory, more than the {MAX_DYNAMIC_SHARED_BYTES} a block may have",
                tensor_op_stages(self, dtype)
            ));
        }
        Ok(())
    }

    /// [`TileConfig::validate`]'s nesting rules alone.
    fn validate_nesting(&self) -> Result<(), SpecError> {
        let TileConfig {
            block_m,
            block_n,
            block_k,
            thread_m,
            thread_n,
        } = *self;
        let bad = |why: &str| Err(SpecError::InvalidTile(*self, why.to_string()));
        if [block_m, block_n, block_k, thread_m, thread_n].contains(&0) {
            return bad("every dimension must be at least 1");
        }
        if !block_m.is_multiple_of(thread_m) || !block_n.is_multiple_of(thread_n) {
            return bad("the thread tile must divide the block tile");
        }
        // In u64: with large thread counts or blocks these products overflow u32.
        let threads = u64::from(block_m / thread_m) * u64::from(block_n / thread_n);
        if !(32..=1024).contains(&threads) || !threads.is_multiple_of(32) {
            return bad("a block must have a multiple of 32 threads, from 32 to 1024");
        }
        let wide = |a: u32, b: u32| u64::from(a) * u64::from(b);
        if !wide(block_m, block_k).is_multiple_of(threads)
            || !wide(block_n, block_k).is_multiple_of(threads)
        {
            return bad("each stage's filter and window tiles must split evenly over the threads");
        }
        Ok(())
    }

    /// [`TileConfig::validate`]'s nesting rules, and that the two shared-memory stages of
    /// elements of `dtype` ([`TileConfig::shared_bytes`]) fit in CUDA's 48 KiB of static
    /// shared memory.
    pub fn validate_for(&self, dtype: DType) -> Result<(), SpecError> {
        self.validate_nesting()?;
        if self.shared_bytes(dtype) > u64::from(MAX_STATIC_SHARED_BYTES) {
            return Err(SpecError::InvalidTile(
                *self,
                format!(
                    "the two shared-memory stages of {dtype} exceed CUDA's 48 KiB of static shared memory"
                ),
            ));
        }
        Ok(())
    }
}

/// Bytes of reduction a tensor-core stage keeps per shared-memory row: `block_k` elements
/// of `dtype` (saturating: an invalid tile may be huge).
const fn tensor_op_row_bytes(tile: &TileConfig, dtype: DType) -> u64 {
    (tile.block_k as u64).saturating_mul(dtype.size_bytes() as u64)
}

/// The depth of a tensor-core kernel's main loop: 4 stages of rows up to 64 bytes, 3 of
/// 128-byte rows (the depths measured best on the H100, `scripts/tc/NOTES.md`: 64 KiB for
/// 128 × 128 tiles either way, 48 or 72 KiB for 128 × 64).
const fn tensor_op_stages(tile: &TileConfig, dtype: DType) -> u32 {
    if tensor_op_row_bytes(tile, dtype) <= 64 {
        4
    } else {
        3
    }
}

/// Dynamic shared memory of a tensor-core block: every stage holds a row of both operands
/// for each pixel (`block_n`) and channel (`block_m`) of the tile (`Tile::SMEM_BYTES` in
/// `tile_tensorop.cuh`).
const fn tensor_op_shared_bytes(tile: &TileConfig, dtype: DType) -> u64 {
    (tile.block_m as u64 + tile.block_n as u64)
        .saturating_mul(tensor_op_row_bytes(tile, dtype))
        .saturating_mul(tensor_op_stages(tile, dtype) as u64)
}

impl TileConfig {
    /// The tile as the names of SIMT kernels spell it, e.g. `b128x128x8_t8x8`.
    pub fn name(&self) -> String {
        self.name_for(Math::Simt)
    }

    /// The tile as the names of kernels multiplying with `math` spell it: `t` before the
    /// thread tile of a SIMT kernel (`b128x128x8_t8x8`), `w` before the warp tile of a
    /// tensor-core kernel (`b64x128x32_w32x64`).
    pub fn name_for(&self, math: Math) -> String {
        let t = self;
        let level = match math {
            Math::Simt => 't',
            Math::TensorOp | Math::TensorOpFastF32 => 'w',
        };
        format!(
            "b{}x{}x{}_{level}{}x{}",
            t.block_m, t.block_n, t.block_k, t.thread_m, t.thread_n
        )
    }
}

impl fmt::Display for TileConfig {
    /// `block_m`x`block_n`x`block_k`/`thread_m`x`thread_n`, e.g. `128x128x8/8x8`: the
    /// spelling of the macro's and the manifest's `tile`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = self;
        write!(
            f,
            "{}x{}x{}/{}x{}",
            t.block_m, t.block_n, t.block_k, t.thread_m, t.thread_n
        )
    }
}

impl FromStr for TileConfig {
    type Err = SpecError;

    /// Parses `128x128x8/8x8` (block M×N×K / thread M×N, or warp M×N for a tensor-core
    /// tile) or the kernel-name forms `b128x128x8_t8x8` and `b64x128x32_w32x64`, and checks
    /// that some kernel can have the tile ([`TileConfig::validate`]).
    fn from_str(text: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::BadSyntax {
            what: "tile",
            text: text.to_string(),
            expected: "`128x128x8/8x8` (block MxNxK / thread or warp MxN), `b128x128x8_t8x8` or `b64x128x32_w32x64`",
        };
        let trimmed = text.trim();
        let (block, thread) = match trimmed.split_once('/') {
            Some(parts) => parts,
            None => trimmed
                .strip_prefix('b')
                .and_then(|rest| rest.split_once("_t").or_else(|| rest.split_once("_w")))
                .ok_or_else(bad)?,
        };
        let [block_m, block_n, block_k] = dims::<3>(block.trim()).ok_or_else(bad)?;
        let [thread_m, thread_n] = dims::<2>(thread.trim()).ok_or_else(bad)?;
        let tile = TileConfig {
            block_m,
            block_n,
            block_k,
            thread_m,
            thread_n,
        };
        tile.validate()?;
        Ok(tile)
    }
}

/// Parses a filter size or stride as the macro and the manifest spell it: `3` (the same in
/// both axes) or `HxW`, e.g. `3x3`, `2x1`. Returns `[height, width]`; zero is refused.
pub fn parse_pair(what: &'static str, text: &str) -> Result<[u32; 2], SpecError> {
    let bad = || SpecError::BadSyntax {
        what,
        text: text.to_string(),
        expected: "`N` or `HxW` with positive integers, e.g. `3`, `3x3` or `2x1`",
    };
    let text = text.trim();
    let pair = match dims::<2>(text) {
        Some(pair) => pair,
        None => {
            let [n] = dims::<1>(text).ok_or_else(bad)?;
            [n, n]
        }
    };
    if pair.contains(&0) {
        return Err(bad());
    }
    Ok(pair)
}

impl FixedGeometry {
    /// A geometry from `[R, S]` and `[stride_h, stride_w]`.
    pub const fn new(filter: [u32; 2], stride: [u32; 2]) -> Self {
        FixedGeometry {
            filter_h: filter[0],
            filter_w: filter[1],
            stride_h: stride[0],
            stride_w: stride[1],
        }
    }
}

impl fmt::Display for FixedGeometry {
    /// `filter = 3x3, stride = 1` (or `stride = 2x1`): the macro's spelling.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "filter = {}x{}, stride = ", self.filter_h, self.filter_w)?;
        if self.stride_h == self.stride_w {
            write!(f, "{}", self.stride_h)
        } else {
            write!(f, "{}x{}", self.stride_h, self.stride_w)
        }
    }
}

/// Where a kernel reads its windows from, and which of the paper's techniques it uses.
///
/// [`Variant::MATERIALISED`] (the default) is the full kernel over the im2win buffer that the
/// input transform writes; [`Variant::FUSED`] builds each stage's window strip in shared
/// memory straight from the NCHW input, so no im2win buffer exists. The three technique
/// switches exist for the ablation (`im2win bench --methods ablation`): turning one off gives
/// the kernel without that technique, everything else (tile, loads, layout) equal. Dispatch
/// only ever picks kernels with all three on ([`Variant::is_complete`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Variant {
    /// Windows gathered from the NCHW input inside the kernel (no im2win buffer).
    pub fused: bool,
    /// The register micro-kernel: per reduction step a thread loads `thread_m` filter and
    /// `thread_n` window values into registers and multiplies every pair (an outer
    /// product); off: each of its outputs is a dot product read from shared memory, two
    /// shared-memory loads per multiply-add.
    pub micro_kernel: bool,
    /// 16-byte (float4) copies of the filter tile, float4/float2 shared-memory reads in the
    /// micro-kernel and vector stores of the output; off: every access is one float.
    ///
    /// In a tensor-core kernel ([`Math::TensorOp`]) this is the loader's choice (its
    /// template's `VECTOR`), and both are complete kernels that dispatch picks from: on,
    /// each 16-byte piece of a stage is one `cp.async` of consecutive channels, which needs
    /// `C` a multiple of 8 (bf16, f16) or 4 (TF32) and 16-byte aligned input and filter
    /// ([`KernelSpec::channel_multiple`], [`KernelSpec::needs_aligned_operands`]); off
    /// (`_novec`), every element is gathered on its own, for any `C` (the C = 3 stems).
    pub vector_loads: bool,
    /// Two shared-memory stages, the next one's copies in flight while the current one is
    /// multiplied; off: one stage, copied and then multiplied.
    pub double_buffering: bool,
    /// Tensor-core kernels only: the warpgroup MMA (`wgmma.mma_async`, sm_90a: H100, H200),
    /// whose tensor cores read both operands from shared memory, instead of the warp MMA
    /// (`ldmatrix` + `mma.sync`, sm_80 and later). Name suffix `_wgmma`. Such a kernel is
    /// a stub that traps in every image but the sm_90a SASS, so dispatch only picks it on a
    /// GPU of compute capability 9.0 (`codegen/templates/mma_warpgroup.cuh`). Absent from
    /// JSON written before it existed: off.
    #[serde(default)]
    pub warpgroup: bool,
    /// Warpgroup kernels only: warp-specialised (`_ws`): one more warpgroup of the block only
    /// copies and the MMA warpgroups only multiply, the stages handed over by shared-memory
    /// barriers (a ring [`WARP_SPECIALIZED_STAGES`] to [`WARP_SPECIALIZED_MAX_STAGES`] deep,
    /// [`KernelSpec::stages`]), over persistent blocks that take tile after
    /// tile (`codegen/templates/mainloop_warp_specialized.cuh`): the launch's grid is at most
    /// the blocks that fit on the GPU at once ([`KernelSpec::is_persistent`]). Absent from
    /// JSON written before it existed: off.
    #[serde(default)]
    pub warp_specialized: bool,
    /// Warp-specialised kernels only: two teams of one MMA warpgroup each, every team a whole
    /// tile, taking turns at the main loop ("ping-pong", `_pingpong`): one team writes its
    /// tile's outputs while the other multiplies. Absent from JSON written before it existed:
    /// off.
    #[serde(default)]
    pub pingpong: bool,
    /// Warp-specialised kernels only: the tensor memory accelerator copies both operands
    /// (`_tma`, `codegen/templates/tma.cuh`): per stage one producer thread issues an
    /// im2col-mode box of the windows (the tile's pixels, `block_k` channels of one filter
    /// tap, the padding filled with zeros by the copy engine) and a tiled box of the KRSC
    /// filter, where the producer warpgroup's `cp.async` moved 16 bytes a thread. The kernel
    /// takes the input's and the filter's tensor maps after `ConvParams`; `C` must be a
    /// multiple of `block_k` ([`KernelSpec::channel_multiple`]). Absent from JSON written
    /// before it existed: off.
    #[serde(default)]
    pub tma: bool,
}

impl Variant {
    /// The full kernel over the materialised im2win buffer.
    pub const MATERIALISED: Variant = Variant {
        fused: false,
        micro_kernel: true,
        vector_loads: true,
        double_buffering: true,
        warpgroup: false,
        warp_specialized: false,
        pingpong: false,
        tma: false,
    };
    /// The full kernel that gathers its windows from the NCHW input.
    pub const FUSED: Variant = Variant {
        fused: true,
        ..Variant::MATERIALISED
    };

    /// Whether every technique is on (the SIMT kernels dispatch chooses from; a tensor-core
    /// kernel is complete with or without vector loads: [`KernelSpec::is_complete`]).
    pub const fn is_complete(&self) -> bool {
        self.micro_kernel && self.vector_loads && self.double_buffering
    }

    /// The name suffixes of this variant, in name order: `_fused`, `_nomicro` (no register
    /// micro-kernel), `_novec` (no vector loads), `_nodb` (no double buffering), `_wgmma`
    /// (the warpgroup MMA), `_ws` (warp-specialised), `_pingpong` (two MMA teams), `_tma`
    /// (operands copied by the tensor memory accelerator).
    fn suffixes(&self) -> impl Iterator<Item = &'static str> {
        [
            (self.fused, "_fused"),
            (!self.micro_kernel, "_nomicro"),
            (!self.vector_loads, "_novec"),
            (!self.double_buffering, "_nodb"),
            (self.warpgroup, "_wgmma"),
            (self.warp_specialized, "_ws"),
            (self.pingpong, "_pingpong"),
            (self.tma, "_tma"),
        ]
        .into_iter()
        .filter_map(|(on, suffix)| on.then_some(suffix))
    }
}

impl Default for Variant {
    fn default() -> Self {
        Variant::MATERIALISED
    }
}

/// The operation a kernel computes. Only the forward convolution exists so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Operation {
    /// `y = epilogue(conv2d(x, w))`.
    Forward,
}

/// Where a kernel's windows come from ([`Variant::fused`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// The materialised im2win buffer that the input transform writes (NCHW inputs only).
    WindowBuffer,
    /// Windows gathered from the input inside the kernel: no im2win buffer.
    WindowGather,
    /// Depthwise convolution (groups = C, each output channel reads one input channel):
    /// direct loads, no shared-memory stages (`codegen/templates/conv_grouped.cuh`).
    Depthwise,
    /// Grouped convolution of any group count: the direct convolution over the group's
    /// channels, one output per thread (`conv_grouped.cuh`).
    GroupedDirect,
}

/// Which input channels an output channel reads: all of them (a dense convolution, every
/// kernel family but the grouped one), or those of its group
/// (`codegen/templates/conv_grouped.cuh`). A problem with `groups` > 1 runs only on grouped
/// kernels and one with `groups` = 1 never does (`dispatch::can_implement`).
///
/// Grouped kernels compute in FP32 on CUDA cores ([`Math::Simt`]) for every element type
/// (bf16 and f16 converted as they are loaded): they are memory-bound.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Grouping {
    /// One group: the im2win and tensor-core families. The default (and every kernel
    /// written before the field existed).
    #[default]
    Dense,
    /// groups = C and K a multiple of C (each output channel reads input channel
    /// `k / (K / C)`): the dedicated depthwise kernels, name token `dw`.
    Depthwise,
    /// Any group count that divides C and K: the direct grouped kernel, name token
    /// `grouped`. Also runs depthwise problems (at a lower rate).
    Grouped,
}

impl Grouping {
    /// The token after the numeric name in a kernel's name: `dw`, `grouped`; none for
    /// [`Grouping::Dense`].
    pub const fn token(self) -> Option<&'static str> {
        match self {
            Grouping::Dense => None,
            Grouping::Depthwise => Some("dw"),
            Grouping::Grouped => Some("grouped"),
        }
    }

    /// The one tile of a grouped kernel of `layout` and `dtype` (the template's work per
    /// thread, read as [`TileConfig`] says for grouped kernels): 256 threads; depthwise NCHW
    /// 4 outputs along a row per thread (`b1x1024x1_t1x4`), depthwise NHWC one 16-byte
    /// vector of channels (4 floats, 8 bf16 or f16) of 4 (float) or 2 (bf16, f16) adjacent
    /// pixels per thread (`b4x1024x1_t4x4`, `b8x512x1_t8x2`), the direct grouped kernel one
    /// output per thread
    /// (`b1x256x1_t1x1`). `None` for [`Grouping::Dense`].
    pub const fn tile(self, layout: Layout, dtype: DType) -> Option<TileConfig> {
        let (channels, outputs) = match (self, layout) {
            (Grouping::Dense, _) => return None,
            (Grouping::Depthwise, Layout::Nchw) => (1, 4),
            // 4 float pixels, 2 of 16-bit types (8 channels: 4 spilled at 128 registers).
            (Grouping::Depthwise, Layout::Nhwc) => {
                let channels = 16 / dtype.size_bytes() as u32;
                (channels, 16 / channels)
            }
            (Grouping::Grouped, _) => (1, 1),
        };
        Some(TileConfig {
            block_m: channels,
            block_n: GROUPED_THREADS * outputs,
            block_k: 1,
            thread_m: channels,
            thread_n: outputs,
        })
    }
}

/// Threads of a block of every grouped kernel ([`Grouping::tile`]).
pub const GROUPED_THREADS: u32 = 256;

/// Blocks per SM that a grouped kernel's launch bounds ask for
/// ([`KernelSpec::min_blocks_per_sm`]).
const GROUPED_MIN_BLOCKS: u32 = 2;

/// How a kernel multiplies: its MMA policy (`codegen/templates/mma_simt.cuh` for
/// [`Math::Simt`]; the tensor-core policies for [`Math::TensorOp`]).
///
/// Which math honours which problem is [`Precision::admits`]. The two tensor-core maths
/// share everything but their math operator (`OpMultiplyAdd` or `OpMultiplyAddFastF32` in
/// `codegen/templates/mma_tensorop.cuh`): tiles, loaders, main loop and epilogue, and every
/// rule of [`KernelSpec`] that [`Math::is_tensor_op`] selects.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Math {
    /// Strict FP32 fused multiply-adds on CUDA cores, a register outer product per thread.
    /// Float32 operands only. The default (and the math of every kernel written before
    /// the field existed).
    #[default]
    Simt,
    /// Tensor-core MMAs with float32 accumulation: bf16 and f16 operands as stored, float32
    /// operands rounded to TF32 (`cvt.rna.tf32.f32`).
    TensorOp,
    /// 3xTF32 (CUTLASS's `OpMultiplyAddFastF32`): float32 operands only, each split into a
    /// TF32 big part and a TF32 small part (the rounded remainder), multiplied as
    /// `small·big + big·small + big·big` with `mma.sync.m16n8k8` TF32 into float32
    /// accumulators: FP32 accuracy on tensor cores, three MMAs per product. The same tiles,
    /// loaders and epilogue as [`Math::TensorOp`] (the warp MMA only; kernel names `f32x3`).
    #[serde(rename = "tensor_op_fast_f32")]
    TensorOpFastF32,
}

impl Math {
    /// Every math, SIMT first.
    pub const ALL: [Math; 3] = [Math::Simt, Math::TensorOp, Math::TensorOpFastF32];

    /// Whether kernels of this math multiply on tensor cores ([`Math::TensorOp`] and
    /// [`Math::TensorOpFastF32`]): the tensor-core family's tiles, templates and rules.
    pub const fn is_tensor_op(self) -> bool {
        matches!(self, Math::TensorOp | Math::TensorOpFastF32)
    }

    /// The math of `dtype`'s kernels unless asked otherwise: [`Math::Simt`] for float32
    /// (strict), [`Math::TensorOp`] for bf16 and f16 (the only math they have).
    pub const fn default_for(dtype: DType) -> Math {
        match dtype {
            DType::F32 => Math::Simt,
            DType::Bf16 | DType::F16 => Math::TensorOp,
        }
    }

    /// The reduction depth of one tensor-core MMA for operands of `dtype`: 16 for bf16 and
    /// f16 (`mma.sync.m16n8k16`), 8 for TF32 and 3xTF32 (`m16n8k8`); 1 for SIMT (any depth).
    pub const fn k_step(self, dtype: DType) -> u32 {
        match (self, dtype) {
            (Math::Simt, _) => 1,
            (Math::TensorOp | Math::TensorOpFastF32, DType::F32) => 8,
            (Math::TensorOp | Math::TensorOpFastF32, DType::Bf16 | DType::F16) => 16,
        }
    }
}

/// What a kernel writes (`codegen/templates/epilogue.cuh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EpilogueKind {
    /// `act(alpha · sum + bias + beta · residual)`, activation, residual and factors chosen
    /// at run time; partial sums when the reduction is split.
    LinearCombination,
}

/// The element types of a kernel's operands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ElementTypes {
    /// The input (and residual).
    pub input: DType,
    /// The filter.
    pub filter: DType,
    /// The output (and bias).
    pub output: DType,
    /// Products are accumulated (and split partial sums kept) in this type.
    pub accumulator: DType,
}

/// One specialisation of the im2win convolution kernel: a member of a kernel family.
///
/// The family is named by [`KernelSpec::operation`], [`KernelSpec::algorithm`],
/// [`KernelSpec::elements`], [`KernelSpec::layout`], [`KernelSpec::math`] and
/// [`KernelSpec::epilogue`]; the member by its geometry and tile. Today every kernel is a
/// forward convolution of one element type (`dtype`) with the linear-combination epilogue,
/// so those views are derived from the fields; a field joins the struct (and the name) when
/// a second choice of it exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KernelSpec {
    /// Element type of input, filter and output.
    pub dtype: DType,
    /// Filter geometry, fixed or generic.
    pub geometry: Geometry,
    /// Tile sizes.
    pub tile: TileConfig,
    /// Window source and techniques ([`Variant::MATERIALISED`] when absent from JSON).
    #[serde(default)]
    pub variant: Variant,
    /// Memory order of input and output (NCHW when absent from JSON). Both algorithms take
    /// both layouts: the input transform builds the same window buffer from either.
    #[serde(default)]
    pub layout: Layout,
    /// How it multiplies ([`Math::Simt`] when absent from JSON: every kernel written before
    /// the field existed). Tensor-core kernels ([`Math::TensorOp`]) gather their windows
    /// from the NHWC input ([`Variant::FUSED`]).
    #[serde(default)]
    pub math: Math,
    /// Which input channels an output reads ([`Grouping::Dense`] when absent from JSON):
    /// grouped and depthwise kernels ([`KernelSpec::grouped`]) run only problems with
    /// groups > 1, dense ones only groups = 1.
    #[serde(default)]
    pub grouping: Grouping,
}

impl KernelSpec {
    /// A kernel for a fixed filter size and stride, multiplying with [`Math::default_for`]
    /// `dtype`: float32 on CUDA cores over the window buffer ([`Variant::MATERIALISED`]) for
    /// NCHW tensors; bf16 and f16 on tensor cores, gathering their windows with vector loads
    /// ([`Variant::FUSED`]) from NHWC tensors, their only algorithm and layout (as
    /// [`KernelSpec::tensor_op`]).
    pub const fn fixed(dtype: DType, geometry: FixedGeometry, tile: TileConfig) -> Self {
        KernelSpec::new(dtype, Geometry::Fixed(geometry), tile)
    }

    /// The generic kernel: any filter size, stride and dilation; the layout, variant and
    /// math as [`KernelSpec::fixed`].
    pub const fn generic(dtype: DType, tile: TileConfig) -> Self {
        KernelSpec::new(dtype, Geometry::Generic, tile)
    }

    /// A tensor-core kernel ([`Math::TensorOp`]) of element type `dtype` (float32: TF32),
    /// `geometry` and `tile` (read as [`TileConfig`] says for tensor cores), for NHWC
    /// tensors and a KRSC filter: the fused variant with vector loads (`C` a multiple of
    /// [`KernelSpec::channel_multiple`]) when `vector`, else the element-wise loader for any
    /// `C` (`_novec`).
    pub const fn tensor_op(
        dtype: DType,
        geometry: Geometry,
        tile: TileConfig,
        vector: bool,
    ) -> Self {
        KernelSpec {
            dtype,
            geometry,
            tile,
            variant: Variant {
                vector_loads: vector,
                ..Variant::FUSED
            },
            layout: Layout::Nhwc,
            math: Math::TensorOp,
            grouping: Grouping::Dense,
        }
    }

    /// A grouped kernel (`grouping` [`Grouping::Depthwise`] or [`Grouping::Grouped`]) of
    /// element type `dtype`, `geometry` and `layout`, with its one tile ([`Grouping::tile`]):
    /// FP32 on CUDA cores ([`Math::Simt`]) for every element type, the input and filter read
    /// in place. `None` for [`Grouping::Dense`].
    /// Named `im2win_f32_dw_r3s3_s1x1_b1x1024x1_t1x4`, `im2win_bf16simt_grouped_generic_b1x256x1_t1x1_nhwc`.
    pub const fn grouped(
        dtype: DType,
        grouping: Grouping,
        geometry: Geometry,
        layout: Layout,
    ) -> Option<Self> {
        match grouping.tile(layout, dtype) {
            Some(tile) => Some(KernelSpec {
                dtype,
                geometry,
                tile,
                variant: Variant::FUSED,
                layout,
                math: Math::Simt,
                grouping,
            }),
            None => None,
        }
    }

    /// Whether this kernel belongs to the grouped family (groups > 1).
    pub const fn is_grouped(&self) -> bool {
        !matches!(self.grouping, Grouping::Dense)
    }

    /// A 3xTF32 kernel ([`Math::TensorOpFastF32`]: float32 tensors at FP32 accuracy on
    /// tensor cores) of `geometry` and `tile`, otherwise as [`KernelSpec::tensor_op`] of
    /// float32: NHWC, the fused variant, vector loads when `vector`. Named `im2win_f32x3_..`.
    pub const fn tensor_op_fast_f32(geometry: Geometry, tile: TileConfig, vector: bool) -> Self {
        KernelSpec::tensor_op(DType::F32, geometry, tile, vector).with_math(Math::TensorOpFastF32)
    }

    /// A tensor-core kernel of `dtype` (bf16 or f16) with the warpgroup MMA (`_wgmma`,
    /// sm_90a) and vector loads: `tile` is a warpgroup tile, its "warp tile" `thread_m` =
    /// `block_m` (every channel of the block) × `thread_n` = `block_n` / warps (each warp
    /// holds that many pixels' sums), e.g. 128 pixels × 128 channels with one warpgroup is
    /// `b128x128x64_w128x32` (`TensorOpTileShape<.., BM = 128, BN = 128, WM = 32, WN = 128>`).
    pub const fn tensor_op_warpgroup(dtype: DType, geometry: Geometry, tile: TileConfig) -> Self {
        KernelSpec {
            dtype,
            geometry,
            tile,
            variant: Variant {
                vector_loads: true,
                warpgroup: true,
                ..Variant::FUSED
            },
            layout: Layout::Nhwc,
            math: Math::TensorOp,
            grouping: Grouping::Dense,
        }
    }

    const fn new(dtype: DType, geometry: Geometry, tile: TileConfig) -> Self {
        match Math::default_for(dtype) {
            Math::Simt => KernelSpec {
                dtype,
                geometry,
                tile,
                variant: Variant::MATERIALISED,
                layout: Layout::Nchw,
                math: Math::Simt,
                grouping: Grouping::Dense,
            },
            Math::TensorOp | Math::TensorOpFastF32 => {
                KernelSpec::tensor_op(dtype, geometry, tile, true)
            }
        }
    }

    /// The same kernel multiplying with `math` (e.g. [`Math::TensorOp`] on float32: TF32).
    /// The variant and layout stay: a tensor-core kernel must be [`Variant::FUSED`] for NHWC
    /// ([`KernelSpec::validate`]; [`KernelSpec::tensor_op`] makes one directly).
    pub const fn with_math(self, math: Math) -> Self {
        KernelSpec { math, ..self }
    }

    /// The same kernel in another variant.
    pub const fn with_variant(self, variant: Variant) -> Self {
        KernelSpec { variant, ..self }
    }

    /// The same warpgroup kernel warp-specialised (`_ws`, [`Variant::warp_specialized`]), with
    /// two MMA teams taking turns when `pingpong` (`_pingpong`; the tile is then one team's:
    /// one warpgroup).
    pub const fn warp_specialized(self, pingpong: bool) -> Self {
        let mut variant = self.variant;
        variant.warp_specialized = true;
        variant.pingpong = pingpong;
        KernelSpec { variant, ..self }
    }

    /// The same warp-specialised kernel with both operands copied by the tensor memory
    /// accelerator (`_tma`, [`Variant::tma`]).
    pub const fn tma(self) -> Self {
        let mut variant = self.variant;
        variant.tma = true;
        KernelSpec { variant, ..self }
    }

    /// The same kernel for another layout.
    pub const fn with_layout(self, layout: Layout) -> Self {
        KernelSpec { layout, ..self }
    }

    /// The operation: the forward convolution.
    pub const fn operation(&self) -> Operation {
        Operation::Forward
    }

    /// Where the windows come from.
    pub const fn algorithm(&self) -> Algorithm {
        match self.grouping {
            Grouping::Depthwise => return Algorithm::Depthwise,
            Grouping::Grouped => return Algorithm::GroupedDirect,
            Grouping::Dense => {}
        }
        if self.variant.fused {
            Algorithm::WindowGather
        } else {
            Algorithm::WindowBuffer
        }
    }

    /// The operand types: all [`KernelSpec::dtype`], accumulated in its
    /// [`DType::accumulator`].
    pub const fn elements(&self) -> ElementTypes {
        ElementTypes {
            input: self.dtype,
            filter: self.dtype,
            output: self.dtype,
            accumulator: self.dtype.accumulator(),
        }
    }

    /// How it multiplies ([`KernelSpec::math`] the field).
    pub const fn math(&self) -> Math {
        self.math
    }

    /// Whether this kernel computes a problem of element type `dtype` at `precision`: the
    /// same element type, and a math that the precision admits ([`Precision::admits`]).
    /// Grouped kernels ([`KernelSpec::is_grouped`]) compute every precision that applies to
    /// their type: a TF32, 3xTF32 or FP32-accuracy float32 problem gets strict FP32 products
    /// (at least as accurate as asked; explicit here, so that dispatch and the tuning table
    /// agree).
    pub fn computes(&self, dtype: DType, precision: Precision) -> bool {
        if self.is_grouped() {
            // Grouped kernels compute every precision that applies to their type in strict
            // FP32 on CUDA cores: TF32 (and 3xTF32, FP32 accuracy) requests get products at
            // least as accurate as asked (cuDNN serves depthwise TF32 the same way).
            return self.dtype == dtype && precision.applies_to(dtype);
        }
        self.dtype == dtype && precision.admits(self.dtype, self.math)
    }

    /// The element type and math as kernel names spell them ([`numeric_name`]): `f32`,
    /// `tf32`, `bf16` or `f16`.
    pub const fn numeric_name(&self) -> &'static str {
        numeric_name(self.dtype, self.math)
    }

    /// What it writes: the linear combination with a run-time activation.
    pub const fn epilogue(&self) -> EpilogueKind {
        EpilogueKind::LinearCombination
    }

    /// The `extern "C"` name of the kernel, for example
    /// `im2win_f32_r3s3_s1x1_b128x128x8_t8x8`, `im2win_f32_generic_b128x128x8_t8x8` or, for
    /// the fused variant, `im2win_f32_r3s3_s1x1_b128x128x8_t8x8_fused`; NHWC kernels end in
    /// `_nhwc` (`..._fused_nhwc`), NCHW is the default and not spelled. The part after
    /// `im2win_` names the element type and the math ([`numeric_name`]): `f32` for strict
    /// float32 on CUDA cores (every kernel named before tensor cores, unchanged), `tf32` for
    /// float32 on tensor cores, `f32x3` for float32 at FP32 accuracy on tensor cores
    /// (3xTF32), `bf16` and `f16` (tensor cores). Tensor-core kernels spell
    /// their warp tile with `w` ([`TileConfig::name_for`]) and end in `_novec` when they
    /// gather element by element (any `C`), e.g.
    /// `im2win_bf16_r3s3_s1x1_b64x128x32_w32x64_fused_nhwc` (128 pixels × 64 channels per
    /// block, 64-byte rows, 4 stages) and `im2win_tf32_generic_b96x128x16_w48x64_fused_novec_nhwc`.
    pub fn name(&self) -> String {
        self.to_string()
    }

    /// Checks the tile (its shared memory counted in this element type) and, for fixed
    /// kernels, that filter and stride are at least 1; and that the templates implement the
    /// combination: the ablation's variants for NCHW only, bf16 and f16 on tensor cores only;
    /// tensor-core kernels ([`Math::TensorOp`]) as the fused variant (window gather, with or
    /// without vector loads) for NHWC tensors, their tile a tensor-core tile
    /// ([`TileConfig::validate_tensor_op`]: `block_k` a whole number of the MMA's depth,
    /// [`Math::k_step`], among others).
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.is_grouped() {
            return self.validate_grouped();
        }
        if self.math.is_tensor_op() {
            return self.validate_tensor_op();
        }
        if self.variant.warpgroup {
            return Err(SpecError::Unsupported(
                "the warpgroup MMA (`_wgmma`) is a tensor-core MMA: SIMT kernels multiply on CUDA cores",
            ));
        }
        self.tile.validate_for(self.dtype)?;
        self.validate_geometry()?;
        if self.dtype != DType::F32 {
            return Err(SpecError::Unsupported(
                "bf16 and f16 kernels multiply on tensor cores (Math::TensorOp): the SIMT MMA takes float32 only",
            ));
        }
        if self.layout == Layout::Nhwc && !self.variant.is_complete() {
            return Err(SpecError::Unsupported(
                "the ablation's variants exist for NCHW only",
            ));
        }
        if self.layout == Layout::Nhwc && self.variant.fused {
            // The gathered SIMT NHWC windows are interleaved by NHWC_INTERLEAVE channels: runs
            // of whole groups. (The window-buffer kernels read the im2win buffer, which the
            // input transform builds alike from either layout: row-major windows.)
            let t = self.tile;
            let b_loads = t.block_n * t.block_k / t.threads();
            if !gcd(b_loads, t.block_k).is_multiple_of(NHWC_INTERLEAVE) {
                return Err(SpecError::InvalidTile(
                    t,
                    "NHWC kernels copy groups of 2 channels: each thread's run of window elements per stage (gcd of block_n·block_k/threads and block_k) must be even".to_string(),
                ));
            }
        }
        if self.shared_bytes() > u64::from(MAX_STATIC_SHARED_BYTES) {
            return Err(SpecError::InvalidTile(
                self.tile,
                "the epilogue's staged group of output rows exceeds CUDA's 48 KiB of static shared memory".to_string(),
            ));
        }
        Ok(())
    }

    /// [`KernelSpec::validate`] of a grouped spec: FP32 math on CUDA cores, the fused
    /// variant (the input read in place), the family's one tile ([`Grouping::tile`]), and a
    /// generic geometry for the direct grouped kernel.
    fn validate_grouped(&self) -> Result<(), SpecError> {
        if self.math != Math::Simt || self.variant != Variant::FUSED {
            return Err(SpecError::Unsupported(
                "grouped and depthwise kernels compute in FP32 on CUDA cores (Math::Simt) and read the input in place (Variant::FUSED)",
            ));
        }
        if Some(self.tile) != self.grouping.tile(self.layout, self.dtype) {
            return Err(SpecError::InvalidTile(
                self.tile,
                "a grouped kernel has its family's one tile (Grouping::tile)".to_string(),
            ));
        }
        if self.grouping == Grouping::Grouped && self.geometry != Geometry::Generic {
            return Err(SpecError::Unsupported(
                "the direct grouped kernel reads its geometry at run time (generic only)",
            ));
        }
        self.validate_geometry()
    }

    /// A fixed geometry's filter size and stride are at least 1.
    fn validate_geometry(&self) -> Result<(), SpecError> {
        match self.geometry {
            Geometry::Fixed(g) if [g.filter_h, g.filter_w, g.stride_h, g.stride_w].contains(&0) => {
                Err(SpecError::InvalidGeometry(g))
            }
            _ => Ok(()),
        }
    }

    /// [`KernelSpec::validate`] of a tensor-core spec: the template
    /// (`codegen/templates/conv_fprop_tensorop.cuh`) gathers NHWC windows from the input
    /// (no window buffer, a KRSC filter read in place) with a multistage pipeline; its one
    /// choice of technique is the loader's vector copies ([`Variant::vector_loads`]).
    fn validate_tensor_op(&self) -> Result<(), SpecError> {
        let v = self.variant;
        if !v.fused || !v.micro_kernel || !v.double_buffering {
            return Err(SpecError::Unsupported(
                "tensor-core kernels gather their windows from the input with a multistage pipeline: the fused variant (Variant::FUSED), with or without vector loads",
            ));
        }
        if self.layout != Layout::Nhwc {
            return Err(SpecError::Unsupported(
                "the tensor-core kernels read NHWC input and write NHWC output (NCHW is not implemented yet)",
            ));
        }
        if self.math == Math::TensorOpFastF32 && (self.dtype != DType::F32 || v.warpgroup) {
            return Err(SpecError::Unsupported(
                "3xTF32 (Math::TensorOpFastF32) splits float32 operands for the warp MMA: float32 only, without `_wgmma`",
            ));
        }
        let step = self.math.k_step(self.dtype);
        if !self.tile.block_k.is_multiple_of(step) {
            return Err(SpecError::InvalidTile(
                self.tile,
                format!(
                    "a {} tensor-core stage is a whole number of MMAs deep: block_k must be a multiple of {step}",
                    self.numeric_name()
                ),
            ));
        }
        self.tile.validate_tensor_op(self.dtype)?;
        if v.warpgroup {
            self.validate_warpgroup()?;
        }
        if v.warp_specialized || v.pingpong || v.tma {
            self.validate_warp_specialized()?;
        }
        self.validate_geometry()
    }

    /// The warpgroup MMA's rules (`WarpgroupMmaTensorOp`, `mma_warpgroup.cuh`): bf16 or f16
    /// with vector loads, or float32 as TF32 ([`Math::TensorOp`]) copied by the tensor memory
    /// accelerator ([`Variant::tma`], whose TFLOAT32 tensor maps round the operands to TF32 on
    /// the way into shared memory: `cp.async` would leave them unrounded, and the tensor cores
    /// would then truncate them); whole warpgroups that split the block's pixels in 64-row
    /// slices, each warp holding all `block_m` channels (`thread_m` = `block_m` of 64, 128 or
    /// 256); 64- or 128-byte rows (the hardware's swizzles).
    fn validate_warpgroup(&self) -> Result<(), SpecError> {
        let t = self.tile;
        let bad = |why: &str| Err(SpecError::InvalidTile(t, why.to_string()));
        if !self.variant.vector_loads {
            return Err(SpecError::Unsupported(
                "the warpgroup MMA (wgmma) kernels copy whole 16-byte pieces: vector loads",
            ));
        }
        match (self.dtype, self.math) {
            (DType::Bf16 | DType::F16, Math::TensorOp) => {}
            (DType::F32, Math::TensorOp) if self.variant.tma => {}
            (DType::F32, Math::TensorOp) => {
                return Err(SpecError::Unsupported(
                    "a TF32 warpgroup kernel takes its operands by TMA (`_tma`), whose copies round them to TF32",
                ));
            }
            _ => {
                return Err(SpecError::Unsupported(
                    "the warpgroup MMA (wgmma) kernels take bf16, f16 or TF32",
                ));
            }
        }
        if !matches!(t.block_m, 64 | 128 | 256) || t.thread_m != t.block_m {
            return bad(
                "a warpgroup tile has 64, 128 or 256 channels and each warp holds all of them (thread_m = block_m)",
            );
        }
        let warps = t.block_n / t.thread_n;
        if !warps.is_multiple_of(4) || !t.block_n.is_multiple_of(64 * (warps / 4)) {
            return bad(
                "a warpgroup tile is whole warpgroups (warps a multiple of 4), each taking whole 64-pixel slices of block_n",
            );
        }
        if !matches!(
            u64::from(t.block_k) * self.dtype.size_bytes() as u64,
            64 | 128
        ) {
            return bad("a warpgroup tile's rows are 64 or 128 bytes (the wgmma swizzles)");
        }
        Ok(())
    }

    /// The warp-specialised kernels' rules (`mainloop_warp_specialized.cuh`): warpgroup MMA
    /// kernels (whose copies are all `cp.async`); a ping-pong team is one warpgroup; shared
    /// memory within sm_90's limit; no split reduction.
    fn validate_warp_specialized(&self) -> Result<(), SpecError> {
        let v = self.variant;
        if !v.warpgroup || !v.warp_specialized || self.math != Math::TensorOp {
            return Err(SpecError::Unsupported(
                "warp specialisation (`_ws`, and `_pingpong` with it) is a warpgroup-MMA pipeline: `_wgmma_ws`",
            ));
        }
        if v.pingpong && self.tile.warps() != 4 {
            return Err(SpecError::InvalidTile(
                self.tile,
                "a ping-pong team is one warpgroup: 4 warps (thread_n = block_n / 4)".to_string(),
            ));
        }
        let shared = self.warp_specialized_bytes(WARP_SPECIALIZED_STAGES);
        if shared > u64::from(MAX_DYNAMIC_SHARED_BYTES_SM90) {
            return Err(SpecError::InvalidTile(
                self.tile,
                format!(
                    "its {WARP_SPECIALIZED_STAGES} stages and staging take {shared} bytes of shared memory, more than the {MAX_DYNAMIC_SHARED_BYTES_SM90} a block may have on sm_90"
                ),
            ));
        }
        Ok(())
    }

    /// Whether dispatch may pick this kernel: a SIMT kernel with every technique on
    /// ([`Variant::is_complete`]: not one of the ablation's), a tensor-core kernel with or
    /// without vector loads (two loaders, both complete kernels).
    pub const fn is_complete(&self) -> bool {
        let v = self.variant;
        if self.is_grouped() {
            return v.fused && v.micro_kernel && v.vector_loads && v.double_buffering;
        }
        match self.math {
            Math::Simt => v.is_complete(),
            Math::TensorOp | Math::TensorOpFastF32 => {
                v.fused && v.micro_kernel && v.double_buffering
            }
        }
    }

    /// Threads of one block: one per thread tile (SIMT), 32 per warp tile (tensor cores).
    /// What the kernel's launch bounds and its launch say. 0 for a tile whose levels do not
    /// nest.
    pub const fn threads(&self) -> u32 {
        match self.math {
            Math::Simt => match (
                self.tile.block_m.checked_div(self.tile.thread_m),
                self.tile.block_n.checked_div(self.tile.thread_n),
            ) {
                (Some(m), Some(n)) => m.saturating_mul(n),
                _ => 0,
            },
            Math::TensorOp | Math::TensorOpFastF32 => {
                let mma = self
                    .tile
                    .warps()
                    .saturating_mul(32)
                    .saturating_mul(self.mma_teams());
                if self.variant.warp_specialized {
                    mma.saturating_add(PRODUCER_THREADS)
                } else {
                    mma
                }
            }
        }
    }

    /// Teams of MMA warps in a block: 2 in a ping-pong kernel ([`Variant::pingpong`]), each a
    /// whole tile, else 1.
    pub const fn mma_teams(&self) -> u32 {
        if self.variant.pingpong { 2 } else { 1 }
    }

    /// Whether the kernel's blocks are persistent (the warp-specialised ones): block `b` takes
    /// tiles `b`, `b + gridDim.x`, ..., so a launch passes at most as many blocks as fit on
    /// the GPU at once.
    pub const fn is_persistent(&self) -> bool {
        self.variant.warp_specialized
    }

    /// Shared-memory stages of the main loop: 2 for SIMT kernels (1 in the ablation's kernel
    /// without double buffering); for tensor-core kernels 4 of rows up to 64 bytes, 3 of
    /// 128-byte rows (see [`TileConfig`]); for warp-specialised ones as many as fit beside
    /// the epilogue's staging, 4 to [`WARP_SPECIALIZED_MAX_STAGES`].
    pub fn stages(&self) -> u32 {
        match self.math {
            Math::Simt if self.variant.double_buffering => 2,
            Math::Simt => 1,
            Math::TensorOp | Math::TensorOpFastF32 if self.variant.warp_specialized => {
                self.warp_specialized_stages()
            }
            Math::TensorOp | Math::TensorOpFastF32 => tensor_op_stages(&self.tile, self.dtype),
        }
    }

    /// Bytes of dynamic shared memory a launch of the kernel passes: 0 for SIMT kernels
    /// (static shared memory), [`KernelSpec::shared_bytes`] for tensor-core kernels, whose
    /// stages live in dynamic shared memory (above 48 KiB the engine raises the function's
    /// `CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES` first).
    pub fn dynamic_shared_bytes(&self) -> u64 {
        match self.math {
            Math::Simt => 0,
            Math::TensorOp | Math::TensorOpFastF32 => self.shared_bytes(),
        }
    }

    /// Blocks that the kernel's launch bounds ask to fit on one multiprocessor at once (the
    /// second argument of `__launch_bounds__`): [`TileConfig::min_blocks_per_sm`] for SIMT
    /// kernels; for tensor-core kernels 3 for the warp-MMA tiles with at most 64 sums per
    /// thread in at most 48 KiB of shared memory (128 × 64 with 64-byte rows: the launch
    /// bounds must say so, or ptxas spends the registers that the third block needs), else 1
    /// (fragments and accumulators need up to 255 registers; 2 blocks fit by their use).
    /// 3xTF32 kernels ([`Math::TensorOpFastF32`]) always 1: their big and small fragments
    /// need more than the 170 registers that three blocks leave.
    pub const fn min_blocks_per_sm(&self) -> u32 {
        if self.is_grouped() {
            // Two blocks of 256 threads at up to 128 registers (they use 32-80). Without a
            // minimum in the launch bounds, ptxas spilled some of them at 40-48 registers.
            return GROUPED_MIN_BLOCKS;
        }
        match self.math {
            Math::Simt => self.tile.min_blocks_per_sm(),
            Math::TensorOpFastF32 => 1,
            Math::TensorOp => {
                let threads = if self.threads() == 0 {
                    1
                } else {
                    self.threads()
                };
                let sums = self.tile.block_m as u64 * self.tile.block_n as u64 / threads as u64;
                if self.variant.vector_loads
                    && !self.variant.warpgroup
                    && sums <= 64
                    && tensor_op_shared_bytes(&self.tile, self.dtype) <= 48 * 1024
                {
                    3
                } else {
                    1
                }
            }
        }
    }

    /// Output sums a thread holds: `block_m · block_n / threads` (a SIMT thread's tile, a
    /// tensor-core warp tile over its 32 lanes).
    pub const fn sums_per_thread(&self) -> u64 {
        // A tensor-core tile's sums are its team's (the copying warpgroup holds none).
        let threads = match self.math {
            Math::Simt => self.threads(),
            Math::TensorOp | Math::TensorOpFastF32 => self.tile.warps().saturating_mul(32),
        };
        match (self.tile.block_m as u64 * self.tile.block_n as u64).checked_div(threads as u64) {
            Some(sums) => sums,
            None => 0,
        }
    }

    /// Whether the kernel can split its reduction over `gridDim.z` (partial sums in the
    /// workspace, then the split reduction): every dense SIMT kernel (not the grouped ones,
    /// [`KernelSpec::is_grouped`]: one thread per output, no split), and the tensor-core
    /// ([`Math::TensorOp`]) kernels of at most [`MAX_SPLIT_SUMS_PER_THREAD`] sums a thread.
    /// Not the warp tiles of 128 sums a thread, which sit at 252-255 registers on sm_80 and
    /// spilled with the split's code (its share of the stages, the partial-sum stores); they
    /// serve large layers, whose grids fill the GPU unsplit. Not the 3xTF32 kernels
    /// ([`Math::TensorOpFastF32`]: their block sums already take up to 252 registers).
    pub const fn splits_reduction(&self) -> bool {
        match self.math {
            Math::Simt => !self.is_grouped(),
            // Not the warp-specialised kernels (their persistent grids are not split).
            Math::TensorOp => {
                !self.variant.warp_specialized
                    && self.sums_per_thread() <= MAX_SPLIT_SUMS_PER_THREAD
            }
            Math::TensorOpFastF32 => false,
        }
    }

    /// The register cap per thread that follows from [`KernelSpec::min_blocks_per_sm`]
    /// (at most 255).
    pub const fn max_registers(&self) -> u32 {
        if self.is_grouped() {
            return 65_536 / (GROUPED_THREADS * GROUPED_MIN_BLOCKS);
        }
        match self.math {
            Math::Simt => self.tile.max_registers(),
            Math::TensorOp | Math::TensorOpFastF32 => {
                let registers = match 65_536_u32
                    .checked_div(self.threads().saturating_mul(self.min_blocks_per_sm()))
                {
                    Some(registers) => registers,
                    None => 255,
                };
                if registers > 255 { 255 } else { registers }
            }
        }
    }

    /// The input channels `C` must be a multiple of this for the kernel to run: a stage's
    /// `block_k` for a kernel whose windows come by TMA ([`Variant::tma`]: each stage is one
    /// tap's channels); the elements of one 16-byte piece (8 bf16 or f16, 4 floats) for
    /// another tensor-core kernel with vector loads, whose copies move a tap's consecutive
    /// channels 16 bytes at a time; 1 for every other kernel.
    pub const fn channel_multiple(&self) -> usize {
        if self.variant.tma {
            // A stage is `block_k` channels of one filter tap (one im2col box).
            return self.tile.block_k as usize;
        }
        match (self.math, self.variant.vector_loads) {
            (Math::TensorOp | Math::TensorOpFastF32, true) => {
                TENSOR_OP_CHUNK_BYTES as usize / self.dtype.size_bytes()
            }
            _ => 1,
        }
    }

    /// Whether the kernel needs its input and filter to start at 16-byte aligned addresses
    /// (a tensor-core kernel with vector loads: each piece is one 16-byte `cp.async`). Every
    /// other kernel checks the alignment of what it reads itself. A call-time property:
    /// the runtime's `Engine::conv2d` plans with the operands' alignment.
    pub const fn needs_aligned_operands(&self) -> bool {
        self.math.is_tensor_op() && self.variant.vector_loads
    }

    /// Bytes of one epilogue staging area of a warp-specialised block (one per MMA team): as
    /// large as the tile's float sums or the largest power of two that the rest of
    /// [`MAX_DYNAMIC_SHARED_BYTES_SM90`] leaves each team beside [`WARP_SPECIALIZED_STAGES`]
    /// stages. (`tile_tensorop.cuh` computes it from the ring's actual depth, which
    /// [`KernelSpec::stages`] chooses so that the same size results.)
    fn warp_specialized_staging_bytes(&self) -> u64 {
        let stages = u64::from(WARP_SPECIALIZED_STAGES);
        let operands = self.warp_specialized_stage_bytes().saturating_mul(stages);
        let barriers = 16 * stages;
        let room = (MAX_DYNAMIC_SHARED_BYTES_SM90 as u64).saturating_sub(operands + barriers)
            / self.mma_teams() as u64;
        let sums = (self.tile.block_m as u64 * self.tile.block_n as u64).saturating_mul(4);
        let wanted = sums.min(room).max(1);
        1u64 << (63 - wanted.leading_zeros())
    }

    /// Bytes of one stage of a warp-specialised ring: `block_m` + `block_n` rows.
    fn warp_specialized_stage_bytes(&self) -> u64 {
        (self.tile.block_m as u64 + self.tile.block_n as u64)
            .saturating_mul(tensor_op_row_bytes(&self.tile, self.dtype))
    }

    /// The depth of a warp-specialised kernel's ring: as many stages as fit beside the
    /// staging areas in [`MAX_DYNAMIC_SHARED_BYTES_SM90`], from [`WARP_SPECIALIZED_STAGES`] to
    /// [`WARP_SPECIALIZED_MAX_STAGES`]: 5 for the 128 × 128 tiles of 128-byte rows (one team's
    /// 64 KiB of sums, or two teams' 32 KiB each), 6 for the ping-pong 128 × 64 tile.
    fn warp_specialized_stages(&self) -> u32 {
        (WARP_SPECIALIZED_STAGES..=WARP_SPECIALIZED_MAX_STAGES)
            .rev()
            .find(|&stages| {
                self.warp_specialized_bytes(stages) <= u64::from(MAX_DYNAMIC_SHARED_BYTES_SM90)
            })
            .unwrap_or(WARP_SPECIALIZED_STAGES)
    }

    /// Dynamic shared memory of a warp-specialised block with a ring of `stages` (`Tile::SMEM_BYTES`
    /// in `tile_tensorop.cuh`): the operand stages, per MMA team a staging area
    /// ([`KernelSpec::warp_specialized_staging_bytes`]), two 8-byte barriers a stage.
    fn warp_specialized_bytes(&self, stages: u32) -> u64 {
        self.warp_specialized_stage_bytes()
            .saturating_mul(u64::from(stages))
            .saturating_add(self.mma_teams() as u64 * self.warp_specialized_staging_bytes())
            .saturating_add(16 * u64::from(stages))
    }

    /// Shared memory of one block in bytes.
    ///
    /// A SIMT kernel's is static: the main loop's stages ([`TileConfig::shared_bytes`]) or,
    /// after it, the epilogue's staged group of output rows, whichever is larger (the two
    /// share the bytes). The same number as `Conv2dFpropSimt::SHARED_BYTES` in
    /// `codegen/templates/conv_fprop.cuh`, which each rendered kernel checks with a
    /// `static_assert`. A group is `TY · VM` output channels (the rows of every thread's
    /// `VM`-wide channel group) by `block_n` pixels of accumulators, staged channel by channel
    /// (NCHW) or pixel by pixel with each line padded to 4 words past a multiple of 32
    /// (NHWC), as `StagedOutput` in `epilogue.cuh` lays them out.
    ///
    /// A tensor-core kernel's is dynamic ([`KernelSpec::dynamic_shared_bytes`]):
    /// [`KernelSpec::stages`] × (`block_m` + `block_n`) rows × `block_k` elements
    /// (`Tile::SMEM_BYTES` in `codegen/templates/tile_tensorop.cuh`, which each rendered
    /// kernel checks with a `static_assert`); its epilogue writes from registers.
    ///
    /// (u64: an invalid tile may be huge.)
    pub fn shared_bytes(&self) -> u64 {
        if self.is_grouped() {
            // Direct loads: no shared memory.
            return 0;
        }
        if self.math.is_tensor_op() {
            if self.variant.warp_specialized {
                return self.warp_specialized_bytes(self.stages());
            }
            return tensor_op_shared_bytes(&self.tile, self.dtype);
        }
        let t = self.tile;
        // Two stages, one in the ablation's kernel without double buffering.
        let stages = if self.variant.double_buffering { 2 } else { 1 };
        let mainloop = t.shared_bytes(self.dtype) / 2 * stages;
        let elements = self.elements();
        // VM: the widest power of two up to one 16-byte access of the widest of filter, input
        // and output that divides thread_m (TileShape::VM; 1 in the ablation's kernel without
        // vector loads).
        let widest = [elements.filter, elements.input, elements.output]
            .iter()
            .map(|d| d.size_bytes() as u32)
            .max()
            .unwrap_or(4);
        let most = if self.variant.vector_loads {
            16 / widest
        } else {
            1
        };
        let mut vm = 1u32;
        while 2 * vm <= most && t.thread_m.is_multiple_of(2 * vm) {
            vm *= 2;
        }
        let rows = u64::from(t.block_m / t.thread_m.max(1)) * u64::from(vm);
        let lines_and_stride = match self.layout {
            Layout::Nchw => rows.saturating_mul(u64::from(t.block_n)),
            Layout::Nhwc => u64::from(t.block_n).saturating_mul(rows + (36 - rows % 32) % 32),
        };
        let staged = lines_and_stride.saturating_mul(elements.accumulator.size_bytes() as u64);
        mainloop.max(staged)
    }
}

impl KernelSpec {
    /// The part of kernel names that the element type, math and geometry fix, before the
    /// tile: `im2win_f32_r3s3_s1x1`, `im2win_tf32_generic` or `im2win_bf16_r1s1_s2x2`. A
    /// [`KernelSpec::name`] is this, `_`, the tile's [`TileConfig::name`] and the variant's
    /// suffixes.
    /// Grouped kernels spell their family after it: `im2win_f32_dw_r3s3_s2x2`,
    /// `im2win_f32_grouped_generic` (bf16 and f16 ones `bf16simt`, `f16simt`: FP32 math on
    /// CUDA cores, [`numeric_name`]).
    pub fn name_stem(dtype: DType, math: Math, grouping: Grouping, geometry: Geometry) -> String {
        let numeric = match grouping.token() {
            Some(token) => format!("{}_{token}", numeric_name(dtype, math)),
            None => numeric_name(dtype, math).to_string(),
        };
        match geometry {
            Geometry::Fixed(g) => format!(
                "im2win_{numeric}_r{}s{}_s{}x{}",
                g.filter_h, g.filter_w, g.stride_h, g.stride_w
            ),
            Geometry::Generic => format!("im2win_{numeric}_generic"),
        }
    }
}

impl fmt::Display for KernelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}_{}",
            KernelSpec::name_stem(self.dtype, self.math, self.grouping, self.geometry),
            self.tile.name_for(self.math)
        )?;
        self.variant
            .suffixes()
            .try_for_each(|suffix| f.write_str(suffix))?;
        match self.layout {
            Layout::Nchw => Ok(()),
            Layout::Nhwc => f.write_str("_nhwc"),
        }
    }
}

impl FromStr for KernelSpec {
    type Err = SpecError;

    /// Parses a kernel name back into its spec; the inverse of [`KernelSpec::name`].
    fn from_str(name: &str) -> Result<Self, SpecError> {
        let bad = || SpecError::BadName(name.to_string());
        let rest = name.strip_prefix("im2win_").ok_or_else(bad)?;
        let mut parts: Vec<&str> = rest.split('_').collect();
        let mut layout = Layout::Nchw;
        if parts.last() == Some(&"nhwc") {
            layout = Layout::Nhwc;
            parts.pop();
        }
        // Variant suffixes; the round trip at the end rejects a wrong order or a repeat.
        let mut variant = Variant::MATERIALISED;
        while let Some(&last) = parts.last() {
            match last {
                "fused" => variant.fused = true,
                "nomicro" => variant.micro_kernel = false,
                "novec" => variant.vector_loads = false,
                "nodb" => variant.double_buffering = false,
                "wgmma" => variant.warpgroup = true,
                "ws" => variant.warp_specialized = true,
                "pingpong" => variant.pingpong = true,
                "tma" => variant.tma = true,
                _ => break,
            }
            parts.pop();
        }
        // A grouped family's token follows the numeric name.
        let mut grouping = Grouping::Dense;
        if parts.len() > 1 {
            let token = parts[1];
            if let Some(g) = [Grouping::Depthwise, Grouping::Grouped]
                .into_iter()
                .find(|g| g.token() == Some(token))
            {
                grouping = g;
                parts.remove(1);
            }
        }
        let (numeric, geometry, block, thread) = match parts.as_slice() {
            [d, "generic", b, t] => (d, Geometry::Generic, b, t),
            [d, rs, st, b, t] => {
                let (r, s) = rs
                    .strip_prefix('r')
                    .and_then(|x| x.split_once('s'))
                    .ok_or_else(bad)?;
                let [stride_h, stride_w] =
                    dims::<2>(st.strip_prefix('s').ok_or_else(bad)?).ok_or_else(bad)?;
                let geometry = FixedGeometry {
                    filter_h: r.parse().map_err(|_| bad())?,
                    filter_w: s.parse().map_err(|_| bad())?,
                    stride_h,
                    stride_w,
                };
                (d, Geometry::Fixed(geometry), b, t)
            }
            _ => return Err(bad()),
        };
        let [block_m, block_n, block_k] =
            dims::<3>(block.strip_prefix('b').ok_or_else(bad)?).ok_or_else(bad)?;
        // `t` before a SIMT kernel's thread tile, `w` before a tensor-core kernel's warp
        // tile: the round trip below checks that the letter matches the math.
        let level = thread
            .strip_prefix('t')
            .or_else(|| thread.strip_prefix('w'))
            .ok_or_else(bad)?;
        let [thread_m, thread_n] = dims::<2>(level).ok_or_else(bad)?;
        let (dtype, math) = match parse_numeric_name(numeric) {
            Some(pair) => pair,
            // Not an element type: the error names it (`f64`), as before.
            None => return Err(SpecError::UnknownDType(numeric.to_string())),
        };
        let spec = KernelSpec {
            dtype,
            geometry,
            tile: TileConfig {
                block_m,
                block_n,
                block_k,
                thread_m,
                thread_n,
            },
            variant,
            layout,
            math,
            grouping,
        };
        // Reject spellings that parse but do not round-trip (leading zeros, "+1", ...).
        if spec.name() != name {
            return Err(bad());
        }
        Ok(spec)
    }
}

/// Channels per copy of the NHWC window gather, interleaved in shared memory
/// (`InterleavedWindows<Tile, 2>` in `codegen/templates/conv_fprop.cuh`).
pub const NHWC_INTERLEAVE: u32 = 2;

/// Greatest common divisor (the kernels' `im2win_gcd`).
const fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Parses `AxBxC` into exactly `N` numbers.
fn dims<const N: usize>(text: &str) -> Option<[u32; N]> {
    let values: Vec<u32> = text
        .split('x')
        .map(|v| v.parse().ok())
        .collect::<Option<_>>()?;
    values.try_into().ok()
}

/// Why a spec or kernel name is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The data type is not one im2win generates kernels for.
    #[error(
        "unknown data type `{0}`: im2win knows `f32`, `bf16` and `f16` (kernel names also `tf32`: float32 on tensor cores, and `f32x3`: float32 as 3xTF32)"
    )]
    UnknownDType(String),
    /// The text is not a kernel name of the form `im2win_f32_r3s3_s1x1_b128x128x8_t8x8`.
    #[error(
        "`{0}` is not an im2win kernel name (expected e.g. `im2win_f32_r3s3_s1x1_b128x128x8_t8x8` or `im2win_f32_generic_b128x128x8_t8x8`)"
    )]
    BadName(String),
    /// The tile levels do not nest.
    #[error("invalid tile {0:?}: {1}")]
    InvalidTile(TileConfig, String),
    /// The combination of algorithm, layout and variant is not one the templates implement.
    #[error("unsupported kernel spec: {0}")]
    Unsupported(&'static str),
    /// A fixed geometry has a zero filter size or stride.
    #[error("invalid geometry {0:?}: filter size and stride must be at least 1")]
    InvalidGeometry(FixedGeometry),
    /// A filter size, stride or tile is not spelled as the macro and the manifest expect.
    #[error("`{text}` is not a valid {what}: expected {expected}")]
    BadSyntax {
        /// What was being parsed: `"filter"`, `"stride"` or `"tile"`.
        what: &'static str,
        /// The text given.
        text: String,
        /// The accepted spellings.
        expected: &'static str,
    },
}
