//! SVG plots of a report, with `plotters`.
//!
//! Two files, because a latency table over four orders of magnitude and a
//! scaling curve want different axes:
//!
//! * `latency.svg`: for every measured row, bars from p50 to p90 to p99
//!   on a logarithmic time axis (the distribution's shape, floors and
//!   dipc rows side by side);
//! * `scaling.svg`: p50 against the number of nodes for the write
//!   invalidating k copies, the hot page read by k nodes and the barrier
//!   of n nodes; and the atomic counter's throughput against k nodes.
//!
//! Rows that were not measured are left out (never drawn as zero). Text
//! is emitted as SVG `<text>` (plotters' SVG backend without font files),
//! so a browser renders it with its own sans-serif font.

use std::path::{Path, PathBuf};

use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

use crate::Error;
use crate::report::Report;

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Plot {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Write `latency.svg` and `scaling.svg` into `dir` (created); the paths
/// written (the scaling plot only when one of its rows was measured).
pub fn write(report: &Report, dir: &Path) -> Result<Vec<PathBuf>, Error> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Write {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut out = Vec::new();
    let lat = dir.join("latency.svg");
    if latency(report, &lat)? {
        out.push(lat);
    }
    let sc = dir.join("scaling.svg");
    if scaling(report, &sc)? {
        out.push(sc);
    }
    Ok(out)
}

/// Percentile bars of every measured row; false when there is none.
fn latency(report: &Report, path: &Path) -> Result<bool, Error> {
    let rows: Vec<(&str, [u64; 3])> = report
        .results
        .iter()
        .filter_map(|r| {
            let s = r.summary()?;
            Some((r.name, [s.p50_ns.max(1), s.p90_ns.max(1), s.p99_ns.max(1)]))
        })
        .collect();
    if rows.is_empty() {
        return Ok(false);
    }
    let n = rows.len();
    let lo = rows.iter().map(|r| r.1[0]).min().unwrap_or(1) as f64 / 2.0;
    let hi = rows.iter().map(|r| r.1[2]).max().unwrap_or(1) as f64 * 2.0;
    let height = 80 + 22 * n as u32;
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "latency per operation: p50 | p90 | p99 (log scale)",
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(150)
        .build_cartesian_2d((lo..hi).log_scale(), (0..n as i32).into_segmented())
        .map_err(|e| plot_err(path, e))?;
    let names: Vec<&str> = rows.iter().map(|r| r.0).collect();
    let label = |v: &SegmentValue<i32>| match v {
        SegmentValue::CenterOf(i) => names
            .get(usize::try_from(*i).unwrap_or(usize::MAX))
            .map_or(String::new(), |s| (*s).to_string()),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .x_label_formatter(&|v| crate::stats::human(*v))
        .x_desc("time per operation")
        .disable_y_mesh()
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(214, 39, 40),
    ];
    for (k, color) in colors.into_iter().enumerate() {
        let bars = rows.iter().enumerate().map(|(i, (_, p))| {
            let from = if k == 0 { lo } else { p[k - 1] as f64 };
            let mut r = Rectangle::new(
                [
                    (from, SegmentValue::Exact(i as i32)),
                    (p[k] as f64, SegmentValue::Exact(i as i32 + 1)),
                ],
                color.filled(),
            );
            r.set_margin(3, 3, 0, 0);
            r
        });
        let name = ["p50", "p90", "p99"][k];
        chart
            .draw_series(bars)
            .map_err(|e| plot_err(path, e))?
            .label(name)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(true)
}

/// `(nodes, value)` points of the rows `rows` (name, x) that were
/// measured, the value taken by `f`.
fn points(
    report: &Report,
    rows: &[(&str, i32)],
    f: impl Fn(&crate::report::ScenarioResult) -> Option<f64>,
) -> Vec<(f64, f64)> {
    rows.iter()
        .filter_map(|&(name, x)| Some((f64::from(x), f(report.result(name)?)?)))
        .collect()
}

/// The scaling curves; false when none of their rows was measured.
fn scaling(report: &Report, path: &Path) -> Result<bool, Error> {
    let p50_us = |r: &crate::report::ScenarioResult| r.summary().map(|s| s.p50_ns as f64 / 1e3);
    let lat = [
        (
            "write fault, k copies invalidated",
            points(
                report,
                &[
                    ("write-inval-1", 1),
                    ("write-inval-2", 2),
                    ("write-inval-4", 4),
                ],
                p50_us,
            ),
        ),
        (
            "hot page read, k nodes at once",
            points(
                report,
                &[("hot-read-1", 1), ("hot-read-2", 2), ("hot-read-4", 4)],
                p50_us,
            ),
        ),
        (
            "hot page read, k nodes in network namespaces",
            points(
                report,
                &[
                    ("hot-read-ns-1", 1),
                    ("hot-read-ns-2", 2),
                    ("hot-read-ns-4", 4),
                ],
                p50_us,
            ),
        ),
        (
            "barrier round, k nodes",
            points(
                report,
                &[("barrier-2", 2), ("barrier-3", 3), ("barrier-5", 5)],
                p50_us,
            ),
        ),
    ];
    let ops = points(
        report,
        &[("counter-1", 1), ("counter-2", 2), ("counter-4", 4)],
        |r| r.rate.as_ref().map(|v| v.value),
    );
    if lat.iter().all(|(_, p)| p.is_empty()) && ops.is_empty() {
        return Ok(false);
    }
    let root = SVGBackend::new(path, (1100, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
    let (left, right) = root.split_horizontally(600);
    let ymax = lat
        .iter()
        .flat_map(|(_, p)| p.iter().map(|q| q.1))
        .fold(1.0f64, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(&left)
        .caption("p50 against nodes", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(55)
        .build_cartesian_2d(0.5f64..5.5f64, 0f64..ymax)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("nodes (k)")
        .y_desc("p50 (us)")
        .x_labels(6)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let colors = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(148, 103, 189),
    ];
    for ((name, pts), color) in lat.iter().zip(colors) {
        if pts.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| plot_err(path, e))?
            .label(*name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
            .map_err(|e| plot_err(path, e))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let omax = ops.iter().map(|p| p.1).fold(1.0f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&right)
        .caption("atomic counter throughput", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0.5f64..4.5f64, 0f64..omax)
        .map_err(|e| plot_err(path, e))?;
    chart
        .configure_mesh()
        .x_desc("nodes incrementing at once")
        .y_desc("ops/s")
        .x_labels(5)
        .y_label_formatter(&|v| crate::report::human_rate(*v))
        .draw()
        .map_err(|e| plot_err(path, e))?;
    let red = RGBColor(214, 39, 40);
    chart
        .draw_series(LineSeries::new(ops.iter().copied(), red.stroke_width(2)))
        .map_err(|e| plot_err(path, e))?;
    chart
        .draw_series(ops.iter().map(|&p| Circle::new(p, 4, red.filled())))
        .map_err(|e| plot_err(path, e))?;
    root.present().map_err(|e| plot_err(path, e))?;
    Ok(true)
}
