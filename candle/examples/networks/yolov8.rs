//! The backbone of YOLOv8s (Ultralytics' `yolov8.yaml` at scale s: depth 0.33, width 0.50),
//! 640×640, BatchNorm folded: Conv (convolution, BatchNorm, SiLU) stem, C2f blocks, SPPF; 27
//! convolutions. Its outputs are the three feature maps the detection head reads: P3 (stride 8,
//! 128 channels), P4 (16, 256) and P5 (32, 512).

use candle_core::{Result, Tensor};

use crate::common::{Act, Builder, Conv, max_pool};

/// BatchNorm scale of every layer: SiLU keeps less of its input's second moment than the
/// ReLU that Kaiming's variance is made for (about 0.36 of a unit normal's against 0.5), so the
/// scale is raised a little, to where the outputs stay of order one at any resolution (RMS
/// 0.35 at 64×64, 0.5 at 640×640; 1.0 gives 0.1, 1.18 gives 10).
const SILU_GAMMA: f32 = 1.12;

/// Ultralytics' `Conv`: convolution (padding k / 2), BatchNorm, SiLU.
fn conv(
    b: &mut Builder,
    name: &str,
    c_in: usize,
    c_out: usize,
    k: usize,
    s: usize,
) -> Result<Conv> {
    b.conv_bn(name, c_in, c_out, k, s, 1, Act::Silu, SILU_GAMMA)
}

/// Ultralytics' `Bottleneck` (3×3, 3×3, expansion 1): `x + cv2(cv1(x))`, the sum after the
/// SiLU (so not fused: the epilogue adds a residual before the activation).
struct Bottleneck {
    cv1: Conv,
    cv2: Conv,
}

impl Bottleneck {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x + self.cv2.forward(&self.cv1.forward(x)?)?
    }
}

/// Ultralytics' `C2f`: `cv1` to 2c channels, split in two, n bottlenecks on the second half,
/// every part concatenated, `cv2` to the output channels.
struct C2f {
    cv1: Conv,
    cv2: Conv,
    m: Vec<Bottleneck>,
}

impl C2f {
    fn new(b: &mut Builder, name: &str, c_in: usize, c_out: usize, n: usize) -> Result<Self> {
        let c = c_out / 2;
        let cv1 = conv(b, &format!("{name}.cv1"), c_in, 2 * c, 1, 1)?;
        let cv2 = conv(b, &format!("{name}.cv2"), (2 + n) * c, c_out, 1, 1)?;
        let m = (0..n)
            .map(|i| {
                Ok(Bottleneck {
                    cv1: conv(b, &format!("{name}.m.{i}.cv1"), c, c, 3, 1)?,
                    cv2: conv(b, &format!("{name}.m.{i}.cv2"), c, c, 3, 1)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(C2f { cv1, cv2, m })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut ys = self.cv1.forward(x)?.chunk(2, 1)?;
        for m in &self.m {
            let y = m.forward(&ys[ys.len() - 1])?;
            ys.push(y);
        }
        self.cv2.forward(&Tensor::cat(&ys, 1)?)
    }
}

/// Ultralytics' `SPPF`: `cv1` to half the channels, three 5×5 max poolings (stride 1,
/// padding 2) in a row, the four concatenated, `cv2`.
struct Sppf {
    cv1: Conv,
    cv2: Conv,
}

impl Sppf {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y0 = self.cv1.forward(x)?;
        let y1 = max_pool(&y0, 5, 1, 2)?;
        let y2 = max_pool(&y1, 5, 1, 2)?;
        let y3 = max_pool(&y2, 5, 1, 2)?;
        self.cv2.forward(&Tensor::cat(&[y0, y1, y2, y3], 1)?)
    }
}

/// The backbone, made for one method.
pub struct Yolov8Backbone {
    stem: [Conv; 2],
    c2f2: C2f,
    down3: Conv,
    c2f4: C2f,
    down5: Conv,
    c2f6: C2f,
    down7: Conv,
    c2f8: C2f,
    sppf: Sppf,
}

impl Yolov8Backbone {
    /// The layers, named by their index in `yolov8.yaml` (`model.0`, …, `model.9.cv2`).
    pub fn new(b: &mut Builder) -> Result<Self> {
        Ok(Yolov8Backbone {
            stem: [
                conv(b, "model.0", 3, 32, 3, 2)?,
                conv(b, "model.1", 32, 64, 3, 2)?,
            ],
            c2f2: C2f::new(b, "model.2", 64, 64, 1)?,
            down3: conv(b, "model.3", 64, 128, 3, 2)?,
            c2f4: C2f::new(b, "model.4", 128, 128, 2)?,
            down5: conv(b, "model.5", 128, 256, 3, 2)?,
            c2f6: C2f::new(b, "model.6", 256, 256, 2)?,
            down7: conv(b, "model.7", 256, 512, 3, 2)?,
            c2f8: C2f::new(b, "model.8", 512, 512, 1)?,
            sppf: Sppf {
                cv1: conv(b, "model.9.cv1", 512, 256, 1, 1)?,
                cv2: conv(b, "model.9.cv2", 1024, 512, 1, 1)?,
            },
        })
    }

    /// P3, P4 and P5.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        let x = self.stem[1].forward(&self.stem[0].forward(x)?)?;
        let x = self.c2f2.forward(&x)?;
        let p3 = self.c2f4.forward(&self.down3.forward(&x)?)?;
        let p4 = self.c2f6.forward(&self.down5.forward(&p3)?)?;
        let x = self.c2f8.forward(&self.down7.forward(&p4)?)?;
        let p5 = self.sppf.forward(&x)?;
        Ok(vec![p3, p4, p5])
    }
}
