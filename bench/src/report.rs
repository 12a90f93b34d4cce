//! The report: what `--out` writes as JSON, and the `total` row of whole networks.
//!
//! The required shape is `{"device", "suite", "dtype", "batch", "layers": [{"name", "gflop",
//! "results": [{"method", "median_ms", "tflops", "extra_bytes", "rel_err"}]}]}`; every other
//! field is extra information that readers may ignore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize, Serializer};

use crate::stats::{is_flagged, tflops};

/// A whole benchmark run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The GPU's name, e.g. `NVIDIA H200` (for CPU runs the CPU's model and core count).
    pub device: String,
    /// `paper`, `resnet50`, `vgg16` or `layer`.
    pub suite: String,
    /// The element type and precision: `f32` (strict), `tf32`, `bf16` or `f16`.
    pub dtype: String,
    /// Batch size.
    pub batch: usize,
    /// One entry per layer, then `total` for whole networks.
    pub layers: Vec<LayerReport>,
    /// How the numbers were taken.
    pub settings: Settings,
    /// Software versions seen at run time.
    pub software: BTreeMap<String, String>,
    /// Tensor layout of input and output, `nchw` or `nhwc` (extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<String>,
    /// CPU runs: threads every method ran on (extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threads: Option<usize>,
    /// CPU runs: the float32 FMA rate those threads reach on register-only independent
    /// chains, in GFLOP/s: the measured peak the `im2win-cpu` rates compare with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_gflops: Option<f64>,
}

/// How the numbers were taken (extra field).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// Timed repetitions per method (the median is reported).
    pub reps: usize,
    /// Untimed warm-up rounds before them.
    pub warmup: usize,
    /// Buffer sets are rotated until their total exceeds this many bytes (3× the L2).
    pub rotation_bytes: u64,
    /// cuDNN workspaces and im2col column buffers larger than this are not used.
    pub max_workspace_bytes: u64,
    /// The im2win engine's workspace limit (`--im2win-workspace-mib`), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub im2win_workspace_limit_bytes: Option<u64>,
    /// Results with a larger relative error are flagged.
    pub rel_err_limit: f64,
    /// Seconds since the Unix epoch when the run started.
    pub unix_time: u64,
}

/// One layer's results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerReport {
    /// `conv1`…, a descriptive name, or `total`.
    pub name: String,
    /// Work of the direct convolution in GFLOP (for `total`, Σ count × GFLOP).
    pub gflop: f64,
    /// One entry per method that ran.
    pub results: Vec<MethodResult>,
    /// How often the network runs this layer (extra field; absent for `total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<usize>,
    /// The convolution (extra field; absent for `total`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<im2win::Conv2dProblem>,
    /// Buffer sets rotated through while timing (extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_sets: Option<usize>,
    /// What the outputs were checked against (extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Methods that did not run on this layer, and why (extra field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<Skipped>,
}

/// A method that could not run, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Skipped {
    /// The method's name.
    pub method: String,
    /// Why it did not run.
    pub reason: String,
}

/// One method's result on one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodResult {
    /// `im2win`, `cudnn-best`, `cudnn:<ALGO>`, `im2col-cublas` or `direct`.
    pub method: String,
    /// Median time of one convolution, in milliseconds.
    pub median_ms: f64,
    /// `gflop / median_ms`.
    pub tflops: f64,
    /// Device bytes needed beyond input, filter and output.
    pub extra_bytes: u64,
    /// `‖out − ref‖₂ / ‖ref‖₂`; a non-finite error (NaN in the output) is written as the
    /// largest float, `1.7976931348623157e308`, and flagged.
    #[serde(serialize_with = "finite")]
    pub rel_err: f64,
    /// `rel_err` above the limit, or not finite (extra field).
    pub flagged: bool,
    /// Fastest repetition, in milliseconds (extra field).
    pub min_ms: f64,
    /// Slowest repetition, in milliseconds (extra field).
    pub max_ms: f64,
    /// `cudnn-best`'s median time over this one's: above 1 is faster than cuDNN (extra
    /// field; absent when cuDNN did not run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vs_cudnn_best: Option<f64>,
    /// im2win only: median time of the input and filter transforms alone, in milliseconds
    /// (already inside `median_ms`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_ms: Option<f64>,
    /// What ran: im2win's kernel name, or the algorithm `cudnn-best` picked (extra field).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// Writes a non-finite float as `f64::MAX`, since JSON has no NaN.
fn finite<S: Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_f64(if value.is_finite() { *value } else { f64::MAX })
}

impl MethodResult {
    /// A result from its measurements; `tflops` and `flagged` follow from them.
    pub fn new(
        method: String,
        gflop: f64,
        times: crate::stats::Summary,
        extra_bytes: u64,
        rel_err: f64,
    ) -> Self {
        MethodResult {
            method,
            median_ms: times.median_ms,
            tflops: tflops(gflop, times.median_ms),
            extra_bytes,
            rel_err,
            flagged: is_flagged(rel_err),
            min_ms: times.min_ms,
            max_ms: times.max_ms,
            vs_cudnn_best: None,
            transform_ms: None,
            detail: None,
        }
    }
}

impl LayerReport {
    /// Sets every result's `vs_cudnn_best` from this layer's `cudnn-best` result.
    pub fn compare_with_cudnn(&mut self) {
        let Some(best) = self
            .results
            .iter()
            .find(|r| r.method == "cudnn-best")
            .map(|r| r.median_ms)
        else {
            return;
        };
        for r in &mut self.results {
            r.vs_cudnn_best = (r.median_ms > 0.0).then(|| best / r.median_ms);
        }
    }
}

/// The `total` layer of a network: per method, Σ count × median time, the largest extra
/// bytes and the largest relative error. A method missing on any layer has no total (it is
/// listed as skipped, naming the layers).
pub fn network_total(layers: &[LayerReport]) -> LayerReport {
    let count = |l: &LayerReport| l.count.unwrap_or(1) as f64;
    let gflop: f64 = layers.iter().map(|l| count(l) * l.gflop).sum();
    // Methods in first-seen order.
    let mut methods: Vec<&str> = Vec::new();
    for r in layers.iter().flat_map(|l| &l.results) {
        if !methods.contains(&r.method.as_str()) {
            methods.push(&r.method);
        }
    }
    let mut results = Vec::new();
    let mut skipped = Vec::new();
    for method in methods {
        let per_layer: Vec<Option<&MethodResult>> = layers
            .iter()
            .map(|l| l.results.iter().find(|r| r.method == method))
            .collect();
        let missing: Vec<&str> = layers
            .iter()
            .zip(&per_layer)
            .filter(|(_, r)| r.is_none())
            .map(|(l, _)| l.name.as_str())
            .collect();
        if !missing.is_empty() {
            skipped.push(Skipped {
                method: method.to_string(),
                reason: format!("no total: did not run on {}", missing.join(", ")),
            });
            continue;
        }
        let rows: Vec<(&LayerReport, &MethodResult)> =
            layers.iter().zip(per_layer.into_iter().flatten()).collect();
        let sum =
            |f: fn(&MethodResult) -> f64| rows.iter().map(|(l, r)| count(l) * f(r)).sum::<f64>();
        let median_ms = sum(|r| r.median_ms);
        let rel_err = rows.iter().map(|(_, r)| r.rel_err).fold(0.0_f64, |a, b| {
            if a.is_nan() || b.is_nan() {
                f64::NAN
            } else {
                a.max(b)
            }
        });
        let transform_ms = rows
            .iter()
            .map(|(l, r)| r.transform_ms.map(|t| count(l) * t))
            .sum::<Option<f64>>();
        results.push(MethodResult {
            method: method.to_string(),
            median_ms,
            tflops: tflops(gflop, median_ms),
            extra_bytes: rows.iter().map(|(_, r)| r.extra_bytes).max().unwrap_or(0),
            rel_err,
            // Each row was judged at the run's precision; NaN anywhere stays wrong.
            flagged: rows.iter().any(|(_, r)| r.flagged) || rel_err.is_nan(),
            min_ms: sum(|r| r.min_ms),
            max_ms: sum(|r| r.max_ms),
            vs_cudnn_best: None,
            transform_ms,
            detail: None,
        });
    }
    let mut total = LayerReport {
        name: "total".into(),
        gflop,
        results,
        count: None,
        problem: None,
        rotation_sets: None,
        reference: None,
        skipped,
    };
    total.compare_with_cudnn();
    total
}

/// The default JSON path: `bench/results/<suite>-f32-n<batch>.json` for strict float32,
/// NCHW, without epilogue, `<suite>-f32-nhwc-n<batch>.json` for NHWC;
/// `<suite>-<dtype>-<layout>-n<batch>.json` for the other precisions (`numeric`: `tf32`,
/// `bf16`, `f16`); with `-<epilogue>` before `.json` when one is measured.
pub fn default_json_path(
    suite: &str,
    batch: usize,
    layout: im2win::Layout,
    epilogue: crate::suite::EpilogueMode,
    numeric: &str,
) -> std::path::PathBuf {
    // Strict float32 keeps the names its results always had (NCHW not spelled); every
    // other precision spells its layout: `<suite>-<dtype>-<layout>-n<batch>`.
    let layout = match (numeric, layout) {
        ("f32", im2win::Layout::Nchw) => String::new(),
        (_, layout) => format!("-{layout}"),
    };
    let epilogue = epilogue
        .file_tag()
        .map_or(String::new(), |tag| format!("-{tag}"));
    std::path::Path::new("bench")
        .join("results")
        .join(format!("{suite}-{numeric}{layout}-n{batch}{epilogue}.json"))
}

/// The default JSON path of a CPU run:
/// `bench/results/cpu-<suite>-f32-<layout>-n<batch>.json`.
pub fn default_cpu_json_path(
    suite: &str,
    layout: im2win::Layout,
    batch: usize,
) -> std::path::PathBuf {
    std::path::Path::new("bench")
        .join("results")
        .join(format!("cpu-{suite}-f32-{layout}-n{batch}.json"))
}

/// A small report for the tests of the JSON, the table and the chart.
#[cfg(test)]
pub(crate) mod fixtures {
    use super::*;
    use crate::stats::Summary;

    pub(crate) fn times(ms: f64) -> Summary {
        Summary {
            median_ms: ms,
            min_ms: ms * 0.9,
            max_ms: ms * 1.1,
            samples: 25,
            host_ms: 0.0,
        }
    }

    pub(crate) fn layer(
        name: &str,
        gflop: f64,
        count: usize,
        results: Vec<MethodResult>,
    ) -> LayerReport {
        LayerReport {
            name: name.into(),
            gflop,
            results,
            count: Some(count),
            problem: Some(im2win::Conv2dProblem::new([1, 3, 8, 8], [4, 3, 3, 3])),
            rotation_sets: Some(3),
            reference: Some("gpu-f64".into()),
            skipped: vec![],
        }
    }

    pub(crate) fn sample_report() -> Report {
        let mut a = layer(
            "conv1",
            2.0,
            1,
            vec![
                MethodResult::new("im2win".into(), 2.0, times(0.5), 1024, 1e-7),
                MethodResult::new("cudnn-best".into(), 2.0, times(0.4), 0, 2e-7),
                MethodResult::new("direct".into(), 2.0, times(4.0), 0, f64::NAN),
            ],
        );
        a.results[0].transform_ms = Some(0.1);
        a.compare_with_cudnn();
        Report {
            device: "NVIDIA H200".into(),
            suite: "paper".into(),
            dtype: "f32".into(),
            batch: 128,
            layers: vec![a],
            settings: Settings {
                reps: 25,
                warmup: 2,
                rotation_bytes: 180 << 20,
                max_workspace_bytes: 8 << 30,
                im2win_workspace_limit_bytes: None,
                rel_err_limit: 1e-4,
                unix_time: 0,
            },
            software: BTreeMap::from([("cudnn".to_string(), "91900".to_string())]),
            layout: None,
            threads: None,
            peak_gflops: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{layer, sample_report, times};
    use super::*;

    #[test]
    fn json_has_the_required_shape() {
        let report = sample_report();
        let json: serde_json::Value =
            serde_json::from_str(&serde_json::to_string_pretty(&report).unwrap()).unwrap();
        assert!(json["device"].is_string());
        assert_eq!(json["suite"], "paper");
        assert_eq!(json["dtype"], "f32");
        assert!(json["batch"].is_u64());
        let layer = &json["layers"][0];
        assert_eq!(layer["name"], "conv1");
        assert!(layer["gflop"].is_f64());
        for r in layer["results"].as_array().unwrap() {
            assert!(r["method"].is_string());
            assert!(r["median_ms"].is_f64());
            assert!(r["tflops"].is_f64());
            assert!(r["extra_bytes"].is_u64());
            assert!(r["rel_err"].is_f64(), "{r}");
        }
        let results = &layer["results"];
        assert_eq!(results[0]["tflops"], 4.0);
        assert_eq!(results[0]["transform_ms"], 0.1);
        assert_eq!(results[0]["vs_cudnn_best"], 0.8);
        // NaN is not JSON: it is written as the largest float, and flagged.
        assert_eq!(results[2]["rel_err"], f64::MAX);
        assert_eq!(results[2]["flagged"], true);
        assert_eq!(results[1]["flagged"], false);
        assert!(results[1].get("transform_ms").is_none());
        // And it reads back.
        let back: Report = serde_json::from_value(json).unwrap();
        assert_eq!(back.layers[0].results[0], report.layers[0].results[0]);
    }

    #[test]
    fn totals_weight_by_count() {
        let l1 = layer(
            "a",
            1.0,
            3,
            vec![
                MethodResult::new("im2win".into(), 1.0, times(1.0), 10, 1e-6),
                MethodResult::new("cudnn-best".into(), 1.0, times(2.0), 5, 2e-6),
                MethodResult::new("cudnn:FFT".into(), 1.0, times(2.0), 5, 2e-6),
            ],
        );
        let mut l2 = layer(
            "b",
            2.0,
            2,
            vec![
                MethodResult::new("im2win".into(), 2.0, times(0.5), 30, 5e-4),
                MethodResult::new("cudnn-best".into(), 2.0, times(1.0), 0, 1e-6),
            ],
        );
        l2.results[0].transform_ms = Some(0.25);
        let total = network_total(&[l1, l2]);
        assert_eq!(total.name, "total");
        assert_eq!(total.gflop, 3.0 + 4.0);
        assert_eq!(total.count, None);
        let im2win = &total.results[0];
        assert_eq!(im2win.method, "im2win");
        assert_eq!(im2win.median_ms, 3.0 * 1.0 + 2.0 * 0.5);
        assert_eq!(im2win.tflops, 7.0 / 4.0);
        assert_eq!(im2win.extra_bytes, 30);
        assert_eq!(im2win.rel_err, 5e-4);
        assert!(im2win.flagged);
        assert_eq!(im2win.transform_ms, None, "layer a has no transform time");
        let best = &total.results[1];
        assert_eq!(best.median_ms, 3.0 * 2.0 + 2.0 * 1.0);
        assert!(!best.flagged);
        assert_eq!(im2win.vs_cudnn_best, Some(2.0));
        // FFT did not run on layer b: no total, and said so.
        assert_eq!(total.results.len(), 2);
        assert_eq!(total.skipped[0].method, "cudnn:FFT");
        assert!(total.skipped[0].reason.contains('b'));
    }

    #[test]
    fn nan_errors_propagate_to_the_total() {
        let l = layer(
            "a",
            1.0,
            1,
            vec![MethodResult::new(
                "direct".into(),
                1.0,
                times(1.0),
                0,
                f64::NAN,
            )],
        );
        let total = network_total(&[l.clone(), l]);
        assert!(total.results[0].rel_err.is_nan());
        assert!(total.results[0].flagged);
    }

    #[test]
    fn default_paths() {
        use crate::suite::EpilogueMode;
        use im2win::Layout;
        let path = |numeric, layout, epilogue| {
            default_json_path("resnet50", 32, layout, epilogue, numeric)
                .display()
                .to_string()
        };
        assert_eq!(
            path("f32", Layout::Nchw, EpilogueMode::None),
            "bench/results/resnet50-f32-n32.json"
        );
        assert_eq!(
            path("f32", Layout::Nhwc, EpilogueMode::None),
            "bench/results/resnet50-f32-nhwc-n32.json"
        );
        // Other precisions always spell the layout.
        assert_eq!(
            path("bf16", Layout::Nchw, EpilogueMode::None),
            "bench/results/resnet50-bf16-nchw-n32.json"
        );
        assert_eq!(
            path("tf32", Layout::Nhwc, EpilogueMode::None),
            "bench/results/resnet50-tf32-nhwc-n32.json"
        );
        assert_eq!(
            path("f16", Layout::Nhwc, EpilogueMode::Resnet),
            "bench/results/resnet50-f16-nhwc-n32-resnet.json"
        );
    }
}
