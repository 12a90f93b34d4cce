//! Every way an im2win call can fail. Library code returns these; it never panics.

/// The result type of the im2win runtime.
pub type Result<T> = std::result::Result<T, Error>;

/// What went wrong, with what was expected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A size, stride or dilation of the problem is zero.
    #[error("invalid problem: {name} is 0, but must be at least 1")]
    ZeroSize {
        /// Which value, e.g. `"batch"` or `"stride_h"`.
        name: &'static str,
    },
    /// The (dilated) filter does not fit in the padded input along one axis.
    #[error(
        "invalid problem: the dilated filter {axis} is {filter} but the padded input {axis} is only {padded_input}"
    )]
    FilterLargerThanInput {
        /// `"height"` or `"width"`.
        axis: &'static str,
        /// `dilation·(filter − 1) + 1`.
        filter: usize,
        /// Input size plus both paddings along that axis.
        padded_input: usize,
    },
    /// Grouped convolution is not supported. No longer returned by the runtime, which
    /// computes any valid group count ([`Error::BadGroups`] for an invalid one); kept for
    /// callers that match it (and refuse groups themselves).
    #[error("unsupported problem: groups = {groups}, but only groups = 1 is supported")]
    GroupsUnsupported {
        /// The requested group count.
        groups: usize,
    },
    /// The group count does not divide the input or the output channels, or the filter
    /// does not have `C / groups` channels.
    #[error(
        "invalid problem: groups = {groups} with {input_channels} input and {output_channels} output channels and a filter of {filter_channels} channels: groups must divide both channel counts and the filter have C / groups channels"
    )]
    BadGroups {
        /// The group count.
        groups: usize,
        /// `C` of the input.
        input_channels: usize,
        /// `K` of the filter.
        output_channels: usize,
        /// The filter's channels per output (`filter[1]`), which must be `C / groups`.
        filter_channels: usize,
    },
    /// The epilogue cannot be computed (a factor that is not finite).
    #[error("invalid epilogue `{epilogue}`: {why}")]
    BadEpilogue {
        /// The epilogue, as [`Epilogue`](crate::Epilogue) displays it.
        epilogue: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// The problem's epilogue adds a residual but the call passed none, or the call passed
    /// one to a problem without it.
    #[error(
        "residual mismatch: the problem's epilogue {} a residual but the call {}",
        if *.expected { "adds" } else { "has no" },
        if *.expected { "passed none" } else { "passed one" }
    )]
    ResidualMismatch {
        /// Whether the problem's epilogue has a residual.
        expected: bool,
    },
    /// The filter's channel count differs from the input's.
    #[error(
        "invalid problem: the input has {input_channels} channels but the filter has {filter_channels}"
    )]
    ChannelMismatch {
        /// `C` of the input.
        input_channels: usize,
        /// `C` of the filter.
        filter_channels: usize,
    },
    /// A size is so large that an index would overflow the kernels' integer types.
    #[error("problem too large: {what} is {value}, but at most {limit} is supported")]
    TooLarge {
        /// What is too large, e.g. `"im2win buffer elements"`.
        what: &'static str,
        /// Its value.
        value: u128,
        /// The largest supported value.
        limit: u128,
    },
    /// A buffer's length does not match the problem.
    #[error("buffer `{buffer}` has {actual} elements, but the problem needs {expected}")]
    BufferLength {
        /// Which buffer: `"input"`, `"filter"`, `"bias"` or `"output"`.
        buffer: &'static str,
        /// The length the problem needs.
        expected: usize,
        /// The length given.
        actual: usize,
    },
    /// No kernel of the catalogue runs the problem within the workspace limit
    /// (`Engine::with_workspace_limit`, [`crate::gpu::PlanOptions::workspace_limit`]).
    #[error(
        "no kernel runs this problem within the workspace limit of {limit} bytes; the least any needs is {least}"
    )]
    WorkspaceLimit {
        /// The limit, in bytes.
        limit: usize,
        /// The smallest workspace among the kernels that can run the problem, in bytes.
        least: usize,
    },
    /// A prepared filter given to a problem whose plan reads another form of the filter, or
    /// another filter ([`crate::gpu::PreparedFilter::suits`]).
    #[error("the prepared filter holds {prepared}, but this problem's plan reads {needed}")]
    PreparedFilterMismatch {
        /// The prepared form and filter sizes.
        prepared: String,
        /// What the problem's plan reads.
        needed: String,
    },
    /// The caller's workspace is smaller than the plan needs.
    #[error("workspace has {actual} bytes, but this problem needs {expected}")]
    WorkspaceTooSmall {
        /// Bytes needed ([`crate::Conv2dProblem::workspace_bytes`]).
        expected: usize,
        /// Bytes given.
        actual: usize,
    },
    /// The CUDA driver library (libcuda) could not be found.
    #[error(
        "no CUDA driver: libcuda.so could not be loaded (install the NVIDIA driver, or use the CPU backend `im2win::cpu`)"
    )]
    DriverNotFound,
    /// There is no CUDA device with the requested ordinal.
    #[error("no CUDA device {ordinal}: {count} device(s) visible")]
    NoDevice {
        /// The ordinal asked for.
        ordinal: usize,
        /// How many devices the driver sees.
        count: usize,
    },
    /// The crate was built without nvcc, so it holds no kernels.
    #[error(
        "im2win was built without nvcc, so it holds no GPU kernels: install nvcc (see README, `scripts/install-nvcc.sh`), set NVCC, and rebuild"
    )]
    KernelsNotBuilt,
    /// The fatbin lacks a kernel that its catalogue or the runtime names.
    #[error("kernel `{name}` is not in the loaded fatbin")]
    KernelMissing {
        /// The kernel's name.
        name: String,
    },
    /// A kernel module was generated for another binary interface than this runtime's
    /// (`im2win_codegen::abi`): its `ConvParams` layout or kernel signatures may differ, so
    /// launching it would pass parameters at the wrong offsets. Found when the module loads.
    #[error(
        "kernel module `{module}` was generated for another im2win ABI ({}), but this runtime needs stamp {expected:#018x}: regenerate it with the im2win-codegen version this runtime uses",
        match .found { Some(found) => format!("its stamp is {found:#018x}"), None => "it has no ABI stamp".to_string() }
    )]
    AbiMismatch {
        /// The module's name (`im2win` for the default kernels, empty for
        /// `KernelModule::new`).
        module: String,
        /// This runtime's stamp, `im2win_codegen::abi::abi_id()`.
        expected: u64,
        /// The module's stamp, or `None` when it defines none.
        found: Option<u64>,
    },
    /// The catalogue of a kernel module (`<name>.catalogue.json`) does not parse: it was
    /// written by an incompatible im2win-codegen.
    #[error(
        "the catalogue of kernel module `{module}` cannot be read ({reason}): regenerate it with the im2win-codegen version this runtime uses"
    )]
    BadCatalogue {
        /// The module's name.
        module: String,
        /// What the JSON parser reported.
        reason: String,
    },
    /// The catalogue has no kernel that can run the problem: no fixed kernel for its
    /// geometry and no generic kernel.
    #[error(
        "no kernel in the catalogue runs a {}×{} filter with stride {}×{} and dilation {}×{}: add the generic kernel (or this geometry) to the catalogue",
        .filter[0], .filter[1], .stride[0], .stride[1], .dilation[0], .dilation[1]
    )]
    NoKernel {
        /// Filter `[R, S]`.
        filter: [usize; 2],
        /// Stride `[height, width]`.
        stride: [usize; 2],
        /// Dilation `[height, width]`.
        dilation: [usize; 2],
    },
    /// The catalogue has no kernel at all for the problem's element type and precision in
    /// its layout (e.g. no bf16 or TF32 kernels): nothing runs, rather than a kernel of
    /// another precision.
    #[error(
        "no {numeric} kernel for {layout} tensors in the catalogue: it has no kernels that compute {dtype} tensors at {precision} precision in this layout (build a catalogue with them, or use the CPU backend `im2win::cpu`)"
    )]
    NoKernelForType {
        /// The element type and precision as the benchmark names them: `bf16`, `f16`,
        /// `tf32`, `f32`.
        numeric: &'static str,
        /// The problem's element type.
        dtype: im2win_codegen::DType,
        /// The problem's precision.
        precision: im2win_codegen::Precision,
        /// The problem's layout.
        layout: crate::layout::Layout,
    },
    /// A buffer's element type is not the problem's ([`Conv2dProblem::dtype`]): im2win never
    /// converts tensors behind the caller's back.
    ///
    /// [`Conv2dProblem::dtype`]: crate::Conv2dProblem::dtype
    #[error(
        "the problem's tensors are {expected} but the buffers are {actual}: give buffers of the problem's element type (or set `Conv2dProblem::dtype` to theirs)"
    )]
    DTypeMismatch {
        /// The problem's element type.
        expected: im2win_codegen::DType,
        /// The buffers' element type.
        actual: im2win_codegen::DType,
    },
    /// The problem asks for a precision that does not apply to its element type (TF32 for
    /// bf16 or f16 tensors).
    #[error(
        "invalid problem: {precision} precision applies to f32 tensors, not {dtype} (bf16 and f16 are multiplied as stored: use `Precision::Strict`)"
    )]
    BadPrecision {
        /// The problem's element type.
        dtype: im2win_codegen::DType,
        /// The precision asked for.
        precision: im2win_codegen::Precision,
    },
    /// A kernel was forced on a problem it cannot compute (a fixed kernel of another
    /// geometry).
    #[error(
        "kernel `{kernel}` cannot run a {}×{} filter with stride {}×{} and dilation {}×{}",
        .filter[0], .filter[1], .stride[0], .stride[1], .dilation[0], .dilation[1]
    )]
    SpecMismatch {
        /// The kernel's name.
        kernel: String,
        /// Filter `[R, S]` of the problem.
        filter: [usize; 2],
        /// Stride `[height, width]` of the problem.
        stride: [usize; 2],
        /// Dilation `[height, width]` of the problem.
        dilation: [usize; 2],
    },
    /// A kernel was forced on a problem of another element type or precision (a float32
    /// kernel on a bf16 problem, a strict one on a TF32 problem, ...).
    #[error(
        "kernel `{kernel}` computes {computes}, but the problem is {problem}: kernels never run a problem at another precision"
    )]
    PrecisionMismatch {
        /// The kernel's name.
        kernel: String,
        /// What the kernel computes (`f32`, `tf32`, `bf16`, `f16`).
        computes: &'static str,
        /// What the problem asks for ([`Conv2dProblem::numeric_name`]).
        ///
        /// [`Conv2dProblem::numeric_name`]: crate::Conv2dProblem::numeric_name
        problem: &'static str,
    },
    /// A kernel was forced on a problem that lacks something it needs beyond element type,
    /// layout and geometry (the tensor-core kernels: a KRSC filter; with vector loads, `C` a
    /// multiple of 8, or 4 for TF32, and 16-byte aligned input and filter; one split of the
    /// reduction).
    #[error("kernel `{kernel}` cannot run this problem: it needs {requirement}")]
    KernelRequirement {
        /// The kernel's name.
        kernel: String,
        /// What it needs that the problem (or call) lacks.
        requirement: &'static str,
    },
    /// The catalogue has kernels of the problem's element type, precision and layout, but
    /// every one that could run its geometry needs something the problem lacks (see
    /// [`Error::KernelRequirement`]), e.g. the bf16 kernels a KRSC filter.
    #[error("no {numeric} kernel of the catalogue runs this problem: they need {requirement}")]
    RequirementUnmet {
        /// The element type and precision as the benchmark names them: `bf16`, `f16`,
        /// `tf32`, `f32`.
        numeric: &'static str,
        /// What the kernels need that the problem (or call) lacks.
        requirement: &'static str,
    },
    /// A device buffer belongs to another CUDA context (device) than the engine.
    #[error("buffer `{buffer}` lives in another CUDA context than the engine's")]
    ForeignBuffer {
        /// Which buffer.
        buffer: &'static str,
    },
    /// A device buffer's address is not aligned as the kernels need.
    #[error("buffer `{buffer}` must start at a multiple of {alignment} bytes")]
    Misaligned {
        /// Which buffer.
        buffer: &'static str,
        /// The required alignment in bytes.
        alignment: usize,
    },
    /// A tuning table could not be read.
    #[error("tuning table is not valid JSON of the expected shape: {reason}")]
    BadTuningTable {
        /// The parser's message.
        reason: String,
    },
    /// Memory for a buffer the library allocates itself (the CPU backend's im2win buffer and
    /// output, the engine's own workspace) could not be had.
    #[error(
        "out of {} memory: the {what} needs {bytes} bytes, which could not be allocated",
        if *.on_device { "device" } else { "host" }
    )]
    OutOfMemory {
        /// What was being allocated, e.g. `"im2win buffer"` or `"workspace"`.
        what: &'static str,
        /// Bytes asked for.
        bytes: u128,
        /// `true` for device memory (the GPU), `false` for host memory.
        on_device: bool,
    },
    /// The CPU backend was asked for a micro-kernel (`IM2WIN_CPU_ISA`, or
    /// `cpu::conv2d_with_isa`) that this CPU cannot run, or that does not exist.
    #[error("CPU instruction set {isa} is not available on this CPU")]
    IsaUnavailable {
        /// The level asked for.
        isa: String,
    },
    /// A kernel spec is not a valid specialisation (see `KernelSpec::validate`), e.g. a
    /// tile with a zero dimension in a hand-built or deserialised catalogue.
    #[error("invalid kernel spec: {0}")]
    InvalidSpec(#[from] im2win_codegen::SpecError),
    /// A specialisation named at compile time (`im2win::conv2d!`, a
    /// [`Specialization`](crate::Specialization)) is not among the engine's kernels: the
    /// engine was made without the module of its catalogue.
    #[error(
        "kernel {kernel} (catalogue `{catalogue}`) is not among the engine's kernels: give the engine that catalogue's module, e.g. `Engine::new(0, im2win::kernels().merged(im2win::include_kernels!(\"{catalogue}\")))`"
    )]
    SpecNotLoaded {
        /// The kernel name (with `*` for a tile chosen at run time).
        kernel: String,
        /// The catalogue the macro found it in: `im2win` (the default one) or the name in
        /// the crate's manifest.
        catalogue: &'static str,
    },
    /// A CUDA driver call failed.
    #[error("CUDA driver error: {0}")]
    Driver(#[from] cudarc::driver::DriverError),
    /// The driver refused to describe an operand for a kernel whose operands the tensor
    /// memory accelerator copies (`cuTensorMapEncodeIm2col` / `cuTensorMapEncodeTiled`).
    /// Dispatch checks the copy engine's limits before it picks such a kernel, so this
    /// names a case those checks missed.
    #[error("the CUDA driver could not encode {what} of kernel `{kernel}`: {error}")]
    TensorMap {
        /// Which map: the input's or the filter's.
        what: &'static str,
        /// The kernel's name.
        kernel: String,
        /// The driver's answer.
        error: cudarc::driver::DriverError,
    },
}
