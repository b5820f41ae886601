//! The results store: SQLite (the default) or PostgreSQL (shared by workers on many
//! machines), both through sqlx's `Any` driver with one set of SQL strings written
//! to run on both. Owns the migrations, the trial state machine (`waiting →
//! running → complete | pruned | failed`, each transition a guarded UPDATE: a
//! claim takes a row nobody else holds, a result lands only while the trial is
//! still held by the session that ran it), sessions with heartbeats, and
//! reclaiming trials whose session stopped beating. Never touches tensors, never
//! prints.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde_json::Value as Json;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::AnyPool;
use sqlx::{Any, Executor, Transaction};
use sweep_train::{EpochMetrics, Report};

use crate::error::{Error, Result};

pub mod compact;
mod guard;
mod search;
pub use guard::Schema;
pub use search::{ProposalRow, Recorded, RungValue};

/// The SQLite migrations in `migrations/`, embedded at build time (build.rs re-runs
/// when the folder changes; a test checks that every file there is listed here).
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../../migrations/0001_initial.sql"),
    ),
    (
        2,
        "session_lease",
        include_str!("../../../../migrations/0002_session_lease.sql"),
    ),
    (
        3,
        "results_dir",
        include_str!("../../../../migrations/0003_results_dir.sql"),
    ),
    (
        4,
        "search",
        include_str!("../../../../migrations/0004_search.sql"),
    ),
    (
        5,
        "metrics_version",
        include_str!("../../../../migrations/0005_metrics_version.sql"),
    ),
    (
        6,
        "config_bases",
        include_str!("../../../../migrations/0006_config_bases.sql"),
    ),
    (
        7,
        "init_from",
        include_str!("../../../../migrations/0007_init_from.sql"),
    ),
];

/// `trials.metrics_version` of the trials this Sweep finishes: 2 since the
/// training diagnostics (migration 0005; NULL for older trials); 3 since CPU
/// training gives the same numbers on any thread count (the same metrics as
/// 2; [`crate::query::reproducibility`] says what each version guarantees).
pub const METRICS_VERSION: i64 = 3;

/// The first `metrics_version` whose CPU numbers do not depend on the thread
/// count (or on `--jobs`, or the machine's core count).
pub const THREAD_INDEPENDENT_SINCE: i64 = 3;

/// The same migrations for PostgreSQL (`migrations/postgres/`): same versions, same
/// tables and meaning, PostgreSQL's types.
pub const PG_MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../../migrations/postgres/0001_initial.sql"),
    ),
    (
        2,
        "session_lease",
        include_str!("../../../../migrations/postgres/0002_session_lease.sql"),
    ),
    (
        3,
        "results_dir",
        include_str!("../../../../migrations/postgres/0003_results_dir.sql"),
    ),
    (
        4,
        "search",
        include_str!("../../../../migrations/postgres/0004_search.sql"),
    ),
    (
        5,
        "metrics_version",
        include_str!("../../../../migrations/postgres/0005_metrics_version.sql"),
    ),
    (
        6,
        "config_bases",
        include_str!("../../../../migrations/postgres/0006_config_bases.sql"),
    ),
    (
        7,
        "init_from",
        include_str!("../../../../migrations/postgres/0007_init_from.sql"),
    ),
];

fn migrator(backend: Backend) -> Migrator {
    migrator_through(backend, i64::MAX)
}

/// Refuses, before anything is written, a location holding something other
/// than an empty or known Sweep database (see [`guard`]). `writer`: also run
/// SQLite's page check on an existing file.
async fn check_location(location: &DbLocation, writer: bool) -> Result<Schema> {
    let backend = location.backend();
    let mut page_check = writer;
    let url = match location {
        DbLocation::Sqlite(path) => {
            guard::check_sqlite_file(path)?;
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            if size == 0 {
                return Ok(Schema::Empty);
            }
            // The page check reads the whole file (20–35 ms per MB): skipped
            // above 32 MiB, so that a large sweep still starts in a second; a
            // damaged page is then found when it is read (and said so).
            page_check &= size <= QUICK_CHECK_MAX_BYTES;
            if writer {
                sqlite_url(path, "ro")?
            } else {
                readable_url(path)?
            }
        }
        DbLocation::Postgres(url) => url.clone(),
    };
    let first = migrator_through(backend, 1);
    let checksum = first.migrations.first().map(|m| m.checksum.to_vec());
    let known = migrator(backend)
        .migrations
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or(0);
    guard::check_schema(
        &url,
        &location.display(),
        backend == Backend::Postgres,
        &checksum.unwrap_or_default(),
        known,
        page_check,
    )
    .await
}

/// A read-only URL for a SQLite file a reader opens: `mode=ro`, plus
/// `immutable` when the file's folder cannot be written (a read-only mount,
/// where a WAL database cannot create its `-shm` file and would not open).
fn readable_url(path: &Path) -> Result<String> {
    let url = sqlite_url(path, "ro")?;
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_path_buf(),
        None => PathBuf::from("."),
    };
    let writable = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        // SAFETY: a valid NUL-terminated path; access() only reads it.
        .map(|c| unsafe { libc::access(c.as_ptr(), libc::W_OK) } == 0)
        .unwrap_or(true);
    Ok(if writable {
        url
    } else {
        format!("{url}&immutable=true")
    })
}

/// The largest SQLite file whose pages a writer checks when it opens it.
pub const QUICK_CHECK_MAX_BYTES: u64 = 32 << 20;

/// The migrations up to `version` (a database as an older Sweep left it, for
/// the upgrade tests).
pub fn migrator_through(backend: Backend, version: i64) -> Migrator {
    let list = match backend {
        Backend::Sqlite => MIGRATIONS,
        Backend::Postgres => PG_MIGRATIONS,
    };
    Migrator {
        migrations: Cow::Owned(
            list.iter()
                .filter(|(v, _, _)| *v <= version)
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
    rfc3339(std::time::SystemTime::now())
}

fn rfc3339(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
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
    /// The results folder, absolute (recorded so that later commands find the
    /// sweep's files without `--results`); None keeps what is stored.
    pub results_dir: Option<String>,
}

/// A trial to insert: content key, canonical config and its parameters.
#[derive(Clone, Debug)]
pub struct NewTrial {
    pub key: String,
    /// The canonical config; with `base`, only its difference from the base
    /// ([`compact::diff`]).
    pub config_json: String,
    /// The config this trial is stored against (a grid's trials share one):
    /// `params` then holds only the swept settings, and the claim writes the
    /// rest.
    pub base: Option<std::sync::Arc<compact::ConfigBase>>,
    pub seed: u64,
    /// (dotted name, kind, canonical text, numeric value, swept)
    pub params: Vec<Param>,
}

/// One setting of a trial: (dotted name, kind, canonical text, numeric value,
/// swept).
pub type Param = (String, String, String, Option<f64>, bool);

/// A trial handed to a worker.
#[derive(Clone, Debug)]
pub struct Claimed {
    pub id: i64,
    pub number: i64,
    pub key: String,
    pub config_json: String,
    /// The attempt as counted against the retry limit (interruptions and
    /// machine faults give theirs back).
    pub attempt: i64,
    /// This start's row in `trial_attempts` (every start, counted or not):
    /// names the attempt's own folder, `trials/NNNN/attempt-K/`.
    pub start: i64,
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
    /// The stop in words, when the code is not enough (a pruner's rule).
    pub stop_detail: Option<String>,
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
    /// What the trial loaded from `model.init_from` (JSON), when set.
    pub init_json: Option<String>,
}

/// Where the results live: a SQLite file (the default) or a PostgreSQL database
/// (`postgres://user@host:port/db`), as given to `--db`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DbLocation {
    Sqlite(PathBuf),
    Postgres(String),
}

impl DbLocation {
    /// `postgres://...` or `postgresql://...` is PostgreSQL; `sqlite://PATH` or a
    /// plain path is a SQLite file. Any other `scheme://` is refused (a typo must
    /// not quietly become a file named after it).
    pub fn parse(s: &str) -> Result<DbLocation> {
        if s.starts_with("postgres://") || s.starts_with("postgresql://") {
            Ok(DbLocation::Postgres(s.to_string()))
        } else if let Some(p) = s.strip_prefix("sqlite://") {
            Ok(DbLocation::Sqlite(PathBuf::from(p)))
        } else if let Some((scheme, _)) = s.split_once("://").filter(|(scheme, _)| {
            !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        }) {
            Err(Error::Store(format!(
                "--db {}: `{scheme}://` is not a database Sweep can use; give a SQLite file path or postgres://user@host[:port]/database",
                redact(s)
            )))
        } else {
            Ok(DbLocation::Sqlite(PathBuf::from(s)))
        }
    }

    pub fn backend(&self) -> Backend {
        match self {
            DbLocation::Sqlite(_) => Backend::Sqlite,
            DbLocation::Postgres(_) => Backend::Postgres,
        }
    }

    /// The location for messages: a URL's password is masked.
    pub fn display(&self) -> String {
        match self {
            DbLocation::Sqlite(p) => p.display().to_string(),
            DbLocation::Postgres(u) => redact(u),
        }
    }

    /// The text to pass on to another process (`--db`), password included.
    pub fn arg(&self) -> String {
        match self {
            DbLocation::Sqlite(p) => p.display().to_string(),
            DbLocation::Postgres(u) => u.clone(),
        }
    }
}

impl From<&Path> for DbLocation {
    fn from(p: &Path) -> Self {
        DbLocation::Sqlite(p.to_path_buf())
    }
}

impl From<&PathBuf> for DbLocation {
    fn from(p: &PathBuf) -> Self {
        DbLocation::Sqlite(p.clone())
    }
}

impl From<&DbLocation> for DbLocation {
    fn from(d: &DbLocation) -> Self {
        d.clone()
    }
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.split_once('@') {
        Some((cred, host)) if cred.contains(':') => {
            let user = cred.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_string(),
    }
}

/// The network file system a path is on (NFS, SMB/CIFS, Lustre, GPFS, CephFS,
/// AFS, 9p), or None for a local one. SQLite's locking cannot be trusted there
/// by processes on several machines.
pub fn network_filesystem(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    // The nearest folder that exists (a results folder is often created later).
    let mut dir = if path.as_os_str().is_empty() {
        Path::new(".")
    } else {
        path
    };
    while !dir.is_dir() {
        dir = match dir.parent() {
            Some(p) if p.as_os_str().is_empty() => Path::new("."),
            Some(p) => p,
            None => return None,
        };
    }
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: c is a NUL-terminated path; st is a valid, writable statfs.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    match st.f_type as u64 {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF53_4D42 | 0xFE53_4D42 => Some("CIFS/SMB2"),
        0x0BD0_0BD0 => Some("Lustre"),
        0x4750_4653 => Some("GPFS"),
        0x00C3_6400 => Some("CephFS"),
        0x5346_414F => Some("AFS"),
        0x0102_1997 => Some("9p"),
        _ => None,
    }
}

/// Which database a store talks to; the few SQL fragments that differ hang off it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `n` placeholders from `$first`, for parameters bound in that order:
    /// PostgreSQL's `$N`, SQLite's plain `?`. (SQLite looks up a numbered
    /// parameter's name by walking a list of all of them, so binding a
    /// statement of k numbered parameters costs k²: a multi-row INSERT of
    /// 3,500 took seconds.)
    fn params(self, first: usize, n: usize) -> Vec<String> {
        (first..first + n)
            .map(|p| match self {
                Backend::Sqlite => "?".to_string(),
                Backend::Postgres => format!("${p}"),
            })
            .collect()
    }

    /// The database's clock, now, as RFC 3339 text like [`now`] writes. Leases
    /// are judged by it, not by each machine's clock (which may be off).
    fn now_sql(self) -> &'static str {
        match self {
            Backend::Sqlite => "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')",
            Backend::Postgres => {
                "to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            }
        }
    }

    /// The database's clock plus the seconds bound to `param` (negative:
    /// ago), as RFC 3339 text.
    fn later_sql(self, param: &str) -> String {
        match self {
            Backend::Sqlite => format!(
                "strftime('%Y-%m-%dT%H:%M:%fZ', 'now', printf('%+.3f seconds', {param}))"
            ),
            Backend::Postgres => format!(
                "to_char((clock_timestamp() AT TIME ZONE 'UTC') + make_interval(secs => {param}), 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
            ),
        }
    }

    /// Opens a write transaction. SQLite takes the write lock up front (`BEGIN
    /// IMMEDIATE`), so a read-then-write transaction never fails half-way when
    /// another process wrote in between; PostgreSQL locks rows as it goes.
    fn begin_write(self) -> &'static str {
        match self {
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }

    /// Row locks for a claim: other workers skip rows this one is looking at.
    fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// A REAL as text that reads back to the same double.
    pub fn float_text(self, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("printf('%!.17g', {column})"),
            // PostgreSQL 12+ prints float8 shortest-exact.
            Backend::Postgres => format!("CAST({column} AS TEXT)"),
        }
    }
}

pub struct Store {
    pool: AnyPool,
    backend: Backend,
    location: DbLocation,
    /// The lease this process's sessions declare: each heartbeat extends
    /// `sessions.lease_expires_at` to now plus this many seconds.
    lease_seconds: f64,
}

/// The default lease (`--lease-seconds`).
pub const DEFAULT_LEASE_SECONDS: f64 = 60.0;

// A note on binding: sqlx 0.8.6's `Any` driver sends a NULL `f64` to PostgreSQL as
// a `float4` (its Real/Double mapping for NULLs is swapped), and a prepared
// statement first run with a NULL then rejects the next non-NULL `f64` ("incorrect
// binary data format"). So no `Option<f64>` is ever bound: a number is always
// bound, and `CASE WHEN <kind> THEN $n END` writes the NULL in SQL.

fn sql_err(what: &str) -> impl Fn(sqlx::Error) -> Error + '_ {
    move |e| {
        // SQLITE_CORRUPT (11) and SQLITE_NOTADB (26): say what it means.
        let damaged = matches!(&e, sqlx::Error::Database(d)
            if matches!(d.code().as_deref().and_then(crate::fault::sqlite_primary), Some(11) | Some(26)));
        if let Some(kind) = crate::fault::of_sql(&e) {
            let m = format!("results database ({kind}): {what}: {e}");
            return if crate::fault::transient(&e) {
                Error::Unavailable(m)
            } else {
                Error::Fault(m)
            };
        }
        let hint = if damaged {
            " — the database file is damaged; restore it from a backup (`sqlite3 FILE 'PRAGMA integrity_check'` shows where)"
        } else {
            ""
        };
        Error::Store(format!("{what}: {e}{hint}"))
    }
}

/// A SQLite path as a `sqlite://` URL: made absolute and free of `.`/`..` (a URL
/// parser would fold `a/../b` and read a first relative segment as a host), then
/// percent-encoded (spaces, `?` and `#` in folder names survive). The file's
/// folder must exist.
fn sqlite_url(path: &Path, mode: &str) -> Result<String> {
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let path = match (path.parent(), path.file_name()) {
        (Some(dir), Some(name)) => {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            std::fs::canonicalize(dir).map_err(io)?.join(name)
        }
        _ => std::fs::canonicalize(path).map_err(io)?,
    };
    Ok(encode_sqlite_url(&path, mode))
}

fn encode_sqlite_url(path: &Path, mode: &str) -> String {
    let mut enc = String::new();
    for b in path.as_os_str().as_encoded_bytes() {
        match *b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'/' | b'-' | b'_' | b'.' | b'~' => {
                enc.push(*b as char)
            }
            other => enc.push_str(&format!("%{other:02X}")),
        }
    }
    format!("sqlite://{enc}?mode={mode}")
}

impl Store {
    /// Opens the database for writing, creating it if needed, with migrations
    /// applied. SQLite: the file and its folder are created; WAL journal, a busy
    /// timeout and foreign keys on. PostgreSQL: the database must exist.
    pub async fn open(db: impl Into<DbLocation>) -> Result<Store> {
        let location: DbLocation = db.into();
        sqlx::any::install_default_drivers();
        let backend = location.backend();
        check_location(&location, true).await?;
        let (url, pool_options) = match &location {
            DbLocation::Sqlite(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| Error::Io {
                        path: dir.to_path_buf(),
                        source: e,
                    })?;
                }
                (
                    sqlite_url(path, "rwc")?,
                    AnyPoolOptions::new()
                        .max_connections(1)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute("PRAGMA busy_timeout = 30000").await?;
                                conn.execute("PRAGMA journal_mode = WAL").await?;
                                conn.execute("PRAGMA synchronous = NORMAL").await?;
                                conn.execute("PRAGMA foreign_keys = ON").await?;
                                Ok(())
                            })
                        }),
                )
            }
            DbLocation::Postgres(url) => (
                url.clone(),
                AnyPoolOptions::new()
                    .max_connections(4)
                    // short: a server that is down fails a call fast, and
                    // the scheduler's retries (crate::retry) do the waiting
                    .acquire_timeout(std::time::Duration::from_secs(10)),
            ),
        };
        let pool = connect(&location, &url, pool_options).await?;
        migrator(backend).run(&pool).await.map_err(|e| {
            let kind = match &e {
                sqlx::migrate::MigrateError::Execute(x) => crate::fault::of_sql(x),
                _ => None,
            };
            match kind {
                Some(kind) => Error::Fault(format!(
                    "results database {} ({kind}): migrating the schema: {e}",
                    location.display()
                )),
                None => Error::Store(format!("{}: migrating the schema: {e}", location.display())),
            }
        })?;
        Ok(Store {
            pool,
            backend,
            location,
            lease_seconds: DEFAULT_LEASE_SECONDS,
        })
    }

    /// Opens an existing database read-only: writes are refused by the database
    /// itself (SQLite's read-only mode, PostgreSQL's read-only transactions).
    pub async fn open_read_only(db: impl Into<DbLocation>) -> Result<Store> {
        let location: DbLocation = db.into();
        sqlx::any::install_default_drivers();
        let backend = location.backend();
        let (url, pool_options) = match &location {
            DbLocation::Sqlite(path) => {
                if !path.is_file() {
                    return Err(Error::Store(format!(
                        "{}: no results database here (run a sweep first, or pass --db)",
                        path.display()
                    )));
                }
                if check_location(&location, false).await? == Schema::Empty {
                    return Err(Error::Store(format!(
                        "{}: an empty database, no Sweep results in it (run a sweep first, or pass --db)",
                        path.display()
                    )));
                }
                (
                    readable_url(path)?,
                    AnyPoolOptions::new()
                        .max_connections(2)
                        .after_connect(|conn, _| {
                            Box::pin(async move {
                                conn.execute("PRAGMA busy_timeout = 30000").await?;
                                // Queries over large sweeps: map the file instead of a
                                // read call per page.
                                conn.execute("PRAGMA mmap_size = 4294967296").await?;
                                conn.execute("PRAGMA cache_size = -131072").await?;
                                Ok(())
                            })
                        }),
                )
            }
            DbLocation::Postgres(url) => (
                {
                    check_location(&location, false).await?;
                    url.clone()
                },
                AnyPoolOptions::new()
                    .max_connections(2)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
                                .await?;
                            Ok(())
                        })
                    }),
            ),
        };
        let pool = connect(&location, &url, pool_options).await?;
        Ok(Store {
            pool,
            backend,
            location,
            lease_seconds: DEFAULT_LEASE_SECONDS,
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Sets the lease that this store's sessions declare (see [`Store::heartbeat`]).
    pub fn with_lease(mut self, seconds: f64) -> Store {
        self.lease_seconds = seconds;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn location(&self) -> &DbLocation {
        &self.location
    }

    pub async fn close(self) {
        self.pool.close().await;
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        self.pool
            .begin_with(self.backend.begin_write())
            .await
            .map_err(sql_err("begin"))
    }

    /// Inserts the sweep, or updates its spec and provenance when it exists. Returns its id.
    pub async fn upsert_sweep(&self, s: &NewSweep) -> Result<i64> {
        let t = now();
        let mut tx = self.begin_write().await?;
        let existing: Option<(i64, String)> = sqlx::query_as(&format!(
            "SELECT id, dataset_fingerprint FROM sweeps WHERE name = $1{}",
            if self.backend == Backend::Postgres {
                " FOR NO KEY UPDATE"
            } else {
                ""
            }
        ))
        .bind(&s.name)
        .fetch_optional(&mut *tx)
        .await
        .map_err(sql_err("reading sweeps"))?;
        if let Some((id, fp)) = existing {
            if fp != s.dataset_fingerprint {
                return Err(Error::Store(format!(
                    "sweep `{}` was run on a different data set (fingerprint {fp}, now {}); its stored results would not be comparable. Rename the sweep or use another --db",
                    s.name, s.dataset_fingerprint
                )));
            }
            sqlx::query("UPDATE sweeps SET description = $1, spec_path = $2, spec_text = $3, spec_hash = $4, objective = $5, direction = $6, tool_version = $7, git_commit = $8, host = $9, updated_at = $10, results_dir = COALESCE($12, results_dir) WHERE id = $11")
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
                .bind(&s.results_dir)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("updating the sweep"))?;
            tx.commit().await.map_err(sql_err("commit"))?;
            return Ok(id);
        }
        // Two submitters recording a new sweep at the same moment: one inserts,
        // the other finds it (and checks the data set) on its second pass.
        let inserted: Option<(i64,)> = sqlx::query_as("INSERT INTO sweeps (name, description, spec_path, spec_text, spec_hash, objective, direction, dataset, dataset_fingerprint, tool_version, git_commit, host, created_at, updated_at, results_dir) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) ON CONFLICT (name) DO NOTHING RETURNING id")
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
            .bind(&s.results_dir)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_err("inserting the sweep"))?;
        tx.commit().await.map_err(sql_err("commit"))?;
        match inserted {
            Some((id,)) => Ok(id),
            None => Box::pin(self.upsert_sweep(s)).await,
        }
    }

    pub async fn set_classes(&self, sweep_id: i64, classes: &[(String, usize)]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM classes WHERE sweep_id = $1 AND class_index >= $2")
            .bind(sweep_id)
            .bind(classes.len() as i64)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("classes"))?;
        for (i, (name, n)) in classes.iter().enumerate() {
            sqlx::query("INSERT INTO classes (sweep_id, class_index, name, image_count) VALUES ($1, $2, $3, $4) ON CONFLICT (sweep_id, class_index) DO UPDATE SET name = excluded.name, image_count = excluded.image_count")
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

    /// Checks for a live run of this sweep and registers this one, in one locked
    /// transaction, so that two runs started at the same instant cannot both pass:
    /// `Err((pid, host))` names the run that holds the sweep. A session on this
    /// host whose process is gone, or on any host whose heartbeat is older than
    /// `stale_before`, is closed as vanished (its trials become reclaimable).
    pub async fn begin_session(
        &self,
        sweep_id: i64,
        pid: i64,
        host: &str,
        stale_seconds: f64,
        is_alive: impl Fn(i64) -> bool,
    ) -> Result<std::result::Result<i64, (i64, String)>> {
        let mut tx = self.begin_write().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT id FROM sweeps WHERE id = $1 FOR NO KEY UPDATE")
                .bind(sweep_id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("locking the sweep"))?;
        }
        let rows: Vec<(i64, i64, String, String, Option<String>)> = sqlx::query_as(
            "SELECT id, pid, host, heartbeat_at, lease_expires_at FROM sessions WHERE sweep_id = $1 AND ended_at IS NULL",
        )
        .bind(sweep_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err("reading sessions"))?;
        // Judged by the database's clock (each machine's may be off).
        let (t, stale_before): (String, String) = sqlx::query_as(&format!(
            "SELECT {}, {}",
            self.backend.now_sql(),
            self.backend.later_sql("$1")
        ))
        .bind(-stale_seconds.clamp(0.0, 365.0 * 86_400.0))
        .fetch_one(&mut *tx)
        .await
        .map_err(sql_err("reading the database's clock"))?;
        for (id, other, h, beat, expires) in rows {
            let alive = if h == host {
                is_alive(other)
            } else {
                match &expires {
                    Some(e) => e.as_str() >= t.as_str(),
                    None => beat.as_str() >= stale_before.as_str(),
                }
            };
            if alive {
                return Ok(Err((other, h)));
            }
            sqlx::query("UPDATE sessions SET ended_at = $1, end_reason = 'vanished' WHERE id = $2 AND ended_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("closing a dead session"))?;
        }
        let id = insert_session(
            &mut tx,
            self.backend,
            sweep_id,
            pid,
            host,
            self.lease_seconds,
        )
        .await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(Ok(id))
    }

    /// Registers a session without checking for other live ones: a worker that
    /// shares the sweep with others (and benchmarks and tests).
    pub async fn start_session(&self, sweep_id: i64, pid: i64, host: &str) -> Result<i64> {
        let mut tx = self.begin_write().await?;
        let id = insert_session(
            &mut tx,
            self.backend,
            sweep_id,
            pid,
            host,
            self.lease_seconds,
        )
        .await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(id)
    }

    /// Beats the session's heartbeat and extends its lease. Returns false when the
    /// session has been ended by someone else (found dead after a long silence):
    /// its trials are no longer its own, and it must stop.
    pub async fn heartbeat(&self, session_id: i64) -> Result<bool> {
        let r = sqlx::query(&format!(
            "UPDATE sessions SET heartbeat_at = {}, lease_expires_at = {} WHERE id = $2 AND ended_at IS NULL",
            self.backend.now_sql(),
            self.backend.later_sql("$1")
        ))
        .bind(self.lease_seconds.clamp(0.0, 365.0 * 86_400.0))
        .bind(session_id)
            .execute(&self.pool)
            .await
            .map_err(sql_err("heartbeat"))?;
        Ok(r.rows_affected() == 1)
    }

    /// The trials `session` holds now (running, claimed by it).
    pub async fn held(&self, sweep_id: i64, session: i64) -> Result<Vec<i64>> {
        let rows: Vec<(i64,)> = sqlx::query_as(
            "SELECT id FROM trials WHERE sweep_id = $1 AND state = 'running' AND session_id = $2",
        )
        .bind(sweep_id)
        .bind(session)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading held trials"))?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    pub async fn end_session(&self, session_id: i64, reason: &str) -> Result<()> {
        // A session already ended by another process (found vanished) keeps
        // that record.
        sqlx::query(
            "UPDATE sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL",
        )
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
        let mut tx = self.begin_write().await?;
        let added = self.insert_trials(&mut tx, sweep_id, trials, None).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(added)
    }

    /// Inserts the trials not yet present (by key) inside `tx`, numbered after
    /// the sweep's last, as part of `proposal` when given; returns how many were new.
    pub(crate) async fn insert_trials(
        &self,
        tx: &mut Transaction<'static, Any>,
        sweep_id: i64,
        trials: &[NewTrial],
        proposal: Option<i64>,
    ) -> Result<usize> {
        let tx = &mut **tx;
        if self.backend == Backend::Postgres {
            // Numbering reads MAX(number): one numbering transaction at a time.
            sqlx::query("SELECT id FROM sweeps WHERE id = $1 FOR NO KEY UPDATE")
                .bind(sweep_id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("locking the sweep"))?;
        }
        let (mut next,): (i64,) =
            sqlx::query_as("SELECT COALESCE(MAX(number), 0) + 1 FROM trials WHERE sweep_id = $1")
                .bind(sweep_id)
                .fetch_one(&mut *tx)
                .await
                .map_err(sql_err("numbering trials"))?;
        let t = now();
        // Which keys are new (a rerun re-sends every trial of the spec), each
        // once; then multi-row INSERTs: one statement per 500 trials and per
        // 500 parameter rows, not one per row (50,000 trials took 100 s as
        // 2.8 million statements).
        let mut existing = std::collections::HashSet::new();
        for chunk in trials.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "SELECT key FROM trials WHERE sweep_id = {} AND key IN ({})",
                self.backend.params(1, 1)[0],
                self.backend.params(2, chunk.len()).join(", ")
            );
            let mut q = sqlx::query_as::<_, (String,)>(&sql).bind(sweep_id);
            for tr in chunk {
                q = q.bind(&tr.key);
            }
            for (k,) in q
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_err("reading existing trials"))?
            {
                existing.insert(k);
            }
        }
        let mut fresh: Vec<&NewTrial> = Vec::new();
        for tr in trials {
            if existing.insert(tr.key.clone()) {
                fresh.push(tr);
            }
        }
        // The bases the new trials are stored against, each once.
        let mut bases: std::collections::HashMap<&str, i64> = std::collections::HashMap::new();
        for b in fresh.iter().filter_map(|tr| tr.base.as_deref()) {
            if bases.contains_key(b.hash.as_str()) {
                continue;
            }
            sqlx::query("INSERT INTO config_bases (sweep_id, hash, config_json) VALUES ($1, $2, $3) ON CONFLICT (sweep_id, hash) DO NOTHING")
                .bind(sweep_id)
                .bind(&b.hash)
                .bind(&b.json)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("recording the base configuration"))?;
            let (id,): (i64,) =
                sqlx::query_as("SELECT id FROM config_bases WHERE sweep_id = $1 AND hash = $2")
                    .bind(sweep_id)
                    .bind(&b.hash)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(sql_err("recording the base configuration"))?;
            bases.insert(&b.hash, id);
        }
        let mut added = 0;
        for chunk in fresh.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO trials (sweep_id, number, key, config_json, seed, state, created_at, proposal, base_id) VALUES {} ON CONFLICT (sweep_id, key) DO NOTHING RETURNING id, key",
                values(chunk.len(), 8, |p| {
                    let v = self.backend.params(p, 8);
                    format!(
                        "({}, {}, {}, {}, {}, 'waiting', {}, {}, {})",
                        v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]
                    )
                })
            );
            let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
            for (i, tr) in chunk.iter().enumerate() {
                q = q
                    .bind(sweep_id)
                    .bind(next + i as i64)
                    .bind(&tr.key)
                    .bind(&tr.config_json)
                    .bind(tr.seed as i64)
                    .bind(&t)
                    .bind(proposal)
                    .bind(tr.base.as_ref().map(|b| bases[b.hash.as_str()]));
            }
            let ids: std::collections::HashMap<String, i64> = q
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_err("inserting trials"))?
                .into_iter()
                .map(|(id, key)| (key, id))
                .collect();
            next += chunk.len() as i64;
            added += ids.len();
            let rows: Vec<(i64, &Param)> = chunk
                .iter()
                .filter_map(|tr| ids.get(&tr.key).map(|id| (*id, &tr.params)))
                .flat_map(|(id, params)| params.iter().map(move |p| (id, p)))
                .collect();
            self.insert_params(&mut *tx, &rows, "inserting trial parameters")
                .await?;
        }
        Ok(added)
    }

    /// `trial_params` rows `(trial id, setting)`, one statement per 500 rows;
    /// a row already there is kept.
    async fn insert_params(
        &self,
        conn: &mut sqlx::AnyConnection,
        rows: &[(i64, &Param)],
        what: &'static str,
    ) -> Result<()> {
        for rows in rows.chunks(ROWS_PER_STATEMENT) {
            // (parameters in the order they are bound: SQLite's `?`)
            let sql = format!(
                "INSERT INTO trial_params (trial_id, name, kind, value_text, value_number, swept) VALUES {} ON CONFLICT (trial_id, name) DO NOTHING",
                values(rows.len(), 7, |p| {
                    let v = self.backend.params(p, 7);
                    format!(
                        "({}, {}, {}, {}, CASE WHEN {} = 1 THEN {} END, {})",
                        v[0], v[1], v[2], v[3], v[4], v[5], v[6]
                    )
                })
            );
            let mut q = sqlx::query(&sql);
            for (id, (name, kind, text, num, swept)) in rows {
                q = q
                    .bind(*id)
                    .bind(name)
                    .bind(kind)
                    .bind(text)
                    .bind(i64::from(num.is_some()))
                    .bind(num.unwrap_or(0.0))
                    .bind(i64::from(*swept));
            }
            q.execute(&mut *conn).await.map_err(sql_err(what))?;
        }
        Ok(())
    }

    async fn clear_partial(tx: &mut Transaction<'_, Any>, trial_id: i64) -> Result<()> {
        for table in [
            "epoch_metrics",
            "final_metrics",
            "class_metrics",
            "confusion_cells",
            "artifacts",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE trial_id = $1"))
                .bind(trial_id)
                .execute(&mut **tx)
                .await
                .map_err(sql_err("clearing partial rows"))?;
        }
        Ok(())
    }

    /// Trials left `running` by a session that is gone go back to `waiting`: the
    /// session has ended (closed, or found vanished), or its lease has expired
    /// (`lease_expires_at` passed; for sessions without one, a heartbeat older
    /// than `stale_before`, RFC 3339 as [`now`] writes). Partial rows are removed
    /// and the attempt recorded as orphaned (not counted against the retry limit:
    /// the trial did not fail). Never touches `current_session`'s trials. Safe to
    /// run from many workers at once. Returns how many.
    pub async fn reclaim_stale(
        &self,
        sweep_id: i64,
        current_session: i64,
        stale_seconds: f64,
    ) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<(i64,)> = sqlx::query_as(&format!(
            "SELECT t.id FROM trials t LEFT JOIN sessions s ON s.id = t.session_id \
             WHERE t.sweep_id = $1 AND t.state = 'running' AND (t.session_id IS NULL OR t.session_id <> $2) \
               AND (s.id IS NULL OR s.ended_at IS NOT NULL OR s.lease_expires_at < {now} \
                    OR (s.lease_expires_at IS NULL AND s.heartbeat_at < {ago})) ORDER BY t.id{}",
            match self.backend {
                Backend::Sqlite => "",
                Backend::Postgres => " FOR NO KEY UPDATE OF t SKIP LOCKED",
            },
            now = self.backend.now_sql(),
            ago = self.backend.later_sql("$3"),
        ))
        .bind(sweep_id)
        .bind(current_session)
        .bind(-stale_seconds.clamp(0.0, 365.0 * 86_400.0))
        .fetch_all(&mut *tx)
        .await
        .map_err(sql_err("finding orphaned trials"))?;
        let mut n = 0;
        for (id,) in &ids {
            let r = sqlx::query("UPDATE trials SET state = 'waiting', attempts = attempts - 1, session_id = NULL, worker_pid = NULL, device = NULL, started_at = NULL WHERE id = $1 AND state = 'running'")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("reclaiming"))?;
            if r.rows_affected() != 1 {
                continue;
            }
            Self::clear_partial(&mut tx, *id).await?;
            sqlx::query("UPDATE trial_attempts SET ended_at = $1, outcome = 'orphaned', error = 'the process running it stopped (its session ended or stopped sending heartbeats)' WHERE trial_id = $2 AND ended_at IS NULL")
                .bind(now())
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("recording the orphaned attempt"))?;
            n += 1;
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(n)
    }

    /// Running trials held by sessions other than `session` (that may still need a
    /// worker: a shared sweep is not over while another worker's trials can lapse).
    pub async fn running_elsewhere(&self, sweep_id: i64, session: i64) -> Result<i64> {
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM trials WHERE sweep_id = $1 AND state = 'running' AND (session_id IS NULL OR session_id <> $2)")
            .bind(sweep_id)
            .bind(session)
            .fetch_one(&self.pool)
            .await
            .map_err(sql_err("counting running trials"))?;
        Ok(n)
    }

    /// Keys of the trials still to finish (waiting or running; failed ones with
    /// attempts left), to tell which belong to the current spec.
    pub async fn unfinished_keys(&self, sweep_id: i64, max_attempts: i64) -> Result<Vec<String>> {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT key FROM trials WHERE sweep_id = $1 AND (state IN ('waiting', 'running') OR (state = 'failed' AND attempts < $2))",
        )
        .bind(sweep_id)
        .bind(max_attempts)
        .fetch_all(&self.pool)
        .await
        .map_err(sql_err("reading unfinished trials"))?;
        Ok(rows.into_iter().map(|r| r.0).collect())
    }

    /// `sweep run --retry-failed`: the sweep's failed trials that `runs(key)`
    /// accepts go back to `waiting` with their attempt count reset (their
    /// earlier attempts stay in `trial_attempts`). Returns how many.
    pub async fn retry_failed(&self, sweep_id: i64, runs: impl Fn(&str) -> bool) -> Result<u64> {
        let mut tx = self.begin_write().await?;
        let failed: Vec<(i64, String)> =
            sqlx::query_as("SELECT id, key FROM trials WHERE sweep_id = $1 AND state = 'failed'")
                .bind(sweep_id)
                .fetch_all(&mut *tx)
                .await
                .map_err(sql_err("reading failed trials"))?;
        let mut n = 0;
        for (id, _) in failed.iter().filter(|(_, k)| runs(k)) {
            let r = sqlx::query("UPDATE trials SET state = 'waiting', attempts = 0 WHERE id = $1 AND state = 'failed'")
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("re-queueing a failed trial"))?;
            n += r.rows_affected();
        }
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(n)
    }

    /// Failed trials with fewer than `max_attempts` attempts go back to `waiting`.
    pub async fn requeue_failed(&self, sweep_id: i64, max_attempts: i64) -> Result<u64> {
        let r = sqlx::query("UPDATE trials SET state = 'waiting' WHERE sweep_id = $1 AND state = 'failed' AND attempts < $2")
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
    /// (the scheduler passes: in the current spec, not already in flight). Atomic
    /// across processes and machines: SQLite holds the write lock for the whole
    /// claim; PostgreSQL locks the candidate rows (`FOR UPDATE SKIP LOCKED`, so
    /// concurrent workers take different trials without waiting on each other).
    pub async fn claim_next_where(
        &self,
        sweep_id: i64,
        session_id: i64,
        device: &str,
        allowed: impl Fn(i64, &str) -> bool,
    ) -> Result<Option<Claimed>> {
        let mut tx = self.begin_write().await?;
        // Waiting trials in pages, lowest number first: a claim reads a few rows, not
        // every waiting trial of a large sweep.
        let mut after = i64::MIN;
        let t = now();
        loop {
            // The page is read without locks; each candidate is then locked alone
            // (PostgreSQL: a row another worker is claiming right now is skipped,
            // not waited for, and no other row is held).
            let page: Vec<(i64, i64, String, String, i64, Option<i64>)> = sqlx::query_as(
                "SELECT id, number, key, config_json, attempts, base_id FROM trials WHERE sweep_id = $1 AND state = 'waiting' AND number > $2 ORDER BY number LIMIT 32",
            )
            .bind(sweep_id)
            .bind(after)
            .fetch_all(&mut *tx)
            .await
            .map_err(sql_err("claiming"))?;
            let Some(last) = page.last().map(|r| r.1) else {
                return Ok(None);
            };
            after = last;
            for (id, number, key, config_json, attempts, base_id) in page {
                if !allowed(id, &key) {
                    continue;
                }
                let locked: Option<(i64,)> = sqlx::query_as(&format!(
                    "SELECT id FROM trials WHERE id = $1 AND state = 'waiting'{}",
                    self.backend.skip_locked()
                ))
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(sql_err("claiming"))?;
                if locked.is_none() {
                    continue;
                }
                let r = sqlx::query("UPDATE trials SET state = 'running', attempts = attempts + 1, session_id = $1, device = $2, started_at = $3, error = NULL, stop_reason = NULL WHERE id = $4 AND state = 'waiting'")
                    .bind(session_id)
                    .bind(device)
                    .bind(&t)
                    .bind(id)
                    .execute(&mut *tx)
                    .await
                    .map_err(sql_err("claiming"))?;
                if r.rows_affected() != 1 {
                    // taken by another worker between the read and the update
                    continue;
                }
                // Attempt rows are numbered by every start, counted or not
                // (interruptions give their count back), so they never collide.
                let (start,): (i64,) = sqlx::query_as("INSERT INTO trial_attempts (trial_id, attempt, session_id, started_at) VALUES ($1, (SELECT COUNT(*) + 1 FROM trial_attempts WHERE trial_id = $2), $3, $4) RETURNING attempt")
                    .bind(id)
                    .bind(id)
                    .bind(session_id)
                    .bind(&t)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(sql_err("recording the attempt"))?;
                let config_json = match base_id {
                    Some(base) => {
                        self.write_whole_config(&mut tx, id, base, &config_json)
                            .await?
                    }
                    None => config_json,
                };
                tx.commit().await.map_err(sql_err("commit"))?;
                return Ok(Some(Claimed {
                    id,
                    number,
                    key,
                    config_json,
                    attempt: attempts + 1,
                    start,
                }));
            }
        }
    }

    /// A trial stored as its difference from a base gets its whole
    /// configuration and every setting's row as it is claimed (so every trial
    /// that ran reads as one recorded whole); returns the configuration.
    async fn write_whole_config(
        &self,
        tx: &mut Transaction<'static, Any>,
        trial_id: i64,
        base_id: i64,
        delta: &str,
    ) -> Result<String> {
        let (base,): (String,) =
            sqlx::query_as("SELECT config_json FROM config_bases WHERE id = $1")
                .bind(base_id)
                .fetch_one(&mut **tx)
                .await
                .map_err(sql_err("reading the trial's base configuration"))?;
        let bad = |what: &str, e: serde_json::Error| {
            Error::Store(format!(
                "trial {trial_id}: its stored {what} is not JSON: {e}"
            ))
        };
        let base: Json = serde_json::from_str(&base).map_err(|e| bad("base configuration", e))?;
        let delta: Json = serde_json::from_str(delta).map_err(|e| bad("configuration", e))?;
        let whole = compact::apply(&base, &delta);
        let text = whole.to_string();
        sqlx::query("UPDATE trials SET config_json = $1, base_id = NULL WHERE id = $2")
            .bind(&text)
            .bind(trial_id)
            .execute(&mut **tx)
            .await
            .map_err(sql_err("writing the trial's configuration"))?;
        let mut leaves = Vec::new();
        compact::flatten_params("", &whole, &mut leaves);
        let params: Vec<Param> = leaves
            .into_iter()
            .map(|(name, kind, text, number)| (name, kind, text, number, false))
            .collect();
        let rows: Vec<(i64, &Param)> = params.iter().map(|p| (trial_id, p)).collect();
        // (the swept settings have their rows already, and keep them)
        self.insert_params(tx, &rows, "writing the trial's settings")
            .await?;
        Ok(text)
    }

    pub async fn set_worker_pid(&self, trial_id: i64, session: i64, pid: i64) -> Result<()> {
        sqlx::query("UPDATE trials SET worker_pid = $1 WHERE id = $2 AND session_id = $3")
            .bind(pid)
            .bind(trial_id)
            .bind(session)
            .execute(&self.pool)
            .await
            .map_err(sql_err("worker pid"))?;
        Ok(())
    }

    /// One epoch's metrics (rows `train.*`, `val.*`, `time.*`). Only a trial still
    /// held by `session` takes them (a late event from a worker whose trial was
    /// reclaimed must not touch the new attempt); returns whether it did.
    pub async fn record_epoch(
        &self,
        trial_id: i64,
        session: i64,
        m: &EpochMetrics,
    ) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        if !holds(&mut tx, self.backend, trial_id, session).await? {
            return Ok(false);
        }
        // One statement for the epoch's rows: one round trip to a database server
        // instead of ten.
        let rows = epoch_rows(m);
        let sql = format!(
            "INSERT INTO epoch_metrics (trial_id, epoch, split, name, value, value_kind) VALUES {} ON CONFLICT (trial_id, epoch, split, name) DO UPDATE SET value = excluded.value, value_kind = excluded.value_kind",
            values(rows.len(), 6, |p| format!(
                "(${}, ${}, ${}, ${}, CASE WHEN ${} = 'finite' THEN ${} END, ${})",
                p, p + 1, p + 2, p + 3, p + 5, p + 4, p + 5
            ))
        );
        let mut q = sqlx::query(&sql);
        for (split, name, v) in &rows {
            let (value, kind) = value_kind(*v);
            q = q
                .bind(trial_id)
                .bind(m.epoch as i64)
                .bind(*split)
                .bind(*name)
                .bind(value.unwrap_or(0.0))
                .bind(kind);
        }
        q.execute(&mut *tx)
            .await
            .map_err(sql_err("recording an epoch"))?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(true)
    }

    /// `running → complete | pruned` with final metrics, class metrics, confusion
    /// counts and artifacts, in one transaction. Returns false (and writes nothing)
    /// when `session` no longer holds the trial (it was reclaimed).
    pub async fn finish(&self, trial_id: i64, session: i64, f: &Finish<'_>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let t = now();
        let r = sqlx::query("UPDATE trials SET state = $1, stop_reason = $2, stop_epoch = $3, best_epoch = $4, report_epoch = $5, num_parameters = $6, train_size = $7, val_size = $8, duration_seconds = $9, finished_at = $10, error = NULL, stop_detail = $13, metrics_version = $14, init_json = $15 WHERE id = $11 AND state = 'running' AND session_id = $12")
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
            .bind(session)
            .bind(&f.stop_detail)
            .bind(METRICS_VERSION)
            .bind(&f.init_json)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("finishing a trial"))?;
        if r.rows_affected() != 1 {
            // A repeat of a call whose first try committed (its answer lost
            // with the connection) finds its own result: done, not refused.
            return already(&mut tx, trial_id, session, f.state.as_str()).await;
        }
        let mut metrics = f.extra_metrics.clone();
        // (each name once, the last value winning: PostgreSQL refuses a
        // multi-row upsert that touches a key twice)
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
            // Many rows per statement (a 100-class confusion matrix has up to
            // 10,000 cells): few round trips, well under either database's
            // parameter limit.
            let classes: Vec<(usize, &sweep_train::metrics::ClassMetrics)> =
                rep.classes.iter().enumerate().collect();
            for chunk in classes.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO class_metrics (trial_id, class_index, precision, recall, f1, support) VALUES {}",
                    values(chunk.len(), 6, plain(6))
                );
                let mut q = sqlx::query(&sql);
                for (i, c) in chunk {
                    q = q
                        .bind(trial_id)
                        .bind(*i as i64)
                        .bind(c.precision)
                        .bind(c.recall)
                        .bind(c.f1)
                        .bind(c.support as i64);
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(sql_err("class metrics"))?;
            }
            let cells: Vec<(usize, usize, u64)> = rep
                .confusion
                .counts
                .iter()
                .enumerate()
                .flat_map(|(ti, row)| {
                    row.iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(move |(pi, n)| (ti, pi, *n))
                })
                .collect();
            for chunk in cells.chunks(ROWS_PER_STATEMENT) {
                let sql = format!(
                    "INSERT INTO confusion_cells (trial_id, true_index, predicted_index, count) VALUES {}",
                    values(chunk.len(), 4, plain(4))
                );
                let mut q = sqlx::query(&sql);
                for (ti, pi, n) in chunk {
                    q = q
                        .bind(trial_id)
                        .bind(*ti as i64)
                        .bind(*pi as i64)
                        .bind(*n as i64);
                }
                q.execute(&mut *tx)
                    .await
                    .map_err(sql_err("confusion cells"))?;
            }
        }
        let metrics: Vec<(String, f64)> = metrics
            .into_iter()
            .collect::<std::collections::BTreeMap<String, f64>>()
            .into_iter()
            .collect();
        for chunk in metrics.chunks(ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO final_metrics (trial_id, name, value, value_kind) VALUES {} ON CONFLICT (trial_id, name) DO UPDATE SET value = excluded.value, value_kind = excluded.value_kind",
                values(chunk.len(), 4, |p| format!(
                    "(${}, ${}, CASE WHEN ${} = 'finite' THEN ${} END, ${})",
                    p,
                    p + 1,
                    p + 3,
                    p + 2,
                    p + 3
                ))
            );
            let mut q = sqlx::query(&sql);
            for (name, v) in chunk {
                let (value, kind) = value_kind(*v);
                q = q
                    .bind(trial_id)
                    .bind(name)
                    .bind(value.unwrap_or(0.0))
                    .bind(kind);
            }
            q.execute(&mut *tx)
                .await
                .map_err(sql_err("final metrics"))?;
        }
        for (kind, path) in &f.artifacts {
            sqlx::query("INSERT INTO artifacts (trial_id, kind, path) VALUES ($1, $2, $3) ON CONFLICT (trial_id, kind) DO UPDATE SET path = excluded.path")
                .bind(trial_id)
                .bind(kind)
                .bind(path)
                .execute(&mut *tx)
                .await
                .map_err(sql_err("artifacts"))?;
        }
        end_attempt(&mut tx, trial_id, f.state.as_str(), None).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(true)
    }

    /// `running → failed` with the error chain; partial rows removed. False when
    /// `session` no longer holds the trial.
    pub async fn fail(&self, trial_id: i64, session: i64, error: &str) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE trials SET state = 'failed', error = $1, finished_at = $2 WHERE id = $3 AND state = 'running' AND session_id = $4")
            .bind(error)
            .bind(now())
            .bind(trial_id)
            .bind(session)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("failing a trial"))?;
        if r.rows_affected() != 1 {
            return already(&mut tx, trial_id, session, "failed").await;
        }
        Self::clear_partial(&mut tx, trial_id).await?;
        end_attempt(&mut tx, trial_id, "failed", Some(error)).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(true)
    }

    /// `running → waiting` after an interruption: partial rows removed, the attempt
    /// recorded as interrupted (and not counted against the retry limit). False
    /// when `session` no longer holds the trial.
    pub async fn interrupt(&self, trial_id: i64, session: i64) -> Result<bool> {
        self.give_back(trial_id, session, None).await
    }

    /// `running → waiting`, the attempt given back (not counted against the
    /// retry limit) and recorded as interrupted with `why` (a fault of the
    /// machine names itself there). False when `session` no longer holds it.
    pub async fn give_back(&self, trial_id: i64, session: i64, why: Option<&str>) -> Result<bool> {
        let mut tx = self.begin_write().await?;
        let r = sqlx::query("UPDATE trials SET state = 'waiting', attempts = attempts - 1, session_id = NULL, worker_pid = NULL, started_at = NULL WHERE id = $1 AND state = 'running' AND session_id = $2")
            .bind(trial_id)
            .bind(session)
            .execute(&mut *tx)
            .await
            .map_err(sql_err("interrupting a trial"))?;
        if r.rows_affected() != 1 {
            // A repeat whose first try committed: the latest start is this
            // session's, ended as interrupted, and the trial waits.
            let row: Option<(i64,)> = sqlx::query_as(
                "SELECT a.trial_id FROM trial_attempts a JOIN trials t ON t.id = a.trial_id \
                 WHERE a.trial_id = $1 AND a.session_id = $2 AND a.outcome = 'interrupted' AND t.state = 'waiting' \
                   AND a.attempt = (SELECT MAX(attempt) FROM trial_attempts WHERE trial_id = $1)",
            )
            .bind(trial_id)
            .bind(session)
            .fetch_optional(&mut *tx)
            .await
            .map_err(sql_err("checking the trial's state"))?;
            return Ok(row.is_some());
        }
        Self::clear_partial(&mut tx, trial_id).await?;
        end_attempt(&mut tx, trial_id, "interrupted", why).await?;
        tx.commit().await.map_err(sql_err("commit"))?;
        Ok(true)
    }

    pub async fn counts(&self, sweep_id: i64) -> Result<StateCounts> {
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT state, COUNT(*) FROM trials WHERE sweep_id = $1 GROUP BY state")
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
        let r: Option<(i64,)> = sqlx::query_as("SELECT id FROM sweeps WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(sql_err("reading sweeps"))?;
        Ok(r.map(|r| r.0))
    }

    /// The database's own consistency check: SQLite's `PRAGMA integrity_check`
    /// ("ok" when sound); on PostgreSQL, which checks itself, that every table of
    /// the schema is readable.
    pub async fn integrity_check(&self) -> Result<String> {
        match self.backend {
            Backend::Sqlite => {
                let (s,): (String,) = sqlx::query_as("PRAGMA integrity_check")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(sql_err("integrity check"))?;
                Ok(s)
            }
            Backend::Postgres => {
                for t in [
                    "sweeps",
                    "classes",
                    "sessions",
                    "trials",
                    "trial_attempts",
                    "trial_params",
                    "epoch_metrics",
                    "final_metrics",
                    "class_metrics",
                    "confusion_cells",
                    "artifacts",
                ] {
                    sqlx::query(&format!("SELECT COUNT(*) FROM {t}"))
                        .fetch_one(&self.pool)
                        .await
                        .map_err(sql_err("integrity check"))?;
                }
                Ok("ok".into())
            }
        }
    }
}

/// Creates a fresh, empty PostgreSQL database `name` on the server of `base` (a
/// `postgres://` URL of any database there) and returns its URL: each test and
/// benchmark gets a database of its own. `name` must be a plain identifier.
pub async fn create_postgres_database(base: &str, name: &str) -> Result<String> {
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(Error::Store(format!(
            "`{name}` is not a plain database name (a-z, 0-9, _)"
        )));
    }
    sqlx::any::install_default_drivers();
    let location = DbLocation::Postgres(base.to_string());
    let pool = connect(&location, base, AnyPoolOptions::new().max_connections(1)).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
        .execute(&pool)
        .await
        .map_err(sql_err("dropping the old test database"))?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&pool)
        .await
        .map_err(sql_err("creating a database"))?;
    pool.close().await;
    // Same server and credentials, another database: replace the URL's path.
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, format!("?{q}")),
        None => (base, String::new()),
    };
    let after_scheme = head.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = head[after_scheme..]
        .find('/')
        .map(|i| after_scheme + i)
        .unwrap_or(head.len());
    Ok(format!("{}/{name}{query}", &head[..host_end]))
}

async fn connect(location: &DbLocation, url: &str, options: AnyPoolOptions) -> Result<AnyPool> {
    let opts = AnyConnectOptions::from_str(url)
        .map_err(|e| Error::Store(format!("{}: {e}", location.display())))?;
    options
        .connect_with(opts)
        .await
        .map_err(|e| match crate::fault::of_sql(&e) {
            Some(kind) => Error::Fault(format!(
                "results database {} ({kind}): cannot open it: {e}",
                location.display()
            )),
            None => Error::Store(format!("cannot open {}: {e}", location.display())),
        })
}

/// Rows per multi-row INSERT: 500 rows × at most 6 parameters stays far below
/// SQLite's 32,766 and PostgreSQL's 65,535 parameters per statement.
const ROWS_PER_STATEMENT: usize = 500;

/// `n` value groups of `width` parameters each, numbered from `$1`; `group(p)`
/// writes one group whose first parameter is `$p`.
fn values(n: usize, width: usize, group: impl Fn(usize) -> String) -> String {
    (0..n)
        .map(|r| group(r * width + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A plain group `($p, $p+1, ...)` of `width` parameters.
fn plain(width: usize) -> impl Fn(usize) -> String {
    move |p| {
        let items: Vec<String> = (p..p + width).map(|i| format!("${i}")).collect();
        format!("({})", items.join(", "))
    }
}

/// Whether `session` still holds `trial_id` (running, claimed by it); locks the row
/// on PostgreSQL so a reclaim cannot slip in before the transaction commits.
async fn holds(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    trial_id: i64,
    session: i64,
) -> Result<bool> {
    let row: Option<(i64,)> = sqlx::query_as(&format!(
        "SELECT id FROM trials WHERE id = $1 AND state = 'running' AND session_id = $2{}",
        if backend == Backend::Postgres {
            " FOR NO KEY UPDATE"
        } else {
            ""
        }
    ))
    .bind(trial_id)
    .bind(session)
    .fetch_optional(&mut **tx)
    .await
    .map_err(sql_err("checking the trial's holder"))?;
    Ok(row.is_some())
}

/// Whether `session` already moved the trial to `state` (see [`Store::finish`]).
async fn already(
    tx: &mut Transaction<'_, Any>,
    trial_id: i64,
    session: i64,
    state: &str,
) -> Result<bool> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT id FROM trials WHERE id = $1 AND session_id = $2 AND state = $3")
            .bind(trial_id)
            .bind(session)
            .bind(state)
            .fetch_optional(&mut **tx)
            .await
            .map_err(sql_err("checking the trial's state"))?;
    Ok(row.is_some())
}

async fn insert_session(
    tx: &mut Transaction<'_, Any>,
    backend: Backend,
    sweep_id: i64,
    pid: i64,
    host: &str,
    lease_seconds: f64,
) -> Result<i64> {
    let (id,): (i64,) = sqlx::query_as(&format!(
        "INSERT INTO sessions (sweep_id, pid, host, started_at, heartbeat_at, lease_expires_at) VALUES ($1, $2, $3, {now}, {now}, {later}) RETURNING id",
        now = backend.now_sql(),
        later = backend.later_sql("$4")
    ))
        .bind(sweep_id)
        .bind(pid)
        .bind(host)
        .bind(lease_seconds.clamp(0.0, 365.0 * 86_400.0))
        .fetch_one(&mut **tx)
        .await
        .map_err(sql_err("starting a session"))?;
    Ok(id)
}

async fn end_attempt(
    tx: &mut Transaction<'_, Any>,
    trial_id: i64,
    outcome: &str,
    error: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE trial_attempts SET ended_at = $1, outcome = $2, error = $3 WHERE trial_id = $4 AND ended_at IS NULL")
        .bind(now())
        .bind(outcome)
        .bind(error)
        .bind(trial_id)
        .execute(&mut **tx)
        .await
        .map_err(sql_err("recording the attempt's end"))?;
    Ok(())
}

/// `now()` minus `seconds`, in the same RFC 3339 text: the cut-off for heartbeats.
pub fn seconds_ago(seconds: f64) -> String {
    let s = if seconds.is_finite() {
        seconds.clamp(0.0, 3.2e9)
    } else {
        3.2e9
    };
    let t = std::time::SystemTime::now()
        .checked_sub(std::time::Duration::from_secs_f64(s))
        .unwrap_or(std::time::UNIX_EPOCH);
    rfc3339(t)
}

/// The rows one epoch writes: (split, name, value).
pub fn epoch_rows(m: &EpochMetrics) -> Vec<(&'static str, &'static str, f64)> {
    vec![
        ("train", "loss", m.train_loss),
        ("train", "accuracy", m.train_accuracy),
        ("train", "learning_rate", m.learning_rate),
        ("train", "loss_std", m.train_loss_std),
        ("train", "loss_step_std", m.train_loss_step_std),
        ("val", "loss", m.val_loss),
        ("val", "accuracy", m.val_accuracy),
        ("val", "macro_f1", m.val_macro_f1),
        ("val", "balanced_accuracy", m.val_balanced_accuracy),
        ("time", "epoch_seconds", m.seconds),
        ("time", "data_seconds", m.data_seconds),
        ("time", "step_seconds", m.step_seconds),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_folders_are_not_network_file_systems() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_filesystem(dir.path()), None);
        assert_eq!(network_filesystem(&dir.path().join("x.db")), None);
    }

    #[test]
    fn sqlite_urls_keep_odd_characters() {
        let u = encode_sqlite_url(Path::new("/r/my results #1/a?b.db"), "ro");
        assert_eq!(u, "sqlite:///r/my%20results%20%231/a%3Fb.db?mode=ro");
    }
}
