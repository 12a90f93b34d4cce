//! Helpers of the GPU integration tests: an engine or a clean skip, random problems of a
//! given kernel geometry, and one checked run of a problem on device buffers that sit
//! inside larger buffers with guard zones.

// Each test crate that includes this module uses only part of it.
#![allow(dead_code, unused_imports)]

use std::io::Write;
use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr};
use im2win::{Conv2dProblem, Engine, Error, Padding, Plan};
use im2win_codegen::FixedGeometry;
use rand::Rng;

/// The CPU tests' problem generator, random data, error measure and seed (shared so that
/// both suites draw problems the same way).
#[path = "../../runtime/tests/common/mod.rs"]
pub mod problems;

pub use problems::{Limits, random_data, random_problem, relative_error, test_seed};

/// The fuzz target's independent model of validation and dispatch (`fuzz/src/lib.rs`).
#[path = "../../fuzz/src/lib.rs"]
pub mod model;

/// proptest strategies of the property tests.
pub mod strategies;

/// A kernel that only waits, to delay a stream in the ordering tests.
pub mod delay;

/// Largest accepted `‖out − ref‖₂ / ‖ref‖₂` of a float32 result against a float64 oracle.
pub const TOLERANCE: f64 = 1e-5;

/// What the output's guard zones hold; must be bit-for-bit unchanged after a run.
pub const SENTINEL: f32 = f32::from_bits(0x5EAD_BEEF);
/// What the output holds before a run: a NaN, so that an output never written shows up.
pub const POISON: f32 = f32::from_bits(0x7FC0_DEAD);
/// What the input, filter and bias guard zones hold: huge, so that a read past an operand
/// ruins the result instead of passing unnoticed.
pub const FAR_AWAY: f32 = 1.0e30;

/// Whether the run must fail rather than skip without a GPU (`IM2WIN_REQUIRE_GPU=1`).
pub fn require_gpu() -> bool {
    std::env::var("IM2WIN_REQUIRE_GPU").is_ok_and(|v| v == "1")
}

/// Fewer and smaller problems (`IM2WIN_TEST_SMALL=1`), for runs under compute-sanitizer.
pub fn small() -> bool {
    std::env::var("IM2WIN_TEST_SMALL").is_ok_and(|v| v == "1")
}

/// Prints `im2win-summary: <test>: <text>` straight to stdout, past the test harness's
/// capture, so that the counts show in every log.
pub fn summary(test: &str, text: &str) {
    let mut out = std::io::stdout().lock();
    // A failed write to stdout is not a test failure.
    let _ = writeln!(out, "im2win-summary: {test}: {text}");
}

/// An engine on GPU 0 with the default kernels, or `None` (after a summary line saying
/// why) when there is no usable GPU or the kernels were not built. Panics instead under
/// `IM2WIN_REQUIRE_GPU=1`.
pub fn engine(test: &str) -> Option<Engine> {
    let kernels = im2win::kernels();
    let built = kernels.fatbin().is_some();
    let engine = Engine::new(0, kernels).and_then(|engine| {
        if built {
            Ok(engine)
        } else {
            Err(Error::KernelsNotBuilt)
        }
    });
    match engine {
        Ok(engine) => Some(engine),
        Err(err) if require_gpu() => panic!("{test}: IM2WIN_REQUIRE_GPU=1 but: {err}"),
        Err(err) => {
            summary(test, &format!("SKIPPED: {err}"));
            None
        }
    }
}

/// Limits of the random problems of the GPU tests: channel counts that cross the 128-wide
/// block tile, outputs spanning several pixel blocks, filters up to 11×11.
pub fn gpu_limits() -> Limits {
    if small() {
        Limits {
            batch: 2,
            channels: 6,
            out_channels: 140,
            filter: 11,
            out_size: 10,
            stride: 4,
            dilation: 3,
            padding: 4,
            max_macs: 2_000_000,
        }
    } else {
        Limits {
            batch: 3,
            channels: 24,
            out_channels: 300,
            filter: 11,
            out_size: 24,
            stride: 4,
            dilation: 3,
            padding: 4,
            max_macs: 30_000_000,
        }
    }
}

/// A random problem whose filter size and stride are `g`'s, so that the fixed kernel of
/// `g` applies. Dilation is 1, except (sometimes) along an axis where the filter is 1 wide,
/// where it must not matter.
pub fn fixed_problem(rng: &mut impl Rng, g: FixedGeometry, limits: &Limits) -> Conv2dProblem {
    loop {
        let batch = edge_or(rng, 1, limits.batch, 0.3);
        let channels = edge_or(rng, 1, limits.channels, 0.15);
        let out_channels = match rng.random_range(0..10) {
            0 => 1,
            1 => 128,
            _ => rng.random_range(1..=limits.out_channels),
        };
        let (h, pad_h, dil_h) = fixed_axis(rng, g.filter_h as usize, g.stride_h as usize, limits);
        let (w, pad_w, dil_w) = fixed_axis(rng, g.filter_w as usize, g.stride_w as usize, limits);
        let problem = Conv2dProblem::new(
            [batch, channels, h, w],
            [
                out_channels,
                channels,
                g.filter_h as usize,
                g.filter_w as usize,
            ],
        )
        .with_stride([g.stride_h as usize, g.stride_w as usize])
        .with_dilation([dil_h, dil_w])
        .with_padding(Padding {
            top: pad_h[0],
            bottom: pad_h[1],
            left: pad_w[0],
            right: pad_w[1],
        });
        let Ok(shape) = problem.shape() else {
            continue;
        };
        if shape.output_len.saturating_mul(shape.reduction) <= limits.max_macs {
            return problem;
        }
    }
}

/// Input size, padding and dilation of one axis with a fixed filter size and stride.
fn fixed_axis(
    rng: &mut impl Rng,
    filter: usize,
    stride: usize,
    limits: &Limits,
) -> (usize, [usize; 2], usize) {
    let dilation = if filter == 1 && rng.random_bool(0.2) {
        rng.random_range(2..=3)
    } else {
        1
    };
    let max_pad = limits.padding.min(filter);
    let padding = [(); 2].map(|()| edge_or(rng, 0, max_pad, 0.4));
    let out = edge_or(rng, 1, limits.out_size, 0.15);
    let padded = (out - 1) * stride + dilation * (filter - 1) + 1 + rng.random_range(0..stride);
    (
        padded.saturating_sub(padding[0] + padding[1]).max(1),
        padding,
        dilation,
    )
}

/// `low` with probability `p`, else uniform in `low..=high`.
fn edge_or(rng: &mut impl Rng, low: usize, high: usize, p: f64) -> usize {
    if rng.random_bool(p) {
        low
    } else {
        rng.random_range(low..=high)
    }
}

/// A problem with random data and its float64 CPU reference.
pub struct Case {
    /// The problem.
    pub problem: Conv2dProblem,
    /// Input `N·C·H·W`.
    pub input: Vec<f32>,
    /// Filter `K·C·R·S`.
    pub filter: Vec<f32>,
    /// Bias `K`, if any.
    pub bias: Option<Vec<f32>>,
    /// Residual `N·K·P·Q`, when the problem's epilogue has one.
    pub residual: Option<Vec<f32>>,
    /// `im2win::cpu::reference_conv2d_with_residual` of the above.
    pub reference: Vec<f64>,
    /// The oracle on `|input|`, `|filter|` and `|bias|`: the scale of float32 rounding
    /// error in each output (see [`check_output`]).
    pub magnitude: Vec<f64>,
}

impl Case {
    /// Random data in `[-1, 1]` (never zero) for `problem`, and the CPU oracle's output.
    pub fn random(rng: &mut impl Rng, problem: Conv2dProblem, with_bias: bool) -> Case {
        let shape = problem.shape().expect("generated problems are valid");
        let input = random_data(rng, shape.input_len);
        let filter = random_data(rng, shape.filter_len);
        let bias = with_bias.then(|| random_data(rng, shape.output[1]));
        let residual = problem
            .epilogue
            .residual
            .then(|| random_data(rng, shape.output_len));
        let oracle =
            |p: &Conv2dProblem, x: &[f32], f: &[f32], b: Option<&[f32]>, r: Option<&[f32]>| {
                im2win::cpu::reference_conv2d_with_residual(p, x, f, b, r)
                    .expect("the CPU oracle accepts a valid problem")
            };
        let reference = oracle(
            &problem,
            &input,
            &filter,
            bias.as_deref(),
            residual.as_deref(),
        );
        let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
        // The scale of rounding errors: the linear part of the epilogue on |operands| (the
        // activations never amplify an error by more than about 1.13, GELU's steepest slope).
        let e = problem.epilogue;
        let linear = problem.with_epilogue(im2win::Epilogue {
            activation: im2win::Activation::Identity,
            alpha: e.alpha.abs(),
            beta: e.beta.abs(),
            residual: e.residual,
        });
        let magnitude = oracle(
            &linear,
            &abs(&input),
            &abs(&filter),
            bias.as_deref().map(abs).as_deref(),
            residual.as_deref().map(abs).as_deref(),
        );
        Case {
            problem,
            input,
            filter,
            bias,
            residual,
            reference,
            magnitude,
        }
    }
}

/// How [`run_case`] lays out the device buffers.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Elements before every operand inside its buffer (0 means the operand starts the
    /// allocation; odd values give views that are not 16-byte aligned).
    pub offset: usize,
    /// Elements after every operand.
    pub guard: usize,
    /// Pass a workspace of exactly [`Plan::workspace_bytes`] instead of the engine's own.
    pub own_workspace: bool,
    /// Allocate and read the buffers on a second stream, so that cudarc's event tracking
    /// must order them against the engine's stream.
    pub other_stream: bool,
}

impl Layout {
    /// A layout that varies with `i`: aligned and odd offsets, both workspaces, both
    /// streams.
    pub fn varied(i: usize) -> Layout {
        const OFFSETS: [usize; 4] = [64, 1, 0, 37];
        Layout {
            offset: OFFSETS[i % OFFSETS.len()],
            guard: 67,
            own_workspace: i % 2 == 1,
            other_stream: i % 3 == 2,
        }
    }
}

/// `data` inside a buffer of `offset + data.len() + guard` elements filled with `fill`.
fn upload_guarded<T: DeviceRepr + Copy>(
    stream: &Arc<CudaStream>,
    data: &[T],
    layout: &Layout,
    fill: T,
) -> Result<CudaSlice<T>, String> {
    let mut host = vec![fill; layout.offset + data.len() + layout.guard];
    host[layout.offset..layout.offset + data.len()].copy_from_slice(data);
    stream.clone_htod(&host).map_err(|e| format!("upload: {e}"))
}

/// Runs `plan` on the case's data on the GPU with the buffers laid out as `layout` says,
/// and returns the relative error against the CPU reference. Fails (with a description)
/// on an engine error, a changed guard zone, a non-finite output (the NaN poison was not
/// overwritten) or an error above [`TOLERANCE`].
pub fn run_case(engine: &Engine, plan: &Plan, case: &Case, layout: &Layout) -> Result<f64, String> {
    run_case_output(engine, plan, case, layout).map(|(err, _)| err)
}

/// [`run_case`], also returning the output itself (without the guard zones), e.g. to
/// compare runs bit for bit.
pub fn run_case_output(
    engine: &Engine,
    plan: &Plan,
    case: &Case,
    layout: &Layout,
) -> Result<(f64, Vec<f32>), String> {
    let stream = if layout.other_stream {
        engine.context().new_stream().map_err(|e| e.to_string())?
    } else {
        engine.stream().clone()
    };
    let shape = plan.shape();
    let (o, out_len) = (layout.offset, shape.output_len);
    let x = upload_guarded(&stream, &case.input, layout, FAR_AWAY)?;
    let f = upload_guarded(&stream, &case.filter, layout, FAR_AWAY)?;
    let b = match &case.bias {
        Some(bias) => Some(upload_guarded(&stream, bias, layout, FAR_AWAY)?),
        None => None,
    };
    let mut y = upload_guarded(&stream, &vec![POISON; out_len], layout, SENTINEL)?;
    let mut workspace = if layout.own_workspace {
        Some(
            stream
                .alloc_zeros::<u8>(plan.workspace_bytes())
                .map_err(|e| e.to_string())?,
        )
    } else {
        None
    };

    let res = match &case.residual {
        Some(residual) => Some(upload_guarded(&stream, residual, layout, FAR_AWAY)?),
        None => None,
    };
    let bias_view = b.as_ref().map(|b| b.slice(o..o + shape.output[1]));
    let res_view = res.as_ref().map(|r| r.slice(o..o + out_len));
    engine
        .conv2d_with_residual(
            plan,
            &x.slice(o..o + shape.input_len),
            &f.slice(o..o + shape.filter_len),
            bias_view.as_ref().map(|v| v as _),
            res_view.as_ref().map(|v| v as _),
            &mut y.slice_mut(o..o + out_len),
            workspace.as_mut().map(|w| w as _),
        )
        .map_err(|e| format!("conv2d: {e}"))?;
    let host = stream
        .clone_dtoh(&y)
        .map_err(|e| format!("download: {e}"))?;
    let err = check_output(&host, layout, out_len, case)?;
    Ok((err, host[o..o + out_len].to_vec()))
}

/// Float32 rounding error of a dot product is bounded by a multiple of `Σ|f·x|`, not of
/// the result: where the terms cancel, `‖out − ref‖ / ‖ref‖` grows without any fault of the
/// kernel (seen on the H200: one output of 539 terms summing to nearly zero gave 7e-4). An
/// output also passes when its error is below this fraction of `‖|F| ∗ |X| + |bias|‖`;
/// a wrong index or a missed term moves the result by a sizeable part of that norm, far
/// above it.
pub const MAGNITUDE_TOLERANCE: f64 = 1e-7;

/// Checks the guard zones of a downloaded output buffer and the output inside them: every
/// element written and finite, and `‖out − ref‖ / ‖ref‖ <` [`TOLERANCE`], or, where the
/// result is dominated by cancellation, `‖out − ref‖ / ‖magnitude‖ <`
/// [`MAGNITUDE_TOLERANCE`]. Returns `‖out − ref‖ / ‖ref‖`.
pub fn check_output(host: &[f32], layout: &Layout, len: usize, case: &Case) -> Result<f64, String> {
    let reference = &case.reference;
    let (before, rest) = host.split_at(layout.offset);
    let (out, after) = rest.split_at(len);
    for (zone, values, start) in [("before", before, 0), ("after", after, layout.offset + len)] {
        if let Some(i) = values
            .iter()
            .position(|v| v.to_bits() != SENTINEL.to_bits())
        {
            return Err(format!(
                "guard zone {zone} the output was written at buffer index {} (holds {})",
                start + i,
                values[i]
            ));
        }
    }
    if let Some(i) = out.iter().position(|v| !v.is_finite()) {
        return Err(format!(
            "output[{i}] = {} (not written, or not finite)",
            out[i]
        ));
    }
    let err = relative_error(out, reference);
    let diff = out
        .iter()
        .zip(reference)
        .map(|(&o, &r)| (f64::from(o) - r).powi(2))
        .sum::<f64>()
        .sqrt();
    let magnitude = case.magnitude.iter().map(|m| m * m).sum::<f64>().sqrt();
    let err_magnitude = diff / magnitude;
    if err < TOLERANCE || err_magnitude < MAGNITUDE_TOLERANCE {
        Ok(err)
    } else {
        Err(format!(
            "relative error {err:.3e} ≥ {TOLERANCE:e} and {err_magnitude:.3e} ≥ {MAGNITUDE_TOLERANCE:e} of the magnitude"
        ))
    }
}

/// A compact description of a problem for failure messages.
pub fn describe(problem: &Conv2dProblem) -> String {
    let p = problem;
    let pad = p.padding;
    format!(
        "{}/{} [{}] N{} C{} H{} W{} K{} R{} S{} stride{:?} pad(t{} b{} l{} r{}) dil{:?}",
        p.layout,
        p.filter_layout,
        p.epilogue,
        p.input[0],
        p.input[1],
        p.input[2],
        p.input[3],
        p.filter[0],
        p.filter[2],
        p.filter[3],
        p.stride,
        pad.top,
        pad.bottom,
        pad.left,
        pad.right,
        p.dilation
    )
}

/// Collects failures so that one run reports all of them, not only the first.
#[derive(Default)]
pub struct Failures(Vec<String>);

impl Failures {
    /// Records the outcome of one check.
    pub fn check(&mut self, what: impl FnOnce() -> String, outcome: Result<f64, String>) -> f64 {
        match outcome {
            Ok(err) => err,
            Err(why) => {
                self.0.push(format!("{}: {why}", what()));
                f64::NAN
            }
        }
    }

    /// Records a failure.
    pub fn push(&mut self, why: String) {
        self.0.push(why);
    }

    /// Panics with every recorded failure (at most 30 listed) if there was any.
    pub fn assert_none(self, test: &str) {
        if !self.0.is_empty() {
            let shown: Vec<&str> = self.0.iter().take(30).map(String::as_str).collect();
            panic!("{test}: {} failure(s):\n{}", self.0.len(), shown.join("\n"));
        }
    }
}

/// Largest accepted `‖out − ref‖₂ / ‖ref‖₂` of a tensor-core result against the float64
/// oracle of the same rounded inputs (issue 12): 8e-3 with bf16 output, 1e-3 with f16
/// output, 1e-3 for TF32 (float32 output of TF32 products).
pub fn tensor_op_tolerance(dtype: im2win::DType) -> f64 {
    match dtype {
        im2win::DType::Bf16 => 8e-3,
        im2win::DType::F16 | im2win::DType::F32 => 1e-3,
    }
}

/// A problem with random data of element type `T` and its float64 oracle: values in
/// `[-1, 1]` rounded to `T` (for TF32, float32 values: the oracle rounds input and filter to
/// TF32 as the tensor cores do, `round_to_tf32`, and leaves bias and residual as they are),
/// so that the reference convolves exactly what the kernel multiplies.
pub struct TypedCase<T> {
    /// The problem (its element type is `T`'s).
    pub problem: Conv2dProblem,
    /// Input `N·C·H·W` in the problem's layout.
    pub input: Vec<T>,
    /// Filter `K·C·R·S` in the problem's filter layout.
    pub filter: Vec<T>,
    /// Bias `K`, if any.
    pub bias: Option<Vec<T>>,
    /// Residual `N·K·P·Q`, when the problem's epilogue has one.
    pub residual: Option<Vec<T>>,
    /// `im2win::cpu::reference_conv2d_with_residual` of the above (float64).
    pub reference: Vec<f64>,
}

impl<T: im2win::Element> TypedCase<T> {
    /// Random data for `problem` (whose element type must be `T`'s) and the oracle's output.
    pub fn random(rng: &mut impl Rng, problem: Conv2dProblem, with_bias: bool) -> TypedCase<T> {
        let shape = problem.shape().expect("generated problems are valid");
        let typed = |v: Vec<f32>| v.into_iter().map(T::from_f32).collect::<Vec<T>>();
        let input = typed(random_data(rng, shape.input_len));
        let filter = typed(random_data(rng, shape.filter_len));
        let bias = with_bias.then(|| typed(random_data(rng, shape.output[1])));
        let residual = problem
            .epilogue
            .residual
            .then(|| typed(random_data(rng, shape.output_len)));
        let reference = im2win::cpu::reference_conv2d_with_residual(
            &problem,
            &input,
            &filter,
            bias.as_deref(),
            residual.as_deref(),
        )
        .expect("the CPU oracle accepts a valid problem");
        TypedCase {
            problem,
            input,
            filter,
            bias,
            residual,
            reference,
        }
    }
}

/// How [`run_typed_case`] runs a case: a given plan, or the engine's own dispatch
/// (`Engine::conv2d`, which sees the operands' alignment; no residual).
pub enum Run<'a> {
    /// `Engine::conv2d_with_residual` with this plan.
    Plan(&'a Plan),
    /// `Engine::conv2d`.
    Dispatch,
}

/// Runs a typed case on the GPU with its buffers inside guard zones as `layout` says
/// (offsets in elements; odd ones make misaligned views), the output NaN-poisoned, and
/// returns `‖out − ref‖ / ‖ref‖`. Fails on an engine error, a changed guard zone, an output
/// left unwritten or not finite, or an error above `tolerance`.
pub fn run_typed_case<T: im2win::Element>(
    engine: &Engine,
    run: Run<'_>,
    case: &TypedCase<T>,
    layout: &Layout,
    tolerance: f64,
) -> Result<f64, String> {
    let stream = if layout.other_stream {
        engine.context().new_stream().map_err(|e| e.to_string())?
    } else {
        engine.stream().clone()
    };
    let shape = case.problem.shape().map_err(|e| e.to_string())?;
    let (o, out_len) = (layout.offset, shape.output_len);
    let far = T::from_f32(FAR_AWAY);
    let sentinel = T::from_f32(-12_345.0);
    let x = upload_guarded(&stream, &case.input, layout, far)?;
    let f = upload_guarded(&stream, &case.filter, layout, far)?;
    let b = match &case.bias {
        Some(bias) => Some(upload_guarded(&stream, bias, layout, far)?),
        None => None,
    };
    let res = match &case.residual {
        Some(residual) => Some(upload_guarded(&stream, residual, layout, far)?),
        None => None,
    };
    let poison = vec![T::from_f32(f32::NAN); out_len];
    let mut y = upload_guarded(&stream, &poison, layout, sentinel)?;
    let bias_view = b.as_ref().map(|b| b.slice(o..o + shape.output[1]));
    let res_view = res.as_ref().map(|r| r.slice(o..o + out_len));
    let x_view = x.slice(o..o + shape.input_len);
    let f_view = f.slice(o..o + shape.filter_len);
    let mut y_view = y.slice_mut(o..o + out_len);
    match run {
        Run::Plan(plan) => {
            // A workspace of the plan's size (at least a few bytes: the tensor-core kernels
            // need none, and take one all the same).
            let mut workspace = if layout.own_workspace {
                Some(
                    stream
                        .alloc_zeros::<u8>(plan.workspace_bytes().max(256))
                        .map_err(|e| e.to_string())?,
                )
            } else {
                None
            };
            engine
                .conv2d_with_residual(
                    plan,
                    &x_view,
                    &f_view,
                    bias_view.as_ref().map(|v| v as _),
                    res_view.as_ref().map(|v| v as _),
                    &mut y_view,
                    workspace.as_mut().map(|w| w as _),
                )
                .map_err(|e| format!("conv2d_with_residual: {e}"))?;
        }
        Run::Dispatch => {
            if res_view.is_some() {
                return Err("Engine::conv2d takes no residual".to_string());
            }
            engine
                .conv2d(
                    &case.problem,
                    &x_view,
                    &f_view,
                    bias_view.as_ref().map(|v| v as _),
                    &mut y_view,
                    None,
                )
                .map_err(|e| format!("conv2d: {e}"))?;
        }
    }
    let host = stream
        .clone_dtoh(&y)
        .map_err(|e| format!("download: {e}"))?;
    let bits = |v: &T| v.to_f32().to_bits();
    let (before, rest) = host.split_at(o);
    let (out, after) = rest.split_at(out_len);
    for (zone, values, start) in [("before", before, 0), ("after", after, o + out_len)] {
        if let Some(i) = values.iter().position(|v| bits(v) != bits(&sentinel)) {
            return Err(format!(
                "guard zone {zone} the output was written at buffer index {} (holds {:?})",
                start + i,
                values[i]
            ));
        }
    }
    if let Some(i) = out.iter().position(|v| !v.to_f32().is_finite()) {
        return Err(format!(
            "output[{i}] = {:?} (not written, or not finite)",
            out[i]
        ));
    }
    let err = im2win::cpu::relative_error(out, &case.reference);
    if err <= tolerance {
        Ok(err)
    } else {
        Err(format!("relative error {err:.3e} > {tolerance:e}"))
    }
}

/// Whether a forced plan refuses misaligned operands before it launches: `Engine::conv2d_with`
/// of a kernel with vector loads on an input view that starts 2 bytes past an aligned
/// address must be `Error::Misaligned`, with the output untouched.
pub fn refuses_misaligned<T: im2win::Element>(
    engine: &Engine,
    plan: &Plan,
    case: &TypedCase<T>,
) -> Result<(), String> {
    let stream = engine.stream();
    let shape = plan.shape();
    let layout = Layout {
        offset: 1,
        guard: 8,
        own_workspace: false,
        other_stream: false,
    };
    let x = upload_guarded(stream, &case.input, &layout, T::from_f32(0.0))?;
    let f = upload_guarded(stream, &case.filter, &layout, T::from_f32(0.0))?;
    let poison = vec![T::from_f32(f32::NAN); shape.output_len];
    let mut y = stream.clone_htod(&poison).map_err(|e| e.to_string())?;
    let result = engine.conv2d_with(
        plan,
        &x.slice(1..1 + shape.input_len),
        &f.slice(1..1 + shape.filter_len),
        None,
        &mut y,
        None,
    );
    match result {
        Err(Error::Misaligned { .. }) => {}
        other => return Err(format!("expected Error::Misaligned, got {other:?}")),
    }
    let host = stream.clone_dtoh(&y).map_err(|e| e.to_string())?;
    if host.iter().all(|v| v.to_f32().is_nan()) {
        Ok(())
    } else {
        Err("the output was written".to_string())
    }
}
