//! Read models for the query commands (`ls`, `status`, `trials`, `show`, `compare`,
//! `export`, `sql`): plain rows built from the read-only store. Every SQL string is
//! here or in `store`; aggregation over seeds happens in Rust (`stats`).

use std::collections::BTreeMap;

use serde_json::Value as Json;
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::error::{Error, Result};
use crate::stats::{self, Summary};
use crate::store::{from_value_kind, StateCounts, Store};

/// A cell of a result table.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(untagged)]
pub enum Cell {
    Null,
    Int(i64),
    Num(f64),
    Text(String),
}

impl Cell {
    pub fn text(&self) -> String {
        match self {
            Cell::Null => String::new(),
            Cell::Int(i) => i.to_string(),
            Cell::Num(v) => format_num(*v),
            Cell::Text(s) => s.clone(),
        }
    }
}

#[cfg(test)]
impl TrialRow {
    /// A trial for unit tests: its number (also id and seed), state, swept
    /// settings and final metrics; everything else empty.
    pub(crate) fn for_test(
        number: i64,
        state: &str,
        params: &[(&str, &str)],
        metrics: &[(&str, f64)],
    ) -> TrialRow {
        TrialRow {
            id: number,
            number,
            key: format!("k{number}"),
            seed: number,
            state: state.into(),
            stop_reason: None,
            stop_epoch: None,
            best_epoch: None,
            attempts: 1,
            device: None,
            started_at: None,
            finished_at: None,
            duration_seconds: None,
            error: None,
            stored_config: "{}".into(),
            base_config: None,
            metrics_version: Some(crate::store::METRICS_VERSION),
            init: None,
            params: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            metrics: metrics.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
            artifacts: BTreeMap::new(),
        }
    }
}

/// Numbers as people read them: 4 decimals, or scientific when tiny/huge.
pub fn format_num(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        }
    } else if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

/// A result table: headers and rows.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Table {
    pub headers: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
}

#[derive(Clone, Debug, serde::Serialize)]
pub struct SweepInfo {
    pub id: i64,
    pub name: String,
    pub created_at: String,
    pub objective: String,
    pub direction: String,
    pub counts: StateCounts,
    pub best: Option<f64>,
    /// Where the sweep's files are (absolute), when the database recorded it.
    pub results_dir: Option<String>,
}

/// One trial with its swept parameters and final metrics.
#[derive(Clone, Debug, serde::Serialize)]
pub struct TrialRow {
    pub id: i64,
    pub number: i64,
    pub key: String,
    pub seed: i64,
    pub state: String,
    pub stop_reason: Option<String>,
    pub stop_epoch: Option<i64>,
    pub best_epoch: Option<i64>,
    pub attempts: i64,
    pub device: Option<String>,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    pub duration_seconds: Option<f64>,
    pub error: Option<String>,
    /// The configuration as stored: whole, or for a waiting grid trial its
    /// difference from `base_config` (migration 0006); [`TrialRow::config_json`]
    /// gives it whole. Empty where the query did not ask for it.
    #[serde(skip)]
    pub stored_config: String,
    #[serde(skip)]
    pub base_config: Option<std::sync::Arc<Json>>,
    /// What the metrics were recorded with (`store::METRICS_VERSION`); `None`
    /// for trials an older Sweep finished (no training diagnostics).
    pub metrics_version: Option<i64>,
    /// What the trial loaded from `model.init_from` (migration 0007).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init: Option<sweep_train::InitReport>,
    /// swept parameters, by name (canonical text)
    pub params: BTreeMap<String, String>,
    pub metrics: BTreeMap<String, f64>,
    pub artifacts: BTreeMap<String, String>,
}

fn err(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Store(format!("{what}: {e}"))
}

pub async fn sweeps(store: &Store) -> Result<Vec<SweepInfo>> {
    let rows: Vec<(i64, String, String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT id, name, created_at, objective, direction, results_dir FROM sweeps ORDER BY created_at",
    )
    .fetch_all(store.pool())
    .await
    .map_err(err("reading sweeps"))?;
    let mut out = Vec::new();
    for (id, name, created_at, objective, direction, results_dir) in rows {
        let counts = store.counts(id).await?;
        let agg = if direction == "minimize" {
            "MIN"
        } else {
            "MAX"
        };
        let (best,): (Option<f64>,) = sqlx::query_as(&format!(
            "SELECT {agg}(f.value) FROM final_metrics f JOIN trials t ON t.id = f.trial_id WHERE t.sweep_id = $1 AND t.state = 'complete' AND f.name = $2 AND f.value_kind = 'finite'"
        ))
        .bind(id)
        .bind(&objective)
        .fetch_one(store.pool())
        .await
        .map_err(err("reading the best objective"))?;
        out.push(SweepInfo {
            id,
            name,
            created_at,
            objective,
            direction,
            counts,
            best,
            results_dir,
        });
    }
    Ok(out)
}

pub async fn sweep(store: &Store, name: &str) -> Result<SweepInfo> {
    let all = sweeps(store).await?;
    let names: Vec<String> = all.iter().map(|s| s.name.clone()).collect();
    all.into_iter().find(|s| s.name == name).ok_or_else(|| {
        Error::Other(format!(
            "no sweep named `{name}` in this database; it has: {}",
            if names.is_empty() {
                "none".into()
            } else {
                names.join(", ")
            }
        ))
    })
}

impl SweepInfo {
    /// The results folder that holds this sweep's files (its `<name>/` folder is
    /// inside): `results` when given (`--results`: the folder moved), else the one
    /// the database recorded, else `results/` (sweeps recorded before the
    /// database kept it).
    pub fn results_dir(&self, results: Option<&std::path::Path>) -> std::path::PathBuf {
        match (results, &self.results_dir) {
            (Some(r), _) => r.to_path_buf(),
            (None, Some(r)) => std::path::PathBuf::from(r),
            (None, None) => std::path::PathBuf::from("results"),
        }
    }

    /// Where a file the database names relative to the sweep's folder (an
    /// artifact's path) is: the first of `--results` and the recorded folder
    /// that has it, or the error that names every folder tried.
    pub fn locate(
        &self,
        rel: &str,
        results: Option<&std::path::Path>,
    ) -> std::result::Result<std::path::PathBuf, String> {
        let mut tried: Vec<(std::path::PathBuf, &str)> = Vec::new();
        if let Some(r) = results {
            tried.push((r.to_path_buf(), "--results"));
        }
        match &self.results_dir {
            Some(r) => tried.push((r.into(), "recorded by the sweep")),
            None if results.is_none() => tried.push(("results".into(), "the default")),
            None => {}
        }
        for (dir, _) in &tried {
            let p = dir.join(&self.name).join(rel);
            if p.is_file() {
                return Ok(p);
            }
        }
        Err(format!(
            "{rel} of sweep `{}` not found in {}{}",
            self.name,
            tried
                .iter()
                .map(|(d, why)| format!("{} ({why})", d.join(&self.name).display()))
                .collect::<Vec<_>>()
                .join(" nor in "),
            if results.is_none() {
                "; pass --results DIR if the results folder moved"
            } else {
                ""
            }
        ))
    }
}

/// Where a search stands: its method and budget (from the recorded spec), the
/// configurations proposed, the best one so far (mean over its finished seeds)
/// and the pruned trials by the epoch they were stopped at.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SearchStatus {
    pub method: String,
    pub budget: Option<usize>,
    pub proposed: usize,
    /// (proposal number, mean objective over its complete seeds, seeds)
    pub best: Option<(i64, f64, usize)>,
    /// (epoch, pruned trials stopped there)
    pub pruned_at: Vec<(i64, i64)>,
    pub diverged: i64,
}

pub async fn search_status(store: &Store, info: &SweepInfo) -> Result<Option<SearchStatus>> {
    let (spec_text,): (String,) = sqlx::query_as("SELECT spec_text FROM sweeps WHERE id = $1")
        .bind(info.id)
        .fetch_one(store.pool())
        .await
        .map_err(err("reading the spec"))?;
    let table: Option<toml::Table> = spec_text.parse().ok();
    let search = table.as_ref().and_then(|t| t.get("search"));
    let method = search
        .and_then(|s| s.get("method"))
        .and_then(|m| m.as_str())
        .unwrap_or("grid")
        .to_string();
    let rows = store.proposal_history(info.id, &info.objective).await?;
    let pruned_at = store.pruned_by_epoch(info.id).await?;
    let (diverged,): (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM trials WHERE sweep_id = $1 AND state = 'pruned' AND stop_reason = 'diverged'",
    )
    .bind(info.id)
    .fetch_one(store.pool())
    .await
    .map_err(err("counting diverged trials"))?;
    if method == "grid" && rows.is_empty() && pruned_at.is_empty() {
        return Ok(None);
    }
    let maximize = info.direction == "maximize";
    let mut best: Option<(i64, f64, usize)> = None;
    for r in &rows {
        let Some((mean, n)) = r.mean_complete().filter(|_| !r.any_pruned()) else {
            continue;
        };
        let better = best.is_none_or(|(_, b, _)| if maximize { mean > b } else { mean < b });
        if better {
            best = Some((r.number, mean, n));
        }
    }
    Ok(Some(SearchStatus {
        method,
        budget: search
            .and_then(|s| s.get("trials"))
            .and_then(|v| v.as_integer())
            .map(|v| v as usize),
        proposed: rows.len(),
        best,
        pruned_at,
        diverged,
    }))
}

impl TrialRow {
    /// A waiting trial as [`trials_with`] reads it: no configuration, no
    /// metrics.
    fn waiting(id: i64, number: i64, key: String, seed: i64, attempts: i64) -> TrialRow {
        TrialRow {
            id,
            number,
            key,
            seed,
            state: "waiting".into(),
            stop_reason: None,
            stop_epoch: None,
            best_epoch: None,
            attempts,
            device: None,
            started_at: None,
            finished_at: None,
            duration_seconds: None,
            error: None,
            stored_config: String::new(),
            base_config: None,
            metrics_version: None,
            init: None,
            params: BTreeMap::new(),
            metrics: BTreeMap::new(),
            artifacts: BTreeMap::new(),
        }
    }

    /// The trial's whole configuration (JSON text): as stored, or for a
    /// waiting grid trial stored as its difference from a base (migration
    /// 0006), restored from the base.
    pub fn config_json(&self) -> String {
        let Some(base) = &self.base_config else {
            return self.stored_config.clone();
        };
        match serde_json::from_str::<Json>(&self.stored_config) {
            Ok(d) => crate::store::compact::apply(base, &d).to_string(),
            Err(_) => self.stored_config.clone(),
        }
    }
}

/// What a trial's numbers guarantee on a rerun of the same configuration,
/// seed and data, from the version they were recorded with and the device
/// they were trained on (docs/config.md, "Determinism").
pub fn reproducibility(metrics_version: Option<i64>, device: Option<&str>) -> String {
    let version = metrics_version.map_or("none".to_string(), |v| v.to_string());
    if device.is_some_and(|d| d.starts_with("cuda")) {
        return format!(
            "trained on a GPU (metrics version {version}): repeatable on the same GPU and software at best; candle's GPU reductions are not guaranteed to be deterministic"
        );
    }
    match metrics_version {
        Some(v) if v >= crate::store::THREAD_INDEPENDENT_SINCE => format!(
            "thread-independent (metrics version {v}): the same numbers for the same configuration, seed and data on any thread count, --jobs or machine (CPU)"
        ),
        _ => format!(
            "thread-dependent (metrics version {version}, recorded before thread-independent training): repeatable with the same thread count only; on another it can differ"
        ),
    }
}

pub async fn trials(store: &Store, sweep_id: i64) -> Result<Vec<TrialRow>> {
    load(store, sweep_id, None, Waiting::Whole, None).await
}

/// One trial of a sweep by its number, whole (`show`, `eval`).
pub async fn trial(store: &Store, sweep_id: i64, number: i64) -> Result<Option<TrialRow>> {
    Ok(load(store, sweep_id, None, Waiting::Whole, Some(number))
        .await?
        .pop())
}

/// As [`trials`], with only the named final metrics (plus the trial fields)
/// and, of a waiting trial, only its number, seed and swept settings: what `compare`,
/// the report and the ranking need (they count waiting trials per
/// configuration), at a fraction of the rows (a 50,000-trial grid is mostly
/// waiting).
pub async fn trials_with(
    store: &Store,
    sweep_id: i64,
    only: Option<&str>,
) -> Result<Vec<TrialRow>> {
    load(store, sweep_id, only, Waiting::Light, None).await
}

/// The trials that have started (running or finished), whole: what `status`
/// needs, without the waiting ones.
pub async fn started_trials(store: &Store, sweep_id: i64) -> Result<Vec<TrialRow>> {
    load(store, sweep_id, None, Waiting::Skip, None).await
}

/// How much of a waiting trial a query reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Whole,
    /// Its id, number, seed, attempts and swept settings (no key).
    Light,
    Skip,
}

async fn load(
    store: &Store,
    sweep_id: i64,
    only: Option<&str>,
    waiting: Waiting,
    number: Option<i64>,
) -> Result<Vec<TrialRow>> {
    // One row per trial: parameters, final metrics and artifacts are folded in by
    // the database (string_agg over their primary-key indexes), so a sweep of 100,000
    // trials is 100,000 rows through the driver, not millions.
    let sql = format!(
        "SELECT id, number, key, seed, state, stop_reason, stop_epoch, best_epoch, attempts, device, started_at, finished_at, duration_seconds, error, {config} AS config_json, base_id, metrics_version, init_json, \
           (SELECT string_agg(name || $3 || value_text, $4) FROM trial_params p WHERE p.trial_id = t.id AND p.swept = 1) AS params, \
           (SELECT string_agg(name || $3 || value_kind || $3 || COALESCE({}, ''), $4) FROM final_metrics f WHERE f.trial_id = t.id AND ($1 IS NULL OR f.name = $1)) AS metrics, \
           (SELECT string_agg(kind || $3 || path, $4) FROM artifacts a WHERE a.trial_id = t.id) AS artifacts \
         FROM trials t WHERE sweep_id = $2{started}{one} ORDER BY number",
        store.backend().float_text("value"),
        one = number.map(|n| format!(" AND number = {n}")).unwrap_or_default(),
        started = if waiting == Waiting::Whole {
            ""
        } else {
            " AND state IN ('running', 'complete', 'pruned', 'failed')"
        },
        // (the configurations only when every trial is asked for: `compare`
        // and the report read 50,000 trials without their 100 MB of JSON)
        config = if only.is_some() { "''" } else { "config_json" },
    );
    // Bases of trials stored as differences, each read and parsed once.
    let mut bases: BTreeMap<i64, std::sync::Arc<Json>> = BTreeMap::new();
    if only.is_none() {
        let rows: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, config_json FROM config_bases WHERE sweep_id = $1")
                .bind(sweep_id)
                .fetch_all(store.pool())
                .await
                .map_err(err("reading base configurations"))?;
        for (id, text) in rows {
            let json = serde_json::from_str(&text)
                .map_err(|e| Error::Store(format!("base configuration {id} is not JSON: {e}")))?;
            bases.insert(id, std::sync::Arc::new(json));
        }
    }
    let rows = sqlx::query(&sql)
        .bind(only)
        .bind(sweep_id)
        .bind("\u{1e}")
        .bind("\u{1f}")
        .fetch_all(store.pool())
        .await
        .map_err(err("reading trials"))?;
    let split = |s: Option<String>| -> Vec<Vec<String>> {
        s.map(|s| {
            s.split('\u{1f}')
                .map(|part| part.split('\u{1e}').map(str::to_string).collect())
                .collect()
        })
        .unwrap_or_default()
    };
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut t = TrialRow {
            id: r.get("id"),
            number: r.get("number"),
            key: r.get("key"),
            seed: r.get("seed"),
            state: r.get("state"),
            stop_reason: r.get("stop_reason"),
            stop_epoch: r.get("stop_epoch"),
            best_epoch: r.get("best_epoch"),
            attempts: r.get("attempts"),
            device: r.get("device"),
            started_at: r.get("started_at"),
            finished_at: r.get("finished_at"),
            duration_seconds: r.get("duration_seconds"),
            error: r.get("error"),
            stored_config: r.get("config_json"),
            base_config: r
                .get::<Option<i64>, _>("base_id")
                .and_then(|b| bases.get(&b).cloned()),
            metrics_version: r.get("metrics_version"),
            init: r
                .get::<Option<String>, _>("init_json")
                .and_then(|j| serde_json::from_str(&j).ok()),
            params: BTreeMap::new(),
            metrics: BTreeMap::new(),
            artifacts: BTreeMap::new(),
        };
        for kv in split(r.get("params")) {
            if let [k, v] = kv.as_slice() {
                t.params.insert(k.clone(), v.clone());
            }
        }
        for kv in split(r.get("metrics")) {
            if let [k, kind, v] = kv.as_slice() {
                t.metrics
                    .insert(k.clone(), from_value_kind(v.parse().ok(), kind));
            }
        }
        for kv in split(r.get("artifacts")) {
            if let [k, v] = kv.as_slice() {
                t.artifacts.insert(k.clone(), v.clone());
            }
        }
        // Trial fields that compare and sort like metrics.
        if let Some(e) = t.best_epoch {
            t.metrics.insert("best_epoch".into(), e as f64);
        }
        if let Some(e) = t.stop_epoch {
            t.metrics.insert("epochs_run".into(), e as f64);
        }
        if let Some(d) = t.duration_seconds {
            t.metrics.insert("train_seconds".into(), d);
        }
        out.push(t);
    }
    if waiting == Waiting::Light {
        // Grouped by swept settings in the database: one row per waiting
        // configuration, not per trial (each row through sqlx's SQLite worker
        // costs ~10 µs: 40,000 waiting trials were half of `compare`'s time).
        let rows: Vec<(Option<String>, String)> = sqlx::query_as(
            "SELECT params, string_agg(trial, $1) FROM (\
               SELECT CAST(id AS TEXT) || ' ' || CAST(number AS TEXT) || ' ' || CAST(seed AS TEXT) || ' ' || CAST(attempts AS TEXT) AS trial, \
                 (SELECT string_agg(name || $2 || value_text, $3) FROM trial_params p WHERE p.trial_id = t.id AND p.swept = 1) AS params \
               FROM trials t WHERE sweep_id = $4 AND state = 'waiting') w \
             GROUP BY params",
        )
        .bind(",")
        .bind("\u{1e}")
        .bind("\u{1f}")
        .bind(sweep_id)
        .fetch_all(store.pool())
        .await
        .map_err(err("reading waiting trials"))?;
        for (params, trials) in rows {
            let mut settings = BTreeMap::new();
            for kv in split(params) {
                if let [k, v] = kv.as_slice() {
                    settings.insert(k.clone(), v.clone());
                }
            }
            for trial in trials.split(',') {
                let n: Vec<i64> = trial.split(' ').filter_map(|x| x.parse().ok()).collect();
                let [id, number, seed, attempts] = n[..] else {
                    return Err(Error::Store(format!(
                        "reading waiting trials: unexpected `{trial}`"
                    )));
                };
                let mut t = TrialRow::waiting(id, number, String::new(), seed, attempts);
                t.params = settings.clone();
                out.push(t);
            }
        }
        out.sort_by_key(|t| t.number);
    }
    Ok(out)
}

/// A session that has not ended: a `sweep run` or `sweep worker` at work, or one
/// that died without saying so (its heartbeat tells which).
#[derive(Clone, Debug, serde::Serialize)]
pub struct LiveSession {
    pub host: String,
    pub pid: i64,
    pub started_at: String,
    pub heartbeat_at: String,
    /// Trials it holds now.
    pub running: i64,
}

/// The sessions of a sweep that have not ended, oldest first.
pub async fn live_sessions(store: &Store, sweep_id: i64) -> Result<Vec<LiveSession>> {
    let rows: Vec<(String, i64, String, String, i64)> = sqlx::query_as(
        "SELECT s.host, s.pid, s.started_at, s.heartbeat_at, \
           (SELECT COUNT(*) FROM trials t WHERE t.session_id = s.id AND t.state = 'running') \
         FROM sessions s WHERE s.sweep_id = $1 AND s.ended_at IS NULL ORDER BY s.id",
    )
    .bind(sweep_id)
    .fetch_all(store.pool())
    .await
    .map_err(err("reading sessions"))?;
    Ok(rows
        .into_iter()
        .map(
            |(host, pid, started_at, heartbeat_at, running)| LiveSession {
                host,
                pid,
                started_at,
                heartbeat_at,
                running,
            },
        )
        .collect())
}

/// Seconds from an RFC 3339 UTC time (as [`crate::store::now`] writes) to now.
pub fn seconds_since(t: &str) -> Option<f64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    Some(now - unix_seconds(t)?)
}

/// An RFC 3339 UTC time (as [`crate::store::now`] writes) as seconds since the
/// Unix epoch.
pub fn unix_seconds(t: &str) -> Option<f64> {
    let (date, time) = t.trim_end_matches('Z').split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut h = time.split(':');
    let (hh, mm) = (
        h.next()?.parse::<i64>().ok()?,
        h.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = h.next()?.parse().ok()?;
    // days from civil (Howard Hinnant)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + dd - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some((days * 86_400 + hh * 3600 + mm * 60) as f64 + ss)
}

/// The spec text a sweep was recorded with, if there is such a sweep.
pub async fn spec_text(store: &Store, name: &str) -> Result<Option<String>> {
    let row: Option<(String,)> = sqlx::query_as("SELECT spec_text FROM sweeps WHERE name = $1")
        .bind(name)
        .fetch_optional(store.pool())
        .await
        .map_err(err("reading the sweep's spec"))?;
    Ok(row.map(|r| r.0))
}

/// The sweep's configurations ranked over their seeds by `objective`
/// (complete trials).
pub async fn leaderboard(
    store: &Store,
    sweep_id: i64,
    objective: &str,
    maximize: bool,
) -> Result<crate::leaderboard::Leaderboard> {
    if store.counts(sweep_id).await?.complete == 0 {
        // nothing to rank (a large sweep just recorded: not 50,000 rows read)
        return Ok(crate::leaderboard::leaderboard(&[], objective, maximize));
    }
    let trials = trials_with(store, sweep_id, Some(objective)).await?;
    Ok(crate::leaderboard::leaderboard(
        &trials, objective, maximize,
    ))
}

/// Long-form per-epoch metrics: trial, seed, epoch, split, name, value.
pub async fn epochs(store: &Store, sweep_id: i64) -> Result<Table> {
    type EpochRow = (i64, i64, i64, String, String, Option<f64>, String);
    let rows: Vec<EpochRow> = sqlx::query_as(
        "SELECT t.number, t.seed, e.epoch, e.split, e.name, e.value, e.value_kind FROM epoch_metrics e JOIN trials t ON t.id = e.trial_id WHERE t.sweep_id = $1 ORDER BY t.number, e.epoch, e.split, e.name",
    )
    .bind(sweep_id)
    .fetch_all(store.pool())
    .await
    .map_err(err("reading epochs"))?;
    Ok(Table {
        headers: ["trial", "seed", "epoch", "metric", "value"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows: rows
            .into_iter()
            .map(|(n, seed, e, split, name, v, k)| {
                vec![
                    Cell::Int(n),
                    Cell::Int(seed),
                    Cell::Int(e),
                    Cell::Text(format!("{split}.{name}")),
                    Cell::Num(from_value_kind(v, &k)),
                ]
            })
            .collect(),
    })
}

/// Long-form confusion counts with class names.
pub async fn confusion(store: &Store, sweep_id: i64) -> Result<Table> {
    let rows: Vec<(i64, String, String, i64)> = sqlx::query_as(
        "SELECT t.number, ct.name, cp.name, c.count FROM confusion_cells c JOIN trials t ON t.id = c.trial_id \
         JOIN classes ct ON ct.sweep_id = t.sweep_id AND ct.class_index = c.true_index \
         JOIN classes cp ON cp.sweep_id = t.sweep_id AND cp.class_index = c.predicted_index \
         WHERE t.sweep_id = $1 ORDER BY t.number, c.true_index, c.predicted_index",
    )
    .bind(sweep_id)
    .fetch_all(store.pool())
    .await
    .map_err(err("reading confusion counts"))?;
    Ok(Table {
        headers: ["trial", "true_class", "predicted_class", "count"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows: rows
            .into_iter()
            .map(|(n, a, b, c)| vec![Cell::Int(n), Cell::Text(a), Cell::Text(b), Cell::Int(c)])
            .collect(),
    })
}

/// The export of `trials`: one row per trial, every swept parameter and final
/// metric a column. `sweep_dir` (the sweep's folder, when known) makes the
/// checkpoint column an absolute path; without it the path is relative to the
/// sweep's folder, as stored.
pub fn trials_table(trials: &[TrialRow], sweep_dir: Option<&std::path::Path>) -> Table {
    let mut params: Vec<String> = trials
        .iter()
        .flat_map(|t| t.params.keys().cloned())
        .collect();
    params.sort();
    params.dedup();
    // best_epoch, epochs_run and train_seconds are columns of their own already
    let fields = ["best_epoch", "epochs_run", "train_seconds"];
    let mut metrics: Vec<String> = trials
        .iter()
        .flat_map(|t| {
            t.metrics
                .keys()
                .filter(|k| !fields.contains(&k.as_str()))
                .cloned()
        })
        .collect();
    metrics.sort();
    metrics.dedup();
    let mut headers: Vec<String> = [
        "trial",
        "key",
        "seed",
        "state",
        "stop_reason",
        "epochs_run",
        "best_epoch",
        "attempts",
        "train_seconds",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    headers.extend(params.iter().cloned());
    headers.extend(metrics.iter().cloned());
    headers.extend(["checkpoint", "error"].iter().map(|s| s.to_string()));
    let opt_i = |v: Option<i64>| v.map(Cell::Int).unwrap_or(Cell::Null);
    let opt_s = |v: &Option<String>| v.clone().map(Cell::Text).unwrap_or(Cell::Null);
    let rows = trials
        .iter()
        .map(|t| {
            let mut r = vec![
                Cell::Int(t.number),
                Cell::Text(t.key.clone()),
                Cell::Int(t.seed),
                Cell::Text(t.state.clone()),
                opt_s(&t.stop_reason),
                opt_i(t.stop_epoch),
                opt_i(t.best_epoch),
                Cell::Int(t.attempts),
                t.duration_seconds.map(Cell::Num).unwrap_or(Cell::Null),
            ];
            r.extend(params.iter().map(|p| {
                t.params
                    .get(p)
                    .cloned()
                    .map(Cell::Text)
                    .unwrap_or(Cell::Null)
            }));
            r.extend(metrics.iter().map(|m| {
                t.metrics
                    .get(m)
                    .map(|v| Cell::Num(*v))
                    .unwrap_or(Cell::Null)
            }));
            r.push(
                t.artifacts
                    .get("checkpoint")
                    .map(|c| match sweep_dir {
                        Some(d) => Cell::Text(d.join(c).display().to_string()),
                        None => Cell::Text(c.clone()),
                    })
                    .unwrap_or(Cell::Null),
            );
            r.push(opt_s(&t.error));
            r
        })
        .collect();
    Table { headers, rows }
}

/// One cell of a comparison: the metric over the seeds of one configuration group.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareCell {
    pub row: String,
    pub col: String,
    pub summary: Summary,
    pub values: Vec<f64>,
    /// Difference of means from the baseline, and Welch's p-value.
    pub delta: Option<f64>,
    pub p_value: Option<f64>,
}

fn group_key(t: &TrialRow, params: &[String]) -> String {
    params
        .iter()
        .map(|p| format!("{p}={}", t.params.get(p).map(String::as_str).unwrap_or("-")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many trials an aggregate left out, and why (pruned by the pruner and
/// diverged counted apart).
pub fn excluded(trials: &[TrialRow], metric: &str) -> String {
    let count = |st: &str| trials.iter().filter(|t| t.state == st).count();
    let stopped = |reason: &str| {
        trials
            .iter()
            .filter(|t| t.state == "pruned" && t.stop_reason.as_deref() == Some(reason))
            .count()
    };
    let diverged = count("pruned") - stopped("pruned");
    let missing = |t: &&TrialRow| {
        t.state == "complete" && !t.metrics.get(metric).is_some_and(|v| v.is_finite())
    };
    // A metric an older Sweep did not record (the training diagnostics) is
    // absent, not undefined: say so apart.
    let older = |t: &&TrialRow| t.metrics_version.is_none() && !t.metrics.contains_key(metric);
    let before = trials.iter().filter(missing).filter(older).count();
    let no_value = trials.iter().filter(missing).count() - before;
    let mut parts = Vec::new();
    for (n, what) in [
        (stopped("pruned"), "pruned (stopped by the pruner)"),
        (diverged, "diverged"),
        (count("failed"), "failed"),
        (count("running") + count("waiting"), "unfinished"),
        (no_value, "without a finite value"),
        (
            before,
            "recorded before training diagnostics (an older Sweep; no value)",
        ),
    ] {
        if n > 0 {
            parts.push(format!("{n} {what}"));
        }
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("excluded from the aggregates: {}", parts.join(", "))
    }
}

/// Groups complete trials by `rows` × `cols` parameters and summarizes `metric` over
/// seeds; with a baseline (`param=value` pairs), adds differences and p-values.
pub fn compare(
    trials: &[TrialRow],
    rows: &[String],
    cols: &[String],
    metric: &str,
    baseline: &[crate::select::Condition],
) -> Result<Vec<CompareCell>> {
    let swept: Vec<&String> = trials
        .first()
        .map(|t| t.params.keys().collect())
        .unwrap_or_default();
    for p in rows
        .iter()
        .chain(cols)
        .chain(baseline.iter().map(|c| &c.param))
    {
        if !swept.contains(&p) {
            return Err(Error::Other(format!(
                "`{p}` is not a swept parameter of this sweep; swept: {}",
                swept
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    let mut groups: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    let mut base_vals = Vec::new();
    for t in trials.iter().filter(|t| t.state == "complete") {
        let Some(v) = t.metrics.get(metric).copied().filter(|v| v.is_finite()) else {
            continue;
        };
        groups
            .entry((group_key(t, rows), group_key(t, cols)))
            .or_default()
            .push(v);
        if !baseline.is_empty()
            && baseline
                .iter()
                .all(|c| t.params.get(&c.param).is_some_and(|v| c.matches(v)))
        {
            base_vals.push(v);
        }
    }
    if !baseline.is_empty() && base_vals.is_empty() {
        let b = baseline
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(",");
        return Err(Error::Other(format!(
            "no complete trial matches the baseline {b}"
        )));
    }
    let base_mean = stats::summarize(&base_vals).map(|s| s.mean);
    Ok(groups
        .into_iter()
        .filter_map(|((row, col), values)| {
            let summary = stats::summarize(&values)?;
            let delta = base_mean.map(|b| summary.mean - b);
            let p_value = if base_vals.is_empty() {
                None
            } else {
                stats::welch(&values, &base_vals).map(|w| w.2)
            };
            Some(CompareCell {
                row,
                col,
                summary,
                values,
                delta,
                p_value,
            })
        })
        .collect())
}

/// Main effect of each swept parameter: mean metric per value over all complete trials.
/// Sampled settings are continuous: every configuration has its own value, so
/// grouping by them groups nothing. A copy of `trials` where each of `params`
/// with more than `2 × bins` distinct numeric values is replaced by its
/// quantile bin, labelled `q1 [low, high]` … `qN [low, high]` (labels sort in
/// bin order; quantiles suit log-distributed settings as well).
pub fn bin_continuous(trials: &[TrialRow], params: &[String], bins: usize) -> Vec<TrialRow> {
    let mut out = trials.to_vec();
    let bins = bins.max(1);
    for p in params {
        let mut vals: Vec<f64> = trials
            .iter()
            .filter_map(|t| t.params.get(p).and_then(|v| v.parse::<f64>().ok()))
            .collect();
        vals.sort_by(f64::total_cmp);
        vals.dedup();
        if vals.len() <= 2 * bins
            || trials
                .iter()
                .any(|t| t.params.get(p).is_some_and(|v| v.parse::<f64>().is_err()))
        {
            continue;
        }
        // bin edges at the quantiles of the distinct values
        let edge = |k: usize| vals[(k * (vals.len() - 1)) / bins];
        let label = |x: f64| {
            let k = (1..bins).take_while(|k| x >= edge(*k)).count();
            format!(
                "q{} [{}, {}]",
                k + 1,
                format_num(edge(k)),
                format_num(edge(k + 1))
            )
        };
        for t in out.iter_mut() {
            if let Some(x) = t.params.get(p).and_then(|v| v.parse::<f64>().ok()) {
                t.params.insert(p.clone(), label(x));
            }
        }
    }
    out
}

pub fn effects(trials: &[TrialRow], metric: &str) -> Vec<(String, String, Summary)> {
    let mut by: BTreeMap<(String, String), Vec<f64>> = BTreeMap::new();
    for t in trials.iter().filter(|t| t.state == "complete") {
        let Some(v) = t.metrics.get(metric).copied().filter(|v| v.is_finite()) else {
            continue;
        };
        for (p, val) in &t.params {
            by.entry((p.clone(), val.clone())).or_default().push(v);
        }
    }
    by.into_iter()
        .filter_map(|((p, v), vals)| stats::summarize(&vals).map(|s| (p, v, s)))
        .collect()
}

/// Runs any query on a read-only connection; writes are refused by SQLite.
pub async fn sql(store: &Store, query: &str) -> Result<Table> {
    let rows = sqlx::query(query)
        .fetch_all(store.pool())
        .await
        .map_err(|e| {
            let msg = e.to_string();
            if msg.contains("readonly") || msg.contains("read-only") {
                Error::Other(format!(
                    "`sweep sql` is read-only: the database refused the statement ({msg})"
                ))
            } else {
                Error::Other(format!("query failed: {msg}"))
            }
        })?;
    let headers = rows
        .first()
        .map(|r| r.columns().iter().map(|c| c.name().to_string()).collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for r in &rows {
        let mut cells = Vec::new();
        for i in 0..r.columns().len() {
            let raw = r.try_get_raw(i).map_err(err("reading a column"))?;
            let cell = if raw.is_null() {
                Cell::Null
            } else {
                match raw.type_info().name() {
                    "BOOLEAN" => Cell::Int(i64::from(
                        r.try_get::<bool, _>(i).map_err(err("boolean column"))?,
                    )),
                    "SMALLINT" => Cell::Int(
                        r.try_get::<i16, _>(i)
                            .map_err(err("integer column"))?
                            .into(),
                    ),
                    "INTEGER" => Cell::Int(
                        r.try_get::<i32, _>(i)
                            .map_err(err("integer column"))?
                            .into(),
                    ),
                    "BIGINT" => Cell::Int(r.try_get::<i64, _>(i).map_err(err("integer column"))?),
                    "REAL" => Cell::Num(r.try_get::<f32, _>(i).map_err(err("real column"))?.into()),
                    "DOUBLE" => Cell::Num(r.try_get::<f64, _>(i).map_err(err("real column"))?),
                    "BLOB" => Cell::Text(format!(
                        "<{} bytes>",
                        r.try_get::<Vec<u8>, _>(i).map(|b| b.len()).unwrap_or(0)
                    )),
                    _ => Cell::Text(r.try_get::<String, _>(i).map_err(err("text column"))?),
                }
            };
            cells.push(cell);
        }
        out.push(cells);
    }
    Ok(Table { headers, rows: out })
}

/// Per-class metrics of one trial: (class name, precision, recall, f1, support).
pub async fn class_metrics(
    store: &Store,
    trial_id: i64,
) -> Result<Vec<(String, f64, f64, f64, i64)>> {
    sqlx::query_as(
        "SELECT c.name, m.precision, m.recall, m.f1, m.support FROM class_metrics m JOIN trials t ON t.id = m.trial_id \
         JOIN classes c ON c.sweep_id = t.sweep_id AND c.class_index = m.class_index WHERE m.trial_id = $1 ORDER BY m.class_index",
    )
    .bind(trial_id)
    .fetch_all(store.pool())
    .await
    .map_err(err("reading class metrics"))
}

/// Final metrics of a sweep's complete trials whose names start with one of
/// `prefixes` (`speed.`, `init.`), by trial id: the report's diagnostics
/// without reading every metric of every trial.
pub async fn metrics_with_prefixes(
    store: &Store,
    sweep_id: i64,
    prefixes: &[&str],
) -> Result<BTreeMap<i64, BTreeMap<String, f64>>> {
    let mut out: BTreeMap<i64, BTreeMap<String, f64>> = BTreeMap::new();
    for prefix in prefixes {
        // `LIKE` with `_` and `%` escaped: a prefix is matched literally
        let pattern = format!(
            "{}%",
            prefix
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let rows: Vec<(i64, String, Option<f64>, String)> = sqlx::query_as(
            "SELECT f.trial_id, f.name, f.value, f.value_kind FROM final_metrics f JOIN trials t ON t.id = f.trial_id \
             WHERE t.sweep_id = $1 AND t.state = 'complete' AND f.name LIKE $2 ESCAPE '\\'",
        )
        .bind(sweep_id)
        .bind(pattern)
        .fetch_all(store.pool())
        .await
        .map_err(err("reading diagnostics"))?;
        for (id, name, v, kind) in rows {
            out.entry(id)
                .or_default()
                .insert(name, from_value_kind(v, &kind));
        }
    }
    Ok(out)
}

/// The class names of a sweep, by index.
pub async fn class_names(store: &Store, sweep_id: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> =
        sqlx::query_as("SELECT name FROM classes WHERE sweep_id = $1 ORDER BY class_index")
            .bind(sweep_id)
            .fetch_all(store.pool())
            .await
            .map_err(err("reading classes"))?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// One start of a trial (`trial_attempts`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct AttemptRow {
    /// Every start is numbered (`trials/NNNN/attempt-K/` is its folder).
    pub attempt: i64,
    pub started_at: String,
    pub ended_at: Option<String>,
    /// complete, pruned, failed, interrupted (machine faults too: their error
    /// says so), orphaned; none while running.
    pub outcome: Option<String>,
    pub error: Option<String>,
}

/// Every start of a trial, first first.
pub async fn attempts(store: &Store, trial_id: i64) -> Result<Vec<AttemptRow>> {
    type Row = (i64, String, Option<String>, Option<String>, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT attempt, started_at, ended_at, outcome, error FROM trial_attempts WHERE trial_id = $1 ORDER BY attempt",
    )
    .bind(trial_id)
    .fetch_all(store.pool())
    .await
    .map_err(err("reading attempts"))?;
    Ok(rows
        .into_iter()
        .map(
            |(attempt, started_at, ended_at, outcome, error)| AttemptRow {
                attempt,
                started_at,
                ended_at,
                outcome,
                error,
            },
        )
        .collect())
}

/// The confusion counts of one trial as a dense `k × k` matrix.
pub async fn confusion_matrix(store: &Store, trial_id: i64, k: usize) -> Result<Vec<Vec<i64>>> {
    let cells: Vec<(i64, i64, i64)> = sqlx::query_as(
        "SELECT true_index, predicted_index, count FROM confusion_cells WHERE trial_id = $1",
    )
    .bind(trial_id)
    .fetch_all(store.pool())
    .await
    .map_err(err("reading confusion counts"))?;
    let mut m = vec![vec![0; k]; k];
    for (t, p, c) in cells {
        if (t as usize) < k && (p as usize) < k {
            m[t as usize][p as usize] = c;
        }
    }
    Ok(m)
}

/// The per-epoch curve of one trial: epoch → metric name → value.
pub async fn curve(store: &Store, trial_id: i64) -> Result<BTreeMap<i64, BTreeMap<String, f64>>> {
    let rows: Vec<(i64, String, String, Option<f64>, String)> = sqlx::query_as("SELECT epoch, split, name, value, value_kind FROM epoch_metrics WHERE trial_id = $1 ORDER BY epoch")
        .bind(trial_id)
        .fetch_all(store.pool())
        .await
        .map_err(err("reading epochs"))?;
    let mut out: BTreeMap<i64, BTreeMap<String, f64>> = BTreeMap::new();
    for (e, split, name, v, k) in rows {
        out.entry(e)
            .or_default()
            .insert(format!("{split}.{name}"), from_value_kind(v, &k));
    }
    Ok(out)
}

#[cfg(test)]
mod time_tests {
    use super::seconds_since;
    use crate::store::{now, seconds_ago};

    #[test]
    fn heartbeat_ages_read_back_from_the_stored_text() {
        assert!(seconds_since(&now()).unwrap().abs() < 1.0);
        let a = seconds_since(&seconds_ago(3600.0 * 24.0 * 400.0)).unwrap();
        assert!((a - 3600.0 * 24.0 * 400.0).abs() < 1.0, "{a}");
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let e = seconds_since("1970-01-01T00:00:10.500Z").unwrap();
        assert!((e - (now_s - 10.5)).abs() < 1.0, "{e}");
        assert_eq!(seconds_since("yesterday"), None);
    }
}

#[cfg(test)]
mod bin_tests {
    use super::*;

    fn row(number: i64, lr: f64, arch: &str) -> TrialRow {
        TrialRow::for_test(
            number,
            "complete",
            &[
                ("train.learning_rate", &lr.to_string()),
                ("model.arch", arch),
            ],
            &[],
        )
    }

    #[test]
    fn sampled_settings_group_in_quantile_bins_and_choices_stay() {
        // 20 log-spread learning rates, 2 architectures
        let trials: Vec<TrialRow> = (0..20)
            .map(|i| {
                row(
                    i,
                    1e-4 * 1.3f64.powi(i as i32),
                    if i % 2 == 0 { "mlp" } else { "cnn" },
                )
            })
            .collect();
        let keys = vec!["train.learning_rate".to_string(), "model.arch".to_string()];
        let b = bin_continuous(&trials, &keys, 4);
        let labels: std::collections::BTreeSet<&String> =
            b.iter().map(|t| &t.params["train.learning_rate"]).collect();
        assert_eq!(labels.len(), 4, "{labels:?}");
        assert!(labels.iter().all(|l| l.starts_with('q')));
        // every bin holds 4 or 5 of the 20, in order of the value
        let counts: Vec<usize> = labels
            .iter()
            .map(|l| {
                b.iter()
                    .filter(|t| &&t.params["train.learning_rate"] == l)
                    .count()
            })
            .collect();
        assert!(counts.iter().all(|c| (4..=6).contains(c)), "{counts:?}");
        assert!(b[0].params["train.learning_rate"].starts_with("q1 ["));
        assert!(b[19].params["train.learning_rate"].starts_with("q4 ["));
        // a choice is not binned, nor a setting with few values
        assert_eq!(b[3].params["model.arch"], "cnn");
        let few = bin_continuous(&trials[..6], &keys, 4);
        assert_eq!(few[5].params, trials[5].params);
    }
}

#[cfg(test)]
mod reproducibility_tests {
    use super::reproducibility;

    #[test]
    fn a_trials_numbers_say_what_a_rerun_gives() {
        let new = reproducibility(Some(3), Some("cpu"));
        assert!(
            new.starts_with("thread-independent (metrics version 3)"),
            "{new}"
        );
        for old in [
            reproducibility(Some(2), Some("cpu")),
            reproducibility(None, None),
        ] {
            assert!(old.starts_with("thread-dependent"), "{old}");
        }
        let gpu = reproducibility(Some(3), Some("cuda:0"));
        assert!(gpu.starts_with("trained on a GPU"), "{gpu}");
    }
}
