// `catalogue` names the crate's manifest, relative to CARGO_MANIFEST_DIR.
const K: im2win::Specialization =
    im2win::conv2d!(f32, filter = 9x9, stride = 3, catalogue = "no/such/im2win.toml");

fn main() {}
