//! bf16, f16 and TF32 problems on the GPU engine: NHWC problems with a KRSC filter run on the
//! tensor-core kernels and match the float64 oracle of the same rounded inputs; NCHW ones
//! (no tensor-core kernels yet) and KCRS filters are refused by name (never a float32 kernel
//! instead), as are buffers of another element type; the engine's float64 oracle convolves
//! the float32 values of the rounded operands exactly as the CPU oracle does.
//! (`tests/gpu_conv.rs` runs every tensor-core kernel of the catalogue.)
//!
//! Skips without a GPU; fails instead with `IM2WIN_REQUIRE_GPU=1`.

mod common;

use common::{POISON, Run, TypedCase, engine, run_typed_case, tensor_op_tolerance};
use im2win::half::{bf16, f16};
use im2win::{
    Conv2dProblem, DType, Element, Engine, Error, FilterLayout, Layout, Padding, Precision,
    round_to_tf32,
};
use rand::SeedableRng;
use rand::rngs::StdRng;

/// 2×3×9×8 input, 5×3×3×3 filter, padding 1: output 2×5×9×8.
fn problem() -> Conv2dProblem {
    Conv2dProblem::new([2, 3, 9, 8], [5, 3, 3, 3]).with_padding(Padding::uniform(1))
}

/// `len` distinct nonzero values in (−1, 1).
fn values(len: usize, seed: usize) -> Vec<f32> {
    (0..len)
        .map(|i| (((i * 37 + seed * 11) % 199) as f32 - 99.5) / 100.0)
        .collect()
}

/// A bf16, f16 or TF32 problem (`numeric`) for the tensor-core kernels: NHWC, KRSC filter.
fn tensor_op_problem(numeric: &str, c: usize) -> Conv2dProblem {
    let (dtype, precision) = Precision::from_numeric_name(numeric).unwrap();
    Conv2dProblem::new([2, c, 17, 15], [70, c, 3, 3])
        .with_padding(Padding::uniform(1))
        .with_dtype(dtype)
        .with_precision(precision)
        .with_layout(Layout::Nhwc)
        .with_filter_layout(FilterLayout::Krsc)
}

/// `Engine::conv2d` of a typed case at aligned and misaligned operand offsets, checked
/// against the oracle; returns the kernels dispatch chose.
fn through_the_engine<T: Element>(engine: &Engine, problem: Conv2dProblem) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(12);
    let case = TypedCase::<T>::random(&mut rng, problem, true);
    let tolerance = tensor_op_tolerance(problem.dtype);
    for offset in [0, 1] {
        let layout = common::Layout {
            offset,
            guard: 40,
            own_workspace: false,
            other_stream: false,
        };
        let err = run_typed_case(engine, Run::Dispatch, &case, &layout, tolerance)
            .unwrap_or_else(|why| panic!("{problem:?} at offset {offset}: {why}"));
        assert!(err <= tolerance);
    }
    vec![
        engine.plan(&problem).unwrap().kernel().name(),
        engine
            .plan_for_operands(&problem, 2)
            .unwrap()
            .kernel()
            .name(),
    ]
}

#[test]
fn tensor_op_problems_run_on_the_tensor_cores() {
    const TEST: &str = "tensor_op_problems_run_on_the_tensor_cores";
    let Some(engine) = engine(TEST) else { return };
    if !engine
        .kernels()
        .catalogue()
        .kernels
        .iter()
        .any(|k| k.math == im2win::codegen::Math::TensorOp)
    {
        common::summary(TEST, "SKIPPED: built without tensor-core kernels");
        return;
    }
    let mut chosen = Vec::new();
    for c in [16, 3] {
        chosen.extend(through_the_engine::<bf16>(
            &engine,
            tensor_op_problem("bf16", c),
        ));
        chosen.extend(through_the_engine::<f16>(
            &engine,
            tensor_op_problem("f16", c),
        ));
        chosen.extend(through_the_engine::<f32>(
            &engine,
            tensor_op_problem("tf32", c),
        ));
    }
    // Vector loads where C and the addresses allow, element-wise otherwise.
    assert!(chosen.iter().any(|k| !k.contains("_novec")), "{chosen:?}");
    assert!(chosen.iter().any(|k| k.contains("_novec")), "{chosen:?}");
    // NCHW tensors and KCRS filters: the same kernels, on channels-last copies.
    for c in [16, 3] {
        let nchw = tensor_op_problem("bf16", c)
            .with_layout(Layout::Nchw)
            .with_filter_layout(FilterLayout::Kcrs);
        chosen.extend(through_the_engine::<bf16>(&engine, nchw));
        let nchw = tensor_op_problem("tf32", c).with_layout(Layout::Nchw);
        chosen.extend(through_the_engine::<f32>(&engine, nchw));
    }
    common::summary(TEST, &format!("kernels chosen: {chosen:?}"));
}

#[test]
fn missing_types_and_precisions_are_errors_not_float32() {
    const TEST: &str = "missing_types_and_precisions_are_errors_not_float32";
    let Some(engine) = engine(TEST) else { return };
    let stream = engine.stream();
    let shape = problem().shape().unwrap();
    let x16 = stream
        .clone_htod(&vec![bf16::from_f32(0.5); shape.input_len])
        .unwrap();
    let f16 = stream
        .clone_htod(&vec![bf16::from_f32(0.25); shape.filter_len])
        .unwrap();
    let mut y16 = stream
        .clone_htod(&vec![bf16::NAN; shape.output_len])
        .unwrap();
    let bf16_problem = problem().with_dtype(DType::Bf16);
    // A catalogue without kernels of the problem's type refuses it by name: never a kernel
    // of another type or precision.
    let strict_only = im2win::codegen::Catalogue::default_f32();
    let err = im2win::Plan::new(&bf16_problem, &strict_only, 132).unwrap_err();
    assert!(matches!(err, Error::NoKernelForType { .. }), "{err}");
    assert!(err.to_string().contains("no bf16 kernel"), "{err}");
    let tf32 = problem().with_precision(Precision::Tf32);
    let err = im2win::Plan::new(&tf32, &strict_only, 132).unwrap_err();
    assert!(err.to_string().contains("no tf32 kernel"), "{err}");
    // The engine's catalogue has them, for NCHW too: TF32 runs on tensor cores, and only
    // there (no strict kernel takes a TF32 problem).
    let tf32_plan = engine.plan(&tf32).unwrap();
    assert_eq!(tf32_plan.kernel().math, im2win::codegen::Math::TensorOp);
    assert!(tf32_plan.transposes_input());
    let x = stream.clone_htod(&vec![0.5_f32; shape.input_len]).unwrap();
    let f = stream
        .clone_htod(&vec![0.25_f32; shape.filter_len])
        .unwrap();
    let mut y = stream.clone_htod(&vec![POISON; shape.output_len]).unwrap();
    // Buffers of the wrong type, before anything else.
    let err = engine
        .conv2d(&bf16_problem, &x, &f, None, &mut y, None)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::DTypeMismatch {
                expected: DType::Bf16,
                actual: DType::F32
            }
        ),
        "{err}"
    );
    let host = stream.clone_dtoh(&y).unwrap();
    assert!(host.iter().all(|v| v.to_bits() == POISON.to_bits()));
    // The strict float32 problem still runs, and the bf16 one with bf16 buffers (NCHW, C = 3:
    // the element-wise tensor-core kernel on an NHWC copy), the interior 27 · 0.5 · 0.25.
    engine
        .conv2d(&problem(), &x, &f, None, &mut y, None)
        .unwrap();
    let host = stream.clone_dtoh(&y).unwrap();
    assert!(host.iter().all(|v| v.is_finite()));
    engine
        .conv2d(&bf16_problem, &x16, &f16, None, &mut y16, None)
        .unwrap();
    let host = stream.clone_dtoh(&y16).unwrap();
    assert!(host.iter().all(|v| v.is_finite()));
    assert!(host.contains(&bf16::from_f32(3.375)));
}

#[test]
fn the_gpu_oracle_convolves_the_rounded_values() {
    const TEST: &str = "the_gpu_oracle_convolves_the_rounded_values";
    let Some(engine) = engine(TEST) else { return };
    let stream = engine.stream();
    let shape = problem().shape().unwrap();
    let (x, f) = (values(shape.input_len, 1), values(shape.filter_len, 2));
    let cases = [
        (
            problem().with_dtype(DType::Bf16),
            x.iter()
                .map(|&v| bf16::from_f32(v).to_f32())
                .collect::<Vec<_>>(),
            f.iter()
                .map(|&v| bf16::from_f32(v).to_f32())
                .collect::<Vec<_>>(),
        ),
        (
            problem().with_precision(Precision::Tf32),
            x.iter().map(|&v| round_to_tf32(v)).collect(),
            f.iter().map(|&v| round_to_tf32(v)).collect(),
        ),
    ];
    for (problem, xv, fv) in cases {
        let dx = stream.clone_htod(&xv).unwrap();
        let df = stream.clone_htod(&fv).unwrap();
        let mut out = stream.alloc_zeros::<f64>(shape.output_len).unwrap();
        engine
            .direct_reference_f64(&problem, &dx, &df, None, &mut out)
            .unwrap();
        let gpu = stream.clone_dtoh(&out).unwrap();
        let values = problem
            .with_dtype(DType::F32)
            .with_precision(Precision::Strict);
        let cpu = im2win::cpu::reference_conv2d(&values, &xv, &fv, None).unwrap();
        for (g, c) in gpu.iter().zip(&cpu) {
            assert!((g - c).abs() <= 1e-12 * c.abs().max(1.0), "{g} {c}");
        }
    }
}

#[test]
fn element_types_convert_as_cuda_does() {
    // Round to nearest even, as __float2bfloat16_rn: the bench and the CPU backend rely on it.
    assert_eq!(
        <bf16 as Element>::from_f32(1.0 + 2.0_f32.powi(-8)).to_f32(),
        1.0
    );
}
