//! Rendering: every template renders for every catalogue spec and for unusual specs, the output
//! defines exactly the expected `extern "C"` kernels, and no template syntax leaks into CUDA.

use std::collections::BTreeSet;

mod common;

use im2win_codegen::abi;
use im2win_codegen::catalogue::{baselines, support};
use im2win_codegen::render::{self, COMMON_HEADER, HEADER_FILE, RenderError, Renderer};
use im2win_codegen::{Catalogue, DType, FixedGeometry, KernelSpec, Math, TileConfig};

fn tile(block_m: u32, block_n: u32, block_k: u32, thread_m: u32, thread_n: u32) -> TileConfig {
    TileConfig {
        block_m,
        block_n,
        block_k,
        thread_m,
        thread_n,
    }
}

/// Specs the default catalogue does not hold: non-square filters, unequal strides, generic
/// kernels and fixed ones with other tiles, thread tiles that are not multiples of 4.
fn unusual_specs() -> Vec<KernelSpec> {
    let rect = |filter_h, filter_w, stride_h, stride_w| FixedGeometry {
        filter_h,
        filter_w,
        stride_h,
        stride_w,
    };
    vec![
        KernelSpec::fixed(DType::F32, rect(3, 5, 1, 2), TileConfig::PAPER),
        KernelSpec::fixed(DType::F32, rect(1, 7, 2, 1), tile(64, 64, 8, 4, 4)),
        KernelSpec::fixed(DType::F32, rect(7, 1, 1, 1), tile(48, 32, 16, 3, 2)),
        KernelSpec::generic(DType::F32, tile(64, 64, 12, 4, 4)),
        KernelSpec::generic(DType::F32, tile(64, 32, 4, 8, 8)),
        // 512 threads (256 x 128 was this case until the staged epilogue made it 64 KiB).
        KernelSpec::generic(DType::F32, tile(256, 64, 8, 8, 4)),
    ]
    .into_iter()
    .chain(common::unusual_tensor_op_specs())
    .collect()
}

/// Whether `source` defines the kernel `name`: `extern "C" __global__`, then only a return type,
/// launch bounds and white space before `name(`.
fn defines(source: &str, name: &str) -> bool {
    let signature = format!("{name}(");
    source.match_indices(&signature).any(|(at, _)| {
        source[..at]
            .rfind("extern \"C\" __global__")
            .map(|start| &source[start..at])
            .is_some_and(|between| between.len() < 80 && !between.contains([';', '{', '}']))
    })
}

/// Template syntax that must never reach the CUDA source.
fn assert_no_template_syntax(what: &str, source: &str) {
    for token in ["{{", "}}", "{%", "%}", "{#", "#}"] {
        assert!(!source.contains(token), "{what} contains `{token}`");
    }
}

#[test]
fn every_catalogue_spec_renders() -> Result<(), RenderError> {
    let renderer = Renderer::new()?;
    for spec in Catalogue::default_catalogue()
        .kernels
        .iter()
        .chain(&unusual_specs())
    {
        let name = spec.name();
        let source = renderer.kernel(spec)?;
        assert!(defines(&source, &name), "{name} is not defined");
        assert_no_template_syntax(&name, &source);
        if spec.math.is_tensor_op() {
            check_tensor_op_source(spec, &source);
            continue;
        }
        if spec.is_grouped() {
            check_grouped_source(spec, &source);
            continue;
        }
        let t = spec.tile;
        // The instantiation names every compile-time choice of the spec.
        let shape = format!(
            "im2win::TileShape<{name}_types, {}, {}, {}, {}, {}",
            t.block_m, t.block_n, t.block_k, t.thread_m, t.thread_n
        );
        assert!(source.contains(&shape), "{name} lacks `{shape}`");
        let e = spec.elements();
        let types = format!(
            "using {name}_types = im2win::Conv2dTypes<{}, {}, {}, {}>;",
            e.input.cuda_type(),
            e.filter.cuda_type(),
            e.output.cuda_type(),
            e.accumulator.cuda_type()
        );
        assert!(source.contains(&types), "{name} lacks `{types}`");
        let bounds = format!("__launch_bounds__({}, ", t.threads());
        assert!(source.contains(&bounds), "{name} lacks `{bounds}`");
        let geometry = match spec.geometry {
            im2win_codegen::Geometry::Fixed(g) => format!(
                "im2win::FixedGeometry<{}, {}, {}, {}>",
                g.filter_h, g.filter_w, g.stride_h, g.stride_w
            ),
            im2win_codegen::Geometry::Generic => "im2win::GenericGeometry".to_string(),
        };
        assert!(source.contains(&geometry), "{name} lacks `{geometry}`");
        let algorithm = if spec.variant.fused {
            "im2win::WINDOW_GATHER"
        } else {
            "im2win::WINDOW_BUFFER"
        };
        assert!(source.contains(algorithm), "{name} lacks `{algorithm}`");
        let layout = match spec.layout {
            im2win_codegen::Layout::Nchw => "IM2WIN_NCHW>",
            im2win_codegen::Layout::Nhwc => "IM2WIN_NHWC>",
        };
        let ablation = !spec.variant.is_complete();
        assert!(
            ablation || source.contains(layout),
            "{name} lacks the layout `{layout}`"
        );
        assert!(
            source.contains(&format!("im2win::conv2d_fprop<{name}_config>")),
            "{name} does not run conv2d_fprop"
        );
    }
    Ok(())
}

/// A grouped kernel's source names its body (`conv_grouped.cuh`), its element types,
/// geometry, threads and per-thread work: the spec's, and the grid dispatch computes.
fn check_grouped_source(spec: &KernelSpec, source: &str) {
    use im2win_codegen::{Grouping, Layout};
    let name = spec.name();
    let t = spec.tile;
    let e = spec.elements();
    let types = format!(
        "using {name}_types = im2win::Conv2dTypes<{}, {}, {}, {}>;",
        e.input.cuda_type(),
        e.filter.cuda_type(),
        e.output.cuda_type(),
        e.accumulator.cuda_type()
    );
    assert!(source.contains(&types), "{name} lacks `{types}`");
    let body = match (spec.grouping, spec.layout) {
        (Grouping::Depthwise, Layout::Nchw) => format!("/*VQ=*/{}>", t.thread_n),
        (Grouping::Depthwise, Layout::Nhwc) => {
            format!("/*VC=*/{}, /*VQ=*/{}>", t.thread_m, t.thread_n)
        }
        (_, Layout::Nchw) => "IM2WIN_NCHW>".to_string(),
        (_, Layout::Nhwc) => "IM2WIN_NHWC>".to_string(),
    };
    let call = format!(
        "_geometry, {}, {body}::run(x, f, bias, residual, y, prm);",
        spec.threads()
    );
    assert!(source.contains(&call), "{name} lacks `{call}`");
    let bounds = format!(
        "__launch_bounds__({}, {})",
        spec.threads(),
        spec.min_blocks_per_sm()
    );
    assert!(source.contains(&bounds), "{name} lacks `{bounds}`");
    let geometry = match spec.geometry {
        im2win_codegen::Geometry::Fixed(g) => format!(
            "im2win::FixedGeometry<{}, {}, {}, {}>",
            g.filter_h, g.filter_w, g.stride_h, g.stride_w
        ),
        im2win_codegen::Geometry::Generic => "im2win::GenericGeometry".to_string(),
    };
    assert!(source.contains(&geometry), "{name} lacks `{geometry}`");
}

/// A tensor-core kernel's source names every compile-time choice of its spec, in the
/// template's terms (pixels before channels), its MMA policy, and the launch bounds of its
/// spec (one block, or three for the 128 x 64 tile with 64-byte rows).
fn check_tensor_op_source(spec: &KernelSpec, source: &str) {
    let name = spec.name();
    let t = spec.tile;
    let row_bytes = t.block_k as usize * spec.dtype.size_bytes();
    // Warp-specialised: the copying warpgroup and the MMA teams after the row bytes.
    let specialised = if spec.variant.warp_specialized {
        format!(
            ", /*PRODUCER_THREADS=*/128, /*MMA_GROUPS=*/{}",
            spec.mma_teams()
        )
    } else {
        String::new()
    };
    let shape = format!(
        "im2win::TensorOpTileShape<{name}_types, /*BM=*/{}, /*BN=*/{}, /*WM=*/{}, /*WN=*/{}, /*STAGES=*/{}, /*ROW_BYTES=*/{row_bytes}{specialised}>",
        t.block_n,
        t.block_m,
        t.thread_n,
        t.thread_m,
        spec.stages()
    );
    assert!(source.contains(&shape), "{name} lacks `{shape}`");
    let e = spec.elements();
    let types = format!(
        "using {name}_types = im2win::Conv2dTypes<{}, {}, {}, {}>;",
        e.input.cuda_type(),
        e.filter.cuda_type(),
        e.output.cuda_type(),
        e.accumulator.cuda_type()
    );
    assert!(source.contains(&types), "{name} lacks `{types}`");
    let vector = format!("/*VECTOR=*/{},", spec.variant.vector_loads);
    assert!(source.contains(&vector), "{name} lacks `{vector}`");
    let mma = match (spec.variant.warpgroup, spec.math) {
        (true, _) => "im2win::WarpgroupMmaTensorOp",
        (false, Math::TensorOpFastF32) => "im2win::WarpMmaTensorOpFastF32",
        (false, _) => "im2win::WarpMmaTensorOp",
    };
    // A TMA kernel's config says so, and the kernel takes both operands' tensor maps.
    let tma = if spec.variant.tma {
        ", /*FILTER_TMA=*/true, /*ACT_TMA=*/true"
    } else {
        ""
    };
    let mma = format!("{mma}, /*SPLITS=*/{}{tma}>;", spec.splits_reduction());
    assert!(source.contains(&mma), "{name} lacks `{mma}`");
    let maps = "const __grid_constant__ im2win::TensorMap act_map, const __grid_constant__ im2win::TensorMap filter_map";
    assert_eq!(
        source.contains(maps),
        spec.variant.tma,
        "{name}: tensor maps"
    );
    let bounds = format!(
        "__launch_bounds__({}, {})",
        spec.threads(),
        spec.min_blocks_per_sm()
    );
    assert!(source.contains(&bounds), "{name} lacks `{bounds}`");
    let geometry = match spec.geometry {
        im2win_codegen::Geometry::Fixed(g) => format!(
            "im2win::FixedGeometry<{}, {}, {}, {}>",
            g.filter_h, g.filter_w, g.stride_h, g.stride_w
        ),
        im2win_codegen::Geometry::Generic => "im2win::GenericGeometry".to_string(),
    };
    assert!(source.contains(&geometry), "{name} lacks `{geometry}`");
    let smem = format!("SMEM_BYTES == {}", spec.shared_bytes());
    assert!(source.contains(&smem), "{name} lacks `{smem}`");
    assert!(
        source.contains(&format!("im2win::conv2d_fprop_tensorop<{name}_config>")),
        "{name} does not run conv2d_fprop_tensorop"
    );
    // Never the SIMT body.
    assert!(!source.contains("im2win::conv2d_fprop<"), "{name}");
}

#[test]
fn tensor_op_kernels_include_their_header_only_where_present() -> Result<(), RenderError> {
    let renderer = Renderer::new()?;
    let conv = |catalogue: &Catalogue| -> Result<String, RenderError> {
        let sources = renderer.catalogue(catalogue)?;
        let file = sources.files.last().map(|f| f.source.clone());
        Ok(file.unwrap_or_default())
    };
    let with = conv(&Catalogue::default_catalogue())?;
    assert!(with.contains("#include \"conv_fprop_tensorop.cuh\""));
    assert!(with.contains("templates/conv_tensorop.cu.tera"));
    let without = conv(&Catalogue::default_f32())?;
    assert!(without.contains("#include \"conv_fprop.cuh\""));
    assert!(
        !without.contains("tensorop"),
        "the SIMT-only source names the tensor-core header"
    );
    Ok(())
}

#[test]
fn the_catalogue_renders_into_complete_sources() -> Result<(), RenderError> {
    let mut catalogue = Catalogue::default_catalogue().with_baselines();
    catalogue.kernels.extend(unusual_specs());
    let sources = Renderer::new()?.catalogue(&catalogue)?;

    // Exactly the catalogue's kernels, the support kernels and the baselines, each defined
    // where listed.
    let expected: BTreeSet<String> = catalogue
        .kernels
        .iter()
        .map(KernelSpec::name)
        .chain(catalogue.support_kernels().map(str::to_string))
        .collect();
    assert_eq!(
        expected.len(),
        catalogue.kernels.len() + support::ALL.len() + baselines::ALL.len()
    );
    let listed: Vec<&str> = sources.kernel_names().collect();
    assert_eq!(listed.len(), expected.len(), "a kernel is listed twice");
    assert_eq!(
        listed
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>(),
        expected
    );
    for file in &sources.files {
        assert!(
            file.source.contains(&format!("#include \"{HEADER_FILE}\"")),
            "{} does not include the header",
            file.file_name
        );
        assert_no_template_syntax(&file.file_name, &file.source);
        for kernel in &file.kernels {
            assert!(
                defines(&file.source, kernel),
                "{} does not define {kernel}",
                file.file_name
            );
        }
    }
    // The translation unit nvcc compiles includes every file and defines the ABI stamp.
    let unit = sources.translation_unit();
    for file in &sources.files {
        assert!(unit.contains(&format!("#include \"{}\"", file.file_name)));
    }
    assert!(unit.contains(&abi::stamp_definition()));
    Ok(())
}

/// The parameter list of the kernel `name` as `source` defines it: the text between `name(`
/// and the matching `)`.
fn parameter_list<'a>(source: &'a str, name: &str) -> Option<&'a str> {
    let signature = format!("{name}(");
    let (at, _) = source
        .match_indices(&signature)
        .find(|(at, _)| defines(&source[..at + signature.len()], name))?;
    let rest = &source[at + signature.len()..];
    rest.find(')').map(|end| &rest[..end])
}

/// The default catalogue (and any without [`Catalogue::baselines`]) renders no baselines:
/// only the benchmark's module holds them.
#[test]
fn only_a_catalogue_with_baselines_renders_them() -> Result<(), RenderError> {
    let renderer = Renderer::new()?;
    let without = renderer.catalogue(&Catalogue::default_catalogue())?;
    let files: Vec<&str> = without.files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(files, ["im2win_support.cu", "im2win_conv.cu"]);
    for baseline in baselines::ALL {
        assert!(!without.kernel_names().any(|k| k == baseline), "{baseline}");
        assert!(
            !without.files.iter().any(|f| f.source.contains(baseline)),
            "{baseline}"
        );
    }
    let with = renderer.catalogue(&Catalogue::ablation().with_baselines())?;
    let files: Vec<&str> = with.files.iter().map(|f| f.file_name.as_str()).collect();
    assert_eq!(
        files,
        ["im2win_support.cu", "im2win_baselines.cu", "im2win_conv.cu"]
    );
    assert_eq!(with.files[1], renderer.baselines_file()?);
    assert_eq!(with.files[1].kernels, baselines::ALL);
    Ok(())
}

/// Every rendered kernel takes exactly the parameters that `abi::KERNEL_SIGNATURES` lists for
/// its kind, so the ABI stamp (a hash of that list) changes whenever a template's signature
/// does: a template edited without the list fails here.
#[test]
fn every_kernel_has_the_signature_the_abi_stamp_describes() -> Result<(), RenderError> {
    let mut catalogue = Catalogue::default_catalogue().with_baselines();
    catalogue.kernels.extend(unusual_specs());
    let sources = Renderer::new()?.catalogue(&catalogue)?;
    let mut checked = 0;
    for file in &sources.files {
        for kernel in &file.kernels {
            let list = parameter_list(&file.source, kernel)
                .unwrap_or_else(|| panic!("{kernel}: no parameter list"));
            assert_eq!(
                abi::parameter_types(list),
                abi::signature_of(kernel),
                "{kernel}: the rendered parameters differ from abi::KERNEL_SIGNATURES"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, sources.kernel_names().count());
    Ok(())
}

#[test]
fn rendering_is_deterministic() -> Result<(), RenderError> {
    // build.rs caches the fatbin on a hash of the sources: identical input, identical text.
    let catalogue = Catalogue::default_catalogue();
    assert_eq!(
        render::render_catalogue(&catalogue)?,
        render::render_catalogue(&catalogue)?
    );
    Ok(())
}

#[test]
fn the_header_declares_conv_params_as_designed() {
    // docs/DESIGN.md's field order; runtime/src/gpu/params.rs mirrors it with #[repr(C)].
    let fields = [
        "int n, c, h, w;",
        "int k, r, s;",
        "int p, q;",
        "int stride_h, stride_w;",
        "int pad_top, pad_left;",
        "int dil_h, dil_w;",
        "int win_w;",
        "int has_bias;",
        "int layout;",
        "int filter_layout;",
        "int activation;",
        "int has_residual;",
        "float alpha;",
        "float beta;",
        "long long crs;",
        "long long npq;",
    ];
    let start = COMMON_HEADER
        .find("struct ConvParams {")
        .expect("ConvParams is declared");
    let body = &COMMON_HEADER[start..start + COMMON_HEADER[start..].find("};").unwrap_or(0)];
    let mut at = 0;
    for field in fields {
        let found = body[at..].find(field);
        assert!(found.is_some(), "`{field}` missing or out of order");
        at += found.unwrap_or(0) + field.len();
    }
    assert_eq!(
        body.matches(';').count(),
        fields.len(),
        "ConvParams has extra fields"
    );
}

#[test]
fn invalid_specs_are_refused() {
    let bad_tile = KernelSpec::generic(DType::F32, tile(128, 128, 8, 3, 8));
    assert!(matches!(
        render::render_kernel(&bad_tile),
        Err(RenderError::Spec(_))
    ));
    let bad_geometry =
        KernelSpec::fixed(DType::F32, FixedGeometry::square(0, 1), TileConfig::PAPER);
    assert!(matches!(
        render::render_kernel(&bad_geometry),
        Err(RenderError::Spec(_))
    ));
}

#[test]
fn sources_are_written_next_to_the_header() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("render_write_to");
    let sources =
        render::render_catalogue(&Catalogue::default_catalogue()).map_err(std::io::Error::other)?;
    let unit = sources.write_to(&dir)?;
    assert_eq!(std::fs::read_to_string(&unit)?, sources.translation_unit());
    assert_eq!(
        std::fs::read_to_string(dir.join(HEADER_FILE))?,
        COMMON_HEADER
    );
    for (name, text) in render::HEADERS {
        assert_eq!(std::fs::read_to_string(dir.join(name))?, text, "{name}");
    }
    for file in &sources.files {
        assert_eq!(
            std::fs::read_to_string(dir.join(&file.file_name))?,
            file.source
        );
    }
    Ok(())
}
