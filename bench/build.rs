//! Builds the benchmark's own kernels into `OUT_DIR/bench.fatbin` (module `bench`), which
//! `im2win bench` loads beside im2win's default kernels (`im2win::include_kernels!("bench")`,
//! merged into the engine in `src/gpu.rs`):
//!
//! * the ablation's kernels (`Catalogue::ablation`: the paper's tile with one technique
//!   switched off at a time), for `--methods ablation`;
//! * the baselines (`im2win_codegen::catalogue::baselines`, `Builder::with_baselines`): the
//!   float32 direct convolution of `--methods direct` and the im2col transform of
//!   `--methods im2col-cublas`.
//!
//! Both stay out of the library's fatbin: dispatch would never choose them. The support
//! kernels (transforms, the float64 oracle) are in this fatbin as in every one, but the
//! engine takes them from im2win's, the first part.
//!
//! The same generator as im2win's build.rs: without nvcc the build succeeds with a warning
//! and the methods that need these kernels are skipped with `Error::KernelsNotBuilt`;
//! `IM2WIN_REQUIRE_NVCC=1` makes a missing nvcc a build error.

use im2win_codegen::{Builder, Catalogue};

fn main() {
    Builder::new("bench")
        .catalogue(&Catalogue::ablation())
        .with_baselines()
        .build_or_exit();
}
