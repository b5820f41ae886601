//! Mirrors a sweep into an MLflow tracking server: one experiment per sweep, a
//! parent run for the sweep and a nested child run per trial (MLflow's own
//! layout for hyperparameter searches), filled from the results database.
//!
//! The database is the source and the backlog: a pass ([`Exporter::pass`])
//! compares what the store holds with what the server already has and sends
//! the difference, so live logging (passes every few seconds while `sweep run`
//! goes), a resume after `kill -9`, a server that was down and `sweep mlflow
//! sync` afterwards are one mechanism. What the server has is read from the
//! server itself: every child run carries its trial's key as a tag
//! (`sweep.trial_key`) and markers of what was sent (`sweep.sent_attempt`,
//! `sweep.sent_epochs`, `sweep.sent_state`), each written in the same
//! `log-batch` as the data it marks or after it, so a pass that dies half way
//! is redone, never doubled: metrics carry fixed timestamps (the attempt's start
//! plus its epochs' seconds), and the server keeps one copy of an identical
//! metric; params and tags are set to the same values.
//!
//! Only the process that runs the sweep (or `sync`) talks to MLflow; trial
//! workers never do. Nothing here can fail a trial: the scheduler does not know
//! this module exists.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use serde_json::Value as Json;
use sweep_mlflow::{Metric, Run, RunStatus, Tracking};

use crate::error::{Error, Result};
use crate::store::Store;

/// Where and how a sweep is mirrored.
#[derive(Clone, Debug)]
pub struct Target {
    pub tracking: Tracking,
    /// The experiment's name (default: the sweep's name).
    pub experiment: Option<String>,
    /// Upload each finished trial's best checkpoint (`best.safetensors`).
    pub checkpoints: bool,
    /// The results folder (`--results`), when not the one the sweep recorded:
    /// checkpoints are read from it.
    pub results: Option<PathBuf>,
    /// The sweep's HTML report as just written (else one is made for the
    /// parent run).
    pub report: Option<PathBuf>,
}

/// What one pass found and did.
#[derive(Clone, Debug, Default)]
pub struct PassReport {
    pub experiment_id: String,
    /// The UI's page of the experiment.
    pub url: String,
    /// Trials that have started at least once.
    pub started: usize,
    /// Of those, whose results are all in MLflow (finished and sent, or
    /// running with every recorded epoch sent).
    pub in_sync: usize,
    /// Child runs created by this exporter (every pass so far).
    pub created: usize,
    /// Trials whose run this pass changed.
    pub updated: usize,
    /// Errors the server gave for single trials (it refused their data); the
    /// pass went on with the others. A server that is unreachable ends the
    /// pass with an error instead.
    pub refused: Vec<String>,
    /// Whether the parent run reflects every finished trial.
    pub parent_in_sync: bool,
}

impl PassReport {
    /// Started trials whose results are not (all) in MLflow yet.
    pub fn pending(&self) -> usize {
        self.started - self.in_sync
    }
}

/// What the server holds of one trial, as its run's markers say.
#[derive(Clone, Debug)]
struct Sent {
    run: Run,
    attempt: i64,
    epochs: i64,
    state: Option<String>,
    params: bool,
    status: Option<RunStatus>,
    /// The timestamp each epoch was logged with (`sweep.epoch_times`): an
    /// epoch logged again by a later attempt reuses it, so that the same value
    /// (training is deterministic) is the same metric, which the server keeps
    /// once.
    times: Vec<i64>,
}

/// Epoch timestamps as a tag: the first in milliseconds, then differences.
fn times_tag(times: &[i64]) -> String {
    let mut out = Vec::with_capacity(times.len());
    let mut prev = 0;
    for (i, t) in times.iter().enumerate() {
        out.push(if i == 0 { *t } else { t - prev }.to_string());
        prev = *t;
    }
    out.join(",")
}

fn parse_times(tag: &str) -> Vec<i64> {
    let mut out = Vec::new();
    let mut acc = 0i64;
    for (i, part) in tag.split(',').enumerate() {
        let Ok(v) = part.parse::<i64>() else {
            return Vec::new();
        };
        acc = if i == 0 { v } else { acc + v };
        out.push(acc);
    }
    out
}

impl Sent {
    fn of(run: Run) -> Sent {
        let num = |k: &str| {
            run.tags
                .get(k)
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0)
        };
        Sent {
            attempt: num("sweep.sent_attempt"),
            epochs: num("sweep.sent_epochs"),
            state: run
                .tags
                .get("sweep.sent_state")
                .filter(|v| !v.is_empty())
                .cloned(),
            params: run.tags.contains_key("sweep.sent_params"),
            status: run.status,
            times: run
                .tags
                .get("sweep.epoch_times")
                .map(|t| parse_times(t))
                .unwrap_or_default(),
            run,
        }
    }
}

/// A trial's progress as the store has it (one light row per started trial).
#[derive(Clone, Debug)]
struct Progress {
    id: i64,
    number: i64,
    key: String,
    state: String,
    attempt: i64,
    epochs: Option<i64>,
    /// The epoch the final metrics are from.
    report_epoch: Option<i64>,
}

/// The sweep's row, for the experiment and the parent run.
#[derive(Clone, Debug)]
struct SweepRow {
    id: i64,
    name: String,
    description: Option<String>,
    spec_text: String,
    spec_hash: String,
    objective: String,
    direction: String,
    dataset: String,
    dataset_fingerprint: String,
    git_commit: Option<String>,
    host: String,
    created_at: String,
}

/// Mirrors one sweep; keeps what it learned of the server between passes.
pub struct Exporter {
    target: Target,
    sweep: String,
    experiment: Option<String>,
    parent: Option<Sent>,
    runs: HashMap<String, Sent>,
    /// The server's runs were read (a pass after an error reads them again).
    known: bool,
    /// Child runs created so far.
    created: usize,
    /// What the server refused, by trial key: (run, attempt, state, epochs,
    /// message). Not sent again until one of those changes.
    refused: HashMap<String, (String, i64, String, i64, String)>,
    /// Something was refused: read the server's runs again next time (a run
    /// deleted in the UI is refused until it is re-created).
    reread: bool,
    /// When the parent's summary was last sent (live: at most every 30 s).
    summary_at: Option<std::time::Instant>,
    /// Where the sweep's files are (read once, for the checkpoints).
    info: Option<crate::query::SweepInfo>,
}

fn sql_err(what: &'static str) -> impl Fn(sqlx::Error) -> Error {
    move |e| Error::Store(format!("{what}: {e}"))
}

fn tracking_err(e: sweep_mlflow::Error) -> Error {
    Error::Other(e.to_string())
}

/// Why a trial could not be sent: the server's answer, or the store.
enum TrialErr {
    Server(sweep_mlflow::Error),
    Store(Error),
}

impl From<sweep_mlflow::Error> for TrialErr {
    fn from(e: sweep_mlflow::Error) -> Self {
        TrialErr::Server(e)
    }
}

/// A stored time (RFC 3339, UTC) in milliseconds since the Unix epoch.
pub fn unix_ms(t: &str) -> Option<i64> {
    crate::query::unix_seconds(t).map(|s| (s * 1000.0).round() as i64)
}

/// Runs blocking HTTP off the scheduler's threads.
async fn call<T: Send + 'static>(
    t: &Tracking,
    f: impl FnOnce(&Tracking) -> sweep_mlflow::Result<T> + Send + 'static,
) -> std::result::Result<T, sweep_mlflow::Error> {
    let t = t.clone();
    tokio::task::spawn_blocking(move || f(&t))
        .await
        .unwrap_or_else(|e| {
            Err(sweep_mlflow::Error::Config(format!(
                "the MLflow call panicked: {e}"
            )))
        })
}

/// `{"a": {"b": 1}}` as `a.b = 1`, list and scalar values as their text.
pub fn flatten(prefix: &str, v: &Json, out: &mut Vec<(String, String)>) {
    match v {
        Json::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, x, out);
            }
        }
        other => out.push((prefix.to_string(), crate::plan::param_text(other))),
    }
}

/// A run name from the trial's swept settings: `7 dropout=0.5 lr=0.01 seed=2`.
fn run_name(number: i64, swept: &BTreeMap<String, String>, seed: i64) -> String {
    let mut s = format!("{number}");
    for (k, v) in swept {
        let short = k.rsplit('.').next().unwrap_or(k);
        s += &format!(" {short}={}", crate::leaderboard::short_value(v));
    }
    s + &format!(" seed={seed}")
}

/// A metric name MLflow accepts: letters, digits, `_ - . / ` and spaces;
/// anything else (a class named `nevus (benign)` in `val.f1.CLASS`) becomes `_`.
pub fn metric_key(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_alphanumeric() || "_-./ ".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The MLflow status a trial's state maps to.
pub fn status_of(state: &str) -> RunStatus {
    match state {
        "complete" => RunStatus::Finished,
        "failed" => RunStatus::Failed,
        "running" => RunStatus::Running,
        // pruned: stopped early by the pruner; waiting after a start:
        // interrupted (it runs again, in the same run, when resumed)
        _ => RunStatus::Killed,
    }
}

fn finished(state: &str) -> bool {
    matches!(state, "complete" | "pruned" | "failed")
}

impl Exporter {
    pub fn new(target: Target, sweep: &str) -> Exporter {
        Exporter {
            target,
            sweep: sweep.to_string(),
            experiment: None,
            parent: None,
            runs: HashMap::new(),
            known: false,
            created: 0,
            refused: HashMap::new(),
            reread: false,
            summary_at: None,
            info: None,
        }
    }

    pub fn tracking(&self) -> &Tracking {
        &self.target.tracking
    }

    /// The next pass reads the server's runs again (the last pass after a
    /// sweep: a call a dropped pass left running may have created a run).
    pub fn reread(&mut self) {
        self.known = false;
    }

    /// Tries per call from now on (one: a server already found down is not
    /// waited for again).
    pub fn set_tries(&mut self, tries: u32) {
        self.target.tracking.set_tries(tries);
    }

    /// Sends what the store has and the server lacks. `live`: the sweep is
    /// running (the parent run stays RUNNING; the report is not uploaded yet).
    /// An unreachable server ends the pass with an error (the next pass starts
    /// over from what the server has); a refusal of one trial's data is
    /// counted in the report and the pass goes on.
    ///
    /// None: the sweep is not in the database (yet).
    ///
    /// A pass may be dropped half way (a deadline): the next one reads the
    /// server's runs again rather than trust what this one learned.
    pub async fn pass(&mut self, store: &Store, live: bool) -> Result<Option<PassReport>> {
        let known = std::mem::replace(&mut self.known, false) && !self.reread;
        self.reread = false;
        let r = self.pass_inner(store, live, known).await;
        // after an error (or a pass dropped half way), the server's state is
        // read again
        // (a pass that found no sweep read nothing from the server)
        self.known = matches!(r, Ok(Some(_)));
        r
    }

    async fn pass_inner(
        &mut self,
        store: &Store,
        live: bool,
        known: bool,
    ) -> Result<Option<PassReport>> {
        type Row = (
            i64,
            String,
            Option<String>,
            String,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            String,
            String,
        );
        let r: Option<Row> = sqlx::query_as(
            "SELECT id, name, description, spec_text, spec_hash, objective, direction, dataset, dataset_fingerprint, git_commit, host, created_at FROM sweeps WHERE name = $1",
        )
        .bind(&self.sweep)
        .fetch_optional(store.pool())
        .await
        .map_err(sql_err("reading the sweep"))?;
        let Some(r) = r else {
            return Ok(None);
        };
        let sweep = SweepRow {
            id: r.0,
            name: r.1,
            description: r.2,
            spec_text: r.3,
            spec_hash: r.4,
            objective: r.5,
            direction: r.6,
            dataset: r.7,
            dataset_fingerprint: r.8,
            git_commit: r.9,
            host: r.10,
            created_at: r.11,
        };
        let t = self.target.tracking.clone();
        let experiment = match &self.experiment {
            Some(e) => e.clone(),
            None => {
                let name = self.target.experiment.clone().unwrap_or(sweep.name.clone());
                let mut tags = vec![
                    ("sweep.sweep".to_string(), sweep.name.clone()),
                    // the runs table, not MLflow 3's GenAI overview, first
                    (
                        "mlflow.experimentKind".to_string(),
                        "custom_model_development".to_string(),
                    ),
                ];
                if let Some(d) = &sweep.description {
                    tags.push(("mlflow.note.content".into(), d.clone()));
                }
                let id = call(&t, move |t| t.ensure_experiment(&name, &tags))
                    .await
                    .map_err(tracking_err)?;
                self.experiment = Some(id.clone());
                id
            }
        };
        if !known {
            // this sweep, not an earlier one of the same name (another
            // database, or results removed and run again)
            let filter = format!(
                "tags.`sweep.sweep` = {} and tags.`sweep.recorded_at` = {}",
                sweep_mlflow::filter_string(&sweep.name),
                sweep_mlflow::filter_string(&sweep.created_at)
            );
            let exp = experiment.clone();
            let runs = call(&t, move |t| t.search_runs(&exp, &filter))
                .await
                .map_err(tracking_err)?;
            self.runs.clear();
            self.parent = None;
            // A trial (or the sweep) with two runs: a call whose answer was
            // lost, or two processes sending at once. The run that holds most
            // is kept, the others are deleted.
            let mut by_key: BTreeMap<String, Vec<Run>> = BTreeMap::new();
            for r in runs {
                let key = match r.tags.get("sweep.role").map(String::as_str) {
                    Some("parent") => String::new(),
                    Some("trial") => match r.tags.get("sweep.trial_key") {
                        Some(k) => k.clone(),
                        None => continue,
                    },
                    _ => continue,
                };
                by_key.entry(key).or_default().push(r);
            }
            for (key, mut runs) in by_key {
                // (a parent: the one with the summary and the spec)
                runs.sort_by_key(|r| {
                    let s = Sent::of(r.clone());
                    (
                        std::cmp::Reverse(s.state.is_some()),
                        std::cmp::Reverse(s.epochs),
                        std::cmp::Reverse(s.params),
                        std::cmp::Reverse(r.tags.contains_key("sweep.sent_summary")),
                        std::cmp::Reverse(r.tags.contains_key("sweep.sent_spec")),
                        r.start_time,
                        r.id.clone(),
                    )
                });
                for extra in runs.drain(1..) {
                    call(&t, move |t| t.delete_run(&extra.id))
                        .await
                        .map_err(tracking_err)?;
                }
                let keep = Sent::of(runs.pop().expect("one run per key"));
                if key.is_empty() {
                    self.parent = Some(keep);
                } else {
                    self.runs.insert(key, keep);
                }
            }
        }
        let mut report = PassReport {
            url: t.experiment_url(&experiment),
            experiment_id: experiment.clone(),
            ..PassReport::default()
        };
        let parent = match &self.parent {
            Some(p) => p.run.clone(),
            None => {
                let p = self.create_parent(&sweep, &experiment).await?;
                self.parent = Some(Sent::of(p.clone()));
                p
            }
        };

        type P = (
            i64,
            i64,
            String,
            String,
            Option<i64>,
            Option<i64>,
            Option<i64>,
        );
        let rows: Vec<P> = sqlx::query_as(
            "SELECT t.id, t.number, t.key, t.state, t.report_epoch, \
               (SELECT CAST(MAX(a.attempt) AS BIGINT) FROM trial_attempts a WHERE a.trial_id = t.id) AS attempt, \
               (SELECT CAST(MAX(e.epoch) AS BIGINT) FROM epoch_metrics e WHERE e.trial_id = t.id) AS epochs \
             FROM trials t WHERE t.sweep_id = $1 AND EXISTS (SELECT 1 FROM trial_attempts a WHERE a.trial_id = t.id) ORDER BY t.number",
        )
        .bind(sweep.id)
        .fetch_all(store.pool())
        .await
        .map_err(sql_err("reading the trials' progress"))?;
        let rows: Vec<Progress> = rows
            .into_iter()
            .map(
                |(id, number, key, state, report_epoch, attempt, epochs)| Progress {
                    id,
                    number,
                    key,
                    state,
                    attempt: attempt.unwrap_or(1),
                    epochs,
                    report_epoch,
                },
            )
            .collect();
        report.started = rows.len();
        for p in &rows {
            if self.in_sync(p, &parent.id) {
                report.in_sync += 1;
                continue;
            }
            let now = (
                self.runs
                    .get(&p.key)
                    .map(|s| s.run.id.clone())
                    .unwrap_or_default(),
                p.attempt,
                p.state.clone(),
                p.epochs.unwrap_or(0),
            );
            if let Some(r) = self.refused.get(&p.key) {
                if (&r.0, r.1, &r.2, r.3) == (&now.0, now.1, &now.2, now.3) {
                    // refused as it is: not sent again until it changes
                    report.refused.push(format!("trial {}: {}", p.number, r.4));
                    continue;
                }
            }
            match self
                .send_trial(store, &sweep, &experiment, &parent, p)
                .await
            {
                Ok(created) => {
                    report.updated += 1;
                    self.created += created as usize;
                    self.refused.remove(&p.key);
                    if self.in_sync(p, &parent.id) {
                        report.in_sync += 1;
                    }
                }
                Err(TrialErr::Server(e)) if e.is_transient() => return Err(tracking_err(e)),
                Err(TrialErr::Server(e)) => {
                    report.refused.push(format!("trial {}: {e}", p.number));
                    let run = self
                        .runs
                        .get(&p.key)
                        .map(|s| s.run.id.clone())
                        .unwrap_or_default();
                    self.refused
                        .insert(p.key.clone(), (run, now.1, now.2, now.3, e.to_string()));
                    self.reread = true;
                }
                Err(TrialErr::Store(e)) => return Err(e),
            }
        }
        report.parent_in_sync = self.send_parent(store, &sweep, &rows, live).await?;
        report.created = self.created;
        Ok(Some(report))
    }

    /// Whether the server has everything of this trial the store has (under
    /// the sweep's current parent run).
    fn in_sync(&self, p: &Progress, parent: &str) -> bool {
        let Some(s) = self.runs.get(&p.key) else {
            return false;
        };
        if s.run.tags.get("mlflow.parentRunId").map(String::as_str) != Some(parent) {
            return false;
        }
        let status = status_of(&p.state);
        if finished(&p.state) {
            s.state.as_deref() == Some(p.state.as_str())
                && s.attempt == p.attempt
                && s.status == Some(status)
        } else {
            s.params
                && s.status == Some(status)
                && (p.state != "running"
                    || (s.attempt == p.attempt && s.epochs >= p.epochs.unwrap_or(0)))
        }
    }

    async fn create_parent(&self, sweep: &SweepRow, experiment: &str) -> Result<Run> {
        let t = self.target.tracking.clone();
        let mut tags = vec![
            ("sweep.sweep".to_string(), sweep.name.clone()),
            ("sweep.role".into(), "parent".into()),
            (
                "sweep.objective".into(),
                format!("{} ({})", sweep.objective, sweep.direction),
            ),
            ("sweep.dataset".into(), sweep.dataset.clone()),
            (
                "sweep.dataset_fingerprint".into(),
                sweep.dataset_fingerprint.clone(),
            ),
            ("sweep.spec_hash".into(), sweep.spec_hash.clone()),
            ("sweep.host".into(), sweep.host.clone()),
            ("mlflow.source.name".into(), "sweep".into()),
            ("mlflow.source.type".into(), "LOCAL".into()),
        ];
        if let Some(c) = &sweep.git_commit {
            tags.push(("mlflow.source.git.commit".into(), c.clone()));
            tags.push(("sweep.git_commit".into(), c.clone()));
        }
        if let Some(d) = &sweep.description {
            tags.push(("mlflow.note.content".into(), d.clone()));
        }
        let (exp, name) = (experiment.to_string(), sweep.name.clone());
        // it starts when the sweep was recorded (before its trials)
        let start = unix_ms(&sweep.created_at).unwrap_or_else(sweep_mlflow::now_ms);
        tags.push(("sweep.recorded_at".into(), sweep.created_at.clone()));
        // (the spec is uploaded by the parent's summary, with its own marker)
        call(&t, move |t| t.create_run(&exp, &name, start, &tags))
            .await
            .map_err(tracking_err)
    }

    /// Brings one trial's run up to the store. Returns whether it created the run.
    async fn send_trial(
        &mut self,
        store: &Store,
        sweep: &SweepRow,
        experiment: &str,
        parent: &Run,
        p: &Progress,
    ) -> std::result::Result<bool, TrialErr> {
        let local = TrialErr::Store;
        let Some(trial) = crate::query::trial(store, sweep.id, p.number)
            .await
            .map_err(local)?
        else {
            return Ok(false);
        };
        let attempts = crate::query::attempts(store, p.id).await.map_err(local)?;
        let start_ms = attempts
            .iter()
            .find(|a| a.attempt == p.attempt)
            .and_then(|a| unix_ms(&a.started_at))
            .unwrap_or_else(sweep_mlflow::now_ms);
        let t = self.target.tracking.clone();
        let mut created = false;
        let mut sent = match self.runs.get(&p.key) {
            Some(s) => s.clone(),
            None => {
                let mut tags = vec![
                    ("mlflow.parentRunId".to_string(), parent.id.clone()),
                    ("sweep.sweep".into(), sweep.name.clone()),
                    ("sweep.role".into(), "trial".into()),
                    ("sweep.trial".into(), p.number.to_string()),
                    ("sweep.trial_key".into(), p.key.clone()),
                    ("sweep.recorded_at".into(), sweep.created_at.clone()),
                    (
                        "sweep.dataset_fingerprint".into(),
                        sweep.dataset_fingerprint.clone(),
                    ),
                    ("mlflow.source.name".into(), "sweep".into()),
                    ("mlflow.source.type".into(), "LOCAL".into()),
                ];
                if let Some(c) = &sweep.git_commit {
                    tags.push(("mlflow.source.git.commit".into(), c.clone()));
                    tags.push(("sweep.git_commit".into(), c.clone()));
                }
                let name = run_name(p.number, &trial.params, trial.seed);
                let exp = experiment.to_string();
                let run = call(&t, move |t| t.create_run(&exp, &name, start_ms, &tags)).await?;
                created = true;
                let s = Sent::of(run);
                self.runs.insert(p.key.clone(), s.clone());
                s
            }
        };
        let run_id = sent.run.id.clone();

        // Tags that follow the trial, and the params once.
        let mut tags: Vec<(String, String)> = vec![
            ("sweep.state".into(), p.state.clone()),
            ("sweep.attempt".into(), p.attempt.to_string()),
        ];
        if sent.run.tags.get("mlflow.parentRunId") != Some(&parent.id) {
            // the sweep's parent run was re-created (deleted in the UI, or a
            // duplicate removed): the trial nests under the current one
            tags.push(("mlflow.parentRunId".into(), parent.id.clone()));
            sent.run
                .tags
                .insert("mlflow.parentRunId".into(), parent.id.clone());
        }
        if let Some(d) = &trial.device {
            tags.push(("sweep.device".into(), d.clone()));
        }
        if let Some(r) = &trial.stop_reason {
            tags.push(("sweep.stop_reason".into(), r.clone()));
        }
        let mut params = Vec::new();
        if !sent.params {
            let config: Json = serde_json::from_str(&trial.config_json()).unwrap_or(Json::Null);
            flatten("", &config, &mut params);
            // (`train.seed` is the trial's seed)
            params.retain(|(k, _)| !k.is_empty());
            tags.push(("sweep.sent_params".into(), "1".into()));
        }

        // Epochs not sent yet (all of them for a new attempt).
        let from = if sent.attempt == p.attempt {
            sent.epochs
        } else {
            0
        };
        let curve = crate::query::curve(store, p.id).await.map_err(local)?;
        let mut metrics = Vec::new();
        let mut last = from;
        // an epoch's time: the one it was logged with before (by an earlier
        // attempt), else the previous epoch's plus this epoch's seconds
        let mut times = sent.times.clone();
        let mut previous = start_ms;
        let mut elapsed = 0.0;
        for (epoch, values) in &curve {
            elapsed += values
                .get("time.epoch_seconds")
                .copied()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .unwrap_or(0.0);
            let i = (*epoch - 1).max(0) as usize;
            let timestamp = match times.get(i) {
                Some(t) => *t,
                None => {
                    // this attempt's clock, after the epoch before it
                    let t = (start_ms + (elapsed * 1000.0).round() as i64).max(previous + 1);
                    if i == times.len() {
                        times.push(t);
                    }
                    t
                }
            };
            previous = timestamp;
            if *epoch <= from {
                continue;
            }
            for (name, v) in values {
                metrics.push(Metric {
                    key: metric_key(name),
                    value: *v,
                    step: *epoch,
                    timestamp,
                });
            }
            last = *epoch;
        }
        tags.push(("sweep.sent_attempt".into(), p.attempt.to_string()));
        tags.push(("sweep.sent_epochs".into(), last.to_string()));
        let times_text = times_tag(&times);
        // (a very long history keeps the prefix it has: still valid)
        if times != sent.times && times_text.len() <= sweep_mlflow::TAG_VALUE_MAX {
            tags.push(("sweep.epoch_times".into(), times_text));
            sent.times = times;
        }
        {
            let (id, m, pa, ta) = (run_id.clone(), metrics, params, tags);
            call(&t, move |t| t.log_batch(&id, &m, &pa, &ta)).await?;
        }
        sent.params = true;
        sent.attempt = p.attempt;
        sent.epochs = last;

        if finished(&p.state) {
            self.send_final(store, &trial, &sent.run, p, start_ms)
                .await?;
            let end = trial
                .finished_at
                .as_deref()
                .and_then(unix_ms)
                .unwrap_or_else(sweep_mlflow::now_ms);
            let status = status_of(&p.state);
            let id = run_id.clone();
            call(&t, move |t| t.update_run(&id, status, Some(end))).await?;
            let (id, state) = (run_id.clone(), p.state.clone());
            call(&t, move |t| {
                t.log_batch(&id, &[], &[], &[("sweep.sent_state".into(), state)])
            })
            .await?;
            sent.status = Some(status);
            sent.state = Some(p.state.clone());
        } else {
            let status = status_of(&p.state);
            if sent.status != Some(status) {
                let id = run_id.clone();
                let end = (status != RunStatus::Running).then(sweep_mlflow::now_ms);
                call(&t, move |t| t.update_run(&id, status, end)).await?;
                sent.status = Some(status);
            }
            if sent.state.is_some() {
                // finished once, running again (re-queued by --retry-failed)
                let id = run_id.clone();
                call(&t, move |t| {
                    t.log_batch(&id, &[], &[], &[("sweep.sent_state".into(), String::new())])
                })
                .await?;
                sent.state = None;
            }
        }
        self.runs.insert(p.key.clone(), sent);
        Ok(created)
    }

    /// A finished trial's final metrics and artifacts.
    async fn send_final(
        &mut self,
        store: &Store,
        trial: &crate::query::TrialRow,
        run: &Run,
        p: &Progress,
        start_ms: i64,
    ) -> std::result::Result<(), TrialErr> {
        let local = TrialErr::Store;
        let t = self.target.tracking.clone();
        let end = trial
            .finished_at
            .as_deref()
            .and_then(unix_ms)
            .unwrap_or(start_ms);
        // the final metrics are the report epoch's (the best one when early
        // stopping restores it, else the last)
        let step = p
            .report_epoch
            .or(trial.stop_epoch)
            .or(trial.best_epoch)
            .unwrap_or(0);
        let mut metrics: Vec<Metric> = trial
            .metrics
            .iter()
            .map(|(k, v)| Metric {
                key: metric_key(&format!("final.{k}")),
                value: *v,
                step,
                timestamp: end,
            })
            .collect();
        if let Some(d) = trial.duration_seconds {
            metrics.push(Metric {
                key: "final.duration_seconds".into(),
                value: d,
                step,
                timestamp: end,
            });
        }
        let mut tags = Vec::new();
        match &trial.error {
            Some(e) => tags.push(("sweep.error".to_string(), e.clone())),
            None if run.tags.contains_key("sweep.error") => {
                // an earlier attempt's error, gone with its success
                let id = run.id.clone();
                call(&t, move |t| t.delete_tag(&id, "sweep.error")).await?;
            }
            None => {}
        }
        if let Some(e) = trial.best_epoch {
            tags.push(("sweep.best_epoch".to_string(), e.to_string()));
        }
        if let Some(e) = p.report_epoch {
            tags.push(("sweep.report_epoch".to_string(), e.to_string()));
        }
        {
            let (id, m, ta) = (run.id.clone(), metrics, tags);
            call(&t, move |t| t.log_batch(&id, &m, &[], &ta)).await?;
        }
        // Artifacts: the config, the classification report, the confusion
        // matrix, the best checkpoint.
        let mut files: Vec<(String, Vec<u8>)> = vec![(
            "config.json".into(),
            pretty(&trial.config_json()).into_bytes(),
        )];
        if p.state == "complete" {
            let classes = crate::query::class_metrics(store, p.id)
                .await
                .map_err(local)?;
            if !classes.is_empty() {
                files.push((
                    "classification_report.txt".into(),
                    classification_report(&classes, &trial.metrics).into_bytes(),
                ));
                let k = classes.len();
                let m = crate::query::confusion_matrix(store, p.id, k)
                    .await
                    .map_err(local)?;
                let counts: Vec<Vec<u64>> = m
                    .iter()
                    .map(|r| r.iter().map(|&c| c.max(0) as u64).collect())
                    .collect();
                files.push((
                    "confusion_matrix.png".into(),
                    crate::tb::confusion_png(&counts).0,
                ));
                let mut csv = String::from("true,predicted,count\n");
                for (i, r) in m.iter().enumerate() {
                    for (j, c) in r.iter().enumerate() {
                        csv += &format!("{},{},{c}\n", classes[i].0, classes[j].0);
                    }
                }
                files.push(("confusion_matrix.csv".into(), csv.into_bytes()));
            }
        }
        let mut checkpoint = None;
        if self.target.checkpoints {
            if let Some(rel) = trial.artifacts.get("best_checkpoint") {
                if self.info.is_none() {
                    let info = crate::query::sweep(store, &self.sweep)
                        .await
                        .map_err(local)?;
                    self.info = Some(info);
                }
                let info = self.info.as_ref().expect("read above");
                // a checkpoint that is gone (results moved, cleaned) is left out
                checkpoint = info.locate(rel, self.target.results.as_deref()).ok();
            }
        }
        // A file the server refuses (no artifact proxy, a proxy's size limit)
        // is named in a tag and the trial goes on to its status: only an
        // unreachable server stops the pass.
        let mut refused = Vec::new();
        for (name, bytes) in files {
            refused.extend(upload(&t, run, name, bytes).await?);
        }
        if let Some(path) = checkpoint {
            // (read off the scheduler's threads: it may be large, on NFS)
            let read = tokio::task::spawn_blocking(move || std::fs::read(path))
                .await
                .ok()
                .and_then(|r| r.ok());
            if let Some(bytes) = read {
                refused.extend(upload(&t, run, "best.safetensors".into(), bytes).await?);
            }
        }
        if !refused.is_empty() {
            let (id, text) = (run.id.clone(), refused.join("; "));
            call(&t, move |t| {
                t.log_batch(&id, &[], &[], &[("sweep.artifacts_refused".into(), text)])
            })
            .await?;
        }
        Ok(())
    }

    /// The parent run: the sweep's counts, its best configuration and, once the
    /// sweep is not running, the HTML report and its final status. Returns
    /// whether it is up to date.
    async fn send_parent(
        &mut self,
        store: &Store,
        sweep: &SweepRow,
        rows: &[Progress],
        live: bool,
    ) -> Result<bool> {
        let Some(parent) = self.parent.clone() else {
            return Ok(false);
        };
        let counts = store.counts(sweep.id).await?;
        let unfinished = counts.waiting + counts.running;
        let status = if unfinished == 0 {
            RunStatus::Finished
        } else if live {
            RunStatus::Running
        } else {
            RunStatus::Killed
        };
        let done: Vec<&Progress> = rows.iter().filter(|p| finished(&p.state)).collect();
        let summary = format!(
            "{}/{}/{}/{}:{}",
            counts.complete,
            counts.pruned,
            counts.failed,
            unfinished,
            if live { "live" } else { "ended" }
        );
        let t = self.target.tracking.clone();
        let st = |e: sweep_mlflow::Error| tracking_err(e);
        if !parent.run.tags.contains_key("sweep.sent_spec") {
            let (r, text) = (parent.run.clone(), sweep.spec_text.clone());
            call(&t, move |t| {
                t.put_artifact(&r, "spec.toml", text.as_bytes())
            })
            .await
            .map_err(st)?;
            let id = parent.run.id.clone();
            call(&t, move |t| {
                t.log_batch(&id, &[], &[], &[("sweep.sent_spec".into(), "1".into())])
            })
            .await
            .map_err(st)?;
            if let Some(p) = self.parent.as_mut() {
                p.run.tags.insert("sweep.sent_spec".into(), "1".into());
            }
        }
        // While the sweep runs, the summary (a leaderboard over every trial)
        // is sent at most every 30 s.
        let recent = self
            .summary_at
            .is_some_and(|at| at.elapsed() < std::time::Duration::from_secs(30));
        if live && recent {
            return Ok(false);
        }
        if parent.run.tags.get("sweep.sent_summary") != Some(&summary) {
            self.summary_at = Some(std::time::Instant::now());
            let board = crate::query::leaderboard(
                store,
                sweep.id,
                &sweep.objective,
                sweep.direction == "maximize",
            )
            .await?;
            let now = sweep_mlflow::now_ms();
            let mut metrics = vec![
                ("trials.complete", counts.complete as f64),
                ("trials.pruned", counts.pruned as f64),
                ("trials.failed", counts.failed as f64),
                ("trials.unfinished", unfinished as f64),
            ];
            let mut tags: Vec<(String, String)> = vec![];
            if let Some(best) = board.entries.first() {
                metrics.push(("best.mean", best.summary.mean));
                metrics.push(("best.std", best.summary.std));
                metrics.push(("best.seeds", best.summary.n as f64));
                let config = best
                    .settings
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                tags.push(("best.config".into(), config));
                tags.push((
                    "best.objective".into(),
                    format!(
                        "{} = {:.4} ± {:.4} over {} seed{}",
                        board.metric,
                        best.summary.mean,
                        best.summary.std,
                        best.summary.n,
                        if best.summary.n == 1 { "" } else { "s" }
                    ),
                ));
                tags.push((
                    "best.trials".into(),
                    best.trials
                        .iter()
                        .filter_map(|id| rows.iter().find(|p| p.id == *id))
                        .map(|p| p.number.to_string())
                        .collect::<Vec<_>>()
                        .join(","),
                ));
                for (k, v) in &best.settings {
                    tags.push((format!("best.{k}"), v.clone()));
                }
                if let Some(second) = board.entries.get(1) {
                    metrics.push((
                        "best.margin",
                        (best.summary.mean - second.summary.mean).abs(),
                    ));
                    if let Some(p) = second.p_adjusted {
                        metrics.push(("best.p_vs_second", p));
                    }
                }
            }
            let step = done.len() as i64;
            let metrics: Vec<Metric> = metrics
                .into_iter()
                .map(|(k, v)| Metric {
                    key: k.to_string(),
                    value: v,
                    step,
                    timestamp: now,
                })
                .collect();
            let end = (status != RunStatus::Running).then_some(now);
            let id = parent.run.id.clone();
            call(&t, move |t| t.update_run(&id, status, end))
                .await
                .map_err(st)?;
            if !live {
                // the report `sweep run` has just written, else made here
                let written = self
                    .target
                    .report
                    .as_ref()
                    .and_then(|p| std::fs::read(p).ok());
                let html = match written {
                    Some(h) => h,
                    None => crate::report::html(store, &sweep.name).await?.into_bytes(),
                };
                let r = parent.run.clone();
                call(&t, move |t| t.put_artifact(&r, "report.html", &html))
                    .await
                    .map_err(st)?;
            }
            tags.push(("sweep.sent_summary".into(), summary.clone()));
            let (id, m, ta) = (parent.run.id.clone(), metrics, tags);
            call(&t, move |t| t.log_batch(&id, &m, &[], &ta))
                .await
                .map_err(st)?;
            if let Some(p) = self.parent.as_mut() {
                p.run.tags.insert("sweep.sent_summary".into(), summary);
                p.status = Some(status);
            }
        }
        Ok(true)
    }
}

/// Uploads one artifact: None when it landed, the refusal's text when the
/// server refused it, an error when the server is unreachable.
async fn upload(
    t: &Tracking,
    run: &Run,
    name: String,
    bytes: Vec<u8>,
) -> std::result::Result<Option<String>, sweep_mlflow::Error> {
    let (r, n) = (run.clone(), name.clone());
    match call(t, move |t| t.put_artifact(&r, &n, &bytes)).await {
        Err(e) if e.is_transient() => Err(e),
        Err(e) => Ok(Some(format!("{name}: {e}"))),
        Ok(()) => Ok(None),
    }
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<Json>(json)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| json.to_string())
}

/// The classification report as scikit-learn prints it.
pub fn classification_report(
    classes: &[(String, f64, f64, f64, i64)],
    finals: &BTreeMap<String, f64>,
) -> String {
    let w = classes
        .iter()
        .map(|c| c.0.chars().count())
        .max()
        .unwrap_or(0)
        .max("weighted avg".len());
    let mut s = format!(
        "{:>w$} {:>9} {:>9} {:>9} {:>9}\n\n",
        "", "precision", "recall", "f1-score", "support"
    );
    for (name, p, r, f, n) in classes {
        s += &format!("{name:>w$} {p:>9.4} {r:>9.4} {f:>9.4} {n:>9}\n");
    }
    let total: i64 = classes.iter().map(|c| c.4).sum();
    let get = |k: &str| finals.get(k).copied().unwrap_or(f64::NAN);
    let k = classes.len().max(1) as f64;
    let macro_p = classes.iter().map(|c| c.1).sum::<f64>() / k;
    let macro_r = classes.iter().map(|c| c.2).sum::<f64>() / k;
    let macro_f = classes.iter().map(|c| c.3).sum::<f64>() / k;
    let wt = |i: usize| -> f64 {
        classes
            .iter()
            .map(|c| [c.1, c.2, c.3][i] * c.4 as f64)
            .sum::<f64>()
            / (total.max(1) as f64)
    };
    s += &format!(
        "\n{:>w$} {:>9} {:>9} {:>9.4} {total:>9}\n",
        "accuracy",
        "",
        "",
        get("val.accuracy")
    );
    s += &format!(
        "{:>w$} {macro_p:>9.4} {macro_r:>9.4} {macro_f:>9.4} {total:>9}\n",
        "macro avg"
    );
    s += &format!(
        "{:>w$} {:>9.4} {:>9.4} {:>9.4} {total:>9}\n",
        "weighted avg",
        wt(0),
        wt(1),
        wt(2)
    );
    if let Some(a) = finals.get("val.macro_auc").filter(|a| a.is_finite()) {
        s += &format!("\nmacro AUC (one vs rest) {a:.4}\n");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_config_flattens_to_dotted_params() {
        let v: Json = serde_json::from_str(
            r#"{"model": {"dropout": 0.5, "hidden": [64, 32], "init": "kaiming"}, "train": {"early_stopping": {"patience": 3}}, "empty": {}}"#,
        )
        .unwrap();
        let mut out = Vec::new();
        flatten("", &v, &mut out);
        assert_eq!(
            out,
            vec![
                ("empty".to_string(), "{}".to_string()),
                ("model.dropout".into(), "0.5".into()),
                ("model.hidden".into(), "[64,32]".into()),
                ("model.init".into(), "kaiming".into()),
                ("train.early_stopping.patience".into(), "3".into()),
            ]
        );
    }

    #[test]
    fn metric_names_are_ones_mlflow_accepts() {
        assert_eq!(
            metric_key("final.val.f1.nevus (benign)"),
            "final.val.f1.nevus _benign_"
        );
        assert_eq!(metric_key("val.f1.café-au-lait/2"), "val.f1.café-au-lait/2");
        assert_eq!(metric_key("train.loss"), "train.loss");
    }

    #[test]
    fn epoch_times_survive_their_tag() {
        let t = vec![1_796_216_315_996, 1_796_216_316_998, 1_796_216_317_999];
        let tag = times_tag(&t);
        assert_eq!(tag, "1796216315996,1002,1001");
        assert_eq!(parse_times(&tag), t);
        assert_eq!(parse_times("12,x"), Vec::<i64>::new());
        assert_eq!(times_tag(&[]), "");
    }

    #[test]
    fn trial_states_map_to_mlflows_statuses() {
        assert_eq!(status_of("complete"), RunStatus::Finished);
        assert_eq!(status_of("failed"), RunStatus::Failed);
        assert_eq!(status_of("pruned"), RunStatus::Killed);
        assert_eq!(status_of("running"), RunStatus::Running);
        assert_eq!(status_of("waiting"), RunStatus::Killed);
        let mut swept = BTreeMap::new();
        swept.insert("model.dropout".to_string(), "0.5".to_string());
        swept.insert("train.learning_rate".to_string(), "0.001".to_string());
        assert_eq!(
            run_name(7, &swept, 2),
            "7 dropout=0.5 learning_rate=0.001 seed=2"
        );
    }

    #[test]
    fn the_classification_report_reads_like_scikit_learns() {
        let classes = vec![
            ("nevus".to_string(), 0.9, 0.8, 0.847, 60),
            ("melanoma".to_string(), 0.5, 0.625, 0.5556, 40),
        ];
        let mut finals = BTreeMap::new();
        finals.insert("val.accuracy".to_string(), 0.73);
        let r = classification_report(&classes, &finals);
        let lines: Vec<&str> = r.lines().collect();
        assert!(
            lines[0].ends_with("precision    recall  f1-score   support"),
            "{r}"
        );
        assert!(
            lines[2]
                .trim_start()
                .starts_with("nevus    0.9000    0.8000"),
            "{r}"
        );
        let acc: Vec<&str> = lines
            .iter()
            .find(|l| l.contains("accuracy"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(acc, ["accuracy", "0.7300", "100"], "{r}");
        // weighted precision (0.9·60 + 0.5·40) / 100
        assert!(r.contains("weighted avg    0.7400"), "{r}");
        assert!(r.contains("   macro avg    0.7000    0.7125"), "{r}");
    }
}
