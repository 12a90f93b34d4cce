//! `direct`: the plain direct convolution kernel `im2win_direct_f32` (the paper's direct
//! baseline), one thread per output, float32 accumulation, no extra memory. The kernel is in
//! the benchmark's own module (`bench/build.rs`), not in the library's fatbin.

use cudarc::driver::PushKernelArg;
use im2win::codegen::catalogue::baselines;
use im2win::{ConvParams, DType, Element, Precision};

use super::LayerRun;
use crate::error::{BenchError, Context, Result};
use crate::method::Method;
use crate::report::MethodResult;
use crate::timing::check_and_time;

/// Checks and times `direct` on the layer.
///
/// # Errors
/// For a layer that is not strict float32, when the kernel is missing (the benchmark's
/// module was built without nvcc) or a launch fails.
pub fn run<T: Element>(layer: &mut LayerRun<'_, T>) -> Result<MethodResult> {
    // The kernel computes in strict float32 on float32 tensors.
    if (layer.problem.dtype, layer.problem.precision) != (DType::F32, Precision::Strict) {
        return Err(BenchError::new(format!(
            "the direct baseline computes strict float32 only, not {}",
            layer.problem.numeric_name()
        )));
    }
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let kernel = engine
        .function(baselines::DIRECT_F32)
        .context("loading im2win_direct_f32")?;
    let params = ConvParams::new(&layer.problem, false).context("kernel parameters")?;
    let config = engine.grid_stride_config(layer.shape.output_len);
    // No bias: the kernel does not read the pointer when has_bias == 0.
    let no_bias: u64 = 0;
    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            let mut launch = stream.launch_builder(&kernel);
            launch
                .arg(&sets.inputs[i])
                .arg(&sets.filters[i])
                .arg(&no_bias)
                .arg(&mut sets.outputs[i])
                .arg(&params);
            // SAFETY: `im2win_direct_f32(const float* x, const float* f, const float* bias,
            // float* y, ConvParams p)` (DESIGN.md), grid-stride over N·K·P·Q; the buffers hold
            // `input_len`, `filter_len` and `output_len` floats of this problem.
            unsafe { launch.launch(config) }.context("launching im2win_direct_f32")?;
            Ok(())
        },
    )?;
    Ok(MethodResult::new(
        Method::Direct.to_string(),
        layer.gflop,
        times,
        0,
        rel_err,
    ))
}
