//! The 53 convolutions of a ResNet-50 (v1.5) forward pass, on GPU 0: each of the 23 distinct
//! layers runs as many times as the network has it, on random activations of its shape.
//! Timed with CUDA events (the whole pass, and each layer alone); five layers (one of each
//! kind: the 7×7 stem, 3×3 and 1×1 with stride 1 and 2) are checked against the float64 CPU
//! oracle on image 0.
//!
//! Without a GPU (or without kernels) it says so and runs three layers at batch 1 on the CPU
//! backend, checked the same way; `IM2WIN_REQUIRE_GPU=1` makes that an error. Exits non-zero
//! on a wrong result.
//!
//! ```text
//! cargo run --release --example resnet50 [-- --batch 32 --runs 10]
//! ```

use std::error::Error as StdError;
use std::process::ExitCode;
use std::time::Instant;

use cudarc::driver::CudaSlice;
use cudarc::driver::sys::CUevent_flags;
use im2win::cpu::relative_error;
use im2win::{Conv2dProblem, Error, Padding, Plan};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One distinct convolution of the network.
#[derive(Debug, Clone, Copy)]
struct Layer {
    /// Input channels.
    c: usize,
    /// Input height and width.
    hw: usize,
    /// Output channels.
    k: usize,
    /// Filter height and width.
    rs: usize,
    stride: usize,
    pad: usize,
    /// How many times a forward pass runs it.
    count: usize,
}

const fn layer(
    c: usize,
    hw: usize,
    k: usize,
    rs: usize,
    stride: usize,
    pad: usize,
    count: usize,
) -> Layer {
    Layer {
        c,
        hw,
        k,
        rs,
        stride,
        pad,
        count,
    }
}

/// ResNet-50 v1.5's distinct convolutions (C, H=W, K, R=S, stride, padding, count): 53 in all.
const LAYERS: [Layer; 23] = [
    layer(3, 224, 64, 7, 2, 3, 1),
    layer(64, 56, 64, 1, 1, 0, 1),
    layer(64, 56, 64, 3, 1, 1, 3),
    layer(64, 56, 256, 1, 1, 0, 4),
    layer(256, 56, 64, 1, 1, 0, 2),
    layer(256, 56, 128, 1, 1, 0, 1),
    layer(128, 56, 128, 3, 2, 1, 1),
    layer(128, 28, 512, 1, 1, 0, 4),
    layer(256, 56, 512, 1, 2, 0, 1),
    layer(512, 28, 128, 1, 1, 0, 3),
    layer(128, 28, 128, 3, 1, 1, 3),
    layer(512, 28, 256, 1, 1, 0, 1),
    layer(256, 28, 256, 3, 2, 1, 1),
    layer(256, 14, 1024, 1, 1, 0, 6),
    layer(512, 28, 1024, 1, 2, 0, 1),
    layer(1024, 14, 256, 1, 1, 0, 5),
    layer(256, 14, 256, 3, 1, 1, 5),
    layer(1024, 14, 512, 1, 1, 0, 1),
    layer(512, 14, 512, 3, 2, 1, 1),
    layer(512, 7, 2048, 1, 1, 0, 3),
    layer(1024, 14, 2048, 1, 2, 0, 1),
    layer(2048, 7, 512, 1, 1, 0, 2),
    layer(512, 7, 512, 3, 1, 1, 2),
];

/// Layers checked against the oracle on the GPU: the stem, 1×1/1, 3×3/2, 1×1/2, 3×3/1.
const CHECKED_ON_GPU: [usize; 5] = [0, 3, 6, 8, 22];
/// Layers run on the CPU backend without a GPU (batch 1): 3×3/1, 1×1/1, 3×3/2.
const CHECKED_ON_CPU: [usize; 3] = [22, 15, 12];
/// Largest accepted relative error against the float64 oracle.
const TOLERANCE: f64 = 1e-5;
/// cuDNN's time for the same 53 convolutions on our H200 (strict FP32, NCHW, autotuned;
/// docs in the repo's shared anchors), by batch, in milliseconds.
const CUDNN_FP32_MS: [(usize, f64); 3] = [(1, 1.96), (32, 8.22), (128, 25.8)];

impl Layer {
    fn problem(&self, batch: usize) -> Conv2dProblem {
        Conv2dProblem::new(
            [batch, self.c, self.hw, self.hw],
            [self.k, self.c, self.rs, self.rs],
        )
        .with_stride([self.stride, self.stride])
        .with_padding(Padding::uniform(self.pad))
    }

    fn describe(&self) -> String {
        format!(
            "{}x{}/{} {:>4} -> {:<4} {:>3}x{:<3} pad {}",
            self.rs, self.rs, self.stride, self.c, self.k, self.hw, self.hw, self.pad
        )
    }
}

/// Command-line options.
struct Options {
    batch: usize,
    runs: usize,
}

fn options() -> Result<Options, String> {
    let mut options = Options {
        batch: 32,
        runs: 10,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = |name: &str, value: Option<String>| {
            value
                .and_then(|v| v.parse::<usize>().ok())
                .filter(|&v| v > 0)
                .ok_or(format!("{name} takes a positive integer"))
        };
        match arg.as_str() {
            "--batch" => options.batch = value("--batch", args.next())?,
            "--runs" => options.runs = value("--runs", args.next())?,
            other => return Err(format!("unknown argument `{other}` (--batch N, --runs N)")),
        }
    }
    Ok(options)
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => {
            println!("ok");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("resnet50: error: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn StdError>> {
    let options = options()?;
    assert_eq!(LAYERS.iter().map(|l| l.count).sum::<usize>(), 53);
    let worst = match on_gpu(&options) {
        Ok(worst) => worst,
        Err(err @ (Error::DriverNotFound | Error::NoDevice { .. } | Error::KernelsNotBuilt))
            if !gpu_required() =>
        {
            println!("no GPU run: {err}");
            on_cpu()?
        }
        Err(err) => return Err(err.into()),
    };
    if worst < TOLERANCE {
        Ok(())
    } else {
        Err(format!("relative error {worst:.2e} is not below {TOLERANCE:e}").into())
    }
}

/// Whether the CPU fallback is forbidden (`IM2WIN_REQUIRE_GPU=1`, as on the GPU machine).
fn gpu_required() -> bool {
    std::env::var("IM2WIN_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// `len` values uniform in `[-1, 1]`.
fn random_data(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..=1.0)).collect()
}

/// The median of `values` (sorted in place).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// A layer's device buffers and plan.
struct OnDevice {
    plan: Plan,
    input: Vec<f32>,
    filter: Vec<f32>,
    x: CudaSlice<f32>,
    f: CudaSlice<f32>,
    y: CudaSlice<f32>,
}

/// The whole pass and each layer on GPU 0; returns the worst relative error of the checks.
fn on_gpu(options: &Options) -> im2win::Result<f64> {
    let engine = im2win::engine(0)?;
    if !engine.kernels().is_built() {
        return Err(Error::KernelsNotBuilt);
    }
    let batch = options.batch;
    println!(
        "GPU: {} ({} SMs); ResNet-50 v1.5, 53 convolutions, batch {batch}",
        engine.context().name()?,
        engine.multiprocessors()
    );
    let stream = engine.stream();
    let mut rng = StdRng::seed_from_u64(50);
    let mut layers = Vec::with_capacity(LAYERS.len());
    for layer in &LAYERS {
        let problem = layer.problem(batch);
        let shape = problem.shape()?;
        let input = random_data(&mut rng, shape.input_len);
        let filter = random_data(&mut rng, shape.filter_len);
        layers.push(OnDevice {
            plan: engine.plan(&problem)?,
            x: stream.clone_htod(&input)?,
            f: stream.clone_htod(&filter)?,
            y: stream.alloc_zeros::<f32>(shape.output_len)?,
            input,
            filter,
        });
    }
    let event = || stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT));
    let launch = |l: &mut OnDevice| engine.conv2d_with(&l.plan, &l.x, &l.f, None, &mut l.y, None);
    let forward = |layers: &mut [OnDevice]| -> im2win::Result<()> {
        for (layer, on_device) in LAYERS.iter().zip(layers.iter_mut()) {
            for _ in 0..layer.count {
                launch(on_device)?;
            }
        }
        Ok(())
    };

    // Warm-up (loads the fatbin, grows the engine's workspace to the largest layer), then the
    // whole pass, timed as a whole.
    forward(&mut layers)?;
    let mut pass_ms = Vec::with_capacity(options.runs);
    for _ in 0..options.runs {
        let start = event()?;
        forward(&mut layers)?;
        let end = event()?;
        pass_ms.push(f64::from(start.elapsed_ms(&end)?));
    }
    let pass_ms = median(&mut pass_ms);

    // Each layer alone.
    println!(
        "{:>2}  {:<30} {:>5}  {:<40} {:>9} {:>8}",
        "#", "layer (RxS/stride C -> K HxW)", "count", "kernel", "ms", "TFLOP/s"
    );
    let mut sum_ms = 0.0;
    let mut flops = 0.0;
    for (i, (layer, on_device)) in LAYERS.iter().zip(layers.iter_mut()).enumerate() {
        let mut ms = Vec::with_capacity(options.runs);
        for _ in 0..options.runs {
            let start = event()?;
            launch(on_device)?;
            let end = event()?;
            ms.push(f64::from(start.elapsed_ms(&end)?));
        }
        let ms = median(&mut ms);
        let layer_flops = on_device.plan.problem().flops()?;
        sum_ms += ms * layer.count as f64;
        flops += layer_flops * layer.count as f64;
        println!(
            "{i:>2}  {:<30} {:>5}  {:<40} {ms:>9.4} {:>8.1}",
            layer.describe(),
            layer.count,
            on_device.plan.kernel().to_string(),
            layer_flops / (ms * 1e-3) / 1e12
        );
    }
    println!(
        "forward pass (53 convolutions, median of {}): {pass_ms:.3} ms, {:.1} TFLOP/s ({:.1} GFLOP); \
         sum of the layers timed alone: {sum_ms:.3} ms",
        options.runs,
        flops / (pass_ms * 1e-3) / 1e12,
        flops / 1e9
    );
    if let Some((_, cudnn)) = CUDNN_FP32_MS.iter().find(|(b, _)| *b == batch) {
        println!(
            "cuDNN, strict FP32 NCHW, same 53 convolutions on an H200: {cudnn:.2} ms \
             (im2win / cuDNN = {:.2})",
            pass_ms / cudnn
        );
    }

    // Image 0 of a few layers against the float64 CPU oracle (their `y` holds the last run).
    let mut worst: f64 = 0.0;
    for i in CHECKED_ON_GPU {
        let on_device = &layers[i];
        let output = stream.clone_dtoh(&on_device.y)?;
        let mut one = *on_device.plan.problem();
        one.input[0] = 1;
        let one_shape = one.shape()?;
        let reference = im2win::cpu::reference_conv2d(
            &one,
            &on_device.input[..one_shape.input_len],
            &on_device.filter,
            None,
        )?;
        let error = relative_error(&output[..one_shape.output_len], &reference);
        println!(
            "check layer {i:>2} ({}): relative error (image 0) {error:.2e}",
            LAYERS[i].describe()
        );
        worst = worst.max(error);
    }
    Ok(worst)
}

/// Without a GPU: three layers at batch 1 with the CPU backend; returns the worst relative
/// error.
fn on_cpu() -> im2win::Result<f64> {
    println!(
        "running {} layers at batch 1 with the CPU backend (im2win::cpu::conv2d) instead",
        CHECKED_ON_CPU.len()
    );
    let mut rng = StdRng::seed_from_u64(50);
    let mut worst: f64 = 0.0;
    for i in CHECKED_ON_CPU {
        let problem = LAYERS[i].problem(1);
        let shape = problem.shape()?;
        let input = random_data(&mut rng, shape.input_len);
        let filter = random_data(&mut rng, shape.filter_len);
        let mut output = vec![0.0_f32; shape.output_len];
        let start = Instant::now();
        im2win::cpu::conv2d(&problem, &input, &filter, None, &mut output)?;
        let ms = start.elapsed().as_secs_f64() * 1e3;
        let reference = im2win::cpu::reference_conv2d(&problem, &input, &filter, None)?;
        let error = relative_error(&output, &reference);
        println!(
            "layer {i:>2} ({}): CPU {ms:.1} ms, relative error {error:.2e}",
            LAYERS[i].describe()
        );
        worst = worst.max(error);
    }
    Ok(worst)
}
