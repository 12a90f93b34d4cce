//! The CPU side: a float64 direct-convolution oracle, the im2win layouts, and a
//! multi-threaded CPU im2win backend.
//!
//! - [`reference_conv2d`] is the oracle every test compares against. It follows PyTorch's
//!   `conv2d` definition directly and shares no code with the im2win path, so a layout bug
//!   cannot hide in both.
//! - [`im2win_input`] and [`im2win_filter`] build the layouts of `docs/DESIGN.md` exactly as
//!   the GPU transform kernels do, so they double as the CPU check of those kernels.
//! - [`conv2d`] is the CPU im2win backend: the fallback when there is no GPU. It takes
//!   every layout (NCHW or NHWC input and output, KCRS or KRSC filter) and every epilogue;
//!   [`conv2d_with_residual`] is the call for an epilogue that adds a residual tensor. Its
//!   micro-kernel is chosen per CPU at run time ([`Isa`]); [`conv2d_with_isa`] and
//!   [`conv2d_with_isa_and_residual`] force one. NCHW problems with short reductions (the
//!   C = 3 stems) are vectorised over output pixels instead (`pixels.rs`), where the CPU has
//!   AVX2 and FMA. Grouped and depthwise problems
//!   (`groups` > 1) take a direct loop over each output's group, parallel over the output
//!   (`grouped.rs`): their reductions are too short for im2win strips.
//!
//! Element types: the oracle and the backend take buffers of the problem's element type
//! ([`Conv2dProblem::dtype`], any [`Element`]: `f32`, `bf16`, `f16`; another type is an
//! [`Error::DTypeMismatch`]). bf16 and f16 tensors are computed in float32 on their values
//! (exact), and the backend rounds each output to the output type (to nearest, ties to
//! even); a TF32 problem ([`Precision::Tf32`](crate::Precision::Tf32)) has its input and
//! filter rounded to TF32 ([`round_to_tf32`](crate::round_to_tf32), as the tensor-core
//! kernels' `cvt.rna`) before the float32 computation, and the oracle convolves the same
//! rounded values in float64: the reference of the same rounded inputs. Bias and residual
//! are never rounded to TF32 (the kernels add them in their float32 epilogue).
//!
//! All functions validate the problem ([`Conv2dProblem::shape`]) and every buffer length
//! first, and return an [`Error`] rather than panicking.

mod backend;
mod grouped;
mod im2win;
mod isa;
mod microkernel;
mod oracle;
mod pack;
mod pixels;
mod prepared;
mod strip;
mod transpose;
mod workspace;

pub use backend::{conv2d, conv2d_with_isa, conv2d_with_isa_and_residual, conv2d_with_residual};
pub use im2win::{im2win_filter, im2win_input};
pub use isa::{ISA_ENV, Isa};
pub use oracle::{reference_conv2d, reference_conv2d_with_residual, relative_error};
pub use prepared::{
    FilterForm, PreparedFilter, conv2d_prepared, prepare_filter, prepare_filter_with_isa,
};
pub use workspace::{release_workspace, workspace_bytes};

use crate::element::{Element, check_dtype};
use crate::error::{Error, Result};
use crate::problem::{Conv2dProblem, ProblemShape};

/// Fails with [`Error::BufferLength`] unless `actual == expected`.
fn check_len(buffer: &'static str, expected: usize, actual: usize) -> Result<()> {
    if actual == expected {
        Ok(())
    } else {
        Err(Error::BufferLength {
            buffer,
            expected,
            actual,
        })
    }
}

/// A vector of `len` zeros, or [`Error::OutOfMemory`] naming `what` when the host cannot
/// provide it. `vec![0.0; len]` would abort the process instead: a valid problem can ask for
/// an im2win buffer or an output far larger than its operands (e.g. a huge padding).
fn zeros<T: Copy + Default>(what: &'static str, len: usize) -> Result<Vec<T>> {
    let mut v = Vec::new();
    v.try_reserve_exact(len).map_err(|_| Error::OutOfMemory {
        what,
        bytes: len as u128 * std::mem::size_of::<T>() as u128,
        on_device: false,
    })?;
    v.resize(len, T::default());
    Ok(v)
}

/// Validates the problem, the buffers' element type and the operand buffers shared by the
/// oracle and the backend, in the order input, filter, bias, so that the first wrong buffer
/// is the one reported.
fn check_operands<T: Element>(
    problem: &Conv2dProblem,
    input: &[T],
    filter: &[T],
    bias: Option<&[T]>,
) -> Result<ProblemShape> {
    let shape = problem.shape()?;
    check_dtype::<T>(problem)?;
    check_len("input", shape.input_len, input.len())?;
    check_len("filter", shape.filter_len, filter.len())?;
    if let Some(bias) = bias {
        check_len("bias", shape.output[1], bias.len())?;
    }
    Ok(shape)
}

/// Checks the residual operand against the problem's epilogue: [`Error::ResidualMismatch`]
/// when one is given to a problem without a residual or none to a problem with one,
/// [`Error::BufferLength`] naming `"residual"` when its length is not the output's.
fn check_residual<T>(
    problem: &Conv2dProblem,
    shape: &ProblemShape,
    residual: Option<&[T]>,
) -> Result<()> {
    match (problem.epilogue.residual, residual) {
        (true, Some(residual)) => check_len("residual", shape.output_len, residual.len()),
        (false, None) => Ok(()),
        (expected, _) => Err(Error::ResidualMismatch { expected }),
    }
}
