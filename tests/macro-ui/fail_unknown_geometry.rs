// A geometry no catalogue has: the error points at the filter, lists the nearest kernels
// and says how to generate this one.
const K: im2win::Specialization = im2win::conv2d!(f32, filter = 9x9, stride = 3);

fn main() {}
