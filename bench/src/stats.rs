//! The numbers the report is made of: medians, relative errors, rates.

use im2win::{DType, Element, Precision};

/// The relative error above which a strict float32 result is flagged as wrong.
pub const REL_ERR_LIMIT: f64 = 1e-4;

/// The relative error above which a result of `dtype` at `precision` is flagged as wrong:
/// [`REL_ERR_LIMIT`] for float32 at FP32 accuracy (strict, 3xTF32 `f32x3`, `f32acc`), the
/// tensor-core issue's bounds otherwise (against the float64 reference of the same rounded
/// inputs): 1e-3 for TF32 and for f16 output, 8e-3 for bf16 output.
pub fn rel_err_limit(dtype: DType, precision: Precision) -> f64 {
    match (dtype, precision) {
        (DType::F32, Precision::Strict | Precision::F32x3 | Precision::Accurate) => REL_ERR_LIMIT,
        (DType::F32, _) | (DType::F16, _) => 1e-3,
        (DType::Bf16, _) => 8e-3,
    }
}

/// Summary of repeated timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// The median, in milliseconds.
    pub median_ms: f64,
    /// The fastest sample, in milliseconds.
    pub min_ms: f64,
    /// The slowest sample, in milliseconds.
    pub max_ms: f64,
    /// How many samples.
    pub samples: usize,
    /// The host's time to queue one call, in milliseconds (wall clock of the timed loop's
    /// launches, before any wait, over the calls; 0 when not measured). When it reaches
    /// `median_ms` the GPU waited for the host: the time is the call's host overhead.
    pub host_ms: f64,
}

/// Median, minimum and maximum of `samples` (NaNs sort last), or `None` when empty.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median_ms = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    };
    Some(Summary {
        median_ms,
        min_ms: sorted[0],
        max_ms: sorted[n - 1],
        samples: n,
        host_ms: 0.0,
    })
}

/// `‖out − reference‖₂ / ‖reference‖₂`, accumulated in float64, for an output of any
/// element type (widened exactly).
///
/// Any non-finite output (for example a NaN left by the poisoned buffer) makes the result
/// non-finite. A zero reference gives the absolute error `‖out‖₂`. Lengths must agree; a
/// mismatch is `f64::INFINITY`.
pub fn relative_error<T: Element>(out: &[T], reference: &[f64]) -> f64 {
    if out.len() != reference.len() {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0.0_f64, 0.0_f64);
    for (&o, &r) in out.iter().zip(reference) {
        let d = f64::from(o.to_f32()) - r;
        diff += d * d;
        norm += r * r;
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// Whether a relative error is a failure: above [`REL_ERR_LIMIT`] or not a number.
pub fn is_flagged(rel_err: f64) -> bool {
    is_flagged_at(rel_err, REL_ERR_LIMIT)
}

/// Whether a relative error is a failure at the limit `limit` ([`rel_err_limit`]): above it
/// or not a number.
pub fn is_flagged_at(rel_err: f64, limit: f64) -> bool {
    rel_err.is_nan() || rel_err > limit
}

/// TFLOP/s of `gflop` of work done in `ms` milliseconds.
pub fn tflops(gflop: f64, ms: f64) -> f64 {
    if ms > 0.0 { gflop / ms } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(summarize(&[]), None);
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!(
            (s.median_ms, s.min_ms, s.max_ms, s.samples),
            (2.0, 1.0, 3.0, 3)
        );
        assert_eq!(summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap().median_ms, 2.5);
        assert_eq!(summarize(&[5.0]).unwrap().median_ms, 5.0);
        // An outlier does not move the median.
        let mut v = vec![1.0; 20];
        v.push(1000.0);
        assert_eq!(summarize(&v).unwrap().median_ms, 1.0);
    }

    #[test]
    fn relative_errors() {
        assert_eq!(relative_error(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        let e = relative_error(&[3.0, 0.0], &[3.0, 4.0]);
        assert!((e - 0.8).abs() < 1e-15, "{e}");
        assert!(relative_error(&[f32::NAN, 1.0], &[1.0, 1.0]).is_nan());
        assert_eq!(relative_error(&[1.0], &[1.0, 2.0]), f64::INFINITY);
        assert_eq!(relative_error(&[3.0, 4.0], &[0.0, 0.0]), 5.0);
        // float32 rounding of a float64 value stays far below the limit.
        let r: Vec<f64> = (1..1000).map(|i| 1.0 / f64::from(i)).collect();
        let o: Vec<f32> = r.iter().map(|&x| x as f32).collect();
        assert!(relative_error(&o, &r) < 1e-7);
    }

    #[test]
    fn limits_per_precision() {
        assert_eq!(rel_err_limit(DType::F32, Precision::Strict), 1e-4);
        assert_eq!(rel_err_limit(DType::F32, Precision::Tf32), 1e-3);
        assert_eq!(rel_err_limit(DType::F32, Precision::F32x3), 1e-4);
        assert_eq!(rel_err_limit(DType::F16, Precision::Strict), 1e-3);
        assert_eq!(rel_err_limit(DType::Bf16, Precision::Strict), 8e-3);
        assert!(!is_flagged_at(5e-3, 8e-3));
        assert!(is_flagged_at(5e-3, 1e-3));
        assert!(is_flagged_at(f64::NAN, 1.0));
        // 16-bit outputs, widened exactly.
        let half = [
            im2win::half::bf16::from_f32(3.0),
            im2win::half::bf16::from_f32(0.0),
        ];
        assert!((relative_error(&half, &[3.0, 4.0]) - 0.8).abs() < 1e-15);
    }

    #[test]
    fn flags() {
        assert!(!is_flagged(0.0));
        assert!(!is_flagged(1e-4));
        assert!(is_flagged(1.1e-4));
        assert!(is_flagged(f64::NAN));
        assert!(is_flagged(f64::INFINITY));
    }

    #[test]
    fn rates() {
        // 27 GFLOP in 1.039 ms is 26.0 TFLOP/s (conv1 with cuDNN in ANCHORS.md).
        assert!((tflops(27.0, 1.039) - 25.99).abs() < 0.01);
        assert_eq!(tflops(1.0, 0.0), 0.0);
    }
}
