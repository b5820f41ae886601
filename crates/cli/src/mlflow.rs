//! MLflow: `sweep run --mlflow URI` mirrors the sweep while it runs (passes of
//! the orchestrator's exporter on a timer, beside the scheduler), and
//! `sweep mlflow sync SWEEP` sends what is not there yet. Which server: the
//! flag, else the spec's `[logging] mlflow`, else `MLFLOW_TRACKING_URI`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use sweep_orchestrator::mlflow::{Exporter, PassReport, Target};
use sweep_orchestrator::spec::Logging;
use sweep_orchestrator::store::{DbLocation, Store};

/// The MLflow flags of `sweep run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct MlflowArgs {
    /// Log the sweep to this MLflow tracking server as it runs (default: the
    /// spec's `[logging] mlflow`, else MLFLOW_TRACKING_URI). Credentials:
    /// MLFLOW_TRACKING_TOKEN, or MLFLOW_TRACKING_USERNAME and _PASSWORD.
    #[arg(long, value_name = "URI")]
    pub mlflow: Option<String>,
    /// Do not log to MLflow, whatever the spec or MLFLOW_TRACKING_URI say.
    #[arg(long, conflicts_with = "mlflow")]
    pub no_mlflow: bool,
    /// Leave the trials' best checkpoints out of MLflow (they are uploaded by
    /// default; `[logging] mlflow_checkpoints = false` does the same).
    #[arg(long)]
    pub mlflow_no_checkpoints: bool,
}

/// How long the last pass after a sweep may take before the command returns
/// (a slow server must not hold the user's terminal; `sync` sends the rest).
const FINAL_PASS: Duration = Duration::from_secs(15);

/// Between live passes (doubled after each failed one, up to a minute).
const EVERY: Duration = Duration::from_secs(2);

/// Which server and where it came from.
fn choose(flag: Option<&str>, spec: Option<&str>) -> Option<(String, &'static str)> {
    if let Some(u) = flag {
        return Some((u.to_string(), "--mlflow"));
    }
    if let Some(u) = spec {
        return Some((u.to_string(), "[logging] mlflow"));
    }
    std::env::var("MLFLOW_TRACKING_URI")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .map(|u| (u, "MLFLOW_TRACKING_URI"))
}

/// The target of a sweep, or None when no server is named. An unusable
/// server named by the flag or the spec is an error; one that only
/// MLFLOW_TRACKING_URI names (it may point at a local `file:` store for
/// Python scripts) is a warning and no MLflow logging.
pub fn target(
    flag: Option<&str>,
    logging: &Logging,
    no_checkpoints: bool,
    results: Option<PathBuf>,
) -> Result<Option<Target>, String> {
    let Some((uri, from)) = choose(flag, logging.mlflow.as_deref()) else {
        return Ok(None);
    };
    match sweep_mlflow::Tracking::from_env(&uri, sweep_mlflow::Patience::default()) {
        Ok(tracking) => Ok(Some(Target {
            tracking,
            experiment: logging.mlflow_experiment.clone(),
            checkpoints: logging.mlflow_checkpoints && !no_checkpoints,
            results,
            report: None,
        })),
        Err(e) if from == "MLFLOW_TRACKING_URI" => {
            eprintln!("warning: MLFLOW_TRACKING_URI: {e}; not logging to MLflow");
            Ok(None)
        }
        Err(e) => Err(format!("{from}: {e}")),
    }
}

/// Whether some session (a worker elsewhere) still runs the sweep.
async fn still_running(store: &Store, sweep: &str) -> bool {
    match sweep_orchestrator::query::sweep(store, sweep).await {
        Ok(info) => sweep_orchestrator::query::live_sessions(store, info.id)
            .await
            .is_ok_and(|s| !s.is_empty()),
        Err(_) => false,
    }
}

/// A live exporter beside a running sweep.
pub struct Live {
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<(Option<PassReport>, Option<String>)>,
    uri: String,
}

/// Starts passes every few seconds (on the current runtime) until [`Live::finish`].
pub fn start(target: Target, db: DbLocation, sweep: String) -> Live {
    let uri = target.tracking.uri().to_string();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(async move {
        let mut ex = Exporter::new(target, &sweep);
        let mut store: Option<Store> = None;
        let mut wait = EVERY;
        let mut failed = false;
        loop {
            if *stopped.borrow() {
                break;
            }
            // the database and the sweep appear once the scheduler recorded them
            if store.is_none() {
                store = Store::open_read_only(db.clone()).await.ok();
            }
            if let Some(s) = &store {
                // a pass under way when the sweep ends is dropped (a slow
                // server must not hold the sweep); the last pass starts over
                tokio::select! {
                    r = ex.pass(s, true) => {
                        failed = r.is_err();
                        wait = match r {
                            Ok(_) => EVERY,
                            Err(_) => (wait * 2).min(Duration::from_secs(60)),
                        };
                    }
                    _ = stopped.changed() => break,
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => {}
            }
        }
        let store = match store {
            Some(s) => s,
            None => match Store::open_read_only(db.clone()).await {
                Ok(s) => s,
                Err(e) => return (None, Some(e.to_string())),
            },
        };
        if failed {
            // down at the last pass: one try each, no backoff, before the user's prompt
            ex.set_tries(1);
        }
        // read the server again: a call of a pass dropped above may have
        // created a run meanwhile
        ex.reread();
        // the sweep may go on (a followed job array left with Ctrl-C): its
        // parent then stays RUNNING
        let live = still_running(&store, &sweep).await;
        let last = tokio::time::timeout(FINAL_PASS, ex.pass(&store, live)).await;
        store.close().await;
        match last {
            Ok(Ok(Some(r))) => (Some(r), None),
            Ok(Ok(None)) => (None, Some("the sweep was not recorded".into())),
            Ok(Err(e)) => (None, Some(e.to_string())),
            Err(_) => (
                None,
                Some(format!(
                    "the server took longer than {} s for the last pass",
                    FINAL_PASS.as_secs()
                )),
            ),
        }
    });
    Live { stop, task, uri }
}

impl Live {
    /// Stops the passes, runs a last one (bounded) and says where the sweep is
    /// in MLflow, or how much is not there yet.
    pub async fn finish(self, sweep: &str, db: &DbLocation) {
        let _ = self.stop.send(true);
        let (report, error) = self
            .task
            .await
            .unwrap_or_else(|e| (None, Some(format!("the MLflow task failed: {e}"))));
        match (report, error) {
            (Some(r), _) => print_report(&r, sweep, db),
            (None, error) => {
                println!(
                    "MLflow ({}): not reached: {}. The sweep's results are in the database; send them with `{}`",
                    self.uri,
                    error.unwrap_or_default(),
                    sync_command(sweep, db)
                );
            }
        }
    }
}

fn sync_command(sweep: &str, db: &DbLocation) -> String {
    format!("sweep mlflow sync {sweep} --db {}", db.display())
}

fn print_report(r: &PassReport, sweep: &str, db: &DbLocation) {
    if r.pending() == 0 && r.parent_in_sync {
        println!(
            "MLflow: all {} started trials of `{sweep}` are in {} ({} runs created by this command)",
            r.started, r.url, r.created
        );
    } else {
        println!(
            "MLflow: {} of {} started trials are not yet in {}; send them with `{}`",
            r.pending(),
            r.started,
            r.url,
            sync_command(sweep, db)
        );
    }
    for e in &r.refused {
        println!("  refused by the server: {e}");
    }
}

/// `sweep mlflow sync`'s arguments.
#[derive(clap::Args, Debug)]
pub struct SyncArgs {
    /// The sweep's name.
    pub sweep: String,
    /// The tracking server (default: the sweep's `[logging] mlflow`, else
    /// MLFLOW_TRACKING_URI).
    #[arg(long, value_name = "URI")]
    pub uri: Option<String>,
    /// The experiment (default: the sweep's `[logging] mlflow_experiment`,
    /// else its name).
    #[arg(long)]
    pub experiment: Option<String>,
    /// Leave the best checkpoints out.
    #[arg(long)]
    pub no_checkpoints: bool,
    /// Results database (default results/sweep.db, or SWEEP_DB; or a
    /// PostgreSQL URL).
    #[arg(long)]
    pub db: Option<String>,
    /// Results folder, if not the one the sweep recorded (checkpoints are read
    /// from it).
    #[arg(long)]
    pub results: Option<PathBuf>,
}

/// The `[logging]` table of the spec a sweep was recorded with.
fn stored_logging(spec_text: &str) -> Logging {
    spec_text
        .parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get("logging").cloned())
        .and_then(|l| l.try_into::<Logging>().ok())
        .unwrap_or_default()
}

/// Sends a recorded sweep (or what of it is not there yet). Exit 0 when every
/// started trial is in MLflow, 1 when some are not (the server is down or
/// refused data), 2 on a usage error.
pub fn sync(a: SyncArgs) -> ExitCode {
    let results_root = a
        .results
        .clone()
        .unwrap_or_else(|| PathBuf::from("results"));
    let db = match crate::sweep::resolve_db(a.db.as_deref(), &results_root) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match crate::sweep::scheduler_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async {
        let store = match Store::open_read_only(db.clone()).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        let spec_text = match sweep_orchestrator::query::spec_text(&store, &a.sweep).await {
            Ok(t) => t,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
        let Some(spec_text) = spec_text else {
            eprintln!("error: no sweep named `{}` in {}", a.sweep, db.display());
            return ExitCode::from(2);
        };
        let mut logging = stored_logging(&spec_text);
        if a.experiment.is_some() {
            logging.mlflow_experiment = a.experiment.clone();
        }
        let target = match target(
            a.uri.as_deref(),
            &logging,
            a.no_checkpoints,
            a.results.clone(),
        ) {
            Ok(Some(t)) => t,
            Ok(None) => {
                eprintln!("error: no MLflow server named: pass --uri, or set MLFLOW_TRACKING_URI (the sweep's spec has no [logging] mlflow)");
                return ExitCode::from(2);
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        };
        // A sweep that another process is still running keeps its parent run RUNNING.
        let live = still_running(&store, &a.sweep).await;
        let uri = target.tracking.uri().to_string();
        let mut ex = Exporter::new(target, &a.sweep);
        let r = ex.pass(&store, live).await;
        store.close().await;
        match r {
            Ok(None) => {
                eprintln!("error: no sweep named `{}` in {}", a.sweep, db.display());
                ExitCode::from(2)
            }
            Ok(Some(r)) => {
                print_report(&r, &a.sweep, &db);
                if r.pending() == 0 && r.refused.is_empty() {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            Err(e) => {
                eprintln!("error: {e} (server {uri}); nothing in the results database changed: once the server is reachable and accepts the request, run the same command again");
                ExitCode::FAILURE
            }
        }
    })
}
