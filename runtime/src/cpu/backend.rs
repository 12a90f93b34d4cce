//! The CPU im2win backend: window strips, a packed filter, and a register-blocked
//! micro-kernel, in parallel over output rows and output channels.
//!
//! Output `(n, k, p, q)` is `act(alpha · Σ_kk F'[k][kk] · T[n][c][p][q·sw + s·dw][r] + bias[k]
//! + beta · residual[n][k][p][q])` (`docs/DESIGN.md`, [`Epilogue`]). The work is split into
//! jobs, each a band of output rows of one image for a group of output channels. A job
//! builds the im2win rows of a few of its output rows at a time into its thread's strip
//! ([`super::strip`]), then, for each block of `MR` output channels, runs the micro-kernel
//! ([`super::microkernel`]) over the strip's pixels, `NR` at a time, in passes over the
//! reduction that continue each tile's sums, and stores the complete sums through the
//! epilogue. See `docs/cpu-kernels.md`.
//!
//! Layouts: the strip builder reads an NCHW or an NHWC input, the packer a KCRS or a KRSC
//! filter; the strip and the micro-kernel are the same for all of them, and the reduction
//! runs in the filter's memory order (the offsets table follows it), so that packing is a
//! transpose either way. The store differs: an NCHW job owns rows of its channels' output
//! planes (each tile transposed into per-channel runs first), an NHWC job the run of its
//! channels in each pixel of its band.
//!
//! Memory: the packed filter, the offsets table, one strip per thread, and a table of the
//! output slices the jobs write: NCHW `N × bands × K` rows of planes and a list of the
//! jobs; NHWC none (a band is one run of the output), or, when the channels are split
//! into groups, one slice per pixel and group plus a list of the jobs. The tables are
//! bounded by the output's element count, whatever the shape. The packed filter, the strips
//! and the filter panels come from the buffers kept between calls ([`super::workspace`]),
//! so a call of a size seen before allocates none of them. Nothing is allocated per job,
//! and every allocation is fallible, made before any output is written.

use std::iter::repeat;
use std::sync::{Mutex, MutexGuard};

use im2win_codegen::{DType, Precision};
use rayon::prelude::*;

use super::isa::Isa;
use super::microkernel::{MAX_NR, MAX_TILE, MicroKernel, Operands};
use super::pack::{pack_filter, pack_panel};
use super::pixels;
use super::prepared::FilterForm;
use super::strip::{StripGeometry, StripKind};
use super::transpose::Transpose8;
use super::{check_len, check_operands, check_residual, workspace, zeros};
use crate::element::{Element, f32_values, rounds_to_tf32};
use crate::epilogue::{Activation, Epilogue};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::problem::{Conv2dProblem, ProblemShape};

/// Jobs per thread the decomposition aims for, so that a thread slowed by another
/// process (or a short last job) leaves little idle time.
const JOBS_PER_THREAD: usize = 8;
/// Jobs per thread that splitting the output channels aims for, when images and bands of
/// rows are too few: 4, not 2, so that the 7 bands of 128 → 128 channels at 28 × 28
/// (batch 1) become 14 jobs, not 7 that 2 threads share 4 to 3 (measured 0.60 against
/// 0.63 ms; with 8 jobs a thread, 0.62 against 0.70).
const GROUP_JOBS_PER_THREAD: usize = 4;
/// Fewest output pixels a band of rows should have: the micro-kernel reuses each filter
/// block it loads on every pixel of a strip, and a filter block of a layer with many
/// channels is hundreds of KiB. Measured on Zen 4 at batch 1: 48 instead of 96 made the
/// layers with MiB filters slower (96 → 256 channels at 24 × 24, 5 × 5: 3.4 against 3.0
/// ms; 256 → 512 at 12 × 12: 2.4 against 1.4 ms) and the others no faster.
const MIN_BAND_PIXELS: usize = 96;
/// Bytes of one channel block's packed filter that one pass over a chunk of tiles uses at
/// most, where the filter is packed up front: the L2 cache of Zen 4 (1 MiB), so that a pass
/// reloads its weights from L2, not from memory, for every tile. A row of 12 pixels makes
/// 24 FMAs (24 cycles on Zen 4) of each 128 bytes of weights, which L2 delivers with room
/// to spare. (Measured on Zen 4 when every pass stored its sums to the output and the next
/// read them back: 32 KiB passes left conv8 at 68% of the peak, 1 MiB at 75%. Passes now
/// continue their sums in registers from a per-thread buffer, [`CHUNK_TILES`].)
const REDUCTION_BYTES: usize = 1024 * 1024;
/// The pass of a job that packs its own filter panels (one image, one band, one strip): a
/// panel packed into L1 and read there by the job's tiles, rather than a whole block's
/// panel packed into L2 and read from there. Measured on Emerald Rapids at batch 1, 2
/// threads (ms, 1 MiB → 32 KiB passes): 512 → 512, 3 × 3 at 7 × 7 (25 pixels), NCHW, 0.94
/// → 0.67 and 512 → 2048, 1 × 1 at 7 × 7, 0.70 → 0.64 (medians, two builds alternating);
/// in one process alternating call by call (p10, NCHW / NHWC), 256 → 512 at 12 × 12 (100
/// pixels) 1.20 → 1.20 / 1.11 → 1.03 and 256 → 256 at 14 × 14 0.77 → 0.77 / 0.84 → 0.86.
const PANEL_BYTES: usize = 32 * 1024;
/// Bytes of packed filter one channel group holds (about: in whole blocks) when several
/// jobs of few pixels ([`CACHE_GROUP_PIXELS`]) read it (more than one image, or bands of
/// rows): the jobs of a group run one after another on a thread ([`for_each_nchw_job`]),
/// and each reads the group's filter from that core's L2 (2 MiB on Emerald Rapids, 1 MiB
/// on Zen 4), not from L3. Measured on Emerald Rapids, 2 threads, batch 8 (p10 ms, whole
/// filter per job → groups): 512 → 512 at 7 × 7 (9 MiB of filter, 25 pixels an image)
/// 4.33 → 3.23 NCHW, 4.43 → 3.40 NHWC; padded 7.95 → 7.74 / 7.39 → 5.99; 256 → 512 at
/// 12 × 12 5.55 → 5.30.
const GROUP_FILTER_BYTES: usize = 1024 * 1024;
/// Pixels a job has at most for [`GROUP_FILTER_BYTES`] groups: with more, each block of
/// the filter serves enough tiles that reading it from L3 costs little, and the groups
/// only add jobs (96 → 256 channels, 5 × 5, at 24 × 24, batch 8: 400 pixels in two bands
/// of 200, 10.1 ms without groups, 10.9 with; 256 → 256 at 14 × 14, 144 pixels, 6.8
/// against 7.0).
const CACHE_GROUP_PIXELS: usize = 128;

/// The convolution of `input` (`N×C×H×W`) with `filter` (`K×C×R×S`) plus the optional
/// `bias` (`K`), through the problem's [`Epilogue`], on the CPU with the im2win method,
/// written to `output` (`N×K×P×Q`): [`conv2d_with_residual`] without a residual, for
/// problems whose epilogue adds none.
///
/// Every tensor is in the problem's layouts: `input` and `output` in
/// [`Conv2dProblem::layout`] (NCHW or NHWC), `filter` in
/// [`Conv2dProblem::filter_layout`] (KCRS or KRSC). Each output is
/// `act(alpha · sum + bias[k])`, rounded as [`Epilogue::apply_f32`] rounds (the GPU
/// kernels' order); the plain epilogue gives `sum + bias[k]`.
///
/// Every tensor is of the problem's element type ([`Conv2dProblem::dtype`]). Float32 at
/// strict precision is computed on the buffers themselves; bf16 and f16 tensors in float32
/// on their values, each output rounded to the output type (to nearest, ties to even); a
/// TF32 problem rounds input and filter to TF32 first
/// ([`round_to_tf32`](crate::round_to_tf32)), then computes in float32. The copies this
/// takes are allocated like every other buffer (fallibly).
///
/// Uses the fastest micro-kernel this CPU runs ([`Isa::detected`]), or the one named by
/// the environment variable `IM2WIN_CPU_ISA` (`portable`, `avx2`, `avx512`, `neon`).
/// Multi-threaded with rayon (the current pool). Sums are accumulated in float32, in the
/// order of the reduction index. Every element of `output` is written.
///
/// # Errors
/// Any validation error of [`Conv2dProblem::shape`], [`Error::DTypeMismatch`] when the
/// buffers are not of the problem's element type, or [`Error::BufferLength`] naming
/// `"input"`, `"filter"`, `"bias"` or `"output"` when a buffer's length does not match the
/// problem, [`Error::ResidualMismatch`] when the problem's epilogue adds a residual (call
/// [`conv2d_with_residual`]), [`Error::IsaUnavailable`] when `IM2WIN_CPU_ISA` names a level
/// this CPU cannot run, or [`Error::OutOfMemory`] when the working buffers cannot be
/// allocated; `output` is left untouched then.
pub fn conv2d<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
    output: &mut [T],
) -> Result<()> {
    conv2d_with_residual(problem, input, filter, bias, None, output)
}

/// [`conv2d`] for any epilogue, also one that adds a residual
/// ([`Epilogue::residual`]): each output is
/// `act(alpha · sum + bias[k] + beta · residual)`, with `residual` a tensor of the
/// output's shape and layout (`N·K·P·Q` elements), read once, as the outputs are stored
/// (never by a pass of its own). Give `None` to a problem without a residual.
///
/// # Errors
/// Those of [`conv2d`]; [`Error::ResidualMismatch`] when `residual` is given to a problem
/// whose epilogue has none or missing for one that has it, [`Error::BufferLength`] naming
/// `"residual"` when its length is not the output's. Buffers are checked in the order
/// input, filter, bias, residual, output; `output` is left untouched on any error.
pub fn conv2d_with_residual<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    output: &mut [T],
) -> Result<()> {
    check_buffers(problem, input, filter, bias, residual, output)?;
    conv2d_with_isa_and_residual(
        Isa::selected()?,
        problem,
        input,
        filter,
        bias,
        residual,
        output,
    )
}

/// [`conv2d`] with the micro-kernel of `isa`, e.g. to compare the levels or to test each.
///
/// # Errors
/// Those of [`conv2d`]; [`Error::IsaUnavailable`] when this CPU cannot run `isa`.
pub fn conv2d_with_isa<T: Element>(
    isa: Isa,
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
    output: &mut [T],
) -> Result<()> {
    conv2d_with_isa_and_residual(isa, problem, input, filter, bias, None, output)
}

/// [`conv2d_with_residual`] with the micro-kernel of `isa`.
///
/// # Errors
/// Those of [`conv2d_with_residual`]; [`Error::IsaUnavailable`] when this CPU cannot run
/// `isa`.
pub fn conv2d_with_isa_and_residual<T: Element>(
    isa: Isa,
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    output: &mut [T],
) -> Result<()> {
    let shape = check_buffers(problem, input, filter, bias, residual, output)?;
    let plan = Plan::new(isa, problem, &shape)?;
    run(
        plan,
        problem,
        &shape,
        input,
        Filter::Given(filter),
        bias,
        residual,
        output,
    )
}

/// How the backend computes a problem on one ISA: the micro-kernel, where it reads the
/// windows ([`kernel_and_strip`]), and the pixel tiling when the problem is vectorised over
/// output pixels instead ([`pixels::applies`]).
#[derive(Clone, Copy)]
pub(super) struct Plan {
    /// The instruction-set level every loop is compiled for.
    isa: Isa,
    kernel: MicroKernel,
    strip_kind: StripKind,
    by_pixels: Option<pixels::Tiling>,
}

impl Plan {
    /// The plan for `problem` (of `shape`) with the micro-kernels of `isa`.
    ///
    /// # Errors
    /// [`Error::IsaUnavailable`] when this CPU cannot run `isa`.
    pub(super) fn new(isa: Isa, problem: &Conv2dProblem, shape: &ProblemShape) -> Result<Plan> {
        let (kernel, strip_kind) =
            kernel_and_strip(isa, problem).ok_or_else(|| Error::IsaUnavailable {
                isa: isa.name().to_string(),
            })?;
        Ok(Plan {
            isa,
            kernel,
            strip_kind,
            by_pixels: pixels::applies(isa, problem, shape),
        })
    }

    /// The form of the filter this plan reads for `problem`: the values themselves for a
    /// grouped problem (the direct loop), else packed in blocks of the pixel tiling's or
    /// the micro-kernel's channels.
    pub(super) fn filter_form(&self, problem: &Conv2dProblem) -> FilterForm {
        if problem.groups > 1 {
            FilterForm::Values
        } else if let Some(tiling) = self.by_pixels {
            FilterForm::Packed { block: tiling.kb }
        } else {
            FilterForm::Packed {
                block: self.kernel.mr,
            }
        }
    }
}

/// The filter of one call, as the caller gave it or prepared
/// ([`super::PreparedFilter`]).
#[derive(Clone, Copy)]
pub(super) enum Filter<'a, T> {
    /// The filter tensor, in the problem's element type and filter layout.
    Given(&'a [T]),
    /// Float32 values in the form the call's plan reads (checked by the caller).
    Prepared(FilterIn<'a>),
}

/// The float32 filter the computation reads.
#[derive(Clone, Copy)]
pub(super) enum FilterIn<'a> {
    /// The values in the problem's filter layout (`K×C×R×S` or `K×R×S×C`): packed per call
    /// where the plan packs.
    Values(&'a [f32]),
    /// Already packed in blocks of `block` output channels ([`pack_filter`]).
    Packed {
        /// Output channels per block.
        block: usize,
        /// The packed filter.
        data: &'a [f32],
    },
}

/// Runs `plan` on checked buffers of the element type `T`. Float32 at strict precision is
/// computed on the buffers themselves; other problems in float32 on the values they
/// multiply (widened from bf16 or f16, or rounded to TF32), each output rounded to the
/// output type as it is written back.
#[allow(clippy::too_many_arguments)]
pub(super) fn run<T: Element>(
    plan: Plan,
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    input: &[T],
    filter: Filter<'_, T>,
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    output: &mut [T],
) -> Result<()> {
    let tf32 = rounds_to_tf32(problem);
    // Borrowed (no copy) for float32 at strict precision.
    let x = f32_values("float32 input", input, tf32)?;
    let given;
    let filter = match filter {
        Filter::Given(f) => {
            given = f32_values("float32 filter", f, tf32)?;
            FilterIn::Values(&given)
        }
        Filter::Prepared(prepared) => prepared,
    };
    let bias = bias
        .map(|b| f32_values("float32 bias", b, false))
        .transpose()?;
    let residual = residual
        .map(|r| f32_values("float32 residual", r, false))
        .transpose()?;
    let values = problem
        .with_dtype(DType::F32)
        .with_precision(Precision::Strict);
    let (bias, residual) = (bias.as_deref(), residual.as_deref());
    if let Some(y) = T::as_f32_mut(output) {
        return run_f32(plan, &values, shape, &x, filter, bias, residual, y);
    }
    let mut y = zeros::<f32>("float32 output", shape.output_len)?;
    run_f32(plan, &values, shape, &x, filter, bias, residual, &mut y)?;
    for (out, &value) in output.iter_mut().zip(&y) {
        *out = T::from_f32(value);
    }
    Ok(())
}

/// The micro-kernel of `isa` for the problem's window step, and where it reads the windows
/// ([`StripKind`]): the image where it lies ([`StripGeometry::in_place_step`]), its input
/// rows copied with their padding ([`StripGeometry::padded_rows_step`]), or interleaved
/// strips; `None` when this CPU cannot run `isa`. An NCHW image is always read in place or
/// from padded rows (step `sw`); an NHWC one (step `sw·C`) only where the level has row
/// kernels for that step: the general kernels' pixel pointers spill, which costs more
/// than the interleaved strip.
fn kernel_and_strip(isa: Isa, problem: &Conv2dProblem) -> Option<(MicroKernel, StripKind)> {
    let strip_step = problem.stride[1] * problem.filter[2];
    let candidates = [
        (StripGeometry::in_place_step(problem), StripKind::InPlace),
        (
            StripGeometry::padded_rows_step(problem),
            StripKind::PaddedRows,
        ),
    ];
    for (step, kind) in candidates {
        let Some(step) = step else { continue };
        let kernel = MicroKernel::for_isa_and_step(isa, step)?;
        if problem.layout == Layout::Nchw || kernel.row_step.is_some() {
            return Some((kernel, kind));
        }
    }
    Some((
        MicroKernel::for_isa_and_step(isa, strip_step)?,
        StripKind::Interleaved,
    ))
}

/// The backend on float32 buffers already checked against `problem` (of `shape`), by
/// `plan`: the micro-kernel reading the windows where its strip kind says
/// ([`kernel_and_strip`]), or vectorised over output pixels ([`pixels::applies`]), or the
/// grouped direct loop. `filter` is in the form the plan reads, or the values (packed here).
///
/// # Errors
/// [`Error::OutOfMemory`] as [`conv2d`], and [`Error::PreparedFilterMismatch`] when a packed
/// filter is not in the form the plan reads (the prepared-filter calls check this first).
#[allow(clippy::too_many_arguments)]
fn run_f32(
    plan: Plan,
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    input: &[f32],
    filter: FilterIn<'_>,
    bias: Option<&[f32]>,
    residual: Option<&[f32]>,
    output: &mut [f32],
) -> Result<()> {
    let form = plan.filter_form(problem);
    let mismatch = |given: FilterForm| Error::PreparedFilterMismatch {
        prepared: format!("{given:?} of {:?}", problem.filter),
        needed: format!("{form:?} of {:?}", problem.filter),
    };
    match filter {
        FilterIn::Packed { block, .. } if form != (FilterForm::Packed { block }) => {
            return Err(mismatch(FilterForm::Packed { block }));
        }
        FilterIn::Values(filter) if problem.groups > 1 => {
            return super::grouped::run_f32(
                plan.isa, problem, shape, input, filter, bias, residual, output,
            );
        }
        _ => {}
    }
    if let Some(tiling) = plan.by_pixels {
        return pixels::run_f32(
            tiling, problem, shape, input, filter, bias, residual, output,
        );
    }
    let Plan {
        kernel, strip_kind, ..
    } = plan;
    let shape = *shape;
    let [n, c, h, w] = problem.input;
    let k = problem.filter[0];
    let [_, _, p, q] = shape.output;

    let split = Split::new(
        n,
        k,
        p,
        q,
        kernel.mr,
        shape.reduction,
        rayon::current_num_threads(),
    );
    let geometry = StripGeometry::new(problem, &shape, p.div_ceil(split.bands), strip_kind);
    // Each filter block is read by every job of its channel group; when that is one job
    // (one band, one strip), it packs its panels itself, into L1, and the packed filter
    // is never written to memory. Otherwise the filter is packed once, up front; a
    // prepared filter is packed already.
    let (values, prepared) = match filter {
        FilterIn::Values(values) => (values, None),
        FilterIn::Packed { data, .. } => (&[][..], Some(data)),
    };
    let single_use = prepared.is_none() && split.bands == 1 && n == 1 && geometry.max_rows >= p;
    let packed = if single_use || prepared.is_some() {
        Vec::new()
    } else {
        pack_filter(problem, values, kernel.mr)?
    };
    let packed_filter = match prepared {
        Some(data) => Some(data),
        None => (!single_use).then_some(&packed[..]),
    };
    // A job that packs its own panels packs them a pass at a time, into L1
    // ([`PANEL_BYTES`]).
    let pass_bytes = if single_use {
        PANEL_BYTES
    } else {
        REDUCTION_BYTES
    };
    let pass_len = pass_len(shape.reduction, kernel.mr, pass_bytes);
    let (offsets, reach) = geometry.offsets()?;
    let threads = rayon::current_num_threads().max(1);
    let mut scratch = Vec::new();
    scratch
        .try_reserve_exact(threads)
        .map_err(|_| oom("strips", threads, size_of::<Mutex<Scratch>>()))?;
    for _ in 0..threads {
        scratch.push(Mutex::new(Scratch {
            strip: workspace::take("strip", geometry.len())?,
            panel: workspace::take(
                "filter panel",
                if single_use { pass_len * kernel.mr } else { 0 },
            )?,
            sums: workspace::take(
                "tile sums",
                if pass_len < shape.reduction {
                    CHUNK_TILES * TILE_BUFFER
                } else {
                    0
                },
            )?,
        }));
    }
    // Without a bias the stores add zeros: one code path, and what the plain epilogue
    // always did.
    let no_bias = if bias.is_none() {
        zeros::<f32>("bias", k)?
    } else {
        Vec::new()
    };
    let job = Job {
        kernel,
        transpose: Transpose8::detect(),
        geometry: &geometry,
        packed: packed_filter,
        problem,
        filter: values,
        pass_len,
        offsets: &offsets,
        reach,
        bias: bias.unwrap_or(&no_bias),
        residual,
        epilogue: Store::new(&problem.epilogue),
        crs: shape.reduction,
        k,
        p,
        q,
    };
    let image_len = c * h * w;
    // Job (image, band, channels from k0) writing `out`.
    let run = |image: usize, band: usize, k0: usize, mut out: Outputs<'_, '_>| {
        let x = &input[image * image_len..][..image_len];
        let (p0, band_rows) = split.band(band, p);
        job.run(
            x,
            image,
            p0,
            band_rows,
            k0,
            &mut out,
            &mut thread_slot(&scratch),
        );
    };
    let groups = k.div_ceil(split.group);
    match problem.layout {
        Layout::Nchw => for_each_nchw_job(output, k, p, q, &split, |image, band, k0, planes| {
            run(image, band, k0, Outputs::Planes(planes));
        })?,
        // Each band of an image is one run of the output: the first `p % bands` bands
        // have one row more than the others.
        Layout::Nhwc if groups == 1 => {
            let (rows, longer) = (p / split.bands, p % split.bands);
            let row_len = q * k;
            output
                .par_chunks_mut(p * row_len)
                .enumerate()
                .for_each(|(image, out)| {
                    let (long, short) = out.split_at_mut(longer * (rows + 1) * row_len);
                    long.par_chunks_mut((rows + 1) * row_len)
                        .chain(short.par_chunks_mut(rows * row_len))
                        .enumerate()
                        .for_each(|(band, out)| run(image, band, 0, Outputs::Band(out)));
                });
        }
        Layout::Nhwc => {
            let mut table = Vec::new();
            let mut jobs = pixel_jobs(output, &mut table, &split, &shape)?;
            jobs.par_iter_mut().for_each(|group| {
                run(
                    group.image,
                    group.band,
                    group.k0,
                    Outputs::Pixels(group.pixels),
                );
            });
        }
    }
    // The buffers serve the next call (`super::workspace`).
    for slot in scratch {
        let Scratch { strip, panel, sums } = slot.into_inner().unwrap_or_else(|e| e.into_inner());
        workspace::give_back(strip);
        workspace::give_back(panel);
        workspace::give_back(sums);
    }
    workspace::give_back(packed);
    Ok(())
}

/// Validates the problem and every buffer, in the order input, filter, bias, residual,
/// output.
fn check_buffers<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    output: &[T],
) -> Result<ProblemShape> {
    let shape = check_operands(problem, input, filter, bias)?;
    check_residual(problem, &shape, residual)?;
    check_len("output", shape.output_len, output.len())?;
    Ok(shape)
}

/// [`Error::OutOfMemory`] for `count` items of `item` bytes each.
pub(super) fn oom(what: &'static str, count: usize, item: usize) -> Error {
    Error::OutOfMemory {
        what,
        bytes: count as u128 * item.max(1) as u128,
        on_device: false,
    }
}

/// How the output is split into jobs: `bands` bands of output rows per image, each in
/// groups of `group` output channels (a multiple of the micro-kernel's `MR`).
#[derive(Debug, Clone, Copy)]
pub(super) struct Split {
    pub bands: usize,
    pub group: usize,
}

impl Split {
    /// Enough jobs for `threads` threads where the shape allows: first images, then bands
    /// of rows ([`JOBS_PER_THREAD`] per thread; they cost nothing extra, as long as each
    /// keeps [`MIN_BAND_PIXELS`] pixels to reuse every loaded filter block on), and only
    /// then groups of output channels, just enough for [`GROUP_JOBS_PER_THREAD`] jobs per
    /// thread (each group builds the strips again); and where several jobs of fewer than
    /// [`CACHE_GROUP_PIXELS`] pixels read each filter block (images or bands), a group per
    /// [`GROUP_FILTER_BYTES`] of the packed filter (`crs` weights a channel).
    pub fn new(
        n: usize,
        k: usize,
        p: usize,
        q: usize,
        mr: usize,
        crs: usize,
        threads: usize,
    ) -> Split {
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
        let for_threads = (threads * GROUP_JOBS_PER_THREAD).div_ceil(n * bands);
        let for_cache = if n * bands > 1 && p * q / bands < CACHE_GROUP_PIXELS {
            (k * crs * size_of::<f32>()).div_ceil(GROUP_FILTER_BYTES)
        } else {
            1
        };
        let groups = for_threads.max(for_cache).clamp(1, blocks);
        Split {
            bands,
            group: blocks.div_ceil(groups) * mr,
        }
    }

    /// First row and row count of band `band` of `p` rows (the first `p % bands` bands
    /// have one row more).
    pub fn band(&self, band: usize, p: usize) -> (usize, usize) {
        let (base, extra) = (p / self.bands, p % self.bands);
        (
            band * base + band.min(extra),
            base + usize::from(band < extra),
        )
    }
}

/// Runs `job(image, band, k0, planes)` for every job of an NCHW `output` (`N×K×P×Q`) as
/// `split` cuts it, in parallel: `planes` holds the job's rows of the planes of channels
/// `k0 ..` (see [`band_rows`]). The jobs are handed out channel group first, so that a
/// thread runs the jobs of one group (its images and bands) one after another, and reads
/// the group's filter from its own cache after the first ([`GROUP_FILTER_BYTES`]).
///
/// # Errors
/// [`Error::OutOfMemory`] when the table of output rows or the job list cannot be
/// allocated.
pub(super) fn for_each_nchw_job(
    output: &mut [f32],
    k: usize,
    p: usize,
    q: usize,
    split: &Split,
    job: impl Fn(usize, usize, usize, &mut [&mut [f32]]) + Sync,
) -> Result<()> {
    let mut rows = band_rows(output, k, p * q, q, split.bands)?;
    let count = rows.len().div_ceil(k.max(1)) * k.div_ceil(split.group.max(1));
    let mut jobs = Vec::new();
    jobs.try_reserve_exact(count)
        .map_err(|_| oom("job list", count, size_of::<PlaneJob<'_, '_>>()))?;
    for (band_index, planes) in rows.chunks_mut(k).enumerate() {
        let (image, band) = (band_index / split.bands, band_index % split.bands);
        for (group, planes) in planes.chunks_mut(split.group).enumerate() {
            jobs.push(PlaneJob {
                image,
                band,
                k0: group * split.group,
                planes,
            });
        }
    }
    jobs.sort_unstable_by_key(|j| (j.k0, j.image, j.band));
    jobs.par_iter_mut()
        .for_each(|j| job(j.image, j.band, j.k0, j.planes));
    Ok(())
}

/// An NCHW job: a band of output rows of one image, for the output channels from `k0`,
/// and its rows of their planes.
struct PlaneJob<'s, 'o> {
    image: usize,
    band: usize,
    k0: usize,
    planes: &'s mut [&'o mut [f32]],
}

/// The calling thread's entry of `slots` (one per thread of the pool: each thread has
/// working memory of its own, so the lock is never contended, unless rayon runs a job
/// outside its pool, where it stays correct).
pub(super) fn thread_slot<T>(slots: &[Mutex<T>]) -> MutexGuard<'_, T> {
    let slot = rayon::current_thread_index().unwrap_or(0) % slots.len().max(1);
    slots[slot].lock().unwrap_or_else(|e| e.into_inner())
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

/// The outputs of one job, disjoint from every other job's.
enum Outputs<'s, 'o> {
    /// NCHW: one slice per channel of the job, the band's rows of its output plane (pixel
    /// `j` of the band at `[j]`).
    Planes(&'s mut [&'o mut [f32]]),
    /// NHWC, a job with every channel: the band's pixels, each with its `K` channels
    /// (channel `k` of pixel `j` at `[j·K + k]`).
    Band(&'o mut [f32]),
    /// NHWC, a job with a group of channels: one slice per pixel of the band, the job's
    /// run of that pixel's channels (channel `k` of pixel `j` at `[j][k − k0]`).
    Pixels(&'s mut [&'o mut [f32]]),
}

/// An NHWC job of one channel group: a band of output rows of one image, for the output
/// channels from `k0`, and its run of channels in each pixel of the band.
struct PixelJob<'s, 'o> {
    image: usize,
    band: usize,
    k0: usize,
    pixels: &'s mut [&'o mut [f32]],
}

/// The jobs of an NHWC output (`N×P×Q×K`) split into channel groups: the jobs of a band
/// interleave in every pixel, so `table` gets one slice per (image, band, group, pixel),
/// in that order, `split.group` channels long (or less, in the last group); the table has
/// no more entries than the output has elements (a group has at least one channel), and
/// the jobs no more than the table. They are listed channel group first
/// ([`for_each_nchw_job`]).
fn pixel_jobs<'s, 'o>(
    output: &'o mut [f32],
    table: &'s mut Vec<&'o mut [f32]>,
    split: &Split,
    shape: &ProblemShape,
) -> Result<Vec<PixelJob<'s, 'o>>> {
    let [n, k, p, q] = shape.output;
    let groups = k.div_ceil(split.group);
    let count = n * split.bands * groups;
    let mut jobs = Vec::new();
    jobs.try_reserve_exact(count)
        .map_err(|_| oom("job list", count, size_of::<PixelJob<'_, '_>>()))?;
    let entries = shape.pixels * groups;
    table
        .try_reserve_exact(entries)
        .map_err(|_| oom("output pixel table", entries, size_of::<&mut [f32]>()))?;
    table.resize_with(entries, Default::default);
    let bands = (0..n).flat_map(|image| (0..split.bands).map(move |band| (image, band)));
    // Pixel j of a band of `len` pixels whose entries start at `base` puts its group g at
    // entry base + g·len + j: each job's pixels are consecutive entries.
    let mut pixels = output.chunks_exact_mut(k);
    let mut base = 0;
    for (_, band) in bands.clone() {
        let len = split.band(band, p).1 * q;
        for (j, pixel) in (&mut pixels).take(len).enumerate() {
            for (g, run) in pixel.chunks_mut(split.group).enumerate() {
                table[base + g * len + j] = run;
            }
        }
        base += groups * len;
    }
    let mut rest = &mut table[..];
    for (image, band) in bands {
        let len = split.band(band, p).1 * q;
        for group in 0..groups {
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            jobs.push(PixelJob {
                image,
                band,
                k0: group * split.group,
                pixels: head,
            });
        }
    }
    // Channel group first, as [`for_each_nchw_job`] hands them out.
    jobs.sort_unstable_by_key(|j| (j.k0, j.image, j.band));
    Ok(jobs)
}

/// A thread's working memory: its strip, the filter panel it packs when jobs pack their
/// own, and the sums of a chunk of tiles between passes ([`CHUNK_TILES`] slots of
/// [`TILE_BUFFER`]), when there are several.
struct Scratch {
    strip: Vec<f32>,
    panel: Vec<f32>,
    sums: Vec<f32>,
}

/// Reduction indices per pass over a strip: passes of equal length (576 = 2 × 288, not
/// 512 + 64), each of at most `bytes` of a channel block's filter.
fn pass_len(crs: usize, mr: usize, bytes: usize) -> usize {
    let passes = crs.div_ceil((bytes / (mr * size_of::<f32>())).max(1));
    crs.div_ceil(passes)
}

/// Tiles that one pass over a block's filter serves before the next pass: the sums of
/// 24 tiles (48 KiB) wait between passes.
const CHUNK_TILES: usize = 24;

/// Pixels of a tile rounded up to whole 8 × 8 transposes: 16 for the 12 of AVX-512.
const TILE_PIXELS: usize = 16;
/// Floats of a tile buffer: the largest `MR` (32) × [`TILE_PIXELS`]; at least
/// [`MAX_TILE`], as the micro-kernels write.
const TILE_BUFFER: usize = 32 * TILE_PIXELS;
const _: () = assert!(TILE_BUFFER >= MAX_TILE);

/// What every job shares.
struct Job<'a> {
    kernel: MicroKernel,
    /// The AVX transpose of a tile's sums for the NCHW store, and the AVX loop of the
    /// NHWC one, where the CPU has AVX.
    transpose: Option<Transpose8>,
    geometry: &'a StripGeometry,
    /// The packed filter, or `None` when every job packs its own panels (from `filter`).
    packed: Option<&'a [f32]>,
    problem: &'a Conv2dProblem,
    filter: &'a [f32],
    /// Reduction indices per pass ([`pass_len`]).
    pass_len: usize,
    offsets: &'a [usize],
    reach: usize,
    /// `K` biases (zeros when the call has none).
    bias: &'a [f32],
    /// The residual operand, in the output's layout.
    residual: Option<&'a [f32]>,
    epilogue: Store,
    /// Reduction length `C·R·S`.
    crs: usize,
    /// Output channels `K`, rows `P` and columns `Q`.
    k: usize,
    p: usize,
    q: usize,
}

/// The epilogue as the store applies it: the plain one (`sum + bias`, which is what
/// [`Epilogue::apply_f32`] computes for it, bit for bit: `1·sum` is exact, so the fused
/// `mul_add` rounds `sum + bias` once, like the addition) without a call per output,
/// any other through [`Epilogue::apply_f32`], the GPU kernels' rounding.
#[derive(Debug, Clone, Copy)]
pub(super) enum Store {
    Plain,
    Full {
        epilogue: Epilogue,
        /// Whether this CPU has FMA instructions (x86-64: detected at run time), for
        /// [`Epilogue::apply_f32`]'s `mul_add`: without them it is a library call per
        /// output, with them one instruction. The values are the same (both round once).
        fma: bool,
    },
}

impl Store {
    pub fn new(epilogue: &Epilogue) -> Store {
        let plain = epilogue.alpha == 1.0
            && !epilogue.residual
            && epilogue.activation == Activation::Identity;
        if plain {
            return Store::Plain;
        }
        #[cfg(target_arch = "x86_64")]
        let fma = is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let fma = false;
        Store::Full {
            epilogue: *epilogue,
            fma,
        }
    }

    /// Stores one run of outputs `dst` from their complete `sums`, with their `bias`es
    /// and, for the residual epilogue, `residual` (as long as `dst`; `None` otherwise).
    #[inline(always)]
    pub fn run(
        self,
        dst: &mut [f32],
        sums: impl Iterator<Item = f32>,
        bias: impl Iterator<Item = f32>,
        residual: Option<&[f32]>,
    ) {
        match self {
            Store::Plain => finish(dst, sums, bias, repeat(0.0), |v, b, _| v + b),
            #[cfg(target_arch = "x86_64")]
            Store::Full {
                epilogue,
                fma: true,
            } => {
                // SAFETY: `fma` is set only where the CPU has FMA (`Store::new`).
                unsafe { full_fma(&epilogue, dst, sums, bias, residual) }
            }
            Store::Full { epilogue, .. } => full(&epilogue, dst, sums, bias, residual),
        }
    }
}

/// The store through `epilogue` ([`finish`] computing
/// [`Epilogue::apply_f32`]): the activation and whether a residual is added chosen once per
/// run, not per output, so that the loop over the run is one straight expression that
/// vectorises (the per-output `apply_f32` was 14% of ResNet-50's CPU forward in candle).
#[inline(always)]
fn full(
    epilogue: &Epilogue,
    dst: &mut [f32],
    sums: impl Iterator<Item = f32>,
    bias: impl Iterator<Item = f32>,
    residual: Option<&[f32]>,
) {
    let args = (dst, sums, bias, residual);
    match epilogue.activation {
        Activation::Identity => full_with(epilogue, args, |v| v),
        Activation::Relu => full_with(epilogue, args, |v: f32| v.max(0.0)),
        other => full_with(epilogue, args, move |v| other.apply_f32(v)),
    }
}

/// [`full`] with the activation `act`: `act(alpha·sum + bias [+ beta·residual])`, rounded as
/// [`Epilogue::apply_f32`] rounds it.
#[inline(always)]
fn full_with(
    epilogue: &Epilogue,
    (dst, sums, bias, residual): (
        &mut [f32],
        impl Iterator<Item = f32>,
        impl Iterator<Item = f32>,
        Option<&[f32]>,
    ),
    act: impl Fn(f32) -> f32,
) {
    let (alpha, beta) = (epilogue.alpha, epilogue.beta);
    let with_residual = |v: f32, b: f32, r: f32| act(beta.mul_add(r, alpha.mul_add(v, b)));
    match (epilogue.residual, residual) {
        (true, Some(residual)) => finish(dst, sums, bias, residual.iter().copied(), with_residual),
        (true, None) => finish(dst, sums, bias, repeat(0.0), with_residual),
        (false, _) => finish(dst, sums, bias, repeat(0.0), |v, b, _| {
            act(alpha.mul_add(v, b))
        }),
    }
}

/// [`full`] compiled with FMA instructions.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "fma")]
fn full_fma(
    epilogue: &Epilogue,
    dst: &mut [f32],
    sums: impl Iterator<Item = f32>,
    bias: impl Iterator<Item = f32>,
    residual: Option<&[f32]>,
) {
    full(epilogue, dst, sums, bias, residual);
}

/// `dst[e] = f(sums[e], bias[e], residual[e])`.
#[inline(always)]
fn finish(
    dst: &mut [f32],
    sums: impl Iterator<Item = f32>,
    bias: impl Iterator<Item = f32>,
    residual: impl Iterator<Item = f32>,
    f: impl Fn(f32, f32, f32) -> f32,
) {
    for (((y, s), b), r) in dst.iter_mut().zip(sums).zip(bias).zip(residual) {
        *y = f(s, b, r);
    }
}

/// [`Store::Plain`] on one contiguous run: `dst[i] = sums[i] + bias` (the rounding of
/// [`Store::run`]), without its iterators, for the NCHW store whose runs are a tile's 12
/// pixels: for short reductions the store is a large part of the time.
#[inline(always)]
pub(super) fn store_plain(dst: &mut [f32], sums: &[f32], bias: f32) {
    for (y, &s) in dst.iter_mut().zip(sums) {
        *y = s + bias;
    }
}

/// Where one tile's complete sums go: `t` pixels from pixel `at` of the job's band,
/// `valid` channels from `k` (the `local`-th of the job's own).
#[derive(Debug, Clone, Copy)]
struct TileAt {
    at: usize,
    t: usize,
    k: usize,
    local: usize,
    valid: usize,
}

impl Job<'_> {
    /// Output rows `p0 .. p0 + rows` of image `image` (whose input is `x`), channels
    /// `k0 ..`, written to `out`.
    ///
    /// Loop order, outermost first: strips of rows (built once for all the job's
    /// channels), channel blocks, chunks of up to [`CHUNK_TILES`] tiles of pixels, passes
    /// over the block's packed filter ([`pass_len`]), the chunk's tiles: a pass's filter
    /// stays in cache while every tile of the chunk uses it, and a block's filter is read
    /// front to back once per chunk. Between passes a tile's sums wait in the thread's
    /// `sums`, and the next pass continues them ([`Operands::accumulate`]: the same bits as
    /// one pass); the last pass stores them through the epilogue.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        x: &[f32],
        image: usize,
        p0: usize,
        rows: usize,
        k0: usize,
        out: &mut Outputs<'_, '_>,
        scratch: &mut Scratch,
    ) {
        let Scratch { strip, panel, sums } = scratch;
        let (mr, nr) = (self.kernel.mr, self.kernel.nr);
        let channels = match out {
            Outputs::Planes(planes) => planes.len(),
            Outputs::Band(_) => self.k,
            Outputs::Pixels(pixels) => pixels.first().map_or(0, |run| run.len()),
        };
        let mut tile = [0.0_f32; TILE_BUFFER];
        let mut by_channel = [0.0_f32; TILE_BUFFER];
        let mut starts = [0_usize; CHUNK_TILES * MAX_NR];
        let mut chunk = [(0_usize, 0_usize); CHUNK_TILES];
        let step = self.geometry.max_rows;
        let pass_len = self.pass_len;
        for first in (0..rows).step_by(step) {
            let count = step.min(rows - first);
            let strip = self.geometry.build(x, p0 + first, count, strip);
            let pixels = count * self.q;
            let out_base = first * self.q;
            // Tiles of equal size (25 pixels with NR = 6: five of 5, not four of 6 and a
            // lone pixel that would reload the whole filter block for one output), over
            // the strip's pixels, or over each output row for row kernels (whose pixels
            // lie in one row), or over each pair of output rows where the level has
            // kernels of two rows that wide (narrow outputs: a 5 × 5 image in tiles of 10
            // pixels, not 5, so each weight loaded serves twice the pixels). Where one
            // output row's windows continue the previous row's at the same step (a 1 × 1
            // filter at stride 1 on an image read in place), the strip's pixels are one
            // row to the row kernels, and a 7 × 7 output takes tiles of 13 (of 10 with
            // four) pixels, not 7.
            let one_row = self.geometry.rows_continue();
            let pairs =
                self.kernel.row_step.is_some() && !one_row && self.q <= self.kernel.pair_width();
            let span = match (self.kernel.row_step, pairs) {
                (Some(_), _) if one_row => pixels,
                (Some(_), true) => 2 * self.q,
                (Some(_), false) => self.q,
                (None, _) => pixels,
            };
            let per_tile = span.div_ceil(span.div_ceil(nr));
            for local in (0..channels).step_by(mr) {
                let k_block = k0 + local;
                let mut tiles = (0..pixels).step_by(span).flat_map(|row| {
                    let end = (row + span).min(pixels);
                    (row..end)
                        .step_by(per_tile)
                        .map(move |j0| (j0, per_tile.min(end - j0)))
                });
                // Window starts walk the pixels in order: no division per pixel (a
                // 64-bit division costs about as much as the tile's epilogue).
                let mut cursor = self.geometry.first_pixel();
                loop {
                    let mut len = 0;
                    for (slot, (j0, t)) in chunk.iter_mut().zip(tiles.by_ref()) {
                        *slot = (j0, t);
                        for start in &mut starts[len * MAX_NR..][..t] {
                            *start = cursor.next_start();
                        }
                        len += 1;
                    }
                    if len == 0 {
                        break;
                    }
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
                        let last = kk1 == self.crs;
                        for (i, &(j0, t)) in chunk[..len].iter().enumerate() {
                            let ops = Operands {
                                strip,
                                offsets: &self.offsets[kk0..kk1],
                                reach: self.reach,
                                filter,
                                starts: &starts[i * MAX_NR..][..t],
                                accumulate: kk0 > 0,
                            };
                            // One pass sums into the tile; several into the tile's slot
                            // of `sums`, each continuing the one before.
                            let dst = if kk0 == 0 && last {
                                &mut tile[..]
                            } else {
                                &mut sums[i * TILE_BUFFER..][..TILE_BUFFER]
                            };
                            if pairs && t == span {
                                self.kernel.run_pair(&ops, dst);
                            } else {
                                self.kernel.run(&ops, dst);
                            }
                            if last {
                                let to = TileAt {
                                    at: out_base + j0,
                                    t,
                                    k: k_block,
                                    local,
                                    valid: mr.min(channels - local),
                                };
                                self.store(out, image, p0, &to, dst, &mut by_channel);
                            }
                        }
                    }
                }
            }
        }
    }

    /// The epilogue: stores one tile's sums (`tile[j·MR + m]`, pixel `j`, channel `m`) in
    /// the output's layout, through the problem's epilogue on the last pass. The only code
    /// that knows the output's layout and the epilogue: the micro-kernel returns raw sums.
    fn store(
        &self,
        out: &mut Outputs<'_, '_>,
        image: usize,
        p0: usize,
        to: &TileAt,
        tile: &[f32],
        by_channel: &mut [f32],
    ) {
        let mr = self.kernel.mr;
        let plane = self.p * self.q;
        // The tile's first pixel in its image.
        let pixel = p0 * self.q + to.at;
        let residual = self.residual;
        match out {
            // NCHW: one run of `t` pixels per channel.
            Outputs::Planes(planes) => {
                // The tile is pixel-major (`tile[j·MR + m]`); a channel's run of pixels is
                // contiguous once it is transposed, 8 × 8 at a time (for short reductions,
                // storing tile after tile is most of the time otherwise: measured 57% of
                // conv7's, C = 3 and 3 × 3).
                let channels = &mut planes[to.local..][..to.valid];
                let plain = residual.is_none() && matches!(self.epilogue, Store::Plain);
                // The plain store of whole groups of 8 channels: transposed on the way
                // out, with no buffer between the transpose and the store.
                let fused = self
                    .transpose
                    .filter(|_| plain && mr.is_multiple_of(8) && to.valid.is_multiple_of(8));
                if let Some(transpose) = fused {
                    for j0 in (0..to.t).step_by(8) {
                        let rows: [&[f32]; 8] =
                            std::array::from_fn(|i| &tile[(j0 + i) * mr..][..mr]);
                        for (m0, group) in (0..to.valid).step_by(8).zip(channels.chunks_mut(8)) {
                            let bias = self.bias[to.k + m0..][..8].try_into().expect("8 biases");
                            let n = (to.t - j0).min(8);
                            transpose.store(&rows, m0, n, bias, group, to.at + j0);
                        }
                    }
                    return;
                }
                let transposed = self.transpose_tile(tile, to.t, by_channel);
                if transposed && plain {
                    let sums = by_channel.chunks_exact(TILE_PIXELS);
                    let bias = &self.bias[to.k..][..to.valid];
                    for ((row, sums), &b) in channels.iter_mut().zip(sums).zip(bias) {
                        store_plain(&mut row[to.at..][..to.t], &sums[..to.t], b);
                    }
                    return;
                }
                for (m, row) in channels.iter_mut().enumerate() {
                    let channel = to.k + m;
                    let dst = &mut row[to.at..][..to.t];
                    let res =
                        residual.map(|r| &r[(image * self.k + channel) * plane + pixel..][..to.t]);
                    let bias = repeat(self.bias[channel]);
                    if transposed {
                        let sums = by_channel[m * TILE_PIXELS..][..to.t].iter().copied();
                        self.epilogue.run(dst, sums, bias, res);
                    } else {
                        let sums = tile[m..].iter().step_by(mr).copied();
                        self.epilogue.run(dst, sums, bias, res);
                    }
                }
            }
            // NHWC: one run of `valid` channels per pixel.
            Outputs::Band(band) => {
                let band = &mut band[to.at * self.k..][..to.t * self.k];
                let pixels = band.chunks_exact_mut(self.k).map(|px| &mut px[to.local..]);
                self.store_pixels(image, pixel, to, tile, residual, pixels);
            }
            Outputs::Pixels(pixels) => {
                let pixels = pixels[to.at..][..to.t]
                    .iter_mut()
                    .map(|px| &mut px[to.local..]);
                self.store_pixels(image, pixel, to, tile, residual, pixels);
            }
        }
    }

    /// Transposes the sums of a tile of `t` pixels (`tile[j·MR + m]`) into `by_channel`
    /// (`[m][TILE_PIXELS]`) where the CPU has AVX; `false` (nothing done) elsewhere.
    /// Pixels past `t`, up to the next multiple of 8, transpose whatever the tile buffer
    /// holds there and are never read.
    fn transpose_tile(&self, tile: &[f32], t: usize, by_channel: &mut [f32]) -> bool {
        let mr = self.kernel.mr;
        let Some(transpose) = self.transpose.filter(|_| mr.is_multiple_of(8)) else {
            return false;
        };
        for j0 in (0..t).step_by(8) {
            let rows: [&[f32]; 8] = std::array::from_fn(|i| &tile[(j0 + i) * mr..][..mr]);
            for m0 in (0..mr).step_by(8) {
                let dst = &mut by_channel[m0 * TILE_PIXELS + j0..];
                transpose.run(&rows, m0, dst, TILE_PIXELS);
            }
        }
        true
    }

    /// The NHWC store of a tile: for each of its pixels (`runs`, each starting at the
    /// tile's first channel), `valid` consecutive channels.
    fn store_pixels<'r>(
        &self,
        image: usize,
        pixel: usize,
        to: &TileAt,
        tile: &[f32],
        residual: Option<&[f32]>,
        runs: impl Iterator<Item = &'r mut [f32]>,
    ) {
        let mr = self.kernel.mr;
        let first = (image * self.p * self.q + pixel) * self.k + to.k;
        let bias = &self.bias[to.k..][..to.valid];
        let plain = residual.is_none() && matches!(self.epilogue, Store::Plain);
        if let Some(avx) = self.transpose.filter(|_| plain) {
            for (j, run) in runs.enumerate() {
                avx.store_run(&mut run[..to.valid], &tile[j * mr..], bias);
            }
            return;
        }
        for (j, run) in runs.enumerate() {
            let dst = &mut run[..to.valid];
            let sums = tile[j * mr..][..to.valid].iter().copied();
            let res = residual.map(|r| &r[first + j * self.k..][..to.valid]);
            self.epilogue.run(dst, sums, bias.iter().copied(), res);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::{reference_conv2d_with_residual, relative_error};
    use crate::layout::FilterLayout;
    use crate::problem::Padding;

    /// The whole backend on a few small problems, every level this CPU runs, against the
    /// float64 oracle: small enough for Miri (`scripts/miri-cpu.sh`), which so checks the
    /// jobs' output slices, the stores and the workspace on 2 threads.
    #[test]
    fn small_problems_match_the_oracle_on_every_level() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let base = Conv2dProblem::new([2, 3, 7, 9], [37, 3, 3, 2])
            .with_stride([1, 2])
            .with_padding(Padding {
                top: 1,
                bottom: 0,
                left: 2,
                right: 1,
            });
        let problems = [
            base,
            base.with_layout(Layout::Nhwc)
                .with_filter_layout(FilterLayout::Krsc)
                .with_epilogue(Epilogue::activation(Activation::Relu).with_residual(0.5)),
            // One band of one image: the jobs pack their own filter panels.
            Conv2dProblem::new([1, 5, 3, 3], [20, 5, 3, 3]).with_padding(Padding {
                top: 1,
                bottom: 1,
                left: 1,
                right: 1,
            }),
            // Images read in place: NCHW under a 1 × 1 filter, NHWC with 64 channels
            // (windows 64 floats apart: the row kernels of `CHANNEL_STEPS`).
            Conv2dProblem::new([1, 6, 2, 9], [11, 6, 1, 1]),
            Conv2dProblem::new([1, 64, 2, 9], [11, 64, 1, 1])
                .with_layout(Layout::Nhwc)
                .with_filter_layout(FilterLayout::Krsc),
            // An NHWC strip through channel-major rows (8 × 8 transposes and their edges).
            Conv2dProblem::new([1, 9, 3, 10], [7, 9, 3, 3])
                .with_layout(Layout::Nhwc)
                .with_padding(Padding::uniform(1)),
        ];
        for problem in problems {
            let shape = problem.shape().unwrap();
            let value = |i: usize, salt: usize| ((i * 7919 + salt) % 997) as f32 / 498.5 - 1.0;
            let input: Vec<f32> = (0..shape.input_len).map(|i| value(i, 1)).collect();
            let filter: Vec<f32> = (0..shape.filter_len).map(|i| value(i, 2)).collect();
            let bias: Vec<f32> = (0..problem.filter[0]).map(|i| value(i, 3)).collect();
            let residual: Vec<f32> = (0..shape.output_len).map(|i| value(i, 4)).collect();
            let residual = problem.epilogue.residual.then_some(&residual[..]);
            let want =
                reference_conv2d_with_residual(&problem, &input, &filter, Some(&bias), residual)
                    .unwrap();
            for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
                let mut out = vec![f32::NAN; shape.output_len];
                pool.install(|| {
                    conv2d_with_isa_and_residual(
                        isa,
                        &problem,
                        &input,
                        &filter,
                        Some(&bias),
                        residual,
                        &mut out,
                    )
                })
                .unwrap();
                let err = relative_error(&out, &want);
                assert!(err < 1e-5, "{isa}, {problem:?}: relative error {err}");
            }
        }
    }

    #[test]
    fn splits_cover_every_row_once() {
        for (n, k, p, threads) in [
            (1, 64, 56, 2),
            (1, 512, 5, 2),
            (128, 64, 3, 8),
            (1, 1, 1, 1),
        ] {
            let split = Split::new(n, k, p, p, 16, 9 * k, threads);
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
        let split = Split::new(1, 512, 5, 5, 16, 4608, 2);
        assert_eq!((split.bands, split.group), (1, 64));
        // Batch 8: a group per 1 MiB of the 9 MiB filter (rounded to whole blocks: 8 of
        // 64 channels), which the 8 images' jobs read one after another.
        let split = Split::new(8, 512, 5, 5, 32, 4608, 2);
        assert_eq!((split.bands, split.group), (1, 64));
        // 400 pixels an image: no groups for the cache.
        let split = Split::new(8, 256, 20, 20, 32, 2400, 2);
        assert_eq!((split.bands, split.group), (2, 256));
        // The quickstart layer at batch 1: bands only.
        let split = Split::new(1, 64, 56, 56, 16, 576, 2);
        assert_eq!((split.bands, split.group), (16, 64));
    }

    /// The store's shortcuts give exactly [`Epilogue::apply_f32`]'s values: the plain
    /// store's `sum + bias` for the plain epilogue, the FMA build and the library's
    /// `mul_add` for any other.
    #[test]
    fn stores_round_as_apply_f32() {
        let values: Vec<f32> = (0..97)
            .map(|i| ((i * 7919 % 997) as f32 / 997.0 - 0.5) * 9.0 + 1e-3)
            .collect();
        let (sums, bias, residual) = (&values[..33], &values[33..66], &values[64..97]);
        let check = |epilogue: Epilogue, store: Store| {
            let mut out: Vec<f32> = values[1..34].to_vec();
            let res = epilogue.residual.then_some(residual);
            store.run(&mut out, sums.iter().copied(), bias.iter().copied(), res);
            for (e, &y) in out.iter().enumerate() {
                let want = epilogue.apply_f32(sums[e], bias[e], residual[e]);
                assert_eq!(y.to_bits(), want.to_bits(), "{epilogue}, {store:?}, {e}");
            }
        };
        check(Epilogue::IDENTITY, Store::new(&Epilogue::IDENTITY));
        assert!(matches!(Store::new(&Epilogue::IDENTITY), Store::Plain));
        #[cfg(target_arch = "x86_64")]
        let fma = [false, is_x86_feature_detected!("fma")];
        #[cfg(not(target_arch = "x86_64"))]
        let fma = [false];
        for activation in Activation::ALL {
            for (alpha, residual) in [
                (1.0, None),
                (-0.7, None),
                (1.0, Some(1.0)),
                (1.3, Some(-0.45)),
            ] {
                let mut epilogue = Epilogue::activation(activation).with_alpha(alpha);
                if let Some(beta) = residual {
                    epilogue = epilogue.with_residual(beta);
                }
                if epilogue == Epilogue::IDENTITY {
                    continue;
                }
                assert!(matches!(Store::new(&epilogue), Store::Full { .. }));
                for fma in fma {
                    check(epilogue, Store::Full { epilogue, fma });
                }
            }
        }
    }
}
