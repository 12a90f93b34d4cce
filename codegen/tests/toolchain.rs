//! The nvcc driver's pure parts, which need no toolkit: the `IM2WIN_CUDA_ARCHS` syntax, the
//! ptxas report parser and the fatbin reader.

use im2win_codegen::fatbin::{self, ImageKind};
use im2win_codegen::nvcc::parse_ptxas_log;
use im2win_codegen::{CudaTargets, KernelResources};

fn targets(sass: &[u32], ptx: &[u32]) -> CudaTargets {
    CudaTargets {
        sass: sass.to_vec(),
        ptx: ptx.to_vec(),
    }
}

#[test]
fn target_lists_parse() {
    let cases = [
        ("80,90", targets(&[80, 90], &[90])),
        ("90", targets(&[90], &[90])),
        ("sm_90", targets(&[90], &[90])),
        (" 90 , 80 ;80", targets(&[80, 90], &[90])),
        ("80 90", targets(&[80, 90], &[90])),
        ("80,90,compute_80", targets(&[80, 90], &[80])),
        ("sm_90,compute_90", targets(&[90], &[90])),
        ("compute_90", targets(&[], &[90])),
        ("90,noptx", targets(&[90], &[])),
        (
            "100,120,compute_100,compute_120",
            targets(&[100, 120], &[100, 120]),
        ),
    ];
    for (text, expected) in cases {
        let parsed = CudaTargets::parse(text);
        assert_eq!(
            parsed.as_ref().ok(),
            Some(&expected),
            "`{text}`: {parsed:?}"
        );
        // The canonical spelling parses back to the same targets.
        let again = CudaTargets::parse(&expected.to_string());
        assert_eq!(again.ok(), Some(expected), "`{text}`");
    }
    assert_eq!(CudaTargets::default().to_string(), "sm_80,sm_90,compute_90");
    assert_eq!(
        CudaTargets::default().names(),
        ["sm_80", "sm_90", "compute_90"]
    );
}

#[test]
fn bad_target_lists_are_rejected() {
    for text in [
        "",
        ",",
        "noptx",
        "sm90",
        "90a",
        "sm_",
        "compute_",
        "9",
        "x86",
        "80,ptx",
        "compute_90,noptx",
        "-90",
    ] {
        assert!(CudaTargets::parse(text).is_err(), "`{text}` was accepted");
    }
}

const PTXAS_LOG: &str = "\
ptxas info    : 0 bytes gmem
ptxas info    : Compiling entry function 'im2win_f32_generic_b128x128x8_t8x8' for 'sm_90'
ptxas info    : Function properties for im2win_f32_generic_b128x128x8_t8x8
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers, 16896 bytes smem
ptxas info    : Compiling entry function 'im2win_input_transform_f32' for 'sm_90'
ptxas info    : Function properties for some_device_function
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Function properties for im2win_input_transform_f32
    24 bytes stack frame, 16 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 34 registers, used 0 barriers, 472 bytes cmem[0]
ptxas info    : Compiling entry function 'im2win_f32_generic_b128x128x8_t8x8' for 'sm_80'
ptxas info    : Function properties for im2win_f32_generic_b128x128x8_t8x8
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 122 registers, 16896 bytes smem, 400 bytes cmem[0]
nvcc warning : something unrelated
";

#[test]
fn ptxas_reports_parse() {
    let resources = parse_ptxas_log(PTXAS_LOG);
    let entry =
        |kernel: &str, arch: &str, registers, shared_bytes, spill: [u32; 3]| KernelResources {
            kernel: kernel.to_string(),
            arch: arch.to_string(),
            registers,
            shared_bytes,
            stack_bytes: spill[0],
            spill_store_bytes: spill[1],
            spill_load_bytes: spill[2],
        };
    let generic = "im2win_f32_generic_b128x128x8_t8x8";
    assert_eq!(
        resources,
        [
            entry(generic, "sm_80", 122, 16896, [0, 0, 0]),
            entry(generic, "sm_90", 128, 16896, [0, 0, 0]),
            // The device function's block is not the kernel's.
            entry("im2win_input_transform_f32", "sm_90", 34, 0, [24, 16, 12]),
        ]
    );
    assert!(!resources[0].spills());
    assert!(resources[2].spills());
    assert!(parse_ptxas_log("").is_empty());
}

/// A fatbin with the given images, laid out as nvcc's `fatbinary` writes them.
fn fake_fatbin(images: &[(u16, u32, u64, &[u8])]) -> Vec<u8> {
    let mut entries = Vec::new();
    for &(kind, arch, flags, payload) in images {
        let mut header = vec![0u8; 64];
        header[0..2].copy_from_slice(&kind.to_le_bytes());
        header[4..8].copy_from_slice(&64u32.to_le_bytes());
        header[8..16].copy_from_slice(&(payload.len() as u64).to_le_bytes());
        header[28..32].copy_from_slice(&arch.to_le_bytes());
        header[40..48].copy_from_slice(&flags.to_le_bytes());
        entries.extend(header);
        entries.extend(payload);
    }
    let mut bytes = Vec::new();
    bytes.extend(0xBA55_ED50u32.to_le_bytes());
    bytes.extend(1u16.to_le_bytes());
    bytes.extend(16u16.to_le_bytes());
    bytes.extend((entries.len() as u64).to_le_bytes());
    bytes.extend(entries);
    bytes
}

#[test]
fn fatbin_contents_are_listed_and_checked() -> Result<(), fatbin::FatbinError> {
    let elf: &[u8] = b"\x7fELF....\0.text.k_one\0.text.k_two\0.nv.info.k_two\0";
    let ptx: &[u8] = b".visible .entry k_one(\n.param .u64 a\n)\n.visible .entry k_two(\n";
    let partial_elf: &[u8] = b"\x7fELF\0.text.k_one\0.text.k_one_more\0";
    let bytes = fake_fatbin(&[
        (2, 80, 0x11, partial_elf),
        (2, 90, 0x11, elf),
        (1, 90, 0x11, ptx),
    ]);
    let images = fatbin::images(&bytes)?;
    let listed: Vec<(ImageKind, String)> = images.iter().map(|i| (i.kind, i.target())).collect();
    assert_eq!(
        listed,
        [
            (ImageKind::Sass, "sm_80".to_string()),
            (ImageKind::Sass, "sm_90".to_string()),
            (ImageKind::Ptx, "compute_90".to_string()),
        ]
    );
    assert_eq!(images[1].defines("k_two"), Some(true));
    assert_eq!(images[2].defines("k_two"), Some(true));
    // `.text.k_one_more` is not `.text.k_two`, nor does it make `k_one_mo` defined.
    assert_eq!(images[0].defines("k_two"), Some(false));
    assert_eq!(images[0].defines("k_one_mo"), Some(false));

    let kernels = ["k_one", "k_two"];
    let complete = fatbin::missing(&bytes, &["sm_90", "compute_90"], &kernels)?;
    assert!(complete.is_empty(), "{complete:?}");
    let problems = fatbin::missing(&bytes, &["sm_80", "sm_100"], &kernels)?;
    assert_eq!(problems, ["sm_80 image lacks `k_two`", "no sm_100 image"]);

    // A compressed image cannot be checked, and says so.
    let compressed = fake_fatbin(&[(1, 90, 0x8011, b"(\xb5/\xfd...")]);
    assert_eq!(fatbin::images(&compressed)?[0].defines("k_one"), None);
    assert_eq!(
        fatbin::missing(&compressed, &["compute_90"], &["k_one"])?,
        ["compute_90 image is compressed, cannot check"]
    );
    Ok(())
}

#[test]
fn broken_fatbins_are_errors_not_panics() {
    let good = fake_fatbin(&[(2, 90, 0, b"\x7fELF\0.text.k\0")]);
    assert!(fatbin::images(b"not a fatbin at all").is_err());
    assert!(fatbin::images(&good[..10]).is_err());
    assert!(fatbin::images(&good[..good.len() - 1]).is_err());
    let mut lying = good.clone();
    lying[24..32].copy_from_slice(&u64::MAX.to_le_bytes()); // payload size of the entry
    assert!(fatbin::images(&lying).is_err());
    // Trailing zero padding is not another container.
    let mut padded = good.clone();
    padded.extend([0u8; 8]);
    assert_eq!(fatbin::images(&padded).map(|i| i.len()), Ok(1));
    assert_eq!(fatbin::images(&[]).map(|i| i.len()), Ok(0));
}
