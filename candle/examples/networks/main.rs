//! Whole networks in candle with random weights (nothing downloaded), BatchNorm folded into
//! the convolutions' biases: ResNet-50 and MobileNetV2 at 224×224 and the YOLOv8s backbone at
//! 640×640. Each is built with the same weights for every method of `--methods`:
//!
//! - `im2win-candle`: `im2win_candle::Conv2d` (activations and, where the network adds one
//!   before the activation, residuals fused into the convolutions);
//! - `candle`: `candle_nn::Conv2d` (candle's own conv2d); in a build with this crate's `cudnn`
//!   feature (candle's conv2d through cuDNN) the method is reported as `candle-cudnn`.
//!
//! Each method's forward is timed as a user would: the wall clock of `reps` forwards followed
//! by one device synchronisation, the median (min, max) per forward over the rounds, after two
//! warm-up forwards; the same for every method. The methods' rounds are interleaved (round i
//! of every method before round i + 1 of any): timed one after another, the method timed
//! first in a process measured slower (MobileNetV2 on the CPU: 32-38 ms first, 23-27 ms
//! second, either method). Every method's output is checked against the
//! `candle` method's (relative error in the 2-norm), or against `--ref` (the `candle` output
//! another run saved with `--save-ref`). `bench/torch_networks.py` builds the same networks
//! (the same generator, hence the same weights and input) in PyTorch; `bench/merge_networks.py`
//! joins the files into `bench/results/candle-<network>-<dtype>-n<batch>.json`.
//!
//! ```sh
//! cargo run --release -p im2win-candle --example networks -- --network resnet50 --size 64
//! cargo run --release -p im2win-candle --features cuda --example networks -- \
//!     --network yolov8s --dtype bf16 --batch 32 --out yolo.json
//! ```
//!
//! A method that cannot run the network (a failed launch, a refused layer) is reported under
//! `skipped` with its error; the others are still timed.

mod common;
mod mobilenetv2;
mod resnet50;
mod yolov8;

use std::path::PathBuf;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use clap::{Parser, ValueEnum};
use serde_json::json;

use common::{Builder, Method};

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Network {
    Resnet50,
    Mobilenetv2,
    Yolov8s,
}

impl Network {
    fn name(self) -> &'static str {
        match self {
            Network::Resnet50 => "resnet50",
            Network::Mobilenetv2 => "mobilenetv2",
            Network::Yolov8s => "yolov8s",
        }
    }

    fn default_size(self) -> usize {
        match self {
            Network::Yolov8s => 640,
            _ => 224,
        }
    }
}

/// One network built for one method.
enum Model {
    Resnet50(resnet50::ResNet50),
    Mobilenetv2(mobilenetv2::MobileNetV2),
    Yolov8s(Box<yolov8::Yolov8Backbone>),
}

impl Model {
    fn new(network: Network, b: &mut Builder) -> Result<Model> {
        Ok(match network {
            Network::Resnet50 => Model::Resnet50(resnet50::ResNet50::new(b)?),
            Network::Mobilenetv2 => Model::Mobilenetv2(mobilenetv2::MobileNetV2::new(b)?),
            Network::Yolov8s => Model::Yolov8s(Box::new(yolov8::Yolov8Backbone::new(b)?)),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match self {
            Model::Resnet50(m) => m.forward(x),
            Model::Mobilenetv2(m) => m.forward(x),
            Model::Yolov8s(m) => m.forward(x),
        }
    }
}

#[derive(Parser, Debug)]
#[command(about = "Time ResNet-50, MobileNetV2 and the YOLOv8s backbone in candle")]
struct Args {
    /// The network.
    #[arg(long, value_enum)]
    network: Network,
    /// Element type: f32 (strict FP32: im2win's strict kernels; candle's default), bf16, f16.
    #[arg(long, default_value = "f32")]
    dtype: String,
    /// Batch size.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Tensor layout (candle's is NCHW; the only one).
    #[arg(long, default_value = "nchw")]
    layout: String,
    /// Methods, comma-separated: im2win-candle (filters prepared once, the layer's default),
    /// im2win-candle-unprepared (the filter transformed in every forward), im2win-candle-graph
    /// (the forward captured into a CUDA graph and replayed),
    /// candle (candle-cudnn in a `cudnn` build).
    #[arg(long, value_delimiter = ',', default_value = "im2win-candle,candle")]
    methods: Vec<String>,
    /// Input resolution (default 224, YOLOv8s 640); smaller for quick CPU checks.
    #[arg(long)]
    size: Option<usize>,
    /// Run on the CPU even when a GPU is there.
    #[arg(long)]
    cpu: bool,
    /// Timing rounds (fewer for slow methods, at least 3: see --budget).
    #[arg(long, default_value_t = 7)]
    rounds: usize,
    /// Seconds per round: the forwards per round are as many as fill it (1 to 200).
    #[arg(long, default_value_t = 0.1)]
    round_s: f64,
    /// Seconds of timing per method at most (rounds reduced, to no fewer than 3).
    #[arg(long, default_value_t = 3.0)]
    budget: f64,
    /// Write the report here (the project's bench schema; layer `total`).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Save the `candle` method's output (float32 .npy, outputs flattened and concatenated)
    /// here, for another build's `--ref` and for bench/torch_networks.py.
    #[arg(long)]
    save_ref: Option<PathBuf>,
    /// Check every method against this output (saved by `--save-ref`) instead of against the
    /// `candle` method of this run.
    #[arg(long = "ref")]
    reference: Option<PathBuf>,
    /// Fail if a method's relative error exceeds this (default: 1e-4 for f32, 3e-2 for
    /// bf16 and f16).
    #[arg(long)]
    tolerance: Option<f64>,
}

/// One method's result.
struct Timed {
    label: String,
    method: Method,
    median_ms: f64,
    min_ms: f64,
    max_ms: f64,
    reps: usize,
    rounds: usize,
    output: Tensor,
}

/// The outputs flattened per image and concatenated, as float32: `[batch, elements]`.
fn flatten(outputs: &[Tensor]) -> Result<Tensor> {
    let flat = outputs
        .iter()
        .map(|t| t.flatten_from(1)?.to_dtype(DType::F32))
        .collect::<Result<Vec<_>>>()?;
    Tensor::cat(&flat, 1)
}

/// ‖a − b‖ / ‖b‖.
fn rel_err(a: &Tensor, b: &Tensor) -> Result<f64> {
    let diff = (a - b)?.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    let norm = b.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
    Ok((diff / norm).sqrt())
}

fn rms(a: &Tensor) -> Result<f64> {
    Ok((a.sqr()?.mean_all()?.to_scalar::<f32>()? as f64).sqrt())
}

/// A method ready to be timed: its network built and warmed up (or its forward captured),
/// the forwards per round and the rounds it gets, and the rounds timed so far.
struct Ready {
    label: String,
    method: Method,
    model: Model,
    graph: Option<Captured>,
    output: Tensor,
    reps: usize,
    rounds: usize,
    times: Vec<f64>,
}

/// Builds the network for `method`, warms it up on `x` and sizes its rounds.
fn ready_method(
    args: &Args,
    builder: &mut Builder,
    label: &str,
    method: Method,
    x: &Tensor,
) -> Result<Ready> {
    let device = builder.device().clone();
    builder.set_method(method);
    let model = Model::new(args.network, builder)?;
    // Warm-up: the first forward plans, loads kernels and prepares filters; the second
    // estimates the time.
    let mut output = flatten(&model.forward(x)?)?;
    device.synchronize()?;
    // One forward: the model's, or a replay of its capture.
    let graph = match method {
        Method::Im2winGraph => Some(capture(&model, x, &device)?),
        _ => None,
    };
    if let Some(graph) = &graph {
        graph.replay()?;
        output = flatten(&graph.outputs)?;
    }
    let mut ready = Ready {
        label: label.to_string(),
        method,
        model,
        graph,
        output,
        reps: 1,
        rounds: 0,
        times: Vec::new(),
    };
    device.synchronize()?;
    let start = Instant::now();
    ready.forward(x)?;
    device.synchronize()?;
    let estimate = start.elapsed().as_secs_f64();
    ready.reps = ((args.round_s / estimate).ceil() as usize).clamp(1, 200);
    ready.rounds =
        ((args.budget / (estimate * ready.reps as f64)) as usize).clamp(3, args.rounds.max(3));
    Ok(ready)
}

impl Ready {
    /// One forward: the model's, or a replay of its capture.
    fn forward(&self, x: &Tensor) -> Result<()> {
        match &self.graph {
            Some(graph) => graph.replay(),
            None => self.model.forward(x).map(drop),
        }
    }

    /// Times one round: `reps` forwards, then one synchronisation.
    fn round(&mut self, x: &Tensor, device: &Device) -> Result<()> {
        let start = Instant::now();
        for _ in 0..self.reps {
            self.forward(x)?;
        }
        device.synchronize()?;
        self.times
            .push(start.elapsed().as_secs_f64() * 1e3 / self.reps as f64);
        Ok(())
    }

    /// The median, fastest and slowest round.
    fn timed(mut self) -> Timed {
        self.times.sort_by(f64::total_cmp);
        let times = &self.times;
        Timed {
            label: self.label,
            method: self.method,
            median_ms: times[times.len() / 2],
            min_ms: times[0],
            max_ms: times[times.len() - 1],
            reps: self.reps,
            rounds: times.len(),
            output: self.output,
        }
    }
}

/// A forward captured into a CUDA graph: replaying it writes the network's outputs into
/// `outputs` (tensors allocated before the capture).
struct Captured {
    #[cfg(feature = "cuda")]
    graph: candle_core::cuda_backend::cudarc::driver::CudaGraph,
    outputs: Vec<Tensor>,
}

impl Captured {
    /// One forward: the graph launched on the stream it was captured from.
    fn replay(&self) -> Result<()> {
        #[cfg(feature = "cuda")]
        return self.graph.launch().map_err(candle_core::Error::wrap);
        #[cfg(not(feature = "cuda"))]
        candle_core::bail!("CUDA graphs need the cuda feature")
    }
}

/// Captures one forward of `model` on `x` (after a warm-up: plans made, filters prepared, the
/// engine's workspace sized) into a CUDA graph on the device's stream, its outputs copied
/// into tensors made beforehand.
fn capture(model: &Model, x: &Tensor, device: &Device) -> Result<Captured> {
    #[cfg(feature = "cuda")]
    if let Device::Cuda(cuda) = device {
        use candle_core::cuda_backend::cudarc::driver::sys;
        let shapes = model.forward(x)?;
        let outputs = shapes
            .iter()
            .map(Tensor::zeros_like)
            .collect::<Result<Vec<_>>>()?;
        device.synchronize()?;
        let stream = cuda.cuda_stream();
        stream
            .begin_capture(sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(candle_core::Error::wrap)?;
        let captured = model.forward(x).and_then(|ys| {
            ys.iter()
                .zip(&outputs)
                .try_for_each(|(y, out)| out.slice_set(y, 0, 0))
        });
        let graph = stream.end_capture(sys::CUgraphInstantiate_flags(0));
        captured?;
        let graph = graph
            .map_err(candle_core::Error::wrap)?
            .ok_or_else(|| candle_core::Error::msg("the capture recorded nothing"))?;
        return Ok(Captured { graph, outputs });
    }
    let _ = (model, x);
    candle_core::bail!("CUDA graphs need a CUDA device, not {device:?}")
}

/// An error's message without the backtrace candle attaches when `RUST_BACKTRACE` is set.
fn message(err: &candle_core::Error) -> String {
    match err {
        candle_core::Error::WithBacktrace { inner, .. } => inner.to_string(),
        other => other.to_string(),
    }
}

fn device_name(device: &Device) -> String {
    match device {
        #[cfg(feature = "cuda")]
        Device::Cuda(d) => d
            .cuda_stream()
            .context()
            .name()
            .unwrap_or_else(|_| "CUDA device".to_string()),
        Device::Cpu => format!(
            "CPU ({} threads)",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        other => format!("{other:?}"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let dtype = match args.dtype.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => candle_core::bail!("--dtype {other}: f32, bf16 or f16"),
    };
    if args.layout != "nchw" {
        candle_core::bail!("--layout {}: candle's tensors are NCHW", args.layout);
    }
    let device = if args.cpu {
        Device::Cpu
    } else {
        match Device::new_cuda(0) {
            Ok(device) if im2win_candle::gpu_kernels_available() => device,
            _ => Device::Cpu,
        }
    };
    // candle's own conv2d, as this build computes it.
    let candle_label = if cfg!(feature = "cudnn") && device.is_cuda() {
        "candle-cudnn"
    } else {
        "candle"
    };
    let mut methods = Vec::new();
    for m in &args.methods {
        let method = match m.as_str() {
            "im2win-candle" => Method::Im2win,
            "im2win-candle-unprepared" => Method::Im2winUnprepared,
            "im2win-candle-graph" => Method::Im2winGraph,
            "candle" | "candle-cudnn" if m == candle_label || m == "candle" => Method::Candle,
            _ => candle_core::bail!(
                "--methods {m}: im2win-candle, im2win-candle-unprepared, im2win-candle-graph or {candle_label} in this build"
            ),
        };
        let label = match method {
            Method::Candle => candle_label,
            Method::Im2win => "im2win-candle",
            Method::Im2winUnprepared => "im2win-candle-unprepared",
            Method::Im2winGraph => "im2win-candle-graph",
        };
        methods.push((label, method));
    }
    let size = args.size.unwrap_or(args.network.default_size());
    let name = device_name(&device);
    println!(
        "{} {} batch {} {size}x{size} on {name}",
        args.network.name(),
        args.dtype,
        args.batch
    );

    let x = common::input(args.batch, size, dtype, &device)?;
    let mut builder = Builder::new(&device, dtype);
    let mut skipped = Vec::new();
    let mut ready = Vec::new();
    for (label, method) in methods {
        match ready_method(&args, &mut builder, label, method, &x) {
            Ok(r) => ready.push(r),
            Err(err) => {
                let reason = message(&err);
                println!("  {label:14} skipped: {reason}");
                skipped.push(json!({"method": label, "reason": reason}));
            }
        }
    }
    // The rounds interleaved: round i of every method before round i + 1 of any, so that
    // a slow phase of the host, or a method's place in the process (the one timed first
    // measured slower when the methods ran one after another), weighs on all alike.
    let most = ready.iter().map(|r| r.rounds).max().unwrap_or(0);
    let mut failed = vec![None; ready.len()];
    for round in 0..most {
        for (r, failure) in ready.iter_mut().zip(&mut failed) {
            if failure.is_none()
                && round < r.rounds
                && let Err(err) = r.round(&x, &device)
            {
                *failure = Some(message(&err));
            }
        }
    }
    let mut timed = Vec::new();
    for (r, failure) in ready.into_iter().zip(failed) {
        if let Some(reason) = failure {
            println!("  {:14} skipped: {reason}", r.label);
            skipped.push(json!({"method": r.label, "reason": reason}));
            continue;
        }
        let t = r.timed();
        println!(
            "  {:14} {:9.3} ms (min {:.3}, max {:.3}; {} x {})",
            t.label, t.median_ms, t.min_ms, t.max_ms, t.rounds, t.reps
        );
        timed.push(t);
    }

    let reference = match &args.reference {
        Some(path) => Some(Tensor::read_npy(path)?.to_device(&device)?),
        None => timed
            .iter()
            .find(|t| t.method == Method::Candle)
            .map(|t| t.output.clone()),
    };
    if let (Some(path), Some(t)) = (
        &args.save_ref,
        timed.iter().find(|t| t.method == Method::Candle),
    ) {
        t.output.write_npy(path)?;
    }
    let tolerance = args
        .tolerance
        .unwrap_or(if dtype == DType::F32 { 1e-4 } else { 3e-2 });
    let mut results = Vec::new();
    let mut worst: f64 = 0.0;
    let mut output_rms = None;
    for t in &timed {
        let err = match &reference {
            Some(r) if r.dims() == t.output.dims() => Some(rel_err(&t.output, r)?),
            Some(r) => candle_core::bail!(
                "{}: output {:?} but the reference is {:?}",
                t.label,
                t.output.dims(),
                r.dims()
            ),
            None => None,
        };
        let out_rms = rms(&t.output)?;
        output_rms.get_or_insert(out_rms);
        if let Some(e) = err {
            worst = worst.max(e);
            println!("  {:14} rel_err {e:.2e}, output rms {out_rms:.3}", t.label);
        }
        let detail = match t.method {
            Method::Im2win | Method::Im2winUnprepared | Method::Im2winGraph => format!(
                "{} {} (fused activation and residual), {} rounds x {} forwards",
                t.label,
                env!("CARGO_PKG_VERSION"),
                t.rounds,
                t.reps
            ),
            Method::Candle => format!(
                "candle-core 0.11 conv2d ({}), {} rounds x {} forwards",
                if t.label == "candle-cudnn" {
                    "cuDNN"
                } else if device.is_cuda() {
                    "im2col + cuBLAS"
                } else {
                    "CPU"
                },
                t.rounds,
                t.reps
            ),
        };
        results.push(json!({
            "method": t.label,
            "median_ms": t.median_ms,
            "min_ms": t.min_ms,
            "max_ms": t.max_ms,
            "rel_err": err,
            "output_rms": out_rms,
            "detail": detail,
        }));
    }
    if let Some(path) = &args.out {
        let report = json!({
            "device": name,
            "suite": args.network.name(),
            "dtype": args.dtype,
            "batch": args.batch,
            "layout": args.layout,
            "layers": [{
                "name": "total",
                "count": 1,
                "problem": {"input": [args.batch, 3, size, size]},
                "results": results,
                "skipped": skipped,
            }],
            "settings": {
                "timing": "wall clock of `reps` forwards then one synchronize, per forward; \
                           median (min, max) over the rounds, after 2 warm-up forwards; \
                           the methods' rounds interleaved",
                "rounds": args.rounds,
                "round_s": args.round_s,
                "budget_s": args.budget,
                "warmup": 2,
                "size": size,
                "weights": "uniform splitmix64 generator by tensor name (bench/torch_networks.py \
                            has the same), BatchNorm folded",
                "output_rms": output_rms,
                "reference": args.reference.as_ref().map(|p| p.display().to_string())
                    .unwrap_or_else(|| "the candle method of this run".to_string()),
            },
            "software": {
                "im2win": env!("CARGO_PKG_VERSION"),
                "candle-core": "0.11.1",
                "build": if cfg!(feature = "cudnn") { "cuda+cudnn" }
                         else if cfg!(feature = "cuda") { "cuda" } else { "cpu" },
            },
        });
        let text = serde_json::to_string_pretty(&report).map_err(candle_core::Error::wrap)?;
        std::fs::write(path, text + "\n")?;
        println!("wrote {}", path.display());
    }
    if worst > tolerance {
        candle_core::bail!(
            "a method's output differs from the reference: {worst:.2e} > {tolerance:.0e}"
        );
    }
    Ok(())
}
