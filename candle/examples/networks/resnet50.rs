//! ResNet-50 (torchvision's v1.5: the stride in the 3×3 of each bottleneck), 224×224, BatchNorm
//! folded: 53 convolutions, max pooling, global average pooling, a 1000-way classifier.

use candle_core::{Result, Tensor};

use crate::common::{Act, Builder, Conv, Linear, max_pool};

/// Scale of the BatchNorm that ends each residual branch (keeps the 16 sums of order one).
const BRANCH_GAMMA: f32 = 0.3;

struct Bottleneck {
    conv1: Conv,
    conv2: Conv,
    conv3: Conv,
    downsample: Option<Conv>,
}

impl Bottleneck {
    fn new(b: &mut Builder, name: &str, c_in: usize, width: usize, stride: usize) -> Result<Self> {
        let c_out = width * 4;
        Ok(Bottleneck {
            conv1: b.conv_bn(
                &format!("{name}.conv1"),
                c_in,
                width,
                1,
                1,
                1,
                Act::Relu,
                1.0,
            )?,
            conv2: b.conv_bn(
                &format!("{name}.conv2"),
                width,
                width,
                3,
                stride,
                1,
                Act::Relu,
                1.0,
            )?,
            // relu(conv3(h) + identity): the residual and the ReLU fused with im2win.
            conv3: b.conv_bn(
                &format!("{name}.conv3"),
                width,
                c_out,
                1,
                1,
                1,
                Act::Relu,
                BRANCH_GAMMA,
            )?,
            downsample: if stride != 1 || c_in != c_out {
                Some(b.conv_bn(
                    &format!("{name}.downsample"),
                    c_in,
                    c_out,
                    1,
                    stride,
                    1,
                    Act::Identity,
                    1.0,
                )?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let identity = match &self.downsample {
            Some(ds) => ds.forward(x)?,
            None => x.clone(),
        };
        let h = self.conv2.forward(&self.conv1.forward(x)?)?;
        self.conv3.forward_add(&h, &identity)
    }
}

/// The network, made for one method.
pub struct ResNet50 {
    conv1: Conv,
    blocks: Vec<Bottleneck>,
    fc: Linear,
}

impl ResNet50 {
    /// The layers, named as torchvision names them (`conv1`, `layer1.0.conv1`, …, `fc`).
    pub fn new(b: &mut Builder) -> Result<Self> {
        let conv1 = b.conv_bn("conv1", 3, 64, 7, 2, 1, Act::Relu, 1.0)?;
        let mut blocks = Vec::new();
        let mut c_in = 64;
        for (i, (width, count, stride)) in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]
            .into_iter()
            .enumerate()
        {
            for j in 0..count {
                let name = format!("layer{}.{j}", i + 1);
                let s = if j == 0 { stride } else { 1 };
                blocks.push(Bottleneck::new(b, &name, c_in, width, s)?);
                c_in = width * 4;
            }
        }
        let fc = b.linear("fc", 2048, 1000)?;
        Ok(ResNet50 { conv1, blocks, fc })
    }

    /// The logits, `[batch, 1000]`.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = max_pool(&self.conv1.forward(x)?, 3, 2, 1)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let x = x.mean((2, 3))?;
        Ok(vec![self.fc.forward(&x)?])
    }
}
