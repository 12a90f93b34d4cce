//! The layer on CPU tensors (im2win's CPU backend) against candle_nn's own Conv2d and against
//! im2win's float64 oracle, on random data over many shapes and configurations; the
//! VarBuilder names; the epilogues; the errors. No GPU needed (CI runs these).

mod common;

use candle_core::{DType, Device, IndexOp, Module, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{
    Case, oracle, prepared_matches_unprepared, random, relative_error, rng, tolerance, values,
    var_weight_error,
};
use im2win::Epilogue;
use im2win_candle::{Activation, Conv2d, Conv2dConfig, Precision, conv2d, conv2d_no_bias};

const DTYPES: [DType; 3] = [DType::F32, DType::BF16, DType::F16];

/// candle_nn's output of `layer` on `x`. candle's CPU backend has no BF16 convolution
/// (its matmul refuses BF16): a BF16 layer runs in float32 on the same (BF16) values, and its
/// output is rounded to BF16.
fn candle_forward(layer: &candle_nn::Conv2d, x: &Tensor) -> Result<Tensor> {
    if x.dtype() != DType::BF16 || !x.device().is_cpu() {
        return layer.forward(x);
    }
    let f32 = |t: &Tensor| t.to_dtype(DType::F32);
    let wide = candle_nn::Conv2d::new(
        f32(layer.weight())?,
        layer.bias().map(f32).transpose()?,
        *layer.config(),
    );
    wide.forward(&f32(x)?)?.to_dtype(DType::BF16)
}

/// How far im2win's output may be from the oracle: one rounding to the type (bf16 2⁻⁸, f16
/// 2⁻¹¹ relative at most per element), float32 sums.
fn oracle_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 2e-6,
        DType::F16 => 6e-4,
        _ => 4e-3,
    }
}

/// Random cases of every dtype against candle_nn's layer and the oracle.
#[test]
fn random_layers_match_candle_nn_and_the_oracle() -> Result<()> {
    let mut rng = rng(13);
    let device = Device::Cpu;
    let (mut worst_candle, mut worst_oracle) = ([0.0_f64; 3], [0.0_f64; 3]);
    for round in 0..120 {
        let case = Case::random(&mut rng, 13, 9);
        for (d, dtype) in DTYPES.into_iter().enumerate() {
            let reference = case.candle_layer(&mut rng, dtype, &device)?;
            let layer = Conv2d::from(reference.clone());
            let x = random(&mut rng, &case.input, dtype, &device)?;
            let ours = layer.forward(&x)?;
            let theirs = candle_forward(&reference, &x)?;
            assert_eq!(ours.dims(), theirs.dims(), "{case:?}");
            assert_eq!(ours.dtype(), dtype);
            let ours = values(&ours)?;
            let to_candle = relative_error(&ours, &values(&theirs)?);
            let to_oracle = relative_error(&ours, &oracle(&layer, &x, None, Epilogue::IDENTITY)?);
            assert!(
                to_candle <= tolerance(dtype),
                "round {round} {dtype:?} {case:?}: {to_candle:e} from candle_nn"
            );
            assert!(
                to_oracle <= oracle_tolerance(dtype),
                "round {round} {dtype:?} {case:?}: {to_oracle:e} from the oracle"
            );
            worst_candle[d] = worst_candle[d].max(to_candle);
            worst_oracle[d] = worst_oracle[d].max(to_oracle);
        }
    }
    println!("worst relative error against candle_nn (f32, bf16, f16): {worst_candle:?}");
    println!("worst relative error against the oracle (f32, bf16, f16): {worst_oracle:?}");
    Ok(())
}

/// Hand-picked shapes: a single output, a 1×1 filter, a filter as large as the padded input,
/// padding wider than the filter, more channels than one block, a ResNet-like layer.
#[test]
fn edge_shapes_match_candle_nn() -> Result<()> {
    let mut rng = rng(7);
    let device = Device::Cpu;
    let cfg = |padding, stride, dilation| Conv2dConfig {
        padding,
        stride,
        dilation,
        ..Default::default()
    };
    let cases = [
        ([1, 1, 1, 1], [1, 1, 1, 1], cfg(0, 1, 1)),
        ([1, 3, 5, 5], [2, 3, 5, 5], cfg(0, 1, 1)),
        ([2, 3, 3, 3], [4, 3, 3, 3], cfg(3, 2, 1)),
        ([1, 2, 7, 9], [3, 2, 3, 3], cfg(0, 1, 3)),
        ([1, 3, 17, 15], [5, 3, 7, 7], cfg(3, 2, 1)),
        ([1, 37, 9, 9], [70, 37, 1, 1], cfg(0, 2, 1)),
        ([2, 64, 14, 14], [64, 64, 3, 3], cfg(1, 1, 1)),
        ([1, 5, 23, 23], [3, 5, 11, 11], cfg(2, 4, 1)),
    ];
    for (input, filter, config) in cases {
        for dtype in DTYPES {
            for bias in [false, true] {
                let case = Case {
                    input,
                    filter,
                    config,
                    bias,
                };
                let reference = case.candle_layer(&mut rng, dtype, &device)?;
                let layer = Conv2d::from(reference.clone());
                let x = random(&mut rng, &input, dtype, &device)?;
                let err = relative_error(
                    &values(&layer.forward(&x)?)?,
                    &values(&candle_forward(&reference, &x)?)?,
                );
                assert!(err <= tolerance(dtype), "{dtype:?} {case:?}: {err:e}");
            }
        }
    }
    Ok(())
}

/// Strided views (a transposed input, a narrowed width, a stepped filter) are made
/// contiguous and give candle_nn's result; a contiguous view at an offset (a narrowed batch)
/// is read in place and gives it too.
#[test]
fn non_contiguous_inputs_are_handled() -> Result<()> {
    let mut rng = rng(3);
    let device = Device::Cpu;
    for dtype in DTYPES {
        let case = Case {
            input: [3, 4, 9, 11],
            filter: [5, 4, 3, 3],
            config: Conv2dConfig {
                padding: 1,
                stride: 2,
                ..Default::default()
            },
            bias: true,
        };
        let reference = case.candle_layer(&mut rng, dtype, &device)?;
        let layer = Conv2d::from(reference.clone());
        // NCWH transposed into an NCHW view: strided.
        let transposed = random(&mut rng, &[3, 4, 11, 9], dtype, &device)?.transpose(2, 3)?;
        // A window of the width: strided rows.
        let narrowed = random(&mut rng, &[3, 4, 9, 20], dtype, &device)?.narrow(3, 5, 11)?;
        // Images 1 and 2 of 4: contiguous, at an offset into the storage.
        let batch = random(&mut rng, &[4, 4, 9, 11], dtype, &device)?.narrow(0, 1, 2)?;
        // Every other row of a twice-as-tall tensor.
        let stepped = random(&mut rng, &[3, 4, 18, 11], dtype, &device)?
            .reshape((3, 4, 9, 2, 11))?
            .i((.., .., .., 0, ..))?;
        assert!(!transposed.is_contiguous() && !narrowed.is_contiguous());
        assert!(!stepped.is_contiguous() && batch.is_contiguous());
        assert_ne!(batch.layout().start_offset(), 0);
        for x in [transposed, narrowed, batch, stepped] {
            let err = relative_error(
                &values(&layer.forward(&x)?)?,
                &values(&candle_forward(&reference, &x)?)?,
            );
            assert!(
                err <= tolerance(dtype),
                "{dtype:?} {:?}: {err:e}",
                x.layout()
            );
        }
        // A strided filter (every other output channel of a larger one).
        let wide = random(&mut rng, &[10, 4, 3, 3], dtype, &device)?
            .reshape((5, 2, 4, 3, 3))?
            .i((.., 0))?;
        assert!(!wide.is_contiguous());
        let strided = Conv2d::new(wide.clone(), None, case.config);
        let x = random(&mut rng, &case.input, dtype, &device)?;
        let err = relative_error(
            &values(&strided.forward(&x)?)?,
            &values(&candle_forward(
                &candle_nn::Conv2d::new(wide, None, case.config),
                &x,
            )?)?,
        );
        assert!(err <= tolerance(dtype), "{dtype:?} strided filter: {err:e}");
    }
    Ok(())
}

/// The fused activations and residual against candle's own ops after candle_nn's layer, and
/// against the oracle's epilogue.
#[test]
fn epilogues_match_candle_ops() -> Result<()> {
    let mut rng = rng(5);
    let device = Device::Cpu;
    let case = Case::padded([2, 6, 10, 9], [7, 6, 3, 3], 1);
    for dtype in DTYPES {
        let reference = case.candle_layer(&mut rng, dtype, &device)?;
        let x = random(&mut rng, &case.input, dtype, &device)?;
        let residual = random(&mut rng, &[2, 7, 10, 9], dtype, &device)?;
        let plain = candle_forward(&reference, &x)?;
        let activations: [(Activation, Tensor); 5] = [
            (Activation::Identity, plain.clone()),
            (Activation::Relu, plain.relu()?),
            (Activation::Silu, plain.silu()?),
            (Activation::Gelu, plain.gelu_erf()?),
            (Activation::GeluTanh, plain.gelu()?),
        ];
        for (activation, expected) in activations {
            let layer = Conv2d::from(reference.clone()).with_activation(activation);
            let ours = layer.forward(&x)?;
            let err = relative_error(&values(&ours)?, &values(&expected)?);
            assert!(err <= tolerance(dtype), "{dtype:?} {activation}: {err:e}");
            let epilogue = Epilogue::activation(activation);
            let err = relative_error(&values(&ours)?, &oracle(&layer, &x, None, epilogue)?);
            assert!(
                err <= oracle_tolerance(dtype),
                "{dtype:?} {activation}: {err:e}"
            );

            // act(conv + bias + residual), and with scales.
            let ours = layer.forward_with_residual(&x, &residual)?;
            let sum = (&plain + &residual)?;
            let expected = match activation {
                Activation::Identity => sum,
                Activation::Relu => sum.relu()?,
                Activation::Silu => sum.silu()?,
                Activation::Gelu => sum.gelu_erf()?,
                Activation::GeluTanh => sum.gelu()?,
            };
            let err = relative_error(&values(&ours)?, &values(&expected)?);
            assert!(
                err <= 2.0 * tolerance(dtype),
                "{dtype:?} {activation} + residual: {err:e}"
            );
            let scaled = layer.clone().with_alpha(0.5).with_residual_scale(-2.0);
            let ours = scaled.forward_with_residual(&x, &residual)?;
            let epilogue = epilogue.with_alpha(0.5).with_residual(-2.0);
            let err = relative_error(
                &values(&ours)?,
                &oracle(&scaled, &x, Some(&residual), epilogue)?,
            );
            assert!(
                err <= oracle_tolerance(dtype),
                "{dtype:?} {activation} scaled: {err:e}"
            );
        }
        // A strided residual is made contiguous first.
        let layer = Conv2d::from(reference.clone());
        let strided = random(&mut rng, &[2, 7, 9, 10], dtype, &device)?.transpose(2, 3)?;
        let err = relative_error(
            &values(&layer.forward_with_residual(&x, &strided)?)?,
            &values(&(&plain + &strided)?)?,
        );
        assert!(
            err <= 2.0 * tolerance(dtype),
            "{dtype:?} strided residual: {err:e}"
        );
    }
    Ok(())
}

/// Float32 at TF32 precision: the oracle of the TF32-rounded operands, and farther from the
/// strict result than strict FP32 is.
#[test]
fn tf32_precision_when_asked() -> Result<()> {
    let mut rng = rng(11);
    let device = Device::Cpu;
    let case = Case::padded([2, 16, 12, 12], [8, 16, 3, 3], 1);
    let reference = case.candle_layer(&mut rng, DType::F32, &device)?;
    let x = random(&mut rng, &case.input, DType::F32, &device)?;
    let strict = Conv2d::from(reference.clone());
    let tf32 = strict.clone().with_precision(Precision::Tf32);
    assert_eq!(strict.precision(), Precision::Strict);
    let exact = oracle(&strict, &x, None, Epilogue::IDENTITY)?;
    let tf32_out = values(&tf32.forward(&x)?)?;
    let strict_err = relative_error(&values(&strict.forward(&x)?)?, &exact);
    let tf32_err = relative_error(&tf32_out, &exact);
    let to_rounded = relative_error(&tf32_out, &oracle(&tf32, &x, None, Epilogue::IDENTITY)?);
    assert!(
        to_rounded <= 2e-6,
        "TF32 against the oracle of rounded operands: {to_rounded:e}"
    );
    assert!(
        tf32_err > 10.0 * strict_err && tf32_err < 2e-3,
        "TF32 {tf32_err:e} against strict {strict_err:e}"
    );
    // bf16 and f16 ignore the float32 precision.
    let bf16 = Conv2d::from(case.candle_layer(&mut rng, DType::BF16, &device)?)
        .with_precision(Precision::Tf32);
    bf16.forward(&x.to_dtype(DType::BF16)?)?;
    Ok(())
}

/// `conv2d` and `conv2d_no_bias` read and create the same variables as candle_nn's: one
/// VarMap feeds both kinds of layer, in either order, and they compute the same.
#[test]
fn varbuilder_names_are_candle_nn_names() -> Result<()> {
    let device = Device::Cpu;
    let cfg = Conv2dConfig {
        padding: 1,
        stride: 2,
        ..Default::default()
    };
    let x = random(&mut rng(1), &[2, 3, 16, 16], DType::F32, &device)?;

    // candle_nn first creates the variables, im2win-candle reads them.
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let theirs = candle_nn::conv2d(3, 8, 3, cfg, vb.pp("stem"))?;
    let ours = conv2d(3, 8, 3, cfg, vb.pp("stem"))?;
    let mut names: Vec<String> = varmap.data().lock().unwrap().keys().cloned().collect();
    names.sort();
    assert_eq!(names, ["stem.bias", "stem.weight"]);
    assert_eq!(values(ours.weight())?, values(theirs.weight())?);
    let err = relative_error(&values(&ours.forward(&x)?)?, &values(&theirs.forward(&x)?)?);
    assert!(err <= 1e-5, "{err:e}");

    // im2win-candle first creates them, candle_nn reads them.
    let ours = conv2d_no_bias(3, 4, 5, cfg, vb.pp("head"))?;
    let theirs = candle_nn::conv2d_no_bias(3, 4, 5, cfg, vb.pp("head"))?;
    assert!(ours.bias().is_none());
    assert_eq!(values(ours.weight())?, values(theirs.weight())?);
    assert_eq!(varmap.data().lock().unwrap().len(), 3);

    // Weights loaded by name (as from a safetensors file): `weight` and `bias`.
    let tensors = std::collections::HashMap::from([
        ("c.weight".to_string(), theirs.weight().clone()),
        ("c.bias".to_string(), Tensor::zeros(4, DType::F32, &device)?),
    ]);
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &device);
    let loaded = conv2d(3, 4, 5, cfg, vb.pp("c"))?;
    let reference = candle_nn::conv2d(3, 4, 5, cfg, vb.pp("c"))?;
    assert_eq!(
        values(&loaded.forward(&x)?)?.len(),
        values(&candle_forward(&reference, &x)?)?.len()
    );
    assert!(conv2d(3, 4, 5, cfg, vb.pp("missing")).is_err());
    assert!(
        conv2d(3, 5, 5, cfg, vb.pp("c")).is_err(),
        "a misshapen weight is refused"
    );
    Ok(())
}

/// Folding a batch norm gives candle_nn's folded layer.
#[test]
fn absorb_bn_is_candle_nn_s() -> Result<()> {
    let mut rng = rng(17);
    let device = Device::Cpu;
    let case = Case {
        input: [1, 4, 8, 8],
        filter: [6, 4, 3, 3],
        config: Conv2dConfig::default(),
        bias: true,
    };
    let reference = case.candle_layer(&mut rng, DType::F32, &device)?;
    let positive = |t: Tensor| t.abs()?.affine(1.0, 0.1);
    let bn = candle_nn::BatchNorm::new(
        6,
        random(&mut rng, &[6], DType::F32, &device)?,
        positive(random(&mut rng, &[6], DType::F32, &device)?)?,
        random(&mut rng, &[6], DType::F32, &device)?,
        random(&mut rng, &[6], DType::F32, &device)?,
        1e-5,
    )?;
    let ours = Conv2d::from(reference.clone())
        .with_activation(Activation::Relu)
        .absorb_bn(&bn)?;
    assert_eq!(ours.activation(), Activation::Relu);
    let theirs = reference.absorb_bn(&bn)?;
    let x = random(&mut rng, &case.input, DType::F32, &device)?;
    let err = relative_error(
        &values(&ours.forward(&x)?)?,
        &values(&theirs.forward(&x)?.relu()?)?,
    );
    assert!(err <= 1e-5, "{err:e}");
    Ok(())
}

/// Grouped and depthwise layers (im2win's CPU grouped loop) against candle_nn's own grouped
/// convolution and the oracle, every dtype; group counts that do not divide the channels, and
/// 0, refused with the reason.
#[test]
fn grouped_and_depthwise_layers() -> Result<()> {
    let device = Device::Cpu;
    let mut rng = rng(37);
    let mut worst = 0.0_f64;
    // (C, K, groups, filter, stride, padding): grouped, depthwise, depthwise with a channel
    // multiplier and stride 2, 1 × 1 grouped, 5 × 5 depthwise.
    for (c, k, groups, r, stride, padding) in [
        (4, 8, 2, 3, 1, 1),
        (6, 6, 6, 3, 1, 1),
        (8, 16, 8, 3, 2, 1),
        (12, 6, 3, 1, 1, 0),
        (5, 10, 5, 5, 2, 2),
    ] {
        let config = Conv2dConfig {
            groups,
            padding,
            stride,
            ..Default::default()
        };
        for dtype in DTYPES {
            let weight = random(&mut rng, &[k, c / groups, r, r], dtype, &device)?;
            let bias = random(&mut rng, &[k], dtype, &device)?;
            let reference = candle_nn::Conv2d::new(weight, Some(bias), config);
            let layer = Conv2d::from(reference.clone());
            let x = random(&mut rng, &[2, c, 9, 11], dtype, &device)?;
            let got = values(&layer.forward(&x)?)?;
            let err = relative_error(&got, &values(&candle_forward(&reference, &x)?)?);
            let oracle_err = relative_error(&got, &oracle(&layer, &x, None, Epilogue::IDENTITY)?);
            assert!(
                err < tolerance(dtype) && oracle_err < tolerance(dtype),
                "{dtype:?} C {c} K {k} groups {groups}: {err:e} from candle_nn, {oracle_err:e} from the oracle"
            );
            worst = worst.max(err);
        }
    }
    let cfg = Conv2dConfig {
        groups: 3,
        padding: 1,
        ..Default::default()
    };
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, &device);
    let err = conv2d(4, 8, 3, cfg, vb.pp("g")).unwrap_err().to_string();
    assert!(
        err.contains("groups = 3") && err.contains("divide"),
        "{err}"
    );
    let zero = Conv2dConfig { groups: 0, ..cfg };
    let err = conv2d(4, 8, 3, zero, vb.pp("z")).unwrap_err().to_string();
    assert!(err.contains("groups must be at least 1"), "{err}");
    let layer = Conv2d::new(Tensor::ones((8, 2, 3, 3), DType::F32, &device)?, None, cfg);
    let x = Tensor::ones((1, 4, 5, 5), DType::F32, &device)?;
    let err = layer.forward(&x).unwrap_err().to_string();
    assert!(err.contains("groups = 3"), "{err}");
    println!("im2win-candle-summary: grouped and depthwise layers: worst {worst:e} from candle_nn");
    Ok(())
}

/// Prepared CPU filters: a layer's forwards with its filter packed once (the default) equal,
/// bit for bit, those of the layer packing it every call, on repeated calls, other batch
/// sizes, grouped layers, BF16 and TF32; a `Var` weight is never prepared, so a forward
/// after `Var::set` computes with the new values.
#[test]
fn prepared_cpu_filters() -> Result<()> {
    let device = Device::Cpu;
    let mut rng = rng(41);
    let mut runs = 0;
    for round in 0..16 {
        let mut case = Case::random(&mut rng, 16, 40);
        if round % 4 == 3 {
            // Grouped: the channels rounded to multiples of 2 groups.
            let [k, c, ..] = &mut case.filter;
            (*c, *k) = (2 * c.div_ceil(2), 2 * k.div_ceil(2));
            case.input[1] = *c;
            case.filter[1] /= 2;
            case.config.groups = 2;
        }
        for (dtype, precision) in [
            (DType::F32, Precision::Strict),
            (DType::F32, Precision::Tf32),
            (DType::BF16, Precision::Strict),
        ] {
            let reference = case.candle_layer(&mut rng, dtype, &device)?;
            let layer = Conv2d::from(reference).with_precision(precision);
            let context = format!("round {round} {dtype:?} {precision:?}");
            runs += prepared_matches_unprepared(&mut rng, &case, layer, dtype, &device, &context)?;
        }
    }
    let err = var_weight_error(&mut rng, &device, candle_forward)?;
    assert!(
        err < 1e-5,
        "a variable weight's new values were not used: {err:e}"
    );
    println!(
        "im2win-candle-summary: prepared CPU filters: {runs} forwards bit-identical to unprepared ones; a Var weight updated: {err:e} from candle_nn"
    );
    Ok(())
}

/// Every misuse is an error with a message, never a panic.
#[test]
fn misuse_is_an_error() -> Result<()> {
    let device = Device::Cpu;
    let layer = |k: usize, c: usize, dtype| -> Result<Conv2d> {
        Ok(Conv2d::new(
            Tensor::ones((k, c, 3, 3), dtype, &device)?,
            Some(Tensor::ones(k, dtype, &device)?),
            Conv2dConfig::default(),
        ))
    };
    let x = Tensor::ones((1, 3, 8, 8), DType::F32, &device)?;
    let message = |r: Result<Tensor>| r.unwrap_err().to_string();

    let err = message(layer(4, 3, DType::F64)?.forward(&x.to_dtype(DType::F64)?));
    assert!(
        err.contains("F64") && err.contains("not supported"),
        "{err}"
    );
    let err = message(layer(4, 3, DType::BF16)?.forward(&x));
    assert!(err.contains("BF16") && err.contains("F32"), "{err}");
    let err = message(layer(4, 5, DType::F32)?.forward(&x));
    assert!(err.contains("im2win"), "{err}");
    let err = message(layer(4, 3, DType::F32)?.forward(&x.i(0)?));
    assert!(!err.is_empty());
    let err = message(layer(4, 3, DType::F32)?.forward(&x.narrow(2, 0, 2)?));
    assert!(err.contains("padded input"), "{err}");
    let bad_bias = Conv2d::new(
        Tensor::ones((4, 3, 3, 3), DType::F32, &device)?,
        Some(Tensor::ones(5, DType::F32, &device)?),
        Conv2dConfig::default(),
    );
    let err = message(bad_bias.forward(&x));
    assert!(err.contains("bias has 5 elements"), "{err}");
    let residual = Tensor::ones((1, 4, 5, 5), DType::F32, &device)?;
    let err = message(layer(4, 3, DType::F32)?.forward_with_residual(&x, &residual));
    assert!(err.contains("residual"), "{err}");
    let err = message(layer(4, 3, DType::F32)?.with_alpha(f32::NAN).forward(&x));
    assert!(err.contains("finite"), "{err}");
    Ok(())
}

/// The layer is forward only: a backward pass through it fails (it does not silently give
/// no gradient).
#[test]
fn backward_is_not_supported() -> Result<()> {
    let device = Device::Cpu;
    let weight = Var::ones((2, 3, 3, 3), DType::F32, &device)?;
    let layer = Conv2d::new(weight.as_tensor().clone(), None, Conv2dConfig::default());
    let x = Tensor::ones((1, 3, 5, 5), DType::F32, &device)?;
    let y = layer.forward(&x)?;
    assert!(y.sum_all()?.backward().is_err());
    Ok(())
}
