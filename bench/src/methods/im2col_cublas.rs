//! `im2col-cublas`: the explicit im2col kernel (`im2win_im2col_f32`, or
//! `im2win_im2col_b16` for bf16 and f16, which copies 2-byte elements) followed by one cuBLAS
//! strided-batched GEMM per pass (the paper's GEMM baseline), at the layer's precision
//! ([`GemmKind`]): strict float32 `cublasSgemmStridedBatched` in the default math mode;
//! TF32 `cublasGemmStridedBatchedEx` on float32 with `CUBLAS_COMPUTE_32F_FAST_TF32`; bf16
//! and f16 `cublasGemmStridedBatchedEx` with 16-bit A, B and C and `CUBLAS_COMPUTE_32F`.
//! The column buffer is the method's extra memory. The im2col kernels are in the
//! benchmark's own module (`bench/build.rs`), not in the library's fatbin.
//!
//! The GEMM of image `n` is the row-major `Y[n] (K×PQ) = F (K×CRS) · col[n] (CRS×PQ)`.
//! cuBLAS is column-major, and a row-major `M×N` matrix is the column-major `N×M` one, so
//! it computes `Y[n]ᵀ (PQ×K) = col[n]ᵀ (PQ×CRS) · Fᵀ (CRS×K)` with no transposes:
//! `m = PQ, n = K, k = CRS`, `A = col[n]` (`lda = PQ`, batch stride `CRS·PQ`), `B = F`
//! (`ldb = CRS`, batch stride 0: one filter for every image), `C = Y[n]` (`ldc = PQ`, batch
//! stride `K·PQ`). cuBLAS's handle stays in its default math mode: strict float32 SGEMM
//! never uses TF32; only the TF32 compute type asks for it.
//!
//! When the column buffer of the whole batch would exceed the workspace cap, the batch is
//! done in passes of as many images as fit (at least one).

use cudarc::cublas::sys::{cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType};
use cudarc::cublas::{CudaBlas, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut, LaunchConfig, PushKernelArg};
use im2win::codegen::catalogue::baselines;
use im2win::{Conv2dProblem, ConvParams, DType, Element, Precision};

use super::{BenchElement, LayerRun};
use crate::error::{BenchError, Context, Result};
use crate::method::Method;
use crate::report::MethodResult;
use crate::timing::check_and_time;

/// One im2col + GEMM pass over `images` images starting at image `first`.
#[derive(Debug, Clone, Copy)]
struct Pass {
    first: usize,
    images: usize,
    params: ConvParams,
    im2col: LaunchConfig,
    gemm: StridedBatchedConfig<f32>,
}

/// The GEMM of `images` images: see the module documentation for the mapping.
fn gemm_config(pq: i32, k: i32, crs: i32, images: i32) -> StridedBatchedConfig<f32> {
    StridedBatchedConfig {
        gemm: GemmConfig {
            transa: cublasOperation_t::CUBLAS_OP_N,
            transb: cublasOperation_t::CUBLAS_OP_N,
            m: pq,
            n: k,
            k: crs,
            alpha: 1.0,
            lda: pq,
            ldb: crs,
            beta: 0.0,
            ldc: pq,
        },
        batch_size: images,
        stride_a: i64::from(crs) * i64::from(pq),
        stride_b: 0,
        stride_c: i64::from(k) * i64::from(pq),
    }
}

/// How the GEMM multiplies, from the layer's element type and precision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmKind {
    /// `cublasSgemmStridedBatched`: strict float32.
    Sgemm,
    /// `cublasGemmStridedBatchedEx` with A, B and C of `data` and compute type `compute`.
    Ex {
        /// The matrices' element type.
        data: cudaDataType,
        /// cuBLAS's compute type.
        compute: cublasComputeType_t,
    },
}

impl GemmKind {
    /// The GEMM of a layer of `dtype` at `precision`.
    pub fn of(dtype: DType, precision: Precision) -> GemmKind {
        match (dtype, precision) {
            // FP32 accuracy (f32x3, f32acc): the strict SGEMM.
            (DType::F32, Precision::Strict | Precision::F32x3 | Precision::Accurate) => {
                GemmKind::Sgemm
            }
            (DType::F32, Precision::Tf32) => GemmKind::Ex {
                data: cudaDataType::CUDA_R_32F,
                compute: cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
            },
            (DType::Bf16, _) => GemmKind::Ex {
                data: cudaDataType::CUDA_R_16BF,
                compute: cublasComputeType_t::CUBLAS_COMPUTE_32F,
            },
            (DType::F16, _) => GemmKind::Ex {
                data: cudaDataType::CUDA_R_16F,
                compute: cublasComputeType_t::CUBLAS_COMPUTE_32F,
            },
        }
    }

    /// Its name in the result's detail.
    fn describe(self) -> &'static str {
        match self {
            GemmKind::Sgemm => "cublasSgemmStridedBatched",
            GemmKind::Ex {
                compute: cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32,
                ..
            } => "cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F_FAST_TF32",
            GemmKind::Ex { .. } => "cublasGemmStridedBatchedEx, CUBLAS_COMPUTE_32F",
        }
    }

    /// Runs the GEMM `cfg` on `col` (A), `filter` (B) and `y` (C), on `stream` (the
    /// handle's).
    ///
    /// # Safety
    /// The operands hold the matrices `cfg` describes, of the element type this kind reads.
    unsafe fn run<T: Element>(
        self,
        blas: &CudaBlas,
        stream: &CudaStream,
        cfg: &StridedBatchedConfig<f32>,
        col: &impl DevicePtr<T>,
        filter: &impl DevicePtr<T>,
        y: &mut impl DevicePtrMut<T>,
    ) -> std::result::Result<(), cudarc::cublas::result::CublasError> {
        let g = &cfg.gemm;
        let (a, _a) = col.device_ptr(stream);
        let (b, _b) = filter.device_ptr(stream);
        let (c, _c) = y.device_ptr_mut(stream);
        match self {
            // SAFETY (both arms): the caller's contract; alpha and beta are float32 for every
            // kind (the 16-bit GEMMs compute in float32).
            GemmKind::Sgemm => unsafe {
                cudarc::cublas::result::sgemm_strided_batched(
                    *blas.handle(),
                    g.transa,
                    g.transb,
                    g.m,
                    g.n,
                    g.k,
                    &g.alpha,
                    a as *const f32,
                    g.lda,
                    cfg.stride_a,
                    b as *const f32,
                    g.ldb,
                    cfg.stride_b,
                    &g.beta,
                    c as *mut f32,
                    g.ldc,
                    cfg.stride_c,
                    cfg.batch_size,
                )
            },
            GemmKind::Ex { data, compute } => unsafe {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *blas.handle(),
                    g.transa,
                    g.transb,
                    g.m,
                    g.n,
                    g.k,
                    (&g.alpha) as *const f32 as *const _,
                    a as *const _,
                    data,
                    g.lda,
                    cfg.stride_a,
                    b as *const _,
                    data,
                    g.ldb,
                    cfg.stride_b,
                    (&g.beta) as *const f32 as *const _,
                    c as *mut _,
                    data,
                    g.ldc,
                    cfg.stride_c,
                    cfg.batch_size,
                    compute,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            },
        }
    }
}

/// Images per pass: as many as keep the column buffer within `max_bytes`, at least 1, at
/// most the batch.
pub fn images_per_pass(batch: usize, column_bytes_per_image: u64, max_bytes: u64) -> usize {
    let fit = max_bytes / column_bytes_per_image.max(1);
    usize::try_from(fit)
        .unwrap_or(usize::MAX)
        .clamp(1, batch.max(1))
}

/// A dimension as cuBLAS's `int`.
fn int(what: &str, value: usize) -> Result<i32> {
    i32::try_from(value)
        .map_err(|_| BenchError::new(format!("{what} = {value} does not fit cuBLAS's int")))
}

/// Checks and times `im2col-cublas` on the layer.
///
/// # Errors
/// When a dimension does not fit cuBLAS's `int`, the column buffer cannot be allocated, or
/// a launch fails.
pub fn run<T: BenchElement>(layer: &mut LayerRun<'_, T>, blas: &CudaBlas) -> Result<MethodResult> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let problem = layer.problem;
    if problem.dtype != T::DTYPE {
        return Err(BenchError::new("buffers of another type than the layer's"));
    }
    let gemm = GemmKind::of(problem.dtype, problem.precision);
    let (im2col_name, element) = match T::DTYPE {
        DType::F32 => (baselines::IM2COL_F32, 4),
        DType::Bf16 | DType::F16 => (baselines::IM2COL_B16, 2),
    };
    let [batch, c, h, w] = problem.input;
    let k = problem.filter[0];
    let [_, _, p, q] = layer.shape.output;
    let crs = layer.shape.reduction;
    let pq = p * q;
    let per_image = crs as u64 * pq as u64 * element;
    let chunk = images_per_pass(batch, per_image, layer.max_workspace_bytes);
    let column_len = chunk * crs * pq;
    let (pq32, k32, crs32) = (int("P·Q", pq)?, int("K", k)?, int("C·R·S", crs)?);

    let passes = (0..batch)
        .step_by(chunk)
        .map(|first| {
            let images = chunk.min(batch - first);
            let part = Conv2dProblem {
                input: [images, c, h, w],
                ..problem
            };
            Ok(Pass {
                first,
                images,
                params: ConvParams::new(&part, false).context("kernel parameters")?,
                im2col: engine.grid_stride_config(images * crs * pq),
                gemm: gemm_config(pq32, k32, crs32, int("images per pass", images)?),
            })
        })
        .collect::<Result<Vec<Pass>>>()?;
    let kernel = engine
        .function(im2col_name)
        .with_context(|| format!("loading {im2col_name}"))?;
    let column_bytes = column_len as u64 * element;
    let mut column = stream
        .alloc_zeros::<T>(column_len)
        .with_context(|| format!("allocating the column buffer ({column_bytes} bytes)"))?;
    let (image_in, image_out) = (c * h * w, k * pq);

    let (times, rel_err) = check_and_time(
        &stream,
        &mut layer.sets,
        &layer.reference,
        layer.timing,
        |sets, i| {
            for pass in &passes {
                let range = |per_image: usize| {
                    pass.first * per_image..(pass.first + pass.images) * per_image
                };
                {
                    let x = sets.inputs[i].slice(range(image_in));
                    let mut launch = stream.launch_builder(&kernel);
                    launch.arg(&x).arg(&mut column).arg(&pass.params);
                    // SAFETY: `im2win_im2col_f32(const float* x, float* col, ConvParams p)` or
                    // `im2win_im2col_b16` (the same with 2-byte elements) for elements of `T`,
                    // grid-stride over images·C·R·S·P·Q; `x` is this pass's images of the input
                    // and `column` holds `chunk ≥ images` images' columns.
                    unsafe { launch.launch(pass.im2col) }
                        .with_context(|| format!("launching {im2col_name}"))?;
                }
                let mut y = sets.outputs[i].slice_mut(range(image_out));
                // SAFETY: the operands hold what the configuration reads and writes, elements
                // of `T` (the type `gemm` reads): `column` images·CRS·PQ (lda = PQ), the filter
                // K·CRS (ldb = CRS), `y` this pass's images·K·PQ outputs (ldc = PQ); see the
                // module documentation.
                unsafe { gemm.run(blas, &stream, &pass.gemm, &column, &sets.filters[i], &mut y) }
                    .context(gemm.describe())?;
            }
            Ok(())
        },
    )?;
    let mut result = MethodResult::new(
        Method::Im2colCublas.to_string(),
        layer.gflop,
        times,
        column_bytes,
        rel_err,
    );
    if passes.len() > 1 {
        result.detail = Some(format!(
            "{} passes of up to {chunk} images (column buffer capped by --max-workspace-gib)",
            passes.len()
        ));
    }
    if gemm != GemmKind::Sgemm {
        let passes = result.detail.take();
        result.detail = Some(match passes {
            Some(passes) => format!("{}; {passes}", gemm.describe()),
            None => gemm.describe().to_string(),
        });
    }
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The column-major GEMM of the configuration, run on the host, gives the row-major
    /// `Y[n] = F · col[n]` of every image: the mapping is not transposed.
    #[test]
    fn gemm_mapping_gives_nchw_output() {
        let (images, k, crs, pq) = (3usize, 4usize, 5usize, 6usize);
        let cfg = gemm_config(pq as i32, k as i32, crs as i32, images as i32);
        let col: Vec<f32> = (0..images * crs * pq)
            .map(|v| (v % 7) as f32 - 3.0)
            .collect();
        let f: Vec<f32> = (0..k * crs).map(|v| (v % 5) as f32 - 2.0).collect();
        let mut y = vec![0f32; images * k * pq];
        // cuBLAS semantics, column-major: C[i + j·ldc] = Σ_l A[i + l·lda] · B[l + j·ldb].
        let g = cfg.gemm;
        assert_eq!(
            (g.transa, g.transb),
            (
                cublasOperation_t::CUBLAS_OP_N,
                cublasOperation_t::CUBLAS_OP_N
            )
        );
        for b in 0..cfg.batch_size as usize {
            let (a0, b0, c0) = (
                b * cfg.stride_a as usize,
                b * cfg.stride_b as usize,
                b * cfg.stride_c as usize,
            );
            for i in 0..g.m as usize {
                for j in 0..g.n as usize {
                    let mut sum = g.beta * y[c0 + i + j * g.ldc as usize];
                    for l in 0..g.k as usize {
                        sum += g.alpha
                            * col[a0 + i + l * g.lda as usize]
                            * f[b0 + l + j * g.ldb as usize];
                    }
                    y[c0 + i + j * g.ldc as usize] = sum;
                }
            }
        }
        // Row-major reference: Y[n][k][pix] = Σ_kk F[k][kk] · col[n][kk][pix].
        for n in 0..images {
            for kk in 0..k {
                for pix in 0..pq {
                    let want: f32 = (0..crs)
                        .map(|l| f[kk * crs + l] * col[(n * crs + l) * pq + pix])
                        .sum();
                    assert_eq!(y[(n * k + kk) * pq + pix], want, "n={n} k={kk} pix={pix}");
                }
            }
        }
    }

    #[test]
    fn gemm_kinds_follow_the_precision() {
        assert_eq!(GemmKind::of(DType::F32, Precision::Strict), GemmKind::Sgemm);
        let ex = |data, compute| GemmKind::Ex { data, compute };
        assert_eq!(
            GemmKind::of(DType::F32, Precision::Tf32),
            ex(
                cudaDataType::CUDA_R_32F,
                cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
            )
        );
        assert_eq!(
            GemmKind::of(DType::Bf16, Precision::Strict),
            ex(
                cudaDataType::CUDA_R_16BF,
                cublasComputeType_t::CUBLAS_COMPUTE_32F
            )
        );
        assert_eq!(
            GemmKind::of(DType::F16, Precision::Strict),
            ex(
                cudaDataType::CUDA_R_16F,
                cublasComputeType_t::CUBLAS_COMPUTE_32F
            )
        );
        assert!(
            GemmKind::of(DType::F32, Precision::Tf32)
                .describe()
                .contains("FAST_TF32")
        );
    }

    #[test]
    fn passes_respect_the_cap() {
        let gib = 1u64 << 30;
        // conv4 of the paper at batch 128: 1568·11881 floats = 74.5 MB per image, 9.5 GB in
        // all; 115 images fit in 8 GiB, so it runs as passes of 115 and 13 images.
        let per_image = 1568u64 * 11881 * 4;
        assert_eq!(images_per_pass(128, per_image, 8 * gib), 115);
        assert_eq!(images_per_pass(128, per_image, 1 << 50), 128);
        // One image larger than the cap still runs, one image at a time.
        assert_eq!(images_per_pass(128, 16 * gib, 8 * gib), 1);
        assert_eq!(images_per_pass(1, 0, 8 * gib), 1);
    }
}
