//! The engine's errors that need a device: wrong buffers and workspaces, missing kernels,
//! buffers of another context. Each must be reported before anything is launched, leaving
//! the output untouched.
//!
//! Skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`.

mod common;

use common::{POISON, engine, summary};
use cudarc::driver::{CudaContext, CudaSlice};
use im2win::{Conv2dProblem, Engine, Error, KernelModule, Padding, Plan};
use im2win_codegen::{Catalogue, DType, FixedGeometry, KernelSpec, TileConfig};

/// 2×3×9×8 input, 5×3×3×3 filter, padding 1: output 2×5×9×8.
fn problem() -> Conv2dProblem {
    Conv2dProblem::new([2, 3, 9, 8], [5, 3, 3, 3]).with_padding(Padding::uniform(1))
}

struct Buffers {
    x: CudaSlice<f32>,
    f: CudaSlice<f32>,
    b: CudaSlice<f32>,
    y: CudaSlice<f32>,
}

/// Operand buffers of `problem()`, with `extra[i]` elements added to input, filter, bias
/// and output respectively (−1 for one too few).
fn buffers(engine: &Engine, extra: [isize; 4]) -> Buffers {
    let shape = problem().shape().unwrap();
    let lens = [
        shape.input_len,
        shape.filter_len,
        shape.output[1],
        shape.output_len,
    ];
    let len = |i: usize| lens[i].checked_add_signed(extra[i]).unwrap();
    let stream = engine.stream();
    Buffers {
        x: stream.clone_htod(&vec![0.5_f32; len(0)]).unwrap(),
        f: stream.clone_htod(&vec![0.25_f32; len(1)]).unwrap(),
        b: stream.clone_htod(&vec![1.0_f32; len(2)]).unwrap(),
        y: stream.clone_htod(&vec![POISON; len(3)]).unwrap(),
    }
}

/// Whether every element of `y` still holds the poison.
fn untouched(engine: &Engine, y: &CudaSlice<f32>) -> bool {
    let host = engine.stream().clone_dtoh(y).unwrap();
    host.iter().all(|v| v.to_bits() == POISON.to_bits())
}

#[test]
fn wrong_buffer_lengths() {
    const TEST: &str = "wrong_buffer_lengths";
    let Some(engine) = engine(TEST) else { return };
    let names = ["input", "filter", "bias", "output"];
    let mut checked = 0;
    for (i, name) in names.iter().enumerate() {
        for delta in [-1_isize, 1] {
            let mut extra = [0; 4];
            extra[i] = delta;
            let mut bufs = buffers(&engine, extra);
            let err = engine
                .conv2d(
                    &problem(),
                    &bufs.x,
                    &bufs.f,
                    Some(&bufs.b),
                    &mut bufs.y,
                    None,
                )
                .unwrap_err();
            match err {
                Error::BufferLength {
                    buffer,
                    expected,
                    actual,
                } => {
                    assert_eq!(buffer, *name);
                    assert_eq!(actual as isize, expected as isize + delta);
                }
                other => panic!("{name} {delta:+}: expected BufferLength, got {other}"),
            }
            if *name != "output" {
                assert!(
                    untouched(&engine, &bufs.y),
                    "{name} {delta:+} wrote the output"
                );
            }
            checked += 1;
        }
    }
    // Views count by their own length: a view one element short of the output.
    let mut bufs = buffers(&engine, [0; 4]);
    let len = bufs.y.len();
    let err = engine
        .conv2d(
            &problem(),
            &bufs.x.slice(..),
            &bufs.f,
            None,
            &mut bufs.y.slice_mut(1..len),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferLength {
                buffer: "output",
                ..
            }
        ),
        "{err}"
    );
    // The oracle checks its float64 output too.
    let mut y64 = engine.stream().alloc_zeros::<f64>(len + 1).unwrap();
    let err = engine
        .direct_reference_f64(&problem(), &bufs.x, &bufs.f, None, &mut y64)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::BufferLength {
                buffer: "output",
                ..
            }
        ),
        "{err}"
    );
    summary(
        TEST,
        &format!("{} wrong-length calls rejected", checked + 2),
    );
}

#[test]
fn unusable_workspaces() {
    const TEST: &str = "unusable_workspaces";
    let Some(engine) = engine(TEST) else { return };
    let plan = engine.plan(&problem()).unwrap();
    let needed = plan.workspace_bytes();
    let mut bufs = buffers(&engine, [0; 4]);

    let mut short = engine.stream().alloc_zeros::<u8>(needed - 1).unwrap();
    let err = engine
        .conv2d_with(&plan, &bufs.x, &bufs.f, None, &mut bufs.y, Some(&mut short))
        .unwrap_err();
    match err {
        Error::WorkspaceTooSmall { expected, actual } => {
            assert_eq!((expected, actual), (needed, needed - 1));
        }
        other => panic!("expected WorkspaceTooSmall, got {other}"),
    }

    // Large enough, but 4 bytes past a 256-byte boundary.
    let mut big = engine.stream().alloc_zeros::<u8>(needed + 256).unwrap();
    let err = engine
        .conv2d_with(
            &plan,
            &bufs.x,
            &bufs.f,
            None,
            &mut bufs.y,
            Some(&mut big.slice_mut(4..)),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Misaligned {
                buffer: "workspace",
                alignment: 256
            }
        ),
        "{err}"
    );
    assert!(untouched(&engine, &bufs.y));

    // The same workspace at an aligned offset works.
    engine
        .conv2d_with(
            &plan,
            &bufs.x,
            &bufs.f,
            None,
            &mut bufs.y,
            Some(&mut big.slice_mut(256..)),
        )
        .unwrap();
    assert!(!untouched(&engine, &bufs.y));
    summary(
        TEST,
        "too small and misaligned workspaces rejected, aligned view accepted",
    );
}

#[test]
fn missing_kernels() {
    const TEST: &str = "missing_kernels";
    let Some(engine) = engine(TEST) else { return };
    let mut bufs = buffers(&engine, [0; 4]);

    assert!(matches!(
        engine.function("im2win_no_such_kernel"),
        Err(Error::KernelMissing { .. })
    ));
    assert!(matches!(
        engine.function("im2win\0direct"),
        Err(Error::KernelMissing { .. })
    ));

    // A plan for a spec that the fatbin does not hold.
    let odd = KernelSpec::fixed(
        DType::F32,
        FixedGeometry::square(3, 1),
        TileConfig {
            block_m: 64,
            block_n: 64,
            block_k: 8,
            thread_m: 4,
            thread_n: 4,
        },
    );
    let plan = Plan::for_spec(&problem(), odd).unwrap();
    let err = engine
        .conv2d_with(&plan, &bufs.x, &bufs.f, None, &mut bufs.y, None)
        .unwrap_err();
    assert!(
        matches!(err, Error::KernelMissing { ref name } if *name == odd.name()),
        "{err}"
    );

    // An engine whose module was built without nvcc plans but cannot launch.
    let unbuilt = Engine::new(0, KernelModule::not_built(Catalogue::default_catalogue())).unwrap();
    let plan = unbuilt.plan(&problem()).unwrap();
    let err = unbuilt
        .conv2d_with(&plan, &bufs.x, &bufs.f, None, &mut bufs.y, None)
        .unwrap_err();
    assert!(matches!(err, Error::KernelsNotBuilt), "{err}");
    assert!(untouched(&engine, &bufs.y));

    // Forcing a fixed kernel on a problem of another geometry.
    let five = KernelSpec::fixed(DType::F32, FixedGeometry::square(5, 1), TileConfig::PAPER);
    assert!(matches!(
        Plan::for_spec(&problem(), five),
        Err(Error::SpecMismatch { .. })
    ));
    summary(
        TEST,
        "missing kernel, unbuilt module and spec mismatch reported",
    );
}

#[test]
fn devices_and_contexts() {
    const TEST: &str = "devices_and_contexts";
    let Some(engine) = engine(TEST) else { return };
    let count = CudaContext::device_count().unwrap() as usize;
    match Engine::new(count, im2win::kernels()) {
        Err(Error::NoDevice { ordinal, count: c }) => assert_eq!((ordinal, c), (count, count)),
        other => panic!("expected NoDevice, got {other:?}"),
    }

    // A buffer of a separate (non-primary) context on the same device.
    let mut bufs = buffers(&engine, [0; 4]);
    let err = {
        let other = CudaContext::new_non_primary(0, 0).unwrap();
        let foreign = other
            .default_stream()
            .clone_htod(&vec![0.5_f32; problem().shape().unwrap().input_len])
            .unwrap();
        let err = engine
            .conv2d(&problem(), &foreign, &bufs.f, None, &mut bufs.y, None)
            .unwrap_err();
        // cudarc frees a buffer without making its context current first.
        other.bind_to_thread().unwrap();
        drop(foreign);
        err
    };
    // Destroying the other context left none current on this thread.
    engine.context().bind_to_thread().unwrap();
    assert!(
        matches!(err, Error::ForeignBuffer { buffer: "input" }),
        "{err}"
    );
    assert!(untouched(&engine, &bufs.y));
    summary(TEST, "NoDevice and a buffer of another context rejected");
}
