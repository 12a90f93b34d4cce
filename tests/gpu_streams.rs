//! Stream and context soundness (docs/RELIABILITY.md, "Streams and contexts"): the engine
//! orders its launches after every earlier use of every operand and every later use after
//! its launches, whatever stream or context object the operand belongs to; an engine runs on
//! a context or stream it is given with the same guarantees; errors are reported by the
//! call that caused them; the context is bound before the engine touches memory; and a
//! module of another ABI is refused.
//!
//! Every race test delays the side that must come first with a spin kernel
//! (`common::delay`), so that a missing wait shows on every run: the operands land only
//! after 50 ms of GPU time, or the engine's launches start only then. Outputs are poisoned
//! (NaN) by the same delayed copy, inputs hold 1e30 until their data lands, and freed inputs
//! are overwritten at once by a fresh allocation, so a kernel that reads too early, a copy
//! back that reads too early, or a free that does not wait all give a wrong result.
//!
//! Skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`.

mod common;

use std::sync::Arc;

use common::delay::{DELAY_MS, Spinner};
use common::{Case, FAR_AWAY, Failures, Layout, POISON, check_output, engine, summary, test_seed};
use cudarc::driver::{CudaContext, CudaSlice, CudaStream, DriverError, sys};
use im2win::{Conv2dProblem, Engine, Error, KernelModule, Padding};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 2×8×20×20 input, 16×8×3×3 filter, padding 1: big enough to take several blocks, small
/// enough for the CPU oracle and the sanitizer.
fn problem() -> Conv2dProblem {
    Conv2dProblem::new([2, 8, 20, 20], [16, 8, 3, 3]).with_padding(Padding::uniform(1))
}

/// The operands of one call as device buffers.
struct Operands {
    x: CudaSlice<f32>,
    f: CudaSlice<f32>,
    b: CudaSlice<f32>,
    y: CudaSlice<f32>,
}

/// `data` in a fresh buffer of `stream` that holds `before` until, after `DELAY_MS` of GPU
/// time on that stream, a device copy puts `data` there.
fn delayed(
    stream: &Arc<CudaStream>,
    spinner: &Spinner,
    data: &[f32],
    before: f32,
) -> CudaSlice<f32> {
    let staged = stream.clone_htod(data).expect("upload");
    let mut buffer = stream
        .clone_htod(&vec![before; data.len()])
        .expect("upload");
    spinner.delay(stream, DELAY_MS);
    stream.memcpy_dtod(&staged, &mut buffer).expect("copy");
    buffer
}

/// The case's operands on `stream`, landing only after a delay there: the input, filter and
/// bias hold 1e30 until then, the output `FAR_AWAY` until the poison lands.
fn delayed_operands(stream: &Arc<CudaStream>, spinner: &Spinner, case: &Case) -> Operands {
    let shape = case.problem.shape().unwrap();
    Operands {
        x: delayed(stream, spinner, &case.input, FAR_AWAY),
        f: delayed(stream, spinner, &case.filter, FAR_AWAY),
        b: delayed(stream, spinner, case.bias.as_deref().unwrap(), FAR_AWAY),
        y: delayed(stream, spinner, &vec![POISON; shape.output_len], FAR_AWAY),
    }
}

/// The case's operands on `stream`, uploaded at once.
fn operands(stream: &Arc<CudaStream>, case: &Case) -> Operands {
    let shape = case.problem.shape().unwrap();
    Operands {
        x: stream.clone_htod(&case.input).unwrap(),
        f: stream.clone_htod(&case.filter).unwrap(),
        b: stream.clone_htod(case.bias.as_deref().unwrap()).unwrap(),
        y: stream.clone_htod(&vec![POISON; shape.output_len]).unwrap(),
    }
}

/// Runs the case through `engine` on `ops`.
fn convolve(engine: &Engine, case: &Case, ops: &mut Operands) -> im2win::Result<()> {
    engine.conv2d(
        &case.problem,
        &ops.x,
        &ops.f,
        Some(&ops.b),
        &mut ops.y,
        None,
    )
}

/// Reads `y` back on `stream` (its own, normally) and checks it against the case.
fn check(stream: &Arc<CudaStream>, y: &CudaSlice<f32>, case: &Case) -> Result<f64, String> {
    let host = stream.clone_dtoh(y).map_err(|e| format!("download: {e}"))?;
    let plain = Layout {
        offset: 0,
        guard: 0,
        own_workspace: false,
        other_stream: false,
    };
    check_output(&host, &plain, host.len(), case)
}

/// Allocates one buffer of each of `lens` floats on `stream` and fills them with 1e30 at
/// once: the stream-ordered allocator hands back the memory just freed on that stream (the
/// same sizes, in the same order), so a kernel still reading a freed buffer reads these.
fn reuse_freed(stream: &Arc<CudaStream>, lens: &[usize]) -> Vec<CudaSlice<f32>> {
    lens.iter()
        .map(|&len| stream.clone_htod(&vec![FAR_AWAY; len]).unwrap())
        .collect()
}

/// The lengths of the input, filter and bias of `case`, the buffers the tests drop.
fn input_lens(case: &Case) -> [usize; 3] {
    [
        case.input.len(),
        case.filter.len(),
        case.bias.as_ref().map_or(0, Vec::len),
    ]
}

/// A stream of a fresh context object (of the same CUDA context as the engine's) by kind:
/// the legacy default stream, the per-thread default stream, or a non-blocking stream of
/// its own (only the last puts the context object into cudarc's event-tracking mode, so
/// each kind gets an object of its own).
fn foreign_stream(kind: &str) -> Arc<CudaStream> {
    let ctx = CudaContext::new(0).unwrap();
    match kind {
        "legacy default stream" => ctx.default_stream(),
        "per-thread default stream" => ctx.per_thread_stream(),
        _ => ctx.new_stream().unwrap(),
    }
}

/// Operands of another context object of the same CUDA context, on each kind of stream,
/// whose data lands late: the engine must wait for it, and the copy back on the operands'
/// stream must wait for the engine; the operands are dropped right after the call.
#[test]
fn operands_of_another_context_object_are_ordered() {
    const TEST: &str = "operands_of_another_context_object_are_ordered";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(21));
    let case = Case::random(&mut rng, problem(), true);
    let spinner = Spinner::new(engine.context());
    let mut failures = Failures::default();
    let kinds = [
        "legacy default stream",
        "per-thread default stream",
        "non-blocking stream",
    ];
    for kind in kinds {
        let stream = &foreign_stream(kind);
        let mut ops = delayed_operands(stream, &spinner, &case);
        let outcome = convolve(&engine, &case, &mut ops).map_err(|e| e.to_string());
        let Operands { x, f, b, y } = ops;
        drop((x, f, b));
        let junk = reuse_freed(stream, &input_lens(&case));
        let outcome = outcome.and_then(|()| check(stream, &y, &case));
        failures.check(|| format!("operands on the other object's {kind}"), outcome);
        drop(junk);
    }
    summary(
        TEST,
        &format!(
            "{} stream kinds, delayed producers, operands dropped after the call",
            kinds.len()
        ),
    );
    failures.assert_none(TEST);
}

/// Operands on a second stream of the engine's own context: after the engine's (delayed)
/// launches, that stream reads the input back, overwrites it and drops it, and a fresh
/// allocation there overwrites the freed memory. cudarc alone orders the overwrite and the
/// free after the read on that stream only, not after the engine's read.
#[test]
fn a_second_stream_of_the_engines_context_waits_for_the_engine() {
    const TEST: &str = "a_second_stream_of_the_engines_context_waits_for_the_engine";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(22));
    let case = Case::random(&mut rng, problem(), true);
    let spinner = Spinner::new(engine.context());
    let second = engine.context().new_stream().unwrap();
    let mut ops = operands(&second, &case);
    second.synchronize().unwrap();
    spinner.delay(engine.stream(), DELAY_MS);
    let outcome = convolve(&engine, &case, &mut ops).map_err(|e| e.to_string());
    let Operands { mut x, f, b, y } = ops;
    // Read, then overwrite, the input on its own stream: cudarc orders the overwrite after
    // that read only (the read event now points at it), not after the engine's.
    let read_back = second.clone_dtoh(&x).unwrap();
    second
        .memcpy_htod(&vec![FAR_AWAY; case.input.len()], &mut x)
        .unwrap();
    drop((x, f, b));
    let junk = reuse_freed(&second, &input_lens(&case));
    let mut failures = Failures::default();
    if read_back != case.input {
        failures.push("the input read back differs".into());
    }
    failures.check(
        || "read and freed on a second stream".into(),
        outcome.and_then(|()| check(&second, &y, &case)),
    );
    drop(junk);
    summary(
        TEST,
        "engine delayed; input read back, overwritten, dropped and its memory reused on the second stream",
    );
    failures.assert_none(TEST);
}

/// Two engines read one input (on a second stream of the first engine's context); the first
/// is delayed. Dropping the input must wait for both, though cudarc's one read event
/// remembers only the last reader.
#[test]
fn two_engines_reading_one_input() {
    const TEST: &str = "two_engines_reading_one_input";
    let Some(first) = engine(TEST) else { return };
    let Some(second_engine) = engine(TEST) else {
        return;
    };
    let mut rng = StdRng::seed_from_u64(test_seed(23));
    let case = Case::random(&mut rng, problem(), true);
    let spinner = Spinner::new(first.context());
    let home = first.context().new_stream().unwrap();
    let shape = case.problem.shape().unwrap();
    let x = home.clone_htod(&case.input).unwrap();
    let f = home.clone_htod(&case.filter).unwrap();
    let b = home.clone_htod(case.bias.as_deref().unwrap()).unwrap();
    let mut y1 = first
        .stream()
        .clone_htod(&vec![POISON; shape.output_len])
        .unwrap();
    let mut y2 = second_engine
        .stream()
        .clone_htod(&vec![POISON; shape.output_len])
        .unwrap();
    home.synchronize().unwrap();
    spinner.delay(first.stream(), DELAY_MS);
    let r1 = first.conv2d(&case.problem, &x, &f, Some(&b), &mut y1, None);
    let r2 = second_engine.conv2d(&case.problem, &x, &f, Some(&b), &mut y2, None);
    drop((x, f, b));
    let junk = reuse_freed(&home, &input_lens(&case));
    let mut failures = Failures::default();
    failures.check(
        || "first (delayed) engine".into(),
        r1.map_err(|e| e.to_string())
            .and_then(|()| check(first.stream(), &y1, &case)),
    );
    failures.check(
        || "second engine".into(),
        r2.map_err(|e| e.to_string())
            .and_then(|()| check(second_engine.stream(), &y2, &case)),
    );
    drop(junk);
    summary(
        TEST,
        "two engines, one input dropped after both calls, first engine delayed",
    );
    failures.assert_none(TEST);
}

/// Buffers on the caller's legacy stream dropped right after the call while the engine is
/// still delayed: their memory is reused at once on that stream unless it waits.
#[test]
fn operands_dropped_right_after_the_call() {
    const TEST: &str = "operands_dropped_right_after_the_call";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(24));
    let case = Case::random(&mut rng, problem(), true);
    let theirs = CudaContext::new(0).unwrap();
    let spinner = Spinner::new(&theirs);
    let stream = theirs.default_stream();
    let mut ops = operands(&stream, &case);
    stream.synchronize().unwrap();
    spinner.delay(engine.stream(), DELAY_MS);
    let outcome = convolve(&engine, &case, &mut ops).map_err(|e| e.to_string());
    let Operands { x, f, b, y } = ops;
    drop((x, f, b));
    let junk = reuse_freed(&stream, &input_lens(&case));
    let mut failures = Failures::default();
    failures.check(
        || "inputs dropped on the legacy stream".into(),
        outcome.and_then(|()| check(&stream, &y, &case)),
    );
    drop(junk);
    summary(
        TEST,
        "engine delayed, inputs dropped and reused on the caller's stream",
    );
    failures.assert_none(TEST);
}

/// Engines on a context or stream they are given: operands on the engine's own stream
/// (no ordering needed) and on another stream whose data lands late (ordered as for an
/// engine of its own).
#[test]
fn engines_on_a_given_context_or_stream() {
    const TEST: &str = "engines_on_a_given_context_or_stream";
    let Some(_probe) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(25));
    let case = Case::random(&mut rng, problem(), true);
    let theirs = CudaContext::new(0).unwrap();
    let spinner = Spinner::new(&theirs);
    let engines: Vec<(&str, Engine)> = vec![
        (
            "on the caller's legacy stream",
            Engine::on_stream(theirs.default_stream(), im2win::kernels()).unwrap(),
        ),
        (
            "on the caller's non-blocking stream",
            Engine::on_stream(theirs.new_stream().unwrap(), im2win::kernels()).unwrap(),
        ),
        (
            "with the caller's context object",
            Engine::with_context(theirs.clone(), im2win::kernels()).unwrap(),
        ),
    ];
    let mut failures = Failures::default();
    for (how, engine) in &engines {
        if !Arc::ptr_eq(engine.context(), &theirs) {
            failures.push(format!(
                "{how}: the engine does not use the given context object"
            ));
        }
        // On the engine's stream: plain stream order.
        let own = engine.stream().clone();
        let mut ops = delayed_operands(&own, &spinner, &case);
        let outcome = convolve(engine, &case, &mut ops).map_err(|e| e.to_string());
        failures.check(
            || format!("{how}, operands on its stream"),
            outcome.and_then(|()| check(&own, &ops.y, &case)),
        );
        // On another stream of the caller's.
        let other = theirs.new_stream().unwrap();
        let mut ops = delayed_operands(&other, &spinner, &case);
        let outcome = convolve(engine, &case, &mut ops).map_err(|e| e.to_string());
        failures.check(
            || format!("{how}, operands on another stream"),
            outcome.and_then(|()| check(&other, &ops.y, &case)),
        );
    }
    summary(
        TEST,
        &format!(
            "{} engines on given contexts/streams, own-stream and other-stream operands",
            engines.len()
        ),
    );
    failures.assert_none(TEST);
}

/// cudarc records some driver errors in the context object instead of returning them.
/// An error that other code recorded there (e.g. a failed free of a buffer elsewhere) is
/// neither reported by an engine's call nor cleared by it: first in an engine's own context
/// object, then in one that two engines and their caller share. (The operands are made
/// before the error is recorded: cudarc's own calls report whatever the slot holds.)
#[test]
fn errors_recorded_by_others_are_neither_reported_nor_hidden() {
    const TEST: &str = "errors_recorded_by_others_are_neither_reported_nor_hidden";
    let Some(own) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(26));
    let case = Case::random(&mut rng, problem(), true);
    let injected = DriverError(sys::cudaError_enum::CUDA_ERROR_UNKNOWN);
    let mut failures = Failures::default();
    let mut run = |name: &str, engine: &Engine, slot: &Arc<CudaContext>| {
        let mut ops = operands(engine.stream(), &case);
        engine.stream().synchronize().unwrap();
        slot.record_err::<()>(Err(injected));
        let outcome = convolve(engine, &case, &mut ops).map_err(|e| e.to_string());
        let kept = slot.check_err();
        if kept != Err(injected) {
            failures.push(format!(
                "{name}: the error recorded by someone else was not left in the slot: {kept:?}"
            ));
        }
        failures.check(
            || format!("{name} after an error recorded by someone else"),
            outcome.and_then(|()| check(engine.stream(), &ops.y, &case)),
        );
    };
    run("an engine with its own context object", &own, own.context());
    let shared = CudaContext::new(0).unwrap();
    let a = Engine::with_context(shared.clone(), im2win::kernels()).unwrap();
    let b = Engine::with_context(shared.clone(), im2win::kernels()).unwrap();
    run("engine b of a shared context object", &b, &shared);
    run("engine a of a shared context object", &a, &shared);
    summary(
        TEST,
        "errors recorded by others: 3 engine calls unaffected, each error kept",
    );
    failures.assert_none(TEST);
}

/// The engine binds its context before touching memory: with another context current on
/// the thread (as with engines on two GPUs driven from one thread), a call that grows, and
/// so frees, the engine's workspace still works.
#[test]
fn workspace_regrowth_with_another_context_current() {
    const TEST: &str = "workspace_regrowth_with_another_context_current";
    let Some(engine) = engine(TEST) else { return };
    let mut rng = StdRng::seed_from_u64(test_seed(27));
    let small = Case::random(&mut rng, problem(), true);
    let large = Case::random(
        &mut rng,
        Conv2dProblem::new([4, 16, 24, 24], [32, 16, 5, 5]).with_padding(Padding::uniform(2)),
        true,
    );
    let other = CudaContext::new_non_primary(0, 0).unwrap();
    let mut failures = Failures::default();
    for (what, case) in [("small", &small), ("larger", &large)] {
        let mut ops = operands(engine.stream(), case);
        other.bind_to_thread().unwrap();
        let outcome = convolve(&engine, case, &mut ops).map_err(|e| e.to_string());
        failures.check(
            || format!("{what} problem with another context current"),
            outcome.and_then(|()| check(engine.stream(), &ops.y, case)),
        );
    }
    if let Err(err) = other.check_err() {
        failures.push(format!("an error landed in the other context: {err}"));
    }
    drop(other);
    summary(
        TEST,
        "workspace grown (old one freed) with a non-primary context current",
    );
    failures.assert_none(TEST);
}

/// A PTX module with `.global .u64 im2win_abi_stamp = <stamp>` (or none), NUL-terminated
/// as the driver wants PTX text.
fn stamped_module(stamp: Option<u64>) -> Vec<u8> {
    let global = stamp.map_or(String::new(), |s| {
        format!(
            ".visible .global .align 8 .u64 {} = {s};\n",
            im2win::codegen::abi::ABI_SYMBOL
        )
    });
    format!(".version 7.0\n.target sm_70\n.address_size 64\n{global}\0").into_bytes()
}

/// What a refused module's error must match.
type Expected = fn(&Error) -> bool;

/// Modules of another ABI are refused when they load, before any kernel of theirs can be
/// launched: a wrong stamp, no stamp, and a catalogue that does not parse. A module with
/// the right stamp passes the check (and then lacks the support kernels).
#[test]
fn modules_of_another_abi_are_refused() {
    const TEST: &str = "modules_of_another_abi_are_refused";
    let Some(_probe) = engine(TEST) else { return };
    let expected = im2win::codegen::abi::abi_id();
    let empty = im2win::codegen::Catalogue::default();
    let mut failures = Failures::default();
    let wrong = expected ^ 1;
    let cases: Vec<(&str, KernelModule, Expected)> = vec![
        (
            "a wrong stamp",
            KernelModule::new(stamped_module(Some(wrong)), empty.clone()),
            |e| matches!(e, Error::AbiMismatch { found: Some(f), .. } if *f == im2win::codegen::abi::abi_id() ^ 1),
        ),
        (
            "no stamp",
            KernelModule::new(stamped_module(None), empty.clone()),
            |e| matches!(e, Error::AbiMismatch { found: None, .. }),
        ),
        (
            "an unreadable catalogue",
            KernelModule::embedded("old", b"not loaded", "{\"kernels\": 7}"),
            |e| matches!(e, Error::BadCatalogue { module, .. } if module == "old"),
        ),
        (
            "the right stamp",
            KernelModule::new(stamped_module(Some(expected)), empty),
            |e| matches!(e, Error::KernelMissing { .. }),
        ),
    ];
    for (what, module, expect) in cases {
        match Engine::new(0, module) {
            Err(err) if expect(&err) => {}
            Err(err) => failures.push(format!("{what}: unexpected error {err}")),
            Ok(_) => failures.push(format!("{what}: the engine accepted the module")),
        }
    }
    // The default kernels carry the runtime's stamp (Engine::new checked it).
    summary(TEST, &format!("4 modules, stamp {expected:#018x}"));
    failures.assert_none(TEST);
}
