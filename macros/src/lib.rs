//! `im2win-macros`: the `conv2d!` macro, re-exported as `im2win::conv2d!`.
//!
//! Use it through the `im2win` crate; the expansion names `::im2win` paths. See
//! [`conv2d!`] for the syntax.

use std::path::{Path, PathBuf};

use im2win_codegen::{
    Catalogue, DType, FixedGeometry, Geometry, KernelSpec, Layout, Manifest, Math, Precision,
    SpecError, TileConfig, Variant, numeric_name, parse_pair,
};
use proc_macro2::{Span, TokenStream, TokenTree};
use quote::quote;
use syn::parse::{ParseStream, Parser};
use syn::{Ident, LitStr, Token};

/// Names a convolution kernel specialisation, checked at compile time against the catalogue
/// that build.rs compiles (`Catalogue::default_for` the tensor-core families of the im2win
/// crate's features: all by default) and, with `catalogue = "…"`,
/// against the crate's own manifest. Expands to a `const`-evaluable
/// `im2win::Specialization`, which `Engine::conv2d_specialized` launches without dispatch and
/// which refuses a problem of another filter size or stride (`Error::SpecMismatch`).
///
/// ```text
/// im2win::conv2d!(f32, filter = 3x3, stride = 1)
/// im2win::conv2d!(f32, filter = 1x1, stride = 2, tile = 128x128x8/8x8)
/// im2win::conv2d!(f32, filter = 3, stride = 2x1, tile = b128x128x8_t8x8)
/// im2win::conv2d!(f32, generic)
/// im2win::conv2d!(f32, filter = 3x3, stride = 1, layout = nhwc)
/// im2win::conv2d!(bf16, filter = 3x3, stride = 1, layout = nhwc)
/// im2win::conv2d!(tf32, filter = 3x3, layout = nhwc, tile = 64x128x16/32x64)
/// im2win::conv2d!(f32, filter = 9x9, stride = 3, catalogue = "im2win.toml")
/// ```
///
/// * The data type comes first: `f32` (strict float32 on CUDA cores), `tf32` (float32
///   tensors on tensor cores), `bf16` or `f16` (tensor cores), as kernel names spell them.
/// * `filter = RxS` (or `N` for `NxN`), `stride = HxW` (or `N`; default 1); or `generic`,
///   the kernel that takes filter size, stride and dilation at run time.
/// * `tile = MxNxK/TMxTN` (block and thread tile; for tensor cores block and warp tile, see
///   `TileConfig`) or `tile = bMxNxK_tTMxTN` / `bMxNxK_wWMxWN` (the spelling of kernel names)
///   fixes the tile (for tensor cores the kernel with vector loads); without it the tile
///   (and loader) is chosen per problem among those compiled for the geometry.
/// * `layout = nchw` (the default) or `layout = nhwc`: the memory order of input and output
///   the kernels take (NHWC kernels gather their windows; any filter layout works for
///   `f32`). The tensor-core kernels (`tf32`, `bf16`, `f16`) are NHWC kernels that take
///   both layouts and either filter layout (an NCHW input or a KCRS filter through a
///   channels-last copy in the workspace). The epilogue (bias, residual, activation) is the
///   problem's and runs in every kernel.
/// * `catalogue = "path/to/im2win.toml"` (relative to the crate's root, `CARGO_MANIFEST_DIR`)
///   also accepts the kernels of that manifest, which the crate's build.rs compiles with
///   `im2win_codegen::Builder::from_manifest` and embeds with `im2win::include_kernels!`.
///
/// A kernel that no catalogue has is a compile error at the offending argument that lists the
/// nearest kernels available and says how to generate the missing one.
#[proc_macro]
pub fn conv2d(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let base = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    match expand(input.into(), base.as_deref()) {
        Ok(tokens) => tokens.into(),
        Err(error) => error.to_compile_error().into(),
    }
}

/// The value of one `key = value` argument: its text (tokens joined without spaces, string
/// literals by their contents) and its tokens (for error spans).
struct Value {
    text: String,
    tokens: TokenStream,
}

impl Value {
    fn error(&self, message: impl std::fmt::Display) -> syn::Error {
        syn::Error::new_spanned(&self.tokens, message)
    }
}

/// A parsed invocation.
struct Request {
    dtype: Ident,
    generic: Option<Ident>,
    filter: Option<Value>,
    stride: Option<Value>,
    tile: Option<Value>,
    layout: Option<Value>,
    catalogue: Option<(LitStr, Value)>,
}

const USAGE: &str = "expected e.g. `im2win::conv2d!(f32, filter = 3x3, stride = 1)`, \
                     optionally with `tile = 128x128x8/8x8` and `catalogue = \"im2win.toml\"`, \
                     or `im2win::conv2d!(f32, generic)`";

fn parse_request(input: ParseStream) -> syn::Result<Request> {
    if input.is_empty() {
        return Err(input.error(USAGE));
    }
    let dtype: Ident = input
        .parse()
        .map_err(|e| syn::Error::new(e.span(), format!("the data type comes first: {USAGE}")))?;
    let mut request = Request {
        dtype,
        generic: None,
        filter: None,
        stride: None,
        tile: None,
        layout: None,
        catalogue: None,
    };
    while !input.is_empty() {
        input.parse::<Token![,]>()?;
        if input.is_empty() {
            break;
        }
        let key: Ident = input.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected an argument: `filter`, `stride`, `tile`, `layout`, `catalogue` or `generic`",
            )
        })?;
        let name = key.to_string();
        if name == "generic" {
            if request.generic.replace(key.clone()).is_some() {
                return Err(syn::Error::new(key.span(), "`generic` is given twice"));
            }
            continue;
        }
        let slot = match name.as_str() {
            "filter" => &mut request.filter,
            "stride" => &mut request.stride,
            "tile" => &mut request.tile,
            "layout" => &mut request.layout,
            "catalogue" => {
                let value = parse_value(input, &key)?;
                let literal: LitStr = syn::parse2(value.tokens.clone()).map_err(|_| {
                    value.error(
                        "`catalogue` takes a string: the manifest's path relative to the crate's \
                         root, e.g. `catalogue = \"im2win.toml\"`",
                    )
                })?;
                if request.catalogue.replace((literal, value)).is_some() {
                    return Err(syn::Error::new(key.span(), "`catalogue` is given twice"));
                }
                continue;
            }
            _ => {
                return Err(syn::Error::new(
                    key.span(),
                    format!(
                        "unknown argument `{name}`: expected `filter`, `stride`, `tile`, \
                         `layout`, `catalogue` or `generic`"
                    ),
                ));
            }
        };
        let value = parse_value(input, &key)?;
        if slot.replace(value).is_some() {
            return Err(syn::Error::new(
                key.span(),
                format!("`{name}` is given twice"),
            ));
        }
    }
    Ok(request)
}

/// `= value`, the value running to the next top-level comma.
fn parse_value(input: ParseStream, key: &Ident) -> syn::Result<Value> {
    input
        .parse::<Token![=]>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected `=` after `{key}`")))?;
    let mut tokens = TokenStream::new();
    let mut text = String::new();
    while !input.is_empty() && !input.peek(Token![,]) {
        let tree: TokenTree = input.parse()?;
        match &tree {
            TokenTree::Literal(literal) => {
                match syn::parse2::<LitStr>(TokenTree::Literal(literal.clone()).into()) {
                    Ok(string) => text.push_str(&string.value()),
                    Err(_) => text.push_str(&literal.to_string()),
                }
            }
            other => text.push_str(&other.to_string()),
        }
        tokens.extend([tree]);
    }
    if tokens.is_empty() {
        return Err(syn::Error::new(
            key.span(),
            format!("`{key}` needs a value after `=`"),
        ));
    }
    Ok(Value { text, tokens })
}

/// The default catalogue as the im2win crate builds it: the float32 kernels and the
/// tensor-core families of this crate's features (`tc-bf16`, `tc-f16`, `tc-tf32`, which the
/// im2win crate's features of the same names turn on).
fn default_catalogue() -> Catalogue {
    let families = [
        (cfg!(feature = "tc-bf16"), DType::Bf16),
        (cfg!(feature = "tc-f16"), DType::F16),
        (cfg!(feature = "tc-tf32"), DType::F32),
    ];
    let tensor_op: Vec<DType> = families
        .into_iter()
        .filter(|(on, _)| *on)
        .map(|(_, dtype)| dtype)
        .collect();
    Catalogue::default_for(&tensor_op)
}

/// A catalogue the request is checked against, and the name the handle records.
struct Source {
    name: String,
    catalogue: Catalogue,
}

/// Expands one invocation; `base` is the crate's root, for `catalogue = "…"`.
fn expand(input: TokenStream, base: Option<&Path>) -> syn::Result<TokenStream> {
    let request = parse_request.parse2(input)?;

    // The element type and math, as kernel names spell them: f32, tf32, bf16, f16.
    let numeric = request.dtype.to_string();
    let (dtype, math) = Precision::from_numeric_name(&numeric)
        .and_then(|(dtype, precision)| Some((dtype, precision.math(dtype)?)))
        .ok_or_else(|| {
            syn::Error::new(
                request.dtype.span(),
                SpecError::UnknownDType(numeric.clone()),
            )
        })?;
    let geometry = match &request.generic {
        Some(generic) => {
            if let Some(value) = request.filter.as_ref().or(request.stride.as_ref()) {
                return Err(value.error(format!(
                    "the generic kernel takes filter size and stride at run time: drop them, or \
                     drop `{generic}`"
                )));
            }
            Geometry::Generic
        }
        None => {
            let filter = request.filter.as_ref().ok_or_else(|| {
                syn::Error::new(
                    request.dtype.span(),
                    format!("the filter size is missing: {USAGE}"),
                )
            })?;
            let filter = parse_pair("filter", &filter.text).map_err(|e| filter.error(e))?;
            let stride = match &request.stride {
                Some(value) => parse_pair("stride", &value.text).map_err(|e| value.error(e))?,
                None => [1, 1],
            };
            Geometry::Fixed(FixedGeometry::new(filter, stride))
        }
    };
    let tile: Option<TileConfig> = match &request.tile {
        Some(value) => Some(value.text.parse().map_err(|e| value.error(e))?),
        None => None,
    };
    let layout: Layout = match &request.layout {
        Some(value) => value.text.parse().map_err(|e| value.error(e))?,
        None => Layout::Nchw,
    };
    // The tensor-core kernels are NHWC kernels, which take NCHW tensors too (through an
    // NHWC copy of the input, writing the NCHW output themselves): the kernels to find are
    // NHWC whatever the tensors' layout (`Specialization::kernel_layout`).
    let kernel_layout = match math {
        _ if math.is_tensor_op() => Layout::Nhwc,
        _ => layout,
    };
    // A tile names the kernel `Specialization::spec` builds: the window-buffer kernel for
    // NCHW SIMT kernels, the window-gather one for NHWC and for tensor cores.
    let tile_variant = match (layout, math) {
        (Layout::Nchw, Math::Simt) => Variant::MATERIALISED,
        _ => Variant::FUSED,
    };

    let mut sources = vec![Source {
        name: "im2win".to_string(),
        catalogue: default_catalogue(),
    }];
    let mut manifest_path = None;
    if let Some((literal, value)) = &request.catalogue {
        let relative = literal.value();
        let path = match base {
            Some(base) => base.join(&relative),
            None => PathBuf::from(&relative),
        };
        let manifest = Manifest::read(&path).map_err(|e| {
            value.error(format!(
                "cannot use the manifest `{relative}` (paths are relative to the crate's root, \
                 CARGO_MANIFEST_DIR): {}",
                e.message
            ))
        })?;
        sources.push(Source {
            name: manifest.name,
            catalogue: manifest.catalogue,
        });
        manifest_path = Some((relative, path));
    }

    let found = sources.iter().find(|source| {
        // A tile names its materialised kernel (`Specialization::spec`).
        // Dense kernels: the macro names no grouped (depthwise) specialisation.
        source.catalogue.kernels.iter().any(|k| {
            !k.is_grouped()
                && k.dtype == dtype
                && k.math == math
                && k.geometry == geometry
                && k.layout == kernel_layout
                && tile.is_none_or(|t| t == k.tile && k.variant == tile_variant)
        })
    });
    let Some(source) = found else {
        return Err(not_found(
            &request,
            (dtype, math),
            (kernel_layout, tile_variant),
            geometry,
            tile,
            &sources,
            manifest_path
                .as_ref()
                .map(|(relative, _)| relative.as_str()),
        ));
    };

    let dtype_tokens = match dtype {
        DType::F32 => quote!(::im2win::codegen::DType::F32),
        DType::Bf16 => quote!(::im2win::codegen::DType::Bf16),
        DType::F16 => quote!(::im2win::codegen::DType::F16),
    };
    // `Specialization::new` takes the type's default math; TF32 says otherwise.
    let math_tokens = match math {
        Math::Simt => quote!(::im2win::codegen::Math::Simt),
        Math::TensorOp => quote!(::im2win::codegen::Math::TensorOp),
        Math::TensorOpFastF32 => quote!(::im2win::codegen::Math::TensorOpFastF32),
    };
    let geometry_tokens = match geometry {
        Geometry::Fixed(g) => {
            let [r, s, sh, sw] = [g.filter_h, g.filter_w, g.stride_h, g.stride_w]
                .map(proc_macro2::Literal::u32_unsuffixed);
            quote!(::im2win::codegen::Geometry::Fixed(::im2win::codegen::FixedGeometry {
                filter_h: #r,
                filter_w: #s,
                stride_h: #sh,
                stride_w: #sw,
            }))
        }
        Geometry::Generic => quote!(::im2win::codegen::Geometry::Generic),
    };
    let tile_tokens = match tile {
        Some(t) => {
            let [m, n, k, tm, tn] = [t.block_m, t.block_n, t.block_k, t.thread_m, t.thread_n]
                .map(proc_macro2::Literal::u32_unsuffixed);
            quote!(::core::option::Option::Some(::im2win::codegen::TileConfig {
                block_m: #m,
                block_n: #n,
                block_k: #k,
                thread_m: #tm,
                thread_n: #tn,
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let catalogue_name = &source.name;
    // Reading the manifest through include_bytes! makes rustc (and so cargo) rebuild the
    // crate when it changes, which re-runs this check.
    let track = manifest_path
        .and_then(|(_, path)| path.to_str().map(str::to_string))
        .map(|path| {
            quote!(
                const _: &[u8] = ::core::include_bytes!(#path);
            )
        });
    let layout_tokens = match layout {
        Layout::Nchw => quote!(::im2win::Layout::Nchw),
        Layout::Nhwc => quote!(::im2win::Layout::Nhwc),
    };
    Ok(quote!({
        #track
        ::im2win::Specialization::new(#dtype_tokens, #geometry_tokens, #tile_tokens, #catalogue_name)
            .with_math(#math_tokens)
            .with_layout(#layout_tokens)
    }))
}

/// The compile error for a request that no catalogue has: at the argument that makes it
/// unavailable, with the nearest kernels and how to generate it.
fn not_found(
    request: &Request,
    (dtype, math): (DType, Math),
    (kernel_layout, tile_variant): (Layout, Variant),
    geometry: Geometry,
    tile: Option<TileConfig>,
    sources: &[Source],
    manifest: Option<&str>,
) -> syn::Error {
    let specs = || {
        sources
            .iter()
            .flat_map(|s| s.catalogue.kernels.iter().map(move |k| (s, k)))
            .filter(move |(_, k)| !k.is_grouped() && k.dtype == dtype && k.math == math)
    };
    // `f32`, `tf32`, `bf16` or `f16`, as the request spells it.
    let dtype = numeric_name(dtype, math);
    let has_geometry = specs().any(|(_, k)| k.geometry == geometry);
    let where_ = match manifest {
        Some(path) => format!("the default catalogue or `{path}`"),
        None => "the default catalogue".to_string(),
    };
    let what = match geometry {
        Geometry::Fixed(g) => format!(
            "a {}x{} filter with stride {}",
            g.filter_h,
            g.filter_w,
            stride_text(g)
        ),
        Geometry::Generic => "the generic kernel".to_string(),
    };
    let mut message;
    let span_of: TokenStream;
    if let (true, Some(tile), Some(value)) = (has_geometry, tile, &request.tile) {
        let tiles: Vec<String> = specs()
            .filter(|(_, k)| {
                // The kernels a tile names (the lookup's rule): of the kernels' layout, the
                // window-buffer variant for NCHW SIMT kernels, else the window gather.
                k.geometry == geometry && k.layout == kernel_layout && k.variant == tile_variant
            })
            .map(|(_, k)| format!("`tile = {}`", k.tile))
            .collect();
        message = format!(
            "im2win: {where_} has {what}, but not with tile {tile}\n\
             compiled tiles for it: {}\n\
             (or leave `tile` out: the tile is then chosen per problem)",
            tiles.join(", ")
        );
        span_of = value.tokens.clone();
    } else {
        message = format!("im2win: no {dtype} kernel for {what} in {where_}");
        span_of = match (geometry, &request.generic) {
            (Geometry::Generic, Some(generic)) => quote!(#generic),
            (Geometry::Fixed(g), _) => {
                let same_filter = specs().any(|(_, k)| match k.geometry {
                    Geometry::Fixed(h) => (h.filter_h, h.filter_w) == (g.filter_h, g.filter_w),
                    Geometry::Generic => false,
                });
                match (&request.stride, &request.filter) {
                    (Some(stride), _) if same_filter => stride.tokens.clone(),
                    (_, Some(filter)) => filter.tokens.clone(),
                    _ => {
                        let dtype = &request.dtype;
                        quote!(#dtype)
                    }
                }
            }
            _ => quote!(),
        };
        let nearest = nearest(geometry, specs().collect());
        if !nearest.is_empty() {
            message.push_str("\nnearest available: ");
            message.push_str(&nearest.join(", "));
        }
        if specs().any(|(_, k)| k.geometry == Geometry::Generic) && geometry != Geometry::Generic {
            message.push_str(&format!(
                "\n(the generic kernel, `im2win::conv2d!({dtype}, generic)`, runs any filter size \
                 and stride, and `Engine::conv2d` falls back to it by itself)"
            ));
        }
    }
    message.push('\n');
    message.push_str(&how_to_generate(dtype, geometry, tile, sources, manifest));
    if span_of.is_empty() {
        syn::Error::new(Span::call_site(), message)
    } else {
        syn::Error::new_spanned(span_of, message)
    }
}

/// `1` or `2x1`.
fn stride_text(g: FixedGeometry) -> String {
    if g.stride_h == g.stride_w {
        g.stride_h.to_string()
    } else {
        format!("{}x{}", g.stride_h, g.stride_w)
    }
}

/// Up to four fixed geometries closest to `wanted` (filter size counts twice as much as
/// stride), as macro arguments, with the catalogue when it is not the default one.
fn nearest(wanted: Geometry, specs: Vec<(&Source, &KernelSpec)>) -> Vec<String> {
    let mut geometries: Vec<(&str, FixedGeometry)> = Vec::new();
    for (source, spec) in specs {
        if let Geometry::Fixed(g) = spec.geometry
            && !geometries.iter().any(|(_, h)| *h == g)
        {
            geometries.push((&source.name, g));
        }
    }
    let distance = |g: &FixedGeometry| match wanted {
        Geometry::Fixed(w) => {
            let d = |a: u32, b: u32| a.abs_diff(b);
            2 * (d(g.filter_h, w.filter_h) + d(g.filter_w, w.filter_w))
                + d(g.stride_h, w.stride_h)
                + d(g.stride_w, w.stride_w)
        }
        Geometry::Generic => 0,
    };
    // A stable sort: equally near ones stay in catalogue order.
    geometries.sort_by_key(|(_, g)| distance(g));
    geometries
        .into_iter()
        .take(4)
        .map(|(source, g)| {
            if source == "im2win" {
                format!("`{g}`")
            } else {
                format!("`{g}` (catalogue `{source}`)")
            }
        })
        .collect()
}

/// How to get a kernel that no catalogue has: the manifest entry and the build.rs call.
fn how_to_generate(
    dtype: &str,
    geometry: Geometry,
    tile: Option<TileConfig>,
    sources: &[Source],
    manifest: Option<&str>,
) -> String {
    let mut entry = String::from("[[kernel]]\n");
    if dtype != DType::F32.name() {
        entry.push_str(&format!("    dtype = \"{dtype}\"\n"));
    }
    match geometry {
        Geometry::Fixed(g) => {
            entry.push_str(&format!("    filter = \"{}x{}\"\n", g.filter_h, g.filter_w));
            if g.stride_h == g.stride_w {
                entry.push_str(&format!("    stride = {}\n", g.stride_h));
            } else {
                entry.push_str(&format!("    stride = \"{}x{}\"\n", g.stride_h, g.stride_w));
            }
        }
        Geometry::Generic => entry.push_str("    generic = true\n"),
    }
    if let Some(tile) = tile {
        entry.push_str(&format!("    tile = \"{tile}\"\n"));
    }
    match (manifest, sources.get(1)) {
        (Some(path), Some(source)) => format!(
            "to generate it, add to `{path}`:\n    {entry}\
             and rebuild: its build.rs compiles the manifest, and \
             `im2win::include_kernels!(\"{}\")` embeds it",
            source.name
        ),
        _ => format!(
            "to generate it, name it in a manifest in your crate, e.g. `im2win.toml`:\n    \
             name = \"custom\"\n    {entry}\
             compile it in build.rs (build-dependency `im2win-codegen`, feature `generate`):\n    \
             fn main() {{ im2win_codegen::Builder::from_manifest(\"im2win.toml\").build_or_exit(); }}\n\
             then add `catalogue = \"im2win.toml\"` to this macro and give the engine \
             `im2win::kernels().merged(im2win::include_kernels!(\"custom\"))`"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand_str(input: &str) -> Result<String, String> {
        let tokens: TokenStream = input.parse().unwrap();
        // Relative to the working directory, the package root under `cargo test` (and under
        // scripts/device-run.sh, which runs test binaries from there on another machine).
        let base = Path::new("tests");
        expand(tokens, Some(base))
            .map(|t| t.to_string())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn every_spelling_expands() {
        let out = expand_str("f32, filter = 3x3, stride = 1").unwrap();
        assert!(out.contains("filter_h : 3"), "{out}");
        assert!(out.contains(":: core :: option :: Option :: None"), "{out}");
        assert!(out.contains("\"im2win\""), "{out}");
        let out = expand_str("f32, filter = 1, stride = \"2\", tile = 128x128x8/8x8,").unwrap();
        assert!(out.contains("block_m : 128"), "{out}");
        assert!(out.contains("stride_w : 2"), "{out}");
        let named = expand_str("f32, filter = 1x1, stride = 2, tile = b128x128x8_t8x8").unwrap();
        assert_eq!(named, out);
        assert!(
            expand_str("f32, generic")
                .unwrap()
                .contains("Geometry :: Generic")
        );
        // Stride defaults to 1.
        assert_eq!(
            expand_str("f32, filter = 5").unwrap(),
            expand_str("f32, filter = 5x5, stride = 1x1").unwrap()
        );
    }

    #[test]
    fn a_manifest_adds_its_kernels() {
        let out =
            expand_str("f32, filter = 9x9, stride = 3, catalogue = \"ui/custom.toml\"").unwrap();
        assert!(out.contains("\"custom\""), "{out}");
        assert!(out.contains("include_bytes"), "{out}");
        // The default catalogue still answers with a manifest given.
        let out = expand_str("f32, filter = 3x3, catalogue = \"ui/custom.toml\"").unwrap();
        assert!(out.contains("\"im2win\""), "{out}");
        let err = expand_str("f32, filter = 9x9, stride = 2, catalogue = \"ui/custom.toml\"")
            .unwrap_err();
        assert!(err.contains("(catalogue `custom`)"), "{err}");
        assert!(err.contains("add to `ui/custom.toml`"), "{err}");
        let err = expand_str("f32, filter = 3, catalogue = \"ui/missing.toml\"").unwrap_err();
        assert!(
            err.contains("cannot use the manifest `ui/missing.toml`"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_problem() {
        let cases = [
            ("", "expected e.g."),
            ("f64, filter = 3x3", "unknown data type `f64`"),
            ("f32, filter = 3y3", "not a valid filter"),
            ("f32, filter = 3x3, stride = 0", "not a valid stride"),
            ("f32, filter = 3x3, tile = 1x1x1/1x1", "invalid tile"),
            (
                "f32, filter = 3x3, tile = 32x64x8/2x8",
                "but not with tile 32x64x8/2x8",
            ),
            ("f32, stride = 1", "the filter size is missing"),
            (
                "f32, filter = 3x3, stride = 1, stride = 2",
                "`stride` is given twice",
            ),
            ("f32, filter = 3x3, strid = 1", "unknown argument `strid`"),
            ("f32, filter = ", "needs a value"),
            (
                "f32, filter = 3x3, catalogue = 5",
                "`catalogue` takes a string",
            ),
            ("f32, generic, filter = 3", "drop them"),
            ("f32, filter = 3, layout = nhcw", "unknown layout"),
            (
                "f32, filter = 9x9, stride = 3",
                "nearest available: `filter = 7x7, stride = 2`",
            ),
        ];
        for (input, expected) in cases {
            let err = expand_str(input).unwrap_err();
            assert!(err.contains(expected), "{input:?}: {err}");
        }
    }

    #[test]
    fn tensor_core_types_are_named_and_checked() {
        // The default catalogue has them for NHWC: the expansion carries type, math and
        // layout.
        let out = expand_str("bf16, filter = 3x3, stride = 1, layout = nhwc").unwrap();
        assert!(out.contains("DType :: Bf16"), "{out}");
        assert!(out.contains("Math :: TensorOp"), "{out}");
        assert!(out.contains("Layout :: Nhwc"), "{out}");
        let out = expand_str("tf32, generic, layout = nhwc").unwrap();
        assert!(out.contains("DType :: F32"), "{out}");
        assert!(out.contains("Math :: TensorOp"), "{out}");
        // A tensor-core tile of the default catalogue.
        let out = expand_str("tf32, filter = 3, layout = nhwc, tile = 64x128x16/32x64").unwrap();
        assert!(out.contains("block_m : 64"), "{out}");
        assert!(out.contains("thread_n : 64"), "{out}");
        let out = expand_str("f16, generic, layout = nhwc, tile = b128x128x64_w64x64").unwrap();
        assert!(out.contains("block_k : 64"), "{out}");
        // NCHW tensors: the same NHWC kernels (the specialisation keeps the layout).
        let out = expand_str("bf16, filter = 3x3, stride = 1").unwrap();
        assert!(out.contains("Layout :: Nchw"), "{out}");
        let out = expand_str("f16, generic, layout = nchw").unwrap();
        assert!(out.contains("Math :: TensorOp"), "{out}");
        // A geometry the default catalogue lacks: a compile error naming the type, and the
        // manifest entry that would generate it.
        let err = expand_str("bf16, filter = 5x5, layout = nhwc").unwrap_err();
        assert!(err.contains("no bf16 kernel for a 5x5 filter"), "{err}");
        assert!(err.contains("dtype = \"bf16\""), "{err}");
        // From a manifest that has them.
        let out =
            expand_str("tf32, filter = 5, layout = nhwc, catalogue = \"ui/tensor_cores.toml\"")
                .unwrap();
        assert!(out.contains("\"tensor_cores\""), "{out}");
        let out = expand_str(
            "bf16, filter = 9, stride = 2, layout = nhwc, catalogue = \"ui/tensor_cores.toml\"",
        )
        .unwrap();
        assert!(out.contains("DType :: Bf16"), "{out}");
        // The strict float32 request does not take a TF32 kernel's tile.
        let err = expand_str("f32, filter = 3, layout = nhwc, tile = 64x128x16/32x64").unwrap_err();
        assert!(err.contains("but not with tile 64x128x16/32x64"), "{err}");
        let out = expand_str("f32, filter = 3x3").unwrap();
        assert!(out.contains("Math :: Simt"), "{out}");
    }
}
