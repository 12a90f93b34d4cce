//! Memory layouts of the tensors ([`Layout`], [`FilterLayout`]): defined in `im2win-codegen`,
//! since a kernel's spec names its layout too, and re-exported here.

pub use im2win_codegen::layout::{FilterLayout, Layout, LayoutParseError};
