//! MobileNetV2 (torchvision's, width 1.0), 224×224, BatchNorm folded: 52 convolutions, of
//! which 17 depthwise (groups = channels), ReLU6, global average pooling, a 1000-way
//! classifier.

use candle_core::{Result, Tensor};

use crate::common::{Act, Builder, Conv, Linear};

/// Scale of the BatchNorm of a projection that is added to a residual.
const BRANCH_GAMMA: f32 = 0.3;

struct InvertedResidual {
    expand: Option<Conv>,
    depthwise: Conv,
    project: Conv,
    residual: bool,
}

impl InvertedResidual {
    fn new(
        b: &mut Builder,
        name: &str,
        c_in: usize,
        c_out: usize,
        stride: usize,
        expand_ratio: usize,
    ) -> Result<Self> {
        let hidden = c_in * expand_ratio;
        let residual = stride == 1 && c_in == c_out;
        let gamma = if residual { BRANCH_GAMMA } else { 1.0 };
        Ok(InvertedResidual {
            expand: if expand_ratio != 1 {
                Some(b.conv_bn(
                    &format!("{name}.expand"),
                    c_in,
                    hidden,
                    1,
                    1,
                    1,
                    Act::Relu6,
                    1.0,
                )?)
            } else {
                None
            },
            depthwise: b.conv_bn(
                &format!("{name}.depthwise"),
                hidden,
                hidden,
                3,
                stride,
                hidden,
                Act::Relu6,
                1.0,
            )?,
            project: b.conv_bn(
                &format!("{name}.project"),
                hidden,
                c_out,
                1,
                1,
                1,
                Act::Identity,
                gamma,
            )?,
            residual,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let h = match &self.expand {
            Some(expand) => expand.forward(x)?,
            None => x.clone(),
        };
        let h = self.depthwise.forward(&h)?;
        if self.residual {
            self.project.forward_add(&h, x)
        } else {
            self.project.forward(&h)
        }
    }
}

/// The network, made for one method.
pub struct MobileNetV2 {
    stem: Conv,
    blocks: Vec<InvertedResidual>,
    head: Conv,
    classifier: Linear,
}

impl MobileNetV2 {
    /// The layers: `stem`, `blocks.I.{expand,depthwise,project}`, `head`, `classifier`.
    pub fn new(b: &mut Builder) -> Result<Self> {
        let stem = b.conv_bn("stem", 3, 32, 3, 2, 1, Act::Relu6, 1.0)?;
        let mut blocks = Vec::new();
        let mut c_in = 32;
        // (expansion t, channels c, repeats n, first stride s), as in the paper's table 2.
        let settings = [
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        ];
        for (t, c, n, s) in settings {
            for j in 0..n {
                let name = format!("blocks.{}", blocks.len());
                let stride = if j == 0 { s } else { 1 };
                blocks.push(InvertedResidual::new(b, &name, c_in, c, stride, t)?);
                c_in = c;
            }
        }
        let head = b.conv_bn("head", 320, 1280, 1, 1, 1, Act::Relu6, 1.0)?;
        let classifier = b.linear("classifier", 1280, 1000)?;
        Ok(MobileNetV2 {
            stem,
            blocks,
            head,
            classifier,
        })
    }

    /// The logits, `[batch, 1000]`.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let mut x = self.stem.forward(x)?;
        for block in &self.blocks {
            x = block.forward(&x)?;
        }
        let x = self.head.forward(&x)?.mean((2, 3))?;
        Ok(vec![self.classifier.forward(&x)?])
    }
}
