//! Property tests of the public API on the CPU (no GPU needed; they run in CI).
//!
//! - Problems with arbitrary fields, from 0 to `usize::MAX` (powers of two ± 1, the
//!   validation limits, products past 2^60 and 2^64): `shape`, `validate`, `output_shape`,
//!   `workspace_bytes`, `flops`, `ConvParams`, `Plan::new` and `Plan::for_spec` agree with
//!   the independent u128 model of the fuzz target (`fuzz/src/lib.rs`), on the default
//!   catalogue and on arbitrary (also invalid) ones.
//! - The committed fuzz corpus replayed through the same checks.
//! - The CPU backend against the float64 oracle on small valid problems.
//! - The CPU functions with buffers of any length: the right answer or the right `Error`,
//!   never a panic; huge problems are rejected (or fail to allocate) without hanging.
//!
//! Each prints an `im2win-summary:` line with what its cases reached. The seed is fixed
//! (`IM2WIN_TEST_SEED` draws other cases).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::strategies::{
    Bounds, Len, Tally, any_problem, any_spec, bounded_problem, check_property, extreme,
    first_wrong, is_buffer_error,
};
use common::{Case, Layout, check_output, model, summary};
use im2win::codegen::{Catalogue, DType, KernelSpec, TileConfig};
use im2win::{Conv2dProblem, Error, Padding, ProblemShape};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

/// Problems the CPU runs in a moment (not all valid).
fn small_problem() -> impl Strategy<Value = Conv2dProblem> {
    bounded_problem(Bounds::CPU)
}

/// Runs `f`, failing the case if it panics.
fn no_panic<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, TestCaseError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|panic| {
        let why = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("?");
        TestCaseError::fail(format!("{what} panicked: {why}"))
    })
}

fn fail(why: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(why.to_string())
}

/// The name of an error's variant, for the tallies.
fn kind(err: &Error) -> &'static str {
    match err {
        Error::ZeroSize { .. } => "ZeroSize",
        Error::TooLarge { .. } => "TooLarge",
        Error::GroupsUnsupported { .. } => "GroupsUnsupported",
        Error::BadGroups { .. } => "BadGroups",
        Error::ChannelMismatch { .. } => "ChannelMismatch",
        Error::FilterLargerThanInput { .. } => "FilterLargerThanInput",
        Error::BufferLength { .. } => "BufferLength",
        Error::OutOfMemory { .. } => "OutOfMemory",
        Error::NoKernel { .. } => "NoKernel",
        Error::InvalidSpec(_) => "InvalidSpec",
        Error::SpecMismatch { .. } => "SpecMismatch",
        _ => "other error",
    }
}

fn default_catalogue() -> Catalogue {
    im2win::kernels().catalogue().clone()
}

/// Validation, sizes, `ConvParams`, dispatch on the default catalogue (132 SMs and any
/// count) and forced plans agree with the model, for any field values.
#[test]
fn problem_queries_match_the_model() {
    const TEST: &str = "problem_queries_match_the_model";
    let catalogue = default_catalogue();
    let tally = Tally::default();
    let strategy = (any_problem(), extreme(), any_spec());
    check_property(TEST, 6_000, strategy, |(problem, multiprocessors, spec)| {
        let input = model::Input {
            problem,
            multiprocessors,
            spec,
        };
        no_panic("the model checks", || model::check(&input, &catalogue))?;
        match problem.shape() {
            Ok(_) => tally.add("valid"),
            Err(err) => tally.add(kind(&err)),
        }
        Ok(())
    });
    summary(TEST, &tally.to_string());
    assert!(tally.get("valid") >= 300, "too few valid problems: {tally}");
    assert!(
        tally.get("TooLarge") >= 300,
        "too few oversized problems: {tally}"
    );
}

/// Dispatch from arbitrary catalogues (invalid specs, duplicates, no generic kernel,
/// enormous tiles): a plan that the model accepts, or the right error, never a panic.
#[test]
fn dispatch_on_arbitrary_catalogues() {
    const TEST: &str = "dispatch_on_arbitrary_catalogues";
    let tally = Tally::default();
    let strategy = (
        prop_oneof![small_problem(), any_problem()],
        prop::collection::vec(any_spec(), 0..6),
        extreme(),
    );
    check_property(
        TEST,
        2_000,
        strategy,
        |(problem, kernels, multiprocessors)| {
            let catalogue = Catalogue {
                kernels,
                ..Catalogue::default()
            };
            no_panic("dispatch", || {
                model::check_dispatch(&problem, &catalogue, multiprocessors);
            })?;
            match im2win::Plan::new(&problem, &catalogue, multiprocessors) {
                Ok(_) => tally.add("planned"),
                Err(err) => tally.add(kind(&err)),
            }
            Ok(())
        },
    );
    summary(TEST, &tally.to_string());
    assert!(tally.get("planned") >= 100, "too few plans: {tally}");
}

/// The CPU backend against the float64 oracle: relative error below 1e-5, or below 1e-7
/// of `‖|F| ∗ |X| + |bias|‖` where the terms cancel (the bound of tests/common); every
/// output written; the layouts of the documented sizes.
#[test]
fn cpu_backend_matches_the_oracle() {
    const TEST: &str = "cpu_backend_matches_the_oracle";
    let worst = std::cell::Cell::new(0.0_f64);
    let strategy = (
        small_problem().prop_filter("valid", |p| p.validate().is_ok()),
        any::<bool>(),
        any::<u64>(),
    );
    check_property(TEST, 400, strategy, |(problem, with_bias, seed)| {
        let shape = problem.shape().unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        let case = Case::random(&mut rng, problem, with_bias);
        let mut out = vec![f32::NAN; shape.output_len];
        no_panic("cpu::conv2d", || {
            let bias = case.bias.as_deref();
            im2win::cpu::conv2d(&problem, &case.input, &case.filter, bias, &mut out)
        })?
        .map_err(fail)?;
        let layout = Layout {
            offset: 0,
            guard: 0,
            own_workspace: false,
            other_stream: false,
        };
        let err = check_output(&out, &layout, shape.output_len, &case)
            .map_err(|e| fail(format!("{problem:?}: {e}")))?;
        worst.set(worst.get().max(err));
        let t = im2win::cpu::im2win_input(&problem, &case.input).map_err(fail)?;
        prop_assert_eq!(t.len(), shape.im2win_len);
        let ft = im2win::cpu::im2win_filter(&problem, &case.filter).map_err(fail)?;
        prop_assert_eq!(ft.len(), shape.filter_len);
        Ok(())
    });
    summary(
        TEST,
        &format!("400 problems, worst relative error {:.2e}", worst.get()),
    );
}

/// The largest buffer the wrong-length tests allocate, in elements.
const MAX_BUFFER: usize = 1 << 20;

/// Whether running the problem on the CPU costs at most a few million operations.
fn cheap(shape: &ProblemShape) -> bool {
    let small = 1 << 22;
    shape.im2win_len <= small
        && shape.output_len.saturating_mul(shape.reduction) <= small
        && shape.output[1].div_ceil(8) * 8 * shape.reduction <= small
}

/// Whether `bytes` can never be allocated (past the 47-bit user address space of x86-64 and
/// the 48-bit one of aarch64), so that asking for it is a safe way to provoke the error.
fn hopeless(bytes: u128) -> bool {
    bytes >= 1 << 50
}

fn is_host_oom(err: &Error, what: &str) -> bool {
    matches!(err, Error::OutOfMemory { what: w, on_device: false, .. } if *w == what)
}

/// `cpu::conv2d`, `reference_conv2d`, `im2win_input` and `im2win_filter` with buffers of
/// any length, on any problem: the problem's own error, `BufferLength` for the first wrong
/// buffer (the output untouched), `OutOfMemory` for a derived buffer that cannot exist, or a
/// correct result. Never a panic. Calls that would merely be slow (a valid problem with
/// right buffers and a large im2win buffer) are left out.
#[test]
fn cpu_functions_with_any_buffers() {
    const TEST: &str = "cpu_functions_with_any_buffers";
    let tally = Tally::default();
    let strategy = (
        prop_oneof![2 => small_problem(), 1 => any_problem()],
        prop::array::uniform4(Len::strategy()),
        any::<bool>(),
    );
    check_property(TEST, 1_500, strategy, |(problem, lens, with_bias)| {
        let shape = problem.shape();
        let ok = shape.as_ref().ok();
        let [x_len, f_len, b_len, y_len] = [
            lens[0].resolve(ok.map(|s| s.input_len), MAX_BUFFER),
            lens[1].resolve(ok.map(|s| s.filter_len), MAX_BUFFER),
            lens[2].resolve(ok.map(|s| s.output[1]), MAX_BUFFER),
            lens[3].resolve(ok.map(|s| s.output_len), MAX_BUFFER),
        ];
        let x = vec![0.5_f32; x_len];
        let f = vec![-0.25_f32; f_len];
        let b = vec![1.0_f32; b_len];
        let bias = with_bias.then_some(&b[..]);
        let poison = f32::from_bits(0x7FC0_DEAD);
        let mut y = vec![poison; y_len];
        let untouched = |y: &[f32]| y.iter().all(|v| v.to_bits() == poison.to_bits());
        let bias_ok = |s: &ProblemShape| !with_bias || b_len == s.output[1];

        let conv = no_panic("cpu::conv2d", || match ok {
            Some(s)
                if [s.input_len, s.filter_len, s.output_len] == [x_len, f_len, y_len]
                    && bias_ok(s)
                    && !cheap(s)
                    && !hopeless(s.im2win_len as u128 * 4) =>
            {
                None
            }
            _ => Some(im2win::cpu::conv2d(&problem, &x, &f, bias, &mut y)),
        })?;
        let reference = no_panic("cpu::reference_conv2d", || match ok {
            Some(s)
                if [s.input_len, s.filter_len] == [x_len, f_len]
                    && bias_ok(s)
                    && !cheap(s)
                    && !hopeless(s.output_len as u128 * 8) =>
            {
                None
            }
            _ => Some(im2win::cpu::reference_conv2d(&problem, &x, &f, bias)),
        })?;
        let t = no_panic("cpu::im2win_input", || match ok {
            Some(s)
                if s.input_len == x_len
                    && s.im2win_len > 1 << 22
                    && !hopeless(s.im2win_len as u128 * 4) =>
            {
                None
            }
            _ => Some(im2win::cpu::im2win_input(&problem, &x)),
        })?;
        let ft = no_panic("cpu::im2win_filter", || {
            im2win::cpu::im2win_filter(&problem, &f)
        })?;

        let Some(s) = ok else {
            // An invalid problem: every function reports the problem's own error.
            let reason = shape.as_ref().unwrap_err().to_string();
            for (what, got) in [
                ("conv2d", conv.map(|r| r.map(|_| ()))),
                ("reference_conv2d", reference.map(|r| r.map(|_| ()))),
                ("im2win_input", t.map(|r| r.map(|_| ()))),
                ("im2win_filter", Some(ft.map(|_| ()))),
            ] {
                let got = got.expect("always run on invalid problems");
                prop_assert_eq!(
                    got.map_err(|e| e.to_string()),
                    Err(reason.clone()),
                    "{}",
                    what
                );
            }
            prop_assert!(untouched(&y));
            tally.add("invalid problems");
            return Ok(());
        };

        let bias_check = with_bias.then_some(("bias", s.output[1], b_len));
        let operands: Vec<_> = [
            ("input", s.input_len, x_len),
            ("filter", s.filter_len, f_len),
        ]
        .into_iter()
        .chain(bias_check)
        .collect();
        let with_output: Vec<_> = operands
            .iter()
            .copied()
            .chain([("output", s.output_len, y_len)])
            .collect();

        match conv {
            None => tally.add("conv2d left out (slow)"),
            Some(conv) => match first_wrong(&with_output) {
                Some(wrong) => {
                    let err = conv.expect_err("conv2d accepted a wrong buffer");
                    prop_assert!(is_buffer_error(&err, wrong), "{err} for {wrong:?}");
                    prop_assert!(untouched(&y));
                    tally.add("conv2d wrong buffers");
                }
                None if cheap(s) => {
                    conv.map_err(fail)?;
                    prop_assert!(y.iter().all(|v| v.is_finite()), "output not all written");
                    tally.add("conv2d computed");
                }
                None => {
                    let err = conv.expect_err("conv2d allocated an impossible im2win buffer");
                    prop_assert!(is_host_oom(&err, "im2win buffer"), "{err}");
                    prop_assert!(untouched(&y));
                    tally.add("conv2d out of memory");
                }
            },
        }
        if let Some(reference) = reference {
            match first_wrong(&operands) {
                Some(wrong) => {
                    let err = reference.expect_err("the oracle accepted a wrong buffer");
                    prop_assert!(is_buffer_error(&err, wrong), "{err} for {wrong:?}");
                }
                None if cheap(s) => {
                    let out = reference.map_err(fail)?;
                    prop_assert_eq!(out.len(), s.output_len);
                }
                None => {
                    let err = reference.expect_err("the oracle allocated an impossible output");
                    prop_assert!(is_host_oom(&err, "output"), "{err}");
                    tally.add("oracle out of memory");
                }
            }
        }
        if let Some(t) = t {
            match first_wrong(&operands[..1]) {
                Some(wrong) => prop_assert!(t.is_err_and(|e| is_buffer_error(&e, wrong))),
                None if s.im2win_len <= 1 << 22 => {
                    prop_assert_eq!(t.map_err(fail)?.len(), s.im2win_len);
                }
                None => {
                    prop_assert!(t.is_err_and(|e| is_host_oom(&e, "im2win buffer")));
                    tally.add("im2win_input out of memory");
                }
            }
        }
        match first_wrong(&operands[1..2]) {
            Some(wrong) => prop_assert!(ft.is_err_and(|e| is_buffer_error(&e, wrong))),
            None => prop_assert_eq!(ft.map_err(fail)?.len(), s.filter_len),
        }
        Ok(())
    });
    summary(TEST, &tally.to_string());
    assert!(tally.get("conv2d computed") >= 100, "{tally}");
    assert!(tally.get("conv2d wrong buffers") >= 100, "{tally}");
}

/// Edge inputs that once panicked or misbehaved, checked deterministically (the release
/// build that CI runs has no overflow checks, so each is one that fails there too).
#[test]
fn dispatch_regressions() {
    let problem = Conv2dProblem::new([2, 3, 8, 8], [4, 3, 3, 3]).with_padding(Padding::uniform(1));
    let catalogue = default_catalogue();
    // Any multiprocessor count: 2^63 · (blocks per SM) wrapped to 0 slots, then divided.
    for sms in [
        0,
        1,
        132,
        1 << 32,
        1 << 62,
        1 << 63,
        usize::MAX - 1,
        usize::MAX,
    ] {
        let plan = no_panic("Plan::new", || im2win::Plan::new(&problem, &catalogue, sms));
        assert!(matches!(plan, Ok(Ok(_))), "{sms} SMs: {plan:?}");
        model::check_dispatch(&problem, &catalogue, sms);
    }
    // A tile with a zero thread dimension: `threads()` divided by it while estimating.
    let broken = KernelSpec::generic(
        DType::F32,
        TileConfig {
            thread_m: 0,
            ..TileConfig::PAPER
        },
    );
    let with_broken = Catalogue {
        kernels: vec![broken],
        ..Catalogue::default()
    };
    let plan = no_panic("Plan::new", || {
        im2win::Plan::new(&problem, &with_broken, 132)
    });
    assert!(matches!(plan, Ok(Err(Error::InvalidSpec(_)))), "{plan:?}");
    let plan = no_panic("Plan::for_spec", || {
        im2win::Plan::for_spec(&problem, broken)
    });
    assert!(matches!(plan, Ok(Err(Error::InvalidSpec(_)))), "{plan:?}");
    // Shared memory 8·block_k·(block_m + block_n) = 2^66 wrapped to 0 in u64, so this
    // nesting tile of 64 threads passed validation.
    let wrapped = TileConfig {
        block_m: 1 << 31,
        block_n: 1 << 31,
        block_k: 1 << 31,
        thread_m: 1 << 27,
        thread_n: 1 << 29,
    };
    assert!(wrapped.validate().is_err(), "{wrapped:?} accepted");
    // Thread counts and stage sizes past u32 (threads (2^20)^2, block_m·block_k = 2^40).
    for tile in [
        TileConfig {
            block_m: 1 << 20,
            block_n: 1 << 20,
            block_k: 8,
            thread_m: 1,
            thread_n: 1,
        },
        TileConfig {
            block_m: 1 << 20,
            block_n: 32,
            block_k: 1 << 20,
            thread_m: 1 << 20,
            thread_n: 1,
        },
    ] {
        let result = no_panic("TileConfig::validate", || tile.validate());
        assert!(matches!(result, Ok(Err(_))), "{tile:?}: {result:?}");
    }
}

/// Valid problems whose derived buffers cannot exist, from operands of a few bytes: each CPU
/// function returns `OutOfMemory` at once instead of aborting the process (as `vec!` did),
/// and leaves the output untouched.
#[test]
fn impossible_derived_buffers_are_errors() {
    // 1×1 input padded to 2^30 × 2^29 outputs: T and the output have 2^59 elements each.
    let wide = Conv2dProblem::new([1, 1, 1, 1], [1, 1, 1, 1]).with_padding(Padding {
        top: (1 << 29) - 1,
        bottom: 1 << 29,
        left: (1 << 28) - 1,
        right: 1 << 28,
    });
    let shape = wide.shape().unwrap();
    assert_eq!(shape.output_len, 1 << 59);
    assert_eq!(shape.im2win_len, 1 << 59);
    let err = im2win::cpu::im2win_input(&wide, &[1.0]).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { what: "im2win buffer", bytes, on_device: false } if bytes == 1 << 61),
        "{err}"
    );
    let err = im2win::cpu::reference_conv2d(&wide, &[1.0], &[1.0], None).unwrap_err();
    assert!(
        matches!(err, Error::OutOfMemory { what: "output", bytes, on_device: false } if bytes == 1 << 62),
        "{err}"
    );
    assert!(err.to_string().contains("out of host memory"), "{err}");

    // Two outputs whose windows are 2^30 columns apart, with a 2^20-tall filter: the im2win
    // buffer has (2^30 + 1)·2^20 elements though every operand is at most 4 MiB.
    let sparse = Conv2dProblem::new([1, 1, 1, 1], [1, 1, 1 << 20, 1])
        .with_stride([1, 1 << 30])
        .with_padding(Padding {
            top: (1 << 20) - 1,
            bottom: 0,
            left: 0,
            right: 1 << 30,
        });
    let shape = sparse.shape().unwrap();
    assert_eq!(shape.output, [1, 1, 1, 2]);
    assert_eq!(shape.im2win_len, ((1 << 30) + 1) << 20);
    let filter = vec![1.0_f32; shape.filter_len];
    let mut out = [f32::NAN; 2];
    // The backend never builds all of T, only per-thread strips of its rows; here one row
    // of T is already (2^30 + 1)·2^20 floats, so the strip is what cannot be allocated.
    let err = im2win::cpu::conv2d(&sparse, &[1.0], &filter, None, &mut out).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfMemory {
                what: "strip",
                on_device: false,
                ..
            }
        ),
        "{err}"
    );
    assert!(out.iter().all(|v| v.is_nan()), "the output was written");
}

/// Every file of the committed fuzz corpus (`fuzz/corpus/validate_plan`) through the fuzz
/// target's checks, so that what the fuzzer once found stays fixed, on stable Rust.
#[test]
fn fuzz_corpus_replays_cleanly() {
    const TEST: &str = "fuzz_corpus_replays_cleanly";
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/validate_plan");
    let catalogue = default_catalogue();
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    paths.sort();
    let tally = Tally::default();
    for path in &paths {
        let data = std::fs::read(path).unwrap();
        let input = model::decode(&data);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| model::check(&input, &catalogue))) {
            panic!(
                "corpus file {} ({input:?}) fails: {panic:?}",
                path.display()
            );
        }
        match input.problem.shape() {
            Ok(_) => tally.add("valid"),
            Err(err) => tally.add(kind(&err)),
        }
    }
    assert!(!paths.is_empty(), "no corpus files in {}", dir.display());
    summary(TEST, &format!("{} corpus inputs: {tally}", paths.len()));
}

/// Dispatch of random bf16, f16 and TF32 problems (NHWC tensors, KRSC filter) on the
/// default catalogue: a tensor-core kernel of the problem's type that can run it, with
/// vector loads exactly when `C` is a multiple of the 16-byte piece (aligned operands),
/// element-wise when the operands are not aligned; the launch shape and workspace of the
/// design (a 1-D grid of pixel tiles × channel tiles, 128 threads, the stages in dynamic
/// shared memory, no split, no workspace); the same plan when asked twice. The same problem
/// in NCHW with a KCRS filter runs the same family on channels-last copies.
#[test]
fn tensor_op_dispatch_on_random_problems() {
    use im2win::codegen::Math;
    use im2win::gpu::{OPERAND_ALIGNMENT, can_implement};
    use im2win::{DeviceLimits, FilterLayout, Layout, Plan, Precision};
    const TEST: &str = "tensor_op_dispatch_on_random_problems";
    let catalogue = default_catalogue();
    if !catalogue.kernels.iter().any(|k| k.math == Math::TensorOp) {
        summary(TEST, "SKIPPED: built without tensor-core kernels");
        return;
    }
    let tally = Tally::default();
    let numerics = prop::sample::select(vec!["bf16", "f16", "tf32"]);
    let strategy = (bounded_problem(Bounds::WIDE), numerics, any::<bool>());
    check_property(TEST, 2_000, strategy, |(problem, numeric, aligned)| {
        let (dtype, precision) = Precision::from_numeric_name(numeric).unwrap();
        let problem = problem
            .with_dtype(dtype)
            .with_precision(precision)
            .with_layout(Layout::Nhwc)
            .with_filter_layout(FilterLayout::Krsc);
        let Ok(shape) = problem.shape() else {
            tally.add("invalid");
            return Ok(());
        };
        let aligned_to = if aligned { OPERAND_ALIGNMENT } else { 2 };
        let device = DeviceLimits::H200;
        let plan = no_panic("Plan::for_operands", || {
            Plan::for_operands(&problem, &catalogue, &device, aligned_to)
        })?;
        let plan = match plan {
            Ok(plan) => plan,
            Err(err) => return Err(TestCaseError::fail(format!("{problem:?}: {err}"))),
        };
        let spec = *plan.kernel();
        prop_assert_eq!(spec.math, Math::TensorOp);
        prop_assert_eq!(spec.numeric_name(), numeric);
        prop_assert!(can_implement(&spec, &problem), "{} on {:?}", spec, problem);
        let multiple = 16 / dtype.size_bytes();
        let vector = aligned && problem.input[1].is_multiple_of(multiple);
        prop_assert_eq!(
            spec.variant.vector_loads,
            vector,
            "{} on {:?}",
            spec,
            problem
        );
        let tiles = shape.pixels.div_ceil(spec.tile.block_n as usize)
            * shape.output[1].div_ceil(spec.tile.block_m as usize);
        // The tiles along x, the splits of a small grid's reduction along z, and their
        // float32 partial sums the only workspace.
        let splits = plan.splits();
        prop_assert_eq!(plan.grid_dim(), (tiles as u32, 1, splits));
        prop_assert_eq!(plan.block_dim(), (spec.threads(), 1, 1));
        prop_assert_eq!(u64::from(plan.dynamic_shared_bytes()), spec.shared_bytes());
        let partial = (splits > 1).then(|| splits as usize * shape.output_len * 4);
        if splits > 1 {
            tally.add("split");
            prop_assert!(
                tiles < 132 * 8,
                "{} split {} ways with {} tiles",
                spec,
                splits,
                tiles
            );
        }
        prop_assert_eq!(plan.workspace_bytes(), partial.unwrap_or(0));
        prop_assert!(!plan.transforms_filter());
        let again = Plan::for_operands(&problem, &catalogue, &device, aligned_to).unwrap();
        prop_assert_eq!(&again, &plan);
        // NCHW and a KCRS filter: the same kernel, on channels-last copies in the workspace
        // (none where the layouts coincide: one pixel, a 1 × 1 filter), whatever the
        // operands' alignment when both are copied.
        let [_, c, h, w] = problem.input;
        let [k, _, r, s] = problem.filter;
        let elem = dtype.size_bytes();
        let input_copy = (h * w > 1).then(|| (shape.input_len * elem).div_ceil(256) * 256);
        let filter_copy = (r * s > 1).then(|| k * c * r * s * elem);
        let nchw = problem
            .with_layout(Layout::Nchw)
            .with_filter_layout(FilterLayout::Kcrs);
        let copied = Plan::for_operands(&nchw, &catalogue, &device, aligned_to).unwrap();
        prop_assert_eq!(copied.kernel().math, Math::TensorOp);
        prop_assert_eq!(copied.transposes_input(), input_copy.is_some());
        prop_assert_eq!(copied.transforms_filter(), filter_copy.is_some());
        // (Its kernel may differ: the copies are aligned, so vector loads may run.)
        let copies = input_copy.unwrap_or(0) + filter_copy.unwrap_or(0);
        let copied_partial =
            (copied.splits() > 1).then(|| copied.splits() as usize * shape.output_len * 4);
        prop_assert_eq!(
            copied.workspace_bytes(),
            copied_partial.map_or(copies, |bytes| copies.div_ceil(256) * 256 + bytes)
        );
        if input_copy.is_some() && filter_copy.is_some() {
            let multiple = 16 / elem;
            prop_assert_eq!(
                copied.kernel().variant.vector_loads,
                c.is_multiple_of(multiple)
            );
        }
        tally.add(if vector { "vector" } else { "element-wise" });
        Ok(())
    });
    summary(TEST, &tally.to_string());
    assert!(
        tally.get("vector") >= 100 && tally.get("element-wise") >= 100,
        "{tally}"
    );
}
