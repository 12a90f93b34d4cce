//! The networks of the `networks` example (candle/examples/networks) on small CPU inputs:
//! built with im2win-candle's layer and with candle_nn's from the same weights, they compute
//! the same outputs. (The example times them at full size; this checks the network code
//! itself: the fused activations and residuals against candle's separate ops.)

// ResNet-50 is left out (25 million weights: slow in a debug build); what the example uses
// and these tests do not is allowed to be unused here.
#[allow(dead_code)]
#[path = "../examples/networks/common.rs"]
mod common;
#[path = "../examples/networks/mobilenetv2.rs"]
mod mobilenetv2;
#[path = "../examples/networks/yolov8.rs"]
mod yolov8;

use candle_core::{DType, Device, Result, Tensor};
use common::{Builder, Method};

fn rel_err(a: &[Tensor], b: &[Tensor]) -> Result<f64> {
    let (mut diff, mut norm) = (0f64, 0f64);
    for (a, b) in a.iter().zip(b) {
        diff += f64::from((a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()?);
        norm += f64::from(b.sqr()?.sum_all()?.to_scalar::<f32>()?);
    }
    Ok((diff / norm).sqrt())
}

#[test]
fn yolov8s_backbone_im2win_matches_candle() -> Result<()> {
    let device = Device::Cpu;
    let x = common::input(1, 32, DType::F32, &device)?;
    let mut b = Builder::new(&device, DType::F32);
    let theirs = yolov8::Yolov8Backbone::new(&mut b)?.forward(&x)?;
    b.set_method(Method::Im2win);
    let ours = yolov8::Yolov8Backbone::new(&mut b)?.forward(&x)?;
    let dims: Vec<_> = ours.iter().map(|t| t.dims().to_vec()).collect();
    assert_eq!(dims, [[1, 128, 4, 4], [1, 256, 2, 2], [1, 512, 1, 1]]);
    let err = rel_err(&ours, &theirs)?;
    assert!(err < 1e-5, "relative error {err:.2e}");
    Ok(())
}

#[test]
fn mobilenetv2_im2win_matches_candle() -> Result<()> {
    let device = Device::Cpu;
    let x = common::input(1, 32, DType::F32, &device)?;
    let mut b = Builder::new(&device, DType::F32);
    let theirs = mobilenetv2::MobileNetV2::new(&mut b)?.forward(&x)?;
    assert_eq!(theirs[0].dims(), [1, 1000]);
    b.set_method(Method::Im2win);
    // The depthwise layers run on im2win's grouped convolution.
    let ours = mobilenetv2::MobileNetV2::new(&mut b)?.forward(&x)?;
    let err = rel_err(&ours, &theirs)?;
    assert!(err < 1e-5, "relative error {err:.2e}");
    Ok(())
}
