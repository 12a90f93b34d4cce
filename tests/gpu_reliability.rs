//! Device faults and limits, and concurrency, on the GPU.
//!
//! - Out of memory: a workspace that no GPU holds is `Error::OutOfMemory` (not an abort),
//!   and the same engine keeps computing correct results afterwards; so does a failed
//!   allocation of the caller's own output.
//! - Buffers of another CUDA context in every position, misaligned workspace views, operand
//!   views at every small offset, and an engine that sees no device.
//! - Several engines, each on its own stream, in parallel threads: results bit-for-bit equal
//!   to a serial run of one engine (one engine shared by threads is in gpu_conv.rs).
//!
//! Skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`. Under compute-sanitizer
//! (scripts/device-run.sh) `out_of_memory` and `no_visible_device` are skipped: the
//! sanitizer counts a deliberately failed allocation, and a child process without a device,
//! as errors.

mod common;

use common::{
    Case, Failures, Layout, POISON, describe, engine, gpu_limits, random_problem, run_case,
    run_case_output, small, summary, test_seed,
};
use cudarc::driver::{CudaContext, CudaSlice};
use im2win::codegen::{DType, KernelSpec, TileConfig};
use im2win::{Conv2dProblem, Engine, Error, Padding, Plan};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 2×3×9×8 input, 5×3×3×3 filter, padding 1: output 2×5×9×8.
fn problem() -> Conv2dProblem {
    Conv2dProblem::new([2, 3, 9, 8], [5, 3, 3, 3]).with_padding(Padding::uniform(1))
}

/// A valid problem with tiny operands whose im2win buffer has `(2^30 + 1)·rows` elements:
/// a single input value, a `rows × 1` filter, and two outputs whose windows lie 2^30
/// padded columns apart (stride 2^30, right padding 2^30).
fn sparse_problem(rows: usize) -> Conv2dProblem {
    Conv2dProblem::new([1, 1, 1, 1], [1, 1, rows, 1])
        .with_stride([1, 1 << 30])
        .with_padding(Padding {
            top: rows - 1,
            bottom: 0,
            left: 0,
            right: 1 << 30,
        })
}

/// Runs `case` through dispatch with its buffers on the engine's stream, checked against
/// the CPU oracle.
fn run_checked(engine: &Engine, case: &Case, layout: &Layout) -> Result<f64, String> {
    let plan = engine.plan(&case.problem).map_err(|e| e.to_string())?;
    run_case(engine, &plan, case, layout)
}

#[test]
fn out_of_memory_then_the_engine_keeps_working() {
    const TEST: &str = "out_of_memory_then_the_engine_keeps_working";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(6));
    let case = Case::random(&mut rng, problem(), true);
    let layout = Layout {
        offset: 0,
        guard: 16,
        own_workspace: false,
        other_stream: false,
    };
    let mut failures = Failures::default();
    // A first run, so that the engine holds a workspace that the failed regrow must free.
    failures.check(
        || "before any failure".into(),
        run_checked(&engine, &case, &layout),
    );

    // 64 rows: (2^30 + 1)·64 floats, 256 GiB, more than any GPU has; 2^20 rows: 4 PiB.
    let mut refused = 0;
    for rows in [64, 1 << 20, 64] {
        let huge = sparse_problem(rows);
        let shape = huge.shape().unwrap();
        // The materialised kernel: its workspace holds the im2win buffer (dispatch would
        // take a fused kernel, which needs none).
        let plan =
            Plan::for_spec(&huge, KernelSpec::generic(DType::F32, TileConfig::PAPER)).unwrap();
        let bytes = plan.workspace_bytes();
        assert!(bytes > 200_000_000_000, "{bytes}");
        let stream = engine.stream();
        let x = stream.clone_htod(&[1.0_f32]).unwrap();
        let f = stream.clone_htod(&vec![0.5_f32; shape.filter_len]).unwrap();
        let mut y = stream.clone_htod(&[POISON; 2]).unwrap();
        match engine.conv2d_with(&plan, &x, &f, None, &mut y, None) {
            Err(Error::OutOfMemory {
                what: "workspace",
                bytes: b,
                on_device: true,
            }) if b == bytes as u128 => refused += 1,
            other => failures.push(format!(
                "a {bytes}-byte workspace: expected OutOfMemory, got {other:?}"
            )),
        }
        let host = stream.clone_dtoh(&y).unwrap();
        if host.iter().any(|v| v.to_bits() != POISON.to_bits()) {
            failures.push(format!("the output was written after OOM: {host:?}"));
        }
        // The same engine, right after: a correct result (its workspace reallocated).
        failures.check(
            || format!("after a {bytes}-byte workspace failed"),
            run_checked(&engine, &case, &layout),
        );
    }

    // An output that the caller cannot allocate (1 TiB): cudarc's error; the engine and
    // its context are unaffected.
    let failed_output = engine.stream().alloc_zeros::<f32>(1 << 38).is_err();
    if !failed_output {
        failures.push("a 1 TiB device allocation succeeded".into());
    }
    failures.check(
        || "after the output failed to allocate".into(),
        run_checked(&engine, &case, &layout),
    );
    // And with a workspace of the caller's own.
    let plan = engine.plan(&case.problem).unwrap();
    failures.check(
        || "with the caller's workspace".into(),
        run_case(
            &engine,
            &plan,
            &case,
            &Layout {
                own_workspace: true,
                ..layout
            },
        ),
    );
    summary(
        TEST,
        &format!("{refused} impossible workspaces refused, engine correct after each"),
    );
    failures.assert_none(TEST);
}

/// A buffer of another (non-primary) CUDA context in each position is `ForeignBuffer`
/// naming it, before anything is launched. (gpu_errors.rs covers the input.)
#[test]
fn foreign_buffers_in_every_position() {
    const TEST: &str = "foreign_buffers_in_every_position";
    let Some(engine) = engine(TEST) else { return };
    let shape = problem().shape().unwrap();
    let plan = engine.plan(&problem()).unwrap();
    let stream = engine.stream();
    let x = stream.clone_htod(&vec![0.5_f32; shape.input_len]).unwrap();
    let f = stream
        .clone_htod(&vec![0.25_f32; shape.filter_len])
        .unwrap();
    let b = stream.clone_htod(&vec![1.0_f32; shape.output[1]]).unwrap();
    let mut y = stream.clone_htod(&vec![POISON; shape.output_len]).unwrap();
    let mut ws = stream.alloc_zeros::<u8>(plan.workspace_bytes()).unwrap();

    let other = CudaContext::new_non_primary(0, 0).unwrap();
    let results = {
        let os = other.default_stream();
        let fx: CudaSlice<f32> = os.clone_htod(&vec![0.5_f32; shape.input_len]).unwrap();
        let ff: CudaSlice<f32> = os.clone_htod(&vec![0.25_f32; shape.filter_len]).unwrap();
        let fb: CudaSlice<f32> = os.clone_htod(&vec![1.0_f32; shape.output[1]]).unwrap();
        let mut fy: CudaSlice<f32> = os.clone_htod(&vec![POISON; shape.output_len]).unwrap();
        let mut fws = os.alloc_zeros::<u8>(plan.workspace_bytes()).unwrap();
        let mut fy64 = os.alloc_zeros::<f64>(shape.output_len).unwrap();
        let results = vec![
            (
                "filter",
                engine.conv2d_with(&plan, &x, &ff, None, &mut y, None),
            ),
            (
                "bias",
                engine.conv2d_with(&plan, &x, &f, Some(&fb), &mut y, None),
            ),
            (
                "output",
                engine.conv2d_with(&plan, &x, &f, Some(&b), &mut fy, None),
            ),
            (
                "workspace",
                engine.conv2d_with(&plan, &x, &f, Some(&b), &mut y, Some(&mut fws)),
            ),
            (
                "input",
                engine.direct_reference_f64(&problem(), &fx, &f, None, &mut fy64),
            ),
            (
                "output",
                engine.direct_reference_f64(&problem(), &x, &f, None, &mut fy64),
            ),
        ];
        // cudarc frees a buffer without making its context current first.
        other.bind_to_thread().unwrap();
        drop((fx, ff, fb, fy, fws, fy64));
        results
    };
    drop(other);
    engine.context().bind_to_thread().unwrap();

    let mut failures = Failures::default();
    for (buffer, result) in &results {
        match result {
            Err(Error::ForeignBuffer { buffer: b }) if b == buffer => {}
            other => failures.push(format!("foreign {buffer}: got {other:?}")),
        }
    }
    let host = stream.clone_dtoh(&y).unwrap();
    if host.iter().any(|v| v.to_bits() != POISON.to_bits()) {
        failures.push("a rejected call wrote the output".into());
    }
    // The engine's own buffers still work, with the caller's workspace.
    engine
        .conv2d_with(&plan, &x, &f, Some(&b), &mut y, Some(&mut ws))
        .unwrap();
    let host = stream.clone_dtoh(&y).unwrap();
    if !host.iter().all(|v| v.is_finite()) {
        failures.push("the valid call left outputs unwritten".into());
    }
    summary(
        TEST,
        &format!(
            "{} foreign buffers rejected (filter, bias, output, workspace, oracle input and output)",
            results.len()
        ),
    );
    failures.assert_none(TEST);
}

/// Workspace views at every offset that is not a multiple of 256 bytes are `Misaligned`
/// (nothing launched); multiples work. Operand views at any element offset (addresses 4, 8,
/// 12, ... bytes past an allocation) give correct results, also when the input is read in
/// place: kernels must not assume more than 4-byte alignment of the operands.
#[test]
fn misaligned_views() {
    const TEST: &str = "misaligned_views";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(61));
    let case = Case::random(&mut rng, problem(), true);
    let plan = engine.plan(&problem()).unwrap();
    let shape = plan.shape();
    let stream = engine.stream();
    let x = stream.clone_htod(&case.input).unwrap();
    let f = stream.clone_htod(&case.filter).unwrap();
    let mut y = stream.clone_htod(&vec![POISON; shape.output_len]).unwrap();
    let mut ws = stream
        .alloc_zeros::<u8>(plan.workspace_bytes() + 1024)
        .unwrap();
    let mut failures = Failures::default();
    let misaligned = [1, 2, 3, 4, 8, 16, 32, 64, 128, 255, 257, 384];
    for offset in misaligned {
        match engine.conv2d_with(
            &plan,
            &x,
            &f,
            None,
            &mut y,
            Some(&mut ws.slice_mut(offset..)),
        ) {
            Err(Error::Misaligned {
                buffer: "workspace",
                alignment: 256,
            }) => {}
            other => failures.push(format!("workspace at +{offset} B: got {other:?}")),
        }
    }
    let host = stream.clone_dtoh(&y).unwrap();
    if host.iter().any(|v| v.to_bits() != POISON.to_bits()) {
        failures.push("a misaligned workspace call wrote the output".into());
    }
    for offset in [0, 256, 512, 768] {
        let result = engine.conv2d_with(
            &plan,
            &x,
            &f,
            None,
            &mut y,
            Some(&mut ws.slice_mut(offset..)),
        );
        if let Err(err) = result {
            failures.push(format!("workspace at +{offset} B: {err}"));
        }
    }

    // The 3×3 problem (through the im2win buffer) and a 1×1 stride-1 one without padding,
    // whose input the kernels read in place: at odd offsets neither may use vector accesses
    // on the operands.
    let pointwise = Conv2dProblem::new([2, 6, 9, 12], [5, 6, 1, 1]);
    let pointwise_case = Case::random(&mut rng, pointwise, false);
    let pointwise_plan = engine.plan(&pointwise).unwrap();
    let offsets = if small() { 0..4 } else { 0..9 };
    let mut runs = 0;
    for (case, plan) in [(&case, &plan), (&pointwise_case, &pointwise_plan)] {
        for offset in offsets.clone() {
            for own_workspace in [false, true] {
                let layout = Layout {
                    offset,
                    guard: 5,
                    own_workspace,
                    other_stream: false,
                };
                failures.check(
                    || {
                        format!(
                            "{} at +{offset} elements ({layout:?})",
                            describe(&case.problem)
                        )
                    },
                    run_case(&engine, plan, case, &layout),
                );
                runs += 1;
            }
        }
    }
    summary(
        TEST,
        &format!(
            "{} misaligned workspaces rejected, 4 aligned accepted; {runs} runs with operands at element offsets {offsets:?}",
            misaligned.len()
        ),
    );
    failures.assert_none(TEST);
}

/// Environment variable that makes [`no_visible_device`] the child that checks.
const CHILD: &str = "IM2WIN_TEST_NO_DEVICE_CHILD";

/// With the GPU hidden (`CUDA_VISIBLE_DEVICES=` in a child process of this test binary),
/// `Engine::new` is `NoDevice { count: 0 }`: the driver is there but reports no device.
#[test]
fn no_visible_device() {
    const TEST: &str = "no_visible_device";
    if std::env::var_os(CHILD).is_some() {
        match Engine::new(0, im2win::kernels()) {
            Err(Error::NoDevice {
                ordinal: 0,
                count: 0,
            }) => return,
            other => panic!("with no visible device: expected NoDevice, got {other:?}"),
        }
    }
    let Some(engine) = engine(TEST) else { return };
    drop(engine);
    let exe = std::env::current_exe().unwrap();
    let output = std::process::Command::new(exe)
        .args(["--exact", TEST, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .env("CUDA_VISIBLE_DEVICES", "")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && text.contains("1 passed"),
        "the child failed:\n{text}"
    );
    summary(TEST, "CUDA_VISIBLE_DEVICES= gives NoDevice { count: 0 }");
}

/// One run of a parallel thread: the problem's index and its output (or why it failed).
type Run = (usize, Result<Vec<f32>, String>);

/// Several engines, each with its own stream, each in its own thread, run the same
/// problems (in different orders) at once: every output equals, bit for bit, the output of
/// one engine running them one after the other, and the CPU oracle.
#[test]
fn several_engines_in_parallel_match_a_serial_run() {
    const TEST: &str = "several_engines_in_parallel_match_a_serial_run";
    let Some(serial_engine) = engine(TEST) else {
        return;
    };
    let seed = test_seed(66);
    let mut rng = StdRng::seed_from_u64(seed);
    let limits = gpu_limits();
    let (engines, count) = if small() { (2, 4) } else { (4, 12) };
    let cases: Vec<Case> = (0..count)
        .map(|i| {
            let problem = random_problem(&mut rng, &limits);
            Case::random(&mut rng, problem, i % 2 == 0)
        })
        .collect();
    // One plan per problem, used by every run, so that all runs launch the same kernels.
    let plans: Vec<Plan> = cases
        .iter()
        .map(|case| serial_engine.plan(&case.problem).unwrap())
        .collect();
    let layout = |i: usize| Layout {
        other_stream: false,
        ..Layout::varied(i)
    };

    let mut failures = Failures::default();
    let serial: Vec<Option<Vec<f32>>> = cases
        .iter()
        .enumerate()
        .map(
            |(i, case)| match run_case_output(&serial_engine, &plans[i], case, &layout(i)) {
                Ok((_, out)) => Some(out),
                Err(why) => {
                    failures.push(format!("serial, {}: {why}", describe(&case.problem)));
                    None
                }
            },
        )
        .collect();

    let parallel: Vec<Engine> = (0..engines)
        .map(|_| Engine::new(0, im2win::kernels()).unwrap())
        .collect();
    let results: Vec<Vec<Run>> = std::thread::scope(|scope| {
        let handles: Vec<_> = parallel
            .iter()
            .enumerate()
            .map(|(e, engine)| {
                let (cases, plans) = (&cases, &plans);
                scope.spawn(move || {
                    // Each engine starts at another problem, so different problems overlap.
                    (0..cases.len())
                        .map(|j| (j + e * 3) % cases.len())
                        .map(|i| {
                            let out = run_case_output(engine, &plans[i], &cases[i], &layout(i))
                                .map(|(_, out)| out);
                            (i, out)
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| vec![(usize::MAX, Err("thread panicked".into()))])
            })
            .collect()
    });
    let mut compared = 0;
    for (e, runs) in results.iter().enumerate() {
        for (i, result) in runs {
            let what = || match cases.get(*i) {
                Some(case) => format!("engine {e}, {}", describe(&case.problem)),
                None => format!("engine {e}"),
            };
            match (result, serial.get(*i)) {
                (Err(why), _) => failures.push(format!("{}: {why}", what())),
                (Ok(out), Some(Some(reference))) => {
                    let same = out.len() == reference.len()
                        && out
                            .iter()
                            .zip(reference)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                    if same {
                        compared += 1;
                    } else {
                        failures.push(format!("{}: differs from the serial run", what()));
                    }
                }
                (Ok(_), _) => {}
            }
        }
    }
    summary(
        TEST,
        &format!(
            "{compared} outputs of {engines} engines in parallel bit-identical to the serial run \
             ({count} problems, seed {seed})"
        ),
    );
    failures.assert_none(TEST);
}

/// Dispatch's device limits come from the driver: on an H200 they are exactly
/// `DeviceLimits::H200` (what planning without a GPU assumes), elsewhere at least sane.
#[test]
fn device_limits_come_from_the_device() {
    const TEST: &str = "device_limits_come_from_the_device";
    let Some(engine) = engine(TEST) else { return };
    let limits = *engine.device_limits();
    let name = engine.context().name().unwrap();
    if name.contains("H200") {
        assert_eq!(limits, im2win::DeviceLimits::H200, "{name}");
    }
    assert!(
        limits.multiprocessors >= 1 && limits.threads_per_sm >= 256,
        "{limits:?}"
    );
    assert_eq!(engine.multiprocessors() as u64, limits.multiprocessors);
    summary(TEST, &format!("{name}: {limits:?}"));
}
