//! `ConvParams`: the by-value kernel argument shared by every im2win kernel.
//!
//! The C side is `struct ConvParams` in `codegen/templates/common.cuh`; `docs/DESIGN.md` lists it.
//! The two must agree field for field, so the unit test below pins every offset and the
//! size by hand: reordering a field on one side only would fail it.

use cudarc::driver::DeviceRepr;

use crate::error::{Error, Result};
use crate::problem::{Conv2dProblem, MAX_DIM, ProblemShape};

/// The problem as the kernels see it: sizes, stride, padding and dilation, passed by value.
///
/// Mirrors the C `struct ConvParams` of `docs/DESIGN.md` (`int` is `i32`, `long long` is
/// `i64`, `float` is `f32`). Build it with [`ConvParams::new`]; the benchmark passes it to the support kernels
/// it launches itself through [`Engine::function`](crate::Engine::function).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct ConvParams {
    /// Batch `N`.
    pub n: i32,
    /// Input channels `C`.
    pub c: i32,
    /// Input height `H`.
    pub h: i32,
    /// Input width `W`.
    pub w: i32,
    /// Output channels `K`.
    pub k: i32,
    /// Filter height `R`.
    pub r: i32,
    /// Filter width `S`.
    pub s: i32,
    /// Output height `P`.
    pub p: i32,
    /// Output width `Q`.
    pub q: i32,
    /// Vertical stride.
    pub stride_h: i32,
    /// Horizontal stride.
    pub stride_w: i32,
    /// Rows of zero padding above the input.
    pub pad_top: i32,
    /// Columns of zero padding left of the input.
    pub pad_left: i32,
    /// Vertical dilation.
    pub dil_h: i32,
    /// Horizontal dilation.
    pub dil_w: i32,
    /// `Wt`, the row length (in window columns) of the im2win buffer.
    pub win_w: i32,
    /// 1 when the kernel adds a bias, else 0 (and the bias pointer may be null).
    pub has_bias: i32,
    /// Memory order of input, output and residual ([`Layout::code`](crate::Layout::code)).
    pub layout: i32,
    /// Memory order of the filter ([`FilterLayout::code`](crate::FilterLayout::code)).
    pub filter_layout: i32,
    /// The epilogue's activation ([`Activation::code`](crate::Activation::code)).
    pub activation: i32,
    /// 1 when the epilogue adds `beta · residual`, else 0 (and the pointer may be null).
    pub has_residual: i32,
    /// The epilogue's factor of the sums.
    pub alpha: f32,
    /// The epilogue's factor of the residual.
    pub beta: f32,
    /// Reduction length `C·R·S`.
    pub crs: i64,
    /// Output pixels across the batch, `N·P·Q`.
    pub npq: i64,
}

// SAFETY: `ConvParams` is `#[repr(C)]`, made only of `i32`, `f32` and `i64`, and matches the C
// struct the kernels declare (checked by `layout_matches_design` below), so the driver may
// copy its bytes into the kernel's parameter space.
unsafe impl DeviceRepr for ConvParams {}

impl ConvParams {
    /// The parameters of `problem`, with `has_bias` set as given.
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`].
    pub fn new(problem: &Conv2dProblem, has_bias: bool) -> Result<ConvParams> {
        ConvParams::from_shape(problem, &problem.shape()?, has_bias)
    }

    /// The parameters of `problem` whose (already validated) shape is `shape`.
    pub(crate) fn from_shape(
        problem: &Conv2dProblem,
        shape: &ProblemShape,
        has_bias: bool,
    ) -> Result<ConvParams> {
        let [n, c, h, w] = problem.input;
        let [k, _, r, s] = problem.filter;
        let [_, _, p, q] = shape.output;
        Ok(ConvParams {
            n: int("batch", n)?,
            c: int("in_channels", c)?,
            h: int("in_height", h)?,
            w: int("in_width", w)?,
            k: int("out_channels", k)?,
            r: int("filter_height", r)?,
            s: int("filter_width", s)?,
            p: int("out_height", p)?,
            q: int("out_width", q)?,
            stride_h: int("stride_h", problem.stride[0])?,
            stride_w: int("stride_w", problem.stride[1])?,
            pad_top: int("pad_top", problem.padding.top)?,
            pad_left: int("pad_left", problem.padding.left)?,
            dil_h: int("dilation_h", problem.dilation[0])?,
            dil_w: int("dilation_w", problem.dilation[1])?,
            win_w: int("im2win width", shape.win_width)?,
            has_bias: i32::from(has_bias),
            layout: problem.layout.code(),
            filter_layout: problem.filter_layout.code(),
            activation: problem.epilogue.activation.code(),
            has_residual: i32::from(problem.epilogue.residual),
            alpha: problem.epilogue.alpha,
            beta: problem.epilogue.beta,
            crs: long("reduction C·R·S", shape.reduction)?,
            npq: long("output pixels N·P·Q", shape.pixels)?,
        })
    }
}

/// `value` as a C `int`. Validation already bounds every dimension by [`MAX_DIM`]; the
/// checked conversion keeps this free of panics and silent truncation all the same.
fn int(what: &'static str, value: usize) -> Result<i32> {
    i32::try_from(value).map_err(|_| Error::TooLarge {
        what,
        value: value as u128,
        limit: MAX_DIM as u128,
    })
}

/// `value` as a C `long long`.
fn long(what: &'static str, value: usize) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::TooLarge {
        what,
        value: value as u128,
        limit: i64::MAX as u128,
    })
}

#[cfg(test)]
mod tests {
    use std::mem::{align_of, offset_of, size_of};

    use super::*;
    use crate::problem::Padding;

    /// The offsets of the C struct in `docs/DESIGN.md` on a 64-bit target, worked out by
    /// hand: twenty-one 4-byte `int`s (0..84), two 4-byte `float`s (84..92), 4 bytes of
    /// padding so that the first `long long` is 8-aligned, then two 8-byte `long long`s.
    #[test]
    fn layout_matches_design() {
        let expected = [
            ("n", offset_of!(ConvParams, n), 0),
            ("c", offset_of!(ConvParams, c), 4),
            ("h", offset_of!(ConvParams, h), 8),
            ("w", offset_of!(ConvParams, w), 12),
            ("k", offset_of!(ConvParams, k), 16),
            ("r", offset_of!(ConvParams, r), 20),
            ("s", offset_of!(ConvParams, s), 24),
            ("p", offset_of!(ConvParams, p), 28),
            ("q", offset_of!(ConvParams, q), 32),
            ("stride_h", offset_of!(ConvParams, stride_h), 36),
            ("stride_w", offset_of!(ConvParams, stride_w), 40),
            ("pad_top", offset_of!(ConvParams, pad_top), 44),
            ("pad_left", offset_of!(ConvParams, pad_left), 48),
            ("dil_h", offset_of!(ConvParams, dil_h), 52),
            ("dil_w", offset_of!(ConvParams, dil_w), 56),
            ("win_w", offset_of!(ConvParams, win_w), 60),
            ("has_bias", offset_of!(ConvParams, has_bias), 64),
            ("layout", offset_of!(ConvParams, layout), 68),
            ("filter_layout", offset_of!(ConvParams, filter_layout), 72),
            ("activation", offset_of!(ConvParams, activation), 76),
            ("has_residual", offset_of!(ConvParams, has_residual), 80),
            ("alpha", offset_of!(ConvParams, alpha), 84),
            ("beta", offset_of!(ConvParams, beta), 88),
            ("crs", offset_of!(ConvParams, crs), 96),
            ("npq", offset_of!(ConvParams, npq), 104),
        ];
        for (field, actual, want) in expected {
            assert_eq!(actual, want, "offset of ConvParams::{field}");
        }
        assert_eq!(size_of::<ConvParams>(), 112);
        assert_eq!(align_of::<ConvParams>(), 8);
    }

    /// The Rust mirror follows the C declaration that the ABI stamp hashes
    /// (`im2win_codegen::abi::conv_params_declaration`, from the kernel header): the same
    /// fields in the same order at the offsets C gives them (`int` and `float` 4 bytes,
    /// `long long` 8, each aligned to its size).
    #[test]
    fn layout_matches_the_header_the_abi_stamp_hashes() {
        let decl = im2win_codegen::abi::conv_params_declaration();
        let body = decl
            .strip_prefix("struct ConvParams {")
            .and_then(|b| b.strip_suffix("};"))
            .expect("a struct declaration");
        let mut c_fields = Vec::new();
        let mut offset = 0_usize;
        for declaration in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let (ty, names) = match declaration.strip_prefix("long long ") {
                Some(names) => (8, names),
                None => (
                    4,
                    declaration
                        .strip_prefix("int ")
                        .or_else(|| declaration.strip_prefix("float "))
                        .expect("int, float or long long"),
                ),
            };
            for name in names.split(',').map(str::trim) {
                offset = offset.next_multiple_of(ty);
                c_fields.push((name.to_string(), offset));
                offset += ty;
            }
        }
        let rust_fields: Vec<(String, usize)> = [
            ("n", offset_of!(ConvParams, n)),
            ("c", offset_of!(ConvParams, c)),
            ("h", offset_of!(ConvParams, h)),
            ("w", offset_of!(ConvParams, w)),
            ("k", offset_of!(ConvParams, k)),
            ("r", offset_of!(ConvParams, r)),
            ("s", offset_of!(ConvParams, s)),
            ("p", offset_of!(ConvParams, p)),
            ("q", offset_of!(ConvParams, q)),
            ("stride_h", offset_of!(ConvParams, stride_h)),
            ("stride_w", offset_of!(ConvParams, stride_w)),
            ("pad_top", offset_of!(ConvParams, pad_top)),
            ("pad_left", offset_of!(ConvParams, pad_left)),
            ("dil_h", offset_of!(ConvParams, dil_h)),
            ("dil_w", offset_of!(ConvParams, dil_w)),
            ("win_w", offset_of!(ConvParams, win_w)),
            ("has_bias", offset_of!(ConvParams, has_bias)),
            ("layout", offset_of!(ConvParams, layout)),
            ("filter_layout", offset_of!(ConvParams, filter_layout)),
            ("activation", offset_of!(ConvParams, activation)),
            ("has_residual", offset_of!(ConvParams, has_residual)),
            ("alpha", offset_of!(ConvParams, alpha)),
            ("beta", offset_of!(ConvParams, beta)),
            ("crs", offset_of!(ConvParams, crs)),
            ("npq", offset_of!(ConvParams, npq)),
        ]
        .into_iter()
        .map(|(name, at)| (name.to_string(), at))
        .collect();
        assert_eq!(rust_fields, c_fields);
        assert_eq!(size_of::<ConvParams>(), offset.next_multiple_of(8));
    }

    #[test]
    fn values_follow_the_problem() {
        // 2×3×10×11 input, 4×3×3×5 filter, stride (2,1), asymmetric padding, dilation (1,2):
        // P = (10+1+2-2-1)/2+1 = 6, Q = (11+3+0-8-1)/1+1 = 6, Wt = 5·1 + 4·2 + 1 = 14.
        let problem = Conv2dProblem::new([2, 3, 10, 11], [4, 3, 3, 5])
            .with_stride([2, 1])
            .with_padding(Padding {
                top: 1,
                bottom: 2,
                left: 3,
                right: 0,
            })
            .with_dilation([1, 2]);
        let params = ConvParams::new(&problem, true).unwrap();
        assert_eq!(
            params,
            ConvParams {
                n: 2,
                c: 3,
                h: 10,
                w: 11,
                k: 4,
                r: 3,
                s: 5,
                p: 6,
                q: 6,
                stride_h: 2,
                stride_w: 1,
                pad_top: 1,
                pad_left: 3,
                dil_h: 1,
                dil_w: 2,
                win_w: 14,
                has_bias: 1,
                layout: 0,
                filter_layout: 0,
                activation: 0,
                has_residual: 0,
                alpha: 1.0,
                beta: 0.0,
                crs: 45,
                npq: 72,
            }
        );
        assert_eq!(ConvParams::new(&problem, false).unwrap().has_bias, 0);
    }

    #[test]
    fn invalid_problem_is_an_error() {
        let problem = Conv2dProblem::new([1, 3, 4, 4], [2, 3, 5, 5]);
        assert!(matches!(
            ConvParams::new(&problem, false),
            Err(Error::FilterLargerThanInput { .. })
        ));
    }
}
