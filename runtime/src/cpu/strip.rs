//! The window strip: the rows of the im2win input `T` (`docs/DESIGN.md`) for a few output
//! rows of one image, built into a small per-thread buffer that stays in the L2 cache while
//! every output channel is computed from it.
//!
//! Layout `strip[c][i][w][r] = T[n][c][p0 + i][w][r]` for the strip's rows `i < rows`,
//! channel stride `max_rows·Wt·R`. The whole `T` is never built: the extra memory of a call
//! is one strip per thread instead of `R/sh` times the input.
//!
//! The offsets table says where reduction index `kk` (weight `(c, r, s)`, numbered in the
//! filter's memory order) lies relative to the window of output pixel `(i, q)`, which
//! starts at `i·Wt·R + q·sw·R`: `c·channel_stride + s·dw·R + r`. Padding, stride and
//! dilation all live in the strip and the table; the micro-kernel knows none of them.
//!
//! The strip is the same whatever the input's [`Layout`]: only the builder reads the image
//! differently (an NCHW image plane by plane, an NHWC one pixel row by pixel row: 8 × 8
//! transposes to channel-major rows, then the same interleaving), so the offsets table, the
//! packed filter and the micro-kernel serve both layouts.
//!
//! **Images read in place.** Without padding, every window value is one the image holds,
//! so no strip is built: the geometry's strides are the image's (channel stride `H·W`,
//! column stride 1 and filter-row stride `dh·W` for NCHW; 1, `C` and `dh·W·C` for NHWC,
//! whose windows are then `sw·C` floats apart, [`StripGeometry::in_place_step`]) and the
//! micro-kernel reads the windows where they lie. The offsets table is still
//! `c·channel_stride + s·dw·column_stride + r·row_stride`. Under a one-row filter `T`'s
//! rows are the image's own; under several, `T` interleaves them, which a kernel that
//! broadcasts one window value at a time does not need: the values a tile reads are the
//! same either way, only their addresses differ.
//!
//! **Padded rows.** With padding, the strip is the input rows its output rows read, each
//! copied with its zero columns (and rows of zeros above and below the image) in the
//! image's own layout ([`StripKind::PaddedRows`]), read like an image in place with the
//! padded width. The interleaved strip above remains for NHWC images whose window step
//! `sw·C` has no row kernels ([`StripKind::Interleaved`]); [`StripKind`] says which
//! measured faster (`docs/cpu-kernels.md`).

use super::transpose::Transpose8;
use super::zeros;
use crate::error::Result;
use crate::layout::{FilterLayout, Layout};
use crate::problem::{Conv2dProblem, ProblemShape};

/// Where the micro-kernel reads the windows from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StripKind {
    /// The image itself, where it lies (no padding: [`StripGeometry::in_place_step`]).
    InPlace,
    /// The image's input rows copied with their padding, in the image's own layout:
    /// `W + left + right` columns a row, zeros in the padding
    /// ([`StripGeometry::padded_rows_step`]).
    PaddedRows,
    /// im2win rows: each channel's `R` input rows interleaved (`strip[c][i][w][r]`).
    Interleaved,
}

/// The sizes of a strip for one problem.
#[derive(Debug, Clone, Copy)]
pub(super) struct StripGeometry {
    c: usize,
    h: usize,
    w: usize,
    r: usize,
    s: usize,
    stride_h: usize,
    dil_h: usize,
    dil_w: usize,
    top: usize,
    left: usize,
    /// The memory order of the image the strips are built from.
    layout: Layout,
    /// The filter's memory order, which is the order of the reduction (see
    /// [`StripGeometry::offsets`]).
    filter_layout: FilterLayout,
    /// Output columns `Q`.
    q: usize,
    /// One row of `T`: `Wt·R`.
    row_len: usize,
    /// Distance between the windows of neighbouring output columns: `sw·R`.
    col_step: usize,
    /// Rows a strip holds at most.
    pub max_rows: usize,
    /// Distance between neighbouring channels in the strip: `max_rows·Wt·R` for a built
    /// strip, `H·W` for an NCHW image read in place, 1 for an NHWC one.
    channel_stride: usize,
    /// Distance between neighbouring input columns: `R` (the strip interleaves the filter
    /// rows), `C` for an NHWC image read in place.
    column_stride: usize,
    /// Distance between the values of neighbouring filter rows: 1 in a built strip (which
    /// interleaves them), `dh` input rows for an image read in place.
    row_stride: usize,
    /// Whether the image is its own strip ([`StripGeometry::in_place_step`]). Its windows
    /// are then read from the image where it lies, and no strip is built or stored: for a
    /// 1 × 1 layer the strip was a copy of the input (NCHW: 13% of the call in a profile,
    /// 256 → 64 at 56 × 56, batch 1) or a transpose of it (NHWC: 20% even with 8 × 8 AVX
    /// transposes, which wait on the input coming from memory; read in place, the
    /// micro-kernel's loads do); for a 3 × 3 one the interleaving took 7% (NCHW, 64 → 128
    /// at 112 × 112) and NHWC's transposes more.
    direct: bool,
    /// Whether the strip is the NHWC image's rows copied with their padding
    /// ([`StripKind::PaddedRows`]).
    padded_rows: bool,
    /// Columns of a padded row: `W + left + right`.
    padded_width: usize,
    /// The AVX transpose, where the CPU has it, for NHWC strips of one filter row.
    transpose: Option<Transpose8>,
}

/// What a strip may take, in floats (256 KiB): with the packed filter block it should stay
/// in a 512 KiB L2 (Zen) or 1–2 MiB (recent Intel) cache.
const STRIP_BUDGET: usize = 64 * 1024;
/// What a strip of padded rows may take, in floats (1 MiB): the rows of a whole band where
/// they fit, since every strip of a band reads each channel block's filter again. Under
/// [`STRIP_BUDGET`] the 512 channels of a 14 × 14 image padded to 16 × 16 (ResNet-50's
/// 3 × 3 stride-2 layer of its last stage, 7 output rows) took 3 strips; as one, measured
/// on Emerald Rapids (batch 1, 2 threads, p10) 2.53 → 1.83 ms NCHW, 2.29 → 1.71 NHWC, and
/// no change on the other padded ResNet-50 layers.
const PADDED_ROWS_BUDGET: usize = 256 * 1024;

impl StripGeometry {
    /// The window step (`sw·C` for NHWC, `sw` for NCHW) of the problem's image read where
    /// it lies, when it can be: no padding (no zeros to add), any filter, stride and
    /// dilation. [`StripGeometry::new`] reads it so when told to.
    pub fn in_place_step(problem: &Conv2dProblem) -> Option<usize> {
        let pad = problem.padding;
        let unpadded = pad.top == 0 && pad.bottom == 0 && pad.left == 0 && pad.right == 0;
        let [_, c, _, _] = problem.input;
        let column = match problem.layout {
            Layout::Nchw => 1,
            Layout::Nhwc => c,
        };
        unpadded.then_some(problem.stride[1] * column)
    }

    /// The window step (`sw·C` for NHWC, `sw` for NCHW) of a problem's input rows copied
    /// with their padding ([`StripKind::PaddedRows`]): any padding, filter, stride and
    /// dilation. A copy of whole rows in the image's own layout, where an interleaved strip
    /// interleaves the `R` rows of every channel (and of NHWC needs 8 × 8 transposes
    /// first); the micro-kernel then reads it as it reads an image in place.
    pub fn padded_rows_step(problem: &Conv2dProblem) -> Option<usize> {
        Some(match problem.layout {
            Layout::Nchw => problem.stride[1],
            Layout::Nhwc => problem.stride[1] * problem.input[1],
        })
    }

    /// The strip geometry of a validated problem, holding at most `rows_wanted` rows (and
    /// fewer when they would not fit the cache budget; at least one), of `kind`
    /// ([`StripKind::InPlace`] only where [`StripGeometry::in_place_step`] has a step for
    /// the problem and [`StripKind::PaddedRows`] where [`StripGeometry::padded_rows_step`]
    /// has; otherwise an interleaved strip is made).
    pub fn new(
        problem: &Conv2dProblem,
        shape: &ProblemShape,
        rows_wanted: usize,
        kind: StripKind,
    ) -> Self {
        let [_, c, h, w] = problem.input;
        let [_, _, r, s] = problem.filter;
        let kind = match kind {
            StripKind::InPlace if Self::in_place_step(problem).is_none() => StripKind::Interleaved,
            StripKind::PaddedRows if Self::padded_rows_step(problem).is_none() => {
                StripKind::Interleaved
            }
            kind => kind,
        };
        let direct = kind == StripKind::InPlace;
        let padded_rows = kind == StripKind::PaddedRows;
        let padded_width = w + problem.padding.left + problem.padding.right;
        // Input rows the windows of one output row span.
        let span = (r - 1) * problem.dilation[0] + 1;
        // Where channel `ci`, input column `x` and filter row `fy` of a strip row lie:
        // `ci·channel_stride + x·column_stride + fy·row_stride`. A direct strip's rows are
        // the image's own, `sh` input rows apart; padded rows the same, `W + left + right`
        // columns wide.
        let (row_len, channel_stride, column_stride, max_rows) = match (kind, problem.layout) {
            (StripKind::InPlace, Layout::Nchw) => {
                (problem.stride[0] * w, h * w, 1, rows_wanted.max(1))
            }
            (StripKind::InPlace, Layout::Nhwc) => {
                (problem.stride[0] * w * c, 1, c, rows_wanted.max(1))
            }
            (StripKind::PaddedRows, layout) => {
                let input_rows =
                    (PADDED_ROWS_BUDGET / (padded_width * c).max(1)).saturating_sub(span);
                let max_rows = (input_rows / problem.stride[0] + 1).clamp(1, rows_wanted.max(1));
                let row_len = problem.stride[0] * padded_width;
                match layout {
                    // `[c][input row][column]`: each channel's rows, a strip's worth.
                    Layout::Nchw => {
                        let rows = (max_rows - 1) * problem.stride[0] + span;
                        (row_len, rows * padded_width, 1, max_rows)
                    }
                    // `[input row][column][c]`.
                    Layout::Nhwc => (row_len * c, 1, c, max_rows),
                }
            }
            _ => {
                let row_len = shape.win_width * r;
                let max_rows = (STRIP_BUDGET / (c * row_len).max(1)).clamp(1, rows_wanted.max(1));
                (row_len, max_rows * row_len, r, max_rows)
            }
        };
        StripGeometry {
            c,
            h,
            w,
            r,
            s,
            stride_h: problem.stride[0],
            dil_h: problem.dilation[0],
            dil_w: problem.dilation[1],
            top: problem.padding.top,
            left: problem.padding.left,
            layout: problem.layout,
            filter_layout: problem.filter_layout,
            q: shape.output[3],
            row_len,
            col_step: problem.stride[1] * column_stride,
            channel_stride,
            column_stride,
            row_stride: match kind {
                StripKind::InPlace => problem.dilation[0] * w * column_stride,
                StripKind::PaddedRows => problem.dilation[0] * padded_width * column_stride,
                StripKind::Interleaved => 1,
            },
            max_rows,
            direct,
            padded_rows,
            padded_width,
            transpose: Transpose8::detect(),
        }
    }

    /// Floats in one strip's buffer: 0 for a direct one, which needs none; an NHWC strip
    /// of several filter rows also holds the channel-major copy of the `R` input rows of
    /// one strip row ([`StripGeometry::build_nhwc`]) at its end.
    pub fn len(&self) -> usize {
        if self.direct {
            0
        } else if self.padded_rows {
            // NCHW: `C` channels of `channel_stride`; NHWC: the same product.
            self.padded_input_rows(self.max_rows) * self.padded_width * self.c
        } else {
            self.c * self.channel_stride + self.transposed_len()
        }
    }

    /// Input rows that the windows of `rows` consecutive output rows span.
    fn padded_input_rows(&self, rows: usize) -> usize {
        (rows.max(1) - 1) * self.stride_h + (self.r - 1) * self.dil_h + 1
    }

    /// Floats of the channel-major input rows an NHWC build goes through (`C·R·W`), where
    /// it does: several filter rows, the AVX transpose, and at least 8 channels (fewer make
    /// no 8 × 8 block: the transposed rows would be one more pass, measured 10% slower on
    /// the C = 3 stems, conv1–conv3, than scattering them straight into the strip).
    fn transposed_len(&self) -> usize {
        let through_rows =
            self.layout == Layout::Nhwc && self.r > 1 && self.c >= 8 && self.transpose.is_some();
        if through_rows {
            self.c * self.r * self.w
        } else {
            0
        }
    }

    /// Whether each output row's first window lies one column step after the previous
    /// row's last (`row_len = Q·col_step`): then every window of the strip is `col_step`
    /// from the one before, across rows too (a 1 × 1 filter at stride 1 on an image read
    /// in place, whose output pixels are its input pixels).
    pub fn rows_continue(&self) -> bool {
        self.row_len == self.q * self.col_step
    }

    /// A cursor at the strip's first output pixel (row 0, column 0).
    pub fn first_pixel(&self) -> PixelCursor {
        PixelCursor {
            q: 0,
            start: 0,
            row_start: 0,
            columns: self.q,
            row_len: self.row_len,
            col_step: self.col_step,
        }
    }

    /// The offsets table (one entry per reduction index, in the packed filter's order) and
    /// its reach, `1 + max offset`.
    ///
    /// The reduction runs in the filter's own memory order: `kk = (c·R + r)·S + s` for a
    /// KCRS filter, `(r·S + s)·C + c` for KRSC. Any order gives the same products (the
    /// table says where each weight's window value lies); this one makes the packed
    /// filter a plain transpose of `MR` filter rows ([`super::pack`]), which is what a
    /// layer with a large filter and few pixels spends its time on.
    ///
    /// # Errors
    /// [`crate::Error::OutOfMemory`] when the table cannot be allocated.
    pub fn offsets(&self) -> Result<(Vec<usize>, usize)> {
        let (c, r, s) = (self.c, self.r, self.s);
        let mut offsets = zeros::<usize>("offsets table", c * s * r)?;
        for (kk, off) in offsets.iter_mut().enumerate() {
            let (ci, fy, fx) = match self.filter_layout {
                FilterLayout::Kcrs => (kk / (r * s), kk / s % r, kk % s),
                FilterLayout::Krsc => (kk % c, kk / (s * c), kk / c % s),
            };
            *off = ci * self.channel_stride
                + fx * self.dil_w * self.column_stride
                + fy * self.row_stride;
        }
        let reach = offsets.iter().max().map_or(0, |&m| m + 1);
        Ok((offsets, reach))
    }

    /// The strip of output rows `p0 .. p0 + rows` of the image `x` (`C×H×W` in the
    /// problem's layout: `C·H·W` floats either way), whose windows start where
    /// [`StripGeometry::first_pixel`]'s cursor says and lie where
    /// [`StripGeometry::offsets`] says: `strip` filled with the im2win rows (zeros wherever
    /// a window reads padding), or, for a direct geometry, the image itself from the
    /// first input row those output rows read (`strip` untouched).
    pub fn build<'a>(
        &self,
        x: &'a [f32],
        p0: usize,
        rows: usize,
        strip: &'a mut [f32],
    ) -> &'a [f32] {
        debug_assert!(rows <= self.max_rows);
        if self.direct {
            return &x[p0 * self.row_len..];
        }
        if self.padded_rows {
            self.build_padded_rows(x, p0, rows, strip);
            return strip;
        }
        match self.layout {
            Layout::Nchw => self.build_nchw(x, p0, rows, strip),
            Layout::Nhwc => self.build_nhwc(x, p0, rows, strip),
        }
        strip
    }

    /// The input row that row `fy` of output row `oy`'s windows reads, or `None` where that
    /// row is padding.
    fn input_row(&self, oy: usize, fy: usize) -> Option<usize> {
        (oy * self.stride_h + fy * self.dil_h)
            .checked_sub(self.top)
            .filter(|&iy| iy < self.h)
    }

    /// [`StripGeometry::build`] of padded rows: input row `p0·sh − top + j` to strip row
    /// `j` (of every channel, for NCHW), `left` and `right` columns of zeros around it (a
    /// whole row of zeros above and below the image).
    fn build_padded_rows(&self, x: &[f32], p0: usize, rows: usize, strip: &mut [f32]) {
        let (c, w) = (self.c, self.w);
        let first = p0 * self.stride_h;
        let rows = self.padded_input_rows(rows);
        // One input row (`W` columns of 1 float NCHW, of `C` NHWC), or `None` above or
        // below the image, into `dst` with its padding columns.
        let per_column = if self.layout == Layout::Nchw { 1 } else { c };
        let fill = |dst: &mut [f32], values: Option<&[f32]>| {
            let Some(values) = values else {
                dst.fill(0.0);
                return;
            };
            let (pad, rest) = dst.split_at_mut(self.left * per_column);
            pad.fill(0.0);
            let (row, pad) = rest.split_at_mut(values.len());
            row.copy_from_slice(values);
            pad.fill(0.0);
        };
        let input_row = |j: usize| (first + j).checked_sub(self.top).filter(|&iy| iy < self.h);
        match self.layout {
            Layout::Nchw => {
                for (ci, channel) in strip.chunks_exact_mut(self.channel_stride).enumerate() {
                    let plane = &x[ci * self.h * w..][..self.h * w];
                    let rows_of = channel.chunks_exact_mut(self.padded_width).take(rows);
                    for (j, dst) in rows_of.enumerate() {
                        fill(dst, input_row(j).map(|iy| &plane[iy * w..][..w]));
                    }
                }
            }
            Layout::Nhwc => {
                let rows_of = strip.chunks_exact_mut(self.padded_width * c).take(rows);
                for (j, dst) in rows_of.enumerate() {
                    fill(dst, input_row(j).map(|iy| &x[iy * w * c..][..w * c]));
                }
            }
        }
    }

    /// [`StripGeometry::build`] of an NCHW image: each channel's plane, row by row.
    fn build_nchw(&self, x: &[f32], p0: usize, rows: usize, strip: &mut [f32]) {
        let w = self.w;
        for (c, channel) in strip.chunks_exact_mut(self.channel_stride).enumerate() {
            let plane = &x[c * self.h * w..][..self.h * w];
            for (i, row) in channel
                .chunks_exact_mut(self.row_len)
                .take(rows)
                .enumerate()
            {
                let at = |fy| self.input_row(p0 + i, fy).map(|iy| &plane[iy * w..][..w]);
                self.fill_row(row, at);
            }
        }
    }

    /// One channel's strip row from the `W` input values that each filter row `fy` reads,
    /// `at(fy)` (`None` where that row is padding).
    fn fill_row<'a>(&self, row: &mut [f32], at: impl Fn(usize) -> Option<&'a [f32]>) {
        let (r, w, left) = (self.r, self.w, self.left);
        // Zeros only where no input lands (the padding columns, and whole filter rows that
        // read padding): the input columns are written once, not zeroed first (a second
        // pass over the strip, measured 5% of a 3 × 3 layer).
        let written = (left * r).min(row.len())..((left + w) * r).min(row.len());
        row[..written.start].fill(0.0);
        row[written.end..].fill(0.0);
        let dst = &mut row[written.clone()];
        let done = match r {
            1 => interleave::<1>(dst, rows_of(&at)),
            3 => interleave::<3>(dst, rows_of(&at)),
            5 => interleave::<5>(dst, rows_of(&at)),
            7 => interleave::<7>(dst, rows_of(&at)),
            11 => interleave::<11>(dst, rows_of(&at)),
            _ => false,
        };
        if done {
            return;
        }
        for fy in 0..r {
            let dst = row[written.clone()].iter_mut().skip(fy).step_by(r);
            let Some(input) = at(fy) else {
                dst.for_each(|d| *d = 0.0);
                continue;
            };
            // Input column ix lands at padded column ix + left, i.e. at
            // row[(ix + left)·R + fy]; columns past Wt are read by no window.
            for (d, &v) in dst.zip(input) {
                *d = v;
            }
        }
    }

    /// [`StripGeometry::build`] of an NHWC image: the `W·C` floats of each input row that a
    /// strip row reads are one contiguous run, read once per filter row and scattered to the
    /// channels' rows of the strip, [`NHWC_CHANNELS`] channels at a time (so that each
    /// cache line of the run is used whole while it is in L1, and only that many rows of
    /// the strip are written at once).
    ///
    /// With several filter rows (and AVX), each strip row is made as an NCHW one instead:
    /// the `R` input rows it reads are transposed to channel-major rows first (8 × 8 blocks),
    /// then interleaved channel by channel ([`StripGeometry::fill_row`]): vector shuffles
    /// where the scatter moves one float at a time (measured, 16% of a 64-channel 3 × 3
    /// layer's time in NHWC at batch 1).
    fn build_nhwc(&self, x: &[f32], p0: usize, rows: usize, strip: &mut [f32]) {
        let (c, r, w) = (self.c, self.r, self.w);
        if let Some(transpose) = self.transpose.filter(|_| self.transposed_len() > 0) {
            let (strip, transposed) = strip.split_at_mut(c * self.channel_stride);
            for i in 0..rows {
                for fy in 0..r {
                    if let Some(iy) = self.input_row(p0 + i, fy) {
                        let pixels = &x[iy * w * c..][..w * c];
                        transpose_all(transpose, pixels, c, w, &mut transposed[fy * w..], r * w);
                    }
                }
                let transposed = &*transposed;
                for (ci, channel) in strip.chunks_exact_mut(self.channel_stride).enumerate() {
                    let row = &mut channel[i * self.row_len..][..self.row_len];
                    let at = |fy| {
                        self.input_row(p0 + i, fy)
                            .map(|_| &transposed[(ci * r + fy) * w..][..w])
                    };
                    self.fill_row(row, at);
                }
            }
            return;
        }
        let left = self.left;
        let (stride, row_len) = (self.channel_stride, self.row_len);
        // Zeros only where no input lands (as `build_nchw`).
        let written = (left * r).min(row_len)..((left + w) * r).min(row_len);
        for i in 0..rows {
            for channel in strip.chunks_exact_mut(stride) {
                let row = &mut channel[i * row_len..][..row_len];
                row[..written.start].fill(0.0);
                row[written.end..].fill(0.0);
            }
            for fy in 0..r {
                let Some(iy) = self.input_row(p0 + i, fy) else {
                    for channel in strip.chunks_exact_mut(stride) {
                        let row = &mut channel[i * row_len..][..row_len];
                        for d in row[written.clone()].iter_mut().skip(fy).step_by(r) {
                            *d = 0.0;
                        }
                    }
                    continue;
                };
                let pixels = &x[iy * w * c..][..w * c];
                // Input column ix lands at row[(ix + left)·R + fy] of each channel's row;
                // columns past Wt are read by no window.
                let first = i * row_len + left * r + fy;
                let end = (i + 1) * row_len;
                let columns = w.min((end.saturating_sub(first)).div_ceil(r));
                // With one filter row, a channel's strip row is the run of its values in
                // the input row: 8 × 8 transposes move whole blocks of 8 pixels × 8
                // channels (the scatter below moves one float at a time: measured, half of
                // a 1 × 1 layer's time in NHWC).
                if let Some(transpose) = self.transpose.filter(|_| r == 1) {
                    transpose_all(transpose, pixels, c, columns, &mut strip[first..], stride);
                    continue;
                }
                for c0 in (0..c).step_by(NHWC_CHANNELS) {
                    let c1 = (c0 + NHWC_CHANNELS).min(c);
                    for (ix, pixel) in pixels.chunks_exact(c).take(columns).enumerate() {
                        let at = first + ix * r;
                        for (ci, &v) in (c0..c1).zip(&pixel[c0..c1]) {
                            strip[ci * stride + at] = v;
                        }
                    }
                }
            }
        }
    }
}

/// `dst[ix·R + fy] = rows[fy][ix]`: `R` input rows interleaved into a strip row, written
/// front to back (the compiler turns it into vector shuffles, where the general loop
/// writes every `R`-th float, one pass per filter row: measured, 15% of a 64-channel
/// 3 × 3 layer's time at batch 1 went to the strips that way). `false` (nothing written)
/// when `rows` is `None`: a filter row reads padding, and the general loop zeros it.
fn interleave<const R: usize>(dst: &mut [f32], rows: Option<[&[f32]; R]>) -> bool {
    let Some(rows) = rows else {
        return false;
    };
    let columns = dst.len() / R;
    let rows: [&[f32]; R] = std::array::from_fn(|fy| &rows[fy][..columns]);
    for (ix, d) in dst.chunks_exact_mut(R).enumerate() {
        for fy in 0..R {
            d[fy] = rows[fy][ix];
        }
    }
    true
}

/// `dst[ci·stride + ix] = pixels[ix·c + ci]`: the first `columns` pixels of an NHWC input
/// row of `c` channels to a channel-major row per channel. Whole 8 × 8 blocks go through
/// the AVX transpose, [`NHWC_CHANNELS`] channels at a time for all the pixels (each 64-byte
/// run of a pixel's channels used whole while it is in L1); what they leave (the last
/// `c % 8` channels, the last `columns % 8` pixels) moves one float at a time.
fn transpose_all(
    transpose: Transpose8,
    pixels: &[f32],
    c: usize,
    columns: usize,
    dst: &mut [f32],
    stride: usize,
) {
    let (blocked_c, blocked_px) = (c / 8 * 8, columns / 8 * 8);
    for c0 in (0..blocked_c).step_by(NHWC_CHANNELS) {
        let c1 = (c0 + NHWC_CHANNELS).min(blocked_c);
        for ix0 in (0..blocked_px).step_by(8) {
            let rows: [&[f32]; 8] = std::array::from_fn(|j| &pixels[(ix0 + j) * c..][..c]);
            for cb in (c0..c1).step_by(8) {
                transpose.run(&rows, cb, &mut dst[cb * stride + ix0..], stride);
            }
        }
    }
    for (ix, pixel) in pixels.chunks_exact(c).take(columns).enumerate() {
        let first = if ix < blocked_px { blocked_c } else { 0 };
        for ci in first..c {
            dst[ci * stride + ix] = pixel[ci];
        }
    }
}

/// `[at(0), .., at(R − 1)]`, or `None` if one is `None`.
fn rows_of<'a, const R: usize>(at: impl Fn(usize) -> Option<&'a [f32]>) -> Option<[&'a [f32]; R]> {
    let mut rows = [&[][..]; R];
    for (fy, row) in rows.iter_mut().enumerate() {
        *row = at(fy)?;
    }
    Some(rows)
}

/// Channels an NHWC strip build scatters at once: one 64-byte cache line of a pixel's
/// channels.
const NHWC_CHANNELS: usize = 16;

/// Walks a strip's output pixels in order (row by row, column by column), giving where
/// each one's window starts: `row·Wt·R + q·sw·R`.
pub(super) struct PixelCursor {
    q: usize,
    start: usize,
    row_start: usize,
    columns: usize,
    row_len: usize,
    col_step: usize,
}

impl PixelCursor {
    /// The current pixel's window start; moves to the next pixel.
    pub fn next_start(&mut self) -> usize {
        let start = self.start;
        self.q += 1;
        if self.q == self.columns {
            self.q = 0;
            self.row_start += self.row_len;
            self.start = self.row_start;
        } else {
            self.start += self.col_step;
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Padding;

    #[test]
    fn the_cursor_walks_rows_then_columns() {
        // Q = 3, Wt = 7, R = 2, sw = 2: windows start at row·14 + q·4.
        let problem = Conv2dProblem::new([1, 2, 5, 7], [1, 2, 2, 3])
            .with_stride([1, 2])
            .with_padding(Padding::default());
        let shape = problem.shape().unwrap();
        let geometry = StripGeometry::new(&problem, &shape, 4, StripKind::Interleaved);
        let mut cursor = geometry.first_pixel();
        let starts: Vec<usize> = (0..7).map(|_| cursor.next_start()).collect();
        assert_eq!(starts, [0, 4, 8, 14, 18, 22, 28]);
    }

    #[test]
    fn an_nhwc_image_builds_the_nchw_strip() {
        // C = 19 (more than one block of NHWC_CHANNELS), padding on every side, stride and
        // dilation: the strips of the same image in both layouts are equal.
        let (c, h, w) = (19, 6, 7);
        let nchw = Conv2dProblem::new([1, c, h, w], [2, c, 3, 2])
            .with_stride([2, 1])
            .with_dilation([1, 2])
            .with_padding(Padding {
                top: 2,
                bottom: 1,
                left: 3,
                right: 0,
            });
        let nhwc = nchw.with_layout(Layout::Nhwc);
        let shape = nchw.shape().unwrap();
        let dims = nchw.input;
        let value = |ci: usize, y: usize, x: usize| (ci * 100 + y * 10 + x + 1) as f32;
        let mut x_nchw = vec![f32::NAN; c * h * w];
        let mut x_nhwc = x_nchw.clone();
        for ci in 0..c {
            for y in 0..h {
                for x in 0..w {
                    x_nchw[Layout::Nchw.offset(dims, 0, ci, y, x)] = value(ci, y, x);
                    x_nhwc[Layout::Nhwc.offset(dims, 0, ci, y, x)] = value(ci, y, x);
                }
            }
        }
        let g_nchw = StripGeometry::new(&nchw, &shape, 2, StripKind::Interleaved);
        let g_nhwc = StripGeometry::new(&nhwc, &shape, 2, StripKind::Interleaved);
        for p0 in 0..shape.output[2] - 1 {
            let mut a = vec![f32::NAN; g_nchw.len()];
            let mut b = vec![-1.0; g_nhwc.len()];
            g_nchw.build(&x_nchw, p0, 2, &mut a);
            g_nhwc.build(&x_nhwc, p0, 2, &mut b);
            assert!(a.iter().all(|v| v.is_finite()), "row {p0}");
            // The NHWC buffer may end with its transposed input rows.
            assert_eq!(a, b[..a.len()], "row {p0}");
        }
    }
}
