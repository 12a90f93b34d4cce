//! im2win: 2-D convolution (PyTorch's `conv2d`, float32, NCHW) on NVIDIA GPUs with the im2win
//! layout, from ahead-of-time specialised CUDA kernels.
//!
//! At build time, build.rs renders one kernel per specialisation of the default
//! [`Catalogue`] and compiles them all into one fatbin embedded in this
//! crate; [`kernels()`] hands it to an [`Engine`], which picks a kernel per problem. Without
//! nvcc at build time the crate still builds (with a warning): the CPU backend ([`cpu`]) works
//! and GPU calls return [`Error::KernelsNotBuilt`]. See the README for the whole story and
//! `docs/DESIGN.md` for the layouts and kernel signatures.
//!
//! ```no_run
//! use im2win::{Conv2dProblem, Padding};
//!
//! # fn main() -> im2win::Result<()> {
//! let problem = Conv2dProblem::new([32, 64, 56, 56], [64, 64, 3, 3]) // [N,C,H,W], [K,C,R,S]
//!     .with_padding(Padding::uniform(1));
//! let engine = im2win::engine(0)?; // embedded kernels + the committed tuning table
//! # let _ = (problem, engine);
//! # Ok(())
//! # }
//! ```

pub use im2win_codegen as codegen;
pub use im2win_runtime::*;

use im2win_codegen::{Catalogue, KernelReport};

/// The fatbin build.rs compiled, 16-byte aligned like the driver's own fatbin sections (the
/// headers hold 8-byte fields), in case it is handed to the driver without a copy.
#[cfg(not(im2win_no_kernels))]
static FATBIN: &Aligned<[u8]> =
    &Aligned(*include_bytes!(concat!(env!("OUT_DIR"), "/im2win.fatbin")));

#[cfg(not(im2win_no_kernels))]
#[repr(C, align(16))]
struct Aligned<T: ?Sized>(T);

/// The specs the fatbin holds, as build.rs wrote them beside it.
const CATALOGUE_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/catalogue.json"));

/// ptxas's resource report of the fatbin's kernels.
#[cfg(not(im2win_no_kernels))]
const KERNELS_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/kernels.json"));

/// The kernels embedded at build time: the fatbin and the catalogue it was compiled from.
///
/// When the crate was built without nvcc the module has no fatbin
/// ([`KernelModule::not_built`]); dispatch still works, launching returns
/// [`Error::KernelsNotBuilt`].
pub fn kernels() -> KernelModule {
    // build.rs wrote the JSON from `Catalogue::default_catalogue()` in the same build, so it
    // always parses; the default catalogue is the same list should it ever not.
    let catalogue =
        Catalogue::from_json(CATALOGUE_JSON).unwrap_or_else(|_| Catalogue::default_catalogue());
    #[cfg(not(im2win_no_kernels))]
    return KernelModule::new(&FATBIN.0, catalogue);
    #[cfg(im2win_no_kernels)]
    return KernelModule::not_built(catalogue);
}

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

/// An [`Engine`] on device `ordinal` with the embedded kernels ([`kernels`]) and the
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
    #[cfg(not(im2win_no_kernels))]
    return KernelReport::from_json(KERNELS_JSON).ok();
    #[cfg(im2win_no_kernels)]
    return None;
}
