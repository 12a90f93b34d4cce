//! Prepared filters for the CPU backend: a filter put once into the form the backend reads
//! (packed for the micro-kernel), for inference, so that a call then packs nothing.
//!
//! Why: the backend packs the filter on every call (`pack.rs`), and on layers with large
//! filters and small images that is a large part of the call: 512 → 512 channels 3 × 3 at
//! 7 × 7 reads a 9.4 MiB filter from memory to pack it for 25 output pixels (about a
//! third of the call on Zen 4, `docs/cpu-kernels.md`). A model's weights do not change
//! between calls, so [`prepare_filter`] packs them once and [`conv2d_prepared`] reads the
//! packed copy. The GPU side has the same pair ([`crate::gpu::PreparedFilter`]).
//!
//! The form depends on the plan: the micro-kernel's block of output channels (`MR`), the
//! pixel kernels' block (the C = 3 stems), or the values themselves for grouped problems
//! (their direct loop reads the filter as it is). A prepared filter is float32 whatever
//! the element type (bf16 and f16 values widened, TF32 problems' filters rounded to TF32),
//! so for 16-bit filters it holds twice the filter's bytes.

use super::backend::{Filter, FilterIn, Plan, run};
use super::isa::Isa;
use super::pack::pack_filter_into;
use super::{check_residual, zeros};
use crate::element::{Element, check_dtype, f32_values, rounds_to_tf32};
use crate::error::{Error, Result};
use crate::problem::Conv2dProblem;

/// The form in which a [`PreparedFilter`] holds the filter: what the backend's plan for a
/// problem reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FilterForm {
    /// The float32 values in the problem's filter layout (grouped problems).
    Values,
    /// Packed for the micro-kernel: `[⌈K / block⌉][C·R·S][block]`, the reduction in the
    /// filter layout's order, channels past `K` zero.
    Packed {
        /// Output channels per block.
        block: usize,
    },
}

/// A filter in the form the CPU backend reads for a problem ([`FilterForm`]), made once by
/// [`prepare_filter`] and read by [`conv2d_prepared`] on every call. It owns its float32
/// buffer, so the filter it was made from may be dropped.
#[derive(Clone, Debug)]
pub struct PreparedFilter {
    /// The problem it was prepared for.
    problem: Conv2dProblem,
    /// The micro-kernels it was packed for.
    isa: Isa,
    form: FilterForm,
    data: Vec<f32>,
}

impl PreparedFilter {
    /// The problem it was prepared for.
    pub fn problem(&self) -> &Conv2dProblem {
        &self.problem
    }

    /// The instruction-set level whose kernels it was prepared for; [`conv2d_prepared`]
    /// runs those.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The form it holds.
    pub fn form(&self) -> FilterForm {
        self.form
    }

    /// Host memory it holds, in bytes.
    pub fn bytes(&self) -> usize {
        self.data.len() * size_of::<f32>()
    }

    /// Whether [`conv2d_prepared`] can run `problem` with this filter: the same filter
    /// (sizes, layout, groups, element type, and TF32 rounding or not), for which the
    /// backend's plan on [`PreparedFilter::isa`] reads this form. Batch, image size,
    /// padding, stride, dilation and epilogue may differ, as long as the form is the same.
    pub fn suits(&self, problem: &Conv2dProblem) -> bool {
        let Ok(shape) = problem.shape() else {
            return false;
        };
        let Ok(plan) = Plan::new(self.isa, problem, &shape) else {
            return false;
        };
        let a = &self.problem;
        a.filter == problem.filter
            && a.filter_layout == problem.filter_layout
            && a.groups == problem.groups
            && a.dtype == problem.dtype
            && rounds_to_tf32(a) == rounds_to_tf32(problem)
            && plan.filter_form(problem) == self.form
    }
}

/// Prepares `filter` (the problem's filter, in its element type and filter layout) for the
/// CPU backend's plan for `problem` on this CPU's fastest level ([`Isa::selected`]): packed
/// once, in parallel, into a buffer of its own.
///
/// # Errors
/// The validation errors of [`super::conv2d`] for the problem and the filter
/// ([`Error::DTypeMismatch`], [`Error::BufferLength`] naming `"filter"`),
/// [`Error::IsaUnavailable`] when `IM2WIN_CPU_ISA` names a level this CPU cannot run, or
/// [`Error::OutOfMemory`] when the buffer cannot be allocated.
pub fn prepare_filter<T: Element>(problem: &Conv2dProblem, filter: &[T]) -> Result<PreparedFilter> {
    prepare_filter_with_isa(Isa::selected()?, problem, filter)
}

/// [`prepare_filter`] for the micro-kernels of `isa`.
///
/// # Errors
/// Those of [`prepare_filter`]; [`Error::IsaUnavailable`] when this CPU cannot run `isa`.
pub fn prepare_filter_with_isa<T: Element>(
    isa: Isa,
    problem: &Conv2dProblem,
    filter: &[T],
) -> Result<PreparedFilter> {
    let shape = problem.shape()?;
    check_dtype::<T>(problem)?;
    super::check_len("filter", shape.filter_len, filter.len())?;
    let plan = Plan::new(isa, problem, &shape)?;
    let form = plan.filter_form(problem);
    let values = f32_values("float32 filter", filter, rounds_to_tf32(problem))?;
    let data = match form {
        FilterForm::Values => {
            let mut data = zeros::<f32>("prepared filter", values.len())?;
            data.copy_from_slice(&values);
            data
        }
        FilterForm::Packed { block } => {
            let k = problem.filter[0];
            let mut data = zeros::<f32>(
                "prepared filter",
                k.div_ceil(block) * shape.reduction * block,
            )?;
            pack_filter_into(problem, &values, block, &mut data);
            data
        }
    };
    Ok(PreparedFilter {
        problem: *problem,
        isa,
        form,
        data,
    })
}

/// [`super::conv2d_with_residual`] with a [`PreparedFilter`]: packs nothing. `problem` may
/// be the prepared one or another the filter [suits](PreparedFilter::suits) (another
/// batch, image size or epilogue); it runs on the kernels of the level the filter was
/// prepared for. `residual` is `None` unless the problem's epilogue adds one.
///
/// # Errors
/// Those of [`super::conv2d_with_residual`] for `input`, `bias`, `residual` and `output`;
/// [`Error::PreparedFilterMismatch`] when the filter does not suit the problem.
pub fn conv2d_prepared<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &PreparedFilter,
    bias: Option<&[T]>,
    residual: Option<&[T]>,
    output: &mut [T],
) -> Result<()> {
    let shape = problem.shape()?;
    check_dtype::<T>(problem)?;
    super::check_len("input", shape.input_len, input.len())?;
    if let Some(bias) = bias {
        super::check_len("bias", shape.output[1], bias.len())?;
    }
    check_residual(problem, &shape, residual)?;
    super::check_len("output", shape.output_len, output.len())?;
    if !filter.suits(problem) {
        let needed = Plan::new(filter.isa, problem, &shape)?.filter_form(problem);
        return Err(Error::PreparedFilterMismatch {
            prepared: format!("{:?} of {:?}", filter.form, filter.problem.filter),
            needed: format!("{needed:?} of {:?}", problem.filter),
        });
    }
    let plan = Plan::new(filter.isa, problem, &shape)?;
    let prepared = match filter.form {
        FilterForm::Values => FilterIn::Values(&filter.data),
        FilterForm::Packed { block } => FilterIn::Packed {
            block,
            data: &filter.data,
        },
    };
    run(
        plan,
        problem,
        &shape,
        input,
        Filter::Prepared(prepared),
        bias,
        residual,
        output,
    )
}
