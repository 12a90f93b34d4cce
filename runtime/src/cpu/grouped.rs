//! Grouped and depthwise convolution on the CPU (`groups` > 1): the direct convolution over
//! each output's group, in float32, vectorised along a contiguous run of the output.
//!
//! A grouped problem's reduction is short (`C / groups · R · S`: 9 for a depthwise 3×3), so
//! the im2win strips and the register-blocked micro-kernel of the dense backend would spend
//! more on packing than on multiplying. Instead each output run is an accumulator that the
//! taps are added into, one tap at a time over the whole run:
//! - NCHW: a run is one output row of one channel; tap `(fy, fx)` of input channel `ci` adds
//!   `w · x[ci][iy][ox·sw + fx·dw − left]` to every output `ox` whose column falls inside the
//!   image (a range computed once per tap), a unit-stride AXPY where `sw = 1`.
//! - NHWC: a run is one output pixel's `K` channels; tap `(fy, fx)` adds the pixel's input
//!   channels times the tap's weights, laid out `[fy][fx][ci][k]` (transposed once per
//!   call, `K·C/groups·R·S` floats) so that both run along `k`.
//!
//! Every output's sum is the same sequence of fused multiply-adds as the scalar definition
//! (taps in `(fy, fx)` order, the group's channels within each tap: the GPU kernels' order),
//! skipping taps outside the image, so the result does not depend on the level or the
//! layout's loop order; it then goes through the float32 epilogue of the dense backend
//! ([`Epilogue::apply_f32`](crate::Epilogue::apply_f32)). The loops are compiled once per
//! instruction-set level (`target_feature` wrappers around one body), so that the
//! compiler vectorises them with that level's FMAs: without them a `mul_add` on x86-64 is a
//! call to the C library's `fmaf` (measured: MobileNetV2's depthwise layers at 0.4–0.7
//! GFLOP/s).

use rayon::prelude::*;

use std::sync::Mutex;

use super::backend::{oom, thread_slot};
use super::isa::Isa;
use super::{workspace, zeros};
use crate::error::Result;
use crate::layout::Layout;
use crate::problem::{Conv2dProblem, ProblemShape};

/// The grouped convolution of float32 buffers already checked against `problem` (of
/// `shape`, `groups` > 1), with the loops compiled for `isa` (which must be available).
/// Parallel over output planes `(n, k)` (NCHW) or output rows `(n, p)` (NHWC).
///
/// # Errors
/// [`crate::Error::OutOfMemory`] when the NHWC layout's transposed filter cannot be
/// allocated (before any output is written).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_f32(
    isa: Isa,
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    input: &[f32],
    filter: &[f32],
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let conv = Grouped::new(problem, shape);
    let [_, _, p, q] = shape.output;
    let k = conv.k;
    match problem.layout {
        Layout::Nchw => {
            // Per thread: the phase planes of a group's input channels and a grid of sums.
            let (planes, grid) = conv.nchw_scratch_len();
            let threads = rayon::current_num_threads().max(1);
            let mut slots = Vec::new();
            slots
                .try_reserve_exact(threads)
                .map_err(|_| oom("grouped scratch", threads, size_of::<Mutex<Vec<f32>>>()))?;
            for _ in 0..threads {
                slots.push(Mutex::new(workspace::take(
                    "grouped scratch",
                    planes * conv.cg + grid,
                )?));
            }
            output
                .par_chunks_mut(p * q)
                .enumerate()
                .for_each(|(plane, out)| {
                    let mut scratch = thread_slot(&slots);
                    let (n, kk) = (plane / k, plane % k);
                    let operands = Operands {
                        input,
                        data: filter,
                        bias: bias.map(|b| &b[kk..=kk]),
                        residual: residual.map(|r| &r[plane * p * q..][..p * q]),
                    };
                    let run = Run {
                        n,
                        index: kk,
                        out,
                        scratch: &mut scratch,
                    };
                    outputs_for::<false>(isa, &conv, &operands, run);
                });
            for slot in slots {
                workspace::give_back(slot.into_inner().unwrap_or_else(|e| e.into_inner()));
            }
        }
        Layout::Nhwc => {
            let taps = conv.transposed_taps(problem, filter)?;
            output
                .par_chunks_mut(q * k)
                .enumerate()
                .for_each(|(row, out)| {
                    let (n, oy) = (row / p, row % p);
                    let operands = Operands {
                        input,
                        data: &taps,
                        bias,
                        residual: residual.map(|r| &r[row * q * k..][..q * k]),
                    };
                    let run = Run {
                        n,
                        index: oy,
                        out,
                        scratch: &mut [],
                    };
                    outputs_for::<true>(isa, &conv, &operands, run);
                });
        }
    }
    Ok(())
}

/// What one output run reads: the input, the filter (NCHW) or transposed filter (NHWC),
/// and the run's bias (NCHW: its channel's; NHWC: all `K`) and residual.
struct Operands<'a> {
    input: &'a [f32],
    data: &'a [f32],
    bias: Option<&'a [f32]>,
    residual: Option<&'a [f32]>,
}

/// One job's output run: plane `(n, index)` (NCHW) or row `(n, index)` (NHWC), written to
/// `out`, with the thread's `scratch` (NCHW's phase planes and grid of sums).
struct Run<'a> {
    n: usize,
    index: usize,
    out: &'a mut [f32],
    scratch: &'a mut [f32],
}

/// Output plane `(n, index)` (NCHW: `index` is the output channel) or output row
/// `(n, index)` (NHWC: `index` is the output row) into `out`, epilogue applied, with the
/// loops compiled for `isa`'s vector width and FMAs: the body is inlined into one
/// `target_feature` function per level. (A closure handed to such a function was not
/// inlined into it, and its `mul_add`s stayed calls to `fmaf`.)
fn outputs_for<const NHWC: bool>(isa: Isa, conv: &Grouped, operands: &Operands<'_>, run: Run<'_>) {
    #[cfg(target_arch = "x86_64")]
    {
        // One function per level, the same body inlined into each.
        macro_rules! level {
            ($name:ident, $features:literal) => {
                #[target_feature(enable = $features)]
                fn $name<const NHWC: bool>(conv: &Grouped, operands: &Operands<'_>, run: Run<'_>) {
                    conv.outputs::<NHWC>(operands, run)
                }
            };
        }
        level!(avx512, "avx512f,avx2,fma");
        level!(avx2, "avx2,fma");
        match isa {
            // SAFETY: the plan runs `isa` only where `Isa::is_available` said this CPU has
            // it (checked again here, so that a wrong caller costs speed, not UB).
            Isa::Avx512 if isa.is_available() => {
                return unsafe { avx512::<NHWC>(conv, operands, run) };
            }
            // SAFETY: as above, for AVX2 and FMA.
            Isa::Avx2 if isa.is_available() => {
                return unsafe { avx2::<NHWC>(conv, operands, run) };
            }
            _ => {}
        }
    }
    let _ = isa;
    conv.outputs::<NHWC>(operands, run)
}

/// The sizes and strides of one grouped problem, and its loops.
struct Grouped {
    /// Input height and width.
    h: usize,
    w: usize,
    /// Output channels, and per group.
    k: usize,
    k_per_group: usize,
    /// Input channels per group; filter height and width.
    cg: usize,
    r: usize,
    s: usize,
    /// Output height and width.
    p: usize,
    q: usize,
    stride: [usize; 2],
    dilation: [usize; 2],
    top: usize,
    left: usize,
    /// Input strides of `n, c, h, w` and filter strides of `k, c, r, s`.
    x_strides: [usize; 4],
    f_strides: [usize; 4],
    epilogue: crate::epilogue::Epilogue,
}

impl Grouped {
    fn new(problem: &Conv2dProblem, shape: &ProblemShape) -> Grouped {
        let [_, _, h, w] = problem.input;
        let [k, cg, r, s] = problem.filter;
        let [_, _, p, q] = shape.output;
        Grouped {
            h,
            w,
            k,
            k_per_group: k / problem.groups,
            cg,
            r,
            s,
            p,
            q,
            stride: problem.stride,
            dilation: problem.dilation,
            top: problem.padding.top,
            left: problem.padding.left,
            x_strides: problem.layout.strides(problem.input),
            f_strides: problem.filter_layout.strides(problem.filter),
            epilogue: problem.epilogue,
        }
    }

    /// The input row of output row `oy` under filter row `fy`, if inside the image.
    fn input_row(&self, oy: usize, fy: usize) -> Option<usize> {
        (oy * self.stride[0] + fy * self.dilation[0])
            .checked_sub(self.top)
            .filter(|&iy| iy < self.h)
    }

    /// The output columns `ox0..ox1` whose column under filter column `fx` is inside the
    /// image, and the input column of `ox0`.
    fn columns(&self, fx: usize) -> (usize, usize, usize) {
        let sw = self.stride[1];
        let offset = fx * self.dilation[1];
        // ox·sw + offset − left ≥ 0  ⇔  ox ≥ ⌈(left − offset) / sw⌉.
        let ox0 = self.left.saturating_sub(offset).div_ceil(sw);
        // ox·sw + offset − left ≤ w − 1  ⇔  ox ≤ ⌊(w − 1 + left − offset) / sw⌋.
        let ox1 = match (self.w - 1 + self.left).checked_sub(offset) {
            Some(last) => (last / sw + 1).min(self.q),
            None => 0,
        };
        let ox0 = ox0.min(ox1);
        (ox0, ox1, (ox0 * sw + offset).saturating_sub(self.left))
    }

    /// The sums of [`Grouped::nhwc_row`] or [`Grouped::nchw_plane`], then the epilogue on
    /// each: output `i` of the run adds the bias of its channel and `residual[i]`.
    #[inline(always)]
    fn outputs<const NHWC: bool>(&self, operands: &Operands<'_>, run: Run<'_>) {
        let Run {
            n,
            index,
            out,
            scratch,
        } = run;
        let Operands {
            input,
            data,
            bias,
            residual,
        } = *operands;
        if NHWC {
            self.nhwc_row(input, data, n, index, out);
        } else {
            self.nchw_plane(input, data, n, index, out, scratch);
        }
        // Per pixel (NHWC: a run of `K` channels) or per plane (NCHW: one channel).
        let run = if NHWC { self.k } else { out.len() };
        for (j, run_out) in out.chunks_mut(run).enumerate() {
            let residual = residual.map(|r| &r[j * run..][..run_out.len()]);
            for (i, y) in run_out.iter_mut().enumerate() {
                let b = bias.map_or(0.0, |b| if NHWC { b[i] } else { b[0] });
                let res = residual.map_or(0.0, |r| r[i]);
                *y = self.epilogue.apply_f32(*y, b, res);
            }
        }
    }

    /// Floats of one input channel's phase planes ([`Grouped::phase_planes`]) and of the
    /// accumulator grid of one output plane: `(planes, grid)`.
    fn nchw_scratch_len(&self) -> (usize, usize) {
        let [sh, sw] = self.stride;
        let (hph, wph) = self.phase_dims();
        // One row more than the planes hold: a tap's run reads up to `oxoff` floats past
        // the last row (into columns that are never stored).
        (sh * sw * hph * wph + wph, self.p * wph)
    }

    /// Height and width of each phase plane: the padded image rows and columns that the
    /// outputs read, `(P−1)·sh + (R−1)·dh + 1` by `(Q−1)·sw + (S−1)·dw + 1`, split by stride
    /// phase.
    fn phase_dims(&self) -> (usize, usize) {
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let hp = (self.p - 1) * sh + (self.r - 1) * dh + 1;
        let wp = (self.q - 1) * sw + (self.s - 1) * dw + 1;
        (hp.div_ceil(sh), wp.div_ceil(sw))
    }

    /// Input channel `c` of image `n`, zero-padded and split by stride phase into `planes`:
    /// plane `(φy, φx)` holds padded pixel `(y'·sh + φy, x'·sw + φx)` at `y'·Wph + x'`, so
    /// that a tap `(fy, fx)` reads every output of a plane as one run of one phase plane
    /// (offset by `(fy·dh / sh, fx·dw / sw)`), whatever the stride and dilation.
    #[inline(always)]
    fn phase_planes(&self, input: &[f32], n: usize, c: usize, planes: &mut [f32]) {
        let [sh, sw] = self.stride;
        let [xn, xc, xh, _] = self.x_strides;
        let (hph, wph) = self.phase_dims();
        let image = &input[n * xn + c * xc..];
        for (phase, plane) in planes.chunks_exact_mut(hph * wph).take(sh * sw).enumerate() {
            let (py, px) = (phase / sw, phase % sw);
            for (yy, row) in plane.chunks_exact_mut(wph).enumerate() {
                let y = yy * sh + py;
                let Some(iy) = y.checked_sub(self.top).filter(|&iy| iy < self.h) else {
                    row.fill(0.0);
                    continue;
                };
                let src = &image[iy * xh..][..self.w];
                // Columns `xx` inside the image: `left ≤ xx·sw + px < left + W`.
                let inside = |x: usize| x.saturating_sub(px).div_ceil(sw).min(wph);
                let (lo, hi) = (inside(self.left), inside(self.left + self.w));
                let hi = hi.max(lo);
                row[..lo].fill(0.0);
                row[hi..].fill(0.0);
                if lo < hi {
                    let from = &src[lo * sw + px - self.left..];
                    let row = &mut row[lo..hi];
                    if sw == 1 {
                        row.copy_from_slice(&from[..row.len()]);
                    } else {
                        for (v, &x) in row.iter_mut().zip(from.iter().step_by(sw)) {
                            *v = x;
                        }
                    }
                }
            }
        }
    }

    /// The sums of output plane `(n, kk)` (NCHW), into `out` (`P·Q`), with `scratch`
    /// ([`Grouped::nchw_scratch_len`]) for the phase planes and the grid of sums.
    ///
    /// Each tap `(fy, fx)` of each of the group's channels adds `w · plane` to the whole
    /// grid at once: the grid has the phase planes' pitch `Wph` (its columns past `Q` are
    /// computed and dropped), so the run is `P·Wph` long and unit-stride for every stride
    /// and dilation, where a row at a time was 7–14 floats on the small layers. Taps in the
    /// padding add `w · 0`, which leaves every sum as the skipped tap did.
    #[inline(always)]
    fn nchw_plane(
        &self,
        input: &[f32],
        filter: &[f32],
        n: usize,
        kk: usize,
        out: &mut [f32],
        scratch: &mut [f32],
    ) {
        let [sh, sw] = self.stride;
        let [dh, dw] = self.dilation;
        let [fk, fc, fr, fs] = self.f_strides;
        let (hph, wph) = self.phase_dims();
        let (planes_len, grid_len) = self.nchw_scratch_len();
        let (planes, rest) = scratch.split_at_mut(planes_len * self.cg);
        let grid = &mut rest[..grid_len];
        grid.fill(0.0);
        let first = kk / self.k_per_group * self.cg;
        for (ci, planes) in planes.chunks_exact_mut(planes_len).enumerate() {
            self.phase_planes(input, n, first + ci, planes);
        }
        for fy in 0..self.r {
            let (py, dy) = ((fy * dh) % sh, (fy * dh) / sh);
            for fx in 0..self.s {
                let (px, dx) = ((fx * dw) % sw, (fx * dw) / sw);
                let at = (py * sw + px) * hph * wph + dy * wph + dx;
                for ci in 0..self.cg {
                    let weight = filter[kk * fk + ci * fc + fy * fr + fx * fs];
                    let run = &planes[ci * planes_len + at..][..grid_len];
                    for (a, &x) in grid.iter_mut().zip(run) {
                        *a = x.mul_add(weight, *a);
                    }
                }
            }
        }
        for (row, sums) in out.chunks_exact_mut(self.q).zip(grid.chunks_exact(wph)) {
            row.copy_from_slice(&sums[..self.q]);
        }
    }

    /// The filter as `[fy][fx][ci][k]` (NHWC's loops run along `k`).
    ///
    /// # Errors
    /// [`crate::Error::OutOfMemory`] when it cannot be allocated.
    fn transposed_taps(&self, problem: &Conv2dProblem, filter: &[f32]) -> Result<Vec<f32>> {
        let [fk, fc, fr, fs] = self.f_strides;
        let k = self.k;
        let mut taps = zeros::<f32>("transposed grouped filter", problem.filter.iter().product())?;
        for (tap_ci, run) in taps.chunks_exact_mut(k).enumerate() {
            let (tap, ci) = (tap_ci / self.cg, tap_ci % self.cg);
            let (fy, fx) = (tap / self.s, tap % self.s);
            for (kk, t) in run.iter_mut().enumerate() {
                *t = filter[kk * fk + ci * fc + fy * fr + fx * fs];
            }
        }
        Ok(taps)
    }

    /// The sums of output row `(n, oy)` (NHWC), into `out` (`Q·K`), from the
    /// [transposed](Grouped::transposed_taps) filter `taps`.
    #[inline(always)]
    fn nhwc_row(&self, input: &[f32], taps: &[f32], n: usize, oy: usize, out: &mut [f32]) {
        let [xn, _, xh, xw] = self.x_strides;
        let (k, kpg, cg) = (self.k, self.k_per_group, self.cg);
        let groups = k / kpg;
        out.fill(0.0);
        for fy in 0..self.r {
            let Some(iy) = self.input_row(oy, fy) else {
                continue;
            };
            for fx in 0..self.s {
                let (ox0, ox1, ix0) = self.columns(fx);
                let tap = &taps[(fy * self.s + fx) * cg * k..][..cg * k];
                for ox in ox0..ox1 {
                    let ix = ix0 + (ox - ox0) * self.stride[1];
                    let pixel = &input[n * xn + iy * xh + ix * xw..][..groups * cg];
                    let acc = &mut out[ox * k..][..k];
                    if cg == 1 && kpg == 1 {
                        // Depthwise: channel k reads input channel k.
                        for ((a, &x), &weight) in acc.iter_mut().zip(pixel).zip(tap) {
                            *a = x.mul_add(weight, *a);
                        }
                        continue;
                    }
                    for ci in 0..cg {
                        let weights = &tap[ci * k..][..k];
                        for (g, (acc, weights)) in acc
                            .chunks_exact_mut(kpg)
                            .zip(weights.chunks_exact(kpg))
                            .enumerate()
                        {
                            let x = pixel[g * cg + ci];
                            for (a, &weight) in acc.iter_mut().zip(weights) {
                                *a = x.mul_add(weight, *a);
                            }
                        }
                    }
                }
            }
        }
    }
}
