//! Prepared filters: a filter put once into the form a kernel reads, for inference, so that
//! a convolution then launches no filter transform and needs no workspace for one.
//!
//! What a kernel reads is a [`FilterFormat`] of the plan: the SIMT kernels read a transformed
//! filter (`A`, `C·R·S` rows of `K` rounded up, in the order of their reduction, scaled by the
//! epilogue's alpha), the tensor-core kernels the KRSC filter itself (a KCRS filter as a KRSC
//! copy). [`Engine::prepare_filter`] makes that form, in a buffer of its own, for the plan
//! dispatch chooses for a problem; [`Engine::conv2d_prepared`] then runs any problem whose
//! plan reads the same form of the same filter (another batch size or image size, as long as
//! dispatch picks a kernel of the same format), and refuses one that reads another form
//! ([`Error::PreparedFilterMismatch`]) rather than computing with the wrong data.

use cudarc::driver::{CudaSlice, DevicePtr, DevicePtrMut};

use super::dispatch::{OPERAND_ALIGNMENT, Plan, PlanOptions};
use super::engine::{Engine, Operands};
use super::params::ConvParams;
use crate::element::{Element, check_dtype};
use crate::error::{Error, Result};
use crate::problem::Conv2dProblem;

pub use super::dispatch::FilterFormat;

/// A filter in the form one family of kernels reads ([`FilterFormat`]), on the device, made
/// once by [`Engine::prepare_filter`] and read by [`Engine::conv2d_prepared`] on every call.
///
/// It owns its buffer: for a tensor-core plan with a KRSC filter (read in place) that is a
/// copy, for the others the transform, so the model's weights may be dropped afterwards. The
/// bytes are [`PreparedFilter::bytes`]; the transformed filter of the SIMT kernels is the
/// filter with `K` rounded up to a multiple of 4 (float32).
pub struct PreparedFilter<T: Element> {
    /// The plan the filter was prepared by, reading it ([`Plan::reads_prepared_filter`]).
    plan: Plan,
    data: CudaSlice<T>,
}

impl<T: Element> std::fmt::Debug for PreparedFilter<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PreparedFilter")
            .field("format", &self.format())
            .field("filter", &self.plan.problem().filter)
            .field("kernel", &self.plan.kernel().name())
            .field("bytes", &self.bytes())
            .finish()
    }
}

impl<T: Element> PreparedFilter<T> {
    /// The plan it was prepared by (the problem given to [`Engine::prepare_filter`], and
    /// the kernel dispatch chose for it).
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// The form it holds.
    pub fn format(&self) -> FilterFormat {
        self.plan.filter_format()
    }

    /// Device memory it holds, in bytes.
    pub fn bytes(&self) -> usize {
        self.data.len() * std::mem::size_of::<T>()
    }

    /// Whether `plan` reads this prepared filter: the same filter sizes, element type and
    /// format, for a transformed filter (scaled by alpha) the same alpha, and for the filter
    /// as given ([`FilterFormat::Given`]) the same layout.
    pub fn suits(&self, plan: &Plan) -> bool {
        let (a, b) = (self.plan.problem(), plan.problem());
        let format = plan.filter_format();
        let scaled = matches!(format, FilterFormat::Window | FilterFormat::ChannelsFastest);
        a.filter == b.filter
            && a.dtype == b.dtype
            && self.format() == format
            && (!scaled || a.epilogue.alpha.to_bits() == b.epilogue.alpha.to_bits())
            && (format != FilterFormat::Given || a.filter_layout == b.filter_layout)
    }
}

impl Engine {
    /// Prepares `filter` (the problem's filter, in its layout and element type) for the
    /// plan this engine chooses for `problem` with a prepared filter (as [`Engine::plan`]
    /// does, within the engine's workspace limit counting no filter part): runs the filter transform
    /// (or the KRSC copy) once, into a buffer of its own, on [`Engine::stream`] without
    /// synchronising, ordered with the filter's stream as every call is.
    ///
    /// # Errors
    /// As [`Engine::plan`], and [`Error::DTypeMismatch`] / [`Error::BufferLength`] /
    /// [`Error::ForeignBuffer`] for a wrong filter buffer, [`Error::OutOfMemory`] when the
    /// buffer cannot be allocated, [`Error::KernelMissing`] / [`Error::Driver`] when a
    /// launch fails.
    pub fn prepare_filter<T: Element>(
        &self,
        problem: &Conv2dProblem,
        filter: &dyn DevicePtr<T>,
    ) -> Result<PreparedFilter<T>> {
        problem.shape()?;
        check_dtype::<T>(problem)?;
        let plan = self.plan_with(problem, &self.prepared_options())?;
        self.prepare_filter_for(&plan, filter)
    }

    /// [`Engine::prepare_filter`] for a given plan (e.g. one from [`Plan::for_spec`] or a
    /// tuning table).
    ///
    /// # Errors
    /// As [`Engine::prepare_filter`].
    pub fn prepare_filter_for<T: Element>(
        &self,
        plan: &Plan,
        filter: &dyn DevicePtr<T>,
    ) -> Result<PreparedFilter<T>> {
        let plan = plan.clone().with_prepared_filter()?;
        let problem = plan.problem();
        check_dtype::<T>(problem)?;
        let shape = plan.shape();
        self.check_buffer("filter", shape.filter_len, filter.len(), filter.stream())?;
        let len = plan.prepared_filter_len()?;
        let mut data = self
            .stream()
            .alloc_zeros::<T>(len)
            .map_err(|err| crate::gpu::engine::allocation_error(err, "prepared filter", len))?;
        let params = ConvParams::from_shape(problem, shape, false)?;
        let streams = [filter.stream().clone(), data.stream().clone()];
        self.ordered(&streams, |_| {
            let stream = self.stream();
            let (f, _f_sync) = filter.device_ptr(stream);
            let (dst, _dst_sync) = data.device_ptr_mut(stream);
            self.context().check_err()?;
            self.launch_filter_form(&plan, &params, f, dst)
        })?;
        Ok(PreparedFilter { plan, data })
    }

    /// `output = conv2d(input, filter) + bias` with a [`PreparedFilter`]: the plan this
    /// engine chooses for `problem`, which must read the prepared form
    /// ([`PreparedFilter::suits`]); `problem` may be the prepared one or another with the
    /// same filter (another batch, image size or epilogue, but the same alpha for a
    /// transformed filter). Launches no filter transform; the workspace needs only the
    /// plan's other parts ([`Plan::workspace_bytes`] of the plan with
    /// [`Plan::with_prepared_filter`]). `residual` as in [`Engine::conv2d_with_residual`];
    /// the other buffers and the ordering as in [`Engine::conv2d_with`].
    ///
    /// # Errors
    /// As [`Engine::conv2d_with_residual`], and [`Error::PreparedFilterMismatch`] when the
    /// problem's plan reads another form of the filter, or another filter.
    #[allow(clippy::too_many_arguments)]
    pub fn conv2d_prepared<T: Element>(
        &self,
        problem: &Conv2dProblem,
        input: &dyn DevicePtr<T>,
        filter: &PreparedFilter<T>,
        bias: Option<&dyn DevicePtr<T>>,
        residual: Option<&dyn DevicePtr<T>>,
        output: &mut dyn DevicePtrMut<T>,
        workspace: Option<&mut dyn DevicePtrMut<u8>>,
    ) -> Result<()> {
        problem.shape()?;
        check_dtype::<T>(problem)?;
        let plan = if problem == filter.plan.problem() {
            filter.plan.clone()
        } else {
            self.plan_with(problem, &self.prepared_options())?
        };
        if !filter.suits(&plan) {
            return Err(Error::PreparedFilterMismatch {
                prepared: format!(
                    "{:?} of {:?}",
                    filter.format(),
                    filter.plan.problem().filter
                ),
                needed: format!("{:?} of {:?}", plan.filter_format(), problem.filter),
            });
        }
        let operands = Operands {
            input,
            filter: &filter.data,
            bias,
            residual,
        };
        self.launch_plan(&plan, None, operands, output, workspace)
    }

    /// The plan [`Engine::conv2d_prepared`] runs `problem` with: the one this engine chooses
    /// for it with a prepared filter (within its workspace limit, counting no filter part).
    ///
    /// # Errors
    /// As [`Engine::plan`].
    pub fn plan_prepared(&self, problem: &Conv2dProblem) -> Result<Plan> {
        self.plan_with(problem, &self.prepared_options())
    }

    /// How a call with a prepared filter plans: aligned operands (prepared buffers are fresh
    /// allocations; the input's alignment is checked at each call), the engine's workspace
    /// limit, no filter part.
    fn prepared_options(&self) -> PlanOptions {
        PlanOptions {
            aligned_to: OPERAND_ALIGNMENT,
            workspace_limit: self.workspace_limit(),
            prepared_filter: true,
        }
    }
}
