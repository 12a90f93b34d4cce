//! `im2win-codegen`: what an im2win kernel is specialised on, the default catalogue, and
//! (with the `generate` feature) the Tera rendering and nvcc driver that turn a catalogue
//! into one fatbin.
//!
//! The spec types are the single source of truth: build.rs, the runtime's dispatch and the
//! proc macro all read them.

pub mod catalogue;
pub mod spec;

pub use catalogue::{Catalogue, DEFAULT_GEOMETRIES, DEFAULT_TILES};
pub use spec::{DType, FixedGeometry, Geometry, KernelSpec, SpecError, TileConfig};
