//! Shared helpers of the integration tests: a random problem generator, random data, and
//! the error measure every comparison with the float64 oracle uses.
//!
//! Reusable from any test crate of the workspace, e.g. the facade's GPU tests with
//! `#[path = "../runtime/tests/common/mod.rs"] mod common;`.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code)]

use im2win_runtime::{Conv2dProblem, Element, Padding};
use rand::Rng;

/// Bounds for [`random_problem`]. Every bound is inclusive and at least 1 (0 for padding).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest batch `N`.
    pub batch: usize,
    /// Largest input channel count `C`.
    pub channels: usize,
    /// Largest output channel count `K`.
    pub out_channels: usize,
    /// Largest filter height `R` and width `S`; drawn with extra weight on 1 and on this.
    pub filter: usize,
    /// Largest output height `P` and width `Q` aimed for (padding can add a few).
    pub out_size: usize,
    /// Largest stride on each axis.
    pub stride: usize,
    /// Largest dilation on each axis.
    pub dilation: usize,
    /// Largest padding on each side.
    pub padding: usize,
    /// Largest number of multiply-adds `N·K·P·Q·C·R·S`: bounds the cost of one problem.
    pub max_macs: usize,
}

impl Limits {
    /// Small problems, cheap enough for a thousand cases in a debug build, that still reach
    /// 11×11 filters, several blocks of output channels, strides and dilations up to 3, and
    /// asymmetric padding.
    pub const SMALL: Limits = Limits {
        batch: 3,
        channels: 8,
        out_channels: 20,
        filter: 11,
        out_size: 12,
        stride: 3,
        dilation: 3,
        padding: 3,
        max_macs: 400_000,
    };
}

/// A random valid problem within `limits`: groups 1, possibly asymmetric padding, and
/// extra weight on the edge cases (`C = 1`, `K = 1`, `N = 1`, 1×1 and largest filters,
/// `P = 1`, `Q = 1`, stride and dilation 1).
///
/// Draws until a valid problem within `limits.max_macs` comes up (a few tries for
/// [`Limits::SMALL`]). Deterministic for a given `rng` state, so a seed reproduces a
/// failing case.
pub fn random_problem(rng: &mut impl Rng, limits: &Limits) -> Conv2dProblem {
    loop {
        let batch = edge_or_uniform(rng, 1, limits.batch, 0.4);
        let channels = edge_or_uniform(rng, 1, limits.channels, 0.25);
        let out_channels = edge_or_uniform(rng, 1, limits.out_channels, 0.2);
        let square = rng.random_bool(0.5);
        let height = random_axis(rng, limits);
        // Square problems (the common case in practice) share the whole axis.
        let width = if square {
            height
        } else {
            random_axis(rng, limits)
        };
        let problem = Conv2dProblem::new(
            [batch, channels, height.size, width.size],
            [out_channels, channels, height.filter, width.filter],
        )
        .with_stride([height.stride, width.stride])
        .with_dilation([height.dilation, width.dilation])
        .with_padding(Padding {
            top: height.padding[0],
            bottom: height.padding[1],
            left: width.padding[0],
            right: width.padding[1],
        });
        let Ok(shape) = problem.shape() else {
            continue;
        };
        if shape.output_len.saturating_mul(shape.reduction) <= limits.max_macs {
            return problem;
        }
    }
}

/// `len` values uniform in `[-1, 1]`, none of them zero, so that a read of the wrong
/// element or of padding cannot go unnoticed.
pub fn random_data(rng: &mut impl Rng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| {
            loop {
                let v: f32 = rng.random_range(-1.0..=1.0);
                if v != 0.0 {
                    break v;
                }
            }
        })
        .collect()
}

/// `len` values uniform in `[-1, 1]`, rounded to `T`, none of them zero (after rounding):
/// [`random_data`] for any element type.
pub fn random_elements<T: Element>(rng: &mut impl Rng, len: usize) -> Vec<T> {
    (0..len)
        .map(|_| {
            loop {
                let v = T::from_f32(rng.random_range(-1.0..=1.0));
                if v.to_f32() != 0.0 {
                    break v;
                }
            }
        })
        .collect()
}

/// [`im2win_runtime::cpu::relative_error`], insisting that the lengths match.
pub fn relative_error(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(
        out.len(),
        reference.len(),
        "output and reference lengths differ"
    );
    im2win_runtime::cpu::relative_error(out, reference)
}

/// The seed of a randomised test: `IM2WIN_TEST_SEED` if set (to explore other cases),
/// else `default`.
pub fn test_seed(default: u64) -> u64 {
    std::env::var("IM2WIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One axis of a random problem.
#[derive(Debug, Clone, Copy)]
struct Axis {
    size: usize,
    filter: usize,
    stride: usize,
    dilation: usize,
    /// Before, after.
    padding: [usize; 2],
}

fn random_axis(rng: &mut impl Rng, limits: &Limits) -> Axis {
    let filter = match rng.random_range(0..10) {
        0..=1 => 1,
        2..=3 => limits.filter,
        _ => rng.random_range(1..=limits.filter),
    };
    let stride = edge_or_uniform(rng, 1, limits.stride, 0.5);
    // Dilation only matters with more than one tap.
    let dilation = if filter > 1 {
        edge_or_uniform(rng, 1, limits.dilation, 0.6)
    } else {
        1
    };
    let padding = [(); 2].map(|()| edge_or_uniform(rng, 0, limits.padding, 0.5));
    let out = edge_or_uniform(rng, 1, limits.out_size, 0.2);
    // The padded size that gives `out` outputs, plus up to stride − 1 trailing rows that no
    // window reads.
    let padded = (out - 1) * stride + dilation * (filter - 1) + 1 + rng.random_range(0..stride);
    // Padding wider than that leaves no room for the input: then take at least one row
    // (the output grows a little, or the problem is redrawn if the filter no longer fits).
    let size = padded.saturating_sub(padding[0] + padding[1]).max(1);
    Axis {
        size,
        filter,
        stride,
        dilation,
        padding,
    }
}

/// `low` with probability `p_edge`, else uniform in `low..=high`.
fn edge_or_uniform(rng: &mut impl Rng, low: usize, high: usize, p_edge: f64) -> usize {
    if rng.random_bool(p_edge) {
        low
    } else {
        rng.random_range(low..=high)
    }
}

/// A random valid grouped problem (`groups` > 1): depthwise (`groups = C`, `K` = 1 to 3
/// times `C`) when `depthwise`, else 2 to 6 groups of 1 to 5 input and 1 to 5 output
/// channels each. Filters 1×1 to 7×7 (3×3 in about half the draws), strides 1 to 3,
/// dilation 1 or 2, possibly asymmetric padding up to 3, odd and tiny sizes; channel counts
/// that are and are not multiples of 8 (the vector paths of the NHWC depthwise kernels).
/// Layout, filter layout and epilogue are the generator's defaults: set them. At most about
/// `max_outputs` outputs.
pub fn random_grouped_problem(
    rng: &mut impl Rng,
    depthwise: bool,
    max_outputs: usize,
) -> Conv2dProblem {
    loop {
        let (groups, c, k) = if depthwise {
            let c = if rng.random_bool(0.5) {
                8 * rng.random_range(1..=6)
            } else {
                rng.random_range(2..=41)
            };
            (c, c, c * rng.random_range(1..=3))
        } else {
            let groups = rng.random_range(2..=6);
            (
                groups,
                groups * rng.random_range(1..=5),
                groups * rng.random_range(1..=5),
            )
        };
        let size = |rng: &mut dyn rand::RngCore| {
            if rng.random_bool(0.5) {
                3
            } else {
                2 * rng.random_range(0..=3) + 1
            }
        };
        let (r, s) = if rng.random_bool(0.5) {
            (3, 3)
        } else {
            (size(rng), size(rng))
        };
        let stride = [rng.random_range(1..=3), rng.random_range(1..=3)];
        let dilation = if rng.random_bool(0.2) {
            [rng.random_range(1..=2), rng.random_range(1..=2)]
        } else {
            [1, 1]
        };
        let padding = if rng.random_bool(0.3) {
            Padding {
                top: rng.random_range(0..=3),
                bottom: rng.random_range(0..=3),
                left: rng.random_range(0..=3),
                right: rng.random_range(0..=3),
            }
        } else {
            Padding::symmetric(r / 2, s / 2)
        };
        let n = rng.random_range(1..=3);
        let h = rng.random_range(1..=33);
        let w = rng.random_range(1..=37);
        let problem = Conv2dProblem::new([n, c, h, w], [k, c / groups, r, s])
            .with_groups(groups)
            .with_stride(stride)
            .with_dilation(dilation)
            .with_padding(padding);
        if let Ok(shape) = problem.shape()
            && shape.output_len <= max_outputs
        {
            return problem;
        }
    }
}
