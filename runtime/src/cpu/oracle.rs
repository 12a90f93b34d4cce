//! The float64 direct convolution: the oracle for every test.
//!
//! Written straight from PyTorch's `conv2d` definition on NCHW tensors,
//!
//! ```text
//! Y[n][k][p][q] = bias[k] + Σ_c Σ_r Σ_s F[k][c][r][s] · X[n][c][p·sh + r·dh − top][q·sw + s·dw − left]
//! ```
//!
//! with out-of-range input positions reading zero. It deliberately shares nothing with the
//! im2win layout code: it reads `X` and `F` in their own layouts.

use rayon::prelude::*;

use super::{check_operands, zeros};
use crate::error::Result;
use crate::problem::Conv2dProblem;

/// The convolution of `input` (`N×C×H×W`) with `filter` (`K×C×R×S`) plus the optional
/// `bias` (`K`), computed directly in float64: the oracle the im2win paths are tested
/// against.
///
/// Returns the output `N×K×P×Q` in NCHW order, in float64 so that comparisons measure only
/// the error of the path under test. Parallel over the `N·K` output planes.
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], [`Error::BufferLength`] naming
/// `"input"`, `"filter"` or `"bias"` when a buffer's length does not match the problem, or
/// [`Error::OutOfMemory`] when the output cannot be allocated.
///
/// [`Error::BufferLength`]: crate::Error::BufferLength
/// [`Error::OutOfMemory`]: crate::Error::OutOfMemory
pub fn reference_conv2d(
    problem: &Conv2dProblem,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
) -> Result<Vec<f64>> {
    let shape = check_operands(problem, input, filter, bias)?;
    let [_, c, h, w] = problem.input;
    let [k, _, r, s] = problem.filter;
    let [_, _, p, q] = shape.output;
    let [sh, sw] = problem.stride;
    let [dh, dw] = problem.dilation;
    let (top, left) = (problem.padding.top, problem.padding.left);

    let mut output = zeros::<f64>("output", shape.output_len)?;
    output
        .par_chunks_mut(p * q)
        .enumerate()
        .for_each(|(plane, out)| {
            let (n, kk) = (plane / k, plane % k);
            let x = &input[n * c * h * w..][..c * h * w];
            let f = &filter[kk * c * r * s..][..c * r * s];
            let b = bias.map_or(0.0, |b| f64::from(b[kk]));
            for oy in 0..p {
                for ox in 0..q {
                    let mut sum = 0.0_f64;
                    for ci in 0..c {
                        for fy in 0..r {
                            // Row in padded coordinates, minus the top padding; rows that
                            // fall in the padding contribute zero.
                            let Some(iy) =
                                (oy * sh + fy * dh).checked_sub(top).filter(|&iy| iy < h)
                            else {
                                continue;
                            };
                            for fx in 0..s {
                                let Some(ix) =
                                    (ox * sw + fx * dw).checked_sub(left).filter(|&ix| ix < w)
                                else {
                                    continue;
                                };
                                sum += f64::from(x[(ci * h + iy) * w + ix])
                                    * f64::from(f[(ci * r + fy) * s + fx]);
                            }
                        }
                    }
                    out[oy * q + ox] = sum + b;
                }
            }
        });
    Ok(output)
}

/// How far a float32 result is from the float64 oracle: `‖out − reference‖₂ / ‖reference‖₂`,
/// or the absolute `‖out − reference‖₂` when the reference is all zeros (every window in
/// the padding, no bias). Slices of different lengths are infinitely far apart.
pub fn relative_error(out: &[f32], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (&o, &r) in out.iter().zip(reference) {
        diff += (f64::from(o) - r).powi(2);
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
