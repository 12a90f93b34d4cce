//! `cudnn:<ALGO>` and `cudnn-best`: cuDNN's forward convolution at the layer's precision.
//!
//! Descriptors: tensors and filter of the layer's element type in its layout (NCHW with a
//! KCRS filter, or NHWC with a KRSC one), a 2-D cross-correlation with the layer's padding,
//! stride and dilation, compute type float32, and the math type of the precision
//! ([`math_type`]): strict float32 `CUDNN_FMA_MATH` (no TF32 tensor cores); TF32
//! `CUDNN_DEFAULT_MATH` on float32 tensors (tensor cores allowed, TF32 included: what
//! PyTorch sets with `allow_tf32`); bf16 and f16 (`CUDNN_DATA_BFLOAT16` / `CUDNN_DATA_HALF`)
//! `CUDNN_TENSOR_OP_MATH`. Each of the eight algorithms is asked for its workspace size; one
//! that cuDNN does not support for the shape and type (the query or the launch fails), or
//! that needs more workspace than the cap, is skipped with the reason.

use std::sync::Arc;

use cudarc::cudnn::sys::{
    cudnnConvolutionFwdAlgo_t, cudnnConvolutionMode_t, cudnnMathType_t, cudnnTensorFormat_t,
};
use cudarc::cudnn::{ConvDescriptor, ConvForward, Cudnn, FilterDescriptor, TensorDescriptor};
use im2win::{Conv2dProblem, DType, Precision};

use super::{BenchElement, LayerRun};
use crate::error::{BenchError, Context, Result};
use crate::method::{CudnnAlgo, Method};
use crate::report::MethodResult;
use crate::timing::check_and_time;

/// cudarc's value of an algorithm.
pub fn sys_algo(algo: CudnnAlgo) -> cudnnConvolutionFwdAlgo_t {
    use cudnnConvolutionFwdAlgo_t::*;
    match algo {
        CudnnAlgo::ImplicitGemm => CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
        CudnnAlgo::ImplicitPrecompGemm => CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
        CudnnAlgo::Gemm => CUDNN_CONVOLUTION_FWD_ALGO_GEMM,
        CudnnAlgo::Direct => CUDNN_CONVOLUTION_FWD_ALGO_DIRECT,
        CudnnAlgo::Fft => CUDNN_CONVOLUTION_FWD_ALGO_FFT,
        CudnnAlgo::FftTiling => CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING,
        CudnnAlgo::Winograd => CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD,
        CudnnAlgo::WinogradNonfused => CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED,
    }
}

/// cuDNN's math type for a layer of `dtype` at `precision` (see the module documentation).
pub fn math_type(dtype: DType, precision: Precision) -> cudnnMathType_t {
    match (dtype, precision) {
        // FP32 accuracy (f32x3, f32acc) is compared with cuDNN's strict float32: the
        // accuracy asked for, by whatever algorithm (FFT and Winograd included) is fastest.
        (DType::F32, Precision::Strict | Precision::F32x3 | Precision::Accurate) => {
            cudnnMathType_t::CUDNN_FMA_MATH
        }
        (DType::F32, Precision::Tf32) => cudnnMathType_t::CUDNN_DEFAULT_MATH,
        (DType::Bf16 | DType::F16, _) => cudnnMathType_t::CUDNN_TENSOR_OP_MATH,
    }
}

/// The descriptors of one layer, for tensors of element type `T` (computed in float32).
pub struct CudnnConv<T> {
    conv: ConvDescriptor<f32>,
    x: TensorDescriptor<T>,
    w: FilterDescriptor<T>,
    y: TensorDescriptor<T>,
}

/// A dimension as cuDNN's `int`.
fn int(what: &str, value: usize) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| BenchError::new(format!("{what} = {value} does not fit cuDNN's int")))
}

impl<T: BenchElement> CudnnConv<T> {
    /// The descriptors for `problem`, whose element type must be `T`.
    ///
    /// # Errors
    /// Asymmetric padding (cuDNN's API takes one padding per axis), another element type
    /// than `T`, or a cuDNN error.
    pub fn new(cudnn: &Arc<Cudnn>, problem: &Conv2dProblem) -> Result<CudnnConv<T>> {
        if problem.dtype != T::DTYPE {
            return Err(BenchError::new(format!(
                "cuDNN descriptors of {} for a {} layer",
                T::DTYPE,
                problem.dtype
            )));
        }
        let pad = problem.padding;
        if pad.top != pad.bottom || pad.left != pad.right {
            return Err(BenchError::new(
                "cuDNN takes the same padding on both sides of an axis; this layer's is asymmetric",
            ));
        }
        let [n, c, h, w] = problem.input;
        let [k, filter_c, r, s] = problem.filter;
        let [_, _, p, q] = problem.output_shape().context("invalid layer")?;
        let mut conv = cudnn
            .create_conv2d::<f32>(
                [int("pad_h", pad.top)?, int("pad_w", pad.left)?],
                [
                    int("stride_h", problem.stride[0])?,
                    int("stride_w", problem.stride[1])?,
                ],
                [
                    int("dilation_h", problem.dilation[0])?,
                    int("dilation_w", problem.dilation[1])?,
                ],
                cudnnConvolutionMode_t::CUDNN_CROSS_CORRELATION,
            )
            .context("cuDNN convolution descriptor")?;
        // A grouped layer: cuDNN's group count, with the filter's C / groups channels
        // (`filter[1]`) in its descriptor below.
        conv.set_group_count(int("groups", problem.groups)?)
            .context("cuDNN group count")?;
        let math = math_type(problem.dtype, problem.precision);
        conv.set_math_type(math)
            .with_context(|| format!("cuDNN math type {math:?}"))?;
        // NHWC runs: NHWC tensors and the NHWC (KRSC) filter format; sizes stay NCHW-ordered.
        let format = match (problem.layout, problem.filter_layout) {
            (im2win::Layout::Nchw, im2win::FilterLayout::Kcrs) => {
                cudnnTensorFormat_t::CUDNN_TENSOR_NCHW
            }
            (im2win::Layout::Nhwc, im2win::FilterLayout::Krsc) => {
                cudnnTensorFormat_t::CUDNN_TENSOR_NHWC
            }
            _ => {
                return Err(BenchError::new(
                    "cuDNN runs NCHW with KCRS filters or NHWC with KRSC filters",
                ));
            }
        };
        let x = cudnn
            .create_4d_tensor::<T>(
                format,
                [int("N", n)?, int("C", c)?, int("H", h)?, int("W", w)?],
            )
            .context("cuDNN input descriptor")?;
        let w = cudnn
            .create_4d_filter::<T>(
                format,
                [
                    int("K", k)?,
                    int("C / groups", filter_c)?,
                    int("R", r)?,
                    int("S", s)?,
                ],
            )
            .context("cuDNN filter descriptor")?;
        let y = cudnn
            .create_4d_tensor::<T>(
                format,
                [int("N", n)?, int("K", k)?, int("P", p)?, int("Q", q)?],
            )
            .context("cuDNN output descriptor")?;
        Ok(CudnnConv { conv, x, w, y })
    }

    /// The forward operation over these descriptors.
    fn op(&self) -> ConvForward<'_, T, f32, T> {
        ConvForward {
            conv: &self.conv,
            x: &self.x,
            w: &self.w,
            y: &self.y,
        }
    }
}

/// Checks and times one algorithm.
///
/// # Errors
/// When cuDNN does not support the algorithm here (the workspace query or the launch
/// fails), its workspace exceeds the cap, or the workspace cannot be allocated.
pub fn run_algo<T: BenchElement>(
    layer: &mut LayerRun<'_, T>,
    conv: &CudnnConv<T>,
    algo: CudnnAlgo,
) -> Result<MethodResult> {
    let stream = layer.gpu.engine.stream().clone();
    let sys = sys_algo(algo);
    let workspace_bytes = conv
        .op()
        .get_workspace_size(sys)
        .context("not supported for this layer (workspace query)")?;
    if workspace_bytes as u64 > layer.max_workspace_bytes {
        return Err(BenchError::new(format!(
            "needs {:.2} GiB of workspace, more than the cap of {:.2} GiB (--max-workspace-gib)",
            workspace_bytes as f64 / GIB,
            layer.max_workspace_bytes as f64 / GIB
        )));
    }
    let mut workspace = if workspace_bytes > 0 {
        Some(
            stream
                .alloc_zeros::<u8>(workspace_bytes)
                .with_context(|| format!("allocating {workspace_bytes} bytes of workspace"))?,
        )
    } else {
        None
    };
    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            // SAFETY: the descriptors describe tensors of `T` of exactly this layer's shapes
            // and layouts, and the buffers hold `input_len`, `filter_len` and `output_len`
            // elements of `T`; the workspace holds the bytes cuDNN asked for (or none when
            // it asked for 0). alpha and beta are float32 for every type (cuDNN's scaling
            // parameters of bf16 and f16 are float).
            unsafe {
                conv.op().launch(
                    sys,
                    workspace.as_mut(),
                    (T::from_f32(1.0), T::from_f32(0.0)),
                    &sets.inputs[i],
                    &sets.filters[i],
                    &mut sets.outputs[i],
                )
            }
            .context("cudnnConvolutionForward")
        },
    )?;
    Ok(MethodResult::new(
        Method::Cudnn(algo).to_string(),
        layer.gflop,
        times,
        workspace_bytes as u64,
        rel_err,
    ))
}

/// Bytes in a GiB.
const GIB: f64 = (1u64 << 30) as f64;

/// `cudnn-best` from the algorithms' results: the fastest whose result is right (not
/// flagged, at the run's precision: `MethodResult::flagged`); if every one is wrong, the
/// fastest of all (and it stays flagged). Its `detail`
/// names the algorithm.
pub fn best(results: &[(CudnnAlgo, MethodResult)]) -> Option<MethodResult> {
    let fastest = |right_only: bool| {
        results
            .iter()
            .filter(|(_, r)| !right_only || !r.flagged)
            .min_by(|(_, a), (_, b)| a.median_ms.total_cmp(&b.median_ms))
    };
    let (algo, chosen) = fastest(true).or_else(|| fastest(false))?;
    let mut best = chosen.clone();
    best.method = Method::CudnnBest.to_string();
    best.detail = Some(algo.name().to_string());
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::times;

    #[test]
    fn math_types_follow_the_precision() {
        use cudnnMathType_t::*;
        assert_eq!(math_type(DType::F32, Precision::Strict), CUDNN_FMA_MATH);
        assert_eq!(math_type(DType::F32, Precision::Tf32), CUDNN_DEFAULT_MATH);
        assert_eq!(math_type(DType::F32, Precision::F32x3), CUDNN_FMA_MATH);
        assert_eq!(math_type(DType::F32, Precision::Accurate), CUDNN_FMA_MATH);
        assert_eq!(
            math_type(DType::Bf16, Precision::Strict),
            CUDNN_TENSOR_OP_MATH
        );
        assert_eq!(
            math_type(DType::F16, Precision::Strict),
            CUDNN_TENSOR_OP_MATH
        );
    }

    #[test]
    fn algorithms_map_to_cudnn_values() {
        for (i, algo) in CudnnAlgo::ALL.into_iter().enumerate() {
            assert_eq!(sys_algo(algo) as u32, i as u32, "{algo:?}");
        }
    }

    fn result(algo: CudnnAlgo, ms: f64, rel_err: f64) -> (CudnnAlgo, MethodResult) {
        (
            algo,
            MethodResult::new(Method::Cudnn(algo).to_string(), 1.0, times(ms), 7, rel_err),
        )
    }

    #[test]
    fn best_is_the_fastest_right_algorithm() {
        assert_eq!(best(&[]), None);
        let results = [
            result(CudnnAlgo::ImplicitGemm, 2.0, 1e-7),
            result(CudnnAlgo::Fft, 0.5, 3e-4),
            result(CudnnAlgo::ImplicitPrecompGemm, 1.0, 1e-7),
        ];
        let b = best(&results).unwrap();
        assert_eq!(b.method, "cudnn-best");
        assert_eq!(b.detail.as_deref(), Some("IMPLICIT_PRECOMP_GEMM"));
        assert_eq!(b.median_ms, 1.0);
        assert!(!b.flagged);
        // All wrong: the fastest, still flagged.
        let wrong = [
            result(CudnnAlgo::Fft, 0.5, 1e-3),
            result(CudnnAlgo::Gemm, 0.7, f64::NAN),
        ];
        let b = best(&wrong).unwrap();
        assert_eq!(b.detail.as_deref(), Some("FFT"));
        assert!(b.flagged);
    }
}
