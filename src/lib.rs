//! im2win: 2-D convolution (PyTorch's `conv2d`, float32, NCHW) on NVIDIA GPUs with the im2win
//! layout, from ahead-of-time specialised CUDA kernels.
//!
//! At build time, build.rs renders one kernel per specialisation of the default
//! [`Catalogue`](codegen::Catalogue) and compiles them all into one fatbin embedded in this
//! crate; [`kernels()`] hands it to an [`Engine`], which picks a kernel per problem. Without
//! nvcc at build time the crate still builds (with a warning): the CPU backend ([`cpu`]) works
//! and GPU calls return [`Error::KernelsNotBuilt`]. See the README for the whole story and
//! `docs/DESIGN.md` for the layouts and kernel signatures.
//!
//! # Three ways in
//!
//! ## 1. The library call
//! Describe the problem, and the engine picks the kernel (a fixed-geometry specialisation when
//! the catalogue has one, else the generic kernel) and launches it on its stream:
//!
//! ```
//! use im2win::{Conv2dProblem, Padding};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let problem = Conv2dProblem::new([2, 16, 28, 28], [32, 16, 3, 3]) // [N,C,H,W], [K,C,R,S]
//!     .with_padding(Padding::uniform(1));
//! let shape = problem.shape()?; // validates; element counts of every buffer
//! let input = vec![0.5_f32; shape.input_len];
//! let filter = vec![0.25_f32; shape.filter_len];
//!
//! let engine = match im2win::engine(0) { // GPU 0, embedded kernels, committed tuning table
//!     Ok(engine) if im2win::kernels().is_built() => engine,
//!     _ => {
//!         // No GPU here (or no kernels): the multi-threaded CPU backend computes the same.
//!         let mut output = vec![0.0_f32; shape.output_len];
//!         im2win::cpu::conv2d(&problem, &input, &filter, None, &mut output)?;
//!         return Ok(());
//!     }
//! };
//! let stream = engine.stream();
//! let x = stream.clone_htod(&input)?;
//! let f = stream.clone_htod(&filter)?;
//! let mut y = stream.alloc_zeros::<f32>(shape.output_len)?;
//! engine.conv2d(&problem, &x, &f, None, &mut y, None)?; // bias, workspace: optional
//! let output: Vec<f32> = stream.clone_dtoh(&y)?; // synchronises
//! # assert_eq!(output.len(), shape.output_len);
//! # Ok(())
//! # }
//! ```
//!
//! ## 2. The macro
//! [`conv2d!`] names a specialisation at compile time, checked against the catalogue that
//! build.rs compiles (`Catalogue::default_catalogue()`, the one source of truth). It expands
//! to a `const` [`Specialization`] that [`Engine::conv2d_specialized`] launches without
//! dispatch; a problem of another filter size or stride is refused with
//! [`Error::SpecMismatch`].
//!
//! ```
//! use im2win::{Conv2dProblem, Error, Padding, Specialization};
//!
//! const CONV3X3: Specialization = im2win::conv2d!(f32, filter = 3x3, stride = 1);
//! const DOWNSAMPLE: Specialization =
//!     im2win::conv2d!(f32, filter = 1x1, stride = 2, tile = 128x128x8/8x8);
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let problem = Conv2dProblem::new([2, 16, 28, 28], [32, 16, 3, 3]).with_padding(Padding::uniform(1));
//! CONV3X3.check(&problem)?; // the same check the launch makes, without a GPU
//! let five = Conv2dProblem::new([2, 16, 28, 28], [32, 16, 5, 5]);
//! assert!(matches!(CONV3X3.check(&five), Err(Error::SpecMismatch { .. })));
//! assert_eq!(DOWNSAMPLE.to_string(), "im2win_f32_r1s1_s2x2_b128x128x8_t8x8");
//!
//! let Ok(engine) = im2win::engine(0) else { return Ok(()) }; // no GPU here
//! # if !im2win::kernels().is_built() { return Ok(()); }
//! let shape = problem.shape()?;
//! let stream = engine.stream();
//! let x = stream.clone_htod(&vec![0.5_f32; shape.input_len])?;
//! let f = stream.clone_htod(&vec![0.25_f32; shape.filter_len])?;
//! let mut y = stream.alloc_zeros::<f32>(shape.output_len)?;
//! engine.conv2d_specialized(&CONV3X3, &problem, &x, &f, None, &mut y, None)?;
//! # Ok(())
//! # }
//! ```
//!
//! A specialisation the catalogue lacks does not compile; the error points at the argument,
//! lists the nearest kernels available and says how to generate the missing one:
//!
//! ```compile_fail
//! const K: im2win::Specialization = im2win::conv2d!(f32, filter = 9x9, stride = 3);
//! ```
//!
//! ## 3. Kernels of your own
//! A crate generates the specialisations it needs in its own build.rs, with the same
//! generator that builds this crate's kernels (`im2win_codegen::Builder`, build-dependency
//! `im2win-codegen` with feature `generate`). A TOML manifest names them, and is read both by
//! build.rs and by `conv2d!(.., catalogue = "im2win.toml")`:
//!
//! ```toml
//! # im2win.toml, beside the crate's Cargo.toml
//! name = "custom"
//! [[kernel]]
//! filter = "9x9"
//! stride = 3
//! ```
//!
//! ```no_run
//! // build.rs
//! fn main() {
//!     // Renders and compiles the manifest's kernels into OUT_DIR/custom.fatbin (+ catalogue);
//!     // without nvcc: a warning, and the kernels fail at run time (as for this crate).
//!     im2win_codegen::Builder::from_manifest("im2win.toml").build_or_exit();
//! }
//! ```
//!
//! ```ignore
//! // src/main.rs: embed the module, merge it with the default kernels, name a kernel.
//! const CONV9X9: im2win::Specialization =
//!     im2win::conv2d!(f32, filter = 9x9, stride = 3, catalogue = "im2win.toml");
//!
//! let kernels = im2win::kernels().merged(im2win::include_kernels!("custom"));
//! let engine = im2win::Engine::new(0, kernels)?.with_tuning(im2win::default_tuning());
//! engine.conv2d_specialized(&CONV9X9, &problem, &x, &f, None, &mut y, None)?;
//! engine.conv2d(&problem, &x, &f, None, &mut y, None)?; // dispatch also sees the 9x9 kernel
//! ```
//!
//! `examples/custom-kernels/` in the repository is such a crate, built and run in CI.

// The documentation shows a build script, whose `fn main` is the point.
#![allow(clippy::needless_doctest_main)]

// The macros expand to `::im2win::…` paths; this makes them resolve inside this crate too.
extern crate self as im2win;

pub use im2win_codegen as codegen;
pub use im2win_macros::conv2d;
pub use im2win_runtime::*;

use im2win_codegen::KernelReport;

/// Embeds the kernels a build script generated with `im2win_codegen::Builder::new(name)` (or
/// a manifest whose `name` is `name`): `OUT_DIR/<name>.fatbin` and its catalogue, as a
/// [`KernelModule`] to merge with [`kernels()`] ([`KernelModule::merged`]).
///
/// When the build script ran without nvcc the fatbin is empty and the module is
/// [`KernelModule::not_built`]: dispatch works, launches return [`Error::KernelsNotBuilt`].
/// The crate must have a build script that wrote the files (else: "couldn't read
/// `…/OUT_DIR/<name>.fatbin`").
///
/// ```ignore
/// let kernels = im2win::kernels().merged(im2win::include_kernels!("custom"));
/// ```
#[macro_export]
macro_rules! include_kernels {
    ($name:literal) => {{
        // 16-byte aligned like the driver's own fatbin sections (the headers hold 8-byte
        // fields), in case it is handed to the driver without a copy.
        #[repr(C, align(16))]
        struct Aligned<T: ?Sized>(T);
        static FATBIN: &Aligned<[u8]> = &Aligned(*::core::include_bytes!(::core::concat!(
            ::core::env!("OUT_DIR"),
            "/",
            $name,
            ".fatbin"
        )));
        $crate::KernelModule::embedded(
            $name,
            &FATBIN.0,
            ::core::include_str!(::core::concat!(
                ::core::env!("OUT_DIR"),
                "/",
                $name,
                ".catalogue.json"
            )),
        )
    }};
}

/// The kernels embedded at build time: the fatbin and the catalogue it was compiled from
/// (`include_kernels!("im2win")`; build.rs writes them with `Builder::new("im2win")`).
///
/// When the crate was built without nvcc the module has no fatbin
/// ([`KernelModule::not_built`]); dispatch still works, launching returns
/// [`Error::KernelsNotBuilt`].
pub fn kernels() -> KernelModule {
    include_kernels!("im2win")
}

/// ptxas's resource report of the fatbin's kernels (`null` when they were not built).
const KERNELS_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/im2win.kernels.json"));

/// The README's Rust examples, compiled as doc tests (so they stay true).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// The tuning table measured with `im2win tune` on an NVIDIA H200 and committed in
/// `tuning/nvidia-h200.json`: the fastest kernel for the layers of the paper, ResNet-50 and
/// VGG-16 at the batch sizes benchmarked. [`engine`] applies it; on another GPU model it is
/// ignored and dispatch uses its heuristic.
pub fn default_tuning() -> TuningTable {
    // The file is committed JSON written by `im2win tune`; were it ever unreadable, an
    // empty table leaves dispatch to the heuristic rather than fail.
    TuningTable::from_json(H200_TUNING).unwrap_or_default()
}

/// The committed H200 tuning table.
const H200_TUNING: &str = include_str!("../tuning/nvidia-h200.json");

/// An [`Engine`] on device `ordinal` with the embedded kernels ([`kernels()`]) and the
/// committed tuning table ([`default_tuning`]): what most users want.
///
/// # Errors
/// As [`Engine::new`].
pub fn engine(ordinal: usize) -> Result<Engine> {
    Ok(Engine::new(ordinal, kernels())?.with_tuning(default_tuning()))
}

/// Registers, shared memory and spills of every embedded kernel on every SASS target, as
/// ptxas reported them at build time; `None` when the kernels were not built.
pub fn kernel_resources() -> Option<KernelReport> {
    KernelReport::from_json(KERNELS_JSON).ok()
}
