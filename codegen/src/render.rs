//! Rendering a [`Catalogue`] into CUDA sources with Tera.
//!
//! The templates are embedded in this crate with `include_str!`, so rendering never reads our
//! source tree: a user's build only needs this crate. The output is two or three readable
//! `.cu` files plus the shared headers ([`HEADERS`]):
//!
//! * `im2win_support.cu`: the layout transforms, the split reduction and the float64 oracle
//!   ([`crate::catalogue::support`]);
//! * `im2win_baselines.cu`, only for a catalogue with [`Catalogue::baselines`] (im2win-bench's
//!   module): the benchmark's baselines ([`crate::catalogue::baselines`],
//!   `codegen/templates/baselines.cu.tera`);
//! * `im2win_conv.cu`: the convolution kernels, one per [`KernelSpec`]: SIMT kernels from
//!   `conv.cu.tera`, tensor-core kernels ([`Math::TensorOp`], [`Math::TensorOpFastF32`])
//!   from `conv_tensorop.cu.tera`.
//!
//! and `im2win.cu` ([`RenderedSources::translation_unit`]), which includes them all and is
//! what nvcc compiles (see `nvcc.rs` for why one translation unit). The generated code is meant
//! to be opened by a human: `IM2WIN_DUMP_DIR` in build.rs copies it out.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tera::{Context, Tera};

use crate::catalogue::{Catalogue, baselines, support};
use crate::layout::Layout;
use crate::spec::{DType, Geometry, Grouping, KernelSpec, Math, PRODUCER_THREADS, SpecError};

/// The header every source file includes: `ConvParams` and the division helpers.
/// Copied verbatim (it is not a template).
pub const COMMON_HEADER: &str = include_str!("../templates/common.cuh");

/// File name of [`COMMON_HEADER`] next to the source files.
pub const HEADER_FILE: &str = "common.cuh";

/// Every header of `codegen/templates` (file name, text), [`COMMON_HEADER`] first: the
/// kernels' building blocks (docs/DESIGN.md). Copied verbatim next to the rendered files.
pub const HEADERS: [(&str, &str); 23] = [
    (HEADER_FILE, COMMON_HEADER),
    ("numeric.cuh", include_str!("../templates/numeric.cuh")),
    ("copy.cuh", include_str!("../templates/copy.cuh")),
    (
        "tile_shape.cuh",
        include_str!("../templates/tile_shape.cuh"),
    ),
    ("geometry.cuh", include_str!("../templates/geometry.cuh")),
    (
        "tile_filter.cuh",
        include_str!("../templates/tile_filter.cuh"),
    ),
    (
        "tile_window_buffer.cuh",
        include_str!("../templates/tile_window_buffer.cuh"),
    ),
    (
        "tile_window_gather.cuh",
        include_str!("../templates/tile_window_gather.cuh"),
    ),
    ("mainloop.cuh", include_str!("../templates/mainloop.cuh")),
    ("mma_simt.cuh", include_str!("../templates/mma_simt.cuh")),
    ("epilogue.cuh", include_str!("../templates/epilogue.cuh")),
    (
        "conv_fprop.cuh",
        include_str!("../templates/conv_fprop.cuh"),
    ),
    (
        "tile_tensorop.cuh",
        include_str!("../templates/tile_tensorop.cuh"),
    ),
    (
        "mma_tensorop.cuh",
        include_str!("../templates/mma_tensorop.cuh"),
    ),
    (
        "mma_warpgroup.cuh",
        include_str!("../templates/mma_warpgroup.cuh"),
    ),
    (
        "tile_gather_tensorop.cuh",
        include_str!("../templates/tile_gather_tensorop.cuh"),
    ),
    (
        "mainloop_multistage.cuh",
        include_str!("../templates/mainloop_multistage.cuh"),
    ),
    ("mbarrier.cuh", include_str!("../templates/mbarrier.cuh")),
    ("tma.cuh", include_str!("../templates/tma.cuh")),
    (
        "mainloop_warp_specialized.cuh",
        include_str!("../templates/mainloop_warp_specialized.cuh"),
    ),
    (
        "epilogue_tensorop.cuh",
        include_str!("../templates/epilogue_tensorop.cuh"),
    ),
    (
        "conv_fprop_tensorop.cuh",
        include_str!("../templates/conv_fprop_tensorop.cuh"),
    ),
    (
        "conv_grouped.cuh",
        include_str!("../templates/conv_grouped.cuh"),
    ),
];

/// File name of [`RenderedSources::translation_unit`].
pub const TRANSLATION_UNIT_FILE: &str = "im2win.cu";

const CONV_TEMPLATE: &str = "conv.cu.tera";
const CONV_TENSOROP_TEMPLATE: &str = "conv_tensorop.cu.tera";
const CONV_GROUPED_TEMPLATE: &str = "conv_grouped.cu.tera";
const SUPPORT_TEMPLATE: &str = "support.cu.tera";
const BASELINES_TEMPLATE: &str = "baselines.cu.tera";

/// The embedded templates, by name.
const TEMPLATES: [(&str, &str); 5] = [
    (
        CONV_GROUPED_TEMPLATE,
        include_str!("../templates/conv_grouped.cu.tera"),
    ),
    (CONV_TEMPLATE, include_str!("../templates/conv.cu.tera")),
    (
        CONV_TENSOROP_TEMPLATE,
        include_str!("../templates/conv_tensorop.cu.tera"),
    ),
    (
        SUPPORT_TEMPLATE,
        include_str!("../templates/support.cu.tera"),
    ),
    (
        BASELINES_TEMPLATE,
        include_str!("../templates/baselines.cu.tera"),
    ),
];

/// Why rendering failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The spec is not valid (tile levels do not nest, zero filter size, ...).
    #[error("cannot render an invalid spec: {0}")]
    Spec(#[from] SpecError),
    /// A template failed to parse or render (a bug in the templates).
    #[error("template `{template}` failed: {source}")]
    Template {
        /// The template's name, e.g. `conv.cu.tera`.
        template: String,
        /// Tera's report, pointing into the template.
        source: tera::Error,
    },
}

/// One rendered CUDA source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// File name, e.g. `im2win_conv.cu`.
    pub file_name: String,
    /// The CUDA source; it includes [`HEADER_FILE`].
    pub source: String,
    /// The `extern "C"` kernels the file defines.
    pub kernels: Vec<String>,
}

/// Everything nvcc compiles for one catalogue (besides [`COMMON_HEADER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedSources {
    /// The source files: support, baselines (when the catalogue asks for them),
    /// convolutions.
    pub files: Vec<SourceFile>,
}

impl RenderedSources {
    /// Every kernel name, in file order.
    pub fn kernel_names(&self) -> impl Iterator<Item = &str> {
        self.files
            .iter()
            .flat_map(|u| u.kernels.iter().map(String::as_str))
    }

    /// The translation unit nvcc compiles: it `#include`s every file of [`Self::files`] and
    /// defines the module's ABI stamp ([`crate::abi`]).
    pub fn translation_unit(&self) -> String {
        let mut text = String::from(
            "// im2win: the one translation unit nvcc compiles; the kernels are in the files below.\n",
        );
        for file in &self.files {
            // Writing to a String cannot fail.
            let _ = writeln!(text, "#include \"{}\"", file.file_name);
        }
        text.push('\n');
        text.push_str(&crate::abi::stamp_definition());
        text
    }

    /// Writes [`HEADER_FILE`], every file and the translation unit into `dir` (created if
    /// needed) and returns the translation unit's path.
    pub fn write_to(&self, dir: &Path) -> std::io::Result<PathBuf> {
        std::fs::create_dir_all(dir)?;
        for (name, text) in HEADERS {
            write_if_changed(&dir.join(name), text)?;
        }
        for file in &self.files {
            write_if_changed(&dir.join(&file.file_name), &file.source)?;
        }
        let unit = dir.join(TRANSLATION_UNIT_FILE);
        write_if_changed(&unit, &self.translation_unit())?;
        Ok(unit)
    }
}

/// Writes `text` unless the file already holds it, so that timestamps (and tools that watch
/// them) only see real changes.
fn write_if_changed(path: &Path, text: &str) -> std::io::Result<()> {
    if std::fs::read(path).is_ok_and(|old| old == text.as_bytes()) {
        return Ok(());
    }
    std::fs::write(path, text)
}

/// The template context of one convolution kernel: integers, strings and a flag, nothing that
/// Tera would format its own way (floats). Serialised with serde into Tera's context.
#[derive(Serialize)]
struct ConvContext {
    name: String,
    /// Human-readable geometry for the banner comment.
    geometry: String,
    fixed: bool,
    r: u32,
    s: u32,
    sh: u32,
    sw: u32,
    bm: u32,
    bn: u32,
    bk: u32,
    tm: u32,
    tn: u32,
    threads: u32,
    /// Second argument of `__launch_bounds__`: blocks that must fit on one SM at once.
    min_blocks: u32,
    /// The per-thread register budget that follows from `min_blocks`.
    max_registers: u32,
    /// Why that budget, for the banner comment.
    min_blocks_why: &'static str,
    /// Static shared memory of a block ([`KernelSpec::shared_bytes`]), which the rendered
    /// kernel checks against the template's own count.
    shared_bytes: u64,
    /// Windows gathered from the NCHW input (`Variant::fused`).
    fused: bool,
    /// `Variant::micro_kernel`.
    micro_kernel: bool,
    /// `Variant::vector_loads`.
    vector_loads: bool,
    /// `Variant::double_buffering`.
    double_buffering: bool,
    /// `NCHW` or `NHWC`: the suffix of the C++ layout constant `IM2WIN_<layout_name>`.
    layout_name: &'static str,
    /// The C++ element types ([`crate::DType::cuda_type`] of [`KernelSpec::elements`]): input
    /// (and residual), filter, output (and bias), accumulator.
    element_x: &'static str,
    element_f: &'static str,
    element_y: &'static str,
    element_acc: &'static str,
}

/// The template context of one tensor-core kernel (`conv_tensorop.cu.tera`), in the
/// template's own terms: pixels and channels per block and per warp (`TileConfig::block_n`,
/// `block_m`, `thread_n`, `thread_m`), stages and row bytes.
#[derive(Serialize)]
struct TensorOpContext {
    name: String,
    geometry: String,
    fixed: bool,
    r: u32,
    s: u32,
    sh: u32,
    sw: u32,
    pixels: u32,
    channels: u32,
    warp_pixels: u32,
    warp_channels: u32,
    warps: u32,
    threads: u32,
    stages: u32,
    row_bytes: u64,
    bk: u32,
    shared_bytes: u64,
    min_blocks: u32,
    max_registers: u32,
    /// The loader's vector copies (`Variant::vector_loads`).
    vector: bool,
    channel_multiple: usize,
    /// The warpgroup MMA (`Variant::warpgroup`: wgmma, sm_90a) rather than the warp MMA.
    warpgroup: bool,
    /// Threads of the copying warpgroup (`Variant::warp_specialized`), else 0.
    producer_threads: u32,
    /// Teams of MMA warps (`KernelSpec::mma_teams`: 2 in a ping-pong kernel).
    teams: u32,
    /// Both operands copied by the tensor memory accelerator (`Variant::tma`): the kernel
    /// takes the input's and the filter's tensor maps.
    tma: bool,
    /// Threads of one team of MMA warps.
    team_threads: u32,
    /// Whether the kernel splits its reduction over `gridDim.z` (`KernelSpec::splits_reduction`).
    splits: bool,
    /// The MMA policy (`mma_tensorop.cuh`, `mma_warpgroup.cuh`): `WarpMmaTensorOp`,
    /// `WarpMmaTensorOpFastF32` (3xTF32) or `WarpgroupMmaTensorOp`.
    mma: &'static str,
    /// The MMA instruction, for the banner comment.
    instruction: &'static str,
    element_x: &'static str,
    element_f: &'static str,
    element_y: &'static str,
    element_acc: &'static str,
}

/// The template context of one grouped kernel (`conv_grouped.cu.tera`): the body
/// (`conv_grouped.cuh`) and its template arguments after types, geometry and threads.
#[derive(Serialize)]
struct GroupedContext {
    name: String,
    geometry: String,
    fixed: bool,
    r: u32,
    s: u32,
    sh: u32,
    sw: u32,
    /// Channels and outputs along a row per thread ([`Grouping::tile`]).
    tm: u32,
    tn: u32,
    threads: u32,
    /// The launch bounds' blocks per SM ([`KernelSpec::min_blocks_per_sm`]).
    min_blocks: u32,
    /// `DepthwiseNchw`, `DepthwiseNhwc` or `GroupedDirect`.
    body: &'static str,
    /// What the family is, for the banner comment.
    family_doc: &'static str,
    /// The body's last template arguments.
    params: String,
    layout_name: &'static str,
    element_x: &'static str,
    element_f: &'static str,
    element_y: &'static str,
    element_acc: &'static str,
}

impl GroupedContext {
    fn new(spec: &KernelSpec) -> Self {
        let t = spec.tile;
        let (fixed, r, s, sh, sw, geometry) = geometry_context(spec.geometry);
        let elements = spec.elements();
        let layout_name = match spec.layout {
            Layout::Nchw => "NCHW",
            Layout::Nhwc => "NHWC",
        };
        let (body, family_doc, params) = match (spec.grouping, spec.layout) {
            (Grouping::Depthwise, Layout::Nchw) => (
                "DepthwiseNchw",
                "depthwise (groups = C): outputs along a row per thread, input rows read coalesced",
                format!("/*VQ=*/{}", t.thread_n),
            ),
            (Grouping::Depthwise, Layout::Nhwc) => (
                "DepthwiseNhwc",
                "depthwise (groups = C): a vector of consecutive channels per thread",
                format!("/*VC=*/{}, /*VQ=*/{}", t.thread_m, t.thread_n),
            ),
            _ => (
                "GroupedDirect",
                "grouped, any group count: the direct convolution, one output per thread",
                format!("IM2WIN_{layout_name}"),
            ),
        };
        GroupedContext {
            name: spec.name(),
            geometry,
            fixed,
            r,
            s,
            sh,
            sw,
            tm: t.thread_m,
            tn: t.thread_n,
            threads: spec.threads(),
            min_blocks: spec.min_blocks_per_sm(),
            body,
            family_doc,
            params,
            layout_name,
            element_x: elements.input.cuda_type(),
            element_f: elements.filter.cuda_type(),
            element_y: elements.output.cuda_type(),
            element_acc: elements.accumulator.cuda_type(),
        }
    }
}

/// `(fixed, r, s, sh, sw, description)` of a geometry, for the templates.
fn geometry_context(geometry: Geometry) -> (bool, u32, u32, u32, u32, String) {
    match geometry {
        Geometry::Fixed(g) => (
            true,
            g.filter_h,
            g.filter_w,
            g.stride_h,
            g.stride_w,
            format!(
                "fixed: {}x{} filter, stride {}x{}, dilation 1x1 (compile-time constants)",
                g.filter_h, g.filter_w, g.stride_h, g.stride_w
            ),
        ),
        Geometry::Generic => (
            false,
            0,
            0,
            0,
            0,
            "generic: any filter size, stride, padding and dilation (run-time values)".to_string(),
        ),
    }
}

impl TensorOpContext {
    fn new(spec: &KernelSpec) -> Self {
        let t = spec.tile;
        let (fixed, r, s, sh, sw, geometry) = geometry_context(spec.geometry);
        let elements = spec.elements();
        TensorOpContext {
            name: spec.name(),
            geometry,
            fixed,
            r,
            s,
            sh,
            sw,
            pixels: t.block_n,
            channels: t.block_m,
            warp_pixels: t.thread_n,
            warp_channels: t.thread_m,
            warps: t.warps(),
            threads: spec.threads(),
            stages: spec.stages(),
            row_bytes: u64::from(t.block_k) * spec.dtype.size_bytes() as u64,
            bk: t.block_k,
            shared_bytes: spec.shared_bytes(),
            min_blocks: spec.min_blocks_per_sm(),
            max_registers: spec.max_registers(),
            vector: spec.variant.vector_loads,
            channel_multiple: spec.channel_multiple(),
            warpgroup: spec.variant.warpgroup,
            producer_threads: if spec.variant.warp_specialized {
                PRODUCER_THREADS
            } else {
                0
            },
            teams: spec.mma_teams(),
            tma: spec.variant.tma,
            team_threads: t.warps() * 32,
            splits: spec.splits_reduction(),
            mma: match (spec.math, spec.variant.warpgroup) {
                (_, true) => "WarpgroupMmaTensorOp",
                (Math::TensorOpFastF32, false) => "WarpMmaTensorOpFastF32",
                (_, false) => "WarpMmaTensorOp",
            },
            instruction: match (spec.dtype, spec.variant.warpgroup) {
                (DType::F32, _) if spec.math == Math::TensorOpFastF32 => {
                    "3xTF32: mma.sync.m16n8k8 TF32, each float operand split into big = tf32(x) and small = tf32(x - big),\n//              small*big + big*small + big*big accumulated in FP32 (OpMultiplyAddFastF32), fragments by ldmatrix"
                }
                (DType::F32, false) => {
                    "mma.sync.m16n8k8 TF32 (float operands rounded with cvt.rna.tf32.f32), fragments by ldmatrix"
                }
                (DType::F32, true) => {
                    "wgmma.mma_async m64nNk8 TF32 (sm_90a), both operands read from shared memory, where the TMA copies\n//              of TFLOAT32 tensor maps wrote them rounded to TF32"
                }
                (DType::Bf16, false) => "mma.sync.m16n8k16 BF16, fragments by ldmatrix",
                (DType::F16, false) => "mma.sync.m16n8k16 FP16, fragments by ldmatrix",
                (DType::Bf16, true) => {
                    "wgmma.mma_async m64nNk16 BF16 (sm_90a), both operands read from shared memory"
                }
                (DType::F16, true) => {
                    "wgmma.mma_async m64nNk16 FP16 (sm_90a), both operands read from shared memory"
                }
            },
            element_x: elements.input.cuda_type(),
            element_f: elements.filter.cuda_type(),
            element_y: elements.output.cuda_type(),
            element_acc: elements.accumulator.cuda_type(),
        }
    }
}

impl ConvContext {
    fn new(spec: &KernelSpec) -> Self {
        let t = spec.tile;
        // r, s, sh and sw are only read by the template's fixed-geometry branch.
        let (fixed, r, s, sh, sw, geometry) = geometry_context(spec.geometry);
        // The register budget and blocks per SM: `TileConfig::min_blocks_per_sm` (dispatch
        // counts on the same number).
        let min_blocks_why = if t.thread_m * t.thread_n <= 64 {
            " (enough for up to 64 accumulators without spilling)"
        } else {
            ""
        };
        let min_blocks = t.min_blocks_per_sm();
        let max_registers = t.max_registers();
        let elements = spec.elements();
        ConvContext {
            name: spec.name(),
            geometry,
            fixed,
            r,
            s,
            sh,
            sw,
            bm: t.block_m,
            bn: t.block_n,
            bk: t.block_k,
            tm: t.thread_m,
            tn: t.thread_n,
            threads: t.threads(),
            min_blocks,
            max_registers,
            min_blocks_why,
            shared_bytes: spec.shared_bytes(),
            fused: spec.variant.fused,
            micro_kernel: spec.variant.micro_kernel,
            vector_loads: spec.variant.vector_loads,
            double_buffering: spec.variant.double_buffering,
            layout_name: match spec.layout {
                Layout::Nchw => "NCHW",
                Layout::Nhwc => "NHWC",
            },
            element_x: elements.input.cuda_type(),
            element_f: elements.filter.cuda_type(),
            element_y: elements.output.cuda_type(),
            element_acc: elements.accumulator.cuda_type(),
        }
    }
}

/// Renders the embedded templates. Build one and reuse it: parsing the templates is the
/// expensive part.
#[derive(Debug)]
pub struct Renderer {
    tera: Tera,
}

impl Renderer {
    /// Parses the embedded templates.
    pub fn new() -> Result<Self, RenderError> {
        let mut tera = Tera::new();
        // CUDA is not HTML: never escape `<`, `&` or quotes.
        tera.autoescape_on(Vec::<&str>::new());
        for (name, text) in TEMPLATES {
            tera.add_raw_template(name, text)
                .map_err(|source| RenderError::Template {
                    template: name.to_string(),
                    source,
                })?;
        }
        Ok(Renderer { tera })
    }

    fn render(&self, template: &str, context: &Context) -> Result<String, RenderError> {
        self.tera
            .render(template, context)
            .map_err(|source| RenderError::Template {
                template: template.to_string(),
                source,
            })
    }

    /// The CUDA source of one convolution kernel (without the `#include` of the header):
    /// `conv.cu.tera` for a SIMT kernel, `conv_tensorop.cu.tera` for a tensor-core kernel.
    pub fn kernel(&self, spec: &KernelSpec) -> Result<String, RenderError> {
        spec.validate()?;
        let (template, context) = match spec.math {
            _ if spec.is_grouped() => (
                CONV_GROUPED_TEMPLATE,
                Context::from_serialize(&GroupedContext::new(spec)),
            ),
            Math::Simt => (
                CONV_TEMPLATE,
                Context::from_serialize(&ConvContext::new(spec)),
            ),
            Math::TensorOp | Math::TensorOpFastF32 => (
                CONV_TENSOROP_TEMPLATE,
                Context::from_serialize(&TensorOpContext::new(spec)),
            ),
        };
        let context = context.map_err(|source| RenderError::Template {
            template: template.to_string(),
            source,
        })?;
        self.render(template, &context)
    }

    /// The support file: input and filter transforms, the split reduction and the float64
    /// oracle.
    pub fn support_file(&self) -> Result<SourceFile, RenderError> {
        let mut context = Context::new();
        context.insert("nhwc_tiled_max_r", &support::NHWC_TILED_MAX_R);
        context.insert("nhwc_tiled_min_c", &support::NHWC_TILED_MIN_C);
        let body = self.render(SUPPORT_TEMPLATE, &context)?;
        Ok(source_file(
            "im2win_support.cu",
            SUPPORT_TEMPLATE,
            &["epilogue.cuh"],
            &[body],
            &support::ALL,
        ))
    }

    /// The benchmark's baselines file ([`baselines`]), which [`Renderer::catalogue`] adds for
    /// a catalogue with [`Catalogue::baselines`]. Its template gets an empty context.
    pub fn baselines_file(&self) -> Result<SourceFile, RenderError> {
        let body = self.render(BASELINES_TEMPLATE, &Context::new())?;
        Ok(source_file(
            "im2win_baselines.cu",
            BASELINES_TEMPLATE,
            &["copy.cuh"],
            &[body],
            &baselines::ALL,
        ))
    }

    /// Renders the support file, the baselines file if `catalogue` has
    /// [`Catalogue::baselines`], and one convolution kernel per spec of `catalogue`.
    pub fn catalogue(&self, catalogue: &Catalogue) -> Result<RenderedSources, RenderError> {
        let bodies = catalogue
            .kernels
            .iter()
            .map(|spec| self.kernel(spec))
            .collect::<Result<Vec<_>, _>>()?;
        let names: Vec<String> = catalogue.kernels.iter().map(KernelSpec::name).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        // The tensor-core family's header only where its kernels are: it needs nvcc (the host
        // emulation of the SIMT kernels, codegen/tests/emulate, compiles the others).
        let mut headers = vec!["conv_fprop.cuh"];
        let mut templates = CONV_TEMPLATE.to_string();
        if catalogue.kernels.iter().any(|k| k.math.is_tensor_op()) {
            headers.push("conv_fprop_tensorop.cuh");
            templates = format!("{CONV_TEMPLATE} and templates/{CONV_TENSOROP_TEMPLATE}");
        }
        // Likewise the grouped family (its bf16 and f16 kernels need nvcc's types).
        if catalogue.kernels.iter().any(KernelSpec::is_grouped) {
            headers.push("conv_grouped.cuh");
            templates = format!("{templates} and templates/{CONV_GROUPED_TEMPLATE}");
        }
        let conv = source_file("im2win_conv.cu", &templates, &headers, &bodies, &names);
        let mut files = vec![self.support_file()?];
        if catalogue.baselines {
            files.push(self.baselines_file()?);
        }
        files.push(conv);
        Ok(RenderedSources { files })
    }
}

/// Assembles a source file: a banner, the includes of the common header and of `headers`
/// (the building blocks the file uses; they include common.cuh themselves), then the
/// rendered bodies.
fn source_file(
    file_name: &str,
    template: &str,
    headers: &[&str],
    bodies: &[String],
    kernels: &[&str],
) -> SourceFile {
    let mut source = format!(
        "// {file_name}: generated by im2win-codegen {} from templates/{template}; do not edit.\n\
         // Kernels:\n",
        env!("CARGO_PKG_VERSION"),
    );
    for kernel in kernels {
        let _ = writeln!(source, "//   {kernel}");
    }
    let _ = writeln!(source, "#include \"{HEADER_FILE}\"");
    for header in headers {
        let _ = writeln!(source, "#include \"{header}\"");
    }
    for body in bodies {
        source.push('\n');
        source.push_str(body);
    }
    SourceFile {
        file_name: file_name.to_string(),
        source,
        kernels: kernels.iter().map(|k| k.to_string()).collect(),
    }
}

/// The CUDA source of one convolution kernel; see [`Renderer::kernel`].
pub fn render_kernel(spec: &KernelSpec) -> Result<String, RenderError> {
    Renderer::new()?.kernel(spec)
}

/// Renders `catalogue`; see [`Renderer::catalogue`].
pub fn render_catalogue(catalogue: &Catalogue) -> Result<RenderedSources, RenderError> {
    Renderer::new()?.catalogue(catalogue)
}
