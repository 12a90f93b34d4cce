//! Grouped and depthwise convolution on the GPU (issue 13): every grouped kernel of the
//! default catalogue (the depthwise kernels, NCHW and NHWC, 3×3 stride 1 and 2 and generic;
//! the direct grouped kernel) and dispatch's own choice, on random grouped and depthwise
//! problems (odd sizes, padding, stride, dilation, channel multipliers, every epilogue, both
//! filter layouts; float32, bf16, f16) against the float64 oracle of the same inputs, with
//! random data (never zero), NaN-poisoned outputs and guard zones around every operand
//! (aligned and misaligned views: the NHWC depthwise kernels' vector and element paths).
//!
//! Without a GPU (or without built kernels) the tests print a skip line and pass; with
//! `IM2WIN_REQUIRE_GPU=1` they fail instead. `IM2WIN_TEST_SMALL=1` runs a few small
//! problems (for compute-sanitizer); `IM2WIN_TEST_SEED` draws other problems.

mod common;

use common::problems::random_grouped_problem;
use common::{
    Failures, Layout, Run, TypedCase, describe, engine, run_typed_case, small, summary,
    tensor_op_tolerance, test_seed,
};
use im2win::half::{bf16, f16};
use im2win::{Conv2dProblem, Element, Engine, FilterLayout, Padding, Plan, Precision};
use im2win_codegen::{DType, Geometry, Grouping, KernelSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Largest accepted relative error of a float32 result (products and sums in FP32).
const F32_TOLERANCE: f64 = 1e-5;

fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => F32_TOLERANCE,
        _ => tensor_op_tolerance(dtype),
    }
}

/// A random epilogue: every activation, with and without a residual, alpha and beta away
/// from 1 (the plain epilogue in about one case in five).
fn random_epilogue(rng: &mut StdRng) -> im2win::Epilogue {
    use im2win::{Activation, Epilogue};
    if rng.random_ratio(1, 5) {
        return Epilogue::IDENTITY;
    }
    let activation = Activation::ALL[rng.random_range(0..Activation::ALL.len())];
    let mut epilogue = Epilogue::activation(activation).with_alpha(rng.random_range(0.25..2.0));
    if rng.random_bool(0.5) {
        epilogue = epilogue.with_residual(rng.random_range(-1.5..1.5));
    }
    epilogue
}

/// The grouped kernels of the engine's catalogue of element type `dtype` and `layout`.
fn grouped_kernels(engine: &Engine, dtype: DType, layout: im2win::Layout) -> Vec<KernelSpec> {
    engine
        .kernels()
        .catalogue()
        .kernels
        .iter()
        .filter(|s| s.is_grouped() && s.dtype == dtype && s.layout == layout)
        .copied()
        .collect()
}

/// Runs `problems` random problems per (layout, depthwise or not) of element type `T`:
/// dispatch's plan, every grouped kernel of the catalogue that can run the problem (forced),
/// and `Engine::conv2d`'s own dispatch (no residual). Returns the worst error and the
/// number of runs.
fn check_type<T: Element>(
    engine: &Engine,
    dtype: DType,
    problems: usize,
    rng: &mut StdRng,
    failures: &mut Failures,
    kernels_run: &mut std::collections::BTreeSet<String>,
) -> (f64, usize) {
    let (mut worst, mut runs) = (0.0_f64, 0_usize);
    let max_outputs = if small() { 3_000 } else { 200_000 };
    for layout in im2win::Layout::ALL {
        let kernels = grouped_kernels(engine, dtype, layout);
        if kernels.is_empty() {
            failures.push(format!(
                "no grouped {dtype} {layout} kernels in the catalogue"
            ));
            continue;
        }
        for depthwise in [true, false] {
            for _ in 0..problems {
                let filter_layout = FilterLayout::ALL[rng.random_range(0..2)];
                let mut problem = random_grouped_problem(rng, depthwise, max_outputs)
                    .with_layout(layout)
                    .with_filter_layout(filter_layout)
                    .with_dtype(dtype)
                    .with_epilogue(random_epilogue(rng));
                // MobileNet's geometry half the time: the fixed depthwise kernels.
                if depthwise && rng.random_bool(0.5) {
                    let stride = rng.random_range(1..=2);
                    let [k, cg, _, _] = problem.filter;
                    problem.filter = [k, cg, 3, 3];
                    problem.stride = [stride, stride];
                    problem.dilation = [1, 1];
                    problem.padding = Padding::uniform(1);
                }
                let with_bias = rng.random_bool(0.6);
                let case = TypedCase::<T>::random(rng, problem, with_bias);
                let dispatched = engine.plan(&problem);
                match &dispatched {
                    Ok(plan) => {
                        let spec = plan.kernel();
                        // A draw of one channel per group is depthwise too.
                        let expected = if problem.groups == problem.input[1] {
                            Grouping::Depthwise
                        } else {
                            Grouping::Grouped
                        };
                        if spec.grouping != expected || plan.workspace_bytes() != 0 {
                            failures.push(format!(
                                "dispatch chose {} (workspace {}) for {}",
                                spec.name(),
                                plan.workspace_bytes(),
                                describe(&problem)
                            ));
                        }
                    }
                    Err(e) => failures.push(format!("no plan for {}: {e}", describe(&problem))),
                }
                let forced = kernels
                    .iter()
                    .filter(|spec| im2win::gpu::can_implement(spec, &problem))
                    .map(|spec| Plan::for_spec(&problem, *spec));
                for plan in dispatched.into_iter().chain(forced.filter_map(Result::ok)) {
                    let layout_of_buffers = Layout::varied(runs);
                    kernels_run.insert(plan.kernel().name());
                    let outcome = run_typed_case(
                        engine,
                        Run::Plan(&plan),
                        &case,
                        &layout_of_buffers,
                        tolerance(dtype),
                    );
                    let err = failures.check(
                        || {
                            format!(
                                "{} on {} groups {} ({layout_of_buffers:?})",
                                plan.kernel().name(),
                                describe(&problem),
                                problem.groups
                            )
                        },
                        outcome,
                    );
                    worst = worst.max(err);
                    runs += 1;
                }
                if !problem.epilogue.residual {
                    let layout_of_buffers = Layout::varied(runs + 1);
                    let outcome = run_typed_case(
                        engine,
                        Run::Dispatch,
                        &case,
                        &layout_of_buffers,
                        tolerance(dtype),
                    );
                    let err = failures.check(
                        || {
                            format!(
                                "Engine::conv2d on {} ({layout_of_buffers:?})",
                                describe(&problem)
                            )
                        },
                        outcome,
                    );
                    worst = worst.max(err);
                    runs += 1;
                }
            }
        }
    }
    (worst, runs)
}

#[test]
fn grouped_and_depthwise_kernels_match_the_oracle() {
    const TEST: &str = "grouped_and_depthwise_kernels_match_the_oracle";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(20_261_313));
    let problems = if small() { 2 } else { 25 };
    let mut failures = Failures::default();
    let mut kernels_run = std::collections::BTreeSet::new();
    let mut report = Vec::new();
    let catalogue = engine.kernels().catalogue().clone();
    for dtype in [DType::F32, DType::Bf16, DType::F16] {
        if !catalogue
            .kernels
            .iter()
            .any(|s| s.is_grouped() && s.dtype == dtype)
        {
            report.push(format!("{dtype}: no grouped kernels built"));
            continue;
        }
        let args = (&engine, dtype, problems);
        let (worst, runs) = match dtype {
            DType::F32 => check_type::<f32>(
                args.0,
                args.1,
                args.2,
                &mut rng,
                &mut failures,
                &mut kernels_run,
            ),
            DType::Bf16 => check_type::<bf16>(
                args.0,
                args.1,
                args.2,
                &mut rng,
                &mut failures,
                &mut kernels_run,
            ),
            DType::F16 => check_type::<f16>(
                args.0,
                args.1,
                args.2,
                &mut rng,
                &mut failures,
                &mut kernels_run,
            ),
        };
        report.push(format!(
            "{dtype}: {runs} runs, worst relative error {worst:.2e}"
        ));
    }
    summary(TEST, &report.join("; "));
    failures.assert_none(TEST);
    // Every grouped kernel of the catalogue ran (not in the small run: two problems per
    // family need not reach every geometry).
    if !small() {
        let missing: Vec<String> = catalogue
            .kernels
            .iter()
            .filter(|s| s.is_grouped() && !kernels_run.contains(&s.name()))
            .map(KernelSpec::name)
            .collect();
        assert!(missing.is_empty(), "grouped kernels never run: {missing:?}");
    }
}

/// A TF32 (and a 3xTF32) request on a grouped problem runs the FP32 kernel, explicitly:
/// dispatch picks a strict float32 grouped kernel and the result has FP32's error against
/// the oracle of the unrounded inputs.
#[test]
fn tf32_grouped_problems_run_in_fp32() {
    const TEST: &str = "tf32_grouped_problems_run_in_fp32";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(20_261_314));
    let mut failures = Failures::default();
    for (i, precision) in [Precision::Tf32, Precision::F32x3, Precision::Accurate]
        .into_iter()
        .enumerate()
    {
        let problem = random_grouped_problem(&mut rng, i % 2 == 0, 20_000)
            .with_layout(im2win::Layout::ALL[i % 2])
            .with_precision(precision);
        let case = TypedCase::<f32>::random(&mut rng, problem, true);
        match engine.plan(&problem) {
            Ok(plan) => {
                if !plan.kernel().is_grouped() || plan.kernel().dtype != DType::F32 {
                    failures.push(format!(
                        "{precision}: dispatch chose {}",
                        plan.kernel().name()
                    ));
                }
                let outcome = run_typed_case(
                    &engine,
                    Run::Plan(&plan),
                    &case,
                    &Layout::varied(i),
                    F32_TOLERANCE,
                );
                failures.check(|| format!("{precision} on {}", describe(&problem)), outcome);
            }
            Err(e) => failures.push(format!("{precision}: {e}")),
        }
    }
    failures.assert_none(TEST);
}

/// MobileNetV2's depthwise layers at a small batch (3×3, stride 1 and 2, C a multiple of 8:
/// the vector paths), each in both layouts and float32 and bf16, with bias and ReLU6's
/// stand-in ReLU.
#[test]
fn mobilenet_depthwise_layers() {
    const TEST: &str = "mobilenet_depthwise_layers";
    let Some(engine) = engine(TEST) else { return };
    if small() {
        summary(TEST, "SKIPPED under IM2WIN_TEST_SMALL");
        return;
    }
    let mut rng = StdRng::seed_from_u64(test_seed(20_261_315));
    let mut failures = Failures::default();
    let layers: [(usize, usize, usize); 5] = [
        (32, 112, 1),
        (96, 112, 2),
        (144, 56, 1),
        (192, 28, 2),
        (960, 7, 1),
    ];
    for (i, &(c, hw, stride)) in layers.iter().enumerate() {
        for layout in im2win::Layout::ALL {
            let problem = Conv2dProblem::new([2, c, hw, hw], [c, 1, 3, 3])
                .with_groups(c)
                .with_stride([stride, stride])
                .with_padding(Padding::uniform(1))
                .with_layout(layout)
                .with_epilogue(im2win::Epilogue::activation(im2win::Activation::Relu));
            let f32_case = TypedCase::<f32>::random(&mut rng, problem, true);
            let outcome = engine
                .plan(&problem)
                .map_err(|e| e.to_string())
                .and_then(|plan| {
                    run_typed_case(
                        &engine,
                        Run::Plan(&plan),
                        &f32_case,
                        &Layout::varied(i),
                        F32_TOLERANCE,
                    )
                });
            failures.check(|| format!("f32 {}", describe(&problem)), outcome);
            let problem = problem.with_dtype(DType::Bf16);
            let bf16_case = TypedCase::<bf16>::random(&mut rng, problem, true);
            let outcome = engine
                .plan(&problem)
                .map_err(|e| e.to_string())
                .and_then(|plan| {
                    run_typed_case(
                        &engine,
                        Run::Plan(&plan),
                        &bf16_case,
                        &Layout::varied(i + 1),
                        tolerance(DType::Bf16),
                    )
                });
            failures.check(|| format!("bf16 {}", describe(&problem)), outcome);
        }
    }
    failures.assert_none(TEST);
}

/// Dense problems never run on a grouped kernel, and a grouped kernel forced onto one is
/// refused before anything is launched.
#[test]
fn dense_problems_never_take_grouped_kernels() {
    const TEST: &str = "dense_problems_never_take_grouped_kernels";
    let Some(engine) = engine(TEST) else { return };
    let dense = Conv2dProblem::new([1, 8, 9, 9], [8, 8, 3, 3]).with_padding(Padding::uniform(1));
    let plan = engine.plan(&dense).expect("a dense plan");
    assert!(!plan.kernel().is_grouped(), "{}", plan.kernel().name());
    let spec = KernelSpec::grouped(
        DType::F32,
        Grouping::Grouped,
        Geometry::Generic,
        im2win::Layout::Nchw,
    )
    .expect("a grouped spec");
    assert!(Plan::for_spec(&dense, spec).is_err());
}
