//! A small SVG line chart for `plait plan --plot`: latency (T) and total work (L) against the
//! number of segments, one line per pool size. Plain SVG text, so no font or image library
//! is needed and any browser shows it.

use std::fmt::Write;

const W: f64 = 520.0;
const H: f64 = 360.0;
const MARGIN: f64 = 60.0;
const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

/// `series`: (label, points of (segments, T seconds, L seconds)).
pub fn two_panels(series: &[(String, Vec<(f64, f64, f64)>)]) -> String {
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
"#,
        2.0 * W,
        H + 40.0
    );
    panel(&mut svg, series, 0.0, "latency T (s)", |p| p.1);
    panel(&mut svg, series, W, "total proving work L (s)", |p| p.2);
    for (i, (label, _)) in series.iter().enumerate() {
        let x = MARGIN + i as f64 * 130.0;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            svg,
            r#"<line x1="{x}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" stroke-width="2"/><text x="{tx}" y="{ty}">{label}</text>"#,
            y = H + 20.0,
            x2 = x + 20.0,
            tx = x + 25.0,
            ty = H + 24.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn panel(
    svg: &mut String,
    series: &[(String, Vec<(f64, f64, f64)>)],
    left: f64,
    title: &str,
    value: impl Fn(&(f64, f64, f64)) -> f64,
) {
    let points: Vec<&(f64, f64, f64)> = series.iter().flat_map(|(_, p)| p).collect();
    let x_max = points.iter().map(|p| p.0).fold(1.0, f64::max);
    let x_min = points.iter().map(|p| p.0).fold(x_max, f64::min).min(x_max);
    let y_max = points.iter().map(|p| value(p)).fold(1.0, f64::max) * 1.1;
    // log2 on x: segment counts double from one height to the next.
    let (lx_min, lx_max) = (
        x_min.max(1.0).log2(),
        x_max.max(2.0).log2().max(x_min.log2() + 1.0),
    );
    let sx = |x: f64| {
        left + MARGIN + (x.max(1.0).log2() - lx_min) / (lx_max - lx_min) * (W - 1.5 * MARGIN)
    };
    let sy = |y: f64| H - MARGIN + 20.0 - y / y_max * (H - 1.5 * MARGIN);
    let (x0, y0) = (left + MARGIN, H - MARGIN + 20.0);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="20" font-size="14">{title}</text>
<line x1="{x0}" y1="{y0}" x2="{}" y2="{y0}" stroke="black"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="30" stroke="black"/>
<text x="{}" y="{}">segments n (log scale)</text>"#,
        left + MARGIN,
        left + W - MARGIN / 2.0,
        left + W / 2.0 - 40.0,
        y0 + 32.0
    );
    for i in 0..=4 {
        let y = y_max * i as f64 / 4.0;
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="end">{:.0}</text><line x1="{x0}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/>"##,
            x0 - 5.0,
            sy(y) + 4.0,
            y,
            left + W - MARGIN / 2.0,
            py = sy(y)
        );
    }
    let mut ticks: Vec<f64> = points.iter().map(|p| p.0).collect();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for n in ticks {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{}" text-anchor="middle">{n:.0}</text>"#,
            sx(n),
            y0 + 15.0
        );
    }
    for (i, (_, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = pts
            .iter()
            .map(|p| format!("{:.1},{:.1}", sx(p.0), sy(value(p))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
            path.join(" ")
        );
        for p in pts {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{color}"/>"#,
                sx(p.0),
                sy(value(p))
            );
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn draws_one_line_per_series_in_each_panel() {
        let series = vec![
            (
                "1 workers".to_string(),
                vec![(2.0, 300.0, 300.0), (4.0, 400.0, 420.0)],
            ),
            (
                "10 workers".to_string(),
                vec![(2.0, 200.0, 300.0), (4.0, 150.0, 420.0)],
            ),
        ];
        let svg = super::two_panels(&series);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 4);
        assert!(svg.contains("10 workers") && svg.contains("latency T (s)"));
    }
}
