//! The command line of `im2win bench`.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::error::{BenchError, Result};
use crate::method::{METHODS_HELP, Selection};
use crate::report::{default_cpu_json_path, default_json_path};
use crate::runner::{BenchConfig, Tuning};
use crate::suite::{EpilogueMode, Suite};
use crate::timing::TimingConfig;

/// The built-in suites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SuiteName {
    /// The paper's 12 layers (padding 0), named conv1 … conv12.
    Paper,
    /// ResNet-50 v1.5: 23 distinct layers weighted by count, plus the network total.
    Resnet50,
    /// VGG-16: 9 distinct layers weighted by count, plus the network total.
    Vgg16,
    /// MobileNetV2 at 224×224: its 10 distinct depthwise 3×3 layers (17 in all) weighted by
    /// count, plus the total. Memory-bound: compare the bandwidth (`GB/s` in the report).
    Mobilenetv2,
}

/// Where a benchmark runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// The CPU backend.
    Cpu,
    /// The CUDA device of this ordinal.
    Gpu(usize),
}

/// `cpu`, or a CUDA device ordinal.
fn parse_device(text: &str) -> std::result::Result<Device, String> {
    if text.eq_ignore_ascii_case("cpu") {
        return Ok(Device::Cpu);
    }
    text.parse()
        .map(Device::Gpu)
        .map_err(|_| format!("`{text}` is neither `cpu` nor a CUDA device ordinal"))
}

/// `f32`, `tf32`, `f32x3`, `f32acc`, `bf16` or `f16`: an element type and precision.
fn parse_numeric(text: &str) -> std::result::Result<(im2win::DType, im2win::Precision), String> {
    im2win::Precision::from_numeric_name(text).ok_or_else(|| {
        format!("`{text}` is not one of `f32`, `tf32`, `f32x3`, `f32acc`, `bf16`, `f16`")
    })
}

/// The threads of a CPU run: `--threads`, else `RAYON_NUM_THREADS`, else every core.
fn cpu_threads(flag: Option<u32>) -> usize {
    flag.map(|t| t as usize)
        .or_else(|| {
            std::env::var("RAYON_NUM_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&t| t > 0)
        })
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The issue asks for at least this many repetitions.
pub const MIN_REPS: usize = 20;

/// `im2win bench`: im2win against cuDNN, im2col + cuBLAS and direct convolution.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Built-in suite to run.
    #[arg(long, value_enum, default_value = "paper", conflicts_with = "layer")]
    pub suite: SuiteName,
    /// One layer instead of a suite: N,C,H,W,K,R,S,stride,pad[,dilation] (stride, padding
    /// and dilation the same on both axes).
    #[arg(long, value_name = "N,C,H,W,K,R,S,STRIDE,PAD[,DILATION]")]
    pub layer: Option<String>,
    /// Batch size of the suite's layers.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..), conflicts_with = "layer")]
    pub batch: u32,
    /// Methods to run (default all).
    #[arg(long, default_value = "all", long_help = METHODS_HELP)]
    pub methods: String,
    /// Timed repetitions per method; the median is reported (at least 20 for results).
    #[arg(long, default_value_t = 25, value_parser = clap::value_parser!(u32).range(1..))]
    pub reps: u32,
    /// Untimed rounds over all buffer sets before timing (after the checked run).
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// JSON output [default: bench/results/<suite>-f32[-nhwc]-n<batch>[-<epilogue>].json,
    /// or <suite>-<dtype>-<layout>-n<batch>[-<epilogue>].json for another --dtype].
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// SVG chart output [default: the JSON path with .svg].
    #[arg(long)]
    pub chart: Option<PathBuf>,
    /// Where to run: a CUDA device ordinal, or `cpu` for the CPU backend (`im2win-cpu`,
    /// the measured FMA peak, and `torch-cpu` merged in by `bench/torch_anchor.py`).
    #[arg(long, default_value = "0", value_parser = parse_device)]
    pub device: Device,
    /// CPU runs: threads [default: RAYON_NUM_THREADS, else every core].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub threads: Option<u32>,
    /// Largest cuDNN workspace or im2col column buffer to use, in GiB; a cuDNN algorithm
    /// needing more is skipped, im2col runs in passes of fewer images.
    #[arg(long, default_value_t = 8.0)]
    pub max_workspace_gib: f64,
    /// Workspace limit of the im2win engine, in MiB (`Engine::with_workspace_limit`): its
    /// plans are the fastest within it (e.g. 0 with `im2win-prepared`: no workspace but a
    /// split's partial sums are refused too) [default: no limit].
    #[arg(long, value_name = "MIB")]
    pub im2win_workspace_mib: Option<f64>,
    /// Seed of the random input and filter values.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Tuning table (JSON written by `im2win tune`) to dispatch with instead of the one
    /// built into im2win (tuning/nvidia-h200.json): for measuring a fresh table without
    /// rebuilding.
    #[arg(long, value_name = "FILE")]
    pub tuning: Option<PathBuf>,
    /// Memory order of input and output (`nchw` or `nhwc`; NHWC runs use KRSC filters and
    /// cuDNN NHWC descriptors; im2col-cublas and direct are NCHW only).
    #[arg(long, default_value = "nchw")]
    pub layout: im2win::Layout,
    /// Element type and precision of every layer: `f32` (strict float32 on CUDA cores: no
    /// TF32 anywhere), `tf32` (float32 tensors, TF32 tensor cores allowed: cuDNN's default
    /// math, cuBLAS's FAST_TF32 compute type), `f32x3` (float32 at FP32 accuracy: im2win's
    /// 3xTF32 kernels only, against cuDNN's and cuBLAS's strict float32), `f32acc` (FP32
    /// accuracy, im2win's dispatch choosing strict or 3xTF32 per layer; baselines strict),
    /// `bf16` or `f16` (16-bit tensors, float32 accumulation, tensor-op math). Non-f32
    /// results go to `<suite>-<dtype>-<layout>-n<batch>.json` and are checked against the
    /// float64 convolution of the same rounded inputs, flagged above 1e-4 (f32x3, f32acc),
    /// 1e-3 (tf32, f16) or 8e-3 (bf16).
    #[arg(long, default_value = "f32", value_parser = parse_numeric)]
    pub dtype: (im2win::DType, im2win::Precision),
    /// The epilogue measured: `none` (plain convolution, every method), `bias-relu`, or
    /// `resnet` (ResNet-50's: bias, ReLU, and the residual where the network adds one).
    /// With an epilogue only im2win runs (fused, and `im2win-unfused`: the plain
    /// convolution then a separate elementwise kernel).
    #[arg(long, value_enum, default_value = "none")]
    pub epilogue: EpilogueMode,
}

impl BenchArgs {
    /// The run's configuration, and where to write the JSON and the chart.
    ///
    /// # Errors
    /// An invalid `--layer`, `--methods` or `--max-workspace-gib`.
    pub fn config(&self) -> Result<(BenchConfig, PathBuf, PathBuf)> {
        let suite = match &self.layer {
            Some(spec) => Suite::single(spec)?,
            None => {
                let batch = self.batch as usize;
                match self.suite {
                    SuiteName::Paper => Suite::paper(batch),
                    SuiteName::Resnet50 => Suite::resnet50(batch),
                    SuiteName::Vgg16 => Suite::vgg16(batch),
                    SuiteName::Mobilenetv2 => Suite::mobilenetv2(batch),
                }
            }
        };
        let (dtype, precision) = self.dtype;
        let suite = suite
            .with_layout(self.layout)
            .with_epilogue(self.epilogue)
            .with_numeric(dtype, precision);
        if self.device == Device::Cpu && suite.numeric_name() != "f32" {
            return Err(BenchError::new(format!(
                "--device cpu measures strict float32 only, not --dtype {}",
                suite.numeric_name()
            )));
        }
        if !(self.max_workspace_gib.is_finite() && self.max_workspace_gib >= 0.0) {
            return Err(BenchError::new(format!(
                "--max-workspace-gib must be a non-negative number, not {}",
                self.max_workspace_gib
            )));
        }
        if let Some(mib) = self.im2win_workspace_mib
            && !(mib.is_finite() && mib >= 0.0)
        {
            return Err(BenchError::new(format!(
                "--im2win-workspace-mib must be a non-negative number, not {mib}"
            )));
        }
        let cpu_threads = (self.device == Device::Cpu).then(|| cpu_threads(self.threads));
        let out = self.out.clone().unwrap_or_else(|| match cpu_threads {
            Some(_) => default_cpu_json_path(&suite.name, suite.layout, suite.batch),
            None => default_json_path(
                &suite.name,
                suite.batch,
                suite.layout,
                suite.epilogue,
                suite.numeric_name(),
            ),
        });
        let chart = self
            .chart
            .clone()
            .unwrap_or_else(|| out.with_extension("svg"));
        let config = BenchConfig {
            selection: Selection::parse(&self.methods)?,
            timing: TimingConfig {
                warmup: self.warmup as usize,
                reps: self.reps as usize,
            },
            device: match self.device {
                Device::Gpu(ordinal) => ordinal,
                Device::Cpu => 0,
            },
            cpu_threads,
            max_workspace_bytes: (self.max_workspace_gib * (1u64 << 30) as f64) as u64,
            im2win_workspace_limit: self
                .im2win_workspace_mib
                .map(|mib| (mib * (1u64 << 20) as f64) as usize),
            seed: self.seed,
            tuning: match &self.tuning {
                None => Tuning::BuiltIn,
                Some(path) => Tuning::load(path)?,
            },
            suite,
        };
        Ok((config, out, chart))
    }
}
