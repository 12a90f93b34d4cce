const K: im2win::Specialization = im2win::conv2d!(f32, filter = 3x3, strid = 1);

fn main() {}
