//! The report's charts: inline SVG, no scripts, no fonts. Every numeric axis
//! has round ticks ([`ticks`]); text on a coloured cell takes the colour that
//! reads on that shade ([`ink_on`]).

use std::fmt::Write as _;

use crate::query::format_num;
use crate::stats;

pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// The smallest and largest of `values` ((inf, -inf) when there are none).
fn extent(values: impl Iterator<Item = f64>) -> (f64, f64) {
    values.fold((f64::INFINITY, f64::NEG_INFINITY), |a, v| {
        (a.0.min(v), a.1.max(v))
    })
}

/// Round ticks covering `lo..=hi`: about `target` of them, steps of 1, 2 or 5
/// times a power of ten. Returns (axis start, axis end, ticks, step).
pub fn ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, Vec<f64>, f64) {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() {
        (lo.min(hi), lo.max(hi))
    } else {
        (0.0, 1.0)
    };
    if hi - lo < 1e-12 * hi.abs().max(1.0) {
        let pad = if lo == 0.0 { 0.5 } else { lo.abs() * 0.1 };
        lo -= pad;
        hi += pad;
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw * (1.0 - 1e-9))
        .unwrap_or(10.0 * mag);
    let start = (lo / step + 1e-9).floor() * step;
    let end = (hi / step - 1e-9).ceil() * step;
    let n = ((end - start) / step).round() as usize;
    let ticks = (0..=n).map(|i| start + i as f64 * step).collect();
    (start, end, ticks, step)
}

/// A tick's label: as many decimals as the step needs, no more.
pub fn tick_label(v: f64, step: f64) -> String {
    let decimals = (-(step.log10().floor())).max(0.0) as usize;
    let v = if v.abs() < step * 1e-9 { 0.0 } else { v };
    if step >= 1e-4 && v.abs() < 1e7 {
        format!("{v:.decimals$}")
    } else {
        format!("{v:.1e}")
    }
}

/// Black or white, whichever reads on `rgb` (relative luminance, WCAG).
pub fn ink_on(rgb: (u8, u8, u8)) -> &'static str {
    let lin = |c: u8| {
        let c = c as f64 / 255.0;
        if c <= 0.03928 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    let l = 0.2126 * lin(rgb.0) + 0.7152 * lin(rgb.1) + 0.0722 * lin(rgb.2);
    // contrast against white (1.05 / (l + 0.05)) against black ((l + 0.05) / 0.05)
    if 1.05 / (l + 0.05) > (l + 0.05) / 0.05 {
        "#fff"
    } else {
        "#111"
    }
}

/// A sequential blue from white (0) to dark blue (1).
pub fn blue(f: f64) -> (u8, u8, u8) {
    let f = if f.is_finite() {
        f.clamp(0.0, 1.0)
    } else {
        0.0
    };
    (
        (255.0 - 247.0 * f) as u8,
        (255.0 - 207.0 * f) as u8,
        (255.0 - 148.0 * f) as u8,
    )
}

fn rgb((r, g, b): (u8, u8, u8)) -> String {
    format!("rgb({r},{g},{b})")
}

/// Characters of bold title text that fit across an effect chart.
const TITLE_FITS: usize = 46;

/// `param → metric`, with the last part of a dotted name for what does not fit
/// (`weight_decay → stability.batch_loss_step_std`); the full text is the
/// chart's hover title.
fn chart_title(param: &str, metric: &str) -> String {
    let last = |s: &str| s.rsplit('.').next().unwrap_or(s).to_string();
    let mut t = format!("{param} → {metric}");
    if t.chars().count() > TITLE_FITS {
        t = format!("{} → {metric}", last(param));
    }
    if t.chars().count() > TITLE_FITS {
        t = format!("{} → {}", last(param), last(metric));
    }
    t
}

fn svg_open(w: f64, h: f64, title: &str) -> String {
    format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(title)
    )
}

/// A horizontal grid line across the plot at `y`, labelled at its left end.
fn hgrid(s: &mut String, left: f64, right: f64, y: f64, label: &str) {
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
        left - 6.0,
        y + 4.0,
        esc(label)
    );
}

/// A vertical tick on the x axis at `x`, labelled below it.
fn xtick(s: &mut String, x: f64, y: f64, label: &str) {
    let _ = write!(
        s,
        r##"<line x1="{x:.1}" y1="{y:.1}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
        y + 4.0,
        y + 16.0,
        esc(label)
    );
}

/// One line of a line chart.
#[derive(Clone, Debug, Default)]
pub struct Line {
    pub points: Vec<(f64, f64)>,
    /// A shaded band around it: (x, low, high).
    pub band: Vec<(f64, f64, f64)>,
    /// How many runs each point averages (labelled where it changes).
    pub counts: Vec<(f64, usize)>,
    pub dashed: bool,
    /// Index into [`PALETTE`].
    pub color: usize,
    /// Shown on hover.
    pub label: String,
}

/// A line chart with round ticks on both axes; the legend (colour → name, and
/// what a dashed line means) is laid out below the plot in as many rows as it
/// needs, so it never runs off the edge.
pub fn line_chart(
    title: &str,
    lines: &[Line],
    legend: &[(usize, String)],
    dashed_means: Option<&str>,
    x_label: &str,
    y_label: &str,
) -> String {
    let pts: Vec<(f64, f64)> = lines
        .iter()
        .flat_map(|l| {
            l.points
                .iter()
                .copied()
                .chain(l.band.iter().flat_map(|(x, a, b)| [(*x, *a), (*x, *b)]))
        })
        .filter(|p| p.0.is_finite() && p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return String::new();
    }
    let (w, l, r, t) = (760.0, 64.0, 20.0, 30.0);
    let plot_bottom = 250.0;
    let (x0, x1) = extent(pts.iter().map(|p| p.0));
    let (ylo, yhi) = extent(pts.iter().map(|p| p.1));
    let (y0, y1, yt, ys) = ticks(ylo, yhi, 5);
    let (x0, x1, xt, xs) = ticks(x0, x1, 8);
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| plot_bottom - (y - y0) / (y1 - y0) * (plot_bottom - t);
    // legend: as many entries per row as the longest one allows
    let longest = legend
        .iter()
        .map(|(_, n)| n.chars().count())
        .chain(dashed_means.map(|d| d.chars().count()))
        .max()
        .unwrap_or(0);
    let per_row = (((w - l) / (longest as f64 * 6.2 + 44.0)) as usize).clamp(1, 4);
    let entries = legend.len() + usize::from(dashed_means.is_some());
    let legend_rows = entries.div_ceil(per_row);
    let h = plot_bottom + 44.0 + 18.0 * legend_rows as f64;
    let mut s = svg_open(w, h, title);
    let _ = write!(
        s,
        r##"<text x="{l}" y="18" class="ct">{}</text>"##,
        esc(title)
    );
    for v in &yt {
        hgrid(&mut s, l, w - r, sy(*v), &tick_label(*v, ys));
    }
    for v in &xt {
        xtick(&mut s, sx(*v), plot_bottom, &tick_label(*v, xs));
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="14" y="{:.1}" class="tick" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        (l + w - r) / 2.0,
        plot_bottom + 32.0,
        esc(x_label),
        (t + plot_bottom) / 2.0,
        (t + plot_bottom) / 2.0,
        esc(y_label)
    );
    for line in lines {
        let color = PALETTE[line.color % PALETTE.len()];
        let band: Vec<&(f64, f64, f64)> = line
            .band
            .iter()
            .filter(|b| b.1.is_finite() && b.2.is_finite())
            .collect();
        if band.len() > 1 {
            let up = band
                .iter()
                .map(|(x, _, hi)| format!("{:.1},{:.1}", sx(*x), sy(*hi)));
            let down = band
                .iter()
                .rev()
                .map(|(x, lo, _)| format!("{:.1},{:.1}", sx(*x), sy(*lo)));
            let _ = write!(
                s,
                r##"<polygon fill="{color}" fill-opacity="0.12" stroke="none" points="{}"/>"##,
                up.chain(down).collect::<Vec<_>>().join(" ")
            );
        }
        let d: Vec<String> = line
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let dash = if line.dashed {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"##,
            d.join(" "),
            esc(&line.label)
        );
        // where runs drop out (early stopping), say how many are left
        let mut last = None;
        for (x, n) in &line.counts {
            if last.is_some_and(|m| m != *n) {
                if let Some((_, y)) = line.points.iter().find(|p| p.0 == *x) {
                    if y.is_finite() {
                        let _ = write!(
                            s,
                            r##"<text x="{:.1}" y="{:.1}" class="note" fill="{color}" text-anchor="middle">n={n}</text>"##,
                            sx(*x),
                            sy(*y) - 6.0
                        );
                    }
                }
            }
            last = Some(*n);
        }
    }
    let mut items: Vec<(String, String)> = legend
        .iter()
        .map(|(c, name)| {
            (
                format!(
                    r##"<line x1="0" y1="0" x2="22" y2="0" stroke="{}" stroke-width="3"/>"##,
                    PALETTE[c % PALETTE.len()]
                ),
                name.clone(),
            )
        })
        .collect();
    if let Some(what) = dashed_means {
        items.push((
            r##"<line x1="0" y1="0" x2="22" y2="0" stroke="#555" stroke-width="2" stroke-dasharray="5 4"/>"##.into(),
            what.to_string(),
        ));
    }
    let col_w = (w - l) / per_row as f64;
    for (i, (mark, name)) in items.iter().enumerate() {
        let (x, y) = (
            l + (i % per_row) as f64 * col_w,
            plot_bottom + 52.0 + 18.0 * (i / per_row) as f64,
        );
        let max_chars = ((col_w - 34.0) / 6.2) as usize;
        let shown: String = if name.chars().count() > max_chars {
            format!(
                "{}…",
                name.chars()
                    .take(max_chars.saturating_sub(1))
                    .collect::<String>()
            )
        } else {
            name.clone()
        };
        let _ = write!(
            s,
            r##"<g transform="translate({x:.1} {y:.1})">{mark}<text x="28" y="4" class="legend">{}<title>{}</title></text></g>"##,
            esc(&shown),
            esc(name)
        );
    }
    s + "</svg>"
}

/// A slice plot: each configuration's objective against one sampled setting,
/// on a log axis for log-distributed settings.
pub fn slice_chart(param: &str, points: &[(f64, f64)], log: bool, metric: &str) -> String {
    let (w, h, l, r, t, b) = (420.0, 220.0, 60.0, 20.0, 30.0, 40.0);
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| y.is_finite() && x.is_finite() && (!log || *x > 0.0))
        .map(|(x, y)| (if log { x.log10() } else { *x }, *y))
        .collect();
    if pts.is_empty() {
        return String::new();
    }
    let (x0, x1) = extent(pts.iter().map(|p| p.0));
    let (ylo, yhi) = extent(pts.iter().map(|p| p.1));
    let (y0, y1, yt, ys) = ticks(ylo, yhi, 4);
    // a log axis ticks at powers of ten (and their halves when the range is narrow)
    let (x0, x1, xt, xs) = if log {
        let (a, z) = (x0.floor(), x1.ceil().max(x0.floor() + 1.0));
        let t: Vec<f64> = (a as i64..=z as i64).map(|e| e as f64).collect();
        (a, z, t, 1.0)
    } else {
        ticks(x0, x1, 5)
    };
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let mut s = svg_open(w, h, &format!("{metric} against {param}"));
    let _ = write!(
        s,
        r##"<text x="{l}" y="18" class="ct">{} → {}{}</text>"##,
        esc(param),
        esc(metric),
        if log { " (log axis)" } else { "" }
    );
    for v in &yt {
        hgrid(&mut s, l, w - r, sy(*v), &tick_label(*v, ys));
    }
    for v in &xt {
        let label = if log {
            format_num(10f64.powf(*v))
        } else {
            tick_label(*v, xs)
        };
        xtick(&mut s, sx(*v), h - b, &label);
    }
    for (x, y) in &pts {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}" fill-opacity="0.7"><title>{} = {}: {}</title></circle>"##,
            sx(*x),
            sy(*y),
            PALETTE[0],
            esc(param),
            format_num(if log { 10f64.powf(*x) } else { *x }),
            format_num(*y)
        );
    }
    s + "</svg>"
}

/// Parallel coordinates: one vertical axis per sampled setting (its whole
/// range; a log axis for log distributions, evenly spaced choices) and one for
/// the objective; each configuration is a line across them, darker the better.
pub fn parallel_chart(
    space: &crate::search::Space,
    configs: &[(crate::search::Point, f64)],
    metric: &str,
    maximize: bool,
) -> String {
    if configs.is_empty() || space.params.is_empty() {
        return String::new();
    }
    let axes = space.params.len() + 1;
    let (l, r, t, b) = (70.0, 70.0, 52.0, 62.0);
    let w = (140.0 * axes as f64).clamp(420.0, 1000.0);
    let h = 320.0;
    let ax = |i: usize| l + (w - l - r) * i as f64 / (axes - 1) as f64;
    let ay = |u: f64| h - b - u.clamp(0.0, 1.0) * (h - t - b);
    // a value's place on its axis, 0..1
    let place = |d: &crate::search::Distribution, v: &serde_json::Value| -> Option<f64> {
        let x = d.coordinate_of(v)?;
        match d {
            crate::search::Distribution::Choice { values } => Some(if values.len() > 1 {
                x / (values.len() - 1) as f64
            } else {
                0.5
            }),
            numeric => {
                let (lo, hi) = numeric.internal_bounds()?;
                Some((x - lo) / (hi - lo))
            }
        }
    };
    let (y0, y1) = extent(configs.iter().map(|c| c.1));
    let span = if y1 > y0 { y1 - y0 } else { 1.0 };
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>parallel coordinates</title><text x="{l}" y="18" class="ct">configurations across the sampled settings (darker: better {})</text>"#,
        esc(metric)
    );
    // worst first, so that the best are drawn on top
    let mut order: Vec<&(crate::search::Point, f64)> = configs.iter().collect();
    order.sort_by(|a, b| {
        let o = a.1.total_cmp(&b.1);
        if maximize {
            o
        } else {
            o.reverse()
        }
    });
    for (point, v) in order {
        let good = if maximize {
            (v - y0) / span
        } else {
            (y1 - v) / span
        };
        let mut pts = Vec::new();
        for (i, (name, d)) in space.params.iter().enumerate() {
            if let Some(u) = point.get(name).and_then(|x| place(d, x)) {
                pts.push(format!("{:.1},{:.1}", ax(i), ay(u)));
            }
        }
        pts.push(format!("{:.1},{:.1}", ax(axes - 1), ay((v - y0) / span)));
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{}" stroke-opacity="{:.2}" stroke-width="1.5" points="{}"><title>{}: {}</title></polyline>"##,
            PALETTE[0],
            0.15 + 0.8 * good,
            pts.join(" "),
            esc(metric),
            format_num(*v)
        );
    }
    for (i, (name, d)) in space.params.iter().enumerate() {
        // short labels (`4 ops`, `cnn`, `1.00e-4`), the full ones on hover;
        // names alternate between two lines so that neighbours do not collide
        let label = |v: &serde_json::Value| crate::leaderboard::short_value(&v.to_string());
        let (lo, hi) = match d {
            crate::search::Distribution::Choice { values } => (
                values.first().map(label).unwrap_or_default(),
                values.last().map(label).unwrap_or_default(),
            ),
            numeric => {
                let (a, b2) = numeric.internal_bounds().unwrap_or((0.0, 1.0));
                (label(&numeric.value_at(a)), label(&numeric.value_at(b2)))
            }
        };
        let short = name.rsplit('.').next().unwrap_or(name);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}<title>{}</title></text>"##,
            h - b,
            t - 6.0 - 11.0 * (i % 2) as f64,
            esc(&hi),
            h - b + 14.0,
            esc(&lo),
            h - b + 30.0 + 12.0 * (i % 2) as f64,
            esc(short),
            esc(name),
            x = ax(i)
        );
    }
    let x = ax(axes - 1);
    let _ = write!(
        s,
        r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#333"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
        h - b,
        t - 6.0,
        format_num(y1),
        h - b + 14.0,
        format_num(y0),
        h - b + 30.0,
        esc(metric)
    );
    s + "</svg>"
}

/// Points with error bars (mean ± std) for each value of one parameter.
pub fn effect_chart(param: &str, rows: &[(String, stats::Summary)], metric: &str) -> String {
    let (w, h, l, r, t, b) = (420.0, 220.0, 60.0, 20.0, 30.0, 50.0);
    let err = |s: &stats::Summary| if s.std.is_finite() { s.std } else { 0.0 };
    let lo = extent(rows.iter().map(|(_, s)| s.mean - err(s))).0;
    let hi = extent(rows.iter().map(|(_, s)| s.mean + err(s))).1;
    let (y0, y1, yt, ys) = ticks(lo, hi, 4);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let n = rows.len().max(1) as f64;
    let sx = |i: usize| l + (i as f64 + 0.5) / n * (w - l - r);
    let full = format!("{param} → {metric}");
    let mut s = svg_open(w, h, &full);
    let _ = write!(
        s,
        r##"<text x="{l}" y="18" class="ct">{}</text>"##,
        esc(&chart_title(param, metric))
    );
    for v in &yt {
        hgrid(&mut s, l, w - r, sy(*v), &tick_label(*v, ys));
    }
    for (i, (v, st)) in rows.iter().enumerate() {
        let x = sx(i);
        let e = err(st);
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#333" stroke-width="1.5"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/><line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#333"/>"##,
            sy(st.mean - e),
            sy(st.mean + e),
            x - 5.0,
            sy(st.mean - e),
            x + 5.0,
            sy(st.mean - e),
            x - 5.0,
            sy(st.mean + e),
            x + 5.0,
            sy(st.mean + e)
        );
        let short = crate::leaderboard::short_value(v);
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{:.1}" r="5" fill="#1f77b4"><title>{} = {}: {} ± {} (n={})</title></circle><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}<title>{}</title></text>"##,
            sy(st.mean),
            esc(param),
            esc(v),
            format_num(st.mean),
            format_num(st.std),
            st.n,
            h - b + 16.0,
            esc(&short),
            esc(v)
        );
    }
    s + "</svg>"
}

/// A small heat map of the mean objective over two settings: `cells[i][j]` is
/// (mean, trials) for row value i and column value j.
pub fn heat_map(
    title: &str,
    rows: (&str, &[String]),
    cols: (&str, &[String]),
    cells: &[Vec<Option<(f64, usize)>>],
    maximize: bool,
) -> String {
    let (row_name, row_vals) = rows;
    let (col_name, col_vals) = cols;
    let cw = 64.0;
    let ch = 26.0;
    let label_w = 96.0;
    let top = 44.0;
    let w = (label_w + cw * col_vals.len() as f64 + 12.0).max(240.0);
    let h = top + ch * row_vals.len() as f64 + 24.0;
    let vals: Vec<f64> = cells
        .iter()
        .flatten()
        .flatten()
        .map(|c| c.0)
        .filter(|v| v.is_finite())
        .collect();
    let (lo, hi) = extent(vals.iter().copied());
    let mut s = svg_open(w, h, title);
    let _ = write!(
        s,
        r##"<text x="4" y="14" class="ct">{}</text>"##,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="30" class="tick" text-anchor="middle">{} →</text><text x="4" y="{:.1}" class="tick">{} ↓</text>"##,
        label_w + cw * col_vals.len() as f64 / 2.0,
        esc(col_name),
        top - 4.0,
        esc(row_name)
    );
    for (j, v) in col_vals.iter().enumerate() {
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}<title>{}</title></text>"##,
            label_w + cw * (j as f64 + 0.5),
            top + ch * row_vals.len() as f64 + 14.0,
            esc(&crate::leaderboard::short_value(v)),
            esc(v)
        );
    }
    for (i, rv) in row_vals.iter().enumerate() {
        let y = top + ch * i as f64;
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}<title>{}</title></text>"##,
            label_w - 6.0,
            y + ch / 2.0 + 4.0,
            esc(&crate::leaderboard::short_value(rv)),
            esc(rv)
        );
        for (j, c) in cells[i].iter().enumerate() {
            let x = label_w + cw * j as f64;
            let Some((m, n)) = c else {
                let _ = write!(
                    s,
                    r##"<rect x="{x:.1}" y="{y:.1}" width="{cw}" height="{ch}" fill="#fafafa" stroke="#fff"/>"##
                );
                continue;
            };
            // darker is better, whichever the direction
            let f = if hi > lo {
                let u = (m - lo) / (hi - lo);
                if maximize {
                    u
                } else {
                    1.0 - u
                }
            } else {
                0.5
            };
            let fill = blue(0.1 + 0.85 * f);
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cw}" height="{ch}" fill="{}" stroke="#fff"><title>{} = {}, {} = {}: {} over {n} trials</title></rect><text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle" style="fill:{}">{:.3}</text>"##,
                rgb(fill),
                esc(row_name),
                esc(rv),
                esc(col_name),
                esc(&col_vals[j]),
                format_num(*m),
                x + cw / 2.0,
                y + ch / 2.0 + 4.0,
                ink_on(fill),
                m
            );
        }
    }
    s + "</svg>"
}

/// A confusion matrix as a heat map with class names; the shade is the share
/// of the row (the true class), the text the count.
pub fn confusion(classes: &[String], m: &[Vec<i64>]) -> String {
    let k = classes.len().max(1);
    let cell = (520.0 / k as f64).clamp(4.0, 44.0);
    let label_w = if k <= 30 { 110.0 } else { 0.0 };
    let side = cell * k as f64;
    let (w, h) = (label_w + side + 10.0, label_w + side + 10.0);
    let mut s = svg_open(w, h, "confusion matrix");
    for (i, row) in m.iter().enumerate() {
        let total: i64 = row.iter().sum();
        for (j, c) in row.iter().enumerate() {
            let f = if total > 0 {
                *c as f64 / total as f64
            } else {
                0.0
            };
            let fill = blue(f);
            let (x, y) = (label_w + j as f64 * cell, label_w + i as f64 * cell);
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{}" stroke="#ccc"><title>true {} → predicted {}: {c} ({:.0}% of the row)</title></rect>"##,
                rgb(fill),
                esc(&classes[i]),
                esc(&classes[j]),
                100.0 * f
            );
            if k <= 15 && *c > 0 {
                let _ = write!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle" style="fill:{}">{c}</text>"##,
                    x + cell / 2.0,
                    y + cell / 2.0 + 4.0,
                    ink_on(fill)
                );
            }
        }
        if label_w > 0.0 {
            let _ = write!(
                s,
                r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
                label_w - 4.0,
                label_w + i as f64 * cell + cell / 2.0 + 4.0,
                esc(&classes[i])
            );
            let (x, y) = (label_w + i as f64 * cell + cell / 2.0 + 4.0, label_w - 4.0);
            let _ = write!(
                s,
                r##"<text x="{x:.1}" y="{y:.1}" class="tick" transform="rotate(-60 {x:.1} {y:.1})">{}</text>"##,
                esc(&classes[i])
            );
        }
    }
    s + "</svg>"
}

/// One row of the stopping chart: a configuration's label and, per trial,
/// (epoch it stopped at, epoch of its best value, how it ended).
pub struct StopRow {
    pub label: String,
    pub title: String,
    pub trials: Vec<(Option<i64>, Option<i64>, StopKind)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// Early stopping or the epoch limit.
    Finished,
    /// Stopped by the pruner.
    Pruned,
    Diverged,
}

/// Where each configuration's trials stopped (filled dot; a cross when the
/// pruner stopped it, red for a divergence) and where their best epoch was
/// (ring), on one epoch axis: a row per configuration.
pub fn stop_chart(rows: &[StopRow], max_epoch: i64) -> String {
    if rows.is_empty() {
        return String::new();
    }
    let (w, l, r, t, row_h) = (760.0, 150.0, 20.0, 24.0, 16.0);
    let bottom = t + row_h * rows.len() as f64;
    let h = bottom + 30.0;
    let (x0, x1, xt, xs) = ticks(0.0, max_epoch.max(1) as f64, 10);
    let sx = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let mut s = svg_open(w, h, "where training stopped");
    for v in &xt {
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{bottom:.1}" class="grid"/>"##,
            x = sx(*v)
        );
        xtick(&mut s, sx(*v), bottom, &tick_label(*v, xs));
    }
    let _ = write!(
        s,
        r##"<text x="{l}" y="14" class="tick">● stopped  ○ best epoch  ✕ pruned  <tspan fill="#d62728">● diverged</tspan></text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">epoch</text>"##,
        w - r,
        bottom + 28.0
    );
    for (i, row) in rows.iter().enumerate() {
        let y = t + row_h * (i as f64 + 0.5);
        if i % 2 == 0 {
            let _ = write!(
                s,
                r##"<rect x="{l}" y="{:.1}" width="{:.1}" height="{row_h}" fill="#f6f6f6"/>"##,
                y - row_h / 2.0,
                w - l - r
            );
        }
        let _ = write!(
            s,
            r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}<title>{}</title></text>"##,
            l - 6.0,
            y + 4.0,
            esc(&row.label),
            esc(&row.title)
        );
        for (stop, best, kind) in &row.trials {
            if let Some(b) = best {
                let _ = write!(
                    s,
                    r##"<circle cx="{:.1}" cy="{y:.1}" r="4.5" fill="none" stroke="#555"><title>best epoch {b}</title></circle>"##,
                    sx(*b as f64)
                );
            }
            if let Some(e) = stop {
                let x = sx(*e as f64);
                match kind {
                    StopKind::Pruned => {
                        let _ = write!(
                            s,
                            r##"<path d="M{:.1},{:.1}l6,6m0,-6l-6,6" stroke="#ff7f0e" stroke-width="2"><title>pruned after epoch {e}</title></path>"##,
                            x - 3.0,
                            y - 3.0
                        );
                    }
                    StopKind::Diverged | StopKind::Finished => {
                        let (fill, what) = if *kind == StopKind::Diverged {
                            ("#d62728", "diverged at")
                        } else {
                            ("#1f77b4", "stopped after")
                        };
                        let _ = write!(
                            s,
                            r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{fill}" fill-opacity="0.8"><title>{what} epoch {e}</title></circle>"##
                        );
                    }
                }
            }
        }
    }
    s + "</svg>"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_chart_titles_shorten_to_what_fits() {
        assert_eq!(
            chart_title("model.dropout", "val.macro_f1"),
            "model.dropout → val.macro_f1"
        );
        assert_eq!(
            chart_title("train.weight_decay", "stability.batch_loss_step_std"),
            "weight_decay → stability.batch_loss_step_std"
        );
        assert_eq!(
            chart_title(
                "data.augmentation.shift_limit_long_name",
                "stability.batch_loss_step_std"
            ),
            "shift_limit_long_name → batch_loss_step_std"
        );
    }

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        let (a, b, t, step) = ticks(0.6782, 0.8258, 5);
        assert_eq!(step, 0.05);
        assert!(a <= 0.6782 && b >= 0.8258, "{a} {b}");
        let labels: Vec<String> = t.iter().map(|v| tick_label(*v, step)).collect();
        assert_eq!(labels, ["0.65", "0.70", "0.75", "0.80", "0.85"]);
        let (_, _, t, step) = ticks(0.6782, 0.8258, 10);
        assert_eq!(step, 0.02);
        assert_eq!(tick_label(t[0], step), "0.66");
        let (_, _, t, step) = ticks(1.0, 30.0, 8);
        assert_eq!(step, 5.0);
        assert_eq!(t, [0.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0]);
        // a flat series still gets an axis
        let (a, b, t, _) = ticks(0.5, 0.5, 4);
        assert!(a < 0.5 && b > 0.5 && t.len() >= 2);
        let (_, _, t, step) = ticks(0.0, 0.0, 4);
        assert!(t.len() >= 2 && step > 0.0);
        assert_eq!(tick_label(-0.0000000001, 0.1), "0.0");
    }

    #[test]
    fn cell_text_reads_on_its_shade() {
        assert_eq!(ink_on(blue(1.0)), "#fff");
        assert_eq!(ink_on(blue(0.9)), "#fff");
        assert_eq!(ink_on(blue(0.0)), "#111");
        assert_eq!(ink_on(blue(0.2)), "#111");
    }
}
