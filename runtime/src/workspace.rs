//! The workspace of a GPU convolution: which parts it holds, where each starts, and how
//! many bytes it needs, from the problem, the element types and the plan's choices. The one
//! place that computes them: `Conv2dProblem::workspace_bytes`, `Plan` and the engine all ask
//! [`WorkspaceLayout`].

use im2win_codegen::DType;

use crate::error::{Error, Result};
use crate::problem::{Conv2dProblem, MAX_ELEMENTS, ProblemShape};

/// Where the parts of a workspace lie, in bytes from its start, which must be
/// [`WorkspaceLayout::ALIGNMENT`]-aligned, each at an aligned offset so that the kernels'
/// vector accesses stay aligned. For the SIMT kernels: the im2win buffer `T` (when the
/// kernel reads one), then the transformed filter, then the partial sums of a split
/// reduction. For the tensor-core kernels ([`WorkspaceLayout::tensor_op`]), which read NHWC
/// windows and KRSC filter rows: an NHWC copy of an NCHW input, then a KRSC copy of a KCRS
/// filter, each only when needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WorkspaceLayout {
    im2win: Option<usize>,
    /// The NHWC copy of an NCHW input (tensor-core kernels only).
    channels_last_input: Option<usize>,
    /// `None` for a kernel that reads the filter in place (a tensor-core kernel given a
    /// KRSC filter).
    filter: Option<usize>,
    partial: Option<usize>,
    bytes: usize,
}

impl WorkspaceLayout {
    /// Alignment, in bytes, of the workspace's start and of each part.
    pub const ALIGNMENT: usize = 256;
    /// The transformed filter's rows are `K` rounded up to a multiple of this many float32
    /// elements, so that the kernels load them 16 bytes at a time
    /// ([`WorkspaceLayout::filter_column_multiple`] for any element type).
    pub const FILTER_COLUMN_MULTIPLE: usize = 4;

    /// Bytes the transformed filter's rows are padded to a multiple of: one 16-byte vector
    /// (the kernels' `FilterTileLoader::K_ALIGN` elements).
    pub const FILTER_ROW_VECTOR_BYTES: usize = 16;

    /// The transformed filter's rows are `K` rounded up to a multiple of this for elements
    /// of `dtype`: 4 float32, 8 bf16 or f16 (16 bytes).
    pub const fn filter_column_multiple(dtype: DType) -> usize {
        Self::FILTER_ROW_VECTOR_BYTES / dtype.size_bytes()
    }

    /// The layout for a problem of (validated) `shape` in element type `dtype`:
    /// `materialised` when the kernel reads the im2win buffer (not for a fused kernel, nor
    /// when the input is read in place), `splits` parts of the reduction (1: none).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the transformed filter or the partial sums would exceed
    /// [`MAX_ELEMENTS`].
    pub fn new(
        shape: &ProblemShape,
        dtype: DType,
        materialised: bool,
        splits: u32,
    ) -> Result<Self> {
        let align = |bytes: usize| bytes.div_ceil(Self::ALIGNMENT) * Self::ALIGNMENT;
        let mut end = 0;
        let im2win = materialised.then(|| {
            end = align(Self::im2win_bytes(shape, dtype));
            0
        });
        let filter = end;
        end = filter + Self::filter_bytes(shape, dtype)?;
        let partial = Self::partial_sums(shape, dtype, splits, &mut end)?;
        Ok(WorkspaceLayout {
            im2win,
            channels_last_input: None,
            filter: Some(filter),
            partial,
            bytes: end,
        })
    }

    /// The layout of a kernel that needs no workspace at all: it gathers its windows from
    /// the input, reads the filter in place and does not split its reduction (a tensor-core
    /// kernel on an NHWC problem with a KRSC filter). 0 bytes.
    pub const fn none() -> Self {
        WorkspaceLayout {
            im2win: None,
            channels_last_input: None,
            filter: None,
            partial: None,
            bytes: 0,
        }
    }

    /// The layout of a tensor-core kernel, which gathers NHWC windows and reads KRSC filter
    /// rows: an NHWC copy of the input when `nchw_input` (the kernel's epilogue still writes
    /// the NCHW output itself), then a KRSC copy of the filter when `kcrs_filter`, in
    /// elements of `dtype`, then the float32 partial sums of `splits` > 1 splits of the
    /// reduction. 0 bytes when none of them.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the partial sums would exceed [`MAX_ELEMENTS`].
    pub fn tensor_op(
        shape: &ProblemShape,
        dtype: DType,
        nchw_input: bool,
        kcrs_filter: bool,
        splits: u32,
    ) -> Result<Self> {
        let align = |bytes: usize| bytes.div_ceil(Self::ALIGNMENT) * Self::ALIGNMENT;
        let mut end = 0;
        // Both are as long as the operands they copy, which validation bounds.
        let channels_last_input = nchw_input.then(|| {
            end = align(shape.input_len * dtype.size_bytes());
            0
        });
        let filter = kcrs_filter.then(|| {
            let start = end;
            end = start + shape.filter_len * dtype.size_bytes();
            start
        });
        let partial = Self::partial_sums(shape, dtype, splits, &mut end)?;
        Ok(WorkspaceLayout {
            im2win: None,
            channels_last_input,
            filter,
            partial,
            bytes: end,
        })
    }

    /// Places the partial sums of `splits` splits (none for 1) at the first aligned offset
    /// from `end`, and moves `end` past them.
    fn partial_sums(
        shape: &ProblemShape,
        dtype: DType,
        splits: u32,
        end: &mut usize,
    ) -> Result<Option<usize>> {
        if splits <= 1 {
            return Ok(None);
        }
        let elements = u128::from(splits) * shape.output_len as u128;
        if elements > MAX_ELEMENTS as u128 {
            return Err(Error::TooLarge {
                what: "partial sums of the split reduction (splits · N·K·P·Q)",
                value: elements,
                limit: MAX_ELEMENTS as u128,
            });
        }
        let start = end.div_ceil(Self::ALIGNMENT) * Self::ALIGNMENT;
        *end = start + elements as usize * dtype.accumulator().size_bytes();
        Ok(Some(start))
    }

    /// The same layout without the transformed filter (the convolution reads a prepared
    /// filter instead, `crate::gpu::PreparedFilter`): the partial sums, if any, move down to
    /// where the filter began.
    pub fn without_filter(self) -> Self {
        let Some(filter) = self.filter else {
            return self;
        };
        // The filter starts at an aligned offset, right after the parts before it.
        let (partial, bytes) = match self.partial {
            Some(start) => (Some(filter), filter + (self.bytes - start)),
            None => (None, filter),
        };
        WorkspaceLayout {
            filter: None,
            partial,
            bytes,
            ..self
        }
    }

    /// The layout of a materialised, unsplit convolution of `problem` in its element type:
    /// what [`Conv2dProblem::workspace_bytes`] reports.
    ///
    /// # Errors
    /// As [`Conv2dProblem::shape`] and [`WorkspaceLayout::new`].
    pub fn materialised(problem: &Conv2dProblem) -> Result<Self> {
        Self::new(&problem.shape()?, problem.dtype, true, 1)
    }

    /// Columns of the float32 transformed filter: `k` rounded up to
    /// [`Self::FILTER_COLUMN_MULTIPLE`].
    pub fn filter_columns(k: usize) -> usize {
        Self::filter_columns_for(k, DType::F32)
    }

    /// Columns of the transformed filter of `dtype`: `k` rounded up to
    /// [`Self::filter_column_multiple`].
    pub fn filter_columns_for(k: usize, dtype: DType) -> usize {
        let multiple = Self::filter_column_multiple(dtype);
        k.div_ceil(multiple) * multiple
    }

    /// Bytes of the im2win buffer `T` of `shape` in `dtype`.
    pub fn im2win_bytes(shape: &ProblemShape, dtype: DType) -> usize {
        // `im2win_len` ≤ MAX_ELEMENTS = 2^60 (validated), so this fits for elements ≤ 8 bytes.
        shape.im2win_len * dtype.size_bytes()
    }

    /// Bytes of the transformed filter: `C·R·S` rows of [`Self::filter_columns_for`]
    /// elements of `dtype`.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when it would have more than [`MAX_ELEMENTS`] elements.
    pub fn filter_bytes(shape: &ProblemShape, dtype: DType) -> Result<usize> {
        let multiple = Self::filter_column_multiple(dtype) as u128;
        let columns = (shape.output[1] as u128).div_ceil(multiple) * multiple;
        let elements = shape.reduction as u128 * columns;
        if elements > MAX_ELEMENTS as u128 {
            return Err(Error::TooLarge {
                what: "transformed filter elements",
                value: elements,
                limit: MAX_ELEMENTS as u128,
            });
        }
        Ok(elements as usize * dtype.size_bytes())
    }

    /// Offset of the im2win buffer (0), or `None` when the kernel reads none.
    pub fn im2win_offset(&self) -> Option<usize> {
        self.im2win
    }

    /// Offset of the NHWC copy of an NCHW input that a tensor-core kernel reads, or `None`
    /// when it reads the input in place.
    pub fn channels_last_input_offset(&self) -> Option<usize> {
        self.channels_last_input
    }

    /// Offset of the transformed filter (0 when there is none: [`Self::transforms_filter`]):
    /// the im2win order for a SIMT kernel, the KRSC copy for a tensor-core kernel.
    pub fn filter_offset(&self) -> usize {
        self.filter.unwrap_or(0)
    }

    /// Whether the workspace holds a transformed filter, i.e. the filter transform runs
    /// before the convolution (every SIMT kernel, and a tensor-core kernel given a KCRS
    /// filter); false for kernels that read the filter in place.
    pub fn transforms_filter(&self) -> bool {
        self.filter.is_some()
    }

    /// Offset of the split reduction's partial sums, when split.
    pub fn partial_offset(&self) -> Option<usize> {
        self.partial
    }

    /// Total bytes.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::problem::Padding;

    #[test]
    fn parts_follow_each_other_at_aligned_offsets() {
        // 2×3×9×8, 5×3×3×3, padding 1: T has 2·3·9·10·3 = 1620 floats (6480 bytes),
        // the filter 27 rows of K = 5 → 8 columns.
        let problem =
            Conv2dProblem::new([2, 3, 9, 8], [5, 3, 3, 3]).with_padding(Padding::uniform(1));
        let shape = problem.shape().unwrap();
        assert_eq!(shape.im2win_len, 1620);
        let plain = WorkspaceLayout::new(&shape, DType::F32, true, 1).unwrap();
        assert_eq!(plain.im2win_offset(), Some(0));
        assert_eq!(plain.filter_offset(), 6656);
        assert_eq!(plain.partial_offset(), None);
        assert_eq!(plain.bytes(), 6656 + 27 * 8 * 4);
        assert_eq!(plain, WorkspaceLayout::materialised(&problem).unwrap());

        let fused_split = WorkspaceLayout::new(&shape, DType::F32, false, 3).unwrap();
        assert_eq!(fused_split.im2win_offset(), None);
        assert_eq!(fused_split.filter_offset(), 0);
        assert_eq!(fused_split.partial_offset(), Some(1024));
        assert_eq!(fused_split.bytes(), 1024 + 3 * shape.output_len * 4);
        assert_eq!(WorkspaceLayout::filter_columns(5), 8);
        assert_eq!(WorkspaceLayout::filter_columns(8), 8);
    }

    #[test]
    fn sizes_follow_the_element_type() {
        // The same problem in bf16: T has 1620 two-byte elements (3240 bytes → 3328), the
        // filter 27 rows of K = 5 → 8 columns (16 bytes) of 2 bytes, and the split partial
        // sums stay float32 (the accumulator).
        let problem =
            Conv2dProblem::new([2, 3, 9, 8], [5, 3, 3, 3]).with_padding(Padding::uniform(1));
        let shape = problem.shape().unwrap();
        for dtype in [DType::Bf16, DType::F16] {
            let plain = WorkspaceLayout::new(&shape, dtype, true, 1).unwrap();
            assert_eq!(plain.filter_offset(), 3328);
            assert_eq!(plain.bytes(), 3328 + 27 * 8 * 2);
            let bf16 = problem.with_dtype(dtype);
            assert_eq!(plain, WorkspaceLayout::materialised(&bf16).unwrap());
            assert_eq!(bf16.filter_offset_bytes(&shape), 3328);
            assert_eq!(bf16.transformed_filter_bytes(&shape).unwrap(), 27 * 8 * 2);
            let split = WorkspaceLayout::new(&shape, dtype, false, 2).unwrap();
            assert_eq!(split.partial_offset(), Some(512));
            assert_eq!(split.bytes(), 512 + 2 * shape.output_len * 4);
        }
        // K = 9 rounds to 12 float32 columns but 16 two-byte ones.
        assert_eq!(WorkspaceLayout::filter_columns_for(9, DType::F32), 12);
        assert_eq!(WorkspaceLayout::filter_columns_for(9, DType::Bf16), 16);
        assert_eq!(WorkspaceLayout::filter_column_multiple(DType::F16), 8);
    }

    #[test]
    fn tensor_op_layouts_copy_only_what_the_kernel_cannot_read() {
        // 2×3×9×8 input (432 elements), 5×3×3×3 filter (135 elements).
        let shape = Conv2dProblem::new([2, 3, 9, 8], [5, 3, 3, 3])
            .shape()
            .unwrap();
        assert_eq!(
            WorkspaceLayout::tensor_op(&shape, DType::Bf16, false, false, 1).unwrap(),
            WorkspaceLayout::none()
        );
        let both = WorkspaceLayout::tensor_op(&shape, DType::Bf16, true, true, 1).unwrap();
        assert_eq!(both.channels_last_input_offset(), Some(0));
        assert!(both.transforms_filter());
        assert_eq!(both.filter_offset(), 1024); // 864 bytes, aligned up
        assert_eq!(both.bytes(), 1024 + 135 * 2);
        assert_eq!(both.im2win_offset(), None);
        assert_eq!(both.partial_offset(), None);
        let filter_only = WorkspaceLayout::tensor_op(&shape, DType::F32, false, true, 1).unwrap();
        assert_eq!(filter_only.channels_last_input_offset(), None);
        assert_eq!(filter_only.filter_offset(), 0);
        assert_eq!(filter_only.bytes(), 135 * 4);
        let input_only = WorkspaceLayout::tensor_op(&shape, DType::F32, true, false, 1).unwrap();
        assert!(!input_only.transforms_filter());
        assert_eq!(input_only.bytes(), 1792); // 1728 bytes, aligned up
        // Split 3 ways: float32 partial sums (5 × 2 × 7 × 6 outputs, 420) after the copies.
        let split = WorkspaceLayout::tensor_op(&shape, DType::Bf16, true, true, 3).unwrap();
        assert_eq!(split.partial_offset(), Some(1536)); // 1024 + 270 bytes, aligned up
        assert_eq!(split.bytes(), 1536 + 3 * 420 * 4);
        let alone = WorkspaceLayout::tensor_op(&shape, DType::Bf16, false, false, 2).unwrap();
        assert_eq!(alone.partial_offset(), Some(0));
        assert_eq!(alone.bytes(), 2 * 420 * 4);
        // Without the filter (a prepared one): the partial sums move down.
        let prepared = split.without_filter();
        assert!(!prepared.transforms_filter());
        assert_eq!(prepared.channels_last_input_offset(), Some(0));
        assert_eq!(prepared.partial_offset(), Some(1024));
        assert_eq!(prepared.bytes(), 1024 + 3 * 420 * 4);
        assert_eq!(alone.without_filter(), alone);
    }
}
