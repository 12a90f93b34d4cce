//! `im2win-codegen`: what an im2win kernel is specialised on, the default catalogue, and
//! (with the `generate` feature) the Tera rendering and nvcc driver that turn a catalogue
//! into one fatbin.
//!
//! The spec types are the single source of truth: build.rs, the runtime's dispatch and the
//! proc macro all read them. [`fatbin`] and [`resources`] need no feature: the runtime uses
//! them to inspect a compiled fatbin and its ptxas report.
//!
//! Features:
//! * `manifest`: [`manifest`], the TOML manifest (`im2win.toml`) that names a crate's own
//!   specialisations; the proc macro reads it at compile time.
//! * `generate` (implies `manifest`): Tera rendering (`render`), the nvcc driver (`nvcc`)
//!   and `Builder`, the generator as a library for a build script (im2win's own
//!   build.rs is one `Builder` call).

pub mod abi;
#[cfg(feature = "generate")]
pub mod builder;
pub mod catalogue;
pub mod fatbin;
pub mod layout;
#[cfg(feature = "manifest")]
pub mod manifest;
#[cfg(feature = "generate")]
pub mod nvcc;
#[cfg(feature = "generate")]
pub mod render;
pub mod resources;
pub mod spec;

#[cfg(feature = "generate")]
pub use builder::{BuildError, Builder, Output};
pub use catalogue::{
    Catalogue, DEFAULT_GEOMETRIES, DEFAULT_TILES, DEPTHWISE_GEOMETRIES, FUSED_TILES, NHWC_TILES,
    TENSOR_OP_FAST_F32_KERNELS, TENSOR_OP_KERNELS, TENSOR_OP_TILES, TENSOR_OP_TYPES, TensorOpTile,
};
pub use layout::{FilterLayout, Layout};
#[cfg(feature = "manifest")]
pub use manifest::{Manifest, ManifestError};
#[cfg(feature = "generate")]
pub use nvcc::{CompileOutput, CudaTargets, Nvcc, NvccError};
#[cfg(feature = "generate")]
pub use render::{RenderError, RenderedSources, Renderer, SourceFile};
pub use resources::{KernelReport, KernelResources};
pub use spec::{
    Algorithm, DType, ElementTypes, EpilogueKind, FixedGeometry, GROUPED_THREADS, Geometry,
    Grouping, KernelSpec, MAX_SPLIT_SUMS_PER_THREAD, Math, Operation, Precision, SpecError,
    TileConfig, Variant, numeric_name, parse_numeric_name, parse_pair,
};
