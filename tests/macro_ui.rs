//! The `im2win::conv2d!` macro's expansions and compile errors, as a user sees them
//! (trybuild).
//!
//! `macro-ui/pass_*.rs` must compile and run; `macro-ui/fail_*.rs` must fail with the error
//! in the `.stderr` beside them. The error texts list kernels of the default catalogue, so a
//! change of `Catalogue::default_catalogue()` can change them: regenerate with
//! `TRYBUILD=overwrite cargo test -p im2win --test macro_ui` and review the diff.
//!
//! These tests live in the facade, not in `im2win-macros`: a dev-dependency of the
//! proc-macro crate on the facade made `cargo test --release --workspace` build the facade a
//! second time for the host (proc-macro dependencies get the build-override profile), and
//! its build.rs compiled the whole catalogue a second time: about 12 minutes of a core in CI.

#[test]
fn ui() {
    // trybuild runs cargo; a test binary copied to a machine without a toolchain (the GPU
    // machine, scripts/device-run.sh) has nothing to run it with.
    if std::env::var_os("CARGO").is_none() {
        println!("SKIPPED: the UI tests need cargo (run them with `cargo test`)");
        return;
    }
    // trybuild builds the facade again in a target directory of its own; these tests only
    // compile (and run code that launches nothing), so its build.rs need not run nvcc.
    // Nor need its debug build carry debug info or incremental state: without debug info the
    // build takes about 59 s instead of 72 on the 2-core CI machine.
    // SAFETY: this binary's only test; nothing else reads the environment concurrently.
    unsafe {
        std::env::set_var("IM2WIN_SKIP_NVCC", "1");
        std::env::set_var("CARGO_PROFILE_DEV_DEBUG", "0");
        std::env::set_var("CARGO_INCREMENTAL", "0");
    }
    let cases = trybuild::TestCases::new();
    cases.pass("tests/macro-ui/pass_*.rs");
    cases.compile_fail("tests/macro-ui/fail_*.rs");
}
