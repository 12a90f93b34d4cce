//! The `im2win` command.
//!
//! `im2win bench` measures im2win against cuDNN, im2col + cuBLAS and a direct convolution on
//! the paper's layers, ResNet-50, VGG-16 or any single layer, and writes a JSON report, an
//! SVG chart and a terminal table; `im2win bench --device cpu` measures the CPU backend and
//! the CPU's FMA peak instead. `im2win tune` measures the fastest kernel per layer and
//! writes the tuning table; `im2win kernels` lists the compiled kernels and their resources.

// The argument structs' doc comments are clap's --help text, written for a terminal
// (`<suite>-f32-n<batch>.json`, `N,C,H,W,...[,DILATION]`), not rustdoc markup.
#![allow(rustdoc::broken_intra_doc_links, rustdoc::invalid_html_tags)]

mod ablation;
mod alloc;
mod args;
mod buffers;
mod chart;
mod cpu;
mod error;
mod gpu;
mod kernels;
mod method;
mod methods;
mod peak;
mod reference;
mod report;
mod runner;
mod stats;
mod suite;
mod table;
mod timing;
mod tune;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::{BenchArgs, MIN_REPS};
use crate::error::{Context, Result};
use crate::report::Report;

/// Counts heap bytes, so that `--device cpu` can report each call's extra memory.
#[global_allocator]
static ALLOCATOR: alloc::Counting = alloc::Counting;

/// im2win: 2-D convolution on NVIDIA GPUs with the im2win layout.
#[derive(Debug, Parser)]
#[command(name = "im2win", version, about)]
struct Cli {
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Benchmark im2win against cuDNN, im2col + cuBLAS and direct convolution.
    Bench(BenchArgs),
    /// Time every candidate kernel for the suites' layers and write the tuning table.
    Tune(tune::TuneArgs),
    /// List the compiled kernels with their registers, shared memory and spills.
    Kernels,
    /// Draw the chart (SVG) of a report written by `im2win bench`, without running anything:
    /// for a report whose chart was lost.
    Chart {
        /// The report (JSON).
        report: PathBuf,
        /// Where to write the chart [default: the report's path with .svg].
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Bench(args) => bench(args),
        Command::Tune(args) => tune::run(args),
        Command::Kernels => kernels::run(),
        Command::Chart { report, out } => redraw_chart(report, out.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("im2win: error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// `im2win chart`: the SVG of a saved report.
fn redraw_chart(report: &Path, out: Option<&Path>) -> Result<()> {
    let text =
        std::fs::read_to_string(report).with_context(|| format!("reading {}", report.display()))?;
    let parsed: Report = serde_json::from_str(&text)
        .with_context(|| format!("reading the report {}", report.display()))?;
    let path = out.map_or_else(|| report.with_extension("svg"), Path::to_path_buf);
    write(&path, &chart::render(&parsed))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// `im2win bench`: runs the suite, writing the JSON and the chart after every layer and at
/// the end, then prints the table.
fn bench(args: &BenchArgs) -> Result<()> {
    let (config, json_path, chart_path) = args.config()?;
    if config.timing.reps < MIN_REPS {
        eprintln!(
            "im2win: warning: --reps {} is below {MIN_REPS}; fine for a try, not for published results",
            config.timing.reps
        );
    }
    let mut save = |report: &Report| -> Result<()> {
        let json = serde_json::to_string_pretty(report).context("serialising the report")?;
        write(&json_path, &(json + "\n"))?;
        write(&chart_path, &chart::render(report))
    };
    let report = match config.cpu_threads {
        Some(threads) => cpu::run(&config, threads, &mut save)?,
        None => runner::run(&config, &mut save)?,
    };
    save(&report)?;
    println!("{}", table::render(&report));
    println!("wrote {} and {}", json_path.display(), chart_path.display());
    if let Some(ablation) = ablation::render(&report) {
        let path = json_path.with_extension("ablation.md");
        write(&path, &ablation)?;
        println!("\n{ablation}\nwrote {}", path.display());
    }
    Ok(())
}

/// Writes `text` to `path`, creating its folder.
fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::method::CudnnAlgo;

    fn parse(args: &[&str]) -> std::result::Result<BenchArgs, clap::Error> {
        let cli = Cli::try_parse_from(std::iter::once("im2win").chain(args.iter().copied()))?;
        match cli.command {
            Command::Bench(bench) => Ok(bench),
            other => panic!("not a bench command: {other:?}"),
        }
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults() {
        let args = parse(&["bench"]).unwrap();
        let (config, json, chart) = args.config().unwrap();
        assert_eq!(config.suite.name, "paper");
        assert_eq!(config.suite.batch, 128);
        assert_eq!(config.suite.layers.len(), 12);
        assert_eq!(config.selection, crate::method::Selection::all());
        assert!(config.timing.reps >= MIN_REPS);
        assert_eq!(config.max_workspace_bytes, 8 << 30);
        assert_eq!(json, PathBuf::from("bench/results/paper-f32-n128.json"));
        assert_eq!(chart, PathBuf::from("bench/results/paper-f32-n128.svg"));
        assert_eq!(config.device, 0);
        assert_eq!(config.cpu_threads, None);
    }

    #[test]
    fn cpu_runs() {
        let args = parse(&["bench", "--device", "cpu", "--threads", "3", "--batch", "8"]).unwrap();
        let (config, json, _) = args.config().unwrap();
        assert_eq!(config.cpu_threads, Some(3));
        assert_eq!(
            json,
            PathBuf::from("bench/results/cpu-paper-f32-nchw-n8.json")
        );
        let args = parse(&[
            "bench", "--device", "CPU", "--suite", "resnet50", "--batch", "1",
        ])
        .unwrap();
        let (config, json, _) = args.config().unwrap();
        assert!(config.cpu_threads.unwrap() >= 1);
        assert_eq!(
            json,
            PathBuf::from("bench/results/cpu-resnet50-f32-nchw-n1.json")
        );
        assert!(parse(&["bench", "--device", "gpu"]).is_err());
        assert!(parse(&["bench", "--device", "cpu", "--threads", "0"]).is_err());
    }

    #[test]
    fn suites_batches_and_paths() {
        let args = parse(&["bench", "--suite", "resnet50", "--batch", "32"]).unwrap();
        let (config, json, _) = args.config().unwrap();
        assert_eq!(config.suite.name, "resnet50");
        assert!(config.suite.has_total);
        assert_eq!(config.suite.layers[0].problem.input[0], 32);
        assert_eq!(json, PathBuf::from("bench/results/resnet50-f32-n32.json"));

        let args = parse(&[
            "bench", "--suite", "vgg16", "--batch", "1", "--out", "x/v.json",
        ])
        .unwrap();
        let (config, json, chart) = args.config().unwrap();
        assert_eq!(config.suite.layers.len(), 9);
        assert_eq!(
            (json, chart),
            (PathBuf::from("x/v.json"), PathBuf::from("x/v.svg"))
        );

        let args = parse(&["bench", "--chart", "c.svg"]).unwrap();
        assert_eq!(args.config().unwrap().2, PathBuf::from("c.svg"));
    }

    #[test]
    fn tuning_tables() {
        let (config, _, _) = parse(&["bench"]).unwrap().config().unwrap();
        assert!(matches!(config.tuning, crate::runner::Tuning::BuiltIn));
        let (table, name) = config.tuning.table();
        assert!(!table.entries.is_empty() && name.contains("built in"));

        let dir = std::env::temp_dir().join(format!("im2win-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("table.json");
        std::fs::write(&good, im2win::default_tuning().to_json()).unwrap();
        let args = parse(&["bench", "--tuning", good.to_str().unwrap()]).unwrap();
        let (table, name) = args.config().unwrap().0.tuning.table();
        assert_eq!(table, im2win::default_tuning());
        assert_eq!(name, good.display().to_string());

        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{}").unwrap();
        for path in [bad, dir.join("missing.json")] {
            let err = parse(&["bench", "--tuning", path.to_str().unwrap()])
                .unwrap()
                .config()
                .expect_err("an unusable table is an error");
            assert!(err.to_string().contains("tuning table"), "{err}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dtypes() {
        use im2win::{DType, Precision};
        let (config, json, _) = parse(&["bench", "--dtype", "bf16", "--suite", "resnet50"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(
            json,
            PathBuf::from("bench/results/resnet50-bf16-nchw-n128.json")
        );
        assert!(
            config
                .suite
                .layers
                .iter()
                .all(|l| l.problem.dtype == DType::Bf16)
        );
        let (config, json, _) = parse(&["bench", "--dtype", "tf32", "--layout", "nhwc"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(
            json,
            PathBuf::from("bench/results/paper-tf32-nhwc-n128.json")
        );
        assert!(
            config.suite.layers.iter().all(|l| {
                (l.problem.dtype, l.problem.precision) == (DType::F32, Precision::Tf32)
            })
        );
        assert_eq!(config.suite.numeric_name(), "tf32");
        let (_, json, _) = parse(&[
            "bench", "--dtype", "f16", "--batch", "1", "--layout", "nhwc",
        ])
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(json, PathBuf::from("bench/results/paper-f16-nhwc-n1.json"));
        // The default is strict float32, named as before.
        let (config, json, _) = parse(&["bench", "--dtype", "f32"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!(json, PathBuf::from("bench/results/paper-f32-n128.json"));
        assert_eq!(config.suite.layers[0].problem.precision, Precision::Strict);
        assert!(parse(&["bench", "--dtype", "f64"]).is_err());
        assert!(
            parse(&["bench", "--dtype", "bf16", "--device", "cpu"])
                .unwrap()
                .config()
                .is_err()
        );
    }

    #[test]
    fn single_layer() {
        let args = parse(&["bench", "--layer", "8,64,56,56,64,3,3,1,1"]).unwrap();
        let (config, json, _) = args.config().unwrap();
        assert_eq!(config.suite.name, "layer");
        assert_eq!(config.suite.batch, 8);
        assert_eq!(config.suite.layers[0].name, "c64_h56_k64_r3_s1_p1");
        assert_eq!(json, PathBuf::from("bench/results/layer-f32-n8.json"));
        // A layer and a suite (or a batch) together are refused.
        assert!(
            parse(&[
                "bench",
                "--layer",
                "8,64,56,56,64,3,3,1,1",
                "--suite",
                "vgg16"
            ])
            .is_err()
        );
        assert!(parse(&["bench", "--layer", "8,64,56,56,64,3,3,1,1", "--batch", "4"]).is_err());
        // A bad layer parses as text but fails in `config`.
        assert!(
            parse(&["bench", "--layer", "1,2,3"])
                .unwrap()
                .config()
                .is_err()
        );
    }

    #[test]
    fn methods_and_numbers() {
        let args = parse(&[
            "bench",
            "--methods",
            "im2win,cudnn:FFT",
            "--reps",
            "30",
            "--warmup",
            "0",
            "--max-workspace-gib",
            "0.5",
            "--device",
            "1",
            "--seed",
            "9",
        ])
        .unwrap();
        let (config, _, _) = args.config().unwrap();
        assert!(config.selection.im2win && !config.selection.direct);
        assert_eq!(config.selection.cudnn_algos, vec![CudnnAlgo::Fft]);
        assert_eq!((config.timing.reps, config.timing.warmup), (30, 0));
        assert_eq!(config.max_workspace_bytes, 1 << 29);
        assert_eq!((config.device, config.seed), (1, 9));

        assert!(
            parse(&["bench", "--methods", "nope"])
                .unwrap()
                .config()
                .is_err()
        );
        assert!(parse(&["bench", "--reps", "0"]).is_err());
        assert!(parse(&["bench", "--batch", "0"]).is_err());
        assert!(parse(&["bench", "--suite", "alexnet"]).is_err());
        assert!(
            parse(&["bench", "--max-workspace-gib=-1"])
                .unwrap()
                .config()
                .is_err()
        );
        assert!(
            parse(&["bench", "--max-workspace-gib", "NaN"])
                .unwrap()
                .config()
                .is_err()
        );
        assert!(parse(&[]).is_err(), "a subcommand is required");
    }
}
