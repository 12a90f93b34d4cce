//! `im2win`: the engine's dispatch (`Engine::plan`, then `Engine::conv2d_with`, which is what
//! `Engine::conv2d` does) with a preallocated workspace; `im2win:<kernel>`: one kernel forced
//! (`Plan::for_spec`). The input and filter transforms run inside the timed region; they are
//! also timed alone. The layer's epilogue (bias, residual, activation) runs fused.
//! `im2win-unfused`: the same convolution without its epilogue, then the epilogue as a
//! separate elementwise kernel over the output (what a framework without fusion does).
//!
//! Every element type runs through the same calls: bf16, f16 and TF32 layers in NHWC with a
//! KRSC filter run on the tensor-core kernels (no transforms, no workspace); for a layer of
//! a type or precision that the engine has no kernels for (NCHW bf16, f16 or TF32, a
//! tensor-core family built out by its cargo feature), planning fails with
//! `Error::NoKernelForType` (or `RequirementUnmet`) and the method is skipped with that
//! reason — never run at another precision.

use cudarc::driver::PushKernelArg;
use im2win::codegen::KernelSpec;
use im2win::codegen::catalogue::support;
use im2win::{ConvParams, DType, Element, Plan};

use super::LayerRun;
use crate::error::{BenchError, Context, Result};
use crate::method::Method;
use crate::report::MethodResult;
use crate::stats::Summary;
use crate::timing::{check_and_time, time_rotated};

/// Checks and times `im2win` (the engine's dispatch) on the layer.
///
/// # Errors
/// When planning, allocating the workspace or a launch fails.
pub fn run<T: Element>(layer: &mut LayerRun<'_, T>) -> Result<MethodResult> {
    let plan = layer
        .gpu
        .engine
        .plan(&layer.problem)
        .context("planning the im2win convolution")?;
    run_plan(layer, &plan, Method::Im2win)
}

/// Checks and times one kernel, forced (`im2win:<kernel>`), with its reduction unsplit.
///
/// # Errors
/// When the kernel does not compute the layer's geometry, or as [`run`].
pub fn run_kernel<T: Element>(
    layer: &mut LayerRun<'_, T>,
    spec: KernelSpec,
) -> Result<MethodResult> {
    let plan = Plan::for_spec(&layer.problem, spec)
        .with_context(|| format!("planning the layer with {spec}"))?;
    run_plan(layer, &plan, Method::Kernel(spec))
}

/// Checks and times `plan` exactly as `Engine::conv2d` runs it, transforms included, and
/// the transforms alone.
fn run_plan<T: Element>(
    layer: &mut LayerRun<'_, T>,
    plan: &Plan,
    method: Method,
) -> Result<MethodResult> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let workspace_bytes = plan.workspace_bytes();
    let mut workspace = workspace_for(&stream, plan)?;

    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            engine
                .conv2d_with_residual(
                    plan,
                    &sets.inputs[i],
                    &sets.filters[i],
                    sets.biases.get(i).map(|b| b as _),
                    sets.residuals.get(i).map(|r| r as _),
                    &mut sets.outputs[i],
                    Some(&mut workspace),
                )
                .context("im2win conv2d")
        },
    )?;
    // A kernel that reads input and filter in place (the tensor-core kernels) has none.
    let transforms = if plan.transforms_filter() || !plan.input_in_place() {
        Some(time_transforms(layer, plan, &mut workspace)?.median_ms)
    } else {
        None
    };

    let host_ms = times.host_ms;
    let mut result = MethodResult::new(
        method.to_string(),
        layer.gflop,
        times,
        workspace_bytes as u64,
        rel_err,
    );
    result.transform_ms = transforms;
    result.detail = Some(format!(
        "{}, host {:.1} us a call",
        kernel_detail(plan),
        host_ms * 1e3
    ));
    Ok(result)
}

/// The kernel of `plan` and its split, for a result's detail.
fn kernel_detail(plan: &Plan) -> String {
    match plan.splits() {
        1 => plan.kernel().name(),
        splits => format!("{} split {splits}", plan.kernel().name()),
    }
}

/// A workspace for `plan` on `stream`: at least one byte (the driver allocates nothing of
/// size 0, and many plans need no workspace).
fn workspace_for(
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    plan: &Plan,
) -> Result<cudarc::driver::CudaSlice<u8>> {
    let bytes = plan.workspace_bytes();
    stream
        .alloc_zeros::<u8>(bytes.max(1))
        .with_context(|| format!("allocating the im2win workspace ({bytes} bytes)"))
}

/// Checks and times `im2win-prepared`: dispatch's plan for the layer reading each buffer
/// set's filter prepared once beforehand (`Engine::prepare_filter`, not timed), run by
/// `Engine::conv2d_prepared` with a preallocated workspace of the prepared plan's size (no
/// filter part). The extra bytes are that workspace; the prepared filters' bytes (which an
/// inference engine holds instead of the weights) are in the detail.
///
/// # Errors
/// As [`run`].
pub fn run_prepared<T: Element>(layer: &mut LayerRun<'_, T>) -> Result<MethodResult> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let problem = layer.problem;
    let prepared = layer
        .sets
        .filters
        .iter()
        .map(|filter| engine.prepare_filter(&problem, filter))
        .collect::<im2win::Result<Vec<_>>>()
        .context("preparing the filters")?;
    let plan = prepared
        .first()
        .map(|p| p.plan().clone())
        .ok_or_else(|| BenchError::new("no buffer set"))?;
    let workspace_bytes = plan.workspace_bytes();
    let mut workspace = workspace_for(&stream, &plan)?;
    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            engine
                .conv2d_prepared(
                    &problem,
                    &sets.inputs[i],
                    &prepared[i],
                    sets.biases.get(i).map(|b| b as _),
                    sets.residuals.get(i).map(|r| r as _),
                    &mut sets.outputs[i],
                    Some(&mut workspace),
                )
                .context("im2win conv2d_prepared")
        },
    )?;
    let host_ms = times.host_ms;
    let mut result = MethodResult::new(
        Method::Im2winPrepared.to_string(),
        layer.gflop,
        times,
        workspace_bytes as u64,
        rel_err,
    );
    result.detail = Some(format!(
        "{}, prepared filter {:?} of {} bytes, host {:.1} us a call",
        kernel_detail(&plan),
        plan.filter_format(),
        prepared[0].bytes(),
        host_ms * 1e3
    ));
    Ok(result)
}

/// Checks and times `im2win-unfused`: dispatch's plain convolution (no bias) into a scratch
/// output, then the epilogue (bias, residual, activation) by a separate elementwise kernel
/// (im2win's split reduction over one split: read, combine, write), both in the timed region.
///
/// # Errors
/// As [`run`].
pub fn run_unfused<T: Element>(layer: &mut LayerRun<'_, T>) -> Result<MethodResult> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let problem = layer.problem;
    // The split reduction of the layer's element type reads float32 partial sums: only
    // float32's scratch output is that. (16-bit types would need an elementwise kernel of
    // their own.)
    if T::DTYPE != DType::F32 {
        return Err(BenchError::new(format!(
            "the unfused epilogue is measured for float32 outputs only, not {}",
            T::DTYPE
        )));
    }
    let plan = engine
        .plan(&problem.without_epilogue())
        .context("planning the im2win convolution")?;
    let workspace_bytes = plan.workspace_bytes();
    let mut workspace = workspace_for(&stream, &plan)?;
    let mut scratch = stream
        .alloc_zeros::<T>(layer.shape.output_len)
        .context("allocating the convolution's own output")?;
    let eltwise = engine
        .function(support::split_reduce(T::DTYPE))
        .context("loading the elementwise epilogue kernel")?;
    let params = ConvParams::new(&problem, !layer.sets.biases.is_empty()).context("parameters")?;
    let config = engine.grid_stride_config(layer.shape.output_len);
    let one: i32 = 1;
    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            engine
                .conv2d_with(
                    &plan,
                    &sets.inputs[i],
                    &sets.filters[i],
                    None,
                    &mut scratch,
                    Some(&mut workspace),
                )
                .context("im2win conv2d")?;
            let mut launch = stream.launch_builder(&eltwise);
            let no_operand: u64 = 0;
            launch.arg(&scratch);
            match sets.biases.get(i) {
                Some(bias) => launch.arg(bias),
                None => launch.arg(&no_operand),
            };
            match sets.residuals.get(i) {
                Some(residual) => launch.arg(residual),
                None => launch.arg(&no_operand),
            };
            launch.arg(&mut sets.outputs[i]).arg(&params).arg(&one);
            // SAFETY: `im2win_split_reduce_f32(const float* part, const float* bias, const
            // float* residual, float* y, ConvParams p, int splits)` with one split: `scratch`
            // and `y` hold `output_len` floats, the bias K (or null with has_bias == 0), the
            // residual `output_len` (or null with has_residual == 0); grid-stride.
            unsafe { launch.launch(config) }.context("launching the elementwise epilogue")?;
            Ok(())
        },
    )?;
    let mut result = MethodResult::new(
        crate::method::Method::Im2winUnfused.to_string(),
        layer.gflop,
        times,
        (workspace_bytes + T::DTYPE.size_bytes() * layer.shape.output_len) as u64,
        rel_err,
    );
    result.detail = Some(format!("{} + elementwise epilogue", plan.kernel().name()));
    Ok(result)
}

/// Times the layout transforms alone, launched exactly as `Engine::conv2d` launches them
/// (`Engine::transforms`: same kernels, parameters, grids and workspace layout).
fn time_transforms<T: Element>(
    layer: &mut LayerRun<'_, T>,
    plan: &Plan,
    workspace: &mut cudarc::driver::CudaSlice<u8>,
) -> Result<Summary> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    time_rotated(&stream, &mut layer.sets, layer.timing, |sets, i| {
        engine
            .transforms(plan, &sets.inputs[i], &sets.filters[i], workspace)
            .context("launching the transforms")
    })
}
