//! A 2-D convolution problem: shapes and parameters, validation, and the sizes that follow.
//!
//! Semantics are PyTorch's `conv2d` (cross-correlation, with `groups`): input `N×C×H×W`,
//! filter `K×(C/groups)×R×S`,
//! output `N×K×P×Q`, shapes always in that logical order; the memory order of the tensors is
//! the problem's [`Layout`] (input and output) and [`FilterLayout`]. The [`Epilogue`] says
//! what is done to each sum before it is written (scaling, residual, activation).

use serde::{Deserialize, Serialize};

use im2win_codegen::{DType, Precision};

use crate::epilogue::Epilogue;
use crate::error::{Error, Result};
use crate::layout::{FilterLayout, Layout};
use crate::workspace::WorkspaceLayout;

/// Zero padding on each side of the input. May be asymmetric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Padding {
    /// Rows of zeros above the input.
    pub top: usize,
    /// Rows of zeros below the input.
    pub bottom: usize,
    /// Columns of zeros left of the input.
    pub left: usize,
    /// Columns of zeros right of the input.
    pub right: usize,
}

impl Padding {
    /// The same padding on all four sides.
    pub const fn uniform(pad: usize) -> Self {
        Padding::symmetric(pad, pad)
    }

    /// `pad_h` rows above and below, `pad_w` columns left and right (PyTorch's `padding=(h, w)`).
    pub const fn symmetric(pad_h: usize, pad_w: usize) -> Self {
        Padding {
            top: pad_h,
            bottom: pad_h,
            left: pad_w,
            right: pad_w,
        }
    }
}

/// The largest value of any single dimension, stride, padding or dilation: each must fit in
/// the kernels' 32-bit `int`.
pub const MAX_DIM: usize = i32::MAX as usize;

/// The largest number of elements of any tensor or buffer: offsets are computed in 64-bit
/// signed integers, with room to add a row without overflowing.
pub const MAX_ELEMENTS: usize = 1 << 60;

/// The shape and parameters of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Conv2dProblem {
    /// Input shape `[N, C, H, W]`.
    pub input: [usize; 4],
    /// Filter shape `[K, C, R, S]`.
    pub filter: [usize; 4],
    /// Stride `[height, width]`.
    pub stride: [usize; 2],
    /// Zero padding of the input.
    pub padding: Padding,
    /// Dilation `[height, width]`.
    pub dilation: [usize; 2],
    /// Group count: the input and output channels are split into `groups` groups and each
    /// output channel reads only the `C / groups` input channels of its group, so the
    /// filter is `[K, C / groups, R, S]` (`filter[1]` is `C / groups`, in the problem's
    /// [`FilterLayout`]). It must divide `C` and `K`. `groups = C` with `K` a multiple of
    /// `C` is a depthwise convolution. PyTorch's `groups`.
    pub groups: usize,
    /// Memory order of the input and the output (and of a residual); NCHW when absent from
    /// JSON.
    #[serde(default)]
    pub layout: Layout,
    /// Memory order of the filter; KCRS when absent from JSON.
    #[serde(default)]
    pub filter_layout: FilterLayout,
    /// What is done to each sum before it is written; the plain convolution when absent
    /// from JSON.
    #[serde(default)]
    pub epilogue: Epilogue,
    /// The element type of every tensor (input, filter, bias, residual, output); float32
    /// when absent from JSON. Buffers of another type are refused
    /// ([`Error::DTypeMismatch`]).
    #[serde(default)]
    pub dtype: DType,
    /// How the products are computed ([`Precision::Strict`] when absent from JSON: the
    /// operands as stored, CUDA-core FP32 for float32); [`Precision::Tf32`] rounds float32
    /// operands to TF32 for the tensor cores. Only what the problem asks for is ever run.
    #[serde(default)]
    pub precision: Precision,
}

/// The sizes that follow from a valid problem, computed once by [`Conv2dProblem::shape`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProblemShape {
    /// Output shape `[N, K, P, Q]`.
    pub output: [usize; 4],
    /// `Wt`: the padded input columns that some window reads, i.e. the row length (in
    /// windows' columns) of the im2win buffer `T[N][C][P][Wt][R]`.
    pub win_width: usize,
    /// Elements of the input.
    pub input_len: usize,
    /// Elements of the filter, `K·(C / groups)·R·S`.
    pub filter_len: usize,
    /// Elements of the output.
    pub output_len: usize,
    /// Elements of the im2win buffer `N·C·P·Wt·R`.
    pub im2win_len: usize,
    /// Length of the reduction of one output, `C·R·S` (`(C / groups)·R·S` for a grouped
    /// problem).
    pub reduction: usize,
    /// Output pixels across the batch, `N·P·Q`.
    pub pixels: usize,
}

impl Conv2dProblem {
    /// A problem with stride 1, no padding, dilation 1, one group, NCHW tensors, a KCRS
    /// filter, the plain epilogue (`conv + bias`), float32 tensors and strict precision.
    ///
    /// `input` is `[N, C, H, W]` and `filter` is `[K, C, R, S]`, as in PyTorch, whatever
    /// the layout.
    pub const fn new(input: [usize; 4], filter: [usize; 4]) -> Self {
        Conv2dProblem {
            input,
            filter,
            stride: [1, 1],
            padding: Padding {
                top: 0,
                bottom: 0,
                left: 0,
                right: 0,
            },
            dilation: [1, 1],
            groups: 1,
            layout: Layout::Nchw,
            filter_layout: FilterLayout::Kcrs,
            epilogue: Epilogue::IDENTITY,
            dtype: DType::F32,
            precision: Precision::Strict,
        }
    }

    /// The same problem with stride `[height, width]`.
    pub const fn with_stride(mut self, stride: [usize; 2]) -> Self {
        self.stride = stride;
        self
    }

    /// The same problem with this padding.
    pub const fn with_padding(mut self, padding: Padding) -> Self {
        self.padding = padding;
        self
    }

    /// The same problem with dilation `[height, width]`.
    pub const fn with_dilation(mut self, dilation: [usize; 2]) -> Self {
        self.dilation = dilation;
        self
    }

    /// The same problem with `groups` groups (the filter's shape must be
    /// `[K, C / groups, R, S]`).
    pub const fn with_groups(mut self, groups: usize) -> Self {
        self.groups = groups;
        self
    }

    /// The same problem with input and output (and residual) in `layout`.
    pub const fn with_layout(mut self, layout: Layout) -> Self {
        self.layout = layout;
        self
    }

    /// The same problem with the filter in `filter_layout`.
    pub const fn with_filter_layout(mut self, filter_layout: FilterLayout) -> Self {
        self.filter_layout = filter_layout;
        self
    }

    /// The same problem with this epilogue.
    pub const fn with_epilogue(mut self, epilogue: Epilogue) -> Self {
        self.epilogue = epilogue;
        self
    }

    /// The same problem with tensors of element type `dtype` (precision unchanged).
    pub const fn with_dtype(mut self, dtype: DType) -> Self {
        self.dtype = dtype;
        self
    }

    /// The same problem computed at `precision` (e.g. [`Precision::Tf32`] for float32
    /// tensors on tensor cores).
    pub const fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The element type and precision as the benchmark and error messages name them:
    /// `f32` (strict), `tf32`, `bf16` or `f16` ([`Precision::numeric_name`]).
    pub const fn numeric_name(&self) -> &'static str {
        self.precision.numeric_name(self.dtype)
    }

    /// The same problem with the plain epilogue: what kernel choice and tuning depend on
    /// (an epilogue costs the same whichever kernel runs it).
    pub const fn without_epilogue(mut self) -> Self {
        self.epilogue = Epilogue::IDENTITY;
        self
    }

    /// Checks the problem and computes its sizes. Every other size query goes through here.
    pub fn shape(&self) -> Result<ProblemShape> {
        let [n, c, h, w] = self.input;
        let [k, fc, r, s] = self.filter;
        let Padding {
            top,
            bottom,
            left,
            right,
        } = self.padding;
        let named = [
            ("batch", n),
            ("in_channels", c),
            ("in_height", h),
            ("in_width", w),
            ("out_channels", k),
            ("filter_channels", fc),
            ("filter_height", r),
            ("filter_width", s),
            ("stride_h", self.stride[0]),
            ("stride_w", self.stride[1]),
            ("dilation_h", self.dilation[0]),
            ("dilation_w", self.dilation[1]),
            ("groups", self.groups),
        ];
        for (name, value) in named {
            if value == 0 {
                return Err(Error::ZeroSize { name });
            }
        }
        for (name, value) in named.into_iter().chain([
            ("pad_top", top),
            ("pad_bottom", bottom),
            ("pad_left", left),
            ("pad_right", right),
        ]) {
            if value > MAX_DIM {
                return Err(too_large(name, value as u128, MAX_DIM as u128));
            }
        }
        let groups = self.groups;
        if groups != 1
            && (!c.is_multiple_of(groups) || !k.is_multiple_of(groups) || fc * groups != c)
        {
            return Err(Error::BadGroups {
                groups,
                input_channels: c,
                output_channels: k,
                filter_channels: fc,
            });
        }
        if !self.precision.applies_to(self.dtype) {
            return Err(Error::BadPrecision {
                dtype: self.dtype,
                precision: self.precision,
            });
        }
        let Epilogue { alpha, beta, .. } = self.epilogue;
        if !alpha.is_finite() || !beta.is_finite() {
            return Err(Error::BadEpilogue {
                epilogue: self.epilogue.to_string(),
                why: "alpha and beta must be finite",
            });
        }
        if groups == 1 && fc != c {
            return Err(Error::ChannelMismatch {
                input_channels: c,
                filter_channels: fc,
            });
        }

        // Every dimension is below 2^31, so these sums and products fit in u128 (and u64).
        let out_size = |axis, size: usize, before: usize, after: usize, f: usize, st, dil| {
            let padded = size + before + after;
            let dilated = dil * (f - 1) + 1;
            if dilated > padded {
                return Err(Error::FilterLargerThanInput {
                    axis,
                    filter: dilated,
                    padded_input: padded,
                });
            }
            Ok((padded - dilated) / st + 1)
        };
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let p = out_size("height", h, top, bottom, r, sh, dh)?;
        let q = out_size("width", w, left, right, s, sw, dw)?;
        let win_width = (q - 1) * sw + (s - 1) * dw + 1;
        // The height twin of `win_width`: kernels compute the padded row `p·sh + r·dh` in
        // `int`, and a large top padding with stride > 1 can push it past `int` while P fits.
        let rows_read = (p - 1) * sh + (r - 1) * dh + 1;
        for (name, value) in [
            ("out_height", p),
            ("out_width", q),
            ("im2win width", win_width),
            ("padded rows read", rows_read),
        ] {
            if value > MAX_DIM {
                return Err(too_large(name, value as u128, MAX_DIM as u128));
            }
        }

        let elements = |what, dims: &[usize]| -> Result<usize> {
            let count = dims.iter().map(|&d| d as u128).product::<u128>();
            if count > MAX_ELEMENTS as u128 {
                return Err(too_large(what, count, MAX_ELEMENTS as u128));
            }
            Ok(count as usize)
        };
        // Each output reads its group's C / groups = fc channels.
        let reduction = elements("reduction C·R·S", &[fc, r, s])?;
        if reduction > MAX_DIM {
            return Err(too_large(
                "reduction C·R·S",
                reduction as u128,
                MAX_DIM as u128,
            ));
        }
        Ok(ProblemShape {
            output: [n, k, p, q],
            win_width,
            input_len: elements("input elements", &[n, c, h, w])?,
            filter_len: elements("filter elements", &[k, fc, r, s])?,
            output_len: elements("output elements", &[n, k, p, q])?,
            im2win_len: elements("im2win elements", &[n, c, p, win_width, r])?,
            reduction,
            pixels: elements("output pixels N·P·Q", &[n, p, q])?,
        })
    }

    /// Checks that the problem is valid and supported.
    pub fn validate(&self) -> Result<()> {
        self.shape().map(|_| ())
    }

    /// The output shape `[N, K, P, Q]`, exactly PyTorch's.
    pub fn output_shape(&self) -> Result<[usize; 4]> {
        Ok(self.shape()?.output)
    }

    /// Extra device memory of a GPU convolution that materialises the im2win buffer and does
    /// not split its reduction: the im2win buffer, then the transformed filter (`C·R·S` rows
    /// of `K` rounded up to 16 bytes of elements) at the next 256-byte boundary, in the
    /// problem's element type.
    ///
    /// A [`Plan`](crate::Plan) may need less (a 1×1 stride-1 convolution without padding
    /// reads the input in place, a fused kernel builds no im2win buffer) or more (a split
    /// reduction adds its partial sums): allocate
    /// [`Plan::workspace_bytes`](crate::Plan::workspace_bytes) for a plan.
    pub fn workspace_bytes(&self) -> Result<usize> {
        Ok(WorkspaceLayout::materialised(self)?.bytes())
    }

    /// Bytes of the transformed filter: `C·R·S` rows of `K` rounded up to a whole number of
    /// 16-byte vectors of the problem's elements (docs/DESIGN.md;
    /// [`WorkspaceLayout::filter_bytes`]).
    pub fn transformed_filter_bytes(&self, shape: &ProblemShape) -> Result<usize> {
        WorkspaceLayout::filter_bytes(shape, self.dtype)
    }

    /// Byte offset of the transformed filter inside the workspace of a materialised
    /// convolution (the im2win buffer, rounded up to [`WorkspaceLayout::ALIGNMENT`]).
    pub fn filter_offset_bytes(&self, shape: &ProblemShape) -> usize {
        WorkspaceLayout::im2win_bytes(shape, self.dtype).div_ceil(WorkspaceLayout::ALIGNMENT)
            * WorkspaceLayout::ALIGNMENT
    }

    /// Floating-point operations of the direct convolution, `2·N·K·P·Q·(C / groups)·R·S`
    /// (bias not counted): the figure TFLOP/s are reported against.
    pub fn flops(&self) -> Result<f64> {
        let shape = self.shape()?;
        Ok(2.0 * shape.output_len as f64 * shape.reduction as f64)
    }
}

fn too_large(what: &'static str, value: u128, limit: u128) -> Error {
    Error::TooLarge { what, value, limit }
}
