//! im2win's 2-D convolution inside [candle](https://crates.io/crates/candle-core): a
//! drop-in for [`candle_nn::Conv2d`].
//!
//! A model written for candle_nn changes one `use` line:
//!
//! ```
//! // use candle_nn::{conv2d, Conv2d, Conv2dConfig};
//! use im2win_candle::{conv2d, Activation, Conv2d, Conv2dConfig};
//! use candle_core::{DType, Device, Module, Tensor};
//! use candle_nn::{VarBuilder, VarMap};
//!
//! fn main() -> candle_core::Result<()> {
//!     let device = Device::Cpu; // or Device::new_cuda(0)? with the `cuda` feature
//!     let varmap = VarMap::new();
//!     let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
//!     let cfg = Conv2dConfig { padding: 1, ..Default::default() };
//!     let conv: Conv2d = conv2d(64, 64, 3, cfg, vb.pp("conv1"))?.with_activation(Activation::Relu);
//!     let x = Tensor::randn(0f32, 1., (1, 64, 28, 28), &device)?;
//!     let y = conv.forward(&x)?; // relu(conv(x) + bias), the ReLU fused
//!     let z = conv.forward_with_residual(&y, &x)?; // relu(conv(y) + bias + x), one pass
//!     assert_eq!(z.dims(), &[1, 64, 28, 28]);
//!     Ok(())
//! }
//! ```
//!
//! The weights are `conv1.weight` and `conv1.bias`, as candle_nn names them.
//!
//! # What runs where
//! - **CUDA tensors** (feature `cuda`): im2win's GPU kernels, launched on candle's own device
//!   and stream through candle's custom-op interface. The input, filter, bias and residual are
//!   read where candle keeps them (no copy); the only allocation per call is the output, made
//!   by candle's device like any of its ops' outputs, plus im2win's workspace, which the
//!   engine keeps and grows between calls; nothing synchronises. One im2win
//!   [`Engine`](im2win::Engine) is made per candle CUDA device on the device's first
//!   convolution (loading im2win's kernels, which waits for the stream once) and kept for the
//!   life of the program.
//! - **CPU tensors**: im2win's multi-threaded CPU backend ([`im2win::cpu::conv2d`]).
//!
//! Element types: F32 (strict FP32 by default; TF32 or the other precisions of
//! [`Precision`] when the layer asks, [`Conv2d::with_precision`]), BF16 and F16 (float32 sums,
//! each output rounded once to the type). Other candle types are refused with an error.
//!
//! Tensors: the input is NCHW (candle's layout), the filter KCRS (candle's weight layout,
//! `[out_channels, in_channels, kh, kw]`). A non-contiguous input, filter or residual is first
//! made contiguous with [`Tensor::contiguous`] (a copy, only for such tensors); a contiguous
//! view at an offset (e.g. from `narrow` on the batch) is read in place.
//!
//! # Epilogues
//! The layer can fuse what usually follows a convolution into the convolution's own store:
//! an activation ([`Conv2d::with_activation`]: ReLU, SiLU, GELU, tanh-GELU) and a residual
//! tensor ([`Conv2d::forward_with_residual`], e.g. ResNet's skip connection), so that
//! `y = act(alpha · conv(x, w) + bias + beta · residual)` is computed in one pass.
//!
//! Grouped and depthwise layers (`groups` dividing both channel counts) run in one launch on
//! im2win's grouped kernels (the CPU backend's grouped loop on the CPU); a group count that
//! does not divide them is refused when the layer is made ([`conv2d`], [`conv2d_no_bias`]) or
//! run ([`Conv2d::forward`]).
//!
//! # Limitations
//! - Forward only: a backward pass through the layer fails with candle's
//!   `BackwardNotSupported`.
//! - `Conv2dConfig::cudnn_fwd_algo` is ignored (it picks a cuDNN algorithm).
//!
//! # Features
//! - `cuda` (off by default): candle's CUDA backend (`candle-core/cuda`, `candle-nn/cuda`)
//!   and the GPU path. Building it compiles candle's own CUDA kernels with nvcc for
//!   `CUDA_COMPUTE_CAP` (e.g. `90`; no GPU needed) and links libcuda, cuBLAS, cuRAND and NVRTC
//!   at build time, as candle does; it turns on im2win's `dynamic-linking` feature to match
//!   (cudarc cannot both link and load libcuda). im2win's own kernels need nvcc too (`NVCC`).
//!   `candle/scripts/gpu-build.sh` in the repository builds the GPU tests that way on a
//!   machine without CUDA.
//!
//! # Errors
//! Every failure is a [`candle_core::Error`]; im2win's own errors keep their messages
//! (prefixed with `im2win: `). Nothing panics.

#![deny(missing_docs)]

mod cpu;
#[cfg(feature = "cuda")]
mod cuda;
mod op;

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
pub use candle_nn::{BatchNorm, Conv2dConfig};
pub use im2win::{Activation, Precision};

use op::ConvOp;

/// A 2-D convolution layer that computes with im2win: the same weights, configuration and
/// results as [`candle_nn::Conv2d`] (which it replaces), plus an optional fused activation,
/// scaling and residual.
///
/// `forward` computes `act(alpha · conv(x, weight) + bias)` (`alpha` 1 and no activation
/// unless asked: candle_nn's convolution); [`Conv2d::forward_with_residual`] adds
/// `beta · residual` before the activation.
#[derive(Clone, Debug)]
pub struct Conv2d {
    weight: Tensor,
    bias: Option<Tensor>,
    config: Conv2dConfig,
    activation: Activation,
    alpha: f32,
    beta: f32,
    precision: Precision,
    /// Whether the filter is prepared once (see [`Conv2d::with_prepared_filter`]).
    prepare: bool,
    /// The CPU backend's prepared filters, shared by the layer's clones.
    prepared_cpu: std::sync::Arc<cpu::PreparedFilters>,
    /// The filters prepared so far, shared by the layer's clones (`cuda` feature).
    #[cfg(feature = "cuda")]
    prepared: std::sync::Arc<cuda::PreparedFilters>,
}

impl Conv2d {
    /// A layer with filter `weight` (`[out_channels, in_channels / groups, kh, kw]`), optional
    /// `bias` (`[out_channels]`) and `config`, as [`candle_nn::Conv2d::new`]: no activation,
    /// strict FP32 for float32 tensors.
    ///
    /// Nothing is checked here (as in candle_nn); [`Conv2d::forward`] reports a bad shape,
    /// an unsupported type or a group count that does not divide the channels.
    pub fn new(weight: Tensor, bias: Option<Tensor>, config: Conv2dConfig) -> Self {
        Conv2d {
            weight,
            bias,
            config,
            activation: Activation::Identity,
            alpha: 1.0,
            beta: 1.0,
            precision: Precision::Strict,
            prepare: true,
            prepared_cpu: Default::default(),
            #[cfg(feature = "cuda")]
            prepared: Default::default(),
        }
    }

    /// Whether a forward puts the filter, once, into the form im2win reads and keeps it,
    /// so that later forwards do not transform it again. On a CUDA tensor that is the form
    /// the GPU kernel reads (`Engine::prepare_filter`: no filter transform launched; ResNet-50's
    /// filters are 98 MB of float32, and moving them each forward costs more than the
    /// batch-1 convolutions themselves); on a CPU tensor the filter packed for the CPU
    /// backend's micro-kernel (`im2win::cpu::prepare_filter`: the per-call packing reads the
    /// whole filter from memory, a third of a 512-channel 7 × 7 layer's time), in float32
    /// whatever the tensor's type. It costs the prepared copy's memory, once per device,
    /// element type and form that runs the layer. A weight that is a candle `Var`
    /// (training) is never prepared: it may change between forwards. On by default
    /// (checked by `prepared_filters_and_variables` in `candle/tests/gpu.rs` and
    /// `prepared_cpu_filters` in `candle/tests/cpu.rs`); off, every forward transforms the
    /// filter again.
    pub fn with_prepared_filter(mut self, prepare: bool) -> Self {
        self.prepare = prepare;
        self
    }

    /// The same layer with `activation` applied to each output, in the convolution's
    /// epilogue (no pass of its own).
    pub fn with_activation(mut self, activation: Activation) -> Self {
        self.activation = activation;
        self
    }

    /// The same layer with the convolution's sums scaled by `alpha` before the bias is added:
    /// `act(alpha · conv(x, w) + bias …)`. Must be finite (checked by `forward`).
    pub fn with_alpha(mut self, alpha: f32) -> Self {
        self.alpha = alpha;
        self
    }

    /// The same layer with the residual of [`Conv2d::forward_with_residual`] scaled by
    /// `beta` (1 unless set). Must be finite (checked by `forward_with_residual`).
    pub fn with_residual_scale(mut self, beta: f32) -> Self {
        self.beta = beta;
        self
    }

    /// The same layer computing float32 tensors at `precision`: [`Precision::Strict`] (the
    /// default: FP32 products, no TF32 anywhere), [`Precision::Tf32`] (operands rounded to
    /// TF32, tensor cores on the GPU, as the CPU backend emulates), [`Precision::F32x3`] or
    /// [`Precision::Accurate`] (FP32 accuracy, see [`Precision`]). BF16 and F16 tensors are
    /// always computed as stored (their products are exact in float32), whatever is set here.
    pub fn with_precision(mut self, precision: Precision) -> Self {
        self.precision = precision;
        self
    }

    /// The layer's configuration (padding, stride, dilation, groups).
    pub fn config(&self) -> &Conv2dConfig {
        &self.config
    }

    /// The filter, `[out_channels, in_channels / groups, kh, kw]`.
    pub fn weight(&self) -> &Tensor {
        &self.weight
    }

    /// The bias, `[out_channels]`, if the layer has one.
    pub fn bias(&self) -> Option<&Tensor> {
        self.bias.as_ref()
    }

    /// The fused activation ([`Activation::Identity`] unless set).
    pub fn activation(&self) -> Activation {
        self.activation
    }

    /// The precision float32 tensors are computed at.
    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// The layer with a batch normalisation folded into its filter and bias, as
    /// [`candle_nn::Conv2d::absorb_bn`] computes it; activation, scales and precision are
    /// kept.
    ///
    /// # Errors
    /// As candle_nn's: a batch norm without weight and bias, or mismatched shapes.
    pub fn absorb_bn(&self, bn: &BatchNorm) -> Result<Self> {
        let folded = self.to_candle().absorb_bn(bn)?;
        Ok(Conv2d {
            weight: folded.weight().clone(),
            bias: folded.bias().cloned(),
            // New weights: nothing prepared yet.
            prepared_cpu: Default::default(),
            #[cfg(feature = "cuda")]
            prepared: Default::default(),
            ..self.clone()
        })
    }

    /// candle_nn's layer with the same weights and configuration (without the fused
    /// activation and scales), e.g. to compare the two.
    pub fn to_candle(&self) -> candle_nn::Conv2d {
        candle_nn::Conv2d::new(self.weight.clone(), self.bias.clone(), self.config)
    }

    /// `act(alpha · conv(x, weight) + bias + beta · residual)`, in one pass: `residual` is a
    /// tensor of the output's shape, dtype and device (for example the block's input in a
    /// ResNet basic block), read as each output is stored.
    ///
    /// # Errors
    /// Those of [`Conv2d::forward`], and a residual whose shape, dtype or device differs
    /// from the output's.
    pub fn forward_with_residual(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        self.run(x, Some(residual))
    }

    fn run(&self, x: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        let op = ConvOp::new(self, x, residual)?;
        let x = x.contiguous()?;
        let weight = self.weight.contiguous()?;
        match residual {
            None => x.apply_op2(&weight, op),
            Some(residual) => x.apply_op3(&weight, &residual.contiguous()?, op),
        }
    }
}

impl Module for Conv2d {
    /// `act(alpha · conv(x, weight) + bias)` of an NCHW input `x`: candle_nn's convolution
    /// when neither activation nor `alpha` was set.
    ///
    /// # Errors
    /// An input that is not 4-D, channel counts that do not match the filter, tensors of
    /// different dtypes or devices, a dtype other than F32, BF16 and F16, a group count that
    /// does not divide the channels,
    /// a filter larger than the padded input, and whatever im2win reports (on the GPU: kernels
    /// not built, out of memory, a driver error), as a [`candle_core::Error`].
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, None)
    }
}

impl From<candle_nn::Conv2d> for Conv2d {
    /// The same weights and configuration, computed by im2win.
    fn from(conv: candle_nn::Conv2d) -> Self {
        Conv2d::new(conv.weight().clone(), conv.bias().cloned(), *conv.config())
    }
}

/// A convolution layer with bias whose weights come from `vb`, exactly as
/// [`candle_nn::conv2d`] makes them: `weight` of shape
/// `[out_channels, in_channels / groups, kernel_size, kernel_size]` and `bias` of shape
/// `[out_channels]`, with candle_nn's initialisations when `vb` creates them.
///
/// # Errors
/// Those of the VarBuilder (a missing or misshapen weight), and a group count in `cfg` that
/// is 0 or does not divide `in_channels` and `out_channels`.
pub fn conv2d(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    op::check_groups(in_channels, out_channels, kernel_size, &cfg)?;
    candle_nn::conv2d(in_channels, out_channels, kernel_size, cfg, vb).map(Conv2d::from)
}

/// [`conv2d`] without a bias: only `weight` is read from `vb`, as
/// [`candle_nn::conv2d_no_bias`].
///
/// # Errors
/// As [`conv2d`].
pub fn conv2d_no_bias(
    in_channels: usize,
    out_channels: usize,
    kernel_size: usize,
    cfg: Conv2dConfig,
    vb: VarBuilder,
) -> Result<Conv2d> {
    op::check_groups(in_channels, out_channels, kernel_size, &cfg)?;
    candle_nn::conv2d_no_bias(in_channels, out_channels, kernel_size, cfg, vb).map(Conv2d::from)
}

/// Whether this build can convolve CUDA tensors: the crate's `cuda` feature is on (without
/// it candle has no CUDA device at all) and im2win's GPU kernels were compiled into it (nvcc
/// at build time; without them a convolution of CUDA tensors fails with im2win's "kernels
/// not built" error). Says nothing about whether a GPU is present.
pub fn gpu_kernels_available() -> bool {
    cfg!(feature = "cuda") && im2win::kernels().is_built()
}
