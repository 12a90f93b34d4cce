//! Compiles rendered catalogues with nvcc, when nvcc is found: the default catalogue for the
//! default targets (checking every kernel is in every image of the one fatbin, and that the
//! benchmark's baselines are not), and a set of unusual specs with the baselines for one
//! target (so that every branch of the templates, and every template, is compiled).
//!
//! Without nvcc these tests print why and pass, unless `IM2WIN_REQUIRE_NVCC=1` (CI sets it),
//! which makes a missing nvcc a failure. CI (`.ci/run`) skips
//! `default_catalogue_compiles_into_one_complete_fatbin`: the facade's build.rs has compiled
//! and checked the same catalogue in the same run, and CI fails on its spill warnings.

use std::path::PathBuf;

mod common;

use common::unusual_specs;

use im2win_codegen::catalogue::baselines;
use im2win_codegen::fatbin::{self, ImageKind};
use im2win_codegen::render::Renderer;
use im2win_codegen::{Catalogue, CudaTargets, KernelSpec, Nvcc, NvccError};

/// nvcc, or `None` (after saying why) when it is absent and not required.
fn nvcc() -> Option<Nvcc> {
    match Nvcc::locate() {
        Ok(nvcc) => Some(nvcc),
        Err(error) => {
            let required = std::env::var("IM2WIN_REQUIRE_NVCC").is_ok_and(|v| v == "1");
            assert!(!required, "IM2WIN_REQUIRE_NVCC=1 but {error}");
            eprintln!("skipped: {error}");
            None
        }
    }
}

/// A fresh work directory under cargo's scratch space for integration tests.
fn work_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    // A leftover from an earlier run is overwritten file by file; start clean anyway.
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn jobs() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

#[test]
fn default_catalogue_compiles_into_one_complete_fatbin() -> Result<(), NvccError> {
    let Some(nvcc) = nvcc() else { return Ok(()) };
    let catalogue = Catalogue::default_catalogue();
    let sources = Renderer::new()
        .and_then(|r| r.catalogue(&catalogue))
        .expect("the default catalogue renders");
    let targets = CudaTargets::from_env()?;
    let dir = work_dir("default_catalogue");
    let output = nvcc.compile(&sources, &targets, &dir, jobs())?;

    // Every kernel of the catalogue and every support kernel, in every image: the shipped
    // fatbin's PTX is compressed (and its SASS too where fatbinary judges it large); the
    // unshipped uncompressed copy shows every image's names.
    let mut kernels: Vec<String> = catalogue.kernels.iter().map(KernelSpec::name).collect();
    kernels.extend(catalogue.support_kernels().map(str::to_string));
    let images = fatbin::images(&output.fatbin)?;
    let targets_found: Vec<String> = images.iter().map(|i| i.target()).collect();
    assert_eq!(targets_found, targets.names(), "one image per target");
    for image in images.iter().filter(|i| i.kind == ImageKind::Ptx) {
        assert!(image.compressed, "{} is not compressed", image.target());
    }
    let checked = std::fs::read(dir.join("im2win.uncompressed.fatbin")).expect("the checked copy");
    assert!(fatbin::missing(&checked, &targets.names(), &kernels)?.is_empty());
    // The benchmark's baselines are not in the library's fatbin (im2win-bench builds them).
    for image in fatbin::images(&checked)? {
        for baseline in baselines::ALL {
            assert_eq!(
                image.defines(baseline),
                Some(false),
                "{} holds {baseline}",
                image.target()
            );
        }
    }
    assert!(
        output.fatbin.len() < checked.len(),
        "compression saved nothing"
    );
    // fatbinary 13.0 also compresses a SASS image once it is large (the default catalogue's
    // cubins are about 12 MB each and shrink 15x); a compressed image's names cannot be read,
    // so those are checked in the uncompressed copy above.
    for image in images.iter().filter(|i| i.kind == ImageKind::Sass) {
        if image.compressed {
            continue;
        }
        for kernel in &kernels {
            assert_eq!(
                image.defines(kernel),
                Some(true),
                "{} lacks {kernel}",
                image.target()
            );
        }
    }

    // ptxas reported every kernel for every SASS target.
    for arch in &targets.sass {
        for kernel in &kernels {
            let arch = format!("sm_{}", im2win_codegen::nvcc::sass_architecture(*arch));
            assert!(
                output
                    .resources
                    .iter()
                    .any(|r| &r.kernel == kernel && r.arch == arch),
                "no ptxas report for {kernel} on {arch}"
            );
        }
    }
    // Spilling makes a kernel several times slower; the default catalogue must not.
    let spilling: Vec<String> = output
        .resources
        .iter()
        .filter(|r| r.spills())
        .map(|r| format!("{} on {}", r.kernel, r.arch))
        .collect();
    assert!(spilling.is_empty(), "spills: {spilling:?}");
    for r in &output.resources {
        eprintln!(
            "{:<45} {:<6} {:>3} regs {:>6} B smem {:>4} B stack {:>4}/{:<4} B spill st/ld",
            r.kernel,
            r.arch,
            r.registers,
            r.shared_bytes,
            r.stack_bytes,
            r.spill_store_bytes,
            r.spill_load_bytes
        );
    }
    eprintln!("fatbin: {} bytes", output.fatbin.len());
    Ok(())
}

#[test]
fn unusual_specs_compile() -> Result<(), NvccError> {
    let Some(nvcc) = nvcc() else { return Ok(()) };
    let catalogue = Catalogue::new(unusual_specs())
        .expect("valid specs")
        .with_baselines();
    let sources = Renderer::new()
        .and_then(|r| r.catalogue(&catalogue))
        .expect("the specs render");
    let targets = CudaTargets::parse("90,noptx")?;
    let output = nvcc.compile(&sources, &targets, &work_dir("unusual_specs"), jobs())?;
    let images = fatbin::images(&output.fatbin)?;
    assert_eq!(images.len(), 1);
    assert_eq!(images[0].kind, ImageKind::Sass);
    for spec in &catalogue.kernels {
        assert_eq!(images[0].defines(&spec.name()), Some(true));
    }
    for kernel in catalogue.support_kernels() {
        assert_eq!(images[0].defines(kernel), Some(true), "{kernel}");
    }
    for r in output.resources.iter().filter(|r| r.kernel.contains("_b")) {
        eprintln!(
            "{:<40} {} regs, {} B smem, {}/{} B spilled",
            r.kernel, r.registers, r.shared_bytes, r.spill_store_bytes, r.spill_load_bytes
        );
    }
    // The tensor-core specs beside the catalogue must not spill either (the SIMT ones are
    // there for their code paths, at any register cost).
    let spilling: Vec<&str> = output
        .resources
        .iter()
        .filter(|r| r.spills() && r.kernel.contains("_w"))
        .map(|r| r.kernel.as_str())
        .collect();
    assert!(
        spilling.is_empty(),
        "tensor-core kernels spill: {spilling:?}"
    );
    Ok(())
}
