//! `im2win-runtime`: the problem description and its validation, the float64 CPU oracle and
//! CPU im2win backend, and the cudarc engine that dispatches to the compiled kernels.

pub mod cpu;
pub mod element;
pub mod epilogue;
pub mod error;
pub mod gpu;
pub mod kernels;
pub mod layout;
pub mod problem;
pub mod specialization;
pub mod workspace;

pub use element::{Element, round_to_tf32, split_to_tf32};
pub use epilogue::{Activation, Epilogue};
pub use error::{Error, Result};
pub use gpu::{
    ConvParams, DeviceLimits, Engine, FilterFormat, Plan, PreparedFilter, TUNING_FORMAT,
    TuningEntry, TuningTable,
};
/// The `half` crate, whose [`half::bf16`] and [`half::f16`] are the 16-bit [`Element`]s.
pub use half;
pub use im2win_codegen::{DType, Precision};
pub use kernels::KernelModule;
pub use layout::{FilterLayout, Layout};
pub use problem::{Conv2dProblem, Padding, ProblemShape};
pub use specialization::Specialization;
pub use workspace::WorkspaceLayout;
