//! Dispatch: which kernel of a catalogue runs a problem, and with what launch shape.
//!
//! Pure functions of the problem and the catalogue (no GPU), so that they are tested on
//! any machine.
//!
//! **Geometry.** A fixed-geometry kernel is chosen when the catalogue has one whose filter
//! size and stride equal the problem's and the problem's dilation is 1 — or does not
//! matter: along an axis where the filter has size 1 the dilation never multiplies
//! anything, so a dilated 1×1 convolution still takes the 1×1 kernel. Otherwise the
//! generic kernel runs.
//!
//! **Tile and split.** Among the specs of the chosen geometry (one per tile), and for each
//! tile every split count of the reduction from 1 to [`MAX_SPLITS`] that leaves each split at
//! least [`MIN_SPLIT_STAGES`] stages, dispatch takes the pair with the smallest estimated
//! time ([`estimate_us`]), a simple model of the kernels:
//!
//! * Every default tile keeps 512 threads resident per SM (two 256-thread blocks, four of
//!   128, ...), so an SM runs `blocks_per_sm` blocks at a time, and a launch of `B` blocks
//!   takes `waves = ceil(B / (SMs · blocks_per_sm))` rounds.
//! * A round lasts as long as one thread's multiply-adds, `thread_m·thread_n` per reduction
//!   index of its split (partial tiles included: that is the waste of a tile that does not
//!   divide the problem), at the 0.25 multiply-add per clock a thread gets on a full SM,
//!   times an overhead factor that grows for smaller thread tiles (more shared-memory reads
//!   per multiply-add) and smaller block tiles (more global loads), plus a fixed cost per
//!   round (prologue, epilogue).
//! * A split reduction also writes and reads its partial sums and launches the reduction
//!   kernel.
//! * **Window variant.** A materialised kernel first runs the input transform (X read, T
//!   written at 3 TB/s, plus a launch), unless the input is read in place; a fused kernel
//!   has no transform but gathers every window element itself, about three instructions
//!   each (`B_LOADS` per thread and stage, and the run's decomposition), which stretches its
//!   rounds by `3·block_n / (threads·thread_m·thread_n)` (2% for 128×128 tiles, 5% for
//!   64-row ones).
//!
//! So a large problem keeps one split and the largest tile that does not waste rows (K = 64
//! takes 64-row tiles), and a problem with few output tiles (batch 1, deep layers) splits its
//! reduction until the GPU has about a wave or two of blocks. Ties go to fewer splits, then
//! to the earlier spec in catalogue order, so the choice is deterministic. Tiles whose grid
//! exceeds CUDA's limits are never chosen.
//!
//! **Tensor-core kernels** ([`Math::TensorOp`]: bf16, f16 and TF32 problems;
//! [`Math::TensorOpFastF32`]: 3xTF32, float32 at FP32 accuracy) are chosen by
//! rules from the H100 measurements of `scripts/tc/NOTES.md`, not by the model above
//! ([`choose_tensor_op`]): kernels with vector loads before the element-wise ones (the
//! former need `C` a multiple of [`KernelSpec::channel_multiple`] and 16-byte aligned input
//! and filter), a fixed geometry before the generic kernel; then the channel tile that pads
//! `K` least; 128 channels (rather than 64) for large layers (`K` ≥ 128 and enough 128 × 128
//! blocks to fill the GPU two or three times), and 128-byte rows (rather than 64) for large
//! layers with long reductions and for small grids (fewer than two blocks per SM). On sm_90
//! bf16 and f16 take the warpgroup MMA: the persistent TMA kernels wherever the copy engine
//! can describe the problem (`C` a multiple of 64, ...: [`unmet_requirement`]) unless the grid
//! is so small that the multistage kernels split it ([`choose_tma`]); TF32 takes its TMA
//! kernels (`C` a multiple of 32; only in a fatbin built with the feature `tc-tf32-tma`) the
//! same way, and the warp MMA's, which split, for such small grids (it has no multistage
//! warpgroup kernels). They
//! launch a 1-D grid, split over z when it is less than one wave ([`tensor_op_splits`]: a
//! batch-1 layer of ResNet-50 has 4 to 16 blocks for 132 SMs, each walking a reduction of
//! up to 72 stages at about half a microsecond a stage; [`TENSOR_OP_SPLITS_BY_DISPATCH`]
//! switches it off for experiments). They read NHWC windows and KRSC filter
//! rows: an NCHW problem runs on an NHWC copy of its input, a KCRS filter on a KRSC copy,
//! both made in the workspace by the channels-last transpose (and counted in the
//! convolution's time), while the epilogue writes an NCHW output (and reads an NCHW
//! residual) in place.
//!
//! **Grouped problems** (`groups` > 1) run only on the grouped family
//! ([`KernelSpec::is_grouped`], `codegen/templates/conv_grouped.cuh`) and dense ones never
//! do ([`can_implement`]): a depthwise kernel when `groups = C` (the fixed 3×3 one where its
//! stride matches), else the direct grouped kernel ([`choose_grouped`]); a 1-D grid of one
//! thread per work item, no split, no workspace, input and filter read in place. Every
//! float32 precision runs on their strict FP32 kernels ([`KernelSpec::computes`]).
//!
//! **FP32 accuracy** ([`Precision::Accurate`]): strict FP32 (SIMT) and 3xTF32 kernels both
//! compute such a problem at FP32 accuracy; dispatch runs it on the strict kernels (3xTF32
//! on `mma.sync` measured faster on only 3 of 35 layers, by 3-7%: [`accurate_candidates`]),
//! on the 3xTF32 ones only where no strict kernel applies, and the tuning table, which
//! times both, picks 3xTF32 per problem where it is faster.
//! [`Precision::F32x3`] takes 3xTF32 kernels only, [`Precision::Strict`] SIMT only.
//!
//! **Alignment.** Whether the input and filter start at 16-byte aligned addresses is a
//! property of a call, not of the problem: [`Plan::new`] and [`Plan::for_device`] assume
//! they do (every allocation does), [`Plan::for_operands`] takes the alignment, and
//! `Engine::conv2d` plans with its operands' alignment. A plan whose kernel needs aligned
//! operands is refused at launch on misaligned ones ([`Error::Misaligned`]), never run.
//!
//! **Workspace.** A plan's workspace holds, each at a 256-byte boundary: the im2win buffer
//! `T` (unless the transform is the identity: a 1×1 convolution with stride 1 and no padding
//! reads its input in place), the transformed filter, and, with a split reduction, the
//! partial sums of each split ([`Plan::workspace_bytes`], the one place that computes it).
//! A tensor-core plan holds only the channels-last copies it needs (none for an NHWC problem
//! with a KRSC filter).

use im2win_codegen::{Catalogue, FixedGeometry, Geometry, Grouping, KernelSpec, Math, Precision};

use super::device::DeviceLimits;
use super::tma;
use crate::error::{Error, Result};
use crate::layout::{FilterLayout, Layout};
use crate::problem::{Conv2dProblem, ProblemShape};
use crate::workspace::WorkspaceLayout;

/// The alignment, in bytes, that kernels with vector loads of the input and filter need
/// ([`KernelSpec::needs_aligned_operands`]), and that [`Plan::for_device`] assumes.
pub const OPERAND_ALIGNMENT: usize = 16;

/// CUDA's limit on `gridDim.x`.
const MAX_GRID_X: u64 = i32::MAX as u64;
/// CUDA's limit on `gridDim.y`.
const MAX_GRID_Y: u64 = 65_535;
/// CUDA's limit on `gridDim.z`, and so on the split count.
const MAX_GRID_Z: u64 = 65_535;

/// The most splits of the reduction dispatch considers.
pub const MAX_SPLITS: u32 = 64;
/// The fewest shared-memory stages (`block_k` reduction indices each) dispatch leaves to
/// each split of a reduction.
pub const MIN_SPLIT_STAGES: u64 = 4;

/// A problem bound to one kernel specialisation, with everything needed to launch it.
///
/// Make one with [`Plan::new`] (dispatch from a catalogue), [`Plan::for_spec`] (force a
/// spec, e.g. to test or benchmark one kernel) or
/// [`Engine::plan`](crate::Engine::plan). The fields are private so that a plan is always
/// consistent with its problem.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Plan {
    problem: Conv2dProblem,
    shape: ProblemShape,
    kernel: KernelSpec,
    splits: u32,
    /// Whether the kernel reads a prepared filter ([`Plan::with_prepared_filter`]).
    prepared_filter: bool,
    layout: WorkspaceLayout,
    grid_dim: (u32, u32, u32),
    block_dim: (u32, u32, u32),
    dynamic_shared_bytes: u32,
}

/// The workspace of `spec` on `problem` with `splits` splits: a fused kernel gathers its
/// windows from the input, and a problem read in place needs no im2win buffer either; a
/// tensor-core kernel needs only the channels-last copies of what it cannot read in place (an
/// NCHW input, a KCRS filter) and its partial sums when split.
fn plan_layout(
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    spec: &KernelSpec,
    splits: u32,
) -> Result<WorkspaceLayout> {
    if spec.is_grouped() {
        // Input and filter read in place, no split: nothing.
        return Ok(WorkspaceLayout::none());
    }
    if spec.math.is_tensor_op() {
        // With one pixel per image (H·W = 1) NCHW is NHWC, and with a 1 × 1 filter KCRS is
        // KRSC: no copy.
        let [_, _, h, w] = problem.input;
        let [_, _, r, s] = problem.filter;
        return WorkspaceLayout::tensor_op(
            shape,
            spec.dtype,
            problem.layout == Layout::Nchw && h * w > 1,
            problem.filter_layout == FilterLayout::Kcrs && r * s > 1,
            splits,
        );
    }
    let materialised = !spec.variant.fused && !input_in_place(problem);
    WorkspaceLayout::new(shape, spec.dtype, materialised, splits)
}

/// Whether the im2win buffer of `problem` equals its input, so that the kernels can read the
/// input in place: an NCHW input, a 1×1 filter with stride 1 and no padding (then `P = H`,
/// `Wt = Q = W`, and `T[n][c][p][w][0] = X[n][c][p][w]`; dilation multiplies nothing). An
/// NHWC input never is: the buffer is channel-major.
pub fn input_in_place(problem: &Conv2dProblem) -> bool {
    let pad = problem.padding;
    problem.layout == Layout::Nchw
        && problem.filter[2] == 1
        && problem.filter[3] == 1
        && problem.stride == [1, 1]
        && [pad.top, pad.bottom, pad.left, pad.right] == [0; 4]
}

impl Plan {
    /// Dispatches `problem` to the best kernel of `catalogue` for its element type and
    /// precision (see the module documentation for the rule), on a GPU with `multiprocessors` SMs and an H200's limits
    /// per SM ([`DeviceLimits::H200`]). An engine plans with its own device's limits
    /// ([`Plan::for_device`]).
    ///
    /// # Errors
    /// As [`Plan::for_device`].
    pub fn new(
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        multiprocessors: usize,
    ) -> Result<Plan> {
        let limits = DeviceLimits::H200.with_multiprocessors(multiprocessors as u64);
        Plan::for_device(problem, catalogue, &limits)
    }

    /// Dispatches `problem` to the best kernel of `catalogue` for its element type and
    /// precision (see the module documentation for the rule) on a GPU with the limits
    /// `device`, for operands at 16-byte aligned addresses ([`Plan::for_operands`] with
    /// [`OPERAND_ALIGNMENT`]). Only kernels that compute the problem's precision are
    /// candidates ([`can_implement`]): a problem of a type or precision that the catalogue
    /// lacks is an error, never a kernel of another precision.
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`]; [`Error::NoKernelForType`] when the
    /// catalogue has no kernel of the problem's element type, precision and layout;
    /// [`Error::RequirementUnmet`] when its kernels of them need something the problem
    /// lacks (a channel count); [`Error::NoKernel`] when it has neither a
    /// matching fixed kernel nor a generic one; [`Error::TooLarge`] when every candidate's
    /// grid exceeds CUDA's limits; [`Error::InvalidSpec`] when the chosen spec is not valid
    /// (a broken catalogue).
    pub fn for_device(
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        device: &DeviceLimits,
    ) -> Result<Plan> {
        Plan::for_operands(problem, catalogue, device, OPERAND_ALIGNMENT)
    }

    /// [`Plan::for_device`] for a call whose input and filter both start at a multiple of
    /// `aligned_to` bytes (e.g. the largest power of two dividing both addresses): kernels
    /// that need [`OPERAND_ALIGNMENT`] ([`KernelSpec::needs_aligned_operands`]) are
    /// candidates only when `aligned_to` is a multiple of it.
    ///
    /// # Errors
    /// As [`Plan::for_device`].
    pub fn for_operands(
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        device: &DeviceLimits,
        aligned_to: usize,
    ) -> Result<Plan> {
        let options = PlanOptions {
            aligned_to,
            ..PlanOptions::default()
        };
        Plan::with_options(problem, catalogue, device, &options)
    }

    /// Dispatch with [`PlanOptions`]: the operands' alignment, a workspace limit, and whether
    /// the kernel will read a prepared filter (then its workspace has no filter part, and the
    /// plan [`Plan::reads_prepared_filter`]). Among the kernels whose workspace fits the
    /// limit, the choice is dispatch's as without one: the model's fastest (tile, splits)
    /// pair for the SIMT kernels, the rules' tile and then the most splits up to the
    /// model's choice that fit for the tensor-core kernels.
    ///
    /// # Errors
    /// As [`Plan::for_device`], and [`Error::WorkspaceLimit`] when every kernel that can run
    /// the problem needs more workspace than the limit.
    pub fn with_options(
        problem: &Conv2dProblem,
        catalogue: &Catalogue,
        device: &DeviceLimits,
        options: &PlanOptions,
    ) -> Result<Plan> {
        let aligned_to = options.aligned_to;
        let shape = problem.shape()?;
        // Only complete kernels: the ablation's (a technique switched off) run when asked for.
        // `can_implement` keeps the kernels of the problem's element type and precision.
        let runnable: Vec<&KernelSpec> = catalogue
            .kernels
            .iter()
            .filter(|spec| {
                spec.is_complete()
                    && can_implement(spec, problem)
                    && operands_fit(spec, read_alignment(spec, problem, aligned_to))
                    && fits_device(spec, device)
            })
            .collect();
        if runnable.is_empty() {
            return Err(no_kernel(problem, catalogue, aligned_to, device));
        }
        // A catalogue's fields are public (and JSON is not validated): the estimate below
        // divides by tile sizes, so an invalid candidate is reported, not estimated.
        for spec in &runnable {
            spec.validate()?;
        }
        // `computes` gives one math per element type and precision, but for FP32 accuracy,
        // whose two maths (strict FP32, 3xTF32) are chosen between first: then all the
        // candidates share one.
        let runnable = if problem.precision == Precision::Accurate {
            accurate_candidates(runnable)
        } else {
            runnable
        };
        // The workspace of `spec` with `splits` splits, as this call would run it.
        let workspace = |spec: &KernelSpec, splits: u32| -> Result<usize> {
            let layout = plan_layout(problem, &shape, spec, splits)?;
            Ok(if options.prepared_filter {
                layout.without_filter()
            } else {
                layout
            }
            .bytes())
        };
        let fits = |spec: &KernelSpec, splits: u32| {
            workspace(spec, splits).is_ok_and(|bytes| options.fits(bytes))
        };
        let over_limit = |runnable: &[&KernelSpec]| Error::WorkspaceLimit {
            limit: options.workspace_limit.unwrap_or(usize::MAX),
            least: runnable
                .iter()
                .filter_map(|spec| workspace(spec, 1).ok())
                .min()
                .unwrap_or(0),
        };
        let finish = |plan: Plan| {
            if options.prepared_filter {
                plan.with_prepared_filter()
            } else {
                Ok(plan)
            }
        };
        // `can_implement` keeps only grouped kernels for a grouped problem, only dense ones
        // otherwise. They need no workspace.
        if problem.groups > 1 {
            return finish(Plan::for_spec(problem, *choose_grouped(&runnable))?);
        }
        if runnable.iter().all(|spec| spec.math.is_tensor_op()) {
            let fitting: Vec<&KernelSpec> = runnable
                .iter()
                .filter(|spec| fits(spec, 1))
                .copied()
                .collect();
            if fitting.is_empty() {
                return Err(over_limit(&runnable));
            }
            let spec = choose_tensor_op(&fitting, problem, &shape, device)?;
            let mut splits = if TENSOR_OP_SPLITS_BY_DISPATCH {
                tensor_op_splits(spec, &shape, device)
            } else {
                1
            };
            while splits > 1 && !fits(spec, splits) {
                splits -= 1;
            }
            return finish(Plan::for_spec(problem, *spec)?.with_split(splits)?);
        }
        // The fixed geometry's kernels, unless none fits the workspace limit unsplit.
        let fixed: Vec<&KernelSpec> = runnable
            .iter()
            .filter(|spec| matches!(spec.geometry, Geometry::Fixed(_)) && fits(spec, 1))
            .copied()
            .collect();
        let candidates = if fixed.is_empty() { runnable } else { fixed };
        let first = candidates[0];

        let grid = |spec: &KernelSpec| grid_blocks(spec, &shape);
        let fitting: Vec<(&KernelSpec, (u64, u64))> = candidates
            .iter()
            .filter_map(|spec| grid(spec).ok().map(|g| (*spec, g)))
            .collect();
        if fitting.is_empty() {
            // Report the first candidate's limit: every candidate exceeds one.
            grid(first)?;
        }
        // Every (tile, splits) pair within the workspace limit, estimated; `min_by` keeps the
        // first of equal estimates, so fewer splits and then catalogue order break ties.
        let mut best: Option<(&KernelSpec, u32, f64)> = None;
        for (spec, (x, y)) in &fitting {
            for splits in 1..=max_splits(spec, &shape) {
                if !fits(spec, splits) {
                    continue;
                }
                let time = estimate_us(spec, problem, &shape, (*x, *y), splits, device);
                if best.is_none_or(|(_, _, t)| time < t) {
                    best = Some((spec, splits, time));
                }
            }
        }
        match best {
            Some((spec, splits, _)) => finish(Plan::for_spec(problem, *spec)?.with_split(splits)?),
            None if options.workspace_limit.is_some() => Err(over_limit(&candidates)),
            None => Err(no_kernel(problem, catalogue, aligned_to, device)),
        }
    }

    /// A plan that runs `problem` with exactly `spec`, bypassing the choice among kernels.
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`]; [`Error::InvalidSpec`] when `spec`
    /// is not a valid specialisation ([`KernelSpec::validate`]); [`Error::PrecisionMismatch`]
    /// when `spec` computes another element type or precision than the problem asks for;
    /// [`Error::KernelRequirement`] when the problem lacks what `spec` needs
    /// ([`unmet_requirement`]: a channel count); [`Error::SpecMismatch`]
    /// when `spec` cannot compute `problem` otherwise (see [`can_implement`]);
    /// [`Error::TooLarge`] when the grid exceeds CUDA's limits.
    pub fn for_spec(problem: &Conv2dProblem, spec: KernelSpec) -> Result<Plan> {
        let shape = problem.shape()?;
        // A catalogue's fields are public (and JSON is not validated), so a spec may be
        // anything; `TileConfig::threads` divides by the thread tile.
        spec.validate()?;
        if !spec.computes(problem.dtype, problem.precision) {
            return Err(Error::PrecisionMismatch {
                kernel: spec.name(),
                computes: spec.numeric_name(),
                problem: problem.numeric_name(),
            });
        }
        if !can_implement(&spec, problem) {
            if let Some(requirement) = unmet_requirement(&spec, problem) {
                return Err(Error::KernelRequirement {
                    kernel: spec.name(),
                    requirement,
                });
            }
            return Err(Error::SpecMismatch {
                kernel: spec.name(),
                filter: [problem.filter[2], problem.filter[3]],
                stride: problem.stride,
                dilation: problem.dilation,
            });
        }
        let (x, y) = grid_blocks(&spec, &shape)?;
        Ok(Plan {
            problem: *problem,
            shape,
            kernel: spec,
            splits: 1,
            prepared_filter: false,
            layout: plan_layout(problem, &shape, &spec, 1)?,
            // `grid_blocks` checked both against CUDA's limits, which fit in u32.
            grid_dim: (x as u32, y as u32, 1),
            block_dim: (spec.threads(), 1, 1),
            // A valid spec's shared memory is at most MAX_DYNAMIC_SHARED_BYTES.
            dynamic_shared_bytes: u32::try_from(spec.dynamic_shared_bytes()).unwrap_or(u32::MAX),
        })
    }

    /// The same plan with the reduction split `splits` ways (1: not split).
    ///
    /// Split z of the `grid_dim().2 = splits` blocks of each output tile reduces a contiguous
    /// share of the `ceil(C·R·S / block_k)` stages (equal shares but for the last) and writes
    /// its partial sums into the workspace; a reduction kernel then adds them, in order, and
    /// applies the epilogue. More splits than stages leave some shares empty: correct, but
    /// wasted ([`Plan::new`] never does that).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when `splits` is 0 or exceeds CUDA's
    /// 65535 blocks along z, or when the partial sums would exceed the element limit;
    /// [`Error::KernelRequirement`] for `splits` > 1 with a kernel that does not split
    /// ([`KernelSpec::splits_reduction`]: the tensor-core warp tiles of 128 sums a thread,
    /// the 3xTF32 kernels).
    pub fn with_split(mut self, splits: u32) -> Result<Plan> {
        if splits == 0 || u64::from(splits) > MAX_GRID_Z {
            return Err(Error::TooLarge {
                what: "splits of the reduction (at least 1)",
                value: u128::from(splits),
                limit: u128::from(MAX_GRID_Z),
            });
        }
        if splits > 1 && !self.kernel.splits_reduction() {
            return Err(Error::KernelRequirement {
                kernel: self.kernel.name(),
                requirement: "an unsplit reduction (gridDim.z = 1): KernelSpec::splits_reduction is false for this kernel",
            });
        }
        self.layout = plan_layout(&self.problem, &self.shape, &self.kernel, splits)?;
        if self.prepared_filter {
            self.layout = self.layout.without_filter();
        }
        self.splits = splits;
        self.grid_dim.2 = splits;
        Ok(self)
    }

    /// The same plan reading a prepared filter (`Engine::prepare_filter`): no filter
    /// transform, and no workspace for one.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the prepared filter would exceed the element limit.
    pub fn with_prepared_filter(mut self) -> Result<Plan> {
        self.prepared_filter_len()?;
        self.prepared_filter = true;
        self.layout = self.layout.without_filter();
        Ok(self)
    }

    /// Whether the kernel reads a prepared filter instead of the problem's.
    pub fn reads_prepared_filter(&self) -> bool {
        self.prepared_filter
    }

    /// The form of the filter the kernel reads.
    pub fn filter_format(&self) -> FilterFormat {
        if self.kernel.is_grouped() {
            FilterFormat::Given
        } else if self.kernel.math.is_tensor_op() {
            FilterFormat::Krsc
        } else if self.kernel.variant.fused {
            FilterFormat::ChannelsFastest
        } else {
            FilterFormat::Window
        }
    }

    /// Elements of the filter in the form the kernel reads ([`Plan::filter_format`]): the
    /// filter's for [`FilterFormat::Krsc`], `C·R·S` rows of `K` rounded up to
    /// [`WorkspaceLayout::filter_column_multiple`] for the transformed ones.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the transformed filter would exceed the element limit.
    pub fn prepared_filter_len(&self) -> Result<usize> {
        match self.filter_format() {
            FilterFormat::Krsc | FilterFormat::Given => Ok(self.shape.filter_len),
            FilterFormat::Window | FilterFormat::ChannelsFastest => {
                let bytes = WorkspaceLayout::filter_bytes(&self.shape, self.kernel.dtype)?;
                Ok(bytes / self.kernel.dtype.size_bytes())
            }
        }
    }

    /// The problem this plan computes.
    pub fn problem(&self) -> &Conv2dProblem {
        &self.problem
    }

    /// The problem's sizes.
    pub fn shape(&self) -> &ProblemShape {
        &self.shape
    }

    /// The convolution kernel that runs; its name is [`KernelSpec::name`].
    pub fn kernel(&self) -> &KernelSpec {
        &self.kernel
    }

    /// Device memory the convolution needs besides its operands: the im2win buffer (unless
    /// [`Plan::input_in_place`]), the transformed filter and, with a split reduction, the
    /// partial sums, each at a 256-byte boundary.
    pub fn workspace_bytes(&self) -> usize {
        self.layout.bytes()
    }

    /// Where the parts of the workspace lie.
    pub fn workspace_layout(&self) -> &WorkspaceLayout {
        &self.layout
    }

    /// Whether the kernel reads the input itself instead of an im2win buffer: a fused kernel
    /// ([`im2win_codegen::Variant::fused`]) or a problem whose im2win buffer is its input (a
    /// 1×1 filter with unit stride and no padding, whose windows are the input's own rows),
    /// or a tensor-core kernel on an NHWC problem; then there is no input transform to run
    /// (neither the im2win transform nor the channels-last transpose,
    /// [`Plan::transposes_input`]).
    pub fn input_in_place(&self) -> bool {
        self.layout.im2win_offset().is_none() && !self.transposes_input()
    }

    /// Byte offset of the transformed filter in the workspace (0 when the kernel reads the
    /// filter in place: [`Plan::transforms_filter`] is false).
    pub fn filter_offset_bytes(&self) -> usize {
        self.layout.filter_offset()
    }

    /// Byte offset of the split reduction's partial sums in the workspace, when split.
    pub fn partial_offset_bytes(&self) -> Option<usize> {
        self.layout.partial_offset()
    }

    /// Splits of the reduction: `grid_dim().2`; 1 when not split.
    pub fn splits(&self) -> u32 {
        self.splits
    }

    /// Grid of the convolution kernel: `(ceil(N·P·Q / block_n), ceil(K / block_m), splits)`
    /// for a SIMT kernel; `(ceil(N·P·Q / block_n) · ceil(K / block_m), 1, splits)` for a
    /// tensor-core kernel (the tiles along x, the channel tile fastest); for a grouped kernel
    /// one thread per work item, `(ceil(N·P·ceil(Q / thread_n)·ceil(K / thread_m) / threads), 1, 1)`.
    pub fn grid_dim(&self) -> (u32, u32, u32) {
        self.grid_dim
    }

    /// The grid the convolution kernel is launched with on `device`: [`Plan::grid_dim`], but
    /// for a kernel with persistent blocks ([`KernelSpec::is_persistent`], the
    /// warp-specialised ones, whose block `b` takes tiles `b`, `b + gridDim.x`, ...) at most
    /// as many blocks along x as fit on the device at once (its multiprocessors times the
    /// blocks of the kernel that one of them holds).
    pub fn launch_grid(&self, device: &DeviceLimits) -> (u32, u32, u32) {
        let (x, y, z) = self.grid_dim;
        if !self.kernel.is_persistent() {
            return (x, y, z);
        }
        let resident = device
            .multiprocessors
            .saturating_mul(u64::from(blocks_per_sm(&self.kernel, device)))
            .max(1);
        (u32::try_from(u64::from(x).min(resident)).unwrap_or(x), y, z)
    }

    /// Block of the convolution kernel: `(threads of the kernel, 1, 1)`
    /// ([`KernelSpec::threads`]).
    pub fn block_dim(&self) -> (u32, u32, u32) {
        self.block_dim
    }

    /// Bytes of dynamic shared memory the convolution kernel's launch passes
    /// ([`KernelSpec::dynamic_shared_bytes`]): 0 for SIMT kernels, the stages of a
    /// tensor-core kernel (48 to 96 KiB in the default catalogue).
    pub fn dynamic_shared_bytes(&self) -> u32 {
        self.dynamic_shared_bytes
    }

    /// Whether the filter transform runs before the convolution: every SIMT kernel, and a
    /// tensor-core kernel given a KCRS filter (which it reads as a KRSC copy); a tensor-core
    /// kernel reads a KRSC filter in place, and a plan with a prepared filter
    /// ([`Plan::with_prepared_filter`]) reads that.
    pub fn transforms_filter(&self) -> bool {
        self.layout.transforms_filter()
    }

    /// Whether the channels-last transpose copies the (NCHW) input to NHWC before the
    /// convolution: a tensor-core kernel on an NCHW problem.
    pub fn transposes_input(&self) -> bool {
        self.layout.channels_last_input_offset().is_some()
    }
}

/// How [`Plan::with_options`] chooses: for operands aligned to `aligned_to` bytes, within a
/// workspace limit, for a prepared filter or the problem's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PlanOptions {
    /// The largest power of two both the input's and the filter's addresses are multiples
    /// of ([`OPERAND_ALIGNMENT`] or more: every allocation).
    pub aligned_to: usize,
    /// The most workspace the plan may need, in bytes ([`Plan::workspace_bytes`]); `None`:
    /// no limit.
    pub workspace_limit: Option<usize>,
    /// Whether the kernel reads a prepared filter (`Engine::prepare_filter`): no filter
    /// transform, and no workspace for one.
    pub prepared_filter: bool,
}

impl Default for PlanOptions {
    /// Aligned operands, no limit, the problem's own filter.
    fn default() -> Self {
        PlanOptions {
            aligned_to: OPERAND_ALIGNMENT,
            workspace_limit: None,
            prepared_filter: false,
        }
    }
}

impl PlanOptions {
    /// Whether a workspace of `bytes` is within the limit.
    pub fn fits(&self, bytes: usize) -> bool {
        self.workspace_limit.is_none_or(|limit| bytes <= limit)
    }
}

/// The form in which a kernel reads its filter: what a prepared filter holds
/// (`Engine::prepare_filter`), and what the filter transforms make in the workspace otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterFormat {
    /// The KRSC filter itself (the tensor-core kernels; a KCRS filter as a KRSC copy).
    Krsc,
    /// The materialised SIMT kernels' transformed filter: row `c·S·R + s·R + r` (the im2win
    /// window's order) of `K` columns rounded up, scaled by the epilogue's alpha.
    Window,
    /// The fused SIMT kernels' transformed filter: row `(r·S + s)·C + c` (channels fastest),
    /// scaled by alpha.
    ChannelsFastest,
    /// The filter as the problem gives it, in its layout (the grouped kernels read it in
    /// place).
    Given,
}

/// Whether the kernel `spec` computes `problem` correctly, the one question dispatch, tuning
/// and the macro's specialisations ask: the element type must be the problem's and the
/// kernel's math one that the problem's precision admits
/// ([`KernelSpec::computes`]: strict float32 never runs on tensor cores, TF32 never on CUDA
/// cores); the layouts must match for a SIMT kernel (it takes either filter layout, the
/// filter transform reads it), while a
/// tensor-core kernel takes NHWC and NCHW problems and either filter layout (it reads NHWC
/// and KRSC copies, made in its workspace, of what is not); the geometry must:
/// always for the generic kernel; for a fixed one, when filter size and stride match and
/// the dilation is 1 along every axis where the filter is longer than 1; and the kernel's
/// own requirements must hold ([`unmet_requirement`]: with vector loads the tensor-core
/// kernels need `C` a multiple of their channel vector). Every
/// epilogue runs in every kernel. The operands' alignment, a property of a call, is not part
/// of it ([`Plan::for_operands`]).
pub fn can_implement(spec: &KernelSpec, problem: &Conv2dProblem) -> bool {
    let numeric = spec.computes(problem.dtype, problem.precision);
    let layout = layout_fits(spec, problem) && grouping_fits(spec, problem);
    let geometry = matches!(spec.geometry, Geometry::Generic) || matches_fixed(spec, problem);
    numeric && layout && geometry && unmet_requirement(spec, problem).is_none()
}

/// Whether `spec`'s family computes `problem`'s groups: a dense kernel one group, the direct
/// grouped kernel any number above one, a depthwise kernel groups = C (one input channel per
/// group; `K` is then a multiple of `C`, which [`Conv2dProblem::shape`] checks).
fn grouping_fits(spec: &KernelSpec, problem: &Conv2dProblem) -> bool {
    match spec.grouping {
        Grouping::Dense => problem.groups == 1,
        Grouping::Grouped => problem.groups > 1,
        Grouping::Depthwise => problem.groups > 1 && problem.groups == problem.input[1],
    }
}

/// The grouped kernel among `runnable` (grouped kernels that can run the problem) that
/// dispatch picks: a depthwise kernel before the direct grouped one (depthwise problems
/// only), a fixed geometry before the generic kernel; then catalogue order. No model: each
/// family has one tile, and none splits.
fn choose_grouped<'a>(runnable: &[&'a KernelSpec]) -> &'a KernelSpec {
    let rank = |spec: &KernelSpec| {
        (
            spec.grouping != Grouping::Depthwise,
            spec.geometry == Geometry::Generic,
        )
    };
    let mut best = runnable[0];
    for &spec in runnable {
        if rank(spec) < rank(best) {
            best = spec;
        }
    }
    best
}

/// Whether `spec` takes tensors in `problem`'s layout: a SIMT kernel its own layout (either
/// algorithm: the input transform builds the window buffer from both); a tensor-core kernel
/// (NHWC) either, since it runs an NCHW problem on an NHWC copy of the input and writes the
/// NCHW output itself.
fn layout_fits(spec: &KernelSpec, problem: &Conv2dProblem) -> bool {
    if spec.is_grouped() {
        // Either filter layout, read in place; the input and output in the kernel's layout.
        return spec.layout == problem.layout;
    }
    if spec.math.is_tensor_op() {
        spec.layout == Layout::Nhwc
    } else {
        spec.layout == problem.layout
    }
}

/// What `spec` needs of `problem` beyond its element type, precision, layout and geometry
/// that the problem lacks, if anything: with vector loads the tensor-core kernels copy 16
/// bytes of consecutive channels, so `C` must be a multiple of
/// [`KernelSpec::channel_multiple`] (8 for bf16 and f16, 4 for TF32). The text completes
/// "it needs ...".
pub fn unmet_requirement(spec: &KernelSpec, problem: &Conv2dProblem) -> Option<&'static str> {
    let multiple = spec.channel_multiple();
    if spec.variant.tma {
        if !problem.input[1].is_multiple_of(multiple) {
            return Some(
                "C (input channels) a multiple of its stage's channels (block_k): each stage is one filter tap's channels, one im2col box of the copy engine",
            );
        }
        return tma_unmet(problem);
    }
    if !problem.input[1].is_multiple_of(multiple) {
        return Some(match multiple {
            8 => {
                "C (input channels) a multiple of 8: its copies move 16 bytes of bf16 or f16 channels (the `_novec` kernels take any C)"
            }
            4 => {
                "C (input channels) a multiple of 4: its copies move 16 bytes of float channels (the `_novec` kernels take any C)"
            }
            _ => "C (input channels) a multiple of its channel vector",
        });
    }
    None
}

/// What the tensor memory accelerator's im2col copies need of `problem` (tma.rs): strides of
/// at most 8 (its traversal stride), filter taps at most 65535 elements from a window's
/// origin (16-bit offsets), and the window origins' bounding box within 128 elements of the
/// input's edges (the corners of a 4-D map).
fn tma_unmet(problem: &Conv2dProblem) -> Option<&'static str> {
    let Ok(shape) = problem.shape() else {
        return Some("a valid problem");
    };
    let [_, _, h, w] = problem.input;
    let [_, _, r, s] = problem.filter;
    let [_, _, p, q] = shape.output;
    if problem
        .stride
        .iter()
        .any(|&st| st > tma::MAX_TRAVERSAL_STRIDE)
    {
        return Some("strides of at most 8 (the copy engine's traversal stride)");
    }
    if (r - 1) * problem.dilation[0] > tma::MAX_TAP_OFFSET
        || (s - 1) * problem.dilation[1] > tma::MAX_TAP_OFFSET
    {
        return Some(
            "filter taps at most 65535 elements from a window's start (the copy engine's 16-bit offsets)",
        );
    }
    let axes = [
        tma::im2col_corners(
            q as i64,
            problem.stride[1] as i64,
            w as i64,
            problem.padding.left as i64,
        ),
        tma::im2col_corners(
            p as i64,
            problem.stride[0] as i64,
            h as i64,
            problem.padding.top as i64,
        ),
    ];
    let inside = axes.iter().all(|&(lower, upper)| {
        tma::CORNER_RANGE.contains(&lower) && tma::CORNER_RANGE.contains(&upper)
    });
    if !inside {
        return Some(
            "padding of at most 128 and windows that end within 128 elements of the input's far edges (the copy engine's im2col corners)",
        );
    }
    None
}

/// Whether `spec` may run on operands whose input and filter start at a multiple of
/// `aligned_to` bytes.
pub fn operands_fit(spec: &KernelSpec, aligned_to: usize) -> bool {
    !spec.needs_aligned_operands() || aligned_to.is_multiple_of(OPERAND_ALIGNMENT)
}

/// The alignment of what `spec` reads of `problem` when the operands' addresses are
/// `aligned_to`-aligned: a tensor-core kernel on an NCHW problem with a KCRS filter (more
/// than one pixel, a filter larger than 1 × 1) reads only the channels-last copies in its
/// workspace (every part of which is
/// [`WorkspaceLayout::ALIGNMENT`]-aligned), whatever the operands' addresses; any other
/// kernel reads at least one operand in place.
pub fn read_alignment(spec: &KernelSpec, problem: &Conv2dProblem, aligned_to: usize) -> usize {
    let [_, _, h, w] = problem.input;
    let [_, _, r, s] = problem.filter;
    let copies_both = spec.math.is_tensor_op()
        && problem.layout == Layout::Nchw
        && h * w > 1
        && problem.filter_layout == FilterLayout::Kcrs
        && r * s > 1;
    if copies_both {
        WorkspaceLayout::ALIGNMENT
    } else {
        aligned_to
    }
}

/// The largest power of two, up to 256, that divides both device addresses: what
/// [`Plan::for_operands`] takes for a call's input and filter.
pub fn address_alignment(input: u64, filter: u64) -> usize {
    let both = input | filter | 256;
    1 << both.trailing_zeros()
}

/// Whether one block of `spec` fits the shared memory a block of `device` may have, and a
/// warpgroup-MMA kernel (sm_90a SASS; a trap elsewhere) has a compute-capability-9.0 device.
pub(super) fn fits_device(spec: &KernelSpec, device: &DeviceLimits) -> bool {
    spec.dynamic_shared_bytes() <= u64::from(device.shared_bytes_per_block_optin)
        && device_unmet(spec, device).is_none()
}

/// What `spec` needs of the GPU that `device` lacks, if anything: the warpgroup-MMA kernels
/// (`_wgmma`, the warp-specialised and TMA ones among them) are sm_90a SASS, and every other
/// image of them is a stub that traps, which would leave the context unusable. Dispatch
/// never plans them elsewhere ([`fits_device`]); the engine refuses a forced plan with
/// [`Error::KernelRequirement`] before launching it.
pub(crate) fn device_unmet(spec: &KernelSpec, device: &DeviceLimits) -> Option<&'static str> {
    (spec.variant.warpgroup && !device.runs_warpgroup_mma())
        .then_some("a GPU of compute capability 9.0 (its warpgroup MMA is sm_90a code)")
}

/// Whether `spec` is a fixed-geometry kernel for exactly this problem's geometry.
fn matches_fixed(spec: &KernelSpec, problem: &Conv2dProblem) -> bool {
    let Geometry::Fixed(g) = spec.geometry else {
        return false;
    };
    let FixedGeometry {
        filter_h,
        filter_w,
        stride_h,
        stride_w,
    } = g;
    let [_, _, r, s] = problem.filter;
    let [sh, sw] = problem.stride;
    let [dh, dw] = problem.dilation;
    let eq = |a: u32, b: usize| a as usize == b;
    eq(filter_h, r)
        && eq(filter_w, s)
        && eq(stride_h, sh)
        && eq(stride_w, sw)
        && (dh == 1 || r == 1)
        && (dw == 1 || s == 1)
}

/// The grid `(x, y)` of `spec` on a problem, checked against CUDA's grid limits: pixel
/// tiles by channel tiles, or for a tensor-core kernel both in one dimension (`y` = 1).
fn grid_blocks(spec: &KernelSpec, shape: &ProblemShape) -> Result<(u64, u64)> {
    if spec.is_grouped() {
        return grouped_grid(spec, shape).map(|x| (x, 1));
    }
    let x = (shape.pixels as u64).div_ceil(u64::from(spec.tile.block_n.max(1)));
    let y = (shape.output[1] as u64).div_ceil(u64::from(spec.tile.block_m.max(1)));
    if spec.math.is_tensor_op() {
        let blocks = u128::from(x) * u128::from(y);
        if blocks > u128::from(MAX_GRID_X) {
            return Err(Error::TooLarge {
                what: "grid blocks (output pixels / block_n times output channels / block_m)",
                value: blocks,
                limit: u128::from(MAX_GRID_X),
            });
        }
        return Ok((blocks as u64, 1));
    }
    if x > MAX_GRID_X {
        return Err(Error::TooLarge {
            what: "grid blocks along N·P·Q (output pixels / block_n)",
            value: u128::from(x),
            limit: u128::from(MAX_GRID_X),
        });
    }
    if y > MAX_GRID_Y {
        return Err(Error::TooLarge {
            what: "grid blocks along K (output channels / block_m)",
            value: u128::from(y),
            limit: u128::from(MAX_GRID_Y),
        });
    }
    Ok((x, y))
}

/// The 1-D grid of a grouped kernel (`codegen/templates/conv_grouped.cuh`): one thread per
/// work item, `N·P·ceil(Q / thread_n)·ceil(K / thread_m)` items (each `thread_n` outputs
/// along a row and `thread_m` channels), in blocks of the kernel's threads. At most 2³² − 1
/// items (the kernels decompose them in 32 bits): 1.7·10¹⁰ outputs or more, refused.
fn grouped_grid(spec: &KernelSpec, shape: &ProblemShape) -> Result<u64> {
    let [n, k, p, q] = shape.output.map(|d| d as u128);
    let t = spec.tile;
    let items = n
        * p
        * q.div_ceil(u128::from(t.thread_n.max(1)))
        * k.div_ceil(u128::from(t.thread_m.max(1)));
    // The kernels decompose an item with 32-bit divisions (conv_grouped.cuh says why).
    if items > u128::from(u32::MAX) {
        return Err(Error::TooLarge {
            what: "grid work items of a grouped kernel (outputs / outputs per thread)",
            value: items,
            limit: u128::from(u32::MAX),
        });
    }
    let blocks = items.div_ceil(u128::from(spec.threads().max(1))).max(1);
    Ok(blocks as u64)
}

/// The most splits worth considering for `spec`: [`MAX_SPLITS`], fewer when the reduction
/// has fewer than `MIN_SPLIT_STAGES` stages per split (at least 1); 1 for a kernel that does
/// not split ([`KernelSpec::splits_reduction`]).
pub(super) fn max_splits(spec: &KernelSpec, shape: &ProblemShape) -> u32 {
    if !spec.splits_reduction() {
        return 1;
    }
    let stages = (shape.reduction as u64).div_ceil(u64::from(spec.tile.block_k.max(1)));
    (stages / MIN_SPLIT_STAGES).clamp(1, u64::from(MAX_SPLITS)) as u32
}

/// Blocks of `spec` that run on one SM of `device` at once: a SIMT kernel's launch bounds'
/// promise, unless the SM's shared memory (less what it reserves per block), threads,
/// registers (at the launch bounds' per-thread cap) or block slots allow fewer. A
/// tensor-core kernel's launch bounds promise one block; what fits is bounded by the same
/// resources (registers counted at the 255 a thread may use: 2 blocks of 128 threads, where
/// the 128 × 64 tile with 64-byte rows fits 3 by its actual use).
pub fn blocks_per_sm(spec: &KernelSpec, device: &DeviceLimits) -> u32 {
    let threads = spec.threads();
    let per_block_shared = spec.shared_bytes() + u64::from(device.shared_bytes_reserved_per_block);
    let by_shared = u64::from(device.shared_bytes_per_sm) / per_block_shared.max(1);
    let by_threads = device.threads_per_sm / threads.max(1);
    let by_registers =
        device.registers_per_sm / spec.max_registers().saturating_mul(threads).max(1);
    let promise = match spec.math {
        Math::Simt => spec.min_blocks_per_sm(),
        Math::TensorOp | Math::TensorOpFastF32 => u32::MAX,
    };
    promise
        .min(u32::try_from(by_shared).unwrap_or(u32::MAX))
        .min(by_threads)
        .min(by_registers)
        .clamp(1, device.blocks_per_sm.max(1))
}

/// For a [`Precision::Accurate`] problem, the candidates of the math that dispatch runs it
/// with: the strict SIMT ones, or the 3xTF32 ones ([`Math::TensorOpFastF32`]) when the
/// catalogue has no strict kernel for it. Both are FP32-accurate: since the 3xTF32 kernels sum
/// outside the tensor cores (blocked summation, `mma_tensorop.cuh`), their error measured at
/// or below strict FP32's on the H100 (2026-12-06, `tests/gpu_f32x3.rs`: 300 random problems,
/// median 9.1e-8 against 1.2e-7; the first kernels, which accumulated in the tensor cores,
/// measured 5-60× strict's). But on `mma.sync` (three TF32 MMAs per product, the operand
/// splits and the sums on the CUDA cores) they are faster than the strict kernels on only 3
/// of the 35 paper and ResNet-50 layers measured on the H100 in one run (paper conv6, 10, 11
/// at batch 128, by 3-7%), up to 1.2× slower on the long reductions and 2-3× on the short
/// ones and the C = 3 stems: no rule of shape picks them reliably. So dispatch runs FP32
/// accuracy on the strict kernels, and the tuning table (`im2win tune`), which times every
/// kernel that a problem's precision admits, both maths for [`Precision::Accurate`], picks
/// 3xTF32 per problem where it measured faster.
fn accurate_candidates(runnable: Vec<&KernelSpec>) -> Vec<&KernelSpec> {
    let (fast, strict): (Vec<&KernelSpec>, Vec<&KernelSpec>) = runnable
        .into_iter()
        .partition(|spec| spec.math.is_tensor_op());
    if strict.is_empty() { fast } else { strict }
}

/// The tensor-core kernel among `candidates` (complete kernels that can run the problem of
/// `shape`, all [`Math::TensorOp`] or all [`Math::TensorOpFastF32`]) that dispatch picks, by the rules of the module
/// documentation, measured on the H100 (`scripts/tc/NOTES.md`):
///
/// 1. vector loads before element-wise gathering (3-10× faster where both apply), then the
///    warpgroup MMA (sm_90: bf16, f16, and TF32 by TMA) before the warp MMA, then a fixed geometry before
///    the generic kernel (among the warpgroup kernels, for the TMA kernels and the
///    multistage ones apart);
/// 2. the channel tile (`block_m`) that pads `K` least (96 for `K` = 96, 64 for `K` = 64);
/// 3. among equal paddings, 128 channels when the layer is large — `K` ≥ 128 and at least
///    three 128 × 128 blocks per SM with a reduction `C·R·S` of at least 512 (bf16, f16), or
///    at least two such blocks per SM whatever the reduction (TF32, whose longer loop per
///    MMA gains more from the wider tile) — else the narrowest (more blocks, up to three per
///    SM);
/// 4. 128-byte rows for large layers with a reduction of at least 576 (a 3 × 3 window of 64
///    channels) and for small grids (fewer than two blocks per SM with the chosen tile) whose
///    reduction spans at least four such rows, else 64-byte rows (less waste at the
///    reduction's end, one more stage in flight);
/// 5. catalogue order.
///
/// Warpgroup kernels skip rules 3-4: [`choose_tma`] picks among the TMA kernels and weighs
/// them against the multistage kernel of [`choose_warpgroup`].
///
/// Against the fastest kernels that the standalone harness measured (H100,
/// `scripts/tc/NOTES.md`), this picks the fastest one's channel tile on 21 of ResNet-50's 23
/// distinct layers at batch 32 in bf16 and f16 and 20 in TF32 (channel tile and rows: 19, 21,
/// 16), and on 11, 10 and 10 of the paper's 12 layers at batch 128 (11, 9, 9); the tuning
/// table (`im2win tune`) corrects the rest.
///
/// Kernels whose grid exceeds CUDA's limit are left out.
///
/// # Errors
/// [`Error::TooLarge`] when every candidate's grid exceeds CUDA's limit.
pub(crate) fn choose_tensor_op<'a>(
    candidates: &[&'a KernelSpec],
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    device: &DeviceLimits,
) -> Result<&'a KernelSpec> {
    let none = || Error::NoKernel {
        filter: [problem.filter[2], problem.filter[3]],
        stride: problem.stride,
        dilation: problem.dilation,
    };
    // The TMA kernels are a family of their own within the warpgroup kernels: each family
    // keeps its fixed geometry over its generic kernel (the multistage warpgroup kernels
    // have no 3 x 3 one, the TMA kernels do), then the two are weighed (rule 3 below).
    let class = |spec: &KernelSpec| {
        (
            spec.variant.vector_loads,
            spec.variant.warpgroup,
            spec.variant.tma,
            matches!(spec.geometry, Geometry::Fixed(_)),
        )
    };
    let Some(best_class) = candidates.iter().map(|spec| class(spec)).max() else {
        return Err(none());
    };
    let family = |spec: &KernelSpec| (spec.variant.vector_loads, spec.variant.warpgroup);
    let mut pool: Vec<&KernelSpec> = candidates
        .iter()
        .filter(|spec| {
            family(spec) == (best_class.0, best_class.1)
                && candidates
                    .iter()
                    .filter(|other| family(other) == family(spec))
                    .filter(|other| other.variant.tma == spec.variant.tma)
                    .map(|other| class(other))
                    .max()
                    == Some(class(spec))
        })
        .copied()
        .collect();
    let first = pool[0];
    pool.retain(|spec| grid_blocks(spec, shape).is_ok());
    if pool.is_empty() {
        grid_blocks(first, shape)?;
    }
    let k = shape.output[1] as u64;
    let padded = |spec: &KernelSpec| {
        k.div_ceil(u64::from(spec.tile.block_m.max(1))) * u64::from(spec.tile.block_m)
    };
    if let Some(least) = pool.iter().map(|spec| padded(spec)).min() {
        pool.retain(|spec| padded(spec) == least);
    }
    if best_class.1 {
        let (tma, rest): (Vec<&KernelSpec>, Vec<&KernelSpec>) =
            pool.iter().partition(|spec| spec.variant.tma);
        let multistage = choose_warpgroup(&rest, shape, device);
        let tma = choose_tma(&tma, problem, shape, device);
        return match (multistage, tma) {
            (Some(multistage), Some(tma))
                if tensor_op_splits(multistage, shape, device) > 1
                    && 2 * tiles(tma, shape) < device.multiprocessors =>
            {
                Ok(multistage)
            }
            (None, Some(tma)) if 2 * tiles(tma, shape) < device.multiprocessors => {
                // No multistage warpgroup kernel to split a small grid (TF32 has TMA
                // kernels only): the warp MMA's kernels, which split it, if there are any.
                let warp: Vec<&KernelSpec> = candidates
                    .iter()
                    .filter(|spec| !spec.variant.warpgroup)
                    .copied()
                    .collect();
                if warp.is_empty() {
                    Ok(tma)
                } else {
                    choose_tensor_op(&warp, problem, shape, device)
                }
            }
            (_, Some(tma)) => Ok(tma),
            (multistage, None) => multistage.ok_or_else(none),
        };
    }
    let sms = device.multiprocessors.max(1);
    let npq = shape.pixels as u64;
    let crs = shape.reduction as u64;
    let blocks =
        |channels: u64, pixels: u64| npq.div_ceil(pixels.max(1)) * k.div_ceil(channels.max(1));
    let tf32 = pool
        .first()
        .is_some_and(|spec| spec.dtype == im2win_codegen::DType::F32);
    let large = k >= 128
        && if tf32 {
            blocks(128, 128) >= 2 * sms
        } else {
            crs >= 512 && blocks(128, 128) >= 3 * sms
        };
    let channels = pool.iter().map(|spec| spec.tile.block_m);
    let channels = if large {
        channels.max()
    } else {
        channels.min()
    };
    pool.retain(|spec| Some(spec.tile.block_m) == channels);
    let row_bytes =
        |spec: &KernelSpec| u64::from(spec.tile.block_k) * spec.dtype.size_bytes() as u64;
    let small_grid = pool
        .first()
        .is_some_and(|spec| blocks(spec.tile.block_m.into(), spec.tile.block_n.into()) < 2 * sms);
    let element = pool
        .first()
        .map_or(2, |spec| spec.dtype.size_bytes() as u64);
    let deep = (large && crs >= 576) || (small_grid && crs * element >= 4 * 128);
    let rows = pool.iter().map(|spec| row_bytes(spec));
    let rows = if deep { rows.max() } else { rows.min() };
    pool.into_iter()
        .find(|spec| Some(row_bytes(spec)) == rows)
        .ok_or_else(none)
}

/// Whether dispatch splits the reduction of tensor-core kernels ([`tensor_op_splits`]) on its
/// own (`KernelSpec::splits_reduction`: partial sums through the epilogue, then the bf16 /
/// f16 split reductions). On since 2026-12-06: `tests/gpu_conv.rs` forces 2 to stages + 2
/// splits on every splitting kernel against the oracle (and memcheck), and on an H200 it
/// took ResNet-50's batch-1 convolutions from 0.768 to 0.586 ms in BF16 NHWC and from 1.274
/// to 0.708 ms in TF32 NHWC (the 7×7 and 14×14 layers 2-5× faster; no layer slower).
pub const TENSOR_OP_SPLITS_BY_DISPATCH: bool = true;

/// How many ways the tensor-core kernel `spec` splits the reduction of a problem of `shape`:
/// 1 when its grid fills every SM's block slots at least once; else the split count (up to
/// [`max_splits`]) with the least estimated time, `waves · (stages per split · STAGE_US +
/// BLOCK_US)` plus, when split, the reduction's launch and its partial sums' traffic. A block
/// of a small grid is latency-bound, about half a microsecond a stage whatever its tile and
/// type (H100, BF16, ResNet-50 at batch 1: the 3 × 3 layer of 512 channels at 7 × 7, 4 blocks
/// of 72 stages, took 40.9 µs), so splitting trades stages for blocks nearly one for one
/// until the slots are full. Ties go to fewer splits.
fn tensor_op_splits(spec: &KernelSpec, shape: &ProblemShape, device: &DeviceLimits) -> u32 {
    const STAGE_US: f64 = 0.5;
    const BLOCK_US: f64 = 3.0;
    const REDUCE_US: f64 = 3.0;
    const BYTES_PER_US: f64 = 3.0e6;
    let Ok((blocks, _)) = grid_blocks(spec, shape) else {
        return 1;
    };
    let slots = device
        .multiprocessors
        .max(1)
        .saturating_mul(u64::from(blocks_per_sm(spec, device)));
    if blocks >= slots {
        return 1;
    }
    let stages = (shape.reduction as u64).div_ceil(u64::from(spec.tile.block_k.max(1)));
    let time = |splits: u32| {
        let s = u64::from(splits);
        let waves = (blocks * s).div_ceil(slots) as f64;
        let mut time = waves * (stages.div_ceil(s) as f64 * STAGE_US + BLOCK_US);
        if splits > 1 {
            let bytes = (2.0 * f64::from(splits) + 1.0) * shape.output_len as f64 * 4.0;
            time += REDUCE_US + bytes / BYTES_PER_US;
        }
        time
    };
    let mut best = (1, time(1));
    for splits in 2..=max_splits(spec, shape) {
        let t = time(splits);
        if t < best.1 {
            best = (splits, t);
        }
    }
    best.0
}

/// Output tiles of `spec` for a problem of `shape` (pixel tiles × channel tiles).
fn tiles(spec: &KernelSpec, shape: &ProblemShape) -> u64 {
    (shape.pixels as u64).div_ceil(u64::from(spec.tile.block_n.max(1)))
        * (shape.output[1] as u64).div_ceil(u64::from(spec.tile.block_m.max(1)))
}

/// The TMA kernel among `pool` (`Variant::tma`, warp-specialised, persistent, never split;
/// same class, least padding of `K`), or `None` for an empty pool. Dispatch takes it over
/// the multistage warpgroup kernels unless those would split a small grid and its own
/// tiles would not keep half the SMs busy: measured on the H100 (BF16, ResNet-50 batch 32,
/// 2026-12-07), the TMA kernels beat the multistage ones on every layer they can take, the
/// 7 × 7 layers' 104 tiles of 128 × 64 (0.023 ms) even the split multistage kernel (0.041).
///
/// Among the three TMA tiles, from the same measurements (every tile forced on the paper's
/// layers at batch 128 and ResNet-50's at batch 32; this rule picks the fastest, or one
/// within 2%, on all 32):
///
/// * the ping-pong 128 × 128 tile (two teams, each a whole tile, one's epilogue under the
///   other's main loop) for large grids, at least two tiles per SM, with long reductions:
///   `C·R·S` ≥ 1152, or ≥ 576 with at least 16 tiles per SM (the paper's conv6, 8, 10, 11;
///   4-9% faster than one team);
/// * the ping-pong 128 × 64 tile when the reduction is at most 128 long (two stages a tile:
///   small tiles overlap the epilogue best), or when the SMs finish sooner with it by the
///   wave count below;
/// * else the 128 × 128 tile of one team (two warpgroups on each tile).
///
/// The wave count: with `U` the time one team of two warpgroups takes for a 128 × 128
/// tile, an SM with `m` such tiles takes `m·U`; with `n` tiles of 128 × 64 it runs two at a
/// time, each in about `U` (half the work, one warpgroup), and an odd last one alone in about
/// `0.6·U` (one warpgroup alone issues faster). So 52 tiles of 128 × 128 (`U`) lose to 104
/// of 128 × 64 (`0.6·U`), 196 (`2·U`) to 392 (`1.6·U`); 98 and 196, 392 and 784 tie, and
/// ties keep the wide tile (measured 1-30% faster there).
///
/// A tile that is not in the pool is skipped for the next in that order. Only kernels with
/// the widest rows the problem allows are considered: 128-byte rows where `C` is a multiple
/// of 64, else the 64-byte ones (`C` a multiple of 32), and those only from 64 channels
/// (`None` below).
fn choose_tma<'a>(
    pool: &[&'a KernelSpec],
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    device: &DeviceLimits,
) -> Option<&'a KernelSpec> {
    // Tenths of `U` (see above).
    const PAIR: u64 = 10;
    const ALONE: u64 = 6;
    // The widest rows the problem's channels allow (128 bytes: 64 channels a stage); 64-byte
    // rows (one tap's 32 channels a stage) only from 64 channels: at C = 32 (the paper's
    // conv4) their stages were too short to beat the multistage kernel (harness, item 9).
    let rows = |spec: &&KernelSpec| spec.tile.block_k as usize * spec.dtype.size_bytes();
    let widest = pool.iter().map(rows).max()?;
    if widest < 128 && problem.filter[1] < 64 {
        return None;
    }
    let pool: Vec<&KernelSpec> = pool.iter().filter(|s| rows(s) == widest).copied().collect();
    let pool = pool.as_slice();
    let sms = device.multiprocessors.max(1);
    let crs = shape.reduction as u64;
    let wide = |spec: &&&KernelSpec| spec.tile.block_m >= 128;
    let narrow_pingpong = pool
        .iter()
        .find(|spec| !wide(spec) && spec.variant.pingpong);
    let wide_pingpong = pool.iter().find(|spec| wide(spec) && spec.variant.pingpong);
    let wide_team = pool
        .iter()
        .find(|spec| wide(spec) && !spec.variant.pingpong);
    let wide_tiles = wide_team.or(wide_pingpong).map(|spec| tiles(spec, shape));
    let per_sm = |tiles: u64| tiles.div_ceil(sms);
    let wide_time = wide_tiles.map(|m| per_sm(m) * PAIR);
    let narrow_time = narrow_pingpong.map(|spec| {
        let n = per_sm(tiles(spec, shape));
        n / 2 * PAIR + n % 2 * ALONE
    });
    let wide_tiles = wide_tiles.unwrap_or(0);
    let narrow_sooner = matches!((narrow_time, wide_time), (Some(n), Some(w)) if n < w);
    let long = crs >= 1152 || (crs >= 576 && wide_tiles >= 16 * sms);
    let order = if wide_tiles >= 2 * sms && long {
        [wide_pingpong, wide_team, narrow_pingpong]
    } else if crs <= 128 || narrow_sooner {
        [narrow_pingpong, wide_team, wide_pingpong]
    } else {
        [wide_team, wide_pingpong, narrow_pingpong]
    };
    order.into_iter().flatten().next().or(pool.first()).copied()
}

/// The warpgroup-MMA kernel among `pool` (same class, least padding of `K`): the largest
/// tile (pixels × channels) that still fills every SM once (blocks ≥ SMs × blocks per SM);
/// if none does, the one that keeps the most of them busy, the larger on a tie; then
/// catalogue order. Measured in `scripts/tc` (H100, BF16): the 128 × 128 and 128 × 256 tiles
/// win the paper's batch-128 layers, the 64-pixel and 64-channel ones the small grids of
/// ResNet-50's deep layers.
fn choose_warpgroup<'a>(
    pool: &[&'a KernelSpec],
    shape: &ProblemShape,
    device: &DeviceLimits,
) -> Option<&'a KernelSpec> {
    let sms = device.multiprocessors.max(1) as f64;
    let npq = shape.pixels as u64;
    let k = shape.output[1] as u64;
    let area = |spec: &KernelSpec| u64::from(spec.tile.block_m) * u64::from(spec.tile.block_n);
    let fill = |spec: &KernelSpec| {
        let blocks = npq.div_ceil(u64::from(spec.tile.block_n.max(1)))
            * k.div_ceil(u64::from(spec.tile.block_m.max(1)));
        blocks as f64 / (sms * f64::from(blocks_per_sm(spec, device)))
    };
    let full = pool.iter().filter(|spec| fill(spec) >= 1.0);
    // `max_by_key` keeps the last of equal keys: reversed, the first in catalogue order.
    if let Some(spec) = full.rev().max_by_key(|spec| area(spec)) {
        return Some(spec);
    }
    pool.iter()
        .rev()
        .max_by(|a, b| {
            fill(a)
                .total_cmp(&fill(b))
                .then_with(|| area(a).cmp(&area(b)))
        })
        .copied()
}

/// The dispatch model's time of `spec` with grid `(x, y)` and `splits` splits on a GPU with
/// the limits `device`, in microseconds of an H200-like GPU (see the module documentation).
/// Only the ranking matters.
pub fn estimate_us(
    spec: &KernelSpec,
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    (x, y): (u64, u64),
    splits: u32,
    device: &DeviceLimits,
) -> f64 {
    // One thread's multiply-add on a full SM: 4 clocks at 1.75 GHz.
    const FMA_US: f64 = 4.0 / 1750.0;
    // A round's prologue and epilogue (first loads, stores), and the reduction's launch.
    const ROUND_US: f64 = 1.0;
    const REDUCE_LAUNCH_US: f64 = 2.0;
    const TRANSFORM_LAUNCH_US: f64 = 2.0;
    // Device memory bytes per microsecond (3 TB/s).
    const BYTES_PER_US: f64 = 3.0e6;
    let t = spec.tile;
    let f = |v: u32| f64::from(v.max(1));
    let blocks = x * y * u64::from(splits);
    // Saturating: any `usize` may come in, and a product that wrapped to 0 would divide by 0.
    let slots = device
        .multiprocessors
        .max(1)
        .saturating_mul(u64::from(blocks_per_sm(spec, device)));
    let waves = blocks.div_ceil(slots) as f64;
    let stages = (shape.reduction as u64).div_ceil(u64::from(t.block_k.max(1)));
    let per_split = stages.div_ceil(u64::from(splits)) as f64 * f(t.block_k);
    let overhead = 1.0
        + 0.5 * (1.0 / f(t.thread_m) + 1.0 / f(t.thread_n))
        + 4.0 * (1.0 / f(t.block_m) + 1.0 / f(t.block_n));
    // The fused kernel's window gathers: about 3 instructions per element, block_n·block_k
    // elements per stage over the threads, against thread_m·thread_n·block_k multiply-adds.
    let gather = if spec.variant.fused {
        1.0 + 3.0 * f(t.block_n) / (f(spec.threads()) * f(t.thread_m) * f(t.thread_n))
    } else {
        1.0
    };
    let round = f(t.thread_m) * f(t.thread_n) * per_split * overhead * gather * FMA_US + ROUND_US;
    let mut time = waves * round;
    if !spec.variant.fused && !input_in_place(problem) {
        let element = spec.dtype.size_bytes() as f64;
        let bytes = (shape.input_len as f64 + shape.im2win_len as f64) * element;
        time += TRANSFORM_LAUNCH_US + bytes / BYTES_PER_US;
    }
    if splits > 1 {
        // Each split's partial sums written and read once, the output written once.
        let bytes = (2.0 * f64::from(splits) + 1.0) * shape.output_len as f64 * 4.0;
        time += REDUCE_LAUNCH_US + bytes / BYTES_PER_US;
    }
    time
}

/// Why `catalogue` has no kernel for `problem` (with operands aligned to `aligned_to` bytes,
/// on `device`): it has kernels, but none at all of the problem's element type and
/// precision in its layout ([`Error::NoKernelForType`]); or those of its geometry all need
/// something the problem lacks ([`Error::RequirementUnmet`]); or none of its geometry (or
/// nothing at all: [`Error::NoKernel`]).
fn no_kernel(
    problem: &Conv2dProblem,
    catalogue: &Catalogue,
    aligned_to: usize,
    device: &DeviceLimits,
) -> Error {
    let of_type = |spec: &&KernelSpec| {
        spec.computes(problem.dtype, problem.precision)
            && layout_fits(spec, problem)
            && grouping_fits(spec, problem)
    };
    if !catalogue.kernels.is_empty() && !catalogue.kernels.iter().any(|s| of_type(&s)) {
        return Error::NoKernelForType {
            numeric: problem.numeric_name(),
            dtype: problem.dtype,
            precision: problem.precision,
            layout: problem.layout,
        };
    }
    // Kernels of the type whose geometry fits: say what the first of them lacks.
    let geometry_fits =
        |spec: &&KernelSpec| spec.geometry == Geometry::Generic || matches_fixed(spec, problem);
    let unmet = catalogue
        .kernels
        .iter()
        .filter(of_type)
        .filter(geometry_fits)
        .find_map(|spec| {
            if let Some(requirement) = unmet_requirement(spec, problem) {
                Some(requirement)
            } else if !operands_fit(spec, read_alignment(spec, problem, aligned_to)) {
                Some("input and filter at 16-byte aligned addresses (their vector copies)")
            } else if !fits_device(spec, device) {
                Some("more shared memory per block than this GPU allows")
            } else {
                None
            }
        });
    if let Some(requirement) = unmet {
        return Error::RequirementUnmet {
            numeric: problem.numeric_name(),
            requirement,
        };
    }
    Error::NoKernel {
        filter: [problem.filter[2], problem.filter[3]],
        stride: problem.stride,
        dilation: problem.dilation,
    }
}

#[cfg(test)]
mod tests {
    use im2win_codegen::catalogue::{
        TENSOR_OP_128X64_R64, TENSOR_OP_128X96_R64, TENSOR_OP_128X128_R128, TensorOpTile,
    };
    use im2win_codegen::{DEFAULT_GEOMETRIES, DType, Precision, TileConfig, Variant};

    use super::*;
    use crate::problem::Padding;

    const H200_SMS: usize = 132;

    fn square(c: usize, hw: usize, k: usize, rs: usize) -> Conv2dProblem {
        Conv2dProblem::new([2, c, hw, hw], [k, c, rs, rs])
    }

    fn plan(problem: &Conv2dProblem) -> Plan {
        Plan::new(problem, &Catalogue::default_catalogue(), H200_SMS).unwrap()
    }

    fn generic() -> KernelSpec {
        KernelSpec::generic(DType::F32, TileConfig::PAPER)
    }

    /// Grouped problems go to the grouped family (a depthwise kernel when groups = C, the
    /// fixed 3×3 one where it applies), with no workspace and a 1-D grid covering every work
    /// item; dense problems never do; TF32 grouped problems run the FP32 kernels.
    #[test]
    fn grouped_dispatch() {
        let catalogue = Catalogue::default_catalogue();
        let plan = |p: &Conv2dProblem| Plan::new(p, &catalogue, H200_SMS).unwrap();
        let dw = Conv2dProblem::new([32, 144, 56, 56], [144, 1, 3, 3])
            .with_groups(144)
            .with_padding(Padding::uniform(1));
        for layout in Layout::ALL {
            for (stride, fixed) in [(1, true), (2, true), (3, false)] {
                let problem = dw.with_layout(layout).with_stride([stride, stride]);
                let p = plan(&problem);
                let spec = p.kernel();
                assert_eq!(spec.grouping, Grouping::Depthwise, "{spec}");
                assert_eq!(spec.layout, layout);
                assert_eq!(matches!(spec.geometry, Geometry::Fixed(_)), fixed, "{spec}");
                assert_eq!(p.workspace_bytes(), 0);
                assert!(!p.transforms_filter() && p.input_in_place());
                assert_eq!(p.block_dim(), (256, 1, 1));
                let [n, k, pp, q] = p.shape().output;
                let t = spec.tile;
                let items =
                    n * pp * q.div_ceil(t.thread_n as usize) * k.div_ceil(t.thread_m as usize);
                assert_eq!(p.grid_dim(), (items.div_ceil(256) as u32, 1, 1), "{spec}");
            }
        }
        // Channel multiplier 2: still depthwise; 4 groups of 36: the direct grouped kernel.
        let multiplier = Conv2dProblem::new([2, 8, 9, 9], [16, 1, 3, 3]).with_groups(8);
        assert_eq!(plan(&multiplier).kernel().grouping, Grouping::Depthwise);
        let grouped = Conv2dProblem::new([2, 144, 9, 9], [72, 36, 3, 3]).with_groups(4);
        assert_eq!(plan(&grouped).kernel().grouping, Grouping::Grouped);
        // TF32 and FP32-accuracy requests: the float32 kernels, computed in FP32.
        for precision in [Precision::Tf32, Precision::F32x3, Precision::Accurate] {
            let p = plan(&grouped.with_precision(precision));
            assert!(p.kernel().is_grouped() && p.kernel().dtype == DType::F32);
        }
        for dtype in [DType::Bf16, DType::F16] {
            let p = plan(&dw.with_dtype(dtype));
            assert_eq!(
                (p.kernel().grouping, p.kernel().dtype),
                (Grouping::Depthwise, dtype)
            );
        }
        // Dense problems never take a grouped kernel, and no grouped kernel takes them.
        let dense = square(16, 9, 16, 3);
        assert!(!plan(&dense).kernel().is_grouped());
        for spec in catalogue.kernels.iter().filter(|s| s.is_grouped()) {
            assert!(!can_implement(spec, &dense), "{spec}");
            assert!(Plan::for_spec(&dense, *spec).is_err());
        }
        // A depthwise kernel does not take a grouped problem that is not depthwise.
        let dw_spec = KernelSpec::grouped(
            DType::F32,
            Grouping::Depthwise,
            Geometry::Generic,
            Layout::Nchw,
        )
        .unwrap();
        assert!(!can_implement(&dw_spec, &grouped));
        // A catalogue without grouped kernels says so.
        let dense_only = Catalogue::default_f32();
        assert!(matches!(
            Plan::new(&grouped, &dense_only, H200_SMS),
            Err(Error::NoKernelForType { .. })
        ));
    }

    /// Residency follows the device's limits: on an H200 every default tile keeps its
    /// launch bounds' promise, and a GPU with less shared memory, fewer threads, registers
    /// or block slots per SM fits fewer blocks.
    #[test]
    fn blocks_per_sm_follow_the_device() {
        let h200 = DeviceLimits::H200;
        for spec in &Catalogue::default_catalogue().kernels {
            // A SIMT kernel's launch bounds' promise; two 128-thread tensor-core blocks at
            // 255 registers a thread, three of the 128 x 64 tile at 170, one of the
            // 256-thread warpgroup tile (144 KiB); one of every 3xTF32 kernel (8 warps at up
            // to 255 registers).
            // The grouped kernels' launch bounds promise two blocks.
            let expected = match spec.math {
                _ if spec.is_grouped() => 2,
                im2win_codegen::Math::Simt => spec.tile.min_blocks_per_sm(),
                im2win_codegen::Math::TensorOp if spec.threads() == 256 => 1,
                // Persistent: one block of 384 threads and up to 227 KiB per SM.
                im2win_codegen::Math::TensorOp if spec.variant.warp_specialized => 1,
                im2win_codegen::Math::TensorOp => 2.max(spec.min_blocks_per_sm()),
                im2win_codegen::Math::TensorOpFastF32 => 1,
            };
            assert_eq!(blocks_per_sm(spec, &h200), expected, "{spec}");
        }
        let spec = KernelSpec::generic(DType::F32, TileConfig::PAPER);
        assert_eq!(spec.tile.threads(), 256);
        let small = |limits: DeviceLimits| blocks_per_sm(&spec, &limits);
        // 128×128×8 needs 16 KiB of shared memory (+1 KiB reserved) per block.
        let shared = DeviceLimits {
            shared_bytes_per_sm: 17 * 1024,
            ..h200
        };
        assert_eq!(small(shared), 1);
        let threads = DeviceLimits {
            threads_per_sm: 256,
            ..h200
        };
        assert_eq!(small(threads), 1);
        let registers = DeviceLimits {
            registers_per_sm: 32_768,
            ..h200
        };
        assert_eq!(small(registers), 1);
        let slots = DeviceLimits {
            blocks_per_sm: 1,
            ..h200
        };
        assert_eq!(small(slots), 1);
        // Plan::new is Plan::for_device with the H200's limits.
        let problem = square(64, 56, 64, 3);
        assert_eq!(
            plan(&problem),
            Plan::for_device(&problem, &Catalogue::default_catalogue(), &h200).unwrap()
        );
    }

    #[test]
    fn every_default_geometry_gets_its_fixed_kernel() {
        for g in DEFAULT_GEOMETRIES {
            let (r, st) = (g.filter_h as usize, g.stride_h as usize);
            let problem = square(5, 23 + r, 7, r)
                .with_stride([st, st])
                .with_padding(Padding::uniform(r / 2));
            let plan = plan(&problem);
            assert_eq!(plan.kernel().geometry, Geometry::Fixed(g), "{g:?}");
            assert!(
                plan.kernel()
                    .name()
                    .starts_with(&format!("im2win_f32_r{r}s{r}_s{st}x{st}_b")),
                "{}",
                plan.kernel()
            );
        }
    }

    #[test]
    fn dilation_and_unusual_geometry_take_the_generic_kernel() {
        let cases = [
            square(4, 20, 8, 3).with_dilation([2, 2]),
            square(4, 20, 8, 3).with_dilation([1, 2]),
            square(4, 20, 8, 3).with_stride([3, 3]),
            square(4, 20, 8, 3).with_stride([1, 2]),
            square(4, 20, 8, 11).with_stride([1, 1]),
            square(4, 20, 8, 2),
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 3, 5]),
            Conv2dProblem::new([1, 4, 20, 20], [8, 4, 1, 3]),
        ];
        for problem in cases {
            assert_eq!(
                plan(&problem).kernel().geometry,
                Geometry::Generic,
                "{problem:?}"
            );
        }
    }

    #[test]
    fn dilation_along_a_unit_axis_keeps_the_fixed_kernel() {
        let problem = square(4, 20, 8, 1).with_dilation([3, 2]);
        let fixed = KernelSpec::fixed(DType::F32, FixedGeometry::square(1, 1), TileConfig::PAPER);
        assert_eq!(*plan(&problem).kernel(), fixed);
        assert!(can_implement(&fixed, &problem));
    }

    #[test]
    fn launch_shape_and_workspace() {
        // N·P·Q = 2·20·20 = 800 → 7 blocks of 128 pixels; K = 300 → 3 blocks of 128.
        let problem = square(5, 22, 300, 3);
        let spec = KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), TileConfig::PAPER);
        let plan = Plan::for_spec(&problem, spec).unwrap();
        assert_eq!(plan.grid_dim(), (7, 3, 1));
        assert_eq!(plan.block_dim(), (256, 1, 1));
        assert_eq!(plan.workspace_bytes(), problem.workspace_bytes().unwrap());
        // T = 2·5·20·22·3 = 13200 floats = 52800 B, so F' (300·45 floats) starts at the
        // next 256-byte boundary, 52992.
        assert_eq!(plan.workspace_bytes(), 52_992 + 300 * 45 * 4);
        assert_eq!(plan.shape().output, [2, 300, 20, 20]);
        assert_eq!(*plan.problem(), problem);
        // The fused kernel reads X itself: the workspace is the transformed filter.
        let fused = Plan::for_spec(&problem, spec.with_variant(Variant::FUSED)).unwrap();
        assert!(fused.input_in_place());
        assert_eq!(
            (fused.filter_offset_bytes(), fused.workspace_bytes()),
            (0, 300 * 45 * 4)
        );
        assert_eq!(fused.grid_dim(), plan.grid_dim());
    }

    #[test]
    fn tma_kernels_take_only_what_the_copy_engine_can_describe() {
        let tma: Vec<KernelSpec> = Catalogue::default_catalogue()
            .kernels
            .into_iter()
            .filter(|spec| spec.variant.tma && spec.geometry == Geometry::Generic)
            .collect();
        assert_eq!(
            tma.len(),
            8,
            "bf16 and f16, one team, two ping-pong tiles, one with 64-byte rows"
        );
        let nhwc = |c: usize, h: usize, rs: usize| {
            Conv2dProblem::new([2, c, h, 30], [128, c, rs, rs])
                .with_layout(Layout::Nhwc)
                .with_filter_layout(FilterLayout::Krsc)
                .with_dtype(DType::Bf16)
        };
        let base = nhwc(64, 30, 3).with_padding(Padding::uniform(1));
        let cases = [
            (base, None),
            // A stage is one tap's 64 channels (128-byte rows of bf16).
            (nhwc(96, 30, 3), Some("C (input channels)")),
            (base.with_stride([9, 1]), Some("strides of at most 8")),
            (
                nhwc(64, 30, 3).with_padding(Padding::uniform(129)),
                Some("padding of at most 128"),
            ),
            // A dilated filter: the last window starts 140 rows above the far edge (the
            // corner 128 at most).
            (
                nhwc(64, 150, 3).with_dilation([70, 1]),
                Some("padding of at most 128"),
            ),
        ];
        for (problem, unmet) in cases {
            let spec = tma[0];
            let got = unmet_requirement(&spec, &problem);
            match unmet {
                None => assert_eq!(got, None, "{spec}: {problem:?}"),
                Some(start) => assert!(
                    got.is_some_and(|why| why.starts_with(start)),
                    "{spec}: {got:?} for {problem:?}"
                ),
            }
        }
    }

    #[test]
    fn tma_tiles_follow_the_grid_and_the_reduction() {
        // bf16 NHWC on an H200 (132 SMs, as the H100).
        let layer = |n: usize, c: usize, hw: usize, k: usize, rs: usize| {
            Conv2dProblem::new([n, c, hw, hw], [k, c, rs, rs])
                .with_layout(Layout::Nhwc)
                .with_filter_layout(FilterLayout::Krsc)
                .with_dtype(DType::Bf16)
        };
        let catalogue = Catalogue::default_catalogue();
        let h200 = DeviceLimits::H200;
        let chosen = |problem: &Conv2dProblem| {
            *Plan::for_device(problem, &catalogue, &h200)
                .unwrap()
                .kernel()
        };
        let tma = |pixels: u32, channels: u32, pingpong: bool| {
            move |spec: KernelSpec| {
                spec.variant.tma
                    && spec.tile.block_n == pixels
                    && spec.tile.block_m == channels
                    && spec.variant.pingpong == pingpong
            }
        };
        // The fastest tile measured on the H100 (`choose_tma`), padding 1 for the 3 x 3
        // layers as in ResNet-50.
        type Expected<'a> = &'a dyn Fn(KernelSpec) -> bool;
        let cases: [(&str, Conv2dProblem, Expected); 8] = [
            // 12100 tiles of 128 x 128, CRS 576: ping-pong.
            ("conv8", layer(128, 64, 112, 128, 3), &tma(128, 128, true)),
            // 100 tiles: one team of two warpgroups per tile.
            ("conv12", layer(128, 512, 7, 512, 3), &tma(128, 128, false)),
            // K = 64: the 128 x 64 tile pads nothing.
            ("conv9", layer(128, 64, 56, 64, 3), &tma(128, 64, true)),
            // CRS = 128: two stages a tile.
            (
                "1x1 128->512",
                layer(32, 128, 28, 512, 1),
                &tma(128, 64, true),
            ),
            // 196 tiles of 128 x 128 (two waves) or 392 of 128 x 64 (1.6).
            (
                "1x1 1024->512",
                layer(32, 1024, 14, 512, 1),
                &tma(128, 64, true),
            ),
            // 98 tiles (one wave either way): one team.
            (
                "3x3 256 14x14",
                layer(32, 256, 14, 256, 3).with_padding(Padding::uniform(1)),
                &tma(128, 128, false),
            ),
            // 52 tiles of 128 x 128, 104 of 128 x 64, over a split multistage kernel.
            (
                "3x3 512 7x7",
                layer(32, 512, 7, 512, 3).with_padding(Padding::uniform(1)),
                &tma(128, 64, true),
            ),
            // Batch 1, 8 tiles: the multistage kernel with a split reduction.
            (
                "3x3 512 n1",
                layer(1, 512, 9, 512, 3),
                &|spec: KernelSpec| spec.variant.warpgroup && !spec.variant.warp_specialized,
            ),
        ];
        for (name, problem, expected) in cases {
            let spec = chosen(&problem);
            assert!(expected(spec), "{name}: {spec}");
        }
        // C = 96 (not whole 64-channel stages): the ping-pong 128 x 128 tile with 64-byte
        // rows (32 channels of one tap a stage); C = 32 (conv4): no TMA kernel.
        let conv5 = chosen(&layer(128, 96, 24, 256, 5));
        assert!(tma(128, 128, true)(conv5), "{conv5}");
        assert_eq!(conv5.tile.block_k, 32, "{conv5}");
        assert!(
            !chosen(&layer(128, 32, 224, 64, 7).with_stride([2, 2]))
                .variant
                .tma
        );
        // C = 64: 128-byte rows.
        assert_eq!(chosen(&layer(128, 64, 56, 128, 3)).tile.block_k, 64);
    }

    #[test]
    fn persistent_kernels_launch_at_most_one_resident_wave() {
        // bf16 NHWC, N·P·Q = 2·62·62 = 7688 pixels: 61 tiles of 128 (K = 128: one channel
        // tile); 32·62·62 pixels: 961 tiles.
        let small = Conv2dProblem::new([2, 64, 64, 64], [128, 64, 3, 3])
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc)
            .with_dtype(DType::Bf16);
        let large = Conv2dProblem::new([32, 64, 64, 64], [128, 64, 3, 3])
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc)
            .with_dtype(DType::Bf16);
        let h200 = DeviceLimits::H200;
        let warp_specialized = Catalogue::warp_specialized().kernels.into_iter().chain(
            Catalogue::default_catalogue()
                .kernels
                .into_iter()
                .filter(|spec| spec.variant.warp_specialized),
        );
        for spec in warp_specialized {
            if !can_implement(&spec, &small) {
                continue;
            }
            // The 128 x 64 tiles: two channel tiles.
            let channel_tiles = 128 / u64::from(spec.tile.block_m);
            assert_eq!(blocks_per_sm(&spec, &h200), 1, "{spec}");
            let plan = Plan::for_spec(&small, spec).unwrap();
            let tiles = 61 * channel_tiles as u32;
            assert_eq!(plan.grid_dim(), (tiles, 1, 1), "{spec}");
            assert_eq!(plan.launch_grid(&h200), (tiles, 1, 1), "{spec}");
            assert_eq!(plan.block_dim(), (384, 1, 1), "{spec}");
            let plan = Plan::for_spec(&large, spec).unwrap();
            assert_eq!(
                plan.grid_dim(),
                (961 * channel_tiles as u32, 1, 1),
                "{spec}"
            );
            assert_eq!(plan.launch_grid(&h200), (132, 1, 1), "{spec}");
        }
        // Every other kernel launches its whole grid.
        let spec = KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), TileConfig::PAPER);
        let plan = Plan::for_spec(&square(5, 22, 300, 3), spec).unwrap();
        assert_eq!(plan.launch_grid(&h200), plan.grid_dim());
    }

    #[test]
    fn ablation_kernels_are_never_dispatched() {
        // Only incomplete generic kernels: nothing to dispatch to, but each can be forced.
        let problem = square(4, 20, 8, 3).with_dilation([2, 2]);
        let ablation = Catalogue::ablation();
        assert!(matches!(
            Plan::new(&problem, &ablation, H200_SMS),
            Err(Error::NoKernel { .. })
        ));
        for spec in &ablation.kernels {
            assert_eq!(*Plan::for_spec(&problem, *spec).unwrap().kernel(), *spec);
        }
        let mut both = Catalogue::default_catalogue();
        both.kernels.extend(ablation.kernels);
        assert!(plan(&problem).kernel().variant.is_complete());
        assert_eq!(
            Plan::new(&problem, &both, H200_SMS).unwrap(),
            plan(&problem)
        );
    }

    #[test]
    fn transforms_count_in_the_choice_between_variants() {
        // A large 3×3 layer (conv8-like): the materialised kernel's transform moves ~1.6 GB,
        // more than the fused kernel's gathers cost; a 1×1 stride-1 layer reads its input
        // in place, so the fused kernel's gathers are pure cost there.
        let big = Conv2dProblem::new([128, 64, 112, 112], [128, 64, 3, 3])
            .with_padding(Padding::uniform(1));
        assert!(plan(&big).kernel().variant.fused);
        let pointwise = Conv2dProblem::new([32, 256, 56, 56], [64, 256, 1, 1]);
        assert!(!plan(&pointwise).kernel().variant.fused);
    }

    #[test]
    fn forcing_a_spec() {
        let problem = square(3, 16, 4, 3);
        let fixed5 = KernelSpec::fixed(DType::F32, FixedGeometry::square(5, 1), TileConfig::PAPER);
        assert!(matches!(
            Plan::for_spec(&problem, fixed5),
            Err(Error::SpecMismatch { .. })
        ));
        let forced = Plan::for_spec(&problem, generic()).unwrap();
        assert_eq!(*forced.kernel(), generic());
        let dilated = problem.with_dilation([2, 1]);
        let fixed3 = KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), TileConfig::PAPER);
        assert!(!can_implement(&fixed3, &dilated));
        assert!(Plan::for_spec(&dilated, fixed3).is_err());
    }

    #[test]
    fn missing_generic_kernel_is_a_clear_error() {
        let only_3x3 = Catalogue::new(vec![KernelSpec::fixed(
            DType::F32,
            FixedGeometry::square(3, 1),
            TileConfig::PAPER,
        )])
        .unwrap();
        assert!(Plan::new(&square(3, 16, 4, 3), &only_3x3, H200_SMS).is_ok());
        let err = Plan::new(&square(3, 16, 4, 5), &only_3x3, H200_SMS).unwrap_err();
        assert!(matches!(err, Error::NoKernel { .. }), "{err}");
        assert!(err.to_string().contains("5×5"), "{err}");
        let empty = Catalogue::default();
        assert!(matches!(
            Plan::new(&square(3, 16, 4, 3), &empty, H200_SMS),
            Err(Error::NoKernel { .. })
        ));
    }

    #[test]
    fn too_many_output_channels_for_the_grid() {
        // K = 65536·128 + 1 needs 65537 blocks along y.
        let problem = Conv2dProblem::new([1, 1, 1, 1], [65_536 * 128 + 1, 1, 1, 1]);
        let err = Plan::new(&problem, &Catalogue::default_catalogue(), H200_SMS).unwrap_err();
        assert!(
            matches!(err, Error::TooLarge { limit: 65_535, .. }),
            "{err}"
        );
        let fits = Conv2dProblem::new([1, 1, 1, 1], [65_535 * 128, 1, 1, 1]);
        assert_eq!(plan(&fits).grid_dim(), (1, 65_535, 1));
    }

    #[test]
    fn problem_errors_come_first() {
        let bad = Conv2dProblem::new([1, 3, 4, 4], [2, 4, 3, 3]);
        assert!(matches!(
            Plan::new(&bad, &Catalogue::default_catalogue(), H200_SMS),
            Err(Error::ChannelMismatch { .. })
        ));
    }

    fn tile(block_m: u32, block_n: u32) -> TileConfig {
        TileConfig {
            block_m,
            block_n,
            block_k: 8,
            thread_m: block_m / 16,
            thread_n: block_n / 16,
        }
    }

    #[test]
    fn tile_heuristic() {
        let big = KernelSpec::generic(DType::F32, tile(128, 128));
        let small = KernelSpec::generic(DType::F32, tile(64, 64));
        let wide = KernelSpec::generic(DType::F32, tile(64, 128));
        let catalogue = Catalogue::new(vec![small, wide, big]).unwrap();
        let pick = |problem: &Conv2dProblem| {
            let plan = Plan::new(problem, &catalogue, H200_SMS).unwrap();
            (*plan.kernel(), plan.splits())
        };

        // K = 256, N·P·Q = 128·64·64: thousands of big tiles, no waste: big, unsplit.
        let large = Conv2dProblem::new([128, 64, 66, 66], [256, 64, 3, 3]);
        assert_eq!(pick(&large), (big, 1));
        // K = 64: a 128-row tile wastes half its rows; the 64-row tiles do not.
        let k64 = Conv2dProblem::new([128, 64, 58, 58], [64, 64, 3, 3]);
        assert_eq!(pick(&k64).0.tile.block_m, 64);
        assert_eq!(pick(&k64).1, 1);
        // Equal tiles in one geometry: catalogue order decides.
        let twin = KernelSpec::generic(
            DType::F32,
            TileConfig {
                block_k: 16,
                ..tile(64, 64)
            },
        );
        let tied = Catalogue::new(vec![twin, small]).unwrap();
        // C·R·S = 144, a multiple of both depths; thousands of tiles, so no split.
        let problem = Conv2dProblem::new([128, 16, 66, 66], [8, 16, 3, 3]);
        assert_eq!(
            *Plan::new(&problem, &tied, H200_SMS).unwrap().kernel(),
            twin
        );
    }

    #[test]
    fn few_output_tiles_split_the_reduction() {
        // ResNet-50's layer4 1×1 2048 → 512 at 7×7, batch 1: 49 pixels, 4 to 8 output tiles.
        let problem = Conv2dProblem::new([1, 2048, 7, 7], [512, 2048, 1, 1]);
        let plan = plan(&problem);
        let (x, y, z) = plan.grid_dim();
        assert!(z > 1, "{plan:?}");
        assert_eq!(z, plan.splits());
        assert!(u64::from(x * y * z) >= H200_SMS as u64, "{plan:?}");
        // Every split keeps at least MIN_SPLIT_STAGES stages.
        let stages = 2048_u64.div_ceil(u64::from(plan.kernel().tile.block_k));
        assert!(stages / u64::from(z) >= MIN_SPLIT_STAGES, "{plan:?}");
        // The same layer at batch 128 has 25 times the tiles: far fewer splits, if any.
        let batch = Conv2dProblem::new([128, 2048, 7, 7], [512, 2048, 1, 1]);
        assert!(
            self::plan(&batch).splits() * 4 <= z,
            "{:?}",
            self::plan(&batch)
        );
        // A reduction too short to split stays whole.
        let short = Conv2dProblem::new([1, 3, 9, 9], [8, 3, 3, 3]);
        assert_eq!(self::plan(&short).splits(), 1);
    }

    #[test]
    fn the_paper_layers_get_sensible_tiles() {
        let layer = |c, hw, k, rs, s| {
            plan(&Conv2dProblem::new([128, c, hw, hw], [k, c, rs, rs]).with_stride([s, s]))
        };
        // conv1: K = 96 takes the 96-row tile of the 11×11 stride-4 kernels.
        let conv1 = layer(3, 227, 96, 11, 4);
        assert_eq!(conv1.kernel().tile.block_m, 96, "{}", conv1.kernel());
        // conv8: K = 128, a large GEMM: 128 × 128, not split.
        let conv8 = layer(64, 112, 128, 3, 1);
        assert_eq!(
            (conv8.kernel().tile.block_m, conv8.kernel().tile.block_n),
            (128, 128)
        );
        assert_eq!(conv8.splits(), 1);
        // conv4: K = 64.
        assert_eq!(layer(32, 224, 64, 7, 2).kernel().tile.block_m, 64);
    }

    #[test]
    fn split_plans_and_their_workspace() {
        let problem = square(5, 22, 300, 3);
        let base = Plan::for_spec(&problem, generic()).unwrap();
        assert_eq!(base.splits(), 1);
        assert_eq!(base.partial_offset_bytes(), None);
        assert_eq!(base.workspace_bytes(), problem.workspace_bytes().unwrap());
        let split = base.clone().with_split(3).unwrap();
        assert_eq!(split.grid_dim(), (7, 3, 3));
        assert_eq!(split.splits(), 3);
        // The partial sums follow the filter at the next 256-byte boundary.
        let end = base.workspace_bytes().div_ceil(256) * 256;
        assert_eq!(split.partial_offset_bytes(), Some(end));
        let output = 2 * 300 * 20 * 20;
        assert_eq!(split.workspace_bytes(), end + 3 * output * 4);
        // Back to one split: the plan without partial sums.
        assert_eq!(split.with_split(1).unwrap(), base);
        for bad in [0, 65_536] {
            assert!(matches!(
                base.clone().with_split(bad),
                Err(Error::TooLarge { .. })
            ));
        }
    }

    #[test]
    fn one_by_one_stride_one_reads_the_input_in_place() {
        let in_place = square(8, 9, 16, 1);
        let plan = plan(&in_place);
        assert!(plan.input_in_place());
        // No im2win buffer: the filter starts the workspace.
        assert_eq!(plan.filter_offset_bytes(), 0);
        let filter_bytes = 8 * 16 * 4;
        assert_eq!(plan.workspace_bytes(), filter_bytes);
        for other in [
            in_place.with_stride([2, 2]),
            in_place.with_padding(Padding::symmetric(0, 1)),
            square(8, 9, 16, 3),
            Conv2dProblem::new([2, 8, 9, 9], [16, 8, 1, 3]),
        ] {
            let spec = Plan::new(&other, &Catalogue::default_catalogue(), H200_SMS)
                .unwrap()
                .kernel()
                .with_variant(Variant::MATERIALISED);
            let plan = Plan::for_spec(&other, spec).unwrap();
            assert!(!plan.input_in_place(), "{other:?}");
            assert_eq!(
                plan.filter_offset_bytes(),
                plan.problem().filter_offset_bytes(plan.shape())
            );
        }
        // Dilation multiplies nothing in a 1×1 filter.
        assert!(input_in_place(&in_place.with_dilation([2, 3])));
    }

    /// The NHWC window-buffer kernels (`Catalogue::nhwc_window_buffer`) run NHWC problems
    /// only, through the im2win buffer, which an NHWC input never is (not even 1×1 stride 1:
    /// the buffer is channel-major); the NCHW ones NCHW problems only.
    #[test]
    fn nhwc_window_buffer_kernels_build_the_buffer() {
        let nhwc = Catalogue::nhwc_window_buffer();
        assert!(!nhwc.kernels.is_empty());
        assert!(
            nhwc.kernels
                .iter()
                .all(|k| k.validate().is_ok() && k.layout == Layout::Nhwc && !k.variant.fused)
        );
        for problem in [square(8, 9, 16, 1), square(8, 9, 16, 3)] {
            let problem = problem.with_layout(Layout::Nhwc);
            let plan = Plan::new(&problem, &nhwc, H200_SMS).unwrap();
            assert!(!plan.input_in_place(), "{problem:?}");
            assert_eq!(
                plan.filter_offset_bytes(),
                plan.problem().filter_offset_bytes(plan.shape())
            );
            assert!(plan.filter_offset_bytes() >= plan.shape().im2win_len * 4);
            // An NCHW problem finds no kernel among them.
            assert!(Plan::new(&problem.with_layout(Layout::Nchw), &nhwc, H200_SMS).is_err());
        }
    }

    /// A tensor-core kernel of the default catalogue's tiles.
    fn tensor_op(dtype: DType, geometry: Geometry, tile: TensorOpTile, vector: bool) -> KernelSpec {
        KernelSpec::tensor_op(dtype, geometry, tile.tile(dtype), vector)
    }

    /// A problem for the tensor-core kernels: NHWC tensors, a KRSC filter, of `dtype` (or
    /// float32 at TF32).
    fn tc_problem(numeric: &str, input: [usize; 4], filter: [usize; 4]) -> Conv2dProblem {
        let (dtype, precision) = Precision::from_numeric_name(numeric).unwrap();
        Conv2dProblem::new(input, filter)
            .with_dtype(dtype)
            .with_precision(precision)
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc)
    }

    /// `f32x3` runs 3xTF32 kernels only; FP32 accuracy (`f32acc`) the strict SIMT kernels,
    /// or the 3xTF32 ones where a catalogue has only those; strict never takes them; and a
    /// catalogue without them serves `f32acc` strictly, `f32x3` not at all.
    #[test]
    fn fp32_accuracy_picks_3xtf32_or_strict() {
        use im2win_codegen::Math;
        let catalogue = Catalogue::default_catalogue();
        let sms = H200_SMS;
        // A paper-like deep layer: C = K = 256, 3x3, 28x28, batch 32.
        let big = [32, 256, 28, 28];
        let filter = [256, 256, 3, 3];
        let layer =
            |numeric: &str| tc_problem(numeric, big, filter).with_padding(Padding::uniform(1));
        let fast = Plan::new(&layer("f32x3"), &catalogue, sms).unwrap();
        assert_eq!(fast.kernel().math, Math::TensorOpFastF32);
        assert_eq!(
            fast.kernel().geometry,
            Geometry::Fixed(FixedGeometry::square(3, 1))
        );
        assert_eq!(fast.workspace_bytes(), 0);
        assert_eq!(fast.splits(), 1);
        // FP32 accuracy runs on the strict kernels (3xTF32 only through the tuning table).
        let accurate = Plan::new(&layer("f32acc"), &catalogue, sms).unwrap();
        assert_eq!(accurate.kernel().math, Math::Simt);
        let strict = layer("f32");
        assert_eq!(
            Plan::new(&strict, &catalogue, sms).unwrap().kernel().math,
            Math::Simt
        );
        // Forcing a 3xTF32 kernel on a strict or TF32 problem is refused.
        for numeric in ["f32", "tf32"] {
            let err = Plan::for_spec(&layer(numeric), *fast.kernel()).unwrap_err();
            assert!(matches!(err, Error::PrecisionMismatch { .. }), "{err}");
        }
        // Small layers, short reductions and C = 3 stay strict under FP32 accuracy; f32x3
        // still runs them on 3xTF32 (C = 3: the element-wise kernel).
        for (input, filter) in [
            ([1, 64, 14, 14], [64, 64, 3, 3]),
            ([32, 16, 56, 56], [64, 16, 1, 1]),
            ([32, 3, 224, 224], [64, 3, 3, 3]),
            ([32, 64, 56, 56], [32, 64, 1, 1]),
            ([32, 128, 28, 28], [128, 128, 3, 3]),
        ] {
            let problem = |numeric: &str| tc_problem(numeric, input, filter);
            let plan = Plan::new(&problem("f32acc"), &catalogue, sms).unwrap();
            assert_eq!(plan.kernel().math, Math::Simt, "{input:?} {filter:?}");
            let forced = Plan::new(&problem("f32x3"), &catalogue, sms).unwrap();
            assert_eq!(forced.kernel().math, Math::TensorOpFastF32);
            assert_eq!(forced.kernel().variant.vector_loads, input[1] % 4 == 0);
        }
        // A KCRS filter and NCHW tensors: the same 3xTF32 kernels, on channels-last copies.
        for nchw in [
            layer("f32x3").with_filter_layout(FilterLayout::Kcrs),
            layer("f32x3")
                .with_filter_layout(FilterLayout::Kcrs)
                .with_layout(Layout::Nchw),
        ] {
            let plan = Plan::new(&nchw, &catalogue, sms).unwrap();
            assert_eq!(plan.kernel().math, Math::TensorOpFastF32);
            assert!(plan.transforms_filter());
        }
        // Without the 3xTF32 kernels: f32acc is strict, f32x3 is refused by name.
        let f32_only = Catalogue::default_f32();
        let plan = Plan::new(&layer("f32acc"), &f32_only, sms).unwrap();
        assert_eq!(plan.kernel().math, Math::Simt);
        let err = Plan::new(&layer("f32x3"), &f32_only, sms).unwrap_err();
        assert!(matches!(err, Error::NoKernelForType { .. }), "{err}");
        assert!(err.to_string().contains("no f32x3 kernel"), "{err}");
        // With the 3xTF32 kernels only: f32acc takes them, strict f32 is refused by name.
        let fast_only = Catalogue::new(Catalogue::fast_f32_kernels()).unwrap();
        let plan = Plan::new(&layer("f32acc"), &fast_only, sms).unwrap();
        assert_eq!(plan.kernel().math, Math::TensorOpFastF32);
        let err = Plan::new(&layer("f32"), &fast_only, sms).unwrap_err();
        assert!(matches!(err, Error::NoKernelForType { .. }), "{err}");
    }

    #[test]
    fn a_type_or_precision_without_kernels_is_named_never_run_in_f32() {
        let problem = square(8, 20, 16, 3).with_padding(Padding::uniform(1));
        // Float32 kernels only: every tensor-core problem is refused by name.
        let f32_only = Catalogue::default_f32();
        for (problem, name) in [
            (problem.with_dtype(DType::Bf16), "bf16"),
            (problem.with_dtype(DType::F16), "f16"),
            (problem.with_precision(Precision::Tf32), "tf32"),
            (
                problem
                    .with_precision(Precision::Tf32)
                    .with_layout(Layout::Nhwc),
                "tf32",
            ),
        ] {
            let err = Plan::new(&problem, &f32_only, H200_SMS).unwrap_err();
            assert!(matches!(err, Error::NoKernelForType { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("no {name} kernel")),
                "{err}"
            );
            // Forcing a float32 kernel on it is refused too.
            let f32_kernel = *plan(&square(8, 20, 16, 3)).kernel();
            assert!(!can_implement(&f32_kernel, &problem));
            let err = Plan::for_spec(&problem, f32_kernel).unwrap_err();
            assert!(matches!(err, Error::PrecisionMismatch { .. }), "{err}");
            assert!(
                err.to_string().contains(&format!("problem is {name}")),
                "{err}"
            );
        }
        // TF32 of a 16-bit type is not a problem at all.
        assert!(matches!(
            Plan::new(
                &problem
                    .with_dtype(DType::Bf16)
                    .with_precision(Precision::Tf32),
                &Catalogue::default_catalogue(),
                H200_SMS
            ),
            Err(Error::BadPrecision { .. })
        ));
    }

    #[test]
    fn tensor_op_kernels_take_nchw_and_kcrs_through_channels_last_copies() {
        for numeric in ["bf16", "f16", "tf32"] {
            let nhwc = tc_problem(numeric, [2, 16, 20, 20], [32, 16, 3, 3])
                .with_padding(Padding::uniform(1));
            let planned = plan(&nhwc);
            assert_eq!(planned.kernel().math, im2win_codegen::Math::TensorOp);
            assert_eq!(planned.kernel().numeric_name(), numeric);
            assert_eq!(planned.workspace_bytes(), 0);
            assert!(planned.input_in_place() && !planned.transforms_filter());
            let size = planned.kernel().dtype.size_bytes();
            // NCHW: the same kernel, on an NHWC copy of the input (2·16·20·20 elements).
            let nchw = nhwc.with_layout(Layout::Nchw);
            assert!(can_implement(planned.kernel(), &nchw));
            let p = plan(&nchw);
            assert_eq!(p.kernel(), planned.kernel());
            assert!(p.transposes_input() && !p.input_in_place() && !p.transforms_filter());
            assert_eq!(p.workspace_bytes(), 2 * 16 * 20 * 20 * size);
            // A KCRS filter: on a KRSC copy (32·16·3·3 elements).
            let kcrs = nhwc.with_filter_layout(FilterLayout::Kcrs);
            let p = plan(&kcrs);
            assert_eq!(p.kernel(), planned.kernel());
            assert!(p.transforms_filter() && p.input_in_place());
            assert_eq!(p.workspace_bytes(), 32 * 16 * 9 * size);
            // Both: input copy, then the filter copy at an aligned offset.
            let both = plan(&nchw.with_filter_layout(FilterLayout::Kcrs));
            let input_bytes = (2 * 16 * 20 * 20 * size).div_ceil(256) * 256;
            assert_eq!(both.filter_offset_bytes(), input_bytes);
            assert_eq!(both.workspace_bytes(), input_bytes + 32 * 16 * 9 * size);
            // ... which are aligned whatever the operands' addresses.
            assert_eq!(read_alignment(both.kernel(), both.problem(), 2), 256);
            assert_eq!(read_alignment(p.kernel(), p.problem(), 2), 2);
            // Strict float32 is never a tensor-core problem.
            if numeric == "tf32" {
                let strict = nhwc.with_precision(Precision::Strict);
                assert_eq!(plan(&strict).kernel().math, im2win_codegen::Math::Simt);
            }
        }
    }

    #[test]
    fn vector_loads_need_whole_channel_vectors_and_aligned_operands() {
        let g3 = Geometry::Fixed(FixedGeometry::square(3, 1));
        let vec = tensor_op(DType::Bf16, g3, TENSOR_OP_128X64_R64, true);
        let any = tensor_op(DType::Bf16, g3, TENSOR_OP_128X64_R64, false);
        let with_c = |c| tc_problem("bf16", [1, c, 12, 12], [16, c, 3, 3]);
        for c in [8, 16, 24, 64] {
            assert!(can_implement(&vec, &with_c(c)), "C = {c}");
        }
        for c in [1, 3, 4, 12, 20] {
            assert!(!can_implement(&vec, &with_c(c)), "C = {c}");
            let err = Plan::for_spec(&with_c(c), vec).unwrap_err();
            assert!(matches!(err, Error::KernelRequirement { .. }), "{err}");
            assert!(err.to_string().contains("multiple of 8"), "{err}");
        }
        for c in [1, 3, 4, 8, 12, 20] {
            assert!(can_implement(&any, &with_c(c)), "C = {c}");
        }
        // TF32's pieces are 4 floats.
        let tf32 = tensor_op(DType::F32, g3, TENSOR_OP_128X64_R64, true);
        let tf32_c = |c| tc_problem("tf32", [1, c, 12, 12], [16, c, 3, 3]);
        assert!(can_implement(&tf32, &tf32_c(12)));
        assert!(!can_implement(&tf32, &tf32_c(6)));
        // Dispatch: vector loads where the channels allow, element-wise otherwise.
        assert!(plan(&with_c(16)).kernel().variant.vector_loads);
        assert!(!plan(&with_c(3)).kernel().variant.vector_loads);
        // ... and where the operands' addresses allow: misaligned input or filter (a view
        // at an odd offset) takes the element-wise kernel.
        let default = Catalogue::default_catalogue();
        let h200 = DeviceLimits::H200;
        for aligned_to in [1, 2, 4, 8] {
            let p = Plan::for_operands(&with_c(16), &default, &h200, aligned_to).unwrap();
            assert!(
                !p.kernel().variant.vector_loads,
                "{aligned_to}: {}",
                p.kernel()
            );
            assert!(!operands_fit(&vec, aligned_to));
            assert!(operands_fit(&any, aligned_to));
        }
        for aligned_to in [16, 32, 256] {
            let p = Plan::for_operands(&with_c(16), &default, &h200, aligned_to).unwrap();
            assert_eq!(p, plan(&with_c(16)));
        }
        // A catalogue with the vector kernel alone says what is missing.
        let only_vec = Catalogue::new(vec![vec]).unwrap();
        let err = Plan::new(&with_c(3), &only_vec, H200_SMS).unwrap_err();
        assert!(matches!(err, Error::RequirementUnmet { .. }), "{err}");
        let err = Plan::for_operands(&with_c(16), &only_vec, &h200, 2).unwrap_err();
        assert!(err.to_string().contains("16-byte aligned"), "{err}");
        // The alignment of two addresses.
        assert_eq!(address_alignment(0x1000, 0x2000), 256);
        assert_eq!(address_alignment(0x1010, 0x2000), 16);
        assert_eq!(address_alignment(0x1002, 0x2010), 2);
        assert_eq!(address_alignment(0x1000, 0x2001), 1);
    }

    #[test]
    fn tensor_op_plans_launch_a_1d_grid_split_over_z() {
        let g3 = Geometry::Fixed(FixedGeometry::square(3, 1));
        // N·P·Q = 2·20·20 = 800 pixels: 7 tiles of 128; K = 300: 5 tiles of 64.
        let problem = tc_problem("bf16", [2, 16, 22, 22], [300, 16, 3, 3]);
        for (tile, channels, smem) in [
            (TENSOR_OP_128X64_R64, 64, 48 * 1024),
            (TENSOR_OP_128X128_R128, 128, 96 * 1024),
            (TENSOR_OP_128X96_R64, 96, 56 * 1024),
        ] {
            let spec = tensor_op(DType::Bf16, g3, tile, true);
            let p = Plan::for_spec(&problem, spec).unwrap();
            assert_eq!(
                p.grid_dim(),
                (7 * 300_u32.div_ceil(channels), 1, 1),
                "{spec}"
            );
            assert_eq!(p.block_dim(), (128, 1, 1));
            assert_eq!(p.dynamic_shared_bytes(), smem);
            assert_eq!(p.workspace_bytes(), 0);
            assert!(!p.transforms_filter());
            assert!(p.input_in_place());
            assert_eq!(p.splits(), 1);
            assert_eq!(p.partial_offset_bytes(), None);
            // Split over z, the float32 partial sums in the workspace: the tiles of at most
            // 64 sums a thread; the others refuse.
            if spec.sums_per_thread() <= 64 {
                assert!(spec.splits_reduction());
                let split = p.clone().with_split(2).unwrap();
                assert_eq!(split.grid_dim(), (p.grid_dim().0, 1, 2));
                assert_eq!(split.partial_offset_bytes(), Some(0));
                assert_eq!(split.workspace_bytes(), 2 * 4 * 800 * 300);
                assert_eq!(split.with_split(1).unwrap(), p);
            } else {
                assert!(!spec.splits_reduction());
                let err = p.clone().with_split(2).unwrap_err();
                assert!(matches!(err, Error::KernelRequirement { .. }), "{err}");
                assert_eq!(max_splits(&spec, p.shape()), 1);
            }
        }
        // The split model splits the small grids of batch-1 layers with long reductions (2 × 8
        // blocks of 64 × 64 or 4 of 128 × 128, 32 stages of 64 channels), and not full grids;
        // dispatch applies it when TENSOR_OP_SPLITS_BY_DISPATCH is on.
        let deep = tc_problem("f16", [1, 2048, 7, 7], [512, 2048, 1, 1]);
        let dispatched = plan(&deep);
        let (spec, shape) = (*dispatched.kernel(), *dispatched.shape());
        let splits = tensor_op_splits(&spec, &shape, &DeviceLimits::H200);
        assert!(splits > 1, "{dispatched:?}");
        let expected = if TENSOR_OP_SPLITS_BY_DISPATCH {
            splits
        } else {
            1
        };
        assert_eq!(dispatched.splits(), expected);
        let split = dispatched.with_split(splits).unwrap();
        assert_eq!(split.grid_dim().2, splits);
        assert!(split.workspace_bytes() >= splits as usize * 49 * 512 * 4);
        let wide = plan(&tc_problem("f16", [32, 256, 56, 56], [256, 256, 3, 3]));
        assert_eq!(
            tensor_op_splits(wide.kernel(), wide.shape(), &DeviceLimits::H200),
            1
        );
        // SIMT plans keep their static shared memory and workspace.
        let simt = plan(&square(8, 20, 16, 3));
        assert_eq!(simt.dynamic_shared_bytes(), 0);
        assert!(simt.transforms_filter());
        assert!(simt.workspace_bytes() > 0);
    }

    /// A plan reading a prepared filter: the same kernel, grid and splits, no filter part in
    /// its workspace (the partial sums move down), and the form and length of what it reads.
    #[test]
    fn prepared_filter_plans_drop_the_filter_transform() {
        // SIMT, materialised (1 × 1, stride 2: the window order) and fused, split.
        let strided = Conv2dProblem::new([1, 64, 14, 14], [96, 64, 1, 1]).with_stride([2, 2]);
        let deep = square(256, 7, 64, 3).with_padding(Padding::uniform(1));
        for problem in [strided, deep, square(16, 20, 24, 3)] {
            let p = plan(&problem);
            let q = p.clone().with_prepared_filter().unwrap();
            assert!(p.transforms_filter() && !q.transforms_filter(), "{p:?}");
            assert!(q.reads_prepared_filter() && !p.reads_prepared_filter());
            let shape = p.shape();
            let filter_bytes = WorkspaceLayout::filter_bytes(shape, DType::F32).unwrap();
            assert_eq!(q.prepared_filter_len().unwrap() * 4, filter_bytes);
            assert!(q.workspace_bytes() + filter_bytes <= p.workspace_bytes() + 256);
            assert_eq!(
                q.partial_offset_bytes().is_some(),
                p.partial_offset_bytes().is_some()
            );
            let format = if p.kernel().variant.fused {
                FilterFormat::ChannelsFastest
            } else {
                FilterFormat::Window
            };
            assert_eq!(q.filter_format(), format);
            assert_eq!((q.kernel(), q.grid_dim()), (p.kernel(), p.grid_dim()));
            // Splitting keeps the filter out.
            let split = q.clone().with_split(3).unwrap();
            assert!(!split.transforms_filter());
            assert_eq!(
                split.workspace_bytes(),
                p.clone().with_split(3).unwrap().workspace_bytes()
                    - filter_bytes.div_ceil(256) * 256
            );
        }
        // Tensor cores: a KCRS filter's KRSC copy leaves the workspace; an NHWC problem with
        // a KRSC filter had none.
        for (layout, filter_layout) in [
            (Layout::Nhwc, FilterLayout::Kcrs),
            (Layout::Nchw, FilterLayout::Kcrs),
            (Layout::Nhwc, FilterLayout::Krsc),
        ] {
            let problem = tc_problem("bf16", [2, 32, 12, 12], [40, 32, 3, 3])
                .with_layout(layout)
                .with_filter_layout(filter_layout);
            let p = plan(&problem);
            let q = p.clone().with_prepared_filter().unwrap();
            assert_eq!(q.filter_format(), FilterFormat::Krsc);
            assert_eq!(q.prepared_filter_len().unwrap(), 40 * 32 * 9);
            assert!(!q.transforms_filter());
            let input_copy = if layout == Layout::Nchw {
                (2 * 32 * 144 * 2_usize).div_ceil(256) * 256
            } else {
                0
            };
            assert_eq!(
                q.workspace_bytes(),
                input_copy,
                "{layout:?} {filter_layout:?}"
            );
        }
    }

    /// A workspace limit: the fastest plan that fits, the most splits that fit, and a clear
    /// error when nothing does.
    #[test]
    fn workspace_limits_choose_plans_that_fit() {
        let catalogue = Catalogue::default_catalogue();
        let within = |problem: &Conv2dProblem, limit: usize, prepared_filter: bool| {
            let options = PlanOptions {
                workspace_limit: Some(limit),
                prepared_filter,
                ..PlanOptions::default()
            };
            Plan::with_options(problem, &catalogue, &DeviceLimits::H200, &options)
        };
        // The paper's first layer (C = 3, 11 × 11 / 4) runs on the im2win buffer unlimited;
        // with no workspace and a prepared filter, on a fused kernel, unsplit.
        let alexnet = Conv2dProblem::new([8, 3, 227, 227], [96, 3, 11, 11]).with_stride([4, 4]);
        let free = plan(&alexnet);
        assert!(free.workspace_bytes() > 0);
        let none = within(&alexnet, 0, true).unwrap();
        assert_eq!(none.workspace_bytes(), 0);
        assert!(none.kernel().variant.fused && none.reads_prepared_filter());
        assert_eq!(none.splits(), 1);
        // Without a prepared filter every SIMT kernel needs its transformed filter.
        match within(&alexnet, 0, false) {
            Err(Error::WorkspaceLimit { limit: 0, least }) => {
                assert!(least >= 96 * 3 * 121 * 4, "{least}");
            }
            other => panic!("{other:?}"),
        }
        // A batch-1 layer that dispatch splits keeps fewer splits under a tighter limit.
        let deep = square(512, 7, 512, 3).with_padding(Padding::uniform(1));
        let deep = Conv2dProblem {
            input: [1, 512, 7, 7],
            ..deep
        };
        let split = plan(&deep);
        assert!(split.splits() > 1, "{split:?}");
        let limit = split.workspace_bytes() - 1;
        let fewer = within(&deep, limit, false).unwrap();
        assert!(fewer.workspace_bytes() <= limit);
        // Tensor cores: NHWC with a KRSC filter needs nothing (then unsplit); NCHW needs the
        // input's NHWC copy.
        let tc =
            tc_problem("bf16", [1, 512, 7, 7], [512, 512, 3, 3]).with_padding(Padding::uniform(1));
        let unsplit = within(&tc, 0, false).unwrap();
        assert_eq!((unsplit.splits(), unsplit.workspace_bytes()), (1, 0));
        let nchw = tc.with_layout(Layout::Nchw);
        assert!(matches!(
            within(&nchw, 0, true),
            Err(Error::WorkspaceLimit { limit: 0, least }) if least >= 512 * 49 * 2
        ));
    }

    /// The warp-MMA rules, on a GPU without the warpgroup MMA (an H200's limits with compute
    /// capability 8.0, where the `_wgmma` kernels are no candidates).
    #[test]
    fn tensor_op_dispatch_follows_the_measured_tiles() {
        let sm80 = DeviceLimits {
            compute_capability: 80,
            ..DeviceLimits::H200
        };
        let plan = |problem: &Conv2dProblem| {
            Plan::for_device(problem, &Catalogue::default_catalogue(), &sm80).unwrap()
        };
        let layer = |numeric: &str, c, hw, k, rs, stride, batch| {
            let pad = rs / 2;
            plan(
                &tc_problem(numeric, [batch, c, hw, hw], [k, c, rs, rs])
                    .with_stride([stride, stride])
                    .with_padding(Padding::uniform(pad)),
            )
        };
        // (pixels, channels, row bytes, vector, fixed) of the chosen kernel.
        let shape = |p: &Plan| {
            let k = p.kernel();
            let t = k.tile;
            (
                t.block_n,
                t.block_m,
                t.block_k as usize * k.dtype.size_bytes(),
                k.variant.vector_loads,
                matches!(k.geometry, Geometry::Fixed(_)),
            )
        };
        for numeric in ["bf16", "f16", "tf32"] {
            // Stems, C = 3: element-wise kernels of their fixed geometry, 96 channels for K = 96.
            assert_eq!(
                shape(&layer(numeric, 3, 227, 96, 11, 4, 8)),
                (128, 96, 64, false, true)
            );
            assert_eq!(
                shape(&layer(numeric, 3, 224, 64, 7, 2, 8)),
                (128, 64, 64, false, true)
            );
            assert_eq!(
                shape(&layer(numeric, 3, 224, 64, 3, 1, 8)),
                (128, 64, 64, false, true)
            );
            // A 7×7 stride-2 layer with C = 64: the generic kernel with vector loads beats
            // the fixed element-wise one.
            assert_eq!(
                shape(&layer(numeric, 64, 56, 64, 7, 2, 64)),
                (128, 64, 64, true, false)
            );
            // ResNet-50, batch 32: 128 × 64 with 64-byte rows for most layers.
            assert_eq!(
                shape(&layer(numeric, 64, 56, 64, 3, 1, 32)),
                (128, 64, 64, true, true)
            );
            // TF32 takes the wide tile sooner (two 128 × 128 blocks per SM suffice).
            let wide = if numeric == "tf32" { 128 } else { 64 };
            assert_eq!(
                shape(&layer(numeric, 256, 56, 128, 1, 1, 32)),
                (128, wide, 64, true, true)
            );
            // Its deep layers at 7×7: a small grid, 128-byte rows.
            assert_eq!(
                shape(&layer(numeric, 512, 7, 512, 3, 1, 32)),
                (128, 64, 128, true, true)
            );
            // Paper conv8 (batch 128, K = 128, 3×3, C = 64): a large layer, 128 × 128 (with
            // 64-byte rows: the fixed 3×3 kernel of 128-byte rows is not in the catalogue).
            assert_eq!(
                shape(&layer(numeric, 64, 112, 128, 3, 1, 128)),
                (128, 128, 64, true, true)
            );
            // 3×3 stride 2 has fixed kernels; other strides take the generic ones.
            assert!(layer(numeric, 128, 56, 128, 3, 2, 32).kernel().geometry != Geometry::Generic);
            assert_eq!(
                layer(numeric, 128, 56, 128, 3, 3, 32).kernel().geometry,
                Geometry::Generic
            );
        }
        // Dilated problems run too (generic kernels), as do odd channel counts.
        let dilated = tc_problem("bf16", [2, 16, 20, 20], [24, 16, 3, 3]).with_dilation([2, 2]);
        assert_eq!(plan(&dilated).kernel().geometry, Geometry::Generic);
        let odd = tc_problem("bf16", [2, 5, 9, 9], [7, 5, 2, 4]);
        assert!(!plan(&odd).kernel().variant.vector_loads);
    }

    /// On a compute-capability-9.0 GPU, bf16 and f16 problems with vector loads take the
    /// warpgroup MMA: the largest tile that fills every SM once, else the most parallel one;
    /// TF32 takes its TMA kernels where they apply and fill the GPU, else the warp MMA, as do
    /// the C = 3 stems.
    #[test]
    fn warpgroup_dispatch_on_sm90() {
        let layer = |numeric: &str, c, hw, k, rs, batch| {
            plan(
                &tc_problem(numeric, [batch, c, hw, hw], [k, c, rs, rs])
                    .with_padding(Padding::uniform(rs / 2)),
            )
        };
        let tile = |p: &Plan| {
            let k = p.kernel();
            (k.variant.warpgroup, k.tile.block_n, k.tile.block_m)
        };
        for numeric in ["bf16", "f16"] {
            // Paper conv5-like (batch 128, 72 channels: no whole 32-channel stages for the
            // TMA kernels): the 128 x 256 two-warpgroup tile.
            assert_eq!(tile(&layer(numeric, 72, 56, 256, 3, 128)), (true, 128, 256));
            // With 256 channels: the TMA kernels (`tma_tiles_follow_the_grid_and_the_reduction`).
            assert!(layer(numeric, 256, 56, 256, 3, 128).kernel().variant.tma);
            // K = 64: the 64-channel tile.
            assert_eq!(tile(&layer(numeric, 64, 56, 64, 3, 32)), (true, 128, 64));
            // ResNet-50's 1024x14->256 1x1 at batch 32: no multistage tile fills the GPU,
            // but the most parallel one (64 pixels x 128 channels) would not split either;
            // the TMA kernel of one team on 128 x 128.
            let p = layer(numeric, 1024, 14, 256, 1, 32);
            assert_eq!(tile(&p), (true, 128, 128));
            assert!(p.kernel().variant.tma && !p.kernel().variant.pingpong);
            // C = 72 at 14 x 14 (no TMA kernel): the most parallel multistage tile (64 x 128
            // and 128 x 64 tie: catalogue order).
            assert_eq!(tile(&layer(numeric, 72, 14, 256, 1, 32)), (true, 64, 128));
            // The stems keep the element-wise warp-MMA kernels.
            assert!(!layer(numeric, 3, 224, 64, 7, 8).kernel().variant.warpgroup);
        }
        // TF32: the warp MMA; with the opt-in TF32 TMA kernels (`Catalogue::tf32_tma`),
        // those where they apply, but for C = 48 (no whole 32-float stages), a batch-1 grid
        // of 4 tiles for 132 SMs (the warp MMA splits it) and the stem.
        let tf32 = |c: usize, hw: usize, k: usize, rs: usize, batch: usize, tma: bool| {
            let mut catalogue = Catalogue::default_catalogue();
            if tma {
                catalogue.kernels.extend(Catalogue::tf32_tma().kernels);
            }
            let problem = tc_problem("tf32", [batch, c, hw, hw], [k, c, rs, rs])
                .with_padding(Padding::uniform(rs / 2));
            *Plan::new(&problem, &catalogue, H200_SMS).unwrap().kernel()
        };
        assert!(!tf32(256, 56, 256, 3, 128, false).variant.warpgroup);
        assert!(tf32(256, 56, 256, 3, 128, true).variant.tma);
        for (c, hw, k, rs, batch) in [
            (48, 56, 256, 3, 128),
            (256, 14, 256, 3, 1),
            (3, 224, 64, 7, 8),
        ] {
            let spec = tf32(c, hw, k, rs, batch, true);
            assert!(!spec.variant.warpgroup, "{spec}");
        }
        // The same problem on an sm_80 GPU: warp MMA.
        let sm80 = DeviceLimits {
            compute_capability: 80,
            ..DeviceLimits::H200
        };
        let problem = tc_problem("bf16", [128, 256, 56, 56], [256, 256, 3, 3]);
        let p = Plan::for_device(&problem, &Catalogue::default_catalogue(), &sm80).unwrap();
        assert!(!p.kernel().variant.warpgroup);
        // A forced warpgroup kernel (multistage, warp-specialised, TMA) is refused there, not
        // launched into a trap; the warp-MMA kernels run on both.
        for spec in &Catalogue::default_catalogue().kernels {
            if spec.variant.warpgroup {
                assert!(device_unmet(spec, &sm80).is_some(), "{spec}");
            }
            assert_eq!(device_unmet(spec, &DeviceLimits::H200), None, "{spec}");
        }
    }

    #[test]
    fn tensor_op_kernels_fit_the_device_shared_memory() {
        let problem = tc_problem("bf16", [128, 64, 114, 114], [128, 64, 3, 3]);
        let default = Catalogue::default_catalogue();
        let big = plan(&problem);
        // The TMA ping-pong kernel: 5 stages of 256 rows of 128 bytes, two teams' staging of
        // 32 KiB, the barriers.
        assert!(big.kernel().variant.tma, "{}", big.kernel());
        assert_eq!(big.dynamic_shared_bytes(), 224 * 1024 + 80);
        // A GPU that gives a block 64 KiB at most: the 96 KiB tile is no candidate.
        let small = DeviceLimits {
            shared_bytes_per_block_optin: 64 * 1024,
            ..DeviceLimits::H200
        };
        let p = Plan::for_device(&problem, &default, &small).unwrap();
        assert!(p.dynamic_shared_bytes() <= 64 * 1024, "{}", p.kernel());
        let tiny = DeviceLimits {
            shared_bytes_per_block_optin: 16 * 1024,
            ..DeviceLimits::H200
        };
        let err = Plan::for_device(&problem, &default, &tiny).unwrap_err();
        assert!(matches!(err, Error::RequirementUnmet { .. }), "{err}");
    }
}
