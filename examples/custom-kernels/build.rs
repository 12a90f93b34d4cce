//! Generates the kernels that `im2win.toml` names into `OUT_DIR/custom.fatbin` and
//! `OUT_DIR/custom.catalogue.json`, which `im2win::include_kernels!("custom")` embeds.
//!
//! The same generator as im2win's own build: without nvcc the build succeeds with a warning
//! and the kernels fail at run time with `Error::KernelsNotBuilt`; with
//! `IM2WIN_REQUIRE_NVCC=1` a missing nvcc is a build error. `NVCC`, `CUDA_HOME`,
//! `IM2WIN_CUDA_ARCHS` work as for im2win.

fn main() {
    im2win_codegen::Builder::from_manifest("im2win.toml").build_or_exit();
}
