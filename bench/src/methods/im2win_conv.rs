//! `im2win`: the engine's dispatch (`Engine::conv2d`) with a preallocated workspace. The
//! input and filter transforms run inside the timed region; they are also timed alone.

use cudarc::driver::{DevicePtrMut, PushKernelArg};
use im2win::ConvParams;
use im2win::codegen::catalogue::support;

use super::LayerRun;
use crate::error::{Context, Result};
use crate::method::Method;
use crate::report::MethodResult;
use crate::stats::Summary;
use crate::timing::{check_and_time, time_rotated};

/// Checks and times `im2win` on the layer.
///
/// # Errors
/// When planning, allocating the workspace or a launch fails.
pub fn run(layer: &mut LayerRun<'_>) -> Result<MethodResult> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let problem = layer.problem;
    let plan = engine
        .plan(&problem)
        .context("planning the im2win convolution")?;
    let workspace_bytes = plan.workspace_bytes();
    let mut workspace = stream
        .alloc_zeros::<u8>(workspace_bytes)
        .with_context(|| format!("allocating the im2win workspace ({workspace_bytes} bytes)"))?;

    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            engine
                .conv2d(
                    &problem,
                    &sets.inputs[i],
                    &sets.filters[i],
                    None,
                    &mut sets.outputs[i],
                    Some(&mut workspace),
                )
                .context("im2win conv2d")
        },
    )?;
    let transforms = time_transforms(layer, &mut workspace)?;

    let mut result = MethodResult::new(
        Method::Im2win.to_string(),
        layer.gflop,
        times,
        workspace_bytes as u64,
        rel_err,
    );
    result.transform_ms = Some(transforms.median_ms);
    result.detail = Some(plan.kernel().name());
    Ok(result)
}

/// Times the input and filter transforms alone, launched exactly as `Engine::conv2d`
/// launches them (same kernels, parameters, grids and workspace layout).
fn time_transforms(
    layer: &mut LayerRun<'_>,
    workspace: &mut cudarc::driver::CudaSlice<u8>,
) -> Result<Summary> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let input_transform = engine
        .function(support::INPUT_TRANSFORM_F32)
        .context("loading the input transform")?;
    let filter_transform = engine
        .function(support::FILTER_TRANSFORM_F32)
        .context("loading the filter transform")?;
    let params = ConvParams::new(&layer.problem, false).context("kernel parameters")?;
    let t = {
        let (ptr, _sync) = workspace.device_ptr_mut(&stream);
        ptr
    };
    let ft = t + layer.problem.filter_offset_bytes(&layer.shape) as u64;
    let input_config = engine.grid_stride_config(layer.shape.im2win_len);
    let filter_config = engine.grid_stride_config(layer.shape.filter_len);
    time_rotated(&stream, &mut layer.sets, layer.timing, |sets, i| {
        let mut launch = stream.launch_builder(&input_transform);
        launch.arg(&sets.inputs[i]).arg(&t).arg(&params);
        // SAFETY: `im2win_input_transform_f32(const float* x, float* t, ConvParams p)`;
        // the input holds `input_len` floats and the workspace (alive for the whole call)
        // `plan.workspace_bytes()`, which holds `im2win_len` floats from `t` on.
        unsafe { launch.launch(input_config) }.context("launching the input transform")?;
        let mut launch = stream.launch_builder(&filter_transform);
        launch.arg(&sets.filters[i]).arg(&ft).arg(&params);
        // SAFETY: `im2win_filter_transform_f32(const float* f, float* ft, ConvParams p)`;
        // the workspace holds `filter_len` floats from `ft` on.
        unsafe { launch.launch(filter_config) }.context("launching the filter transform")?;
        Ok(())
    })
}
