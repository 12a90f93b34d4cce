//! Builds the ablation's kernels (`Catalogue::ablation`: the paper's tile with one technique
//! switched off at a time) into `OUT_DIR/ablation.fatbin`, which `im2win bench --methods
//! ablation` loads beside im2win's own kernels (`im2win::include_kernels!("ablation")`).
//! They stay out of the library: dispatch would never choose them.
//!
//! The same generator as im2win's build.rs: without nvcc the build succeeds with a warning
//! and the ablation methods are skipped with `Error::KernelsNotBuilt`;
//! `IM2WIN_REQUIRE_NVCC=1` makes a missing nvcc a build error.

use im2win_codegen::{Builder, Catalogue};

fn main() {
    Builder::new("ablation")
        .catalogue(&Catalogue::ablation())
        .build_or_exit();
}
