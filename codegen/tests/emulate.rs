//! Runs the generated kernels on the CPU and checks their results, so that the kernels'
//! arithmetic is tested on machines without a GPU (CI).
//!
//! The rendered CUDA is compiled as C++20 by the host compiler against `emulate/cuda_host.h`
//! (threads for CUDA threads, a barrier for `__syncthreads`), with AddressSanitizer and
//! UndefinedBehaviorSanitizer when available. `emulate/driver.cpp` runs every convolution
//! kernel of the default catalogue and of some unusual specs, the transforms (also the
//! tensor-core kernels' channels-last transposes, both element sizes), the float64
//! oracle and the benchmark's direct baseline on random problems, against a float64 CPU
//! convolution. The baselines are not in the default catalogue's fatbin (only im2win-bench's
//! module holds them), so the emulated catalogue asks for them (`Catalogue::with_baselines`).
//! What it cannot see: anything GPU-specific (timing, the memory model, bank conflicts,
//! 2^31-element problems).
//!
//! The grouped family (`conv_grouped.cuh`) has a driver of its own, `emulate/grouped_driver.cpp`
//! (its float32 members on random grouped and depthwise problems, aligned and misaligned
//! operands: `grouped_kernels_compute_the_convolution`); its bf16 and f16 members need nvcc's
//! types: `compile.rs` compiles them and `tests/gpu_groups.rs` checks them on the GPU.
//!
//! The tensor-core kernels ([`Math::TensorOp`]) are left out, explicitly: their MMA is
//! `mma.sync` on fragments that `ldmatrix` spreads over a warp's lanes, their copies are
//! `cp.async` groups and their operands `__nv_bfloat16` / `__half`, none of which a host
//! compiler has (their headers need nvcc). `compile.rs` compiles them (no spills); the GPU
//! tests (`tests/gpu_conv.rs`, `tests/gpu_dtypes.rs`) check their results against the float64
//! oracle.
//!
//! Of the warp-specialised main loop (`mainloop_warp_specialized.cuh`, tensor-core kernels
//! too) the host can check the ring's bookkeeping: `emulate/pipeline_state.cpp`
//! (`pipeline_state_skips_like_it_advances`).
//!
//! Skipped, with a message, when no C++20 compiler is found (`CXX`, else `c++`, `g++`,
//! `clang++`).

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use common::unusual_specs;

use im2win_codegen::render::Renderer;
use im2win_codegen::{Catalogue, DType, FixedGeometry, Geometry, Grouping, Math};

/// The driver's kernel table (`kernels.h`): includes the shim and the rendered unit, then one
/// row per convolution kernel.
fn kernel_table(catalogue: &Catalogue) -> String {
    let mut table = String::from(
        "#include \"cuda_host.h\"\n#include \"im2win.cu\"\n\
         struct Spec {\n    const char* name;\n    \
         void (*fn)(const float*, const float*, const float*, const float*, float*, ConvParams);\n    \
         int bm, bn, bk;\n    unsigned threads;\n    bool fixed;\n    int r, s, sh, sw;\n    bool fused;\n    int layout;\n};\n\
         static const Spec kernels[] = {\n",
    );
    for spec in &catalogue.kernels {
        let (fixed, g) = match spec.geometry {
            Geometry::Fixed(g) => (true, g),
            Geometry::Generic => (false, FixedGeometry::square(0, 0)),
        };
        let t = spec.tile;
        table.push_str(&format!(
            "    {{\"{name}\", {name}, {}, {}, {}, {}, {fixed}, {}, {}, {}, {}, {}, {}}},\n",
            t.block_m,
            t.block_n,
            t.block_k,
            t.threads(),
            g.filter_h,
            g.filter_w,
            g.stride_h,
            g.stride_w,
            spec.variant.fused,
            match spec.layout {
                im2win_codegen::Layout::Nchw => 0,
                im2win_codegen::Layout::Nhwc => 1,
            },
            name = spec.name(),
        ));
    }
    table.push_str("};\n");
    table
}

/// The first C++ compiler that runs.
fn cxx() -> Option<PathBuf> {
    let candidates = std::env::var_os("CXX")
        .map(PathBuf::from)
        .into_iter()
        .chain(["c++", "g++", "clang++"].map(PathBuf::from));
    candidates.into_iter().find(|c| {
        Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

/// Compiles the driver, with sanitizers if the toolchain has them. Returns the binary, or the
/// compiler's complaint.
fn build_driver(cxx: &Path, work: &Path) -> Result<PathBuf, String> {
    build(cxx, work, "driver.cpp")
}

/// Compiles `source` of `tests/emulate` against the rendered unit and table in `work` (see
/// [`build_driver`]).
fn build(cxx: &Path, work: &Path, source: &str) -> Result<PathBuf, String> {
    build_with(cxx, work, source, &[])
}

/// [`build`] with more include directories (after the work directory and the shim's).
fn build_with(cxx: &Path, work: &Path, source: &str, include: &[&Path]) -> Result<PathBuf, String> {
    let shim_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/emulate");
    let binary = work.join("driver");
    let mut last_error = String::new();
    for sanitizers in [true, false] {
        let mut command = Command::new(cxx);
        command
            .args(["-std=c++20", "-O1", "-pthread"])
            .arg("-I")
            .arg(work)
            .arg("-I")
            .arg(&shim_dir);
        for dir in include {
            command.arg("-I").arg(dir);
        }
        if sanitizers {
            command.args([
                "-fsanitize=address,undefined",
                "-fno-sanitize-recover=undefined",
            ]);
        }
        command.arg(shim_dir.join(source)).arg("-o").arg(&binary);
        let output = command.output().map_err(|e| e.to_string())?;
        if output.status.success() {
            if !sanitizers {
                eprintln!("note: built without sanitizers:\n{last_error}");
            }
            return Ok(binary);
        }
        last_error = String::from_utf8_lossy(&output.stderr).into_owned();
    }
    Err(last_error)
}

#[test]
fn kernels_compute_the_convolution() {
    let Some(cxx) = cxx() else {
        eprintln!("skipped: no C++ compiler found (set CXX)");
        return;
    };
    // The driver calls `im2win_direct_f32` too: render the baselines beside the kernels.
    let mut catalogue = Catalogue::default_catalogue().with_baselines();
    catalogue.kernels.extend(unusual_specs());
    // The NHWC window-buffer kernels outside the default catalogue (in it: four, run above):
    // the generic one; the two 3×3 ones differ from the default's and from their NCHW twins,
    // all emulated, by constants only, and each kernel costs CI about 7 s here.
    catalogue.kernels.extend(
        Catalogue::nhwc_window_buffer()
            .kernels
            .into_iter()
            .filter(|k| k.geometry == Geometry::Generic),
    );
    // The tensor-core kernels need nvcc (see the top of this file).
    let before = catalogue.kernels.len();
    // The grouped kernels too: their bf16 and f16 members need nvcc's types, and the driver
    // runs dense problems (the GPU tests, tests/gpu_groups.rs, check them).
    catalogue
        .kernels
        .retain(|spec| spec.math == Math::Simt && !spec.is_grouped());
    assert!(
        catalogue.kernels.len() < before,
        "the default catalogue has tensor-core kernels: this test says it leaves them out"
    );
    let sources = Renderer::new()
        .and_then(|r| r.catalogue(&catalogue))
        .expect("the catalogue renders");
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulate");
    sources.write_to(&work).expect("sources written");
    std::fs::write(work.join("kernels.h"), kernel_table(&catalogue)).expect("table written");

    let driver = match build_driver(&cxx, &work) {
        Ok(driver) => driver,
        Err(error) if error.contains("barrier") => {
            // A pre-C++20 standard library: not a kernel problem.
            eprintln!("skipped: {} has no std::barrier:\n{error}", cxx.display());
            return;
        }
        Err(error) => panic!("the rendered kernels do not compile as C++:\n{error}"),
    };
    let output = Command::new(&driver)
        .args(["20261128", "3"])
        .output()
        .expect("the driver runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "emulated kernels disagree with the reference:\n{stdout}\n{stderr}"
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
}

/// The driver's table of the float32 grouped kernels (`grouped_kernels.h`).
fn grouped_table(catalogue: &Catalogue) -> String {
    let mut table = String::from(
        "#include \"cuda_host.h\"\n#include \"im2win.cu\"\n\
         struct Spec {\n    const char* name;\n    \
         void (*fn)(const float*, const float*, const float*, const float*, float*, ConvParams);\n    \
         int depthwise, fixed, r, s, sh, sw, layout, tm, tn;\n    unsigned threads;\n};\n\
         static const Spec kernels[] = {\n",
    );
    for spec in &catalogue.kernels {
        let (fixed, g) = match spec.geometry {
            Geometry::Fixed(g) => (1, g),
            Geometry::Generic => (0, FixedGeometry::square(0, 0)),
        };
        table.push_str(&format!(
            "    {{\"{name}\", {name}, {}, {fixed}, {}, {}, {}, {}, {}, {}, {}, {}}},\n",
            i32::from(spec.grouping == Grouping::Depthwise),
            g.filter_h,
            g.filter_w,
            g.stride_h,
            g.stride_w,
            i32::from(spec.layout == im2win_codegen::Layout::Nhwc),
            spec.tile.thread_m,
            spec.tile.thread_n,
            spec.threads(),
            name = spec.name(),
        ));
    }
    table.push_str("};\n");
    table
}

/// The warp-specialised main loop's ring bookkeeping on the host (`emulate/pipeline_state.cpp`):
/// skipping another team's stages lands where advancing through them does.
#[test]
fn pipeline_state_skips_like_it_advances() {
    let Some(cxx) = cxx() else {
        eprintln!("skipped: no C++ compiler found (set CXX)");
        return;
    };
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulate-pipeline");
    std::fs::create_dir_all(&work).expect("work directory");
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let driver = build_with(&cxx, &work, "pipeline_state.cpp", &[templates.as_path()])
        .unwrap_or_else(|error| panic!("pipeline_state.cpp does not compile:\n{error}"));
    let output = Command::new(&driver).output().expect("the driver runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
}

/// The float32 grouped family (`conv_grouped.cuh`: depthwise NCHW and NHWC, fixed and
/// generic, and the direct grouped kernel) on random grouped and depthwise problems
/// (multipliers, padding, stride, dilation, both filter layouts, every epilogue), against a
/// float64 direct convolution, under the sanitizers (`emulate/grouped_driver.cpp`). The bf16
/// and f16 members share the code but need nvcc's types: the GPU tests check them.
#[test]
fn grouped_kernels_compute_the_convolution() {
    let Some(cxx) = cxx() else {
        eprintln!("skipped: no C++ compiler found (set CXX)");
        return;
    };
    let catalogue = Catalogue {
        kernels: Catalogue::grouped_kernels(DType::F32),
        ..Catalogue::default()
    };
    assert_eq!(catalogue.kernels.len(), 8);
    let sources = Renderer::new()
        .and_then(|r| r.catalogue(&catalogue))
        .expect("the catalogue renders");
    let work = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("emulate_grouped");
    sources.write_to(&work).expect("sources written");
    std::fs::write(work.join("grouped_kernels.h"), grouped_table(&catalogue))
        .expect("table written");
    let driver = match build(&cxx, &work, "grouped_driver.cpp") {
        Ok(driver) => driver,
        Err(error) if error.contains("barrier") => {
            eprintln!("skipped: {} has no std::barrier:\n{error}", cxx.display());
            return;
        }
        Err(error) => panic!("the rendered grouped kernels do not compile as C++:\n{error}"),
    };
    let output = Command::new(&driver)
        .arg("20261313")
        .output()
        .expect("the driver runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "emulated grouped kernels disagree with the reference:\n{stdout}\n{stderr}"
    );
    eprintln!("{}", stdout.lines().last().unwrap_or_default());
}
