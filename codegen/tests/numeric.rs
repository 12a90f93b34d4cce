//! Element types, precisions and maths: what each names in a kernel name, which
//! combinations a spec may have, and the shared memory a tile needs per element type.

use im2win_codegen::catalogue::{TENSOR_OP_128X64_R64, support};
use im2win_codegen::{
    Catalogue, DType, FixedGeometry, Geometry, KernelSpec, Layout, Math, Precision, SpecError,
    TileConfig, Variant, numeric_name, parse_numeric_name,
};

/// The tensor-core tile of 128 pixels × 64 channels, 2 × 2 warps of 64 × 32, 64-byte rows,
/// in the element size of `dtype` (32 bf16 / f16 elements or 16 floats a row).
fn tc_tile(dtype: DType) -> TileConfig {
    TENSOR_OP_128X64_R64.tile(dtype)
}

/// Every kind of tensor-core spec: both geometry kinds, both loaders, for each element type
/// (float32 meaning TF32).
fn tensor_op_specs() -> Vec<KernelSpec> {
    let mut specs = Vec::new();
    for dtype in DType::ALL {
        for geometry in [
            Geometry::Fixed(FixedGeometry::square(3, 1)),
            Geometry::Generic,
        ] {
            for vector in [true, false] {
                specs.push(KernelSpec::tensor_op(
                    dtype,
                    geometry,
                    tc_tile(dtype),
                    vector,
                ));
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
    assert_eq!(numeric_name(DType::F32, Math::TensorOpFastF32), "f32x3");
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
    // FP32 accuracy: forced 3xTF32 (`f32x3`) and dispatch's choice (`f32acc`, no one math).
    assert_eq!(Precision::F32x3.numeric_name(DType::F32), "f32x3");
    assert_eq!(
        Precision::from_numeric_name("f32x3"),
        Some((DType::F32, Precision::F32x3))
    );
    assert_eq!(
        Precision::F32x3.math(DType::F32),
        Some(Math::TensorOpFastF32)
    );
    assert_eq!(Precision::Accurate.numeric_name(DType::F32), "f32acc");
    assert_eq!(
        Precision::from_numeric_name("f32acc"),
        Some((DType::F32, Precision::Accurate))
    );
    assert_eq!(Precision::Accurate.math(DType::F32), None);
    assert!(Precision::Accurate.admits(DType::F32, Math::Simt));
    assert!(Precision::Accurate.admits(DType::F32, Math::TensorOpFastF32));
    assert!(!Precision::Accurate.admits(DType::F32, Math::TensorOp));
    assert!(!Precision::F32x3.admits(DType::F32, Math::Simt));
    assert!(!Precision::Strict.admits(DType::F32, Math::TensorOpFastF32));
    for dtype in [DType::Bf16, DType::F16] {
        for precision in [Precision::F32x3, Precision::Accurate] {
            assert!(!precision.applies_to(dtype));
            assert!(Math::ALL.iter().all(|&m| !precision.admits(dtype, m)));
        }
        assert!(!Precision::Strict.admits(dtype, Math::TensorOpFastF32));
    }
    assert_eq!(Precision::F32x3.numeric_name(DType::Bf16), "bf16+f32x3");
    assert_eq!("f32x3".parse::<Precision>(), Ok(Precision::F32x3));
    assert_eq!("accurate".parse::<Precision>(), Ok(Precision::Accurate));
    assert_eq!(
        serde_json::to_string(&Precision::F32x3).unwrap(),
        "\"f32x3\""
    );
    assert_eq!(
        serde_json::to_string(&Precision::Accurate).unwrap(),
        "\"accurate\""
    );
    // Every precision's numeric name is distinct.
    let mut names = std::collections::HashSet::new();
    for dtype in DType::ALL {
        for precision in Precision::ALL {
            assert!(
                names.insert(precision.numeric_name(dtype)),
                "{precision} {dtype}"
            );
        }
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
    for spec in &Catalogue::default_f32().kernels {
        assert_eq!(spec.math, Math::Simt, "{spec}");
        assert_eq!(spec.dtype, DType::F32, "{spec}");
        assert!(spec.name().starts_with("im2win_f32_"), "{spec}");
        assert!(spec.name().contains("_t"), "{spec}");
    }
    // The default catalogue is the float32 one, then the grouped family (FP32 math on CUDA
    // cores, every type) and the tensor-core kernels.
    let default = Catalogue::default_catalogue();
    let f32_len = Catalogue::default_f32().kernels.len();
    assert_eq!(
        default.kernels[..f32_len],
        Catalogue::default_f32().kernels[..]
    );
    assert!(
        default.kernels[f32_len..]
            .iter()
            .all(|k| k.math.is_tensor_op() || k.is_grouped())
    );
}

/// The 3xTF32 kernels (issue 14): their name, precisions, validation and catalogue.
#[test]
fn f32x3_kernels_are_named_checked_and_catalogued() {
    let tile = tc_tile(DType::F32);
    let spec = KernelSpec::tensor_op_fast_f32(Geometry::Generic, tile, true);
    assert_eq!(spec.math, Math::TensorOpFastF32);
    assert!(spec.math.is_tensor_op());
    assert_eq!(spec.numeric_name(), "f32x3");
    assert_eq!(
        spec.name(),
        "im2win_f32x3_generic_b64x128x16_w32x64_fused_nhwc"
    );
    assert_eq!(spec.name().parse::<KernelSpec>(), Ok(spec));
    let novec =
        KernelSpec::tensor_op_fast_f32(Geometry::Fixed(FixedGeometry::square(3, 1)), tile, false);
    assert_eq!(
        novec.name(),
        "im2win_f32x3_r3s3_s1x1_b64x128x16_w32x64_fused_novec_nhwc"
    );
    assert_eq!(novec.name().parse::<KernelSpec>(), Ok(novec));
    // The same as the TF32 kernel in everything but the math operator.
    let tf32 = KernelSpec::tensor_op(DType::F32, Geometry::Generic, tile, true);
    assert_eq!(spec.with_math(Math::TensorOp), tf32);
    assert_eq!(
        (spec.threads(), spec.stages(), spec.shared_bytes()),
        (tf32.threads(), tf32.stages(), tf32.shared_bytes())
    );
    assert_eq!(spec.channel_multiple(), 4);
    assert!(spec.needs_aligned_operands() && spec.is_complete());
    // One block per SM promised (two fit by use): the fragments need up to 255 registers.
    assert_eq!(spec.min_blocks_per_sm(), 1);
    assert_eq!(tf32.min_blocks_per_sm(), 3);
    // Which problems it computes: f32x3 and FP32 accuracy, never strict or TF32.
    assert!(spec.computes(DType::F32, Precision::F32x3));
    assert!(spec.computes(DType::F32, Precision::Accurate));
    assert!(!spec.computes(DType::F32, Precision::Strict));
    assert!(!spec.computes(DType::F32, Precision::Tf32));
    assert!(!tf32.computes(DType::F32, Precision::F32x3));
    assert!(!tf32.computes(DType::F32, Precision::Accurate));
    let strict = KernelSpec::generic(DType::F32, TileConfig::PAPER);
    assert!(strict.computes(DType::F32, Precision::Accurate));
    assert!(!strict.computes(DType::F32, Precision::F32x3));
    // Float32 and the warp MMA only.
    for wrong in [
        KernelSpec::tensor_op(DType::Bf16, Geometry::Generic, tc_tile(DType::Bf16), true)
            .with_math(Math::TensorOpFastF32),
        KernelSpec::tensor_op_warpgroup(
            DType::F32,
            Geometry::Generic,
            im2win_codegen::catalogue::WARPGROUP_128X128_R128.tile(DType::F32),
        )
        .with_math(Math::TensorOpFastF32),
        spec.with_variant(Variant::MATERIALISED),
    ] {
        assert!(
            matches!(wrong.validate(), Err(SpecError::Unsupported(_))),
            "{wrong} was accepted"
        );
    }
    // JSON: the math has its own name; older JSON without `math` still reads as SIMT.
    let json = serde_json::to_value(spec).unwrap();
    assert_eq!(json["math"], "tensor_op_fast_f32");
    assert_eq!(serde_json::from_value::<KernelSpec>(json).unwrap(), spec);
    // The default catalogue: the six kernels of TENSOR_OP_FAST_F32_KERNELS after the TF32
    // ones, all valid, on the 128 x 64 tile, generic, 1x1 and 3x3 stride 1.
    let fast = Catalogue::fast_f32_kernels();
    assert_eq!(fast.len(), 6);
    let default = Catalogue::default_catalogue();
    for spec in &fast {
        spec.validate().unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert!(default.kernels.contains(spec), "{spec}");
        assert_eq!((spec.tile.block_m, spec.tile.block_n), (64, 128), "{spec}");
        assert!(spec.name().starts_with("im2win_f32x3_"), "{spec}");
    }
    assert!(fast.iter().any(|s| !s.variant.vector_loads));
    assert!(fast.iter().any(|s| s.geometry == Geometry::Generic));
    // Without the float32 tensor-core family, no 3xTF32 kernels either.
    let without = Catalogue::default_for(&[DType::Bf16]);
    assert!(
        without
            .kernels
            .iter()
            .all(|k| k.math != Math::TensorOpFastF32)
    );
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
        // The warp tile is spelled with `w`, and the names end in NHWC.
        assert!(name.contains("_w32x64_fused"), "{name}");
        assert!(name.ends_with("_nhwc"), "{name}");
        assert_eq!(
            name.contains("_novec"),
            !spec.variant.vector_loads,
            "{name}"
        );
    }
    let tf32 = KernelSpec::tensor_op(
        DType::F32,
        Geometry::Fixed(FixedGeometry::square(3, 1)),
        tc_tile(DType::F32),
        true,
    );
    assert_eq!(
        tf32.name(),
        "im2win_tf32_r3s3_s1x1_b64x128x16_w32x64_fused_nhwc"
    );
    // The same thing built from a float32 spec.
    assert_eq!(
        KernelSpec::fixed(DType::F32, FixedGeometry::square(3, 1), tc_tile(DType::F32))
            .with_math(Math::TensorOp)
            .with_variant(Variant::FUSED)
            .with_layout(Layout::Nhwc),
        tf32
    );
    // The 16-bit constructors give their tensor-core kernel (NHWC, vector loads) directly.
    let bf16 = KernelSpec::generic(DType::Bf16, tc_tile(DType::Bf16));
    assert_eq!(
        (bf16.math, bf16.variant, bf16.layout),
        (Math::TensorOp, Variant::FUSED, Layout::Nhwc)
    );
    assert_eq!(
        bf16.name(),
        "im2win_bf16_generic_b64x128x32_w32x64_fused_nhwc"
    );
    assert_eq!(
        KernelSpec::tensor_op(DType::F16, Geometry::Generic, tc_tile(DType::F16), false).name(),
        "im2win_f16_generic_b64x128x32_w32x64_fused_novec_nhwc"
    );
    assert!(bf16.computes(DType::Bf16, Precision::Strict));
    assert!(!bf16.computes(DType::F16, Precision::Strict));
    assert!(tf32.computes(DType::F32, Precision::Tf32));
    assert!(!tf32.computes(DType::F32, Precision::Strict));
    // The letter before the lower tile level follows the math: `t` for SIMT, `w` for tensor
    // cores; the other spelling is no name.
    for wrong in [
        "im2win_bf16_generic_b64x128x32_t32x64_fused_nhwc",
        "im2win_f32_generic_b128x128x8_w8x8",
        "im2win_tf32_r3s3_s1x1_b64x128x16_t32x64_fused_nhwc",
    ] {
        assert!(
            matches!(wrong.parse::<KernelSpec>(), Err(SpecError::BadName(_))),
            "{wrong}"
        );
    }
    // Invalid combinations still have a name that parses back (names are total).
    let simt_bf16 = bf16.with_math(Math::Simt);
    assert_eq!(simt_bf16.name().parse::<KernelSpec>(), Ok(simt_bf16));
    let nchw = bf16.with_layout(Layout::Nchw);
    assert_eq!(nchw.name().parse::<KernelSpec>(), Ok(nchw));
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
        unsupported(KernelSpec::generic(dtype, TileConfig::PAPER).with_math(Math::Simt));
    }
    // Tensor-core kernels gather their windows, with the multistage pipeline, from NHWC
    // tensors; the vector loads are theirs to choose.
    let tf32 = KernelSpec::tensor_op(DType::F32, Geometry::Generic, tc_tile(DType::F32), true);
    tf32.validate().unwrap();
    unsupported(tf32.with_variant(Variant::MATERIALISED));
    unsupported(tf32.with_layout(Layout::Nchw));
    let mut no_db = Variant::FUSED;
    no_db.double_buffering = false;
    unsupported(tf32.with_variant(no_db));
    let mut no_micro = Variant::FUSED;
    no_micro.micro_kernel = false;
    unsupported(tf32.with_variant(no_micro));
    let mut no_vec = Variant::FUSED;
    no_vec.vector_loads = false;
    tf32.with_variant(no_vec).validate().unwrap();
    assert!(tf32.with_variant(no_vec).is_complete());
    assert!(tf32.is_complete());
    // A SIMT kernel without vector loads is the ablation's, not a complete kernel.
    let ablation = KernelSpec::generic(DType::F32, TileConfig::PAPER).with_variant(no_vec);
    ablation.validate().unwrap();
    assert!(!ablation.is_complete());
    // A stage is a whole number of MMAs deep: 8 floats for TF32, 16 elements for the 16-bit
    // types (32 bytes, one k-step, either way).
    let shallow = TileConfig {
        block_k: 8,
        ..tc_tile(DType::Bf16)
    };
    KernelSpec::tensor_op(DType::F32, Geometry::Generic, shallow, true)
        .validate()
        .unwrap();
    for dtype in [DType::Bf16, DType::F16] {
        let err = KernelSpec::generic(dtype, shallow).validate().unwrap_err();
        assert!(matches!(err, SpecError::InvalidTile(..)), "{err}");
        assert!(err.to_string().contains("multiple of 16"), "{err}");
    }
    // A SIMT tile is no tensor-core tile: 8×8 is no whole 16×16 warp piece.
    let err = KernelSpec::generic(
        DType::Bf16,
        TileConfig {
            block_k: 16,
            ..TileConfig::PAPER
        },
    )
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("multiples of 16"), "{err}");
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
}

#[test]
fn tensor_op_tiles_follow_the_template_rules() {
    let valid = |tile: TileConfig, dtype: DType| tile.validate_tensor_op(dtype);
    for dtype in DType::ALL {
        for tile in im2win_codegen::catalogue::TENSOR_OP_TILES {
            valid(tile.tile(dtype), dtype).unwrap();
        }
    }
    let base = tc_tile(DType::Bf16);
    let refused = [
        // The warp tile does not divide the block.
        (
            TileConfig {
                thread_m: 48,
                ..base
            },
            "divide",
        ),
        // Warp tiles of whole 16 × 16 pieces.
        (
            TileConfig {
                block_m: 64,
                thread_m: 8,
                ..base
            },
            "multiples of 16",
        ),
        // 48-byte rows.
        (
            TileConfig {
                block_k: 24,
                ..base
            },
            "32, 64 or 128 bytes",
        ),
        // 256-byte rows.
        (
            TileConfig {
                block_k: 128,
                ..base
            },
            "32, 64 or 128 bytes",
        ),
        // 64 warps.
        (
            TileConfig {
                block_m: 256,
                block_n: 512,
                thread_m: 16,
                thread_n: 64,
                ..base
            },
            "warps",
        ),
        // 128 threads copy 32 rows of 64 bytes a pass: 16 channels leave half a pass.
        (
            TileConfig {
                block_m: 16,
                thread_m: 16,
                block_n: 512,
                thread_n: 128,
                ..base
            },
            "whole rows",
        ),
        // 256 pixels × 256 channels × 128-byte rows × 3 stages: 192 KiB.
        (
            TileConfig {
                block_m: 256,
                block_n: 256,
                block_k: 64,
                thread_m: 64,
                thread_n: 128,
            },
            "shared memory",
        ),
    ];
    for (tile, why) in refused {
        let err = valid(tile, DType::Bf16).unwrap_err();
        assert!(matches!(err, SpecError::InvalidTile(..)), "{tile:?}: {err}");
        assert!(err.to_string().contains(why), "{tile:?}: {err}");
    }
    // `TileConfig::validate` (the macro's and the manifest's parse) takes a tile that either
    // math can have, and names both reasons when neither can.
    base.validate().unwrap();
    TileConfig::PAPER.validate().unwrap();
    let err = TileConfig {
        block_k: 24,
        ..base
    }
    .validate()
    .unwrap_err();
    assert!(err.to_string().contains("CUDA-core"), "{err}");
    assert!(err.to_string().contains("tensor-core"), "{err}");
    assert_eq!(
        "64x128x32/32x64".parse::<TileConfig>(),
        Ok(base),
        "the macro's spelling"
    );
    assert_eq!("b64x128x32_w32x64".parse::<TileConfig>(), Ok(base));
    assert_eq!(base.name_for(Math::TensorOp), "b64x128x32_w32x64");
    assert_eq!(base.name_for(Math::Simt), "b64x128x32_t32x64");
}

#[test]
fn tensor_op_kernels_count_what_the_template_declares() {
    // Threads, stages and shared memory as `TensorOpTileShape` counts them
    // (scripts/tc/NOTES.md's table), for each element type.
    use im2win_codegen::catalogue::{
        TENSOR_OP_128X64_R64, TENSOR_OP_128X64_R128, TENSOR_OP_128X96_R64, TENSOR_OP_128X128_R64,
        TENSOR_OP_128X128_R128,
    };
    let table = [
        (TENSOR_OP_128X128_R64, 4, 64 * 1024),
        (TENSOR_OP_128X64_R64, 4, 48 * 1024),
        (TENSOR_OP_128X128_R128, 3, 96 * 1024),
        (TENSOR_OP_128X64_R128, 3, 72 * 1024),
        (TENSOR_OP_128X96_R64, 4, 56 * 1024),
    ];
    for dtype in DType::ALL {
        for (tile, stages, bytes) in table {
            let spec = KernelSpec::tensor_op(dtype, Geometry::Generic, tile.tile(dtype), true);
            spec.validate().unwrap();
            assert_eq!(spec.threads(), 128, "{spec}");
            assert_eq!(spec.stages(), stages, "{spec}");
            assert_eq!(spec.shared_bytes(), bytes, "{spec}");
            assert_eq!(spec.dynamic_shared_bytes(), bytes, "{spec}");
            // The 128 x 64 tile with 64-byte rows asks for three blocks per SM (168 registers).
            let three = tile == TENSOR_OP_128X64_R64;
            assert_eq!(
                spec.min_blocks_per_sm(),
                if three { 3 } else { 1 },
                "{spec}"
            );
            assert_eq!(
                spec.max_registers(),
                if three { 170 } else { 255 },
                "{spec}"
            );
            assert_eq!(spec.channel_multiple(), 16 / dtype.size_bytes(), "{spec}");
            assert!(spec.needs_aligned_operands(), "{spec}");
            let any = KernelSpec::tensor_op(dtype, Geometry::Generic, tile.tile(dtype), false);
            assert_eq!(any.channel_multiple(), 1, "{any}");
            assert!(!any.needs_aligned_operands(), "{any}");
        }
    }
    // SIMT kernels: static shared memory, their tile's threads and launch bounds.
    let simt = KernelSpec::generic(DType::F32, TileConfig::PAPER);
    assert_eq!(simt.threads(), TileConfig::PAPER.threads());
    assert_eq!(simt.stages(), 2);
    assert_eq!(simt.dynamic_shared_bytes(), 0);
    assert_eq!(
        simt.min_blocks_per_sm(),
        TileConfig::PAPER.min_blocks_per_sm()
    );
    assert_eq!(simt.channel_multiple(), 1);
    assert!(!simt.needs_aligned_operands());
}

#[test]
fn the_default_tensor_op_kernels() {
    use im2win_codegen::catalogue::{
        TENSOR_OP_KERNELS, TENSOR_OP_TYPES, TENSOR_OP_WARPGROUP_KERNELS, TMA_KERNELS,
    };
    let catalogue = Catalogue::default_catalogue();
    let tensor_op: Vec<&KernelSpec> = catalogue
        .kernels
        .iter()
        .filter(|k| k.math == Math::TensorOp)
        .collect();
    // Warp-MMA kernels for every type, warpgroup-MMA ones (multistage and TMA) for bf16 and
    // f16.
    let warpgroup = TENSOR_OP_WARPGROUP_KERNELS.len() + TMA_KERNELS.len();
    assert_eq!(tensor_op.len(), 3 * TENSOR_OP_KERNELS.len() + 2 * warpgroup);
    for dtype in TENSOR_OP_TYPES {
        let of_type: Vec<&&KernelSpec> = tensor_op.iter().filter(|k| k.dtype == dtype).collect();
        let wgmma = if dtype == DType::F32 { 0 } else { warpgroup };
        assert_eq!(of_type.len(), TENSOR_OP_KERNELS.len() + wgmma, "{dtype}");
        assert_eq!(
            of_type.iter().filter(|k| k.variant.warpgroup).count(),
            wgmma,
            "{dtype}"
        );
        // Every problem has a kernel: a generic one of each loader.
        for vector in [true, false] {
            assert!(
                of_type
                    .iter()
                    .any(|k| k.geometry == Geometry::Generic && k.variant.vector_loads == vector),
                "{dtype}: no generic kernel with vector loads {vector}"
            );
        }
    }
    for spec in &tensor_op {
        spec.validate().unwrap_or_else(|e| panic!("{spec}: {e}"));
        assert_eq!(spec.layout, Layout::Nhwc, "{spec}");
        assert!(spec.is_complete(), "{spec}");
    }
    // The geometries the brief names: 1×1/1, 3×3/1, 3×3/2, 7×7/2, 11×11/4 and generic.
    let geometries: std::collections::BTreeSet<Geometry> =
        tensor_op.iter().map(|k| k.geometry).collect();
    assert_eq!(geometries.len(), 6, "{geometries:?}");
    // Without some tensor-core types: the float32 kernels and the rest, in the order given.
    let bf16_only = Catalogue::default_for(&[DType::Bf16, DType::Bf16]);
    let grouped = Catalogue::grouped_kernels(DType::F32).len();
    assert_eq!(
        bf16_only.kernels.len(),
        Catalogue::default_f32().kernels.len() + TENSOR_OP_KERNELS.len() + warpgroup + 2 * grouped
    );
    assert!(
        bf16_only
            .kernels
            .iter()
            .all(|k| (k.math == Math::Simt && k.dtype == DType::F32) || k.dtype == DType::Bf16)
    );
    // Without tensor-core types: the float32 kernels and the float32 grouped family.
    let mut f32_only = Catalogue::default_f32();
    f32_only
        .kernels
        .extend(Catalogue::grouped_kernels(DType::F32));
    assert_eq!(Catalogue::default_for(&[]), f32_only);
    assert_eq!(Catalogue::default_for(&TENSOR_OP_TYPES), catalogue);
}

#[test]
fn shared_memory_counts_the_element_size() {
    let t = TileConfig::PAPER;
    // Two stages of 8 × (128 + 128) elements.
    assert_eq!(t.shared_bytes(DType::F32), 16 * 1024);
    assert_eq!(t.shared_bytes(DType::Bf16), 8 * 1024);
    assert_eq!(t.shared_bytes(DType::F16), 8 * 1024);
    // A SIMT tile: 128×128×32 is 64 KiB of float32 (refused) and 32 KiB of 2-byte
    // elements (accepted by `validate_for`, which counts shared memory only).
    let deep = TileConfig {
        block_k: 32,
        ..TileConfig::PAPER
    };
    assert!(deep.validate_for(DType::F32).is_err());
    deep.validate_for(DType::F16).unwrap();
    deep.validate().unwrap();
    let deeper = TileConfig {
        block_k: 64,
        ..TileConfig::PAPER
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
    // A tensor-core tile counts the element size through its rows: 16 floats and 32 bf16
    // are the same 64 bytes.
    let tf32 = KernelSpec::tensor_op(DType::F32, Geometry::Generic, tc_tile(DType::F32), true);
    let bf16 = KernelSpec::tensor_op(DType::Bf16, Geometry::Generic, tc_tile(DType::Bf16), true);
    assert_eq!(tf32.shared_bytes(), bf16.shared_bytes());
    assert_eq!(
        KernelSpec::tensor_op(DType::F32, Geometry::Generic, tc_tile(DType::Bf16), true)
            .shared_bytes(),
        3 * 192 * 128,
        "32 floats are 128-byte rows: 3 stages"
    );
    assert_eq!(
        KernelSpec::tensor_op(DType::F32, Geometry::Generic, huge, true).shared_bytes(),
        u64::MAX
    );
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
        let transform = support::filter_transform(dtype, true);
        let reduce = support::split_reduce(dtype);
        for name in [transform, reduce] {
            assert!(name.ends_with(dtype.name()), "{name}");
            assert!(name.parse::<KernelSpec>().is_err(), "{name}");
        }
        // No fatbin holds the filter transform (the tensor-core kernels read the filter in
        // place); every fatbin holds the reduction (they split small grids).
        assert!(!support::ALL.contains(&transform), "{transform}");
        assert!(support::ALL.contains(&reduce), "{reduce}");
    }
}
