//! Static SVG line charts: axes with "nice" tick labels, gaps for missing values, a hover
//! `<title>` on every plotted point.
//!
//! Why hand-written SVG: the page must work offline, without JavaScript and without a charting
//! library, and stay crisp at any zoom. A chart is a pure function of its series, so it is unit
//! tested as text. Values that are `null` in `metrics.jsonl` (non-finite at training time) or
//! NaN/∞ here break the line instead of being drawn at a made-up place; a point with no
//! neighbour gets a visible dot so a single evaluation still shows. Long series are thinned to
//! [`MAX_POINTS`] per series by keeping each bucket's minimum and maximum, so spikes survive.

use std::fmt::Write as _;

use crate::html::{esc, num};

/// Series colours (colour-blind-friendly order: blue, orange, green, purple, …).
pub const PALETTE: [&str; 8] =
    ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#db2777"];

/// Points kept per series; longer series are thinned by [`decimate`].
pub const MAX_POINTS: usize = 600;

/// Up to this many points per series are drawn as visible dots; more get invisible hover
/// targets only.
const DOTS_UP_TO: usize = 60;

const W: f64 = 300.0;
const H: f64 = 186.0;
const LEFT: f64 = 46.0;
const RIGHT: f64 = 10.0;
const TOP: f64 = 8.0;
const BOTTOM: f64 = 28.0;

/// One line: `(step, value)` pairs in step order; `None` (or a non-finite value) is a gap.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, Option<f64>)>,
}

/// One small chart of one or more series sharing the axes.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub series: Vec<Series>,
}

/// Axis ticks: the domain they span and the tick values.
#[derive(Debug, Clone, PartialEq)]
pub struct Ticks {
    pub lo: f64,
    pub hi: f64,
    pub step: f64,
    pub values: Vec<f64>,
}

/// Heckbert's "nice number": 1, 2, 5 or 10 times a power of ten, near `x` (rounded, or the
/// smallest such number ≥ `x`).
fn nice_num(x: f64, round: bool) -> f64 {
    let exp = x.log10().floor();
    let f = x / 10f64.powf(exp);
    let nf = if round {
        match f {
            f if f < 1.5 => 1.0,
            f if f < 3.0 => 2.0,
            f if f < 7.0 => 5.0,
            _ => 10.0,
        }
    } else {
        match f {
            f if f <= 1.0 => 1.0,
            f if f <= 2.0 => 2.0,
            f if f <= 5.0 => 5.0,
            _ => 10.0,
        }
    };
    nf * 10f64.powf(exp)
}

/// About `target` evenly spaced round tick values covering `[lo, hi]`; the domain is widened
/// to the outer ticks. `integer` keeps the step ≥ 1 (optimizer steps). A degenerate or
/// non-finite range is widened around its value.
pub fn nice_ticks(lo: f64, hi: f64, target: usize, integer: bool) -> Ticks {
    let (mut lo, mut hi) = match (lo.is_finite(), hi.is_finite()) {
        (true, true) if lo <= hi => (lo, hi),
        (true, true) => (hi, lo),
        (true, false) => (lo, lo),
        (false, true) => (hi, hi),
        (false, false) => (0.0, 1.0),
    };
    // Keep the span finite (values near ±f64::MAX would overflow it).
    (lo, hi) = (lo.max(-1e300), hi.min(1e300));
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()).max(1e-300) {
        let pad = if integer || lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= pad;
        hi += pad;
        if lo < 0.0 && lo + pad >= 0.0 && !integer {
            // A constant non-negative series: keep the axis at zero rather than below it.
            lo = 0.0;
        }
    }
    let range = nice_num(hi - lo, false);
    let mut step = nice_num(range / (target.max(2) - 1) as f64, true);
    if integer {
        step = step.max(1.0);
    }
    let tlo = (lo / step).floor() * step;
    let thi = (hi / step).ceil() * step;
    let n = ((thi - tlo) / step).round() as usize;
    let values = (0..=n)
        .map(|i| {
            let v = tlo + i as f64 * step;
            if v.abs() < step * 1e-9 { 0.0 } else { v }
        })
        .collect();
    Ticks { lo: tlo, hi: thi, step, values }
}

/// Labels for one axis: the precision follows the tick step, so neighbouring labels differ
/// and none shows noise digits; large values use k/M/G, tiny ones a shared exponent.
pub fn format_tick(v: f64, ticks: &Ticks) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let step = ticks.step.abs();
    let top = ticks.lo.abs().max(ticks.hi.abs());
    let decimals = |step: f64| (-step.log10() - 1e-9).ceil().clamp(0.0, 6.0) as usize;
    if (1e4..1e12).contains(&top) {
        let (div, suffix) = match top {
            t if t >= 1e9 => (1e9, "G"),
            t if t >= 1e6 => (1e6, "M"),
            _ => (1e3, "k"),
        };
        let d = decimals(step / div);
        return format!("{:.d$}{suffix}", v / div);
    }
    if step < 1e-3 || top >= 1e12 {
        let exp = top.log10().floor() as i32;
        let scale = 10f64.powi(exp);
        let d = decimals(step / scale).min(3);
        return format!("{:.d$}e{exp}", v / scale);
    }
    format!("{v:.*}", decimals(step))
}

/// Thin a series to at most `max` points: per bucket of consecutive points, its minimum and
/// maximum (in step order); a bucket holding a gap keeps the gap after them.
pub fn decimate(points: &[(f64, Option<f64>)], max: usize) -> Vec<(f64, Option<f64>)> {
    if points.len() <= max || max < 4 {
        return points.to_vec();
    }
    let buckets = max / 2;
    let size = points.len().div_ceil(buckets);
    let mut out = Vec::with_capacity(max + buckets);
    for chunk in points.chunks(size) {
        let finite: Vec<(f64, f64)> = chunk
            .iter()
            .filter_map(|&(x, y)| y.filter(|y| y.is_finite()).map(|y| (x, y)))
            .collect();
        let has_gap = finite.len() < chunk.len();
        if let (Some(lo), Some(hi)) = (
            finite.iter().copied().min_by(|a, b| a.1.total_cmp(&b.1)),
            finite.iter().copied().max_by(|a, b| a.1.total_cmp(&b.1)),
        ) {
            let (a, b) = if lo.0 <= hi.0 { (lo, hi) } else { (hi, lo) };
            out.push((a.0, Some(a.1)));
            if b != a {
                out.push((b.0, Some(b.1)));
            }
        }
        if has_gap {
            out.push((chunk[chunk.len() - 1].0, None));
        }
    }
    out
}

/// The `d` attribute of a polyline through `points` (already in pixels): a new subpath
/// (`M`) after every gap, so missing values are never bridged. Also returns the indices of
/// isolated points (no finite neighbour), which a path alone would not show.
pub fn path_d(points: &[(f64, Option<f64>)]) -> (String, Vec<usize>) {
    let mut d = String::new();
    let mut isolated = Vec::new();
    let mut run_start: Option<usize> = None;
    let finite = |i: usize| points.get(i).and_then(|p| p.1).is_some_and(f64::is_finite);
    for (i, &(x, y)) in points.iter().enumerate() {
        match y.filter(|y| y.is_finite() && x.is_finite()) {
            Some(y) => {
                let cmd = if run_start.is_none() { 'M' } else { 'L' };
                if run_start.is_none() {
                    run_start = Some(i);
                    if !finite(i + 1) {
                        isolated.push(i);
                    }
                }
                if !d.is_empty() {
                    d.push(' ');
                }
                let _ = write!(d, "{cmd}{x:.1},{y:.1}");
            }
            None => run_start = None,
        }
    }
    (d, isolated)
}

/// The chart as an `<svg class="curve">` element.
pub fn render(chart: &Chart) -> String {
    let pw = W - LEFT - RIGHT;
    let ph = H - TOP - BOTTOM;
    let series: Vec<Series> = chart
        .series
        .iter()
        .map(|s| Series { name: s.name.clone(), points: decimate(&s.points, MAX_POINTS) })
        .collect();
    let finite_y =
        series.iter().flat_map(|s| s.points.iter().filter_map(|p| p.1)).filter(|y| y.is_finite());
    let (ymin, ymax) =
        finite_y.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), y| (a.min(y), b.max(y)));
    let xs = series.iter().flat_map(|s| s.points.iter().map(|p| p.0)).filter(|x| x.is_finite());
    let (xmin, xmax) =
        xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| (a.min(x), b.max(x)));
    let total: usize = series.iter().map(|s| s.points.len()).sum();

    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg class="curve" viewBox="0 0 {W} {H}" role="img" aria-label="{}" data-points="{total}" xmlns="http://www.w3.org/2000/svg">"#,
        esc(&chart.title)
    );
    let _ = write!(
        svg,
        r##"<rect x="{LEFT}" y="{TOP}" width="{pw}" height="{ph}" fill="#fbfbfd" stroke="#d6d9e0"/>"##
    );
    if !ymin.is_finite() {
        let _ = write!(
            svg,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="empty">no finite values</text></svg>"##,
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
        return svg;
    }
    let yt = nice_ticks(ymin, ymax, 5, false);
    let xt = nice_ticks(xmin, xmax, 5, true);
    // Positions are clamped to the plot area: a value beyond the axis range (only possible
    // near ±f64::MAX, which the ticks cap) is drawn at the edge, never at an overflowed place.
    let sx = |x: f64| (LEFT + (x - xt.lo) / (xt.hi - xt.lo) * pw).clamp(LEFT, LEFT + pw);
    let sy = |y: f64| (TOP + ph - (y - yt.lo) / (yt.hi - yt.lo) * ph).clamp(TOP, TOP + ph);
    for &v in &yt.values {
        let y = sy(v);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e8eaef"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
            LEFT + pw,
            LEFT - 6.0,
            y + 3.5,
            esc(&format_tick(v, &yt))
        );
    }
    for &v in &xt.values {
        let x = sx(v);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" x2="{x:.1}" y1="{:.1}" y2="{:.1}" stroke="#9aa1ad"/><text x="{x:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"##,
            TOP + ph,
            TOP + ph + 4.0,
            TOP + ph + 15.0,
            esc(&format_tick(v, &xt))
        );
    }
    let _ = write!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="end" class="axis-label">step</text>"#,
        LEFT + pw,
        H - 3.0
    );
    for (k, s) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        let px: Vec<(f64, Option<f64>)> =
            s.points.iter().map(|&(x, y)| (sx(x), y.filter(|y| y.is_finite()).map(sy))).collect();
        let (d, isolated) = path_d(&px);
        if !d.is_empty() {
            let _ = write!(
                svg,
                r#"<path class="line" d="{d}" fill="none" stroke="{color}" stroke-width="1.6" stroke-linejoin="round" stroke-linecap="round"><title>{}</title></path>"#,
                esc(&s.name)
            );
        }
        let finite = px.iter().filter(|p| p.1.is_some()).count();
        let _ = write!(svg, r#"<g class="pts" fill="{color}">"#);
        for (i, (&(x, y), &(step, value))) in px.iter().zip(&s.points).enumerate() {
            let (Some(y), Some(value)) = (y, value) else { continue };
            let visible = finite <= DOTS_UP_TO || isolated.contains(&i);
            let (r, opacity) = if visible { (2.4, "1") } else { (3.5, "0") };
            let _ = write!(
                svg,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="{r}" fill-opacity="{opacity}"><title>step {}: {} = {}</title></circle>"#,
                num(step),
                esc(&s.name),
                esc(&num(value))
            );
        }
        svg.push_str("</g>");
    }
    svg.push_str("</svg>");
    svg
}

/// The chart in a `<figure class="chart">` with its title and, for several series, a legend.
pub fn figure(chart: &Chart) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<figure class="chart"><figcaption><span class="chart-title">{}</span>"#,
        esc(&chart.title)
    );
    if chart.series.len() > 1 {
        out.push_str(r#"<span class="legend">"#);
        for (k, s) in chart.series.iter().enumerate() {
            let _ = write!(
                out,
                r#"<span class="key"><i style="background:{}"></i>{}</span>"#,
                PALETTE[k % PALETTE.len()],
                esc(&s.name)
            );
        }
        out.push_str("</span>");
    } else if let Some(s) = chart.series.first() {
        let missing = s.points.iter().filter(|p| !p.1.is_some_and(f64::is_finite)).count();
        let last = s.points.iter().rev().find_map(|p| p.1.filter(|v| v.is_finite()));
        out.push_str(r#"<span class="last">"#);
        if missing > 0 {
            let _ = write!(
                out,
                r#"<span class="nulls" title="values logged as null or non-finite: gaps in the line">{missing} missing</span>"#
            );
        }
        if let Some(last) = last {
            let _ = write!(out, r#"<span title="last value">{}</span>"#, esc(&num(last)));
        }
        out.push_str("</span>");
    }
    out.push_str("</figcaption>");
    out.push_str(&render(chart));
    out.push_str("</figure>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pts(v: &[Option<f64>]) -> Vec<(f64, Option<f64>)> {
        v.iter().enumerate().map(|(i, &y)| (i as f64 + 1.0, y)).collect()
    }

    #[test]
    fn ticks_are_round_and_cover_the_data() {
        let t = nice_ticks(0.13, 0.87, 5, false);
        assert_eq!((t.lo, t.hi, t.step), (0.0, 1.0, 0.2));
        assert_eq!(t.values.len(), 6);
        let t = nice_ticks(1.0, 4.0, 5, true);
        assert_eq!(t.values, vec![1.0, 2.0, 3.0, 4.0]);
        let t = nice_ticks(0.0, 2.0, 5, true);
        assert!(t.step >= 1.0, "optimizer steps are integers: {t:?}");
        let t = nice_ticks(2.3, 2.3, 5, false);
        assert!(t.lo <= 2.3 && t.hi >= 2.3 && t.hi > t.lo, "{t:?}");
        let t = nice_ticks(0.0, 0.0, 5, false);
        assert!(t.lo == 0.0 && t.hi > 0.0, "{t:?}");
        let t = nice_ticks(f64::NAN, f64::INFINITY, 5, false);
        assert!(t.values.iter().all(|v| v.is_finite()));
        let t = nice_ticks(-f64::MAX, f64::MAX, 5, false);
        assert!(t.values.iter().all(|v| v.is_finite()) && t.values.len() > 1, "{t:?}");
        let t = nice_ticks(-3.0, 11.0, 5, false);
        assert!(t.lo <= -3.0 && t.hi >= 11.0);
        assert!(t.values.contains(&0.0), "zero is a tick, not -1e-17: {t:?}");
    }

    #[test]
    fn tick_labels_follow_the_step() {
        let t = nice_ticks(0.0, 1.0, 5, false);
        let labels: Vec<String> = t.values.iter().map(|&v| format_tick(v, &t)).collect();
        assert_eq!(labels, ["0", "0.2", "0.4", "0.6", "0.8", "1.0"]);
        let t = nice_ticks(0.0, 25000.0, 5, false);
        assert_eq!(format_tick(10000.0, &t), "10k");
        let t = nice_ticks(0.0, 2e-4, 5, false);
        assert_eq!(format_tick(1e-4, &t), "1.0e-4");
        let t = nice_ticks(0.0, 120.0, 5, true);
        assert_eq!(format_tick(50.0, &t), "50");
    }

    #[test]
    fn gaps_break_the_line_and_isolated_points_are_reported() {
        let p = pts(&[Some(1.0), None, Some(3.0), Some(f64::NAN), Some(5.0), Some(6.0)]);
        let (d, isolated) = path_d(&p);
        assert_eq!(d, "M1.0,1.0 M3.0,3.0 M5.0,5.0 L6.0,6.0");
        assert_eq!(isolated, vec![0, 2]);
        assert_eq!(path_d(&pts(&[None, None])).0, "");
    }

    #[test]
    fn charts_never_print_nan_and_title_every_point() {
        let chart = Chart {
            title: "loss <raw>".into(),
            series: vec![Series {
                name: "loss".into(),
                points: pts(&[Some(2.0), None, Some(f64::NAN), Some(1.5), Some(1.25)]),
            }],
        };
        let svg = render(&chart);
        assert!(svg.starts_with(r#"<svg class="curve""#));
        assert!(!svg.contains("NaN"), "{svg}");
        assert!(svg.contains("aria-label=\"loss &lt;raw&gt;\""));
        assert_eq!(svg.matches("<circle").count(), 3, "one hover target per finite value");
        assert!(svg.contains("<title>step 4: loss = 1.5</title>"));
        assert!(svg.matches(" M").count() + 1 >= 2, "the gap splits the path");
        assert!(figure(&chart).contains(">2 missing</span>"), "gaps are counted in the caption");
    }

    #[test]
    fn no_input_makes_a_chart_print_a_non_number() {
        let specials =
            [0.0, -0.0, 1e-300, -1e300, f64::MAX, f64::MIN, f64::MIN_POSITIVE, 1e15, f64::NAN];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..500 {
            let mut points = Vec::new();
            for i in 0..(state % 9) {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let v = match state >> 61 {
                    0 => None,
                    1 | 2 => Some(specials[(state >> 20) as usize % specials.len()]),
                    _ => Some(
                        ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5)
                            * 10f64.powi((state % 13) as i32 - 6),
                    ),
                };
                points.push((i as f64 * 3.0, v));
            }
            let chart =
                Chart { title: "t".into(), series: vec![Series { name: "s".into(), points }] };
            let svg = render(&chart);
            assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
            for label in svg.split(r#"class="tick">"#).skip(1) {
                let text = &label[..label.find('<').unwrap()];
                assert!(text.len() <= 10, "tick label {text:?}");
            }
        }
    }

    #[test]
    fn a_series_without_finite_values_says_so() {
        let chart = Chart {
            title: "lr".into(),
            series: vec![Series { name: "lr".into(), points: pts(&[None, Some(f64::INFINITY)]) }],
        };
        let svg = render(&chart);
        assert!(svg.contains("no finite values"));
        assert!(!svg.contains("<path"));
    }

    #[test]
    fn long_series_are_thinned_keeping_extremes_and_gaps() {
        let mut p: Vec<(f64, Option<f64>)> =
            (0..10_000).map(|i| (f64::from(i), Some((f64::from(i) * 0.01).sin()))).collect();
        p[5000].1 = Some(100.0);
        p[7000].1 = None;
        let d = decimate(&p, MAX_POINTS);
        assert!(d.len() <= MAX_POINTS + MAX_POINTS / 2, "{}", d.len());
        assert!(d.iter().any(|&(x, y)| x == 5000.0 && y == Some(100.0)), "the spike survives");
        assert!(d.iter().any(|p| p.1.is_none()), "the gap survives");
        assert!(d.windows(2).all(|w| w[0].0 <= w[1].0), "still in step order");
        assert_eq!(decimate(&p[..10], MAX_POINTS).len(), 10);
    }

    #[test]
    fn several_series_get_a_legend() {
        let chart = Chart {
            title: "AP".into(),
            series: vec![
                Series { name: "AP".into(), points: pts(&[Some(0.1), Some(0.2)]) },
                Series { name: "AP50".into(), points: pts(&[Some(0.3), Some(0.5)]) },
            ],
        };
        let f = figure(&chart);
        assert!(f.contains(r#"class="legend""#) && f.contains("AP50"));
        assert_eq!(f.matches("<path").count(), 2);
    }
}
