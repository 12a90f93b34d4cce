//! The float64 oracle against convolutions computed by hand, so that it is trusted on its
//! own before anything is compared with it.

mod common;

use common::random_data;
use im2win_runtime::cpu::reference_conv2d;
use im2win_runtime::{Conv2dProblem, Error, Padding};
use rand::SeedableRng;
use rand::rngs::StdRng;

fn ramp(len: usize) -> Vec<f32> {
    (0..len).map(|v| v as f32).collect()
}

#[test]
fn one_by_one_filter_mixes_channels() {
    // N = 2, C = 3, 2×2 images whose channel c of image n is the constant 10n + c + 1.
    let problem = Conv2dProblem::new([2, 3, 2, 2], [2, 3, 1, 1]);
    let x: Vec<f32> = (0..2)
        .flat_map(|n| (0..3).flat_map(move |c| [(10 * n + c + 1) as f32; 4]))
        .collect();
    let f = [1.0, 2.0, 3.0, -1.0, 0.0, 0.5];
    let bias = [0.25, -4.0];
    let y = reference_conv2d(&problem, &x, &f, Some(&bias)).unwrap();
    // Image 0: k0 = 1·1 + 2·2 + 3·3 + 0.25 = 14.25, k1 = −1 + 1.5 − 4 = −3.5.
    // Image 1: k0 = 11 + 24 + 39 + 0.25 = 74.25, k1 = −11 + 6.5 − 4 = −8.5.
    let expected: Vec<f64> = [14.25, -3.5, 74.25, -8.5]
        .iter()
        .flat_map(|&v| [v; 4])
        .collect();
    assert_eq!(y, expected);
}

#[test]
fn identity_filter_with_padding_returns_the_input() {
    // K = C = 3, F[k][c] = δ(k, c) at the centre of a 3×3 filter, padding 1: Y = X.
    let problem = Conv2dProblem::new([2, 3, 4, 5], [3, 3, 3, 3]).with_padding(Padding::uniform(1));
    let x = random_data(&mut StdRng::seed_from_u64(11), 2 * 3 * 4 * 5);
    let mut f = vec![0.0; 3 * 3 * 9];
    for k in 0..3 {
        f[(k * 3 + k) * 9 + 4] = 1.0;
    }
    let y = reference_conv2d(&problem, &x, &f, None).unwrap();
    let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    assert_eq!(y, x64);
}

#[test]
fn tap_counts_with_padding_and_stride() {
    // All-ones 3×3 filter on an all-ones 4×4 input: each output counts its in-bounds taps.
    let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3]).with_padding(Padding::uniform(1));
    let y = reference_conv2d(&problem, &[1.0; 16], &[1.0; 9], None).unwrap();
    #[rustfmt::skip]
    let expected = [
        4.0, 6.0, 6.0, 4.0,
        6.0, 9.0, 9.0, 6.0,
        6.0, 9.0, 9.0, 6.0,
        4.0, 6.0, 6.0, 4.0,
    ];
    assert_eq!(y, expected);

    // Stride 2 keeps outputs (0,0), (0,2), (2,0), (2,2) of the above.
    let strided = problem.with_stride([2, 2]);
    let y = reference_conv2d(&strided, &[1.0; 16], &[1.0; 9], None).unwrap();
    assert_eq!(y, [4.0, 6.0, 6.0, 9.0]);
}

#[test]
fn asymmetric_padding() {
    // X = [[1,2],[3,4]], all-ones 2×2 filter, padding top 1 and right 1: the padded input
    // is [[0,0,0],[1,2,0],[3,4,0]].
    let problem = Conv2dProblem::new([1, 1, 2, 2], [1, 1, 2, 2]).with_padding(Padding {
        top: 1,
        bottom: 0,
        left: 0,
        right: 1,
    });
    let y = reference_conv2d(&problem, &[1.0, 2.0, 3.0, 4.0], &[1.0; 4], None).unwrap();
    assert_eq!(y, [3.0, 2.0, 10.0, 6.0]);
}

#[test]
fn dilation_spreads_the_taps() {
    // All-ones 2×2 filter, dilation 2, on the 5×5 ramp 0..25: each output is
    // X[p][q] + X[p][q+2] + X[p+2][q] + X[p+2][q+2] = 4·(5p + q) + 24.
    let problem = Conv2dProblem::new([1, 1, 5, 5], [1, 1, 2, 2]).with_dilation([2, 2]);
    let y = reference_conv2d(&problem, &ramp(25), &[1.0; 4], None).unwrap();
    let expected: Vec<f64> = (0..9)
        .map(|i| f64::from(4 * (5 * (i / 3) + i % 3) + 24))
        .collect();
    assert_eq!(y, expected);

    // Dilation on one axis only, with a weighted filter: F = [[1, 10]], dilation (1, 3),
    // on a 1×4 row 0..4: Y[q] = X[q] + 10·X[q + 3], Q = 1.
    let problem = Conv2dProblem::new([1, 1, 1, 4], [1, 1, 1, 2]).with_dilation([1, 3]);
    let y = reference_conv2d(&problem, &ramp(4), &[1.0, 10.0], None).unwrap();
    assert_eq!(y, [30.0]);
}

#[test]
fn it_is_a_cross_correlation_not_a_convolution() {
    // A filter with one nonzero tap at (r, s) = (0, 2) reads X[p][q + 2]: not flipped.
    let problem = Conv2dProblem::new([1, 1, 3, 4], [1, 1, 1, 3]);
    let y = reference_conv2d(&problem, &ramp(12), &[0.0, 0.0, 1.0], None).unwrap();
    assert_eq!(y, [2.0, 3.0, 6.0, 7.0, 10.0, 11.0]);
}

#[test]
fn batch_and_output_channels_in_nchw_order() {
    // N = 2, K = 2, 1×1 input: Y[n][k] = X[n]·F[k] + bias[k].
    let problem = Conv2dProblem::new([2, 1, 1, 1], [2, 1, 1, 1]);
    let y = reference_conv2d(&problem, &[2.0, 3.0], &[5.0, 7.0], Some(&[0.5, 1.0])).unwrap();
    assert_eq!(y, [10.5, 15.0, 15.5, 22.0]);
}

#[test]
fn accumulates_in_f64() {
    // 1 + 2^-30 is not a float32 but the sum of two float32 products in float64.
    let problem = Conv2dProblem::new([1, 2, 1, 1], [1, 2, 1, 1]);
    let y = reference_conv2d(
        &problem,
        &[1.0, 2f32.powi(-15)],
        &[1.0, 2f32.powi(-15)],
        None,
    )
    .unwrap();
    assert_eq!(y, [1.0 + 2f64.powi(-30)]);
}

#[test]
fn buffer_length_errors() {
    let problem = Conv2dProblem::new([1, 2, 3, 3], [4, 2, 2, 2]);
    let (x, f, b) = ([1.0; 18], [1.0; 32], [1.0; 4]);
    let check = |result: Result<Vec<f64>, Error>, name: &str, expected: usize, actual: usize| {
        assert!(
            matches!(
                result,
                Err(Error::BufferLength { buffer, expected: e, actual: a })
                    if buffer == name && e == expected && a == actual
            ),
            "{name}: {result:?}"
        );
    };
    check(
        reference_conv2d(&problem, &x[1..], &f, None),
        "input",
        18,
        17,
    );
    check(
        reference_conv2d(&problem, &[1.0; 19], &f, None),
        "input",
        18,
        19,
    );
    check(
        reference_conv2d(&problem, &x, &f[1..], None),
        "filter",
        32,
        31,
    );
    check(
        reference_conv2d(&problem, &x, &[1.0; 33], None),
        "filter",
        32,
        33,
    );
    check(
        reference_conv2d(&problem, &x, &f, Some(&b[1..])),
        "bias",
        4,
        3,
    );
    check(
        reference_conv2d(&problem, &x, &f, Some(&[1.0; 5])),
        "bias",
        4,
        5,
    );
    assert_eq!(
        reference_conv2d(&problem, &x, &f, Some(&b)).unwrap().len(),
        4 * 2 * 2
    );

    let invalid = problem.with_groups(2);
    assert!(matches!(
        reference_conv2d(&invalid, &x, &f, None),
        Err(Error::BadGroups { groups: 2, .. })
    ));
}
