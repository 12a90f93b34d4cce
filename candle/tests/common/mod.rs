//! Shared by the CPU and GPU tests: random layers and inputs, and error measures.

#![allow(dead_code)]

use candle_core::{DType, Device, Result, Tensor, WithDType};
use im2win::{Conv2dProblem, Element, Epilogue, Padding};
use im2win_candle::{Conv2d, Conv2dConfig, Precision};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// The random number generator of a test: seed `IM2WIN_TEST_SEED` if set, else `default`.
pub fn rng(default: u64) -> StdRng {
    let seed = std::env::var("IM2WIN_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default);
    StdRng::seed_from_u64(seed)
}

/// A tensor of `dims` with values uniform in [-1, 1), made in float32 and converted to
/// `dtype`, on `device`.
pub fn random(rng: &mut StdRng, dims: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
    let len = dims.iter().product::<usize>();
    let values: Vec<f32> = (0..len).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(values, dims, &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// One random convolution: input `[N, C, H, W]`, filter `[K, C, R, S]` (not always square),
/// the configuration, and whether it has a bias. Every size is small and often odd; the
/// filter always fits the padded input.
#[derive(Debug, Clone, Copy)]
pub struct Case {
    pub input: [usize; 4],
    pub filter: [usize; 4],
    pub config: Conv2dConfig,
    pub bias: bool,
}

impl Case {
    /// A case with a bias, stride 1, no dilation and `padding` on every side.
    pub fn padded(input: [usize; 4], filter: [usize; 4], padding: usize) -> Case {
        Case {
            input,
            filter,
            config: Conv2dConfig {
                padding,
                ..Default::default()
            },
            bias: true,
        }
    }

    /// A random case with sizes up to `max_size` and channels up to `max_channels`.
    pub fn random(rng: &mut StdRng, max_size: usize, max_channels: usize) -> Case {
        let config = Conv2dConfig {
            padding: rng.random_range(0..=3),
            stride: rng.random_range(1..=3),
            dilation: rng.random_range(1..=3),
            groups: 1,
            cudnn_fwd_algo: None,
        };
        let r = rng.random_range(1..=5);
        let s = if rng.random_bool(0.7) {
            r
        } else {
            rng.random_range(1..=5)
        };
        // The smallest input the dilated filter fits in, with the padding.
        let least = |f: usize| {
            (config.dilation * (f - 1) + 1)
                .saturating_sub(2 * config.padding)
                .max(1)
        };
        let h = rng.random_range(least(r)..=max_size.max(least(r)));
        let w = rng.random_range(least(s)..=max_size.max(least(s)));
        let c = rng.random_range(1..=max_channels);
        let k = rng.random_range(1..=max_channels);
        Case {
            input: [rng.random_range(1..=3), c, h, w],
            filter: [k, c, r, s],
            config,
            bias: rng.random_bool(0.5),
        }
    }

    /// candle_nn's layer of this case with random weights of `dtype` on `device`.
    pub fn candle_layer(
        &self,
        rng: &mut StdRng,
        dtype: DType,
        device: &Device,
    ) -> Result<candle_nn::Conv2d> {
        let weight = random(rng, &self.filter, dtype, device)?;
        let bias = if self.bias {
            Some(random(rng, &[self.filter[0]], dtype, device)?)
        } else {
            None
        };
        Ok(candle_nn::Conv2d::new(weight, bias, self.config))
    }
}

/// The values of a tensor of any float type, in float64.
pub fn values(t: &Tensor) -> Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
}

/// `‖a − b‖₂ / ‖b‖₂` (the absolute norm of the difference when `b` is all zeros); infinite
/// for different lengths, NaN when either has a NaN.
pub fn relative_error(a: &[f64], b: &[f64]) -> f64 {
    if a.len() != b.len() {
        return f64::INFINITY;
    }
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt();
    let norm = b.iter().map(|y| y * y).sum::<f64>().sqrt();
    if norm == 0.0 { diff } else { diff / norm }
}

/// How far two results of `dtype` may be apart (relative): each rounds its outputs (and
/// candle its partial results) to the type.
pub fn tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 4e-3,
        _ => 1e-2,
    }
}

/// im2win's problem for `layer` on `x` with `epilogue`: what the layer computes.
pub fn problem(layer: &Conv2d, x: &Tensor, epilogue: Epilogue) -> Result<Conv2dProblem> {
    let (n, c, h, w) = x.dims4()?;
    let (k, fc, r, s) = layer.weight().dims4()?;
    let cfg = layer.config();
    let dtype = match x.dtype() {
        DType::F32 => im2win::DType::F32,
        DType::BF16 => im2win::DType::Bf16,
        _ => im2win::DType::F16,
    };
    let precision = if dtype == im2win::DType::F32 {
        layer.precision()
    } else {
        Precision::Strict
    };
    Ok(Conv2dProblem::new([n, c, h, w], [k, fc, r, s])
        .with_groups(cfg.groups)
        .with_stride([cfg.stride; 2])
        .with_padding(Padding::uniform(cfg.padding))
        .with_dilation([cfg.dilation; 2])
        .with_dtype(dtype)
        .with_precision(precision)
        .with_epilogue(epilogue))
}

/// The float64 oracle's output for `layer` on `x` (plus `residual`) with `epilogue`,
/// computed on the CPU from the tensors' values (wherever they are).
pub fn oracle(
    layer: &Conv2d,
    x: &Tensor,
    residual: Option<&Tensor>,
    epilogue: Epilogue,
) -> Result<Vec<f64>> {
    let problem = problem(layer, x, epilogue)?;
    fn typed<T: Element + WithDType>(
        problem: &Conv2dProblem,
        layer: &Conv2d,
        x: &Tensor,
        residual: Option<&Tensor>,
    ) -> Result<Vec<f64>> {
        let flat = |t: &Tensor| t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<T>();
        let bias = layer.bias().map(flat).transpose()?;
        let residual = residual.map(flat).transpose()?;
        im2win::cpu::reference_conv2d_with_residual(
            problem,
            &flat(x)?,
            &flat(layer.weight())?,
            bias.as_deref(),
            residual.as_deref(),
        )
        .map_err(candle_core::Error::wrap)
    }
    match x.dtype() {
        DType::F32 => typed::<f32>(&problem, layer, x, residual),
        DType::BF16 => typed::<im2win::half::bf16>(&problem, layer, x, residual),
        _ => typed::<im2win::half::f16>(&problem, layer, x, residual),
    }
}

/// A layer whose weight is a candle `Var` (preparation on, as by default): one forward,
/// `Var::set` to new random values, a second forward. Returns the second forward's relative
/// error from candle_nn's layer with the new weight (`candle_forward`), which is small only
/// if the layer did not keep a filter prepared from the old values.
pub fn var_weight_error(
    rng: &mut StdRng,
    device: &Device,
    candle_forward: impl Fn(&candle_nn::Conv2d, &Tensor) -> Result<Tensor>,
) -> Result<f64> {
    use candle_core::Module;
    let case = Case::random(rng, 12, 16);
    let reference = case.candle_layer(rng, DType::F32, device)?;
    let var = candle_core::Var::from_tensor(reference.weight())?;
    let bias = reference.bias().cloned();
    let layer =
        Conv2d::new(var.as_tensor().clone(), bias.clone(), case.config).with_prepared_filter(true);
    let x = random(rng, &case.input, DType::F32, device)?;
    layer.forward(&x)?;
    var.set(&random(rng, &case.filter, DType::F32, device)?)?;
    let updated = candle_nn::Conv2d::new(var.as_tensor().clone(), bias, case.config);
    Ok(relative_error(
        &values(&layer.forward(&x)?)?,
        &values(&candle_forward(&updated, &x)?)?,
    ))
}

/// `layer` (filter prepared, the default) against the same layer with preparation off, on
/// `case`'s input twice and on a batch one larger, inputs of `dtype` on `device`: every
/// output the same bits. Returns the forwards compared; `context` names the case in a
/// failure.
pub fn prepared_matches_unprepared(
    rng: &mut StdRng,
    case: &Case,
    layer: Conv2d,
    dtype: DType,
    device: &Device,
    context: &str,
) -> Result<usize> {
    use candle_core::Module;
    let plain = layer.clone().with_prepared_filter(false);
    let mut bigger = case.input;
    bigger[0] += 1;
    for input in [case.input, case.input, bigger] {
        let x = random(rng, &input, dtype, device)?;
        let (a, b) = (values(&layer.forward(&x)?)?, values(&plain.forward(&x)?)?);
        assert!(
            a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
            "{context} {case:?} {input:?}: prepared differs"
        );
    }
    Ok(3)
}
