//! The register-blocked micro-kernels: `MR` output channels × `t ≤ NR` output pixels, the
//! whole reduction accumulated in vector registers.
//!
//! Every level computes the same thing. For reduction index `kk` (in the im2win order
//! `c·S·R + s·R + r`) it loads the `MR` weights `filter[kk][0..MR]` (packed by
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
}

/// A kernel for one pixel count `t`: writes `out[j·MR + m]`, the sum for pixel `j` and
/// channel `m` of the block, for `j < t`.
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
}

/// The largest `MR·NR` of any level: the size of the caller's tile buffer.
pub(super) const MAX_TILE: usize = 32 * 12;

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
        (self.kernels[t - 1])(ops, out);
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

    use super::{KernelFn, Operands, windows};

    /// AVX2: 16 channels (2 vectors) × 6 pixels = 12 accumulators, 2 weight vectors and a
    /// broadcast: 15 of the 16 registers. 12 independent FMA chains cover the FMA latency
    /// (5 cycles on Zen, 4 on Skylake) at 1–2 FMAs per cycle.
    pub const AVX2_MR: usize = 16;
    const AVX2_V: usize = AVX2_MR / 8;

    /// AVX-512: 32 channels (2 vectors) × 12 pixels = 24 accumulators of the 32 registers.
    pub const AVX512_MR: usize = 32;
    const AVX512_V: usize = AVX512_MR / 16;

    pub static AVX2_KERNELS: [KernelFn; 6] = [
        avx2::<1>, avx2::<2>, avx2::<3>, avx2::<4>, avx2::<5>, avx2::<6>,
    ];

    pub static AVX512_KERNELS: [KernelFn; 12] = [
        avx512::<1>,
        avx512::<2>,
        avx512::<3>,
        avx512::<4>,
        avx512::<5>,
        avx512::<6>,
        avx512::<7>,
        avx512::<8>,
        avx512::<9>,
        avx512::<10>,
        avx512::<11>,
        avx512::<12>,
    ];

    fn avx2<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        // SAFETY: `MicroKernel::for_isa` hands out AVX2_KERNELS only when AVX2 and FMA were
        // detected on this CPU.
        unsafe { avx2_body::<T>(ops, out) }
    }

    fn avx512<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        // SAFETY: `MicroKernel::for_isa` hands out AVX512_KERNELS only when AVX-512F was
        // detected on this CPU.
        unsafe { avx512_body::<T>(ops, out) }
    }

    #[target_feature(enable = "avx2,fma")]
    fn avx2_body<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        let (w, last) = windows::<T>(ops);
        let mut acc = [[_mm256_setzero_ps(); AVX2_V]; T];
        let (filter, _) = ops.filter.as_chunks::<8>();
        for (&off, f) in ops.offsets.iter().zip(filter.chunks_exact(AVX2_V)) {
            // A no-op that proves the window reads in bounds (see `windows`).
            let off = off.min(last);
            let mut fv = [_mm256_setzero_ps(); AVX2_V];
            for v in 0..AVX2_V {
                // SAFETY: `f[v]` is an array of 8 floats, what an unaligned load reads.
                fv[v] = unsafe { _mm256_loadu_ps(f[v].as_ptr()) };
            }
            for j in 0..T {
                let x = _mm256_set1_ps(w[j][off]);
                for v in 0..AVX2_V {
                    acc[j][v] = _mm256_fmadd_ps(fv[v], x, acc[j][v]);
                }
            }
        }
        let (out, _) = out.as_chunks_mut::<8>();
        for (dst, src) in out.chunks_exact_mut(AVX2_V).zip(&acc) {
            for v in 0..AVX2_V {
                // SAFETY: `dst[v]` is an array of 8 floats, what an unaligned store writes.
                unsafe { _mm256_storeu_ps(dst[v].as_mut_ptr(), src[v]) };
            }
        }
    }

    #[target_feature(enable = "avx512f")]
    fn avx512_body<const T: usize>(ops: &Operands<'_>, out: &mut [f32]) {
        let (w, last) = windows::<T>(ops);
        let mut acc = [[_mm512_setzero_ps(); AVX512_V]; T];
        let (filter, _) = ops.filter.as_chunks::<16>();
        for (&off, f) in ops.offsets.iter().zip(filter.chunks_exact(AVX512_V)) {
            // A no-op that proves the window reads in bounds (see `windows`).
            let off = off.min(last);
            let mut fv = [_mm512_setzero_ps(); AVX512_V];
            for v in 0..AVX512_V {
                // SAFETY: `f[v]` is an array of 16 floats, what an unaligned load reads.
                fv[v] = unsafe { _mm512_loadu_ps(f[v].as_ptr()) };
            }
            for j in 0..T {
                let x = _mm512_set1_ps(w[j][off]);
                for v in 0..AVX512_V {
                    acc[j][v] = _mm512_fmadd_ps(fv[v], x, acc[j][v]);
                }
            }
        }
        let (out, _) = out.as_chunks_mut::<16>();
        for (dst, src) in out.chunks_exact_mut(AVX512_V).zip(&acc) {
            for v in 0..AVX512_V {
                // SAFETY: `dst[v]` is an array of 16 floats, what an unaligned store writes.
                unsafe { _mm512_storeu_ps(dst[v].as_mut_ptr(), src[v]) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A strip of distinct values, offsets with gaps (like a dilated window), and sums
    /// computed by hand in float64.
    fn check(mr: usize, t: usize, run: impl Fn(&Operands<'_>, &mut [f32])) {
        let strip: Vec<f32> = (0..200)
            .map(|i| ((i * 37) % 101) as f32 / 50.0 - 1.0)
            .collect();
        let offsets: Vec<usize> = (0..9).map(|i| i * 3 + i / 4).collect();
        let reach = offsets.iter().max().unwrap() + 1;
        let filter: Vec<f32> = (0..offsets.len() * mr)
            .map(|i| ((i * 53) % 97) as f32 / 48.0 - 1.0)
            .collect();
        let starts: Vec<usize> = (0..t).map(|j| j * 7 + 1).collect();
        let ops = Operands {
            strip: &strip,
            offsets: &offsets,
            reach,
            filter: &filter,
            starts: &starts,
        };
        let mut out = vec![f32::NAN; MAX_TILE];
        run(&ops, &mut out);
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
            assert!(kernel.mr * kernel.nr <= MAX_TILE);
            for t in 1..=kernel.nr {
                check(kernel.mr, t, |ops, out| kernel.run(ops, out));
            }
        }
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
