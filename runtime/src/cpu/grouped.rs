//! Grouped and depthwise convolution on the CPU (`groups` > 1): the direct convolution over
//! each output's group, in float32, parallel over the output's contiguous runs.
//!
//! A grouped problem's reduction is short (`C / groups · R · S`: 9 for a depthwise 3×3), so
//! the im2win strips and the register-blocked micro-kernel of the dense backend would spend
//! more on packing than on multiplying; a plain loop over the group's channels and the taps,
//! with the bounds tested once per tap, is what memory allows. Outputs are computed in
//! float32 with fused multiply-adds in the order channel-major within each tap (the GPU
//! kernels' order), and through the same float32 epilogue as the dense backend
//! ([`Epilogue::apply_f32`](crate::Epilogue::apply_f32)).

use rayon::prelude::*;

use crate::error::Result;
use crate::layout::Layout;
use crate::problem::{Conv2dProblem, ProblemShape};

/// The grouped convolution of float32 buffers already checked against `problem` (of
/// `shape`, `groups` > 1). Parallel over output planes `(n, k)` (NCHW) or output rows
/// `(n, p)` (NHWC).
pub(super) fn run_f32(
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let [_, _, h, w] = problem.input;
    let [k, cg, r, s] = problem.filter;
    let [_, _, p, q] = shape.output;
    let k_per_group = k / problem.groups;
    let [sh, sw] = problem.stride;
    let [dh, dw] = problem.dilation;
    let (top, left) = (problem.padding.top, problem.padding.left);
    let [xn, xc, xh, xw] = problem.layout.strides(problem.input);
    let [fk, fc, fr, fs] = problem.filter_layout.strides(problem.filter);
    let epilogue = problem.epilogue;

    // The float32 sum of output (n, kk, oy, ox): the taps inside the input, each over the
    // group's channels.
    let sum = |n: usize, kk: usize, oy: usize, ox: usize| {
        let first = kk / k_per_group * cg;
        let x_image = &input[n * xn + first * xc..];
        let f_out = &filter[kk * fk..];
        let mut acc = 0.0_f32;
        for fy in 0..r {
            let Some(iy) = (oy * sh + fy * dh).checked_sub(top).filter(|&iy| iy < h) else {
                continue;
            };
            for fx in 0..s {
                let Some(ix) = (ox * sw + fx * dw).checked_sub(left).filter(|&ix| ix < w) else {
                    continue;
                };
                let x_tap = &x_image[iy * xh + ix * xw..];
                let f_tap = &f_out[fy * fr + fx * fs..];
                for ci in 0..cg {
                    acc = x_tap[ci * xc].mul_add(f_tap[ci * fc], acc);
                }
            }
        }
        acc
    };
    let store = |i: usize, n: usize, kk: usize, oy: usize, ox: usize| {
        let b = bias.map_or(0.0, |b| b[kk]);
        let res = residual.map_or(0.0, |res| res[i]);
        epilogue.apply_f32(sum(n, kk, oy, ox), b, res)
    };
    match problem.layout {
        Layout::Nchw => {
            output
                .par_chunks_mut(p * q)
                .enumerate()
                .for_each(|(plane, out)| {
                    let (n, kk) = (plane / k, plane % k);
                    for (e, y) in out.iter_mut().enumerate() {
                        *y = store(plane * p * q + e, n, kk, e / q, e % q);
                    }
                });
        }
        Layout::Nhwc => {
            output
                .par_chunks_mut(q * k)
                .enumerate()
                .for_each(|(row, out)| {
                    let (n, oy) = (row / p, row % p);
                    for (e, y) in out.iter_mut().enumerate() {
                        *y = store(row * q * k + e, n, e % k, oy, e / k);
                    }
                });
        }
    }
    Ok(())
}
