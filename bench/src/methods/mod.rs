//! The methods themselves. Each prepares what it needs (workspace, descriptors), then goes
//! through [`check_and_time`](crate::timing::check_and_time) on the layer's buffer sets and
//! returns its [`MethodResult`](crate::report::MethodResult).

pub mod direct;
pub mod im2win_conv;

#[cfg(feature = "baselines")]
pub mod cudnn;
#[cfg(feature = "baselines")]
pub mod im2col_cublas;
#[cfg(feature = "baselines")]
pub mod libraries;

use im2win::{Conv2dProblem, Element, ProblemShape};

use crate::buffers::BufferSets;
use crate::gpu::Gpu;
use crate::timing::TimingConfig;

/// An element type the benchmark runs: an im2win [`Element`] (`f32`, `bf16`, `f16`) that
/// cuDNN also takes.
#[cfg(feature = "baselines")]
pub trait BenchElement: Element + cudarc::cudnn::CudnnDataType<Scalar = f32> {}
#[cfg(feature = "baselines")]
impl<T: Element + cudarc::cudnn::CudnnDataType<Scalar = f32>> BenchElement for T {}

/// An element type the benchmark runs: an im2win [`Element`] (`f32`, `bf16`, `f16`).
#[cfg(not(feature = "baselines"))]
pub trait BenchElement: Element {}
#[cfg(not(feature = "baselines"))]
impl<T: Element> BenchElement for T {}

/// One layer being benchmarked: its buffers (of the layer's element type `T`), its
/// reference output, and the settings.
pub struct LayerRun<'a, T> {
    /// The GPU.
    pub gpu: &'a Gpu,
    /// The convolution.
    pub problem: Conv2dProblem,
    /// Its sizes.
    pub shape: ProblemShape,
    /// Its work in GFLOP.
    pub gflop: f64,
    /// The rotated operand sets, shared by every method.
    pub sets: BufferSets<T>,
    /// Set 0's reference output (float64).
    pub reference: Vec<f64>,
    /// Warm-up and repetitions.
    pub timing: TimingConfig,
    /// The largest workspace (cuDNN) or column buffer (im2col) a method may use, in bytes.
    #[cfg(feature = "baselines")]
    pub max_workspace_bytes: u64,
}
