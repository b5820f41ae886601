//! The sweep report: one self-contained HTML file (inline SVG charts, no
//! scripts, no external files, no fonts needed) that answers the study's
//! questions in order: which configuration won and which ones are within seed
//! noise of it (the leaderboard), what each setting does on its own and with
//! another (main effects, interactions), how training went (learning curves
//! over seeds, where training stopped, the trials that diverged), what the
//! winner still gets wrong (its confusion matrix over all its seeds, per-class
//! recall and F1), and where the numbers come from (provenance). Long lists
//! show their top rows and keep the rest behind a `<details>` element.

mod charts;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use charts::{esc, line_chart, parallel_chart, slice_chart, Line, StopKind, StopRow};

use crate::error::Result;
use crate::leaderboard::{self, Leaderboard};
use crate::query::{self, format_num, TrialRow};
use crate::stats;
use crate::store::Store;

/// What the report shows.
#[derive(Clone, Debug)]
pub struct Options {
    /// Leaderboard rows (and stopping-chart rows) shown before the rest is
    /// folded away.
    pub top: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options { top: 20 }
    }
}

/// Pairs of settings whose interaction heat maps are shown before the rest is
/// folded away.
const PAIRS_SHOWN: usize = 6;
/// Configurations whose learning curves and per-class numbers are shown.
const CURVES_OF: usize = 3;

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.3rem}
table{border-collapse:collapse;font-size:.88rem} td,th{padding:.22rem .55rem;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
th{font-weight:600;background:#fafafa} td.n{text-align:right;font-variant-numeric:tabular-nums} .muted{color:#777}
tr.worse td{color:#888} tr.best td{background:#eef5fb} td.wrap{white-space:normal;min-width:8em}
.chart{max-width:100%;height:auto;margin:.3rem 1rem .3rem 0;vertical-align:top} .ct{font-size:13px;font-weight:600}
.tick{font-size:11px;fill:#444} .legend{font-size:11px} .note{font-size:10px;font-weight:600} .grid{stroke:#eee}
details{margin:.6rem 0} summary{cursor:pointer;color:#1f5f99}
.scroll{overflow-x:auto;max-width:100%}
pre{background:#f7f7f7;padding:.8rem;overflow:auto;font-size:.8rem}
"#;

/// Builds the report of sweep `name` from the (read-only) store, with the
/// default options.
pub async fn html(store: &Store, name: &str) -> Result<String> {
    html_with(store, name, &Options::default()).await
}

/// Builds the report of sweep `name` from the (read-only) store.
pub async fn html_with(store: &Store, name: &str, opts: &Options) -> Result<String> {
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
    let board = leaderboard::leaderboard(&trials, &metric, maximize);
    let top = opts.top.max(1);

    let mut h = format!(
        r#"<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sweep report: {}</title><style>{STYLE}</style></head><body>"#,
        esc(name)
    );
    let c = &info.counts;
    let diverged = trials.iter().filter(|t| is_diverged(t)).count();
    let _ = write!(h, "<h1>Sweep <code>{}</code></h1><p class=\"muted\">{} trials: {} complete, {} pruned by the pruner, {} diverged, {} failed, {} running, {} waiting · objective <b>{}</b> ({})</p>",
        esc(name), c.total(), c.complete, c.pruned as usize - diverged, diverged, c.failed, c.running, c.waiting, esc(&metric), esc(&info.direction));

    h += &reproducibility_line(&trials);
    h += &leaderboard_section(&board, &trials, top);
    h += &search_section(store, &info, &metric, maximize).await?;
    h += &effects_section(&trials, &board, &metric);
    h += &interactions_section(&trials, &board, &metric, maximize);
    h += &curves_section(store, &trials, &board).await?;
    h += &diagnostics_section(store, info.id, &trials, &board).await?;
    h += &winner_section(store, &board, &classes, &metric).await?;
    h += &stopping_section(&trials, &board, top);

    let _ = write!(h, "<h2>Provenance</h2><table><tr><th>tool version</th><td>{}</td></tr><tr><th>data set</th><td>{}</td></tr><tr><th>data fingerprint</th><td><code>{}</code></td></tr><tr><th>git commit</th><td><code>{}</code></td></tr><tr><th>host</th><td>{}</td></tr><tr><th>classes</th><td>{}</td></tr></table><h3>Spec</h3><pre>{}</pre>",
        esc(&tool), esc(&dataset), esc(&fp), esc(commit.as_deref().unwrap_or("(not in a git checkout)")), esc(&host), esc(&classes.join(", ")), esc(&spec_text));
    h += "</body></html>\n";
    Ok(h)
}

/// What the finished trials' numbers guarantee on a rerun, counted by
/// guarantee (a sweep can hold trials recorded by several Sweeps or devices).
fn reproducibility_line(trials: &[TrialRow]) -> String {
    let mut by: BTreeMap<String, usize> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.finished_at.is_some()) {
        *by.entry(query::reproducibility(
            t.metrics_version,
            t.device.as_deref(),
        ))
        .or_default() += 1;
    }
    if by.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = by
        .iter()
        .map(|(what, n)| format!("{n} trial(s): {}", esc(what)))
        .collect();
    format!("<p class=\"muted\">Numbers: {}</p>", parts.join("; "))
}

/// The study's questions as charts: per swept setting, how fast trials
/// converged, how far validation fell behind training, how rough training
/// was; and the initialization health per `model.init` (or over all trials).
async fn diagnostics_section(
    store: &Store,
    sweep_id: i64,
    trials: &[TrialRow],
    board: &Leaderboard,
) -> Result<String> {
    let diag = query::metrics_with_prefixes(
        store,
        sweep_id,
        &["speed.", "overfit.", "stability.", "init.", "epoch1."],
    )
    .await?;
    let mut h = String::from("<h2>Training diagnostics</h2>");
    if diag.is_empty() {
        let complete = trials.iter().filter(|t| t.state == "complete").count();
        if complete > 0 {
            h += "<p class=muted>No complete trial of this sweep has training diagnostics: they were recorded by an older Sweep.</p>";
            return Ok(h);
        }
        return Ok(String::new());
    }
    h += "<p class=muted>Definitions: docs/results.md, \"Training diagnostics\". Each chart: the mean over every complete trial with that value (other settings and seeds pooled), bars ± one standard deviation; lower is better in all three.</p>";
    let with: Vec<TrialRow> = trials
        .iter()
        .filter_map(|t| {
            let m = diag.get(&t.id)?;
            let mut t = t.clone();
            t.metrics.extend(m.iter().map(|(k, v)| (k.clone(), *v)));
            Some(t)
        })
        .collect();
    let binned = query::bin_continuous(&with, &board.params, 4);
    for (metric, question) in [
        (
            "speed.epochs_to_95",
            "How fast? Epochs until the objective reached 95% of the trial's best",
        ),
        (
            "overfit.loss_gap_last",
            "How much overfitting? Validation − training loss at the last epoch",
        ),
        (
            "stability.batch_loss_step_std",
            "How smooth? Standard deviation of batch-to-batch loss changes",
        ),
    ] {
        let mut by_param: BTreeMap<String, Vec<(String, stats::Summary)>> = BTreeMap::new();
        for (p, v, s) in query::effects(&binned, metric) {
            if board.params.contains(&p) {
                by_param.entry(p).or_default().push((v, s));
            }
        }
        if by_param.is_empty() {
            continue;
        }
        let _ = write!(h, "<h3>{}</h3><div>", esc(question));
        for (p, rows) in &by_param {
            h += &charts::effect_chart(p, rows, metric);
        }
        h += "</div>";
    }
    h += &health_table(&with);
    Ok(h)
}

/// Initialization health per `model.init` when it is swept (else over all
/// trials): per layer, the means over trials before the first update and after
/// the first epoch.
fn health_table(trials: &[TrialRow]) -> String {
    let group_of = |t: &TrialRow| {
        t.params
            .get("model.init")
            .cloned()
            .unwrap_or_else(|| "all trials".into())
    };
    let mut groups: BTreeMap<String, Vec<&TrialRow>> = BTreeMap::new();
    for t in trials {
        groups.entry(group_of(t)).or_default().push(t);
    }
    let mean = |ts: &[&TrialRow], name: &str| -> Option<f64> {
        let v: Vec<f64> = ts
            .iter()
            .filter_map(|t| t.metrics.get(name).copied())
            .filter(|v| v.is_finite())
            .collect();
        (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
    };
    let text = |v: Option<f64>, pct: bool| match v {
        Some(x) if pct => format!("{:.0}%", 100.0 * x),
        Some(x) => query::format_num(x),
        None => "–".to_string(),
    };
    let mut h = String::from("<h3>Initialization health</h3><p class=muted>Measured on one fixed batch of training images before the first update (→ after the first epoch), mean over trials. Loss ÷ ln(classes): near 1 is a healthy start. Dead: share of ReLU units silent on the whole batch. Identical: share of trials whose units in that layer all compute the same thing (a constant initialization).</p><div class=scroll><table><tr><th>model.init</th><th>trials</th><th>loss ÷ ln(classes)</th><th>layer</th><th>activation std</th><th>dead units</th><th>gradient norm</th><th>weight std</th><th>identical units</th></tr>");
    for (g, ts) in &groups {
        let layers =
            crate::diagnostics::layers_of("init", ts.iter().flat_map(|t| t.metrics.keys()));
        for (i, layer) in layers.iter().enumerate() {
            let pair = |stat: &str, pct: bool| {
                let a = mean(ts, &format!("init.{layer}.{stat}"));
                let b = mean(ts, &format!("epoch1.{layer}.{stat}"));
                format!("<td>{} → {}</td>", text(a, pct), text(b, pct))
            };
            if i == 0 {
                let span = layers.len();
                let _ = write!(
                    h,
                    "<tr><td rowspan={span}>{}</td><td rowspan={span}>{}</td><td rowspan={span}>{} → {}</td>",
                    esc(g),
                    ts.len(),
                    text(mean(ts, "init.loss_over_chance"), false),
                    text(mean(ts, "epoch1.loss_over_chance"), false),
                );
            } else {
                h += "<tr>";
            }
            let _ = write!(
                h,
                "<td>{}</td>{}{}{}{}{}</tr>",
                esc(layer),
                pair("activation_std", false),
                pair("dead_share", true),
                pair("gradient_norm", false),
                pair("weight_std", false),
                pair("identical_units", true)
            );
        }
    }
    h += "</table></div>";
    h
}

fn is_diverged(t: &TrialRow) -> bool {
    t.state == "pruned" && t.stop_reason.as_deref() != Some("pruned")
}

/// A short cell with its full value on hover.
fn short_cell(value: &str) -> String {
    let short = leaderboard::short_value(value);
    if short == value {
        format!("<td>{}</td>", esc(value))
    } else {
        format!("<td title=\"{}\">{}</td>", esc(value), esc(&short))
    }
}

/// A configuration in a few words: its settings that differ, short.
fn config_label(settings: &BTreeMap<String, String>, params: &[String]) -> String {
    let names = leaderboard::short_names(params);
    params
        .iter()
        .zip(names)
        .map(|(p, n)| {
            format!(
                "{n} {}",
                leaderboard::short_value(settings.get(p).map(String::as_str).unwrap_or("-"))
            )
        })
        .collect::<Vec<_>>()
        .join(" · ")
}

/// The configuration in full (`param=value, …`), for tooltips.
fn config_full(settings: &BTreeMap<String, String>) -> String {
    settings
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// "best", "worse (p 0.003)", "within noise (p 1.000)" with the unadjusted p
/// on hover, or "untested (1 seed)".
fn verdict_html(e: &leaderboard::Entry, rank: usize) -> String {
    let p = |v: f64| esc(&leaderboard::short_p(v));
    match (e.p_adjusted, e.p_raw) {
        _ if rank == 0 => "best".into(),
        (Some(a), Some(r)) => format!(
            "<span title=\"unadjusted p {}\">{} (p {})</span>",
            p(r),
            if e.distinguishable() {
                "<b>worse</b>"
            } else {
                "within noise"
            },
            p(a)
        ),
        _ => esc(&e.verdict(rank)),
    }
}

fn leaderboard_table(board: &Leaderboard, range: std::ops::Range<usize>) -> String {
    let mut h = String::from("<div class=scroll><table><tr><th>rank</th>");
    for (p, n) in board
        .params
        .iter()
        .zip(leaderboard::short_names(&board.params))
    {
        let _ = write!(h, "<th title=\"{}\">{}</th>", esc(p), esc(&n));
    }
    let _ = write!(
        h,
        "<th>{} (mean ± std)</th><th>seeds</th><th>against the best</th></tr>",
        esc(&board.metric)
    );
    for i in range {
        let Some(e) = board.entries.get(i) else { break };
        let class = if i == 0 {
            " class=best"
        } else if e.distinguishable() {
            " class=worse"
        } else {
            ""
        };
        let _ = write!(h, "<tr{class}><td class=n>{}</td>", i + 1);
        for p in &board.params {
            h += &short_cell(e.settings.get(p).map(String::as_str).unwrap_or("-"));
        }
        let seeds = if e.left_out > 0 {
            format!(
                "{} <span class=muted>(+{} left out)</span>",
                e.summary.n, e.left_out
            )
        } else {
            e.summary.n.to_string()
        };
        let _ = write!(
            h,
            "<td class=n><b>{}</b></td><td class=n>{seeds}</td><td class=wrap>{}</td></tr>",
            leaderboard::mean_std(&e.summary),
            verdict_html(e, i)
        );
    }
    h + "</table></div>"
}

fn leaderboard_section(board: &Leaderboard, trials: &[TrialRow], top: usize) -> String {
    let mut h = String::from("<h2>Leaderboard</h2>");
    if board.entries.is_empty() {
        return h + "<p class=muted>No configuration has a complete trial yet.</p>";
    }
    let tested = board
        .entries
        .iter()
        .filter(|e| e.p_adjusted.is_some())
        .count();
    let worse = board.entries.iter().filter(|e| e.distinguishable()).count();
    let _ = write!(h, "<p class=muted>{} configurations, best first by their mean over seeds. Each is compared with the best by Welch's t-test over its seeds; the {tested} p-values are adjusted for the number of comparisons by {}'s method, and <i>worse</i> means adjusted p &lt; {}. {worse} configurations are worse than the best beyond seed noise; the other {} cannot be told apart from it with these seeds.</p>",
        board.entries.len(), leaderboard::CORRECTION, leaderboard::ALPHA, board.entries.len() - 1 - worse);
    h += &leaderboard_table(board, 0..top);
    if board.entries.len() > top {
        let _ = write!(
            h,
            "<details><summary>the other {} configurations</summary>{}</details>",
            board.entries.len() - top,
            leaderboard_table(board, top..board.entries.len())
        );
    }
    let note = query::excluded(trials, &board.metric);
    if !note.is_empty() {
        let _ = write!(h, "<p class=muted>{}</p>", esc(&note));
    }
    h
}

fn effects_section(trials: &[TrialRow], board: &Leaderboard, metric: &str) -> String {
    if board.params.is_empty() {
        return String::new();
    }
    let mut h = String::from("<h2>Main effects</h2><p class=muted>Mean of the objective for each value of a swept setting, over every other setting and seed; bars are ± one standard deviation. Sampled settings are grouped in quartiles.</p>");
    let mut by_param: BTreeMap<String, Vec<(String, stats::Summary)>> = BTreeMap::new();
    for (p, v, s) in query::effects(&query::bin_continuous(trials, &board.params, 4), metric) {
        if board.params.contains(&p) {
            by_param.entry(p).or_default().push((v, s));
        }
    }
    for (p, rows) in &by_param {
        h += &charts::effect_chart(p, rows, metric);
    }
    h
}

/// How much two settings interact: the part of the cell means that the two
/// main effects do not explain (the interaction sum of squares of a two-way
/// layout, weighted by trials per cell).
fn interaction_strength(cells: &[Vec<Option<(f64, usize)>>]) -> f64 {
    let all: Vec<(usize, usize, f64, usize)> = cells
        .iter()
        .enumerate()
        .flat_map(|(i, r)| {
            r.iter()
                .enumerate()
                .filter_map(move |(j, c)| c.map(|(m, n)| (i, j, m, n)))
        })
        .collect();
    let n: usize = all.iter().map(|c| c.3).sum();
    if n == 0 {
        return 0.0;
    }
    let grand = all.iter().map(|c| c.2 * c.3 as f64).sum::<f64>() / n as f64;
    type Cell = (usize, usize, f64, usize);
    let mean_of = |f: &dyn Fn(&Cell) -> bool| {
        let (s, k) = all
            .iter()
            .filter(|c| f(c))
            .fold((0.0, 0usize), |a, c| (a.0 + c.2 * c.3 as f64, a.1 + c.3));
        if k == 0 {
            grand
        } else {
            s / k as f64
        }
    };
    all.iter()
        .map(|&(i, j, m, k)| {
            let r = mean_of(&|c| c.0 == i);
            let col = mean_of(&|c| c.1 == j);
            k as f64 * (m - r - col + grand).powi(2)
        })
        .sum()
}

fn interactions_section(
    trials: &[TrialRow],
    board: &Leaderboard,
    metric: &str,
    maximize: bool,
) -> String {
    if board.params.len() < 2 {
        return String::new();
    }
    let binned = query::bin_continuous(trials, &board.params, 4);
    let done: Vec<(&TrialRow, f64)> = binned
        .iter()
        .filter(|t| t.state == "complete")
        .filter_map(|t| Some((t, t.metrics.get(metric).copied().filter(|v| v.is_finite())?)))
        .collect();
    let values = |p: &str| {
        let mut v: Vec<String> = done
            .iter()
            .filter_map(|(t, _)| t.params.get(p).cloned())
            .collect();
        v.sort_by(|a, b| match (a.parse::<f64>(), b.parse::<f64>()) {
            (Ok(x), Ok(y)) => x.total_cmp(&y),
            _ => a.cmp(b),
        });
        v.dedup();
        v
    };
    let mut maps: Vec<(f64, String)> = Vec::new();
    for (ai, a) in board.params.iter().enumerate() {
        for b in &board.params[ai + 1..] {
            let (av, bv) = (values(a), values(b));
            if av.len() < 2 || bv.len() < 2 {
                continue;
            }
            // the setting with fewer values makes the columns (a compact map)
            let ((rp, rv), (cp, cv)) = if bv.len() <= av.len() {
                ((a, av), (b, bv))
            } else {
                ((b, bv), (a, av))
            };
            let mut sums = vec![vec![(0.0, 0usize); cv.len()]; rv.len()];
            for (t, v) in &done {
                let (Some(x), Some(y)) = (t.params.get(rp.as_str()), t.params.get(cp.as_str()))
                else {
                    continue;
                };
                let (Some(i), Some(j)) = (
                    rv.iter().position(|r| r == x),
                    cv.iter().position(|c| c == y),
                ) else {
                    continue;
                };
                sums[i][j].0 += v;
                sums[i][j].1 += 1;
            }
            let cells: Vec<Vec<Option<(f64, usize)>>> = sums
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|(s, n)| (*n > 0).then(|| (s / *n as f64, *n)))
                        .collect()
                })
                .collect();
            let strength = interaction_strength(&cells);
            let names = leaderboard::short_names(&board.params);
            let short = |p: &str| {
                board
                    .params
                    .iter()
                    .position(|q| q == p)
                    .map(|i| names[i].clone())
                    .unwrap_or_else(|| p.to_string())
            };
            let title = format!("{} × {}", short(rp), short(cp));
            maps.push((
                strength,
                charts::heat_map(&title, (rp, &rv), (cp, &cv), &cells, maximize),
            ));
        }
    }
    if maps.is_empty() {
        return String::new();
    }
    maps.sort_by(|x, y| y.0.total_cmp(&x.0));
    let mut h = format!("<h2>Interactions</h2><p class=muted>Mean {} for each pair of values of two swept settings, over every other setting and seed (darker is better). Pairs are ordered by how much they interact: the part of the cell means their two main effects do not explain (the interaction sum of squares). A setting that helps in one row and not in another shows here, not in the main effects.</p>", esc(metric));
    for (_, m) in maps.iter().take(PAIRS_SHOWN) {
        h += m;
    }
    if maps.len() > PAIRS_SHOWN {
        let _ = write!(
            h,
            "<details><summary>the other {} pairs</summary>",
            maps.len() - PAIRS_SHOWN
        );
        for (_, m) in &maps[PAIRS_SHOWN..] {
            h += m;
        }
        h += "</details>";
    }
    h
}

/// Per epoch, the values of the seeds that reached it.
type PerEpoch = BTreeMap<i64, Vec<f64>>;

async fn curves_section(store: &Store, trials: &[TrialRow], board: &Leaderboard) -> Result<String> {
    let mut shown: Vec<(String, &BTreeMap<String, String>, Vec<i64>)> = board
        .entries
        .iter()
        .take(CURVES_OF)
        .enumerate()
        .map(|(i, e)| (format!("#{}", i + 1), &e.settings, e.trials.clone()))
        .collect();
    // the baseline: every swept setting at its first value (the spec's first trial)
    if let Some(first) = trials.first() {
        if let Some((i, e)) = board
            .entries
            .iter()
            .enumerate()
            .find(|(_, e)| e.settings == first.params)
        {
            if i >= CURVES_OF {
                shown.push((
                    format!("baseline (#{})", i + 1),
                    &e.settings,
                    e.trials.clone(),
                ));
            }
        }
    }
    if shown.is_empty() {
        return Ok(String::new());
    }
    let series = [
        ("val.loss", "train.loss"),
        ("val.accuracy", ""),
        ("val.macro_f1", ""),
    ];
    // configuration → metric → epoch → values over seeds
    let mut data: Vec<BTreeMap<&str, PerEpoch>> = Vec::new();
    for (_, _, ids) in &shown {
        let mut m: BTreeMap<&str, PerEpoch> = BTreeMap::new();
        for id in ids {
            for (e, vals) in query::curve(store, *id).await? {
                for name in ["val.loss", "train.loss", "val.accuracy", "val.macro_f1"] {
                    if let Some(v) = vals.get(name).filter(|v| v.is_finite()) {
                        m.entry(name).or_default().entry(e).or_default().push(*v);
                    }
                }
            }
        }
        data.push(m);
    }
    let line = |per: Option<&PerEpoch>, color: usize, dashed: bool, label: String| {
        let per = per.cloned().unwrap_or_default();
        Line {
            points: per
                .iter()
                .map(|(e, v)| (*e as f64, v.iter().sum::<f64>() / v.len() as f64))
                .collect(),
            band: per
                .iter()
                .map(|(e, v)| {
                    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    (*e as f64, lo, hi)
                })
                .collect(),
            counts: per.iter().map(|(e, v)| (*e as f64, v.len())).collect(),
            dashed,
            color,
            label,
        }
    };
    let legend: Vec<(usize, String)> = shown
        .iter()
        .enumerate()
        .map(|(i, (tag, s, ids))| {
            (
                i,
                format!(
                    "{tag}: {} ({} seeds)",
                    config_label(s, &board.params),
                    ids.len()
                ),
            )
        })
        .collect();
    let mut h = String::from("<h2>Learning curves</h2><p class=muted>Per configuration, the mean over the seeds that reached each epoch (line) and their range (band); where seeds stop early, the number still running is written on the line. The best configurations, and the baseline (every swept setting at its first value) when it is not among them.</p>");
    for (val, train) in series {
        let mut lines = Vec::new();
        for (i, (tag, _, _)) in shown.iter().enumerate() {
            lines.push(line(data[i].get(val), i, false, format!("{tag} {val}")));
            if !train.is_empty() {
                let mut l = line(data[i].get(train), i, true, format!("{tag} {train}"));
                l.band.clear();
                l.counts.clear();
                lines.push(l);
            }
        }
        let what = val.trim_start_matches("val.");
        h += &line_chart(
            &format!("validation {what} per epoch"),
            &lines,
            &legend,
            (!train.is_empty()).then_some("training loss (dashed)"),
            "epoch",
            what,
        );
    }
    Ok(h)
}

/// The best configuration's confusion matrix summed over its seeds, and the
/// per-class recall and F1 of the top configurations (mean over seeds), the
/// winner's weakest classes first.
async fn winner_section(
    store: &Store,
    board: &Leaderboard,
    classes: &[String],
    metric: &str,
) -> Result<String> {
    let Some(best) = board.entries.first() else {
        return Ok(String::new());
    };
    let k = classes.len();
    let mut sum = vec![vec![0i64; k]; k];
    for id in &best.trials {
        for (i, row) in query::confusion_matrix(store, *id, k)
            .await?
            .iter()
            .enumerate()
        {
            for (j, c) in row.iter().enumerate() {
                sum[i][j] += c;
            }
        }
    }
    let mut h = String::new();
    let _ = write!(h, "<h2>What the best configuration gets wrong</h2><p class=muted>#1 ({}, {} = {}) over all its {} seeds: the confusion counts summed over its trials (each seed's validation split), not its luckiest seed. Rows are true classes, columns predicted; the shade is the share of the row.</p>",
        esc(&config_full(&best.settings)), esc(metric), leaderboard::mean_std(&best.summary), best.trials.len());
    if sum.iter().flatten().any(|c| *c > 0) {
        h += &charts::confusion(classes, &sum);
    }
    // per class: recall and F1, mean over seeds, for the top configurations
    let tops: Vec<&leaderboard::Entry> = board.entries.iter().take(CURVES_OF).collect();
    // per configuration: class → (recall per seed, F1 per seed, images)
    type PerClass = BTreeMap<String, (Vec<f64>, Vec<f64>, i64)>;
    let mut per: Vec<PerClass> = Vec::new();
    for e in &tops {
        let mut m: BTreeMap<String, (Vec<f64>, Vec<f64>, i64)> = BTreeMap::new();
        for id in &e.trials {
            for (name, _p, r, f1, support) in query::class_metrics(store, *id).await? {
                let c = m.entry(name).or_default();
                c.0.push(r);
                c.1.push(f1);
                c.2 += support;
            }
        }
        per.push(m);
    }
    let mean = |v: &[f64]| {
        let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let mut order: Vec<&String> = classes.iter().collect();
    if let Some(w) = per.first() {
        order.sort_by(|a, b| {
            let r = |c: &String| w.get(c).map(|x| mean(&x.0)).unwrap_or(f64::NAN);
            r(a).total_cmp(&r(b))
        });
    }
    if per.first().is_some_and(|w| !w.is_empty()) {
        let table = |rows: &[&String]| {
            let mut t = String::from(
                "<div class=scroll><table><tr><th>class</th><th>images (over seeds)</th>",
            );
            for i in 0..tops.len() {
                let _ = write!(t, "<th>#{} recall</th><th>#{} F1</th>", i + 1, i + 1);
            }
            t += "</tr>";
            for c in rows {
                let support = per[0].get(*c).map(|x| x.2).unwrap_or(0);
                let _ = write!(t, "<tr><td>{}</td><td class=n>{support}</td>", esc(c));
                for m in &per {
                    let (r, f) = m
                        .get(*c)
                        .map(|x| (mean(&x.0), mean(&x.1)))
                        .unwrap_or((f64::NAN, f64::NAN));
                    let _ = write!(
                        t,
                        "<td class=n>{}</td><td class=n>{}</td>",
                        format_num(r),
                        format_num(f)
                    );
                }
                t += "</tr>";
            }
            t + "</table></div>"
        };
        let _ = write!(h, "<h3>Per class</h3><p class=muted>Recall and F1 of each class, mean over seeds, for the top {} configurations; the classes #1 recalls worst come first.</p>", tops.len());
        let shown = order.len().min(20);
        h += &table(&order[..shown]);
        if order.len() > shown {
            let _ = write!(
                h,
                "<details><summary>the other {} classes</summary>{}</details>",
                order.len() - shown,
                table(&order[shown..])
            );
        }
    }
    Ok(h)
}

fn stopping_section(trials: &[TrialRow], board: &Leaderboard, top: usize) -> String {
    let mut h = String::from("<h2>Where training stopped</h2>");
    let kind = |t: &TrialRow| {
        if is_diverged(t) {
            StopKind::Diverged
        } else if t.state == "pruned" {
            StopKind::Pruned
        } else {
            StopKind::Finished
        }
    };
    let finished: Vec<&TrialRow> = trials
        .iter()
        .filter(|t| t.state == "complete" || t.state == "pruned")
        .collect();
    let early = finished
        .iter()
        .filter(|t| t.stop_reason.as_deref() == Some("early_stopping"))
        .count();
    let median = |mut v: Vec<i64>| {
        v.sort_unstable();
        v.get(v.len() / 2).copied()
    };
    let stops: Vec<i64> = finished.iter().filter_map(|t| t.stop_epoch).collect();
    let bests: Vec<i64> = finished
        .iter()
        .filter(|t| t.state == "complete")
        .filter_map(|t| t.best_epoch)
        .collect();
    let pruned = finished
        .iter()
        .filter(|t| kind(t) == StopKind::Pruned)
        .count();
    let _ = write!(h, "<p class=muted>{} finished trials: {early} stopped early, {pruned} stopped by the pruner, the rest ran to their epoch limit. Median stop epoch {}, median best epoch {}. One row per configuration in leaderboard order: each trial's stop (dot) and best epoch (ring).</p>",
        finished.len(),
        median(stops.clone()).map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
        median(bests).map(|e| e.to_string()).unwrap_or_else(|| "-".into()));
    let max_epoch = stops.iter().copied().max().unwrap_or(1);
    // configurations: the leaderboard's, then those with no complete trial
    let mut by_config: BTreeMap<&BTreeMap<String, String>, Vec<&TrialRow>> = BTreeMap::new();
    for t in &finished {
        by_config.entry(&t.params).or_default().push(t);
    }
    let mut order: Vec<(String, &BTreeMap<String, String>)> = board
        .entries
        .iter()
        .enumerate()
        .map(|(i, e)| {
            (
                format!("#{} {}", i + 1, leaderboard::mean_std(&e.summary)),
                &e.settings,
            )
        })
        .collect();
    for s in by_config.keys() {
        if !board.entries.iter().any(|e| &e.settings == *s) {
            order.push(("no complete trial".into(), s));
        }
    }
    let rows: Vec<StopRow> = order
        .into_iter()
        .map(|(label, settings)| StopRow {
            label,
            title: config_full(settings),
            trials: by_config
                .get(settings)
                .into_iter()
                .flatten()
                .map(|t| {
                    (
                        t.stop_epoch,
                        (t.state == "complete").then_some(t.best_epoch).flatten(),
                        kind(t),
                    )
                })
                .collect(),
        })
        .collect();
    let shown = rows.len().min(top);
    h += &charts::stop_chart(&rows[..shown], max_epoch);
    if rows.len() > shown {
        let _ = write!(
            h,
            "<details><summary>the other {} configurations</summary>{}</details>",
            rows.len() - shown,
            charts::stop_chart(&rows[shown..], max_epoch)
        );
    }
    // the rare ones, one by one
    let special: Vec<&TrialRow> = trials
        .iter()
        .filter(|t| is_diverged(t) || t.state == "failed")
        .collect();
    if special.is_empty() {
        h += "<p class=muted>No trial diverged or failed.</p>";
    } else {
        let _ = write!(h, "<h3>Trials that diverged or failed ({})</h3><table><tr><th>trial</th><th>seed</th><th>configuration</th><th>state</th><th>epoch</th><th>why</th></tr>", special.len());
        for t in special {
            let why = t
                .error
                .clone()
                .unwrap_or_else(|| t.stop_reason.clone().unwrap_or_default());
            let state = if is_diverged(t) {
                "diverged"
            } else {
                t.state.as_str()
            };
            let _ = write!(h, "<tr><td class=n>{}</td><td class=n>{}</td><td class=wrap title=\"{}\">{}</td><td>{state}</td><td class=n>{}</td><td class=wrap>{}</td></tr>",
                t.number, t.seed, esc(&config_full(&t.params)), esc(&config_label(&t.params, &board.params)), t.stop_epoch.map(|e| e.to_string()).unwrap_or_default(), esc(&why));
        }
        h += "</table>";
    }
    h
}

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
                Line {
                    points: each,
                    label: format!("{metric} per configuration"),
                    ..Line::default()
                },
                Line {
                    points: best_line,
                    dashed: true,
                    color: 1,
                    label: "best so far".into(),
                    ..Line::default()
                },
            ],
            &[
                (0, format!("{metric} per configuration")),
                (1, "best so far".into()),
            ],
            None,
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
