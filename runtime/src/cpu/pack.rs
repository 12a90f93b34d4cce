//! The filter packed for the micro-kernel: `[ceil(K/MR)][C·R·S][MR]`.
//!
//! Block `b` holds output channels `b·MR .. b·MR + MR`; within it, the `MR` weights of one
//! reduction index `kk` are adjacent, so the micro-kernel loads them as one or two vectors
//! and walks the block front to back. Channels past `K` in the last block get zero
//! weights: they are computed and never stored.
//!
//! The reduction runs in the filter's own memory order (`(c·R + r)·S + s` for KCRS,
//! `(r·S + s)·C + c` for KRSC; the strip's offsets table follows it,
//! [`super::strip::StripGeometry::offsets`]), so output channel `k`'s weights are the
//! `C·R·S` floats `filter[k·C·R·S ..]` in reduction order whatever the layout, and a block
//! is the transpose of `MR` such rows: 8 × 8 tiles transposed in AVX registers where the
//! CPU has AVX, one float at a time elsewhere.

use rayon::prelude::*;

use super::transpose::Transpose8;
use crate::error::Result;
use crate::problem::Conv2dProblem;

/// `filter` (`K×C×R×S` in the problem's filter layout, validated) packed in blocks of `mr`
/// output channels (the micro-kernels' `MR`), the blocks in parallel.
///
/// # Errors
/// [`crate::Error::OutOfMemory`] when the packed filter cannot be allocated.
pub(super) fn pack_filter(problem: &Conv2dProblem, filter: &[f32], mr: usize) -> Result<Vec<f32>> {
    let [k, c, r, s] = problem.filter;
    let len = k.div_ceil(mr) * c * r * s * mr;
    let mut packed = super::workspace::take("packed filter", len)?;
    pack_filter_into(problem, filter, mr, &mut packed);
    Ok(packed)
}

/// [`pack_filter`] into `packed` (`⌈K/mr⌉ · C·R·S · mr` floats), e.g. a prepared filter's
/// own buffer.
pub(super) fn pack_filter_into(
    problem: &Conv2dProblem,
    filter: &[f32],
    mr: usize,
    packed: &mut [f32],
) {
    let [_, c, r, s] = problem.filter;
    let crs = c * r * s;
    if crs > 0 {
        packed
            .par_chunks_mut(crs * mr)
            .enumerate()
            .for_each(|(block, dst)| pack_panel(problem, filter, block * mr, 0, mr, dst));
    }
}

/// One panel of the packed filter: reduction indices `kk0 ..` (as many as `panel` has
/// groups of `mr`) of the block of output channels from `k0`, i.e. what
/// `pack_filter(..)[block][kk0..]` holds. For jobs that are the only user of their filter
/// block, the panel is built just before it is used and stays in cache.
pub(super) fn pack_panel(
    problem: &Conv2dProblem,
    filter: &[f32],
    k0: usize,
    kk0: usize,
    mr: usize,
    panel: &mut [f32],
) {
    let [k, c, r, s] = problem.filter;
    let crs = c * r * s;
    let channels = mr.min(k - k0);
    let len = panel.len() / mr;
    let row = |m: usize| &filter[(k0 + m) * crs + kk0..][..len];
    // 8 × 8 tiles: 8 rows' runs of 8 floats become 8 groups' runs of 8 channels.
    let (full_rows, full_len) = (channels / 8 * 8, len / 8 * 8);
    let mut done_rows = 0;
    if let Some(transpose) = Transpose8::detect() {
        for m0 in (0..full_rows).step_by(8) {
            let rows: [&[f32]; 8] = std::array::from_fn(|i| row(m0 + i));
            for l0 in (0..full_len).step_by(8) {
                transpose.run(&rows, l0, &mut panel[l0 * mr + m0..], mr);
            }
        }
        done_rows = full_rows;
    }
    // What the tiles left: the last rows (fewer than 8, or all rows without AVX) and the
    // last reduction indices of every row.
    for m in 0..channels {
        let from = if m < done_rows { full_len } else { 0 };
        let src = row(m);
        for l in from..len {
            panel[l * mr + m] = src[l];
        }
    }
    for group in panel.chunks_exact_mut(mr) {
        group[channels..].fill(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::FilterLayout;

    /// Every block is the transpose of its `mr` filter rows (zeros past `K`), in either
    /// filter layout, through the 8 × 8 tiles and the edges they leave (`K` and `C·R·S`
    /// not multiples of 8); panels from any reduction index are the same numbers.
    #[test]
    fn blocks_are_transposed_filter_rows() {
        for (filter_layout, mr, k) in [
            (FilterLayout::Kcrs, 16, 19),
            (FilterLayout::Krsc, 16, 19),
            (FilterLayout::Kcrs, 32, 40),
            (FilterLayout::Kcrs, 8, 8),
            (FilterLayout::Krsc, 32, 3),
        ] {
            // C·R·S = 3·2·5 = 30: three 8-wide tiles and 6 left over.
            let problem =
                Conv2dProblem::new([1, 3, 9, 9], [k, 3, 2, 5]).with_filter_layout(filter_layout);
            let crs = 30;
            let filter: Vec<f32> = (0..k * crs).map(|i| i as f32).collect();
            let packed = pack_filter(&problem, &filter, mr).unwrap();
            assert_eq!(packed.len(), k.div_ceil(mr) * crs * mr);
            for (i, &v) in packed.iter().enumerate() {
                let (block, kk, m) = (i / (crs * mr), i / mr % crs, i % mr);
                let channel = block * mr + m;
                let want = if channel < k {
                    filter[channel * crs + kk]
                } else {
                    0.0
                };
                assert_eq!(
                    v, want,
                    "{filter_layout} mr {mr}: block {block} kk {kk} m {m}"
                );
            }
            for (k0, kk0, len) in [(0, 0, crs), (0, 3, 17), (mr, 9, 21)] {
                if k0 >= k {
                    continue;
                }
                let mut panel = vec![f32::NAN; len * mr];
                pack_panel(&problem, &filter, k0, kk0, mr, &mut panel);
                let block = k0 / mr;
                assert_eq!(panel, packed[(block * crs + kk0) * mr..][..len * mr]);
            }
        }
    }
}
