//! The terminal table: one row per layer and method, flagged results marked, skipped
//! methods listed with their reasons.

use std::fmt::Write;

use crate::report::{MethodResult, Report};

/// Bytes in a MiB.
const MIB: f64 = (1u64 << 20) as f64;

/// The whole report as a fixed-width text table.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        out,
        "{} · suite {} · batch {} · {} · median of {} reps",
        report.device, report.suite, report.batch, report.dtype, report.settings.reps
    );
    let name_width = report
        .layers
        .iter()
        .map(|l| l.name.len())
        .chain([5])
        .max()
        .unwrap_or(5);
    let method_width = report
        .layers
        .iter()
        .flat_map(|l| &l.results)
        .map(|r| r.method.len())
        .chain([6])
        .max()
        .unwrap_or(6);
    let header = format!(
        "{:<name_width$}  {:>7}  {:<method_width$}  {:>10}  {:>8}  {:>7}  {:>10}  {:>8}  {}",
        "layer",
        "GFLOP",
        "method",
        "median ms",
        "TFLOP/s",
        "×cuDNN",
        "extra MiB",
        "rel_err",
        "notes"
    );
    let _ = writeln!(out, "{header}");
    let _ = writeln!(out, "{}", "-".repeat(header.chars().count()));
    for layer in &report.layers {
        for (i, r) in layer.results.iter().enumerate() {
            let (name, gflop) = if i == 0 {
                (layer.name.as_str(), format!("{:.2}", layer.gflop))
            } else {
                ("", String::new())
            };
            let row = format!(
                "{name:<name_width$}  {gflop:>7}  {:<method_width$}  {:>10.4}  {:>8.2}  {:>7}  {:>10.1}  {:>8}  {}",
                r.method,
                r.median_ms,
                r.tflops,
                r.vs_cudnn_best
                    .map_or_else(|| "-".to_string(), |v| format!("{v:.2}")),
                r.extra_bytes as f64 / MIB,
                format_rel_err(r.rel_err),
                notes(r),
            );
            let _ = writeln!(out, "{}", row.trim_end());
        }
        if layer.results.is_empty() {
            let _ = writeln!(
                out,
                "{:<name_width$}  {:>7.2}  (no method ran)",
                layer.name, layer.gflop
            );
        }
        for s in &layer.skipped {
            let _ = writeln!(
                out,
                "{:<name_width$}  {:>7}  skipped {}: {}",
                "", "", s.method, s.reason
            );
        }
    }
    let flagged: Vec<String> = report
        .layers
        .iter()
        .flat_map(|l| {
            l.results
                .iter()
                .filter(|r| r.flagged)
                .map(move |r| format!("{}/{}", l.name, r.method))
        })
        .collect();
    if !flagged.is_empty() {
        let _ = writeln!(
            out,
            "WRONG RESULTS (rel_err > {:e} or not finite): {}",
            report.settings.rel_err_limit,
            flagged.join(", ")
        );
    }
    out
}

/// A relative error in scientific notation, `NaN` kept visible.
fn format_rel_err(e: f64) -> String {
    if e.is_finite() {
        format!("{e:.1e}")
    } else {
        format!("{e}")
    }
}

/// The notes column: the failure flag, the transform time, what ran.
fn notes(r: &MethodResult) -> String {
    let mut parts = Vec::new();
    if r.flagged {
        parts.push("WRONG".to_string());
    }
    if let Some(t) = r.transform_ms {
        parts.push(format!("transform {t:.4} ms"));
    }
    if let Some(d) = &r.detail {
        parts.push(d.clone());
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Skipped;
    use crate::report::fixtures::sample_report;

    #[test]
    fn table_shows_every_result_and_flags() {
        let mut report = sample_report();
        report.layers[0].skipped.push(Skipped {
            method: "cudnn:FFT".into(),
            reason: "CUDNN_STATUS_NOT_SUPPORTED".into(),
        });
        let text = render(&report);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("NVIDIA H200") && lines[0].contains("batch 128"));
        assert!(lines[1].contains("median ms") && lines[1].contains("rel_err"));
        let im2win = lines.iter().find(|l| l.contains("im2win")).unwrap();
        assert!(im2win.starts_with("conv1"), "{im2win}");
        assert!(
            im2win.contains("0.5000") && im2win.contains("4.00") && im2win.contains("0.80"),
            "{im2win}"
        );
        assert!(im2win.contains("transform 0.1000 ms"), "{im2win}");
        assert!(im2win.contains("1.0e-7"), "{im2win}");
        let direct = lines.iter().find(|l| l.contains("direct")).unwrap();
        assert!(
            direct.contains("NaN") && direct.contains("WRONG"),
            "{direct}"
        );
        assert!(text.contains("skipped cudnn:FFT: CUDNN_STATUS_NOT_SUPPORTED"));
        assert!(text.contains("WRONG RESULTS") && text.contains("conv1/direct"));
        // Columns line up: every result row is as wide as the header up to the notes.
        let rel_err_end = lines[1].chars().count() - "  notes".len();
        for row in lines
            .iter()
            .filter(|l| l.contains("cudnn-best") || l.contains(" direct "))
        {
            assert_eq!(
                row.chars().take(rel_err_end).count(),
                rel_err_end,
                "{row:?}"
            );
            assert!(
                row[..rel_err_end].ends_with("e-7") || row[..rel_err_end].ends_with("NaN"),
                "{row:?}"
            );
        }
        assert!(
            text.lines().all(|l| l == l.trim_end()),
            "no trailing blanks"
        );
    }
}
