//! The benchmark's baseline kernels (`im2win::codegen::catalogue::baselines`), which only the
//! benchmark's own module `bench` holds (bench/build.rs; the library's fatbin leaves them
//! out, issue 11):
//!
//! - on the CPU: the library's catalogue has no baselines, the bench module's has, and an
//!   engine given both loads the baselines from the bench module;
//! - on the GPU, on random problems: `im2win_direct_f32` (the `direct` method) against the
//!   CPU float64 oracle, and `im2win_im2col_f32` (the im2col of `im2col-cublas`) against a
//!   host im2col, bit for bit. These checks were in `tests/gpu_layers.rs` while the library's
//!   fatbin held the baselines.
//!
//! The GPU test skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`.
//! `IM2WIN_TEST_SMALL=1` checks fewer, smaller problems.

use std::io::Write as _;

use cudarc::driver::PushKernelArg;
use im2win::codegen::catalogue::{baselines, support};
use im2win::{Conv2dProblem, ConvParams, Engine, KernelModule, ProblemShape};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// The workspace's random problem generator, random data, error measure and seed.
#[path = "../../runtime/tests/common/mod.rs"]
mod problems;

use problems::{Limits, random_data, random_problem, relative_error, test_seed};

/// Largest accepted `‖out − ref‖₂ / ‖ref‖₂` of the float32 direct convolution against the
/// float64 oracle (the GPU tests' tolerance).
const TOLERANCE: f64 = 1e-5;

/// The random problems of the library's GPU tests (`tests/common/mod.rs`, `gpu_limits`):
/// channel counts that cross a 128-wide tile, outputs of several blocks, filters up to
/// 11×11, strides to 4, dilations to 3.
const FULL: Limits = Limits {
    batch: 3,
    channels: 24,
    out_channels: 300,
    filter: 11,
    out_size: 24,
    stride: 4,
    dilation: 3,
    padding: 4,
    max_macs: 30_000_000,
};

/// [`FULL`] made smaller for `IM2WIN_TEST_SMALL=1` (runs under compute-sanitizer).
const SMALL: Limits = Limits {
    batch: 2,
    channels: 6,
    out_channels: 140,
    out_size: 10,
    max_macs: 2_000_000,
    ..FULL
};

/// The library's kernels and the benchmark's, as `im2win bench` merges them (`src/gpu.rs`).
fn bench_kernels() -> KernelModule {
    im2win::kernels().merged(im2win::include_kernels!("bench"))
}

#[test]
fn only_the_bench_module_holds_the_baselines() {
    let library = im2win::kernels();
    assert!(!library.catalogue().baselines);
    let bench = im2win::include_kernels!("bench");
    assert!(bench.catalogue().baselines);
    let merged = bench_kernels();
    assert!(merged.catalogue().baselines);
    for name in baselines::ALL {
        assert_eq!(
            merged.part_of(name),
            1,
            "{name} is loaded from the bench module"
        );
    }
    // The support kernels still come from the library's fatbin.
    for name in support::ALL {
        assert_eq!(merged.part_of(name), 0, "{name}");
    }
}

/// An engine on GPU 0 with [`bench_kernels`], or `None` (after saying why) without a GPU or
/// without kernels; panics instead under `IM2WIN_REQUIRE_GPU=1`.
fn engine(test: &str) -> Option<Engine> {
    let kernels = bench_kernels();
    let engine = if kernels.is_built() {
        Engine::new(0, kernels)
    } else {
        Err(im2win::Error::KernelsNotBuilt)
    };
    match engine {
        Ok(engine) => Some(engine),
        Err(err) if std::env::var("IM2WIN_REQUIRE_GPU").is_ok_and(|v| v == "1") => {
            panic!("{test}: IM2WIN_REQUIRE_GPU=1 but: {err}")
        }
        Err(err) => {
            summary(test, &format!("SKIPPED: {err}"));
            None
        }
    }
}

/// Fewer and smaller problems (`IM2WIN_TEST_SMALL=1`), for runs under compute-sanitizer.
fn small() -> bool {
    std::env::var("IM2WIN_TEST_SMALL").is_ok_and(|v| v == "1")
}

/// Prints `im2win-summary: <test>: <text>` straight to stdout, past the test harness's
/// capture, so that the counts show in every log (`scripts/device-run.sh` collects them).
fn summary(test: &str, text: &str) {
    // A failed write to stdout is not a test failure.
    let _ = writeln!(std::io::stdout().lock(), "im2win-summary: {test}: {text}");
}

#[test]
fn baselines_match_the_cpu_oracle() {
    const TEST: &str = "baselines_match_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(64);
    let mut rng = StdRng::seed_from_u64(seed);
    let (count, limits) = if small() { (6, SMALL) } else { (40, FULL) };
    let mut failures = Vec::new();
    let mut worst = 0.0_f64;
    for i in 0..count {
        let problem = random_problem(&mut rng, &limits);
        match check_baselines(&engine, &mut rng, &problem, i % 2 == 0) {
            Ok(err) => worst = worst.max(err),
            Err(why) => failures.push(format!("{problem:?}: {why}")),
        }
    }
    summary(
        TEST,
        &format!(
            "{count} problems: GPU f32 direct vs CPU oracle worst relative error {worst:.2e}, \
             im2col exact (seed {seed})"
        ),
    );
    assert!(
        failures.is_empty(),
        "{} of {count} problems failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Runs the float32 direct kernel and im2col on random data for `problem`; returns the
/// direct kernel's relative error, or why a check failed.
fn check_baselines(
    engine: &Engine,
    rng: &mut StdRng,
    problem: &Conv2dProblem,
    with_bias: bool,
) -> Result<f64, String> {
    let shape = problem.shape().map_err(|e| e.to_string())?;
    let input = random_data(rng, shape.input_len);
    let filter = random_data(rng, shape.filter_len);
    let bias = with_bias.then(|| random_data(rng, shape.output[1]));
    let reference = im2win::cpu::reference_conv2d(problem, &input, &filter, bias.as_deref())
        .map_err(|e| format!("CPU oracle: {e}"))?;

    let stream = engine.stream();
    let e = |e: cudarc::driver::DriverError| e.to_string();
    let x = stream.clone_htod(&input).map_err(e)?;
    let f = stream.clone_htod(&filter).map_err(e)?;
    let b = match &bias {
        Some(bias) => Some(stream.clone_htod(bias).map_err(e)?),
        None => None,
    };

    // The float32 direct kernel; a null bias pointer when there is none.
    let params = ConvParams::new(problem, b.is_some()).map_err(|e| e.to_string())?;
    let mut y = stream
        .clone_htod(&vec![f32::NAN; shape.output_len])
        .map_err(e)?;
    let direct = engine
        .function(baselines::DIRECT_F32)
        .map_err(|e| e.to_string())?;
    let null = 0_u64;
    let mut launch = stream.launch_builder(&direct);
    launch.arg(&x).arg(&f);
    match &b {
        Some(b) => launch.arg(b),
        None => launch.arg(&null),
    };
    launch.arg(&mut y).arg(&params);
    // SAFETY: `im2win_direct_f32(x, f, bias, y, ConvParams)` per DESIGN.md, buffers of the
    // problem's sizes, grid-stride launch; the kernel reads `bias` only when it is given.
    unsafe { launch.launch(engine.grid_stride_config(shape.output_len)) }.map_err(e)?;
    let out = stream.clone_dtoh(&y).map_err(e)?;
    let err = relative_error(&out, &reference);
    if err.is_nan() || err >= TOLERANCE {
        return Err(format!("f32 direct relative error {err:.3e}"));
    }

    // im2col: a pure copy, so it must match the host version exactly.
    let col_len = shape.output[0] * shape.reduction * shape.output[2] * shape.output[3];
    let mut col = stream.clone_htod(&vec![f32::NAN; col_len]).map_err(e)?;
    let im2col_kernel = engine
        .function(baselines::IM2COL_F32)
        .map_err(|e| e.to_string())?;
    let mut launch = stream.launch_builder(&im2col_kernel);
    launch.arg(&x).arg(&mut col).arg(&params);
    // SAFETY: `im2win_im2col_f32(x, col, ConvParams)`, `col` of N·C·R·S·P·Q floats.
    unsafe { launch.launch(engine.grid_stride_config(col_len)) }.map_err(e)?;
    let gpu_col = stream.clone_dtoh(&col).map_err(e)?;
    let host_col = im2col(problem, &shape, &input);
    if let Some(i) = (0..col_len).find(|&i| gpu_col[i].to_bits() != host_col[i].to_bits()) {
        return Err(format!(
            "im2col[{i}] = {} but the host gives {}",
            gpu_col[i], host_col[i]
        ));
    }
    Ok(err)
}

/// The host im2col of `docs/DESIGN.md`:
/// `col[n][(c·R + r)·S + s][p·Q + q] = X[n][c][p·sh + r·dh − top][q·sw + s·dw − left]`.
fn im2col(problem: &Conv2dProblem, shape: &ProblemShape, x: &[f32]) -> Vec<f32> {
    let [n, c, h, w] = problem.input;
    let [_, _, r, s] = problem.filter;
    let [_, _, p, q] = shape.output;
    let mut col = vec![0.0; n * c * r * s * p * q];
    for ni in 0..n {
        for ci in 0..c {
            for ri in 0..r {
                for si in 0..s {
                    let row = (ci * r + ri) * s + si;
                    for pi in 0..p {
                        for qi in 0..q {
                            let y = (pi * problem.stride[0] + ri * problem.dilation[0])
                                .checked_sub(problem.padding.top)
                                .filter(|&y| y < h);
                            let xx = (qi * problem.stride[1] + si * problem.dilation[1])
                                .checked_sub(problem.padding.left)
                                .filter(|&xx| xx < w);
                            if let (Some(y), Some(xx)) = (y, xx) {
                                col[((ni * c * r * s) + row) * p * q + pi * q + qi] =
                                    x[((ni * c + ci) * h + y) * w + xx];
                            }
                        }
                    }
                }
            }
        }
    }
    col
}
