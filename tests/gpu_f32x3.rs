//! 3xTF32 (issue 14): every `f32x3` kernel of the catalogue against the float64 oracle,
//! beside the strict FP32 SIMT kernel that dispatch picks for the same problem on the same
//! data. The error measure is `‖out − ref‖₂ / ‖ref‖₂` (and, where sums cancel,
//! `‖out − ref‖₂ / ‖|F| ∗ |X| + |bias|‖₂`, the scale of float32 rounding errors).
//!
//! * `f32x3_kernels_are_fp32_accurate`: random data in [−1, 1] over many problems of each
//!   kernel's kind (at least 300 in all): every 3xTF32 error at most 2e-6, and at most 1.5×
//!   the strict kernel's plus a float32 ulp (2⁻²⁴: on short reductions both errors are a few
//!   roundings, and their ratio is noise); the mean and the median of the 3xTF32 errors at
//!   most 1.5× the strict ones.
//! * `f32x3_wide_dynamic_range`: operands spanning 2^±20, where the small parts of tiny
//!   values and the tensor cores' accumulation show.
//! * `f32x3_cancellation`: sums whose terms cancel to about 1e-4 of their magnitude.
//! * `f32x3_precisions_dispatch`: `Precision::F32x3` runs 3xTF32 kernels only,
//!   `Precision::Accurate` the math dispatch prefers, both within the same bounds.
//!
//! Each prints the distributions (`im2win-summary:` lines). Skips without a GPU; fails
//! instead with `IM2WIN_REQUIRE_GPU=1`. `IM2WIN_TEST_SMALL=1` runs a few problems only.

mod common;

use common::{Limits, describe, engine, fixed_problem, random_problem, small, summary, test_seed};
use im2win::codegen::{Geometry, KernelSpec, Math};
use im2win::{Conv2dProblem, Engine, FilterLayout, Layout, Padding, Plan, Precision};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The largest accepted `‖out − ref‖ / ‖ref‖` of a 3xTF32 result on data in [−1, 1].
const F32X3_LIMIT: f64 = 2e-6;
/// The largest accepted ratio of the 3xTF32 error to the strict kernel's.
const STRICT_RATIO: f64 = 1.5;
/// A float32 unit roundoff: the slack of a per-problem ratio (see the module documentation).
const ULP: f64 = 1.0 / (1u64 << 24) as f64;

/// The problem as `precision` (float32), its layouts unchanged.
fn as_precision(problem: Conv2dProblem, precision: Precision) -> Conv2dProblem {
    problem.with_precision(precision)
}

/// The problem with NHWC tensors and a KRSC filter (what the 3xTF32 kernels read in place;
/// the strict NHWC kernels read it too) or, `nchw`, NCHW tensors and a KCRS filter (which
/// they read through channels-last copies; the strict NCHW kernels take it).
fn in_layout(problem: Conv2dProblem, nchw: bool) -> Conv2dProblem {
    if nchw {
        problem
            .with_layout(Layout::Nchw)
            .with_filter_layout(FilterLayout::Kcrs)
    } else {
        problem
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc)
    }
}

/// Operands and bias of one problem, and the float64 oracle of them.
struct Data {
    input: Vec<f32>,
    filter: Vec<f32>,
    bias: Option<Vec<f32>>,
    reference: Vec<f64>,
    /// The oracle on |input|, |filter|, |bias|: the scale of rounding errors per output.
    magnitude: Vec<f64>,
}

impl Data {
    fn new(
        problem: &Conv2dProblem,
        input: Vec<f32>,
        filter: Vec<f32>,
        bias: Option<Vec<f32>>,
    ) -> Data {
        let oracle = |x: &[f32], f: &[f32], b: Option<&[f32]>| {
            im2win::cpu::reference_conv2d(problem, x, f, b)
                .expect("the oracle takes a valid problem")
        };
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        let reference = oracle(&input, &filter, bias.as_deref());
        let magnitude = oracle(
            &abs(&input),
            &abs(&filter),
            bias.as_deref().map(abs).as_deref(),
        );
        Data {
            input,
            filter,
            bias,
            reference,
            magnitude,
        }
    }

    /// `(‖out − ref‖ / ‖ref‖, ‖out − ref‖ / ‖magnitude‖)`.
    fn errors(&self, out: &[f32]) -> Errors {
        let diff = out
            .iter()
            .zip(&self.reference)
            .map(|(&o, &r)| (f64::from(o) - r).powi(2))
            .sum::<f64>()
            .sqrt();
        let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
        if diff == 0.0 {
            // Exact, also where the reference is all zeros (0 / 0 would be NaN, which every
            // bound below refuses).
            return (0.0, 0.0);
        }
        (diff / norm(&self.reference), diff / norm(&self.magnitude))
    }
}

/// `(‖out − ref‖ / ‖ref‖, ‖out − ref‖ / ‖magnitude‖)` of a run ([`Data::errors`]).
type Errors = (f64, f64);

/// Runs `plan` on `data` (fresh device buffers of exactly the operands' sizes) and returns
/// the output, or why not.
fn run(engine: &Engine, plan: &Plan, data: &Data) -> Result<Vec<f32>, String> {
    let stream = engine.stream();
    let up = |v: &[f32]| stream.clone_htod(v).map_err(|e| format!("upload: {e}"));
    let x = up(&data.input)?;
    let f = up(&data.filter)?;
    let b = data.bias.as_deref().map(up).transpose()?;
    let mut y = stream
        .alloc_zeros::<f32>(plan.shape().output_len)
        .map_err(|e| format!("alloc: {e}"))?;
    engine
        .conv2d_with_residual(plan, &x, &f, b.as_ref().map(|b| b as _), None, &mut y, None)
        .map_err(|e| format!("conv2d: {e}"))?;
    let out = stream
        .clone_dtoh(&y)
        .map_err(|e| format!("download: {e}"))?;
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!("output[{i}] = {} is not finite", out[i]));
    }
    Ok(out)
}

/// The errors of the 3xTF32 kernel `spec` and of dispatch's strict kernel on `problem`
/// (float32, any precision: it is set here) with `data`.
fn compare(
    engine: &Engine,
    spec: &KernelSpec,
    problem: Conv2dProblem,
    data: &Data,
) -> Result<(Errors, Errors), String> {
    let fast = Plan::for_spec(&as_precision(problem, Precision::F32x3), *spec)
        .map_err(|e| format!("plan {spec}: {e}"))?;
    let strict = engine
        .plan(&as_precision(problem, Precision::Strict))
        .map_err(|e| format!("strict plan: {e}"))?;
    let fast_out = run(engine, &fast, data)?;
    let strict_out = run(engine, &strict, data)?;
    Ok((data.errors(&fast_out), data.errors(&strict_out)))
}

/// A random problem of `spec`'s kind: its geometry, `C` a multiple of its channel vector,
/// and (`deep`) a long reduction: 64 to 256 channels into 64 to 300 output channels.
fn problem_for(rng: &mut StdRng, spec: &KernelSpec, deep: bool) -> Conv2dProblem {
    let limits = Limits {
        out_channels: 200,
        ..common::gpu_limits()
    };
    let mut problem = match spec.geometry {
        Geometry::Fixed(g) => fixed_problem(rng, g, &limits),
        Geometry::Generic => random_problem(rng, &limits),
    };
    if deep && !small() {
        let [r, s] = [problem.filter[2], problem.filter[3]];
        let c = rng.random_range(64..=256);
        let deeper = Conv2dProblem::new(
            [
                rng.random_range(1..=2),
                c,
                problem.input[2].min(12 + r),
                problem.input[3].min(12 + s),
            ],
            [rng.random_range(64..=300), c, r, s],
        )
        .with_stride(problem.stride)
        .with_padding(problem.padding)
        .with_dilation(problem.dilation);
        if deeper.shape().is_ok() {
            problem = deeper;
        }
    }
    let multiple = spec.channel_multiple();
    let c = problem.input[1].div_ceil(multiple) * multiple;
    problem.input[1] = c;
    problem.filter[1] = c;
    problem
}

/// The 3xTF32 kernels of the engine's catalogue, or none (after a summary line) when it has
/// none (built without the float32 tensor-core family).
fn fast_kernels(engine: &Engine, test: &str) -> Vec<KernelSpec> {
    let specs: Vec<KernelSpec> = engine
        .kernels()
        .catalogue()
        .kernels
        .iter()
        .filter(|spec| spec.math == Math::TensorOpFastF32)
        .copied()
        .collect();
    if specs.is_empty() {
        summary(test, "SKIPPED: the catalogue has no f32x3 kernels");
    }
    specs
}

/// Quantiles (min, median, 90th percentile, max) and mean of `values`, for the summaries.
fn distribution(values: &[f64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    format!(
        "min {:.2e} median {:.2e} p90 {:.2e} max {:.2e} mean {:.2e}",
        at(0.0),
        at(0.5),
        at(0.9),
        at(1.0),
        mean
    )
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

#[test]
fn f32x3_kernels_are_fp32_accurate() {
    const TEST: &str = "f32x3_kernels_are_fp32_accurate";
    let Some(engine) = engine(TEST) else { return };
    let specs = fast_kernels(&engine, TEST);
    if specs.is_empty() {
        return;
    }
    let per_kernel = if small() {
        3
    } else {
        300_usize.div_ceil(specs.len()).max(40)
    };
    let mut rng = StdRng::seed_from_u64(test_seed(0x3_7F32));
    let mut failures = Vec::new();
    let (mut fast_errors, mut strict_errors, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for spec in &specs {
        for i in 0..per_kernel {
            let problem = problem_for(&mut rng, spec, i % 3 == 2);
            let shape = problem.shape().expect("generated problems are valid");
            let input = common::random_data(&mut rng, shape.input_len);
            let filter = common::random_data(&mut rng, shape.filter_len);
            let bias = rng
                .random_bool(0.5)
                .then(|| common::random_data(&mut rng, shape.output[1]));
            // Half the problems NCHW with a KCRS filter (channels-last copies).
            let problem = in_layout(as_precision(problem, Precision::F32x3), i % 2 == 1);
            let data = Data::new(&problem, input, filter, bias);
            match compare(&engine, spec, problem, &data) {
                Ok(((fast, _), (strict, _))) => {
                    fast_errors.push(fast);
                    strict_errors.push(strict);
                    ratios.push(fast / strict.max(f64::MIN_POSITIVE));
                    if fast.is_nan() || fast > F32X3_LIMIT || fast > STRICT_RATIO * strict + ULP {
                        failures.push(format!(
                            "{spec} on {}: 3xTF32 error {fast:.3e}, strict {strict:.3e}",
                            describe(&problem)
                        ));
                    }
                }
                Err(why) => failures.push(format!("{spec} on {}: {why}", describe(&problem))),
            }
        }
    }
    summary(
        TEST,
        &format!(
            "{} kernels, {} problems; 3xTF32 error {}; strict {}; ratio {}",
            specs.len(),
            fast_errors.len(),
            distribution(&fast_errors),
            distribution(&strict_errors),
            distribution(&ratios)
        ),
    );
    if !fast_errors.is_empty() {
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (fast_mean, strict_mean) = (mean(&fast_errors), mean(&strict_errors));
        if fast_mean > STRICT_RATIO * strict_mean {
            failures.push(format!(
                "mean 3xTF32 error {fast_mean:.3e} > {STRICT_RATIO} x strict {strict_mean:.3e}"
            ));
        }
        let (fast_median, strict_median) = (median(&fast_errors), median(&strict_errors));
        if fast_median > STRICT_RATIO * strict_median {
            failures.push(format!(
                "median 3xTF32 error {fast_median:.3e} > {STRICT_RATIO} x strict {strict_median:.3e}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{TEST}: {} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A long-reduction problem for the special data sets: 1×1 or 3×3 (padding 1), 128 to 256
/// channels, K = 64 to 192, a 10 × 10 image.
fn special_problem(rng: &mut StdRng, i: usize) -> Conv2dProblem {
    let c = 4 * rng.random_range(32..=64);
    let k = rng.random_range(64..=192);
    let rs = if i.is_multiple_of(2) { 3 } else { 1 };
    Conv2dProblem::new([2, c, 10, 10], [k, c, rs, rs]).with_padding(Padding::uniform(rs / 2))
}

/// Runs `data_for`'s operands over a few special problems with every 3xTF32 kernel that
/// can run each, beside the strict kernel on the same data; fails the test `test` where
/// `within(3xTF32 errors, strict errors)` is false, after a summary of both distributions
/// (relative and of the magnitude).
fn special_test(
    test: &str,
    seed: u64,
    mut data_for: impl FnMut(&mut StdRng, &Conv2dProblem) -> (Vec<f32>, Vec<f32>),
    within: impl Fn(Errors, Errors) -> bool,
) {
    let Some(engine) = engine(test) else { return };
    let specs = fast_kernels(&engine, test);
    let mut rng = StdRng::seed_from_u64(test_seed(seed));
    let problems = if small() { 2 } else { 8 };
    let mut failures = Vec::new();
    let mut runs: Vec<(Errors, Errors)> = Vec::new();
    for i in 0..problems {
        if specs.is_empty() {
            return;
        }
        let problem = in_layout(
            as_precision(special_problem(&mut rng, i), Precision::F32x3),
            false,
        );
        let (input, filter) = data_for(&mut rng, &problem);
        let data = Data::new(&problem, input, filter, None);
        for spec in specs
            .iter()
            .filter(|s| im2win::gpu::can_implement(s, &problem))
        {
            match compare(&engine, spec, problem, &data) {
                Ok((fast, strict)) if within(fast, strict) => runs.push((fast, strict)),
                Ok((fast, strict)) => {
                    runs.push((fast, strict));
                    failures.push(format!(
                        "{spec} on {}: 3xTF32 error {:.3e} ({:.3e} of the magnitude), strict {:.3e} ({:.3e})",
                        describe(&problem),
                        fast.0,
                        fast.1,
                        strict.0,
                        strict.1
                    ));
                }
                Err(why) => failures.push(format!("{spec} on {}: {why}", describe(&problem))),
            }
        }
    }
    let column =
        |f: fn(&(Errors, Errors)) -> f64| distribution(&runs.iter().map(f).collect::<Vec<f64>>());
    if !runs.is_empty() {
        summary(
            test,
            &format!(
                "{} runs; relative: 3xTF32 {}; strict {}; of the magnitude: 3xTF32 {}; strict {}",
                runs.len(),
                column(|r| r.0.0),
                column(|r| r.1.0),
                column(|r| r.0.1),
                column(|r| r.1.1)
            ),
        );
    }
    assert!(failures.is_empty(), "{test}:\n{}", failures.join("\n"));
}

#[test]
fn f32x3_wide_dynamic_range() {
    // Sign, a mantissa in [1, 2) and an exponent in [−20, 20]: values spanning 2^±20.
    let wide = |rng: &mut StdRng, len: usize| -> Vec<f32> {
        (0..len)
            .map(|_| {
                let sign = if rng.random_bool(0.5) { -1.0 } else { 1.0 };
                let mantissa: f32 = rng.random_range(1.0..2.0);
                sign * mantissa * 2.0_f32.powi(rng.random_range(-20..=20))
            })
            .collect()
    };
    special_test(
        "f32x3_wide_dynamic_range",
        0x3_31DE,
        |rng, problem| {
            let shape = problem.shape().unwrap();
            (wide(rng, shape.input_len), wide(rng, shape.filter_len))
        },
        // The sums are dominated by their largest products; both kernels round each sum a
        // few times at its magnitude. 3xTF32 also drops small·small (2⁻²² of a product)
        // and the tensor cores align products before adding them.
        |(fast, _), (strict, _)| fast <= 1e-5 && fast <= 4.0 * strict + 4.0 * ULP,
    );
}

#[test]
fn f32x3_cancellation() {
    // The second half of the channels repeats the first half's input (times 1 + 1e-4·noise)
    // with the filter negated: every output is the sum of ± pairs that cancel to about 1e-4
    // of its magnitude.
    let cancelling = |rng: &mut StdRng, problem: &Conv2dProblem| {
        let shape = problem.shape().unwrap();
        let [n, c, h, w] = problem.input;
        let [k, _, r, s] = problem.filter;
        let half = c / 2;
        let mut input = common::random_data(rng, shape.input_len);
        // NHWC: channel fastest.
        for pixel in 0..n * h * w {
            for ch in 0..half {
                let noise: f32 = rng.random_range(-1.0..1.0);
                input[pixel * c + half + ch] = input[pixel * c + ch] * (1.0 + 1e-4 * noise);
            }
        }
        let mut filter = common::random_data(rng, shape.filter_len);
        // KRSC: channel fastest.
        for tap in 0..k * r * s {
            for ch in 0..half {
                filter[tap * c + half + ch] = -filter[tap * c + ch];
            }
        }
        (input, filter)
    };
    special_test(
        "f32x3_cancellation",
        0x3_CA7C,
        cancelling,
        // Against the magnitude (the scale of every rounding): as accurate as strict FP32.
        |(_, fast), (_, strict)| fast <= 1e-6 && fast <= 2.0 * strict + ULP,
    );
}

#[test]
fn f32x3_precisions_dispatch() {
    const TEST: &str = "f32x3_precisions_dispatch";
    let Some(engine) = engine(TEST) else { return };
    if fast_kernels(&engine, TEST).is_empty() {
        return;
    }
    let mut rng = StdRng::seed_from_u64(test_seed(0x3_D15));
    let mut failures = Vec::new();
    let mut maths = Vec::new();
    // A large layer (3xTF32 under Accurate by dispatch's rule), a small one (strict), a
    // C = 3 stem (f32x3: the element-wise kernel).
    let problems = [
        Conv2dProblem::new([4, 128, 28, 28], [128, 128, 3, 3]).with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 16, 9, 9], [24, 16, 3, 3]),
        Conv2dProblem::new([2, 3, 32, 32], [64, 3, 7, 7])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(3)),
    ];
    for problem in problems {
        let shape = problem.shape().unwrap();
        let input = common::random_data(&mut rng, shape.input_len);
        let filter = common::random_data(&mut rng, shape.filter_len);
        let problem = in_layout(as_precision(problem, Precision::F32x3), false);
        let data = Data::new(&problem, input, filter, None);
        for precision in [Precision::F32x3, Precision::Accurate, Precision::Strict] {
            let problem = as_precision(problem, precision);
            let outcome = engine
                .plan(&problem)
                .map_err(|e| e.to_string())
                .and_then(|plan| {
                    let math = plan.kernel().math;
                    run(&engine, &plan, &data).map(|out| (math, data.errors(&out)))
                });
            match outcome {
                Ok((math, (err, _))) => {
                    maths.push(format!("{}:{math:?}", precision.name()));
                    let admitted = precision.admits(im2win::DType::F32, math);
                    if !admitted || err.is_nan() || err > F32X3_LIMIT {
                        failures.push(format!(
                            "{precision} on {}: {math:?}, error {err:.3e}",
                            describe(&problem)
                        ));
                    }
                }
                Err(why) => failures.push(format!("{precision} on {}: {why}", describe(&problem))),
            }
        }
    }
    summary(TEST, &maths.join(" "));
    assert!(failures.is_empty(), "{TEST}:\n{}", failures.join("\n"));
}
