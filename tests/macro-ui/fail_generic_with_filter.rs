const K: im2win::Specialization = im2win::conv2d!(f32, generic, filter = 3x3);

fn main() {}
