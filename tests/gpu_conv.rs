//! Every kernel of the default catalogue against the float64 CPU oracle on random and
//! hand-picked problems, with operands inside guarded buffers.
//!
//! Without a GPU (or without built kernels) the tests print a skip line and pass; with
//! `IM2WIN_REQUIRE_GPU=1` they fail instead. `IM2WIN_TEST_SMALL=1` runs fewer, smaller
//! problems (for compute-sanitizer); `IM2WIN_TEST_SEED` draws other problems.

mod common;

use std::fmt;

use common::{
    Case, Failures, Layout, describe, engine, fixed_problem, gpu_limits, random_problem, run_case,
    small, summary, test_seed,
};
use im2win::{Conv2dProblem, Padding, Plan};
use im2win_codegen::{FixedGeometry, Geometry, KernelSpec};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Problems with a known shape for the fixed geometry `g`: no tail in any tile dimension,
/// a single output, a tail in every dimension, asymmetric padding wider than half the
/// filter, and several blocks of output channels.
fn edge_problems(g: FixedGeometry) -> Vec<Conv2dProblem> {
    let (r, s) = (g.filter_h as usize, g.filter_w as usize);
    let (sh, sw) = (g.stride_h as usize, g.stride_w as usize);
    // Input size that gives `out` outputs without padding.
    let h = |out: usize| (out - 1) * sh + r;
    let w = |out: usize| (out - 1) * sw + s;
    let geometry = |input: [usize; 4], k: usize| {
        Conv2dProblem::new(input, [k, input[1], r, s]).with_stride([sh, sw])
    };
    let mut problems = vec![
        // K = 128, C·R·S = 8·R·S, N·P·Q = 2·8·8 = 128: whole tiles only.
        geometry([2, 8, h(8), w(8)], 128),
        // One output of one channel from one input channel.
        geometry([1, 1, h(1), w(1)], 1),
        // K = 129, C·R·S odd·R·S, N·P·Q = 3·43 = 129: one element past a tile everywhere.
        geometry([1, 3, h(3), w(43)], 129),
    ];
    if !small() {
        problems.extend([
            geometry([2, 5, h(6) + 1, w(7)], 70).with_padding(Padding {
                top: r / 2 + 1,
                bottom: 0,
                left: 0,
                right: s,
            }),
            geometry([1, 2, h(6), w(6)], 300),
        ]);
    }
    problems
}

/// Counts of the edge cases among the problems run, so that the summary (and an assertion)
/// shows that each was reached.
#[derive(Default)]
struct Coverage {
    counts: [usize; 16],
}

const COVERAGE_NAMES: [&str; 16] = [
    "N=1",
    "C=1",
    "K=1",
    "P=1",
    "Q=1",
    "1x1",
    "11x11",
    "asym-pad",
    "stride>1",
    "dilation>1",
    "bias",
    "no-bias",
    "K-tail>128",
    "NPQ-tail",
    "CRS-tail",
    "no-tail",
];

impl Coverage {
    fn add(&mut self, case: &Case) {
        let p = &case.problem;
        let Ok(shape) = p.shape() else { return };
        let [n, k, pp, q] = shape.output;
        let (npq, crs) = (shape.pixels, shape.reduction);
        let pad = p.padding;
        let flags = [
            n == 1,
            p.input[1] == 1,
            k == 1,
            pp == 1,
            q == 1,
            p.filter[2] == 1 && p.filter[3] == 1,
            p.filter[2] == 11 && p.filter[3] == 11,
            pad.top != pad.bottom || pad.left != pad.right,
            p.stride != [1, 1],
            p.dilation != [1, 1],
            case.bias.is_some(),
            case.bias.is_none(),
            k > 128 && k % 128 != 0,
            npq % 128 != 0,
            crs % 8 != 0,
            k % 128 == 0 && npq % 128 == 0 && crs % 8 == 0,
        ];
        for (count, flag) in self.counts.iter_mut().zip(flags) {
            *count += usize::from(flag);
        }
    }

    fn missing(&self) -> Vec<&'static str> {
        COVERAGE_NAMES
            .iter()
            .zip(self.counts)
            .filter(|(_, c)| *c == 0)
            .map(|(name, _)| *name)
            .collect()
    }
}

impl fmt::Display for Coverage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = COVERAGE_NAMES
            .iter()
            .zip(self.counts)
            .map(|(name, count)| format!("{name} {count}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}

#[test]
fn every_catalogue_kernel_matches_the_cpu_oracle() {
    const TEST: &str = "every_catalogue_kernel_matches_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(20_231_128);
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = gpu_limits();
    let (per_fixed, generic_only) = if small() { (3, 8) } else { (26, 120) };
    let catalogue = engine.kernels().catalogue().clone();
    let generics: Vec<KernelSpec> = catalogue
        .kernels
        .iter()
        .filter(|spec| spec.geometry == Geometry::Generic)
        .copied()
        .collect();
    assert!(
        !generics.is_empty(),
        "the default catalogue lacks a generic kernel"
    );

    // Each problem with the kernels forced on it: the fixed kernel of its geometry and
    // every generic kernel, or the generic kernels alone for a random geometry.
    let mut problems: Vec<(Conv2dProblem, Vec<KernelSpec>)> = Vec::new();
    for spec in &catalogue.kernels {
        if let Geometry::Fixed(g) = spec.geometry {
            let specs: Vec<KernelSpec> = std::iter::once(*spec).chain(generics.clone()).collect();
            let random = (0..per_fixed).map(|_| fixed_problem(&mut rng, g, &limits));
            for problem in edge_problems(g)
                .into_iter()
                .chain(random.collect::<Vec<_>>())
            {
                problems.push((problem, specs.clone()));
            }
        }
    }
    for _ in 0..generic_only {
        problems.push((random_problem(&mut rng, &limits), generics.clone()));
    }

    let mut failures = Failures::default();
    let mut coverage = Coverage::default();
    let (mut runs, mut worst) = (0_usize, 0.0_f64);
    for (problem, specs) in &problems {
        let with_bias = rng.random_bool(0.5);
        let case = Case::random(&mut rng, *problem, with_bias);
        coverage.add(&case);
        // Dispatch must pick the fixed kernel of a fixed geometry.
        if let Geometry::Fixed(_) = specs[0].geometry {
            let planned = engine.plan(problem).map(|plan| *plan.kernel());
            if planned.as_ref().ok() != Some(&specs[0]) {
                failures.check(
                    || format!("dispatch of {}", describe(problem)),
                    Err(format!("picked {planned:?}, expected {}", specs[0])),
                );
            }
        }
        for spec in specs {
            let layout = Layout::varied(runs);
            let outcome = Plan::for_spec(problem, *spec)
                .map_err(|e| e.to_string())
                .and_then(|plan| run_case(&engine, &plan, &case, &layout));
            let err = failures.check(
                || format!("{spec} on {} ({layout:?})", describe(problem)),
                outcome,
            );
            worst = worst.max(err);
            runs += 1;
        }
    }
    summary(
        TEST,
        &format!(
            "{} problems, {runs} kernel runs over {} kernels, worst relative error {worst:.2e} \
             (seed {seed}); coverage: {coverage}",
            problems.len(),
            catalogue.kernels.len(),
        ),
    );
    failures.assert_none(TEST);
    if !small() {
        assert!(
            coverage.missing().is_empty(),
            "edge cases never drawn: {:?}",
            coverage.missing()
        );
    }
}

/// One engine used from several threads at once, each with its own problems, through
/// dispatch and the engine's shared workspace (which the threads' problems make it regrow).
#[test]
fn one_engine_shared_by_threads() {
    const TEST: &str = "one_engine_shared_by_threads";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(7);
    let limits = gpu_limits();
    let (threads, per_thread) = if small() { (2, 2) } else { (4, 6) };
    let results: Vec<Result<usize, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let engine = &engine;
                scope.spawn(move || {
                    let mut rng = StdRng::seed_from_u64(seed + t as u64);
                    for i in 0..per_thread {
                        let problem = random_problem(&mut rng, &limits);
                        let case = Case::random(&mut rng, problem, i % 2 == 0);
                        let layout = Layout {
                            own_workspace: false,
                            ..Layout::varied(i)
                        };
                        engine
                            .plan(&problem)
                            .map_err(|e| e.to_string())
                            .and_then(|plan| run_case(engine, &plan, &case, &layout))
                            .map_err(|e| format!("thread {t}, {}: {e}", describe(&problem)))?;
                    }
                    Ok(per_thread)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("thread panicked".into())))
            .collect()
    });
    let mut failures = Failures::default();
    let mut checked = 0;
    for result in results {
        match result {
            Ok(n) => checked += n,
            Err(why) => failures.push(why),
        }
    }
    summary(
        TEST,
        &format!("{checked} problems on {threads} threads sharing one engine (seed {seed})"),
    );
    failures.assert_none(TEST);
}
