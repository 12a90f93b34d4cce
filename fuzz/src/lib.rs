//! What the `validate_plan` fuzz target checks, shared with the stable tests.
//!
//! [`decode`] turns any bytes into a [`Conv2dProblem`] (every field, from small sizes to
//! `usize::MAX`), a multiprocessor count and a kernel spec. [`check`] then runs validation,
//! the size queries, `ConvParams`, dispatch ([`Plan::new`]) and forced plans
//! ([`Plan::for_spec`]) on them and compares every answer with an independent model of
//! `docs/DESIGN.md` computed in `u128`, where nothing overflows. It panics on any
//! disagreement, which the fuzzer reports as a crash.
//!
//! Only the `im2win` facade is used, so the root crate's tests include this file (with
//! `#[path]`) to replay the committed corpus and to drive the same checks from proptest on
//! stable Rust.

// Each includer uses only part of it.
#![allow(dead_code)]

use im2win::codegen::{Catalogue, DType, FixedGeometry, Geometry, KernelSpec, TileConfig, Variant};
use im2win::gpu::can_implement;
use im2win::problem::{MAX_DIM, MAX_ELEMENTS};
use im2win::{Conv2dProblem, ConvParams, Error, Padding, Plan};

/// The multiprocessor count of an H200, which dispatch is always checked with.
pub const H200_SMS: usize = 132;

/// CUDA's grid limits, as dispatch must respect them.
const MAX_GRID_X: u128 = i32::MAX as u128;
const MAX_GRID_Y: u128 = 65_535;

/// Values at the edges of the validation limits and of integer types, that random bytes
/// would rarely hit.
pub const INTERESTING: [usize; 26] = [
    0,
    1,
    2,
    3,
    8,
    128,
    129,
    46_340, // ⌊√2^31⌋
    46_341,
    1 << 15,
    1 << 16,
    1 << 20,
    65_535 * 128,
    65_535 * 128 + 1,
    1 << 30,
    (1 << 30) + 1,
    MAX_DIM - 1,
    MAX_DIM,
    MAX_DIM + 1,
    1 << 32,
    MAX_ELEMENTS - 1,
    MAX_ELEMENTS,
    MAX_ELEMENTS + 1,
    1 << 62,
    usize::MAX - 1,
    usize::MAX,
];

/// One decoded fuzz input.
#[derive(Debug, Clone, Copy)]
pub struct Input {
    /// The problem.
    pub problem: Conv2dProblem,
    /// A multiprocessor count for dispatch (besides [`H200_SMS`]); any value, 0 included.
    pub multiprocessors: usize,
    /// A kernel spec to force with [`Plan::for_spec`]; often invalid.
    pub spec: KernelSpec,
}

/// Reads bytes one at a time; past the end every byte is 0.
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos += 1;
        b
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(std::array::from_fn(|_| self.byte()))
    }

    /// One size: usually small, sometimes a power of two ± 1, an [`INTERESTING`] value or
    /// any 64-bit value.
    fn value(&mut self) -> usize {
        let tag = self.byte();
        match tag % 8 {
            0..=2 => usize::from(self.byte() % 16),
            3 => usize::from(self.byte()),
            4 => {
                let k = self.byte() % 64;
                let delta = usize::from(self.byte() % 3);
                (1_usize << k).wrapping_add(delta).wrapping_sub(1)
            }
            5 => INTERESTING[usize::from(self.byte()) % INTERESTING.len()],
            6 => self.u64() as usize,
            _ => usize::from(self.byte() % 4),
        }
    }

    fn value_u32(&mut self) -> u32 {
        self.value() as u32
    }
}

/// Decodes any bytes into an [`Input`]. Short inputs are padded with zeros.
pub fn decode(data: &[u8]) -> Input {
    let mut b = Bytes { data, pos: 0 };
    let input = [b.value(), b.value(), b.value(), b.value()];
    let k = b.value();
    // Usually the input's channel count, so that the deeper checks run.
    let filter_c = if b.byte().is_multiple_of(4) {
        b.value()
    } else {
        input[1]
    };
    let filter = [k, filter_c, b.value(), b.value()];
    let stride = [b.value(), b.value()];
    let padding = Padding {
        top: b.value(),
        bottom: b.value(),
        left: b.value(),
        right: b.value(),
    };
    let dilation = [b.value(), b.value()];
    let groups = if b.byte().is_multiple_of(8) {
        b.value()
    } else {
        1
    };
    let problem = Conv2dProblem::new(input, filter)
        .with_stride(stride)
        .with_padding(padding)
        .with_dilation(dilation)
        .with_groups(groups);
    let multiprocessors = b.value();
    let geometry = if b.byte().is_multiple_of(2) {
        Geometry::Generic
    } else {
        Geometry::Fixed(FixedGeometry {
            filter_h: b.value_u32(),
            filter_w: b.value_u32(),
            stride_h: b.value_u32(),
            stride_w: b.value_u32(),
        })
    };
    let tile = if b.byte().is_multiple_of(2) {
        TileConfig::PAPER
    } else {
        TileConfig {
            block_m: b.value_u32(),
            block_n: b.value_u32(),
            block_k: b.value_u32(),
            thread_m: b.value_u32(),
            thread_n: b.value_u32(),
        }
    };
    Input {
        problem,
        multiprocessors,
        spec: KernelSpec {
            dtype: DType::F32,
            geometry,
            tile,
            variant: Variant {
                fused: b.byte().is_multiple_of(2),
                ..Variant::MATERIALISED
            },
            layout: im2win::Layout::Nchw,
            math: im2win::codegen::Math::Simt,
            grouping: im2win::codegen::Grouping::Dense,
        },
    }
}

/// The sizes of a valid problem, computed independently in `u128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    pub output: [u128; 4],
    pub win_width: u128,
    pub input_len: u128,
    pub filter_len: u128,
    pub output_len: u128,
    pub im2win_len: u128,
    pub reduction: u128,
    pub pixels: u128,
}

/// Workspace parts start at multiples of this many bytes (docs/DESIGN.md).
const ALIGN: u128 = 256;

fn align(bytes: u128) -> u128 {
    bytes.div_ceil(ALIGN) * ALIGN
}

impl Model {
    /// Bytes of the GPU's transformed filter `A[C·S·R][K4]`, `K4` = `K` rounded up to a
    /// multiple of 4; `None` past the element limit.
    pub fn filter_bytes(&self) -> Option<u128> {
        let elements = self.reduction * self.output[1].div_ceil(4) * 4;
        (elements <= MAX_ELEMENTS as u128).then_some(elements * 4)
    }

    /// `Conv2dProblem::workspace_bytes`: `T`, then `A` at the next 256-byte boundary.
    pub fn workspace_bytes(&self) -> Option<u128> {
        Some(align(self.im2win_len * 4) + self.filter_bytes()?)
    }

    /// A plan's workspace, each part at a 256-byte boundary: `T` (unless the input is read
    /// in place), `A`, and with `splits > 1` the partial sums `splits · N·K·P·Q` floats.
    /// `None` when a part exceeds the element limit. Returns (filter offset, partial
    /// offset, total bytes).
    pub fn plan_workspace(
        &self,
        in_place: bool,
        splits: u32,
    ) -> Option<(u128, Option<u128>, u128)> {
        let filter = if in_place {
            0
        } else {
            align(self.im2win_len * 4)
        };
        let end = filter + self.filter_bytes()?;
        if splits <= 1 {
            return Some((filter, None, end));
        }
        let partial = u128::from(splits) * self.output_len;
        (partial <= MAX_ELEMENTS as u128)
            .then(|| (filter, Some(align(end)), align(end) + partial * 4))
    }
}

/// Whether the kernels read the input in place (docs/DESIGN.md: a 1×1 filter, stride 1, no
/// padding, where `T = X`).
fn model_in_place(p: &Conv2dProblem) -> bool {
    let pad = p.padding;
    p.layout == im2win::Layout::Nchw
        && p.filter[2] == 1
        && p.filter[3] == 1
        && p.stride == [1, 1]
        && [pad.top, pad.bottom, pad.left, pad.right] == [0; 4]
}

/// One reason the model rejects a problem. A rejected problem may have several; the library
/// must report one of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Zero(&'static str),
    TooLarge(&'static str, u128, u128),
    Groups(usize),
    Channels(usize, usize),
    FilterLarger(&'static str, u128, u128),
}

/// The model of `Conv2dProblem::shape` from `docs/DESIGN.md` and PyTorch's output formula.
pub fn model(p: &Conv2dProblem) -> Result<Model, Vec<Violation>> {
    let [n, c, h, w] = p.input;
    let [k, fc, r, s] = p.filter;
    let pad = p.padding;
    let fields = [
        ("batch", n),
        ("in_channels", c),
        ("in_height", h),
        ("in_width", w),
        ("out_channels", k),
        ("filter_channels", fc),
        ("filter_height", r),
        ("filter_width", s),
        ("stride_h", p.stride[0]),
        ("stride_w", p.stride[1]),
        ("dilation_h", p.dilation[0]),
        ("dilation_w", p.dilation[1]),
        ("groups", p.groups),
    ];
    let pads = [
        ("pad_top", pad.top),
        ("pad_bottom", pad.bottom),
        ("pad_left", pad.left),
        ("pad_right", pad.right),
    ];
    let dim = MAX_DIM as u128;
    let mut violations = Vec::new();
    for (name, v) in fields {
        if v == 0 {
            violations.push(Violation::Zero(name));
        }
    }
    for (name, v) in fields.into_iter().chain(pads) {
        if v as u128 > dim {
            violations.push(Violation::TooLarge(name, v as u128, dim));
        }
    }
    let g = p.groups;
    if g > 1 && (c % g != 0 || k % g != 0 || fc.saturating_mul(g) != c) {
        violations.push(Violation::Groups(g));
    }
    if g <= 1 && fc != c {
        violations.push(Violation::Channels(c, fc));
    }
    if !violations.is_empty() {
        // The derived sizes are only defined on fields that passed.
        return Err(violations);
    }

    let u = |v: usize| v as u128;
    // PyTorch: out = ⌊(size + before + after − dil·(f − 1) − 1) / stride⌋ + 1.
    let axis = |name, size, before, after, f, stride, dil| {
        let padded = u(size) + u(before) + u(after);
        let dilated = u(dil) * (u(f) - 1) + 1;
        if dilated > padded {
            Err(Violation::FilterLarger(name, dilated, padded))
        } else {
            Ok((padded - dilated) / u(stride) + 1)
        }
    };
    let [sh, sw] = p.stride;
    let [dh, dw] = p.dilation;
    let out_h = axis("height", h, pad.top, pad.bottom, r, sh, dh);
    let out_w = axis("width", w, pad.left, pad.right, s, sw, dw);
    let (pp, q) = match (out_h, out_w) {
        (Ok(pp), Ok(q)) => (pp, q),
        (a, b) => {
            return Err([a.err(), b.err()].into_iter().flatten().collect());
        }
    };
    let win_width = (q - 1) * u(sw) + (u(s) - 1) * u(dw) + 1;
    let rows_read = (pp - 1) * u(sh) + (u(r) - 1) * u(dh) + 1;
    for (name, v) in [
        ("out_height", pp),
        ("out_width", q),
        ("im2win width", win_width),
        ("padded rows read", rows_read),
    ] {
        if v > dim {
            violations.push(Violation::TooLarge(name, v, dim));
        }
    }
    let limit = MAX_ELEMENTS as u128;
    // Five factors of up to 2^64 can overflow even u128: saturate (the library stops at the
    // first count past its limit, so a saturated value is never compared exactly).
    let product = |dims: &[u128]| dims.iter().fold(1_u128, |a, &d| a.saturating_mul(d));
    // Each output reads fc = C / groups channels.
    let [n, c, fc, k, r, s] = [n, c, fc, k, r, s].map(u);
    let model = Model {
        output: [n, k, pp, q],
        win_width,
        input_len: product(&[n, c, u(h), u(w)]),
        filter_len: product(&[k, fc, r, s]),
        output_len: product(&[n, k, pp, q]),
        im2win_len: product(&[n, c, pp, win_width, r]),
        reduction: product(&[fc, r, s]),
        pixels: product(&[n, pp, q]),
    };
    // The reduction is an element count, and must also fit the kernels' int.
    if model.reduction > dim {
        let bound = if model.reduction > limit { limit } else { dim };
        violations.push(Violation::TooLarge(
            "reduction C·R·S",
            model.reduction,
            bound,
        ));
    }
    for (name, v) in [
        ("input elements", model.input_len),
        ("filter elements", model.filter_len),
        ("output elements", model.output_len),
        ("im2win elements", model.im2win_len),
        ("output pixels N·P·Q", model.pixels),
    ] {
        if v > limit {
            violations.push(Violation::TooLarge(name, v, limit));
        }
    }
    if violations.is_empty() {
        Ok(model)
    } else {
        Err(violations)
    }
}

/// Whether `err` is one of `violations`, field for field.
fn justified(err: &Error, violations: &[Violation]) -> bool {
    violations.iter().any(|v| match (err, v) {
        (Error::ZeroSize { name }, Violation::Zero(n)) => name == n,
        (Error::TooLarge { what, value, limit }, Violation::TooLarge(w, v, l)) => {
            // A product past 2^64 saturates differently in the library (it stops early);
            // then only the name and the limit must agree, and the value must exceed it.
            what == w && limit == l && (value == v || (value > limit && *v > *l))
        }
        (Error::BadGroups { groups, .. }, Violation::Groups(g)) => groups == g,
        (
            Error::ChannelMismatch {
                input_channels,
                filter_channels,
            },
            Violation::Channels(c, fc),
        ) => (input_channels, filter_channels) == (c, fc),
        (
            Error::FilterLargerThanInput {
                axis,
                filter,
                padded_input,
            },
            Violation::FilterLarger(a, f, pi),
        ) => axis == a && *filter as u128 == *f && *padded_input as u128 == *pi,
        _ => false,
    })
}

/// Whether `spec` computes `problem`, by the rule of `docs/DESIGN.md`: the generic kernel
/// always; a fixed one when filter size and stride are its own and the dilation is 1 along
/// every axis where the filter is longer than 1.
fn model_supports(spec: &KernelSpec, p: &Conv2dProblem) -> bool {
    // Groups: dense kernels take one group, the grouped family more (depthwise: groups = C).
    let grouping_ok = match spec.grouping {
        im2win::codegen::Grouping::Dense => p.groups == 1,
        im2win::codegen::Grouping::Grouped => p.groups > 1,
        im2win::codegen::Grouping::Depthwise => p.groups > 1 && p.groups == p.input[1],
    };
    if !grouping_ok {
        return false;
    }
    // The layouts: a SIMT kernel's must be the problem's (both algorithms take both); a
    // tensor-core kernel (NHWC) takes both (NCHW through an NHWC copy of the input).
    let layout_ok = if spec.math.is_tensor_op() {
        spec.layout == im2win::Layout::Nhwc
    } else {
        spec.layout == p.layout
    };
    if !layout_ok {
        return false;
    }
    match spec.geometry {
        Geometry::Generic => true,
        Geometry::Fixed(g) => {
            let same = |a: u32, b: usize| a as u128 == b as u128;
            same(g.filter_h, p.filter[2])
                && same(g.filter_w, p.filter[3])
                && same(g.stride_h, p.stride[0])
                && same(g.stride_w, p.stride[1])
                && (p.dilation[0] == 1 || p.filter[2] == 1)
                && (p.dilation[1] == 1 || p.filter[3] == 1)
        }
    }
}

/// Whether a tile satisfies the documented rules of `TileConfig::validate`, in u128.
fn model_tile_valid(t: &TileConfig) -> bool {
    let [bm, bn, bk, tm, tn] =
        [t.block_m, t.block_n, t.block_k, t.thread_m, t.thread_n].map(u128::from);
    if [bm, bn, bk, tm, tn].contains(&0) || bm % tm != 0 || bn % tn != 0 {
        return false;
    }
    let threads = (bm / tm) * (bn / tn);
    // Two stages of `block_k × (block_m + block_n)` floats within 48 KiB of static shared
    // memory: a wrapped product would let a huge tile through.
    8 * bk * (bm + bn) <= 48 * 1024
        && (32..=1024).contains(&threads)
        && threads % 32 == 0
        && (bm * bk) % threads == 0
        && (bn * bk) % threads == 0
}

/// Whether a tensor-core kernel's tile satisfies the documented rules of
/// `TileConfig::validate_tensor_op` for elements of `bytes` bytes, in u128: whole 16 × 16
/// warp pieces dividing the block, 1 to 32 warps, 32-, 64- or 128-byte rows, copy passes of
/// whole rows, and at most 163 KiB of stages (4 of rows up to 64 bytes, else 3).
fn model_tensor_op_tile_valid(t: &TileConfig, bytes: u128) -> bool {
    let [bm, bn, bk, tm, tn] =
        [t.block_m, t.block_n, t.block_k, t.thread_m, t.thread_n].map(u128::from);
    if [bm, bn, bk, tm, tn].contains(&0) || bm % tm != 0 || bn % tn != 0 {
        return false;
    }
    let warps = (bm / tm) * (bn / tn);
    let row = bk * bytes;
    let stages = if row <= 64 { 4 } else { 3 };
    let rows_per_pass = 32 * warps / (row / 16).max(1);
    tm % 16 == 0
        && tn % 16 == 0
        && (1..=32).contains(&warps)
        && [32, 64, 128].contains(&row)
        && bm % rows_per_pass == 0
        && bn % rows_per_pass == 0
        && stages * row * (bm + bn) <= 163 * 1024
}

/// Whether `spec` is valid. `KernelSpec::validate` is the definition (codegen adds limits
/// of its own, e.g. on shared memory); it must not panic, and whatever it accepts must
/// satisfy the rules that dispatch and the kernels rely on (no zero dimension, whole thread
/// tiles, 32 to 1024 threads, 48 KiB of shared memory; for tensor-core kernels their own
/// tile rules, NHWC and the fused variant), checked here in u128.
fn model_spec_valid(spec: &KernelSpec) -> bool {
    let valid = spec.validate().is_ok();
    if valid {
        let geometry_ok = match spec.geometry {
            Geometry::Generic => true,
            Geometry::Fixed(g) => ![g.filter_h, g.filter_w, g.stride_h, g.stride_w].contains(&0),
        };
        let tile_ok = match spec.math {
            // The grouped family: its one tile per layout and type, FP32 math, read in place.
            _ if spec.is_grouped() => {
                Some(spec.tile) == spec.grouping.tile(spec.layout, spec.dtype)
                    && spec.math == im2win::codegen::Math::Simt
                    && spec.variant == Variant::FUSED
            }
            im2win::codegen::Math::Simt => model_tile_valid(&spec.tile),
            im2win::codegen::Math::TensorOp => {
                spec.layout == im2win::Layout::Nhwc
                    && spec.variant.fused
                    && model_tensor_op_tile_valid(&spec.tile, spec.dtype.size_bytes() as u128)
            }
            // 3xTF32: the tensor-core rules, float32 operands, the warp MMA only.
            im2win::codegen::Math::TensorOpFastF32 => {
                spec.dtype == DType::F32
                    && !spec.variant.warpgroup
                    && spec.layout == im2win::Layout::Nhwc
                    && spec.variant.fused
                    && model_tensor_op_tile_valid(&spec.tile, spec.dtype.size_bytes() as u128)
            }
        };
        assert!(
            geometry_ok && tile_ok,
            "KernelSpec::validate accepts {spec:?}"
        );
    }
    valid
}

/// Whether a kernel of `spec`'s element type and math computes `p`'s element type at its
/// precision (the table of docs/DESIGN.md): strict float32 on CUDA cores only, TF32 on
/// tensor cores only, f32x3 on 3xTF32 only, FP32 accuracy on either strict or 3xTF32, bf16
/// and f16 as stored.
fn model_computes(spec: &KernelSpec, p: &Conv2dProblem) -> bool {
    use im2win::codegen::{Math, Precision};
    spec.dtype == p.dtype
        && matches!(
            (p.precision, spec.dtype, spec.math),
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

/// The grid `(x, y)` of `spec` on a valid problem, if within CUDA's limits.
fn model_grid(spec: &KernelSpec, m: &Model) -> Option<(u128, u128)> {
    let x = m.pixels.div_ceil(u128::from(spec.tile.block_n));
    let y = m.output[1].div_ceil(u128::from(spec.tile.block_m));
    (x <= MAX_GRID_X && y <= MAX_GRID_Y).then_some((x, y))
}

/// Runs every check on one decoded input against the catalogue `catalogue` (the fuzz
/// target passes `im2win::kernels().catalogue()`). Panics on a disagreement.
pub fn check(input: &Input, catalogue: &Catalogue) {
    let problem = &input.problem;
    let expected = model(problem);
    let shape = problem.shape();
    match (&expected, &shape) {
        (Ok(m), Ok(s)) => {
            let got = Model {
                output: s.output.map(|v| v as u128),
                win_width: s.win_width as u128,
                input_len: s.input_len as u128,
                filter_len: s.filter_len as u128,
                output_len: s.output_len as u128,
                im2win_len: s.im2win_len as u128,
                reduction: s.reduction as u128,
                pixels: s.pixels as u128,
            };
            assert_eq!(got, *m, "shape of {problem:?}");
        }
        (Err(violations), Err(err)) => assert!(
            justified(err, violations),
            "{problem:?}: the library says `{err}` ({err:?}), the model {violations:?}"
        ),
        (Ok(m), Err(err)) => panic!("{problem:?} is valid ({m:?}) but shape() says {err:?}"),
        (Err(v), Ok(s)) => panic!("{problem:?} is invalid ({v:?}) but shape() gives {s:?}"),
    }

    // Every other query agrees with shape().
    let same_error = |what: &str, err: &Error| {
        let reference = shape.as_ref().expect_err("only called on invalid problems");
        assert_eq!(
            err.to_string(),
            reference.to_string(),
            "{what} of {problem:?}"
        );
    };
    match problem.validate() {
        Ok(()) => assert!(shape.is_ok(), "validate() accepts {problem:?}"),
        Err(err) => same_error("validate", &err),
    }
    match problem.output_shape() {
        Ok(out) => assert_eq!(out.map(|v| v as u128), expected.as_ref().unwrap().output),
        Err(err) => same_error("output_shape", &err),
    }
    match problem.workspace_bytes() {
        Ok(bytes) => {
            let m = expected
                .as_ref()
                .expect("workspace_bytes of an invalid problem");
            let want = m
                .workspace_bytes()
                .expect("workspace_bytes past the element limit");
            assert_eq!(bytes as u128, want, "workspace of {problem:?}");
            assert!(bytes as u128 >= 4 * (m.im2win_len + m.filter_len));
            let s = shape.as_ref().unwrap();
            let offset = problem.filter_offset_bytes(s) as u128;
            assert_eq!(offset, align(4 * m.im2win_len));
        }
        Err(err) => match &expected {
            // A valid problem whose transformed filter (K rounded up to 4) passes the limit.
            Ok(m) => {
                assert!(
                    m.filter_bytes().is_none(),
                    "workspace_bytes of {problem:?}: {err}"
                );
                assert!(matches!(err, Error::TooLarge { .. }), "{err}");
            }
            Err(_) => same_error("workspace_bytes", &err),
        },
    }
    match problem.flops() {
        Ok(flops) => {
            let m = expected.as_ref().unwrap();
            let exact = 2.0 * m.output_len as f64 * m.reduction as f64;
            assert!(
                (flops - exact).abs() <= exact * 1e-12,
                "flops {flops} vs {exact}"
            );
        }
        Err(err) => same_error("flops", &err),
    }
    for has_bias in [false, true] {
        match ConvParams::new(problem, has_bias) {
            Ok(params) => {
                let m = expected
                    .as_ref()
                    .expect("ConvParams accepted an invalid problem");
                let as_u = |v: i32| u128::try_from(v).expect("negative ConvParams field");
                assert_eq!(
                    [params.n, params.c, params.h, params.w].map(as_u),
                    problem.input.map(|v| v as u128)
                );
                assert_eq!(
                    [params.k, params.r, params.s].map(as_u),
                    [
                        problem.filter[0] as u128,
                        problem.filter[2] as u128,
                        problem.filter[3] as u128
                    ]
                );
                assert_eq!([params.p, params.q].map(as_u), [m.output[2], m.output[3]]);
                assert_eq!(as_u(params.win_w), m.win_width);
                assert_eq!(params.crs as u128, m.reduction);
                assert_eq!(params.npq as u128, m.pixels);
                assert_eq!(params.has_bias, i32::from(has_bias));
                assert_eq!(as_u(params.pad_top), problem.padding.top as u128);
                assert_eq!(as_u(params.pad_left), problem.padding.left as u128);
            }
            Err(err) => {
                assert!(
                    expected.is_err(),
                    "ConvParams rejects valid {problem:?}: {err}"
                );
                same_error("ConvParams::new", &err);
            }
        }
    }

    for sms in [H200_SMS, input.multiprocessors] {
        dispatch_against_model(problem, &expected, &shape, catalogue, sms);
    }
    for spec in catalogue.kernels.iter().chain([&input.spec]) {
        check_forced(problem, &expected, *spec);
    }
}

/// `Plan::new(problem, catalogue, sms)` against the model (see [`dispatch_against_model`]),
/// for any catalogue: also invalid specs, duplicates, or no generic kernel.
pub fn check_dispatch(problem: &Conv2dProblem, catalogue: &Catalogue, sms: usize) {
    dispatch_against_model(problem, &model(problem), &problem.shape(), catalogue, sms);
}

/// `Plan::new` against the model: the right error, or a fitting kernel that supports the
/// problem (a fixed one when the catalogue has one for the geometry), with the launch shape
/// and workspace layout of the design; the same plan when asked twice. Which tile and split
/// count win is the dispatch heuristic's business and not checked here.
fn dispatch_against_model(
    problem: &Conv2dProblem,
    expected: &Result<Model, Vec<Violation>>,
    shape: &im2win::Result<im2win::ProblemShape>,
    catalogue: &Catalogue,
    sms: usize,
) {
    // The model describes the dense families' launch shapes and workspaces; grouped
    // problems (their own 1-D grid, no workspace) are checked by `tests/gpu_groups.rs` and
    // dispatch's unit tests.
    if problem.groups > 1 {
        return;
    }
    let plan = Plan::new(problem, catalogue, sms);
    let m = match (expected, &plan) {
        (Err(_), Ok(plan)) => panic!("Plan::new accepted invalid {problem:?}: {plan:?}"),
        (Err(_), Err(err)) => {
            let reference = shape.as_ref().unwrap_err();
            assert_eq!(
                err.to_string(),
                reference.to_string(),
                "Plan::new of {problem:?}"
            );
            return;
        }
        (Ok(m), _) => m,
    };
    // Dispatch only considers complete kernels (no technique switched off).
    let f32_specs = catalogue.kernels.iter().filter(|s| {
        s.computes(problem.dtype, problem.precision) && s.variant.is_complete() && !s.is_grouped()
    });
    let fixed: Vec<&KernelSpec> = f32_specs
        .clone()
        .filter(|s| matches!(s.geometry, Geometry::Fixed(_)) && model_supports(s, problem))
        .collect();
    let candidates = if fixed.is_empty() {
        f32_specs
            .filter(|s| s.geometry == Geometry::Generic)
            .collect()
    } else {
        fixed
    };
    let any_invalid = candidates.iter().any(|s| !model_spec_valid(s));
    let fitting: Vec<(&KernelSpec, (u128, u128))> = candidates
        .iter()
        .filter(|s| model_spec_valid(s))
        .filter_map(|s| model_grid(s, m).map(|g| (*s, g)))
        .collect();
    let plan = match plan {
        Ok(plan) => plan,
        Err(Error::NoKernel { .. }) if candidates.is_empty() => return,
        // Every candidate is validated first: a broken catalogue entry is reported.
        Err(Error::InvalidSpec(_)) if any_invalid => return,
        Err(Error::TooLarge { what, .. }) if fitting.is_empty() && what.starts_with("grid") => {
            return;
        }
        // The workspace of the best plan passes the element limit (the transformed filter,
        // or the partial sums of a split reduction).
        Err(Error::TooLarge { what, .. })
            if what.starts_with("transformed filter") || what.starts_with("partial sums") =>
        {
            return;
        }
        Err(err) => panic!(
            "Plan::new rejects valid {problem:?} on {sms} SMs: {err} (candidates {}, fitting {})",
            candidates.len(),
            fitting.len()
        ),
    };
    assert!(
        !any_invalid,
        "Plan::new planned with an invalid candidate in {catalogue:?}"
    );
    let chosen = *plan.kernel();
    let Some(&(_, (x, y))) = fitting.iter().find(|(s, _)| **s == chosen) else {
        panic!("Plan::new chose {chosen}, not a fitting candidate, for {problem:?}");
    };
    assert!(can_implement(&chosen, problem) && model_supports(&chosen, problem));
    check_plan(&plan, problem, m, (x, y));
    let again = Plan::new(problem, catalogue, sms).expect("Plan::new failed the second time");
    assert_eq!(
        again, plan,
        "Plan::new is not deterministic for {problem:?}"
    );
}

/// A plan's launch shape, workspace layout and problem against the model.
fn check_plan(plan: &Plan, problem: &Conv2dProblem, m: &Model, (x, y): (u128, u128)) {
    let splits = plan.splits();
    let grid = plan.grid_dim();
    assert!(
        splits >= 1 && u128::from(splits) <= MAX_GRID_Y,
        "{splits} splits"
    );
    assert_eq!(
        (u128::from(grid.0), u128::from(grid.1), grid.2),
        (x, y, splits),
        "grid of {problem:?}"
    );
    let t = plan.kernel().tile;
    let threads = (t.block_m / t.thread_m) * (t.block_n / t.thread_n);
    assert_eq!(plan.block_dim(), (threads, 1, 1));
    // A fused kernel reads the input itself, as an in-place problem does.
    let in_place = model_in_place(problem) || plan.kernel().variant.fused;
    assert_eq!(plan.input_in_place(), in_place, "in place for {problem:?}");
    let (filter, partial, bytes) = m
        .plan_workspace(in_place, splits)
        .expect("a plan whose workspace passes the element limit");
    assert_eq!(
        plan.workspace_bytes() as u128,
        bytes,
        "workspace of {problem:?}"
    );
    assert_eq!(plan.filter_offset_bytes() as u128, filter);
    assert_eq!(plan.partial_offset_bytes().map(|o| o as u128), partial);
    if !in_place && splits == 1 {
        assert_eq!(Some(bytes), m.workspace_bytes());
    }
    assert_eq!(plan.problem(), problem);
    assert_eq!(plan.shape().output.map(|v| v as u128), m.output);
}

/// `Plan::for_spec` against the model: the problem's error, `InvalidSpec`, `SpecMismatch`,
/// a grid or workspace too large, or an unsplit plan of exactly that spec; then
/// `Plan::with_split` on it with edge split counts.
fn check_forced(
    problem: &Conv2dProblem,
    expected: &Result<Model, Vec<Violation>>,
    spec: KernelSpec,
) {
    // The grouped family follows its own rules (see `dispatch_against_model`).
    if spec.is_grouped() || problem.groups > 1 {
        return;
    }
    let plan = Plan::for_spec(problem, spec);
    let Ok(m) = expected else {
        assert!(plan.is_err(), "for_spec accepted invalid {problem:?}");
        return;
    };
    let plan = match plan {
        Ok(plan) => plan,
        Err(Error::InvalidSpec(_)) => {
            assert!(!model_spec_valid(&spec), "{spec:?} is valid");
            return;
        }
        // A kernel of another element type or precision (the catalogue's tensor-core kernels
        // on the float32 problems that inputs decode to).
        Err(Error::PrecisionMismatch { .. }) => {
            assert!(model_spec_valid(&spec) && !model_computes(&spec, problem));
            return;
        }
        Err(Error::SpecMismatch { .. }) => {
            assert!(model_spec_valid(&spec) && !model_supports(&spec, problem));
            return;
        }
        Err(Error::TooLarge { what, .. }) if what.starts_with("grid") => {
            assert!(model_spec_valid(&spec) && model_supports(&spec, problem));
            assert!(model_grid(&spec, m).is_none(), "{spec} fits {problem:?}");
            return;
        }
        Err(Error::TooLarge { what, .. }) if what.starts_with("transformed filter") => {
            assert!(m.filter_bytes().is_none(), "{problem:?}: {what}");
            return;
        }
        Err(err) => panic!("for_spec({spec:?}) on valid {problem:?}: {err}"),
    };
    assert!(
        model_spec_valid(&spec),
        "for_spec accepted invalid {spec:?}"
    );
    assert!(
        model_supports(&spec, problem),
        "{spec} cannot run {problem:?}"
    );
    assert_eq!(*plan.kernel(), spec);
    assert_eq!(plan.splits(), 1);
    let grid = model_grid(&spec, m).expect("for_spec accepted a grid past CUDA's limits");
    check_plan(&plan, problem, m, grid);

    for splits in [0, 1, 2, 3, 64, 65_535, 65_536, u32::MAX] {
        let in_place = model_in_place(problem) || spec.variant.fused;
        match plan.clone().with_split(splits) {
            Ok(split) => {
                assert!(
                    (1..=65_535).contains(&splits),
                    "with_split({splits}) accepted"
                );
                assert!(m.plan_workspace(in_place, splits).is_some());
                check_plan(&split, problem, m, grid);
            }
            Err(Error::TooLarge { .. }) => assert!(
                !(1..=65_535).contains(&splits) || m.plan_workspace(in_place, splits).is_none(),
                "with_split({splits}) refused on {problem:?}"
            ),
            Err(err) => panic!("with_split({splits}) on {problem:?}: {err}"),
        }
    }
}
