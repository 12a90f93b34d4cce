//! The element types of tensors: [`Element`], implemented for `f32`, [`half::bf16`] and
//! [`half::f16`], and the TF32 rounding of float32 operands ([`round_to_tf32`]).
//!
//! A [`Conv2dProblem`] names its element type
//! ([`Conv2dProblem::dtype`](crate::Conv2dProblem::dtype)); the engine and the CPU backend
//! take buffers of any [`Element`] and check that it is the problem's, never converting
//! one type into another behind the caller's back ([`Error::DTypeMismatch`]).
//!
//! [`Error::DTypeMismatch`]: crate::Error::DTypeMismatch

use std::borrow::Cow;
use std::fmt::Debug;

use cudarc::driver::{DeviceRepr, ValidAsZeroBits};
use half::{bf16, f16};
use im2win_codegen::{DType, Precision};

use crate::error::{Error, Result};
use crate::problem::Conv2dProblem;

mod sealed {
    /// Only the element types of this module implement [`super::Element`]. Its methods are
    /// the crate's own: they let the float32 paths borrow `f32` buffers as they are.
    pub trait Sealed: Sized {
        /// The slice itself when the type is `f32`.
        fn as_f32(slice: &[Self]) -> Option<&[f32]>;
        /// The slice itself when the type is `f32`.
        fn as_f32_mut(slice: &mut [Self]) -> Option<&mut [f32]>;
    }

    impl Sealed for f32 {
        fn as_f32(slice: &[Self]) -> Option<&[f32]> {
            Some(slice)
        }
        fn as_f32_mut(slice: &mut [Self]) -> Option<&mut [f32]> {
            Some(slice)
        }
    }

    impl Sealed for half::bf16 {
        fn as_f32(_: &[Self]) -> Option<&[f32]> {
            None
        }
        fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
            None
        }
    }

    impl Sealed for half::f16 {
        fn as_f32(_: &[Self]) -> Option<&[f32]> {
            None
        }
        fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
            None
        }
    }
}

/// A tensor element type that im2win computes in: `f32`, [`half::bf16`] or [`half::f16`]
/// (the `half` crate's, re-exported as [`crate::half`]). Sealed: the kernels exist for these
/// types only.
///
/// Every element converts to `f32` exactly ([`Element::to_f32`]); [`Element::from_f32`]
/// rounds to nearest, ties to even (the `half` crate's conversion, as CUDA's
/// `__float2bfloat16_rn` / `__float2half_rn`).
pub trait Element:
    sealed::Sealed
    + DeviceRepr
    + ValidAsZeroBits
    + Copy
    + Default
    + Debug
    + PartialEq
    + Send
    + Sync
    + Unpin
    + 'static
{
    /// The [`DType`] of this element type.
    const DTYPE: DType;

    /// The value as float32: exact for every element type.
    fn to_f32(self) -> f32;

    /// The float32 `value` rounded to this type (to nearest, ties to even; overflow gives
    /// infinity, NaN stays NaN). The identity for `f32`.
    fn from_f32(value: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;

    fn to_f32(self) -> f32 {
        self
    }

    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::Bf16;

    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }

    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;

    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }

    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

/// Mantissa bits of float32 that TF32 drops (23 − 10).
const TF32_DROPPED_BITS: u32 = 13;

/// `value` rounded to TF32 (8 exponent bits, 10 mantissa bits), kept in a float32: round
/// to nearest, ties away from zero, on the 13 dropped mantissa bits, exactly as PTX's
/// `cvt.rna.tf32.f32` (what tensor-core kernels apply to float32 operands). Subnormals
/// round the same way; a value that rounds past the largest TF32 becomes infinity;
/// infinities and NaN pass through unchanged.
pub fn round_to_tf32(value: f32) -> f32 {
    if !value.is_finite() {
        return value;
    }
    // IEEE 754 is sign and magnitude: adding half of the dropped part's unit to the bits
    // rounds the magnitude to nearest with ties away from zero, and a carry out of the
    // mantissa steps the exponent (to infinity past the largest finite value).
    let half_unit = 1_u32 << (TF32_DROPPED_BITS - 1);
    let mask = !((1_u32 << TF32_DROPPED_BITS) - 1);
    f32::from_bits((value.to_bits() + half_unit) & mask)
}

/// The 3xTF32 split of `value` ([`Precision::F32x3`], `OpMultiplyAddFastF32` in
/// `codegen/templates/mma_tensorop.cuh`): `(big, small)` with `big = round_to_tf32(value)`
/// and `small = round_to_tf32(value − big)` (the difference is exact in float32). The
/// kernels multiply `a·b` as `a_small·b_big + a_big·b_small + a_big·b_big`; `big + small`
/// is `value` to within 2⁻²² of it relatively (each part carries 11 significant bits), and
/// the dropped `a_small·b_small` is below 2⁻²² of `|a·b|`. For finite values whose `big`
/// does not overflow (`|value|` < 2¹²⁸·(1 − 2⁻¹²)); beyond, `small` is not finite.
pub fn split_to_tf32(value: f32) -> (f32, f32) {
    let big = round_to_tf32(value);
    (big, round_to_tf32(value - big))
}

/// The value of element `x` that a convolution multiplies: the stored value as float32,
/// rounded to TF32 when `tf32` ([`Precision::Tf32`]).
pub(crate) fn operand_value<T: Element>(x: T, tf32: bool) -> f32 {
    let value = x.to_f32();
    if tf32 { round_to_tf32(value) } else { value }
}

/// [`Error::DTypeMismatch`] unless `T` is the problem's element type.
pub(crate) fn check_dtype<T: Element>(problem: &Conv2dProblem) -> Result<()> {
    if T::DTYPE == problem.dtype {
        Ok(())
    } else {
        Err(Error::DTypeMismatch {
            expected: problem.dtype,
            actual: T::DTYPE,
        })
    }
}

/// The values of `data` as float32 (rounded to TF32 when `tf32`): `data` itself when it is
/// float32 and nothing is rounded, else a converted copy.
///
/// # Errors
/// [`Error::OutOfMemory`] naming `what` when the copy cannot be allocated.
pub(crate) fn f32_values<'a, T: Element>(
    what: &'static str,
    data: &'a [T],
    tf32: bool,
) -> Result<Cow<'a, [f32]>> {
    if let (Some(values), false) = (T::as_f32(data), tf32) {
        return Ok(Cow::Borrowed(values));
    }
    let mut values = Vec::new();
    values
        .try_reserve_exact(data.len())
        .map_err(|_| Error::OutOfMemory {
            what,
            bytes: data.len() as u128 * 4,
            on_device: false,
        })?;
    values.extend(data.iter().map(|&x| operand_value(x, tf32)));
    Ok(Cow::Owned(values))
}

/// Whether the problem's operands are rounded to TF32 before they are multiplied: a TF32
/// problem without groups. A grouped TF32 problem is computed in strict FP32 everywhere
/// (the grouped GPU kernels have no tensor-core math: `KernelSpec::computes`), so the
/// oracle and the CPU backend do not round it either.
pub(crate) fn rounds_to_tf32(problem: &Conv2dProblem) -> bool {
    problem.precision == Precision::Tf32 && problem.groups == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf32_rounds_to_nearest_ties_away_from_zero() {
        let ulp = 2.0_f32.powi(-10); // TF32's unit in the last place at 1.0
        assert_eq!(round_to_tf32(1.0), 1.0);
        assert_eq!(round_to_tf32(1.0 + ulp), 1.0 + ulp);
        // Below half an ulp: down; at half: away from zero (not to even); above: up.
        assert_eq!(round_to_tf32(1.0 + ulp * 0.499), 1.0);
        assert_eq!(round_to_tf32(1.0 + ulp * 0.5), 1.0 + ulp);
        assert_eq!(round_to_tf32(-(1.0 + ulp * 0.5)), -(1.0 + ulp));
        // A tie whose lower neighbour is even still goes away from zero (ties-to-even would
        // keep 1 + 2 ulp here).
        assert_eq!(round_to_tf32(1.0 + ulp * 2.5), 1.0 + ulp * 3.0);
        assert_eq!(round_to_tf32(1.0 + ulp * 1.5), 1.0 + ulp * 2.0);
        // Every result has its 13 low bits clear, and is within half an ulp.
        for bits in (0..u32::MAX).step_by(65_537) {
            let x = f32::from_bits(bits);
            let t = round_to_tf32(x);
            if x.is_nan() {
                assert!(t.is_nan());
                continue;
            }
            if t.is_finite() {
                assert_eq!(t.to_bits() & 0x1fff, 0, "{x:e} -> {t:e}");
                let spacing = f32::from_bits((t.abs().to_bits() | 0x1fff) + 1) - t.abs();
                assert!((t - x).abs() <= spacing / 2.0 * 1.000_001, "{x:e} -> {t:e}");
            }
            assert_eq!(t.is_sign_negative(), x.is_sign_negative(), "{x:e}");
        }
        // Overflow, infinities, NaN, zeros and subnormals.
        assert_eq!(round_to_tf32(f32::MAX), f32::INFINITY);
        assert_eq!(round_to_tf32(f32::NEG_INFINITY), f32::NEG_INFINITY);
        assert!(round_to_tf32(f32::from_bits(0x7f80_0001)).is_nan());
        assert_eq!(round_to_tf32(-0.0).to_bits(), (-0.0_f32).to_bits());
        assert_eq!(
            round_to_tf32(f32::from_bits(0x1000)),
            f32::from_bits(0x2000)
        );
        assert_eq!(round_to_tf32(f32::from_bits(0x0fff)), 0.0);
    }

    #[test]
    fn elements_convert_exactly_to_f32_and_round_to_nearest_even() {
        assert_eq!(f32::DTYPE, DType::F32);
        assert_eq!(bf16::DTYPE, DType::Bf16);
        assert_eq!(f16::DTYPE, DType::F16);
        assert_eq!(<f32 as Element>::from_f32(0.1), 0.1);
        // bf16 keeps 8 significant bits: 1 + 2^-8 is a tie between 1 and 1 + 2^-7, to even.
        assert_eq!(
            <bf16 as Element>::from_f32(1.0 + 2.0_f32.powi(-8)).to_f32(),
            1.0
        );
        let up = 1.0 + 3.0 * 2.0_f32.powi(-8);
        assert_eq!(
            <bf16 as Element>::from_f32(up).to_f32(),
            1.0 + 2.0_f32.powi(-6)
        );
        // f16 keeps 11: 1 + 2^-11 ties to 1.
        assert_eq!(
            <f16 as Element>::from_f32(1.0 + 2.0_f32.powi(-11)).to_f32(),
            1.0
        );
        assert!(<f16 as Element>::from_f32(1.0e6).to_f32().is_infinite());
        assert!(<bf16 as Element>::from_f32(f32::NAN).to_f32().is_nan());
        // Rounding to TF32 leaves 16-bit values as they are (they have fewer mantissa bits).
        for v in [0.1_f32, -3.7, 65_504.0, 1.0e-5] {
            for x in [bf16::from_f32(v).to_f32(), f16::from_f32(v).to_f32()] {
                assert_eq!(round_to_tf32(x), x);
            }
        }
        assert_eq!(operand_value(bf16::from_f32(1.5), true), 1.5);
        assert_eq!(operand_value(1.0_f32 + 2.0_f32.powi(-12), true), 1.0);
        assert_eq!(
            operand_value(1.0_f32 + 2.0_f32.powi(-12), false),
            1.0 + 2.0_f32.powi(-12)
        );
    }

    /// The 3xTF32 split reproduces a float to about 2⁻²² of it, and the three products
    /// reproduce a product (and a dot product) to about FP32 accuracy, where TF32 alone is
    /// off by 2⁻¹¹.
    #[test]
    fn the_3xtf32_split_keeps_fp32_accuracy() {
        let mut worst_split = 0.0_f64;
        let mut worst_product = 0.0_f64;
        let mut state = 0x1234_5678_u64;
        let mut next = || {
            // xorshift64: deterministic values over many exponents and mantissas.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..200_000 {
            let bits = next();
            let mantissa = (bits & 0x7f_ffff) as u32;
            let exponent = 127 - 40 + ((bits >> 23) % 80) as u32;
            let sign = ((bits >> 40) & 1) as u32;
            let x = f32::from_bits(sign << 31 | exponent << 23 | mantissa);
            let (big, small) = split_to_tf32(x);
            // Both parts are TF32 values.
            assert_eq!(big.to_bits() & 0x1fff, 0, "{x:e}");
            assert_eq!(small.to_bits() & 0x1fff, 0, "{x:e}");
            let rel = (f64::from(big) + f64::from(small) - f64::from(x)).abs() / f64::from(x).abs();
            worst_split = worst_split.max(rel);
            // A product of two such values, the three products summed in float64 (the
            // tensor cores' products are exact): only small·small is missing.
            let y = f32::from_bits(((next() as u32) & 0x007f_ffff) | 0x3f80_0000);
            let (ybig, ysmall) = split_to_tf32(y);
            let three = f64::from(small) * f64::from(ybig)
                + f64::from(big) * f64::from(ysmall)
                + f64::from(big) * f64::from(ybig);
            let exact = f64::from(x) * f64::from(y);
            worst_product = worst_product.max((three - exact).abs() / exact.abs());
        }
        assert!(worst_split <= 2.0_f64.powi(-22), "split: {worst_split:e}");
        assert!(
            worst_product <= 2.0_f64.powi(-21),
            "product: {worst_product:e}"
        );
        // TF32 alone loses 11 bits: the split is what makes FP32 accuracy.
        let x = 1.0_f32 + 2.0_f32.powi(-12) + 2.0_f32.powi(-20);
        assert_eq!(round_to_tf32(x), 1.0);
        let (big, small) = split_to_tf32(x);
        assert_eq!((big, small), (1.0, 2.0_f32.powi(-12) + 2.0_f32.powi(-20)));
        // A dot product of 4096 terms in [-1, 1]: the three products accumulated in float32
        // are as close to the float64 sum as the strict float32 sum is (a few float32 ulps
        // of the terms' magnitude), TF32 some hundred times further.
        let mut strict = 0.0_f32;
        let mut three = 0.0_f32;
        let mut tf32 = 0.0_f32;
        let mut exact = 0.0_f64;
        let mut scale = 0.0_f64;
        let mut uniform = || (next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0;
        for _ in 0..4096 {
            let (a, b) = (uniform(), uniform());
            let ((ab, as_), (bb, bs)) = (split_to_tf32(a), split_to_tf32(b));
            strict = a.mul_add(b, strict);
            three += as_ * bb;
            three += ab * bs;
            three += ab * bb;
            tf32 += round_to_tf32(a) * round_to_tf32(b);
            exact += f64::from(a) * f64::from(b);
            scale += (f64::from(a) * f64::from(b)).abs();
        }
        let err = |v: f32| (f64::from(v) - exact).abs() / scale;
        assert!(
            err(three) <= 4.0 * err(strict).max(2.0_f64.powi(-24)),
            "{} {}",
            err(three),
            err(strict)
        );
        assert!(
            err(tf32) > 10.0 * err(three),
            "{} {}",
            err(tf32),
            err(three)
        );
    }

    #[test]
    fn float32_buffers_are_borrowed_unless_rounded() {
        let data = [1.0_f32 + 2.0_f32.powi(-12), 2.0];
        assert!(matches!(
            f32_values("x", &data, false),
            Ok(Cow::Borrowed(_))
        ));
        let rounded = f32_values("x", &data, true).unwrap();
        assert_eq!(&rounded[..], &[1.0, 2.0]);
        let halves = [bf16::from_f32(0.5), bf16::from_f32(-3.0)];
        assert_eq!(&f32_values("x", &halves, false).unwrap()[..], &[0.5, -3.0]);
        let problem = Conv2dProblem::new([1, 1, 1, 1], [1, 1, 1, 1]);
        assert!(check_dtype::<f32>(&problem).is_ok());
        assert!(matches!(
            check_dtype::<f16>(&problem),
            Err(Error::DTypeMismatch {
                expected: DType::F32,
                actual: DType::F16
            })
        ));
        assert!(check_dtype::<f16>(&problem.with_dtype(DType::F16)).is_ok());
    }
}
