//! The `im2win` command.
fn main() {}
