//! `im2win tune`: measure which kernel is fastest for each layer of the built-in suites and
//! write the tuning table that `im2win::engine` applies by default.
//!
//! Every kernel of the catalogue that can compute a layer is timed by
//! [`Engine::autotune`](im2win::Engine::autotune); the table records the fastest, and the
//! heuristic's choice for comparison.

use std::path::PathBuf;

use clap::Args;
use im2win::{Conv2dProblem, Engine, TuningTable};
use indicatif::{ProgressBar, ProgressStyle};

use crate::error::{Context, Result};
use crate::suite::Suite;

/// Arguments of `im2win tune`.
#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Batch sizes to tune the paper suite at (none: `--paper` alone).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "128")]
    pub paper: Vec<usize>,
    /// Batch sizes to tune ResNet-50 at (none: `--resnet50` alone).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "1,32,128")]
    pub resnet50: Vec<usize>,
    /// Batch sizes to tune VGG-16 at (none: `--vgg16` alone).
    #[arg(long, value_delimiter = ',', num_args = 0.., default_value = "32")]
    pub vgg16: Vec<usize>,
    /// Where to write the table.
    #[arg(long, default_value = "tuning/nvidia-h200.json")]
    pub out: PathBuf,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0)]
    pub device: usize,
    /// Memory order of the tuned problems (`nchw`, or `nhwc` with KRSC filters): entries are
    /// keyed by layout, so each layout is tuned on its own.
    #[arg(long, default_value = "nchw")]
    pub layout: im2win::Layout,
    /// A table (from `im2win tune`) whose entries the new table starts from: measuring one
    /// layout adds its entries and keeps the other's. A problem measured again replaces its
    /// entry.
    #[arg(long, value_name = "FILE")]
    pub merge: Option<PathBuf>,
}

/// The distinct problems of the selected suites, in suite order.
fn problems(args: &TuneArgs) -> Vec<(String, Conv2dProblem)> {
    let suites = args
        .paper
        .iter()
        .map(|&b| Suite::paper(b))
        .chain(args.resnet50.iter().map(|&b| Suite::resnet50(b)))
        .chain(args.vgg16.iter().map(|&b| Suite::vgg16(b)))
        .map(|suite| suite.with_layout(args.layout));
    let mut seen = Vec::new();
    for suite in suites {
        for layer in suite.layers {
            if !seen.iter().any(|(_, p)| *p == layer.problem) {
                seen.push((
                    format!("{}-n{}/{}", suite.name, suite.batch, layer.name),
                    layer.problem,
                ));
            }
        }
    }
    seen
}

/// Runs `im2win tune`: tunes every problem, writes the table (after each problem, so an
/// interrupted run keeps what it measured) and prints the choices.
pub fn run(args: &TuneArgs) -> Result<()> {
    let mut engine =
        Engine::new(args.device, im2win::kernels()).context("starting the im2win engine")?;
    if let Some(path) = &args.merge {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let table = TuningTable::from_json(&text)
            .with_context(|| format!("reading the tuning table {}", path.display()))?;
        if table.device != engine.tuning().device {
            return Err(crate::error::BenchError::new(format!(
                "{} was measured on {}, this GPU is {}: its entries would not apply here",
                path.display(),
                table.device,
                engine.tuning().device
            )));
        }
        engine = engine.with_tuning(table);
    }
    let problems = problems(args);
    let bar = ProgressBar::new(problems.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut lines = Vec::new();
    for (name, problem) in &problems {
        bar.set_message(name.clone());
        let entry = engine
            .autotune(problem)
            .with_context(|| format!("tuning {name}"))?;
        lines.push(format!(
            "{name:44} {:>9.4} ms  heuristic {:>9.4} ms  ({:.2}x)  {}",
            entry.median_ms,
            entry.heuristic_ms,
            entry.heuristic_ms / entry.median_ms,
            entry.kernel
        ));
        write_table(&engine.tuning(), args)?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    for line in lines {
        println!("{line}");
    }
    println!("wrote {}", args.out.display());
    Ok(())
}

fn write_table(table: &TuningTable, args: &TuneArgs) -> Result<()> {
    if let Some(dir) = args.out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&args.out, table.to_json() + "\n")
        .with_context(|| format!("writing {}", args.out.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_distinct_and_cover_every_suite() {
        let args = TuneArgs {
            paper: vec![128],
            resnet50: vec![1, 32],
            vgg16: vec![32],
            out: PathBuf::from("x.json"),
            device: 0,
            layout: im2win::Layout::Nchw,
            merge: None,
        };
        let nchw = problems(&args);
        // 12 paper layers, 23 distinct ResNet-50 layers at each of two batches, and 9 VGG-16
        // layers (none repeats another suite's exact problem).
        assert_eq!(nchw.len(), 12 + 2 * 23 + 9);
        for (i, (_, p)) in nchw.iter().enumerate() {
            assert!(nchw[i + 1..].iter().all(|(_, q)| q != p));
        }
        let nhwc = problems(&TuneArgs {
            layout: im2win::Layout::Nhwc,
            ..args
        });
        assert_eq!(nhwc.len(), nchw.len());
        assert!(nhwc.iter().all(|(_, p)| p.layout == im2win::Layout::Nhwc
            && p.filter_layout == im2win::FilterLayout::Krsc));
    }
}
