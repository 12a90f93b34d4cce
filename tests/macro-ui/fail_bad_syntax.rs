const K: im2win::Specialization = im2win::conv2d!(f32, filter = 3y3, stride = 1);

fn main() {}
