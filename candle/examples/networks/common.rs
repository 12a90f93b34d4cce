//! What the three networks share: deterministic random weights (the same generator as
//! `bench/torch_networks.py`), BatchNorm folded into each convolution's bias, and the
//! convolution layer generic over the method that computes it.

use std::collections::HashMap;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::BatchNorm;
use im2win_candle::{Activation, Conv2dConfig};

/// Which convolution the network is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// `im2win_candle::Conv2d` as it comes (each filter prepared once for its kernel: no
    /// filter transform in later forwards), activation (and residual where the network adds
    /// one before the activation) fused into the convolution.
    Im2win,
    /// The same with the filter transformed again in every forward
    /// (`Conv2d::with_prepared_filter(false)`).
    Im2winUnprepared,
    /// The prepared layers' whole forward captured once into a CUDA graph, then replayed
    /// (no host work per layer; CUDA devices only).
    Im2winGraph,
    /// `candle_nn::Conv2d` (candle's own conv2d: im2col + cuBLAS, or cuDNN in a build with
    /// candle's `cudnn` feature), the activation and residual as separate candle ops.
    Candle,
}

/// The activation that follows a convolution (and its folded BatchNorm).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Act {
    /// None.
    Identity,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)` (MobileNetV2).
    Relu6,
    /// `x · sigmoid(x)` (YOLOv8).
    Silu,
}

impl Act {
    /// The part im2win fuses into the convolution's epilogue (ReLU6: the ReLU; the clamp at 6
    /// is a separate op).
    fn fused(self) -> Activation {
        match self {
            Act::Identity => Activation::Identity,
            Act::Relu | Act::Relu6 => Activation::Relu,
            Act::Silu => Activation::Silu,
        }
    }

    /// The activation as candle ops.
    fn apply(self, x: Tensor) -> Result<Tensor> {
        match self {
            Act::Identity => Ok(x),
            Act::Relu => x.relu(),
            Act::Relu6 => x.clamp(0f32, 6f32),
            Act::Silu => x.silu(),
        }
    }
}

/// A convolution with its folded BatchNorm and activation, computed by one [`Method`].
pub enum Conv {
    /// im2win-candle's layer (activation set on it; `relu6` then clamps at 6).
    Im2win(im2win_candle::Conv2d, Act),
    /// candle_nn's layer and the activation.
    Candle(candle_nn::Conv2d, Act),
}

impl Conv {
    /// `act(conv(x) + bias)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Conv::Im2win(conv, act) => clamp6(conv.forward(x)?, *act),
            Conv::Candle(conv, act) => act.apply(conv.forward(x)?),
        }
    }

    /// `act(conv(x) + bias + residual)`: one pass with im2win, a separate add with candle.
    pub fn forward_add(&self, x: &Tensor, residual: &Tensor) -> Result<Tensor> {
        match self {
            Conv::Im2win(conv, act) => clamp6(conv.forward_with_residual(x, residual)?, *act),
            Conv::Candle(conv, act) => act.apply((conv.forward(x)? + residual)?),
        }
    }
}

/// The clamp at 6 of a ReLU6 whose ReLU was fused.
fn clamp6(y: Tensor, act: Act) -> Result<Tensor> {
    if act == Act::Relu6 {
        y.minimum(6f32)
    } else {
        Ok(y)
    }
}

/// A fully connected layer (the classifiers' last layer).
pub struct Linear(candle_nn::Linear);

impl Linear {
    /// `x · weightᵀ + bias`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.0.forward(x)
    }
}

/// The deterministic uniform generator shared with `bench/torch_networks.py`: element `i` of
/// the tensor named `name` is splitmix64 of `fnv1a64(name) + (i + 1) · golden`, its top 24
/// bits as a float in [0, 1), mapped to [lo, hi) in float32.
pub fn uniform(name: &str, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
    let seed = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let span = hi - lo;
    (0..len as u64)
        .map(|i| {
            let mut z = seed.wrapping_add((i + 1).wrapping_mul(GOLDEN));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f32 * (1.0 / 16_777_216.0);
            lo + span * u
        })
        .collect()
}

/// A float32 CPU tensor of `shape` from [`uniform`].
fn uniform_tensor(name: &str, shape: &[usize], lo: f32, hi: f32) -> Result<Tensor> {
    let len = shape.iter().product();
    Tensor::from_vec(uniform(name, len, lo, hi), shape, &Device::Cpu)
}

/// The network's input: `[batch, 3, size, size]`, uniform in [-1, 1), as `dtype` on
/// `device`.
pub fn input(batch: usize, size: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    uniform_tensor("input", &[batch, 3, size, size], -1.0, 1.0)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// Makes the layers of a network for one [`Method`], with weights that depend only on the
/// layers' names (made once, in float32 on the CPU, BatchNorm folded there, then kept as
/// `dtype` on `device` for every method built from the same builder).
pub struct Builder {
    device: Device,
    dtype: DType,
    method: Method,
    params: HashMap<String, (Tensor, Option<Tensor>)>,
}

impl Builder {
    /// A builder for `dtype` tensors on `device`.
    pub fn new(device: &Device, dtype: DType) -> Builder {
        Builder {
            device: device.clone(),
            dtype,
            method: Method::Candle,
            params: HashMap::new(),
        }
    }

    /// Layers made from now on compute with `method` (the weights stay the same).
    pub fn set_method(&mut self, method: Method) {
        self.method = method;
    }

    /// The device the layers live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Convolution `name` (no bias, `k`×`k`, padding `k / 2`, `groups`) followed by a
    /// BatchNorm folded into it and `act`. The filter is Kaiming-uniform (variance
    /// 2 / fan-in); the BatchNorm's scale is about `gamma` (1 for most layers, less for the
    /// last layer of a residual branch so that the sums of many blocks stay of order one),
    /// shift, mean and variance near 0, 0 and 1.
    #[allow(clippy::too_many_arguments)]
    pub fn conv_bn(
        &mut self,
        name: &str,
        c_in: usize,
        c_out: usize,
        k: usize,
        stride: usize,
        groups: usize,
        act: Act,
        gamma: f32,
    ) -> Result<Conv> {
        let config = Conv2dConfig {
            padding: k / 2,
            stride,
            dilation: 1,
            groups,
            cudnn_fwd_algo: None,
        };
        if !self.params.contains_key(name) {
            let fan_in = c_in / groups * k * k;
            let bound = (6.0f32 / fan_in as f32).sqrt();
            let w = uniform_tensor(
                &format!("{name}.weight"),
                &[c_out, c_in / groups, k, k],
                -bound,
                bound,
            )?;
            let bn = BatchNorm::new(
                c_out,
                uniform_tensor(&format!("{name}.bn.running_mean"), &[c_out], -0.1, 0.1)?,
                uniform_tensor(&format!("{name}.bn.running_var"), &[c_out], 0.9, 1.1)?,
                uniform_tensor(
                    &format!("{name}.bn.weight"),
                    &[c_out],
                    0.9 * gamma,
                    1.1 * gamma,
                )?,
                uniform_tensor(&format!("{name}.bn.bias"), &[c_out], -0.1, 0.1)?,
                BN_EPS,
            )?;
            // BatchNorm folded as im2win-candle (and candle_nn) fold it, in float32.
            let folded = im2win_candle::Conv2d::new(w, None, config).absorb_bn(&bn)?;
            let weight = self.place(folded.weight())?;
            let bias = folded.bias().map(|b| self.place(b)).transpose()?;
            self.params.insert(name.to_string(), (weight, bias));
        }
        let (weight, bias) = self.params[name].clone();
        Ok(match self.method {
            Method::Im2win | Method::Im2winUnprepared | Method::Im2winGraph => Conv::Im2win(
                im2win_candle::Conv2d::new(weight, bias, config)
                    .with_activation(act.fused())
                    .with_prepared_filter(self.method != Method::Im2winUnprepared),
                act,
            ),
            Method::Candle => Conv::Candle(candle_nn::Conv2d::new(weight, bias, config), act),
        })
    }

    /// Fully connected layer `name`, `c_in` → `c_out`, PyTorch's default initialisation
    /// (uniform within ±1/√fan-in).
    pub fn linear(&mut self, name: &str, c_in: usize, c_out: usize) -> Result<Linear> {
        if !self.params.contains_key(name) {
            let bound = 1.0 / (c_in as f32).sqrt();
            let w = uniform_tensor(&format!("{name}.weight"), &[c_out, c_in], -bound, bound)?;
            let b = uniform_tensor(&format!("{name}.bias"), &[c_out], -bound, bound)?;
            let entry = (self.place(&w)?, Some(self.place(&b)?));
            self.params.insert(name.to_string(), entry);
        }
        let (w, b) = self.params[name].clone();
        Ok(Linear(candle_nn::Linear::new(w, b)))
    }

    fn place(&self, t: &Tensor) -> Result<Tensor> {
        t.to_dtype(self.dtype)?.to_device(&self.device)
    }
}

/// The BatchNorms' epsilon (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

/// `k`×`k` max pooling with stride `stride` and padding `pad` (PyTorch's `MaxPool2d`):
/// candle's pooling has no padding, so each border is first padded with copies of the edge
/// (`pad_with_same`), which gives exactly the maximum of a padding of -∞ when `pad < k`
/// (every window that covers a padded element also covers the edge element it copies).
pub fn max_pool(x: &Tensor, k: usize, stride: usize, pad: usize) -> Result<Tensor> {
    let x = if pad > 0 {
        x.pad_with_same(2, pad, pad)?.pad_with_same(3, pad, pad)?
    } else {
        x.clone()
    };
    x.max_pool2d_with_stride(k, stride)
}
