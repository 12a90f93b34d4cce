//! The engine: one CUDA context and stream, the fatbins (loaded when the engine starts), and the launches.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError,
    LaunchConfig, PushKernelArg, SyncOnDrop, sys,
};
use im2win_codegen::catalogue::support;
use im2win_codegen::{DType, Precision};

use super::device::DeviceLimits;
use super::dispatch::{
    FilterFormat, OPERAND_ALIGNMENT, Plan, PlanOptions, address_alignment, device_unmet,
    operands_fit, read_alignment,
};
use super::modules::LoadedModules;
use super::ordering::{StreamJoin, other_streams};
use super::params::ConvParams;
use super::tma;
use super::tuning::{TuningEntry, TuningTable};
use crate::element::{Element, check_dtype};
use crate::error::{Error, Result};
use crate::kernels::KernelModule;
use crate::layout::{FilterLayout, Layout};
use crate::problem::Conv2dProblem;
use crate::workspace::WorkspaceLayout;

/// Threads per block of the grid-stride kernels (transforms and direct convolutions).
const GRID_STRIDE_THREADS: u32 = 256;
/// Resident blocks per SM worth launching for a grid-stride kernel: enough to hide latency,
/// few enough that each thread still loops over several elements of a large buffer.
const GRID_STRIDE_BLOCKS_PER_SM: usize = 32;
/// Elements of the im2win buffer one thread of the input transform writes per loop
/// iteration (two float4 chunks).
const INPUT_TRANSFORM_ELEMENTS_PER_THREAD: usize = 8;
/// Alignment of a caller's workspace: the parts of a plan's workspace sit at aligned offsets
/// from its start ([`WorkspaceLayout`]), which keeps them aligned for the kernels' vector
/// accesses only if the start is.
const WORKSPACE_ALIGNMENT: u64 = WorkspaceLayout::ALIGNMENT as u64;

/// Runs im2win convolutions on one GPU.
///
/// An engine launches on one stream, its *launch stream* ([`Engine::stream`]): a
/// non-blocking stream of its own ([`Engine::new`], [`Engine::with_context`]) or one it is
/// given ([`Engine::on_stream`], e.g. a framework's). It holds a [`KernelModule`] whose
/// fatbins are loaded (and checked against this runtime's ABI stamp) when the engine starts,
/// and a workspace that grows to the largest problem run without a caller-supplied one.
/// Nothing synchronises the host implicitly: synchronise (or copy results back, which
/// does) before reading results on the host.
///
/// Operands may live on any stream of any context object of the engine's CUDA context (the
/// device's primary context): every call orders its launches after all work queued before
/// it on each operand's stream, and orders all work queued afterwards on those streams
/// after its launches (docs/RELIABILITY.md, "Streams and contexts"). Operands on the launch
/// stream itself cost nothing extra.
///
/// `Engine` is `Send + Sync`; calls from several threads are serialised on its stream.
pub struct Engine {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: KernelModule,
    /// The device's limits, read when the engine starts: dispatch plans with them.
    limits: DeviceLimits,
    /// One CUDA module per fatbin of `kernels`, loaded by `Engine::new` (or on first use, for a module added later).
    modules: LoadedModules,
    functions: Mutex<HashMap<String, CudaFunction>>,
    /// The dynamic shared memory each kernel that uses it may have, as set on its function
    /// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`), by name: set once per function.
    dynamic_shared: Mutex<HashMap<String, u32>>,
    /// Held for the whole of each call that queues work: the engine's own workspace and
    /// the events that order the call with its operands' streams.
    launch: Mutex<LaunchState>,
    /// Measured choices for this GPU ([`Engine::with_tuning`], [`Engine::autotune`]).
    tuning: RwLock<TuningTable>,
    /// The most workspace a plan of this engine may need ([`Engine::with_workspace_limit`]).
    workspace_limit: Option<usize>,
    /// The plans made so far, by problem and options: a framework calls the same layers
    /// over and over, and dispatch (estimating every kernel of the catalogue) costs
    /// microseconds a call, a batch-1 convolution's own order of time. Cleared when the
    /// tuning table changes.
    plans: Mutex<HashMap<(Conv2dProblem, PlanOptions), Plan>>,
}

/// Plans kept at most; the cache starts over beyond (a program that sweeps shapes).
const PLAN_CACHE_ENTRIES: usize = 4096;

/// What a call that queues work needs to itself.
pub(super) struct LaunchState {
    /// The engine's own workspace, grown as needed.
    workspace: Option<CudaSlice<u8>>,
    /// Orders the call with the streams of its operands.
    join: StreamJoin,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("ordinal", &self.ctx.ordinal())
            .field("multiprocessors", &self.limits.multiprocessors)
            .field("kernels", &self.kernels.catalogue().kernels.len())
            .field("fatbins_loaded", &self.modules.loaded())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine on device `ordinal` that launches the kernels of `kernels` (the default
    /// ones are `im2win::kernels()`), on a context object and a non-blocking stream of its
    /// own.
    ///
    /// The fatbins and their kernels are loaded here, so the first call on a new shape costs
    /// no more than a later one (plus the engine's own workspace, when the caller passes
    /// none). A module built without nvcc still gives a working engine for
    /// [`Engine::plan`], and launches fail with [`Error::KernelsNotBuilt`].
    ///
    /// # Errors
    /// [`Error::DriverNotFound`] when libcuda cannot be loaded, [`Error::NoDevice`] when
    /// there is no device `ordinal`, [`Error::AbiMismatch`] / [`Error::BadCatalogue`] for a
    /// module generated by an incompatible im2win-codegen, [`Error::Driver`] when the
    /// driver fails otherwise.
    pub fn new(ordinal: usize, kernels: KernelModule) -> Result<Engine> {
        // SAFETY: only tries to dlopen libcuda. cudarc panics on the first driver call when
        // the library is missing, so this check must come before any. (Linked at build time,
        // feature `dynamic-linking`, libcuda is there whenever this code runs.)
        #[cfg(not(feature = "dynamic-linking"))]
        if !unsafe { sys::is_culib_present() } {
            return Err(Error::DriverNotFound);
        }
        let count = match CudaContext::device_count() {
            Ok(count) => usize::try_from(count).unwrap_or(0),
            // cuInit reports a machine without GPUs as an error, not as zero devices.
            Err(DriverError(sys::cudaError_enum::CUDA_ERROR_NO_DEVICE)) => 0,
            Err(err) => return Err(err.into()),
        };
        if ordinal >= count {
            return Err(Error::NoDevice { ordinal, count });
        }
        Engine::with_context(CudaContext::new(ordinal)?, kernels)
    }

    /// An engine on the context object `ctx` (a caller's `CudaContext::new(ordinal)`), with
    /// a non-blocking launch stream of its own made on it. The context's error slot is
    /// shared with the caller; the engine reports only the errors of its own calls
    /// (docs/RELIABILITY.md).
    ///
    /// # Errors
    /// As [`Engine::on_stream`], and [`Error::Driver`] when the stream cannot be made.
    pub fn with_context(ctx: Arc<CudaContext>, kernels: KernelModule) -> Result<Engine> {
        let stream = ctx.new_stream()?;
        Engine::on_stream(stream, kernels)
    }

    /// An engine that launches on the caller's `stream` (for example a framework's, so
    /// that convolutions queue in order with its other work and need no cross-stream
    /// ordering). The stream's context object is the engine's ([`Engine::context`]).
    /// Loading the kernels waits for the stream once, here.
    ///
    /// # Errors
    /// [`Error::AbiMismatch`] / [`Error::BadCatalogue`] for a module generated by an
    /// incompatible im2win-codegen, [`Error::Driver`] when the driver fails.
    pub fn on_stream(stream: Arc<CudaStream>, kernels: KernelModule) -> Result<Engine> {
        for part in kernels.parts() {
            part.check_catalogue()?;
        }
        let ctx = stream.context().clone();
        ctx.bind_to_thread()?;
        let limits = DeviceLimits::of(&ctx)?;
        let tuning = RwLock::new(TuningTable::new(ctx.name()?));
        let join = StreamJoin::new(&ctx)?;
        let engine = Engine {
            ctx,
            stream,
            kernels,
            limits,
            modules: LoadedModules::default(),
            functions: Mutex::new(HashMap::new()),
            dynamic_shared: Mutex::new(HashMap::new()),
            launch: Mutex::new(LaunchState {
                workspace: None,
                join,
            }),
            tuning,
            workspace_limit: None,
            plans: Mutex::new(HashMap::new()),
        };
        engine.preload()?;
        Ok(engine)
    }

    /// Loads the fatbins and every kernel they hold now, so that the first convolution of
    /// a new shape costs no module load (the load takes milliseconds, many times a small
    /// convolution). A module built without kernels is left for the launch to report.
    fn preload(&self) -> Result<()> {
        if !self.kernels.is_built() {
            return Ok(());
        }
        // The support kernels, and the baselines where a part has them (the benchmark's).
        for name in self.kernels.catalogue().support_kernels() {
            self.function(name)?;
        }
        for spec in &self.kernels.catalogue().kernels {
            let function = self.function(&spec.name())?;
            // Kernels with more dynamic shared memory than the device gives a block are never
            // planned here (dispatch leaves them out); a forced plan fails at launch.
            if spec.dynamic_shared_bytes() <= u64::from(self.limits.shared_bytes_per_block_optin) {
                self.allow_dynamic_shared(&spec.name(), &function, spec.dynamic_shared_bytes())?;
            }
        }
        Ok(())
    }

    /// Lets `function` (the kernel `name`) launch with `bytes` of dynamic shared memory:
    /// above CUDA's default 48 KiB a kernel must opt in
    /// (`CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES`). Done once per function; the
    /// setting is remembered by name.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the device gives a block less; [`Error::Driver`] when the
    /// driver refuses the attribute.
    fn allow_dynamic_shared(&self, name: &str, function: &CudaFunction, bytes: u64) -> Result<()> {
        const DEFAULT_LIMIT: u64 = 48 * 1024;
        if bytes <= DEFAULT_LIMIT {
            return Ok(());
        }
        let limit = u64::from(self.limits.shared_bytes_per_block_optin);
        if bytes > limit {
            return Err(Error::TooLarge {
                what: "dynamic shared memory of one block of the kernel, in bytes",
                value: u128::from(bytes),
                limit: u128::from(limit),
            });
        }
        let mut set = lock(&self.dynamic_shared);
        if set.get(name).is_some_and(|&done| u64::from(done) >= bytes) {
            return Ok(());
        }
        // `bytes` is at most the device's limit, a u32.
        let value = u32::try_from(bytes).unwrap_or(u32::MAX);
        function.set_attribute(
            sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            i32::try_from(value).unwrap_or(i32::MAX),
        )?;
        set.insert(name.to_string(), value);
        Ok(())
    }

    /// The same engine, using `table`'s measured choices if it was made on this GPU model
    /// (its `device` equals the driver's name for this GPU); otherwise `table` is ignored
    /// and dispatch stays with the heuristic. Entries recorded earlier are kept unless
    /// `table` has the same problem.
    pub fn with_tuning(self, table: TuningTable) -> Self {
        lock(&self.plans).clear();
        {
            let mut tuning = self.tuning.write().unwrap_or_else(PoisonError::into_inner);
            if table.device == tuning.device {
                for entry in table.entries {
                    tuning.insert(entry);
                }
            }
        }
        self
    }

    /// A copy of the engine's tuning table: what [`Engine::with_tuning`] supplied and
    /// [`Engine::autotune`] measured, for this GPU (`device` is the GPU's name).
    pub fn tuning(&self) -> TuningTable {
        self.tuning
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records a measured choice ([`Engine::autotune`]).
    pub(super) fn record_tuning(&self, entry: TuningEntry) {
        lock(&self.plans).clear();
        self.tuning
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry);
    }

    /// The engine's context object (of the device's primary context): its own
    /// ([`Engine::new`]) or the one of the stream or context it was given.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The launch stream: every launch of this engine goes to it.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernels this engine launches.
    pub fn kernels(&self) -> &KernelModule {
        &self.kernels
    }

    /// Streaming multiprocessors of the device (132 on an H200).
    pub fn multiprocessors(&self) -> usize {
        usize::try_from(self.limits.multiprocessors).unwrap_or(usize::MAX)
    }

    /// The device's limits that dispatch plans with, read from the driver.
    pub fn device_limits(&self) -> &DeviceLimits {
        &self.limits
    }

    /// Chooses the kernel for `problem`: the tuning table's measured choice when it has
    /// this exact problem (and its kernel is in the catalogue), else the dispatch heuristic
    /// ([`Plan::for_device`], with the limits read from this device). Never times anything.
    /// Assumes the input and filter start at 16-byte aligned addresses (every allocation
    /// does); [`Engine::conv2d`] plans with its operands' own alignment
    /// ([`Engine::plan_for_operands`]).
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn plan(&self, problem: &Conv2dProblem) -> Result<Plan> {
        self.plan_for_operands(problem, OPERAND_ALIGNMENT)
    }

    /// [`Engine::plan`] for input and filter that both start at a multiple of `aligned_to`
    /// bytes: a tuned or dispatched kernel that needs 16-byte aligned operands
    /// ([`im2win_codegen::KernelSpec::needs_aligned_operands`], the tensor-core kernels with
    /// vector loads) is chosen only when they are ([`Plan::for_operands`]).
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn plan_for_operands(&self, problem: &Conv2dProblem, aligned_to: usize) -> Result<Plan> {
        self.plan_with(
            problem,
            &PlanOptions {
                aligned_to,
                workspace_limit: self.workspace_limit,
                prepared_filter: false,
            },
        )
    }

    /// The plan for `problem` under `options` (alignment, workspace limit, prepared filter):
    /// the tuning table's entry when it fits them, else dispatch ([`Plan::with_options`]).
    /// The engine's own workspace limit ([`Engine::with_workspace_limit`]) is not applied
    /// here: `options` says what this call allows.
    ///
    /// # Errors
    /// As [`Plan::with_options`].
    pub fn plan_with(&self, problem: &Conv2dProblem, options: &PlanOptions) -> Result<Plan> {
        let key = (*problem, *options);
        if let Some(plan) = lock(&self.plans).get(&key) {
            return Ok(plan.clone());
        }
        let plan = self.plan_uncached(problem, options)?;
        let mut plans = lock(&self.plans);
        if plans.len() >= PLAN_CACHE_ENTRIES {
            plans.clear();
        }
        plans.insert(key, plan.clone());
        Ok(plan)
    }

    /// [`Engine::plan_with`] without the cache.
    fn plan_uncached(&self, problem: &Conv2dProblem, options: &PlanOptions) -> Result<Plan> {
        let tuned = self
            .tuning
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .plan(problem, self.kernels.catalogue());
        let tuned = tuned.and_then(|plan| {
            let plan = if options.prepared_filter {
                plan.with_prepared_filter().ok()?
            } else {
                plan
            };
            (operands_fit(plan.kernel(), options.aligned_to)
                && options.fits(plan.workspace_bytes()))
            .then_some(plan)
        });
        match tuned {
            Some(plan) => Ok(plan),
            None => Plan::with_options(problem, self.kernels.catalogue(), &self.limits, options),
        }
    }

    /// The same engine with a workspace limit: every plan it makes ([`Engine::plan`],
    /// [`Engine::conv2d`], [`Engine::prepare_filter`]) is the fastest whose workspace is at
    /// most `bytes` ([`Plan::workspace_bytes`]), or [`Error::WorkspaceLimit`] when none fits
    /// (a tensor-core kernel on NCHW tensors always needs the input's NHWC copy). `None`
    /// (the default): no limit. A call with a plan ([`Engine::conv2d_with`]) runs that plan
    /// whatever its workspace; [`Engine::plan_with`] takes a limit per call.
    pub fn with_workspace_limit(mut self, bytes: Option<usize>) -> Self {
        lock(&self.plans).clear();
        self.workspace_limit = bytes;
        self
    }

    /// The engine's workspace limit ([`Engine::with_workspace_limit`]).
    pub fn workspace_limit(&self) -> Option<usize> {
        self.workspace_limit
    }

    /// The dispatch heuristic's plan for `problem`, ignoring the tuning table.
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn heuristic_plan(&self, problem: &Conv2dProblem) -> Result<Plan> {
        Plan::for_device(problem, self.kernels.catalogue(), &self.limits)
    }

    /// A kernel of the fatbin by its `extern "C"` name, e.g. a support kernel of
    /// [`im2win_codegen::catalogue::support`], or a baseline of
    /// [`im2win_codegen::catalogue::baselines`] (the benchmark launches those itself, from
    /// its own module merged into the engine's). Loads the fatbin on first use; functions are
    /// cached by name.
    ///
    /// # Errors
    /// [`Error::KernelsNotBuilt`] when the module has no fatbin, [`Error::KernelMissing`]
    /// when the fatbin has no kernel of that name, [`Error::AbiMismatch`] when the fatbin
    /// was generated for another interface, [`Error::Driver`] when loading fails.
    pub fn function(&self, name: &str) -> Result<CudaFunction> {
        let mut functions = lock(&self.functions);
        if let Some(function) = functions.get(name) {
            return Ok(function.clone());
        }
        let missing = || Error::KernelMissing {
            name: name.to_string(),
        };
        // cudarc's `load_function` panics on an interior NUL; no kernel has one.
        if name.contains('\0') {
            return Err(missing());
        }
        let module = self.modules.for_kernel(&self.stream, &self.kernels, name)?;
        let function = match module.load_function(name) {
            Ok(function) => function,
            Err(DriverError(sys::cudaError_enum::CUDA_ERROR_NOT_FOUND)) => return Err(missing()),
            Err(err) => return Err(err.into()),
        };
        functions.insert(name.to_string(), function.clone());
        Ok(function)
    }

    /// A launch configuration for the grid-stride kernels over `len` elements: blocks of
    /// 256 threads, as many as cover `len` but at most 32 per SM (each thread then loops).
    pub fn grid_stride_config(&self, len: usize) -> LaunchConfig {
        let max_blocks = self
            .multiprocessors()
            .saturating_mul(GRID_STRIDE_BLOCKS_PER_SM)
            .min(i32::MAX as usize);
        let blocks = len
            .div_ceil(GRID_STRIDE_THREADS as usize)
            .clamp(1, max_blocks.max(1));
        LaunchConfig {
            grid_dim: (u32::try_from(blocks).unwrap_or(1), 1, 1),
            block_dim: (GRID_STRIDE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `output = conv2d(input, filter) + bias` on device buffers of the problem's element
    /// type (`f32` unless [`Conv2dProblem::dtype`] says otherwise), with the kernel
    /// [`Engine::plan`] picks for the problem's element type and precision. See
    /// [`Engine::conv2d_with`] for the buffers and errors.
    ///
    /// Dispatch sees the operands: when the input or the filter does not start at a 16-byte
    /// aligned address (a view at an odd offset), kernels that copy them 16 bytes at a time
    /// (the tensor-core kernels with vector loads) are not among the candidates
    /// ([`Engine::plan_for_operands`]), and the element-wise kernel of the same family runs.
    ///
    /// # Errors
    /// As [`Engine::plan`] (among them [`Error::NoKernelForType`] when the engine's kernels
    /// include none of the problem's element type and precision) and
    /// [`Engine::conv2d_with`].
    pub fn conv2d<T: Element>(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<T>,
        filter: &dyn DevicePtr<T>,
        bias: Option<&dyn DevicePtr<T>>,
        output: &mut dyn DevicePtrMut<T>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        // Buffers of another type are the caller's mistake, whatever the catalogue holds.
        problem.shape()?;
        check_dtype::<T>(problem)?;
        let plan = self.plan(problem)?;
        let replan = |aligned_to| self.plan_for_operands(problem, aligned_to);
        let operands = Operands {
            input,
            filter,
            bias,
            residual: None,
        };
        self.launch_plan(&plan, Some(&replan), operands, output, workspace)
    }

    /// Runs `plan`: the im2win input transform (unless [`Plan::input_in_place`]), the filter
    /// transform, the planned convolution kernel and, for a split reduction
    /// ([`Plan::splits`] > 1), the kernel that adds the splits, in that order on
    /// [`Engine::stream`], without synchronising.
    ///
    /// Buffers hold the problem's element type ([`Conv2dProblem::dtype`]: `f32`,
    /// [`half::bf16`] or [`half::f16`], any [`Element`]; another type is refused with
    /// [`Error::DTypeMismatch`], never converted) in the problem's layouts (input and output
    /// NCHW or NHWC, filter KCRS or KRSC): `input` `N·C·H·W`, `filter` `K·C·R·S`, `bias` `K`,
    /// `output` `N·K·P·Q` elements, the output written as the problem's epilogue says, each
    /// a [`CudaSlice`] or a view into a larger one. The
    /// workspace holds the transformed input and filter and any partial sums; it needs
    /// [`Plan::workspace_bytes`] bytes and a 256-byte aligned start (every fresh allocation
    /// has one). Without it the engine uses its own, grown as needed and kept for later
    /// calls.
    ///
    /// The buffers may belong to any stream of any context object of the engine's CUDA
    /// context: the launches wait for all work queued so far on each buffer's stream, and
    /// each buffer's stream waits for the launches, so the buffers can be read, written or
    /// dropped on their own streams right after the call (docs/RELIABILITY.md).
    ///
    /// Every buffer is checked before anything is launched. A plan whose kernel copies the
    /// input and filter 16 bytes at a time ([`im2win_codegen::KernelSpec::needs_aligned_operands`])
    /// needs both at 16-byte aligned addresses ([`Engine::conv2d`] chooses another kernel
    /// instead).
    ///
    /// # Errors
    /// [`Error::DTypeMismatch`] for buffers of another element type than the problem's,
    /// [`Error::BufferLength`] for a buffer of the wrong length, [`Error::ForeignBuffer`]
    /// for one of another CUDA context, [`Error::Misaligned`] for an input or filter that
    /// the kernel cannot read, [`Error::WorkspaceTooSmall`] / [`Error::Misaligned`]
    /// for an unusable workspace, [`Error::KernelsNotBuilt`] / [`Error::KernelMissing`] when
    /// the fatbin lacks a kernel, [`Error::OutOfMemory`] when the engine's own workspace
    /// cannot be allocated (the engine stays usable), [`Error::Driver`] when a launch or an
    /// ordering step of this call fails.
    pub fn conv2d_with<T: Element>(
        &self,
        plan: &Plan,
        input: &dyn DevicePtr<T>,
        filter: &dyn DevicePtr<T>,
        bias: Option<&dyn DevicePtr<T>>,
        output: &mut dyn DevicePtrMut<T>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        self.conv2d_with_residual(plan, input, filter, bias, None, output, workspace)
    }

    /// [`Engine::conv2d_with`] for a problem whose epilogue adds a residual
    /// ([`Epilogue::residual`](crate::Epilogue::residual)): `residual` is a tensor of the
    /// output's shape and layout (`N·K·P·Q` elements), read once, in the convolution's
    /// epilogue or the split reduction, never by a pass of its own. It may be the output
    /// buffer's twin but not the output itself (the kernels read and write it in one pass).
    ///
    /// # Errors
    /// As [`Engine::conv2d_with`]; [`Error::ResidualMismatch`] when `residual` is given to a
    /// problem without a residual or missing for one with it.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_with_residual<T: Element>(
        &self,
        plan: &Plan,
        input: &dyn DevicePtr<T>,
        filter: &dyn DevicePtr<T>,
        bias: Option<&dyn DevicePtr<T>>,
        residual: Option<&dyn DevicePtr<T>>,
        output: &mut dyn DevicePtrMut<T>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        let operands = Operands {
            input,
            filter,
            bias,
            residual,
        };
        self.launch_plan(plan, None, operands, output, workspace)
    }

    /// Checks the buffers and runs `plan` (see [`Engine::conv2d_with_residual`]). When the
    /// plan's kernel cannot read the operands at their addresses (vector loads of a
    /// misaligned input or filter), `replan` (given the addresses' alignment) chooses the
    /// plan that runs instead; without it that is [`Error::Misaligned`].
    pub(crate) fn launch_plan<T: Element>(
        &self,
        plan: &Plan,
        replan: Option<&dyn Fn(usize) -> Result<Plan>>,
        operands: Operands<'_, T>,
        output: &mut dyn DevicePtrMut<T>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        let Operands {
            input,
            filter,
            bias,
            residual,
        } = operands;
        let problem = plan.problem();
        let shape = plan.shape();
        // A prepared filter is read in its own form and length.
        let filter_len = if plan.reads_prepared_filter() {
            plan.prepared_filter_len()?
        } else {
            shape.filter_len
        };
        self.check_operands(problem, input, (filter, filter_len), bias)?;
        self.check_residual(problem, shape, residual)?;
        self.check_buffer("output", shape.output_len, output.len(), output.stream())?;
        if let Some(ws) = &workspace {
            self.check_context("workspace", ws.stream())?;
            if ws.num_bytes() < plan.workspace_bytes() {
                return Err(Error::WorkspaceTooSmall {
                    expected: plan.workspace_bytes(),
                    actual: ws.num_bytes(),
                });
            }
        }
        let params = ConvParams::from_shape(problem, shape, bias.is_some())?;
        // The kernels of the plan, loaded before any ordering (a module may load here).
        let kernels = |plan: &Plan| -> Result<(CudaFunction, Option<CudaFunction>)> {
            let spec = plan.kernel();
            // A forced plan may name a kernel this GPU cannot run (its image would trap).
            if let Some(requirement) = device_unmet(spec, &self.limits) {
                return Err(Error::KernelRequirement {
                    kernel: spec.name(),
                    requirement,
                });
            }
            let conv = self.function(&spec.name())?;
            self.allow_dynamic_shared(&spec.name(), &conv, spec.dynamic_shared_bytes())?;
            let reduce = match plan.splits() {
                1 => None,
                _ => Some(self.function(support::split_reduce(spec.dtype))?),
            };
            Ok((conv, reduce))
        };
        let planned = kernels(plan)?;
        let streams: Vec<Arc<CudaStream>> = [Some(input.stream()), Some(filter.stream())]
            .into_iter()
            .chain([bias.map(|b| b.stream()), residual.map(|r| r.stream())])
            .chain([
                Some(output.stream()),
                workspace.as_ref().map(|ws| ws.stream()),
            ])
            .flatten()
            .cloned()
            .collect();

        self.ordered(&streams, |state| {
            let stream: &CudaStream = &self.stream;
            let (x, _x_sync) = input.device_ptr(stream);
            let (f, _f_sync) = filter.device_ptr(stream);
            // The operands' addresses are known only now: a kernel that cannot read them
            // gives way to the one dispatch chooses for them, or the call fails.
            // (What the kernel reads: a tensor-core plan may read copies in the workspace.)
            let aligned_to = read_alignment(plan.kernel(), problem, address_alignment(x, f));
            let replanned;
            let (plan, (conv, reduce)) = if operands_fit(plan.kernel(), aligned_to) {
                (plan, planned)
            } else {
                replanned = match replan {
                    Some(replan) => replan(aligned_to)?,
                    None => plan.clone(),
                };
                if !operands_fit(replanned.kernel(), aligned_to) {
                    let buffer = if x % OPERAND_ALIGNMENT as u64 == 0 {
                        "filter"
                    } else {
                        "input"
                    };
                    return Err(Error::Misaligned {
                        buffer,
                        alignment: OPERAND_ALIGNMENT,
                    });
                }
                (&replanned, kernels(&replanned)?)
            };
            let needed = plan.workspace_bytes();
            let workspace: Option<&mut dyn DevicePtrMut<u8>> = match workspace {
                Some(ws) if ws.num_bytes() < needed => {
                    return Err(Error::WorkspaceTooSmall {
                        expected: needed,
                        actual: ws.num_bytes(),
                    });
                }
                Some(ws) => Some(ws),
                // Nothing to allocate for a kernel without workspace (tensor cores).
                None if needed == 0 => None,
                None => Some(match &mut state.workspace {
                    Some(ws) if ws.len() >= needed => ws,
                    slot => {
                        // Free the old buffer before allocating its successor.
                        *slot = None;
                        let ws = self.stream.alloc_zeros::<u8>(needed);
                        slot.insert(ws.map_err(|err| allocation_error(err, "workspace", needed))?)
                    }
                }),
            };
            let (b, _b_sync) = bias_ptr(bias, stream);
            let (res, _res_sync) = bias_ptr(residual, stream);
            let (y, _y_sync) = output.device_ptr_mut(stream);
            let (ws, _ws_sync) = match workspace {
                Some(workspace) => {
                    let (ws, sync) = workspace.device_ptr_mut(stream);
                    (ws, Some(sync))
                }
                None => (0, None),
            };
            if ws % WORKSPACE_ALIGNMENT != 0 {
                return Err(Error::Misaligned {
                    buffer: "workspace",
                    alignment: WORKSPACE_ALIGNMENT as usize,
                });
            }
            // cudarc queued its own event waits while handing out the pointers and records
            // a failed one in the context: launch nothing unordered.
            self.ctx.check_err()?;
            let t = self.launch_transforms(plan, &params, x, f, ws)?;
            // The transformed filter, or the filter itself for a kernel that reads it in place.
            let ft = if plan.transforms_filter() {
                ws + plan.filter_offset_bytes() as u64
            } else {
                f
            };
            // A split reduction's kernel writes its partial sums, and the reduction writes Y.
            let partial = plan.partial_offset_bytes().map(|offset| ws + offset as u64);

            // A kernel whose operands the copy engine moves takes their tensor maps (tma.rs).
            let maps = if plan.kernel().variant.tma {
                Some((
                    tma::input_map(plan.kernel(), &params, t)?,
                    tma::filter_map(plan.kernel(), &params, ft)?,
                ))
            } else {
                None
            };
            let mut launch = stream.launch_builder(&conv);
            let conv_out = partial.unwrap_or(y);
            launch
                .arg(&t)
                .arg(&ft)
                .arg(&b)
                .arg(&res)
                .arg(&conv_out)
                .arg(&params);
            if let Some((input_map, filter_map)) = &maps {
                launch.arg(input_map).arg(filter_map);
            }
            let config = LaunchConfig {
                grid_dim: plan.launch_grid(&self.limits),
                block_dim: plan.block_dim(),
                shared_mem_bytes: plan.dynamic_shared_bytes(),
            };
            // SAFETY: `(const T* t, const T* ft, const T* bias, const T* residual, T* y,
            // ConvParams p)` with T the plan's element type, which `check_operands` checked
            // the buffers against; the plan's spec can implement this problem
            // (`Plan::for_spec`), `t` holds `im2win_len` elements (the workspace's, or the
            // input in place), `ft` the transformed filter (or, for a tensor-core kernel,
            // the KRSC filter itself, `filter_len` elements, read in place; with vector
            // loads both `t` and `ft` are 16-byte aligned, checked above), `bias` K elements
            // or null with has_bias == 0, `residual` `output_len` elements or null with
            // has_residual == 0, and `conv_out` `output_len` elements (`y`), or
            // `splits · output_len` floats (the partial sums, when grid_dim.z = splits > 1).
            // The dynamic shared memory is what the kernel was rendered for
            // (`KernelSpec::dynamic_shared_bytes`), allowed on its function above. A
            // persistent kernel's blocks take every tile of `grid_dim` whatever the launch's
            // grid (`Plan::launch_grid`). A TMA kernel (`Variant::tma`) takes two
            // `TensorMap`s more, describing `t` (NHWC, `C` a multiple of its `block_k`,
            // which dispatch checked with the copy engine's limits) and `ft` (KRSC).
            unsafe { launch.launch(config) }?;

            if let (Some(reduce), Some(partial)) = (&reduce, partial) {
                let splits = i32::try_from(plan.splits()).unwrap_or(i32::MAX);
                let mut launch = stream.launch_builder(reduce);
                launch
                    .arg(&partial)
                    .arg(&b)
                    .arg(&res)
                    .arg(&y)
                    .arg(&params)
                    .arg(&splits);
                // SAFETY: `im2win_split_reduce_<T>(const float* part, const T* bias,
                // const T* residual, T* y, ConvParams p, int splits)` with T the plan's
                // element type (`support::split_reduce`), grid-stride over `output_len`;
                // `partial` holds `splits · output_len` floats (the plan's layout), `y` and
                // `residual` (or null with has_residual == 0) `output_len` elements, `bias` K
                // elements or null with has_bias == 0.
                unsafe { launch.launch(self.grid_stride_config(shape.output_len)) }?;
            }
            // The `_sync` guards drop here and record the launches in the buffers' events.
            Ok(())
        })
    }

    /// Runs the layout transforms of `plan` alone, exactly as [`Engine::conv2d_with`] does
    /// before its convolution (for timing them): the input transform into the workspace
    /// (none when [`Plan::input_in_place`]) and the filter transform (none when the kernel
    /// reads the filter in place, [`Plan::transforms_filter`]: a tensor-core plan has no
    /// transform at all). Same buffers, checks,
    /// ordering and errors as [`Engine::conv2d_with`], except that the workspace is
    /// required.
    ///
    /// # Errors
    /// As [`Engine::conv2d_with`].
    pub fn transforms<T: Element>(
        &self,
        plan: &Plan,
        input: &dyn DevicePtr<T>,
        filter: &dyn DevicePtr<T>,
        workspace: &mut dyn DevicePtrMut<u8>,
    ) -> Result<()> {
        let problem = plan.problem();
        self.check_operands(problem, input, (filter, plan.shape().filter_len), None)?;
        self.check_context("workspace", workspace.stream())?;
        if workspace.num_bytes() < plan.workspace_bytes() {
            return Err(Error::WorkspaceTooSmall {
                expected: plan.workspace_bytes(),
                actual: workspace.num_bytes(),
            });
        }
        let params = ConvParams::from_shape(problem, plan.shape(), false)?;
        let streams = [input.stream(), filter.stream(), workspace.stream()].map(Arc::clone);
        self.ordered(&streams, |_| {
            let stream: &CudaStream = &self.stream;
            let (x, _x_sync) = input.device_ptr(stream);
            let (f, _f_sync) = filter.device_ptr(stream);
            let (ws, _ws_sync) = workspace.device_ptr_mut(stream);
            if ws % WORKSPACE_ALIGNMENT != 0 {
                return Err(Error::Misaligned {
                    buffer: "workspace",
                    alignment: WORKSPACE_ALIGNMENT as usize,
                });
            }
            self.ctx.check_err()?;
            self.launch_transforms(plan, &params, x, f, ws)?;
            Ok(())
        })
    }

    /// Queues one call's work in order with the streams of its operands (`streams`, in any
    /// order, repeats allowed), under the launch lock: binds the engine's context to this
    /// thread (the driver calls, and the free of a regrown workspace, act on the current
    /// context), makes the launch stream wait for each other stream, runs `queue`, then
    /// makes each other stream wait for the launch stream (also when `queue` failed after
    /// queuing part of its work).
    ///
    /// Errors that cudarc records in the context object instead of returning (event records
    /// and waits inside `device_ptr` and its guards) are reported by the call that caused
    /// them: those recorded before the call, by other code sharing the context object, are
    /// set aside and put back afterwards, neither reported nor hidden.
    pub(super) fn ordered<T>(
        &self,
        streams: &[Arc<CudaStream>],
        queue: impl FnOnce(&mut LaunchState) -> Result<T>,
    ) -> Result<T> {
        let mut state = lock(&self.launch);
        // First, since every cudarc call that binds the context (nearly all do) reports and
        // clears whatever the slot holds.
        let earlier = self.ctx.check_err();
        let mut others = Vec::new();
        let result = (|| {
            self.ctx.bind_to_thread()?;
            others = other_streams(&self.stream, streams.iter().map(|s| &**s));
            state.join.wait_for(&self.stream, &others)?;
            queue(&mut state)
        })();
        let released = state.join.release_to(&self.stream, &others);
        let recorded = self.ctx.check_err();
        if let Err(theirs) = earlier {
            self.ctx.record_err::<()>(Err(theirs));
        }
        let value = result?;
        released?;
        recorded?;
        Ok(value)
    }

    /// Launches the transforms of `plan` on device pointers already checked by the caller
    /// (`x` the input, `f` the filter, `ws` a large enough, aligned workspace) and returns the
    /// pointer the convolution reads as `T`: the im2win buffer, or `x` when the input is
    /// used in place.
    fn launch_transforms(
        &self,
        plan: &Plan,
        params: &ConvParams,
        x: u64,
        f: u64,
        ws: u64,
    ) -> Result<u64> {
        let shape = plan.shape();
        let stream: &CudaStream = &self.stream;
        if plan.kernel().is_grouped() {
            // The grouped kernels read input and filter in place: nothing to transform.
            return Ok(x);
        }
        if plan.kernel().math.is_tensor_op() {
            return self.launch_channels_last(plan, x, f, ws);
        }
        let ft = ws + plan.filter_offset_bytes() as u64;
        let dtype = plan.kernel().dtype;
        let t = if plan.input_in_place() {
            x
        } else {
            // Only float32 kernels read a window buffer (`KernelSpec::validate`), and only
            // float32 has an input transform.
            if dtype != DType::F32 {
                return Err(Error::KernelMissing {
                    name: format!("im2win_input_transform_{dtype}"),
                });
            }
            let problem = plan.problem();
            let input_transform = self.function(support::input_transform(problem.layout))?;
            let mut launch = stream.launch_builder(&input_transform);
            launch.arg(&x).arg(&ws).arg(params);
            let [n, c, _, _] = problem.input;
            let tiled =
                problem.layout == Layout::Nhwc && support::nhwc_input_tiled(c, problem.filter[2]);
            let config = if tiled {
                // A block per tile of 32 columns by 8 channels of an output row.
                let p = shape.output[2];
                let tiles = n * p * c.div_ceil(8) * shape.win_width.div_ceil(32);
                self.grid_stride_config(tiles.saturating_mul(GRID_STRIDE_THREADS as usize))
            } else {
                let per_block = GRID_STRIDE_THREADS as usize * INPUT_TRANSFORM_ELEMENTS_PER_THREAD;
                self.grid_stride_config(shape.im2win_len.div_ceil(per_block) * 256)
            };
            // SAFETY: `im2win_input_transform_f32` / `_nhwc_f32(const float* x, float* t,
            // ConvParams p)` (DESIGN.md); `x` holds `input_len` floats and the workspace from `ws` on at
            // least `im2win_len` (the plan's layout puts T first), and the kernel stays
            // inside them for any grid.
            unsafe { launch.launch(config) }?;
            ws
        };
        if plan.transforms_filter() {
            self.launch_filter_form(plan, params, f, ft)?;
        }
        Ok(t)
    }

    /// Launches what puts the filter `f` (the problem's, checked by the caller) into the
    /// form the plan's kernel reads ([`Plan::filter_format`]) at `dst` (the workspace's
    /// filter part, or a prepared filter's buffer, [`Plan::prepared_filter_len`] elements):
    /// the filter transform of the SIMT kernels, the KRSC transpose of a KCRS filter, or a
    /// copy of a KRSC one or of the filter as given (the grouped kernels).
    pub(super) fn launch_filter_form(
        &self,
        plan: &Plan,
        params: &ConvParams,
        f: u64,
        dst: u64,
    ) -> Result<()> {
        let problem = plan.problem();
        let shape = plan.shape();
        let dtype = plan.kernel().dtype;
        let format = plan.filter_format();
        if matches!(format, FilterFormat::Krsc | FilterFormat::Given) {
            let [k, c, r, s] = problem.filter;
            if format == FilterFormat::Krsc
                && problem.filter_layout == FilterLayout::Kcrs
                && r * s > 1
            {
                return self.launch_channels_last_copy(dtype, f, dst, k, c, r * s);
            }
            let bytes = shape.filter_len * dtype.size_bytes();
            // SAFETY: both hold `filter_len` elements of the plan's type (the filter, checked
            // by the caller; `dst`, sized by the caller from the plan).
            unsafe {
                cudarc::driver::result::memcpy_dtod_async(dst, f, bytes, self.stream.cu_stream())
            }?;
            return Ok(());
        }
        // Each variant walks the reduction in its own order (docs/DESIGN.md), and each
        // element type has its transform (TF32 kernels read the float32 one).
        let filter_transform = self.function(support::filter_transform(
            dtype,
            plan.kernel().variant.fused,
        ))?;
        let mut launch = self.stream.launch_builder(&filter_transform);
        launch.arg(&f).arg(&dst).arg(params);
        // One block per 32 × 32 tile of (C·R·S, K rounded up to 4), grid-stride beyond.
        let columns = WorkspaceLayout::filter_columns_for(shape.output[1], dtype);
        let tiles = shape.reduction.div_ceil(32) * columns.div_ceil(32);
        let config = self.grid_stride_config(tiles * GRID_STRIDE_THREADS as usize);
        // SAFETY: `im2win_filter_transform[_fused]_f32(const float* f, float* a, ConvParams p)`;
        // `f` holds `filter_len` floats and `dst` the C·R·S × K4 transformed filter
        // (`Plan::prepared_filter_len`), for any grid.
        unsafe { launch.launch(config) }?;
        Ok(())
    }

    /// Launches the channels-last copies of a tensor-core `plan` (its kernel reads NHWC
    /// windows and KRSC filter rows): an NCHW input `x` to NHWC and a KCRS filter `f` to
    /// KRSC, each into its part of the workspace `ws`, when the problem has them (the filter
    /// not when the plan reads a prepared one). Returns the input the kernel reads: the
    /// copy, or `x`.
    fn launch_channels_last(&self, plan: &Plan, x: u64, f: u64, ws: u64) -> Result<u64> {
        let problem = plan.problem();
        let layout = plan.workspace_layout();
        let dtype = plan.kernel().dtype;
        let [n, c, h, w] = problem.input;
        let [k, _, r, s] = problem.filter;
        let input = match layout.channels_last_input_offset() {
            Some(offset) => {
                let copy = ws + offset as u64;
                self.launch_channels_last_copy(dtype, x, copy, n, c, h * w)?;
                copy
            }
            None => x,
        };
        if layout.transforms_filter() {
            self.launch_channels_last_copy(
                dtype,
                f,
                ws + layout.filter_offset() as u64,
                k,
                c,
                r * s,
            )?;
        }
        Ok(input)
    }

    /// `dst[b][i][c] = src[b][c][i]`, b < batches, c < channels, i < spatial, in elements of
    /// `dtype` (the channels-last transpose of an NCHW input or a KCRS filter).
    fn launch_channels_last_copy(
        &self,
        dtype: DType,
        src: u64,
        dst: u64,
        batches: usize,
        channels: usize,
        spatial: usize,
    ) -> Result<()> {
        let transpose = self.function(support::channels_last(dtype))?;
        // Grid-stride over 64 × 64 tiles (256 threads each) or, below 32 pixels, over
        // elements (one each): the kernel's two ways.
        let threads = if spatial >= 32 {
            batches * channels.div_ceil(64) * spatial.div_ceil(64) * 256
        } else {
            batches * channels * spatial
        };
        // Validated dimensions: each fits an int, their products a long long.
        let (batches, channels, spatial) = (batches as i64, channels as i32, spatial as i64);
        let mut builder = self.stream.launch_builder(&transpose);
        builder
            .arg(&src)
            .arg(&dst)
            .arg(&batches)
            .arg(&channels)
            .arg(&spatial);
        // SAFETY: `im2win_channels_last_b16/_b32(const T* src, T* dst, long long batches,
        // int channels, long long spatial)` with T the bits of `dtype`; `src` holds
        // `batches · channels · spatial` elements (an operand, checked by the caller) and
        // `dst` as many (its part of the workspace, or a prepared filter's buffer, sized so
        // from the plan by the caller); the kernel stays inside both for any 1-D grid of
        // 256-thread blocks.
        unsafe { builder.launch(self.grid_stride_config(threads)) }?;
        Ok(())
    }

    /// The GPU oracle: `output = conv2d(input, filter) + bias` computed directly from `X`
    /// and `F` (not through im2win) in float64 by `im2win_direct_reference_f64`, on
    /// [`Engine::stream`] without synchronising, ordered with the buffers' streams as
    /// [`Engine::conv2d_with`] is.
    ///
    /// The buffers are float32 whatever the problem's element type and precision: the
    /// oracle convolves exactly the values it is given. For a bf16 or f16 problem give the
    /// operands' values widened to float32 ([`Element::to_f32`], exact), for a TF32 problem
    /// the operands rounded to TF32 ([`round_to_tf32`](crate::round_to_tf32)); bias and
    /// residual as the kernels read them (widened, never rounded to TF32). Then the result
    /// is the float64 reference of the same rounded inputs.
    ///
    /// # Errors
    /// Any validation error of [`Conv2dProblem::shape`], [`Error::BufferLength`] /
    /// [`Error::ForeignBuffer`] for a wrong buffer, [`Error::KernelsNotBuilt`] /
    /// [`Error::KernelMissing`] / [`Error::Driver`] as for [`Engine::function`].
    pub fn direct_reference_f64(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<f32>,
        filter: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
        output: &mut dyn DevicePtrMut<f64>,
    ) -> Result<()> {
        self.direct_reference_f64_with_residual(problem, input, filter, bias, None, output)
    }

    /// [`Engine::direct_reference_f64`] with the residual of the problem's epilogue (see
    /// [`Engine::conv2d_with_residual`]); the whole epilogue is computed in float64.
    ///
    /// # Errors
    /// As [`Engine::direct_reference_f64`]; [`Error::ResidualMismatch`] as
    /// [`Engine::conv2d_with_residual`].
    pub fn direct_reference_f64_with_residual(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<f32>,
        filter: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
        residual: Option<&dyn DevicePtr<f32>>,
        output: &mut dyn DevicePtrMut<f64>,
    ) -> Result<()> {
        // The oracle reads float32 values, whatever the problem's tensors hold.
        let values = problem
            .with_dtype(DType::F32)
            .with_precision(Precision::Strict);
        problem.shape()?;
        let problem = &values;
        let shape = problem.shape()?;
        self.check_operands(problem, input, (filter, shape.filter_len), bias)?;
        self.check_residual(problem, &shape, residual)?;
        self.check_buffer("output", shape.output_len, output.len(), output.stream())?;
        let params = ConvParams::from_shape(problem, &shape, bias.is_some())?;
        let direct = self.function(support::DIRECT_F64)?;
        let streams: Vec<Arc<CudaStream>> = [Some(input.stream()), Some(filter.stream())]
            .into_iter()
            .chain([bias.map(|b| b.stream()), residual.map(|r| r.stream())])
            .chain([Some(output.stream())])
            .flatten()
            .cloned()
            .collect();
        self.ordered(&streams, |_| {
            let stream: &CudaStream = &self.stream;
            let (x, _x_sync) = input.device_ptr(stream);
            let (f, _f_sync) = filter.device_ptr(stream);
            let (b, _b_sync) = bias_ptr(bias, stream);
            let (res, _res_sync) = bias_ptr(residual, stream);
            let (y, _y_sync) = output.device_ptr_mut(stream);
            self.ctx.check_err()?;
            let mut launch = stream.launch_builder(&direct);
            launch
                .arg(&x)
                .arg(&f)
                .arg(&b)
                .arg(&res)
                .arg(&y)
                .arg(&params);
            // SAFETY: `im2win_direct_reference_f64(const float* x, const float* f,
            // const float* bias, const float* residual, double* y, ConvParams p)`,
            // grid-stride over N·K·P·Q; every buffer's length was checked against the
            // problem above (the residual's presence against has_residual too).
            unsafe { launch.launch(self.grid_stride_config(shape.output_len)) }?;
            Ok(())
        })
    }

    /// Validates the problem, the buffers' element type and the input, filter and bias
    /// buffers, in that order.
    fn check_operands<T: Element>(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<T>,
        (filter, filter_len): (&dyn DevicePtr<T>, usize),
        bias: Option<&dyn DevicePtr<T>>,
    ) -> Result<crate::problem::ProblemShape> {
        let shape = problem.shape()?;
        check_dtype::<T>(problem)?;
        self.check_buffer("input", shape.input_len, input.len(), input.stream())?;
        self.check_buffer("filter", filter_len, filter.len(), filter.stream())?;
        if let Some(bias) = bias {
            self.check_buffer("bias", shape.output[1], bias.len(), bias.stream())?;
        }
        Ok(shape)
    }

    /// Checks that `residual` is given exactly when the problem's epilogue has one, with the
    /// output's length, on this engine's context.
    fn check_residual<T: Element>(
        &self,
        problem: &Conv2dProblem,
        shape: &crate::problem::ProblemShape,
        residual: Option<&dyn DevicePtr<T>>,
    ) -> Result<()> {
        match (problem.epilogue.residual, residual) {
            (true, Some(r)) => self.check_buffer("residual", shape.output_len, r.len(), r.stream()),
            (false, None) => Ok(()),
            (expected, _) => Err(Error::ResidualMismatch { expected }),
        }
    }

    pub(super) fn check_buffer(
        &self,
        buffer: &'static str,
        expected: usize,
        actual: usize,
        stream: &Arc<CudaStream>,
    ) -> Result<()> {
        if actual != expected {
            return Err(Error::BufferLength {
                buffer,
                expected,
                actual,
            });
        }
        self.check_context(buffer, stream)
    }

    /// A pointer from another CUDA context is meaningless in ours (or, on another device,
    /// points at someone else's memory), so refuse it rather than launch. Another context
    /// *object* of the same CUDA context is fine: `ordered` orders its streams.
    fn check_context(&self, buffer: &'static str, stream: &Arc<CudaStream>) -> Result<()> {
        if **stream.context() == *self.ctx {
            Ok(())
        } else {
            Err(Error::ForeignBuffer { buffer })
        }
    }
}

/// The operands of one convolution call: input and filter, and the optional bias and
/// residual.
pub(crate) struct Operands<'a, T> {
    pub(crate) input: &'a dyn DevicePtr<T>,
    pub(crate) filter: &'a dyn DevicePtr<T>,
    pub(crate) bias: Option<&'a dyn DevicePtr<T>>,
    pub(crate) residual: Option<&'a dyn DevicePtr<T>>,
}

/// [`Error::OutOfMemory`] for an allocation of `bytes` for `what` that the device could not
/// satisfy; any other driver error as it is.
pub(super) fn allocation_error(err: DriverError, what: &'static str, bytes: usize) -> Error {
    match err {
        DriverError(sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY) => Error::OutOfMemory {
            what,
            bytes: bytes as u128,
            on_device: true,
        },
        err => err.into(),
    }
}

/// The device address of an optional operand (bias, residual), 0 when there is none (the
/// kernels ignore it when `has_bias` / `has_residual` is 0), with the guard that records the
/// launch in the operand's events.
fn bias_ptr<'a, T>(
    bias: Option<&'a dyn DevicePtr<T>>,
    stream: &'a CudaStream,
) -> (sys::CUdeviceptr, Option<SyncOnDrop<'a>>) {
    match bias {
        Some(bias) => {
            let (ptr, sync) = bias.device_ptr(stream);
            (ptr, Some(sync))
        }
        None => (0, None),
    }
}

/// Locks `mutex`, ignoring poisoning: the guarded caches stay consistent even if a thread
/// panicked while holding them (each update is a single insert or assignment).
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn engine_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Engine>();
    }

    /// Without libcuda or a device (as on CI) `new` must return an error, not panic; on a
    /// GPU machine it succeeds and plans without loading the fatbin.
    #[test]
    fn new_fails_cleanly_or_works() {
        let module = KernelModule::not_built(im2win_codegen::Catalogue::default_catalogue());
        match Engine::new(0, module) {
            Ok(engine) => {
                let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3]);
                assert!(engine.plan(&problem).is_ok());
                assert!(matches!(
                    engine.function(support::DIRECT_F64),
                    Err(Error::KernelsNotBuilt)
                ));
            }
            Err(err) => assert!(
                matches!(err, Error::DriverNotFound | Error::NoDevice { .. }),
                "{err}"
            ),
        }
    }
}
