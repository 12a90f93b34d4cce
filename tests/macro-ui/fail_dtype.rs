const K: im2win::Specialization = im2win::conv2d!(f64, filter = 3x3, stride = 1);

fn main() {}
