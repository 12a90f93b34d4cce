//! The filter packed for the micro-kernel: `[ceil(K/MR)][C·S·R][MR]`.
//!
//! Block `b` holds output channels `b·MR .. b·MR + MR`; within it, the `MR` weights of one
//! reduction index `kk = c·S·R + s·R + r` (the im2win order of `docs/DESIGN.md`, the order of
//! the strip's offsets table) are adjacent, so the micro-kernel loads them as one or two
//! vectors and walks the block front to back. Channels past `K` in the last block get zero
//! weights: they are computed and never stored.

use rayon::prelude::*;

use super::zeros;
use crate::error::Result;
use crate::problem::Conv2dProblem;

/// `filter` (`K×C×R×S`, validated) packed in blocks of `mr` output channels.
///
/// # Errors
/// [`crate::Error::OutOfMemory`] when the packed filter cannot be allocated.
pub(super) fn pack_filter(problem: &Conv2dProblem, filter: &[f32], mr: usize) -> Result<Vec<f32>> {
    let [k, c, r, s] = problem.filter;
    let crs = c * r * s;
    let mut packed = zeros::<f32>("packed filter", k.div_ceil(mr) * crs * mr)?;
    packed
        .par_chunks_mut(crs * mr)
        .enumerate()
        .for_each(|(block, dst)| {
            for m in 0..mr.min(k - block * mr) {
                let src = &filter[(block * mr + m) * crs..][..crs];
                for ci in 0..c {
                    for fx in 0..s {
                        for fy in 0..r {
                            let kk = (ci * s + fx) * r + fy;
                            dst[kk * mr + m] = src[(ci * r + fy) * s + fx];
                        }
                    }
                }
            }
        });
    Ok(packed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_hold_the_transformed_filter_channel_fastest() {
        // K = 3 in blocks of 2, C = 1, 2×3 filters F[k][r][s] = 100k + 10r + s.
        let problem = Conv2dProblem::new([1, 1, 4, 4], [3, 1, 2, 3]);
        let filter: Vec<f32> = (0..3)
            .flat_map(|k| {
                (0..2).flat_map(move |r| (0..3).map(move |s| (100 * k + 10 * r + s) as f32))
            })
            .collect();
        let packed = pack_filter(&problem, &filter, 2).unwrap();
        assert_eq!(packed.len(), 2 * 6 * 2);
        // kk = s·R + r: (s, r) = (0,0), (0,1), (1,0), (1,1), (2,0), (2,1).
        let order = [0., 10., 1., 11., 2., 12.];
        for (kk, &v) in order.iter().enumerate() {
            assert_eq!(packed[kk * 2], v);
            assert_eq!(packed[kk * 2 + 1], v + 100.);
            assert_eq!(packed[12 + kk * 2], v + 200.);
            assert_eq!(packed[12 + kk * 2 + 1], 0.0, "channel 3 does not exist");
        }
    }
}
