//! `im2col-cublas`: the explicit im2col kernel `im2win_im2col_f32` followed by one cuBLAS
//! strided-batched SGEMM per pass (the paper's GEMM baseline). The column buffer is the
//! method's extra memory. The im2col kernel is in the benchmark's own module
//! (`bench/build.rs`), not in the library's fatbin.
//!
//! The GEMM of image `n` is the row-major `Y[n] (K×PQ) = F (K×CRS) · col[n] (CRS×PQ)`.
//! cuBLAS is column-major, and a row-major `M×N` matrix is the column-major `N×M` one, so
//! it computes `Y[n]ᵀ (PQ×K) = col[n]ᵀ (PQ×CRS) · Fᵀ (CRS×K)` with no transposes:
//! `m = PQ, n = K, k = CRS`, `A = col[n]` (`lda = PQ`, batch stride `CRS·PQ`), `B = F`
//! (`ldb = CRS`, batch stride 0: one filter for every image), `C = Y[n]` (`ldc = PQ`, batch
//! stride `K·PQ`). cuBLAS runs in its default math mode: strict float32, no TF32.
//!
//! When the column buffer of the whole batch would exceed the workspace cap, the batch is
//! done in passes of as many images as fit (at least one).

use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig, StridedBatchedConfig};
use cudarc::driver::{LaunchConfig, PushKernelArg};
use im2win::codegen::catalogue::baselines;
use im2win::{Conv2dProblem, ConvParams};

use super::LayerRun;
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
pub fn run(layer: &mut LayerRun<'_>, blas: &CudaBlas) -> Result<MethodResult> {
    let engine = &layer.gpu.engine;
    let stream = engine.stream().clone();
    let problem = layer.problem;
    let [batch, c, h, w] = problem.input;
    let k = problem.filter[0];
    let [_, _, p, q] = layer.shape.output;
    let crs = layer.shape.reduction;
    let pq = p * q;
    let per_image = crs as u64 * pq as u64 * 4;
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
        .function(baselines::IM2COL_F32)
        .context("loading im2win_im2col_f32")?;
    let mut column = stream
        .alloc_zeros::<f32>(column_len)
        .with_context(|| format!("allocating the column buffer ({} bytes)", column_len * 4))?;
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
                    // SAFETY: `im2win_im2col_f32(const float* x, float* col, ConvParams p)`,
                    // grid-stride over images·C·R·S·P·Q; `x` is this pass's images of the input
                    // and `column` holds `chunk ≥ images` images' columns.
                    unsafe { launch.launch(pass.im2col) }.context("launching im2win_im2col_f32")?;
                }
                let mut y = sets.outputs[i].slice_mut(range(image_out));
                // SAFETY: the operands hold what the configuration reads and writes: `column`
                // images·CRS·PQ floats (lda = PQ), the filter K·CRS (ldb = CRS), `y` this pass's
                // images·K·PQ outputs (ldc = PQ); see the module documentation.
                unsafe { blas.gemm_strided_batched(pass.gemm, &column, &sets.filters[i], &mut y) }
                    .context("cublasSgemmStridedBatched")?;
            }
            Ok(())
        },
    )?;
    let mut result = MethodResult::new(
        Method::Im2colCublas.to_string(),
        layer.gflop,
        times,
        column_len as u64 * 4,
        rel_err,
    );
    if passes.len() > 1 {
        result.detail = Some(format!(
            "{} passes of up to {chunk} images (column buffer capped by --max-workspace-gib)",
            passes.len()
        ));
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
