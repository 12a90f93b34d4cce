//! The benchmark suites: the paper's 12 layers, the distinct convolutions of ResNet-50 and
//! VGG-16 with their counts, and single shapes from the command line.
//!
//! Shapes are those of `../shared/ANCHORS.md`.

use im2win::{
    Activation, Conv2dProblem, DType, Epilogue, FilterLayout, Layout, Padding, Precision,
};

use crate::error::{BenchError, Context, Result};

/// One convolution of a suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// The name in the report: `conv1` … `conv12` for the paper, descriptive otherwise.
    pub name: String,
    /// The convolution.
    pub problem: Conv2dProblem,
    /// How often the network runs this shape (1 for the paper's and single layers).
    pub count: usize,
    /// Whether the convolution adds a bias (the epilogue runs, `--epilogue`).
    pub bias: bool,
}

/// The epilogue a run measures (`--epilogue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum EpilogueMode {
    /// The plain convolution, no bias (every method).
    #[default]
    None,
    /// `relu(conv + bias)` on every layer.
    BiasRelu,
    /// ResNet-50's own: `relu(conv + bias + residual)` on the 1×1 convolutions that expand
    /// a bottleneck (K = 4·C, stride 1: where the skip connection is added), `conv + bias`
    /// on the 1×1 stride-2 shortcut projections, `relu(conv + bias)` elsewhere. (The first
    /// stage's shortcut projection, 64 → 256, has an expansion's shape and counts as one.)
    Resnet,
}

impl EpilogueMode {
    /// The name in result file names: `bias-relu`, `resnet` (none for `None`).
    pub fn file_tag(self) -> Option<&'static str> {
        match self {
            EpilogueMode::None => None,
            EpilogueMode::BiasRelu => Some("bias-relu"),
            EpilogueMode::Resnet => Some("resnet"),
        }
    }

    /// The epilogue of `problem` under this mode.
    pub fn epilogue_of(self, problem: &Conv2dProblem) -> Epilogue {
        let relu = Epilogue::activation(Activation::Relu);
        let [k, c, r, s] = problem.filter;
        let pointwise = r == 1 && s == 1;
        match self {
            EpilogueMode::None => Epilogue::IDENTITY,
            EpilogueMode::BiasRelu => relu,
            EpilogueMode::Resnet if pointwise && problem.stride == [1, 1] && k == 4 * c => {
                relu.with_residual(1.0)
            }
            EpilogueMode::Resnet if pointwise && problem.stride != [1, 1] => Epilogue::IDENTITY,
            EpilogueMode::Resnet => relu,
        }
    }
}

/// A named list of layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suite {
    /// `paper`, `resnet50`, `vgg16` or `layer`.
    pub name: String,
    /// Batch size of every layer.
    pub batch: usize,
    /// The layers, in network order.
    pub layers: Vec<Layer>,
    /// Whether the report ends with a `total` layer (Σ count × time): the whole networks.
    pub has_total: bool,
    /// Memory order of every layer's input and output (NHWC runs use KRSC filters, as
    /// cuDNN's and PyTorch's `channels_last`).
    pub layout: Layout,
    /// The epilogue measured.
    pub epilogue: EpilogueMode,
    /// Element type of every layer's tensors (`--dtype`).
    pub dtype: DType,
    /// Precision of every layer (`--dtype tf32` is float32 at TF32).
    pub precision: Precision,
}

/// The paper's 12 layers: `(C, H=W, K, R=S, stride)`, padding 0.
const PAPER: [(usize, usize, usize, usize, usize); 12] = [
    (3, 227, 96, 11, 4),
    (3, 231, 96, 11, 4),
    (3, 227, 64, 7, 2),
    (32, 224, 64, 7, 2),
    (96, 24, 256, 5, 1),
    (256, 12, 512, 3, 1),
    (3, 224, 64, 3, 1),
    (64, 112, 128, 3, 1),
    (64, 56, 64, 3, 1),
    (128, 28, 128, 3, 1),
    (256, 14, 256, 3, 1),
    (512, 7, 512, 3, 1),
];

/// ResNet-50 v1.5's distinct convolutions: `(C, H=W, K, R=S, stride, pad, count)`.
const RESNET50: [(usize, usize, usize, usize, usize, usize, usize); 23] = [
    (3, 224, 64, 7, 2, 3, 1),
    (64, 56, 64, 1, 1, 0, 1),
    (64, 56, 64, 3, 1, 1, 3),
    (64, 56, 256, 1, 1, 0, 4),
    (256, 56, 64, 1, 1, 0, 2),
    (256, 56, 128, 1, 1, 0, 1),
    (128, 56, 128, 3, 2, 1, 1),
    (128, 28, 512, 1, 1, 0, 4),
    (256, 56, 512, 1, 2, 0, 1),
    (512, 28, 128, 1, 1, 0, 3),
    (128, 28, 128, 3, 1, 1, 3),
    (512, 28, 256, 1, 1, 0, 1),
    (256, 28, 256, 3, 2, 1, 1),
    (256, 14, 1024, 1, 1, 0, 6),
    (512, 28, 1024, 1, 2, 0, 1),
    (1024, 14, 256, 1, 1, 0, 5),
    (256, 14, 256, 3, 1, 1, 5),
    (1024, 14, 512, 1, 1, 0, 1),
    (512, 14, 512, 3, 2, 1, 1),
    (512, 7, 2048, 1, 1, 0, 3),
    (1024, 14, 2048, 1, 2, 0, 1),
    (2048, 7, 512, 1, 1, 0, 2),
    (512, 7, 512, 3, 1, 1, 2),
];

/// VGG-16's distinct convolutions, all 3×3 with stride 1 and padding 1: `(C, H=W, K, count)`.
const VGG16: [(usize, usize, usize, usize); 9] = [
    (3, 224, 64, 1),
    (64, 224, 64, 1),
    (64, 112, 128, 1),
    (128, 112, 128, 1),
    (128, 56, 256, 1),
    (256, 56, 256, 2),
    (256, 28, 512, 1),
    (512, 28, 512, 2),
    (512, 14, 512, 3),
];

/// MobileNetV2's (1.0, 224×224) depthwise 3×3 convolutions, distinct shapes:
/// `(C, H=W of the input, stride, count)`; K = C, groups = C, padding 1. 17 in all: the
/// first of each bottleneck stage strides (t, c, n, s = 1,16,1,1; 6,24,2,2; 6,32,3,2;
/// 6,64,4,2; 6,96,3,1; 6,160,3,2; 6,320,1,1), the others keep the size.
const MOBILENETV2_DEPTHWISE: [(usize, usize, usize, usize); 10] = [
    (32, 112, 1, 1),
    (96, 112, 2, 1),
    (144, 56, 1, 1),
    (144, 56, 2, 1),
    (192, 28, 1, 2),
    (192, 28, 2, 1),
    (384, 14, 1, 4),
    (576, 14, 1, 2),
    (576, 14, 2, 1),
    (960, 7, 1, 3),
];

/// A square layer: `C×H×H` input, `K×C×R×R` filter, the same stride and padding on both axes.
fn square(
    batch: usize,
    c: usize,
    h: usize,
    k: usize,
    r: usize,
    stride: usize,
    pad: usize,
) -> Conv2dProblem {
    Conv2dProblem::new([batch, c, h, h], [k, c, r, r])
        .with_stride([stride, stride])
        .with_padding(Padding::uniform(pad))
}

/// The descriptive name of a layer, e.g. `c64_h56_k64_r3_s1_p1`: input channels, input
/// size, output channels, filter size, stride, padding and (when not 1) dilation. A pair is
/// written once when both axes agree and as `AxB` otherwise.
pub fn layer_name(problem: &Conv2dProblem) -> String {
    let pair = |a: usize, b: usize| {
        if a == b {
            a.to_string()
        } else {
            format!("{a}x{b}")
        }
    };
    let [_, c, h, w] = problem.input;
    let [k, _, r, s] = problem.filter;
    let Padding {
        top,
        bottom,
        left,
        right,
    } = problem.padding;
    let pad = if top == bottom && left == right {
        pair(top, left)
    } else {
        format!("{top}x{bottom}x{left}x{right}")
    };
    let mut name = format!(
        "c{c}_h{}_k{k}_r{}_s{}_p{pad}",
        pair(h, w),
        pair(r, s),
        pair(problem.stride[0], problem.stride[1]),
    );
    if problem.dilation != [1, 1] {
        name.push_str(&format!(
            "_d{}",
            pair(problem.dilation[0], problem.dilation[1])
        ));
    }
    if problem.groups != 1 {
        name.push_str(&format!("_g{}", problem.groups));
    }
    name
}

impl Suite {
    /// The same suite with every layer in `layout` (KRSC filters for NHWC).
    pub fn with_layout(mut self, layout: Layout) -> Suite {
        let filter_layout = match layout {
            Layout::Nchw => FilterLayout::Kcrs,
            Layout::Nhwc => FilterLayout::Krsc,
        };
        for layer in &mut self.layers {
            layer.problem = layer
                .problem
                .with_layout(layout)
                .with_filter_layout(filter_layout);
        }
        self.layout = layout;
        self
    }

    /// The same suite with every layer's tensors of `dtype`, computed at `precision`.
    pub fn with_numeric(mut self, dtype: DType, precision: Precision) -> Suite {
        for layer in &mut self.layers {
            layer.problem = layer.problem.with_dtype(dtype).with_precision(precision);
        }
        self.dtype = dtype;
        self.precision = precision;
        self
    }

    /// The element type and precision as result files name them: `f32`, `tf32`, `bf16`,
    /// `f16`.
    pub fn numeric_name(&self) -> &'static str {
        self.precision.numeric_name(self.dtype)
    }

    /// The same suite with every layer's epilogue as `mode` says (and a bias unless
    /// `None`).
    pub fn with_epilogue(mut self, mode: EpilogueMode) -> Suite {
        for layer in &mut self.layers {
            layer.problem = layer
                .problem
                .with_epilogue(mode.epilogue_of(&layer.problem));
            layer.bias = mode != EpilogueMode::None;
        }
        self.epilogue = mode;
        self
    }

    /// The paper's 12 layers at batch `batch`, named `conv1` … `conv12`.
    pub fn paper(batch: usize) -> Suite {
        let layers = PAPER
            .iter()
            .enumerate()
            .map(|(i, &(c, h, k, r, stride))| Layer {
                name: format!("conv{}", i + 1),
                problem: square(batch, c, h, k, r, stride, 0),
                count: 1,
                bias: false,
            })
            .collect();
        Suite {
            name: "paper".into(),
            batch,
            layers,
            has_total: false,
            layout: Layout::Nchw,
            epilogue: EpilogueMode::None,
            dtype: DType::F32,
            precision: Precision::Strict,
        }
    }

    /// ResNet-50 v1.5's 23 distinct convolutions (53 in all) at batch `batch`.
    pub fn resnet50(batch: usize) -> Suite {
        let layers = RESNET50
            .iter()
            .map(|&(c, h, k, r, stride, pad, count)| {
                let problem = square(batch, c, h, k, r, stride, pad);
                Layer {
                    name: layer_name(&problem),
                    problem,
                    count,
                    bias: false,
                }
            })
            .collect();
        Suite {
            name: "resnet50".into(),
            batch,
            layers,
            has_total: true,
            layout: Layout::Nchw,
            epilogue: EpilogueMode::None,
            dtype: DType::F32,
            precision: Precision::Strict,
        }
    }

    /// VGG-16's 9 distinct convolutions (13 in all) at batch `batch`.
    pub fn vgg16(batch: usize) -> Suite {
        let layers = VGG16
            .iter()
            .map(|&(c, h, k, count)| {
                let problem = square(batch, c, h, k, 3, 1, 1);
                Layer {
                    name: layer_name(&problem),
                    problem,
                    count,
                    bias: false,
                }
            })
            .collect();
        Suite {
            name: "vgg16".into(),
            batch,
            layers,
            has_total: true,
            layout: Layout::Nchw,
            epilogue: EpilogueMode::None,
            dtype: DType::F32,
            precision: Precision::Strict,
        }
    }

    /// MobileNetV2's 10 distinct depthwise 3×3 convolutions (17 in all) at 224×224 and
    /// batch `batch` (groups = C = K, padding 1, stride 1 or 2), named as
    /// [`layer_name`] does (`c32_h112_k32_r3_s1_p1_g32`). Memory-bound layers: the report's
    /// bandwidth (bytes of input, filter and output per second) is the figure of merit.
    /// The pointwise (1×1) layers are dense convolutions of the other suites' kind and are
    /// not included.
    pub fn mobilenetv2(batch: usize) -> Suite {
        let layers = MOBILENETV2_DEPTHWISE
            .iter()
            .map(|&(c, h, stride, count)| {
                let problem = Conv2dProblem::new([batch, c, h, h], [c, 1, 3, 3])
                    .with_groups(c)
                    .with_stride([stride, stride])
                    .with_padding(Padding::uniform(1));
                Layer {
                    name: layer_name(&problem),
                    problem,
                    count,
                    bias: false,
                }
            })
            .collect();
        Suite {
            name: "mobilenetv2".into(),
            batch,
            layers,
            has_total: true,
            layout: Layout::Nchw,
            epilogue: EpilogueMode::None,
            dtype: DType::F32,
            precision: Precision::Strict,
        }
    }

    /// A suite of the one layer `N,C,H,W,K,R,S,stride,pad[,dilation]` (see [`parse_layer`]).
    ///
    /// # Errors
    /// When the text does not parse or the problem is invalid.
    pub fn single(spec: &str) -> Result<Suite> {
        let problem = parse_layer(spec)?;
        Ok(Suite {
            name: "layer".into(),
            batch: problem.input[0],
            layers: vec![Layer {
                name: layer_name(&problem),
                problem,
                count: 1,
                bias: false,
            }],
            has_total: false,
            layout: Layout::Nchw,
            epilogue: EpilogueMode::None,
            dtype: DType::F32,
            precision: Precision::Strict,
        })
    }
}

/// The direct convolution's work in GFLOP (`2·N·K·P·Q·C·R·S / 10⁹`).
pub fn gflop(problem: &Conv2dProblem) -> Result<f64> {
    Ok(problem.flops().context("invalid layer")? / 1e9)
}

/// Parses `N,C,H,W,K,R,S,stride,pad[,dilation]` (stride, padding and dilation the same on
/// both axes) into a validated problem.
///
/// # Errors
/// When there are not 9 or 10 non-negative integers, or the problem is invalid.
pub fn parse_layer(spec: &str) -> Result<Conv2dProblem> {
    let values: Vec<usize> = spec
        .split(',')
        .map(|v| {
            v.trim().parse::<usize>().with_context(|| {
                format!(
                    "--layer `{spec}`: `{}` is not a non-negative integer",
                    v.trim()
                )
            })
        })
        .collect::<Result<_>>()?;
    let (n, c, h, w, k, r, s, stride, pad, dilation) = match values[..] {
        [n, c, h, w, k, r, s, stride, pad] => (n, c, h, w, k, r, s, stride, pad, 1),
        [n, c, h, w, k, r, s, stride, pad, dilation] => {
            (n, c, h, w, k, r, s, stride, pad, dilation)
        }
        _ => {
            return Err(BenchError::new(format!(
                "--layer `{spec}`: expected N,C,H,W,K,R,S,stride,pad[,dilation] (9 or 10 integers), got {}",
                values.len()
            )));
        }
    };
    let problem = Conv2dProblem::new([n, c, h, w], [k, c, r, s])
        .with_stride([stride, stride])
        .with_padding(Padding::uniform(pad))
        .with_dilation([dilation, dilation]);
    problem
        .validate()
        .with_context(|| format!("--layer `{spec}`"))?;
    Ok(problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Σ count × GFLOP over the layers: the work of one pass through the network.
    fn total_gflop(suite: &Suite) -> f64 {
        suite
            .layers
            .iter()
            .map(|l| l.count as f64 * gflop(&l.problem).unwrap())
            .sum()
    }

    /// GFLOP and P=Q of the paper's table in ANCHORS.md (batch 128).
    const PAPER_TABLE: [(f64, usize); 12] = [
        (27.0, 55),
        (28.0, 56),
        (29.7, 111),
        (305.2, 109),
        (62.9, 20),
        (30.2, 10),
        (21.8, 222),
        (228.4, 110),
        (27.5, 54),
        (25.5, 26),
        (21.7, 12),
        (15.1, 5),
    ];

    #[test]
    fn paper_layers_match_the_anchor_table() {
        let suite = Suite::paper(128);
        assert_eq!(suite.layers.len(), 12);
        assert!(!suite.has_total);
        for (i, (layer, (gf, pq))) in suite.layers.iter().zip(PAPER_TABLE).enumerate() {
            assert_eq!(layer.name, format!("conv{}", i + 1));
            assert_eq!(layer.count, 1);
            let out = layer.problem.output_shape().unwrap();
            assert_eq!(
                out,
                [128, layer.problem.filter[0], pq, pq],
                "{}",
                layer.name
            );
            let got = gflop(&layer.problem).unwrap();
            assert!(
                (got - gf).abs() <= 0.051,
                "{}: {got} GFLOP, table says {gf}",
                layer.name
            );
            assert_eq!(layer.problem.padding, Padding::default());
        }
    }

    #[test]
    fn batch_scales_the_work() {
        let one = total_gflop(&Suite::paper(1));
        let many = total_gflop(&Suite::paper(128));
        assert!((many / one - 128.0).abs() < 1e-9);
        assert_eq!(Suite::paper(7).layers[0].problem.input[0], 7);
    }

    #[test]
    fn resnet50_has_53_convolutions_of_about_4_gmac() {
        let suite = Suite::resnet50(1);
        assert!(suite.has_total);
        assert_eq!(suite.layers.len(), 23);
        assert_eq!(suite.layers.iter().map(|l| l.count).sum::<usize>(), 53);
        // ResNet-50's convolutions are about 4.09 GMAC per image (8.2 GFLOP).
        let total = total_gflop(&suite);
        assert!((8.1..8.3).contains(&total), "{total}");
        assert_eq!(suite.layers[2].name, "c64_h56_k64_r3_s1_p1");
        assert_eq!(suite.layers[0].name, "c3_h224_k64_r7_s2_p3");
        assert_eq!(
            suite.layers[0].problem.output_shape().unwrap(),
            [1, 64, 112, 112]
        );
        // The last stage runs at 7×7.
        assert_eq!(
            suite.layers[22].problem.output_shape().unwrap(),
            [1, 512, 7, 7]
        );
        // Strided 1×1 projections halve the size.
        assert_eq!(
            suite.layers[8].problem.output_shape().unwrap(),
            [1, 512, 28, 28]
        );
        let names: std::collections::HashSet<_> = suite.layers.iter().map(|l| &l.name).collect();
        assert_eq!(names.len(), 23, "layer names must be distinct");
    }

    #[test]
    fn mobilenetv2_has_17_depthwise_convolutions() {
        let suite = Suite::mobilenetv2(32);
        assert!(suite.has_total);
        assert_eq!(suite.layers.len(), 10);
        assert_eq!(suite.layers.iter().map(|l| l.count).sum::<usize>(), 17);
        for layer in &suite.layers {
            let p = &layer.problem;
            assert_eq!(p.groups, p.input[1]);
            assert_eq!(p.filter, [p.input[1], 1, 3, 3]);
            let [_, _, out, _] = p.output_shape().unwrap();
            assert_eq!(out, p.input[2] / p.stride[0], "{}", layer.name);
            assert!(
                layer.name.ends_with(&format!("_g{}", p.groups)),
                "{}",
                layer.name
            );
        }
        // The stage outputs: 112, 56, 28, 14, 14, 7, 7 (strides 1, 2, 2, 2, 1, 2, 1).
        let strided: Vec<usize> = suite
            .layers
            .iter()
            .filter(|l| l.problem.stride == [2, 2])
            .map(|l| l.problem.input[1])
            .collect();
        assert_eq!(strided, [96, 144, 192, 576]);
        // 9 MACs per output: 2 · 9 · N·K·P·Q.
        let gflop = total_gflop(&suite);
        let outputs: usize = suite
            .layers
            .iter()
            .map(|l| l.count * l.problem.shape().unwrap().output_len)
            .sum();
        assert!((gflop - 18.0 * outputs as f64 / 1e9).abs() < 1e-9);
    }

    #[test]
    fn vgg16_has_13_convolutions_of_about_15_gmac() {
        let suite = Suite::vgg16(1);
        assert!(suite.has_total);
        assert_eq!(suite.layers.len(), 9);
        assert_eq!(suite.layers.iter().map(|l| l.count).sum::<usize>(), 13);
        // VGG-16's convolutions are about 15.35 GMAC per image (30.7 GFLOP).
        let total = total_gflop(&suite);
        assert!((30.5..31.0).contains(&total), "{total}");
        for layer in &suite.layers {
            let [_, _, h, _] = layer.problem.input;
            assert_eq!(layer.problem.output_shape().unwrap()[2], h, "same padding");
        }
        assert_eq!(total_gflop(&Suite::vgg16(32)) / total, 32.0);
    }

    #[test]
    fn single_layer_parses() {
        let suite = Suite::single("2,3,32,30,8,3,5,2,1").unwrap();
        assert_eq!(suite.name, "layer");
        assert_eq!(suite.batch, 2);
        let p = suite.layers[0].problem;
        assert_eq!(p.input, [2, 3, 32, 30]);
        assert_eq!(p.filter, [8, 3, 3, 5]);
        assert_eq!(p.stride, [2, 2]);
        assert_eq!(p.padding, Padding::uniform(1));
        assert_eq!(p.dilation, [1, 1]);
        assert_eq!(suite.layers[0].name, "c3_h32x30_k8_r3x5_s2_p1");

        let dilated = parse_layer(" 1, 4, 20, 20, 4, 3, 3, 1, 2, 2 ").unwrap();
        assert_eq!(dilated.dilation, [2, 2]);
        assert_eq!(layer_name(&dilated), "c4_h20_k4_r3_s1_p2_d2");
    }

    #[test]
    fn bad_layers_are_errors() {
        for bad in [
            "",
            "1,2,3",
            "1,3,8,8,4,3,3,1",
            "1,3,8,8,4,3,3,1,0,1,1",
            "1,3,8,8,x,3,3,1,0",
            "1,3,8,8,4,3,3,-1,0",
        ] {
            assert!(parse_layer(bad).is_err(), "{bad:?}");
        }
        // Valid syntax, invalid problem: the filter is larger than the input.
        let err = parse_layer("1,3,4,4,4,5,5,1,0").unwrap_err();
        assert!(err.to_string().contains("filter"), "{err}");
        assert!(parse_layer("1,3,8,8,4,3,3,0,0").is_err(), "stride 0");
    }

    #[test]
    fn asymmetric_names() {
        let p = Conv2dProblem::new([1, 3, 9, 9], [2, 3, 3, 3])
            .with_stride([1, 2])
            .with_padding(Padding {
                top: 0,
                bottom: 1,
                left: 2,
                right: 2,
            })
            .with_dilation([2, 1]);
        assert_eq!(layer_name(&p), "c3_h9_k2_r3_s1x2_p0x1x2x2_d2x1");
    }
}
