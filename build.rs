//! Renders the default catalogue (its tensor-core families as the crate's features `tc-bf16`,
//! `tc-f16`, `tc-tf32` say: all by default; with `tc-warp-specialized`, the experimental
//! warp-specialised kernels that copy with `cp.async` too; with `tc-tf32-tma`, the experimental
//! TF32 kernels of the warpgroup MMA) and compiles it with nvcc into
//! `OUT_DIR/im2win.fatbin`, which
//! `src/lib.rs` embeds (`im2win::include_kernels!("im2win")`). Beside it:
//! `im2win.catalogue.json` (the specs the fatbin holds) and `im2win.kernels.json` (ptxas's
//! registers, shared memory and spills per kernel).
//!
//! The fatbin holds the kernels dispatch can pick and the support kernels they need
//! (transforms, split reduction, the float64 oracle): not the benchmark's baselines nor the
//! ablation's kernels, which `bench/build.rs` builds into the benchmark's own module.
//!
//! This is one call of `im2win_codegen::Builder`, the generator a user's build.rs calls for
//! kernels of its own: the same rendering, nvcc driver, cache and behaviour without nvcc (see
//! `codegen/src/builder.rs`). Without nvcc the crate still builds: a `cargo:warning` says why,
//! the fatbin is empty and `im2win::kernels()` is a module without kernels (the CPU backend
//! still works). With `IM2WIN_REQUIRE_NVCC=1` (CI, releases) a missing nvcc or a failed compile
//! fails the build instead. On docs.rs (`DOCS_RS`) nvcc is never run.
//!
//! Environment: `NVCC`, `CUDA_HOME`, `CUDA_PATH` (finding nvcc), `IM2WIN_CUDA_ARCHS` (targets,
//! e.g. `80,90`), `IM2WIN_REQUIRE_NVCC`, `IM2WIN_DUMP_DIR` (copy the rendered .cu files to
//! `$IM2WIN_DUMP_DIR/im2win/`), `DOCS_RS`.

use std::path::Path;

use im2win_codegen::{Builder, Catalogue, DType};

fn main() {
    // The templates and the generator reach this script through the im2win-codegen
    // build-dependency (a change rebuilds it, which reruns this script); naming them as well
    // is belt and braces inside the workspace. Only existing paths: cargo reruns a script on
    // every build when a named path is missing, as these are in a published package.
    for path in ["codegen/templates", "codegen/src", "build.rs"] {
        if Path::new(path).exists() {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    // The tensor-core families this build asks for (the crate's features; all by default).
    let families = [
        ("CARGO_FEATURE_TC_BF16", DType::Bf16),
        ("CARGO_FEATURE_TC_F16", DType::F16),
        ("CARGO_FEATURE_TC_TF32", DType::F32),
    ];
    let tensor_op: Vec<DType> = families
        .into_iter()
        .filter(|(feature, _)| std::env::var_os(feature).is_some())
        .map(|(_, dtype)| dtype)
        .collect();
    let mut catalogue = Catalogue::default_for(&tensor_op);
    // The experimental warp-specialised kernels that copy with `cp.async` (feature
    // `tc-warp-specialized`; the TMA ones are in the default catalogue), of the families
    // asked for.
    if std::env::var_os("CARGO_FEATURE_TC_WARP_SPECIALIZED").is_some() {
        catalogue.kernels.extend(
            Catalogue::warp_specialized()
                .kernels
                .into_iter()
                .filter(|spec| tensor_op.contains(&spec.dtype)),
        );
    }
    // The TF32 kernels of the warpgroup MMA, copied by TMA (feature `tc-tf32-tma`; not yet
    // run on a GPU), with the TF32 family.
    if std::env::var_os("CARGO_FEATURE_TC_TF32_TMA").is_some() && tensor_op.contains(&DType::F32) {
        catalogue.kernels.extend(Catalogue::tf32_tma().kernels);
    }
    Builder::new("im2win").catalogue(&catalogue).build_or_exit();
}
