//! The register-blocked micro-kernels: `MR` output channels × `t ≤ NR` output pixels, the
//! whole reduction accumulated in vector registers.
//!
//! Every level computes the same thing. For reduction index `kk` (in the filter's memory
//! order, [`super::strip::StripGeometry::offsets`]) it loads the `MR` weights `filter[kk][0..MR]` (packed by
//! [`super::pack`], so they are one or two vectors) and, for each of the `t` pixels, the one
//! window value `strip[start[j] + offsets[kk]]`, broadcast to a vector; then `MR·t`
//! multiply-adds. Each weight loaded serves `t` pixels and each window value `MR` channels,
//! so the loop runs at the FMA units' rate rather than the loads'. Vectorising over output
//! channels (not pixels) keeps every vector full whatever the output width or stride;
//! measured on the 2-core AVX2 machine this was the better choice for the paper's layers
//! (`docs/cpu-kernels.md`).
//!
//! The offsets table makes the kernel independent of the strip's layout, the stride and the
//! dilation: a new layout is a new strip builder and offsets table, not a new kernel. The
//! kernel returns raw sums (`out[j][m]`); bias and any later epilogue are applied by the
//! caller when it stores them.
//!
//! `unsafe` is confined to the vector loads and stores (whose pointers come from slices of
//! exactly one vector's length) and to calling a `#[target_feature]` function, which is
//! sound only once the feature was detected: [`MicroKernel::for_isa`] hands such a kernel
//! out only then.

use super::isa::Isa;

/// The operands of one micro-kernel call.
pub(super) struct Operands<'a> {
    /// The strip of im2win rows the windows live in.
    pub strip: &'a [f32],
    /// Where reduction index `kk` lies relative to a window's start.
    pub offsets: &'a [usize],
    /// `1 + max(offsets)`: every window read lies within `start .. start + reach`.
    pub reach: usize,
    /// The packed filter block: `offsets.len()` groups of `MR` weights.
    pub filter: &'a [f32],
    /// The start of each pixel's window in `strip` (`t` of them).
    pub starts: &'a [usize],
    /// Whether the output already holds the sums of the reduction indices before these
    /// (an earlier pass over the filter): the kernel then starts from them instead of
    /// zero, and the sums come out bit for bit those of one call over both ranges, so
    /// that how the reduction is cut into passes never changes a result.
    pub accumulate: bool,
}

/// A kernel for one pixel count `t`: writes `out[j·MR + m]`, the sum for pixel `j` and
/// channel `m` of the block, for `j < t` (continuing the sums `out` holds when
/// [`Operands::accumulate`]).
type KernelFn = fn(&Operands<'_>, &mut [f32]);

/// The micro-kernel of one instruction-set level: its tile and its functions.
#[derive(Clone, Copy)]
pub(super) struct MicroKernel {
    /// Output channels per tile: the filter is packed in blocks of this many.
    pub mr: usize,
    /// Largest number of pixels per tile.
    pub nr: usize,
    /// `kernels[t − 1]` computes `t` pixels (a partial last tile costs only its pixels).
    kernels: &'static [KernelFn],
    /// `Some(step)` when the kernels are row kernels: every tile's pixels are neighbours in
    /// one output row, their windows `step` floats apart (`starts[j] = starts[0] + j·step`).
    pub row_step: Option<usize>,
    /// Row kernels for tiles of two rows (with `row_step`): `pairs[h − 1]` computes `h`
    /// neighbouring pixels of one row and the `h` below them (`2h` pixels, two runs
    /// `step` floats apart from `starts[0]` and from `starts[h]`); empty where the level
    /// has none.
    pairs: &'static [KernelFn],
}

/// The largest `NR` of any level (the AVX-512 row kernels').
pub(super) const MAX_NR: usize = 14;
/// The largest `MR·NR` of any level: the size of the caller's tile buffer.
pub(super) const MAX_TILE: usize = 32 * MAX_NR;

impl MicroKernel {
    /// The kernel of `isa`, or `None` when this CPU cannot run it.
    pub fn for_isa(isa: Isa) -> Option<MicroKernel> {
        if !isa.is_available() {
            return None;
        }
        let (mr, kernels): (usize, &'static [KernelFn]) = match isa {
            Isa::Portable => (portable::MR, &portable::KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (x86::AVX2_MR, &x86::AVX2_KERNELS),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (x86::AVX512_MR, &x86::AVX512_KERNELS),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => (neon::MR, &neon::KERNELS),
            #[allow(unreachable_patterns)]
            _ => return None,
        };
        Some(MicroKernel {
            mr,
            nr: kernels.len(),
            kernels,
            row_step: None,
            pairs: &[],
        })
    }

    /// The row kernels of `isa` for windows `step` floats apart (`sw·R`, the strip's
    /// distance between neighbouring output columns), when the level has them for that
    /// step; else [`MicroKernel::for_isa`]'s kernels, which take any pixels.
    ///
    /// A row kernel addresses all its pixels' windows from one pointer with constant
    /// displacements (`j·step` is known at compile time), where the general kernel keeps a
    /// pointer per pixel: 12 pixels' pointers do not fit x86-64's 16 general registers
    /// beside the loop's own, and the spills cost a third of the rate (measured on Zen 4).
    pub fn for_isa_and_step(isa: Isa, step: usize) -> Option<MicroKernel> {
        let general = MicroKernel::for_isa(isa)?;
        let row = match isa {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                x86::avx512_rows(step).map(|rows| (rows, x86::avx512_pairs(step).unwrap_or(&[])))
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => x86::avx2_rows(step).map(|rows| (rows, &[][..])),
            _ => None,
        };
        Some(match row {
            Some((kernels, pairs)) => MicroKernel {
                nr: kernels.len(),
                kernels,
                row_step: Some(step),
                pairs,
                ..general
            },
            None => general,
        })
    }

    /// The sums of `ops.starts.len()` (1 to `nr`) pixels × `mr` channels into
    /// `out[j·mr + m]`.
    ///
    /// # Panics
    /// When an operand is shorter than the call needs (a bug of the caller; no memory is
    /// read out of bounds then).
    pub fn run(&self, ops: &Operands<'_>, out: &mut [f32]) {
        let t = ops.starts.len();
        assert!((1..=self.nr).contains(&t), "tile of {t} pixels");
        assert!(ops.filter.len() >= ops.offsets.len() * self.mr);
        assert!(out.len() >= t * self.mr);
        assert!(ops.starts.iter().all(|&s| s + ops.reach <= ops.strip.len()));
        if let Some(step) = self.row_step {
            let first = ops.starts[0];
            assert!(
                ops.starts
                    .iter()
                    .enumerate()
                    .all(|(j, &s)| s == first + j * step),
                "a row kernel's pixels are {step} floats apart"
            );
        }
        (self.kernels[t - 1])(ops, out);
    }

    /// The most pixels per row of a tile of two rows ([`MicroKernel::run_pair`]); 0 where
    /// there are no such kernels.
    pub fn pair_width(&self) -> usize {
        self.pairs.len()
    }

    /// The sums of a tile of two rows of `h` pixels each (`ops.starts`: `2h` of them, the
    /// first row's from `starts[0]`, the second's from `starts[h]`, each row's `step`
    /// floats apart) into `out[j·mr + m]`: twice the pixels per weight loaded of a one-row
    /// tile, for outputs of at most [`MicroKernel::pair_width`] columns.
    ///
    /// # Panics
    /// When the tile is not two such rows of 1 to `pair_width` pixels, or an operand is
    /// shorter than the call needs (a bug of the caller; no memory is read out of bounds
    /// then).
    pub fn run_pair(&self, ops: &Operands<'_>, out: &mut [f32]) {
        let t = ops.starts.len();
        let h = t / 2;
        assert!(
            t.is_multiple_of(2) && (1..=self.pairs.len()).contains(&h),
            "tile of two rows of {t} pixels"
        );
        assert!(ops.filter.len() >= ops.offsets.len() * self.mr);
        assert!(out.len() >= t * self.mr);
        assert!(ops.starts.iter().all(|&s| s + ops.reach <= ops.strip.len()));
        let step = self.row_step.unwrap_or(0);
        for row in ops.starts.chunks_exact(h) {
            assert!(
                row.iter().enumerate().all(|(j, &s)| s == row[0] + j * step),
                "a row kernel's pixels are {step} floats apart"
            );
        }
        (self.pairs[h - 1])(ops, out);
    }
}

/// The window of each pixel, `reach` values from its start, and `reach − 1`.
///
/// The kernels clamp each offset to `reach − 1` (a no-op: every offset is below `reach`)
/// and the asserts here tell the compiler every window is that long, so it drops the
/// bounds checks of the window reads in the inner loop: measured, one `cmp`+`cmov` per
/// reduction index instead of `T` compare-and-branch pairs and spilled registers.
#[inline(always)]
fn windows<'a, const T: usize>(ops: &Operands<'a>) -> ([&'a [f32]; T], usize) {
    let w: [&[f32]; T] = std::array::from_fn(|j| &ops.strip[ops.starts[j]..][..ops.reach]);
    let last = ops.reach.saturating_sub(1);
    for window in &w {
        assert!(window.len() > last);
    }
    (w, last)
}

/// [`windows`] of a row tile: pixel `j`'s window starts `j·STEP` after the first one's.
/// Every window is a constant distance from the first, so the compiler addresses them all
/// from one register (`[base + off·4 + j·STEP·4]`).
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn row_windows<'a, const T: usize, const STEP: usize>(
    ops: &Operands<'a>,
) -> ([&'a [f32]; T], usize) {
    let row = &ops.strip[ops.starts[0]..][..(T - 1) * STEP + ops.reach];
    let w: [&[f32]; T] = std::array::from_fn(|j| &row[j * STEP..][..ops.reach]);
    let last = ops.reach.saturating_sub(1);
    for window in &w {
        assert!(window.len() > last);
    }
    (w, last)
}

/// [`row_windows`] of a tile of two rows of `H` pixels (`T = 2H`): pixel `j < H` at
/// `starts[0] + j·STEP`, pixel `H + j` at `starts[H] + j·STEP`. Two base registers, each
/// window a constant distance from one of them.
#[inline(always)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
fn pair_windows<'a, const T: usize, const H: usize, const STEP: usize>(
    ops: &Operands<'a>,
) -> ([&'a [f32]; T], usize) {
    let len = (H - 1) * STEP + ops.reach;
    let rows = [
        &ops.strip[ops.starts[0]..][..len],
        &ops.strip[ops.starts[H]..][..len],
    ];
    let w: [&[f32]; T] = std::array::from_fn(|j| &rows[j / H][(j % H) * STEP..][..ops.reach]);
    let last = ops.reach.saturating_sub(1);
    for window in &w {
        assert!(window.len() > last);
    }
    (w, last)
}

/// The plain-Rust kernel body shared by the portable level and NEON: `MR × T`
/// accumulators in an array the compiler keeps in vector registers. `FUSED` uses
/// `mul_add` (one rounding; a single instruction where the target has FMA, a slow library
/// call where it does not, so the portable level leaves it off).
#[inline(always)]
fn generic<const MR: usize, const T: usize, const FUSED: bool>(
    ops: &Operands<'_>,
    out: &mut [f32],
) {
    let (w, last) = windows::<T>(ops);
    let mut acc = [[0.0_f32; MR]; T];
    if ops.accumulate {
        for (acc, held) in acc.iter_mut().zip(out.chunks_exact(MR)) {
            acc.copy_from_slice(held);
        }
    }
    let (filter, _) = ops.filter.as_chunks::<MR>();
    for (&off, f) in ops.offsets.iter().zip(filter) {
        // A no-op that proves the window reads in bounds (see `windows`).
        let off = off.min(last);
        for j in 0..T {
            let x = w[j][off];
            for m in 0..MR {
                acc[j][m] = if FUSED {
                    f[m].mul_add(x, acc[j][m])
                } else {
                    acc[j][m] + f[m] * x
                };
            }
        }
    }
    for (dst, src) in out.chunks_exact_mut(MR).zip(&acc) {
        dst.copy_from_slice(src);
    }
}

/// The portable level: 8 channels × 4 pixels, 8 SSE2 accumulators.
mod portable {
    use super::{KernelFn, Operands, generic};

    pub const MR: usize = 8;

    fn kernel<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        generic::<MR, T, false>(ops, out);
    }

    pub static KERNELS: [KernelFn; 4] = [kernel::<1>, kernel::<2>, kernel::<3>, kernel::<4>];
}

/// The NEON level: 16 channels × 6 pixels, 24 of the 32 vector registers accumulating,
/// `fmla` from `mul_add` (FMA is part of AArch64's base instruction set).
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{KernelFn, Operands, generic};

    pub const MR: usize = 16;

    fn kernel<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        generic::<MR, T, true>(ops, out);
    }

    pub static KERNELS: [KernelFn; 6] = [
        kernel::<1>,
        kernel::<2>,
        kernel::<3>,
        kernel::<4>,
        kernel::<5>,
        kernel::<6>,
    ];
}

/// The x86-64 levels, with explicit intrinsics so that the register blocking is exactly
/// the one chosen.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{KernelFn, Operands, pair_windows, row_windows, windows};

    /// AVX2: 16 channels (2 vectors) × 6 pixels = 12 accumulators, 2 weight vectors and a
    /// broadcast: 15 of the 16 registers. 12 independent FMA chains cover the FMA latency
    /// (5 cycles on Zen 1, 4 on Skylake and Zen 4) at 1–2 FMAs per cycle.
    pub const AVX2_MR: usize = 16;
    const AVX2_V: usize = AVX2_MR / 8;

    /// AVX-512: 32 channels (2 vectors) × 12 pixels = 24 accumulators of the 32 registers.
    /// Each pair of weight vectors loaded serves 12 pixels and each broadcast 2 FMAs, so
    /// the 14 loads of a reduction index fit in the 24 cycles of its FMAs on Zen 4 (one
    /// 512-bit FMA per cycle). The row kernels go to 14 pixels (28 accumulators, 2 weight
    /// vectors and a broadcast: 31 registers, none spilled in the loop, checked in the
    /// disassembly), so that rows of 14, 28 and 56 pixels take whole tiles of 14 and two
    /// rows of 7 one tile: measured on Emerald Rapids 8-12% faster than tiles of at most 12
    /// on ResNet-50's 14 × 14 and 7 × 7 3 × 3 layers (`docs/cpu-kernels.md`). The general
    /// kernels, with a pointer per pixel, stay at 12.
    pub const AVX512_MR: usize = 32;
    const AVX512_V: usize = AVX512_MR / 16;

    /// The window steps (`sw·R`) that have row kernels: those of the paper's, ResNet-50's
    /// and VGG-16's layers (1×1, 3×3, 5×5, 7×7 and 11×11 filters at strides 1, 2 and 4)
    /// and a few more small ones; another step takes the general kernels.
    const ROW_STEPS: [usize; 14] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 22, 44];

    /// The window steps of an NHWC image read where it lies (no padding: `sw·C`,
    /// `super::super::strip`): the channel counts of ResNet-50's and VGG-16's layers at
    /// stride 1 and 2 (64 … 2048), a few more common ones (32, 96, 192, 384), and the
    /// C = 3 stems at stride 4 (12; stride 1 and 2 are [`ROW_STEPS`]' 3 and 6), with
    /// kernels of one row and of two rows (for the 7 × 7 outputs of ResNet-50's last
    /// stage: tiles of 14 pixels, not 7); another step
    /// builds a strip.
    const CHANNEL_STEPS: [usize; 11] = [12, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048];

    /// The loop of both widths: `$v` vectors of `$lanes` floats per reduction index, `T`
    /// pixels whose windows are `$w` (`$last` the last in-bounds offset of each).
    macro_rules! body {
        ($ops:ident, $out:ident, $w:ident, $last:ident, $v:expr, $lanes:literal,
         $zero:ident, $load:ident, $set1:ident, $fmadd:ident, $store:ident) => {{
            let mut acc = [[$zero(); $v]; T];
            if $ops.accumulate {
                let (held, _) = $out.as_chunks::<$lanes>();
                for (acc, held) in acc.iter_mut().zip(held.chunks_exact($v)) {
                    for v in 0..$v {
                        // SAFETY: `held[v]` is an array of `$lanes` floats, what an
                        // unaligned load reads.
                        acc[v] = unsafe { $load(held[v].as_ptr()) };
                    }
                }
            }
            let (filter, _) = $ops.filter.as_chunks::<$lanes>();
            for (&off, f) in $ops.offsets.iter().zip(filter.chunks_exact($v)) {
                // A no-op that proves the window reads in bounds (see `windows`).
                let off = off.min($last);
                let mut fv = [$zero(); $v];
                for v in 0..$v {
                    // SAFETY: `f[v]` is an array of `$lanes` floats, what an unaligned
                    // load reads.
                    fv[v] = unsafe { $load(f[v].as_ptr()) };
                }
                for j in 0..T {
                    let x = $set1($w[j][off]);
                    for v in 0..$v {
                        acc[j][v] = $fmadd(fv[v], x, acc[j][v]);
                    }
                }
            }
            let (out, _) = $out.as_chunks_mut::<$lanes>();
            for (dst, src) in out.chunks_exact_mut($v).zip(&acc) {
                for v in 0..$v {
                    // SAFETY: `dst[v]` is an array of `$lanes` floats, what an unaligned
                    // store writes.
                    unsafe { $store(dst[v].as_mut_ptr(), src[v]) };
                }
            }
        }};
    }

    /// [`body!`] with AVX2's vectors (2 of 8 floats per reduction index).
    macro_rules! avx2_loop {
        ($ops:ident, $out:ident, $w:ident, $last:ident) => {
            body!(
                $ops,
                $out,
                $w,
                $last,
                AVX2_V,
                8,
                _mm256_setzero_ps,
                _mm256_loadu_ps,
                _mm256_set1_ps,
                _mm256_fmadd_ps,
                _mm256_storeu_ps
            )
        };
    }

    /// [`body!`] with AVX-512's vectors (2 of 16 floats per reduction index).
    macro_rules! avx512_loop {
        ($ops:ident, $out:ident, $w:ident, $last:ident) => {
            body!(
                $ops,
                $out,
                $w,
                $last,
                AVX512_V,
                16,
                _mm512_setzero_ps,
                _mm512_loadu_ps,
                _mm512_set1_ps,
                _mm512_fmadd_ps,
                _mm512_storeu_ps
            )
        };
    }

    /// The kernels of 1 to 6 pixels (`$f::<T>`, or `$f::<T, STEP>` for a row kernel).
    macro_rules! six {
        ($f:ident $(, $step:literal)?) => {
            [
                $f::<1 $(, $step)?>, $f::<2 $(, $step)?>, $f::<3 $(, $step)?>,
                $f::<4 $(, $step)?>, $f::<5 $(, $step)?>, $f::<6 $(, $step)?>,
            ]
        };
    }

    /// The kernels of 1 to 12 pixels (the general AVX-512 kernels).
    macro_rules! twelve {
        ($f:ident $(, $step:literal)?) => {
            [
                $f::<1 $(, $step)?>, $f::<2 $(, $step)?>, $f::<3 $(, $step)?>,
                $f::<4 $(, $step)?>, $f::<5 $(, $step)?>, $f::<6 $(, $step)?>,
                $f::<7 $(, $step)?>, $f::<8 $(, $step)?>, $f::<9 $(, $step)?>,
                $f::<10 $(, $step)?>, $f::<11 $(, $step)?>, $f::<12 $(, $step)?>,
            ]
        };
    }

    /// The row kernels of 1 to 14 pixels (`$f::<T, STEP>`).
    macro_rules! fourteen {
        ($f:ident, $step:literal) => {
            [
                $f::<1, $step>,
                $f::<2, $step>,
                $f::<3, $step>,
                $f::<4, $step>,
                $f::<5, $step>,
                $f::<6, $step>,
                $f::<7, $step>,
                $f::<8, $step>,
                $f::<9, $step>,
                $f::<10, $step>,
                $f::<11, $step>,
                $f::<12, $step>,
                $f::<13, $step>,
                $f::<14, $step>,
            ]
        };
    }

    /// One table (`$n!($f, step)`) per step listed.
    macro_rules! tables {
        ($n:ident, $f:ident; $($step:literal),*) => {
            [$($n!($f, $step)),*]
        };
    }

    /// One table (`$n!($f, step)`) per step of [`ROW_STEPS`], in its order.
    macro_rules! row_tables {
        ($n:ident, $f:ident) => {
            tables!($n, $f; 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 14, 22, 44)
        };
    }

    /// One table (`$n!($f, step)`) per step of [`CHANNEL_STEPS`], in its order.
    macro_rules! channel_tables {
        ($n:ident, $f:ident) => {
            tables!($n, $f; 12, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048)
        };
    }

    /// The kernels of two rows of 1 to 7 pixels (`$f::<2h, h, STEP>`).
    macro_rules! pairs {
        ($f:ident, $step:literal) => {
            [
                $f::<2, 1, $step>,
                $f::<4, 2, $step>,
                $f::<6, 3, $step>,
                $f::<8, 4, $step>,
                $f::<10, 5, $step>,
                $f::<12, 6, $step>,
                $f::<14, 7, $step>,
            ]
        };
    }

    pub static AVX2_KERNELS: [KernelFn; 6] = six!(avx2);
    pub static AVX512_KERNELS: [KernelFn; 12] = twelve!(avx512);
    static AVX2_ROWS: [[KernelFn; 6]; ROW_STEPS.len()] = row_tables!(six, avx2_row);
    static AVX512_ROWS: [[KernelFn; 14]; ROW_STEPS.len()] = row_tables!(fourteen, avx512_row);
    static AVX512_PAIRS: [[KernelFn; 7]; ROW_STEPS.len()] = row_tables!(pairs, avx512_pair);

    static AVX2_CHANNEL_ROWS: [[KernelFn; 6]; CHANNEL_STEPS.len()] = channel_tables!(six, avx2_row);
    static AVX512_CHANNEL_ROWS: [[KernelFn; 14]; CHANNEL_STEPS.len()] =
        channel_tables!(fourteen, avx512_row);
    static AVX512_CHANNEL_PAIRS: [[KernelFn; 7]; CHANNEL_STEPS.len()] =
        channel_tables!(pairs, avx512_pair);

    /// The table of `step` in `rows` (for [`ROW_STEPS`]) or in `channel_rows` (for
    /// [`CHANNEL_STEPS`]), if it has one.
    fn row_table<const N: usize>(
        step: usize,
        rows: &'static [[KernelFn; N]],
        channel_rows: &'static [[KernelFn; N]],
    ) -> Option<&'static [KernelFn]> {
        match ROW_STEPS.iter().position(|&s| s == step) {
            Some(at) => Some(&rows[at]),
            None => {
                let at = CHANNEL_STEPS.iter().position(|&s| s == step)?;
                Some(&channel_rows[at])
            }
        }
    }

    /// The AVX2 row kernels for windows `step` floats apart, if there are some.
    pub fn avx2_rows(step: usize) -> Option<&'static [KernelFn]> {
        row_table(step, &AVX2_ROWS, &AVX2_CHANNEL_ROWS)
    }

    /// The AVX-512 row kernels for windows `step` floats apart, if there are some.
    pub fn avx512_rows(step: usize) -> Option<&'static [KernelFn]> {
        row_table(step, &AVX512_ROWS, &AVX512_CHANNEL_ROWS)
    }

    /// The AVX-512 kernels of two rows for windows `step` floats apart, if there are some.
    pub fn avx512_pairs(step: usize) -> Option<&'static [KernelFn]> {
        row_table(step, &AVX512_PAIRS, &AVX512_CHANNEL_PAIRS)
    }

    fn avx2<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        // SAFETY: `MicroKernel::for_isa` hands out AVX2_KERNELS only when AVX2 and FMA were
        // detected on this CPU.
        unsafe { avx2_body::<T>(ops, out) }
    }

    fn avx2_row<const T: usize, const STEP: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        // SAFETY: `MicroKernel::for_isa_and_step` hands out AVX2_ROWS only when AVX2 and
        // FMA were detected on this CPU.
        unsafe { avx2_row_body::<T, STEP>(ops, out) }
    }

    fn avx512<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        // SAFETY: `MicroKernel::for_isa` hands out AVX512_KERNELS only when AVX-512F was
        // detected on this CPU.
        unsafe { avx512_body::<T>(ops, out) }
    }

    fn avx512_row<const T: usize, const STEP: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        // SAFETY: `MicroKernel::for_isa_and_step` hands out AVX512_ROWS only when AVX-512F
        // was detected on this CPU.
        unsafe { avx512_row_body::<T, STEP>(ops, out) }
    }

    fn avx512_pair<const T: usize, const H: usize, const STEP: usize>(
        ops: &Operands<'_>,
        out: &mut [f32],
    ) {
        // SAFETY: `MicroKernel::for_isa_and_step` hands out AVX512_PAIRS only when AVX-512F
        // was detected on this CPU.
        unsafe { avx512_pair_body::<T, H, STEP>(ops, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        let (w, last) = windows::<T>(ops);
        avx2_loop!(ops, out, w, last)
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_row_body<const T: usize, const STEP: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        let (w, last) = row_windows::<T, STEP>(ops);
        avx2_loop!(ops, out, w, last)
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_body<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        let (w, last) = windows::<T>(ops);
        avx512_loop!(ops, out, w, last)
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_row_body<const T: usize, const STEP: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        let (w, last) = row_windows::<T, STEP>(ops);
        avx512_loop!(ops, out, w, last)
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_pair_body<const T: usize, const H: usize, const STEP: usize>(
        ops: &Operands<'_>,
        out: &mut [f32],
    ) {
        let (w, last) = pair_windows::<T, H, STEP>(ops);
        avx512_loop!(ops, out, w, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strip of distinct values, offsets with gaps (like a dilated window), and sums
    /// computed by hand in float64; pixel `j`'s window starts at `j·7 + 1`.
    fn check(mr: usize, t: usize, run: impl Fn(&Operands<'_>, &mut [f32])) {
        check_with_step(mr, t, 7, run);
    }

    /// [`check`] with pixel `j`'s window at `j·step + 1`.
    fn check_with_step(mr: usize, t: usize, step: usize, run: impl Fn(&Operands<'_>, &mut [f32])) {
        let starts: Vec<usize> = (0..t).map(|j| j * step + 1).collect();
        check_starts(mr, &starts, run);
    }

    /// [`check`] with pixel `j`'s window at `starts[j]`.
    fn check_starts(mr: usize, starts: &[usize], run: impl Fn(&Operands<'_>, &mut [f32])) {
        let t = starts.len();
        let offsets: Vec<usize> = (0..9).map(|i| i * 3 + i / 4).collect();
        let reach = offsets.iter().max().unwrap() + 1;
        let len = starts.iter().max().map_or(0, |&s| s + reach).max(600);
        let strip: Vec<f32> = (0..len)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let filter: Vec<f32> = (0..offsets.len() * mr)
            .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let ops = Operands {
            strip: &strip,
            offsets: &offsets,
            reach,
            filter: &filter,
            starts,
            accumulate: false,
        };
        let mut out = vec![f32::NAN; MAX_TILE];
        run(&ops, &mut out);
        // The same reduction in two calls, the second continuing the first's sums: the
        // same bits.
        let cut = 4;
        let mut split = vec![f32::NAN; MAX_TILE];
        let first = Operands {
            offsets: &offsets[..cut],
            filter: &filter[..cut * mr],
            ..ops
        };
        run(&first, &mut split);
        let rest = Operands {
            offsets: &offsets[cut..],
            filter: &filter[cut * mr..],
            accumulate: true,
            ..ops
        };
        run(&rest, &mut split);
        for e in 0..t * mr {
            assert_eq!(split[e].to_bits(), out[e].to_bits(), "t={t}, element {e}");
        }
        for j in 0..t {
            for m in 0..mr {
                let want: f64 = offsets
                    .iter()
                    .enumerate()
                    .map(|(kk, &off)| {
                        f64::from(filter[kk * mr + m]) * f64::from(strip[starts[j] + off])
                    })
                    .sum();
                let got = f64::from(out[j * mr + m]);
                assert!(
                    (got - want).abs() < 1e-5,
                    "t={t} j={j} m={m}: {got} vs {want}"
                );
            }
        }
    }

    #[test]
    fn every_available_level_and_pixel_count() {
        for isa in Isa::ALL {
            let Some(kernel) = MicroKernel::for_isa(isa) else {
                eprintln!("{isa}: not available on this CPU, not tested here");
                continue;
            };
            assert!(kernel.mr * kernel.nr <= MAX_TILE && kernel.nr <= MAX_NR);
            for t in 1..=kernel.nr {
                check(kernel.mr, t, |ops, out| kernel.run(ops, out));
            }
        }
    }

    /// Every row kernel (every level that has them, every window step, every pixel count)
    /// against float64 sums, and a step without row kernels falls back to the general ones.
    /// The steps: 1 to 44 (strips) and the channel steps of NHWC images read in place.
    #[test]
    fn every_available_row_kernel() {
        for isa in Isa::ALL {
            for step in (1..=44).chain([32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048]) {
                let Some(kernel) = MicroKernel::for_isa_and_step(isa, step) else {
                    continue;
                };
                assert!(kernel.mr * kernel.nr <= MAX_TILE && kernel.nr <= MAX_NR);
                if kernel.row_step.is_none() {
                    let general = MicroKernel::for_isa(isa).unwrap();
                    assert_eq!((kernel.mr, kernel.nr), (general.mr, general.nr));
                }
                for t in 1..=kernel.nr {
                    check_with_step(kernel.mr, t, step, |ops, out| kernel.run(ops, out));
                }
            }
        }
    }

    /// Every kernel of two rows (every step, strips' and NHWC channel steps, every row
    /// length) against float64 sums, the second row at a distance that is no multiple of
    /// the step.
    #[test]
    fn every_available_pair_kernel() {
        for isa in Isa::ALL {
            for step in (1..=44).chain([32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048]) {
                let Some(kernel) = MicroKernel::for_isa_and_step(isa, step) else {
                    continue;
                };
                assert!(kernel.pair_width() == 0 || kernel.row_step.is_some());
                assert!(2 * kernel.pair_width() <= kernel.nr);
                for h in 1..=kernel.pair_width() {
                    let starts: Vec<usize> = (0..2 * h)
                        .map(|j| 1 + (j / h) * (h * step + 5) + (j % h) * step)
                        .collect();
                    check_starts(kernel.mr, &starts, |ops, out| kernel.run_pair(ops, out));
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "floats apart")]
    fn a_pair_kernel_refuses_rows_of_another_step() {
        let Some(kernel) = [Isa::Avx512]
            .into_iter()
            .find_map(|isa| MicroKernel::for_isa_and_step(isa, 3).filter(|k| k.pair_width() > 0))
        else {
            panic!("no pair kernels on this CPU: floats apart (nothing to check)");
        };
        check_starts(kernel.mr, &[1, 4, 20, 24], |ops, out| {
            kernel.run_pair(ops, out)
        });
    }

    #[test]
    #[should_panic(expected = "floats apart")]
    fn a_row_kernel_refuses_pixels_of_another_step() {
        let Some(kernel) = [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .find_map(|isa| MicroKernel::for_isa_and_step(isa, 3).filter(|k| k.row_step.is_some()))
        else {
            panic!("no row kernels on this CPU: floats apart (nothing to check)");
        };
        check_with_step(kernel.mr, 2, 4, |ops, out| kernel.run(ops, out));
    }

    #[test]
    fn fused_generic_body_the_neon_level_uses() {
        // NEON's kernel is `generic::<16, T, true>`; check that body here on any CPU.
        check(16, 6, generic::<16, 6, true>);
        check(16, 1, generic::<16, 1, true>);
    }

    #[test]
    fn unavailable_levels_give_no_kernel() {
        for isa in Isa::ALL {
            assert_eq!(MicroKernel::for_isa(isa).is_some(), isa.is_available());
        }
    }
}
