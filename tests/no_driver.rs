//! Without the CUDA driver library (libcuda), `Engine::new` must return
//! `Error::DriverNotFound`, not panic: cudarc's loader panics on the first driver call when
//! libcuda is missing, so the engine checks for it first.
//!
//! This runs on every machine. Where no libcuda can be found by the dynamic loader (CI and
//! the development machines, which have no GPU) it demands `DriverNotFound`, from several
//! threads at once and for any ordinal; where one is found (the GPU machine) it accepts an
//! engine or `NoDevice`, and says so.

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};

use common::summary;
use im2win::{Engine, Error, KernelModule};

unsafe extern "C" {
    /// glibc's `dlopen` (in libc itself since glibc 2.34).
    fn dlopen(filename: *const std::ffi::c_char, flags: std::ffi::c_int) -> *mut std::ffi::c_void;
}

/// Whether the dynamic loader finds a libcuda, by asking it directly (`dlopen` of the names
/// the driver installs), independently of cudarc's check. The handle is left open.
fn libcuda_loadable() -> bool {
    const RTLD_LAZY: std::ffi::c_int = 1;
    [c"libcuda.so", c"libcuda.so.1"].iter().any(|name| {
        // SAFETY: a NUL-terminated name; loading libcuda runs no code of ours.
        !unsafe { dlopen(name.as_ptr(), RTLD_LAZY) }.is_null()
    })
}

fn new_engine(ordinal: usize) -> Result<im2win::Result<Engine>, String> {
    let module = KernelModule::not_built(im2win::kernels().catalogue().clone());
    catch_unwind(AssertUnwindSafe(|| Engine::new(ordinal, module)))
        .map_err(|_| format!("Engine::new({ordinal}) panicked"))
}

#[test]
fn engine_creation_without_a_driver_is_driver_not_found() {
    const TEST: &str = "engine_creation_without_a_driver_is_driver_not_found";
    if libcuda_loadable() {
        // A GPU machine: the driver is there, so an engine or NoDevice.
        match new_engine(0).unwrap() {
            Ok(_) | Err(Error::NoDevice { .. }) => {}
            Err(err) => panic!("with libcuda present: {err}"),
        }
        summary(
            TEST,
            "libcuda present: not checked here (CPU machines check it)",
        );
        return;
    }
    let ordinals = [0, 1, 7, usize::MAX];
    let results: Vec<(usize, Result<im2win::Result<Engine>, String>)> = std::thread::scope(|s| {
        let handles: Vec<_> = ordinals
            .iter()
            .flat_map(|&ordinal| [ordinal, ordinal])
            .map(|ordinal| s.spawn(move || (ordinal, new_engine(ordinal))))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (ordinal, result) in results {
        match result {
            Ok(Err(Error::DriverNotFound)) => {}
            Ok(Err(err)) => panic!("Engine::new({ordinal}) without libcuda: {err}"),
            Ok(Ok(_)) => panic!("Engine::new({ordinal}) without libcuda succeeded"),
            Err(panicked) => panic!("{panicked}"),
        }
    }
    let message = Error::DriverNotFound.to_string();
    assert!(
        message.contains("libcuda") && message.contains("im2win::cpu"),
        "{message}"
    );
    summary(
        TEST,
        &format!(
            "no libcuda: DriverNotFound for ordinals {ordinals:?}, from {} threads",
            2 * ordinals.len()
        ),
    );
}
