//! NCHW convolutions with short reductions, vectorised over output pixels.
//!
//! The main path ([`super::backend`]) vectorises over output channels: its tiles are
//! pixel-major, so an NCHW output needs each tile transposed (8 × 8 at a time) into runs of
//! one channel, then stored run by run into `MR` different planes. Where the reduction is
//! short (the C = 3 stems: 27 to 363 products per output) that store is most of the call:
//! conv7 (3 × 3, C = 3) spent 57% of its time storing. Here a tile is [`KB`] output
//! channels × [`TILE`] consecutive pixels of one output row, each accumulator 8 neighbouring
//! outputs of one channel: the sums leave the registers as contiguous runs of the NCHW
//! plane, with no transpose, and each loaded vector of inputs serves `KB` channels.
//!
//! **The strip: one output row's input rows, by phase.** For output row `p` the strip holds
//! the `R` (height-dilated, zero-padded) input rows its windows read, as im2win's rows do,
//! but each split into its `sw` phases instead of interleaved:
//!
//! ```text
//! strip[c][r][φ][j] = Xpad[c][p·sh + r·dh][j·sw + φ]          (0 in the padding)
//! ```
//!
//! Output pixel `q` at filter column `s` reads padded column `q·sw + s·dw`, which is
//! `(q + ⌊s·dw / sw⌋)·sw + (s·dw mod sw)`: phase `s·dw mod sw`, index `q + ⌊s·dw / sw⌋`. So
//! neighbouring pixels read neighbouring floats of one phase row whatever the stride and
//! dilation, and weight `(c, r, s)` lies at a fixed offset from the tile's first pixel
//! (the offsets table, in the filter's memory order like [`super::pack`]'s packed filter).
//!
//! Only for CPUs with AVX2 and FMA (the `avx2` and `avx512` levels), each with its own tile
//! ([`Tiling`]): 6 channels × 16 pixels in 256-bit registers, 8 × 32 in 512-bit ones (on
//! a CPU with two 512-bit FMA units the 256-bit tile reaches at most half their rate).
//! `docs/cpu-kernels.md` has the measurements behind [`MAX_REDUCTION`].

use std::sync::Mutex;

use super::backend::{FilterIn, Split, Store, for_each_nchw_job, oom, store_plain, thread_slot};
use super::isa::Isa;
use super::pack::pack_filter;
use super::{workspace, zeros};
use crate::error::Result;
use crate::layout::{FilterLayout, Layout};
use crate::problem::{Conv2dProblem, ProblemShape};

/// A level's tile: `kb` output channels × `pixels` consecutive outputs of one row, two
/// input vectors of `pixels / 2` each; each weight broadcast serves the tile's pixels and
/// each input vector its `kb` channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tiling {
    /// Output channels per tile (and per block of the packed filter).
    pub(super) kb: usize,
    pixels: usize,
}

/// AVX2: 6 × 16, 12 accumulators; with 2 input vectors and a broadcast weight 15 of the 16
/// registers. (4 × 24 needs all 16, and the compiler then kept an accumulator on the stack:
/// a store and a load in every FMA chain, measured 2× slower on the C = 3 stems.)
const AVX2_TILING: Tiling = Tiling { kb: 6, pixels: 16 };
/// AVX-512: 8 × 32, 16 accumulators of 32 registers, enough independent FMA chains for
/// two FMA units of 4 cycles' latency; a row's last 16 pixels or fewer take a tile of one
/// input vector (8 accumulators), where the full tile would compute up to 31 pixels past
/// the row. The channel blocks of 8 divide the usual channel counts (64, 96).
const AVX512_TILING: Tiling = Tiling { kb: 8, pixels: 32 };
/// The largest of the tilings, which a tile's sums are sized for.
const MAX_KB: usize = 8;
const MAX_TILE: usize = 32;
/// The longest reduction (`C·R·S`) this path takes: past it the main path's stores are a
/// small part of its time and its micro-kernel is the faster one. Measured on Zen 3 (2
/// threads, batch 1, 64 output channels): 3 × 3 with C = 3 (27) 2.1× and C = 8 (72) 1.5×
/// faster here, 7 × 7 stride 2 with C = 3 (147) 1.1×; C = 16 (144) the same; 11 × 11
/// stride 4 with C = 3 (363) 0.9×, 3 × 3 with C = 32 and 44 (288, 396) 0.85×.
pub(super) const MAX_REDUCTION: usize = 150;
/// The narrowest output this path takes: a tile computes 16 pixels even where a row has
/// fewer.
const MIN_COLUMNS: usize = 16;
/// Floats of the strip that one segment of an output row reads at most: 16 KiB, half of
/// a 32 KiB L1 data cache, the other half for the weights and the outputs.
const SEGMENT_FLOATS: usize = 4096;
/// The largest strip (floats) this path takes: one output row's input rows, every phase.
const MAX_STRIP: usize = 1 << 20;

/// The tile with which a problem (validated, `shape` its shape) takes this path at level
/// `isa`, if it does: NCHW, one group, a reduction of at most [`MAX_REDUCTION`], at least
/// [`MIN_COLUMNS`] output columns, and a CPU with AVX2 and FMA running the `avx2` or
/// `avx512` level.
pub(super) fn applies(isa: Isa, problem: &Conv2dProblem, shape: &ProblemShape) -> Option<Tiling> {
    tiling(isa).filter(|&tiling| {
        problem.layout == Layout::Nchw
            && problem.groups == 1
            && shape.reduction <= MAX_REDUCTION
            && shape.output[3] >= MIN_COLUMNS
            && StripShape::new(problem, shape, tiling).len() <= MAX_STRIP
    })
}

/// The tile of level `isa`, where this path runs at that level: `avx2` and `avx512` on a
/// CPU that has them (and AVX2 and FMA).
fn tiling(isa: Isa) -> Option<Tiling> {
    let available = isa.is_available() && Isa::Avx2.is_available();
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 if available => Some(AVX2_TILING),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 if available => Some(AVX512_TILING),
        _ => None,
    }
}

/// Where things lie in a strip (see the module documentation).
#[derive(Debug, Clone, Copy)]
struct StripShape {
    c: usize,
    h: usize,
    w: usize,
    r: usize,
    s: usize,
    sh: usize,
    sw: usize,
    dh: usize,
    dw: usize,
    top: usize,
    left: usize,
    /// Floats of one phase row: every tile's last pixel, plus the largest column shift.
    phase_len: usize,
    /// Pixels of a tile.
    tile: usize,
}

impl StripShape {
    fn new(problem: &Conv2dProblem, shape: &ProblemShape, tiling: Tiling) -> StripShape {
        let [_, c, h, w] = problem.input;
        let [_, _, r, s] = problem.filter;
        let [sh, sw] = problem.stride;
        let [dh, dw] = problem.dilation;
        let q = shape.output[3];
        let shift = (s - 1) * dw / sw;
        StripShape {
            c,
            h,
            w,
            r,
            s,
            sh,
            sw,
            dh,
            dw,
            top: problem.padding.top,
            left: problem.padding.left,
            phase_len: q.div_ceil(tiling.pixels) * tiling.pixels + shift,
            tile: tiling.pixels,
        }
    }

    /// Floats of one input row in every phase.
    fn row_len(&self) -> usize {
        self.sw * self.phase_len
    }

    /// Floats of the whole strip.
    fn len(&self) -> usize {
        self.c * self.r * self.row_len()
    }

    /// Pixels of a segment of the output row (whole tiles) whose windows span at most
    /// [`SEGMENT_FLOATS`] of the strip. The tiles of a segment run for every channel
    /// block before the next segment's, so that the strip they read stays in L1: reading
    /// a 43 KiB strip (11 × 11, stride 4, C = 3) block after block made its loads wait on
    /// L2.
    fn segment(&self) -> usize {
        let phase_rows = self.c * self.r * self.sw;
        let shift = (self.s - 1) * self.dw / self.sw;
        let span = (SEGMENT_FLOATS / phase_rows.max(1)).saturating_sub(shift);
        (span / self.tile).max(1) * self.tile
    }

    /// Where weight `kk` (in the filter's memory order) reads, from a tile's first pixel;
    /// and `1 + ` the largest offset.
    fn offsets(&self, filter_layout: FilterLayout) -> Result<(Vec<usize>, usize)> {
        let (c, r, s) = (self.c, self.r, self.s);
        let mut offsets = zeros::<usize>("offsets table", c * r * s)?;
        for (kk, off) in offsets.iter_mut().enumerate() {
            let (ci, fy, fx) = match filter_layout {
                FilterLayout::Kcrs => (kk / (r * s), kk / s % r, kk % s),
                FilterLayout::Krsc => (kk % c, kk / (s * c), kk / c % s),
            };
            let column = fx * self.dw;
            let phase = column % self.sw;
            *off = (ci * r + fy) * self.row_len() + phase * self.phase_len + column / self.sw;
        }
        let reach = offsets.iter().max().map_or(0, |&m| m + 1);
        Ok((offsets, reach))
    }

    /// The strip of output row `oy` of the image `x` (`C×H×W`, NCHW) into `strip`
    /// ([`StripShape::len`] floats).
    fn build(&self, x: &[f32], oy: usize, strip: &mut [f32]) {
        let row_len = self.row_len();
        for (i, dst) in strip.chunks_exact_mut(row_len).enumerate() {
            let (ci, fy) = (i / self.r, i % self.r);
            let iy = (oy * self.sh + fy * self.dh)
                .checked_sub(self.top)
                .filter(|&iy| iy < self.h);
            let Some(iy) = iy else {
                dst.fill(0.0);
                continue;
            };
            let src = &x[(ci * self.h + iy) * self.w..][..self.w];
            let (len, left) = (self.phase_len, self.left);
            // The common strides take every phase in one pass over the input row: whole
            // groups of `sw` columns, which the compiler turns into vector shuffles (one
            // strided pass per phase moved one float at a time: about as long as the
            // tiles' arithmetic for the 7 × 7 stride-2 stem).
            match self.sw {
                2 => split_phases::<2>(dst, len, src, left),
                3 => split_phases::<3>(dst, len, src, left),
                4 => split_phases::<4>(dst, len, src, left),
                _ => self.fill_phases(dst, src),
            }
        }
    }

    /// One input row `src` into its `sw` phase rows `dst` (zeros in the padding), one phase
    /// at a time: the general case of [`StripShape::build`].
    fn fill_phases(&self, dst: &mut [f32], src: &[f32]) {
        for (phase, run) in dst.chunks_exact_mut(self.phase_len).enumerate() {
            // Padded column j·sw + phase is input column j·sw + phase − left: the
            // phase's first input column is ix0, then every sw-th.
            let ix0 = (phase + self.sw - self.left % self.sw) % self.sw;
            let j0 = ((ix0 + self.left) / self.sw).min(run.len());
            let (pad, rest) = run.split_at_mut(j0);
            pad.fill(0.0);
            let src = src.get(ix0..).unwrap_or_default();
            let filled = if self.sw == 1 {
                // A plain copy (vectorised), the common case.
                let n = src.len().min(rest.len());
                rest[..n].copy_from_slice(&src[..n]);
                n
            } else {
                let mut n = 0;
                for (d, &v) in rest.iter_mut().zip(src.iter().step_by(self.sw)) {
                    *d = v;
                    n += 1;
                }
                n
            };
            rest[filled..].fill(0.0);
        }
    }
}

/// `dst`'s `SW` phase rows of `len` floats from one input row `src` whose column `ix` is
/// padded column `ix + left`: padded column `j·SW + φ` to `dst[φ·len + j]`, zeros where no
/// input column lands. The same values as [`StripShape::fill_phases`], in one pass over
/// `src` by whole groups of `SW` columns.
fn split_phases<const SW: usize>(dst: &mut [f32], len: usize, src: &[f32], left: usize) {
    // Input columns from `b` on come in whole groups whose first column is phase 0: group
    // `g` fills index `at + g` of every phase.
    let b = (SW - left % SW) % SW;
    let at = (b + left) / SW;
    let groups = (src.len().saturating_sub(b) / SW).min(len.saturating_sub(at));
    let mut rows = dst.chunks_exact_mut(len);
    let mut rows: [&mut [f32]; SW] = std::array::from_fn(|_| rows.next().expect("SW rows"));
    for row in &mut rows {
        let end = (at + groups).min(row.len());
        row[..at.min(end)].fill(0.0);
        row[end..].fill(0.0);
    }
    // The columns before the first group and after the last whole one, one at a time.
    let lone = (0..b.min(src.len())).chain(b + groups * SW..src.len());
    for ix in lone {
        let (phase, j) = ((ix + left) % SW, (ix + left) / SW);
        if let Some(d) = rows[phase].get_mut(j) {
            *d = src[ix];
        }
    }
    let (whole, _) = src[b.min(src.len())..].as_chunks::<SW>();
    let whole = &whole[..groups];
    let mut outs = rows.map(|row| &mut row[at.min(len)..][..groups]);
    for (j, group) in whole.iter().enumerate() {
        for (out, &v) in outs.iter_mut().zip(group) {
            out[j] = v;
        }
    }
}

/// The sums of one tile: `kb` channels × `pixels` pixels of its [`Tiling`].
type TileSums = [[f32; MAX_TILE]; MAX_KB];

/// What every job of a call shares.
struct Job<'a> {
    /// The level's tile, and whether it is AVX-512's.
    tiling: Tiling,
    strip: StripShape,
    offsets: &'a [usize],
    reach: usize,
    /// The filter packed in blocks of `kb` channels (`[⌈K/kb⌉][C·R·S][kb]`).
    packed: &'a [f32],
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    store: Store,
    crs: usize,
    k: usize,
    p: usize,
    q: usize,
}

impl Job<'_> {
    /// Output rows `p0 .. p0 + rows` of image `image` (input `x`) for the channels from
    /// `k0`, one slice per channel (`planes`: the band's rows of that channel's plane).
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &[f32],
        image: usize,
        p0: usize,
        rows: usize,
        k0: usize,
        planes: &mut [&mut [f32]],
        strip: &mut [f32],
    ) {
        let mut sums: TileSums = [[0.0; MAX_TILE]; MAX_KB];
        let plane = self.p * self.q;
        let segment = self.strip.segment();
        let Tiling { kb, pixels } = self.tiling;
        for i in 0..rows {
            self.strip.build(x, p0 + i, strip);
            let channels = planes.len();
            for (s0, local) in (0..self.q)
                .step_by(segment)
                .flat_map(|s0| (0..channels).step_by(kb).map(move |local| (s0, local)))
            {
                let k = k0 + local;
                let weights = &self.packed[k / kb * self.crs * kb..][..self.crs * kb];
                let valid = kb.min(channels - local);
                let plain = matches!((self.store, self.residual), (Store::Plain, None));
                for q0 in (s0..self.q.min(s0 + segment)).step_by(pixels) {
                    let t = pixels.min(self.q - q0);
                    let ops = (&*strip, q0, self.offsets, self.reach, weights);
                    let at = i * self.q + q0;
                    if plain {
                        // The plain epilogue straight from the registers, where the level
                        // does it (AVX-512: masked stores of each channel's run).
                        let runs = &mut planes[local..][..valid];
                        let bias = &self.bias[k..][..valid];
                        if tile_stored(self.tiling, t, ops, runs, at, bias) {
                            continue;
                        }
                    }
                    tile(self.tiling, t, ops, &mut sums);
                    for (m, run) in sums[..valid].iter().enumerate() {
                        let channel = k + m;
                        let dst = &mut planes[local + m][at..][..t];
                        if let (Store::Plain, None) = (self.store, self.residual) {
                            store_plain(dst, &run[..t], self.bias[channel]);
                            continue;
                        }
                        let first = (image * self.k + channel) * plane + (p0 + i) * self.q + q0;
                        let res = self.residual.map(|r| &r[first..][..t]);
                        let bias = std::iter::repeat(self.bias[channel]);
                        self.store.run(dst, run[..t].iter().copied(), bias, res);
                    }
                }
            }
        }
    }
}

/// The sums of the tile of `t` pixels from pixel `q0` of the strip's row (`ops`: the strip,
/// `q0`, the offsets table, its reach, and the block's packed weights): `sums[m][j]` for
/// channel `m` of the block and pixel `q0 + j`, `j < t` (and up to the tile's width).
///
/// # Panics
/// When the strip is shorter than the tile's windows reach (a bug of the caller; nothing
/// is read out of bounds then).
fn tile(
    tiling: Tiling,
    t: usize,
    (strip, q0, offsets, reach, weights): (&[f32], usize, &[usize], usize, &[f32]),
    sums: &mut TileSums,
) {
    #[cfg(target_arch = "x86_64")]
    {
        // Every offset is below `reach`, so every read lies in `window`.
        let window = |pixels: usize| &strip[q0..][..reach + pixels - 1];
        // SAFETY: `run_f32`, the only caller's only entry, returns early on a CPU without
        // AVX2 and FMA, and takes AVX-512's tiling only where `tiling` found AVX-512F.
        unsafe {
            match tiling {
                AVX512_TILING if t <= 16 => {
                    x86::tile512::<1>(window(16), offsets, weights, x86::Out::Sums(sums));
                }
                AVX512_TILING => {
                    x86::tile512::<2>(window(32), offsets, weights, x86::Out::Sums(sums));
                }
                _ => x86::tile(window(16), offsets, weights, sums),
            }
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (tiling, t, strip, q0, offsets, reach, weights, sums);
        unreachable!("the pixel path runs on x86-64 only");
    }
}

/// [`tile`] with the plain epilogue applied as the sums leave the registers: `runs[m][at +
/// j] = sum + bias[m]` for the tile's `t` pixels and the block's first `runs.len()`
/// channels. `false` (nothing done) where the level has no such tile (AVX2: its sums go
/// through [`tile`] and [`store_plain`]).
///
/// # Panics
/// As [`tile`]; when a run is shorter than `at + t` or `bias` shorter than `runs`.
fn tile_stored(
    tiling: Tiling,
    t: usize,
    (strip, q0, offsets, reach, weights): (&[f32], usize, &[usize], usize, &[f32]),
    runs: &mut [&mut [f32]],
    at: usize,
    bias: &[f32],
) -> bool {
    #[cfg(target_arch = "x86_64")]
    if tiling == AVX512_TILING {
        assert!(runs.len() <= tiling.kb && bias.len() >= runs.len());
        let out = x86::Out::Plain { runs, at, t, bias };
        let window = |pixels: usize| &strip[q0..][..reach + pixels - 1];
        // SAFETY: AVX-512's tiling is taken only where `tiling` found AVX-512F.
        unsafe {
            if t <= 16 {
                x86::tile512::<1>(window(16), offsets, weights, out);
            } else {
                x86::tile512::<2>(window(32), offsets, weights, out);
            }
        }
        return true;
    }
    let _ = (
        tiling, t, strip, q0, offsets, reach, weights, runs, at, bias,
    );
    false
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{AVX2_TILING, AVX512_TILING, TileSums};

    /// [`super::tile`] with AVX2's tiling on its window (`reach + 15` floats from the
    /// tile's first pixel): per weight, `NV` input vectors and `KB` broadcasts feed `KB·NV`
    /// FMAs.
    #[target_feature(enable = "avx2,fma")]
    pub(super) fn tile(window: &[f32], offsets: &[usize], weights: &[f32], sums: &mut TileSums) {
        const KB: usize = AVX2_TILING.kb;
        const TILE: usize = AVX2_TILING.pixels;
        const NV: usize = TILE / 8;
        let (weights, _) = weights.as_chunks::<KB>();
        let last = window.len() - TILE;
        let mut acc = [[_mm256_setzero_ps(); NV]; KB];
        for (&off, w) in offsets.iter().zip(weights) {
            // A no-op (every offset is at most `last`) that lets the compiler drop the
            // bounds checks of the loads below.
            let xs = &window[off.min(last)..][..TILE];
            let mut xv = [_mm256_setzero_ps(); NV];
            for (v, x) in xv.iter_mut().enumerate() {
                // SAFETY: `xs[8·v..][..8]` is 8 floats, what an unaligned load reads.
                *x = unsafe { _mm256_loadu_ps(xs[8 * v..][..8].as_ptr()) };
            }
            for (m, acc) in acc.iter_mut().enumerate() {
                let wm = _mm256_set1_ps(w[m]);
                for (a, &x) in acc.iter_mut().zip(&xv) {
                    *a = _mm256_fmadd_ps(wm, x, *a);
                }
            }
        }
        for (dst, acc) in sums.iter_mut().zip(&acc) {
            for (v, &a) in acc.iter().enumerate() {
                // SAFETY: `dst[8·v..][..8]` is 8 floats, what an unaligned store writes.
                unsafe { _mm256_storeu_ps(dst[8 * v..][..8].as_mut_ptr(), a) };
            }
        }
    }

    /// Where an AVX-512 tile's sums go.
    pub(super) enum Out<'a, 'r> {
        /// Into the tile's sums, as they are.
        Sums(&'a mut TileSums),
        /// Through the plain epilogue into the output ([`super::tile_stored`]): channel
        /// `m`'s `t` pixels to `runs[m][at..]`, plus `bias[m]`.
        Plain {
            runs: &'a mut [&'r mut [f32]],
            at: usize,
            t: usize,
            bias: &'a [f32],
        },
    }

    /// [`super::tile`] with AVX-512's tiling, `NV` vectors of 16 pixels (2 for a whole
    /// tile, 1 for a row's last 16 pixels or fewer) on its window (`reach + 16·NV − 1`
    /// floats): per weight, `NV` input vectors and `KB` broadcasts feed `KB·NV` FMAs.
    #[target_feature(enable = "avx512f")]
    pub(super) fn tile512<const NV: usize>(
        window: &[f32],
        offsets: &[usize],
        weights: &[f32],
        out: Out<'_, '_>,
    ) {
        const KB: usize = AVX512_TILING.kb;
        let (weights, _) = weights.as_chunks::<KB>();
        let last = window.len() - 16 * NV;
        let mut acc = [[_mm512_setzero_ps(); NV]; KB];
        for (&off, w) in offsets.iter().zip(weights) {
            // A no-op (every offset is at most `last`) that lets the compiler drop the
            // bounds checks of the loads below.
            let xs = &window[off.min(last)..][..16 * NV];
            let mut xv = [_mm512_setzero_ps(); NV];
            for (v, x) in xv.iter_mut().enumerate() {
                // SAFETY: `xs[16·v..][..16]` is 16 floats, what an unaligned load reads.
                *x = unsafe { _mm512_loadu_ps(xs[16 * v..][..16].as_ptr()) };
            }
            for (m, acc) in acc.iter_mut().enumerate() {
                let wm = _mm512_set1_ps(w[m]);
                for (a, &x) in acc.iter_mut().zip(&xv) {
                    *a = _mm512_fmadd_ps(wm, x, *a);
                }
            }
        }
        let (runs, at, t, bias) = match out {
            Out::Sums(sums) => {
                for (dst, acc) in sums.iter_mut().zip(&acc) {
                    for (v, &a) in acc.iter().enumerate() {
                        // SAFETY: `dst[16·v..][..16]` is 16 floats, what an unaligned
                        // store writes.
                        unsafe { _mm512_storeu_ps(dst[16 * v..][..16].as_mut_ptr(), a) };
                    }
                }
                return;
            }
            Out::Plain { runs, at, t, bias } => (runs, at, t, bias),
        };
        for ((run, acc), &b) in runs.iter_mut().zip(&acc).zip(bias) {
            let run = &mut run[at..][..t];
            let b = _mm512_set1_ps(b);
            for (v, &a) in acc.iter().enumerate() {
                let Some(dst) = run.get_mut(16 * v..) else {
                    break;
                };
                // Lanes past the run are not written (t < 16·NV at a row's end).
                let mask: __mmask16 = if dst.len() >= 16 {
                    0xffff
                } else {
                    (1 << dst.len()) - 1
                };
                // SAFETY: the mask writes only the `min(16, dst.len())` lanes `dst` has.
                unsafe { _mm512_mask_storeu_ps(dst.as_mut_ptr(), mask, _mm512_add_ps(a, b)) };
            }
        }
    }
}

/// The convolution on float32 buffers already checked against `problem` (of `shape`),
/// for a problem that [`applies`] with `tiling`: `output = act(alpha·conv + bias +
/// beta·residual)`. `filter` is the values (packed here) or packed in blocks of
/// `tiling.kb` already (a prepared filter).
///
/// # Errors
/// [`crate::Error::OutOfMemory`] when a working buffer cannot be allocated (before any
/// output is written); [`crate::Error::IsaUnavailable`] on a CPU without AVX2 and FMA
/// (which [`applies`] never sends here: checked again because the tiles' soundness rests
/// on it).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_f32(
    tiling: Tiling,
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    input: &[f32],
    filter: FilterIn<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    if !Isa::Avx2.is_available() {
        return Err(crate::Error::IsaUnavailable {
            isa: Isa::Avx2.name().to_string(),
        });
    }
    let [n, c, h, w] = problem.input;
    let k = problem.filter[0];
    let [_, _, p, q] = shape.output;
    let threads = rayon::current_num_threads().max(1);
    let split = Split::new(n, k, p, q, tiling.kb, shape.reduction, threads);
    let strip = StripShape::new(problem, shape, tiling);
    let (offsets, reach) = strip.offsets(problem.filter_layout)?;
    // A prepared filter is packed already (in blocks of `kb`: the caller checked).
    let (packed, prepared) = match filter {
        FilterIn::Values(values) => (pack_filter(problem, values, tiling.kb)?, None),
        FilterIn::Packed { data, .. } => (Vec::new(), Some(data)),
    };
    let no_bias = if bias.is_none() {
        zeros::<f32>("bias", k)?
    } else {
        Vec::new()
    };
    let mut strips = Vec::new();
    strips
        .try_reserve_exact(threads)
        .map_err(|_| oom("strips", threads, size_of::<Mutex<Vec<f32>>>()))?;
    for _ in 0..threads {
        strips.push(Mutex::new(workspace::take("strip", strip.len())?));
    }
    let job = Job {
        tiling,
        strip,
        offsets: &offsets,
        reach,
        packed: prepared.unwrap_or(&packed),
        bias: bias.unwrap_or(&no_bias),
        residual,
        store: Store::new(&problem.epilogue),
        crs: shape.reduction,
        k,
        p,
        q,
    };
    let image_len = c * h * w;
    for_each_nchw_job(output, k, p, q, &split, |image, band, k0, planes| {
        let x = &input[image * image_len..][..image_len];
        let (p0, rows) = split.band(band, p);
        job.run(x, image, p0, rows, k0, planes, &mut thread_slot(&strips));
    })?;
    for strip in strips {
        workspace::give_back(strip.into_inner().unwrap_or_else(|e| e.into_inner()));
    }
    workspace::give_back(packed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{
        conv2d_with_isa_and_residual, reference_conv2d_with_residual, relative_error,
    };
    use crate::epilogue::{Activation, Epilogue};
    use crate::problem::Padding;

    #[test]
    fn takes_short_nchw_reductions_only() {
        if !Isa::Avx2.is_available() {
            eprintln!("SKIPPED: this CPU has no AVX2 and FMA");
            return;
        }
        let stem = Conv2dProblem::new([1, 3, 224, 224], [64, 3, 3, 3]);
        let shape = |p: &Conv2dProblem| p.shape().unwrap();
        assert_eq!(applies(Isa::Avx2, &stem, &shape(&stem)), Some(AVX2_TILING));
        if Isa::Avx512.is_available() {
            assert_eq!(
                applies(Isa::Avx512, &stem, &shape(&stem)),
                Some(AVX512_TILING)
            );
        }
        assert!(applies(Isa::Portable, &stem, &shape(&stem)).is_none());
        let nhwc = stem.with_layout(Layout::Nhwc);
        assert!(applies(Isa::Avx2, &nhwc, &shape(&nhwc)).is_none());
        let deep = Conv2dProblem::new([1, 64, 56, 56], [64, 64, 3, 3]);
        assert!(applies(Isa::Avx2, &deep, &shape(&deep)).is_none());
        let narrow = Conv2dProblem::new([1, 3, 12, 12], [8, 3, 3, 3]);
        assert!(applies(Isa::Avx2, &narrow, &shape(&narrow)).is_none());
        let grouped = Conv2dProblem::new([1, 4, 40, 40], [4, 1, 3, 3]).with_groups(4);
        assert!(applies(Isa::Avx2, &grouped, &shape(&grouped)).is_none());
    }

    /// The one-pass phase split gives the bits of the phase-by-phase one, for every
    /// stride it serves, padding, row width and phase length (shorter and longer than the
    /// input's columns).
    #[test]
    fn split_phases_as_fill_phases() {
        for sw in 2..=4 {
            for left in 0..7 {
                for w in [1, 2, 3, 5, 17, 40] {
                    for len in [1, 3, 10, 25] {
                        let shape = StripShape {
                            c: 1,
                            h: 1,
                            w,
                            r: 1,
                            s: 1,
                            sh: 1,
                            sw,
                            dh: 1,
                            dw: 1,
                            top: 0,
                            left,
                            phase_len: len,
                            tile: 16,
                        };
                        let src: Vec<f32> = (0..w).map(|i| i as f32 + 0.5).collect();
                        let mut want = vec![f32::NAN; sw * len];
                        shape.fill_phases(&mut want, &src);
                        let mut got = vec![f32::NAN; sw * len];
                        match sw {
                            2 => split_phases::<2>(&mut got, len, &src, left),
                            3 => split_phases::<3>(&mut got, len, &src, left),
                            _ => split_phases::<4>(&mut got, len, &src, left),
                        }
                        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                        assert_eq!(
                            bits(&got),
                            bits(&want),
                            "sw {sw}, left {left}, w {w}, len {len}"
                        );
                    }
                }
            }
        }
    }

    /// Problems of every stride, dilation and padding (asymmetric too), both filter
    /// layouts, partial channel blocks and partial tiles, the epilogues, on 1 to 3
    /// threads, at both levels that run this path, against the float64 oracle; outputs
    /// poisoned with NaN first.
    #[test]
    fn matches_the_oracle() {
        if !Isa::Avx2.is_available() {
            eprintln!("SKIPPED: this CPU has no AVX2 and FMA");
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        // Under Miri (`scripts/miri-cpu.sh`, whose AVX2 run interprets this path's
        // intrinsics) a few problems, natively 120.
        let problems = if cfg!(miri) { 3 } else { 120 };
        let mut checked = 0;
        while checked < problems {
            let (r, s) = (1 + next(11), 1 + next(11));
            let c = 1 + next(6);
            let stride = [1 + next(4), 1 + next(4)];
            let dilation = [1 + next(3), 1 + next(3)];
            let padding = Padding {
                top: next(4),
                bottom: next(4),
                left: next(6),
                right: next(6),
            };
            let h = (r - 1) * dilation[0] + 1 + next(12);
            let w = (s - 1) * dilation[1] + 1 + (10 + next(50)) * stride[1];
            let k = 1 + next(13);
            let layout = if next(2) == 0 {
                FilterLayout::Kcrs
            } else {
                FilterLayout::Krsc
            };
            let epilogue = match next(3) {
                0 => Epilogue::default(),
                1 => Epilogue::activation(Activation::Relu),
                _ => Epilogue::activation(Activation::Silu)
                    .with_alpha(0.75)
                    .with_residual(0.5),
            };
            let problem = Conv2dProblem::new([1 + next(2), c, h, w], [k, c, r, s])
                .with_stride(stride)
                .with_dilation(dilation)
                .with_padding(padding)
                .with_filter_layout(layout)
                .with_epilogue(epilogue);
            let Ok(shape) = problem.shape() else { continue };
            if applies(Isa::Avx2, &problem, &shape).is_none() {
                continue;
            }
            checked += 1;
            let value = |i: usize, salt: usize| ((i * 7919 + salt) % 997) as f32 / 498.5 - 1.0;
            let input: Vec<f32> = (0..shape.input_len).map(|i| value(i, 1)).collect();
            let filter: Vec<f32> = (0..shape.filter_len).map(|i| value(i, 2)).collect();
            let bias: Vec<f32> = (0..k).map(|i| value(i, 3)).collect();
            let bias = (next(2) == 0).then_some(&bias[..]);
            let residual: Vec<f32> = (0..shape.output_len).map(|i| value(i, 4)).collect();
            let residual = problem.epilogue.residual.then_some(&residual[..]);
            let want =
                reference_conv2d_with_residual(&problem, &input, &filter, bias, residual).unwrap();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(1 + checked % 3)
                .build()
                .unwrap();
            for isa in [Isa::Avx2, Isa::Avx512]
                .into_iter()
                .filter(|i| i.is_available())
            {
                let mut out = vec![f32::NAN; shape.output_len];
                pool.install(|| {
                    conv2d_with_isa_and_residual(
                        isa, &problem, &input, &filter, bias, residual, &mut out,
                    )
                })
                .unwrap();
                let err = relative_error(&out, &want);
                assert!(err < 1e-5, "{isa}, {problem:?}: relative error {err}");
            }
        }
    }
}
