//! The filter packed for the micro-kernel: `[ceil(K/MR)][C·S·R][MR]`.
//!
//! Block `b` holds output channels `b·MR .. b·MR + MR`; within it, the `MR` weights of one
//! reduction index `kk = c·S·R + s·R + r` (the im2win order of `docs/DESIGN.md`, the order of
//! the strip's offsets table) are adjacent, so the micro-kernel loads them as one or two
//! vectors and walks the block front to back. Channels past `K` in the last block get zero
//! weights: they are computed and never stored.

use rayon::prelude::*;

use crate::error::Result;
use crate::problem::Conv2dProblem;

/// `filter` (`K×C×R×S`, validated) packed in blocks of `mr` output channels (8, 16 or 32:
/// the micro-kernels' `MR`).
///
/// Every group of `mr` weights is computed where it lands, in parallel and in the order of
/// the packed filter: one pass over memory, no zero-filling first. A large filter (4.7 MiB
/// for 512 × 256 × 3 × 3) is read once per call, so this pass costs about what a copy does.
///
/// # Errors
/// [`crate::Error::OutOfMemory`] when the packed filter cannot be allocated.
pub(super) fn pack_filter(problem: &Conv2dProblem, filter: &[f32], mr: usize) -> Result<Vec<f32>> {
    match mr {
        8 => pack::<8>(problem, filter),
        16 => pack::<16>(problem, filter),
        32 => pack::<32>(problem, filter),
        _ => unreachable!("no micro-kernel has MR = {mr}"),
    }
}

fn pack<const MR: usize>(problem: &Conv2dProblem, filter: &[f32]) -> Result<Vec<f32>> {
    let [k, c, r, s] = problem.filter;
    let crs = c * r * s;
    let groups = k.div_ceil(MR) * crs;
    let mut packed: Vec<[f32; MR]> = Vec::new();
    packed
        .try_reserve_exact(groups)
        .map_err(|_| crate::Error::OutOfMemory {
            what: "packed filter",
            bytes: groups as u128 * (MR * size_of::<f32>()) as u128,
            on_device: false,
        })?;
    // Consecutive groups are consecutive reduction indices of one block, so each of the
    // `MR` filter rows a block reads is walked front to back (by (c, s, r), i.e. with a
    // stride of S inside each R×S slice).
    (0..groups)
        .into_par_iter()
        .map(|group| {
            let (block, kk) = (group / crs, group % crs);
            let at = source_index(kk, r, s);
            std::array::from_fn(|m| {
                let channel = block * MR + m;
                if channel < k {
                    filter[channel * crs + at]
                } else {
                    0.0
                }
            })
        })
        .collect_into_vec(&mut packed);
    Ok(packed.into_flattened())
}

/// Where reduction index `kk = c·S·R + s·R + r` of one output channel lies in its
/// `C×R×S` filter: `(c·R + r)·S + s`.
fn source_index(kk: usize, r: usize, s: usize) -> usize {
    let (ci, sr) = (kk / (r * s), kk % (r * s));
    let (fx, fy) = (sr / r, sr % r);
    (ci * r + fy) * s + fx
}

/// One panel of the packed filter built on the spot: reduction indices `kk0 ..` (as many
/// as `panel` has groups of `mr`) of the block of output channels from `k0`, i.e. what
/// `pack_filter(..)[block][kk0..]` would hold. For jobs that are the only user of their
/// filter block: the panel goes to L1 and is used there, instead of the whole packed
/// filter being written to memory and read back.
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
    // One filter row at a time, read front to back (the rows of a block lie C·R·S floats
    // apart: reading them side by side would thrash L1's sets); the writes, `mr` floats
    // apart, stay within the panel in L1.
    for m in 0..channels {
        let row = &filter[(k0 + m) * crs..][..crs];
        let (mut ci, mut fx, mut fy) = (kk0 / (r * s), kk0 % (r * s) / r, kk0 % r);
        for d in panel.iter_mut().skip(m).step_by(mr).take(len) {
            *d = row[(ci * r + fy) * s + fx];
            // The next reduction index: r fastest, then s, then c.
            fy += 1;
            if fy == r {
                fy = 0;
                fx += 1;
                if fx == s {
                    fx = 0;
                    ci += 1;
                }
            }
        }
    }
    for group in panel.chunks_exact_mut(mr) {
        group[channels..].fill(0.0);
    }
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
        let packed = pack::<2>(&problem, &filter).unwrap();
        assert_eq!(packed.len(), 2 * 6 * 2);
        // kk = s·R + r: (s, r) = (0,0), (0,1), (1,0), (1,1), (2,0), (2,1).
        let order = [0., 10., 1., 11., 2., 12.];
        for (kk, &v) in order.iter().enumerate() {
            assert_eq!(packed[kk * 2], v);
            assert_eq!(packed[kk * 2 + 1], v + 100.);
            assert_eq!(packed[12 + kk * 2], v + 200.);
            assert_eq!(packed[12 + kk * 2 + 1], 0.0, "channel 3 does not exist");
        }
        // Panels are the same numbers, from any reduction index.
        for (k0, kk0, len) in [(0, 0, 6), (0, 2, 3), (2, 1, 5)] {
            let mut panel = vec![f32::NAN; len * 2];
            pack_panel(&problem, &filter, k0, kk0, 2, &mut panel);
            let block = k0 / 2;
            assert_eq!(panel, packed[(block * 6 + kk0) * 2..][..len * 2]);
        }
    }
}
