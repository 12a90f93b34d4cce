//! `Builder`, the generator a build script calls: what it writes with and without nvcc, its
//! errors, and its cache.
//!
//! The compiling test needs nvcc; without it it prints why and passes, unless
//! `IM2WIN_REQUIRE_NVCC=1` (CI sets it).

use std::path::PathBuf;

use im2win_codegen::catalogue::{baselines, support};
use im2win_codegen::fatbin;
use im2win_codegen::{
    BuildError, Builder, Catalogue, DType, FixedGeometry, KernelReport, KernelSpec, Nvcc,
    TileConfig,
};

/// A fresh directory under cargo's scratch space for integration tests.
fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("builder")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn nine_by_nine() -> KernelSpec {
    KernelSpec::fixed(DType::F32, FixedGeometry::square(9, 3), TileConfig::PAPER)
}

#[test]
fn without_nvcc_the_module_is_written_empty() {
    let out = scratch("no_nvcc");
    let builder = Builder::new("custom")
        .kernel(nine_by_nine())
        .out_dir(&out)
        .nvcc("/nonexistent/bin/nvcc")
        .cargo_directives(false);

    let output = builder.clone().require_nvcc(false).build().unwrap();
    assert!(!output.built());
    assert!(
        output
            .not_built
            .as_deref()
            .unwrap()
            .contains("/nonexistent/bin/nvcc")
    );
    assert_eq!(output.fatbin, out.join("custom.fatbin"));
    assert_eq!(std::fs::read(&output.fatbin).unwrap(), b"");
    let catalogue = std::fs::read_to_string(out.join("custom.catalogue.json")).unwrap();
    assert_eq!(
        Catalogue::from_json(&catalogue).unwrap().kernels,
        [nine_by_nine()]
    );
    let report = std::fs::read_to_string(out.join("custom.kernels.json")).unwrap();
    assert!(KernelReport::from_json(&report).is_err(), "{report}");
    assert_eq!(report, "null");

    let error = builder.require_nvcc(true).build().unwrap_err();
    assert!(error.is_environmental(), "{error}");
}

#[test]
fn only_with_baselines_does_the_catalogue_have_them() {
    let build = |name: &str, builder: Builder| {
        let out = scratch(name);
        let output = builder
            .out_dir(&out)
            .nvcc("/nonexistent/bin/nvcc")
            .require_nvcc(false)
            .cargo_directives(false)
            .build()
            .unwrap();
        let written = std::fs::read_to_string(&output.catalogue_file).unwrap();
        assert_eq!(Catalogue::from_json(&written).unwrap(), output.catalogue);
        output.catalogue
    };
    let plain = build("plain", Builder::new("custom").kernel(nine_by_nine()));
    assert!(!plain.baselines);
    let bench = build(
        "bench",
        Builder::new("bench")
            .catalogue(&Catalogue::ablation())
            .with_baselines(),
    );
    assert!(bench.baselines);
    assert_eq!(bench.kernels, Catalogue::ablation().kernels);
    // A catalogue that has them passes them on.
    let passed = build(
        "passed",
        Builder::new("bench").catalogue(&Catalogue::ablation().with_baselines()),
    );
    assert!(passed.baselines);
}

#[test]
fn bad_requests_are_errors() {
    let out = scratch("errors");
    let build = |builder: Builder| {
        builder
            .out_dir(&out)
            .nvcc("/nonexistent/bin/nvcc")
            .require_nvcc(false)
            .cargo_directives(false)
            .build()
    };
    let cases: [(Builder, &str); 5] = [
        (
            Builder::new("a b").kernel(nine_by_nine()),
            "not a valid module name",
        ),
        (Builder::new("custom"), "names no kernel"),
        (
            Builder::new("custom")
                .kernel(nine_by_nine())
                .kernel(nine_by_nine()),
            "twice",
        ),
        (
            Builder::from_manifest(out.join("missing.toml")),
            "cannot read it",
        ),
        (
            Builder::new("custom").kernel(KernelSpec::fixed(
                DType::F32,
                FixedGeometry::square(0, 1),
                TileConfig::PAPER,
            )),
            "invalid geometry",
        ),
    ];
    for (builder, expected) in cases {
        let error = build(builder).unwrap_err();
        assert!(!error.is_environmental(), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
    }
    assert!(matches!(
        Builder::new("x")
            .kernel(nine_by_nine())
            .cargo_directives(false)
            .build(),
        Err(BuildError::NoOutDir)
    ));
}

#[test]
fn a_manifest_compiles_into_a_complete_fatbin_once() {
    let nvcc = match Nvcc::locate() {
        Ok(nvcc) => nvcc,
        Err(error) => {
            let required = std::env::var("IM2WIN_REQUIRE_NVCC").is_ok_and(|v| v == "1");
            assert!(!required, "IM2WIN_REQUIRE_NVCC=1 but {error}");
            eprintln!("skipped: {error}");
            return;
        }
    };
    let dir = scratch("manifest");
    let manifest = dir.join("im2win.toml");
    std::fs::write(
        &manifest,
        "name = \"custom\"\narchs = \"90,noptx\"\n[[kernel]]\nfilter = \"9x9\"\nstride = 3\n\
         tile = \"128x128x8/8x8\"\n",
    )
    .unwrap();
    let out = dir.join("out");
    let builder = Builder::from_manifest(&manifest)
        .out_dir(&out)
        .nvcc(nvcc.path())
        .require_nvcc(true)
        .cargo_directives(false);

    let output = builder.clone().build().unwrap();
    assert!(output.built(), "{:?}", output.not_built);
    assert_eq!(output.name, "custom");
    let bytes = std::fs::read(&output.fatbin).unwrap();
    let report = output.report.as_ref().unwrap();
    let name = nine_by_nine().name();
    // IM2WIN_CUDA_ARCHS, when set, overrides the manifest's targets.
    let problems = fatbin::missing(&bytes, &report.targets, &[name.as_str()]).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    // The support kernels are in a user's fatbin; the benchmark's baselines are not (ptxas
    // reports every kernel it compiled).
    for kernel in support::ALL {
        assert!(
            report.kernels.iter().any(|k| k.kernel == kernel),
            "{kernel}"
        );
    }
    for kernel in baselines::ALL {
        assert!(
            !report.kernels.iter().any(|k| k.kernel == kernel),
            "{kernel}"
        );
    }
    assert!(report.kernels.iter().any(|k| k.kernel == name));
    assert_eq!(
        KernelReport::from_json(&std::fs::read_to_string(&output.report_file).unwrap()).unwrap(),
        *report
    );

    // Nothing changed: the second build reuses the fatbin instead of compiling.
    let modified = || {
        std::fs::metadata(&output.fatbin)
            .unwrap()
            .modified()
            .unwrap()
    };
    let first = modified();
    let again = builder.build().unwrap();
    assert!(again.built());
    assert_eq!(modified(), first);
    assert_eq!(again.report.unwrap().kernels, report.kernels);
}
