//! Every kernel of the default catalogue against the float64 CPU oracle on random and
//! hand-picked problems, with operands inside guarded buffers: the strict float32 kernels
//! with float32 data, the tensor-core kernels (bf16, f16, TF32; NHWC, KRSC filter) with data
//! of their type against the oracle of the same rounded inputs.
//!
//! Without a GPU (or without built kernels) the tests print a skip line and pass; with
//! `IM2WIN_REQUIRE_GPU=1` they fail instead. `IM2WIN_TEST_SMALL=1` runs fewer, smaller
//! problems (for compute-sanitizer); `IM2WIN_TEST_SEED` draws other problems.

mod common;

use std::fmt;

use common::{
    Case, Failures, Layout, Run, TypedCase, describe, engine, fixed_problem, gpu_limits,
    random_problem, refuses_misaligned, run_case, run_case_output, run_typed_case, small, summary,
    tensor_op_tolerance, test_seed,
};
use cudarc::driver::{DevicePtr, DevicePtrMut};
use im2win::half::{bf16, f16};
use im2win::{Conv2dProblem, Element, Engine, FilterLayout, Padding, Plan};
use im2win_codegen::{DType, FixedGeometry, Geometry, KernelSpec, Math};
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
    let full = engine.kernels().catalogue().clone();
    // The strict float32 kernels here (dense: the grouped family has tests/gpu_groups.rs);
    // the tensor-core kernels below, with data of their type.
    let catalogue = im2win::codegen::Catalogue {
        kernels: full
            .kernels
            .iter()
            .filter(|spec| spec.math == Math::Simt && !spec.is_grouped())
            .copied()
            .collect(),
        ..full.clone()
    };
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

    // Each problem with the kernels forced on it: every fixed kernel of its geometry (one per
    // tile) and every generic kernel, or the generic kernels alone for a random geometry.
    let mut geometries: Vec<FixedGeometry> = Vec::new();
    for spec in &catalogue.kernels {
        if let Geometry::Fixed(g) = spec.geometry
            && !geometries.contains(&g)
        {
            geometries.push(g);
        }
    }
    // Every problem in both layouts, each with the kernels of its layout.
    let generics_of = |layout: im2win::Layout| -> Vec<KernelSpec> {
        generics
            .iter()
            .filter(|spec| spec.layout == layout)
            .copied()
            .collect()
    };
    let mut problems: Vec<(Conv2dProblem, Vec<KernelSpec>)> = Vec::new();
    for g in geometries {
        let random = (0..per_fixed).map(|_| fixed_problem(&mut rng, g, &limits));
        for problem in edge_problems(g)
            .into_iter()
            .chain(random.collect::<Vec<_>>())
        {
            for layout in im2win::Layout::ALL {
                let specs: Vec<KernelSpec> = catalogue
                    .matching(DType::F32, layout, Geometry::Fixed(g))
                    .copied()
                    .chain(generics_of(layout))
                    .collect();
                problems.push((problem.with_layout(layout), specs));
            }
        }
    }
    for _ in 0..generic_only {
        let problem = random_problem(&mut rng, &limits);
        for layout in im2win::Layout::ALL {
            problems.push((problem.with_layout(layout), generics_of(layout)));
        }
    }

    let mut failures = Failures::default();
    let mut coverage = Coverage::default();
    let (mut runs, mut worst) = (0_usize, 0.0_f64);
    for (problem, specs) in &problems {
        let with_bias = rng.random_bool(0.5);
        let case = Case::random(&mut rng, *problem, with_bias);
        coverage.add(&case);
        // Dispatch must pick a fixed kernel of a fixed geometry.
        if let Geometry::Fixed(g) = specs[0].geometry {
            let planned = engine.plan(problem).map(|plan| *plan.kernel());
            if planned.as_ref().map(|k| k.geometry).ok() != Some(Geometry::Fixed(g)) {
                failures.check(
                    || format!("dispatch of {}", describe(problem)),
                    Err(format!("picked {planned:?}, expected a kernel of {g:?}")),
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
            "{} problems, {runs} kernel runs over {} float32 kernels, worst relative error \
             {worst:.2e} (seed {seed}); coverage: {coverage}",
            problems.len(),
            catalogue.kernels.len(),
        ),
    );
    let tensor_op = tensor_op_kernels_match_the_oracle(&engine, &full, &mut rng, &mut failures);
    summary(TEST, &tensor_op.to_string());
    failures.assert_none(TEST);
    if !small() {
        assert!(
            coverage.missing().is_empty(),
            "edge cases never drawn: {:?}",
            coverage.missing()
        );
        tensor_op.assert_enough();
    }
}

/// What [`tensor_op_kernels_match_the_oracle`] ran.
#[derive(Default)]
struct TensorOpTally {
    /// Problems per numeric type (`bf16`, `f16`, `tf32`) with NHWC tensors, with NCHW
    /// tensors (through the NHWC copy of the input), with a KCRS filter; and kernels.
    problems: [usize; 3],
    nchw: [usize; 3],
    kcrs: usize,
    kernels: usize,
    /// Runs: forced plans (of them, with a split reduction; the engine's own dispatch
    /// (of them, split by dispatch), misaligned operands.
    forced: usize,
    forced_split: usize,
    dispatched_split: usize,
    dispatched: usize,
    misaligned: usize,
    /// Worst relative error per numeric type.
    worst: [f64; 3],
    /// Problems with an epilogue beyond `+ bias`, with a residual, with C not a multiple of 8.
    epilogues: usize,
    residuals: usize,
    odd_channels: usize,
}

const NUMERICS: [&str; 3] = ["bf16", "f16", "tf32"];

impl TensorOpTally {
    fn index(dtype: DType) -> usize {
        match dtype {
            DType::Bf16 => 0,
            DType::F16 => 1,
            DType::F32 => 2,
        }
    }

    fn assert_enough(&self) {
        if self.kernels == 0 {
            // Built without tensor-core kernels (features off): nothing to check.
            return;
        }
        for (i, numeric) in NUMERICS.iter().enumerate() {
            let (nchw, nhwc) = (self.nchw[i], self.problems[i] - self.nchw[i]);
            assert!(
                nhwc >= 300 && nchw >= 300,
                "only {nhwc} NHWC and {nchw} NCHW {numeric} problems"
            );
        }
        assert!(self.kcrs > 0, "no KCRS filter drawn");
        assert!(
            self.forced_split > 0
                && self.misaligned > 0
                && self.epilogues > 0
                && self.residuals > 0
                && self.odd_channels > 0,
            "tensor-core edge cases never drawn"
        );
    }
}

impl fmt::Display for TensorOpTally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tensor-core kernels: {} kernels, problems bf16 {} ({} NCHW) f16 {} ({} NCHW) tf32 \
             {} ({} NCHW) ({} with a KCRS filter, {} with an epilogue, {} with a residual, {} \
             with C not a multiple of 8); runs: {} forced ({} split), {} dispatched ({} split \
             by dispatch), {} on misaligned operands; worst relative error bf16 {:.2e} (limit 8e-3), f16 {:.2e} (1e-3), tf32 \
             {:.2e} (1e-3)",
            self.kernels,
            self.problems[0],
            self.nchw[0],
            self.problems[1],
            self.nchw[1],
            self.problems[2],
            self.nchw[2],
            self.kcrs,
            self.epilogues,
            self.residuals,
            self.odd_channels,
            self.forced,
            self.forced_split,
            self.dispatched,
            self.dispatched_split,
            self.misaligned,
            self.worst[0],
            self.worst[1],
            self.worst[2],
        )
    }
}

/// A random problem for the tensor-core kernel `spec`: of its geometry (fixed or random), its
/// element type and precision, tensors in `layout` (NCHW runs on an NHWC copy of the input
/// and writes NCHW itself), a KRSC filter or (one in three) a KCRS one (a KRSC copy), `C` a
/// multiple of the kernel's channel vector (vector loads), a random epilogue. Every fourth
/// one is deep: 64 to 160 channels (several stages of 128-byte rows) and up to 300 output
/// channels.
fn tensor_op_problem(
    rng: &mut StdRng,
    spec: &KernelSpec,
    deep: bool,
    layout: im2win::Layout,
) -> Conv2dProblem {
    let limits = gpu_limits();
    let mut problem = match spec.geometry {
        Geometry::Fixed(g) => fixed_problem(rng, g, &limits),
        Geometry::Generic => random_problem(rng, &limits),
    };
    let multiple = spec.channel_multiple();
    let [r, s] = [problem.filter[2], problem.filter[3]];
    // Deep problems for filters up to 3×3 (the oracle's cost grows with C·R·S·K), on an
    // image shrunk to keep it quick.
    if deep && r * s <= 9 && !small() {
        let c = rng.random_range(64..=160);
        let deeper = Conv2dProblem::new(
            [
                1,
                c,
                problem.input[2].min(10 + r),
                problem.input[3].min(10 + s),
            ],
            [rng.random_range(100..=300), c, r, s],
        )
        .with_stride(problem.stride)
        .with_padding(problem.padding)
        .with_dilation(problem.dilation);
        if deeper.shape().is_ok() {
            problem = deeper;
        }
    }
    let c = problem.input[1].div_ceil(multiple) * multiple;
    problem.input[1] = c;
    problem.filter[1] = c;
    let precision = if spec.dtype == DType::F32 {
        im2win::Precision::Tf32
    } else {
        im2win::Precision::Strict
    };
    let filter_layout = if rng.random_range(0..3) == 0 {
        FilterLayout::Kcrs
    } else {
        FilterLayout::Krsc
    };
    problem
        .with_dtype(spec.dtype)
        .with_precision(precision)
        .with_layout(layout)
        .with_filter_layout(filter_layout)
        .with_epilogue(random_epilogue(rng))
}

/// Every tensor-core kernel of `catalogue` on random problems of its kind (see
/// [`tensor_op_problem`]), data of its type, against the float64 oracle of the same rounded
/// inputs: forced on aligned operands (offsets that are multiples of 16 bytes) with a random
/// buffer layout; through the engine's own dispatch (`Engine::conv2d`) on aligned and on
/// misaligned operands (a view 2 or 74 bytes in: dispatch must take an element-wise kernel);
/// and, for a kernel with vector loads, forced on misaligned operands, which must be refused
/// untouched.
fn tensor_op_kernels_match_the_oracle(
    engine: &Engine,
    catalogue: &im2win::codegen::Catalogue,
    rng: &mut StdRng,
    failures: &mut common::Failures,
) -> TensorOpTally {
    // At least 300 problems per type and layout: 24 per kernel for the 36 bf16 and f16
    // kernels (17 warp-MMA, 9 multistage warpgroup, 10 TMA), 40 for the 17 TF32 ones (26
    // with the feature `tc-tf32-tma`); the layouts alternate every 4 (under
    // IM2WIN_TEST_SMALL both of a kernel's 2 are NCHW).
    let per_kernel = |dtype: DType| match (small(), dtype) {
        (true, _) => 2,
        (false, DType::F32) => 40,
        (false, _) => 24,
    };
    let mut tally = TensorOpTally::default();
    let specs: Vec<KernelSpec> = catalogue
        .kernels
        .iter()
        .filter(|spec| spec.math == Math::TensorOp)
        .copied()
        .collect();
    tally.kernels = specs.len();
    for spec in &specs {
        for i in 0..per_kernel(spec.dtype) {
            let layout = im2win::Layout::ALL[(i / 4) % 2];
            let problem = tensor_op_problem(rng, spec, i % 4 == 3, layout);
            let with_bias = rng.random_bool(0.5);
            match spec.dtype {
                DType::Bf16 => run_tensor_op::<bf16>(
                    engine, spec, problem, with_bias, i, rng, failures, &mut tally,
                ),
                DType::F16 => run_tensor_op::<f16>(
                    engine, spec, problem, with_bias, i, rng, failures, &mut tally,
                ),
                DType::F32 => run_tensor_op::<f32>(
                    engine, spec, problem, with_bias, i, rng, failures, &mut tally,
                ),
            }
        }
    }
    tally
}

/// One problem of [`tensor_op_kernels_match_the_oracle`] with elements `T`.
#[allow(clippy::too_many_arguments)]
fn run_tensor_op<T: Element>(
    engine: &Engine,
    spec: &KernelSpec,
    problem: Conv2dProblem,
    with_bias: bool,
    i: usize,
    rng: &mut StdRng,
    failures: &mut common::Failures,
    tally: &mut TensorOpTally,
) {
    let case = TypedCase::<T>::random(rng, problem, with_bias);
    let tolerance = tensor_op_tolerance(spec.dtype);
    let index = TensorOpTally::index(spec.dtype);
    tally.problems[index] += 1;
    tally.nchw[index] += usize::from(problem.layout == im2win::Layout::Nchw);
    tally.kcrs += usize::from(problem.filter_layout == FilterLayout::Kcrs);
    tally.epilogues += usize::from(problem.epilogue != im2win::Epilogue::IDENTITY);
    tally.residuals += usize::from(problem.epilogue.residual);
    tally.odd_channels += usize::from(!problem.input[1].is_multiple_of(8));
    let mut record = |what: String, outcome: Result<f64, String>, tally: &mut TensorOpTally| {
        let err = failures.check(|| what, outcome);
        tally.worst[index] = tally.worst[index].max(err);
    };
    // Offsets in elements that keep 16-byte alignment for 2- and 4-byte elements.
    const ALIGNED: [usize; 4] = [0, 64, 8, 200];
    let aligned = Layout {
        offset: ALIGNED[i % ALIGNED.len()],
        ..Layout::varied(i)
    };
    // One forced plan in three unsplit, one split 2 to 4 ways, one split up to 2 more ways
    // than the reduction has stages (uneven and empty shares).
    let stages = problem.shape().map_or(1, |shape| {
        shape.reduction.div_ceil(spec.tile.block_k as usize) as u32
    });
    // (A kernel that does not split, `KernelSpec::splits_reduction`, must refuse.)
    let splits = match i % 3 {
        0 => 1,
        1 => rng.random_range(2..=4),
        _ => rng.random_range(2..=stages + 2),
    };
    if splits > 1 && !spec.splits_reduction() {
        let refused = Plan::for_spec(&problem, *spec).and_then(|plan| plan.with_split(splits));
        if !matches!(refused, Err(im2win::Error::KernelRequirement { .. })) {
            failures.push(format!("{spec} accepted {splits} splits: {refused:?}"));
        }
        return;
    }
    let forced = Plan::for_spec(&problem, *spec)
        .and_then(|plan| plan.with_split(splits))
        .map_err(|e| e.to_string());
    let outcome = forced
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|plan| run_typed_case(engine, Run::Plan(plan), &case, &aligned, tolerance));
    record(
        format!(
            "{spec} split {splits} on {} ({aligned:?})",
            describe(&problem)
        ),
        outcome,
        tally,
    );
    tally.forced += 1;
    tally.forced_split += usize::from(splits > 1);
    tally.dispatched_split += usize::from(
        engine
            .plan_for_operands(&problem, im2win::gpu::OPERAND_ALIGNMENT)
            .is_ok_and(|plan| plan.splits() > 1),
    );
    if problem.epilogue.residual {
        return;
    }
    // The engine's own choice, on aligned and on misaligned operands.
    let odd = Layout {
        offset: [1, 37][i % 2],
        ..Layout::varied(i)
    };
    for layout in [aligned, odd] {
        let outcome = run_typed_case(engine, Run::Dispatch, &case, &layout, tolerance);
        record(
            format!("dispatch of {} ({layout:?})", describe(&problem)),
            outcome,
            tally,
        );
        tally.dispatched += 1;
    }
    tally.misaligned += 1;
    if spec.needs_aligned_operands()
        && let Ok(plan) = &forced
    {
        // A kernel that reads only the channels-last copies (NCHW input, KCRS filter) runs
        // on any operands; otherwise a misaligned one is refused untouched.
        let outcome =
            if im2win::gpu::read_alignment(spec, &problem, 1) >= im2win::gpu::OPERAND_ALIGNMENT {
                run_typed_case(engine, Run::Plan(plan), &case, &odd, tolerance)
            } else {
                refuses_misaligned(engine, plan, &case).map(|()| 0.0)
            };
        record(
            format!("{spec} on misaligned operands of {}", describe(&problem)),
            outcome,
            tally,
        );
    }
}

/// One engine used from several threads at once, each with its own problems, through
/// dispatch and the engine's shared workspace (which the threads' problems make it regrow).
/// Every output must equal, bit for bit, the output of the same engine running the same
/// plans one after the other first, as well as match the CPU oracle.
#[test]
fn one_engine_shared_by_threads() {
    const TEST: &str = "one_engine_shared_by_threads";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(7);
    let limits = gpu_limits();
    let (threads, per_thread) = if small() { (2, 2) } else { (4, 6) };
    // Each thread's cases and plans, drawn up front so that the serial run repeats them.
    let work: Vec<Vec<(Case, Plan)>> = (0..threads)
        .map(|t| {
            let mut rng = StdRng::seed_from_u64(seed + t as u64);
            (0..per_thread)
                .map(|i| {
                    let problem = random_problem(&mut rng, &limits);
                    let case = Case::random(&mut rng, problem, i % 2 == 0);
                    let plan = engine.plan(&problem).expect("random problems are valid");
                    (case, plan)
                })
                .collect()
        })
        .collect();
    let layout = |i: usize| Layout {
        own_workspace: false,
        ..Layout::varied(i)
    };
    let run_all = |jobs: &[(Case, Plan)]| -> Vec<Result<Vec<f32>, String>> {
        jobs.iter()
            .enumerate()
            .map(|(i, (case, plan))| {
                run_case_output(&engine, plan, case, &layout(i))
                    .map(|(_, out)| out)
                    .map_err(|e| format!("{}: {e}", describe(&case.problem)))
            })
            .collect()
    };
    let serial: Vec<Vec<Result<Vec<f32>, String>>> =
        work.iter().map(|jobs| run_all(jobs)).collect();
    let parallel: Vec<Vec<Result<Vec<f32>, String>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .iter()
            .map(|jobs| scope.spawn(|| run_all(jobs)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![Err("thread panicked".into())])
            })
            .collect()
    });
    let mut failures = Failures::default();
    let mut checked = 0;
    for (t, (serial, parallel)) in serial.iter().zip(&parallel).enumerate() {
        for (i, (s, p)) in serial.iter().zip(parallel).enumerate() {
            match (s, p) {
                (Err(why), _) => failures.push(format!("serial, thread {t}'s case {i}: {why}")),
                (_, Err(why)) => failures.push(format!("thread {t}, case {i}: {why}")),
                (Ok(s), Ok(p))
                    if s.iter()
                        .map(|v| v.to_bits())
                        .eq(p.iter().map(|v| v.to_bits())) =>
                {
                    checked += 1;
                }
                (Ok(_), Ok(_)) => failures.push(format!(
                    "thread {t}, {}: differs from the serial run",
                    describe(&work[t][i].0.problem)
                )),
            }
        }
    }
    summary(
        TEST,
        &format!(
            "{checked} problems on {threads} threads sharing one engine, bit-identical to a serial run (seed {seed})"
        ),
    );
    failures.assert_none(TEST);
}

/// Every kernel of the catalogue with its reduction split (grid.z > 1, partial sums in the
/// workspace, then the reduction kernel): split counts that divide the stages and ones that
/// do not, more splits than stages (empty shares), with and without bias, on random
/// problems of its geometry; and the splits that dispatch itself chooses for batch-1 layers.
#[test]
fn split_reductions_match_the_cpu_oracle() {
    const TEST: &str = "split_reductions_match_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(4_004);
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = gpu_limits();
    let per_kernel = if small() { 1 } else { 3 };
    let catalogue = engine.kernels().catalogue().clone();
    let mut failures = Failures::default();
    let (mut runs, mut worst) = (0_usize, 0.0_f64);
    let (mut uneven, mut empty, mut biased) = (0_usize, 0_usize, 0_usize);
    let mut run = |problem: &Conv2dProblem,
                   plan: Result<Plan, String>,
                   rng: &mut StdRng,
                   failures: &mut Failures| {
        let with_bias = rng.random_bool(0.5);
        let case = Case::random(rng, *problem, with_bias);
        let layout = Layout::varied(runs);
        let name = plan
            .as_ref()
            .map(|p| format!("{} split {}", p.kernel(), p.splits()))
            .unwrap_or_default();
        let outcome = plan.and_then(|plan| run_case(&engine, &plan, &case, &layout));
        let err = failures.check(
            || format!("{name} on {} ({layout:?})", describe(problem)),
            outcome,
        );
        worst = worst.max(err);
        runs += 1;
        usize::from(with_bias)
    };
    // The tensor-core kernels' splits: `tensor_op_kernels_match_the_oracle`; the grouped
    // kernels do not split.
    for spec in catalogue
        .kernels
        .iter()
        .filter(|s| s.math == Math::Simt && !s.is_grouped())
    {
        for i in 0..per_kernel {
            let problem = match spec.geometry {
                Geometry::Fixed(g) => fixed_problem(&mut rng, g, &limits),
                Geometry::Generic => random_problem(&mut rng, &limits),
            }
            .with_layout(spec.layout);
            let Ok(shape) = problem.shape() else { continue };
            let stages = shape.reduction.div_ceil(spec.tile.block_k as usize) as u32;
            // i = 0: 2 or 3 splits (often not dividing the stages); i = 1: up to the stage
            // count; i = 2: more splits than stages.
            let splits = match i % 3 {
                0 => rng.random_range(2..=3),
                1 => rng.random_range(2..=stages.max(2)),
                _ => stages + rng.random_range(1..=3),
            };
            uneven += usize::from(!stages.is_multiple_of(splits));
            empty += usize::from(splits > stages);
            let plan = Plan::for_spec(&problem, *spec)
                .and_then(|plan| plan.with_split(splits))
                .map_err(|e| e.to_string());
            biased += run(&problem, plan, &mut rng, &mut failures);
        }
    }
    // Dispatch's own choice for small-batch layers with long reductions (ResNet-50's deep
    // layers at batch 1, shrunk where the CPU oracle would be slow).
    let layers = [
        Conv2dProblem::new([1, 512, 7, 7], [64, 512, 3, 3]).with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 1024, 7, 7], [96, 1024, 1, 1]),
        Conv2dProblem::new([2, 256, 5, 5], [130, 256, 3, 3]).with_stride([2, 2]),
    ];
    let mut dispatched_splits = Vec::new();
    for problem in layers {
        let plan = engine.plan(&problem).map_err(|e| e.to_string());
        if let Ok(plan) = &plan {
            dispatched_splits.push(plan.splits());
        }
        biased += run(&problem, plan, &mut rng, &mut failures);
    }
    summary(
        TEST,
        &format!(
            "{runs} split runs over {} kernels ({uneven} with splits not dividing the stages, \
             {empty} with empty splits, {biased} with bias), dispatch chose splits \
             {dispatched_splits:?} for batch-1 layers; worst relative error {worst:.2e} (seed {seed})",
            catalogue.kernels.len()
        ),
    );
    failures.assert_none(TEST);
    if !small() {
        assert!(
            uneven > 0 && empty > 0 && biased > 0,
            "split edge cases never drawn"
        );
        assert!(
            dispatched_splits.iter().any(|&s| s > 1),
            "dispatch split none of {dispatched_splits:?}"
        );
    }
}

/// A random epilogue: every activation, with and without a residual, alpha and beta away
/// from 1 (the plain epilogue in about one case in six).
fn random_epilogue(rng: &mut StdRng) -> im2win::Epilogue {
    use im2win::{Activation, Epilogue};
    if rng.random_ratio(1, 6) {
        return Epilogue::IDENTITY;
    }
    let activation = Activation::ALL[rng.random_range(0..Activation::ALL.len())];
    let mut epilogue = Epilogue::activation(activation).with_alpha(rng.random_range(0.25..2.0));
    if rng.random_bool(0.5) {
        epilogue = epilogue.with_residual(rng.random_range(-1.5..1.5));
    }
    epilogue
}

/// Every kernel of the catalogue, NCHW and NHWC, on problems of its geometry in its layout
/// with either filter layout and a random epilogue (NaN-poisoned outputs, guard zones, split
/// reductions too), against the CPU oracle; and dispatch's own plan for each problem.
#[test]
fn layouts_and_epilogues_match_the_cpu_oracle() {
    const TEST: &str = "layouts_and_epilogues_match_the_cpu_oracle";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(20_261_202);
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = gpu_limits();
    let catalogue = engine.kernels().catalogue().clone();
    // Float32 data: the strict float32 kernels (the tensor-core kernels' epilogues are
    // covered by `every_catalogue_kernel_matches_the_cpu_oracle`).
    let simt: Vec<_> = catalogue
        .kernels
        .iter()
        .filter(|s| s.math == Math::Simt && !s.is_grouped())
        .collect();
    let simt_count = simt.len();
    // At least 300 problems over them (issue 11), whatever their number.
    let per_kernel = if small() {
        1
    } else {
        300_usize.div_ceil(simt.len().max(1))
    };
    let mut failures = Failures::default();
    let (mut problems, mut runs, mut worst) = (0_usize, 0_usize, 0.0_f64);
    let mut seen = std::collections::BTreeSet::new();
    for spec in simt {
        for _ in 0..per_kernel {
            let problem = match spec.geometry {
                Geometry::Fixed(g) => fixed_problem(&mut rng, g, &limits),
                Geometry::Generic => random_problem(&mut rng, &limits),
            };
            let filter_layout = im2win::FilterLayout::ALL[rng.random_range(0..2)];
            let problem = problem
                .with_layout(spec.layout)
                .with_filter_layout(filter_layout)
                .with_epilogue(random_epilogue(&mut rng));
            seen.insert((
                problem.layout,
                problem.filter_layout,
                problem.epilogue.activation,
            ));
            let with_bias = rng.random_bool(0.5);
            let case = Case::random(&mut rng, problem, with_bias);
            problems += 1;
            let splits = rng.random_range(1..=3);
            let plans = [
                Plan::for_spec(&problem, *spec).and_then(|p| p.with_split(splits)),
                engine.plan(&problem),
            ];
            for plan in plans {
                let layout = Layout::varied(runs);
                let name = plan.as_ref().map(|p| p.kernel().name()).unwrap_or_default();
                let outcome = plan
                    .map_err(|e| e.to_string())
                    .and_then(|plan| run_case(&engine, &plan, &case, &layout));
                let err = failures.check(
                    || {
                        format!(
                            "{name} (splits {splits}) on {} ({layout:?})",
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
    summary(
        TEST,
        &format!(
            "{problems} problems over {simt_count} float32 kernels, {runs} runs, {} (layout, \
             filter layout, activation) combinations, worst relative error {worst:.2e} (seed \
             {seed})",
            seen.len(),
        ),
    );
    failures.assert_none(TEST);
    if !small() {
        assert!(problems >= 300, "only {problems} problems");
        assert_eq!(seen.len(), 2 * 2 * 5, "a combination was never drawn");
    }
}

/// Runs without a GPU: the problems that [`tensor_op_kernels_match_the_oracle`] draws for
/// each tensor-core kernel of the default catalogue are valid, in the kernel's type, layout
/// and filter layout, and the kernel can be forced on them; and the CPU backend on the same
/// typed data (float32 arithmetic, each output rounded to the type) is within the GPU tests'
/// limits of the oracle, so that a GPU failure is the kernel's, not the test's.
#[test]
fn tensor_op_cases_are_valid_and_the_limits_hold_on_the_cpu() {
    const TEST: &str = "tensor_op_cases_are_valid_and_the_limits_hold_on_the_cpu";
    let mut rng = StdRng::seed_from_u64(test_seed(20_261_206));
    let catalogue = im2win::codegen::Catalogue::default_catalogue();
    let mut worst = [0.0_f64; 3];
    let mut problems = 0;
    for spec in catalogue
        .kernels
        .iter()
        .filter(|s| s.math == Math::TensorOp)
    {
        for i in 0..2 {
            let problem = tensor_op_problem(&mut rng, spec, i == 1, im2win::Layout::ALL[i]);
            Plan::for_spec(&problem, *spec).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(problem.dtype, spec.dtype);
            let tolerance = tensor_op_tolerance(spec.dtype);
            let err = match spec.dtype {
                DType::Bf16 => cpu_error::<bf16>(&mut rng, problem),
                DType::F16 => cpu_error::<f16>(&mut rng, problem),
                DType::F32 => cpu_error::<f32>(&mut rng, problem),
            };
            assert!(
                err <= tolerance,
                "{spec} on {}: {err:e}",
                describe(&problem)
            );
            let index = TensorOpTally::index(spec.dtype);
            worst[index] = worst[index].max(err);
            problems += 1;
        }
    }
    summary(
        TEST,
        &format!(
            "{problems} problems; the CPU backend's worst error bf16 {:.2e}, f16 {:.2e}, tf32 {:.2e}",
            worst[0], worst[1], worst[2]
        ),
    );
}

/// The CPU backend's relative error on a random typed case of `problem`.
fn cpu_error<T: Element>(rng: &mut StdRng, problem: Conv2dProblem) -> f64 {
    let case = TypedCase::<T>::random(rng, problem, true);
    let shape = problem.shape().unwrap();
    let mut out = vec![T::from_f32(0.0); shape.output_len];
    im2win::cpu::conv2d_with_residual(
        &problem,
        &case.input,
        &case.filter,
        case.bias.as_deref(),
        case.residual.as_deref(),
        &mut out,
    )
    .unwrap();
    im2win::cpu::relative_error(&out, &case.reference)
}

/// Prepared filters (`Engine::prepare_filter`, `Engine::conv2d_prepared`): on problems that
/// dispatch runs with each filter form (the fused and the materialised SIMT transforms, a
/// tensor-core kernel's KRSC copy of a KRSC filter and KRSC transpose of a KCRS one, split
/// and unsplit), the prepared call writes exactly the output of the unprepared one (the same
/// kernel reading the same bits), with the original filter freed before it runs; its plan
/// needs no more workspace (none for the filter); another batch size with the same filter
/// reuses it when its plan reads the same form and is refused
/// (`Error::PreparedFilterMismatch`) otherwise; a problem with another filter is refused.
#[test]
fn prepared_filters_match_the_unprepared_call() {
    const TEST: &str = "prepared_filters_match_the_unprepared_call";
    let Some(engine) = engine(TEST) else { return };
    let seed = test_seed(8_008);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut failures = Failures::default();
    let nchw = |input, filter| Conv2dProblem::new(input, filter);
    let tc = |dtype: DType, input, filter, layout: im2win::Layout, filter_layout| {
        let precision = if dtype == DType::F32 {
            im2win::Precision::Tf32
        } else {
            im2win::Precision::Strict
        };
        Conv2dProblem::new(input, filter)
            .with_dtype(dtype)
            .with_precision(precision)
            .with_layout(layout)
            .with_filter_layout(filter_layout)
    };
    let problems = [
        nchw([2, 16, 20, 20], [24, 16, 3, 3]).with_padding(Padding::uniform(1)),
        nchw([1, 64, 14, 14], [96, 64, 1, 1]).with_stride([2, 2]),
        nchw([1, 256, 7, 7], [64, 256, 3, 3]).with_padding(Padding::uniform(1)),
        tc(
            DType::Bf16,
            [2, 32, 12, 12],
            [40, 32, 3, 3],
            im2win::Layout::Nhwc,
            FilterLayout::Krsc,
        ),
        tc(
            DType::Bf16,
            [1, 64, 9, 9],
            [72, 64, 3, 3],
            im2win::Layout::Nchw,
            FilterLayout::Kcrs,
        ),
        tc(
            DType::F16,
            [1, 512, 7, 7],
            [64, 512, 1, 1],
            im2win::Layout::Nhwc,
            FilterLayout::Kcrs,
        ),
        tc(
            DType::F32,
            [2, 24, 10, 10],
            [32, 24, 3, 3],
            im2win::Layout::Nchw,
            FilterLayout::Krsc,
        )
        .with_padding(Padding::uniform(1)),
    ];
    // Dispatch picks the fused (window-gathering) SIMT kernels for the FP32 problems above on
    // an H200, so the materialised-buffer kernels' window form is forced on one more problem:
    // the first non-fused FP32 NCHW kernel of the catalogue that implements it.
    let window_problem = nchw([2, 16, 20, 20], [24, 16, 3, 3]).with_padding(Padding::uniform(1));
    let window_kernel = engine
        .kernels()
        .catalogue()
        .kernels
        .iter()
        .find(|spec| {
            !spec.variant.fused
                && spec.math == Math::Simt
                && Plan::for_spec(&window_problem, **spec).is_ok()
        })
        .copied();
    if window_kernel.is_none() {
        failures.push("no non-fused FP32 kernel implements the window-form problem".into());
    }
    let cases = problems
        .into_iter()
        .map(|problem| (problem, None))
        .chain(window_kernel.map(|spec| (window_problem, Some(spec))));
    let mut formats = Vec::new();
    let mut reused = 0;
    let mut refused = 0;
    for (problem, spec) in cases {
        let problem = problem.with_epilogue(random_epilogue(&mut rng));
        let outcome = match problem.dtype {
            DType::Bf16 => prepared_case::<bf16>(&engine, problem, spec, &mut rng),
            DType::F16 => prepared_case::<f16>(&engine, problem, spec, &mut rng),
            DType::F32 => prepared_case::<f32>(&engine, problem, spec, &mut rng),
        };
        match outcome {
            Ok((format, reuse)) => {
                formats.push(format);
                reused += usize::from(reuse);
                refused += usize::from(!reuse);
            }
            Err(why) => failures.push(format!("{}: {why}", describe(&problem))),
        }
    }
    let kinds: std::collections::HashSet<_> = formats.iter().collect();
    if kinds.len() < 3 {
        failures.push(format!("only the filter forms {formats:?} were prepared"));
    }
    summary(
        TEST,
        &format!(
            "{} problems, forms {formats:?}; another batch reused the prepared filter {reused} \
             times and was refused {refused} times (another form) (seed {seed})",
            formats.len()
        ),
    );
    failures.assert_none(TEST);
}

/// One problem of [`prepared_filters_match_the_unprepared_call`]: the form prepared, and
/// whether batch N + 1 reused it.
fn prepared_case<T: Element>(
    engine: &Engine,
    problem: Conv2dProblem,
    spec: Option<KernelSpec>,
    rng: &mut StdRng,
) -> Result<(im2win::FilterFormat, bool), String> {
    let e = |err: im2win::Error| err.to_string();
    let d = |err: cudarc::driver::DriverError| err.to_string();
    let stream = engine.stream();
    let shape = problem.shape().map_err(e)?;
    let data = |rng: &mut StdRng, len: usize| -> Vec<T> {
        (0..len)
            .map(|_| T::from_f32(rng.random_range(-1.0..1.0)))
            .collect()
    };
    let x = stream.clone_htod(&data(rng, shape.input_len)).map_err(d)?;
    let host_filter = data(rng, shape.filter_len);
    let f = stream.clone_htod(&host_filter).map_err(d)?;
    let b = stream.clone_htod(&data(rng, shape.output[1])).map_err(d)?;
    let residual = stream.clone_htod(&data(rng, shape.output_len)).map_err(d)?;
    let res = problem
        .epilogue
        .residual
        .then_some(&residual as &dyn DevicePtr<T>);
    let plan = match spec {
        Some(spec) => Plan::for_spec(&problem, spec).map_err(e)?,
        None => engine.plan(&problem).map_err(e)?,
    };
    let mut expected = stream.alloc_zeros::<T>(shape.output_len).map_err(d)?;
    engine
        .conv2d_with_residual(&plan, &x, &f, Some(&b), res, &mut expected, None)
        .map_err(e)?;
    let prepared = match spec {
        Some(_) => engine.prepare_filter_for(&plan, &f).map_err(e)?,
        None => engine.prepare_filter(&problem, &f).map_err(e)?,
    };
    drop(f);
    let prepared_plan = plan.clone().with_prepared_filter().map_err(e)?;
    if prepared_plan.workspace_bytes() > plan.workspace_bytes()
        || prepared_plan.transforms_filter()
        || prepared.plan() != &prepared_plan
    {
        return Err(format!("prepared plan {prepared_plan:?} against {plan:?}"));
    }
    // A caller's workspace of exactly the prepared plan's size (none when it is 0).
    let mut ws = stream
        .alloc_zeros::<u8>(prepared_plan.workspace_bytes().max(256))
        .map_err(d)?;
    let mut got = stream
        .clone_htod(&vec![T::from_f32(f32::NAN); shape.output_len])
        .map_err(d)?;
    let workspace =
        (prepared_plan.workspace_bytes() > 0).then_some(&mut ws as &mut dyn DevicePtrMut<u8>);
    engine
        .conv2d_prepared(&problem, &x, &prepared, Some(&b), res, &mut got, workspace)
        .map_err(e)?;
    let (want, have) = (
        stream.clone_dtoh(&expected).map_err(d)?,
        stream.clone_dtoh(&got).map_err(d)?,
    );
    let bits = |v: &[T]| v.iter().map(|x| x.to_f32().to_bits()).collect::<Vec<_>>();
    if bits(&want) != bits(&have) {
        return Err(format!(
            "prepared output differs from the unprepared one ({})",
            plan.kernel()
        ));
    }
    // Batch N + 1, the same filter: reused when its plan reads the same form.
    let mut more = problem;
    more.input[0] += 1;
    let more_shape = more.shape().map_err(e)?;
    let x2 = stream
        .clone_htod(&data(rng, more_shape.input_len))
        .map_err(d)?;
    let r2 = stream
        .clone_htod(&data(rng, more_shape.output_len))
        .map_err(d)?;
    let res2 = more.epilogue.residual.then_some(&r2 as &dyn DevicePtr<T>);
    let mut y2 = stream.alloc_zeros::<T>(more_shape.output_len).map_err(d)?;
    let same_form = engine.plan(&more).map_err(e)?.filter_format() == prepared.format();
    match engine.conv2d_prepared(&more, &x2, &prepared, Some(&b), res2, &mut y2, None) {
        Ok(()) if same_form => {
            let f_again = stream.clone_htod(&host_filter).map_err(d)?;
            let mut y3 = stream.alloc_zeros::<T>(more_shape.output_len).map_err(d)?;
            let plan2 = engine.plan(&more).map_err(e)?;
            engine
                .conv2d_with_residual(&plan2, &x2, &f_again, Some(&b), res2, &mut y3, None)
                .map_err(e)?;
            let (a, b) = (
                stream.clone_dtoh(&y2).map_err(d)?,
                stream.clone_dtoh(&y3).map_err(d)?,
            );
            if bits(&a) != bits(&b) {
                return Err("batch N + 1 with the prepared filter differs".into());
            }
        }
        Err(im2win::Error::PreparedFilterMismatch { .. }) if !same_form => {}
        other => return Err(format!("batch N + 1 (same form: {same_form}): {other:?}")),
    }
    // Another filter (one more output channel) is refused.
    let mut other = problem;
    other.filter[0] += 1;
    let other_shape = other.shape().map_err(e)?;
    let mut y4 = stream.alloc_zeros::<T>(other_shape.output_len).map_err(d)?;
    let r4 = stream
        .clone_htod(&data(rng, other_shape.output_len))
        .map_err(d)?;
    let res4 = other.epilogue.residual.then_some(&r4 as &dyn DevicePtr<T>);
    let b4 = stream
        .clone_htod(&data(rng, other_shape.output[1]))
        .map_err(d)?;
    match engine.conv2d_prepared(&other, &x, &prepared, Some(&b4), res4, &mut y4, None) {
        Err(im2win::Error::PreparedFilterMismatch { .. }) => {}
        other => return Err(format!("another filter: {other:?}")),
    }
    Ok((prepared.format(), same_form))
}

/// Every TF32 tensor-core kernel of the catalogue multiplies operands rounded to TF32 to
/// nearest, not truncated: the warp MMA's kernels round in registers (`cvt.rna.tf32.f32`),
/// the warpgroup MMA's TMA kernels through their TFLOAT32 tensor maps (`runtime/src/gpu/tma.rs`),
/// where the tensor cores alone would drop the low 13 bits. Each input value is
/// `1 + 2^-11 + 2^-12` (to nearest TF32: `1 + 2^-10`; truncated: 1) against a filter of ones,
/// so every output is `C·R·S·(1 + 2^-10)` exactly when the operands were rounded and `C·R·S`
/// when they were truncated.
#[test]
fn tf32_kernels_round_their_operands() {
    const TEST: &str = "tf32_kernels_round_their_operands";
    let Some(engine) = engine(TEST) else { return };
    let stream = engine.stream().clone();
    let value = 1.0f32 + 2f32.powi(-11) + 2f32.powi(-12);
    let mut failures = Failures::default();
    let mut ran = 0;
    for spec in engine.kernels().catalogue().kernels.iter() {
        if spec.dtype != DType::F32 || spec.math != Math::TensorOp {
            continue;
        }
        // A layer every such kernel runs: C a multiple of every kernel's channel step, the
        // kernel's own filter (or 3 x 3), one image, no padding.
        let (r, s, sh, sw) = match spec.geometry {
            Geometry::Fixed(g) => (
                g.filter_h as usize,
                g.filter_w as usize,
                g.stride_h as usize,
                g.stride_w as usize,
            ),
            Geometry::Generic => (3, 3, 1, 1),
        };
        let c = 64;
        let input = [1, c, (8 - 1) * sh + r, (8 - 1) * sw + s];
        let problem = Conv2dProblem::new(input, [128, c, r, s])
            .with_stride([sh, sw])
            .with_dtype(DType::F32)
            .with_precision(im2win::Precision::Tf32)
            .with_layout(im2win::Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc);
        let plan = match Plan::for_spec(&problem, *spec) {
            Ok(plan) => plan,
            Err(e) => {
                failures.push(format!("{spec} refused {}: {e}", describe(&problem)));
                continue;
            }
        };
        let outcome = (|| -> Result<Vec<f32>, String> {
            let x = stream
                .clone_htod(&vec![value; input.iter().product()])
                .map_err(|e| e.to_string())?;
            let f = stream
                .clone_htod(&vec![1.0f32; 128 * c * r * s])
                .map_err(|e| e.to_string())?;
            let mut y = stream
                .alloc_zeros::<f32>(
                    problem
                        .output_shape()
                        .map_err(|e| e.to_string())?
                        .iter()
                        .product(),
                )
                .map_err(|e| e.to_string())?;
            engine
                .conv2d_with(&plan, &x, &f, None, &mut y, None)
                .map_err(|e| e.to_string())?;
            stream.clone_dtoh(&y).map_err(|e| e.to_string())
        })();
        ran += 1;
        let taps = (c * r * s) as f32;
        let rounded = taps * (1.0 + 2f32.powi(-10));
        match outcome {
            Ok(y) => {
                if let Some(bad) = y.iter().find(|&&v| v != rounded) {
                    let how = if *bad == taps {
                        "truncated"
                    } else {
                        "neither rounded nor truncated"
                    };
                    failures.push(format!(
                        "{spec}: an output is {bad}, not {rounded} (operands {how})"
                    ));
                }
            }
            Err(e) => failures.push(format!("{spec}: {e}")),
        }
    }
    summary(TEST, &format!("{ran} TF32 kernels"));
    failures.assert_none(TEST);
}
