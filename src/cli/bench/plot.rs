//! Latency percentile plots: latency (log scale) against percentile on the usual "number of nines"
//! axis, one line per run, with a legend.

use std::path::Path;

use plotters::prelude::*;

use super::report::RunResult;
use super::BenchError;

/// Distinct colours for up to eight runs, then they repeat.
const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(23, 190, 207),
];

/// x of a percentile: log10(1 / (1 - p)), so 90 -> 1, 99 -> 2, 99.9 -> 3.
fn nines(percentile: f64) -> f64 {
    let rest = (1.0 - percentile / 100.0).max(1e-7);
    -rest.log10()
}

fn percentile_label(x: &f64) -> String {
    let n = x.round() as i32;
    if n <= 0 {
        "0".into()
    } else {
        let p = 100.0 - 100.0 * 10f64.powi(-n);
        let s = format!("{p:.*}", (n - 2).max(0) as usize);
        s
    }
}

/// Draws every run with latency figures into an SVG file.
pub fn draw(path: &Path, runs: &[RunResult]) -> Result<(), BenchError> {
    let plotted: Vec<&RunResult> = runs.iter().filter(|r| !r.percentiles.is_empty()).collect();
    if plotted.is_empty() {
        return Err(BenchError::Setup(
            "no run with latency figures to plot".into(),
        ));
    }
    let values = plotted
        .iter()
        .flat_map(|r| r.percentiles.iter().map(|&(_, us)| us));
    let (lo, hi) = values.fold((f64::MAX, 0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    let (lo, hi) = ((lo * 0.8).max(0.1), (hi * 1.5).max(1.0));
    let x_max = plotted
        .iter()
        .flat_map(|r| r.percentiles.iter().map(|&(p, _)| nines(p)))
        .fold(1.0f64, f64::max)
        .ceil();
    let err = |e: String| BenchError::Setup(format!("plot {}: {e}", path.display()));
    let root = SVGBackend::new(path, (960, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(e.to_string()))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Latency by percentile", ("sans-serif", 22))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(0f64..x_max, (lo..hi).log_scale())
        .map_err(|e| err(e.to_string()))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_labels(x_max as usize + 1)
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|v| format!("{v:.0}"))
        .draw()
        .map_err(|e| err(e.to_string()))?;
    for (i, run) in plotted.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = run
            .percentiles
            .iter()
            .map(|&(p, us)| (nines(p), us.max(lo)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| err(e.to_string()))?
            .label(run.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(e.to_string()))?;
    root.present().map_err(|e| err(e.to_string()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_axis() {
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
        assert_eq!(percentile_label(&0.0), "0");
        assert_eq!(percentile_label(&1.0), "90");
        assert_eq!(percentile_label(&2.0), "99");
        assert_eq!(percentile_label(&3.0), "99.9");
        assert_eq!(percentile_label(&5.0), "99.999");
    }
}
