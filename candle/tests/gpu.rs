//! The layer on CUDA tensors (im2win's kernels on candle's stream) against candle_nn's own
//! Conv2d on CUDA and against im2win's float64 oracle; the epilogues; views at offsets; and
//! that a forward neither synchronises nor copies (it returns while the GPU is still busy, and
//! it can be captured into a CUDA graph).
//!
//! Built only with the crate's `cuda` feature. Without a GPU (or when im2win's kernels were
//! not built: no nvcc at build time) each test prints a `SKIPPED` line and passes; with
//! `IM2WIN_REQUIRE_GPU=1` it fails instead.

mod common;

use std::time::{Duration, Instant};

use candle_core::cuda_backend::cudarc::driver::sys;
use candle_core::{DType, Device, Module, Result, Tensor};
use common::{
    Case, prepared_matches_unprepared, random, relative_error, rng, tolerance, values,
    var_weight_error,
};

/// The oracle of `layer` on `x`, with the layer's activation and a residual added with
/// factor 1 when given.
fn oracle(layer: &Conv2d, x: &Tensor, residual: Option<&Tensor>) -> Result<Vec<f64>> {
    let mut epilogue = Epilogue::activation(layer.activation());
    if residual.is_some() {
        epilogue = epilogue.with_residual(1.0);
    }
    common::oracle(layer, x, residual, epilogue)
}
use im2win::Epilogue;
use im2win_candle::{Activation, Conv2d, Conv2dConfig, Precision};

/// Whether a missing GPU fails the test (`IM2WIN_REQUIRE_GPU=1`) instead of skipping it.
fn require_gpu() -> bool {
    std::env::var("IM2WIN_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// CUDA device 0 as `Device::new_cuda` makes it (candle's default: the per-thread stream), or
/// `None` (after a `SKIPPED` line) without a GPU or without im2win's kernels; a panic then
/// under `IM2WIN_REQUIRE_GPU=1`.
fn gpu(test: &str) -> Option<Device> {
    let device = if im2win::kernels().is_built() {
        Device::new_cuda(0).map_err(|e| e.to_string())
    } else {
        Err("im2win's GPU kernels were not built (no nvcc at build time)".to_string())
    };
    match device {
        Ok(device) => Some(device),
        Err(err) if require_gpu() => panic!("{test}: IM2WIN_REQUIRE_GPU=1 but: {err}"),
        Err(err) => {
            println!("im2win-candle-summary: {test}: SKIPPED: {err}");
            None
        }
    }
}

/// How far the GPU's output may be from the oracle: strict FP32 sums in another order; TF32,
/// bf16 and f16 as measured for the tensor-core kernels (README), with a margin.
fn oracle_tolerance(dtype: DType, precision: Precision) -> f64 {
    match (dtype, precision) {
        (DType::F32, Precision::Tf32) => 3e-5,
        (DType::F32, _) => 1e-5,
        (DType::F16, _) => 1e-3,
        _ => 6e-3,
    }
}

/// Compares im2win-candle's `layer` on `x` with candle_nn's layer and the oracle; returns the
/// two relative errors.
fn check(
    what: &str,
    layer: &Conv2d,
    reference: &candle_nn::Conv2d,
    x: &Tensor,
) -> Result<(f64, f64)> {
    let ours = layer.forward(x)?;
    assert!(ours.device().is_cuda(), "{what}: the output left the GPU");
    assert_eq!(ours.dtype(), x.dtype());
    let ours = values(&ours)?;
    let to_candle = relative_error(&ours, &values(&reference.forward(x)?)?);
    let to_oracle = relative_error(&ours, &oracle(layer, x, None)?);
    let dtype = x.dtype();
    let candle_tolerance = match layer.precision() {
        // TF32 against candle's strict float32.
        Precision::Tf32 if dtype == DType::F32 => 2e-3,
        _ => tolerance(dtype),
    };
    assert!(
        to_candle <= candle_tolerance,
        "{what}: {to_candle:e} from candle_nn"
    );
    assert!(
        to_oracle <= oracle_tolerance(dtype, layer.precision()),
        "{what}: {to_oracle:e} from the oracle"
    );
    Ok((to_candle, to_oracle))
}

/// Random layers of every dtype (and float32 at TF32) on CUDA tensors.
#[test]
fn random_layers_match_candle_nn_and_the_oracle() -> Result<()> {
    let Some(device) = gpu("random_layers_match_candle_nn_and_the_oracle") else {
        return Ok(());
    };
    let mut rng = rng(29);
    let mut worst = Vec::new();
    for round in 0..100 {
        // Channel counts up to 40 cross the multiples of 8 that the vector-load kernels need.
        let case = Case::random(&mut rng, 20, 40);
        for (dtype, precision) in [
            (DType::F32, Precision::Strict),
            (DType::F32, Precision::Tf32),
            (DType::BF16, Precision::Strict),
            (DType::F16, Precision::Strict),
        ] {
            let reference = case.candle_layer(&mut rng, dtype, &device)?;
            let layer = Conv2d::from(reference.clone()).with_precision(precision);
            let x = random(&mut rng, &case.input, dtype, &device)?;
            let what = format!("round {round} {dtype:?} {precision:?} {case:?}");
            worst.push((what.clone(), check(&what, &layer, &reference, &x)?));
        }
    }
    let max = |f: fn(&(f64, f64)) -> f64| worst.iter().map(|(_, e)| f(e)).fold(0.0, f64::max);
    println!(
        "im2win-candle-summary: random layers: {} runs, worst {:e} from candle_nn, {:e} from the oracle",
        worst.len(),
        max(|e| e.0),
        max(|e| e.1)
    );
    Ok(())
}

/// Prepared filters: a layer's forwards with its filter prepared (the default) equal, bit
/// for bit, those of the same layer transforming the filter every call, first and repeated
/// calls and another batch size alike; a weight that is a `Var` is not prepared, so a
/// forward after `Var::set` computes with the new values.
#[test]
fn prepared_filters_and_variables() -> Result<()> {
    let Some(device) = gpu("prepared_filters_and_variables") else {
        return Ok(());
    };
    let mut rng = rng(31);
    let mut runs = 0;
    for round in 0..12 {
        let case = Case::random(&mut rng, 16, 40);
        for dtype in [DType::F32, DType::BF16] {
            let reference = case.candle_layer(&mut rng, dtype, &device)?;
            let layer = Conv2d::from(reference).with_prepared_filter(true);
            let context = format!("round {round} {dtype:?}");
            runs += prepared_matches_unprepared(&mut rng, &case, layer, dtype, &device, &context)?;
        }
    }
    // A variable weight: the second forward sees the values set in between.
    let err = var_weight_error(&mut rng, &device, |layer, x| layer.forward(x))?;
    assert!(
        err < 1e-5,
        "a variable weight's new values were not used: {err:e}"
    );
    println!(
        "im2win-candle-summary: prepared filters: {runs} forwards bit-identical to unprepared ones; a Var weight updated: {err:e} from candle_nn"
    );
    Ok(())
}

/// ResNet-50's kinds of layer (stem, 3×3, strided 1×1) at batch 2, every dtype.
#[test]
fn resnet_layers_match_candle_nn_and_the_oracle() -> Result<()> {
    let Some(device) = gpu("resnet_layers_match_candle_nn_and_the_oracle") else {
        return Ok(());
    };
    let mut rng = rng(31);
    let cfg = |padding, stride| Conv2dConfig {
        padding,
        stride,
        ..Default::default()
    };
    let layers = [
        ([2, 3, 224, 224], [64, 3, 7, 7], cfg(3, 2)),
        ([2, 64, 56, 56], [64, 64, 3, 3], cfg(1, 1)),
        ([2, 256, 56, 56], [512, 256, 1, 1], cfg(0, 2)),
        ([2, 512, 7, 7], [512, 512, 3, 3], cfg(1, 1)),
    ];
    for (input, filter, config) in layers {
        for (dtype, precision) in [
            (DType::F32, Precision::Strict),
            (DType::F32, Precision::Tf32),
            (DType::BF16, Precision::Strict),
            (DType::F16, Precision::Strict),
        ] {
            let case = Case {
                input,
                filter,
                config,
                bias: true,
            };
            let reference = case.candle_layer(&mut rng, dtype, &device)?;
            let layer = Conv2d::from(reference.clone()).with_precision(precision);
            let x = random(&mut rng, &input, dtype, &device)?;
            let what = format!("{dtype:?} {precision:?} {case:?}");
            let (to_candle, to_oracle) = check(&what, &layer, &reference, &x)?;
            println!(
                "im2win-candle-summary: {what}: {to_candle:e} from candle_nn, {to_oracle:e} from the oracle"
            );
        }
    }
    Ok(())
}

/// Fused activation and residual, on views at offsets (contiguous, not at the start of their
/// allocation; odd element offsets leave the operands misaligned for the vector loads, and
/// the engine must choose kernels that read them element by element) and on strided views.
#[test]
fn epilogues_and_views() -> Result<()> {
    let Some(device) = gpu("epilogues_and_views") else {
        return Ok(());
    };
    let mut rng = rng(37);
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        // C = 16 and K = 24: the tensor-core kernels with vector loads would take these
        // shapes at aligned addresses.
        let case = Case::padded([2, 16, 13, 11], [24, 16, 3, 3], 1);
        let reference = case.candle_layer(&mut rng, dtype, &device)?;
        // Views into flat tensors at element offsets 0, 1 and 4: contiguous, the input and
        // the residual at addresses aligned to 16, 2 or 4 (bf16, f16) or 4 or 16 (f32) bytes.
        let (x_len, y_len) = (2 * 16 * 13 * 11, 2 * 24 * 13 * 11);
        let x_whole = random(&mut rng, &[x_len + 4], dtype, &device)?;
        let residual_whole = random(&mut rng, &[y_len + 4], dtype, &device)?;
        for start in [0, 1, 4] {
            let x = x_whole.narrow(0, start, x_len)?.reshape((2, 16, 13, 11))?;
            let residual = residual_whole
                .narrow(0, start, y_len)?
                .reshape((2, 24, 13, 11))?;
            assert!(x.is_contiguous() && residual.is_contiguous());
            assert_eq!(x.layout().start_offset(), start);
            assert_eq!(residual.layout().start_offset(), start);
            for activation in [Activation::Identity, Activation::Relu, Activation::Silu] {
                let layer = Conv2d::from(reference.clone()).with_activation(activation);
                let what = format!("{dtype:?} {activation} start {start}");
                let ours = values(&layer.forward_with_residual(&x, &residual)?)?;
                let err = relative_error(&ours, &oracle(&layer, &x, Some(&residual))?);
                assert!(
                    err <= oracle_tolerance(dtype, Precision::Strict),
                    "{what}: {err:e}"
                );
                let ours = values(&layer.forward(&x)?)?;
                let err = relative_error(&ours, &oracle(&layer, &x, None)?);
                assert!(
                    err <= oracle_tolerance(dtype, Precision::Strict),
                    "{what}: {err:e}"
                );
            }
        }
        // A transposed (strided) input is made contiguous first.
        let x = random(&mut rng, &[2, 16, 11, 13], dtype, &device)?.transpose(2, 3)?;
        let layer = Conv2d::from(reference.clone());
        check(&format!("{dtype:?} strided"), &layer, &reference, &x)?;
    }
    Ok(())
}

/// Grouped and depthwise layers run on CUDA tensors (against candle_nn's own grouped
/// convolution and the oracle), and operands on different devices are an error.
#[test]
fn groups_and_refusals_on_cuda() -> Result<()> {
    let Some(device) = gpu("groups_and_refusals_on_cuda") else {
        return Ok(());
    };
    let mut rng = rng(23);
    for (input, filter, groups) in [
        ([2, 8, 9, 11], [12, 2, 3, 3], 4),
        ([2, 16, 14, 14], [16, 1, 3, 3], 16),
        ([1, 12, 10, 10], [24, 1, 3, 3], 12),
    ] {
        let case = Case {
            input,
            filter,
            config: Conv2dConfig {
                padding: 1,
                groups,
                ..Default::default()
            },
            bias: true,
        };
        for dtype in [DType::F32, DType::BF16] {
            let reference = case.candle_layer(&mut rng, dtype, &device)?;
            let layer = Conv2d::from(reference.clone());
            let x = random(&mut rng, &case.input, dtype, &device)?;
            check(
                &format!("{dtype:?} groups {groups}"),
                &layer,
                &reference,
                &x,
            )?;
        }
    }
    let x = Tensor::ones((1, 4, 5, 5), DType::F32, &device)?;
    let layer = Conv2d::new(
        Tensor::ones((8, 4, 3, 3), DType::F32, &device)?,
        Some(Tensor::ones(8, DType::F32, &Device::Cpu)?),
        Conv2dConfig::default(),
    );
    let err = layer.forward(&x).unwrap_err().to_string();
    assert!(err.contains("bias"), "{err}");
    Ok(())
}

/// A forward queues its work and returns: with the stream busy for a long time (a chain of
/// large matrix products queued first), the call returns long before the stream is idle,
/// and its result, read afterwards, is right. A synchronisation or a blocking copy in the
/// call would wait for the products.
#[test]
fn forward_does_not_synchronise() -> Result<()> {
    let Some(device) = gpu("forward_does_not_synchronise") else {
        return Ok(());
    };
    let mut rng = rng(41);
    let case = Case::padded([4, 64, 28, 28], [64, 64, 3, 3], 1);
    let reference = case.candle_layer(&mut rng, DType::F32, &device)?;
    let layer = Conv2d::from(reference.clone());
    let x = random(&mut rng, &case.input, DType::F32, &device)?;
    // Warm-up: the engine is made, its kernels loaded, its workspace sized.
    layer.forward(&x)?;
    device.synchronize()?;

    let a = random(&mut rng, &[4096, 4096], DType::F32, &device)?;
    let mut busy = a.clone();
    let start = Instant::now();
    for _ in 0..20 {
        // 20 strict-FP32 products of 4096² matrices: 2.7 TFLOP, tens of milliseconds.
        busy = busy.matmul(&a)?.affine(1e-3, 0.0)?;
    }
    let queued = start.elapsed();
    let call = Instant::now();
    let y = layer.forward(&x)?;
    let forward = call.elapsed();
    device.synchronize()?;
    let idle = start.elapsed();
    println!(
        "im2win-candle-summary: forward_does_not_synchronise: products queued in {queued:?}, \
         forward returned in {forward:?}, stream idle after {idle:?}"
    );
    assert!(
        idle > Duration::from_millis(20) && forward * 4 < idle - queued,
        "the forward took {forward:?} of the {:?} the stream was busy",
        idle - queued
    );
    let err = relative_error(&values(&y)?, &values(&reference.forward(&x)?)?);
    assert!(err <= tolerance(DType::F32), "{err:e}");
    drop(busy);
    Ok(())
}

/// A forward (after a first one sized the engine's workspace) can be captured into a CUDA
/// graph: capture fails on any synchronisation, blocking allocation or blocking copy. The
/// graph's replay computes candle_nn's result.
#[test]
fn forward_captures_into_a_cuda_graph() -> Result<()> {
    let Some(device) = gpu("forward_captures_into_a_cuda_graph") else {
        return Ok(());
    };
    let mut rng = rng(43);
    for dtype in [DType::F32, DType::BF16] {
        let case = Case::padded([2, 32, 20, 20], [48, 32, 3, 3], 1);
        let reference = case.candle_layer(&mut rng, dtype, &device)?;
        let layer = Conv2d::from(reference.clone()).with_activation(Activation::Relu);
        let x = random(&mut rng, &case.input, dtype, &device)?;
        let out = Tensor::zeros((2, 48, 20, 20), dtype, &device)?;
        layer.forward(&x)?;
        device.synchronize()?;

        let stream = device.as_cuda_device()?.cuda_stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(candle_core::Error::wrap)?;
        let captured = layer.forward(&x).and_then(|y| out.slice_set(&y, 0, 0));
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        captured?;
        let graph = graph
            .map_err(candle_core::Error::wrap)?
            .ok_or_else(|| candle_core::Error::msg("the capture recorded nothing"))?;
        graph.launch().map_err(candle_core::Error::wrap)?;
        device.synchronize()?;
        let expected = reference.forward(&x)?.relu()?;
        let err = relative_error(&values(&out)?, &values(&expected)?);
        assert!(
            err <= tolerance(dtype),
            "{dtype:?}: replay {err:e} from candle_nn"
        );
    }
    Ok(())
}
