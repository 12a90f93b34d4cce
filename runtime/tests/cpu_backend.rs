//! The CPU im2win layouts and backend against their definitions and the float64 oracle.

mod common;

use std::time::Instant;

use common::{Limits, random_data, random_problem, relative_error, test_seed};
use im2win_runtime::cpu::{
    Isa, conv2d, conv2d_with_isa, im2win_filter, im2win_input, reference_conv2d,
};
use im2win_runtime::{Conv2dProblem, Error, FilterLayout, Layout, Padding};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Random problems compared with the oracle.
const CASES: u64 = 1000;
/// The bound of `‖out − ref‖₂ / ‖ref‖₂` for float32 accumulation.
const TOLERANCE: f64 = 1e-5;

/// What the random cases must have covered, so that a change of the generator cannot
/// silently drop an edge case.
#[derive(Debug, Default)]
struct Coverage {
    asymmetric_padding: usize,
    stride: usize,
    dilation_h: usize,
    dilation_w: usize,
    odd_size: usize,
    one_in_channel: usize,
    one_out_channel: usize,
    filter_1x1: usize,
    filter_11: usize,
    one_out_row: usize,
    one_out_col: usize,
    /// At least 2 output rows of at most 6 columns: AVX-512 tiles of two rows.
    two_row_tiles: usize,
    unread_columns: usize,
    bias: usize,
    no_bias: usize,
    /// NCHW, one filter row, no padding: the image is its own strip (no strip built).
    direct_strip: usize,
    /// NHWC, one filter row, at least 8 channels and 8 output columns: strips built by
    /// 8 × 8 transposes.
    nhwc_blocks: usize,
    /// Multiply-adds over all cases (reported, not checked).
    macs: usize,
}

impl Coverage {
    fn count(&mut self, problem: &Conv2dProblem, has_bias: bool) {
        let shape = problem.shape().unwrap();
        let [_, c, h, w] = problem.input;
        let [k, _, r, s] = problem.filter;
        let Padding {
            top,
            bottom,
            left,
            right,
        } = problem.padding;
        let [_, _, p, q] = shape.output;
        let tally = |hit: bool, counter: &mut usize| *counter += usize::from(hit);
        tally(top != bottom || left != right, &mut self.asymmetric_padding);
        tally(problem.stride != [1, 1], &mut self.stride);
        tally(problem.dilation[0] > 1, &mut self.dilation_h);
        tally(problem.dilation[1] > 1, &mut self.dilation_w);
        tally(h % 2 == 1 && w % 2 == 1, &mut self.odd_size);
        tally(c == 1, &mut self.one_in_channel);
        tally(k == 1, &mut self.one_out_channel);
        tally(r == 1 && s == 1, &mut self.filter_1x1);
        tally(r == 11 || s == 11, &mut self.filter_11);
        tally(p == 1, &mut self.one_out_row);
        tally(q == 1, &mut self.one_out_col);
        tally(p >= 2 && q <= 6, &mut self.two_row_tiles);
        tally(shape.win_width < w + left + right, &mut self.unread_columns);
        tally(has_bias, &mut self.bias);
        tally(!has_bias, &mut self.no_bias);
        let unpadded = top + bottom + left + right == 0;
        let nchw = problem.layout == Layout::Nchw;
        tally(nchw && r == 1 && unpadded, &mut self.direct_strip);
        tally(!nchw && r == 1 && c >= 8 && q >= 8, &mut self.nhwc_blocks);
        self.macs += shape.output_len * shape.reduction;
    }

    /// Fails unless every kind came up `at_least` times; `nhwc_blocks` only where the
    /// cases include the medium ones (`medium`): a small problem has at most 8 channels.
    fn check(&self, at_least: usize, medium: bool) {
        let counts = format!("{self:?}");
        let Coverage {
            asymmetric_padding,
            stride,
            dilation_h,
            dilation_w,
            odd_size,
            one_in_channel,
            one_out_channel,
            filter_1x1,
            filter_11,
            one_out_row,
            one_out_col,
            two_row_tiles,
            unread_columns,
            bias,
            no_bias,
            direct_strip,
            nhwc_blocks,
            macs: _,
        } = *self;
        for count in [
            asymmetric_padding,
            stride,
            dilation_h,
            dilation_w,
            odd_size,
            one_in_channel,
            one_out_channel,
            filter_1x1,
            filter_11,
            one_out_row,
            one_out_col,
            two_row_tiles,
            unread_columns,
            bias,
            no_bias,
            direct_strip,
            if medium { nhwc_blocks } else { at_least },
        ] {
            assert!(
                count >= at_least,
                "too few random cases of some kind: {counts}"
            );
        }
    }
}

/// `problem` in case `case`'s combination of input and filter layout, each in turn: the
/// strip builders of both layouts (and the direct strip of NCHW), the reduction in either
/// filter order.
fn in_layouts(problem: Conv2dProblem, case: u64) -> Conv2dProblem {
    let case = case as usize;
    problem
        .with_layout([Layout::Nchw, Layout::Nhwc][case % 2])
        .with_filter_layout([FilterLayout::Kcrs, FilterLayout::Krsc][case / 2 % 2])
}

#[test]
fn backend_matches_oracle_on_random_problems() {
    let seed = test_seed(0x1_2023_0001);
    let mut coverage = Coverage::default();
    let start = Instant::now();
    for case in 0..CASES {
        // One generator per case, so that a failing case reruns alone from its seed.
        let case_seed = seed.wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(case_seed);
        let problem = in_layouts(random_problem(&mut rng, &Limits::SMALL), case);
        let shape = problem.shape().unwrap();
        let input = random_data(&mut rng, shape.input_len);
        let filter = random_data(&mut rng, shape.filter_len);
        let bias = rng
            .random_bool(0.5)
            .then(|| random_data(&mut rng, shape.output[1]));
        coverage.count(&problem, bias.is_some());

        let context = format!("case {case} (seed {case_seed}): {problem:?}");
        let reference = reference_conv2d(&problem, &input, &filter, bias.as_deref()).unwrap();
        let mut out = vec![f32::NAN; shape.output_len];
        conv2d(&problem, &input, &filter, bias.as_deref(), &mut out)
            .unwrap_or_else(|e| panic!("{context}: {e}"));
        if let Some(i) = out.iter().position(|v| !v.is_finite()) {
            panic!("{context}: output element {i} is {}", out[i]);
        }
        let error = relative_error(&out, &reference);
        assert!(error < TOLERANCE, "{context}: relative error {error:e}");
    }
    eprintln!(
        "{CASES} random problems in {:?}: {coverage:?}",
        start.elapsed()
    );
    coverage.check(10, false);
}

/// Larger than [`Limits::SMALL`]: several blocks and groups of output channels (every
/// micro-kernel's `MR`, full and partial), more input channels, wider rows.
const MEDIUM: Limits = Limits {
    batch: 2,
    channels: 40,
    out_channels: 72,
    filter: 7,
    out_size: 24,
    stride: 3,
    dilation: 2,
    padding: 3,
    max_macs: 3_000_000,
};

/// Random problems per instruction-set level: small ones (every edge case) and medium ones
/// (full tiles).
const CASES_PER_ISA: (u64, u64) = (300, 100);

/// Every micro-kernel this CPU runs, forced in turn, against the oracle, on 1, 2 and 3
/// threads (different splits of the work). Levels this CPU lacks are named and skipped.
#[test]
fn every_isa_matches_oracle_on_random_problems() {
    let seed = test_seed(0x1_2023_0004);
    let pools: Vec<rayon::ThreadPool> = [1, 2, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let start = Instant::now();
    let mut tested = Vec::new();
    for isa in Isa::ALL {
        if !isa.is_available() {
            eprintln!("{isa}: not available on this CPU: SKIPPED");
            assert!(matches!(
                conv2d_with_isa(
                    isa,
                    &Conv2dProblem::new([1, 1, 1, 1], [1, 1, 1, 1]),
                    &[1.0],
                    &[1.0],
                    None,
                    &mut [0.0]
                ),
                Err(Error::IsaUnavailable { .. })
            ));
            continue;
        }
        let mut coverage = Coverage::default();
        let (small, medium) = CASES_PER_ISA;
        for case in 0..small + medium {
            let case_seed = seed.wrapping_add(case);
            let mut rng = StdRng::seed_from_u64(case_seed);
            let limits = if case < small {
                &Limits::SMALL
            } else {
                &MEDIUM
            };
            let problem = in_layouts(random_problem(&mut rng, limits), case);
            let shape = problem.shape().unwrap();
            let input = random_data(&mut rng, shape.input_len);
            let filter = random_data(&mut rng, shape.filter_len);
            let bias = rng
                .random_bool(0.5)
                .then(|| random_data(&mut rng, shape.output[1]));
            coverage.count(&problem, bias.is_some());
            let pool = &pools[case as usize % pools.len()];
            let context = format!(
                "{isa}, {} threads, case {case} (seed {case_seed}): {problem:?}",
                pool.current_num_threads()
            );
            let reference = reference_conv2d(&problem, &input, &filter, bias.as_deref()).unwrap();
            let mut out = vec![f32::NAN; shape.output_len];
            pool.install(|| {
                conv2d_with_isa(isa, &problem, &input, &filter, bias.as_deref(), &mut out)
            })
            .unwrap_or_else(|e| panic!("{context}: {e}"));
            if let Some(i) = out.iter().position(|v| !v.is_finite()) {
                panic!("{context}: output element {i} is {}", out[i]);
            }
            let error = relative_error(&out, &reference);
            assert!(error < TOLERANCE, "{context}: relative error {error:e}");
        }
        coverage.check(5, true);
        tested.push(isa.name());
    }
    eprintln!(
        "{CASES_PER_ISA:?} random problems on each of {tested:?} in {:?}",
        start.elapsed()
    );
    assert!(tested.contains(&Isa::detected().name()));
}

/// `T[n][c][p][w][r]` straight from the formula of DESIGN.md.
fn im2win_by_definition(problem: &Conv2dProblem, x: &[f32]) -> Vec<f32> {
    let shape = problem.shape().unwrap();
    let [n_, c_, h, w_] = problem.input;
    let r_ = problem.filter[2];
    let [_, _, p_, _] = shape.output;
    let wt = shape.win_width;
    let mut t = Vec::with_capacity(shape.im2win_len);
    for n in 0..n_ {
        for c in 0..c_ {
            for p in 0..p_ {
                for w in 0..wt {
                    for r in 0..r_ {
                        let row = (p * problem.stride[0] + r * problem.dilation[0]) as i64
                            - problem.padding.top as i64;
                        let col = w as i64 - problem.padding.left as i64;
                        let inside = (0..h as i64).contains(&row) && (0..w_ as i64).contains(&col);
                        t.push(if inside {
                            x[((n * c_ + c) * h + row as usize) * w_ + col as usize]
                        } else {
                            0.0
                        });
                    }
                }
            }
        }
    }
    t
}

#[test]
fn layouts_match_their_definitions_on_random_problems() {
    let seed = test_seed(0x1_2023_0002);
    for case in 0..100 {
        let case_seed = seed.wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(case_seed);
        let problem = random_problem(&mut rng, &Limits::SMALL);
        let shape = problem.shape().unwrap();
        let context = format!("case {case} (seed {case_seed}): {problem:?}");

        let x = random_data(&mut rng, shape.input_len);
        let t = im2win_input(&problem, &x).unwrap();
        assert_eq!(t.len(), shape.im2win_len, "{context}");
        assert!(
            t == im2win_by_definition(&problem, &x),
            "{context}: T differs"
        );

        let f = random_data(&mut rng, shape.filter_len);
        let ft = im2win_filter(&problem, &f).unwrap();
        let [k_, c_, r_, s_] = problem.filter;
        for k in 0..k_ {
            for c in 0..c_ {
                for r in 0..r_ {
                    for s in 0..s_ {
                        assert_eq!(
                            ft[((k * c_ + c) * s_ + s) * r_ + r],
                            f[((k * c_ + c) * r_ + r) * s_ + s],
                            "{context}: F' at k={k} c={c} r={r} s={s}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn backend_on_hand_computed_cases() {
    // All-ones 3×3 filter on an all-ones 4×4 input, padding 1, stride 2: the count of
    // in-bounds taps at (0,0), (0,2), (2,0), (2,2), plus bias 0.5.
    let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3])
        .with_padding(Padding::uniform(1))
        .with_stride([2, 2]);
    let mut out = [f32::NAN; 4];
    conv2d(&problem, &[1.0; 16], &[1.0; 9], Some(&[0.5]), &mut out).unwrap();
    assert_eq!(out, [4.5, 6.5, 6.5, 9.5]);

    // ANCHORS.md's worked example through the whole backend: output (0, 1) is the dot
    // product of 1,5,9,2,6,10,3,7,11 with F' = F column by column.
    let problem = Conv2dProblem::new([1, 1, 4, 4], [1, 1, 3, 3]);
    let x: Vec<f32> = (0..16).map(|v| v as f32).collect();
    let f: Vec<f32> = (1..=9).map(|v| v as f32).collect();
    let mut out = [f32::NAN; 4];
    conv2d(&problem, &x, &f, None, &mut out).unwrap();
    // Σ_{r,s} X[r][1 + s]·F[r][s] = 1·1+2·2+3·3 + 5·4+6·5+7·6 + 9·7+10·8+11·9.
    assert_eq!(out[1], 348.0);
    // Output (0, 0) is 303; one column right adds ΣF = 45, one row down adds 4·ΣF = 180.
    assert_eq!(out, [303.0, 348.0, 483.0, 528.0]);

    // Dilation (2, 2) of an all-ones 2×2 filter on the ramp 0..25 (5×5): each output is
    // X[p][q] + X[p][q+2] + X[p+2][q] + X[p+2][q+2] = 4·(5p + q) + 24.
    let problem = Conv2dProblem::new([1, 1, 5, 5], [1, 1, 2, 2]).with_dilation([2, 2]);
    let x: Vec<f32> = (0..25).map(|v| v as f32).collect();
    let mut out = [f32::NAN; 9];
    conv2d(&problem, &x, &[1.0; 4], None, &mut out).unwrap();
    let expected: Vec<f32> = (0..9)
        .map(|i| (4 * (5 * (i / 3) + i % 3) + 24) as f32)
        .collect();
    assert_eq!(out.to_vec(), expected);
}

#[test]
fn backend_matches_oracle_on_layer_like_problems() {
    // Shapes like real layers (more channels than the random cases, so the channel tiles
    // are full and partial): ResNet stem (scaled down), a 3×3 stride-2 block, a 1×1
    // projection, and K not a multiple of the tile.
    let problems = [
        Conv2dProblem::new([2, 3, 30, 30], [16, 3, 7, 7])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(3)),
        Conv2dProblem::new([1, 32, 15, 15], [24, 32, 3, 3])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(1)),
        Conv2dProblem::new([2, 64, 7, 7], [40, 64, 1, 1]),
        Conv2dProblem::new([1, 9, 12, 13], [13, 9, 3, 5])
            .with_dilation([2, 3])
            .with_padding(Padding {
                top: 2,
                bottom: 0,
                left: 1,
                right: 4,
            }),
    ];
    let mut rng = StdRng::seed_from_u64(0x1_2023_0003);
    for problem in problems {
        let shape = problem.shape().unwrap();
        let input = random_data(&mut rng, shape.input_len);
        let filter = random_data(&mut rng, shape.filter_len);
        let bias = random_data(&mut rng, shape.output[1]);
        let reference = reference_conv2d(&problem, &input, &filter, Some(&bias)).unwrap();
        let mut out = vec![f32::NAN; shape.output_len];
        conv2d(&problem, &input, &filter, Some(&bias), &mut out).unwrap();
        assert!(out.iter().all(|v| v.is_finite()), "{problem:?}");
        let error = relative_error(&out, &reference);
        assert!(error < TOLERANCE, "{problem:?}: relative error {error:e}");
    }
}

/// Images read where they lie (one filter row, no padding) on every level this CPU runs,
/// in every combination of layouts: NHWC with the channel counts that have row kernels
/// (64, and 128 at stride 2: windows 256 floats apart, a 1 × 3 filter with dilation), one
/// that has none (48: through strips), and NCHW; odd sizes, 2 threads.
#[test]
fn every_isa_reads_images_in_place() {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    let problems = [
        Conv2dProblem::new([2, 64, 9, 11], [40, 64, 1, 1]),
        Conv2dProblem::new([1, 128, 9, 13], [33, 128, 1, 3])
            .with_stride([2, 2])
            .with_dilation([1, 2]),
        Conv2dProblem::new([1, 48, 5, 7], [20, 48, 1, 1]),
    ];
    let mut rng = StdRng::seed_from_u64(0x1_2023_0005);
    every_isa_in_every_layout(&pool, &problems, &mut rng);
}

/// Each of `problems` in each of the four layout combinations, at every level this CPU
/// runs, on `pool`, against the float64 oracle (outputs NaN-poisoned first).
fn every_isa_in_every_layout(
    pool: &rayon::ThreadPool,
    problems: &[Conv2dProblem],
    rng: &mut StdRng,
) {
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
        for (case, problem) in problems.iter().enumerate() {
            for layouts in 0..4 {
                let problem = in_layouts(*problem, layouts);
                let shape = problem.shape().unwrap();
                let input = random_data(rng, shape.input_len);
                let filter = random_data(rng, shape.filter_len);
                let reference = reference_conv2d(&problem, &input, &filter, None).unwrap();
                let mut out = vec![f32::NAN; shape.output_len];
                pool.install(|| conv2d_with_isa(isa, &problem, &input, &filter, None, &mut out))
                    .unwrap();
                let error = relative_error(&out, &reference);
                let threads = pool.current_num_threads();
                assert!(
                    error < TOLERANCE,
                    "{isa}, {threads} threads, case {case}, {problem:?}: relative error {error:e}"
                );
            }
        }
    }
}

/// Padded problems read the image's rows copied with their padding (`StripKind::PaddedRows`:
/// NCHW always, NHWC where the window step `sw·C` has row kernels, as every case here
/// has): every level, every layout combination, padding on every side (asymmetric too),
/// strides and dilations, and images tall enough for several strips and several bands.
#[test]
fn every_isa_reads_padded_rows() {
    let padding = |top, bottom, left, right| Padding {
        top,
        bottom,
        left,
        right,
    };
    let problems = [
        // 3 × 3, padding 1, 64 channels (step 64): a ResNet-50 layer, small.
        Conv2dProblem::new([2, 64, 12, 10], [40, 64, 3, 3]).with_padding(Padding::uniform(1)),
        // Stride 2 on 32 channels (step 64), asymmetric padding.
        Conv2dProblem::new([1, 32, 13, 11], [24, 32, 3, 3])
            .with_stride([2, 2])
            .with_padding(padding(1, 0, 2, 1)),
        // Dilation 2 on 96 channels (step 96), more rows than one strip holds.
        Conv2dProblem::new([1, 96, 60, 9], [16, 96, 3, 3])
            .with_dilation([2, 2])
            .with_padding(padding(2, 2, 2, 0)),
        // A one-row filter with padding (rows of zeros above and below), and a 5 × 5 one.
        Conv2dProblem::new([1, 32, 7, 9], [8, 32, 1, 3]).with_padding(padding(2, 1, 1, 1)),
        Conv2dProblem::new([1, 12, 9, 9], [9, 12, 5, 5]).with_padding(padding(0, 3, 2, 1)),
    ];
    every_isa_in_every_layout_on(&[1, 3], &problems, 0x1_2026_1207);
}

/// The widest AVX-512 tiles: row tiles of 14 pixels (rows of 14 and 28) and two-row tiles
/// of 7 + 7 (rows of 7, the last of an odd count alone), on padded problems in every layout
/// (NCHW steps 1 and 2, NHWC channel steps 32 and 64) and on 1 × 1 ones read in place.
#[test]
fn every_isa_takes_the_widest_tiles() {
    let problems = [
        Conv2dProblem::new([1, 64, 7, 7], [48, 64, 3, 3]).with_padding(Padding::uniform(1)),
        Conv2dProblem::new([2, 32, 14, 14], [40, 32, 3, 3]).with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 32, 28, 28], [32, 32, 3, 3]).with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 32, 14, 13], [36, 32, 3, 3])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 64, 7, 7], [72, 64, 1, 1]),
    ];
    every_isa_in_every_layout_on(&[1, 2], &problems, 0x14_2026_1207);
}

/// [`every_isa_in_every_layout`] on pools of each of `threads`, with data drawn from `seed`.
fn every_isa_in_every_layout_on(threads: &[usize], problems: &[Conv2dProblem], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    for &threads in threads {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        every_isa_in_every_layout(&pool, problems, &mut rng);
    }
}

#[test]
fn buffer_length_errors() {
    let problem = Conv2dProblem::new([2, 3, 5, 5], [4, 3, 3, 3]);
    let (x, f, b, y) = (vec![1.0; 150], vec![1.0; 108], vec![1.0; 4], vec![0.0; 72]);
    let short = |v: &[f32]| v[1..].to_vec();
    let long = |v: &[f32]| [v, &[1.0]].concat();
    let is_len_error = |result: Result<(), Error>, name: &str, expected: usize, actual: usize| {
        assert!(
            matches!(
                result,
                Err(Error::BufferLength { buffer, expected: e, actual: a })
                    if buffer == name && e == expected && a == actual
            ),
            "{name}: got {result:?}"
        );
    };

    for (bad_x, len) in [(short(&x), 149), (long(&x), 151)] {
        let mut out = y.clone();
        is_len_error(
            conv2d(&problem, &bad_x, &f, Some(&b), &mut out),
            "input",
            150,
            len,
        );
        is_len_error(im2win_input(&problem, &bad_x).map(drop), "input", 150, len);
    }
    for (bad_f, len) in [(short(&f), 107), (long(&f), 109)] {
        let mut out = y.clone();
        is_len_error(
            conv2d(&problem, &x, &bad_f, None, &mut out),
            "filter",
            108,
            len,
        );
        is_len_error(
            im2win_filter(&problem, &bad_f).map(drop),
            "filter",
            108,
            len,
        );
    }
    for (bad_b, len) in [(short(&b), 3), (long(&b), 5), (Vec::new(), 0)] {
        let mut out = y.clone();
        is_len_error(
            conv2d(&problem, &x, &f, Some(&bad_b), &mut out),
            "bias",
            4,
            len,
        );
    }
    for (mut bad_y, len) in [(short(&y), 71), (long(&y), 73), (Vec::new(), 0)] {
        is_len_error(
            conv2d(&problem, &x, &f, Some(&b), &mut bad_y),
            "output",
            72,
            len,
        );
        // A failed call writes nothing.
        assert!(bad_y.iter().all(|&v| v == 0.0 || v == 1.0));
    }

    // An invalid problem is reported as such, before any buffer is looked at.
    let zero = Conv2dProblem::new([2, 3, 5, 5], [0, 3, 3, 3]);
    let mut out = y.clone();
    let result = conv2d(&zero, &x, &f, None, &mut out);
    assert!(
        matches!(
            result,
            Err(Error::ZeroSize {
                name: "out_channels"
            })
        ),
        "{result:?}"
    );
    assert!(matches!(
        im2win_input(&zero, &x),
        Err(Error::ZeroSize { .. })
    ));
    assert!(matches!(
        im2win_filter(&zero, &f),
        Err(Error::ZeroSize { .. })
    ));
    assert_eq!(out, y, "output written despite the error");
}

/// The quickstart's CPU fallback layer. Timing only means something in release:
/// `cargo test --release -p im2win-runtime --test cpu_backend -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn quickstart_layer_is_fast_in_release() {
    let problem =
        Conv2dProblem::new([1, 64, 56, 56], [64, 64, 3, 3]).with_padding(Padding::uniform(1));
    let shape = problem.shape().unwrap();
    let mut rng = StdRng::seed_from_u64(7);
    let input = random_data(&mut rng, shape.input_len);
    let filter = random_data(&mut rng, shape.filter_len);
    let mut out = vec![f32::NAN; shape.output_len];
    conv2d(&problem, &input, &filter, None, &mut out).unwrap(); // warm the thread pool
    let runs = 10;
    let start = Instant::now();
    for _ in 0..runs {
        conv2d(&problem, &input, &filter, None, &mut out).unwrap();
    }
    let seconds = start.elapsed().as_secs_f64() / f64::from(runs);
    let gflops = problem.flops().unwrap() / seconds / 1e9;
    eprintln!(
        "1×64×56×56 ⊛ 64×64×3×3 pad 1: {:.2} ms, {gflops:.1} GFLOP/s on {} threads",
        seconds * 1e3,
        rayon::current_num_threads()
    );
    assert!(seconds < 0.5, "{seconds} s");
}

/// Issue 10, finding 4: 2^27 output rows of one element each. The backend used to make one
/// job, with a heap vector, per output row (about 10 GiB of bookkeeping for a 0.5 GiB
/// output), allocated infallibly: the process aborted instead of returning. Now the call
/// either computes the right answer or reports `OutOfMemory`, and its bookkeeping does not
/// grow with the row count.
#[test]
fn huge_row_count_does_not_abort() {
    let rows = 1 << 27;
    let problem = Conv2dProblem::new([1, 1, rows, 1], [1, 1, 1, 1]);
    // Non-zero inputs that need no random generator (2^27 draws would dominate the test).
    let value = |i: usize| ((i % 1021) + 1) as f32 / 1024.0;
    let input: Vec<f32> = (0..rows).map(value).collect();
    let mut out = vec![f32::NAN; rows];
    let start = Instant::now();
    match conv2d(&problem, &input, &[0.5], Some(&[0.25]), &mut out) {
        Ok(()) => {
            // Every output is 0.5·x + 0.25, exact in float32; check a sample (and both ends).
            for i in (0..rows).step_by(4099).chain([rows - 1]) {
                assert_eq!(out[i], 0.5 * value(i) + 0.25, "output {i}");
            }
        }
        Err(Error::OutOfMemory { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
    eprintln!("2^27 rows in {:?}", start.elapsed());
}

/// Batches of small images under filters of more than 1 MiB: the output channels in groups
/// that the images' jobs read one after another (`GROUP_FILTER_BYTES` in the backend), in
/// groups of whole blocks and a partial last one (K = 200), padded and read in place; and
/// one small image, whose jobs pack their filter panels a short pass at a time
/// (`PANEL_BYTES`); every level and layout, on 1 and 3 threads.
#[test]
fn every_isa_groups_large_filters_over_images() {
    let problems = [
        // 2.1 MiB of filter, 4 × 4 pixels an image: groups of the filter.
        Conv2dProblem::new([3, 256, 6, 6], [200, 256, 3, 3]),
        // Padded, stride 2: 4 × 4 pixels of 7 × 7 images.
        Conv2dProblem::new([2, 160, 7, 7], [230, 160, 3, 3])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(1)),
        // One image of 36 pixels: jobs pack their own panels, in several short passes.
        Conv2dProblem::new([1, 96, 6, 6], [70, 96, 3, 3]).with_padding(Padding::uniform(1)),
    ];
    every_isa_in_every_layout_on(&[1, 3], &problems, 0x1_2026_1208);
}
