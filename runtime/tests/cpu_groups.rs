//! Grouped and depthwise convolution on the CPU: the oracle against a hand-computed
//! depthwise case and against per-group dense convolutions (an independent construction of
//! what `groups` means), the CPU backend against the oracle on random grouped and depthwise
//! problems (both layouts, both filter layouts, every epilogue, float32, bf16 and f16,
//! NaN-poisoned outputs), and the refusal of invalid group counts.

mod common;

use common::{random_elements, random_grouped_problem, test_seed};
use im2win_runtime::cpu::{
    Isa, conv2d_with_isa_and_residual, conv2d_with_residual, reference_conv2d,
    reference_conv2d_with_residual,
};
use im2win_runtime::half::{bf16, f16};
use im2win_runtime::{
    Activation, Conv2dProblem, DType, Element, Epilogue, Error, FilterLayout, Layout, Padding,
    Precision,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_epilogue(rng: &mut StdRng) -> Epilogue {
    if rng.random_ratio(1, 5) {
        return Epilogue::IDENTITY;
    }
    let activation = Activation::ALL[rng.random_range(0..Activation::ALL.len())];
    let mut epilogue = Epilogue::activation(activation).with_alpha(rng.random_range(0.25..2.0));
    if rng.random_bool(0.5) {
        epilogue = epilogue.with_residual(rng.random_range(-1.5..1.5));
    }
    epilogue
}

#[test]
fn depthwise_oracle_by_hand() {
    // Two channels, multiplier 2 (K = 4): output k reads channel k / 2. 3×3 input, 2×2
    // filters, no padding: 2×2 outputs.
    let problem = Conv2dProblem::new([1, 2, 3, 3], [4, 1, 2, 2]).with_groups(2);
    let x: Vec<f32> = (1..=18).map(|v| v as f32).collect();
    // Filter k: only tap (0, 1) is k + 1 (the top right of the window).
    let mut f = vec![0.0_f32; 16];
    for k in 0..4 {
        f[k * 4 + 1] = (k + 1) as f32;
    }
    let y = reference_conv2d(&problem, &x, &f, None).unwrap();
    // Window top-right of output (p, q) is X[c][p][q + 1].
    let top_right = |c: usize| [2.0, 3.0, 5.0, 6.0].map(|v: f64| v + 9.0 * c as f64);
    let mut expected = Vec::new();
    for k in 0..4 {
        expected.extend(top_right(k / 2).map(|v| v * (k + 1) as f64));
    }
    assert_eq!(y, expected);
}

/// The grouped oracle equals the dense oracle run per group on the group's slices (NCHW
/// input, KCRS filter, NCHW output), concatenated along the channels.
#[test]
fn grouped_oracle_is_dense_per_group() {
    let mut rng = StdRng::seed_from_u64(test_seed(13_001));
    for case in 0..60 {
        let problem = random_grouped_problem(&mut rng, case % 3 == 0, 20_000);
        let shape = problem.shape().unwrap();
        let x: Vec<f32> = random_elements(&mut rng, shape.input_len);
        let f: Vec<f32> = random_elements(&mut rng, shape.filter_len);
        let bias: Vec<f32> = random_elements(&mut rng, shape.output[1]);
        let grouped = reference_conv2d(&problem, &x, &f, Some(&bias)).unwrap();
        let [n, c, h, w] = problem.input;
        let [k, cg, r, s] = problem.filter;
        let g = problem.groups;
        let (kg, [_, _, p, q]) = (k / g, shape.output);
        let mut dense = Vec::new();
        for group in 0..g {
            let one = Conv2dProblem {
                input: [n, cg, h, w],
                filter: [kg, cg, r, s],
                groups: 1,
                ..problem
            };
            let xs: Vec<f32> = (0..n)
                .flat_map(|i| {
                    let start = (i * c + group * cg) * h * w;
                    x[start..start + cg * h * w].to_vec()
                })
                .collect();
            let fs = &f[group * kg * cg * r * s..(group + 1) * kg * cg * r * s];
            let bs = &bias[group * kg..(group + 1) * kg];
            dense.push(reference_conv2d(&one, &xs, fs, Some(bs)).unwrap());
        }
        // Reassemble [n][k][p][q] from the groups' [n][kg][p][q].
        let mut expected = Vec::with_capacity(grouped.len());
        for i in 0..n {
            for (group, out) in dense.iter().enumerate() {
                let _ = group;
                expected.extend_from_slice(&out[i * kg * p * q..(i + 1) * kg * p * q]);
            }
        }
        assert_eq!(grouped, expected, "case {case}: {problem:?}");
    }
}

/// The CPU backend on `cases` random grouped problems of element type `T` against the
/// oracle: relative error at most `tolerance`, every output written.
fn backend_matches_oracle<T: Element>(dtype: DType, precision: Precision, tolerance: f64) {
    let mut rng = StdRng::seed_from_u64(test_seed(13_002 + dtype as u64));
    let mut worst = 0.0_f64;
    let mut seen = [0_usize; 4];
    for case in 0..200 {
        let depthwise = case % 2 == 0;
        let layout = Layout::ALL[rng.random_range(0..2)];
        let filter_layout = FilterLayout::ALL[rng.random_range(0..2)];
        let problem = random_grouped_problem(&mut rng, depthwise, 60_000)
            .with_layout(layout)
            .with_filter_layout(filter_layout)
            .with_epilogue(random_epilogue(&mut rng))
            .with_dtype(dtype)
            .with_precision(precision);
        seen[usize::from(depthwise) * 2 + layout as usize] += 1;
        let shape = problem.shape().unwrap();
        let x: Vec<T> = random_elements(&mut rng, shape.input_len);
        let f: Vec<T> = random_elements(&mut rng, shape.filter_len);
        let bias: Option<Vec<T>> = rng
            .random_bool(0.5)
            .then(|| random_elements(&mut rng, shape.output[1]));
        let residual: Option<Vec<T>> = problem
            .epilogue
            .residual
            .then(|| random_elements(&mut rng, shape.output_len));
        let reference =
            reference_conv2d_with_residual(&problem, &x, &f, bias.as_deref(), residual.as_deref())
                .unwrap();
        let mut y = vec![T::from_f32(f32::NAN); shape.output_len];
        conv2d_with_residual(
            &problem,
            &x,
            &f,
            bias.as_deref(),
            residual.as_deref(),
            &mut y,
        )
        .unwrap_or_else(|e| panic!("case {case}: {e} on {problem:?}"));
        assert!(
            y.iter().all(|v| v.to_f32().is_finite()),
            "case {case}: an output left unwritten on {problem:?}"
        );
        let err = im2win_runtime::cpu::relative_error(&y, &reference);
        assert!(
            err <= tolerance,
            "case {case}: relative error {err:e} > {tolerance:e} on {problem:?}"
        );
        worst = worst.max(err);
    }
    assert!(seen.iter().all(|&s| s > 0), "layouts drawn: {seen:?}");
    println!("{dtype} {precision}: worst relative error {worst:.2e}");
}

#[test]
fn backend_matches_oracle_f32() {
    backend_matches_oracle::<f32>(DType::F32, Precision::Strict, 1e-5);
}

/// A TF32 request on a grouped problem is computed in strict FP32 (as on the GPU): the
/// oracle does not round it either, and the error is FP32's.
#[test]
fn backend_matches_oracle_tf32_as_f32() {
    backend_matches_oracle::<f32>(DType::F32, Precision::Tf32, 1e-5);
}

#[test]
fn backend_matches_oracle_bf16() {
    backend_matches_oracle::<bf16>(DType::Bf16, Precision::Strict, 8e-3);
}

#[test]
fn backend_matches_oracle_f16() {
    backend_matches_oracle::<f16>(DType::F16, Precision::Strict, 1e-3);
}

/// Every level's loops (compiled for its vector width and FMAs) give the same bits as the
/// portable ones: each output is the same sequence of fused multiply-adds whatever the
/// vectorisation, in both layouts, every stride, dilation and padding of the generator
/// (NCHW: the phase planes; NHWC: runs along the channels); and each matches the oracle.
#[test]
fn every_isa_gives_the_portable_bits() {
    let mut rng = StdRng::seed_from_u64(test_seed(13_010));
    let isas: Vec<Isa> = Isa::ALL.into_iter().filter(|i| i.is_available()).collect();
    for case in 0..150 {
        let problem = random_grouped_problem(&mut rng, case % 2 == 0, 40_000)
            .with_layout(Layout::ALL[case / 2 % 2])
            .with_filter_layout(FilterLayout::ALL[rng.random_range(0..2)])
            .with_epilogue(random_epilogue(&mut rng));
        let shape = problem.shape().unwrap();
        let x: Vec<f32> = random_elements(&mut rng, shape.input_len);
        let f: Vec<f32> = random_elements(&mut rng, shape.filter_len);
        let bias: Vec<f32> = random_elements(&mut rng, shape.output[1]);
        let residual: Option<Vec<f32>> = problem
            .epilogue
            .residual
            .then(|| random_elements(&mut rng, shape.output_len));
        let run = |isa: Isa| {
            let mut y = vec![f32::NAN; shape.output_len];
            conv2d_with_isa_and_residual(
                isa,
                &problem,
                &x,
                &f,
                Some(&bias),
                residual.as_deref(),
                &mut y,
            )
            .unwrap_or_else(|e| panic!("case {case}, {isa}: {e} on {problem:?}"));
            y
        };
        let portable = run(Isa::Portable);
        let reference =
            reference_conv2d_with_residual(&problem, &x, &f, Some(&bias), residual.as_deref())
                .unwrap();
        let err = im2win_runtime::cpu::relative_error(&portable, &reference);
        assert!(
            err < 1e-5,
            "case {case}: relative error {err:e} on {problem:?}"
        );
        for &isa in &isas {
            let y = run(isa);
            if let Some(i) = (0..y.len()).find(|&i| y[i].to_bits() != portable[i].to_bits()) {
                panic!(
                    "case {case}, {isa}: output {i} is {} against the portable {} on {problem:?}",
                    y[i], portable[i]
                );
            }
        }
    }
    println!("grouped: 150 problems, levels {isas:?} bit-identical to the portable loops");
}

#[test]
fn invalid_group_counts_are_refused() {
    let valid = Conv2dProblem::new([1, 6, 8, 8], [9, 2, 3, 3]).with_groups(3);
    assert!(valid.shape().is_ok());
    assert_eq!(valid.shape().unwrap().reduction, 2 * 9);
    assert_eq!(valid.shape().unwrap().filter_len, 9 * 2 * 9);
    let cases = [
        // groups does not divide C.
        Conv2dProblem::new([1, 7, 8, 8], [9, 2, 3, 3]).with_groups(3),
        // groups does not divide K.
        Conv2dProblem::new([1, 6, 8, 8], [8, 2, 3, 3]).with_groups(3),
        // the filter has C channels instead of C / groups.
        Conv2dProblem::new([1, 6, 8, 8], [9, 6, 3, 3]).with_groups(3),
        // groups larger than C.
        Conv2dProblem::new([1, 4, 8, 8], [8, 1, 3, 3]).with_groups(8),
    ];
    for problem in cases {
        let result = problem.shape();
        assert!(
            matches!(result, Err(Error::BadGroups { groups, .. }) if groups == problem.groups),
            "{problem:?}: {result:?}"
        );
        let x = vec![1.0_f32; 8 * 8 * problem.input[1]];
        let f = vec![1.0_f32; problem.filter.iter().product()];
        assert!(matches!(
            reference_conv2d(&problem, &x, &f, None),
            Err(Error::BadGroups { .. })
        ));
    }
    // groups = 0 is a zero size.
    let zero = valid.with_groups(0);
    assert!(matches!(
        zero.shape(),
        Err(Error::ZeroSize { name: "groups" })
    ));
}

/// A depthwise problem with a padding wider than the filter and a stride: the border
/// outputs read only padding and hold the bias alone.
#[test]
fn padding_only_windows_hold_the_bias() {
    let problem = Conv2dProblem::new([1, 3, 2, 2], [3, 1, 1, 1])
        .with_groups(3)
        .with_padding(Padding::uniform(1));
    let x = vec![1.0_f32; 12];
    let f = vec![2.0_f32; 3];
    let bias = [0.5_f32, -0.5, 0.25];
    let mut y = vec![f32::NAN; 3 * 16];
    conv2d_with_residual(&problem, &x, &f, Some(&bias), None, &mut y).unwrap();
    for k in 0..3 {
        let plane = &y[k * 16..(k + 1) * 16];
        assert_eq!(plane[0], bias[k]);
        assert_eq!(plane[5], 2.0 + bias[k]);
    }
}
