//! `sweep run --executor slurm`: the sweep is recorded in a shared PostgreSQL
//! database and its data set decoded into the shared results folder, then a Slurm
//! job array of workers (`sweep worker --db URL --sweep NAME`) is submitted with
//! `sbatch`. Slurm places the workers; the database is the only shared state:
//! each worker claims trials atomically, beats a heartbeat, and reclaims the
//! trials of workers that stopped beating. This side only follows the counts in
//! the database (and `squeue`) until the sweep is done or the array is gone.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use crate::db;
use crate::error::{Error, Result};
use crate::runner::{self, Hold, Progress, RunSettings, RunSummary, StopSignal};
use crate::spec::SweepSpec;
use crate::store::Backend;

/// Slurm settings, from the spec's `[slurm]` table or `--slurm-*` flags (flags win).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlurmOptions {
    /// `--partition` (default: the cluster's default partition).
    pub partition: Option<String>,
    /// At most this many array tasks (workers) run at once: `--array=...%N`.
    pub array_parallelism: Option<usize>,
    /// Array tasks in all (default: the parallelism, at most the trials to run).
    pub array_size: Option<usize>,
    /// `--time` per task, e.g. `02:00:00`.
    pub time: Option<String>,
    /// `--mem` per task, e.g. `4G`.
    pub mem: Option<String>,
    /// `--cpus-per-task` (default 1): CPU trials a worker runs at once.
    pub cpus_per_task: Option<usize>,
    /// `--gpus-per-task`: the worker runs its trials on `cuda:0..N-1`.
    pub gpus_per_task: Option<usize>,
}

impl SlurmOptions {
    /// Each setting from `self` when given, else from `base`.
    pub fn over(self, base: &SlurmOptions) -> SlurmOptions {
        SlurmOptions {
            partition: self.partition.or_else(|| base.partition.clone()),
            array_parallelism: self.array_parallelism.or(base.array_parallelism),
            array_size: self.array_size.or(base.array_size),
            time: self.time.or_else(|| base.time.clone()),
            mem: self.mem.or_else(|| base.mem.clone()),
            cpus_per_task: self.cpus_per_task.or(base.cpus_per_task),
            gpus_per_task: self.gpus_per_task.or(base.gpus_per_task),
        }
    }
}

/// The default number of workers running at once.
pub const DEFAULT_PARALLELISM: usize = 4;

/// A value for a POSIX shell, single-quoted.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// Refuses what cannot work before anything is recorded.
pub fn check_database(settings: &RunSettings) -> Result<()> {
    if settings.db.backend() != Backend::Postgres {
        return Err(Error::Spec {
            location: format!("--db {}", settings.db.display()),
            message: "--executor slurm needs a PostgreSQL database (--db postgres://user@host/db): workers on several machines write to it at once, and SQLite's file locking is not reliable over network file systems".into(),
        });
    }
    Ok(())
}

/// `%` is special in sbatch's file name patterns.
fn sbatch_path(p: &Path) -> String {
    p.display().to_string().replace('%', "%%")
}

/// The worker script each array task runs. The database URL (which may hold a
/// password) goes in the environment, not on the command line that `ps` shows.
fn worker_script(spec: &SweepSpec, settings: &RunSettings, results: &Path) -> String {
    let args = [
        "worker".to_string(),
        "--sweep".into(),
        spec.name.clone(),
        "--results".into(),
        results.display().to_string(),
        "--jobs".into(),
        settings.jobs.to_string(),
        "--threads".into(),
        settings.threads_per_worker.to_string(),
        "--devices".into(),
        settings.devices.join(","),
        "--per-device".into(),
        settings.per_device.to_string(),
        "--lease-seconds".into(),
        settings.lease_seconds.to_string(),
        "--max-attempts".into(),
        settings.max_attempts.to_string(),
    ];
    format!(
        "#!/bin/sh\n# Written by `sweep run --executor slurm` for sweep `{}`: every task of the\n# job array is one worker that claims trials from the database until none are left.\nSWEEP_DB={}\nexport SWEEP_DB\nexec {} {}\n",
        spec.name,
        sh_quote(&settings.db.arg()),
        sh_quote(&settings.worker_exe.display().to_string()),
        args.iter().map(|a| sh_quote(a)).collect::<Vec<_>>().join(" ")
    )
}

/// Records the sweep, submits the job array and follows it (unless `detach`).
pub async fn run(
    spec: &SweepSpec,
    settings: &RunSettings,
    options: &SlurmOptions,
    detach: bool,
    progress: impl FnMut(Progress),
    stop: StopSignal,
) -> Result<RunSummary> {
    run_here(spec, settings, options, detach, progress, stop)
        .await
        .map_err(|e| runner::locate(e, &settings.db))
}

async fn run_here(
    spec: &SweepSpec,
    settings: &RunSettings,
    options: &SlurmOptions,
    detach: bool,
    mut progress: impl FnMut(Progress),
    mut stop: StopSignal,
) -> Result<RunSummary> {
    check_database(settings)?;
    let results = std::path::absolute(&settings.results).map_err(|e| Error::Io {
        path: settings.results.clone(),
        source: e,
    })?;
    let settings = RunSettings {
        results: results.clone(),
        ..settings.clone()
    };
    let (store, sweep_id, added, session, manifest, planned, warnings) =
        runner::plan(spec, &settings, Hold::Shared).await?;
    if !warnings.is_empty() {
        progress(Progress::DataWarnings(warnings));
    }
    runner::announce(
        &store,
        sweep_id,
        session,
        &manifest,
        &settings,
        planned,
        added,
        &mut progress,
    )
    .await?;
    let store = Arc::new(store);
    let to_run = runner::left_to_run(&store, sweep_id, &manifest, settings.max_attempts).await?;
    let mut job = None;
    let mut detached = false;
    if to_run > 0 {
        let slurm_dir = log_dir(&results, &spec.name);
        std::fs::create_dir_all(&slurm_dir).map_err(|e| Error::Io {
            path: slurm_dir.clone(),
            source: e,
        })?;
        let script = slurm_dir.join("worker.sh");
        write_private(&script, &worker_script(spec, &settings, &results))?;
        let parallel = options
            .array_parallelism
            .unwrap_or(DEFAULT_PARALLELISM)
            .max(1);
        let tasks = options
            .array_size
            .unwrap_or_else(|| parallel.min(to_run.div_ceil(settings.jobs.max(1))))
            .max(1);
        let mut cmd = tokio::process::Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name=sweep-{}", spec.name))
            .arg(format!("--array=0-{}%{parallel}", tasks - 1))
            .arg(format!(
                "--output={}/worker-%A_%a.out",
                sbatch_path(&slurm_dir)
            ))
            .arg(format!("--chdir={}", sbatch_path(&results)))
            .arg(format!(
                "--cpus-per-task={}",
                options.cpus_per_task.unwrap_or(1).max(1)
            ));
        if let Some(p) = &options.partition {
            cmd.arg(format!("--partition={p}"));
        }
        if let Some(t) = &options.time {
            cmd.arg(format!("--time={t}"));
        }
        if let Some(m) = &options.mem {
            cmd.arg(format!("--mem={m}"));
        }
        if let Some(g) = options.gpus_per_task.filter(|g| *g > 0) {
            cmd.arg(format!("--gpus-per-task={g}"));
        }
        cmd.arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let out = cmd.output().await.map_err(|e| {
            Error::Other(format!(
                "cannot run `sbatch`: {e} (--executor slurm needs Slurm's commands on PATH)"
            ))
        })?;
        if !out.status.success() {
            return Err(Error::Other(format!(
                "sbatch refused the job array ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        // --parsable prints `jobid` or `jobid;cluster`
        let id = String::from_utf8_lossy(&out.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .to_string();
        progress(Progress::Submitted {
            job: id.clone(),
            tasks,
            script,
        });
        job = Some(id.clone());
        if detach {
            detached = true;
        } else {
            detached = follow(
                &store,
                sweep_id,
                session,
                &id,
                &settings,
                &manifest,
                &mut progress,
                &mut stop,
            )
            .await?;
        }
    }
    let counts = store.counts(sweep_id).await?;
    let left = runner::left_to_run(&store, sweep_id, &manifest, settings.max_attempts).await?;
    store
        .end_session(session, if detached { "detached" } else { "finished" })
        .await?;
    let best = runner::ranked(&store, sweep_id, spec).await?;
    Ok(RunSummary {
        sweep: spec.name.clone(),
        job,
        detached,
        left,
        failed_in_run: counts.failed > 0,
        counts,
        interrupted: false,
        objective: spec.objective.clone(),
        best,
    })
}

/// Creates a file only its owner can read (it holds the database URL).
fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o700)
        .open(path)
        .map_err(io)?;
    f.write_all(text.as_bytes()).map_err(io)
}

/// Whether the job array still has tasks pending or running. `squeue` failing
/// for another reason than an unknown job (a busy controller) is retried.
async fn array_alive(job: &str) -> Result<bool> {
    let mut last = String::new();
    for attempt in 0..5 {
        if attempt > 0 {
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
        let out = tokio::process::Command::new("squeue")
            .args(["-h", "-j", job, "-o", "%i %T"])
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| Error::Other(format!("cannot run `squeue`: {e}")))?;
        if out.status.success() {
            return Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty());
        }
        last = String::from_utf8_lossy(&out.stderr).trim().to_string();
        // A job that has left the controller's memory.
        if last.contains("Invalid job id") {
            return Ok(false);
        }
    }
    Err(Error::Other(format!(
        "squeue cannot tell whether job {job} is alive: {last}"
    )))
}

/// Follows the sweep in the database until nothing is waiting or running, or the
/// array has no task left. Returns true when stopped early (Ctrl-C): the array
/// goes on without us.
#[allow(clippy::too_many_arguments)]
async fn follow(
    store: &Arc<crate::store::Store>,
    sweep_id: i64,
    session: i64,
    job: &str,
    settings: &RunSettings,
    manifest: &runner::Manifest,
    progress: &mut impl FnMut(Progress),
    stop: &mut StopSignal,
) -> Result<bool> {
    let mut last = None;
    let poll = std::time::Duration::from_secs_f64((settings.lease_seconds / 4.0).clamp(0.5, 5.0));
    // Following rides out a database restart like the workers do.
    let patience = crate::retry::Patience::for_store(store, settings.lease_seconds);
    loop {
        let counts = db!(patience, store.counts(sweep_id).await)?;
        if last.as_ref() != Some(&counts) {
            progress(Progress::Counts {
                counts: counts.clone(),
            });
            last = Some(counts.clone());
        }
        // Done when nothing of this spec is left: not waiting, not running, and
        // no failed trial about to be retried.
        if db!(
            patience,
            runner::left_to_run(store, sweep_id, manifest, settings.max_attempts).await
        )? == 0
        {
            return Ok(false);
        }
        if !array_alive(job).await? {
            // No worker is left: whatever a killed one held goes back to waiting
            // for the next run.
            store
                .reclaim_stale(sweep_id, session, settings.lease_seconds)
                .await?;
            let counts = store.counts(sweep_id).await?;
            if last.as_ref() != Some(&counts) {
                progress(Progress::Counts { counts });
            }
            return Ok(false);
        }
        db!(patience, store.heartbeat(session).await)?;
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    return Ok(true);
                }
            }
        }
    }
}

/// `--executor none`: records the sweep (and decodes its data set into the results
/// folder) for workers started by hand; runs nothing.
pub async fn record_only(
    spec: &SweepSpec,
    settings: &RunSettings,
    mut progress: impl FnMut(Progress),
) -> Result<RunSummary> {
    let (store, sweep_id, added, session, manifest, planned, warnings) =
        runner::plan(spec, settings, Hold::Shared).await?;
    if !warnings.is_empty() {
        progress(Progress::DataWarnings(warnings));
    }
    let counts = runner::announce(
        &store,
        sweep_id,
        session,
        &manifest,
        settings,
        planned,
        added,
        &mut progress,
    )
    .await?;
    store.end_session(session, "recorded").await?;
    let best = runner::ranked(&store, sweep_id, spec).await?;
    store.close().await;
    Ok(RunSummary {
        sweep: spec.name.clone(),
        job: None,
        detached: counts.waiting + counts.running > 0,
        left: 0,
        failed_in_run: false,
        counts,
        interrupted: false,
        objective: spec.objective.clone(),
        best,
    })
}

/// Where the worker script and the worker logs of a sweep go.
pub fn log_dir(results: &Path, sweep: &str) -> PathBuf {
    results.join(sweep).join("slurm")
}
