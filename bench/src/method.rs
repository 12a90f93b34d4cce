//! The methods a layer is run with, their names in the report, and `--methods` parsing.

use std::fmt;

use im2win::codegen::{Catalogue, DType, KernelSpec, TileConfig, Variant};

use crate::error::{BenchError, Result};

/// cuDNN's eight forward-convolution algorithms (`cudnnConvolutionFwdAlgo_t`), named as in
/// the report (`cudnn:<NAME>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CudnnAlgo {
    /// `CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM`.
    ImplicitGemm,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM`.
    ImplicitPrecompGemm,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_GEMM`.
    Gemm,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_DIRECT`.
    Direct,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_FFT`.
    Fft,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_FFT_TILING`.
    FftTiling,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD`.
    Winograd,
    /// `CUDNN_CONVOLUTION_FWD_ALGO_WINOGRAD_NONFUSED`.
    WinogradNonfused,
}

impl CudnnAlgo {
    /// All eight, in cuDNN's enumeration order.
    pub const ALL: [CudnnAlgo; 8] = [
        CudnnAlgo::ImplicitGemm,
        CudnnAlgo::ImplicitPrecompGemm,
        CudnnAlgo::Gemm,
        CudnnAlgo::Direct,
        CudnnAlgo::Fft,
        CudnnAlgo::FftTiling,
        CudnnAlgo::Winograd,
        CudnnAlgo::WinogradNonfused,
    ];

    /// The name after `CUDNN_CONVOLUTION_FWD_ALGO_`, e.g. `IMPLICIT_PRECOMP_GEMM`.
    pub fn name(self) -> &'static str {
        match self {
            CudnnAlgo::ImplicitGemm => "IMPLICIT_GEMM",
            CudnnAlgo::ImplicitPrecompGemm => "IMPLICIT_PRECOMP_GEMM",
            CudnnAlgo::Gemm => "GEMM",
            CudnnAlgo::Direct => "DIRECT",
            CudnnAlgo::Fft => "FFT",
            CudnnAlgo::FftTiling => "FFT_TILING",
            CudnnAlgo::Winograd => "WINOGRAD",
            CudnnAlgo::WinogradNonfused => "WINOGRAD_NONFUSED",
        }
    }

    /// The algorithm with this name (case-insensitive, with or without the
    /// `CUDNN_CONVOLUTION_FWD_ALGO_` prefix).
    pub fn parse(name: &str) -> Option<CudnnAlgo> {
        let upper = name.trim().to_ascii_uppercase();
        let short = upper
            .strip_prefix("CUDNN_CONVOLUTION_FWD_ALGO_")
            .unwrap_or(&upper);
        CudnnAlgo::ALL.into_iter().find(|a| a.name() == short)
    }
}

/// One way of computing a layer, as named in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// im2win's dispatch (`engine.conv2d`), transforms included: `im2win`.
    Im2win,
    /// im2win's plain convolution, then the epilogue as a separate elementwise kernel:
    /// `im2win-unfused` (runs with `--epilogue` only).
    Im2winUnfused,
    /// im2win's dispatch with the filter prepared once, outside the timed region
    /// (`Engine::prepare_filter`, then `Engine::conv2d_prepared`: inference with prepared
    /// weights): `im2win-prepared`.
    Im2winPrepared,
    /// One im2win kernel, forced, without a split reduction, transforms included:
    /// `im2win:<kernel name>` (the ablation's methods).
    Kernel(KernelSpec),
    /// The fastest correct cuDNN algorithm for the layer: `cudnn-best`.
    CudnnBest,
    /// One cuDNN algorithm: `cudnn:<ALGO>`.
    Cudnn(CudnnAlgo),
    /// Explicit im2col kernel + cuBLAS SGEMM: `im2col-cublas`.
    Im2colCublas,
    /// Plain direct convolution in float32: `direct`.
    Direct,
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Method::Im2win => f.write_str("im2win"),
            Method::Im2winUnfused => f.write_str("im2win-unfused"),
            Method::Im2winPrepared => f.write_str("im2win-prepared"),
            Method::Kernel(spec) => write!(f, "im2win:{spec}"),
            Method::CudnnBest => f.write_str("cudnn-best"),
            Method::Cudnn(algo) => write!(f, "cudnn:{}", algo.name()),
            Method::Im2colCublas => f.write_str("im2col-cublas"),
            Method::Direct => f.write_str("direct"),
        }
    }
}

/// Which methods to run, from `--methods`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Run and report `im2win`.
    pub im2win: bool,
    /// Run and report `im2win-unfused` (with an epilogue only).
    pub im2win_unfused: bool,
    /// Run and report `im2win-prepared`.
    pub im2win_prepared: bool,
    /// im2win kernels run one by one (`im2win:<kernel>`, `ablation`).
    pub kernels: Vec<KernelSpec>,
    /// Report `cudnn-best` (which needs every cuDNN algorithm timed).
    pub cudnn_best: bool,
    /// cuDNN algorithms reported one by one.
    pub cudnn_algos: Vec<CudnnAlgo>,
    /// Run and report `im2col-cublas`.
    pub im2col_cublas: bool,
    /// Run and report `direct`.
    pub direct: bool,
}

/// What `--methods` accepts, for error messages and `--help`.
pub const METHODS_HELP: &str = "comma-separated: all, im2win, im2win-unfused (with --epilogue: the \
plain convolution, then a separate elementwise epilogue kernel), im2win-prepared (the filter prepared \
once, outside the timed region: no filter transform), cudnn (every algorithm and cudnn-best), \
cudnn-best, cudnn:<ALGO> (IMPLICIT_GEMM, IMPLICIT_PRECOMP_GEMM, GEMM, DIRECT, FFT, FFT_TILING, \
WINOGRAD, WINOGRAD_NONFUSED), im2col-cublas, direct, im2win:<KERNEL> (one kernel by name, e.g. \
im2win:im2win_f32_generic_b128x128x8_t8x8), ablation (im2win and the ablation's kernels)";

/// The ablation's methods, in report order: the complete generic kernel with the paper's
/// tile, then the same kernel fused, then without each technique (`Catalogue::ablation`).
pub fn ablation_kernels() -> Vec<KernelSpec> {
    let complete = KernelSpec::generic(DType::F32, TileConfig::PAPER);
    [complete, complete.with_variant(Variant::FUSED)]
        .into_iter()
        .chain(Catalogue::ablation().kernels)
        .collect()
}

impl Selection {
    /// Every method: im2win, every cuDNN algorithm and the best of them, im2col + cuBLAS,
    /// direct.
    pub fn all() -> Selection {
        Selection {
            im2win: true,
            im2win_unfused: true,
            im2win_prepared: true,
            kernels: Vec::new(),
            cudnn_best: true,
            cudnn_algos: CudnnAlgo::ALL.to_vec(),
            im2col_cublas: true,
            direct: true,
        }
    }

    /// Parses a comma-separated `--methods` list (see [`METHODS_HELP`]).
    ///
    /// # Errors
    /// On an unknown name or an empty list.
    pub fn parse(list: &str) -> Result<Selection> {
        let mut sel = Selection {
            im2win: false,
            im2win_unfused: false,
            im2win_prepared: false,
            kernels: Vec::new(),
            cudnn_best: false,
            cudnn_algos: Vec::new(),
            im2col_cublas: false,
            direct: false,
        };
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "all" => sel = Selection::all(),
                "im2win" => sel.im2win = true,
                "im2win-unfused" => sel.im2win_unfused = true,
                "im2win-prepared" => sel.im2win_prepared = true,
                "cudnn" | "cudnn:all" => {
                    sel.cudnn_best = true;
                    sel.cudnn_algos = CudnnAlgo::ALL.to_vec();
                }
                "cudnn-best" => sel.cudnn_best = true,
                "im2col-cublas" => sel.im2col_cublas = true,
                "direct" => sel.direct = true,
                "ablation" => {
                    sel.im2win = true;
                    sel.add_kernels(ablation_kernels());
                }
                lower if lower.starts_with("im2win:") => {
                    // Kernel names are lower case.
                    let name = &lower["im2win:".len()..];
                    let spec = name.parse::<KernelSpec>().map_err(|err| {
                        BenchError::new(format!("unknown method `{item}`: {err}"))
                    })?;
                    sel.add_kernels([spec]);
                }
                lower => {
                    let algo = lower
                        .strip_prefix("cudnn:")
                        .and_then(CudnnAlgo::parse)
                        .ok_or_else(|| {
                            BenchError::new(format!(
                                "unknown method `{item}`; --methods is {METHODS_HELP}"
                            ))
                        })?;
                    if !sel.cudnn_algos.contains(&algo) {
                        sel.cudnn_algos.push(algo);
                    }
                }
            }
        }
        sel.cudnn_algos.sort();
        if sel.is_empty() {
            return Err(BenchError::new(format!(
                "--methods selects nothing; it is {METHODS_HELP}"
            )));
        }
        Ok(sel)
    }

    /// Adds kernels to run one by one, each once, in order.
    fn add_kernels(&mut self, specs: impl IntoIterator<Item = KernelSpec>) {
        for spec in specs {
            if !self.kernels.contains(&spec) {
                self.kernels.push(spec);
            }
        }
    }

    /// Whether nothing is selected.
    pub fn is_empty(&self) -> bool {
        !(self.im2win
            || self.im2win_unfused
            || self.im2win_prepared
            || self.cudnn_best
            || self.im2col_cublas
            || self.direct)
            && self.cudnn_algos.is_empty()
            && self.kernels.is_empty()
    }

    /// Whether any method needs cuDNN.
    pub fn needs_cudnn(&self) -> bool {
        self.cudnn_best || !self.cudnn_algos.is_empty()
    }

    /// The cuDNN algorithms to time: all eight when `cudnn-best` is reported (the best can
    /// only be known by timing every one), else those named.
    pub fn cudnn_algos_to_run(&self) -> Vec<CudnnAlgo> {
        if self.cudnn_best {
            CudnnAlgo::ALL.to_vec()
        } else {
            self.cudnn_algos.clone()
        }
    }

    /// How many timed runs a layer takes (for the progress bar): one per method, one per
    /// cuDNN algorithm run.
    pub fn steps_per_layer(&self) -> usize {
        usize::from(self.im2win)
            + usize::from(self.im2win_unfused)
            + usize::from(self.im2win_prepared)
            + self.kernels.len()
            + usize::from(self.im2col_cublas)
            + usize::from(self.direct)
            + self.cudnn_algos_to_run().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for algo in CudnnAlgo::ALL {
            assert_eq!(CudnnAlgo::parse(algo.name()), Some(algo));
            assert_eq!(CudnnAlgo::parse(&algo.name().to_lowercase()), Some(algo));
            let full = format!("CUDNN_CONVOLUTION_FWD_ALGO_{}", algo.name());
            assert_eq!(CudnnAlgo::parse(&full), Some(algo));
        }
        assert_eq!(CudnnAlgo::parse("FASTEST"), None);
        assert_eq!(
            Method::Cudnn(CudnnAlgo::FftTiling).to_string(),
            "cudnn:FFT_TILING"
        );
        assert_eq!(Method::CudnnBest.to_string(), "cudnn-best");
        assert_eq!(Method::Im2colCublas.to_string(), "im2col-cublas");
        assert_eq!(Method::Im2win.to_string(), "im2win");
        assert_eq!(Method::Direct.to_string(), "direct");
    }

    #[test]
    fn selection_parsing() {
        assert_eq!(Selection::parse("all").unwrap(), Selection::all());
        assert_eq!(Selection::all().steps_per_layer(), 13);

        let s = Selection::parse("im2win, cudnn-best").unwrap();
        assert!(s.im2win && s.cudnn_best && !s.direct && !s.im2col_cublas);
        assert!(s.cudnn_algos.is_empty());
        assert_eq!(
            s.cudnn_algos_to_run().len(),
            8,
            "the best needs every algorithm"
        );
        assert!(s.needs_cudnn());

        let s = Selection::parse("cudnn:fft,direct,cudnn:IMPLICIT_GEMM,cudnn:FFT").unwrap();
        assert_eq!(s.cudnn_algos, vec![CudnnAlgo::ImplicitGemm, CudnnAlgo::Fft]);
        assert_eq!(s.cudnn_algos_to_run(), s.cudnn_algos);
        assert!(!s.cudnn_best && s.direct);
        assert_eq!(s.steps_per_layer(), 3);

        let s = Selection::parse("cudnn").unwrap();
        assert!(s.cudnn_best && s.cudnn_algos.len() == 8 && !s.im2win);

        let s = Selection::parse("im2col-cublas").unwrap();
        assert!(!s.needs_cudnn() && s.im2col_cublas);

        let s = Selection::parse("ablation").unwrap();
        assert!(s.im2win && !s.needs_cudnn());
        assert_eq!(s.kernels, ablation_kernels());
        assert_eq!(s.steps_per_layer(), 6);
        let names: Vec<String> = s
            .kernels
            .iter()
            .map(|k| Method::Kernel(*k).to_string())
            .collect();
        assert_eq!(
            names,
            [
                "im2win:im2win_f32_generic_b128x128x8_t8x8",
                "im2win:im2win_f32_generic_b128x128x8_t8x8_fused",
                "im2win:im2win_f32_generic_b128x128x8_t8x8_nomicro",
                "im2win:im2win_f32_generic_b128x128x8_t8x8_novec",
                "im2win:im2win_f32_generic_b128x128x8_t8x8_nodb",
            ]
        );

        let s = Selection::parse("IM2WIN:im2win_f32_r3s3_s1x1_b64x64x8_t8x8_fused").unwrap();
        assert_eq!(
            s.kernels,
            ["im2win_f32_r3s3_s1x1_b64x64x8_t8x8_fused".parse().unwrap()]
        );
        assert!(!s.im2win);

        for bad in [
            "",
            " , ",
            "cudnn:fastest",
            "im2row",
            "cudnn:",
            "im2win:",
            "im2win:conv",
        ] {
            assert!(Selection::parse(bad).is_err(), "{bad:?}");
        }
    }
}
