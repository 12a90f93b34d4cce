//! The reference output every method is checked against: the GPU float64 direct
//! convolution (`engine.direct_reference_f64`), itself checked against the CPU float64
//! oracle (`im2win::cpu::reference_conv2d`) on layers small enough for the CPU.
//!
//! Both convolve set 0's operands as the layer's convolution multiplies them (widened from
//! bf16 or f16, input and filter rounded to TF32 for a TF32 layer; `BufferSets::host0`),
//! uploaded as float32 for the GPU oracle: the float64 reference of the same rounded inputs.

use im2win::{Conv2dProblem, DType, Element, Engine, Precision};

use crate::buffers::BufferSets;
use crate::error::{BenchError, Context, Result};

/// Layers up to this many GFLOP are also computed by the CPU oracle.
pub const CPU_CHECK_GFLOP: f64 = 2.0;

/// The GPU and CPU oracles must agree to this relative error (both accumulate in float64
/// from the same float32 data; only the summation order differs).
const ORACLES_AGREE: f64 = 1e-12;

/// Whether a layer of `gflop` GFLOP is small enough for the CPU oracle.
pub fn cpu_checks(gflop: f64) -> bool {
    gflop <= CPU_CHECK_GFLOP
}

/// The reference output of set 0, and a description of how it was obtained. Uses and
/// drops `sets.host0` (the oracles' operands); with `cpu_check`, the CPU oracle checks the
/// GPU one.
///
/// # Errors
/// When `sets` has no host operands, the GPU oracle fails, or it disagrees with the CPU
/// oracle.
pub fn reference_output<T: Element>(
    engine: &Engine,
    problem: &Conv2dProblem,
    sets: &mut BufferSets<T>,
    cpu_check: bool,
) -> Result<(Vec<f64>, String)> {
    let stream = engine.stream();
    let shape = problem.shape().context("invalid layer")?;
    let host = sets
        .host0
        .take()
        .ok_or_else(|| BenchError::new("set 0's operands are not on the host"))?;
    // The oracles convolve float32 values, whatever the layer's tensors hold.
    let values = problem
        .with_dtype(DType::F32)
        .with_precision(Precision::Strict);
    let upload = |what: &str, data: &[f32]| {
        stream
            .clone_htod(data)
            .with_context(|| format!("uploading the oracle's {what}"))
    };
    let input = upload("input", &host.input)?;
    let filter = upload("filter", &host.filter)?;
    let bias = host
        .bias
        .as_deref()
        .map(|b| upload("bias", b))
        .transpose()?;
    let residual = host
        .residual
        .as_deref()
        .map(|r| upload("residual", r))
        .transpose()?;
    let mut device = stream
        .alloc_zeros::<f64>(shape.output_len)
        .context("allocating the float64 reference output")?;
    engine
        .direct_reference_f64_with_residual(
            &values,
            &input,
            &filter,
            bias.as_ref().map(|b| b as _),
            residual.as_ref().map(|r| r as _),
            &mut device,
        )
        .context("running the GPU float64 oracle")?;
    let gpu = stream
        .clone_dtoh(&device)
        .context("copying the GPU float64 oracle's output back")?;
    drop((device, input, filter, bias, residual));
    // What the oracles convolved, when not the stored float32 values.
    let of = match (problem.dtype, problem.precision) {
        (DType::F32, Precision::Strict | Precision::F32x3 | Precision::Accurate) => String::new(),
        (DType::F32, Precision::Tf32) => " (of the TF32-rounded input and filter)".into(),
        (dtype, _) => format!(" (of the {dtype} values)"),
    };
    if !cpu_check {
        return Ok((gpu, format!("gpu-f64{of}")));
    }
    let cpu = im2win::cpu::reference_conv2d_with_residual(
        &values,
        &host.input,
        &host.filter,
        host.bias.as_deref(),
        host.residual.as_deref(),
    )
    .context("running the CPU float64 oracle")?;
    let disagreement = relative_error_f64(&gpu, &cpu);
    if disagreement.is_nan() || disagreement > ORACLES_AGREE {
        return Err(BenchError::new(format!(
            "the GPU float64 oracle disagrees with the CPU oracle: relative error {disagreement:e} (limit {ORACLES_AGREE:e})"
        )));
    }
    Ok((gpu, format!("gpu-f64, checked against cpu-f64{of}")))
}

/// `‖a − b‖₂ / ‖b‖₂` of two float64 vectors.
fn relative_error_f64(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (x, y) in a.iter().zip(b) {
        diff += (x - y) * (x - y);
        norm += y * y;
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffers::random_values;
    use crate::stats::{is_flagged, relative_error};

    #[test]
    fn threshold() {
        assert!(cpu_checks(0.23));
        assert!(cpu_checks(2.0));
        assert!(!cpu_checks(15.1));
    }

    #[test]
    fn float64_disagreement() {
        assert_eq!(relative_error_f64(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((relative_error_f64(&[3.0, 0.0], &[3.0, 4.0]) - 0.8).abs() < 1e-15);
        assert_eq!(relative_error_f64(&[1.0], &[]), f64::INFINITY);
    }

    /// The check measures what it should: a float32 direct convolution on random data is
    /// far below the flag limit, a slightly wrong one far above.
    #[test]
    fn the_check_separates_right_from_wrong() {
        let problem = Conv2dProblem::new([2, 16, 10, 10], [8, 16, 3, 3])
            .with_padding(im2win::Padding::uniform(1));
        let shape = problem.shape().unwrap();
        let input = random_values(shape.input_len, 1);
        let filter = random_values(shape.filter_len, 2);
        let exact = im2win::cpu::reference_conv2d(&problem, &input, &filter, None).unwrap();
        let rounded: Vec<f32> = exact.iter().map(|&v| v as f32).collect();
        assert!(relative_error(&rounded, &exact) < 1e-7);
        let mut wrong = rounded.clone();
        wrong[17] += 1.0;
        assert!(is_flagged(relative_error(&wrong, &exact)));
        let mut nan = rounded;
        nan[0] = f32::NAN;
        assert!(relative_error(&nan, &exact).is_nan());
    }
}
