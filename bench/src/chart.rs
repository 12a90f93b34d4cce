//! The SVG chart: grouped bars of TFLOP/s per layer, im2win against the baselines.
//!
//! Written with plain string formatting. Individual `cudnn:<ALGO>` results are left out
//! (`cudnn-best` stands for cuDNN); a flagged (wrong) result gets a red outline and a `!`.

use std::fmt::Write;

use crate::report::Report;

/// Methods drawn, in this order, with their colours: im2win's (GPU; CPU, per call and with
/// a prepared filter), then the baselines (cuDNN, PyTorch on the GPU and on the CPU, the
/// bench's own im2col and direct kernels). A report has the ones it measured; the rest get
/// no bar and no legend entry.
const SERIES: [(&str, &str); 8] = [
    ("im2win", "#1f77b4"),
    ("im2win-cpu", "#1f77b4"),
    ("im2win-cpu-prepared", "#17becf"),
    ("cudnn-best", "#ff7f0e"),
    ("torch", "#d62728"),
    ("torch-cpu", "#d62728"),
    ("im2col-cublas", "#2ca02c"),
    ("direct", "#9467bd"),
];

/// Width of one bar, in pixels.
const BAR_WIDTH: f64 = 14.0;
/// Space between two layers' groups of bars.
const GROUP_GAP: f64 = 18.0;
/// Left margin at least (room for the axis labels).
const MIN_LEFT: f64 = 70.0;
/// Right margin.
const RIGHT: f64 = 20.0;
/// Room above the plot for the title and the legend.
const TOP: f64 = 60.0;
/// Height of the plot area.
const PLOT_HEIGHT: f64 = 300.0;
/// Width of one character of the 11-pixel labels, a little generous.
const CHAR_WIDTH: f64 = 6.5;

/// Escapes text for SVG.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A round tick step (1, 2 or 5 × 10ᵏ) giving about `ticks` ticks up to `max`.
pub fn tick_step(max: f64, ticks: usize) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let raw = max / ticks.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let norm = raw / magnitude;
    let nice = if norm <= 1.0 {
        1.0
    } else if norm <= 2.0 {
        2.0
    } else if norm <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

/// The chart of a report as an SVG document.
pub fn render(report: &Report) -> String {
    let series: Vec<(&str, &str)> = SERIES
        .into_iter()
        .filter(|(m, _)| {
            report
                .layers
                .iter()
                .any(|l| l.results.iter().any(|r| r.method == *m))
        })
        .collect();
    let bars = series.len().max(1) as f64;
    let group_width = bars * BAR_WIDTH + GROUP_GAP;
    let groups = report.layers.len().max(1) as f64;
    // Layer labels are rotated by 45°: each reaches `length·cos 45°` down and to the left
    // of its group's centre, so the margins grow with the longest name.
    let label_reach = report
        .layers
        .iter()
        .map(|l| l.name.chars().count())
        .max()
        .unwrap_or(0) as f64
        * CHAR_WIDTH
        * std::f64::consts::FRAC_1_SQRT_2;
    let left = MIN_LEFT.max(label_reach - group_width / 2.0 + 10.0);
    let bottom = 40.0 + label_reach;
    let width = left + groups * group_width + RIGHT;
    let width = width.max(left + RIGHT + 150.0 * series.len().max(1) as f64);
    let height = TOP + PLOT_HEIGHT + bottom;
    let max = report
        .layers
        .iter()
        .flat_map(|l| &l.results)
        .filter(|r| series.iter().any(|(m, _)| *m == r.method))
        .map(|r| r.tflops)
        .filter(|t| t.is_finite())
        .fold(0.0_f64, f64::max);
    let step = tick_step(max, 5);
    let top_value = ((max / step).ceil().max(1.0)) * step;
    let y = |v: f64| TOP + PLOT_HEIGHT * (1.0 - (v / top_value).clamp(0.0, 1.0));

    let mut svg = String::new();
    // Writing to a String cannot fail.
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{left:.1}" y="20" font-size="14" font-weight="bold">{} · {} · batch {} · {} — TFLOP/s (higher is better)</text>"#,
        escape(&report.device),
        escape(&report.suite),
        report.batch,
        escape(&report.dtype)
    );
    // Legend.
    for (i, (method, colour)) in series.iter().enumerate() {
        let x = left + 150.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="32" width="12" height="12" fill="{colour}"/><text x="{:.1}" y="42">{}</text>"#,
            x + 16.0,
            escape(method)
        );
    }
    // Grid and axis.
    let mut v = 0.0;
    while v <= top_value + step * 1e-9 {
        let yy = y(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{left:.1}" y1="{yy:.1}" x2="{:.1}" y2="{yy:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            width - RIGHT,
            left - 6.0,
            yy + 4.0,
            format_tick(v, step)
        );
        v += step;
    }
    let _ = writeln!(
        svg,
        r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">TFLOP/s</text>"#,
        TOP + PLOT_HEIGHT / 2.0
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{left:.1}" y1="{0:.1}" x2="{1:.1}" y2="{0:.1}" stroke="black"/>"#,
        TOP + PLOT_HEIGHT,
        width - RIGHT
    );
    // Bars.
    for (g, layer) in report.layers.iter().enumerate() {
        let x0 = left + GROUP_GAP / 2.0 + g as f64 * group_width;
        for (b, (method, colour)) in series.iter().enumerate() {
            let Some(r) = layer.results.iter().find(|r| r.method == *method) else {
                continue;
            };
            let x = x0 + b as f64 * BAR_WIDTH;
            let value = if r.tflops.is_finite() { r.tflops } else { 0.0 };
            let top = y(value);
            let outline = if r.flagged {
                r#" stroke="red" stroke-width="2""#
            } else {
                ""
            };
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{colour}"{outline}><title>{} {}: {:.2} TFLOP/s, {:.4} ms{}</title></rect>"#,
                BAR_WIDTH - 1.0,
                TOP + PLOT_HEIGHT - top,
                escape(&layer.name),
                escape(method),
                r.tflops,
                r.median_ms,
                if r.flagged { ", WRONG RESULT" } else { "" }
            );
            if r.flagged {
                let _ = writeln!(
                    svg,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" fill="red" font-weight="bold">!</text>"#,
                    x + BAR_WIDTH / 2.0,
                    top - 3.0
                );
            }
        }
        let label_x = x0 + bars * BAR_WIDTH / 2.0;
        let label_y = TOP + PLOT_HEIGHT + 12.0;
        let _ = writeln!(
            svg,
            r#"<text transform="translate({label_x:.1} {label_y:.1}) rotate(-45)" text-anchor="end">{}</text>"#,
            escape(&layer.name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A tick label with as many decimals as the step needs.
fn format_tick(value: f64, step: f64) -> String {
    if step >= 1.0 {
        format!("{value:.0}")
    } else {
        let decimals = (-step.log10().floor()) as usize;
        format!("{value:.decimals$}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures::sample_report;

    #[test]
    fn ticks_are_round() {
        assert_eq!(tick_step(146.0, 5), 50.0);
        assert_eq!(tick_step(26.0, 5), 10.0);
        assert_eq!(tick_step(10.0, 5), 2.0);
        assert_eq!(tick_step(0.3, 5), 0.1);
        assert_eq!(tick_step(0.0, 5), 1.0);
        assert_eq!(tick_step(f64::NAN, 5), 1.0);
        assert_eq!(format_tick(0.30000000000000004, 0.1), "0.3");
        assert_eq!(format_tick(150.0, 50.0), "150");
    }

    #[test]
    fn chart_draws_one_bar_per_layer_and_method() {
        let mut report = sample_report();
        report.layers[0].name = "a<b".into();
        report.layers[0]
            .results
            .push(crate::report::MethodResult::new(
                "cudnn:FFT".into(),
                2.0,
                crate::report::fixtures::times(0.1),
                0,
                0.0,
            ));
        let svg = render(&report);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // im2win, cudnn-best and direct are drawn; cudnn:FFT is not; the legend has three.
        assert_eq!(svg.matches("<title>").count(), 3);
        assert!(!svg.contains("cudnn:FFT"));
        assert!(svg.contains(">im2win</text>") && svg.contains(">cudnn-best</text>"));
        assert!(
            !svg.contains(">im2col-cublas</text>"),
            "no data, no legend entry"
        );
        // The flagged direct bar is outlined and marked.
        assert!(svg.contains(r#"stroke="red""#) && svg.contains(">!</text>"));
        // Names are escaped.
        assert!(svg.contains("a&lt;b") && !svg.contains("a<b"));
        // The tallest bar (cudnn-best, 5 TFLOP/s) reaches the top of the scale (6 with step 1... or 5).
        assert!(svg.contains("5.00 TFLOP/s"));
        // Every number in the document is finite.
        assert!(!svg.contains("NaN") && !svg.contains("inf"));
    }

    /// A CPU report (`im2win bench --device cpu` and the anchor's `torch-cpu`) draws its
    /// methods too: the CPU files' charts had no bars before they were in [`SERIES`].
    #[test]
    fn cpu_report_draws_its_methods() {
        let mut report = sample_report();
        for layer in &mut report.layers {
            for (result, method) in
                layer
                    .results
                    .iter_mut()
                    .zip(["im2win-cpu", "torch-cpu", "im2win-cpu-prepared"])
            {
                result.method = method.into();
            }
        }
        let svg = render(&report);
        for method in ["im2win-cpu", "torch-cpu", "im2win-cpu-prepared"] {
            assert!(
                svg.contains(&format!(">{method}</text>")),
                "{method} in the legend"
            );
        }
        assert!(svg.matches("<title>").count() >= 3);
    }

    #[test]
    fn empty_report_is_still_a_valid_chart() {
        let mut report = sample_report();
        report.layers.clear();
        let svg = render(&report);
        assert!(svg.starts_with("<svg") && svg.contains("</svg>"));
    }
}
