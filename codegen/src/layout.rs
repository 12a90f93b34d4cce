//! Memory layouts of the tensors: where element `(n, c, h, w)` of an activation and element
//! `(k, c, r, s)` of a filter live.
//!
//! Shapes are always given in logical order (`Conv2dProblem::input` is `[N, C, H, W]`
//! and `Conv2dProblem::filter` `[K, C, R, S]`, as PyTorch's sizes stay NCHW for a
//! `channels_last` tensor); the layout says how those elements are laid out in memory.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The memory order of the input and the output (both have the same layout), and of a
/// residual operand.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N][C][H][W]`: each channel is an image plane (PyTorch's and candle's default).
    #[default]
    Nchw,
    /// `[N][H][W][C]`: the channels of a pixel are contiguous (PyTorch's `channels_last`,
    /// the layout tensor cores prefer).
    Nhwc,
}

impl Layout {
    /// Both layouts, NCHW first.
    pub const ALL: [Layout; 2] = [Layout::Nchw, Layout::Nhwc];

    /// The name used in kernel names, result files and flags: `nchw` or `nhwc`.
    pub const fn name(self) -> &'static str {
        match self {
            Layout::Nchw => "nchw",
            Layout::Nhwc => "nhwc",
        }
    }

    /// The element strides of `(n, c, h, w)` in a tensor of logical shape
    /// `[N, C, H, W]` = `dims`.
    pub const fn strides(self, dims: [usize; 4]) -> [usize; 4] {
        let [_, c, h, w] = dims;
        match self {
            Layout::Nchw => [c * h * w, h * w, w, 1],
            Layout::Nhwc => [h * w * c, 1, w * c, c],
        }
    }

    /// The offset of element `(n, c, h, w)` in a tensor of logical shape `dims`.
    pub const fn offset(self, dims: [usize; 4], n: usize, c: usize, h: usize, w: usize) -> usize {
        let [sn, sc, sh, sw] = self.strides(dims);
        n * sn + c * sc + h * sh + w * sw
    }

    /// The code the kernels read from `ConvParams::layout` (0 NCHW, 1 NHWC; `enum Im2winLayout`
    /// in `codegen/templates/common.cuh`).
    pub const fn code(self) -> i32 {
        match self {
            Layout::Nchw => 0,
            Layout::Nhwc => 1,
        }
    }
}

/// The memory order of the filter.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum FilterLayout {
    /// `[K][C][R][S]` (PyTorch's and candle's).
    #[default]
    Kcrs,
    /// `[K][R][S][C]`: the channels of a filter tap are contiguous (PyTorch's
    /// `channels_last` weight, TensorFlow's order with K first).
    Krsc,
}

impl FilterLayout {
    /// Both filter layouts, KCRS first.
    pub const ALL: [FilterLayout; 2] = [FilterLayout::Kcrs, FilterLayout::Krsc];

    /// The name used in flags and messages: `kcrs` or `krsc`.
    pub const fn name(self) -> &'static str {
        match self {
            FilterLayout::Kcrs => "kcrs",
            FilterLayout::Krsc => "krsc",
        }
    }

    /// The element strides of `(k, c, r, s)` in a filter of logical shape
    /// `[K, C, R, S]` = `dims`.
    pub const fn strides(self, dims: [usize; 4]) -> [usize; 4] {
        let [_, c, r, s] = dims;
        match self {
            FilterLayout::Kcrs => [c * r * s, r * s, s, 1],
            FilterLayout::Krsc => [r * s * c, 1, s * c, c],
        }
    }

    /// The offset of element `(k, c, r, s)` in a filter of logical shape `dims`.
    pub const fn offset(self, dims: [usize; 4], k: usize, c: usize, r: usize, s: usize) -> usize {
        let [sk, sc, sr, ss] = self.strides(dims);
        k * sk + c * sc + r * sr + s * ss
    }

    /// The code the kernels read from `ConvParams::filter_layout` (0 KCRS, 1 KRSC).
    pub const fn code(self) -> i32 {
        match self {
            FilterLayout::Kcrs => 0,
            FilterLayout::Krsc => 1,
        }
    }
}

/// Why a layout name did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} `{text}`: expected {expected}")]
pub struct LayoutParseError {
    what: &'static str,
    text: String,
    expected: &'static str,
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Layout {
    type Err = LayoutParseError;

    /// `nchw` or `nhwc`, in any case.
    fn from_str(text: &str) -> Result<Self, LayoutParseError> {
        Layout::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| LayoutParseError {
                what: "layout",
                text: text.to_string(),
                expected: "`nchw` or `nhwc`",
            })
    }
}

impl fmt::Display for FilterLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FilterLayout {
    type Err = LayoutParseError;

    /// `kcrs` or `krsc`, in any case.
    fn from_str(text: &str) -> Result<Self, LayoutParseError> {
        FilterLayout::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(text.trim()))
            .ok_or_else(|| LayoutParseError {
                what: "filter layout",
                text: text.to_string(),
                expected: "`kcrs` or `krsc`",
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_visit_every_element_once() {
        let dims = [2, 3, 4, 5];
        for layout in Layout::ALL {
            let mut seen = [false; 120];
            for n in 0..2 {
                for c in 0..3 {
                    for h in 0..4 {
                        for w in 0..5 {
                            let o = layout.offset(dims, n, c, h, w);
                            assert!(!seen[o], "{layout}: offset {o} twice");
                            seen[o] = true;
                        }
                    }
                }
            }
        }
        for layout in FilterLayout::ALL {
            let mut seen = [false; 120];
            for k in 0..2 {
                for c in 0..3 {
                    for r in 0..4 {
                        for s in 0..5 {
                            let o = layout.offset(dims, k, c, r, s);
                            assert!(!seen[o], "{layout}: offset {o} twice");
                            seen[o] = true;
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn channels_are_contiguous_in_nhwc() {
        assert_eq!(Layout::Nhwc.offset([1, 8, 3, 3], 0, 1, 0, 0), 1);
        assert_eq!(Layout::Nhwc.offset([1, 8, 3, 3], 0, 0, 0, 1), 8);
        assert_eq!(FilterLayout::Krsc.offset([4, 8, 3, 3], 0, 0, 0, 1), 8);
        assert_eq!("NHWC".parse::<Layout>(), Ok(Layout::Nhwc));
        assert!("nhcw".parse::<Layout>().is_err());
    }
}
