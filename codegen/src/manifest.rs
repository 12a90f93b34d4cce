//! The manifest (`im2win.toml`) that names a crate's own specialisations.
//!
//! One file, read twice: by `Builder::from_manifest` (feature `generate`) in the
//! crate's build.rs, which compiles its kernels into `OUT_DIR/<name>.fatbin`, and by
//! `im2win::conv2d!(.., catalogue = "im2win.toml")`, which checks a request against it at
//! compile time. Both go through [`Manifest::parse`], so they always agree.
//!
//! ```toml
//! # The module's name: build.rs writes OUT_DIR/custom.fatbin and OUT_DIR/custom.catalogue.json,
//! # and `im2win::include_kernels!("custom")` embeds them.
//! name = "custom"
//! # Optional: targets, as IM2WIN_CUDA_ARCHS spells them (which overrides this).
//! archs = "80,90"
//!
//! [[kernel]]
//! filter = "9x9"            # or 9; height x width
//! stride = 3                # or "3x1"; default 1
//!
//! [[kernel]]
//! filter = "5x3"
//! stride = "2x1"
//! tile = "64x64x8/4x4"      # or a list of tiles; default: every tile of DEFAULT_TILES
//!
//! [[kernel]]
//! generic = true            # the run-time-geometry kernel, for every tile given
//! ```
//!
//! `dtype = "f32"` (strict float32 on CUDA cores) is the default; `dtype = "tf32"` (float32
//! tensors on tensor cores), `"f32x3"` (3xTF32), `"bf16"` and `"f16"` name tensor-core kernels, which gather their
//! windows from NHWC tensors with a KRSC filter (the fused variant). Their `tile` is a
//! tensor-core tile (`"64x128x32/32x64"`: 64 channels × 128 pixels per block, 32 reduction
//! elements a stage's row, a 32 × 64 warp tile; see `TileConfig`), by default every tile of
//! `TENSOR_OP_TILES` (for `dtype = "f32x3"`, float32 at FP32 accuracy as 3xTF32, the two
//! 128 × 64 tiles of `TENSOR_OP_FAST_F32_KERNELS`); `vector = false` makes the element-wise kernel of each tile (any
//! channel count) instead of the one with 16-byte vector copies (`C` a multiple of 8, or 4
//! for TF32):
//!
//! ```toml
//! [[kernel]]
//! dtype = "bf16"
//! filter = 5
//! stride = 2
//! tile = "96x128x32/48x64"
//! vector = false
//! ```
//!
//! Unknown keys are errors, so that a typo does not silently drop a kernel.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::catalogue::{
    Catalogue, DEFAULT_TILES, TENSOR_OP_128X64_W32_R64, TENSOR_OP_128X64_W32_R128, TENSOR_OP_TILES,
};
use crate::spec::{
    DType, FixedGeometry, Geometry, KernelSpec, Math, Precision, SpecError, TileConfig, parse_pair,
};

/// A parsed manifest: the module's name, its optional targets and its catalogue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// The module's name: the stem of `OUT_DIR/<name>.fatbin` and the argument of
    /// `im2win::include_kernels!`.
    pub name: String,
    /// The `archs` entry, unparsed (see `CudaTargets::parse` with feature `generate`).
    pub archs: Option<String>,
    /// The specialisations, in manifest order.
    pub catalogue: Catalogue,
}

/// Why a manifest could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file, when the manifest came from one.
    pub path: Option<PathBuf>,
    /// What is wrong, with the TOML parser's line and column where it has them.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(path) => write!(f, "{}: {}", path.display(), self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl ManifestError {
    fn new(message: impl Into<String>) -> Self {
        ManifestError {
            path: None,
            message: message.into(),
        }
    }
}

/// Checks that `name` can be a file stem and a string literal: ASCII letters, digits, `_`
/// and `-`, not empty.
pub fn validate_name(name: &str) -> Result<(), String> {
    if !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid module name: use ASCII letters, digits, `_` and `-` \
             (it becomes OUT_DIR/<name>.fatbin)"
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    name: String,
    #[serde(default)]
    archs: Option<String>,
    #[serde(default, rename = "kernel")]
    kernels: Vec<RawKernel>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    #[serde(default)]
    dtype: Option<String>,
    #[serde(default)]
    generic: bool,
    #[serde(default)]
    filter: Option<Dims>,
    #[serde(default)]
    stride: Option<Dims>,
    #[serde(default)]
    tile: Option<Tiles>,
    /// Tensor-core kernels only: the loader with 16-byte vector copies (true, the default)
    /// or the element-wise one for any `C` (false).
    #[serde(default)]
    vector: Option<bool>,
}

/// `3` or `"3x3"`.
#[derive(Deserialize)]
#[serde(untagged)]
enum Dims {
    Number(u32),
    Text(String),
}

impl Dims {
    fn parse(&self, what: &'static str) -> Result<[u32; 2], SpecError> {
        match self {
            Dims::Number(n) => parse_pair(what, &n.to_string()),
            Dims::Text(text) => parse_pair(what, text),
        }
    }
}

/// `"128x128x8/8x8"` or a list of those.
#[derive(Deserialize)]
#[serde(untagged)]
enum Tiles {
    One(String),
    Many(Vec<String>),
}

impl Manifest {
    /// Parses a manifest from its text.
    pub fn parse(text: &str) -> Result<Manifest, ManifestError> {
        let raw: RawManifest =
            toml::from_str(text).map_err(|e| ManifestError::new(e.to_string().trim_end()))?;
        validate_name(&raw.name).map_err(ManifestError::new)?;
        let mut kernels = Vec::new();
        for (index, kernel) in raw.kernels.iter().enumerate() {
            let context = |e: String| ManifestError::new(format!("[[kernel]] #{}: {e}", index + 1));
            kernels.extend(kernel.specs().map_err(context)?);
        }
        if kernels.is_empty() {
            return Err(ManifestError::new(
                "no kernels: add a [[kernel]] table, e.g. `filter = \"9x9\"` and `stride = 3`",
            ));
        }
        let catalogue = Catalogue::new(kernels).map_err(|e| ManifestError::new(e.to_string()))?;
        Ok(Manifest {
            name: raw.name,
            archs: raw.archs,
            catalogue,
        })
    }

    /// Reads and parses the manifest at `path`.
    pub fn read(path: impl AsRef<Path>) -> Result<Manifest, ManifestError> {
        let path = path.as_ref();
        let with_path = |mut e: ManifestError| {
            e.path = Some(path.to_path_buf());
            e
        };
        let text = std::fs::read_to_string(path)
            .map_err(|e| with_path(ManifestError::new(format!("cannot read it: {e}"))))?;
        Manifest::parse(&text).map_err(with_path)
    }
}

impl RawKernel {
    fn specs(&self) -> Result<Vec<KernelSpec>, String> {
        // The element type and math as kernel names spell them: f32, tf32, f32x3, bf16, f16.
        let (dtype, math) = match &self.dtype {
            Some(text) => Precision::from_numeric_name(text)
                .and_then(|(dtype, precision)| Some((dtype, precision.math(dtype)?)))
                .ok_or_else(|| SpecError::UnknownDType(text.clone()).to_string())?,
            None => (DType::F32, Math::Simt),
        };
        if math == Math::Simt && self.vector.is_some() {
            return Err(
                "`vector` chooses the loader of tensor-core kernels (dtype tf32, f32x3, bf16 or f16)"
                    .to_string(),
            );
        }
        let vector = self.vector.unwrap_or(true);
        // Tensor-core kernels gather their windows from NHWC tensors: the fused variant.
        let spec = |geometry: Geometry, tile: TileConfig| match math {
            Math::Simt => match geometry {
                Geometry::Fixed(g) => KernelSpec::fixed(dtype, g, tile),
                Geometry::Generic => KernelSpec::generic(dtype, tile),
            },
            Math::TensorOp | Math::TensorOpFastF32 => {
                KernelSpec::tensor_op(dtype, geometry, tile, vector).with_math(math)
            }
        };
        let tiles: Vec<TileConfig> = match &self.tile {
            None if math == Math::TensorOp => {
                TENSOR_OP_TILES.iter().map(|t| t.tile(dtype)).collect()
            }
            // 3xTF32: the 128 × 64 tiles of its default kernels (TENSOR_OP_FAST_F32_KERNELS).
            None if math == Math::TensorOpFastF32 => {
                [TENSOR_OP_128X64_W32_R64, TENSOR_OP_128X64_W32_R128]
                    .iter()
                    .map(|t| t.tile(dtype))
                    .collect()
            }
            None => DEFAULT_TILES.to_vec(),
            Some(Tiles::One(text)) => vec![text.parse().map_err(|e: SpecError| e.to_string())?],
            Some(Tiles::Many(list)) => list
                .iter()
                .map(|t| t.parse())
                .collect::<Result<_, SpecError>>()
                .map_err(|e| e.to_string())?,
        };
        if tiles.is_empty() {
            return Err("`tile = []` names no tile".to_string());
        }
        if self.generic {
            if self.filter.is_some() || self.stride.is_some() {
                return Err(
                    "a generic kernel takes its filter and stride at run time: drop `filter` and `stride`"
                        .to_string(),
                );
            }
            return Ok(tiles
                .into_iter()
                .map(|tile| spec(Geometry::Generic, tile))
                .collect());
        }
        let filter = self
            .filter
            .as_ref()
            .ok_or("`filter` is missing (e.g. `filter = \"9x9\"`), or set `generic = true`")?
            .parse("filter")
            .map_err(|e| e.to_string())?;
        let stride = match &self.stride {
            Some(stride) => stride.parse("stride").map_err(|e| e.to_string())?,
            None => [1, 1],
        };
        let geometry = FixedGeometry::new(filter, stride);
        Ok(tiles
            .into_iter()
            .map(|tile| spec(Geometry::Fixed(geometry), tile))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Geometry;

    #[test]
    fn parses_every_form() {
        let manifest = Manifest::parse(
            r#"
            name = "custom"
            archs = "90"
            [[kernel]]
            filter = "9x9"
            stride = 3
            [[kernel]]
            filter = 5
            stride = "2x1"
            tile = ["64x64x8/4x4", "b128x128x8_t8x8"]
            [[kernel]]
            generic = true
            tile = "128x128x8/8x8"
            [[kernel]]
            filter = "2x1"
            "#,
        )
        .unwrap();
        assert_eq!(manifest.name, "custom");
        assert_eq!(manifest.archs.as_deref(), Some("90"));
        let names: Vec<String> = manifest
            .catalogue
            .kernels
            .iter()
            .map(|k| k.name())
            .collect();
        // Without `tile`, a kernel gets every default tile.
        let tiles = DEFAULT_TILES.len();
        let mut expected: Vec<String> = DEFAULT_TILES
            .iter()
            .map(|t| format!("im2win_f32_r9s9_s3x3_{}", t.name()))
            .collect();
        expected.extend([
            "im2win_f32_r5s5_s2x1_b64x64x8_t4x4".to_string(),
            "im2win_f32_r5s5_s2x1_b128x128x8_t8x8".to_string(),
            "im2win_f32_generic_b128x128x8_t8x8".to_string(),
        ]);
        expected.extend(
            DEFAULT_TILES
                .iter()
                .map(|t| format!("im2win_f32_r2s1_s1x1_{}", t.name())),
        );
        assert_eq!(names, expected);
        assert!(matches!(
            manifest.catalogue.kernels[tiles + 2].geometry,
            Geometry::Generic
        ));
    }

    #[test]
    fn errors_say_what_and_where() {
        let cases = [
            (
                "name = \"a b\"\n[[kernel]]\nfilter = 3",
                "not a valid module name",
            ),
            ("name = \"x\"", "no kernels"),
            (
                "name = \"x\"\n[[kernel]]\nstride = 2",
                "`filter` is missing",
            ),
            (
                "name = \"x\"\n[[kernel]]\nfilter = \"3y3\"",
                "not a valid filter",
            ),
            ("name = \"x\"\n[[kernel]]\nfilter = 3\nstrde = 2", "strde"),
            (
                "name = \"x\"\n[[kernel]]\nfilter = 3\ntile = \"8x8x8/8x8\"",
                "invalid tile",
            ),
            (
                "name = \"x\"\n[[kernel]]\nfilter = 3\n[[kernel]]\nfilter = 3",
                "twice",
            ),
            (
                "name = \"x\"\n[[kernel]]\ngeneric = true\nfilter = 3",
                "drop `filter`",
            ),
            (
                "name = \"x\"\n[[kernel]]\nfilter = 3\ndtype = \"f64\"",
                "unknown data type",
            ),
        ];
        for (text, expected) in cases {
            let err = Manifest::parse(text).unwrap_err().to_string();
            assert!(err.contains(expected), "{text:?}: {err}");
        }
        let err = Manifest::read("/nonexistent/im2win.toml").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/nonexistent/im2win.toml: cannot read it")
        );
    }

    #[test]
    fn tensor_core_types() {
        let manifest = Manifest::parse(
            r#"
            name = "tc"
            [[kernel]]
            dtype = "bf16"
            filter = 3
            tile = "64x128x32/32x64"
            [[kernel]]
            dtype = "tf32"
            generic = true
            tile = "b96x128x16_w48x64"
            vector = false
            "#,
        )
        .unwrap();
        let [bf16, tf32] = manifest.catalogue.kernels[..] else {
            panic!("{:?}", manifest.catalogue);
        };
        for spec in [bf16, tf32] {
            assert_eq!(
                (spec.math, spec.layout, spec.variant.fused),
                (Math::TensorOp, crate::Layout::Nhwc, true)
            );
        }
        assert_eq!(bf16.dtype, DType::Bf16);
        assert_eq!(
            bf16.name(),
            "im2win_bf16_r3s3_s1x1_b64x128x32_w32x64_fused_nhwc"
        );
        assert_eq!(tf32.dtype, DType::F32);
        assert_eq!(
            tf32.name(),
            "im2win_tf32_generic_b96x128x16_w48x64_fused_novec_nhwc"
        );
        // Without a tile: every default tensor-core tile, in the type's element size.
        let defaults = Manifest::parse("name = \"x\"\n[[kernel]]\nfilter = 1\ndtype = \"f16\"")
            .unwrap()
            .catalogue
            .kernels;
        assert_eq!(defaults.len(), TENSOR_OP_TILES.len());
        assert_eq!(defaults[0].tile, TENSOR_OP_TILES[0].tile(DType::F16));
        // A SIMT tile is no tensor-core tile (8 deep: not a whole 16-deep MMA), and `vector`
        // is the tensor-core kernels' choice.
        let err = Manifest::parse(
            "name = \"x\"\n[[kernel]]\nfilter = 3\ndtype = \"f16\"\ntile = \"128x128x8/8x8\"",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("multiple of 16"), "{err}");
        let err = Manifest::parse("name = \"x\"\n[[kernel]]\nfilter = 3\nvector = false")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`vector`"), "{err}");
    }
}
