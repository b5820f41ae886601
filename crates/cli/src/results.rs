//! The query commands: `ls`, `status`, `trials`, `show`, `compare`, `export`, `sql`.
//! They open the database read-only (they work while a sweep runs), resolve
//! arguments and render tables as table, CSV, JSON or Markdown.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use sweep_orchestrator::query::{self, format_num, Cell, Table};
use sweep_orchestrator::stats;
use sweep_orchestrator::store::DbLocation;
use sweep_orchestrator::store::Store;
use sweep_orchestrator::{diagnostics, leaderboard};

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
pub enum Format {
    Table,
    Csv,
    Json,
    Markdown,
}

#[derive(Args, Debug, Clone)]
pub struct Output {
    /// Results database: a SQLite file (default results/sweep.db, or SWEEP_DB) or a
    /// PostgreSQL URL (postgres://user@host:port/db).
    #[arg(long, global = true)]
    pub db: Option<String>,
    #[arg(long, value_enum, default_value = "table", global = true)]
    pub format: Format,
    /// Write to FILE instead of standard output.
    #[arg(short = 'o', long = "output", global = true)]
    pub output: Option<PathBuf>,
}

impl Output {
    fn db(&self) -> Result<DbLocation> {
        self.db_in(None)
    }

    /// The database: --db, SWEEP_DB, else `sweep.db` in `results` (a
    /// command's --results) or in results/.
    fn db_in(&self, results: Option<&std::path::Path>) -> Result<DbLocation> {
        Ok(crate::sweep::resolve_db(
            self.db.as_deref(),
            results.unwrap_or(std::path::Path::new("results")),
        )?)
    }
}

fn csv_field(s: &str) -> String {
    // Text that a spreadsheet would run as a formula is neutralised (numbers are not text).
    let s = if s.starts_with(['=', '+', '-', '@']) && s.parse::<f64>().is_err() {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Columns of the terminal, when standard output is one.
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct for a terminal file descriptor.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: as above; ws outlives the call.
    let r = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (r == 0 && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// Renders a table in the chosen format.
pub fn render(t: &Table, f: Format) -> String {
    match f {
        Format::Csv => {
            let mut s = t
                .headers
                .iter()
                .map(|h| csv_field(h))
                .collect::<Vec<_>>()
                .join(",")
                + "\n";
            for r in &t.rows {
                let cells: Vec<String> = r
                    .iter()
                    .map(|c| match c {
                        // full precision in CSV
                        Cell::Num(v) if v.is_finite() => v.to_string(),
                        other => csv_field(&other.text()),
                    })
                    .collect();
                s += &(cells.join(",") + "\n");
            }
            s
        }
        Format::Json => {
            let rows: Vec<serde_json::Map<String, serde_json::Value>> = t
                .rows
                .iter()
                .map(|r| {
                    t.headers
                        .iter()
                        .zip(r)
                        .map(|(h, c)| {
                            let v = match c {
                                Cell::Null => serde_json::Value::Null,
                                Cell::Int(i) => (*i).into(),
                                Cell::Num(v) if v.is_finite() => (*v).into(),
                                Cell::Num(v) => format_num(*v).into(),
                                Cell::Text(s) => s.clone().into(),
                            };
                            (h.clone(), v)
                        })
                        .collect()
                })
                .collect();
            serde_json::to_string_pretty(&rows).expect("rows serialize") + "\n"
        }
        Format::Markdown => {
            let md = |x: &str| x.replace('|', "\\|").replace(['\n', '\r'], " ");
            let mut s = format!(
                "| {} |\n",
                t.headers
                    .iter()
                    .map(|h| md(h))
                    .collect::<Vec<_>>()
                    .join(" | ")
            );
            s += &format!(
                "|{}\n",
                t.headers.iter().map(|_| "---|").collect::<String>()
            );
            for r in &t.rows {
                s += &format!(
                    "| {} |\n",
                    r.iter()
                        .map(|c| md(&c.text()))
                        .collect::<Vec<_>>()
                        .join(" | ")
                );
            }
            s
        }
        Format::Table => {
            let texts: Vec<Vec<String>> = t
                .rows
                .iter()
                .map(|r| r.iter().map(Cell::text).collect())
                .collect();
            let mut widths: Vec<usize> = (0..t.headers.len())
                .map(|i| {
                    texts
                        .iter()
                        .map(|r| r[i].chars().count())
                        .chain([t.headers[i].chars().count()])
                        .max()
                        .unwrap_or(0)
                        .min(60)
                })
                .collect();
            // Fit the terminal: narrow the widest columns first (never below 6).
            if let Some(tw) = terminal_width() {
                while widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1) > tw {
                    let (i, w) = widths
                        .iter()
                        .enumerate()
                        .max_by_key(|(_, w)| **w)
                        .map(|(i, w)| (i, *w))
                        .unwrap_or((0, 0));
                    if w <= 6 {
                        break;
                    }
                    widths[i] = w - 1;
                }
            }
            let line = |cells: &[String]| {
                cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| {
                        let c: String = c.chars().take(*w).collect();
                        format!("{c:<w$}")
                    })
                    .collect::<Vec<_>>()
                    .join("  ")
                    .trim_end()
                    .to_string()
            };
            let mut s = line(&t.headers) + "\n";
            for r in &texts {
                s += &(line(r) + "\n");
            }
            s
        }
    }
}

fn emit(out: &Output, text: &str) -> Result<()> {
    match &out.output {
        Some(p) => std::fs::write(p, text).with_context(|| format!("writing {}", p.display())),
        None => {
            let mut o = std::io::stdout().lock();
            o.write_all(text.as_bytes())?;
            Ok(())
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn open(out: &Output) -> Result<Store> {
    Ok(Store::open_read_only(&out.db()?).await?)
}

pub fn ls(out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let t = Table {
            headers: [
                "sweep",
                "created",
                "complete",
                "pruned",
                "failed",
                "running",
                "waiting",
                "objective",
                "best",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rows: query::sweeps(&s)
                .await?
                .into_iter()
                .map(|w| {
                    vec![
                        Cell::Text(w.name),
                        Cell::Text(w.created_at),
                        Cell::Int(w.counts.complete),
                        Cell::Int(w.counts.pruned),
                        Cell::Int(w.counts.failed),
                        Cell::Int(w.counts.running),
                        Cell::Int(w.counts.waiting),
                        Cell::Text(format!("{} ({})", w.objective, w.direction)),
                        w.best.map(Cell::Num).unwrap_or(Cell::Null),
                    ]
                })
                .collect(),
        };
        s.close().await;
        emit(out, &render(&t, out.format))
    })
}

/// The leaderboard as a table: rank, one column per setting that differs
/// (`people`: short names and values; otherwise the full ones), mean, std, n,
/// with `ci` min, max and the 95% interval, the trials left out when any, and
/// the test against the best. At most `top` rows.
pub fn leaderboard_table(
    board: &leaderboard::Leaderboard,
    people: bool,
    ci: bool,
    top: usize,
) -> Table {
    let mut headers = vec!["rank".to_string()];
    if people {
        headers.extend(leaderboard::short_names(&board.params));
    } else {
        headers.extend(board.params.iter().cloned());
    }
    headers.extend(["mean".into(), "std".into(), "n".into()]);
    if ci {
        headers.extend([
            "min".into(),
            "max".into(),
            "ci95_low".into(),
            "ci95_high".into(),
        ]);
    }
    let any_left_out = board.entries.iter().any(|e| e.left_out > 0);
    if any_left_out {
        headers.push("left_out".into());
    }
    headers.push(if people {
        format!("vs best ({})", leaderboard::CORRECTION)
    } else {
        format!("p_vs_best_{}", leaderboard::CORRECTION.to_lowercase())
    });
    let rows = board
        .entries
        .iter()
        .take(top)
        .enumerate()
        .map(|(i, e)| {
            let mut r = vec![Cell::Int(i as i64 + 1)];
            for p in &board.params {
                let v = e.settings.get(p).cloned().unwrap_or_default();
                r.push(Cell::Text(if people {
                    leaderboard::short_value(&v)
                } else {
                    v
                }));
            }
            r.extend([
                Cell::Num(e.summary.mean),
                Cell::Num(e.summary.std),
                Cell::Int(e.summary.n as i64),
            ]);
            if ci {
                let h = stats::ci95_half_width(&e.summary);
                r.extend([
                    Cell::Num(e.summary.min),
                    Cell::Num(e.summary.max),
                    Cell::Num(e.summary.mean - h),
                    Cell::Num(e.summary.mean + h),
                ]);
            }
            if any_left_out {
                r.push(Cell::Int(e.left_out as i64));
            }
            r.push(if people {
                Cell::Text(e.verdict(i))
            } else {
                e.p_adjusted.map(Cell::Num).unwrap_or(Cell::Null)
            });
            r
        })
        .collect();
    Table { headers, rows }
}

pub struct CompareArgs {
    pub sweep: String,
    pub rows: Option<String>,
    pub cols: Option<String>,
    pub metric: Option<String>,
    pub baseline: Option<String>,
    pub effects: bool,
    pub ci: bool,
}

pub fn compare(a: CompareArgs, out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let info = query::sweep(&s, &a.sweep).await?;
        let metric = a.metric.clone().unwrap_or(info.objective.clone());
        let mut trials = query::trials_with(&s, info.id, Some(&metric)).await?;
        if !trials.iter().any(|t| t.metrics.contains_key(&metric)) {
            // unknown metric: load them all, to list the valid names
            trials = query::trials(&s, info.id).await?;
        }
        s.close().await;
        if !trials.iter().any(|t| t.metrics.contains_key(&metric))
            && trials.iter().any(|t| !t.metrics.is_empty())
        {
            let names: std::collections::BTreeSet<&String> =
                trials.iter().flat_map(|t| t.metrics.keys()).collect();
            bail!(
                "no metric `{metric}`; the trials have: {}",
                diagnostics::describe_names(names.into_iter().map(String::as_str))
            );
        }
        let split = |s: &Option<String>| {
            s.as_deref()
                .map(|s| {
                    s.split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        if a.effects {
            let t = Table {
                headers: [
                    "parameter",
                    "value",
                    &format!("mean {metric}"),
                    "std",
                    "trials",
                ]
                .iter()
                .map(|s| s.to_string())
                .collect(),
                rows: query::effects(&binned(&trials), &metric)
                    .into_iter()
                    .map(|(p, v, s)| {
                        vec![
                            Cell::Text(p),
                            Cell::Text(v),
                            Cell::Num(s.mean),
                            Cell::Num(s.std),
                            Cell::Int(s.n as i64),
                        ]
                    })
                    .collect(),
            };
            return emit(out, &render(&t, out.format));
        }
        let cols = split(&a.cols);
        let rows = match split(&a.rows) {
            // default: every swept parameter that is not a column
            r if r.is_empty() => trials
                .first()
                .map(|t| {
                    t.params
                        .keys()
                        .filter(|k| !cols.contains(k))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
            r => r,
        };
        let baseline = sweep_orchestrator::select::parse_conditions(
            a.baseline.as_deref().unwrap_or(""),
            "--baseline",
        )?;
        // grouping on chosen parameters: sampled (continuous) ones in quantile bins;
        // the ranked list of whole configurations keeps exact values
        let grouped = if a.rows.is_some() || !cols.is_empty() {
            // (a setting the baseline names keeps its exact values, to match them)
            let keys: Vec<String> = rows
                .iter()
                .chain(&cols)
                .filter(|k| !baseline.iter().any(|c| &c.param == *k))
                .cloned()
                .collect();
            std::borrow::Cow::Owned(query::bin_continuous(&trials, &keys, 4))
        } else {
            std::borrow::Cow::Borrowed(&trials[..])
        };
        let cells = query::compare(&grouped, &rows, &cols, &metric, &baseline)?;
        let note = query::excluded(&trials, &metric);
        // the sweep's direction for its objective; other metrics: losses and times down, the rest up
        let maximize = if metric == info.objective {
            info.direction != "minimize"
        } else {
            diagnostics::higher_is_better(&metric)
        };
        let t = if cols.is_empty() {
            // a ranked list: one column per setting that differs, tested against the best
            let mut only_rows = match grouped {
                std::borrow::Cow::Owned(v) => v,
                // (the trials themselves: not copied)
                std::borrow::Cow::Borrowed(_) => std::mem::take(&mut trials),
            };
            for t in &mut only_rows {
                t.params.retain(|k, _| rows.contains(k));
            }
            let board = leaderboard::leaderboard(&only_rows, &metric, maximize);
            let people = matches!(out.format, Format::Table | Format::Markdown);
            let mut t = leaderboard_table(&board, people, a.ci, usize::MAX);
            if !baseline.is_empty() {
                // the same configuration in compare's cells (grouped by the same rows)
                t.headers.extend(["delta".into(), "p_value".into()]);
                for (e, r) in board.entries.iter().zip(t.rows.iter_mut()) {
                    let key = rows
                        .iter()
                        .map(|p| {
                            format!(
                                "{p}={}",
                                e.settings.get(p).map(String::as_str).unwrap_or("-")
                            )
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    let c = cells.iter().find(|c| c.row == key);
                    r.push(c.and_then(|c| c.delta).map(Cell::Num).unwrap_or(Cell::Null));
                    r.push(
                        c.and_then(|c| c.p_value)
                            .map(Cell::Num)
                            .unwrap_or(Cell::Null),
                    );
                }
            }
            t
        } else {
            // a grid: rows × columns, "mean ± std (n)" per cell
            let mut col_keys: Vec<String> = cells.iter().map(|c| c.col.clone()).collect();
            col_keys.sort();
            col_keys.dedup();
            let mut row_keys: Vec<String> = cells.iter().map(|c| c.row.clone()).collect();
            row_keys.sort();
            row_keys.dedup();
            let mut headers = vec![rows.join(", ")];
            headers.extend(col_keys.iter().cloned());
            let body = row_keys
                .iter()
                .map(|rk| {
                    let mut r = vec![Cell::Text(rk.clone())];
                    for ck in &col_keys {
                        r.push(match cells.iter().find(|c| &c.row == rk && &c.col == ck) {
                            Some(c) => {
                                let mut s = format!(
                                    "{} ± {} (n={})",
                                    format_num(c.summary.mean),
                                    format_num(c.summary.std),
                                    c.summary.n
                                );
                                if let Some(d) = c.delta {
                                    s += &format!(" Δ{d:+.4}");
                                }
                                if let Some(p) = c.p_value {
                                    s += &format!(" p={p:.3}");
                                }
                                Cell::Text(s)
                            }
                            None => Cell::Null,
                        });
                    }
                    r
                })
                .collect();
            Table {
                headers,
                rows: body,
            }
        };
        let mut text = render(&t, out.format);
        if !note.is_empty() {
            match out.format {
                Format::Table | Format::Markdown => text += &format!("\n{note}\n"),
                // keep CSV and JSON machine-readable
                _ => eprintln!("{note}"),
            }
        }
        emit(out, &text)
    })
}

pub fn export(sweep: &str, table: &str, out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let info = query::sweep(&s, sweep).await?;
        let t = match table {
            "trials" => {
                let dir = info
                    .results_dir
                    .as_ref()
                    .map(|r| std::path::Path::new(r).join(&info.name));
                query::trials_table(&query::trials(&s, info.id).await?, dir.as_deref())
            }
            "epochs" => query::epochs(&s, info.id).await?,
            "confusion" => query::confusion(&s, info.id).await?,
            other => bail!("--table {other}: choose trials, epochs or confusion"),
        };
        s.close().await;
        emit(out, &render(&t, out.format))
    })
}

pub fn sql(q: &str, out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let t = query::sql(&s, q).await?;
        s.close().await;
        emit(out, &render(&t, out.format))
    })
}

pub struct TrialsArgs {
    pub sweep: String,
    pub state: Option<String>,
    pub filters: Vec<String>,
    pub sort: Option<String>,
    pub limit: Option<usize>,
}

/// One row per trial, filtered and sorted.
pub fn trials(a: TrialsArgs, out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let info = query::sweep(&s, &a.sweep).await?;
        let mut rows = query::trials(&s, info.id).await?;
        s.close().await;
        // the swept parameters of the sweep (the sweep's parameters are the same in every trial)
        let swept_all: Vec<String> = rows
            .first()
            .map(|t| t.params.keys().cloned().collect())
            .unwrap_or_default();
        if let Some(st) = &a.state {
            anyhow::ensure!(
                ["waiting", "running", "complete", "pruned", "failed"].contains(&st.as_str()),
                "--state {st}: choose waiting, running, complete, pruned or failed"
            );
            rows.retain(|t| &t.state == st);
        }
        let swept = swept_all;
        for f in &a.filters {
            for c in sweep_orchestrator::select::parse_conditions(f, "--where")? {
                if c.param == "seed" {
                    rows.retain(|t| c.matches(&t.seed.to_string()));
                    continue;
                }
                anyhow::ensure!(
                    swept.contains(&c.param),
                    "--where {}: not a swept parameter; swept: seed, {}",
                    c.param,
                    swept.join(", ")
                );
                rows.retain(|t| t.params.get(&c.param).is_some_and(|v| c.matches(v)));
            }
        }
        let sort = a.sort.clone().unwrap_or(info.objective.clone());
        let desc = if sort == info.objective {
            info.direction != "minimize"
        } else {
            diagnostics::higher_is_better(&sort)
        };
        rows.sort_by(|x, y| {
            let (a, b) = (
                x.metrics.get(&sort).copied().unwrap_or(f64::NAN),
                y.metrics.get(&sort).copied().unwrap_or(f64::NAN),
            );
            // missing values last
            match (a.is_nan(), b.is_nan()) {
                (true, false) => std::cmp::Ordering::Greater,
                (false, true) => std::cmp::Ordering::Less,
                _ if desc => b.total_cmp(&a),
                _ => a.total_cmp(&b),
            }
        });
        if let Some(n) = a.limit {
            rows.truncate(n);
        }
        let mut t = query::trials_table(&rows, None);
        // keep the columns people read in a listing: drop key, checkpoint and error
        if out.format == Format::Table {
            let keep: Vec<usize> = t
                .headers
                .iter()
                .enumerate()
                .filter(|(_, h)| {
                    !["key", "checkpoint", "error", "train_seconds"].contains(&h.as_str())
                })
                .map(|(i, _)| i)
                .collect();
            t.headers = keep.iter().map(|i| t.headers[*i].clone()).collect();
            t.rows = t
                .rows
                .iter()
                .map(|r| keep.iter().map(|i| r[*i].clone()).collect())
                .collect();
        }
        emit(out, &render(&t, out.format))
    })
}

/// Progress of one sweep: counts by state, running trials with their epoch, ETA.
pub fn status(sweep: &str, out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let info = query::sweep(&s, sweep).await?;
        let rows = query::started_trials(&s, info.id).await?;
        let mut text = String::new();
        let c = &info.counts;
        text += &format!(
            "sweep `{}`: {} trials — complete {}, pruned {}, failed {}, running {}, waiting {}\n",
            info.name,
            c.total(),
            c.complete,
            c.pruned,
            c.failed,
            c.running,
            c.waiting
        );
        if let Some(ss) = query::search_status(&s, &info).await? {
            text += &search_lines(&ss, &info.objective);
        }
        let durations: Vec<f64> = rows
            .iter()
            .filter(|t| t.state == "complete" || t.state == "pruned")
            .filter_map(|t| t.duration_seconds)
            .collect();
        if let (Some(d), true) = (stats::summarize(&durations), c.waiting + c.running > 0) {
            let parallel = c.running.max(1) as f64;
            text += &format!(
                "mean trial time {:.1}s; ETA about {:.0}s at {} trial(s) at once\n",
                d.mean,
                d.mean * (c.waiting + c.running) as f64 / parallel,
                parallel
            );
        }
        for t in rows.iter().filter(|t| t.state == "running") {
            let curve = query::curve(&s, t.id).await?;
            let epochs = serde_json::from_str::<sweep_train::TrialConfig>(&t.config_json())
                .map(|c| c.train.epochs)
                .unwrap_or(0);
            let last = curve.iter().next_back();
            let params = t
                .params
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ");
            text += &format!(
                "  running trial {} (seed {}): epoch {}/{}{} since {} · {params}\n",
                t.number,
                t.seed,
                last.map(|l| *l.0).unwrap_or(0),
                epochs,
                last.and_then(|l| l.1.get("val.loss"))
                    .map(|v| format!(", val loss {v:.4}"))
                    .unwrap_or_default(),
                t.started_at.clone().unwrap_or_default()
            );
        }
        let sessions = query::live_sessions(&s, info.id).await?;
        if !sessions.is_empty() {
            let list = sessions
                .iter()
                .map(|w| {
                    let beat = query::seconds_since(&w.heartbeat_at)
                        .map(|s| format!("{:.0}s ago", s.max(0.0)))
                        .unwrap_or_else(|| w.heartbeat_at.clone());
                    format!(
                        "{}:{} ({} running, last heartbeat {beat})",
                        w.host, w.pid, w.running
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            text += &format!("workers not ended: {list}\n");
        }
        s.close().await;
        if out.format == Format::Json {
            return emit(out, &(serde_json::to_string_pretty(&info)? + "\n"));
        }
        emit(out, &text)
    })
}

/// Everything about one trial: config, curve, report, confusion matrix, error.
pub fn show(sweep: &str, number: i64, out: &Output) -> Result<()> {
    runtime()?.block_on(async {
        let s = open(out).await?;
        let info = query::sweep(&s, sweep).await?;
        let Some(t) = query::trial(&s, info.id, number).await? else {
            bail!(
                "sweep `{sweep}` has no trial {number} (it has 1 to {})",
                info.counts.total()
            );
        };
        let t = &t;
        let classes = query::class_names(&s, info.id).await?;
        let curve = query::curve(&s, t.id).await?;
        let per_class = query::class_metrics(&s, t.id).await?;
        let cm = query::confusion_matrix(&s, t.id, classes.len()).await?;
        let attempts = query::attempts(&s, t.id).await?;
        s.close().await;
        let mut text = format!(
            "trial {} of sweep `{}` (seed {}): {}",
            t.number, info.name, t.seed, t.state
        );
        if let Some(r) = &t.stop_reason {
            text += &format!(", {r} at epoch {}", t.stop_epoch.unwrap_or(0));
        }
        text += &format!(
            "; best epoch {}; attempts {}\n",
            t.best_epoch.map(|e| e.to_string()).unwrap_or("-".into()),
            t.attempts
        );
        if let Some(e) = &t.error {
            text += &format!("error: {e}\n");
        }
        if t.state != "waiting" {
            text += &format!(
                "numbers: {}\n",
                query::reproducibility(t.metrics_version, t.device.as_deref())
            );
        }
        if let Some(init) = &t.init {
            text += &format!(
                "pretrained: {}
",
                init.summary()
            );
        }
        text += &files_section(&info, t);
        text += &attempts_section(&info, t, &attempts);
        text += "\nconfiguration:\n";
        let cfg: serde_json::Value = serde_json::from_str(&t.config_json())?;
        text += &serde_json::to_string_pretty(&cfg)?;
        text += "\n\n";
        let names = [
            "train.loss",
            "train.accuracy",
            "val.loss",
            "val.accuracy",
            "val.macro_f1",
            "val.balanced_accuracy",
            "train.loss_std",
            "time.epoch_seconds",
        ];
        let ct = Table {
            headers: std::iter::once("epoch".to_string())
                .chain(names.iter().map(|s| s.to_string()))
                .collect(),
            rows: curve
                .iter()
                .map(|(e, m)| {
                    std::iter::once(Cell::Int(*e))
                        .chain(
                            names
                                .iter()
                                .map(|n| m.get(*n).map(|v| Cell::Num(*v)).unwrap_or(Cell::Null)),
                        )
                        .collect()
                })
                .collect(),
        };
        text += &render(&ct, Format::Table);
        if !per_class.is_empty() {
            text += "\nclassification report (report epoch):\n";
            let rt = Table {
                headers: ["class", "precision", "recall", "f1", "support"]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                rows: per_class
                    .iter()
                    .map(|(n, p, r, f, sup)| {
                        vec![
                            Cell::Text(n.clone()),
                            Cell::Num(*p),
                            Cell::Num(*r),
                            Cell::Num(*f),
                            Cell::Int(*sup),
                        ]
                    })
                    .collect(),
            };
            text += &render(&rt, Format::Table);
            for m in [
                "val.accuracy",
                "val.balanced_accuracy",
                "val.macro_f1",
                "val.weighted_f1",
                "val.macro_auc",
            ] {
                if let Some(v) = t.metrics.get(m) {
                    text += &format!("{m:<22} {}\n", format_num(*v));
                }
            }
            text += "\nconfusion matrix (rows: true class, columns: predicted):\n";
            let mt = Table {
                headers: std::iter::once(String::new())
                    .chain((0..classes.len()).map(|i| i.to_string()))
                    .collect(),
                rows: cm
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        std::iter::once(Cell::Text(format!("{i} {}", classes[i])))
                            .chain(r.iter().map(|v| Cell::Int(*v)))
                            .collect()
                    })
                    .collect(),
            };
            text += &render(&mt, Format::Table);
        }
        text += &diagnostics_section(t);
        emit(out, &text)
    })
}

/// `show`'s training diagnostics: the trial-level metrics by group, then the
/// per-layer health before the first update and after the first epoch.
fn diagnostics_section(t: &query::TrialRow) -> String {
    if t.metrics_version.is_none() && !t.metrics.keys().any(|k| k.starts_with("speed.")) {
        return "\ntraining diagnostics: none (the trial was recorded by an older Sweep)\n".into();
    }
    let mut text = "\ntraining diagnostics (definitions: docs/results.md):\n".to_string();
    for (group, rows) in diagnostics::grouped(&t.metrics) {
        text += &format!("{group}:\n");
        for (name, v) in rows {
            text += &format!("  {name:<34} {}\n", format_num(v));
        }
    }
    let stats = [
        "activation_mean",
        "activation_std",
        "dead_share",
        "gradient_norm",
        "weight_std",
        "identical_units",
    ];
    let mut rows = Vec::new();
    for phase in ["init", "epoch1"] {
        for layer in diagnostics::layers_of(phase, t.metrics.keys()) {
            rows.push(
                [Cell::Text(phase.into()), Cell::Text(layer.into())]
                    .into_iter()
                    .chain(stats.iter().map(|st| {
                        t.metrics
                            .get(&format!("{phase}.{layer}.{st}"))
                            .filter(|v| v.is_finite())
                            .map(|v| Cell::Num(*v))
                            .unwrap_or(Cell::Null)
                    }))
                    .collect(),
            );
        }
    }
    if !rows.is_empty() {
        text += "layer health (init: before the first update; epoch1: after the first epoch):\n";
        let table = Table {
            headers: ["phase", "layer"]
                .iter()
                .chain(&stats)
                .map(|s| s.to_string())
                .collect(),
            rows,
        };
        text += &render(&table, Format::Table);
    }
    text
}

/// Every swept parameter with many distinct numeric values in 4 quantile bins.
fn binned(trials: &[query::TrialRow]) -> Vec<query::TrialRow> {
    let keys: Vec<String> = trials
        .first()
        .map(|t| t.params.keys().cloned().collect())
        .unwrap_or_default();
    query::bin_continuous(trials, &keys, 4)
}

/// `status`'s lines on a search: budget used, best so far, where trials were pruned.
fn search_lines(ss: &query::SearchStatus, objective: &str) -> String {
    let mut text = String::new();
    if ss.method != "grid" {
        text += &format!(
            "search ({}): {} of {} configurations proposed",
            ss.method,
            ss.proposed,
            ss.budget
                .map(|b| b.to_string())
                .unwrap_or_else(|| "?".into())
        );
        match ss.best {
            Some((n, v, k)) => {
                text += &format!(
                    "; best so far: configuration {n}, {objective} {} (mean of {k} seed{})\n",
                    format_num(v),
                    if k == 1 { "" } else { "s" }
                )
            }
            None => text += "; none finished yet\n",
        }
    }
    let pruned: i64 = ss.pruned_at.iter().map(|(_, n)| n).sum();
    if pruned > 0 || ss.diverged > 0 {
        let at = ss
            .pruned_at
            .iter()
            .map(|(e, n)| match e {
                // a configuration pruned on another seed first
                0 => format!("{n} before they started"),
                e => format!("{n} at epoch {e}"),
            })
            .collect::<Vec<_>>()
            .join(", ");
        text += &format!(
            "pruned by the pruner: {pruned}{}; diverged: {}\n",
            if at.is_empty() {
                String::new()
            } else {
                format!(" ({at})")
            },
            ss.diverged
        );
    }
    text
}

/// `show`'s list of a trial's starts when there was more than one, or one
/// that did not finish: outcome, error and the attempt's folder.
fn attempts_section(
    info: &query::SweepInfo,
    t: &query::TrialRow,
    rows: &[query::AttemptRow],
) -> String {
    if rows.len() < 2
        && rows
            .iter()
            .all(|a| a.outcome.as_deref() == Some("complete"))
    {
        return String::new();
    }
    let sweep_dir = info.results_dir(None).join(&info.name);
    let mut text = format!("\nattempts ({}):\n", rows.len());
    for a in rows {
        let folder = sweep_dir.join(sweep_orchestrator::runner::attempt_rel_dir(
            t.number, a.attempt,
        ));
        let shown = if folder.is_dir() {
            folder.display().to_string()
        } else {
            "no folder".into()
        };
        text += &format!(
            "  {:>3}  {}  {:<12} {}\n",
            a.attempt,
            a.started_at,
            a.outcome.as_deref().unwrap_or("running"),
            shown
        );
        if let Some(e) = &a.error {
            let e: String = e.chars().take(300).collect();
            text += &format!("       {e}\n");
        }
    }
    text
}

/// `show`'s list of a trial's files: its folder, artifacts and TensorBoard
/// run, as absolute paths when the database recorded the results folder.
fn files_section(info: &query::SweepInfo, t: &query::TrialRow) -> String {
    let sweep_dir = info.results_dir(None).join(&info.name);
    let mut text = format!("\nfiles (in {}", sweep_dir.display());
    if info.results_dir.is_none() {
        text += ", assumed: this database does not record where the sweep wrote them";
    }
    text += "):\n";
    // The attempt that finished names its folder and TensorBoard run; a trial
    // recorded before attempts had folders of their own used the trial's.
    let mut rows = Vec::new();
    if !t.artifacts.contains_key("folder") {
        rows.push((
            "folder".to_string(),
            sweep_dir.join(sweep_orchestrator::runner::trial_rel_dir(t.number)),
        ));
    }
    rows.extend(
        t.artifacts
            .iter()
            .map(|(kind, rel)| (kind.clone(), sweep_dir.join(rel))),
    );
    let tb = sweep_dir
        .join("tensorboard")
        .join(format!("{:04}", t.number));
    if !t.artifacts.contains_key("tensorboard") && tb.is_dir() {
        rows.push(("tensorboard".into(), tb));
    }
    rows.sort_by_key(|(kind, _)| kind != "folder");
    for (kind, path) in rows {
        let missing = if path.exists() { "" } else { "  (missing)" };
        text += &format!("  {kind:<16} {}{missing}\n", path.display());
    }
    text
}

/// Writes the sweep's self-contained HTML report; returns its path.
pub fn report(
    sweep: &str,
    db: &DbLocation,
    path: &std::path::Path,
    opts: &sweep_orchestrator::report::Options,
) -> Result<()> {
    let html = runtime()?.block_on(async {
        let s = Store::open_read_only(db).await?;
        let h = sweep_orchestrator::report::html_with(&s, sweep, opts).await;
        s.close().await;
        h
    })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, html).with_context(|| format!("writing {}", path.display()))
}

pub fn report_cmd(
    sweep: &str,
    results: Option<&std::path::Path>,
    top: usize,
    out: &Output,
) -> Result<()> {
    anyhow::ensure!(top > 0, "--top {top}: show at least one configuration");
    let db = out.db_in(results)?;
    let path = match out.output.clone() {
        Some(p) => p,
        None => {
            let info = runtime()?.block_on(async {
                let s = Store::open_read_only(&db).await?;
                let info = query::sweep(&s, sweep).await;
                s.close().await;
                anyhow::Ok(info?)
            })?;
            info.results_dir(results).join(sweep).join("report.html")
        }
    };
    report(
        sweep,
        &db,
        &path,
        &sweep_orchestrator::report::Options { top },
    )?;
    println!("report: {}", path.display());
    Ok(())
}

/// Evaluates a trial's checkpoint on another image folder with the same classes.
/// The checkpoint is found through the results folder the database recorded
/// (or `--results`, for a folder that moved).
pub fn eval(
    sweep: &str,
    number: i64,
    data: &std::path::Path,
    results: Option<&std::path::Path>,
    out: &Output,
) -> Result<()> {
    let db = out.db_in(results)?;
    let (cfg_json, checkpoint, classes) = runtime()?.block_on(async {
        let s = Store::open_read_only(&db).await?;
        let info = query::sweep(&s, sweep).await?;
        let row = query::trial(&s, info.id, number).await?;
        let classes = query::class_names(&s, info.id).await?;
        s.close().await;
        let Some(t) = row else {
            bail!("sweep `{sweep}` has no trial {number}");
        };
        let Some(ck) = t.artifacts.get("checkpoint").cloned() else {
            bail!(
                "trial {number} of `{sweep}` has no checkpoint (state {}); only finished trials do",
                t.state
            );
        };
        let path = info
            .locate(&ck, results)
            .map_err(|e| anyhow::anyhow!("the checkpoint of trial {number}: {e}"))?;
        Ok((t.config_json(), path, classes))
    })?;
    let mut cfg: sweep_train::TrialConfig =
        serde_json::from_str(&cfg_json).context("the stored trial config")?;
    cfg.data.root = Some(data.to_path_buf());
    cfg.data.labels = None;
    cfg.data.synthetic = None;
    let ds = sweep_train::Dataset::load(&cfg.data)
        .with_context(|| format!("loading {}", data.display()))?;
    let report = sweep_train::trainer::evaluate_checkpoint(
        &cfg,
        &checkpoint,
        &ds,
        &classes,
        &sweep_train::Device::Cpu,
    )?;
    if out.format == Format::Json {
        return emit(out, &(serde_json::to_string_pretty(&report)? + "\n"));
    }
    let text = format!(
        "trial {number} of `{sweep}` on {} ({} images)\n\n{}\n{}",
        data.display(),
        ds.len(),
        crate::render::report(&report),
        crate::render::confusion(&report)
    );
    emit(out, &text)
}
