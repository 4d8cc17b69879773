//! `journeyd bench --sweep`: the load benchmark over a grid of device counts and batch sizes,
//! printed as a table and drawn as an SVG chart (throughput and p99 ack latency against devices,
//! one line per batch size), written by this code with no plotting library.

use std::fmt::Write as _;

use super::{BenchOptions, BenchReport};

/// Runs every (devices, batch) point, each against a fresh server.
pub async fn sweep(
    base: &BenchOptions,
    devices: &[usize],
    batches: &[usize],
) -> anyhow::Result<Vec<BenchReport>> {
    let mut out = Vec::new();
    for &d in devices {
        for &b in batches {
            let opts = BenchOptions {
                devices: d,
                batch_positions: b,
                baselines: false,
                ..base.clone()
            };
            tracing::info!(devices = d, batch = b, "sweep point");
            out.push(super::run(opts).await?);
        }
    }
    Ok(out)
}

/// The sweep as a text table.
pub fn table(reports: &[BenchReport]) -> String {
    let mut s =
        String::from("devices  batch  acked positions/s  p50 ms  p99 ms  p99.9 ms  failed\n");
    for r in reports {
        let _ = writeln!(
            s,
            "{:>7}  {:>5}  {:>17.0}  {:>6.2}  {:>6.2}  {:>8.2}  {:>6}",
            r.devices,
            r.batch_positions,
            r.acked_positions_per_sec,
            r.ack_p50_ms,
            r.ack_p99_ms,
            r.ack_p999_ms,
            r.failed_devices
        );
    }
    s
}

const COLOURS: [&str; 6] = [
    "#1b6ca8", "#d1495b", "#2e933c", "#edae49", "#6a4c93", "#444444",
];

/// One panel: `value` of each report against devices (log scale), a line per batch size.
fn panel(
    svg: &mut String,
    reports: &[BenchReport],
    (x0, y0, w, h): (f64, f64, f64, f64),
    title: &str,
    unit: &str,
    value: fn(&BenchReport) -> f64,
) {
    let mut batches: Vec<usize> = reports.iter().map(|r| r.batch_positions).collect();
    batches.sort_unstable();
    batches.dedup();
    let devices: Vec<f64> = reports.iter().map(|r| r.devices as f64).collect();
    let (dmin, dmax) = devices
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &d| (a.min(d), b.max(d)));
    let (lmin, lmax) = (dmin.max(1.0).log10(), dmax.max(10.0).log10());
    let vmax = reports.iter().map(value).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let x = |d: f64| {
        let span = (lmax - lmin).max(1e-9);
        x0 + 60.0 + (d.max(1.0).log10() - lmin) / span * (w - 80.0)
    };
    let y = |v: f64| y0 + h - 40.0 - v / vmax * (h - 70.0);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="14" font-weight="bold">{title}</text>"#,
        x0 + 60.0,
        y0 + 18.0
    );
    // Axes, gridlines and labels.
    let _ = writeln!(
        svg,
        r##"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#000"/><line x1="{l}" y1="{b}" x2="{l}" y2="{t}" stroke="#000"/>"##,
        l = x0 + 60.0,
        r = x0 + w - 20.0,
        b = y(0.0),
        t = y(vmax)
    );
    for i in 0..=4 {
        let v = vmax * i as f64 / 4.0;
        let label = if vmax >= 10_000.0 {
            format!("{:.0}k", v / 1000.0)
        } else {
            format!("{v:.1}")
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{l}" y1="{yy}" x2="{r}" y2="{yy}" stroke="#ddd"/><text x="{tx}" y="{ty}" font-size="11" text-anchor="end">{label}</text>"##,
            l = x0 + 60.0,
            r = x0 + w - 20.0,
            yy = y(v),
            tx = x0 + 55.0,
            ty = y(v) + 4.0
        );
    }
    let mut ticks = devices.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for d in ticks {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">{d}</text>"#,
            x(d),
            y(0.0) + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" font-size="11" text-anchor="middle">devices (log scale)</text><text x="{}" y="{}" font-size="11" transform="rotate(-90 {} {})" text-anchor="middle">{unit}</text>"#,
        x0 + w / 2.0,
        y(0.0) + 32.0,
        x0 + 14.0,
        y0 + h / 2.0,
        x0 + 14.0,
        y0 + h / 2.0
    );
    // A line and points per batch size, and the legend.
    for (i, b) in batches.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let mut points: Vec<(f64, f64)> = reports
            .iter()
            .filter(|r| r.batch_positions == *b)
            .map(|r| (x(r.devices as f64), y(value(r))))
            .collect();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let path: Vec<String> = points
            .iter()
            .map(|(px, py)| format!("{px:.1},{py:.1}"))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for (px, py) in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{colour}"/>"#
            );
        }
        let _ = writeln!(
            svg,
            r#"<rect x="{}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{}" font-size="11">batch {b}</text>"#,
            x0 + w - 110.0,
            y0 + 30.0 + i as f64 * 16.0,
            x0 + w - 95.0,
            y0 + 39.0 + i as f64 * 16.0
        );
    }
}

/// The sweep as an SVG document: throughput on the left, p99 ack latency on the right.
pub fn chart(reports: &[BenchReport], caption: &str) -> String {
    let (w, h) = (1000.0, 420.0);
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    panel(
        &mut svg,
        reports,
        (0.0, 0.0, w / 2.0, h - 30.0),
        "acked positions per second",
        "positions/s",
        |r| r.acked_positions_per_sec,
    );
    panel(
        &mut svg,
        reports,
        (w / 2.0, 0.0, w / 2.0, h - 30.0),
        "p99 ack latency",
        "ms",
        |r| r.ack_p99_ms,
    );
    let _ = writeln!(
        svg,
        r##"<text x="20" y="{}" font-size="11" fill="#555">{}</text>"##,
        h - 10.0,
        caption.replace('&', "&amp;").replace('<', "&lt;")
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(devices: usize, batch: usize, rate: f64, p99: f64) -> BenchReport {
        BenchReport {
            devices,
            batch_positions: batch,
            seconds: 1.0,
            acked_positions: rate as u64,
            acked_positions_per_sec: rate,
            ack_p50_ms: p99 / 2.0,
            ack_p99_ms: p99,
            ack_p999_ms: p99,
            ack_max_ms: p99,
            server_peak_rss_mib: 1.0,
            server_cpu_seconds: 1.0,
            disk_bytes_per_position: 1.0,
            server_kib_per_idle_device: 1.0,
            failed_devices: 0,
            window_cpu: crate::bench::WindowCpu::default(),
            server_side: None,
            baseline: None,
            network_ceiling: None,
            postgres: None,
            quic_floor_kib_per_connection: None,
        }
    }

    #[test]
    fn the_chart_has_a_line_per_batch_size_in_each_panel() {
        let reports = vec![
            report(100, 10, 1e5, 2.0),
            report(1000, 10, 2e5, 4.0),
            report(100, 100, 5e5, 3.0),
            report(1000, 100, 9e5, 9.0),
        ];
        let svg = chart(&reports, "test <run>");
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert_eq!(svg.matches("<circle").count(), 8);
        assert!(svg.contains("batch 100"));
        assert!(svg.contains("test &lt;run>"));
        assert!(svg.ends_with("</svg>\n"));
        let t = table(&reports);
        assert_eq!(t.lines().count(), 5);
    }
}
