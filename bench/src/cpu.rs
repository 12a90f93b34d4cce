//! `im2win bench --device cpu`: the CPU backend (`im2win-cpu`) on every layer of a suite,
//! on a thread pool of the requested size, and the FMA peak of those threads.
//!
//! Each layer: random operands from the seed, one checked run (image 0 against the float64
//! CPU oracle), `warmup` untimed runs, then `reps` runs timed one by one with the wall
//! clock; the median is reported. The extra bytes are the most heap memory the call had in
//! use beyond its operands (a counting allocator), measured on a call that starts with the
//! backend's cached working buffers freed, so that they count. `torch-cpu` is added to the same JSON
//! by `bench/torch_anchor.py --device cpu`, timed the same way.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use im2win::Conv2dProblem;
use im2win::cpu::{
    Isa, conv2d_prepared, conv2d_with_isa, prepare_filter_with_isa, reference_conv2d,
};

use crate::alloc::extra_bytes;
use crate::buffers::random_values;
use crate::error::{BenchError, Context, Result};
use crate::report::{LayerReport, MethodResult, Report, Settings, network_total};
use crate::runner::BenchConfig;
use crate::stats::{REL_ERR_LIMIT, relative_error, summarize};
use crate::suite::{Layer, gflop};

/// The method name of the CPU backend in the report.
pub const METHOD: &str = "im2win-cpu";
/// The method name of the CPU backend with the filter prepared once
/// ([`im2win::cpu::prepare_filter`]), outside the timed calls.
pub const PREPARED_METHOD: &str = "im2win-cpu-prepared";

/// Runs the suite on `threads` threads; `checkpoint` gets the report after every layer.
///
/// # Errors
/// When the thread pool cannot start, the selected instruction set is unavailable, a
/// layer fails, or `checkpoint` fails.
pub fn run(
    config: &BenchConfig,
    threads: usize,
    checkpoint: &mut dyn FnMut(&Report) -> Result<()>,
) -> Result<Report> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("starting the thread pool")?;
    let isa = Isa::selected().context("choosing the CPU micro-kernel")?;
    let unix_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let load_before = load_average();
    let peaks = crate::peak::measure_each(&pool);
    let peak = crate::peak::best(&peaks);
    let each: Vec<String> = peaks
        .iter()
        .map(|(level, g)| format!("{level} {g:.1}"))
        .collect();
    eprintln!(
        "{}: {threads} threads, micro-kernel {isa}, FMA peak {peak:.1} GFLOP/s ({}), load average {load_before}",
        cpu_name(),
        each.join(", ")
    );
    let mut report = Report {
        device: cpu_name(),
        suite: config.suite.name.clone(),
        dtype: "f32".into(),
        batch: config.suite.batch,
        layers: Vec::with_capacity(config.suite.layers.len() + 1),
        settings: Settings {
            reps: config.timing.reps,
            warmup: config.timing.warmup,
            rotation_bytes: 0,
            max_workspace_bytes: 0,
            im2win_workspace_limit_bytes: None,
            rel_err_limit: REL_ERR_LIMIT,
            unix_time,
        },
        software: BTreeMap::from([
            ("im2win".to_string(), env!("CARGO_PKG_VERSION").to_string()),
            ("im2win-cpu isa".to_string(), isa.name().to_string()),
            ("load average before".to_string(), load_before),
            ("peak GFLOP/s per vector width".to_string(), each.join(", ")),
        ]),
        layout: Some(config.suite.layout.to_string()),
        threads: Some(threads),
        peak_gflops: Some(peak),
    };
    for (index, layer) in config.suite.layers.iter().enumerate() {
        let seed = config
            .seed
            .wrapping_mul(1_000_003)
            .wrapping_add(index as u64);
        let done = pool
            .install(|| bench_layer(layer, config, isa, seed))
            .with_context(|| format!("layer {}", layer.name))?;
        for r in &done.results {
            eprintln!(
                "{} ({:.3} GFLOP): {} {:.3} ms {:.1} GFLOP/s ({:.0}% of peak), rel_err {:.1e}{}",
                done.name,
                done.gflop,
                r.method,
                r.median_ms,
                r.tflops * 1e3,
                r.tflops * 1e5 / peak,
                r.rel_err,
                if r.flagged { " WRONG" } else { "" }
            );
        }
        report.layers.push(done);
        checkpoint(&report)?;
    }
    if config.suite.has_total {
        let total = network_total(&report.layers);
        report.layers.push(total);
    }
    report
        .software
        .insert("load average after".to_string(), load_average());
    Ok(report)
}

/// One layer: the methods selected (`im2win-cpu` unless `--methods` leaves out `im2win`,
/// `im2win-cpu-prepared` with `im2win-prepared`), each checked, warmed up, timed and its
/// extra memory measured, on the same operands.
fn bench_layer(layer: &Layer, config: &BenchConfig, isa: Isa, seed: u64) -> Result<LayerReport> {
    let problem = layer.problem;
    let shape = problem.shape().context("invalid layer")?;
    let gflop = gflop(&problem)?;
    let input = random_values(shape.input_len, seed);
    let filter = random_values(shape.filter_len, seed ^ 0x5eed);
    // The check: image 0 against the float64 oracle (the whole batch would cost the
    // oracle minutes on the large layers).
    let image = Conv2dProblem {
        input: [1, problem.input[1], problem.input[2], problem.input[3]],
        ..problem
    };
    let reference = reference_conv2d(
        &image,
        &input[..shape.input_len / problem.input[0]],
        &filter,
        None,
    )
    .context("running the float64 CPU oracle")?;
    let mut output = vec![f32::NAN; shape.output_len];
    let mut results = Vec::new();
    if config.selection.im2win {
        let conv = |output: &mut [f32]| {
            conv2d_with_isa(isa, &problem, &input, &filter, None, output).context(METHOD)
        };
        let (mut result, foreign) = measure(layer, config, gflop, &reference, &mut output, conv)?;
        result.detail = Some(format!("isa {isa}{foreign}"));
        results.push(result);
    }
    if config.selection.im2win_prepared {
        // Packed once, before (and outside) the timing and the memory count; what it holds
        // is in the detail.
        let prepared = prepare_filter_with_isa(isa, &problem, &filter).context(PREPARED_METHOD)?;
        let conv = |output: &mut [f32]| {
            conv2d_prepared(&problem, &input, &prepared, None, None, output)
                .context(PREPARED_METHOD)
        };
        let (mut result, foreign) = measure(layer, config, gflop, &reference, &mut output, conv)?;
        result.method = PREPARED_METHOD.into();
        result.detail = Some(format!(
            "isa {isa}, prepared filter {} bytes held outside the call{foreign}",
            prepared.bytes()
        ));
        results.push(result);
    }
    if results.is_empty() {
        return Err(BenchError::new(
            "--device cpu runs im2win (im2win-cpu) and im2win-prepared (im2win-cpu-prepared): --methods names neither",
        ));
    }
    Ok(LayerReport {
        name: layer.name.clone(),
        gflop,
        results,
        count: Some(layer.count),
        problem: Some(problem),
        rotation_sets: None,
        reference: Some("cpu-f64, image 0".into()),
        skipped: Vec::new(),
    })
}

/// One method on one layer: a checked run (image 0 against `reference`), the warm-up, the
/// extra memory of one call, then the timing (retried while the machine was busy). Returns
/// the result (named [`METHOD`]) and, for its detail, how much other processes used.
fn measure(
    layer: &Layer,
    config: &BenchConfig,
    gflop: f64,
    reference: &[f64],
    output: &mut [f32],
    conv: impl Fn(&mut [f32]) -> Result<()>,
) -> Result<(MethodResult, String)> {
    conv(output)?;
    let rel_err = relative_error(&output[..reference.len()], reference);
    output.fill(f32::NAN);
    for _ in 0..config.timing.warmup {
        conv(output)?;
    }
    // The backend keeps its working buffers between calls (`workspace_bytes`): freed
    // first, so that this call allocates, and the counting allocator sees, all it uses.
    im2win::cpu::release_workspace();
    let (result, extra) = extra_bytes(|| conv(output));
    result?;
    // The machine may be shared: time again (a few times at most) while other processes
    // used more than a tenth of a core, or while the run was bimodal (its median more than
    // `SLOW_SPREAD` times its fastest run: the shared host slowed this virtual machine for
    // part of the run, which its own CPU counters do not show), and keep the attempt with
    // the lowest median. `bench/torch_anchor.py` times `torch-cpu` by the same rules.
    let mut best: Option<(crate::stats::Summary, Option<f64>)> = None;
    for attempt in 1..=RETRIES {
        let before = CpuUse::now();
        let mut samples = Vec::with_capacity(config.timing.reps);
        for _ in 0..config.timing.reps {
            let start = Instant::now();
            conv(output)?;
            samples.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let foreign = before.foreign_cores();
        let times = summarize(&samples).ok_or_else(|| BenchError::new("no repetitions to time"))?;
        let busy = foreign.is_some_and(|f| f >= QUIET_CORES);
        let bimodal = times.median_ms > SLOW_SPREAD * times.min_ms;
        if best
            .as_ref()
            .is_none_or(|(kept, _)| times.median_ms < kept.median_ms)
        {
            best = Some((times, foreign));
        }
        if !busy && !bimodal {
            break;
        }
        if attempt < RETRIES {
            eprintln!(
                "{}: other processes used {:.2} cores, median {:.3} ms against a fastest {:.3} ms; again in {} s",
                layer.name,
                foreign.unwrap_or(0.0),
                times.median_ms,
                times.min_ms,
                RETRY_WAIT.as_secs()
            );
            std::thread::sleep(RETRY_WAIT);
        }
    }
    let (times, foreign) = best.ok_or_else(|| BenchError::new("no timing attempt"))?;
    let foreign = foreign.map_or(String::new(), |f| format!(", other processes {f:.2} cores"));
    Ok((
        MethodResult::new(METHOD.into(), gflop, times, extra, rel_err),
        foreign,
    ))
}

/// Timing runs while other processes used less than this many cores count as quiet.
const QUIET_CORES: f64 = 0.1;
/// Timing attempts per layer before a noisy one is kept anyway (and says so).
const RETRIES: usize = 6;
/// A timing whose median exceeds its fastest run by this factor was slowed for part of
/// the run (measured on the shared development machine: slow phases of seconds that
/// doubled a layer's median and that no counter of the guest shows).
const SLOW_SPREAD: f64 = 1.25;
/// Wait between timing attempts.
const RETRY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// CPU time of the whole machine and of this process at one moment (`/proc/stat`,
/// `/proc/self/stat`), to tell how much of it other processes took while timing.
struct CpuUse {
    machine: Option<u64>,
    own: Option<u64>,
    at: Instant,
}

impl CpuUse {
    fn now() -> CpuUse {
        CpuUse {
            machine: machine_busy_ticks(),
            own: own_ticks(),
            at: Instant::now(),
        }
    }

    /// Cores' worth of CPU that other processes used since `self`, or `None` off Linux.
    fn foreign_cores(&self) -> Option<f64> {
        let later = CpuUse::now();
        let machine = later.machine? - self.machine?;
        let own = later.own? - self.own?;
        // Clock ticks are 1/100 s on every Linux the benchmark runs on (USER_HZ).
        let seconds = later.at.duration_since(self.at).as_secs_f64();
        Some((machine.saturating_sub(own) as f64 / 100.0 / seconds).max(0.0))
    }
}

/// Busy clock ticks of all CPUs: user + nice + system + irq + softirq + steal.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    Some(fields.get(0..3)?.iter().sum::<u64>() + fields.get(5..8)?.iter().sum::<u64>())
}

/// This process's user + system clock ticks.
fn own_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

/// The CPU's model name and core count, e.g. `AMD EPYC (2 cores)`.
fn cpu_name() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    format!("{model} ({cores} cores)")
}

/// The 1-, 5- and 15-minute load averages, as `/proc/loadavg` gives them ("?" elsewhere):
/// a timing taken while other processes ran is worth less, and the report says so.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or_else(
        |_| "?".into(),
        |l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    )
}
