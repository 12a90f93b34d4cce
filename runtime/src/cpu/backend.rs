//! The CPU im2win backend: window strips, a packed filter, and a register-blocked
//! micro-kernel, in parallel over output rows and output channels.
//!
//! Output `(n, k, p, q)` is `bias[k] + Σ_kk F'[k][kk] · T[n][c][p][q·sw + s·dw][r]`
//! (`docs/DESIGN.md`). The work is split into jobs, each a band of output rows of one
//! image for a group of output channels. A job builds the im2win rows of a few of its
//! output rows at a time into its thread's strip ([`super::strip`]), then, for each block
//! of `MR` output channels, runs the micro-kernel ([`super::microkernel`]) over the strip's
//! pixels, `NR` at a time, and stores the sums plus bias. See `docs/cpu-kernels.md`.
//!
//! Memory: the packed filter, the offsets table, one strip per thread and a table of the
//! output rows each job writes (`N × bands × K` slices, bounded by the output's element
//! count, whatever the shape). Nothing is allocated per job, and every allocation is
//! fallible, made before any output is written.

use std::sync::Mutex;

use rayon::prelude::*;

use super::isa::Isa;
use super::microkernel::{MAX_TILE, MicroKernel, Operands};
use super::pack::{pack_filter, pack_panel};
use super::strip::StripGeometry;
use super::{check_len, check_operands, zeros};
use crate::error::{Error, Result};
use crate::problem::Conv2dProblem;

/// Jobs per thread the decomposition aims for, so that a thread slowed by another
/// process (or a short last job) leaves little idle time.
const JOBS_PER_THREAD: usize = 8;
/// Jobs per thread that splitting the output channels aims for, when images and bands of
/// rows are too few.
const GROUP_JOBS_PER_THREAD: usize = 2;
/// Fewest output pixels a band of rows should have: the micro-kernel reuses each filter
/// block it loads on every pixel of a strip, and a filter block of a layer with many
/// channels is hundreds of KiB.
const MIN_BAND_PIXELS: usize = 96;
/// Bytes of one channel block's packed filter that one pass over a strip's pixels uses:
/// the L1 data cache of Zen (32 KiB), so that the pass reloads its weights from L1 or L2,
/// not from memory, for every tile of pixels.
const REDUCTION_BYTES: usize = 32 * 1024;

/// The convolution of `input` (`N×C×H×W`) with `filter` (`K×C×R×S`) plus the optional
/// `bias` (`K`) on the CPU with the im2win method, written to `output` (`N×K×P×Q`, NCHW).
///
/// Uses the fastest micro-kernel this CPU runs ([`Isa::detected`]), or the one named by
/// the environment variable `IM2WIN_CPU_ISA` (`portable`, `avx2`, `avx512`, `neon`).
/// Multi-threaded with rayon (the current pool). Sums are accumulated in float32, in the
/// order of the reduction index. Every element of `output` is written.
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], or [`Error::BufferLength`] naming
/// `"input"`, `"filter"`, `"bias"` or `"output"` when a buffer's length does not match the
/// problem, [`Error::IsaUnavailable`] when `IM2WIN_CPU_ISA` names a level this CPU cannot
/// run, or [`Error::OutOfMemory`] when the working buffers cannot be allocated; `output`
/// is left untouched then.
pub fn conv2d(
    problem: &Conv2dProblem,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let shape = check_operands(problem, input, filter, bias)?;
    check_len("output", shape.output_len, output.len())?;
    conv2d_with_isa(Isa::selected()?, problem, input, filter, bias, output)
}

/// [`conv2d`] with the micro-kernel of `isa`, e.g. to compare the levels or to test each.
///
/// # Errors
/// Those of [`conv2d`]; [`Error::IsaUnavailable`] when this CPU cannot run `isa`.
pub fn conv2d_with_isa(
    isa: Isa,
    problem: &Conv2dProblem,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let shape = check_operands(problem, input, filter, bias)?;
    check_len("output", shape.output_len, output.len())?;
    let kernel = MicroKernel::for_isa(isa).ok_or_else(|| Error::IsaUnavailable {
        isa: isa.name().to_string(),
    })?;
    let [n, c, h, w] = problem.input;
    let k = problem.filter[0];
    let [_, _, p, q] = shape.output;

    let split = Split::new(n, k, p, q, kernel.mr, rayon::current_num_threads());
    let geometry = StripGeometry::new(problem, &shape, p.div_ceil(split.bands));
    // Each filter block is read by every job of its channel group; when that is one job
    // (one band, one strip), it packs its panels itself, into L1, and the packed filter
    // is never written to memory. Otherwise the filter is packed once, up front.
    let single_use = split.bands == 1 && n == 1 && geometry.max_rows >= p;
    let packed = if single_use {
        Vec::new()
    } else {
        pack_filter(problem, filter, kernel.mr)?
    };
    let pass_len = pass_len(shape.reduction, kernel.mr);
    let (offsets, reach) = geometry.offsets()?;
    let threads = rayon::current_num_threads().max(1);
    let mut scratch = Vec::new();
    scratch
        .try_reserve_exact(threads)
        .map_err(|_| oom("strips", threads, size_of::<Mutex<Scratch>>()))?;
    for _ in 0..threads {
        scratch.push(Mutex::new(Scratch {
            strip: zeros::<f32>("strip", geometry.len())?,
            panel: zeros::<f32>(
                "filter panel",
                if single_use { pass_len * kernel.mr } else { 0 },
            )?,
        }));
    }
    let mut rows = band_rows(output, k, p * q, q, split.bands)?;

    let job = Job {
        kernel,
        geometry: &geometry,
        packed: (!single_use).then_some(&packed[..]),
        problem,
        filter,
        pass_len,
        offsets: &offsets,
        reach,
        bias,
        crs: shape.reduction,
        q,
    };
    let image_len = c * h * w;
    rows.par_chunks_mut(k)
        .enumerate()
        .for_each(|(band_index, planes)| {
            let (image, band) = (band_index / split.bands, band_index % split.bands);
            let x = &input[image * image_len..][..image_len];
            let (p0, band_rows) = split.band(band, p);
            planes
                .par_chunks_mut(split.group)
                .enumerate()
                .for_each(|(group, planes)| {
                    // Each thread has a strip of its own: the lock is never contended
                    // (unless rayon runs this outside its pool, where it stays correct).
                    let slot = rayon::current_thread_index().unwrap_or(0) % scratch.len();
                    let mut scratch = scratch[slot].lock().unwrap_or_else(|e| e.into_inner());
                    job.run(x, p0, band_rows, group * split.group, planes, &mut scratch);
                });
        });
    Ok(())
}

/// [`Error::OutOfMemory`] for `count` items of `item` bytes each.
fn oom(what: &'static str, count: usize, item: usize) -> Error {
    Error::OutOfMemory {
        what,
        bytes: count as u128 * item.max(1) as u128,
        on_device: false,
    }
}

/// How the output is split into jobs: `bands` bands of output rows per image, each in
/// groups of `group` output channels (a multiple of the micro-kernel's `MR`).
#[derive(Debug, Clone, Copy)]
struct Split {
    bands: usize,
    group: usize,
}

impl Split {
    /// Enough jobs for `threads` threads where the shape allows: first images, then bands
    /// of rows ([`JOBS_PER_THREAD`] per thread; they cost nothing extra, as long as each
    /// keeps [`MIN_BAND_PIXELS`] pixels to reuse every loaded filter block on), and only
    /// then groups of output channels, just enough for [`GROUP_JOBS_PER_THREAD`] jobs per
    /// thread (each group builds the strips again).
    fn new(n: usize, k: usize, p: usize, q: usize, mr: usize, threads: usize) -> Split {
        let threads = threads.max(1);
        let target = if threads > 1 {
            threads * JOBS_PER_THREAD
        } else {
            1
        };
        let bands = target
            .div_ceil(n)
            .clamp(1, (p * q / MIN_BAND_PIXELS).clamp(1, p));
        let blocks = k.div_ceil(mr);
        let groups = (threads * GROUP_JOBS_PER_THREAD)
            .div_ceil(n * bands)
            .clamp(1, blocks);
        Split {
            bands,
            group: blocks.div_ceil(groups) * mr,
        }
    }

    /// First row and row count of band `band` of `p` rows (the first `p % bands` bands
    /// have one row more).
    fn band(&self, band: usize, p: usize) -> (usize, usize) {
        let (base, extra) = (p / self.bands, p % self.bands);
        (
            band * base + band.min(extra),
            base + usize::from(band < extra),
        )
    }
}

/// `output` (`N×K×P×Q`) cut into `N × bands × K` row bands, ordered (image, band,
/// channel), so that the `K` consecutive entries of one (image, band) are the rows that
/// one job writes: disjoint slices handed out safely, with one allocation in all.
fn band_rows(
    output: &mut [f32],
    k: usize,
    plane: usize,
    q: usize,
    bands: usize,
) -> Result<Vec<&mut [f32]>> {
    let images = output.len() / (k * plane);
    let split = Split { bands, group: 1 };
    let p = plane / q;
    let mut rows = Vec::new();
    rows.try_reserve_exact(images * bands * k).map_err(|_| {
        oom(
            "output row table",
            images * bands * k,
            size_of::<&mut [f32]>(),
        )
    })?;
    let mut tails: Vec<&mut [f32]> = Vec::new();
    tails
        .try_reserve_exact(k)
        .map_err(|_| oom("output row table", k, size_of::<&mut [f32]>()))?;
    for image in output.chunks_exact_mut(k * plane) {
        tails.clear();
        tails.extend(image.chunks_exact_mut(plane));
        for band in 0..bands {
            let len = split.band(band, p).1 * q;
            for tail in &mut tails {
                let (head, rest) = std::mem::take(tail).split_at_mut(len);
                rows.push(head);
                *tail = rest;
            }
        }
    }
    Ok(rows)
}

/// A thread's working memory: its strip, and the filter panel it packs when jobs pack
/// their own.
struct Scratch {
    strip: Vec<f32>,
    panel: Vec<f32>,
}

/// Reduction indices per pass over a strip: passes of equal length (576 = 2 × 288, not
/// 512 + 64), each of at most [`REDUCTION_BYTES`] of a channel block's filter.
fn pass_len(crs: usize, mr: usize) -> usize {
    let passes = crs.div_ceil((REDUCTION_BYTES / (mr * size_of::<f32>())).max(1));
    crs.div_ceil(passes)
}

/// What every job shares.
struct Job<'a> {
    kernel: MicroKernel,
    geometry: &'a StripGeometry,
    /// The packed filter, or `None` when every job packs its own panels (from `filter`).
    packed: Option<&'a [f32]>,
    problem: &'a Conv2dProblem,
    filter: &'a [f32],
    /// Reduction indices per pass ([`pass_len`]).
    pass_len: usize,
    offsets: &'a [usize],
    reach: usize,
    bias: Option<&'a [f32]>,
    /// Reduction length `C·R·S`.
    crs: usize,
    /// Output columns `Q`.
    q: usize,
}

impl Job<'_> {
    /// Output rows `p0 .. p0 + rows` of image `x`, channels `k0 ..`, one entry of `planes`
    /// per channel (those rows of its output plane).
    ///
    /// Loop order, outermost first: strips of rows (built once for all the job's
    /// channels), channel blocks, passes over [`REDUCTION_BYTES`] of the block's packed
    /// filter (so that the filter a pass reads stays in L1 while every pixel of the strip
    /// uses it, and a block's filter is read front to back), tiles of pixels. The first
    /// pass stores sum plus bias, later passes add to it.
    fn run(
        &self,
        x: &[f32],
        p0: usize,
        rows: usize,
        k0: usize,
        planes: &mut [&mut [f32]],
        scratch: &mut Scratch,
    ) {
        let Scratch { strip, panel } = scratch;
        let (mr, nr) = (self.kernel.mr, self.kernel.nr);
        let mut tile = [0.0_f32; MAX_TILE];
        let mut starts = [0_usize; MAX_TILE];
        let step = self.geometry.max_rows;
        let pass_len = self.pass_len;
        for first in (0..rows).step_by(step) {
            let count = step.min(rows - first);
            self.geometry.build(x, p0 + first, count, strip);
            let pixels = count * self.q;
            let out_base = first * self.q;
            // Tiles of equal size (25 pixels with NR = 6: five of 5, not four of 6 and a
            // lone pixel that would reload the whole filter block for one output).
            let tiles = pixels.div_ceil(nr);
            let per_tile = pixels.div_ceil(tiles);
            for (block, channels) in planes.chunks_mut(mr).enumerate() {
                let k_block = k0 + block * mr;
                for kk0 in (0..self.crs).step_by(pass_len) {
                    let kk1 = (kk0 + pass_len).min(self.crs);
                    let filter: &[f32] = match self.packed {
                        Some(packed) => {
                            &packed[(k_block / mr) * self.crs * mr..][kk0 * mr..kk1 * mr]
                        }
                        None => {
                            let panel = &mut panel[..(kk1 - kk0) * mr];
                            pack_panel(self.problem, self.filter, k_block, kk0, mr, panel);
                            panel
                        }
                    };
                    // Window starts walk the pixels in order: no division per pixel (a
                    // 64-bit division costs about as much as the tile's epilogue).
                    let mut cursor = self.geometry.first_pixel();
                    for j0 in (0..pixels).step_by(per_tile) {
                        let t = per_tile.min(pixels - j0);
                        for start in &mut starts[..t] {
                            *start = cursor.next_start();
                        }
                        let ops = Operands {
                            strip,
                            offsets: &self.offsets[kk0..kk1],
                            reach: self.reach,
                            filter,
                            starts: &starts[..t],
                        };
                        self.kernel.run(&ops, &mut tile);
                        // The epilogue: bias, then the NCHW store. Later epilogues and
                        // layouts replace only this loop.
                        for (m, plane) in channels.iter_mut().enumerate() {
                            let dst = &mut plane[out_base + j0..][..t];
                            let sums = tile[m..].iter().step_by(mr);
                            if kk0 == 0 {
                                let b = self.bias.map_or(0.0, |b| b[k_block + m]);
                                for (y, &sum) in dst.iter_mut().zip(sums) {
                                    *y = sum + b;
                                }
                            } else {
                                for (y, &sum) in dst.iter_mut().zip(sums) {
                                    *y += sum;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_cover_every_row_once() {
        for (n, k, p, threads) in [
            (1, 64, 56, 2),
            (1, 512, 5, 2),
            (128, 64, 3, 8),
            (1, 1, 1, 1),
        ] {
            let split = Split::new(n, k, p, p, 16, threads);
            assert!(split.bands >= 1 && split.bands <= p);
            assert_eq!(split.group % 16, 0);
            let mut next = 0;
            for band in 0..split.bands {
                let (p0, rows) = split.band(band, p);
                assert_eq!(p0, next);
                next += rows;
            }
            assert_eq!(next, p);
        }
        // Batch 1, 5×5 outputs, 2 threads: too few pixels for bands; channel groups.
        let split = Split::new(1, 512, 5, 5, 16, 2);
        assert_eq!((split.bands, split.group), (1, 128));
        // The quickstart layer at batch 1: bands only.
        let split = Split::new(1, 64, 56, 56, 16, 2);
        assert_eq!((split.bands, split.group), (16, 64));
    }
}
