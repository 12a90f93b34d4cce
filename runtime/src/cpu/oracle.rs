//! The float64 direct convolution: the oracle for every test.
//!
//! Written straight from PyTorch's `conv2d` definition, on logical indices,
//!
//! ```text
//! S[n][k][p][q] = Σ_c Σ_r Σ_s F[k][c][r][s] · X[n][g·Cg + c][p·sh + r·dh − top][q·sw + s·dw − left]
//! Y[n][k][p][q] = act(alpha · S + bias[k] + beta · residual[n][k][p][q])
//! ```
//!
//! where `c` runs over the `Cg = C / groups` channels of the filter and `g = k / (K / groups)`
//! is output channel `k`'s group (`g = 0`, `Cg = C` without groups),
//! with out-of-range input positions reading zero, and every element found through the
//! problem's layouts ([`Layout::offset`](crate::Layout::offset),
//! [`FilterLayout::offset`](crate::FilterLayout::offset)). It deliberately shares nothing
//! with the im2win layout code: it reads `X` and `F` in their own layouts.

use rayon::prelude::*;

use super::{check_operands, check_residual, zeros};
use crate::element::{Element, f32_values, rounds_to_tf32};
use crate::error::Result;
use crate::layout::Layout;
use crate::problem::Conv2dProblem;

/// The convolution of `input` (`N×C×H×W`) with `filter` (`K×C×R×S`) plus the optional
/// `bias` (`K`), through the problem's epilogue, computed directly in float64: the oracle
/// the im2win paths are tested against. The buffers are of the problem's element type; the
/// oracle convolves the values the problem multiplies (the stored values, input and filter
/// rounded to TF32 for a TF32 problem), so that it is the reference of the same rounded
/// inputs. [`reference_conv2d_with_residual`] with no
/// residual.
///
/// Returns the output `N×K×P×Q` in the problem's layout, in float64 so that comparisons
/// measure only the error of the path under test.
///
/// # Errors
/// Those of [`reference_conv2d_with_residual`]; [`Error::ResidualMismatch`] when the
/// problem's epilogue adds a residual.
///
/// [`Error::ResidualMismatch`]: crate::Error::ResidualMismatch
pub fn reference_conv2d<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
) -> Result<Vec<f64>> {
    reference_conv2d_with_residual(problem, input, filter, bias, None)
}

/// The oracle of a problem whose epilogue may add a residual: `input`, the output and
/// `residual` (`N×K×P×Q`) in the problem's [`Layout`], `filter` in its
/// [`FilterLayout`](crate::FilterLayout); each output is
/// `epilogue.apply_f64(sum, bias[k], residual)` ([`Epilogue::apply_f64`]). Parallel over
/// the contiguous runs of the output (a plane `(n, k)` in NCHW, a row `(n, p)` in NHWC).
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], [`Error::DTypeMismatch`] when the
/// buffers are not of the problem's element type, [`Error::BufferLength`] naming
/// `"input"`, `"filter"`, `"bias"` or `"residual"` when a buffer's length does not match
/// the problem, [`Error::ResidualMismatch`] when `residual` is given to a problem whose
/// epilogue has none or missing from one that has it, or [`Error::OutOfMemory`] when the
/// output (or a float32 copy of a 16-bit or TF32-rounded operand) cannot be allocated.
///
/// [`Epilogue::apply_f64`]: crate::Epilogue::apply_f64
/// [`Error::BufferLength`]: crate::Error::BufferLength
/// [`Error::DTypeMismatch`]: crate::Error::DTypeMismatch
/// [`Error::ResidualMismatch`]: crate::Error::ResidualMismatch
/// [`Error::OutOfMemory`]: crate::Error::OutOfMemory
pub fn reference_conv2d_with_residual<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
) -> Result<Vec<f64>> {
    let shape = check_operands(problem, input, filter, bias)?;
    check_residual(problem, &shape, residual)?;
    // The values the problem multiplies: as stored, or rounded to TF32.
    let tf32 = rounds_to_tf32(problem);
    let input = f32_values("oracle input", input, tf32)?;
    let filter = f32_values("oracle filter", filter, tf32)?;
    let bias = bias
        .map(|b| f32_values("oracle bias", b, false))
        .transpose()?;
    let residual = residual
        .map(|r| f32_values("oracle residual", r, false))
        .transpose()?;
    let (input, filter) = (&input[..], &filter[..]);
    let (bias, residual) = (bias.as_deref(), residual.as_deref());
    let [_, _, h, w] = problem.input;
    // Channels per group: what each output reads, from channel group · cg on.
    let [k, cg, r, s] = problem.filter;
    let k_per_group = k / problem.groups;
    let [_, _, p, q] = shape.output;
    let [sh, sw] = problem.stride;
    let [dh, dw] = problem.dilation;
    let (top, left) = (problem.padding.top, problem.padding.left);
    let [xn, xc, xh, xw] = problem.layout.strides(problem.input);
    let [fk, fc, fr, fs] = problem.filter_layout.strides(problem.filter);
    let epilogue = problem.epilogue;

    // The sum of output (n, kk, oy, ox), read through both layouts' strides.
    let sum = |n: usize, kk: usize, oy: usize, ox: usize| {
        let mut sum = 0.0_f64;
        let first = kk / k_per_group * cg;
        for ci in 0..cg {
            for fy in 0..r {
                // Row in padded coordinates, minus the top padding; rows that fall in the
                // padding contribute zero.
                let Some(iy) = (oy * sh + fy * dh).checked_sub(top).filter(|&iy| iy < h) else {
                    continue;
                };
                for fx in 0..s {
                    let Some(ix) = (ox * sw + fx * dw).checked_sub(left).filter(|&ix| ix < w)
                    else {
                        continue;
                    };
                    let x = input[n * xn + (first + ci) * xc + iy * xh + ix * xw];
                    let f = filter[kk * fk + ci * fc + fy * fr + fx * fs];
                    sum += f64::from(x) * f64::from(f);
                }
            }
        }
        sum
    };

    let run = match problem.layout {
        Layout::Nchw => p * q,
        Layout::Nhwc => q * k,
    };
    let mut output = zeros::<f64>("output", shape.output_len)?;
    output
        .par_chunks_mut(run)
        .enumerate()
        .for_each(|(chunk, out)| {
            for (e, y) in out.iter_mut().enumerate() {
                let i = chunk * run + e;
                let [n, kk, oy, ox] = logical_index(problem.layout, shape.output, i);
                let b = bias.map_or(0.0, |b| f64::from(b[kk]));
                let res = residual.map_or(0.0, |res| f64::from(res[i]));
                *y = epilogue.apply_f64(sum(n, kk, oy, ox), b, res);
            }
        });
    Ok(output)
}

/// The logical index `[n, k, p, q]` of element `i` of an output of shape `dims` in
/// `layout`.
fn logical_index(layout: Layout, dims: [usize; 4], i: usize) -> [usize; 4] {
    let [_, k, p, q] = dims;
    match layout {
        Layout::Nchw => [i / (k * p * q), i / (p * q) % k, i / q % p, i % q],
        Layout::Nhwc => [i / (p * q * k), i % k, i / (q * k) % p, i / k % q],
    }
}

/// How far a result of any element type is from the float64 oracle:
/// `‖out − reference‖₂ / ‖reference‖₂`, or the absolute `‖out − reference‖₂` when the
/// reference is all zeros (every window in the padding, no bias). Slices of different
/// lengths are infinitely far apart; a NaN anywhere makes the error NaN.
pub fn relative_error<T: Element>(out: &[T], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (&o, &r) in out.iter().zip(reference) {
        diff += (f64::from(o.to_f32()) - r).powi(2);
        norm += r * r;
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Padding;

    #[test]
    fn logical_index_inverts_the_layout_offset() {
        let dims = [2, 3, 4, 5];
        for layout in Layout::ALL {
            for i in 0..120 {
                let [n, k, p, q] = logical_index(layout, dims, i);
                assert_eq!(layout.offset(dims, n, k, p, q), i, "{layout}");
            }
        }
    }

    /// 1..=len as f32, so every element is distinct and nonzero.
    fn ramp(len: usize) -> Vec<f32> {
        (1..=len).map(|v| v as f32).collect()
    }

    #[test]
    fn single_tap_filter_reads_the_padded_input() {
        // A 1×1 filter of weight 2 with padding 1 on every side: the output is the padded
        // input doubled, zeros in the border.
        let problem =
            Conv2dProblem::new([1, 1, 2, 2], [1, 1, 1, 1]).with_padding(Padding::uniform(1));
        let y = reference_conv2d(&problem, &[1.0, 2.0, 3.0, 4.0], &[2.0], None).unwrap();
        #[rustfmt::skip]
        let expected = [
            0.0, 0.0, 0.0, 0.0,
            0.0, 2.0, 4.0, 0.0,
            0.0, 6.0, 8.0, 0.0,
            0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(y, expected);
    }

    #[test]
    fn the_window_is_a_cross_correlation() {
        // Only F[0][0][0][1] (top middle) is nonzero: Y[p][q] = X[p][q + 1], no flip.
        let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3]);
        let x = ramp(16);
        let mut f = [0.0; 9];
        f[1] = 1.0;
        let y = reference_conv2d(&problem, &x, &f, None).unwrap();
        assert_eq!(y, [2.0, 3.0, 6.0, 7.0]);
    }
}
