//! The results store: SQLite through sqlx. Owns the migrations, every SQL string,
//! the trial state machine (`waiting → running → complete | pruned | failed`, each
//! transition a guarded UPDATE that must change exactly one row) and the read
//! models for queries. Never touches tensors, never prints.

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;

use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use sweep_train::{EpochMetrics, Report};

use crate::error::{Error, Result};

/// The migrations in `migrations/`, embedded at build time (build.rs re-runs when
/// the folder changes; a test checks that every file there is listed here).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../../../migrations/0001_initial.sql"),
)];

fn migrator() -> Migrator {
    Migrator {
        migrations: Cow::Owned(
            MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect(),
        ),
        ignore_missing: false,
        locking: true,
        no_tx: false,
    }
}

/// Trial states.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrialState {
    Waiting,
    Running,
    Complete,
    Pruned,
    Failed,
}

impl TrialState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrialState::Waiting => "waiting",
            TrialState::Running => "running",
            TrialState::Complete => "complete",
            TrialState::Pruned => "pruned",
            TrialState::Failed => "failed",
        }
    }
}

/// Current UTC time as RFC 3339 with milliseconds.
pub fn now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // civil-from-days (Howard Hinnant)
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = if month <= 2 { y + 1 } else { y };
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// A value and how to read it: NaN and infinities are stored explicitly.
pub fn value_kind(v: f64) -> (Option<f64>, &'static str) {
    if v.is_nan() {
        (None, "nan")
    } else if v == f64::INFINITY {
        (None, "inf")
    } else if v == f64::NEG_INFINITY {
        (None, "-inf")
    } else {
        (Some(v), "finite")
    }
}

pub fn from_value_kind(v: Option<f64>, kind: &str) -> f64 {
    match kind {
        "nan" => f64::NAN,
        "inf" => f64::INFINITY,
        "-inf" => f64::NEG_INFINITY,
        _ => v.unwrap_or(f64::NAN),
    }
}

/// What is recorded about a sweep.
#[derive(Clone, Debug)]
pub struct NewSweep {
    pub name: String,
    pub description: Option<String>,
    pub spec_path: String,
    pub spec_text: String,
    pub spec_hash: String,
    pub objective: String,
    pub direction: String,
    pub dataset: String,
    pub dataset_fingerprint: String,
    pub tool_version: String,
    pub git_commit: Option<String>,
    pub host: String,
}

/// A trial to insert: content key, canonical config and its parameters.
#[derive(Clone, Debug)]
pub struct NewTrial {
    pub key: String,
    pub config_json: String,
    pub seed: u64,
    /// (dotted name, kind, canonical text, numeric value, swept)
    pub params: Vec<(String, String, String, Option<f64>, bool)>,
}

/// A trial handed to a worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    pub number: i64,
    pub key: String,
    pub config_json: String,
    pub attempt: i64,
}

/// Counts of trials by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StateCounts {
    pub waiting: i64,
    pub running: i64,
    pub complete: i64,
    pub pruned: i64,
    pub failed: i64,
}

impl StateCounts {
    pub fn total(&self) -> i64 {
        self.waiting + self.running + self.complete + self.pruned + self.failed
    }
}

/// How a finished trial ended, for [`Store::finish`].
#[derive(Clone, Debug)]
pub struct Finish<'a> {
    pub state: TrialState,
    pub stop_reason: String,
    pub stop_epoch: Option<i64>,
    pub best_epoch: Option<i64>,
    pub report_epoch: Option<i64>,
    pub num_parameters: i64,
    pub train_size: i64,
    pub val_size: i64,
    pub duration_seconds: f64,
    pub report: Option<&'a Report>,
    /// Final metrics beyond the report (`train.loss` of the report epoch, ...).
    pub extra_metrics: Vec<(String, f64)>,
    pub artifacts: Vec<(String, String)>,
}

pub struct Store {
    pool: SqlitePool,
}

fn sql_err(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| Error::Store(format!("{what}: {e}"))
}

impl Store {
    /// Opens (creating it and its folder if needed) the database for writing: WAL
    /// journal, a busy timeout, foreign keys on, migrations applied.
    pub async fn open(path: &Path) -> Result<Store> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                path: dir.to_path_buf(),
                source: e,
            })?;
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| Error::Store(format!("{}: {e}", path.display())))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        migrator()
            .run(&pool)
            .await
            .map_err(|e| Error::Store(format!("{}: migrating the schema: {e}", path.display())))?;
        Ok(Store { pool })
    }

    /// Opens an existing database read-only: writes are refused by SQLite itself.
    pub async fn open_read_only(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(Error::Store(format!(
                "{}: no results database here (run a sweep first, or pass --db)",
                path.display()
            )));
        }
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(|e| Error::Store(format!("{}: {e}", path.display())))?
            .read_only(true)
            // Queries over large sweeps: map the file instead of a read call per
            // page, and hand rows over in big batches instead of one wake-up each.
            .pragma("mmap_size", "4294967296")
            .pragma("cache_size", "-131072")
            .row_buffer_size(4096)
            .busy_timeout(std::time::Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .map_err(|e| Error::Store(format!("cannot open {}: {e}", path.display())))?;
        Ok(Store { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    /// Inserts the sweep, or updates its spec and provenance when it exists. Returns its id.
    pub async fn upsert_sweep(&self, s: &NewSweep) -> Result<i64> {
        let t = now();
        let existing: Option<(i64, String)> =
            sqlx::query_as("SELECT id, dataset_fingerprint FROM sweeps WHERE name = ?")
                .bind(&s.name)
                .fetch_optional(&self.pool)
                .await
                .map_err(sql_err("reading sweeps"))?;
        if let Some((id, fp)) = existing {
            if fp != s.dataset_fingerprint {
                return Err(Error::Store(format!(
                    "sweep `{}` was run on a different data set (fingerprint {fp}, now {}); its stored results would not be comparable. Rename the sweep or use another --db",
                    s.name, s.dataset_fingerprint
                )));
            }
            sqlx::query("UPDATE sweeps SET description = ?, spec_path = ?, spec_text = ?, spec_hash = ?, objective = ?, direction = ?, tool_version = ?, git_commit = ?, host = ?, updated_at = ? WHERE id = ?")
                .bind(&s.description)
                .bind(&s.spec_path)
                .bind(&s.spec_text)
                .bind(&s.spec_hash)
                .bind(&s.objective)
                .bind(&s.direction)
                .bind(&s.tool_version)
                .bind(&s.git_commit)
                .bind(&s.host)
                .bind(&t)
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(sql_err("updating the sweep"))?;
            return Ok(id);
        }
        let r = sqlx::query("INSERT INTO sweeps (name, description, spec_path, spec_text, spec_hash, objective, direction, dataset, dataset_fingerprint, tool_version, git_commit, host, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
            .bind(&s.name)
            .bind(&s.description)
            .bind(&s.spec_path)
            .bind(&s.spec_text)
            .bind(&s.spec_hash)
            .bind(&s.objective)
            .bind(&s.direction)
            .bind(&s.dataset)
            .bind(&s.dataset_fingerprint)
            .bind(&s.tool_version)
            .bind(&s.git_commit)
            .bind(&s.host)
            .bind(&t)
            .bind(&t)
            .execute(&self.pool)
            .await
            .map_err(sql_err("inserting the sweep"))?;
        Ok(r.last_insert_rowid())
    }

    pub async fn set_classes(&self, sweep_id: i64, classes: &[(String, usize)]) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        sqlx::query("DELETE FROM classes WHERE sweep_id = ?")
            .bind(sweep_id)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("classes"))?;
        for (i, (name, n)) in classes.iter().enumerate() {
            sqlx::query("INSERT INTO classes (sweep_id, class_index, name, image_count) VALUES (?, ?, ?, ?)")
                .bind(sweep_id)
                .bind(i as i64)
                .bind(name)
                .bind(*n as i64)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("classes"))?;
        }
        tx.commit().await.map_err(sql_err("commit"))
    }

    /// Checks for a live run of this sweep and registers this one, in one
    /// `BEGIN IMMEDIATE` transaction, so that two runs started at the same instant
    /// cannot both pass: `Err((pid, host))` names the run that holds the sweep.
    pub async fn begin_session(
        &self,
        sweep_id: i64,
        pid: i64,
        host: &str,
        is_alive: impl Fn(i64) -> bool,
    ) -> Result<std::result::Result<i64, (i64, String)>> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(sql_err("locking the sweep"))?;
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT id, pid, host FROM sessions WHERE sweep_id = ? AND ended_at IS NULL",
        )
        .bind(sweep_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err("reading sessions"))?;
        for (id, other, h) in rows {
            if h == host && is_alive(other) {
                return Ok(Err((other, h)));
            }
            sqlx::query("UPDATE sessions SET ended_at = ?, end_reason = 'vanished' WHERE id = ? AND ended_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("closing a dead session"))?;
        }
        let id = insert_session(&mut tx, sweep_id, pid, host).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(Ok(id))
    }

    /// Registers a session without checking for a live run (benchmarks and tests).
    pub async fn start_session(&self, sweep_id: i64, pid: i64, host: &str) -> Result<i64> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(sql_err("starting a session"))?;
        insert_session(&mut conn, sweep_id, pid, host).await
    }

    pub async fn heartbeat(&self, session_id: i64) -> Result<()> {
        sqlx::query("UPDATE sessions SET heartbeat_at = ? WHERE id = ?")
            .bind(now())
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(sql_err("heartbeat"))?;
        Ok(())
    }

    pub async fn end_session(&self, session_id: i64, reason: &str) -> Result<()> {
        sqlx::query("UPDATE sessions SET ended_at = ?, end_reason = ? WHERE id = ?")
            .bind(now())
            .bind(reason)
            .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(sql_err("ending the session"))?;
        Ok(())
    }

    /// Inserts the trials not yet present (by key); returns how many were new.
    pub async fn add_trials(&self, sweep_id: i64, trials: &[NewTrial]) -> Result<usize> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let (mut next,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM trials WHERE sweep_id = ?")
                .bind(sweep_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(sql_err("numbering trials"))?;
        let t = now();
        let mut added = 0;
        for tr in trials {
            let r = sqlx::query("INSERT OR IGNORE INTO trials (sweep_id, number, key, config_json, seed, state, created_at) VALUES (?, ?, ?, ?, ?, 'waiting', ?)")
                .bind(sweep_id)
                .bind(next)
                .bind(&tr.key)
                .bind(&tr.config_json)
                .bind(tr.seed as i64)
                .bind(&t)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("inserting a trial"))?;
            if r.rows_affected() == 0 {
                continue;
            }
            let id = r.last_insert_rowid();
            for (name, kind, text, num, swept) in &tr.params {
                sqlx::query("INSERT INTO trial_params (trial_id, name, kind, value_text, value_number, swept) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(id)
                    .bind(name)
                    .bind(kind)
                    .bind(text)
                    .bind(num)
                    .bind(i64::from(*swept))
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err("inserting trial parameters"))?;
            }
            next += 1;
            added += 1;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(added)
    }

    async fn clear_partial(tx: &mut Transaction<'_, Sqlite>, trial_id: i64) -> Result<()> {
        for table in [
            "epoch_metrics",
            "final_metrics",
            "class_metrics",
            "confusion_cells",
            "artifacts",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE trial_id = ?"))
                .bind(trial_id)
                .execute(&mut **tx)
                .await
                .map_err(sql_err("clearing partial rows"))?;
        }
        Ok(())
    }

    /// Trials left `running` by a session that is gone go back to `waiting`, their
    /// partial rows removed and the attempt recorded as orphaned (not counted
    /// against the retry limit: the trial did not fail). Returns how many.
    pub async fn reclaim_orphans(&self, sweep_id: i64, current_session: i64) -> Result<u64> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let ids: Vec<(i64,)> = sqlx::query_as("SELECT id FROM trials WHERE sweep_id = ? AND state = 'running' AND (session_id IS NULL OR session_id <> ?)")
            .bind(sweep_id)
            .bind(current_session)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err("finding orphaned trials"))?;
        for (id,) in &ids {
            Self::clear_partial(&mut tx, *id).await?;
            sqlx::query("UPDATE trial_attempts SET ended_at = ?, outcome = 'orphaned', error = 'the sweep process running it stopped' WHERE trial_id = ? AND ended_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("recording the orphaned attempt"))?;
            let r = sqlx::query("UPDATE trials SET state = 'waiting', attempts = attempts - 1, session_id = NULL, worker_pid = NULL, device = NULL, started_at = NULL WHERE id = ? AND state = 'running'")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("reclaiming"))?;
            expect_one(r.rows_affected(), "running → waiting (reclaim)")?;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(ids.len() as u64)
    }

    /// Failed trials with fewer than `max_attempts` attempts go back to `waiting`.
    pub async fn requeue_failed(&self, sweep_id: i64, max_attempts: i64) -> Result<u64> {
        let r = sqlx::query("UPDATE trials SET state = 'waiting' WHERE sweep_id = ? AND state = 'failed' AND attempts < ?")
            .bind(sweep_id)
            .bind(max_attempts)
            .execute(&self.pool)
            .await
            .map_err(sql_err("re-queueing failed trials"))?;
        Ok(r.rows_affected())
    }

    /// Claims the lowest-numbered waiting trial: `waiting → running`.
    pub async fn claim_next(
        &self,
        sweep_id: i64,
        session_id: i64,
        device: &str,
    ) -> Result<Option<Claimed>> {
        self.claim_next_where(sweep_id, session_id, device, |_, _| true)
            .await
    }

    /// Claims the lowest-numbered waiting trial that `allowed(id, key)` accepts
    /// (the scheduler passes: in the current spec, not already in flight).
    pub async fn claim_next_where(
        &self,
        sweep_id: i64,
        session_id: i64,
        device: &str,
        allowed: impl Fn(i64, &str) -> bool,
    ) -> Result<Option<Claimed>> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        // Waiting trials in pages, lowest number first: a claim reads a few rows, not
        // every waiting trial of a large sweep.
        let mut row = None;
        let mut after = i64::MIN;
        while row.is_none() {
            let page: Vec<(i64, i64, String, String, i64)> = sqlx::query_as(
                "SELECT id, number, key, config_json, attempts FROM trials WHERE sweep_id = ? AND state = 'waiting' AND number > ? ORDER BY number LIMIT 32",
            )
            .bind(sweep_id)
            .bind(after)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err("claiming"))?;
            let Some(last) = page.last().map(|r| r.1) else {
                break;
            };
            after = last;
            row = page
                .into_iter()
                .find(|(id, _, key, _, _)| allowed(*id, key));
        }
        let Some((id, number, key, config_json, attempts)) = row else {
            return Ok(None);
        };
        let t = now();
        let r = sqlx::query("UPDATE trials SET state = 'running', attempts = attempts + 1, session_id = ?, device = ?, started_at = ?, error = NULL, stop_reason = NULL WHERE id = ? AND state = 'waiting'")
            .bind(session_id)
            .bind(device)
            .bind(&t)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("claiming"))?;
        expect_one(r.rows_affected(), "waiting → running")?;
        // Attempt rows are numbered by every start, counted or not (interruptions
        // give their count back), so they never collide.
        sqlx::query("INSERT INTO trial_attempts (trial_id, attempt, session_id, started_at) VALUES (?, (SELECT COUNT(*) + 1 FROM trial_attempts WHERE trial_id = ?), ?, ?)")
            .bind(id)
            .bind(id)
            .bind(session_id)
            .bind(&t)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("recording the attempt"))?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(Some(Claimed {
            id,
            number,
            key,
            config_json,
            attempt: attempts + 1,
        }))
    }

    pub async fn set_worker_pid(&self, trial_id: i64, pid: i64) -> Result<()> {
        sqlx::query("UPDATE trials SET worker_pid = ? WHERE id = ?")
            .bind(pid)
            .bind(trial_id)
            .execute(&self.pool)
            .await
            .map_err(sql_err("worker pid"))?;
        Ok(())
    }

    /// One epoch's metrics (rows `train.*`, `val.*`, `time.*`).
    pub async fn record_epoch(&self, trial_id: i64, m: &EpochMetrics) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        // Only a running trial takes epoch rows (a late event from a stale worker must
        // not touch a finished or re-queued trial).
        let (running,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM trials WHERE id = ? AND state = 'running'")
                .bind(trial_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(sql_err("recording an epoch"))?;
        if running == 0 {
            return Ok(());
        }
        for (split, name, v) in epoch_rows(m) {
            let (value, kind) = value_kind(v);
            sqlx::query("INSERT OR REPLACE INTO epoch_metrics (trial_id, epoch, split, name, value, value_kind) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(trial_id)
                .bind(m.epoch as i64)
                .bind(split)
                .bind(name)
                .bind(value)
                .bind(kind)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("recording an epoch"))?;
        }
        tx.commit().await.map_err(sql_err("commit"))
    }

    /// `running → complete | pruned` with final metrics, class metrics, confusion
    /// counts and artifacts, in one transaction.
    pub async fn finish(&self, trial_id: i64, f: &Finish<'_>) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        let t = now();
        let r = sqlx::query("UPDATE trials SET state = ?, stop_reason = ?, stop_epoch = ?, best_epoch = ?, report_epoch = ?, num_parameters = ?, train_size = ?, val_size = ?, duration_seconds = ?, finished_at = ?, error = NULL WHERE id = ? AND state = 'running'")
            .bind(f.state.as_str())
            .bind(&f.stop_reason)
            .bind(f.stop_epoch)
            .bind(f.best_epoch)
            .bind(f.report_epoch)
            .bind(f.num_parameters)
            .bind(f.train_size)
            .bind(f.val_size)
            .bind(f.duration_seconds)
            .bind(&t)
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("finishing a trial"))?;
        expect_one(r.rows_affected(), "running → finished")?;
        let mut metrics = f.extra_metrics.clone();
        if let Some(rep) = f.report {
            metrics.extend([
                ("val.accuracy".to_string(), rep.accuracy),
                ("val.balanced_accuracy".to_string(), rep.balanced_accuracy),
                ("val.macro_f1".to_string(), rep.macro_f1),
                ("val.macro_precision".to_string(), rep.macro_precision),
                ("val.macro_recall".to_string(), rep.macro_recall),
                ("val.weighted_f1".to_string(), rep.weighted_f1),
                (
                    "val.macro_auc".to_string(),
                    rep.macro_auc.unwrap_or(f64::NAN),
                ),
            ]);
            for (i, c) in rep.classes.iter().enumerate() {
                sqlx::query("INSERT INTO class_metrics (trial_id, class_index, precision, recall, f1, support) VALUES (?, ?, ?, ?, ?, ?)")
                    .bind(trial_id)
                    .bind(i as i64)
                    .bind(c.precision)
                    .bind(c.recall)
                    .bind(c.f1)
                    .bind(c.support as i64)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err("class metrics"))?;
            }
            for (ti, row) in rep.confusion.counts.iter().enumerate() {
                for (pi, n) in row.iter().enumerate().filter(|(_, n)| **n > 0) {
                    sqlx::query("INSERT INTO confusion_cells (trial_id, true_index, predicted_index, count) VALUES (?, ?, ?, ?)")
                        .bind(trial_id)
                        .bind(ti as i64)
                        .bind(pi as i64)
                        .bind(*n as i64)
                        .execute(&mut *tx)
                        .await
                        .map_err(sql_err("confusion cells"))?;
                }
            }
        }
        for (name, v) in &metrics {
            let (value, kind) = value_kind(*v);
            sqlx::query("INSERT OR REPLACE INTO final_metrics (trial_id, name, value, value_kind) VALUES (?, ?, ?, ?)")
                .bind(trial_id)
                .bind(name)
                .bind(value)
                .bind(kind)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("final metrics"))?;
        }
        for (kind, path) in &f.artifacts {
            sqlx::query("INSERT OR REPLACE INTO artifacts (trial_id, kind, path) VALUES (?, ?, ?)")
                .bind(trial_id)
                .bind(kind)
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("artifacts"))?;
        }
        end_attempt(&mut tx, trial_id, f.state.as_str(), None).await?;
        tx.commit().await.map_err(sql_err("commit"))
    }

    /// `running → failed` with the error chain; partial rows removed.
    pub async fn fail(&self, trial_id: i64, error: &str) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        Self::clear_partial(&mut tx, trial_id).await?;
        let r = sqlx::query("UPDATE trials SET state = 'failed', error = ?, finished_at = ? WHERE id = ? AND state = 'running'")
            .bind(error)
            .bind(now())
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("failing a trial"))?;
        expect_one(r.rows_affected(), "running → failed")?;
        end_attempt(&mut tx, trial_id, "failed", Some(error)).await?;
        tx.commit().await.map_err(sql_err("commit"))
    }

    /// `running → waiting` after an interruption: partial rows removed, the attempt
    /// recorded as interrupted (and not counted against the retry limit).
    pub async fn interrupt(&self, trial_id: i64) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(sql_err("begin"))?;
        Self::clear_partial(&mut tx, trial_id).await?;
        let r = sqlx::query("UPDATE trials SET state = 'waiting', attempts = attempts - 1, session_id = NULL, worker_pid = NULL, started_at = NULL WHERE id = ? AND state = 'running'")
            .bind(trial_id)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("interrupting a trial"))?;
        expect_one(r.rows_affected(), "running → waiting (interrupt)")?;
        end_attempt(&mut tx, trial_id, "interrupted", None).await?;
        tx.commit().await.map_err(sql_err("commit"))
    }

    pub async fn counts(&self, sweep_id: i64) -> Result<StateCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM trials WHERE sweep_id = ? GROUP BY state")
                .bind(sweep_id)
                .fetch_all(&self.pool)
                .await
                .map_err(sql_err("counting trials"))?;
        let mut c = StateCounts::default();
        for (s, n) in rows {
            match s.as_str() {
                "waiting" => c.waiting = n,
                "running" => c.running = n,
                "complete" => c.complete = n,
                "pruned" => c.pruned = n,
                "failed" => c.failed = n,
                _ => {}
            }
        }
        Ok(c)
    }

    pub async fn sweep_id(&self, name: &str) -> Result<Option<i64>> {
        let r: Option<(i64,)> = sqlx::query_as("SELECT id FROM sweeps WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("reading sweeps"))?;
        Ok(r.map(|r| r.0))
    }

    /// The objective per finished trial with its swept parameters (text) and seed:
    /// (trial number, state, params "a=1, b=2", seed, objective value).
    pub async fn objective_rows(
        &self,
        sweep_id: i64,
        objective: &str,
    ) -> Result<Vec<(i64, String, String, i64, Option<f64>)>> {
        let rows = sqlx::query(
            "SELECT t.number, t.state, t.seed, \
                    (SELECT group_concat(name || '=' || value_text, ', ') FROM (SELECT name, value_text FROM trial_params p WHERE p.trial_id = t.id AND p.swept = 1 ORDER BY name)) AS params, \
                    f.value, f.value_kind \
             FROM trials t LEFT JOIN final_metrics f ON f.trial_id = t.id AND f.name = ? \
             WHERE t.sweep_id = ? ORDER BY t.number",
        )
        .bind(objective)
        .bind(sweep_id)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading results"))?;
        Ok(rows
            .into_iter()
            .map(|r| {
                let kind: Option<String> = r.get("value_kind");
                let v: Option<f64> = r.get("value");
                let value = kind.map(|k| from_value_kind(v, &k));
                (
                    r.get("number"),
                    r.get("state"),
                    r.get::<Option<String>, _>("params").unwrap_or_default(),
                    r.get("seed"),
                    value,
                )
            })
            .collect())
    }

    /// `PRAGMA integrity_check` result ("ok" when sound).
    pub async fn integrity_check(&self) -> Result<String> {
        let (s,): (String,) = sqlx::query_as("PRAGMA integrity_check")
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err("integrity check"))?;
        Ok(s)
    }
}

async fn insert_session(
    conn: &mut sqlx::SqliteConnection,
    sweep_id: i64,
    pid: i64,
    host: &str,
) -> Result<i64> {
    let t = now();
    let r = sqlx::query("INSERT INTO sessions (sweep_id, pid, host, started_at, heartbeat_at) VALUES (?, ?, ?, ?, ?)")
        .bind(sweep_id)
        .bind(pid)
        .bind(host)
        .bind(&t)
        .bind(&t)
        .execute(conn)
        .await
        .map_err(sql_err("starting a session"))?;
    Ok(r.last_insert_rowid())
}

async fn end_attempt(
    tx: &mut Transaction<'_, Sqlite>,
    trial_id: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE trial_attempts SET ended_at = ?, outcome = ?, error = ? WHERE trial_id = ? AND ended_at IS NULL")
        .bind(now())
        .bind(outcome)
        .bind(error)
        .bind(trial_id)
        .execute(&mut **tx)
        .await
        .map_err(sql_err("recording the attempt's end"))?;
    Ok(())
}

fn expect_one(n: u64, what: &str) -> Result<()> {
    if n == 1 {
        Ok(())
    } else {
        Err(Error::Store(format!(
            "state transition {what} changed {n} rows instead of 1"
        )))
    }
}

/// The rows one epoch writes: (split, name, value).
pub fn epoch_rows(m: &EpochMetrics) -> Vec<(&'static str, &'static str, f64)> {
    vec![
        ("train", "loss", m.train_loss),
        ("train", "accuracy", m.train_accuracy),
        ("train", "learning_rate", m.learning_rate),
        ("val", "loss", m.val_loss),
        ("val", "accuracy", m.val_accuracy),
        ("val", "macro_f1", m.val_macro_f1),
        ("val", "balanced_accuracy", m.val_balanced_accuracy),
        ("time", "epoch_seconds", m.seconds),
        ("time", "data_seconds", m.data_seconds),
        ("time", "step_seconds", m.step_seconds),
    ]
}
