//! The sweep report: one self-contained HTML file (inline SVG charts, no scripts,
//! no external files, no fonts needed) with the leaderboard, the main effect of
//! each swept parameter, learning curves, the best trial's confusion matrix, the
//! trials that diverged or stopped early, and the sweep's provenance.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::error::Result;
use crate::query::{self, format_num, TrialRow};
use crate::stats;
use crate::store::Store;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A named line: points, and whether it is dashed.
type Series = (String, Vec<(f64, f64)>, bool);
/// Per configuration, per epoch: training and validation losses over seeds.
type Curves = BTreeMap<String, BTreeMap<i64, (Vec<f64>, Vec<f64>)>>;

const PALETTE: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
];

/// A horizontal grid line from `left` to `right` at `y`, labelled `value` at its left end.
fn grid_line(s: &mut String, left: f64, right: f64, y: f64, value: f64) {
    let _ = write!(
        s,
        r##"<line x1="{left}" y1="{y:.1}" x2="{right:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
        left - 6.0,
        y + 4.0,
        format_num(value)
    );
}

/// A line chart: series of (x, y) points, with axes and a legend.
fn line_chart(title: &str, series: &[Series], x_label: &str, y_label: &str) -> String {
    // the legend goes below the plot, one row per series
    let (w, l, r, t, b) = (760.0, 60.0, 20.0, 30.0, 40.0);
    let plot_h = 280.0;
    let h = plot_h + 8.0 + 16.0 * series.len() as f64;
    let pts: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .filter(|p| p.1.is_finite())
        .collect();
    if pts.is_empty() {
        return String::new();
    }
    let (x0, x1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.0), a.1.max(p.0))
    });
    let (mut y0, mut y1) = pts.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |a, p| {
        (a.0.min(p.1), a.1.max(p.1))
    });
    if y1 - y0 < 1e-9 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let pad = (y1 - y0) * 0.05;
    let (y0, y1) = (y0 - pad, y1 + pad);
    let sx = |x: f64| {
        l + if x1 > x0 {
            (x - x0) / (x1 - x0) * (w - l - r)
        } else {
            (w - l - r) / 2.0
        }
    };
    let sy = |y: f64| plot_h - b - (y - y0) / (y1 - y0) * (plot_h - t - b);
    let xt = |x: f64| {
        if x.fract() == 0.0 {
            format!("{x}")
        } else {
            format_num(x)
        }
    };
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(title)
    );
    let _ = write!(
        s,
        r##"<text x="{l}" y="18" class="ct">{}</text>"##,
        esc(title)
    );
    for i in 0..=4 {
        let v = y0 + (y1 - y0) * i as f64 / 4.0;
        grid_line(&mut s, l, w - r, sy(v), v);
    }
    let _ = write!(
        s,
        r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{l}" y="{:.1}" class="tick">{}</text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
        (l + w - r) / 2.0,
        plot_h - 8.0,
        esc(x_label),
        plot_h - b + 16.0,
        xt(x0),
        w - r,
        plot_h - b + 16.0,
        xt(x1)
    );
    let _ = write!(
        s,
        r##"<text x="14" y="{:.1}" class="tick" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"##,
        (t + plot_h - b) / 2.0,
        (t + plot_h - b) / 2.0,
        esc(y_label)
    );
    for (i, (name, points, dashed)) in series.iter().enumerate() {
        let color = PALETTE[i / 2 % PALETTE.len()];
        let d: Vec<String> = points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|(x, y)| format!("{:.1},{:.1}", sx(*x), sy(*y)))
            .collect();
        let dash = if *dashed {
            r#" stroke-dasharray="5 4""#
        } else {
            ""
        };
        let _ = write!(
            s,
            r##"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"##,
            d.join(" "),
            esc(name)
        );
        let ly = plot_h + 8.0 + 16.0 * i as f64;
        let _ = write!(
            s,
            r##"<line x1="{l}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{color}" stroke-width="2"{dash}/><text x="{:.1}" y="{:.1}" class="legend">{}</text>"##,
            l + 24.0,
            l + 30.0,
            ly + 4.0,
            esc(name)
        );
    }
    s + "</svg>"
}

/// A slice plot: each configuration's objective against one sampled setting,
/// on a log axis for log-distributed settings.
fn slice_chart(param: &str, points: &[(f64, f64)], log: bool, metric: &str) -> String {
    let (w, h, l, r, t, b) = (420.0, 220.0, 60.0, 20.0, 30.0, 40.0);
    let pts: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| y.is_finite() && x.is_finite() && (!log || *x > 0.0))
        .map(|(x, y)| (if log { x.log10() } else { *x }, *y))
        .collect();
    if pts.is_empty() {
        return String::new();
    }
    let fold = |f: fn(&(f64, f64)) -> f64| {
        pts.iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |a, v| {
                (a.0.min(v), a.1.max(v))
            })
    };
    let (x0, x1) = fold(|p| p.0);
    let (mut y0, mut y1) = fold(|p| p.1);
    if y1 - y0 < 1e-9 {
        y0 -= 0.5;
        y1 += 0.5;
    }
    let sx = |x: f64| l + if x1 > x0 { (x - x0) / (x1 - x0) } else { 0.5 } * (w - l - r);
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let shown = |x: f64| format_num(if log { 10f64.powf(x) } else { x });
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{} against {}</title><text x="{l}" y="18" class="ct">{} → {}{}</text>"#,
        esc(metric),
        esc(param),
        esc(param),
        esc(metric),
        if log { " (log axis)" } else { "" }
    );
    for v in [y0, y1] {
        grid_line(&mut s, l, w - r, sy(v), v);
    }
    let _ = write!(
        s,
        r##"<text x="{l}" y="{:.1}" class="tick">{}</text><text x="{:.1}" y="{:.1}" class="tick" text-anchor="end">{}</text>"##,
        h - b + 16.0,
        shown(x0),
        w - r,
        h - b + 16.0,
        shown(x1)
    );
    for (x, y) in &pts {
        let _ = write!(
            s,
            r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}" fill-opacity="0.7"><title>{} = {}: {}</title></circle>"##,
            sx(*x),
            sy(*y),
            PALETTE[0],
            esc(param),
            shown(*x),
            format_num(*y)
        );
    }
    s + "</svg>"
}

/// Parallel coordinates: one vertical axis per sampled setting (its whole
/// range; a log axis for log distributions, evenly spaced choices) and one for
/// the objective; each configuration is a line across them, darker the better.
fn parallel_chart(
    space: &crate::search::Space,
    configs: &[(crate::search::Point, f64)],
    metric: &str,
    maximize: bool,
) -> String {
    if configs.is_empty() || space.params.is_empty() {
        return String::new();
    }
    let axes = space.params.len() + 1;
    let (l, r, t, b) = (70.0, 70.0, 40.0, 50.0);
    let w = (140.0 * axes as f64).clamp(420.0, 1000.0);
    let h = 300.0;
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
    let (y0, y1) = configs
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |a, c| {
            (a.0.min(c.1), a.1.max(c.1))
        });
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
        let (lo, hi) = match d {
            crate::search::Distribution::Choice { values } => (
                values.first().map(|v| v.to_string()).unwrap_or_default(),
                values.last().map(|v| v.to_string()).unwrap_or_default(),
            ),
            numeric => {
                let (a, b2) = numeric.internal_bounds().unwrap_or((0.0, 1.0));
                (
                    numeric.value_at(a).to_string(),
                    numeric.value_at(b2).to_string(),
                )
            }
        };
        let _ = write!(
            s,
            r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{:.1}" stroke="#999"/><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
            h - b,
            t - 6.0,
            esc(&hi),
            h - b + 14.0,
            esc(&lo),
            h - b + 30.0,
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
fn effect_chart(param: &str, rows: &[(String, stats::Summary)], metric: &str) -> String {
    let (w, h, l, r, t, b) = (420.0, 220.0, 60.0, 20.0, 30.0, 50.0);
    let lo = rows
        .iter()
        .map(|(_, s)| s.mean - if s.std.is_finite() { s.std } else { 0.0 })
        .fold(f64::INFINITY, f64::min);
    let hi = rows
        .iter()
        .map(|(_, s)| s.mean + if s.std.is_finite() { s.std } else { 0.0 })
        .fold(f64::NEG_INFINITY, f64::max);
    let (y0, y1) = if hi - lo < 1e-9 {
        (lo - 0.5, hi + 0.5)
    } else {
        (lo - (hi - lo) * 0.1, hi + (hi - lo) * 0.1)
    };
    let sy = |y: f64| h - b - (y - y0) / (y1 - y0) * (h - t - b);
    let n = rows.len().max(1) as f64;
    let sx = |i: usize| l + (i as f64 + 0.5) / n * (w - l - r);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>{}</title>"#,
        esc(param)
    );
    let _ = write!(
        s,
        r##"<text x="{l}" y="18" class="ct">{} → {}</text>"##,
        esc(param),
        esc(metric)
    );
    for i in 0..=3 {
        let v = y0 + (y1 - y0) * i as f64 / 3.0;
        grid_line(&mut s, l, w - r, sy(v), v);
    }
    for (i, (v, st)) in rows.iter().enumerate() {
        let x = sx(i);
        let e = if st.std.is_finite() { st.std } else { 0.0 };
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
        let _ = write!(
            s,
            r##"<circle cx="{x:.1}" cy="{:.1}" r="5" fill="#1f77b4"><title>{} = {}: {} ± {} (n={})</title></circle><text x="{x:.1}" y="{:.1}" class="tick" text-anchor="middle">{}</text>"##,
            sy(st.mean),
            esc(param),
            esc(v),
            format_num(st.mean),
            format_num(st.std),
            st.n,
            h - b + 16.0,
            esc(v)
        );
    }
    s + "</svg>"
}

/// A confusion matrix as an SVG heat map with class names (row-normalized shade).
fn confusion_svg(classes: &[String], m: &[Vec<i64>]) -> String {
    let k = classes.len().max(1);
    let cell = (520.0 / k as f64).clamp(4.0, 44.0);
    let label_w = if k <= 30 { 110.0 } else { 0.0 };
    let side = cell * k as f64;
    let (w, h) = (label_w + side + 10.0, label_w + side + 10.0);
    let mut s = format!(
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img"><title>confusion matrix</title>"#
    );
    for (i, row) in m.iter().enumerate() {
        let total: i64 = row.iter().sum();
        for (j, c) in row.iter().enumerate() {
            let f = if total > 0 {
                *c as f64 / total as f64
            } else {
                0.0
            };
            let color = format!(
                "rgb({},{},{})",
                (255.0 - 247.0 * f) as u8,
                (255.0 - 207.0 * f) as u8,
                (255.0 - 148.0 * f) as u8
            );
            let (x, y) = (label_w + j as f64 * cell, label_w + i as f64 * cell);
            let _ = write!(
                s,
                r##"<rect x="{x:.1}" y="{y:.1}" width="{cell:.1}" height="{cell:.1}" fill="{color}" stroke="#ccc"><title>true {} → predicted {}: {c}</title></rect>"##,
                esc(&classes[i]),
                esc(&classes[j])
            );
            if k <= 15 && *c > 0 {
                let fg = if f > 0.5 { "#fff" } else { "#222" };
                let _ = write!(
                    s,
                    r##"<text x="{:.1}" y="{:.1}" class="tick" text-anchor="middle" fill="{fg}">{c}</text>"##,
                    x + cell / 2.0,
                    y + cell / 2.0 + 4.0
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

fn config_key(t: &TrialRow) -> String {
    t.params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the report of sweep `name` from the (read-only) store.
/// A search's optimization history (each configuration's mean objective over
/// its finished seeds in proposal order, and the best so far) and where the
/// pruner stopped trials. Empty for a grid without pruning.
async fn search_section(
    store: &Store,
    info: &query::SweepInfo,
    metric: &str,
    maximize: bool,
) -> Result<String> {
    let Some(ss) = query::search_status(store, info).await? else {
        return Ok(String::new());
    };
    let mut h = String::new();
    if ss.method != "grid" {
        let rows = store.proposal_history(info.id, metric).await?;
        let mut each = Vec::new();
        let mut best_line = Vec::new();
        let mut best: Option<f64> = None;
        for r in &rows {
            let Some((mean, _)) = r.mean_complete() else {
                continue;
            };
            each.push((r.number as f64, mean));
            if !r.any_pruned() {
                best = Some(match best {
                    Some(b) if (maximize && b >= mean) || (!maximize && b <= mean) => b,
                    _ => mean,
                });
            }
            if let Some(b) = best {
                best_line.push((r.number as f64, b));
            }
        }
        let _ = write!(h, "<h2>Search</h2><p class=muted>{} search: {} of {} configurations proposed. Each configuration's {} is the mean over its finished seeds; the best so far counts configurations none of whose seeds was pruned.</p>",
            esc(&ss.method), ss.proposed, ss.budget.map(|b| b.to_string()).unwrap_or_else(|| "?".into()), esc(metric));
        h += &line_chart(
            "optimization history",
            &[
                (format!("{metric} per configuration"), each, false),
                ("best so far".into(), best_line, true),
            ],
            "configuration (in the order proposed)",
            metric,
        );
        // slice plots: the objective against each numeric sampled setting
        let space = store.spec_space(info.id).await.unwrap_or_default();
        let mut slices = String::new();
        for (param, d) in space
            .params
            .iter()
            .filter(|(_, d)| d.internal_bounds().is_some())
        {
            let points: Vec<(f64, f64)> = rows
                .iter()
                .filter_map(|r| {
                    let point: crate::search::Point = serde_json::from_str(&r.params_json).ok()?;
                    Some((point.get(param)?.as_f64()?, r.mean_complete()?.0))
                })
                .collect();
            slices += &slice_chart(param, &points, d.is_log(), metric);
        }
        if !slices.is_empty() {
            h += "<h3>The objective against each sampled setting</h3><p class=muted>One point per configuration (mean over its finished seeds).</p>";
            h += &slices;
        }
        let configs: Vec<(crate::search::Point, f64)> = rows
            .iter()
            .filter_map(|r| {
                Some((
                    serde_json::from_str(&r.params_json).ok()?,
                    r.mean_complete()?.0,
                ))
            })
            .collect();
        h += &parallel_chart(&space, &configs, metric, maximize);
    }
    if !ss.pruned_at.is_empty() {
        h += "<h3>Where the pruner stopped trials</h3><table><tr><th>after epoch</th><th>trials stopped</th></tr>";
        for (e, n) in &ss.pruned_at {
            let at = match e {
                0 => "before starting (its configuration was pruned on another seed)".to_string(),
                e => e.to_string(),
            };
            let _ = write!(h, "<tr><td class=n>{at}</td><td class=n>{n}</td></tr>");
        }
        h += "</table>";
    }
    Ok(h)
}

pub async fn html(store: &Store, name: &str) -> Result<String> {
    let info = query::sweep(store, name).await?;
    let trials = query::trials_with(store, info.id, Some(&info.objective)).await?;
    let classes = query::class_names(store, info.id).await?;
    let (spec_text, tool, fp, commit, host, dataset): (String, String, String, Option<String>, String, String) =
        sqlx::query_as("SELECT spec_text, tool_version, dataset_fingerprint, git_commit, host, dataset FROM sweeps WHERE id = $1")
            .bind(info.id)
            .fetch_one(store.pool())
            .await
            .map_err(|e| crate::Error::Store(format!("reading the sweep: {e}")))?;
    let metric = info.objective.clone();
    let maximize = info.direction != "minimize";
    let mut board = query::compare(
        &trials,
        &trials
            .first()
            .map(|t| t.params.keys().cloned().collect::<Vec<_>>())
            .unwrap_or_default(),
        &[],
        &metric,
        &[],
    )?;
    board.sort_by(|a, b| {
        let o = a.summary.mean.total_cmp(&b.summary.mean);
        if maximize {
            o.reverse()
        } else {
            o
        }
    });

    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sweep report: {}</title><style>
body{{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}}
h1{{margin-bottom:.2rem}} h2{{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}}
table{{border-collapse:collapse;font-size:.9rem}} td,th{{padding:.25rem .6rem;border-bottom:1px solid #eee;text-align:left}}
td.n{{text-align:right;font-variant-numeric:tabular-nums}} .muted{{color:#777}}
.chart{{max-width:100%;height:auto;margin:.3rem 1rem .3rem 0;vertical-align:top}} .ct{{font-size:13px;font-weight:600}}
.tick{{font-size:11px;fill:#444}} .legend{{font-size:11px}} .grid{{stroke:#eee}}
pre{{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.8rem}}
</style></head><body>"#,
        esc(name)
    );
    let c = &info.counts;
    let diverged = trials
        .iter()
        .filter(|t| t.state == "pruned" && t.stop_reason.as_deref() != Some("pruned"))
        .count();
    let _ = write!(h, "<h1>Sweep <code>{}</code></h1><p class=\"muted\">{} trials: {} complete, {} pruned by the pruner, {} diverged, {} failed, {} running, {} waiting · objective <b>{}</b> ({})</p>",
        esc(name), c.total(), c.complete, c.pruned as usize - diverged, diverged, c.failed, c.running, c.waiting, esc(&metric), esc(&info.direction));
    let note = query::excluded(&trials, &metric);
    // leaderboard
    h += "<h2>Leaderboard</h2><table><tr><th>rank</th><th>configuration</th><th>mean</th><th>± std</th><th>seeds</th></tr>";
    for (i, cell) in board.iter().enumerate() {
        let _ = write!(h, "<tr><td class=n>{}</td><td>{}</td><td class=n><b>{}</b></td><td class=n>{}</td><td class=n>{}</td></tr>", i + 1, esc(&cell.row), format_num(cell.summary.mean), format_num(cell.summary.std), cell.summary.n);
    }
    h += "</table>";
    if !note.is_empty() {
        let _ = write!(h, "<p class=muted>{}</p>", esc(&note));
    }
    h += &search_section(store, &info, &metric, maximize).await?;
    // main effects
    h += "<h2>Main effects</h2><p class=muted>Mean of the objective for each value of a swept parameter, over every other setting and seed; bars are ± one standard deviation.</p>";
    let mut by_param: BTreeMap<String, Vec<(String, stats::Summary)>> = BTreeMap::new();
    let keys: Vec<String> = trials
        .first()
        .map(|t| t.params.keys().cloned().collect())
        .unwrap_or_default();
    for (p, v, s) in query::effects(&query::bin_continuous(&trials, &keys, 4), &metric) {
        by_param.entry(p).or_default().push((v, s));
    }
    for (p, rows) in &by_param {
        h += &effect_chart(p, rows, &metric);
    }
    // learning curves
    h += "<h2>Learning curves</h2><p class=muted>Training (dashed) and validation (solid) loss per epoch, mean over seeds, for the best configurations and the baseline (every swept parameter at its first value).</p>";
    let mut curves: Curves = BTreeMap::new();
    let ids_by_config: BTreeMap<String, Vec<i64>> = trials
        .iter()
        .filter(|t| t.state == "complete")
        .fold(BTreeMap::new(), |mut m, t| {
            m.entry(config_key(t)).or_default().push(t.id);
            m
        });
    let baseline = trials.first().map(config_key).unwrap_or_default();
    let mut shown: Vec<String> = board.iter().take(3).map(|c| c.row.clone()).collect();
    if !shown.contains(&baseline) && ids_by_config.contains_key(&baseline) {
        shown.push(baseline.clone());
    }
    for cfg in &shown {
        for id in ids_by_config.get(cfg).into_iter().flatten() {
            for (e, m) in query::curve(store, *id).await? {
                let entry = curves.entry(cfg.clone()).or_default().entry(e).or_default();
                if let Some(v) = m.get("train.loss") {
                    entry.0.push(*v);
                }
                if let Some(v) = m.get("val.loss") {
                    entry.1.push(*v);
                }
            }
        }
    }
    let mut series = Vec::new();
    for (i, cfg) in shown.iter().enumerate() {
        let Some(ep) = curves.get(cfg) else { continue };
        let label = if *cfg == baseline {
            format!("baseline: {cfg}")
        } else {
            format!("#{}: {cfg}", i + 1)
        };
        let mean = |v: &Vec<f64>| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        series.push((
            format!("{label} (val)"),
            ep.iter().map(|(e, (_, v))| (*e as f64, mean(v))).collect(),
            false,
        ));
        series.push((
            format!("{label} (train)"),
            ep.iter().map(|(e, (t, _))| (*e as f64, mean(t))).collect(),
            true,
        ));
    }
    h += &line_chart("loss per epoch", &series, "epoch", "loss");
    // confusion matrix of the best trial
    let best = trials
        .iter()
        .filter(|t| t.state == "complete")
        .filter_map(|t| t.metrics.get(&metric).map(|v| (t, *v)))
        .filter(|(_, v)| v.is_finite())
        .max_by(|a, b| {
            if maximize {
                a.1.total_cmp(&b.1)
            } else {
                b.1.total_cmp(&a.1)
            }
        });
    if let Some((t, v)) = best {
        let m = query::confusion_matrix(store, t.id, classes.len()).await?;
        let _ = write!(h, "<h2>Confusion matrix of the best trial</h2><p class=muted>Trial {} (seed {}, {} = {}): {} · rows are true classes, columns predicted; shade is the share of the row.</p>", t.number, t.seed, esc(&metric), format_num(v), esc(&config_key(t)));
        h += &confusion_svg(&classes, &m);
    }
    // diverged and early stopped
    h += "<h2>Diverged and early-stopped trials</h2>";
    let special: Vec<&TrialRow> = trials
        .iter()
        .filter(|t| {
            t.state == "pruned"
                || t.state == "failed"
                || t.stop_reason.as_deref() == Some("early_stopping")
        })
        .collect();
    if special.is_empty() {
        h += "<p class=muted>None: every finished trial ran to its epoch limit.</p>";
    } else {
        h += "<table><tr><th>trial</th><th>seed</th><th>configuration</th><th>state</th><th>why</th><th>epoch</th></tr>";
        for t in special {
            let why = t
                .error
                .clone()
                .unwrap_or_else(|| t.stop_reason.clone().unwrap_or_default());
            let _ = write!(h, "<tr><td class=n>{}</td><td class=n>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=n>{}</td></tr>", t.number, t.seed, esc(&config_key(t)), esc(&t.state), esc(&why), t.stop_epoch.map(|e| e.to_string()).unwrap_or_default());
        }
        h += "</table>";
    }
    // provenance
    let _ = write!(h, "<h2>Provenance</h2><table><tr><th>tool version</th><td>{}</td></tr><tr><th>data set</th><td>{}</td></tr><tr><th>data fingerprint</th><td><code>{}</code></td></tr><tr><th>git commit</th><td><code>{}</code></td></tr><tr><th>host</th><td>{}</td></tr><tr><th>classes</th><td>{}</td></tr></table><h3>Spec</h3><pre>{}</pre>",
        esc(&tool), esc(&dataset), esc(&fp), esc(commit.as_deref().unwrap_or("(not in a git checkout)")), esc(&host), esc(&classes.join(", ")), esc(&spec_text));
    h += "</body></html>\n";
    Ok(h)
}
