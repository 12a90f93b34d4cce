//! Kernel names: every catalogue spec's name parses back to the spec, names are unique, and
//! malformed names (including the support and baseline kernels' names) are rejected.

use std::collections::HashSet;

use im2win_codegen::catalogue::{baselines, support};
use im2win_codegen::{Catalogue, DType, KernelSpec, SpecError};

#[test]
fn every_catalogue_name_round_trips() {
    let catalogue = Catalogue::default_catalogue();
    assert!(!catalogue.kernels.is_empty());
    for spec in &catalogue.kernels {
        let name = spec.name();
        assert_eq!(name.parse::<KernelSpec>(), Ok(*spec), "{name}");
        assert_eq!(catalogue.find(&name), Some(spec), "{name}");
        // A C identifier, so that it can be an `extern "C"` symbol.
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
    }
}

#[test]
fn warp_specialized_names_round_trip_and_count_their_threads() {
    // The cp.async ones (feature `tc-warp-specialized`) and the default catalogue's TMA ones.
    let copying = Catalogue::warp_specialized().kernels;
    let tma: Vec<KernelSpec> = Catalogue::default_catalogue()
        .kernels
        .into_iter()
        .filter(|spec| spec.variant.warp_specialized)
        .collect();
    assert_eq!(copying.len(), 12);
    assert!(copying.iter().all(|spec| !spec.variant.tma));
    assert_eq!(tma.len(), 20);
    // The opt-in TF32 ones (feature `tc-tf32-tma`): the 128-byte-row tiles.
    let tf32 = Catalogue::tf32_tma().kernels;
    assert_eq!(tf32.len(), 9);
    assert!(
        tf32.iter()
            .all(|spec| spec.dtype == DType::F32 && spec.tile.block_k == 32)
    );
    let tma: Vec<KernelSpec> = tma.into_iter().chain(tf32).collect();
    assert!(tma.iter().all(|spec| spec.variant.tma));
    for spec in copying.iter().chain(&tma) {
        let name = spec.name();
        assert!(name.contains("_wgmma_ws"), "{name}");
        assert_eq!(name.parse::<KernelSpec>(), Ok(*spec), "{name}");
        spec.validate().unwrap_or_else(|e| panic!("{name}: {e}"));
        // Two MMA warpgroups (one team of 8 warps, or two teams of 4) and the copying one.
        assert_eq!(spec.threads(), 384, "{name}");
        assert!(spec.is_persistent() && !spec.splits_reduction(), "{name}");
        // The staging (64 KiB for one team's 128 x 128 float sums; 2 x 32 KiB for two teams
        // within 227 KiB, or two teams' 128 x 64 sums), then as many stages as fit: 5 of
        // 128-byte rows for 128 filter rows and 128 pixels (160 KiB), 6 of 64 filter rows
        // (144 KiB), at most 6 of 64-byte rows; 16 bytes of barriers a stage.
        let row_bytes = u64::from(spec.tile.block_k) * spec.dtype.size_bytes() as u64;
        let stages = if spec.tile.block_m == 64 || row_bytes == 64 {
            6
        } else {
            5
        };
        assert_eq!(spec.stages(), stages, "{name}");
        let stage = (u64::from(spec.tile.block_m) + 128) * row_bytes;
        // With 64-byte rows four stages leave room for both teams' whole 64 KiB of sums.
        let staging = if row_bytes == 64 { 128 } else { 64 } * 1024;
        assert_eq!(
            spec.shared_bytes(),
            u64::from(stages) * (stage + 16) + staging,
            "{name}"
        );
    }
    assert!(
        "im2win_bf16_generic_b128x128x64_w128x32_fused_wgmma_ws_pingpong_nhwc"
            .parse::<KernelSpec>()
            .is_ok()
    );
    // A TF32 warpgroup kernel whose copies would not round its operands (cp.async): a name,
    // but no kernel.
    for name in [
        "im2win_tf32_generic_b128x128x32_w128x32_fused_wgmma_nhwc",
        "im2win_tf32_generic_b128x128x32_w128x32_fused_wgmma_ws_pingpong_nhwc",
    ] {
        let spec = name
            .parse::<KernelSpec>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(spec.validate().is_err(), "{name} is a valid kernel");
    }
    // Ping-pong without warp specialisation, or warp specialisation without wgmma: no kernel.
    for name in [
        "im2win_bf16_generic_b128x128x64_w128x32_fused_wgmma_pingpong_nhwc",
        "im2win_bf16_generic_b128x128x64_w64x64_fused_ws_nhwc",
    ] {
        let invalid = name
            .parse::<KernelSpec>()
            .map(|spec| spec.validate().is_err());
        assert!(invalid != Ok(false), "{name} is a valid kernel");
    }
}

#[test]
fn names_are_unique_and_distinct_from_support_and_baseline_kernels() {
    let catalogue = Catalogue::default_catalogue();
    let names: HashSet<String> = catalogue.kernels.iter().map(KernelSpec::name).collect();
    assert_eq!(names.len(), catalogue.kernels.len());
    let others: HashSet<&str> = support::ALL.into_iter().chain(baselines::ALL).collect();
    assert_eq!(
        others.len(),
        support::ALL.len() + baselines::ALL.len(),
        "a support and a baseline kernel share a name"
    );
    for other in others {
        assert!(!names.contains(other), "{other}");
        assert!(
            other.parse::<KernelSpec>().is_err(),
            "{other} parses as a spec"
        );
    }
}

#[test]
fn the_catalogue_survives_json() {
    let catalogue = Catalogue::default_catalogue();
    assert_eq!(
        Catalogue::from_json(&catalogue.to_json()).ok(),
        Some(catalogue.clone())
    );
    // Without baselines the JSON has no such key (as catalogues written before it), and a
    // catalogue without the key has none.
    assert!(!catalogue.to_json().contains("baselines"));
    let bench = Catalogue::ablation().with_baselines();
    assert!(bench.to_json().contains("\"baselines\": true"));
    assert_eq!(Catalogue::from_json(&bench.to_json()).ok(), Some(bench));
    let old = Catalogue::from_json("{\"kernels\": []}").unwrap();
    assert!(!old.baselines);
}

#[test]
fn only_a_catalogue_with_baselines_lists_them() {
    let default: Vec<&str> = Catalogue::default_catalogue().support_kernels().collect();
    assert_eq!(default, support::ALL);
    let bench: Vec<&str> = Catalogue::ablation()
        .with_baselines()
        .support_kernels()
        .collect();
    assert_eq!(bench[..support::ALL.len()], support::ALL);
    assert_eq!(bench[support::ALL.len()..], baselines::ALL);
}

#[test]
fn malformed_names_are_rejected() {
    let malformed = [
        "",
        "im2win",
        "im2win_",
        "im2win_f32",
        "IM2WIN_f32_r3s3_s1x1_b128x128x8_t8x8",
        "conv_f32_r3s3_s1x1_b128x128x8_t8x8",
        "im2win_f32_r3s3_s1x1_b128x128x8",
        "im2win_f32_r3s3_s1x1_b128x128x8_t8",
        "im2win_f32_r3s3_s1x1_b128x128_t8x8",
        "im2win_f32_r3s3_s1_b128x128x8_t8x8",
        "im2win_f32_r3_s1x1_b128x128x8_t8x8",
        "im2win_f32_rs3_s1x1_b128x128x8_t8x8",
        "im2win_f32_r3s3_1x1_b128x128x8_t8x8",
        "im2win_f32_r3s3_s1x1_128x128x8_t8x8",
        "im2win_f32_r3s3_s1x1_b128x128x8_8x8",
        "im2win_f32_r03s3_s1x1_b128x128x8_t8x8",
        "im2win_f32_r+3s3_s1x1_b128x128x8_t8x8",
        "im2win_f32_r3s3_s1x1_b128x128x8_t8x8x",
        "im2win_f32_r3s3_s1x1_b128x128x8_t8x8_",
        "im2win_f32_r3s3_s1x1_b128x128x8_t8x8_extra",
        "im2win_f32_r3s3_s1x1_b128x128x8_t8x8 ",
        " im2win_f32_r3s3_s1x1_b128x128x8_t8x8",
        "im2win_f32__r3s3_s1x1_b128x128x8_t8x8",
        "im2win_f32_generic",
        "im2win_f32_generic_b128x128x8",
        "im2win_f32_generic_s1x1_b128x128x8_t8x8",
        "im2win_f32_Generic_b128x128x8_t8x8",
        "im2win_f32_r3s3_s1x1_b99999999999x128x8_t8x8",
        "im2win_f32_r-3s3_s1x1_b128x128x8_t8x8",
    ];
    for name in malformed {
        assert!(
            matches!(name.parse::<KernelSpec>(), Err(SpecError::BadName(_))),
            "`{name}` was accepted"
        );
    }
    for name in [
        "im2win_f64_r3s3_s1x1_b128x128x8_t8x8",
        "im2win_i8_generic_b128x128x8_t8x8",
        "im2win_F32_generic_b128x128x8_t8x8",
        "im2win_tf16_generic_b128x128x8_t8x8",
    ] {
        assert!(
            matches!(name.parse::<KernelSpec>(), Err(SpecError::UnknownDType(_))),
            "`{name}`"
        );
    }
}
