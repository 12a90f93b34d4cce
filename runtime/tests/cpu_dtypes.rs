//! The CPU backend and the oracle on bf16, f16 and TF32 problems: random problems (every
//! layout, with and without bias, with epilogues) against the float64 reference of the same
//! rounded inputs, NaN-poisoned outputs, the issue's error bounds, and the refusal of
//! buffers of another element type.

mod common;

use common::{Limits, random_elements, random_problem, test_seed};
use im2win_runtime::cpu::{conv2d, conv2d_with_residual, reference_conv2d, relative_error};
use im2win_runtime::half::{bf16, f16};
use im2win_runtime::{
    Activation, Conv2dProblem, DType, Element, Epilogue, Error, FilterLayout, Layout, Padding,
    Precision, round_to_tf32,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random problems per element type and precision.
const CASES: u64 = 300;

/// A random problem of [`Limits::SMALL`] with random layouts, element type `T` at
/// `precision`, and an epilogue drawn from `case`.
fn problem_of<T: Element>(rng: &mut StdRng, precision: Precision, case: u64) -> Conv2dProblem {
    let layout = Layout::ALL[rng.random_range(0..2)];
    let filter_layout = if rng.random_bool(0.5) {
        FilterLayout::Kcrs
    } else {
        FilterLayout::Krsc
    };
    let epilogue = match case % 4 {
        0 | 1 => Epilogue::IDENTITY,
        2 => Epilogue::activation(Activation::ALL[(case / 4) as usize % Activation::ALL.len()])
            .with_alpha(0.75),
        _ => Epilogue::activation(Activation::Relu).with_residual(0.5),
    };
    random_problem(rng, &Limits::SMALL)
        .with_layout(layout)
        .with_filter_layout(filter_layout)
        .with_epilogue(epilogue)
        .with_dtype(T::DTYPE)
        .with_precision(precision)
}

/// Runs [`CASES`] random problems of `T` at `precision` on the backend and the oracle and
/// returns the largest relative error; fails on any non-finite output.
fn largest_error<T: Element>(precision: Precision, seed: u64) -> f64 {
    let mut worst = 0.0_f64;
    for case in 0..CASES {
        let case_seed = seed.wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(case_seed);
        let problem = problem_of::<T>(&mut rng, precision, case);
        let shape = problem.shape().unwrap();
        let input = random_elements::<T>(&mut rng, shape.input_len);
        let filter = random_elements::<T>(&mut rng, shape.filter_len);
        let bias = rng
            .random_bool(0.5)
            .then(|| random_elements::<T>(&mut rng, shape.output[1]));
        let residual = problem
            .epilogue
            .residual
            .then(|| random_elements::<T>(&mut rng, shape.output_len));
        let context = format!("case {case} (seed {case_seed}): {problem:?}");

        let reference = im2win_runtime::cpu::reference_conv2d_with_residual(
            &problem,
            &input,
            &filter,
            bias.as_deref(),
            residual.as_deref(),
        )
        .unwrap_or_else(|e| panic!("{context}: {e}"));
        // NaN-poisoned: every element must be written.
        let mut out = vec![T::from_f32(f32::NAN); shape.output_len];
        conv2d_with_residual(
            &problem,
            &input,
            &filter,
            bias.as_deref(),
            residual.as_deref(),
            &mut out,
        )
        .unwrap_or_else(|e| panic!("{context}: {e}"));
        if let Some(i) = out.iter().position(|v| !v.to_f32().is_finite()) {
            panic!("{context}: output element {i} is {:?}", out[i]);
        }
        let error = relative_error(&out, &reference);
        worst = worst.max(error);
    }
    worst
}

#[test]
fn bf16_matches_the_oracle_within_8e_3() {
    let worst = largest_error::<bf16>(Precision::Strict, test_seed(0x12_0001));
    eprintln!("bf16: largest relative error {worst:e} over {CASES} problems");
    assert!(worst < 8e-3, "bf16: relative error {worst:e}");
    // The output's rounding is all that separates them: 2^-9 relative at most per element.
    assert!(worst > 1e-5, "bf16 outputs look unrounded: {worst:e}");
}

#[test]
fn f16_matches_the_oracle_within_1e_3() {
    let worst = largest_error::<f16>(Precision::Strict, test_seed(0x12_0002));
    eprintln!("f16: largest relative error {worst:e} over {CASES} problems");
    assert!(worst < 1e-3, "f16: relative error {worst:e}");
    assert!(worst > 1e-6, "f16 outputs look unrounded: {worst:e}");
}

#[test]
fn tf32_matches_the_oracle_of_the_rounded_inputs_within_1e_3() {
    let worst = largest_error::<f32>(Precision::Tf32, test_seed(0x12_0003));
    eprintln!("tf32: largest relative error {worst:e} over {CASES} problems");
    assert!(worst < 1e-3, "tf32: relative error {worst:e}");
}

/// TF32 really rounds: against the oracle of the unrounded inputs (strict float32) the TF32
/// result is off by about TF32's precision, and against the oracle of the rounded ones only
/// by float32 accumulation.
#[test]
fn tf32_rounds_input_and_filter() {
    let mut rng = StdRng::seed_from_u64(test_seed(0x12_0004));
    let problem =
        Conv2dProblem::new([2, 16, 12, 12], [24, 16, 3, 3]).with_padding(Padding::uniform(1));
    let shape = problem.shape().unwrap();
    let input = random_elements::<f32>(&mut rng, shape.input_len);
    let filter = random_elements::<f32>(&mut rng, shape.filter_len);
    let tf32 = problem.with_precision(Precision::Tf32);
    let mut out = vec![f32::NAN; shape.output_len];
    conv2d(&tf32, &input, &filter, None, &mut out).unwrap();
    let rounded_ref = reference_conv2d(&tf32, &input, &filter, None).unwrap();
    let strict_ref = reference_conv2d(&problem, &input, &filter, None).unwrap();
    let to_rounded = relative_error(&out, &rounded_ref);
    let to_strict = relative_error(&out, &strict_ref);
    assert!(to_rounded < 1e-6, "{to_rounded:e}");
    assert!(to_strict > 1e-5 && to_strict < 1e-3, "{to_strict:e}");
    // The TF32 oracle is the strict oracle of the rounded values.
    let rounded = |v: &[f32]| v.iter().map(|&x| round_to_tf32(x)).collect::<Vec<_>>();
    assert_eq!(
        reference_conv2d(&problem, &rounded(&input), &rounded(&filter), None).unwrap(),
        rounded_ref
    );
    // And the backend's TF32 result is its strict result on the rounded values, exactly.
    let mut strict_on_rounded = vec![f32::NAN; shape.output_len];
    conv2d(
        &problem,
        &rounded(&input),
        &rounded(&filter),
        None,
        &mut strict_on_rounded,
    )
    .unwrap();
    assert_eq!(out, strict_on_rounded);
}

/// A 16-bit output is the float32 computation on the widened values, rounded to nearest
/// even: exactly.
#[test]
fn sixteen_bit_outputs_are_the_rounded_float32_results() {
    let mut rng = StdRng::seed_from_u64(test_seed(0x12_0005));
    let problem = Conv2dProblem::new([1, 8, 9, 9], [16, 8, 3, 3])
        .with_layout(Layout::Nhwc)
        .with_epilogue(Epilogue::activation(Activation::Silu));
    let shape = problem.shape().unwrap();
    let input = random_elements::<bf16>(&mut rng, shape.input_len);
    let filter = random_elements::<bf16>(&mut rng, shape.filter_len);
    let bias = random_elements::<bf16>(&mut rng, shape.output[1]);
    let bf16_problem = problem.with_dtype(DType::Bf16);
    let mut out = vec![bf16::NAN; shape.output_len];
    conv2d(&bf16_problem, &input, &filter, Some(&bias), &mut out).unwrap();

    let widen = |v: &[bf16]| v.iter().map(|x| x.to_f32()).collect::<Vec<_>>();
    let mut wide = vec![f32::NAN; shape.output_len];
    conv2d(
        &problem,
        &widen(&input),
        &widen(&filter),
        Some(&widen(&bias)),
        &mut wide,
    )
    .unwrap();
    let expected: Vec<bf16> = wide.iter().map(|&v| bf16::from_f32(v)).collect();
    assert_eq!(out, expected);
    // The oracle of the bf16 tensors is the oracle of their widened values.
    assert_eq!(
        reference_conv2d(&bf16_problem, &input, &filter, Some(&bias)).unwrap(),
        reference_conv2d(
            &problem,
            &widen(&input),
            &widen(&filter),
            Some(&widen(&bias))
        )
        .unwrap()
    );
}

#[test]
fn buffers_of_another_type_are_refused_and_nothing_is_written() {
    let problem = Conv2dProblem::new([1, 2, 5, 5], [3, 2, 3, 3]);
    let shape = problem.shape().unwrap();
    let x = vec![0.5_f32; shape.input_len];
    let f = vec![0.25_f32; shape.filter_len];
    for dtype in [DType::Bf16, DType::F16] {
        let wrong = problem.with_dtype(dtype);
        let mut out = vec![7.0_f32; shape.output_len];
        let err = conv2d(&wrong, &x, &f, None, &mut out).unwrap_err();
        assert!(
            matches!(err, Error::DTypeMismatch { expected, actual: DType::F32 } if expected == dtype),
            "{err}"
        );
        assert!(out.iter().all(|&v| v == 7.0));
        assert!(matches!(
            reference_conv2d(&wrong, &x, &f, None),
            Err(Error::DTypeMismatch { .. })
        ));
    }
    // bf16 buffers on a float32 problem, and f16 buffers on a bf16 one.
    let xb = vec![bf16::from_f32(0.5); shape.input_len];
    let fb = vec![bf16::from_f32(0.25); shape.filter_len];
    let mut ob = vec![bf16::ZERO; shape.output_len];
    assert!(matches!(
        conv2d(&problem, &xb, &fb, None, &mut ob),
        Err(Error::DTypeMismatch {
            expected: DType::F32,
            actual: DType::Bf16
        })
    ));
    let xh = vec![f16::from_f32(0.5); shape.input_len];
    let fh = vec![f16::from_f32(0.25); shape.filter_len];
    let mut oh = vec![f16::ZERO; shape.output_len];
    assert!(matches!(
        conv2d(&problem.with_dtype(DType::Bf16), &xh, &fh, None, &mut oh),
        Err(Error::DTypeMismatch {
            expected: DType::Bf16,
            actual: DType::F16
        })
    ));
    // TF32 of a 16-bit type is not a problem.
    let err = conv2d(
        &problem
            .with_dtype(DType::Bf16)
            .with_precision(Precision::Tf32),
        &xb,
        &fb,
        None,
        &mut ob,
    )
    .unwrap_err();
    assert!(matches!(err, Error::BadPrecision { .. }), "{err}");
    assert!(ob.iter().all(|v| v.to_f32() == 0.0));
    // The right types work.
    conv2d(&problem.with_dtype(DType::Bf16), &xb, &fb, None, &mut ob).unwrap();
    // 2·9 taps of 0.5·0.25.
    assert!(ob.iter().all(|v| v.to_f32() == 2.25));
}

#[test]
fn old_problem_json_reads_as_strict_float32() {
    let json = r#"{"input": [1, 2, 5, 5], "filter": [3, 2, 3, 3], "stride": [1, 1],
        "padding": {"top": 0, "bottom": 0, "left": 0, "right": 0},
        "dilation": [1, 1], "groups": 1}"#;
    let problem: Conv2dProblem = serde_json::from_str(json).unwrap();
    assert_eq!(problem, Conv2dProblem::new([1, 2, 5, 5], [3, 2, 3, 3]));
    assert_eq!(
        (problem.dtype, problem.precision),
        (DType::F32, Precision::Strict)
    );
    let tf32 = problem
        .with_precision(Precision::Tf32)
        .with_dtype(DType::F32);
    let back: Conv2dProblem = serde_json::from_str(&serde_json::to_string(&tf32).unwrap()).unwrap();
    assert_eq!(back, tf32);
    assert_eq!(tf32.numeric_name(), "tf32");
    assert_eq!(problem.with_dtype(DType::F16).numeric_name(), "f16");
}
