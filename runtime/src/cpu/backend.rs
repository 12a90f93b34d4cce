//! The CPU im2win backend: build `T` and `F'`, then one window dot product per output.
//!
//! Output `(n, k, p, q)` is `bias[k] + Σ_kk F'[k][kk] · T[n][c][p][q·sw + s·dw][r]` over
//! `kk = c·S·R + s·R + r`. Inside one channel the window is a few contiguous runs of `T`:
//! one run of `S·R` values when `dw = 1`, else `S` runs of `R` values. The inner loop walks
//! such a run for a tile of `KB` output channels × `QB` output columns, so each `T` value
//! loaded serves `KB` outputs and each weight loaded serves `QB`.

use std::slice::ChunksMut;

use rayon::prelude::*;

use super::im2win::{transform_filter, transform_input};
use super::{check_len, check_operands, zeros};
use crate::error::Result;
use crate::problem::{Conv2dProblem, ProblemShape};

/// Output channels per tile. The packed filter holds their `KB` weights of one reduction
/// index next to each other, so the inner loop loads them as one vector.
const KB: usize = 8;
/// Output columns per tile: `KB × QB` float32 accumulators fit in the vector registers.
const QB: usize = 4;

/// The convolution of `input` (`N×C×H×W`) with `filter` (`K×C×R×S`) plus the optional
/// `bias` (`K`) on the CPU with the im2win method, written to `output` (`N×K×P×Q`, NCHW).
///
/// Builds the im2win input `T` and transformed filter `F'` ([`super::im2win_input`],
/// [`super::im2win_filter`]), then computes every output as the dot product of its window
/// of `T` with `F'`, accumulated in float32. Multi-threaded with rayon over output rows.
/// Every element of `output` is written.
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], or [`Error::BufferLength`] naming
/// `"input"`, `"filter"`, `"bias"` or `"output"` when a buffer's length does not match the
/// problem, or [`Error::OutOfMemory`] when the im2win buffer `T` (which may be far larger
/// than the operands) cannot be allocated; `output` is left untouched then.
///
/// [`Error::BufferLength`]: crate::Error::BufferLength
/// [`Error::OutOfMemory`]: crate::Error::OutOfMemory
pub fn conv2d(
    problem: &Conv2dProblem,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let shape = check_operands(problem, input, filter, bias)?;
    check_len("output", shape.output_len, output.len())?;

    let t = transform_input(problem, &shape, input)?;
    let geometry = Geometry::new(problem, &shape);
    let packed = pack_filter(&transform_filter(problem, filter)?, &geometry)?;
    let image_len = geometry.c * geometry.p * geometry.row_len;
    let block_len = geometry.crs * KB;

    // One job per (image, block of KB channels): a contiguous chunk of `output`, found by
    // rayon from its index, so the decomposition allocates nothing per job.
    let plane = geometry.p * geometry.q;
    output
        .par_chunks_mut(geometry.k * plane)
        .enumerate()
        .flat_map_iter(|(n, image)| {
            let blocks = image.chunks_mut(KB * plane).enumerate();
            blocks.map(move |(block, channels)| (n, block, channels))
        })
        .for_each(|(n, block, channels)| {
            let t_image = &t[n * image_len..][..image_len];
            let f_block = &packed[block * block_len..][..block_len];
            let bias: [f32; KB] = std::array::from_fn(|kb| {
                bias.and_then(|b| b.get(block * KB + kb))
                    .copied()
                    .unwrap_or(0.0)
            });
            let mut planes = channels.chunks_mut(plane);
            // Row iterators of the block's (up to KB) channel planes, on the stack.
            let mut rows: [_; KB] =
                std::array::from_fn(|_| planes.next().map(|c| c.chunks_mut(geometry.q)));
            for p in 0..geometry.p {
                geometry.output_rows(t_image, f_block, &bias, p, &mut rows);
            }
        });
    Ok(())
}

/// A run of reduction indices whose `T` values are contiguous: `len` values from
/// `t_offset` past the window's start in a row of `T`, against `len` weights from
/// `f_offset` past the channel's start in `F'`.
struct Run {
    t_offset: usize,
    f_offset: usize,
    len: usize,
}

/// The sizes the inner loops need, taken once from the validated problem.
struct Geometry {
    /// Input channels `C`.
    c: usize,
    /// Output channels `K`.
    k: usize,
    /// Output rows `P`.
    p: usize,
    /// Output columns `Q`.
    q: usize,
    /// Window length of one channel, `S·R`.
    sr: usize,
    /// Reduction length `C·R·S`.
    crs: usize,
    /// Length of one row of `T`, `Wt·R`.
    row_len: usize,
    /// Distance in `T` between the windows of neighbouring output columns, `sw·R`.
    col_step: usize,
    /// The contiguous runs that make up one channel's window.
    runs: Vec<Run>,
}

impl Geometry {
    fn new(problem: &Conv2dProblem, shape: &ProblemShape) -> Self {
        let [k, c, r, s] = problem.filter;
        let dw = problem.dilation[1];
        let runs = if dw == 1 {
            // Columns q·sw + s are adjacent, so the whole window is one run.
            vec![Run {
                t_offset: 0,
                f_offset: 0,
                len: s * r,
            }]
        } else {
            (0..s)
                .map(|fx| Run {
                    t_offset: fx * dw * r,
                    f_offset: fx * r,
                    len: r,
                })
                .collect()
        };
        Geometry {
            c,
            k,
            p: shape.output[2],
            q: shape.output[3],
            sr: s * r,
            crs: shape.reduction,
            row_len: shape.win_width * r,
            col_step: problem.stride[1] * r,
            runs,
        }
    }

    /// Output row `p` of the (up to `KB`) channels of one block, one `rows` entry per
    /// channel, from image `t_image` of `T` and block `f_block` of the packed filter.
    fn output_rows(
        &self,
        t_image: &[f32],
        f_block: &[f32],
        bias: &[f32; KB],
        p: usize,
        rows: &mut [Option<ChunksMut<'_, f32>>; KB],
    ) {
        let mut rows: [Option<&mut [f32]>; KB] =
            std::array::from_fn(|kb| rows[kb].as_mut().and_then(Iterator::next));
        for q0 in (0..self.q).step_by(QB) {
            // Columns past Q repeat the last one: computed and dropped, so the tile keeps
            // its fixed size.
            let starts: [usize; QB] =
                std::array::from_fn(|qb| (q0 + qb).min(self.q - 1) * self.col_step);
            let acc = self.tile(t_image, f_block, p, &starts);
            for (kb, row) in rows.iter_mut().flatten().enumerate() {
                for (qb, y) in row[q0..].iter_mut().take(QB).enumerate() {
                    *y = acc[qb][kb] + bias[kb];
                }
            }
        }
    }

    /// The window dot products of `KB` channels × `QB` windows of row `p`, the windows
    /// starting at `starts` within each row of `T`.
    fn tile(
        &self,
        t_image: &[f32],
        f_block: &[f32],
        p: usize,
        starts: &[usize; QB],
    ) -> [[f32; KB]; QB] {
        let mut acc = [[0.0_f32; KB]; QB];
        let (weights, _) = f_block.as_chunks::<KB>();
        for c in 0..self.c {
            let t_row = &t_image[(c * self.p + p) * self.row_len..][..self.row_len];
            let f_chan = &weights[c * self.sr..][..self.sr];
            for run in &self.runs {
                // Slicing every operand to exactly `len` lets the compiler drop the bounds
                // checks of the loop below.
                let len = run.len;
                let f = &f_chan[run.f_offset..][..len];
                let t: [&[f32]; QB] =
                    std::array::from_fn(|qb| &t_row[starts[qb] + run.t_offset..][..len]);
                for i in 0..len {
                    let w = &f[i];
                    for qb in 0..QB {
                        let x = t[qb][i];
                        for kb in 0..KB {
                            acc[qb][kb] += w[kb] * x;
                        }
                    }
                }
            }
        }
        acc
    }
}

/// `F'` regrouped into blocks of `KB` output channels, `[K/KB][C·S·R][KB]`, so that the
/// `KB` weights of one reduction index are adjacent. Channels past `K` in the last block
/// have zero weights.
fn pack_filter(ft: &[f32], g: &Geometry) -> Result<Vec<f32>> {
    let mut packed = zeros::<f32>("packed filter", g.k.div_ceil(KB) * g.crs * KB)?;
    for (k, f_row) in ft.chunks_exact(g.crs).enumerate() {
        let (block, kb) = (k / KB, k % KB);
        let dst = &mut packed[block * g.crs * KB + kb..];
        for (d, &w) in dst.iter_mut().step_by(KB).zip(f_row) {
            *d = w;
        }
    }
    Ok(packed)
}
