// The geometry exists, not with this tile: the error points at the tile and lists those
// compiled.
const K: im2win::Specialization =
    im2win::conv2d!(f32, filter = 3x3, stride = 1, tile = 64x32x8/4x4);

fn main() {}
