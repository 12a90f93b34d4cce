//! im2win: 2-D convolution on NVIDIA GPUs with the im2win layout.
pub use im2win_runtime::*;
