//! The scheduler: expands a spec, records it, decodes the data set once, and runs
//! every unfinished trial in trial processes (the same binary, `sweep worker`
//! with a job on stdin), at most `jobs` at a time. The same loop ([`execute`])
//! serves `sweep run` and `sweep worker --db URL --sweep NAME`, a worker that
//! shares a sweep with others through one database (see [`work`] and
//! [`crate::slurm`]): trials are claimed atomically, every session beats a
//! heartbeat, and trials of a session that stopped beating are reclaimed.
//! Resume is the normal path: trials are content-addressed, finished ones are
//! never re-run, orphaned ones are reclaimed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use sweep_train::{StopReason, TrialConfig, TrialOutcome};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};

use crate::db;
use crate::error::{Error, Result};
pub use crate::plan::{
    content_hash, flatten_params, hostname, new_trial, param_text, params_line, pid_alive, prepare,
    space_hash, trial_key, Manifest, Prepared, RunSettings, MANIFEST,
};
pub(crate) use crate::plan::{decode_key, plan, Hold};
use crate::protocol::{Event, Job, Reply};
use crate::search::driver::Proposed;
use crate::spec::SweepSpec;
use crate::store::{Claimed, Finish, StateCounts, Store, TrialState};

/// What the scheduler reports as it goes (the CLI renders it).
#[derive(Clone, Debug)]
pub enum Progress {
    Planned {
        trials: usize,
        added: usize,
        reclaimed: u64,
        requeued: u64,
        counts: StateCounts,
    },
    Started {
        number: i64,
        params: String,
        device: String,
        attempt: i64,
        epochs: usize,
    },
    Epoch {
        number: i64,
        epoch: usize,
        epochs: usize,
        train_loss: f64,
        val_loss: f64,
    },
    Finished {
        number: i64,
        state: TrialState,
        objective: Option<f64>,
        note: String,
        counts: StateCounts,
    },
    Stopping,
    /// A trial stopped on a fault of the machine (a full disk, an I/O error, an
    /// unwritable folder): its attempt is given back and the sweep stops.
    Fault {
        number: i64,
        message: String,
    },
    /// What the data checks found before any trial ran (`sweep data inspect`
    /// shows the details); the run goes on unless `--strict-data`.
    DataWarnings(Vec<String>),
    /// A result arrived for a trial that this session no longer holds (its
    /// heartbeat lapsed and another worker reclaimed the trial): dropped.
    Dropped {
        number: i64,
        note: String,
    },
    /// This session was ended by another process (it was silent past its lease):
    /// its trials are stopped and it takes no more.
    SessionEnded,
    /// Waiting for trials that other workers are running (they may still lapse).
    WaitingForOthers {
        running_elsewhere: i64,
    },
    /// `--executor slurm`: the job array of workers was submitted.
    Submitted {
        job: String,
        tasks: usize,
        script: PathBuf,
    },
    /// `--executor slurm`: the counts changed (read from the database).
    Counts {
        counts: StateCounts,
    },
    /// A search recorded its next configuration (`number`, from 0) with this
    /// many trials (one per seed).
    Proposed {
        number: i64,
        trials: usize,
    },
    /// A search proposes no more configurations; the text says why.
    SearchDone {
        why: String,
    },
}

#[derive(Clone, Debug)]
pub struct RunSummary {
    pub sweep: String,
    /// `--executor slurm`: the job array's id.
    pub job: Option<String>,
    /// The command returned before the sweep was done (`--detach`, or Ctrl-C while
    /// following a job array that goes on).
    pub detached: bool,
    /// `--executor slurm`: trials of the spec still unfinished when the array
    /// ended (waiting, running, or failed with attempts left).
    pub left: usize,
    /// Some trial failed during this run (even if it was retried, or --fail-fast stopped).
    pub failed_in_run: bool,
    pub counts: StateCounts,
    pub interrupted: bool,
    pub objective: String,
    /// The configurations ranked over their seeds (complete trials).
    pub best: crate::leaderboard::Leaderboard,
}

/// A cancellation level: 0 running, 1 stop gracefully.
pub type StopSignal = watch::Receiver<bool>;

enum WorkerMsg {
    Event(i64, Event),
    /// The process ended: how (in words), and whether of a machine fault.
    Exited(i64, String, bool),
}

struct Running {
    number: i64,
    /// The attempt's row in `trial_attempts`: its folder is `attempt-K`.
    start: i64,
    /// The trial process: its pid, and whether it has been reaped (after which
    /// the pid may belong to another process and must not be signalled).
    pid: Option<u32>,
    reaped: Arc<std::sync::atomic::AtomicBool>,
    done: bool,
    epochs: usize,
    /// The worker's stdin, kept open while a pruner judges the trial.
    stdin: Option<tokio::process::ChildStdin>,
    /// The trial's epoch limit (the pruner never judges the last epoch).
    max_epochs: usize,
    /// The trials of its configuration (one per seed), read when a pruner
    /// first judges it.
    configuration: Option<Vec<i64>>,
    /// When the trial timeout stops it.
    deadline: Option<tokio::time::Instant>,
}

impl Running {
    /// Sends the pruner's answer; a worker that is gone is not an error here
    /// (its exit is handled when it is reaped).
    async fn reply(&mut self, reply: &Reply) {
        if let Some(w) = self.stdin.as_mut() {
            let mut line = serde_json::to_vec(reply).expect("reply serializes");
            line.push(b'\n');
            if w.write_all(&line).await.is_err() || w.flush().await.is_err() {
                self.stdin = None;
            }
        }
    }

    /// Sends `signal` to the trial process unless it is already gone.
    fn signal(&self, signal: libc::c_int) {
        if let Some(pid) = self.pid {
            if !self.reaped.load(std::sync::atomic::Ordering::SeqCst) {
                // SAFETY: plain signal to our own, not yet reaped child process.
                unsafe { libc::kill(pid as libc::pid_t, signal) };
            }
        }
    }
}

/// The sweep's leaderboard, for the summary a run ends with.
pub(crate) async fn ranked(
    store: &Store,
    sweep_id: i64,
    spec: &crate::spec::SweepSpec,
) -> Result<crate::leaderboard::Leaderboard> {
    let maximize = spec.direction == crate::spec::Direction::Maximize;
    crate::query::leaderboard(store, sweep_id, &spec.objective, maximize).await
}

/// Before trials run: trials of sessions that are gone go back to waiting, failed
/// ones with attempts left are re-queued, and the plan is reported. Returns the
/// counts after that.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn announce(
    store: &Store,
    sweep_id: i64,
    session: i64,
    manifest: &Manifest,
    settings: &RunSettings,
    trials: usize,
    added: usize,
    progress: &mut impl FnMut(Progress),
) -> Result<StateCounts> {
    let reclaimed = store
        .reclaim_stale(sweep_id, session, settings.lease_seconds)
        .await?;
    let retried = if settings.retry_failed {
        store.retry_failed(sweep_id, |k| manifest.runs(k)).await?
    } else {
        0
    };
    let requeued = store
        .requeue_failed(sweep_id, settings.max_attempts)
        .await?
        + retried;
    let counts = store.counts(sweep_id).await?;
    progress(Progress::Planned {
        trials,
        added,
        reclaimed,
        requeued,
        counts: counts.clone(),
    });
    Ok(counts)
}

/// Runs (or resumes) a sweep to completion, or until `stop` turns true. A
/// fault of the machine ends it with [`Error::Fault`], after the trials that
/// were running went back to waiting.
pub async fn run(
    spec: &SweepSpec,
    settings: &RunSettings,
    progress: impl FnMut(Progress),
    stop: StopSignal,
) -> Result<RunSummary> {
    run_here(spec, settings, progress, stop)
        .await
        .map_err(|e| locate(e, &settings.db))
}

async fn run_here(
    spec: &SweepSpec,
    settings: &RunSettings,
    mut progress: impl FnMut(Progress),
    stop: StopSignal,
) -> Result<RunSummary> {
    let (store, sweep_id, added, session, manifest, planned, warnings) =
        plan(spec, settings, Hold::Exclusive).await?;
    if !warnings.is_empty() {
        progress(Progress::DataWarnings(warnings));
    }
    announce(
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
    let store = Arc::new(store);
    let ended = execute(
        &store,
        sweep_id,
        session,
        &manifest,
        settings,
        &mut progress,
        stop,
    )
    .await?;
    let fault = ended.fault.clone();
    let summary = summarize(store, sweep_id, session, spec, settings.fail_fast, ended).await?;
    match fault {
        Some(f) => Err(Error::Fault(stopped_on_fault(&f, &summary.counts))),
        None => Ok(summary),
    }
}

/// A database fault's message with the database it concerns.
pub(crate) fn locate(e: Error, db: &crate::store::DbLocation) -> Error {
    match e {
        // The store's own messages do not know its location.
        Error::Fault(m) | Error::Unavailable(m) => match m.strip_prefix("results database (") {
            Some(rest) => Error::Fault(format!("results database {} ({rest}", db.display())),
            None => Error::Fault(m),
        },
        other => other,
    }
}

/// What a sweep stopped on a fault tells its user: the fault, what is kept, and
/// that the same command resumes once the fault is fixed.
fn stopped_on_fault(fault: &str, counts: &StateCounts) -> String {
    format!(
        "stopped on a fault of the machine, not of a trial: {fault}\n\
         Kept: {} trials finished (complete or pruned), {} failed; the trials that were running went back to waiting and used up no attempt ({} waiting).\n\
         Fix the fault (free space, make the folder writable, bring the database back), then run the same command again: it resumes where this run stopped.",
        counts.complete + counts.pruned,
        counts.failed,
        counts.waiting
    )
}

/// Ends the session and builds the summary from the database.
async fn summarize(
    store: Arc<Store>,
    sweep_id: i64,
    session: i64,
    spec: &SweepSpec,
    fail_fast: bool,
    ended: Ended,
) -> Result<RunSummary> {
    let Ended {
        any_failed,
        stopping,
        fault,
    } = ended;
    // After the loop, a fail-fast stop or an interruption leaves waiting trials.
    let counts = store.counts(sweep_id).await?;
    let reason = match (&fault, stopping) {
        (Some(_), _) => "fault",
        (None, true) => "interrupted",
        (None, false) => "finished",
    };
    store.end_session(session, reason).await?;
    let best = ranked(&store, sweep_id, spec).await?;
    let store = Arc::try_unwrap(store).map_err(|_| Error::Other("store still shared".into()))?;
    store.close().await;
    Ok(RunSummary {
        failed_in_run: any_failed && (fail_fast || counts.failed > 0),
        sweep: spec.name.clone(),
        job: None,
        detached: false,
        left: 0,
        counts,
        interrupted: stopping,
        objective: spec.objective.clone(),
        best,
    })
}

/// What a worker that shares a sweep (`sweep worker --db URL --sweep NAME`) did.
#[derive(Clone, Debug)]
pub struct WorkSummary {
    pub counts: StateCounts,
    pub any_failed: bool,
    pub interrupted: bool,
}

/// A worker on a shared database: claims trials of a sweep recorded by `sweep run`
/// (its manifest read from the shared results folder), runs them as `execute`
/// does, and returns once no trial is waiting or running anywhere (or on `stop`).
pub async fn work(
    sweep: &str,
    settings: &RunSettings,
    progress: impl FnMut(Progress),
    stop: StopSignal,
) -> Result<WorkSummary> {
    work_here(sweep, settings, progress, stop)
        .await
        .map_err(|e| locate(e, &settings.db))
}

async fn work_here(
    sweep: &str,
    settings: &RunSettings,
    mut progress: impl FnMut(Progress),
    stop: StopSignal,
) -> Result<WorkSummary> {
    let store = Store::open(&settings.db)
        .await?
        .with_lease(settings.lease_seconds);
    let sweep_id = store.sweep_id(sweep).await?.ok_or_else(|| {
        Error::Other(format!(
            "no sweep named `{sweep}` in {}; record it first with `sweep run SPEC --db ... --executor slurm` (or `--executor none`)",
            settings.db.display()
        ))
    })?;
    let manifest = Manifest::read(&settings.results, sweep)?;
    let session = store
        .start_session(sweep_id, std::process::id() as i64, &hostname())
        .await?;
    announce(
        &store,
        sweep_id,
        session,
        &manifest,
        settings,
        manifest.trials.len(),
        0,
        &mut progress,
    )
    .await?;
    let store = Arc::new(store);
    let result = execute(
        &store,
        sweep_id,
        session,
        &manifest,
        settings,
        &mut progress,
        stop,
    )
    .await;
    let Ended {
        any_failed,
        stopping: interrupted,
        fault,
    } = match result {
        Ok(r) => r,
        Err(e) => {
            let _ = store.end_session(session, "error").await;
            return Err(e);
        }
    };
    let reason = match (&fault, interrupted) {
        (Some(_), _) => "fault",
        (None, true) => "interrupted",
        (None, false) => "finished",
    };
    store.end_session(session, reason).await?;
    let counts = store.counts(sweep_id).await?;
    if let Some(f) = fault {
        return Err(Error::Fault(stopped_on_fault(&f, &counts)));
    }
    Ok(WorkSummary {
        counts,
        any_failed,
        interrupted,
    })
}

/// How the scheduling loop ended.
pub(crate) struct Ended {
    /// Some trial failed.
    pub any_failed: bool,
    /// Stopped early (Ctrl-C, fail-fast, the session ended, a machine fault).
    pub stopping: bool,
    /// The machine fault it stopped on: "trial N: message".
    pub fault: Option<String>,
}

/// The scheduling loop: claims trials for free slots, runs each in a trial process,
/// records its events, beats the session's heartbeat and reclaims trials of
/// sessions that stopped beating. Returns once nothing is left that this session
/// could run and no other session holds a running trial (which could still
/// lapse and need a worker), or on a stop or a fault of the machine.
pub(crate) async fn execute(
    store: &Arc<Store>,
    sweep_id: i64,
    session: i64,
    manifest: &Manifest,
    settings: &RunSettings,
    progress: &mut impl FnMut(Progress),
    mut stop: StopSignal,
) -> Result<Ended> {
    let results = &settings.results;
    let slots = device_slots(&settings.devices, settings.per_device, settings.jobs);
    let mut free: Vec<String> = slots;
    let (tx, mut rx) = mpsc::unbounded_channel::<WorkerMsg>();
    let mut running: HashMap<i64, (Running, String)> = HashMap::new();
    let mut stopping = *stop.borrow();
    let mut any_failed = false;
    let mut fault: Option<String> = None;
    let every = std::time::Duration::from_secs_f64((settings.lease_seconds / 4.0).clamp(0.2, 15.0));
    let mut heartbeat = tokio::time::interval(every);
    let mut idle_once = false;
    let mut search_done = false;
    let pruner = crate::search::pruner(&manifest.pruner);
    // Store calls ride out a database that is briefly gone (PostgreSQL).
    let patience = crate::retry::Patience::for_store(store, settings.lease_seconds);
    let timeout = settings.trial_timeout.or(manifest.trial_timeout);
    let maximize = manifest
        .search
        .as_ref()
        .map(|s| s.maximize)
        .unwrap_or(!manifest.objective.ends_with("loss"));
    let mut last_beat = std::time::Instant::now();
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let dropped = dropped_note;

    loop {
        let halted = |stopping: bool, failed: bool| stopping || (settings.fail_fast && failed);
        while !halted(stopping || *stop.borrow(), any_failed) && !free.is_empty() {
            let device = free.last().cloned().expect("a free slot");
            // Only trials of the current spec, and never one whose worker is still alive.
            let in_flight: Vec<i64> = running.keys().copied().collect();
            let Some(c) = db!(
                patience,
                store
                    .claim_next_where(sweep_id, session, &device, |id, key| {
                        manifest.runs(key) && !in_flight.contains(&id)
                    })
                    .await
            )?
            else {
                // Nothing waiting: a search proposes the next configuration
                // (recorded with its trials before any runs), then claims again.
                match (&manifest.search, search_done) {
                    (Some(plan), false) => {
                        match db!(
                            patience,
                            propose(store, sweep_id, plan, &manifest.grid).await
                        )? {
                            Proposed::Added { number, trials } => {
                                progress(Progress::Proposed { number, trials });
                                continue;
                            }
                            Proposed::Done(why) => {
                                search_done = true;
                                progress(Progress::SearchDone { why });
                                break;
                            }
                        }
                    }
                    _ => break,
                }
            };
            free.pop();
            // work found: the next time nothing is left, look twice again
            idle_once = false;
            let params = manifest.params_of(&c.key, &c.config_json);
            let pid = match manifest.cache_for(&c.config_json, results) {
                Some(cache) => {
                    let ask = pruner.is_some();
                    spawn_worker(&c, &cache, &device, manifest, settings, ask, tx.clone()).await
                }
                None => Err(Error::Worker(format!(
                    "trial {}: its data set is not in the sweep's manifest",
                    c.number
                ))),
            };
            match pid {
                Ok((pid, reaped, stdin)) => {
                    if let Some(p) = pid {
                        db!(
                            patience,
                            store.set_worker_pid(c.id, session, p as i64).await
                        )?;
                    }
                    let epochs = serde_json::from_str::<TrialConfig>(&c.config_json)
                        .map(|t| t.train.epochs)
                        .unwrap_or(0);
                    progress(Progress::Started {
                        number: c.number,
                        params,
                        device: device.clone(),
                        attempt: c.attempt,
                        epochs,
                    });
                    running.insert(
                        c.id,
                        (
                            Running {
                                number: c.number,
                                start: c.start,
                                pid,
                                reaped,
                                done: false,
                                epochs: 0,
                                stdin,
                                max_epochs: epochs,
                                configuration: None,
                                deadline: timeout.map(|t| {
                                    tokio::time::Instant::now()
                                        + std::time::Duration::from_secs_f64(t)
                                }),
                            },
                            device,
                        ),
                    );
                }
                Err(e) if e.is_fault() => {
                    // too many open files, an unwritable folder: the machine's
                    // doing, not the trial's (the next claims would fail alike)
                    free.push(device);
                    let message = format!("could not start a worker: {e}");
                    let at = (store.as_ref(), &patience, session);
                    on_fault(
                        at,
                        c.id,
                        c.number,
                        message,
                        &mut fault,
                        &mut running,
                        progress,
                    )
                    .await?;
                    stopping = true;
                }
                Err(e) => {
                    db!(
                        patience,
                        store
                            .fail(c.id, session, &format!("could not start a worker: {e}"))
                            .await
                    )?;
                    free.push(device);
                    any_failed = true;
                }
            }
        }
        if running.is_empty() {
            if halted(stopping || *stop.borrow(), any_failed) {
                break;
            }
            // Nothing this session can start. Done, unless another session holds
            // running trials: they are not finished until their results land, and
            // if that session dies they come back here.
            // Both reads must agree twice in a row, with failed trials re-queued in
            // between: a trial another worker interrupts or fails between the two
            // reads would otherwise be left waiting with nobody to run it.
            let elsewhere = db!(patience, store.running_elsewhere(sweep_id, session).await)?;
            if elsewhere == 0 {
                if idle_once {
                    break;
                }
                idle_once = true;
                if !settings.fail_fast {
                    db!(
                        patience,
                        store.requeue_failed(sweep_id, settings.max_attempts).await
                    )?;
                }
                continue;
            }
            idle_once = false;
            progress(Progress::WaitingForOthers {
                running_elsewhere: elsewhere,
            });
            tokio::select! {
                _ = heartbeat.tick() => {
                    match beat(store, sweep_id, session, settings, &mut last_beat).await? {
                        Tick::Ended => {
                            stopping = true;
                            progress(Progress::SessionEnded);
                        }
                        Tick::Held(_) | Tick::Unknown => {}
                    }
                    if !settings.fail_fast {
                        db!(patience, store.requeue_failed(sweep_id, settings.max_attempts).await)?;
                    }
                }
                changed = stop.changed(), if !stopping => {
                    if changed.is_err() || *stop.borrow() {
                        stopping = true;
                        progress(Progress::Stopping);
                    }
                }
            }
            continue;
        }
        let next_deadline = running
            .values()
            .filter(|(r, _)| !r.done)
            .filter_map(|(r, _)| r.deadline)
            .min();
        tokio::select! {
            // In this order: the heartbeat (rare, and never starved by a
            // stream of events), then a result already queued (it wins over
            // a deadline), then the trial timeout, then Ctrl-C.
            biased;
            _ = heartbeat.tick() => {
                // Trials of a session that stopped beating go back to the queue at
                // once (not only when this worker has a free slot), so the next free
                // worker anywhere takes them.
                match beat(store, sweep_id, session, settings, &mut last_beat).await? {
                    Tick::Held(held) => {
                        // Trials taken from this session while it was alive but
                        // silent (a pause, a partition): stop their processes now,
                        // their results would be refused anyway.
                        for (id, (r, _)) in running.iter_mut() {
                            if !r.done && !held.contains(id) {
                                r.done = true;
                                r.signal(libc::SIGKILL);
                                progress(dropped(r.number));
                            }
                        }
                        // Trials this session holds but runs nowhere: a claim
                        // whose answer was lost with the connection (it committed,
                        // the retry claimed another). Given back for anyone.
                        for id in held.iter().filter(|id| !running.contains_key(id)) {
                            db!(patience, store.give_back(*id, session, Some("claimed while the connection to the database was lost; given back unstarted")).await)?;
                        }
                    }
                    Tick::Ended => {
                        // Found dead by another process: nothing here is ours.
                        stopping = true;
                        progress(Progress::SessionEnded);
                        for (r, _) in running.values_mut() {
                            if !r.done {
                                r.done = true;
                                r.signal(libc::SIGKILL);
                                progress(dropped(r.number));
                            }
                        }
                    }
                    Tick::Unknown => {}
                }
            }
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                match msg {
                    WorkerMsg::Event(id, ev) => {
                        let Some((r, _)) = running.get_mut(&id) else { continue };
                        if r.done {
                            continue;
                        }
                        match ev {
                            Event::Start { .. } => {}
                            Event::Epoch { metrics } => {
                                r.epochs = metrics.epoch;
                                if db!(patience, store.record_epoch(id, session, &metrics).await)? {
                                    progress(Progress::Epoch { number: r.number, epoch: metrics.epoch, epochs: 0, train_loss: metrics.train_loss, val_loss: metrics.val_loss });
                                    // A pruner judges the trial: its worker waits for the answer.
                                    if let (Some(p), true) = (&pruner, r.stdin.is_some() && metrics.epoch < r.max_epochs) {
                                        let reply = db!(patience, judge_epoch(store, p.as_ref(), sweep_id, id, r, &manifest.objective, maximize).await)?;
                                        r.reply(&reply).await;
                                    }
                                } else {
                                    // reclaimed by another worker: stop this attempt
                                    r.done = true;
                                    r.signal(libc::SIGKILL);
                                    progress(dropped(r.number));
                                }
                            }
                            Event::Done { outcome } => {
                                r.done = true;
                                let number = r.number;
                                let files = AttemptFiles {
                                    sweep_dir: results.join(&manifest.sweep),
                                    folder: attempt_rel_dir(number, r.start),
                                    tensorboard: manifest.logging.tensorboard.then(|| tensorboard_rel_dir(number, r.start)),
                                };
                                match db!(patience, finish_trial(store, id, session, &outcome, &files, (&manifest.objective, maximize)).await)? {
                                    Some((state, note)) => {
                                        let objective = objective_of(&outcome, &manifest.objective);
                                        if state != TrialState::Waiting {
                                            progress(Progress::Finished { number, state, objective, note, counts: db!(patience, store.counts(sweep_id).await)? });
                                        }
                                    }
                                    None => progress(dropped(number)),
                                }
                            }
                            Event::Fault { message } => {
                                r.done = true;
                                let number = r.number;
                                on_fault((store.as_ref(), &patience, session), id, number, message, &mut fault, &mut running, progress).await?;
                                stopping = true;
                            }
                            Event::Error { message } => {
                                r.done = true;
                                let number = r.number;
                                if db!(patience, store.fail(id, session, &message).await)? {
                                    any_failed = true;
                                    progress(Progress::Finished { number, state: TrialState::Failed, objective: None, note: message, counts: db!(patience, store.counts(sweep_id).await)? });
                                } else {
                                    progress(dropped(number));
                                }
                            }
                        }
                    }
                    WorkerMsg::Exited(id, status, machine_fault) => {
                        if let Some((r, device)) = running.remove(&id) {
                            free.push(device);
                            if !r.done && (stopping || *stop.borrow()) {
                                // killed by the same Ctrl-C before it could report: interrupted, not failed
                                if !db!(patience, store.interrupt(id, session).await)? {
                                    progress(dropped(r.number));
                                }
                            } else if !r.done && machine_fault {
                                // It died of the machine's fault (a panic on a full disk, say).
                                let message = format!("worker ended without a result: {status}");
                                on_fault((store.as_ref(), &patience, session), id, r.number, message, &mut fault, &mut running, progress).await?;
                                stopping = true;
                            } else if !r.done {
                                let msg = format!("worker for trial {} ended without a result: {status}", r.number);
                                if db!(patience, store.fail(id, session, &msg).await)? {
                                    any_failed = true;
                                    progress(Progress::Finished { number: r.number, state: TrialState::Failed, objective: None, note: msg, counts: db!(patience, store.counts(sweep_id).await)? });
                                } else {
                                    progress(dropped(r.number));
                                }
                            }
                            // A failed trial is retried only once its worker is gone.
                            if !settings.fail_fast {
                                db!(patience, store.requeue_failed(sweep_id, settings.max_attempts).await)?;
                            }
                        }
                    }
                }
            }
            _ = async {
                match next_deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => {
                // Past the trial timeout: stopped at once (a hung trial would
                // not answer a gentler signal) and failed with that reason; the
                // slot takes the next trial when the process is gone.
                let now = tokio::time::Instant::now();
                let limit = crate::spec::duration_text(timeout.unwrap_or(0.0));
                for (id, (r, _)) in running.iter_mut() {
                    if r.done || r.deadline.is_none_or(|d| d > now) {
                        continue;
                    }
                    r.done = true;
                    r.signal(libc::SIGKILL);
                    let message = format!(
                        "stopped by the trial timeout of {limit} (--trial-timeout or the spec's trial_timeout) after {} of {} epochs",
                        r.epochs, r.max_epochs
                    );
                    if db!(patience, store.fail(*id, session, &message).await)? {
                        any_failed = true;
                        progress(Progress::Finished { number: r.number, state: TrialState::Failed, objective: None, note: message, counts: db!(patience, store.counts(sweep_id).await)? });
                    } else {
                        progress(dropped(r.number));
                    }
                }
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    progress(Progress::Stopping);
                    stop_all(&mut running);
                }
            }
        }
    }
    Ok(Ended {
        any_failed,
        stopping,
        fault,
    })
}

/// The note of a trial whose result this session may no longer record.
fn dropped_note(number: i64) -> Progress {
    Progress::Dropped {
        number,
        note: "another worker reclaimed this trial after this session's heartbeat lapsed; this attempt's result is dropped".into(),
    }
}

/// A trial stopped on a fault of the machine: its attempt is given back
/// (recorded as `fault of the machine: …`), and the first such fault is the
/// one the sweep stops on: reported, remembered in `fault`, and every other
/// running trial asked to stop. The caller stops claiming.
async fn on_fault(
    (store, patience, session): (&Store, &crate::retry::Patience, i64),
    id: i64,
    number: i64,
    message: String,
    fault: &mut Option<String>,
    running: &mut HashMap<i64, (Running, String)>,
    progress: &mut impl FnMut(Progress),
) -> Result<()> {
    let why = format!("fault of the machine: {message}");
    if !db!(patience, store.give_back(id, session, Some(&why)).await)? {
        progress(dropped_note(number));
    }
    if fault.is_none() {
        *fault = Some(format!("trial {number}: {message}"));
        progress(Progress::Fault { number, message });
        stop_all(running);
    }
    Ok(())
}

/// Asks every running trial to stop (SIGINT): each saves nothing more and
/// reports itself interrupted, its attempt given back.
fn stop_all(running: &mut HashMap<i64, (Running, String)>) {
    for (r, _) in running.values_mut() {
        if !r.done {
            r.signal(libc::SIGINT);
        }
        // a worker waiting for a pruner's answer reads the end of its input
        // and goes on to see the interruption
        r.stdin = None;
    }
}

/// Trials of the current spec still to run: unfinished ones (waiting, running,
/// failed with attempts left; older specs' trials left waiting are never
/// claimed) plus, for a search, the trials of the configurations its budget
/// has yet to propose.
pub(crate) async fn left_to_run(
    store: &Store,
    sweep_id: i64,
    manifest: &Manifest,
    max_attempts: i64,
) -> Result<usize> {
    let unfinished = store
        .unfinished_keys(sweep_id, max_attempts)
        .await?
        .iter()
        .filter(|k| manifest.runs(k))
        .count();
    let to_propose = match &manifest.search {
        Some(plan) => {
            let proposed = store.proposal_count(sweep_id).await? as usize;
            plan.settings.trials.saturating_sub(proposed) * plan.seeds.len()
        }
        None => 0,
    };
    Ok(unfinished + to_propose)
}

/// A search's next configuration, recorded with its trials.
async fn propose(
    store: &Store,
    sweep_id: i64,
    plan: &crate::search::driver::SearchPlan,
    swept: &[String],
) -> Result<Proposed> {
    crate::search::driver::propose_next(store, sweep_id, plan, |p| {
        let fp = plan
            .fingerprints
            .get(&decode_key(&p.config))
            .cloned()
            .unwrap_or_default();
        new_trial(p, trial_key(&p.config, &fp), swept)
    })
    .await
}

/// The pruner's answer for a running trial after its latest epoch.
async fn judge_epoch(
    store: &Store,
    pruner: &dyn crate::search::Pruner,
    sweep_id: i64,
    id: i64,
    r: &mut Running,
    objective: &str,
    maximize: bool,
) -> Result<Reply> {
    if r.configuration.is_none() {
        r.configuration = Some(store.configuration_trials(sweep_id, id).await?);
    }
    let d = crate::search::driver::judge(
        store,
        pruner,
        sweep_id,
        id,
        r.configuration.as_deref().unwrap_or_default(),
        r.epochs,
        r.max_epochs,
        objective,
        maximize,
    )
    .await?;
    Ok(match d {
        crate::search::Decision::Continue => Reply::Continue,
        crate::search::Decision::Prune(rule) => Reply::Prune { rule },
    })
}

enum Tick {
    /// The trials this session holds.
    Held(Vec<i64>),
    /// The session was ended by another process (found dead): stop.
    Ended,
    /// The database did not answer; still within the lease.
    Unknown,
}

/// One heartbeat: beat, reclaim trials of sessions whose lease expired, and read
/// which trials this session still holds. A database that does not answer is
/// tolerated until this session's own lease would expire.
async fn beat(
    store: &Store,
    sweep_id: i64,
    session: i64,
    settings: &RunSettings,
    last_ok: &mut std::time::Instant,
) -> Result<Tick> {
    let result: Result<Tick> = async {
        if !store.heartbeat(session).await? {
            return Ok(Tick::Ended);
        }
        store
            .reclaim_stale(sweep_id, session, settings.lease_seconds)
            .await?;
        Ok(Tick::Held(store.held(sweep_id, session).await?))
    }
    .await;
    match result {
        Ok(t) => {
            *last_ok = std::time::Instant::now();
            Ok(t)
        }
        // A fault that does not pass by itself (a full disk) stops at once.
        Err(e @ Error::Fault(_)) => Err(e),
        Err(_) if last_ok.elapsed().as_secs_f64() < settings.lease_seconds => Ok(Tick::Unknown),
        Err(Error::Unavailable(m)) => Err(Error::Fault(format!(
            "results database (no heartbeat for longer than the lease, {}s): {m}",
            settings.lease_seconds
        ))),
        Err(e) => Err(Error::Store(format!(
            "no heartbeat for longer than the lease ({}s): {e}",
            settings.lease_seconds
        ))),
    }
}

/// The worker slots: each device repeated `per_device` times, devices interleaved
/// so that trials spread over devices before doubling up; at most `jobs` slots.
pub fn device_slots(devices: &[String], per_device: usize, jobs: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..per_device.max(1) {
        out.extend(devices.iter().cloned());
    }
    out.truncate(jobs.max(1));
    // claimed from the end: reverse so the first claims go to the first devices
    out.reverse();
    out
}

/// The folder of one trial's files, relative to the sweep folder.
pub fn trial_rel_dir(number: i64) -> PathBuf {
    PathBuf::from("trials").join(format!("{number:04}"))
}

/// The folder of one attempt of a trial (`trials/NNNN/attempt-K`): each start
/// writes into its own, so an attempt that was reclaimed but still runs
/// somewhere never writes over the one that replaced it.
pub fn attempt_rel_dir(number: i64, start: i64) -> PathBuf {
    trial_rel_dir(number).join(format!("attempt-{start}"))
}

/// An attempt's TensorBoard run, relative to the sweep folder.
pub fn tensorboard_rel_dir(number: i64, start: i64) -> PathBuf {
    PathBuf::from("tensorboard")
        .join(format!("{number:04}"))
        .join(format!("attempt-{start}"))
}

/// Where a finished attempt's files are.
struct AttemptFiles {
    sweep_dir: PathBuf,
    /// The attempt's folder, relative to `sweep_dir`.
    folder: PathBuf,
    /// Its TensorBoard run, relative to `sweep_dir`, when logging.
    tensorboard: Option<PathBuf>,
}

async fn spawn_worker(
    c: &Claimed,
    cache: &Path,
    device: &str,
    m: &Manifest,
    settings: &RunSettings,
    ask_after_epoch: bool,
    tx: mpsc::UnboundedSender<WorkerMsg>,
) -> Result<(
    Option<u32>,
    Arc<std::sync::atomic::AtomicBool>,
    Option<tokio::process::ChildStdin>,
)> {
    let config: TrialConfig = serde_json::from_str(&c.config_json)
        .map_err(|e| Error::Worker(format!("stored config of trial {}: {e}", c.number)))?;
    let sweep_dir = settings.results.join(&m.sweep);
    let trial_dir = sweep_dir.join(attempt_rel_dir(c.number, c.start));
    let log_dir = trial_dir.clone();
    let cfg_json = serde_json::to_value(&config).expect("config serializes");
    let mut hparams: Vec<(String, serde_json::Value)> = m
        .grid
        .iter()
        .map(|p| {
            (
                p.clone(),
                crate::spec::get_path(&cfg_json, p)
                    .cloned()
                    .unwrap_or(serde_json::Value::Null),
            )
        })
        .collect();
    hparams.push(("seed".into(), serde_json::Value::from(config.train.seed)));
    let init_weights = config
        .model
        .init_from
        .as_ref()
        .and_then(|f| m.init_weights.get(f).cloned());
    let job = Job {
        trial_id: c.id,
        config,
        cache: cache.to_path_buf(),
        trial_dir,
        device: device.to_string(),
        objective: m.objective.clone(),
        tensorboard_dir: m
            .logging
            .tensorboard
            .then(|| sweep_dir.join(tensorboard_rel_dir(c.number, c.start))),
        logging: m.logging.clone(),
        hparams,
        ask_after_epoch,
        init_weights,
    };
    let mut child = Command::new(&settings.worker_exe)
        .arg("worker")
        .env(
            "RAYON_NUM_THREADS",
            settings.threads_per_worker.max(1).to_string(),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // If this scheduler dies on an error, its trials must not run on
        // unrecorded (they are reclaimed and rerun elsewhere).
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::Worker(format!("{}: {e}", settings.worker_exe.display())))?;
    let pid = child.id();
    let oom_before = crate::process::OomCounts::read();
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut payload = serde_json::to_vec(&job).expect("job serializes");
    payload.push(b'\n');
    stdin
        .write_all(&payload)
        .await
        .map_err(|e| Error::Worker(format!("sending the job: {e}")))?;
    // Kept open only when the worker waits for a pruner's answers.
    let stdin = ask_after_epoch.then_some(stdin);
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let id = c.id;
    let reaped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reaped_here = reaped.clone();
    tokio::spawn(async move {
        let log_dir = log_dir.clone();
        let err_task = tokio::spawn(async move {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf).await;
            // The worker's stderr (panics, warnings) is the trial's log.
            if !buf.is_empty() && std::fs::create_dir_all(&log_dir).is_ok() {
                let _ = std::fs::write(log_dir.join("worker.log"), &buf);
            }
            let s = String::from_utf8_lossy(&buf).into_owned();
            let tail: String = s
                .chars()
                .rev()
                .take(2000)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            tail
        });
        // Read raw lines to EOF (never stop early: a full pipe would block the worker).
        // Lines that are not protocol events (a library printing to stdout) are skipped.
        let mut reader = BufReader::new(stdout);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match reader.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&buf);
            if !line.starts_with("{\"event\"") {
                continue;
            }
            let ev = serde_json::from_str::<Event>(line.trim_end()).unwrap_or_else(|e| {
                let head: String = line.chars().take(200).collect();
                Event::Error {
                    message: format!("unreadable worker event ({e}): {head}"),
                }
            });
            let _ = tx.send(WorkerMsg::Event(id, ev));
        }
        // Its peak memory, read while it waits to be reaped (before
        // `wait` below reaps it).
        let peak = match pid {
            Some(p) => tokio::task::spawn_blocking(move || crate::process::peak_memory(p))
                .await
                .ok()
                .flatten(),
            None => None,
        };
        let status = child.wait().await;
        reaped_here.store(true, std::sync::atomic::Ordering::SeqCst);
        let oom = oom_before.rose_by(&crate::process::OomCounts::read());
        let tail = err_task.await.unwrap_or_default();
        let machine_fault = crate::process::died_of_machine_fault(&status, &tail);
        let desc = crate::process::describe(status, oom, peak, &tail);
        let _ = tx.send(WorkerMsg::Exited(id, desc, machine_fault));
    });
    Ok((pid, reaped, stdin))
}

/// The objective's value in an outcome (`val.macro_f1` → report macro-F1, ...).
pub fn objective_of(o: &TrialOutcome, objective: &str) -> Option<f64> {
    let r = o.report.as_ref();
    let e = o
        .report_epoch
        .and_then(|n| o.epochs.iter().find(|m| m.epoch == n));
    match objective {
        "val.macro_f1" => r.map(|r| r.macro_f1),
        "val.accuracy" => r.map(|r| r.accuracy),
        "val.balanced_accuracy" => r.map(|r| r.balanced_accuracy),
        "val.weighted_f1" => r.map(|r| r.weighted_f1),
        "val.macro_auc" => r.and_then(|r| r.macro_auc),
        "val.loss" => e.map(|e| e.val_loss),
        "train.loss" => e.map(|e| e.train_loss),
        "train.accuracy" => e.map(|e| e.train_accuracy),
        _ => None,
    }
}

/// Records an outcome; `None` when this session no longer holds the trial.
async fn finish_trial(
    store: &Store,
    id: i64,
    session: i64,
    o: &TrialOutcome,
    files: &AttemptFiles,
    (objective, maximize): (&str, bool),
) -> Result<Option<(TrialState, String)>> {
    let sweep_dir = &files.sweep_dir;
    let dir = sweep_dir.join(&files.folder);
    let rel = |p: &Path| p.strip_prefix(sweep_dir).unwrap_or(p).display().to_string();
    let (state, reason, epoch, note) = match &o.stop {
        StopReason::EpochLimit => (
            TrialState::Complete,
            "epoch_limit",
            o.epochs.len(),
            format!("{} epochs", o.epochs.len()),
        ),
        StopReason::EarlyStopping { epoch } => (
            TrialState::Complete,
            "early_stopping",
            *epoch,
            format!("stopped early at epoch {epoch}"),
        ),
        StopReason::Diverged { epoch, batch, loss } => (
            TrialState::Pruned,
            "diverged",
            *epoch,
            format!("diverged at epoch {epoch}, batch {batch} (loss {loss})"),
        ),
        StopReason::Pruned { epoch, rule } => (TrialState::Pruned, "pruned", *epoch, rule.clone()),
        StopReason::Interrupted { .. } => {
            let held = store.interrupt(id, session).await?;
            return Ok(held.then(|| (TrialState::Waiting, "interrupted".into())));
        }
    };
    // The attempt that finished: its folder and TensorBoard run.
    let mut artifacts = vec![("folder".to_string(), files.folder.display().to_string())];
    if let Some(tb) = &files.tensorboard {
        artifacts.push(("tensorboard".to_string(), tb.display().to_string()));
    }
    if let Some(c) = &o.checkpoint {
        artifacts.push(("best_checkpoint".to_string(), rel(c)));
        artifacts.push(("config".to_string(), rel(&dir.join("config.json"))));
    }
    if let Some(c) = &o.report_checkpoint {
        artifacts.push(("checkpoint".to_string(), rel(c)));
    }
    let mut extra = Vec::new();
    if let Some(e) = o
        .report_epoch
        .and_then(|n| o.epochs.iter().find(|m| m.epoch == n))
    {
        extra.push(("val.loss".to_string(), e.val_loss));
        extra.push(("train.loss".to_string(), e.train_loss));
        extra.push(("train.accuracy".to_string(), e.train_accuracy));
    }
    extra.extend(crate::diagnostics::history_metrics(
        &o.epochs,
        objective,
        maximize,
        o.best_epoch,
    ));
    extra.extend(crate::diagnostics::probe_metrics(&o.probes));
    if let Some(r) = &o.report {
        extra.extend(crate::diagnostics::class_scores(r));
    }
    let held = store
        .finish(
            id,
            session,
            &Finish {
                state,
                stop_reason: reason.into(),
                stop_detail: matches!(o.stop, StopReason::Pruned { .. }).then(|| note.clone()),
                stop_epoch: Some(epoch as i64),
                best_epoch: o.best_epoch.map(|e| e as i64),
                report_epoch: o.report_epoch.map(|e| e as i64),
                num_parameters: o.num_parameters as i64,
                train_size: o.train_size as i64,
                val_size: o.val_size as i64,
                duration_seconds: o.seconds,
                report: o.report.as_ref(),
                extra_metrics: extra,
                artifacts,
                init_json: o
                    .init
                    .as_ref()
                    .map(|i| serde_json::to_string(i).expect("report serializes")),
            },
        )
        .await?;
    Ok(held.then_some((state, note)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_spread_trials_over_devices_first() {
        let d = vec!["cuda:0".to_string(), "cuda:1".to_string()];
        let mut s = device_slots(&d, 3, 100);
        assert_eq!(s.len(), 6);
        // claims pop from the end
        let order: Vec<String> = std::iter::from_fn(|| s.pop()).collect();
        assert_eq!(
            order,
            ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0", "cuda:1"]
        );
        assert_eq!(device_slots(&d, 3, 3).len(), 3);
        assert_eq!(device_slots(&["cpu".to_string()], 4, 4), vec!["cpu"; 4]);
    }

    #[test]
    fn params_flatten_with_kinds() {
        let mut out = Vec::new();
        flatten_params(
            "",
            &serde_json::json!({"a": {"b": 1, "c": 0.5, "d": true, "e": "x", "f": [1], "g": null}}),
            &mut out,
        );
        let kinds: Vec<(&str, &str)> = out
            .iter()
            .map(|(n, k, _, _)| (n.as_str(), k.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("a.b", "int"),
                ("a.c", "float"),
                ("a.d", "bool"),
                ("a.e", "text"),
                ("a.f", "list"),
                ("a.g", "none")
            ]
        );
        assert_eq!(content_hash(b"x").len(), 32);
        assert_ne!(content_hash(b"x"), content_hash(b"y"));
    }
}
