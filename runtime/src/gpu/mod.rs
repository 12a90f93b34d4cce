//! The GPU backend on cudarc: the [`Engine`] that loads the fatbin and launches kernels,
//! the dispatch that picks a kernel for a problem ([`Plan`]), and the [`ConvParams`]
//! kernel argument.
//!
//! Dispatch is a pure function of the problem and the catalogue, so it runs (and is tested)
//! without a GPU; only the [`Engine`] needs one.

mod autotune;
mod device;
mod dispatch;
mod engine;
mod modules;
mod ordering;
mod params;
mod prepared;
mod tma;
mod tuning;

pub use device::DeviceLimits;
pub use dispatch::{
    OPERAND_ALIGNMENT, Plan, PlanOptions, address_alignment, can_implement, operands_fit,
    read_alignment, unmet_requirement,
};
pub use engine::Engine;
pub(crate) use engine::Operands;
pub use params::ConvParams;
pub use prepared::{FilterFormat, PreparedFilter};
pub use tuning::{TUNING_FORMAT, TuningEntry, TuningTable};
