//! proptest strategies shared by the CPU and GPU property tests: problems with any field
//! values, small runnable problems, kernel specs and buffer lengths.

use im2win::codegen::{DType, FixedGeometry, Geometry, KernelSpec, TileConfig, Variant};
use im2win::{Conv2dProblem, Padding};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

use super::model;
use super::problems::test_seed;

/// `cases` cases from a fixed seed (`IM2WIN_TEST_SEED` overrides it), so that CI is
/// reproducible; no regression files are written into the source tree.
pub fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(test_seed(20_231_128)),
        failure_persistence: None,
        max_global_rejects: 100_000,
        ..Config::default()
    }
}

/// Any size: mostly small, often a value at an edge of the limits or of the integer types
/// (`fuzz/src/lib.rs`'s `INTERESTING`), sometimes a power of two ± 1 or any `usize`.
pub fn extreme() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0_usize..=16,
        3 => prop::sample::select(&model::INTERESTING[..]),
        2 => (0_u32..64, 0_usize..3)
            .prop_map(|(k, d)| (1_usize << k).wrapping_add(d).wrapping_sub(1)),
        1 => any::<usize>(),
    ]
}

fn padding([top, bottom, left, right]: [usize; 4]) -> Padding {
    Padding {
        top,
        bottom,
        left,
        right,
    }
}

/// A problem with every field drawn by [`extreme`]; the filter's channels usually equal the
/// input's and groups is usually 1. Mostly invalid.
pub fn wild_problem() -> impl Strategy<Value = Conv2dProblem> {
    let channels = prop_oneof![3 => Just(None), 1 => extreme().prop_map(Some)];
    let groups = prop_oneof![7 => Just(1_usize), 1 => extreme()];
    (
        prop::array::uniform4(extreme()),
        (extreme(), channels, extreme(), extreme()),
        prop::array::uniform2(extreme()),
        prop::array::uniform4(extreme()),
        prop::array::uniform2(extreme()),
        groups,
    )
        .prop_map(|(input, (k, fc, r, s), stride, pad, dilation, groups)| {
            Conv2dProblem::new(input, [k, fc.unwrap_or(input[1]), r, s])
                .with_stride(stride)
                .with_padding(padding(pad))
                .with_dilation(dilation)
                .with_groups(groups)
        })
}

/// The fields of a problem, by the names validation errors use.
pub const FIELDS: [&str; 17] = [
    "batch",
    "in_channels",
    "in_height",
    "in_width",
    "out_channels",
    "filter_channels",
    "filter_height",
    "filter_width",
    "stride_h",
    "stride_w",
    "dilation_h",
    "dilation_w",
    "groups",
    "pad_top",
    "pad_bottom",
    "pad_left",
    "pad_right",
];

/// `problem` with field `FIELDS[field]` set to `value`; setting `in_channels` sets the
/// filter's channels too (only `filter_channels` makes them differ).
pub fn set_field(mut p: Conv2dProblem, field: usize, value: usize) -> Conv2dProblem {
    match FIELDS[field % FIELDS.len()] {
        "batch" => p.input[0] = value,
        "in_channels" => [p.input[1], p.filter[1]] = [value; 2],
        "in_height" => p.input[2] = value,
        "in_width" => p.input[3] = value,
        "out_channels" => p.filter[0] = value,
        "filter_channels" => p.filter[1] = value,
        "filter_height" => p.filter[2] = value,
        "filter_width" => p.filter[3] = value,
        "stride_h" => p.stride[0] = value,
        "stride_w" => p.stride[1] = value,
        "dilation_h" => p.dilation[0] = value,
        "dilation_w" => p.dilation[1] = value,
        "groups" => p.groups = value,
        "pad_top" => p.padding.top = value,
        "pad_bottom" => p.padding.bottom = value,
        "pad_left" => p.padding.left = value,
        _ => p.padding.right = value,
    }
    p
}

/// Any problem: a third with every field extreme ([`wild_problem`]), the rest an ordinary
/// problem with one to four fields set to [`extreme`] values, so that huge but valid
/// problems (products near 2^60, paddings near 2^31) come up as often as invalid ones.
pub fn any_problem() -> impl Strategy<Value = Conv2dProblem> {
    let perturbed = (
        bounded_problem(Bounds::WIDE),
        prop::collection::vec((0..FIELDS.len(), extreme()), 1..=4),
    )
        .prop_map(|(problem, changes)| {
            changes
                .into_iter()
                .fold(problem, |p, (field, value)| set_field(p, field, value))
        });
    prop_oneof![1 => wild_problem(), 2 => perturbed]
}

/// Bounds of [`bounded_problem`], each inclusive.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub batch: usize,
    pub channels: usize,
    pub out_channels: usize,
    pub size: usize,
    pub filter: usize,
    pub stride: usize,
    pub dilation: usize,
    pub padding: usize,
}

impl Bounds {
    /// Ordinary problems, a starting point for extreme values.
    pub const WIDE: Bounds = Bounds {
        batch: 8,
        channels: 64,
        out_channels: 300,
        size: 64,
        filter: 11,
        stride: 4,
        dilation: 4,
        padding: 6,
    };

    /// Problems the CPU runs in a moment; `K` crosses the CPU backend's block of 8.
    pub const CPU: Bounds = Bounds {
        batch: 2,
        channels: 4,
        out_channels: 12,
        size: 12,
        filter: 5,
        stride: 3,
        dilation: 3,
        padding: 3,
    };
}

/// A problem within `b`, not necessarily valid (a dilated filter may not fit): filter with
/// `.prop_filter("valid", |p| p.validate().is_ok())` where needed.
pub fn bounded_problem(b: Bounds) -> impl Strategy<Value = Conv2dProblem> {
    (
        (1..=b.batch, 1..=b.channels, 1..=b.out_channels),
        prop::array::uniform2(1..=b.size),
        prop::array::uniform2(1..=b.filter),
        prop::array::uniform2(1..=b.stride),
        prop::array::uniform4(0..=b.padding),
        prop::array::uniform2(1..=b.dilation),
    )
        .prop_map(|((n, c, k), [h, w], [r, s], stride, pad, dilation)| {
            Conv2dProblem::new([n, c, h, w], [k, c, r, s])
                .with_stride(stride)
                .with_padding(padding(pad))
                .with_dilation(dilation)
        })
}

fn tile_of(
    (block_m, block_n, block_k, thread_m, thread_n): (u32, u32, u32, u32, u32),
) -> TileConfig {
    TileConfig {
        block_m,
        block_n,
        block_k,
        thread_m,
        thread_n,
    }
}

/// A tile: usually a valid one (enormous ones included), sometimes any five values (zeros,
/// huge, levels that do not nest).
pub fn any_tile() -> impl Strategy<Value = TileConfig> {
    let valid = prop::sample::select(vec![
        TileConfig::PAPER,
        tile_of((64, 64, 8, 4, 4)),
        tile_of((64, 128, 8, 4, 8)),
        tile_of((32, 32, 8, 2, 2)),
        // Valid, but 2^31-wide blocks: products of grid and tile pass 2^64.
        tile_of((1 << 31, 1 << 31, 1, 1 << 28, 1 << 29)),
    ]);
    let small = || 0_u32..=300;
    let anything = || extreme().prop_map(|v| v as u32);
    prop_oneof![
        2 => valid,
        1 => (small(), small(), small(), small(), small()).prop_map(tile_of),
        1 => (anything(), anything(), anything(), anything(), anything()).prop_map(tile_of),
    ]
}

/// A kernel spec: generic or fixed (geometry from small values, zeros included), with
/// [`any_tile`] and any [`Variant`] (fused or not; mostly complete, some with techniques
/// switched off).
pub fn any_spec() -> impl Strategy<Value = KernelSpec> {
    let fixed = prop::array::uniform4(0_u32..=12).prop_map(|[fh, fw, sh, sw]| {
        Geometry::Fixed(FixedGeometry {
            filter_h: fh,
            filter_w: fw,
            stride_h: sh,
            stride_w: sw,
        })
    });
    let geometry = prop_oneof![Just(Geometry::Generic), fixed];
    // Mostly complete kernels (the ones dispatch considers), materialised or fused.
    let variant = prop_oneof![
        3 => any::<bool>().prop_map(|fused| Variant {
            fused,
            ..Variant::MATERIALISED
        }),
        1 => any::<[bool; 4]>().prop_map(|[fused, micro_kernel, vector_loads, double_buffering]| {
            Variant {
                fused,
                micro_kernel,
                vector_loads,
                double_buffering,
                ..Variant::MATERIALISED
            }
        }),
    ];
    (geometry, any_tile(), variant).prop_map(|(geometry, tile, variant)| KernelSpec {
        dtype: DType::F32,
        geometry,
        tile,
        variant,
        layout: im2win::Layout::Nchw,
        math: im2win::codegen::Math::Simt,
        grouping: im2win::codegen::Grouping::Dense,
    })
}

/// How a test picks a buffer's length.
#[derive(Debug, Clone, Copy)]
pub enum Len {
    /// The length the problem needs.
    Right,
    /// That length plus this (at least 0).
    Off(isize),
    /// This length.
    Fixed(usize),
}

impl Len {
    /// Mostly right, often one or two off, sometimes anything small.
    pub fn strategy() -> impl Strategy<Value = Len> {
        prop_oneof![
            5 => Just(Len::Right),
            2 => (-2_isize..=2).prop_map(Len::Off),
            1 => (0_usize..64).prop_map(Len::Fixed),
        ]
    }

    /// The length to allocate for a buffer that should hold `expected` elements: 7 when
    /// that is unknown (an invalid problem) or more than `max`.
    pub fn resolve(self, expected: Option<usize>, max: usize) -> usize {
        match (self, expected) {
            (Len::Fixed(len), _) => len,
            (_, None) => 7,
            (_, Some(e)) if e > max => 7,
            (Len::Right, Some(e)) => e,
            (Len::Off(d), Some(e)) => e.saturating_add_signed(d),
        }
    }
}

/// The first buffer whose length (`actual`) is not the problem's (`expected`), as
/// `(name, expected, actual)`: the one an `Error::BufferLength` must name.
pub fn first_wrong(
    checks: &[(&'static str, usize, usize)],
) -> Option<(&'static str, usize, usize)> {
    checks
        .iter()
        .copied()
        .find(|(_, expected, actual)| expected != actual)
}

/// Whether `err` is the `BufferLength` error of `wrong`.
pub fn is_buffer_error(err: &im2win::Error, wrong: (&'static str, usize, usize)) -> bool {
    matches!(err, im2win::Error::BufferLength { buffer, expected, actual }
        if (*buffer, *expected, *actual) == wrong)
}

/// Runs `test` on `cases` values of `strategy` (from [`config`]'s seed) and panics with the
/// smallest failing value proptest finds. For tests that need state around the cases (an
/// engine, a tally), which the `proptest!` macro does not give.
pub fn check_property<S>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: std::fmt::Debug,
{
    let mut runner = proptest::test_runner::TestRunner::new(config(cases));
    if let Err(err) = runner.run(&strategy, test) {
        panic!("{name}: {err}");
    }
}

/// Counts outcomes by name, for a test's summary line.
#[derive(Default)]
pub struct Tally(std::cell::RefCell<std::collections::BTreeMap<&'static str, usize>>);

impl Tally {
    /// Counts one `outcome`.
    pub fn add(&self, outcome: &'static str) {
        *self.0.borrow_mut().entry(outcome).or_default() += 1;
    }

    /// How many times `outcome` was counted.
    pub fn get(&self, outcome: &str) -> usize {
        self.0.borrow().get(outcome).copied().unwrap_or(0)
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .0
            .borrow()
            .iter()
            .map(|(outcome, count)| format!("{count} {outcome}"))
            .collect();
        f.write_str(&parts.join(", "))
    }
}
