//! A ResNet basic block (two 3×3 convolutions, ReLU, the skip connection) built with
//! im2win-candle, checked against the same block built with candle_nn from the same
//! variables, and timed. Runs on the CPU; with the `cuda` feature and a GPU, on CUDA device 0.
//!
//! ```sh
//! cargo run --release -p im2win-candle --example basic_block              # CPU
//! cargo run --release -p im2win-candle --features cuda --example basic_block  # GPU 0 if any
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{VarBuilder, VarMap};
use im2win_candle::{Activation, Conv2dConfig};

/// The block with im2win-candle: `relu(conv2(relu(conv1(x))) + x)`, the activations and the
/// skip connection fused into the convolutions.
struct Block {
    conv1: im2win_candle::Conv2d,
    conv2: im2win_candle::Conv2d,
}

impl Block {
    fn new(channels: usize, vb: VarBuilder) -> Result<Block> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(Block {
            conv1: im2win_candle::conv2d(channels, channels, 3, cfg, vb.pp("conv1"))?
                .with_activation(Activation::Relu),
            conv2: im2win_candle::conv2d(channels, channels, 3, cfg, vb.pp("conv2"))?
                .with_activation(Activation::Relu),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(x)?;
        self.conv2.forward_with_residual(&h, x)
    }
}

/// The same block with candle_nn (the same variable names).
struct CandleBlock {
    conv1: candle_nn::Conv2d,
    conv2: candle_nn::Conv2d,
}

impl CandleBlock {
    fn new(channels: usize, vb: VarBuilder) -> Result<CandleBlock> {
        let cfg = Conv2dConfig {
            padding: 1,
            ..Default::default()
        };
        Ok(CandleBlock {
            conv1: candle_nn::conv2d(channels, channels, 3, cfg, vb.pp("conv1"))?,
            conv2: candle_nn::conv2d(channels, channels, 3, cfg, vb.pp("conv2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = self.conv1.forward(x)?.relu()?;
        (self.conv2.forward(&h)? + x)?.relu()
    }
}

/// Median wall-clock time of `runs` calls of `f`, each followed by a synchronisation.
fn time(device: &Device, runs: usize, mut f: impl FnMut() -> Result<Tensor>) -> Result<f64> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f()?;
        device.synchronize()?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[runs / 2])
}

fn main() -> Result<()> {
    let device = match Device::new_cuda(0) {
        Ok(device) if im2win_candle::gpu_kernels_available() => device,
        _ => Device::Cpu,
    };
    let (batch, channels, size) = if device.is_cuda() {
        (32, 64, 56)
    } else {
        (2, 64, 28)
    };
    println!("device: {device:?}; basic block, {channels} channels, {size}x{size}, batch {batch}");

    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let ours = Block::new(channels, vb.clone())?;
    let theirs = CandleBlock::new(channels, vb)?;
    let x = Tensor::randn(0f32, 1., (batch, channels, size, size), &device)?;

    let a = ours.forward(&x)?;
    let b = theirs.forward(&x)?;
    let diff = (&a - &b)?.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    let norm = b.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?;
    println!("relative error against candle_nn: {:.2e}", diff / norm);

    let runs = if device.is_cuda() { 50 } else { 5 };
    let t_ours = time(&device, runs, || ours.forward(&x))?;
    let t_theirs = time(&device, runs, || theirs.forward(&x))?;
    println!(
        "median forward: im2win-candle {:.3} ms, candle_nn {:.3} ms",
        t_ours * 1e3,
        t_theirs * 1e3
    );
    if diff / norm > 1e-4 {
        candle_core::bail!("the two blocks differ: {:.2e}", diff / norm);
    }
    Ok(())
}
