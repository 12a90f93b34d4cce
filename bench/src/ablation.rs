//! The ablation table: what each of the paper's techniques buys, per layer, from the
//! `im2win:<kernel>` results of `--methods ablation`.
//!
//! Every kernel of the ablation has the paper's 128×128×8 tile (8×8 outputs per thread) and
//! the generic geometry; each differs from the complete kernel in one technique only
//! (`Variant`). A technique's column is the time without it divided by the time with it, so
//! 2.00× means the technique halves the time. Fusion's "without" is the complete kernel over
//! the materialised im2win buffer (transform included), its "with" the fused kernel.

use std::fmt::Write;

use im2win::codegen::{KernelSpec, Variant};

use crate::method::{Method, ablation_kernels};
use crate::report::Report;

/// One column of the table: a technique, and the kernels without and with it.
struct Technique {
    name: &'static str,
    without: KernelSpec,
    with: KernelSpec,
}

/// The techniques, in column order, from the ablation's kernels.
fn techniques() -> Vec<Technique> {
    let kernels = ablation_kernels();
    let complete = kernels[0];
    let find = |switched: fn(&Variant) -> bool| {
        *kernels
            .iter()
            .find(|k| switched(&k.variant))
            .expect("the ablation has a kernel for every technique")
    };
    vec![
        Technique {
            name: "register micro-kernel",
            without: find(|v| !v.micro_kernel),
            with: complete,
        },
        Technique {
            name: "vector loads",
            without: find(|v| !v.vector_loads),
            with: complete,
        },
        Technique {
            name: "double buffering + prefetch",
            without: find(|v| !v.double_buffering),
            with: complete,
        },
        Technique {
            name: "fusion",
            without: complete,
            with: find(|v| v.fused),
        },
    ]
}

/// The ablation as a Markdown table, or `None` when the report has none of its results.
pub fn render(report: &Report) -> Option<String> {
    let techniques = techniques();
    let complete = Method::Kernel(ablation_kernels()[0]).to_string();
    let median = |layer: &crate::report::LayerReport, method: &str| {
        layer
            .results
            .iter()
            .find(|r| r.method == method && !r.flagged)
            .map(|r| r.median_ms)
    };
    if !report.layers.iter().any(|l| median(l, &complete).is_some()) {
        return None;
    }
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "Ablation on {} · suite {} · batch {} · median of {} reps. Each technique's column is \
         the time without it ÷ the time with it (above 1: the technique helps). Complete \
         kernel: `{}`.\n",
        report.device,
        report.suite,
        report.batch,
        report.settings.reps,
        complete.trim_start_matches("im2win:")
    );
    let _ = write!(out, "| layer | complete (ms) |");
    for t in &techniques {
        let _ = write!(out, " {} |", t.name);
    }
    let _ = writeln!(out, " im2win, dispatched (ms) |");
    let _ = writeln!(out, "|---|---:|{}---:|", "---:|".repeat(techniques.len()));
    // Per technique, the logarithms of its ratios, for the geometric mean.
    let mut logs = vec![Vec::new(); techniques.len()];
    for layer in &report.layers {
        let cell = |ms: Option<f64>| ms.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"));
        let _ = write!(
            out,
            "| {} | {} |",
            layer.name,
            cell(median(layer, &complete))
        );
        for (t, logs) in techniques.iter().zip(&mut logs) {
            let without = median(layer, &Method::Kernel(t.without).to_string());
            let with = median(layer, &Method::Kernel(t.with).to_string());
            match (without, with) {
                (Some(a), Some(b)) if a > 0.0 && b > 0.0 => {
                    logs.push((a / b).ln());
                    let _ = write!(out, " {:.2}× |", a / b);
                }
                _ => {
                    let _ = write!(out, " - |");
                }
            }
        }
        let _ = writeln!(out, " {} |", cell(median(layer, "im2win")));
    }
    let _ = write!(out, "| geometric mean | |");
    for logs in &logs {
        if logs.is_empty() {
            let _ = write!(out, " - |");
        } else {
            let mean = (logs.iter().sum::<f64>() / logs.len() as f64).exp();
            let _ = write!(out, " {mean:.2}× |");
        }
    }
    let _ = writeln!(out, " |");
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::MethodResult;
    use crate::report::fixtures::{layer, sample_report, times};

    fn result(method: Method, ms: f64) -> MethodResult {
        MethodResult::new(method.to_string(), 1.0, times(ms), 0, 1e-7)
    }

    #[test]
    fn ratios_and_geometric_mean() {
        let mut report = sample_report();
        assert_eq!(render(&report), None, "no ablation results, no table");
        let k = ablation_kernels();
        let results = |scale: f64| {
            vec![
                result(Method::Im2win, 0.5 * scale),
                result(Method::Kernel(k[0]), 1.0 * scale),
                result(Method::Kernel(k[1]), 0.8 * scale),
                result(Method::Kernel(k[2]), 2.0 * scale),
                result(Method::Kernel(k[3]), 1.25 * scale),
                result(Method::Kernel(k[4]), 1.1 * scale),
            ]
        };
        report.layers = vec![
            layer("a", 1.0, 1, results(1.0)),
            layer("b", 1.0, 1, results(3.0)),
        ];
        // Layer b's vector-load kernel failed its check: that cell stays empty.
        report.layers[1].results[4].flagged = true;
        let text = render(&report).unwrap();
        let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("| ")).collect();
        assert!(rows[0].contains("register micro-kernel") && rows[0].contains("fusion"));
        assert_eq!(
            rows[1],
            "| a | 1.000 | 2.00× | 1.25× | 1.10× | 1.25× | 0.500 |"
        );
        assert_eq!(rows[2], "| b | 3.000 | 2.00× | - | 1.10× | 1.25× | 1.500 |");
        assert_eq!(
            rows[3],
            "| geometric mean | | 2.00× | 1.25× | 1.10× | 1.25× | |"
        );
    }
}
