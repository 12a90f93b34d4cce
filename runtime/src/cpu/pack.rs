//! The filter packed for the micro-kernel: `[ceil(K/MR)][C·S·R][MR]`.
//!
//! Block `b` holds output channels `b·MR .. b·MR + MR`; within it, the `MR` weights of one
//! reduction index `kk = c·S·R + s·R + r` (the im2win order of `docs/DESIGN.md`, the order of
//! the strip's offsets table) are adjacent, so the micro-kernel loads them as one or two
//! vectors and walks the block front to back. Channels past `K` in the last block get zero
//! weights: they are computed and never stored.
//!
//! The filter is read in the problem's [`FilterLayout`](crate::FilterLayout) (KCRS or
//! KRSC) through its strides: the packed filter, and so everything after it, is the same
//! for both.

use rayon::prelude::*;

use crate::error::Result;
use crate::problem::Conv2dProblem;

/// `filter` (`K×C×R×S` in the problem's filter layout, validated) packed in blocks of `mr` output channels (8, 16 or 32:
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
    let taps = Taps::new(problem);
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
    // stride of S inside each R×S slice in KCRS, of C·S in KRSC).
    (0..groups)
        .into_par_iter()
        .map(|group| {
            let (block, kk) = (group / crs, group % crs);
            let at = taps.source_index(kk, r, s);
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

/// The strides of `c`, `r` and `s` inside one output channel's filter (`C·R·S` floats
/// in either layout): `[R·S, S, 1]` in KCRS, `[1, S·C, C]` in KRSC.
#[derive(Debug, Clone, Copy)]
struct Taps {
    c: usize,
    r: usize,
    s: usize,
}

impl Taps {
    fn new(problem: &Conv2dProblem) -> Taps {
        let [k, c, r, s] = problem.filter_layout.strides(problem.filter);
        debug_assert_eq!(k, problem.filter[1..].iter().product::<usize>());
        Taps { c, r, s }
    }

    /// Where the weight of channel `ci`, filter row `fy` and column `fx` lies.
    fn at(&self, ci: usize, fy: usize, fx: usize) -> usize {
        ci * self.c + fy * self.r + fx * self.s
    }

    /// Where reduction index `kk = c·S·R + s·R + r` of one output channel lies in its
    /// filter (`r`, `s`: the filter's height and width): `(c·R + r)·S + s` in KCRS,
    /// `(r·S + s)·C + c` in KRSC.
    fn source_index(&self, kk: usize, r: usize, s: usize) -> usize {
        let (ci, sr) = (kk / (r * s), kk % (r * s));
        let (fx, fy) = (sr / r, sr % r);
        self.at(ci, fy, fx)
    }
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
    let taps = Taps::new(problem);
    let channels = mr.min(k - k0);
    let len = panel.len() / mr;
    // One filter row at a time, read front to back (the rows of a block lie C·R·S floats
    // apart: reading them side by side would thrash L1's sets); the writes, `mr` floats
    // apart, stay within the panel in L1.
    for m in 0..channels {
        let row = &filter[(k0 + m) * crs..][..crs];
        let (mut ci, mut fx, mut fy) = (kk0 / (r * s), kk0 % (r * s) / r, kk0 % r);
        for d in panel.iter_mut().skip(m).step_by(mr).take(len) {
            *d = row[taps.at(ci, fy, fx)];
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
    use crate::layout::FilterLayout;

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

    #[test]
    fn a_krsc_filter_packs_as_its_kcrs_twin() {
        // K = 5 (a partial block of 4), C = 3, 2×3 filters, distinct weights.
        let kcrs = Conv2dProblem::new([1, 3, 4, 4], [5, 3, 2, 3]);
        let krsc = kcrs.with_filter_layout(FilterLayout::Krsc);
        let dims = kcrs.filter;
        let value =
            |k: usize, c: usize, r: usize, s: usize| (1000 * k + 100 * c + 10 * r + s) as f32;
        let mut f_kcrs = vec![f32::NAN; 90];
        let mut f_krsc = vec![f32::NAN; 90];
        for k in 0..5 {
            for c in 0..3 {
                for r in 0..2 {
                    for s in 0..3 {
                        f_kcrs[FilterLayout::Kcrs.offset(dims, k, c, r, s)] = value(k, c, r, s);
                        f_krsc[FilterLayout::Krsc.offset(dims, k, c, r, s)] = value(k, c, r, s);
                    }
                }
            }
        }
        assert_ne!(f_kcrs, f_krsc);
        let packed = pack::<4>(&kcrs, &f_kcrs).unwrap();
        assert_eq!(pack::<4>(&krsc, &f_krsc).unwrap(), packed);
        for (k0, kk0, len) in [(0, 0, 18), (0, 5, 7), (4, 11, 7)] {
            let mut panel = vec![f32::NAN; len * 4];
            pack_panel(&krsc, &f_krsc, k0, kk0, 4, &mut panel);
            assert_eq!(panel, packed[((k0 / 4) * 18 + kk0) * 4..][..len * 4]);
        }
    }
}
