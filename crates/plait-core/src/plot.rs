//! The planner's picture: predicted latency (T) and total work (L) of each candidate segment
//! height against its number of segments, one line per pool size, drawn as SVG by `plotters`.

use plotters::prelude::*;

/// Distinct enough on white and for colour-blind eyes (matplotlib's first six).
const COLORS: [RGBColor; 6] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x17, 0xbe, 0xcf),
];

use crate::{
    planner::{Candidate, Pool},
    sim::{simulate, SimConfig, SimJob},
    AggTreeShape,
};

/// One pool size's predictions: (segments, T seconds, L seconds) per candidate.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// What the series shows, e.g. `10 workers`.
    pub label: String,
    /// (segments, T seconds, L seconds) per candidate height.
    pub points: Vec<(f64, f64, f64)>,
}

/// Simulates every candidate on `pool` resized to each of `sizes` workers.
pub fn pool_size_series(
    candidates: &[Candidate],
    pool: &Pool,
    tree: AggTreeShape,
    sim: SimConfig,
    sizes: &[usize],
) -> Vec<Series> {
    sizes
        .iter()
        .map(|&size| {
            let sized = pool.resized(size);
            let points = candidates
                .iter()
                .filter_map(|c| {
                    let job = SimJob {
                        segment_instructions: &c.segment_instructions,
                        segment_sizes: &c.segment_sizes,
                        segment_height: c.segment_height,
                        tree,
                    };
                    let out = simulate(&job, &sized.profiles, &sized.workers, sim).ok()?;
                    Some((c.segments as f64, out.latency_seconds, out.work_seconds))
                })
                .collect();
            Series {
                label: format!("{size} workers"),
                points,
            }
        })
        .collect()
}

/// Two panels side by side, latency and work against segments, as SVG text. Both axes are
/// logarithmic: segment counts double from one height to the next, and one pool's latency is
/// often a thousand times another's.
pub fn two_panel_svg(series: &[Series]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (1040, 420)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        let (left, right) = root.split_horizontally(520);
        panel(&left, series, "latency T (s, log scale)", |p| p.1)?;
        panel(&right, series, "total proving work L (s, log scale)", |p| {
            p.2
        })?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

/// Seconds as an axis label: whole seconds up to 100,000, then in powers of ten.
fn seconds_label(y: f64) -> String {
    if y < 1e5 {
        format!("{y:.0}")
    } else {
        format!("{y:.0e}")
    }
}

fn panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    series: &[Series],
    title: &str,
    value: fn(&(f64, f64, f64)) -> f64,
) -> Result<(), String> {
    let err = |e: DrawingAreaErrorKind<_>| e.to_string();
    let points = series.iter().flat_map(|s| &s.points);
    // x is log2(n), labelled with n at each doubling.
    let log2 = |n: f64| n.max(1.0).log2();
    let x_max = points.clone().map(|p| log2(p.0)).fold(1.0, f64::max);
    let x_min = points.clone().map(|p| log2(p.0)).fold(x_max, f64::min);
    let y_max = points.clone().map(value).fold(1.0, f64::max);
    let y_min = points.map(value).fold(y_max, f64::min).max(1e-3);
    // Below the lowest line a little; above the highest, room for the legend: at least a
    // decade, and 30% of the height when the lines span several.
    let y_from = y_min / 2.0;
    let headroom_decades = (0.43 * (y_max / y_from).log10()).max(0.9);
    let y_to = y_max * 10f64.powf(headroom_decades);
    let (from, to) = ((x_min - 0.5).floor(), (x_max + 0.5).ceil());
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(64)
        .build_cartesian_2d(from..to, (y_from..y_to).log_scale())
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("segments n (log scale)")
        .x_labels((to - from) as usize + 1)
        .light_line_style(WHITE)
        .x_label_formatter(&|x| format!("{:.0}", x.exp2()))
        .y_label_formatter(&|y| seconds_label(*y))
        .draw()
        .map_err(err)?;
    for (i, s) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let line = s.points.iter().map(|p| (log2(p.0), value(p)));
        chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(err)?
            .label(s.label.clone())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(line.map(|p| Circle::new(p, 3, color.filled())))
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_one_line_per_series_in_each_panel_with_its_label() {
        let series = vec![
            Series {
                label: "1 workers".into(),
                points: vec![(2.0, 300.0, 300.0), (4.0, 400.0, 420.0)],
            },
            Series {
                label: "10 workers".into(),
                points: vec![(2.0, 200.0, 300.0), (4.0, 150.0, 420.0)],
            },
        ];
        let svg = two_panel_svg(&series).unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Each series (drawn 2 px wide; axes and ticks are 1 px): one line per panel, plus
        // its legend sample; a point per candidate in each panel.
        assert_eq!(svg.matches(r#"stroke-width="2""#).count(), 2 * (2 + 2));
        assert_eq!(svg.matches("<circle").count(), 2 * 2 * 2);
        assert!(svg.contains("10 workers") && svg.contains("latency T (s, log scale)"));
    }
}
