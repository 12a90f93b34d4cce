//! Runs a suite: for each layer, the buffer sets and the reference output, then every
//! selected method; a progress bar while it runs; the report at the end.
//!
//! A method that fails (cuDNN does not support an algorithm, out of memory, ...) is skipped
//! with its reason, and the run goes on — unless the failure broke the CUDA context, which
//! stops the run with an error rather than reporting meaningless numbers.

use std::time::{SystemTime, UNIX_EPOCH};

use indicatif::{ProgressBar, ProgressStyle};

use im2win::DType;
use im2win::half::{bf16, f16};

use crate::buffers::{BufferSets, MAX_SETS, Operands, ROTATION_BYTES, rotation_sets, set_bytes};
use crate::error::{Context, Result};
use crate::gpu::Gpu;
use crate::method::{Method, Selection};
use crate::methods::{BenchElement, LayerRun, direct, im2win_conv};
use crate::reference::{cpu_checks, reference_output};
use crate::report::{LayerReport, MethodResult, Report, Settings, Skipped, network_total};
use crate::stats::{is_flagged_at, rel_err_limit};
use crate::suite::{Layer, Suite, gflop};
use crate::timing::TimingConfig;

/// Everything a run needs to know.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The layers.
    pub suite: Suite,
    /// The methods.
    pub selection: Selection,
    /// Warm-up and repetitions.
    pub timing: TimingConfig,
    /// CUDA device ordinal.
    pub device: usize,
    /// `Some(threads)`: run on the CPU instead (`im2win bench --device cpu`).
    pub cpu_threads: Option<usize>,
    /// Cap on a cuDNN workspace or the im2col column buffer, in bytes.
    pub max_workspace_bytes: u64,
    /// The im2win engine's workspace limit, in bytes (`Engine::with_workspace_limit`).
    pub im2win_workspace_limit: Option<usize>,
    /// Seed of the random operands.
    pub seed: u64,
    /// The tuning table dispatch uses.
    pub tuning: Tuning,
}

/// The tuning table `im2win` dispatches with.
#[derive(Debug, Clone)]
pub enum Tuning {
    /// im2win's own (`im2win::default_tuning`).
    BuiltIn,
    /// A table read from a file (`--tuning`).
    File {
        /// Where it came from, for the report.
        path: std::path::PathBuf,
        /// The table.
        table: im2win::TuningTable,
    },
}

impl Tuning {
    /// Reads a table written by `im2win tune`.
    ///
    /// # Errors
    /// When the file cannot be read or is not a tuning table.
    pub fn load(path: &std::path::Path) -> Result<Tuning> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the tuning table {}", path.display()))?;
        let table = im2win::TuningTable::from_json(&text)
            .with_context(|| format!("parsing the tuning table {}", path.display()))?;
        Ok(Tuning::File {
            path: path.to_path_buf(),
            table,
        })
    }

    /// The table, and how the report names it.
    pub fn table(&self) -> (im2win::TuningTable, String) {
        match self {
            Tuning::BuiltIn => (
                im2win::default_tuning(),
                "built in (tuning/nvidia-h200.json)".to_string(),
            ),
            Tuning::File { path, table } => (table.clone(), path.display().to_string()),
        }
    }
}

/// Runs the whole suite and returns the report. After every layer, `checkpoint` gets the
/// report so far (so that an interrupted run still leaves its finished layers behind), and
/// a one-line summary of the layer is printed.
///
/// # Errors
/// When the GPU cannot be opened, the CUDA context breaks during the run, or `checkpoint`
/// fails.
pub fn run(
    config: &BenchConfig,
    checkpoint: &mut dyn FnMut(&Report) -> Result<()>,
) -> Result<Report> {
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let gpu = Gpu::open(
        config.device,
        &config.selection,
        &config.tuning,
        config.im2win_workspace_limit,
    )?;
    let limit = rel_err_limit(config.suite.dtype, config.suite.precision);
    let mut report = Report {
        device: gpu.device.clone(),
        suite: config.suite.name.clone(),
        dtype: config.suite.numeric_name().into(),
        batch: config.suite.batch,
        layers: Vec::with_capacity(config.suite.layers.len() + 1),
        settings: Settings {
            reps: config.timing.reps,
            warmup: config.timing.warmup,
            rotation_bytes: ROTATION_BYTES,
            max_workspace_bytes: config.max_workspace_bytes,
            im2win_workspace_limit_bytes: config.im2win_workspace_limit.map(|b| b as u64),
            rel_err_limit: limit,
            unix_time,
        },
        software: gpu.software.clone(),
        layout: Some(config.suite.layout.to_string()),
        threads: None,
        peak_gflops: None,
    };
    let steps = config.suite.layers.len() * config.selection.steps_per_layer();
    let progress = ProgressBar::new(steps as u64);
    if let Ok(style) =
        ProgressStyle::with_template("[{elapsed_precise}] {bar:30} {pos}/{len} {msg}")
    {
        progress.set_style(style);
    }
    for (index, layer) in config.suite.layers.iter().enumerate() {
        let seed = config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64);
        // Buffers of the layer's element type, and every method on them.
        let done = match layer.problem.dtype {
            DType::F32 => bench_layer::<f32>(&gpu, layer, config, seed, &progress)?,
            DType::Bf16 => bench_layer::<bf16>(&gpu, layer, config, seed, &progress)?,
            DType::F16 => bench_layer::<f16>(&gpu, layer, config, seed, &progress)?,
        };
        note(&progress, summary_line(&done));
        report.layers.push(done);
        checkpoint(&report)?;
    }
    progress.finish_and_clear();
    if config.suite.has_total {
        let total = network_total(&report.layers);
        report.layers.push(total);
    }
    Ok(report)
}

/// `conv1 (27.0 GFLOP): im2win 1.2 ms 22.5 TFLOP/s · cudnn-best …`, flagged results marked.
fn summary_line(layer: &LayerReport) -> String {
    let results: Vec<String> = layer
        .results
        .iter()
        .filter(|r| !r.method.starts_with("cudnn:"))
        .map(|r| {
            format!(
                "{} {:.4} ms {:.2} TFLOP/s{}",
                r.method,
                r.median_ms,
                r.tflops,
                if r.flagged { " WRONG" } else { "" }
            )
        })
        .collect();
    format!(
        "{} ({:.2} GFLOP): {}",
        layer.name,
        layer.gflop,
        results.join(" · ")
    )
}

/// Prints a line above the progress bar (also when the bar is hidden, e.g. in a log file).
fn note(progress: &ProgressBar, line: String) {
    progress.suspend(|| eprintln!("{line}"));
}

/// The results of one layer so far, and the bookkeeping of each step.
struct Steps<'a> {
    gpu: &'a Gpu,
    layer: &'a Layer,
    progress: &'a ProgressBar,
    skipped: Vec<Skipped>,
    /// The relative error above which a result of this layer's precision is wrong.
    limit: f64,
}

impl Steps<'_> {
    /// Runs one method step: progress, and on failure the skip (or the end of the run if
    /// the CUDA context broke).
    fn step(
        &mut self,
        method: Method,
        run: impl FnOnce() -> Result<MethodResult>,
    ) -> Result<Option<MethodResult>> {
        self.progress
            .set_message(format!("{} {method}", self.layer.name));
        let outcome = run();
        self.progress.inc(1);
        match outcome {
            Ok(mut result) => {
                // Judged at the layer's precision (a bf16 result is not wrong at 1e-3).
                result.flagged = is_flagged_at(result.rel_err, self.limit);
                if result.flagged {
                    note(
                        self.progress,
                        format!(
                            "{} {method}: WRONG RESULT, rel_err {:e} > {:e}",
                            self.layer.name, result.rel_err, self.limit
                        ),
                    );
                }
                Ok(Some(result))
            }
            Err(err) => {
                self.gpu.healthy().with_context(|| {
                    format!("{} {method} failed ({err}), and then", self.layer.name)
                })?;
                self.skip(method.to_string(), err.to_string());
                Ok(None)
            }
        }
    }

    /// Records that `method` did not run, and says so.
    fn skip(&mut self, method: String, reason: String) {
        note(
            self.progress,
            format!("{} {method}: skipped: {reason}", self.layer.name),
        );
        self.skipped.push(Skipped { method, reason });
    }
}

/// Benchmarks one layer with every selected method, on buffers of its element type `T`.
fn bench_layer<T: BenchElement>(
    gpu: &Gpu,
    layer: &Layer,
    config: &BenchConfig,
    seed: u64,
    progress: &ProgressBar,
) -> Result<LayerReport> {
    let gflop = gflop(&layer.problem)?;
    let selection = &config.selection;
    let mut report = LayerReport {
        name: layer.name.clone(),
        gflop,
        results: Vec::new(),
        count: Some(layer.count),
        problem: Some(layer.problem),
        rotation_sets: None,
        reference: None,
        skipped: Vec::new(),
    };
    let mut steps = Steps {
        gpu,
        layer,
        progress,
        skipped: Vec::new(),
        limit: rel_err_limit(layer.problem.dtype, layer.problem.precision),
    };
    progress.set_message(format!("{} buffers and reference", layer.name));
    let mut run = match prepare::<T>(gpu, layer, config, gflop, seed) {
        Ok(run) => run,
        Err(err) => {
            gpu.healthy()
                .with_context(|| format!("{}: preparing failed ({err}), and then", layer.name))?;
            steps.skip("all".into(), err.to_string());
            progress.inc(selection.steps_per_layer() as u64);
            report.skipped = steps.skipped;
            return Ok(report);
        }
    };
    report.rotation_sets = Some(run.layer.sets.len());
    report.reference = Some(run.reference_kind.clone());
    let layer_run = &mut run.layer;

    let mut im2win: Vec<MethodResult> = Vec::new();
    if selection.im2win {
        im2win.extend(steps.step(Method::Im2win, || im2win_conv::run(layer_run))?);
    }
    // With an epilogue, only im2win computes the layer: the baselines measure the plain
    // convolution; the unfused im2win is the comparison instead.
    let plain = !layer.bias && layer.problem.epilogue.is_identity();
    if selection.im2win_unfused {
        if plain {
            steps.progress.inc(1);
        } else {
            im2win.extend(steps.step(Method::Im2winUnfused, || {
                im2win_conv::run_unfused(layer_run)
            })?);
        }
    }
    if selection.im2win_prepared {
        im2win.extend(steps.step(Method::Im2winPrepared, || {
            im2win_conv::run_prepared(layer_run)
        })?);
    }
    for &spec in &selection.kernels {
        let method = Method::Kernel(spec);
        im2win.extend(steps.step(method, || im2win_conv::run_kernel(layer_run, spec))?);
    }
    let nchw = layer.problem.layout == im2win::Layout::Nchw;
    // The im2col + GEMM and direct baselines compute dense convolutions only.
    let dense = layer.problem.groups == 1;
    let skip = |steps: &mut Steps<'_>, method: String, count: usize| {
        steps.progress.inc(count as u64);
        let why = if !dense {
            "dense convolutions only (groups = 1)"
        } else if plain {
            "NCHW only (an im2col + GEMM and a direct kernel of their own)"
        } else {
            "measures the plain convolution; with --epilogue only im2win runs"
        };
        steps.skip(method, why.into());
    };
    let strict_f32 = layer.problem.numeric_name() == "f32";
    let (best, algos) = if plain {
        cudnn_steps(&mut steps, layer_run, selection)?
    } else {
        if selection.needs_cudnn() {
            let count = selection.cudnn_algos_to_run().len();
            skip(&mut steps, "cudnn".into(), count);
        }
        (None, Vec::new())
    };
    let im2col = if selection.im2col_cublas && plain && nchw && dense {
        im2col_step(&mut steps, layer_run)?
    } else {
        if selection.im2col_cublas {
            skip(&mut steps, Method::Im2colCublas.to_string(), 1);
        }
        None
    };
    let direct = if selection.direct && plain && nchw && strict_f32 && dense {
        steps.step(Method::Direct, || direct::run(layer_run))?
    } else {
        if selection.direct && !strict_f32 && dense {
            steps.progress.inc(1);
            steps.skip(
                Method::Direct.to_string(),
                format!(
                    "computes strict float32 only, not {}",
                    layer.problem.numeric_name()
                ),
            );
        } else if selection.direct {
            skip(&mut steps, Method::Direct.to_string(), 1);
        }
        None
    };

    report.results = im2win
        .into_iter()
        .chain(best)
        .chain(algos)
        .chain(im2col)
        .chain(direct)
        .collect();
    report.skipped = steps.skipped;
    report.compare_with_cudnn();
    Ok(report)
}

/// A layer ready to run: buffers, reference, and how the reference was made.
struct Prepared<'a, T> {
    layer: LayerRun<'a, T>,
    reference_kind: String,
}

/// Allocates the layer's buffer sets (of its element type `T`) and computes its reference
/// output: the float64 convolution of set 0's values as the layer multiplies them.
fn prepare<'a, T: BenchElement>(
    gpu: &'a Gpu,
    layer: &Layer,
    config: &BenchConfig,
    gflop: f64,
    seed: u64,
) -> Result<Prepared<'a, T>> {
    let shape = layer.problem.shape().context("invalid layer")?;
    let operands = Operands {
        bias: layer.bias,
        residual: layer.problem.epilogue.residual,
    };
    let element = T::DTYPE.size_bytes();
    let count = rotation_sets(
        set_bytes(&shape, operands, element),
        ROTATION_BYTES,
        MAX_SETS,
    );
    let tf32 = layer.problem.precision == im2win::Precision::Tf32;
    let mut sets = BufferSets::<T>::new(gpu.engine.stream(), &shape, count, seed, tf32, operands)
        .with_context(|| format!("allocating {count} buffer sets"))?;
    let (reference, reference_kind) =
        reference_output(&gpu.engine, &layer.problem, &mut sets, cpu_checks(gflop))?;
    Ok(Prepared {
        layer: LayerRun {
            gpu,
            problem: layer.problem,
            shape,
            gflop,
            sets,
            reference,
            timing: config.timing,
            #[cfg(feature = "baselines")]
            max_workspace_bytes: config.max_workspace_bytes,
        },
        reference_kind,
    })
}

/// Every cuDNN algorithm that the selection needs, then `cudnn-best`. Returns the best and
/// the individually selected algorithms' results.
#[cfg(feature = "baselines")]
fn cudnn_steps<T: BenchElement>(
    steps: &mut Steps<'_>,
    run: &mut LayerRun<'_, T>,
    selection: &Selection,
) -> Result<(Option<MethodResult>, Vec<MethodResult>)> {
    use crate::methods::cudnn::{CudnnConv, best, run_algo};

    let algos = selection.cudnn_algos_to_run();
    if algos.is_empty() {
        return Ok((None, Vec::new()));
    }
    let gpu = steps.gpu;
    let conv = match &gpu.libraries.cudnn {
        Ok(handle) => CudnnConv::<T>::new(handle, &run.problem),
        Err(reason) => Err(crate::error::BenchError::new(reason.clone())),
    };
    let mut results = Vec::new();
    match conv {
        Ok(conv) => {
            for algo in algos {
                if let Some(result) =
                    steps.step(Method::Cudnn(algo), || run_algo(run, &conv, algo))?
                {
                    results.push((algo, result));
                }
            }
        }
        Err(err) => {
            steps.progress.inc(algos.len() as u64);
            steps.skip("cudnn".into(), err.to_string());
        }
    }
    let best = if selection.cudnn_best {
        let best = best(&results);
        if best.is_none() {
            steps.skip(
                Method::CudnnBest.to_string(),
                "no cuDNN algorithm ran".into(),
            );
        }
        best
    } else {
        None
    };
    let selected = results
        .into_iter()
        .filter(|(algo, _)| selection.cudnn_algos.contains(algo))
        .map(|(_, result)| result)
        .collect();
    Ok((best, selected))
}

/// Without the `baselines` feature there is no cuDNN: say so, for each cuDNN method.
#[cfg(not(feature = "baselines"))]
fn cudnn_steps<T>(
    steps: &mut Steps<'_>,
    _run: &mut LayerRun<'_, T>,
    selection: &Selection,
) -> Result<(Option<MethodResult>, Vec<MethodResult>)> {
    if selection.needs_cudnn() {
        let algos = selection.cudnn_algos_to_run();
        steps.progress.inc(algos.len() as u64);
        for algo in algos {
            steps.skip(Method::Cudnn(algo).to_string(), NO_BASELINES.into());
        }
        if selection.cudnn_best {
            steps.skip(Method::CudnnBest.to_string(), NO_BASELINES.into());
        }
    }
    Ok((None, Vec::new()))
}

/// `im2col-cublas`, if cuBLAS loaded.
#[cfg(feature = "baselines")]
fn im2col_step<T: BenchElement>(
    steps: &mut Steps<'_>,
    run: &mut LayerRun<'_, T>,
) -> Result<Option<MethodResult>> {
    let gpu = steps.gpu;
    match &gpu.libraries.cublas {
        Ok(blas) => steps.step(Method::Im2colCublas, || {
            crate::methods::im2col_cublas::run(run, blas)
        }),
        Err(reason) => {
            steps.progress.inc(1);
            steps.skip(Method::Im2colCublas.to_string(), reason.clone());
            Ok(None)
        }
    }
}

/// Without the `baselines` feature there is no cuBLAS: say so.
#[cfg(not(feature = "baselines"))]
fn im2col_step<T>(
    steps: &mut Steps<'_>,
    _run: &mut LayerRun<'_, T>,
) -> Result<Option<MethodResult>> {
    steps.progress.inc(1);
    steps.skip(Method::Im2colCublas.to_string(), NO_BASELINES.into());
    Ok(None)
}

/// Why cuDNN and cuBLAS methods are skipped in a build without them.
#[cfg(not(feature = "baselines"))]
const NO_BASELINES: &str =
    "this binary was built without the `baselines` feature (cuDNN and cuBLAS)";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::sample_report;

    #[test]
    fn summary_lines_name_every_method_but_single_algorithms() {
        let mut layer = sample_report().layers.remove(0);
        layer.results.push(MethodResult::new(
            "cudnn:FFT".into(),
            2.0,
            crate::report::fixtures::times(0.1),
            0,
            0.0,
        ));
        let line = summary_line(&layer);
        assert!(
            line.starts_with("conv1 (2.00 GFLOP): im2win 0.5000 ms 4.00 TFLOP/s · cudnn-best"),
            "{line}"
        );
        assert!(
            line.contains("direct 4.0000 ms 0.50 TFLOP/s WRONG"),
            "{line}"
        );
        assert!(!line.contains("FFT"), "{line}");
    }
}
