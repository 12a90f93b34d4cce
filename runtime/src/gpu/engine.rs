//! The engine: one CUDA context and stream, the fatbins (loaded when the engine starts), and the launches.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use cudarc::driver::{
    CudaContext, CudaFunction, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError,
    LaunchConfig, PushKernelArg, SyncOnDrop, sys,
};
use im2win_codegen::catalogue::support;

use super::dispatch::Plan;
use super::modules::LoadedModules;
use super::params::ConvParams;
use super::tuning::{TuningEntry, TuningTable};
use crate::error::{Error, Result};
use crate::kernels::KernelModule;
use crate::problem::Conv2dProblem;

/// Threads per block of the grid-stride kernels (transforms and direct convolutions).
const GRID_STRIDE_THREADS: u32 = 256;
/// Resident blocks per SM worth launching for a grid-stride kernel: enough to hide latency,
/// few enough that each thread still loops over several elements of a large buffer.
const GRID_STRIDE_BLOCKS_PER_SM: usize = 32;
/// Elements of the im2win buffer one thread of the input transform writes per loop
/// iteration (two float4 chunks).
const INPUT_TRANSFORM_ELEMENTS_PER_THREAD: usize = 8;
/// Alignment of a caller's workspace: the parts of a plan's workspace sit at 256-byte
/// offsets from its start ([`Plan::filter_offset_bytes`]), which keeps them aligned for the
/// kernels' vector accesses only if the start is.
const WORKSPACE_ALIGNMENT: u64 = 256;

/// Runs im2win convolutions on one GPU.
///
/// Owns a CUDA context (the device's primary context), its own non-blocking stream, a
/// [`KernelModule`] whose fatbins are loaded when the engine starts, and a workspace that grows to the
/// largest problem run without a caller-supplied one. Every launch goes to [`Engine::stream`]
/// and nothing synchronises implicitly: synchronise the stream (or copy results back, which
/// does) before reading results on the host.
///
/// `Engine` is `Send + Sync`; calls from several threads are serialised on its stream.
pub struct Engine {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    kernels: KernelModule,
    multiprocessors: usize,
    /// One CUDA module per fatbin of `kernels`, loaded by `Engine::new` (or on first use, for a module added later).
    modules: LoadedModules,
    functions: Mutex<HashMap<String, CudaFunction>>,
    workspace: Mutex<Option<CudaSlice<u8>>>,
    /// Measured choices for this GPU ([`Engine::with_tuning`], [`Engine::autotune`]).
    tuning: RwLock<TuningTable>,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("ordinal", &self.ctx.ordinal())
            .field("multiprocessors", &self.multiprocessors)
            .field("kernels", &self.kernels.catalogue().kernels.len())
            .field("fatbins_loaded", &self.modules.loaded())
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// An engine on device `ordinal` that launches the kernels of `kernels` (the default
    /// ones are `im2win::kernels()`).
    ///
    /// The fatbins and their kernels are loaded here, so the first call on a new shape costs
    /// no more than a later one (plus the engine's own workspace, when the caller passes
    /// none). A module built without nvcc still gives a working engine for
    /// [`Engine::plan`], and launches fail with [`Error::KernelsNotBuilt`].
    ///
    /// # Errors
    /// [`Error::DriverNotFound`] when libcuda cannot be loaded, [`Error::NoDevice`] when
    /// there is no device `ordinal`, [`Error::Driver`] when the driver fails otherwise.
    pub fn new(ordinal: usize, kernels: KernelModule) -> Result<Engine> {
        // SAFETY: only tries to dlopen libcuda. cudarc panics on the first driver call when
        // the library is missing, so this check must come before any.
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
        let ctx = CudaContext::new(ordinal)?;
        let stream = ctx.new_stream()?;
        let multiprocessors =
            ctx.attribute(sys::CUdevice_attribute_enum::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let tuning = RwLock::new(TuningTable::new(ctx.name()?));
        let engine = Engine {
            ctx,
            stream,
            kernels,
            multiprocessors: usize::try_from(multiprocessors).unwrap_or(1).max(1),
            modules: LoadedModules::default(),
            functions: Mutex::new(HashMap::new()),
            workspace: Mutex::new(None),
            tuning,
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
        for name in support::ALL {
            self.function(name)?;
        }
        for spec in &self.kernels.catalogue().kernels {
            self.function(&spec.name())?;
        }
        Ok(())
    }

    /// The same engine, using `table`'s measured choices if it was made on this GPU model
    /// (its `device` equals the driver's name for this GPU); otherwise `table` is ignored
    /// and dispatch stays with the heuristic. Entries recorded earlier are kept unless
    /// `table` has the same problem.
    pub fn with_tuning(self, table: TuningTable) -> Self {
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
        self.tuning
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(entry);
    }

    /// The CUDA context (the device's primary context).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream every launch of this engine goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// The kernels this engine launches.
    pub fn kernels(&self) -> &KernelModule {
        &self.kernels
    }

    /// Streaming multiprocessors of the device (132 on an H200).
    pub fn multiprocessors(&self) -> usize {
        self.multiprocessors
    }

    /// Chooses the kernel for `problem`: the tuning table's measured choice when it has
    /// this exact problem (and its kernel is in the catalogue), else the dispatch heuristic
    /// ([`Plan::new`]). Never times anything.
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn plan(&self, problem: &Conv2dProblem) -> Result<Plan> {
        let tuned = self
            .tuning
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .plan(problem, self.kernels.catalogue());
        match tuned {
            Some(plan) => Ok(plan),
            None => self.heuristic_plan(problem),
        }
    }

    /// The dispatch heuristic's plan for `problem`, ignoring the tuning table.
    ///
    /// # Errors
    /// As [`Plan::new`].
    pub fn heuristic_plan(&self, problem: &Conv2dProblem) -> Result<Plan> {
        Plan::new(problem, self.kernels.catalogue(), self.multiprocessors)
    }

    /// A kernel of the fatbin by its `extern "C"` name, e.g. a support kernel of
    /// [`im2win_codegen::catalogue::support`] that the benchmark launches itself. Loads the
    /// fatbin on first use; functions are cached by name.
    ///
    /// # Errors
    /// [`Error::KernelsNotBuilt`] when the module has no fatbin, [`Error::KernelMissing`]
    /// when the fatbin has no kernel of that name, [`Error::Driver`] when loading fails.
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
        let module = self.modules.for_kernel(&self.ctx, &self.kernels, name)?;
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
        let max_blocks = (self.multiprocessors * GRID_STRIDE_BLOCKS_PER_SM).min(i32::MAX as usize);
        let blocks = len
            .div_ceil(GRID_STRIDE_THREADS as usize)
            .clamp(1, max_blocks.max(1));
        LaunchConfig {
            grid_dim: (u32::try_from(blocks).unwrap_or(1), 1, 1),
            block_dim: (GRID_STRIDE_THREADS, 1, 1),
            shared_mem_bytes: 0,
        }
    }

    /// `output = conv2d(input, filter) + bias` on device buffers, with the kernel
    /// [`Engine::plan`] picks. See [`Engine::conv2d_with`] for the buffers and errors.
    ///
    /// # Errors
    /// As [`Engine::plan`] and [`Engine::conv2d_with`].
    pub fn conv2d(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<f32>,
        filter: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
        output: &mut dyn DevicePtrMut<f32>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        let plan = self.plan(problem)?;
        self.conv2d_with(&plan, input, filter, bias, output, workspace)
    }

    /// Runs `plan`: the im2win input transform (unless [`Plan::input_in_place`]), the filter
    /// transform, the planned convolution kernel and, for a split reduction
    /// ([`Plan::splits`] > 1), the kernel that adds the splits, in that order on
    /// [`Engine::stream`], without synchronising.
    ///
    /// Buffers are NCHW float32: `input` `N·C·H·W`, `filter` `K·C·R·S`, `bias` `K`,
    /// `output` `N·K·P·Q` elements, each a [`CudaSlice`] or a view into a larger one. The
    /// workspace holds the transformed input and filter and any partial sums; it needs
    /// [`Plan::workspace_bytes`] bytes and a 256-byte aligned start (every fresh allocation
    /// has one). Without it the engine uses its own, grown as needed and kept for later
    /// calls. cudarc's event tracking orders these launches after earlier writes to the
    /// buffers from other streams.
    ///
    /// Every buffer is checked before anything is launched.
    ///
    /// # Errors
    /// [`Error::BufferLength`] for a buffer of the wrong length, [`Error::ForeignBuffer`]
    /// for one of another context, [`Error::WorkspaceTooSmall`] / [`Error::Misaligned`] for
    /// an unusable workspace, [`Error::KernelsNotBuilt`] / [`Error::KernelMissing`] when
    /// the fatbin lacks a kernel, [`Error::OutOfMemory`] when the engine's own workspace
    /// cannot be allocated (the engine stays usable), [`Error::Driver`] when a launch fails.
    pub fn conv2d_with(
        &self,
        plan: &Plan,
        input: &dyn DevicePtr<f32>,
        filter: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
        output: &mut dyn DevicePtrMut<f32>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        let problem = plan.problem();
        let shape = plan.shape();
        self.check_operands(problem, input, filter, bias)?;
        self.check_buffer("output", shape.output_len, output.len(), output.stream())?;
        let needed = plan.workspace_bytes();
        if let Some(ws) = &workspace {
            self.check_context("workspace", ws.stream())?;
            if ws.num_bytes() < needed {
                return Err(Error::WorkspaceTooSmall {
                    expected: needed,
                    actual: ws.num_bytes(),
                });
            }
        }
        let params = ConvParams::from_shape(problem, shape, bias.is_some())?;
        let conv = self.function(&plan.kernel().name())?;
        let reduce = match plan.splits() {
            1 => None,
            _ => Some(self.function(support::SPLIT_REDUCE_F32)?),
        };

        // Held until the launches are queued, so that a concurrent call cannot regrow (and
        // free) the engine's workspace in between.
        let mut own_workspace: MutexGuard<'_, Option<CudaSlice<u8>>>;
        let workspace: &mut dyn DevicePtrMut<u8> = match workspace {
            Some(ws) => ws,
            None => {
                own_workspace = lock(&self.workspace);
                match &mut *own_workspace {
                    Some(ws) if ws.len() >= needed => ws,
                    slot => {
                        // Free the old buffer before allocating its successor.
                        *slot = None;
                        let ws = self.stream.alloc_zeros::<u8>(needed);
                        slot.insert(ws.map_err(|err| allocation_error(err, "workspace", needed))?)
                    }
                }
            }
        };

        let stream: &CudaStream = &self.stream;
        {
            let (x, _x_sync) = input.device_ptr(stream);
            let (f, _f_sync) = filter.device_ptr(stream);
            let (b, _b_sync) = bias_ptr(bias, stream);
            let (y, _y_sync) = output.device_ptr_mut(stream);
            let (ws, _ws_sync) = workspace.device_ptr_mut(stream);
            if ws % WORKSPACE_ALIGNMENT != 0 {
                return Err(Error::Misaligned {
                    buffer: "workspace",
                    alignment: WORKSPACE_ALIGNMENT as usize,
                });
            }
            let t = self.launch_transforms(plan, &params, x, f, ws)?;
            let ft = ws + plan.filter_offset_bytes() as u64;
            // A split reduction's kernel writes its partial sums, and the reduction writes Y.
            let partial = plan.partial_offset_bytes().map(|offset| ws + offset as u64);

            let mut launch = stream.launch_builder(&conv);
            let conv_out = partial.unwrap_or(y);
            launch.arg(&t).arg(&ft).arg(&b).arg(&conv_out).arg(&params);
            let config = LaunchConfig {
                grid_dim: plan.grid_dim(),
                block_dim: plan.block_dim(),
                shared_mem_bytes: 0,
            };
            // SAFETY: `(const float* t, const float* ft, const float* bias, float* y,
            // ConvParams p)`; the plan's spec supports this problem (`Plan::for_spec`),
            // `t` holds `im2win_len` floats (the workspace's, or the input in place), `ft` the
            // transformed filter, `bias` K floats or null with has_bias == 0, and `conv_out`
            // `output_len` floats (`y`), or `splits · output_len` (the partial sums, when
            // grid_dim.z = splits > 1).
            unsafe { launch.launch(config) }?;

            if let (Some(reduce), Some(partial)) = (&reduce, partial) {
                let splits = i32::try_from(plan.splits()).unwrap_or(i32::MAX);
                let mut launch = stream.launch_builder(reduce);
                launch
                    .arg(&partial)
                    .arg(&b)
                    .arg(&y)
                    .arg(&params)
                    .arg(&splits);
                // SAFETY: `im2win_split_reduce_f32(const float* part, const float* bias,
                // float* y, ConvParams p, int splits)`, grid-stride over `output_len`;
                // `partial` holds `splits · output_len` floats (the plan's layout), `y`
                // `output_len`, `bias` K floats or null with has_bias == 0.
                unsafe { launch.launch(self.grid_stride_config(shape.output_len)) }?;
            }
            // The `_sync` guards drop here and record the launches in the buffers' events.
        }
        // Errors of those event records are stored in the context, not returned.
        self.ctx.check_err()?;
        Ok(())
    }

    /// Runs the layout transforms of `plan` alone, exactly as [`Engine::conv2d_with`] does
    /// before its convolution (for timing them): the input transform into the workspace
    /// (none when [`Plan::input_in_place`]) and the filter transform. Same buffers, checks
    /// and errors as [`Engine::conv2d_with`], except that the workspace is required.
    ///
    /// # Errors
    /// As [`Engine::conv2d_with`].
    pub fn transforms(
        &self,
        plan: &Plan,
        input: &dyn DevicePtr<f32>,
        filter: &dyn DevicePtr<f32>,
        workspace: &mut dyn DevicePtrMut<u8>,
    ) -> Result<()> {
        let problem = plan.problem();
        self.check_operands(problem, input, filter, None)?;
        self.check_context("workspace", workspace.stream())?;
        if workspace.num_bytes() < plan.workspace_bytes() {
            return Err(Error::WorkspaceTooSmall {
                expected: plan.workspace_bytes(),
                actual: workspace.num_bytes(),
            });
        }
        let params = ConvParams::from_shape(problem, plan.shape(), false)?;
        let stream: &CudaStream = &self.stream;
        {
            let (x, _x_sync) = input.device_ptr(stream);
            let (f, _f_sync) = filter.device_ptr(stream);
            let (ws, _ws_sync) = workspace.device_ptr_mut(stream);
            if ws % WORKSPACE_ALIGNMENT != 0 {
                return Err(Error::Misaligned {
                    buffer: "workspace",
                    alignment: WORKSPACE_ALIGNMENT as usize,
                });
            }
            self.launch_transforms(plan, &params, x, f, ws)?;
        }
        self.ctx.check_err()?;
        Ok(())
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
        let ft = ws + plan.filter_offset_bytes() as u64;
        let t = if plan.input_in_place() {
            x
        } else {
            let input_transform = self.function(support::INPUT_TRANSFORM_F32)?;
            let mut launch = stream.launch_builder(&input_transform);
            launch.arg(&x).arg(&ws).arg(params);
            let per_block = GRID_STRIDE_THREADS as usize * INPUT_TRANSFORM_ELEMENTS_PER_THREAD;
            let config = self.grid_stride_config(shape.im2win_len.div_ceil(per_block) * 256);
            // SAFETY: `im2win_input_transform_f32(const float* x, float* t, ConvParams p)`
            // (DESIGN.md); `x` holds `input_len` floats and the workspace from `ws` on at
            // least `im2win_len` (the plan's layout puts T first), and the kernel stays
            // inside them for any grid.
            unsafe { launch.launch(config) }?;
            ws
        };
        // Each variant walks the reduction in its own order (docs/DESIGN.md).
        let filter_transform = self.function(if plan.kernel().variant.fused {
            support::FILTER_TRANSFORM_FUSED_F32
        } else {
            support::FILTER_TRANSFORM_F32
        })?;
        let mut launch = stream.launch_builder(&filter_transform);
        launch.arg(&f).arg(&ft).arg(params);
        // One block per 32 × 32 tile of (C·R·S, K rounded up to 4), grid-stride beyond.
        let k4 = shape.output[1].div_ceil(4) * 4;
        let tiles = shape.reduction.div_ceil(32) * k4.div_ceil(32);
        let config = self.grid_stride_config(tiles * GRID_STRIDE_THREADS as usize);
        // SAFETY: `im2win_filter_transform[_fused]_f32(const float* f, float* a, ConvParams p)`;
        // `f` holds `filter_len` floats and the workspace from `ft` on the C·R·S × K4
        // transformed filter (`Conv2dProblem::transformed_filter_bytes`), for any grid.
        unsafe { launch.launch(config) }?;
        Ok(t)
    }

    /// The GPU oracle: `output = conv2d(input, filter) + bias` computed directly from `X`
    /// and `F` (not through im2win) in float64 by `im2win_direct_reference_f64`, on
    /// [`Engine::stream`] without synchronising.
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
        let shape = self.check_operands(problem, input, filter, bias)?;
        self.check_buffer("output", shape.output_len, output.len(), output.stream())?;
        let params = ConvParams::from_shape(problem, &shape, bias.is_some())?;
        let direct = self.function(support::DIRECT_F64)?;
        let stream: &CudaStream = &self.stream;
        {
            let (x, _x_sync) = input.device_ptr(stream);
            let (f, _f_sync) = filter.device_ptr(stream);
            let (b, _b_sync) = bias_ptr(bias, stream);
            let (y, _y_sync) = output.device_ptr_mut(stream);
            let mut launch = stream.launch_builder(&direct);
            launch.arg(&x).arg(&f).arg(&b).arg(&y).arg(&params);
            // SAFETY: `im2win_direct_reference_f64(const float* x, const float* f,
            // const float* bias, double* y, ConvParams p)`, grid-stride over N·K·P·Q; every
            // buffer's length was checked against the problem above.
            unsafe { launch.launch(self.grid_stride_config(shape.output_len)) }?;
        }
        self.ctx.check_err()?;
        Ok(())
    }

    /// Validates the problem and the input, filter and bias buffers, in that order.
    fn check_operands(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<f32>,
        filter: &dyn DevicePtr<f32>,
        bias: Option<&dyn DevicePtr<f32>>,
    ) -> Result<crate::problem::ProblemShape> {
        let shape = problem.shape()?;
        self.check_buffer("input", shape.input_len, input.len(), input.stream())?;
        self.check_buffer("filter", shape.filter_len, filter.len(), filter.stream())?;
        if let Some(bias) = bias {
            self.check_buffer("bias", shape.output[1], bias.len(), bias.stream())?;
        }
        Ok(shape)
    }

    fn check_buffer(
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

    /// A pointer from another context is meaningless in ours (or, on another device,
    /// points at someone else's memory), so refuse it rather than launch.
    fn check_context(&self, buffer: &'static str, stream: &Arc<CudaStream>) -> Result<()> {
        if **stream.context() == *self.ctx {
            Ok(())
        } else {
            Err(Error::ForeignBuffer { buffer })
        }
    }
}

/// [`Error::OutOfMemory`] for an allocation of `bytes` for `what` that the device could not
/// satisfy; any other driver error as it is.
fn allocation_error(err: DriverError, what: &'static str, bytes: usize) -> Error {
    match err {
        DriverError(sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY) => Error::OutOfMemory {
            what,
            bytes: bytes as u128,
            on_device: true,
        },
        err => err.into(),
    }
}

/// The device address of an optional bias, 0 when there is none (the kernels ignore it
/// when `has_bias == 0`), with the guard that records the launch in the bias's events.
fn bias_ptr<'a>(
    bias: Option<&'a dyn DevicePtr<f32>>,
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
