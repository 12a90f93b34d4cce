//! The macro way in: `im2win::conv2d!` names a kernel specialisation at compile time.
//!
//! Each `const` below is checked against the catalogue that build.rs compiles: a request for a
//! kernel that does not exist, e.g. `im2win::conv2d!(f32, filter = 9x9, stride = 3)`, is a
//! compile error at `9x9` that lists the nearest kernels and says how to generate it (see
//! `examples/custom-kernels/`). At run time `Engine::conv2d_specialized` launches the named
//! kernel without dispatch, and refuses a problem of another filter size or stride.
//!
//! On GPU 0 it runs three ResNet-50 layers (batch 8) through their specialisations, checks
//! image 0 of each against the float64 CPU oracle and times them with CUDA events. Without a
//! GPU (or without kernels) it shows the plans, runs the first layer with the CPU backend on
//! batch 1 and says so; `IM2WIN_REQUIRE_GPU=1` makes that an error. Exits non-zero on a wrong
//! result.
//!
//! ```text
//! cargo run --release --example macro
//! ```

use std::error::Error as StdError;
use std::process::ExitCode;

use cudarc::driver::sys::CUevent_flags;
use im2win::cpu::relative_error;
use im2win::{Conv2dProblem, Engine, Error, Padding, Specialization};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A 3×3 stride-1 kernel; the tile is chosen per problem among the compiled ones.
const CONV3X3: Specialization = im2win::conv2d!(f32, filter = 3x3, stride = 1);
/// A 1×1 stride-2 kernel with the tile fixed too: exactly one kernel of the fatbin.
const DOWNSAMPLE: Specialization =
    im2win::conv2d!(f32, filter = 1x1, stride = 2, tile = 128x128x8 / 8x8);
/// ResNet-50's stem: 7×7, stride 2.
const STEM: Specialization = im2win::conv2d!(f32, filter = 7x7, stride = 2);

/// Largest accepted relative error against the float64 oracle.
const TOLERANCE: f64 = 1e-5;
/// Timed runs per layer; the median is reported.
const RUNS: usize = 10;
/// SMs assumed for plans shown without a GPU (an H200's).
const H200_SMS: usize = 132;

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("macro: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// The layers, each with the specialisation that runs it.
fn layers() -> [(&'static str, Specialization, Conv2dProblem); 3] {
    [
        (
            "conv2_x 3x3, 64 -> 64, 56x56, pad 1",
            CONV3X3,
            Conv2dProblem::new([8, 64, 56, 56], [64, 64, 3, 3]).with_padding(Padding::uniform(1)),
        ),
        (
            "conv3_x downsample 1x1/2, 256 -> 512, 56x56",
            DOWNSAMPLE,
            Conv2dProblem::new([8, 256, 56, 56], [512, 256, 1, 1]).with_stride([2, 2]),
        ),
        (
            "conv1 7x7/2, 3 -> 64, 224x224, pad 3",
            STEM,
            Conv2dProblem::new([8, 3, 224, 224], [64, 3, 7, 7])
                .with_stride([2, 2])
                .with_padding(Padding::uniform(3)),
        ),
    ]
}

fn run() -> Result<(), Box<dyn StdError>> {
    // A specialisation refuses a problem it cannot compute, before anything runs.
    let five = Conv2dProblem::new([1, 64, 56, 56], [64, 64, 5, 5]);
    match CONV3X3.check(&five) {
        Err(err @ Error::SpecMismatch { .. }) => println!("refused as expected: {err}"),
        other => return Err(format!("{CONV3X3} accepted a 5x5 problem: {other:?}").into()),
    }

    let worst = match on_gpu() {
        Ok(worst) => worst,
        Err(err @ (Error::DriverNotFound | Error::NoDevice { .. } | Error::KernelsNotBuilt))
            if !gpu_required() =>
        {
            println!("no GPU run: {err}");
            on_cpu()?
        }
        Err(err) => return Err(err.into()),
    };
    if worst < TOLERANCE {
        Ok(())
    } else {
        Err(format!("relative error {worst:.2e} is not below {TOLERANCE:e}").into())
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

/// Runs every layer with its specialisation on GPU 0; returns the worst relative error.
fn on_gpu() -> im2win::Result<f64> {
    let engine = Engine::new(0, im2win::kernels())?;
    if !engine.kernels().is_built() {
        return Err(Error::KernelsNotBuilt);
    }
    println!(
        "GPU: {} ({} SMs)",
        engine.context().name()?,
        engine.multiprocessors()
    );
    let stream = engine.stream();
    let mut rng = StdRng::seed_from_u64(7);
    let mut worst: f64 = 0.0;
    for (what, specialization, problem) in layers() {
        let plan = engine.plan_specialized(&specialization, &problem)?;
        let shape = problem.shape()?;
        let input = random_data(&mut rng, shape.input_len);
        let filter = random_data(&mut rng, shape.filter_len);
        let bias = random_data(&mut rng, shape.output[1]);
        let x = stream.clone_htod(&input)?;
        let f = stream.clone_htod(&filter)?;
        let b = stream.clone_htod(&bias)?;
        let mut y = stream.alloc_zeros::<f32>(shape.output_len)?;
        let mut launch =
            || engine.conv2d_specialized(&specialization, &problem, &x, &f, Some(&b), &mut y, None);
        launch()?;
        let mut times_ms = Vec::with_capacity(RUNS);
        for _ in 0..RUNS {
            let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            launch()?;
            let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
            times_ms.push(start.elapsed_ms(&end)?);
        }
        times_ms.sort_by(f32::total_cmp);
        let median_ms = f64::from(times_ms[RUNS / 2]);

        // Image 0 against the float64 CPU oracle.
        let output = stream.clone_dtoh(&y)?;
        let mut one = problem;
        one.input[0] = 1;
        let one_shape = one.shape()?;
        let reference = im2win::cpu::reference_conv2d(
            &one,
            &input[..one_shape.input_len],
            &filter,
            Some(&bias),
        )?;
        let error = relative_error(&output[..one_shape.output_len], &reference);
        worst = worst.max(error);
        println!(
            "{what}\n  conv2d!: {specialization} -> kernel {}\n  {median_ms:.3} ms \
             (median of {RUNS}), {:.1} TFLOP/s, relative error (image 0) {error:.2e}",
            plan.kernel(),
            problem.flops()? / (median_ms * 1e-3) / 1e12,
        );
    }
    Ok(worst)
}

/// Without a GPU: the plans each specialisation makes, and the first layer on the CPU
/// backend at batch 1; returns its relative error.
fn on_cpu() -> im2win::Result<f64> {
    let catalogue = im2win::kernels().catalogue().clone();
    for (what, specialization, problem) in layers() {
        let plan = specialization.plan(&problem, &catalogue, H200_SMS)?;
        println!(
            "{what}\n  conv2d!: {specialization} -> kernel {} (on an H200)",
            plan.kernel()
        );
    }
    let (what, _, mut problem) = layers()[0];
    problem.input[0] = 1;
    println!("running {what} at batch 1 with the CPU backend (im2win::cpu::conv2d) instead");
    let shape = problem.shape()?;
    let mut rng = StdRng::seed_from_u64(7);
    let input = random_data(&mut rng, shape.input_len);
    let filter = random_data(&mut rng, shape.filter_len);
    let mut output = vec![0.0_f32; shape.output_len];
    im2win::cpu::conv2d(&problem, &input, &filter, None, &mut output)?;
    let reference = im2win::cpu::reference_conv2d(&problem, &input, &filter, None)?;
    let error = relative_error(&output, &reference);
    println!("CPU output vs the float64 oracle: relative error {error:.2e}");
    Ok(error)
}
