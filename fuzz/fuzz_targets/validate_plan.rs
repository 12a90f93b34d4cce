//! Validation and planning on any bytes: `im2win_fuzz::decode` makes a problem (sizes from
//! 0 to `usize::MAX`), a multiprocessor count and a kernel spec; `im2win_fuzz::check` runs
//! `shape`/`validate`/`output_shape`/`workspace_bytes`/`flops`, `ConvParams`, `Plan::new`
//! (default catalogue, 132 SMs and the decoded count) and `Plan::for_spec`, and compares
//! every answer with an independent u128 model. Any panic is a finding.
#![no_main]

use std::sync::LazyLock;

use im2win::codegen::Catalogue;
use libfuzzer_sys::fuzz_target;

/// The embedded default catalogue, parsed once.
static CATALOGUE: LazyLock<Catalogue> = LazyLock::new(|| im2win::kernels().catalogue().clone());

fuzz_target!(|data: &[u8]| {
    im2win_fuzz::check(&im2win_fuzz::decode(data), &CATALOGUE);
});
