// An NHWC request names the NHWC kernels' tiles: the error lists those, not the NCHW ones
// (which an NHWC problem cannot run).
const K: im2win::Specialization =
    im2win::conv2d!(f32, filter = 3x3, stride = 1, layout = nhwc, tile = 128x64x8/8x8);

fn main() {}
