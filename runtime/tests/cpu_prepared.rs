//! Prepared filters on the CPU: a call with a filter packed once must give exactly the
//! outputs of the call that packs it (same kernels, same order of the sums), on every ISA,
//! both layouts, grouped and stem problems, bf16 and TF32, every epilogue; and a prepared
//! filter that does not suit a problem is refused, never read as something else.

mod common;

use common::{Limits, random_elements, random_grouped_problem, random_problem, test_seed};
use im2win_runtime::cpu::{
    FilterForm, Isa, conv2d_prepared, conv2d_with_isa_and_residual, prepare_filter,
    prepare_filter_with_isa, reference_conv2d_with_residual, relative_error,
};
use im2win_runtime::half::bf16;
use im2win_runtime::{
    Activation, Conv2dProblem, Element, Epilogue, Error, FilterLayout, Layout, Padding, Precision,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random problems per instruction-set level.
const CASES_PER_ISA: u64 = 300;

/// Larger than [`Limits::SMALL`]: several blocks of every micro-kernel's `MR`.
const MEDIUM: Limits = Limits {
    batch: 2,
    channels: 40,
    out_channels: 72,
    filter: 5,
    out_size: 20,
    stride: 2,
    dilation: 2,
    padding: 2,
    max_macs: 2_000_000,
};

/// Case `case`'s problem: dense (small or medium), a C = 3 stem (the pixel kernels), or
/// grouped; random layouts and epilogue.
fn problem_for(rng: &mut StdRng, case: u64) -> Conv2dProblem {
    let problem = match case % 5 {
        0 | 1 => random_problem(rng, &Limits::SMALL),
        2 => random_problem(rng, &MEDIUM),
        3 => {
            // A stem: C = 3, many output pixels, stride 1 or 2.
            let size = rng.random_range(8..=40);
            let stride = rng.random_range(1..=2);
            Conv2dProblem::new(
                [rng.random_range(1..=2), 3, size, size],
                [rng.random_range(1..=40), 3, 3, 3],
            )
            .with_stride([stride, stride])
            .with_padding(Padding::uniform(1))
        }
        _ => {
            let depthwise = rng.random_bool(0.5);
            random_grouped_problem(rng, depthwise, 20_000)
        }
    };
    let epilogue = match case % 3 {
        0 => Epilogue::IDENTITY,
        1 => Epilogue::activation(Activation::ALL[case as usize % Activation::ALL.len()])
            .with_alpha(0.75),
        _ => Epilogue::activation(Activation::Relu).with_residual(0.5),
    };
    problem
        .with_layout(Layout::ALL[rng.random_range(0..2)])
        .with_filter_layout([FilterLayout::Kcrs, FilterLayout::Krsc][rng.random_range(0..2)])
        .with_epilogue(epilogue)
}

/// Runs `problem` with the filter as given and prepared on `isa`; both outputs must be the
/// same bits, and the prepared one also serves the problem at another batch (or is
/// refused). Returns the relative error against the float64 oracle and the form prepared.
fn check_case<T: Element>(
    isa: Isa,
    problem: &Conv2dProblem,
    rng: &mut StdRng,
    context: &str,
) -> (f64, FilterForm) {
    let context = format!("{context}: {problem:?}");
    let shape = problem.shape().unwrap();
    let input = random_elements::<T>(rng, shape.input_len);
    let filter = random_elements::<T>(rng, shape.filter_len);
    let bias = rng
        .random_bool(0.5)
        .then(|| random_elements::<T>(rng, shape.output[1]));
    let residual = problem
        .epilogue
        .residual
        .then(|| random_elements::<T>(rng, shape.output_len));
    let run_given = |out: &mut [T]| {
        conv2d_with_isa_and_residual(
            isa,
            problem,
            &input,
            &filter,
            bias.as_deref(),
            residual.as_deref(),
            out,
        )
        .unwrap_or_else(|e| panic!("{context}: {e}"))
    };
    let mut given = vec![T::from_f32(f32::NAN); shape.output_len];
    run_given(&mut given);
    let prepared = prepare_filter_with_isa(isa, problem, &filter)
        .unwrap_or_else(|e| panic!("{context}: prepare: {e}"));
    assert!(prepared.suits(problem), "{context}: {prepared:?}");
    // Grouped problems read the values; every other plan a packed filter.
    assert_eq!(
        prepared.form() == FilterForm::Values,
        problem.groups > 1,
        "{context}: {prepared:?}"
    );
    if let FilterForm::Packed { block } = prepared.form() {
        assert_eq!(
            prepared.bytes(),
            4 * problem.filter[0].div_ceil(block) * block * shape.reduction,
            "{context}"
        );
    }
    let mut out = vec![T::from_f32(f32::NAN); shape.output_len];
    conv2d_prepared(
        problem,
        &input,
        &prepared,
        bias.as_deref(),
        residual.as_deref(),
        &mut out,
    )
    .unwrap_or_else(|e| panic!("{context}: prepared: {e}"));
    for (i, (a, b)) in out.iter().zip(&given).enumerate() {
        assert_eq!(
            a.to_f32().to_bits(),
            b.to_f32().to_bits(),
            "{context}: output {i}: prepared {} against {}",
            a.to_f32(),
            b.to_f32()
        );
    }
    let widen = |v: &[T]| v.iter().map(|x| x.to_f32()).collect::<Vec<f32>>();
    let reference = reference_conv2d_with_residual(
        problem,
        &input,
        &filter,
        bias.as_deref(),
        residual.as_deref(),
    )
    .unwrap();
    (relative_error(&widen(&out), &reference), prepared.form())
}

#[test]
fn prepared_filters_give_the_same_bits_on_every_isa() {
    let seed = test_seed(0x15_0001);
    let mut tested = Vec::new();
    for isa in Isa::ALL {
        if !isa.is_available() {
            eprintln!("{isa}: not available on this CPU: SKIPPED");
            continue;
        }
        let (mut forms, mut worst) = (std::collections::BTreeSet::new(), [0.0_f64; 3]);
        for case in 0..CASES_PER_ISA {
            let case_seed = seed.wrapping_add(case);
            let mut rng = StdRng::seed_from_u64(case_seed);
            let problem = problem_for(&mut rng, case);
            // f32 strict, TF32 (rounded once at preparation), bf16 (widened).
            let kind = (case / 5) % 3;
            let context =
                format!("{isa}, case {case} (seed {case_seed}), kind {kind}: {problem:?}");
            let (error, form) = match kind {
                0 => check_case::<f32>(isa, &problem, &mut rng, &context),
                1 => check_case::<f32>(
                    isa,
                    &problem.with_precision(Precision::Tf32),
                    &mut rng,
                    &context,
                ),
                _ => check_case::<bf16>(isa, &problem.with_dtype(bf16::DTYPE), &mut rng, &context),
            };
            worst[kind as usize] = worst[kind as usize].max(error);
            forms.insert(format!("{form:?}"));
        }
        eprintln!(
            "{isa}: worst relative errors f32 {:e}, tf32 {:e}, bf16 {:e}",
            worst[0], worst[1], worst[2]
        );
        // Against the oracle: float32 sums of the given values (TF32 and bf16 rounded).
        assert!(worst[0] < 1e-5, "{isa}: f32 error {:e}", worst[0]);
        assert!(worst[1] < 1e-5, "{isa}: tf32 error {:e}", worst[1]);
        assert!(worst[2] < 8e-3, "{isa}: bf16 error {:e}", worst[2]);
        // Values (grouped), the micro-kernel's blocks and, with AVX2, the pixel kernels'.
        eprintln!("{isa}: forms {forms:?}");
        assert!(forms.len() >= 2, "{isa}: forms covered: {forms:?}");
        tested.push(isa.name());
    }
    assert!(tested.contains(&Isa::detected().name()));
}

/// A filter prepared at one batch and image size serves others of the same plan, and gives
/// the bits of the call that packs it.
#[test]
fn a_prepared_filter_serves_other_batches_and_images() {
    let base =
        Conv2dProblem::new([1, 64, 14, 14], [96, 64, 3, 3]).with_padding(Padding::uniform(1));
    let mut rng = StdRng::seed_from_u64(test_seed(0x15_0002));
    let filter = random_elements::<f32>(&mut rng, base.shape().unwrap().filter_len);
    let prepared = prepare_filter(&base, &filter).unwrap();
    for (n, size, layout) in [
        (1, 14, Layout::Nchw),
        (3, 14, Layout::Nchw),
        (2, 9, Layout::Nhwc),
    ] {
        let problem = Conv2dProblem::new([n, 64, size, size], [96, 64, 3, 3])
            .with_padding(Padding::uniform(1))
            .with_layout(layout);
        assert!(prepared.suits(&problem), "{problem:?}");
        let shape = problem.shape().unwrap();
        let input = random_elements::<f32>(&mut rng, shape.input_len);
        let mut given = vec![f32::NAN; shape.output_len];
        im2win_runtime::cpu::conv2d(&problem, &input, &filter, None, &mut given).unwrap();
        let mut out = vec![f32::NAN; shape.output_len];
        conv2d_prepared(&problem, &input, &prepared, None, None, &mut out).unwrap();
        assert!(
            out.iter()
                .zip(&given)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{problem:?}"
        );
    }
}

/// A prepared filter is refused, with the reason, by a problem with another filter or
/// another form; buffers are checked as in `conv2d`.
#[test]
fn a_prepared_filter_that_does_not_suit_is_refused() {
    let base =
        Conv2dProblem::new([1, 16, 10, 10], [24, 16, 3, 3]).with_padding(Padding::uniform(1));
    let shape = base.shape().unwrap();
    let mut rng = StdRng::seed_from_u64(test_seed(0x15_0003));
    let filter = random_elements::<f32>(&mut rng, shape.filter_len);
    let prepared = prepare_filter(&base, &filter).unwrap();
    let input = random_elements::<f32>(&mut rng, shape.input_len);
    let mut out = vec![0.0_f32; shape.output_len];
    let others = [
        // Another filter size, layout, group count, precision, element type.
        Conv2dProblem::new([1, 16, 10, 10], [24, 16, 5, 5]).with_padding(Padding::uniform(2)),
        base.with_filter_layout(FilterLayout::Krsc),
        Conv2dProblem::new([1, 16, 10, 10], [24, 8, 3, 3])
            .with_padding(Padding::uniform(1))
            .with_groups(2),
        base.with_precision(Precision::Tf32),
    ];
    for other in others {
        assert!(!prepared.suits(&other), "{other:?}");
        let shape = other.shape().unwrap();
        let input = vec![1.0_f32; shape.input_len];
        let mut out = vec![0.0_f32; shape.output_len];
        let result = conv2d_prepared(&other, &input, &prepared, None, None, &mut out);
        assert!(
            matches!(result, Err(Error::PreparedFilterMismatch { .. })),
            "{other:?}: {result:?}"
        );
        assert!(out.iter().all(|&v| v == 0.0), "output untouched: {other:?}");
    }
    let bf16_problem = base.with_dtype(bf16::DTYPE);
    let bf16_input = vec![bf16::ONE; shape.input_len];
    let mut bf16_out = vec![bf16::ZERO; shape.output_len];
    assert!(matches!(
        conv2d_prepared(
            &bf16_problem,
            &bf16_input,
            &prepared,
            None,
            None,
            &mut bf16_out
        ),
        Err(Error::PreparedFilterMismatch { .. })
    ));
    // Buffers: the input's length, then a residual the epilogue lacks.
    assert!(matches!(
        conv2d_prepared(&base, &input[1..], &prepared, None, None, &mut out),
        Err(Error::BufferLength {
            buffer: "input",
            ..
        })
    ));
    assert!(matches!(
        conv2d_prepared(&base, &input, &prepared, None, Some(&out.clone()), &mut out),
        Err(Error::ResidualMismatch { .. })
    ));
    assert!(matches!(
        prepare_filter(&base, &filter[1..]),
        Err(Error::BufferLength {
            buffer: "filter",
            ..
        })
    ));
}
