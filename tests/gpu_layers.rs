//! The paper's 12 layers (Lu et al. 2023, table in `ANCHORS.md`), and the GPU oracle.
//!
//! - At batch 2 every layer runs through dispatch and is checked against the CPU oracle.
//! - The GPU float64 direct kernel is first checked against the CPU oracle on small random
//!   problems. (The benchmark's float32 direct and im2col kernels are not in the library's
//!   fatbin: `bench/tests/gpu_baselines.rs` checks them, from the benchmark's module.)
//! - Then three layers at the paper's batch 128 are checked against that GPU oracle, as
//!   the CPU oracle would take minutes there.
//!
//! Skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`. `IM2WIN_TEST_SMALL=1`
//! keeps to batch 1 and four layers, and leaves batch 128 out.

mod common;

use common::{
    Case, Failures, Layout, TOLERANCE, describe, engine, gpu_limits, random_data, random_problem,
    relative_error, run_case, small, summary, test_seed,
};
use im2win::{Conv2dProblem, Engine};
use im2win_codegen::Geometry;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// `(name, C, H = W, K, R = S, stride)` of the paper's layers; padding 0.
const LAYERS: [(&str, usize, usize, usize, usize, usize); 12] = [
    ("conv1", 3, 227, 96, 11, 4),
    ("conv2", 3, 231, 96, 11, 4),
    ("conv3", 3, 227, 64, 7, 2),
    ("conv4", 32, 224, 64, 7, 2),
    ("conv5", 96, 24, 256, 5, 1),
    ("conv6", 256, 12, 512, 3, 1),
    ("conv7", 3, 224, 64, 3, 1),
    ("conv8", 64, 112, 128, 3, 1),
    ("conv9", 64, 56, 64, 3, 1),
    ("conv10", 128, 28, 128, 3, 1),
    ("conv11", 256, 14, 256, 3, 1),
    ("conv12", 512, 7, 512, 3, 1),
];

fn layer(name: &str, batch: usize) -> Conv2dProblem {
    let Some(&(_, c, hw, k, rs, s)) = LAYERS.iter().find(|l| l.0 == name) else {
        panic!("no layer {name}");
    };
    Conv2dProblem::new([batch, c, hw, hw], [k, c, rs, rs]).with_stride([s, s])
}

/// `‖a − b‖₂ / ‖b‖₂` of two float64 results.
fn relative_error_f64(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| y * y).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn paper_layers_match_the_cpu_oracle() {
    const TEST: &str = "paper_layers_match_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(12));
    let (batch, names): (usize, Vec<&str>) = if small() {
        (1, vec!["conv1", "conv5", "conv6", "conv12"])
    } else {
        (2, LAYERS.iter().map(|l| l.0).collect())
    };
    let mut failures = Failures::default();
    let mut picked = Vec::new();
    let mut worst = 0.0_f64;
    for (i, name) in names.iter().enumerate() {
        let problem = layer(name, batch);
        let case = Case::random(&mut rng, problem, true);
        let outcome = engine
            .plan(&problem)
            .map_err(|e| e.to_string())
            .and_then(|plan| {
                picked.push(format!("{name}→{}", plan.kernel()));
                if plan.kernel().geometry == Geometry::Generic {
                    return Err(format!(
                        "dispatch picked the generic kernel {}",
                        plan.kernel()
                    ));
                }
                run_case(&engine, &plan, &case, &Layout::varied(i))
            });
        worst = worst.max(failures.check(|| format!("{name}, {}", describe(&problem)), outcome));
    }
    summary(
        TEST,
        &format!(
            "{} paper layers at batch {batch} checked against the CPU oracle, worst relative \
             error {worst:.2e}; kernels: {}",
            names.len(),
            picked.join(", ")
        ),
    );
    failures.assert_none(TEST);
}

/// The float64 GPU oracle against the float64 CPU oracle on random problems.
#[test]
fn gpu_oracle_matches_the_cpu_oracle() {
    const TEST: &str = "gpu_oracle_matches_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(64);
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = gpu_limits();
    let count = if small() { 6 } else { 40 };
    let mut failures = Failures::default();
    let mut worst = 0.0_f64;
    for i in 0..count {
        let problem = random_problem(&mut rng, &limits);
        let case = Case::random(&mut rng, problem, i % 2 == 0);
        let outcome = check_gpu_oracle(&engine, &case);
        worst = worst.max(failures.check(|| describe(&problem), outcome));
    }
    summary(
        TEST,
        &format!(
            "{count} problems: GPU f64 oracle vs CPU oracle worst relative error {worst:.2e} \
             (seed {seed})"
        ),
    );
    failures.assert_none(TEST);
}

/// Runs the float64 oracle on `case`; returns its relative error against the CPU oracle, or
/// why the check failed.
fn check_gpu_oracle(engine: &Engine, case: &Case) -> Result<f64, String> {
    let problem = &case.problem;
    let shape = problem.shape().map_err(|e| e.to_string())?;
    let stream = engine.stream();
    let e = |e: cudarc::driver::DriverError| e.to_string();
    let x = stream.clone_htod(&case.input).map_err(e)?;
    let f = stream.clone_htod(&case.filter).map_err(e)?;
    let b = match &case.bias {
        Some(bias) => Some(stream.clone_htod(bias).map_err(e)?),
        None => None,
    };
    let mut y64 = stream
        .clone_htod(&vec![f64::NAN; shape.output_len])
        .map_err(e)?;
    engine
        .direct_reference_f64(problem, &x, &f, b.as_ref().map(|b| b as _), &mut y64)
        .map_err(|e| format!("direct_reference_f64: {e}"))?;
    let gpu64 = stream.clone_dtoh(&y64).map_err(e)?;
    let err64 = relative_error_f64(&gpu64, &case.reference);
    if err64.is_nan() || err64 >= 1e-12 {
        return Err(format!("f64 oracle relative error {err64:.3e} ≥ 1e-12"));
    }
    Ok(err64)
}

/// Three layers at the paper's batch 128, through dispatch, against the GPU oracle, after
/// the same layers at batch 1 show that oracle agrees with the CPU one.
#[test]
fn paper_layers_at_batch_128_match_the_gpu_oracle() {
    const TEST: &str = "paper_layers_at_batch_128_match_the_gpu_oracle";
    if small() {
        summary(TEST, "SKIPPED under IM2WIN_TEST_SMALL=1");
        return;
    }
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(128));
    let names = ["conv1", "conv5", "conv12"];
    let mut failures = Failures::default();
    let mut lines = Vec::new();
    for name in names {
        let small_case = Case::random(&mut rng, layer(name, 1), true);
        let proof = check_gpu_oracle(&engine, &small_case);
        let e64 = failures.check(|| format!("{name} at batch 1, GPU oracle"), proof);
        let outcome = batch_against_gpu_oracle(&engine, &mut rng, &layer(name, 128));
        let err = failures.check(|| format!("{name} at batch 128"), outcome);
        lines.push(format!(
            "{name} {err:.2e} (oracle check at batch 1: {e64:.1e})"
        ));
    }
    summary(
        TEST,
        &format!(
            "{} paper layers at batch 128 against the GPU f64 oracle: {}",
            names.len(),
            lines.join(", ")
        ),
    );
    failures.assert_none(TEST);
}

/// `problem` with random data and a bias through [`Engine::conv2d`], compared with the GPU
/// float64 oracle on the same device buffers.
fn batch_against_gpu_oracle(
    engine: &Engine,
    rng: &mut StdRng,
    problem: &Conv2dProblem,
) -> Result<f64, String> {
    let shape = problem.shape().map_err(|e| e.to_string())?;
    let stream = engine.stream();
    let e = |e: cudarc::driver::DriverError| e.to_string();
    let x = stream
        .clone_htod(&random_data(rng, shape.input_len))
        .map_err(e)?;
    let f = stream
        .clone_htod(&random_data(rng, shape.filter_len))
        .map_err(e)?;
    let b = stream
        .clone_htod(&random_data(rng, shape.output[1]))
        .map_err(e)?;
    let mut y = stream
        .clone_htod(&vec![f32::NAN; shape.output_len])
        .map_err(e)?;
    let mut y64 = stream
        .clone_htod(&vec![f64::NAN; shape.output_len])
        .map_err(e)?;
    engine
        .conv2d(problem, &x, &f, Some(&b), &mut y, None)
        .map_err(|e| format!("conv2d: {e}"))?;
    engine
        .direct_reference_f64(problem, &x, &f, Some(&b), &mut y64)
        .map_err(|e| format!("direct_reference_f64: {e}"))?;
    let out = stream.clone_dtoh(&y).map_err(e)?;
    let reference = stream.clone_dtoh(&y64).map_err(e)?;
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!("output[{i}] = {}", out[i]));
    }
    let err = relative_error(&out, &reference);
    if err < TOLERANCE {
        Ok(err)
    } else {
        Err(format!("relative error {err:.3e} ≥ {TOLERANCE:e}"))
    }
}
