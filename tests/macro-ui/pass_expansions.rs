// Every spelling expands to a const `im2win::Specialization`.
use im2win::codegen::{DType, FixedGeometry, Geometry, TileConfig};
use im2win::{Conv2dProblem, Error, Specialization};

const CONV3X3: Specialization = im2win::conv2d!(f32, filter = 3x3, stride = 1);
const SQUARE: Specialization = im2win::conv2d!(f32, filter = 3);
const DOWNSAMPLE: Specialization =
    im2win::conv2d!(f32, filter = 1x1, stride = 2, tile = 128x128x8/8x8);
const NAMED_TILE: Specialization =
    im2win::conv2d!(f32, filter = 1, stride = "2x2", tile = b128x128x8_t8x8,);
const GENERIC: Specialization = im2win::conv2d!(f32, generic);
// Tensor-core kernels: NHWC, bf16 / f16 tensors or float32 at TF32.
const BF16_3X3: Specialization = im2win::conv2d!(bf16, filter = 3x3, layout = nhwc);
const TF32_TILE: Specialization =
    im2win::conv2d!(tf32, filter = 1, layout = nhwc, tile = b128x128x16_w64x64);

fn main() {
    assert_eq!(CONV3X3, SQUARE);
    assert_eq!(CONV3X3.dtype(), DType::F32);
    assert_eq!(CONV3X3.geometry(), Geometry::Fixed(FixedGeometry::square(3, 1)));
    assert_eq!(CONV3X3.tile(), None);
    assert_eq!(CONV3X3.catalogue(), "im2win");
    assert_eq!(CONV3X3.to_string(), "im2win_f32_r3s3_s1x1_*");

    assert_eq!(DOWNSAMPLE, NAMED_TILE);
    assert_eq!(DOWNSAMPLE.tile(), Some(TileConfig::PAPER));
    assert_eq!(
        DOWNSAMPLE.spec().map(|spec| spec.name()).as_deref(),
        Some("im2win_f32_r1s1_s2x2_b128x128x8_t8x8")
    );
    assert_eq!(GENERIC.geometry(), Geometry::Generic);
    assert_eq!(BF16_3X3.to_string(), "im2win_bf16_r3s3_s1x1_*_nhwc");
    assert_eq!(
        TF32_TILE.spec().map(|spec| spec.name()).as_deref(),
        Some("im2win_tf32_r1s1_s1x1_b128x128x16_w64x64_fused_nhwc")
    );

    // In expression position too, and the handle checks problems.
    let stem = im2win::conv2d!(f32, filter = 7x7, stride = 2);
    let problem = Conv2dProblem::new([1, 3, 224, 224], [64, 3, 7, 7]).with_stride([2, 2]);
    assert!(stem.check(&problem).is_ok());
    assert!(matches!(
        CONV3X3.check(&problem),
        Err(Error::SpecMismatch { .. })
    ));
    assert!(GENERIC.check(&problem).is_ok());
}
