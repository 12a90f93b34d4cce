//! `im2win kernels`: every kernel of the embedded catalogue with its registers, shared
//! memory and spills, as ptxas reported them at build time, and the dynamic shared memory a
//! launch gives it (the tensor-core kernels' stages, from their spec).

use std::fmt::Write as _;
use std::io::Write as _;

use crate::error::{Context, Result};

/// Prints the table; fails when the crate was built without kernels.
pub fn run() -> Result<()> {
    let report = im2win::kernel_resources()
        .ok_or("im2win was built without nvcc")
        .context("listing the kernels")?;
    // Built as one string and written at once, so that a closed pipe (`| head`) is an error
    // to report rather than a panic inside `println!`.
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} convolution specialisations and {} support kernels in a {:.2} MB fatbin ({}), built by {}",
        im2win::kernels().catalogue().kernels.len(),
        im2win::kernels().catalogue().support_kernels().count(),
        report.fatbin_bytes as f64 / 1e6,
        report.targets.join(", "),
        report.nvcc_version
    );
    let _ = writeln!(
        text,
        "{:58} {:6} {:>5} {:>10} {:>10} {:>7} {:>7}",
        "kernel", "arch", "regs", "smem (B)", "dyn (B)", "stack", "spills"
    );
    let catalogue = im2win::kernels().catalogue().clone();
    for k in &report.kernels {
        // Dynamic shared memory is the launch's, not ptxas's: from the kernel's spec.
        let dynamic = catalogue
            .find(&k.kernel)
            .map_or(0, |spec| spec.dynamic_shared_bytes());
        let _ = writeln!(
            text,
            "{:58} {:6} {:>5} {:>10} {:>10} {:>7} {:>7}",
            k.kernel,
            k.arch,
            k.registers,
            k.shared_bytes,
            dynamic,
            k.stack_bytes,
            k.spill_store_bytes + k.spill_load_bytes
        );
    }
    let spilling = report.spilling().count();
    let _ = writeln!(text, "{spilling} kernel image(s) spill registers");
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("writing the kernel list")
}
