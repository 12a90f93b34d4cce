//! Element types, precisions and maths: what each names in a kernel name, which
//! combinations a spec may have, and the shared memory a tile needs per element type.

use im2win_codegen::catalogue::support;
use im2win_codegen::{
    Catalogue, DType, FixedGeometry, KernelSpec, Layout, Math, Precision, SpecError, TileConfig,
    Variant, numeric_name, parse_numeric_name,
};

/// A tile that tensor-core kernels may use: 128×128 outputs, 16 deep (a multiple of both
/// MMA depths), 256 threads; 32 KiB of float32 in two stages.
const TC_TILE: TileConfig = TileConfig {
    block_m: 128,
    block_n: 128,
    block_k: 16,
    thread_m: 8,
    thread_n: 8,
};

/// Every valid tensor-core spec of both geometry kinds and both layouts, for each element
/// type and math.
fn tensor_op_specs() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for dtype in DType::ALL {
        for geometry in [
            KernelSpec::fixed(dtype, FixedGeometry::square(3, 1), TC_TILE),
            KernelSpec::generic(dtype, TC_TILE),
        ] {
            for layout in Layout::ALL {
                specs.push(
                    geometry
                        .with_math(Math::TensorOp)
                        .with_variant(Variant::FUSED)
                        .with_layout(layout),
                );
            }
        }
    }
    specs
}

#[test]
fn element_types_have_their_sizes_names_and_cuda_types() {
    let table = [
        (DType::F32, "f32", "float", 4),
        (DType::Bf16, "bf16", "__nv_bfloat16", 2),
        (DType::F16, "f16", "__half", 2),
    ];
    for (dtype, name, cuda, bytes) in table {
        assert_eq!(dtype.name(), name);
        assert_eq!(dtype.to_string(), name);
        assert_eq!(name.parse::<DType>(), Ok(dtype));
        assert_eq!(dtype.cuda_type(), cuda);
        assert_eq!(dtype.size_bytes(), bytes);
        assert_eq!(dtype.accumulator(), DType::F32, "{dtype}");
    }
    assert!(matches!(
        "tf32".parse::<DType>(),
        Err(SpecError::UnknownDType(_))
    ));
    assert_eq!(DType::default(), DType::F32);
    // JSON spells them as their names.
    assert_eq!(serde_json::to_string(&DType::Bf16).unwrap(), "\"bf16\"");
    assert_eq!(
        serde_json::from_str::<DType>("\"f16\"").unwrap(),
        DType::F16
    );
}

#[test]
fn numeric_names_are_a_bijection() {
    let mut seen = std::collections::HashSet::new();
    for dtype in DType::ALL {
        for math in Math::ALL {
            let token = numeric_name(dtype, math);
            assert!(seen.insert(token), "{token} twice");
            assert_eq!(parse_numeric_name(token), Some((dtype, math)), "{token}");
            assert!(token.chars().all(|c| c.is_ascii_alphanumeric()), "{token}");
        }
    }
    assert_eq!(numeric_name(DType::F32, Math::Simt), "f32");
    assert_eq!(numeric_name(DType::F32, Math::TensorOp), "tf32");
    assert_eq!(numeric_name(DType::Bf16, Math::TensorOp), "bf16");
    assert_eq!(numeric_name(DType::F16, Math::TensorOp), "f16");
    assert_eq!(parse_numeric_name("f64"), None);
}

#[test]
fn precisions_map_to_the_maths_that_honour_them() {
    // Strict float32 is CUDA-core arithmetic only: never a TF32 kernel.
    assert!(Precision::Strict.admits(DType::F32, Math::Simt));
    assert!(!Precision::Strict.admits(DType::F32, Math::TensorOp));
    assert!(Precision::Tf32.admits(DType::F32, Math::TensorOp));
    assert!(!Precision::Tf32.admits(DType::F32, Math::Simt));
    for dtype in [DType::Bf16, DType::F16] {
        assert!(Precision::Strict.admits(dtype, Math::TensorOp));
        assert!(!Precision::Tf32.applies_to(dtype));
        assert!(Math::ALL.iter().all(|&m| !Precision::Tf32.admits(dtype, m)));
        assert_eq!(Precision::Tf32.math(dtype), None);
    }
    assert_eq!(Precision::default(), Precision::Strict);
    // Names as the benchmark spells them, and back.
    let names = [
        ("f32", DType::F32, Precision::Strict),
        ("tf32", DType::F32, Precision::Tf32),
        ("bf16", DType::Bf16, Precision::Strict),
        ("f16", DType::F16, Precision::Strict),
    ];
    for (name, dtype, precision) in names {
        assert_eq!(precision.numeric_name(dtype), name);
        assert_eq!(Precision::from_numeric_name(name), Some((dtype, precision)));
        let math = precision.math(dtype).unwrap();
        assert!(precision.admits(dtype, math));
        assert_eq!(numeric_name(dtype, math), name);
    }
    assert_eq!(Precision::Tf32.numeric_name(DType::Bf16), "bf16+tf32");
    assert_eq!(Precision::from_numeric_name("bf16+tf32"), None);
    assert_eq!(Precision::from_numeric_name("f64"), None);
    assert_eq!("tf32".parse::<Precision>(), Ok(Precision::Tf32));
    assert!("fast".parse::<Precision>().is_err());
}

#[test]
fn existing_names_are_unchanged() {
    // Strict float32 kernels keep their names (tuning tables and results name them).
    let spec = KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), TileConfig::PAPER);
    assert_eq!(spec.math, Math::Simt);
    assert_eq!(spec.name(), "im2win_f32_r3s3_s1x1_b128x128x8_t8x8");
    let fused = spec.with_variant(Variant::FUSED).with_layout(Layout::Nhwc);
    assert_eq!(
        fused.name(),
        "im2win_f32_r3s3_s1x1_b128x128x8_t8x8_fused_nhwc"
    );
    assert_eq!(
        KernelSpec::generic(DType::F32, TileConfig::PAPER).name(),
        "im2win_f32_generic_b128x128x8_t8x8"
    );
    for spec in &Catalogue::default_catalogue().kernels {
        assert_eq!(spec.math, Math::Simt, "{spec}");
        assert_eq!(spec.dtype, DType::F32, "{spec}");
        assert!(spec.name().starts_with("im2win_f32_"), "{spec}");
    }
}

#[test]
fn tensor_op_names_round_trip() {
    let specs = tensor_op_specs();
    assert_eq!(specs.len(), 12);
    for spec in &specs {
        spec.validate().unwrap_or_else(|e| panic!("{spec}: {e}"));
        let name = spec.name();
        assert_eq!(name.parse::<KernelSpec>(), Ok(*spec), "{name}");
        assert!(
            name.starts_with(&format!("im2win_{}_", spec.numeric_name())),
            "{name}"
        );
    }
    let tf32 = KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), TC_TILE)
        .with_math(Math::TensorOp)
        .with_variant(Variant::FUSED)
        .with_layout(Layout::Nhwc);
    assert_eq!(
        tf32.name(),
        "im2win_tf32_r3s3_s1x1_b128x128x16_t8x8_fused_nhwc"
    );
    // The 16-bit constructors give their tensor-core fused kernel directly.
    let bf16 = KernelSpec::generic(DType::Bf16, TC_TILE);
    assert_eq!((bf16.math, bf16.variant), (Math::TensorOp, Variant::FUSED));
    assert_eq!(bf16.name(), "im2win_bf16_generic_b128x128x16_t8x8_fused");
    assert!(bf16.computes(DType::Bf16, Precision::Strict));
    assert!(!bf16.computes(DType::F16, Precision::Strict));
    assert!(tf32.computes(DType::F32, Precision::Tf32));
    assert!(!tf32.computes(DType::F32, Precision::Strict));
    // Invalid combinations still have a name that parses back (names are total).
    let simt_bf16 = bf16.with_math(Math::Simt);
    assert_eq!(simt_bf16.name().parse::<KernelSpec>(), Ok(simt_bf16));
    // Catalogues of them survive JSON, and a spec without `math` reads as SIMT.
    let catalogue = Catalogue::new(specs).unwrap();
    assert_eq!(
        Catalogue::from_json(&catalogue.to_json()).ok(),
        Some(catalogue)
    );
    let mut json =
        serde_json::to_value(KernelSpec::generic(DType::F32, TileConfig::PAPER)).unwrap();
    json.as_object_mut().unwrap().remove("math");
    let old: KernelSpec = serde_json::from_value(json).unwrap();
    assert_eq!(old.math, Math::Simt);
}

#[test]
fn only_sensible_combinations_validate() {
    let unsupported = |spec: KernelSpec| {
        assert!(
            matches!(spec.validate(), Err(SpecError::Unsupported(_))),
            "{spec} was accepted: {:?}",
            spec.validate()
        );
    };
    // bf16 and f16 need tensor cores.
    for dtype in [DType::Bf16, DType::F16] {
        unsupported(KernelSpec::generic(dtype, TC_TILE).with_math(Math::Simt));
    }
    // Tensor-core kernels gather their windows, complete, in either layout.
    let tf32 = KernelSpec::generic(DType::F32, TC_TILE).with_math(Math::TensorOp);
    unsupported(tf32);
    unsupported(KernelSpec::generic(DType::Bf16, TC_TILE).with_variant(Variant::MATERIALISED));
    let mut no_db = Variant::FUSED;
    no_db.double_buffering = false;
    unsupported(tf32.with_variant(no_db));
    tf32.with_variant(Variant::FUSED).validate().unwrap();
    // A stage is a whole number of MMAs deep: 8 for TF32, 16 for the 16-bit types.
    let shallow = TileConfig {
        block_k: 8,
        ..TC_TILE
    };
    KernelSpec::generic(DType::F32, shallow)
        .with_math(Math::TensorOp)
        .with_variant(Variant::FUSED)
        .validate()
        .unwrap();
    for dtype in [DType::Bf16, DType::F16] {
        let err = KernelSpec::generic(dtype, shallow).validate().unwrap_err();
        assert!(matches!(err, SpecError::InvalidTile(..)), "{err}");
        assert!(err.to_string().contains("multiple of 16"), "{err}");
    }
    // The SIMT NHWC interleave rule is the SIMT kernels' own.
    // 1024 threads, each copying one window element per stage: runs of 1 channel.
    let odd = TileConfig {
        block_m: 64,
        block_n: 64,
        block_k: 16,
        thread_m: 4,
        thread_n: 1,
    };
    assert!(
        KernelSpec::generic(DType::F32, odd)
            .with_variant(Variant::FUSED)
            .with_layout(Layout::Nhwc)
            .validate()
            .is_err()
    );
    KernelSpec::generic(DType::Bf16, odd)
        .with_layout(Layout::Nhwc)
        .validate()
        .unwrap();
}

#[test]
fn shared_memory_counts_the_element_size() {
    let t = TileConfig::PAPER;
    // Two stages of 8 × (128 + 128) elements.
    assert_eq!(t.shared_bytes(DType::F32), 16 * 1024);
    assert_eq!(t.shared_bytes(DType::Bf16), 8 * 1024);
    assert_eq!(t.shared_bytes(DType::F16), 8 * 1024);
    // 128×128×32 is 64 KiB of float32 (refused) and 32 KiB of bf16 (fine).
    let deep = TileConfig {
        block_k: 32,
        ..TC_TILE
    };
    let err = KernelSpec::generic(DType::F32, deep)
        .with_math(Math::TensorOp)
        .with_variant(Variant::FUSED)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("48 KiB"), "{err}");
    KernelSpec::generic(DType::Bf16, deep).validate().unwrap();
    assert!(deep.validate_for(DType::F32).is_err());
    deep.validate_for(DType::F16).unwrap();
    // `validate` accepts a tile that some element type can have.
    deep.validate().unwrap();
    let deeper = TileConfig {
        block_k: 64,
        ..TC_TILE
    };
    assert!(deeper.validate().is_err());
    let huge = TileConfig {
        block_m: u32::MAX,
        block_n: u32::MAX,
        block_k: u32::MAX,
        thread_m: 1,
        thread_n: 1,
    };
    assert_eq!(huge.shared_bytes(DType::F32), u64::MAX);
}

#[test]
fn simt_shared_memory_is_the_larger_of_main_loop_and_staged_output() {
    // 128×128×8: 16 KiB of stages; the epilogue stages 64 channels × 128 pixels of float
    // sums (32 KiB), in NHWC 128 pixels × (64 + 4) channels.
    let paper = KernelSpec::generic(DType::F32, TileConfig::PAPER).with_variant(Variant::FUSED);
    assert_eq!(paper.shared_bytes(), 32 * 1024);
    assert_eq!(paper.with_layout(Layout::Nhwc).shared_bytes(), 128 * 68 * 4);
    // 64×64×8 with one stage (the ablation's): 4 KiB of stages, 32 × 64 staged sums.
    let small = TileConfig {
        block_m: 64,
        block_n: 64,
        ..TileConfig::PAPER
    };
    let mut variant = Variant::MATERIALISED;
    variant.double_buffering = false;
    assert_eq!(
        KernelSpec::generic(DType::F32, small)
            .with_variant(variant)
            .shared_bytes(),
        32 * 64 * 4
    );
    // 256×128: a staged group of 128 channels × 128 pixels is 64 KiB, over the limit.
    let wide = TileConfig {
        block_m: 256,
        ..TileConfig::PAPER
    };
    let err = KernelSpec::generic(DType::F32, wide)
        .validate()
        .unwrap_err();
    assert!(err.to_string().contains("staged group"), "{err}");
}

#[test]
fn support_kernels_per_element_type() {
    assert_eq!(
        support::filter_transform(DType::F32, true),
        support::FILTER_TRANSFORM_FUSED_F32
    );
    assert_eq!(
        support::filter_transform(DType::F32, false),
        support::FILTER_TRANSFORM_F32
    );
    assert_eq!(support::split_reduce(DType::F32), support::SPLIT_REDUCE_F32);
    for dtype in [DType::Bf16, DType::F16] {
        for name in [
            support::filter_transform(dtype, true),
            support::split_reduce(dtype),
        ] {
            assert!(name.ends_with(dtype.name()), "{name}");
            assert!(name.parse::<KernelSpec>().is_err(), "{name}");
            // Only fatbins with kernels of the type hold them.
            assert!(!support::ALL.contains(&name), "{name}");
        }
    }
}
