//! The CPU im2win backend in every layout and with every epilogue (issue 11): NCHW or NHWC
//! input and output, KCRS or KRSC filter, each activation, with and without bias and
//! residual, plain and scaled, against the float64 oracle on every instruction-set level
//! this CPU runs; the same bits in every layout; and the residual's errors.

mod common;

use std::time::Instant;

use common::{Limits, random_data, random_problem, relative_error, test_seed};
use im2win_runtime::cpu::{
    Isa, conv2d, conv2d_with_isa, conv2d_with_isa_and_residual, conv2d_with_residual,
    reference_conv2d_with_residual,
};
use im2win_runtime::{Activation, Conv2dProblem, Epilogue, Error, FilterLayout, Layout, Padding};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The bound of `‖out − ref‖₂ / ‖ref‖₂` for float32 accumulation (as `cpu_backend.rs`).
const TOLERANCE: f64 = 1e-5;

/// Where an output's terms cancel (a sum near zero; or GELU deep in its negative tail,
/// where float32's `1 + erf(x/√2)` is all rounding), `‖out − ref‖ / ‖ref‖` grows without any
/// fault of the backend: seen on single-output problems. An output also passes when
/// `‖out − ref‖₂` is below this fraction of the norm of its magnitudes
/// `|alpha|·(|F| ∗ |X|) + |bias| + |beta|·|residual|` (the bound of the facade's tests);
/// a wrong index, a missed term or a misapplied epilogue moves the result by a sizeable part
/// of that norm, far above it.
const MAGNITUDE_TOLERANCE: f64 = 1e-7;

/// `‖out − reference‖₂ / ‖magnitudes‖₂` (see [`MAGNITUDE_TOLERANCE`]).
fn magnitude_error(problem: &Conv2dProblem, ops: &Operands, out: &[f32], reference: &[f64]) -> f64 {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let epilogue = problem.epilogue;
    let mut plain = Epilogue::IDENTITY.with_alpha(epilogue.alpha.abs());
    if epilogue.residual {
        plain = plain.with_residual(epilogue.beta.abs());
    }
    let magnitudes = reference_conv2d_with_residual(
        &problem.with_epilogue(plain),
        &abs(&ops.input),
        &abs(&ops.filter),
        ops.bias.as_deref().map(abs).as_deref(),
        ops.residual.as_deref().map(abs).as_deref(),
    )
    .unwrap();
    let diff: f64 = out
        .iter()
        .zip(reference)
        .map(|(&o, &r)| (f64::from(o) - r).powi(2))
        .sum();
    let norm: f64 = magnitudes.iter().map(|m| m * m).sum();
    (diff / norm).sqrt()
}

/// One combination of the options the backend must honour.
#[derive(Debug, Clone, Copy)]
struct Combo {
    layout: Layout,
    filter_layout: FilterLayout,
    activation: Activation,
    bias: bool,
    residual: bool,
    /// `alpha` and `beta` other than 1 (else both 1).
    scaled: bool,
}

/// Every combination: 2 layouts × 2 filter layouts × 5 activations × bias or not ×
/// residual or not × scaled or not = 160.
fn every_combo() -> Vec<Combo> {
    let mut combos = Vec::new();
    for layout in Layout::ALL {
        for filter_layout in FilterLayout::ALL {
            for activation in Activation::ALL {
                for bias in [false, true] {
                    for residual in [false, true] {
                        for scaled in [false, true] {
                            combos.push(Combo {
                                layout,
                                filter_layout,
                                activation,
                                bias,
                                residual,
                                scaled,
                            });
                        }
                    }
                }
            }
        }
    }
    combos
}

/// A factor of magnitude 0.25 to 2, of either sign, never 1.
fn random_factor(rng: &mut impl Rng) -> f32 {
    let magnitude: f32 = rng.random_range(0.25..=2.0);
    let v = if rng.random_bool(0.5) {
        magnitude
    } else {
        -magnitude
    };
    if v == 1.0 { 1.5 } else { v }
}

impl Combo {
    /// `problem` (drawn in NCHW/KCRS/plain) in this combination's layouts and epilogue.
    /// Without a residual a scaled combination still sets `beta`, which must be ignored.
    fn apply(&self, problem: Conv2dProblem, rng: &mut impl Rng) -> Conv2dProblem {
        let (alpha, beta) = if self.scaled {
            (random_factor(rng), random_factor(rng))
        } else {
            (1.0, 1.0)
        };
        let mut epilogue = Epilogue::activation(self.activation).with_alpha(alpha);
        if self.residual {
            epilogue = epilogue.with_residual(beta);
        } else {
            epilogue.beta = beta;
        }
        problem
            .with_layout(self.layout)
            .with_filter_layout(self.filter_layout)
            .with_epilogue(epilogue)
    }
}

/// The operands of one case, random and nonzero, in the problem's layouts.
struct Operands {
    input: Vec<f32>,
    filter: Vec<f32>,
    bias: Option<Vec<f32>>,
    residual: Option<Vec<f32>>,
}

impl Operands {
    fn random(rng: &mut impl Rng, problem: &Conv2dProblem, bias: bool) -> Operands {
        let shape = problem.shape().unwrap();
        Operands {
            input: random_data(rng, shape.input_len),
            filter: random_data(rng, shape.filter_len),
            bias: bias.then(|| random_data(rng, shape.output[1])),
            residual: problem
                .epilogue
                .residual
                .then(|| random_data(rng, shape.output_len)),
        }
    }
}

/// Runs `problem` on `isa` (the default level for `None`, through [`conv2d_with_residual`])
/// into an output poisoned with NaN, and checks it against the oracle: every element
/// written, relative error below [`TOLERANCE`].
fn check_case(isa: Option<Isa>, problem: &Conv2dProblem, ops: &Operands, context: &str) {
    let shape = problem.shape().unwrap();
    let (bias, residual) = (ops.bias.as_deref(), ops.residual.as_deref());
    let reference =
        reference_conv2d_with_residual(problem, &ops.input, &ops.filter, bias, residual)
            .unwrap_or_else(|e| panic!("{context}: oracle: {e}"));
    let mut out = vec![f32::NAN; shape.output_len];
    match isa {
        Some(isa) => conv2d_with_isa_and_residual(
            isa,
            problem,
            &ops.input,
            &ops.filter,
            bias,
            residual,
            &mut out,
        ),
        None => conv2d_with_residual(problem, &ops.input, &ops.filter, bias, residual, &mut out),
    }
    .unwrap_or_else(|e| panic!("{context}: {e}"));
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        panic!("{context}: output element {i} is {}", out[i]);
    }
    let error = relative_error(&out, &reference);
    if error >= TOLERANCE {
        let magnitude = magnitude_error(problem, ops, &out, &reference);
        assert!(
            magnitude < MAGNITUDE_TOLERANCE,
            "{context}: relative error {error:e}, {magnitude:e} of the magnitudes"
        );
    }
}

/// What the random problems must have covered, so that a change of the generator cannot
/// silently drop an edge case.
#[derive(Debug, Default)]
struct Coverage {
    asymmetric_padding: usize,
    stride: usize,
    dilation: usize,
    odd_size: usize,
    one_in_channel: usize,
    three_in_channels: usize,
    /// `K` past one block of 8 and not a multiple of 8, so a partial block on every level.
    partial_block: usize,
    /// `C·R·S` over 1024: several reduction passes on every level.
    several_passes: usize,
    /// One image of fewer than 192 pixels and `K > 32`: the output channels are split
    /// between jobs on every level (in NHWC, jobs interleave in each pixel).
    channel_groups: usize,
    batch: usize,
}

impl Coverage {
    fn count(&mut self, problem: &Conv2dProblem) {
        let shape = problem.shape().unwrap();
        let [n, c, h, w] = problem.input;
        let k = problem.filter[0];
        let [_, _, p, q] = shape.output;
        let pad = problem.padding;
        let tally = |hit: bool, counter: &mut usize| *counter += usize::from(hit);
        tally(
            pad.top != pad.bottom || pad.left != pad.right,
            &mut self.asymmetric_padding,
        );
        tally(problem.stride != [1, 1], &mut self.stride);
        tally(problem.dilation != [1, 1], &mut self.dilation);
        tally(h % 2 == 1 && w % 2 == 1, &mut self.odd_size);
        tally(c == 1, &mut self.one_in_channel);
        tally(c == 3, &mut self.three_in_channels);
        tally(k > 8 && !k.is_multiple_of(8), &mut self.partial_block);
        tally(shape.reduction > 1024, &mut self.several_passes);
        tally(n == 1 && p * q < 192 && k > 32, &mut self.channel_groups);
        tally(n > 1, &mut self.batch);
    }

    fn check(&self, at_least: usize) {
        let Coverage {
            asymmetric_padding,
            stride,
            dilation,
            odd_size,
            one_in_channel,
            three_in_channels,
            partial_block,
            several_passes,
            channel_groups,
            batch,
        } = *self;
        for count in [
            asymmetric_padding,
            stride,
            dilation,
            odd_size,
            one_in_channel,
            three_in_channels,
            partial_block,
            several_passes,
            channel_groups,
            batch,
        ] {
            assert!(
                count >= at_least,
                "too few random cases of some kind: {self:?}"
            );
        }
    }
}

/// Larger than [`Limits::SMALL`]: several blocks and groups of output channels (every
/// micro-kernel's `MR`, full and partial), reductions of several passes.
const MEDIUM: Limits = Limits {
    batch: 2,
    channels: 64,
    out_channels: 72,
    filter: 7,
    out_size: 16,
    stride: 3,
    dilation: 2,
    padding: 3,
    max_macs: 3_000_000,
};

/// Problems per combination and level: small ones (the edge cases), then medium ones.
const PER_COMBO: (u64, u64) = (4, 2);

/// Every combination on every level this CPU runs, forced in turn, on pools of 1, 2 and 3
/// threads (different splits of the work, channel groups included), against the oracle.
/// Levels this CPU lacks are named and skipped.
#[test]
fn every_layout_and_epilogue_matches_oracle_on_every_isa() {
    let seed = test_seed(0x1_2011_0001);
    let pools: Vec<rayon::ThreadPool> = [1, 2, 3]
        .iter()
        .map(|&t| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .unwrap()
        })
        .collect();
    let combos = every_combo();
    assert_eq!(combos.len(), 160);
    let start = Instant::now();
    let mut tested = Vec::new();
    let mut cases = 0;
    for isa in Isa::ALL {
        if !isa.is_available() {
            eprintln!("{isa}: not available on this CPU: SKIPPED");
            continue;
        }
        let mut coverage = Coverage::default();
        let (small, medium) = PER_COMBO;
        for (index, combo) in combos.iter().enumerate() {
            for case in 0..small + medium {
                // One generator per case, so that a failing case reruns alone from its seed.
                let case_seed = seed.wrapping_add(index as u64 * 16 + case);
                let mut rng = StdRng::seed_from_u64(case_seed);
                let limits = if case < small {
                    &Limits::SMALL
                } else {
                    &MEDIUM
                };
                let problem = combo.apply(random_problem(&mut rng, limits), &mut rng);
                coverage.count(&problem);
                let ops = Operands::random(&mut rng, &problem, combo.bias);
                let pool = &pools[(index + case as usize) % pools.len()];
                let context = format!(
                    "{isa}, {} threads, {combo:?}, case {case} (seed {case_seed}): {problem:?}",
                    pool.current_num_threads()
                );
                pool.install(|| check_case(Some(isa), &problem, &ops, &context));
                cases += 1;
            }
        }
        eprintln!("{isa}: {coverage:?}");
        coverage.check(20);
        tested.push(isa.name());
    }
    eprintln!(
        "{cases} problems ({} combinations × {PER_COMBO:?} on {tested:?}) in {:?}",
        combos.len(),
        start.elapsed()
    );
    assert!(tested.contains(&Isa::detected().name()));
}

/// The public entry points without a forced level: [`conv2d_with_residual`] on every
/// combination, [`conv2d`] on those without a residual.
#[test]
fn default_level_matches_oracle_in_every_combination() {
    let seed = test_seed(0x1_2011_0002);
    for (index, combo) in every_combo().into_iter().enumerate() {
        for case in 0..2 {
            let case_seed = seed.wrapping_add(index as u64 * 16 + case);
            let mut rng = StdRng::seed_from_u64(case_seed);
            let problem = combo.apply(random_problem(&mut rng, &Limits::SMALL), &mut rng);
            let ops = Operands::random(&mut rng, &problem, combo.bias);
            let context = format!("{combo:?}, case {case} (seed {case_seed}): {problem:?}");
            check_case(None, &problem, &ops, &context);
            if !combo.residual {
                let shape = problem.shape().unwrap();
                let mut out = vec![f32::NAN; shape.output_len];
                let bias = ops.bias.as_deref();
                conv2d(&problem, &ops.input, &ops.filter, bias, &mut out).unwrap();
                let mut twin = vec![f32::NAN; shape.output_len];
                conv2d_with_residual(&problem, &ops.input, &ops.filter, bias, None, &mut twin)
                    .unwrap();
                assert!(
                    out == twin,
                    "{context}: conv2d differs from conv2d_with_residual"
                );
            }
        }
    }
}

/// Shapes like real layers on every level and layout, each through a residual epilogue and
/// a plain one: a C = 3 stem, a small image of many channels (channel groups, several
/// passes), a strided block, dilation with asymmetric padding, and `K` not a multiple of
/// any `MR`.
#[test]
fn layer_like_problems_in_every_layout() {
    let problems = [
        Conv2dProblem::new([2, 3, 30, 30], [16, 3, 7, 7])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(3)),
        Conv2dProblem::new([1, 64, 5, 5], [72, 64, 3, 3]).with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 32, 15, 15], [24, 32, 3, 3])
            .with_stride([2, 2])
            .with_padding(Padding::uniform(1)),
        Conv2dProblem::new([1, 9, 12, 13], [13, 9, 3, 5])
            .with_dilation([2, 3])
            .with_padding(Padding {
                top: 2,
                bottom: 0,
                left: 1,
                right: 4,
            }),
        Conv2dProblem::new([3, 5, 9, 7], [41, 5, 1, 1]),
    ];
    let epilogues = [
        Epilogue::IDENTITY,
        Epilogue::activation(Activation::Relu)
            .with_alpha(0.75)
            .with_residual(-1.5),
        Epilogue::activation(Activation::Gelu).with_residual(1.0),
    ];
    let mut rng = StdRng::seed_from_u64(0x1_2011_0003);
    for isa in Isa::ALL.into_iter().filter(|isa| isa.is_available()) {
        for base in problems {
            for layout in Layout::ALL {
                for filter_layout in FilterLayout::ALL {
                    for epilogue in epilogues {
                        let problem = base
                            .with_layout(layout)
                            .with_filter_layout(filter_layout)
                            .with_epilogue(epilogue);
                        let ops = Operands::random(&mut rng, &problem, true);
                        check_case(Some(isa), &problem, &ops, &format!("{isa}: {problem:?}"));
                    }
                }
            }
        }
    }
}

/// `x` (logical shape `dims`, NCHW) in `layout`.
fn to_layout(x: &[f32], dims: [usize; 4], layout: Layout) -> Vec<f32> {
    let [n, c, h, w] = dims;
    let mut y = vec![f32::NAN; x.len()];
    for (i, &v) in x.iter().enumerate() {
        let (ni, ci, hi, wi) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
        y[layout.offset(dims, ni, ci, hi, wi)] = v;
    }
    assert!(n * c * h * w == x.len());
    y
}

/// `f` (logical shape `dims`, KCRS) in `layout`.
fn to_filter_layout(f: &[f32], dims: [usize; 4], layout: FilterLayout) -> Vec<f32> {
    let [_, c, r, s] = dims;
    let mut y = vec![f32::NAN; f.len()];
    for (i, &v) in f.iter().enumerate() {
        let (ki, ci, ri, si) = (i / (c * r * s), i / (r * s) % c, i / s % r, i % s);
        y[layout.offset(dims, ki, ci, ri, si)] = v;
    }
    y
}

/// The same logical tensors in each input/output layout give the same outputs, bit for
/// bit, for a given filter layout: the layouts change only how the strips are built and
/// the outputs stored, never the arithmetic. (The reduction runs in the filter's own
/// memory order, so a KCRS and a KRSC filter add the same products in different orders;
/// both are checked against the oracle elsewhere.) Checked through permutations written
/// here, not the backend's.
#[test]
fn every_layout_gives_the_same_bits() {
    let seed = test_seed(0x1_2011_0004);
    for case in 0..200 {
        let case_seed = seed.wrapping_add(case);
        let mut rng = StdRng::seed_from_u64(case_seed);
        let limits = if case % 4 == 3 {
            &MEDIUM
        } else {
            &Limits::SMALL
        };
        let activation = Activation::ALL[case as usize % Activation::ALL.len()];
        let epilogue = Epilogue::activation(activation)
            .with_alpha(random_factor(&mut rng))
            .with_residual(random_factor(&mut rng));
        let nchw = random_problem(&mut rng, limits).with_epilogue(epilogue);
        let shape = nchw.shape().unwrap();
        let with_bias = rng.random_bool(0.5);
        let ops = Operands::random(&mut rng, &nchw, with_bias);
        for filter_layout in FilterLayout::ALL {
            let mut expected = vec![f32::NAN; shape.output_len];
            conv2d_with_residual(
                &nchw.with_filter_layout(filter_layout),
                &ops.input,
                &to_filter_layout(&ops.filter, nchw.filter, filter_layout),
                ops.bias.as_deref(),
                ops.residual.as_deref(),
                &mut expected,
            )
            .unwrap();
            for layout in Layout::ALL {
                let problem = nchw.with_layout(layout).with_filter_layout(filter_layout);
                let input = to_layout(&ops.input, nchw.input, layout);
                let filter = to_filter_layout(&ops.filter, nchw.filter, filter_layout);
                let residual = ops
                    .residual
                    .as_deref()
                    .map(|r| to_layout(r, shape.output, layout));
                let mut out = vec![f32::NAN; shape.output_len];
                conv2d_with_residual(
                    &problem,
                    &input,
                    &filter,
                    ops.bias.as_deref(),
                    residual.as_deref(),
                    &mut out,
                )
                .unwrap();
                let expected = to_layout(&expected, shape.output, layout);
                let same = out
                    .iter()
                    .zip(&expected)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "case {case} (seed {case_seed}), {layout}/{filter_layout}: {problem:?}"
                );
            }
        }
    }
}

#[test]
fn hand_computed_nhwc_krsc_epilogue() {
    // One 2×2 image of 2 channels, NHWC: pixel (h, w) holds channels [h·2 + w + 1, −1].
    // A 1×1 filter of 2 output channels, KRSC: k0 = [1, 2], k1 = [−1, 0.5].
    // Sums: k0 = x0 − 2, k1 = −x0 − 0.5 for x0 = 1, 2, 3, 4.
    let epilogue = Epilogue::activation(Activation::Relu)
        .with_alpha(2.0)
        .with_residual(0.5);
    let problem = Conv2dProblem::new([1, 2, 2, 2], [2, 2, 1, 1])
        .with_layout(Layout::Nhwc)
        .with_filter_layout(FilterLayout::Krsc)
        .with_epilogue(epilogue);
    let input = [1.0, -1.0, 2.0, -1.0, 3.0, -1.0, 4.0, -1.0];
    let filter = [1.0, 2.0, -1.0, 0.5];
    let bias = [0.25, 8.0];
    let residual = [2.0, 4.0, 2.0, 4.0, 2.0, 4.0, -20.0, 4.0];
    let mut out = [f32::NAN; 8];
    conv2d_with_residual(
        &problem,
        &input,
        &filter,
        Some(&bias),
        Some(&residual),
        &mut out,
    )
    .unwrap();
    // y = relu(2·sum + bias + 0.5·residual), pixel by pixel, k0 then k1:
    // x0 = 1: relu(−2 + 0.25 + 1) = 0,    relu(−3 + 8 + 2) = 7
    // x0 = 2: relu(0 + 0.25 + 1) = 1.25,  relu(−5 + 8 + 2) = 5
    // x0 = 3: relu(2 + 0.25 + 1) = 3.25,  relu(−7 + 8 + 2) = 3
    // x0 = 4: relu(4 + 0.25 − 10) = 0,    relu(−9 + 8 + 2) = 1
    assert_eq!(out, [0.0, 7.0, 1.25, 5.0, 3.25, 3.0, 0.0, 1.0]);
}

#[test]
fn residual_errors() {
    let plain = Conv2dProblem::new([2, 3, 5, 5], [4, 3, 3, 3]);
    let with = plain.with_epilogue(Epilogue::IDENTITY.with_residual(1.0));
    let (x, f, b) = (vec![1.0; 150], vec![1.0; 108], vec![1.0; 4]);
    let res = vec![1.0; 72];
    let poison = f32::from_bits(0x7FC0_DEAD);
    let untouched = |y: &[f32]| y.iter().all(|v| v.to_bits() == poison.to_bits());
    for layout in Layout::ALL {
        let plain = plain.with_layout(layout);
        let with = with.with_layout(layout);
        let isa = Isa::detected();
        type Call<'a> =
            Box<dyn Fn(&Conv2dProblem, Option<&[f32]>, &mut [f32]) -> Result<(), Error> + 'a>;
        let calls: [(&str, Call); 3] = [
            (
                "conv2d_with_residual",
                Box::new(|p, r, y| conv2d_with_residual(p, &x, &f, Some(&b), r, y)),
            ),
            (
                "conv2d_with_isa_and_residual",
                Box::new(|p, r, y| conv2d_with_isa_and_residual(isa, p, &x, &f, None, r, y)),
            ),
            (
                "conv2d (no residual)",
                Box::new(|p, r, y| {
                    assert!(r.is_none());
                    conv2d(p, &x, &f, Some(&b), y)
                }),
            ),
        ];
        for (name, call) in &calls {
            // A residual problem given none.
            let mut y = vec![poison; 72];
            let result = call(&with, None, &mut y);
            assert!(
                matches!(result, Err(Error::ResidualMismatch { expected: true })),
                "{name}, {layout}: {result:?}"
            );
            assert!(untouched(&y), "{name}: output written despite the error");
            // The residual is checked before the output's length.
            let mut short = vec![poison; 71];
            let result = call(&with, None, &mut short);
            assert!(
                matches!(result, Err(Error::ResidualMismatch { expected: true })),
                "{name}, {layout}: {result:?}"
            );
        }
        for (name, call) in &calls[..2] {
            // A plain problem given one.
            let mut y = vec![poison; 72];
            let result = call(&plain, Some(&res), &mut y);
            assert!(
                matches!(result, Err(Error::ResidualMismatch { expected: false })),
                "{name}, {layout}: {result:?}"
            );
            assert!(untouched(&y), "{name}: output written despite the error");
            // A residual of the wrong length.
            for len in [71, 73, 0] {
                let mut y = vec![poison; 72];
                let result = call(&with, Some(&vec![1.0; len]), &mut y);
                assert!(
                    matches!(
                        result,
                        Err(Error::BufferLength { buffer: "residual", expected: 72, actual })
                            if actual == len
                    ),
                    "{name}, {layout}, residual of {len}: {result:?}"
                );
                assert!(untouched(&y), "{name}: output written despite the error");
            }
            // And the right one works: 27 taps of 1·1, bias 1 or 0, residual 1.
            let mut y = vec![poison; 72];
            call(&with, Some(&res), &mut y).unwrap();
            assert!(y.iter().all(|&v| v == 28.0 || v == 29.0), "{name}: {y:?}");
        }
    }
    // A level this CPU lacks is reported before anything is written, residual or not.
    for isa in Isa::ALL.into_iter().filter(|isa| !isa.is_available()) {
        let mut y = vec![poison; 72];
        let result = conv2d_with_isa_and_residual(isa, &with, &x, &f, None, Some(&res), &mut y);
        assert!(
            matches!(result, Err(Error::IsaUnavailable { .. })),
            "{result:?}"
        );
        let result = conv2d_with_isa(isa, &plain, &x, &f, None, &mut y);
        assert!(
            matches!(result, Err(Error::IsaUnavailable { .. })),
            "{result:?}"
        );
        assert!(untouched(&y));
    }
}

/// The quickstart's layer (batch 1) in each layout, plain and with a fused
/// `relu(conv + bias + residual)`. Timing only means something in release:
/// `cargo test --release -p im2win-runtime --test cpu_layouts -- --ignored --nocapture`.
#[test]
#[ignore = "timing; run in release"]
fn quickstart_layer_in_every_layout_is_fast_in_release() {
    let base =
        Conv2dProblem::new([1, 64, 56, 56], [64, 64, 3, 3]).with_padding(Padding::uniform(1));
    let fused = Epilogue::activation(Activation::Relu).with_residual(1.0);
    let mut rng = StdRng::seed_from_u64(7);
    for (layout, filter_layout, epilogue) in [
        (Layout::Nchw, FilterLayout::Kcrs, Epilogue::IDENTITY),
        (Layout::Nhwc, FilterLayout::Kcrs, Epilogue::IDENTITY),
        (Layout::Nhwc, FilterLayout::Krsc, Epilogue::IDENTITY),
        (Layout::Nchw, FilterLayout::Kcrs, fused),
        (Layout::Nhwc, FilterLayout::Krsc, fused),
    ] {
        let problem = base
            .with_layout(layout)
            .with_filter_layout(filter_layout)
            .with_epilogue(epilogue);
        let shape = problem.shape().unwrap();
        let ops = Operands::random(&mut rng, &problem, true);
        let (bias, residual) = (ops.bias.as_deref(), ops.residual.as_deref());
        let mut out = vec![f32::NAN; shape.output_len];
        let mut call = || {
            conv2d_with_residual(&problem, &ops.input, &ops.filter, bias, residual, &mut out)
                .unwrap();
        };
        call(); // warm the thread pool
        let runs = 20;
        let start = Instant::now();
        for _ in 0..runs {
            call();
        }
        let seconds = start.elapsed().as_secs_f64() / f64::from(runs);
        let gflops = problem.flops().unwrap() / seconds / 1e9;
        eprintln!(
            "1×64×56×56 ⊛ 64×64×3×3 pad 1, {layout}/{filter_layout}, {epilogue}: {:.2} ms, \
             {gflops:.1} GFLOP/s on {} threads",
            seconds * 1e3,
            rayon::current_num_threads()
        );
        assert!(seconds < 0.5, "{seconds} s");
    }
}
