//! The im2win layouts of `docs/DESIGN.md`, built on the CPU.
//!
//! Input `T[N][C][P][Wt][R]`:
//!
//! ```text
//! T[n][c][p][w][r] = X[n][c][p·sh + r·dh − top][w − left]     (0 outside the input)
//! ```
//!
//! Filter `F'[K][C][S][R]`: `F'[k][c][s][r] = F[k][c][r][s]`.

use rayon::prelude::*;

use super::{check_len, zeros};
use crate::error::Result;
use crate::problem::{Conv2dProblem, ProblemShape};

/// The im2win transform of `input` (`N×C×H×W` in the problem's layout, NCHW or NHWC):
/// `T[N][C][P][Wt][R]` with `Wt = ProblemShape::win_width`, the same for either layout.
///
/// Row `p` of channel `c` holds, for every padded column `w` that some window uses, the `R`
/// (height-dilated) input rows that output row `p` reads, one column after the other. Top,
/// bottom, left and right padding become zeros, so the convolution needs no bounds checks.
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], [`Error::BufferLength`] naming
/// `"input"` when `input.len()` is not `N·C·H·W`, or [`Error::OutOfMemory`] when `T` (which
/// may be far larger than the input) cannot be allocated.
///
/// [`Error::BufferLength`]: crate::Error::BufferLength
/// [`Error::OutOfMemory`]: crate::Error::OutOfMemory
pub fn im2win_input(problem: &Conv2dProblem, input: &[f32]) -> Result<Vec<f32>> {
    let shape = problem.shape()?;
    check_len("input", shape.input_len, input.len())?;
    transform_input(problem, &shape, input)
}

/// The transformed filter `F'[K][C][S][R]` of `filter` (`K×C×R×S` in the problem's filter
/// layout, KCRS or KRSC): each `R×S` slice
/// stored column by column, so that its reduction order `s·R + r` matches the windows of
/// [`im2win_input`].
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], [`Error::BufferLength`] naming
/// `"filter"` when `filter.len()` is not `K·C·R·S`, or [`Error::OutOfMemory`] when the
/// result cannot be allocated.
///
/// [`Error::BufferLength`]: crate::Error::BufferLength
/// [`Error::OutOfMemory`]: crate::Error::OutOfMemory
pub fn im2win_filter(problem: &Conv2dProblem, filter: &[f32]) -> Result<Vec<f32>> {
    let shape = problem.shape()?;
    check_len("filter", shape.filter_len, filter.len())?;
    transform_filter(problem, filter)
}

/// [`im2win_input`] on an already validated problem and input.
pub(super) fn transform_input(
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    input: &[f32],
) -> Result<Vec<f32>> {
    let [_, _, h, w] = problem.input;
    let r = problem.filter[2];
    let p = shape.output[2];
    let row_len = shape.win_width * r;
    let [sh, _] = problem.stride;
    let [dh, _] = problem.dilation;
    let (top, left) = (problem.padding.top, problem.padding.left);

    // Start from zeros: everything not overwritten below is padding.
    let mut t = zeros::<f32>("im2win buffer", shape.im2win_len)?;
    // X is read through its layout's strides (NCHW or NHWC); T is the same either way.
    let [xn, xc, xh, xw] = problem.layout.strides(problem.input);
    let c = problem.input[1];
    t.par_chunks_mut(row_len)
        .enumerate()
        .for_each(|(row, t_row)| {
            // `row` enumerates (n, c, p); (n, c) selects the input plane.
            let (plane, op) = (row / p, row % p);
            let plane_start = (plane / c) * xn + (plane % c) * xc;
            for fy in 0..r {
                let Some(iy) = (op * sh + fy * dh).checked_sub(top).filter(|&iy| iy < h) else {
                    continue;
                };
                // Input column ix lands at padded column w = ix + left, i.e. at
                // t_row[(ix + left)·R + fy]. A left padding wider than the used columns
                // (possible with a large stride) leaves the row all zeros.
                if let Some(dst) = t_row.get_mut(left * r + fy..) {
                    let x_row = plane_start + iy * xh;
                    for (d, ix) in dst.iter_mut().step_by(r).zip(0..w) {
                        *d = input[x_row + ix * xw];
                    }
                }
            }
        });
    Ok(t)
}

/// [`im2win_filter`] on an already validated problem and filter.
pub(super) fn transform_filter(problem: &Conv2dProblem, filter: &[f32]) -> Result<Vec<f32>> {
    // F is read through its layout's strides (KCRS or KRSC); F' is the same either way.
    let [_, c, r, s] = problem.filter;
    let [fk, fc, fr, fs] = problem.filter_layout.strides(problem.filter);
    let mut ft = zeros::<f32>("transformed filter", filter.len())?;
    ft.par_chunks_mut(r * s)
        .enumerate()
        .for_each(|(slice, dst)| {
            let start = (slice / c) * fk + (slice % c) * fc;
            for fx in 0..s {
                for fy in 0..r {
                    dst[fx * r + fy] = filter[start + fy * fr + fx * fs];
                }
            }
        });
    Ok(ft)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Padding;

    fn ramp(len: usize) -> Vec<f32> {
        (0..len).map(|v| v as f32).collect()
    }

    #[test]
    fn anchors_worked_example() {
        // ANCHORS.md: 1×1×4×4 input 0..15, 3×3 filter, stride 1.
        let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3]);
        let t = im2win_input(&problem, &ramp(16)).unwrap();
        // P = 2 rows of Wt·R = 4·3 values.
        assert_eq!(t.len(), 2 * 12);
        let row0 = &t[..12];
        assert_eq!(row0, [0., 4., 8., 1., 5., 9., 2., 6., 10., 3., 7., 11.]);
        // Output (0, 1): S·R = 9 contiguous values from q·sw·R = 3.
        assert_eq!(&row0[3..12], [1., 5., 9., 2., 6., 10., 3., 7., 11.]);
        assert_eq!(
            &t[12..],
            [4., 8., 12., 5., 9., 13., 6., 10., 14., 7., 11., 15.]
        );
    }

    #[test]
    fn asymmetric_padding_becomes_zeros() {
        // X = [[1,2,3],[4,5,6]], 2×2 filter, padding top 1, left 1, bottom = right = 0:
        // padded 3×4, P = 2, Q = 3, Wt = 4. T[p][w][r] = X[p + r − 1][w − 1].
        let problem = Conv2dProblem::new([1, 1, 2, 3], [1, 1, 2, 2]).with_padding(Padding {
            top: 1,
            bottom: 0,
            left: 1,
            right: 0,
        });
        let x = [1., 2., 3., 4., 5., 6.];
        let t = im2win_input(&problem, &x).unwrap();
        #[rustfmt::skip]
        let expected = [
            0., 0.,  0., 1.,  0., 2.,  0., 3.,
            0., 0.,  1., 4.,  2., 5.,  3., 6.,
        ];
        assert_eq!(t, expected);
    }

    #[test]
    fn dilation_and_stride() {
        // X = 3×5 ramp 1..=15, 2×2 filter, dilation (2, 2), stride (1, 2): P = 1, Q = 2,
        // Wt = (Q − 1)·2 + (S − 1)·2 + 1 = 5. T[0][w][r] = X[2r][w]: rows 0 and 2.
        let problem = Conv2dProblem::new([1, 1, 3, 5], [1, 1, 2, 2])
            .with_dilation([2, 2])
            .with_stride([1, 2]);
        let x: Vec<f32> = (1..=15).map(|v| v as f32).collect();
        let t = im2win_input(&problem, &x).unwrap();
        assert_eq!(t, [1., 11., 2., 12., 3., 13., 4., 14., 5., 15.]);
        // The window of output (0, 1) reads columns q·sw + s·dw = 2 and 4.
        assert_eq!([&t[4..6], &t[8..10]].concat(), [3., 13., 5., 15.]);
    }

    #[test]
    fn only_columns_some_window_reads_are_stored() {
        // W = 6, 1×2 filter, stride 3: Q = 2 and Wt = 5, so input column 5 is dropped.
        let problem = Conv2dProblem::new([1, 1, 1, 6], [1, 1, 1, 2]).with_stride([1, 3]);
        let t = im2win_input(&problem, &[1., 2., 3., 4., 5., 6.]).unwrap();
        assert_eq!(t, [1., 2., 3., 4., 5.]);

        // Left padding 5 with stride 10: the only window reads padding (Wt = 1 < left).
        let problem = Conv2dProblem::new([1, 1, 1, 1], [1, 1, 1, 1])
            .with_stride([1, 10])
            .with_padding(Padding {
                left: 5,
                ..Padding::default()
            });
        assert_eq!(im2win_input(&problem, &[7.]).unwrap(), [0.]);
    }

    #[test]
    fn batch_and_channels_are_outermost() {
        // N = 2, C = 2, 2×1 inputs, 2×1 filter: P = 1, Wt = 1, one row of R = 2 per plane.
        let problem = Conv2dProblem::new([2, 2, 2, 1], [1, 2, 2, 1]);
        let t = im2win_input(&problem, &ramp(8)).unwrap();
        assert_eq!(t, ramp(8));
    }

    #[test]
    fn every_layout_gives_the_same_transforms() {
        use crate::layout::{FilterLayout, Layout};
        // N = 2, C = 3, 4×5 input, 2×3 filter with padding: each element's value is its
        // logical index, permuted into NHWC / KRSC by the layouts' own offsets.
        let problem = Conv2dProblem::new([2, 3, 4, 5], [2, 3, 2, 3]).with_padding(Padding {
            top: 1,
            bottom: 0,
            left: 0,
            right: 2,
        });
        let permuted = |dims: [usize; 4], strides: [usize; 4]| {
            let mut out = vec![0.0; dims.iter().product()];
            let mut i = 0;
            for a in 0..dims[0] {
                for b in 0..dims[1] {
                    for c in 0..dims[2] {
                        for d in 0..dims[3] {
                            out[a * strides[0]
                                + b * strides[1]
                                + c * strides[2]
                                + d * strides[3]] = i as f32;
                            i += 1;
                        }
                    }
                }
            }
            out
        };
        let x = ramp(2 * 3 * 4 * 5);
        let f = ramp(2 * 3 * 2 * 3);
        let nhwc = problem
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc);
        let x_nhwc = permuted(problem.input, Layout::Nhwc.strides(problem.input));
        let f_krsc = permuted(problem.filter, FilterLayout::Krsc.strides(problem.filter));
        assert_eq!(
            im2win_input(&nhwc, &x_nhwc).unwrap(),
            im2win_input(&problem, &x).unwrap()
        );
        assert_eq!(
            im2win_filter(&nhwc, &f_krsc).unwrap(),
            im2win_filter(&problem, &f).unwrap()
        );
    }

    #[test]
    fn filter_is_stored_column_by_column() {
        // Two 2×3 slices: F'[k][c][s][r] = F[k][c][r][s].
        let problem = Conv2dProblem::new([1, 2, 3, 3], [1, 2, 2, 3]);
        let ft = im2win_filter(&problem, &ramp(12)).unwrap();
        assert_eq!(ft, [0., 3., 1., 4., 2., 5., 6., 9., 7., 10., 8., 11.]);
    }
}
