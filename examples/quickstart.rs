//! Quick start: one ResNet-50 layer (3×3, 64 → 64 channels, 56×56, padding 1, batch 32)
//! on the GPU, timed with CUDA events and checked against the float64 CPU oracle.
//!
//! Without a GPU (or when im2win was built without nvcc) it runs the CPU im2win backend on
//! batch 2 instead, says so, and checks that against the oracle too; with
//! `IM2WIN_REQUIRE_GPU=1` it fails instead.
//!
//! ```text
//! cargo run --release --example quickstart
//! ```

use std::error::Error as StdError;
use std::process::ExitCode;
use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use im2win::cpu::relative_error;
use im2win::{Conv2dProblem, Error, Padding};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Runs before timing, to load the fatbin and settle clocks and the allocator.
const WARMUP: usize = 3;
/// Timed runs; the median is reported.
const RUNS: usize = 20;
/// Largest accepted relative error against the float64 oracle.
const TOLERANCE: f64 = 1e-5;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Display, not the Debug that returning the error from main would print.
            eprintln!("quickstart: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn StdError>> {
    let layer =
        Conv2dProblem::new([32, 64, 56, 56], [64, 64, 3, 3]).with_padding(Padding::uniform(1));
    println!("layer: ResNet-50 conv2_x 3×3, 64 → 64 channels, 56×56, padding 1, batch 32");
    let error = match on_gpu(&layer) {
        Ok(error) => error,
        Err(err @ (Error::DriverNotFound | Error::NoDevice { .. } | Error::KernelsNotBuilt))
            if !gpu_required() =>
        {
            println!("no GPU run: {err}");
            println!("running the CPU im2win backend (im2win::cpu::conv2d) on batch 2 instead");
            let mut small = layer;
            small.input[0] = 2;
            on_cpu(&small)?
        }
        Err(err) => return Err(err.into()),
    };
    if error < TOLERANCE {
        println!("ok");
        Ok(())
    } else {
        Err(format!("relative error {error:.2e} is not below {TOLERANCE:e}").into())
    }
}

/// Whether the CPU fallback is forbidden (`IM2WIN_REQUIRE_GPU=1`, as on the GPU machine).
fn gpu_required() -> bool {
    std::env::var("IM2WIN_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// `len` values uniform in `[-1, 1]`.
fn random_data(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..=1.0)).collect()
}

/// Prints and returns the relative error of `out` against the oracle's `reference`.
fn report(what: &str, out: &[f32], reference: &[f64]) -> f64 {
    let error = relative_error(out, reference);
    println!("{what} vs the float64 CPU oracle: relative error {error:.2e}");
    error
}

/// Runs and times `problem` on GPU 0; returns the relative error of image 0.
fn on_gpu(problem: &Conv2dProblem) -> im2win::Result<f64> {
    let engine = im2win::engine(0)?;
    let shape = problem.shape()?;
    let plan = engine.plan(problem)?;
    let device = engine.context().name()?;
    println!(
        "GPU: {device} ({} SMs); kernel {}, grid {:?} × block {:?}, workspace {:.1} MiB",
        engine.multiprocessors(),
        plan.kernel(),
        plan.grid_dim(),
        plan.block_dim(),
        plan.workspace_bytes() as f64 / (1 << 20) as f64
    );

    let mut rng = StdRng::seed_from_u64(1);
    let input = random_data(&mut rng, shape.input_len);
    let filter = random_data(&mut rng, shape.filter_len);
    let bias = random_data(&mut rng, shape.output[1]);
    let stream = engine.stream();
    let x = stream.clone_htod(&input)?;
    let f = stream.clone_htod(&filter)?;
    let b = stream.clone_htod(&bias)?;
    let mut y = stream.alloc_zeros::<f32>(shape.output_len)?;
    // The first call on this shape, by the wall clock to completion: the fatbin was loaded
    // by the engine, so this is planning, the engine's workspace allocation and the launches.
    let first = Instant::now();
    engine.conv2d(problem, &x, &f, Some(&b), &mut y, None)?;
    stream.synchronize()?;
    let first_ms = first.elapsed().as_secs_f64() * 1e3;
    // The engine's own workspace, allocated on the first call and reused after.
    for _ in 0..WARMUP {
        engine.conv2d_with(&plan, &x, &f, Some(&b), &mut y, None)?;
    }
    let mut events = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        engine.conv2d_with(&plan, &x, &f, Some(&b), &mut y, None)?;
        let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        events.push((start, end));
    }
    let mut times_ms = events
        .iter()
        .map(|(start, end)| start.elapsed_ms(end))
        .collect::<Result<Vec<f32>, _>>()?;
    times_ms.sort_by(f32::total_cmp);
    let median_ms = f64::from(times_ms[RUNS / 2]);
    let flops = problem.flops()?;
    println!(
        "time (transforms + convolution, median of {RUNS} after {WARMUP} warm-up runs): \
         {median_ms:.3} ms, {:.1} TFLOP/s ({:.2} GFLOP)",
        flops / (median_ms * 1e-3) / 1e12,
        flops / 1e9
    );

    let steady = Instant::now();
    engine.conv2d(problem, &x, &f, Some(&b), &mut y, None)?;
    stream.synchronize()?;
    let steady_ms = steady.elapsed().as_secs_f64() * 1e3;
    println!(
        "first call on this shape {first_ms:.3} ms, a later call {steady_ms:.3} ms \
         (wall clock to completion, {:.2}x)",
        first_ms / steady_ms
    );

    // The CPU oracle on the whole batch would take a while; image 0 shows the layout and
    // every kernel path, since each image goes through the same code.
    let output = stream.clone_dtoh(&y)?;
    let mut one = *problem;
    one.input[0] = 1;
    let one_shape = one.shape()?;
    let reference =
        im2win::cpu::reference_conv2d(&one, &input[..one_shape.input_len], &filter, Some(&bias))?;
    Ok(report(
        "GPU output, image 0",
        &output[..one_shape.output_len],
        &reference,
    ))
}

/// Runs and times `problem` with the CPU backend; returns the relative error.
fn on_cpu(problem: &Conv2dProblem) -> im2win::Result<f64> {
    let shape = problem.shape()?;
    let mut rng = StdRng::seed_from_u64(1);
    let input = random_data(&mut rng, shape.input_len);
    let filter = random_data(&mut rng, shape.filter_len);
    let bias = random_data(&mut rng, shape.output[1]);
    let mut output = vec![0.0_f32; shape.output_len];
    let mut times_ms = Vec::new();
    for _ in 0..3 {
        let start = Instant::now();
        im2win::cpu::conv2d(problem, &input, &filter, Some(&bias), &mut output)?;
        times_ms.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times_ms.sort_by(f64::total_cmp);
    let median_ms = times_ms[1];
    let flops = problem.flops()?;
    println!(
        "CPU time (median of 3): {median_ms:.1} ms, {:.1} GFLOP/s",
        flops / (median_ms * 1e-3) / 1e9
    );
    let reference = im2win::cpu::reference_conv2d(problem, &input, &filter, Some(&bias))?;
    Ok(report("CPU output, batch 2", &output, &reference))
}
