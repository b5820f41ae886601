//! `sweep run` and the hidden `sweep worker`: settings resolution, Ctrl-C handling
//! and progress rendering around the orchestrator.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use sweep_orchestrator::runner::{self, Progress, RunSettings, RunSummary};
use sweep_orchestrator::slurm::SlurmOptions;
use sweep_orchestrator::spec::SweepSpec;
use sweep_orchestrator::store::{DbLocation, TrialState};
use sweep_train::StopFlag;

/// `sweep run`'s arguments.
#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// The sweep spec (TOML; see docs/sweep-spec.md).
    pub spec: PathBuf,
    /// Trials at once (default: the number of CPU cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Compute threads per trial (default: the CPU cores divided by --jobs)
    #[arg(long)]
    pub threads: Option<usize>,
    /// Devices, comma-separated: cpu (default), or cuda:0,cuda:1,...
    #[arg(long, default_value = "cpu")]
    pub devices: String,
    /// Trials per device at once.
    #[arg(long, default_value_t = 1)]
    pub per_device: usize,
    /// Results database: a SQLite file (default results/sweep.db, or SWEEP_DB) or a
    /// PostgreSQL URL (postgres://user@host:port/db).
    #[arg(long)]
    pub db: Option<String>,
    /// Results folder (default results/). With --executor slurm it must be on a
    /// file system every node shares.
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Where trials run: `local` (worker processes on this machine), `slurm` (a
    /// Slurm job array of workers; needs a PostgreSQL --db), `none` (record the
    /// sweep for `sweep worker --db URL --sweep NAME` started by hand).
    #[arg(long, value_enum, default_value = "local")]
    pub executor: Executor,
    /// With --executor slurm: return once the job array is submitted (follow it
    /// with `sweep status NAME --db URL`).
    #[arg(long)]
    pub detach: bool,
    /// Seconds without a heartbeat after which a worker's running trials are
    /// reclaimed by other workers (sessions beat every quarter of it).
    #[arg(long, default_value_t = 60.0)]
    pub lease_seconds: f64,
    #[command(flatten)]
    pub slurm: SlurmArgs,
    /// Print the number of trials and the first few configurations; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Refuse a grid of more trials than this (counted before anything is
    /// expanded: a typo in a grid must not take the machine down); raise it
    /// on purpose.
    #[arg(long, default_value_t = 100_000)]
    pub max_trials: u64,
    /// Stop starting trials after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Attempts per trial before a failure is final.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i64,
    /// Refuse to run (and record nothing) when the data checks warn:
    /// duplicates across the train/validation split, images in another colour
    /// mode, classes with fewer than 5 validation images (`sweep data inspect`).
    #[arg(long)]
    pub strict_data: bool,
    /// Re-queue the sweep's failed trials with fresh attempts (their earlier
    /// attempts stay in the database's `trial_attempts`).
    #[arg(long)]
    pub retry_failed: bool,
    /// Stop and fail a trial that runs longer than this (`90s`, `30m`, `2h`,
    /// `1h30m`); its slot goes on with the next trial. Overrides the spec's
    /// `trial_timeout`.
    #[arg(long, value_parser = parse_timeout)]
    pub trial_timeout: Option<f64>,
    #[command(flatten)]
    pub mlflow: crate::mlflow::MlflowArgs,
}

fn parse_timeout(s: &str) -> Result<f64, String> {
    sweep_orchestrator::spec::parse_duration(s)
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Executor {
    Local,
    Slurm,
    None,
}

/// `--slurm-*`: override the spec's `[slurm]` table.
#[derive(clap::Args, Debug, Default)]
pub struct SlurmArgs {
    /// Slurm partition for the workers.
    #[arg(long)]
    pub slurm_partition: Option<String>,
    /// Workers (array tasks) running at once (default 4).
    #[arg(long)]
    pub slurm_array_parallelism: Option<usize>,
    /// Array tasks in all (default: the parallelism, at most one per trial to run).
    #[arg(long)]
    pub slurm_array_size: Option<usize>,
    /// Time limit per worker, e.g. 02:00:00.
    #[arg(long)]
    pub slurm_time: Option<String>,
    /// Memory per worker, e.g. 4G.
    #[arg(long)]
    pub slurm_mem: Option<String>,
    /// CPUs per worker (default 1); a CPU worker runs that many trials at once.
    #[arg(long)]
    pub slurm_cpus_per_task: Option<usize>,
    /// GPUs per worker; its trials run on cuda:0..N-1 (needs a CUDA build).
    #[arg(long)]
    pub slurm_gpus_per_task: Option<usize>,
}

impl SlurmArgs {
    fn options(&self) -> SlurmOptions {
        SlurmOptions {
            partition: self.slurm_partition.clone(),
            array_parallelism: self.slurm_array_parallelism,
            array_size: self.slurm_array_size,
            time: self.slurm_time.clone(),
            mem: self.slurm_mem.clone(),
            cpus_per_task: self.slurm_cpus_per_task,
            gpus_per_task: self.slurm_gpus_per_task,
        }
    }
}

/// `--db` (or SWEEP_DB, or RESULTS/sweep.db) as a location.
pub fn resolve_db(
    db: Option<&str>,
    results: &std::path::Path,
) -> sweep_orchestrator::Result<DbLocation> {
    match db
        .map(str::to_string)
        .or_else(|| std::env::var("SWEEP_DB").ok())
    {
        Some(d) => DbLocation::parse(&d),
        None => Ok(DbLocation::Sqlite(results.join("sweep.db"))),
    }
}

/// Workers on several machines must not share a SQLite file on a network file
/// system (its locking is not reliable there; a corrupted results file is the
/// worst outcome). One machine's own disk is fine.
fn refuse_shared_sqlite(db: &DbLocation) -> Result<(), ExitCode> {
    if let DbLocation::Sqlite(path) = db {
        let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
            Some(d) => d.to_path_buf(),
            None => PathBuf::from("."),
        };
        if let Some(fs) = sweep_orchestrator::store::network_filesystem(&dir) {
            eprintln!("error: --db {}: the SQLite file is on {fs}, a network file system, where SQLite's locking is not reliable for workers on several machines; use a PostgreSQL database (--db postgres://user@host/db)", path.display());
            return Err(ExitCode::from(2));
        }
    }
    Ok(())
}

/// `--devices` as a list; exit code 2 with a message when malformed.
fn parse_devices(arg: &str) -> Result<Vec<String>, ExitCode> {
    let devices: Vec<String> = arg
        .split(',')
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    if devices.is_empty()
        || devices
            .iter()
            .any(|d| d != "cpu" && !d.starts_with("cuda:"))
    {
        eprintln!("error: --devices {arg:?}: expected cpu or cuda:0,cuda:1,...");
        return Err(ExitCode::from(2));
    }
    if let Some(bad) = devices
        .iter()
        .find(|d| d.starts_with("cuda:") && d[5..].parse::<usize>().is_err())
    {
        eprintln!("error: --devices {arg}: `{bad}` is not cuda:N");
        return Err(ExitCode::from(2));
    }
    Ok(devices)
}

/// Opens each GPU once before any trial is claimed: a missing device is one clear
/// error, not every trial failing its attempts.
fn preflight_devices(devices: &[String], arg: &str) -> Result<(), ExitCode> {
    #[cfg(feature = "cuda")]
    for d in devices.iter().filter(|d| d.starts_with("cuda:")) {
        if let Err(e) = sweep_orchestrator::worker::device(d) {
            eprintln!("error: --devices {arg}: cannot open {d}: {e}");
            return Err(ExitCode::from(2));
        }
    }
    #[cfg(not(feature = "cuda"))]
    if devices.iter().any(|d| d.starts_with("cuda:")) {
        eprintln!(
            "error: --devices {arg}: this build has no CUDA support (CPU only); build with `--features cuda` (scripts/build-cuda)"
        );
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// The counts every command that runs trials takes; exit code 2 when one is out
/// of range.
fn check_counts(
    jobs: Option<usize>,
    threads: Option<usize>,
    per_device: usize,
    max_attempts: i64,
    lease_seconds: f64,
) -> Result<(), ExitCode> {
    if jobs == Some(0)
        || threads == Some(0)
        || per_device == 0
        || max_attempts < 1
        || !(1.0..=86_400.0).contains(&lease_seconds)
    {
        eprintln!("error: --jobs, --threads, --per-device and --max-attempts must be at least 1, and --lease-seconds between 1 and 86400");
        return Err(ExitCode::from(2));
    }
    Ok(())
}

/// Trials at once, trials per device and compute threads per trial on this
/// machine: one trial per core on the CPU, `per_device` per GPU; the cores
/// shared out among the trials unless `--threads` says otherwise.
fn local_slots(
    devices: &[String],
    jobs: Option<usize>,
    per_device: usize,
    threads: Option<usize>,
) -> (usize, usize, usize) {
    let cpu = devices == ["cpu"];
    let jobs = jobs.unwrap_or(if cpu {
        cores()
    } else {
        devices.len() * per_device
    });
    let per_device = if cpu { jobs } else { per_device };
    (jobs, per_device, threads.unwrap_or(cores() / jobs).max(1))
}

/// The runtime a scheduler (`sweep run`, `sweep worker --db`) runs on.
pub(crate) fn scheduler_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: starting the runtime: {e}");
            ExitCode::FAILURE
        })
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Exit codes: 0 every trial complete or pruned, 1 some failed, 2 usage or spec
/// error, 130 interrupted.
pub fn run(a: RunArgs) -> ExitCode {
    let spec = match SweepSpec::from_file(&a.spec) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let devices = match parse_devices(&a.devices) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if let Err(code) = check_counts(
        a.jobs,
        a.threads,
        a.per_device,
        a.max_attempts,
        a.lease_seconds,
    ) {
        return code;
    }
    if a.dry_run {
        return dry_run(&spec, a.max_trials);
    }
    if let Err(e) = spec.check_size(a.max_trials) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let db = match resolve_db(a.db.as_deref(), &a.results) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let slurm = a.slurm.options().over(&spec.slurm);
    if a.executor == Executor::None {
        if let Err(code) = refuse_shared_sqlite(&db) {
            return code;
        }
    }
    let (devices, jobs, per_device, threads) = if a.executor == Executor::Slurm {
        // Each array task is one worker: its trials at once follow from its CPUs
        // (one trial per CPU, one thread each) or its GPUs.
        if slurm.array_parallelism == Some(0)
            || slurm.array_size == Some(0)
            || slurm.cpus_per_task == Some(0)
        {
            eprintln!("error: --slurm-array-parallelism, --slurm-array-size and --slurm-cpus-per-task must be at least 1");
            return ExitCode::from(2);
        }
        let cpus = slurm.cpus_per_task.unwrap_or(1);
        match slurm.gpus_per_task.unwrap_or(0) {
            0 => {
                let jobs = a.jobs.unwrap_or(cpus);
                (
                    "cpu".to_string(),
                    jobs,
                    jobs,
                    a.threads.unwrap_or(cpus / jobs).max(1),
                )
            }
            g => {
                if !cfg!(feature = "cuda") {
                    eprintln!("error: --slurm-gpus-per-task {g}: this build has no CUDA support (CPU only); build with `--features cuda` (scripts/build-cuda)");
                    return ExitCode::from(2);
                }
                let jobs = a.jobs.unwrap_or(g * a.per_device);
                let list: Vec<String> = (0..g).map(|i| format!("cuda:{i}")).collect();
                (
                    list.join(","),
                    jobs,
                    a.per_device,
                    a.threads.unwrap_or(cpus / jobs).max(1),
                )
            }
        }
    } else {
        if a.executor == Executor::Local {
            if let Err(code) = preflight_devices(&devices, &a.devices) {
                return code;
            }
        }
        let (jobs, per_device, threads) = local_slots(&devices, a.jobs, a.per_device, a.threads);
        (devices.join(","), jobs, per_device, threads)
    };
    let settings = RunSettings {
        jobs,
        db: db.clone(),
        results: a.results.clone(),
        fail_fast: a.fail_fast,
        max_attempts: a.max_attempts,
        worker_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sweep")),
        devices: devices.split(',').map(str::to_string).collect(),
        per_device,
        threads_per_worker: threads,
        lease_seconds: a.lease_seconds,
        strict_data: a.strict_data,
        retry_failed: a.retry_failed,
        trial_timeout: a.trial_timeout,
    };
    // Live MLflow logging where this process follows the trials (not when it
    // only records them, or returns once a job array is submitted).
    let follows = match a.executor {
        Executor::Local => true,
        Executor::Slurm => !a.detach,
        Executor::None => false,
    };
    let mlflow = if a.mlflow.no_mlflow {
        None
    } else {
        match crate::mlflow::target(
            a.mlflow.mlflow.as_deref(),
            &spec.logging,
            a.mlflow.mlflow_no_checkpoints,
            Some(a.results.clone()),
        ) {
            // the report `sweep run` writes before its last MLflow pass
            Ok(t) => t.map(|mut t| {
                t.report = Some(a.results.join(&spec.name).join("report.html"));
                t
            }),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let rt = match scheduler_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let executor = a.executor;
    let (result, live) = rt.block_on(async {
        let live = match mlflow {
            Some(t) if follows => Some(crate::mlflow::start(t, db.clone(), spec.name.clone())),
            Some(t) => {
                println!(
                    "MLflow ({}): nothing is sent while workers run the sweep elsewhere; send it with `sweep mlflow sync {} --db {}`",
                    t.tracking.uri(),
                    spec.name,
                    db.display()
                );
                None
            }
            None => None,
        };
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                if executor == Executor::Slurm {
                    eprintln!("\nno longer following; the job array goes on (scancel it to stop it)");
                } else {
                    eprintln!("\nstopping: running trials finish their current batch and will resume on the next run (Ctrl-C again to quit at once)");
                }
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("quitting at once; running trials will be reclaimed on the next run");
                    std::process::exit(130);
                }
            }
        });
        let mut r = Renderer::new();
        let result = match a.executor {
            Executor::Local => runner::run(&spec, &settings, |p| r.show(p), stop_rx).await,
            Executor::Slurm => {
                sweep_orchestrator::slurm::run(
                    &spec,
                    &settings,
                    &slurm,
                    a.detach,
                    |p| r.show(p),
                    stop_rx,
                )
                .await
            }
            Executor::None => {
                sweep_orchestrator::slurm::record_only(&spec, &settings, |p| r.show(p)).await
            }
        };
        (result, live)
    });
    // The last MLflow pass (bounded), after the summary and the report.
    let mlflow_end = |live: Option<crate::mlflow::Live>| {
        if let Some(l) = live {
            rt.block_on(l.finish(&spec.name, &db));
        }
    };
    let code = match result {
        Ok(summary) => {
            print_summary(&summary, &db);
            if summary.detached {
                let follow = format!("sweep status {} --db {}", summary.sweep, db.display());
                match (&summary.job, a.executor) {
                    (Some(job), _) => println!("job array {job} goes on; follow it with `{follow}` (stop it with `scancel {job}`)"),
                    (None, _) => println!("recorded; start workers with `sweep worker --db {} --sweep {} --results {}` and follow them with `{follow}`", db.display(), summary.sweep, a.results.display()),
                }
                return ExitCode::SUCCESS;
            }
            if summary.job.is_some() && summary.left > 0 {
                println!("the job array ended with {} trial(s) unfinished (time limit or cancellation?); run the same command again to resume", summary.left);
            }
            let report = a.results.join(&summary.sweep).join("report.html");
            match crate::results::report(
                &summary.sweep,
                &db,
                &report,
                &sweep_orchestrator::report::Options::default(),
            ) {
                Ok(()) => println!("report: {}", report.display()),
                Err(e) => eprintln!("warning: the HTML report was not written: {e:#}"),
            }
            mlflow_end(live);
            if summary.interrupted {
                ExitCode::from(130)
            } else if summary.counts.failed > 0 || summary.failed_in_run || summary.left > 0 {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            mlflow_end(live);
            error_exit(&e)
        }
    };
    // MLflow calls that a slow server still holds are abandoned, not awaited
    rt.shutdown_background();
    code
}

/// `--dry-run` of a search: the space, the budget, the pruner and the first
/// configurations the sampler proposes (its startup draws need no history).
fn dry_run_search(spec: &SweepSpec) -> ExitCode {
    use sweep_orchestrator::search;
    let s = &spec.search;
    println!(
        "sweep `{}`: {} search, {} configurations × {} seeds = at most {} trials",
        spec.name,
        s.method.as_str(),
        s.trials,
        spec.seeds.len(),
        s.trials * spec.seeds.len()
    );
    println!(
        "objective: {} ({})",
        spec.objective,
        spec.direction.as_str()
    );
    let p = &spec.pruner;
    println!(
        "pruner: {}",
        match p.method {
            search::PrunerMethod::None => "none".to_string(),
            search::PrunerMethod::Median => format!(
                "median (from epoch {}, after {} finished trials of a seed)",
                p.min_epochs, p.startup_trials
            ),
            search::PrunerMethod::Asha => format!(
                "asha (rungs at epochs {} × {}^k, keeping the top 1/{})",
                p.min_epochs, p.reduction_factor, p.reduction_factor
            ),
        }
    );
    println!("\nspace:");
    let width = spec
        .space
        .params
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0);
    for (k, d) in &spec.space.params {
        println!("  {k:<width$}  {}", d.describe());
    }
    let Some(sampler) = search::sampler(s) else {
        return ExitCode::SUCCESS;
    };
    let shown = 5.min(s.trials).min(if s.method == search::Method::Tpe {
        s.startup_trials
    } else {
        usize::MAX
    });
    println!(
        "\nthe first {shown} configurations it proposes{}:",
        if s.method == search::Method::Tpe {
            format!(
                " (random until {} have finished; then TPE)",
                s.startup_trials
            )
        } else {
            String::new()
        }
    );
    for n in 0..shown {
        let mut rng = search::proposal_rng(s.seed, n);
        let point = (0..100)
            .map(|_| sampler.propose(&spec.space, &[], &mut rng))
            .find(|p| spec.plans_for_point(p).is_ok());
        let Some(point) = point else {
            eprintln!("error: 100 draws in a row are not valid trials; narrow the [space]");
            return ExitCode::from(2);
        };
        let text: Vec<String> = point
            .iter()
            .map(|(k, v)| format!("{k}={}", runner::param_text(v)))
            .collect();
        println!("  {n:>3}: {}", text.join(" "));
    }
    ExitCode::SUCCESS
}

fn dry_run(spec: &SweepSpec, max_trials: u64) -> ExitCode {
    if spec.is_search() {
        return dry_run_search(spec);
    }
    // A grid too large to list is counted, not expanded (any size answers in
    // a moment), and its first trials are shown.
    const SHOWN: usize = 5;
    let large = spec.grid_size().is_none_or(|n| n > 20_000);
    let expanded = if large {
        spec.expand_first(SHOWN)
    } else {
        spec.expand()
    };
    let (plans, count) = match expanded.and_then(|plans| {
        let count = if large {
            spec.trial_count()?
        } else {
            Some(sweep_orchestrator::spec::TrialCount {
                trials: plans.len() as u64,
                exact: true,
            })
        };
        Ok((plans, count))
    }) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let seeds = spec.seeds.len().max(1) as u64;
    match count {
        Some(c) if c.exact => println!(
            "sweep `{}`: {} trials ({} configurations × {} seeds, after exclusions and de-duplication)",
            spec.name,
            c.trials,
            c.trials / seeds,
            seeds
        ),
        Some(c) => println!(
            "sweep `{}`: up to {} trials ({} configurations × {} seeds before exclusions and de-duplication: too many combinations of the settings they concern to count them exactly)",
            spec.name,
            c.trials,
            c.trials / seeds,
            seeds
        ),
        None => println!(
            "sweep `{}`: more than 18446744073709551615 trials",
            spec.name
        ),
    }
    println!(
        "objective: {} ({})",
        spec.objective,
        spec.direction.as_str()
    );
    for (i, p) in plans.iter().take(SHOWN).enumerate() {
        let swept: Vec<String> = p
            .swept
            .iter()
            .map(|(k, v)| format!("{k}={}", runner::param_text(v)))
            .collect();
        println!(
            "\ntrial {} (seed {}): {}",
            i + 1,
            p.seed,
            if swept.is_empty() {
                "base configuration".into()
            } else {
                swept.join(" ")
            }
        );
        println!("{}", p.config.to_json());
    }
    let total = count.map_or(u64::MAX, |c| c.trials);
    if total > SHOWN as u64 {
        println!("\n... and {} more", total - SHOWN as u64);
    }
    // What `sweep run` would say of the size.
    if let Err(e) = spec.check_size(max_trials) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// Renders progress: on a terminal, finished trials scroll above a live block (a
/// progress bar with counts, elapsed time and ETA, and one line per running trial);
/// in a pipe or CI log, one plain line per event.
struct Renderer {
    start: std::time::Instant,
    terminal: bool,
    counts: sweep_orchestrator::store::StateCounts,
    /// Trials finished in this run (for the ETA).
    finished_here: usize,
    /// number → (params, epochs, epoch, train loss, val loss)
    running: std::collections::BTreeMap<i64, (String, usize, usize, f64, f64)>,
    /// Lines of the live block currently on screen.
    drawn: usize,
    /// The "waiting for other workers" line was printed.
    waiting_shown: bool,
    /// Trials the spec plans (a search's budget × seeds: more than recorded so far).
    planned: i64,
}

fn short(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!(
            "{}…",
            s.chars().take(n.saturating_sub(1)).collect::<String>()
        )
    }
}

impl Renderer {
    fn new() -> Self {
        Renderer {
            start: std::time::Instant::now(),
            terminal: std::io::stdout().is_terminal(),
            counts: Default::default(),
            finished_here: 0,
            running: Default::default(),
            drawn: 0,
            waiting_shown: false,
            planned: 0,
        }
    }

    fn clear_block(&mut self, out: &mut impl Write) {
        for _ in 0..self.drawn {
            let _ = write!(out, "\x1b[1A\x1b[2K");
        }
        self.drawn = 0;
    }

    fn draw_block(&mut self, out: &mut impl Write) {
        let c = &self.counts;
        let total = c.total().max(self.planned).max(1);
        let done = c.complete + c.pruned + c.failed;
        let width = 30;
        let filled = ((done as usize * width) / total as usize).min(width);
        let el = self.start.elapsed().as_secs_f64();
        let remaining = (total - done).max(0) as f64;
        let eta = if self.finished_here > 0 {
            format!("{:.0}s", el / self.finished_here as f64 * remaining)
        } else {
            "?".into()
        };
        let _ = writeln!(
            out,
            "[{}{}] {done}/{total} · done {} · running {} · failed {} · pruned {} · waiting {} · {el:.0}s elapsed · ETA {eta}",
            "#".repeat(filled),
            "-".repeat(width - filled),
            c.complete,
            c.running,
            c.failed,
            c.pruned,
            c.waiting
        );
        for (n, (params, epochs, epoch, tl, vl)) in &self.running {
            let loss = if *epoch > 0 {
                format!("train loss {tl:.4} · val loss {vl:.4}")
            } else {
                "starting".into()
            };
            let _ = writeln!(
                out,
                "  trial {n:>4} · epoch {epoch}/{epochs} · {loss} · {}",
                short(params, 80)
            );
        }
        self.drawn = 1 + self.running.len();
    }

    fn show(&mut self, p: Progress) {
        let el = self.start.elapsed().as_secs_f64();
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        if self.terminal {
            self.clear_block(&mut out);
        }
        match p {
            Progress::Planned {
                trials,
                added,
                reclaimed,
                requeued,
                counts,
            } => {
                let _ = writeln!(
                    out,
                    "{trials} trials in the spec: {added} new; {} already finished; {reclaimed} reclaimed from a stopped run; {requeued} failed ones retried",
                    counts.complete + counts.pruned
                );
                self.planned = trials as i64;
                self.counts = counts;
            }
            Progress::Proposed { number, trials } => {
                self.counts.waiting += trials as i64;
                if !self.terminal {
                    let _ = writeln!(
                        out,
                        "[{el:7.1}s] search: configuration {number} proposed ({trials} trials)"
                    );
                }
            }
            Progress::SearchDone { why } => {
                let _ = writeln!(out, "[{el:7.1}s] search: no more proposals: {why}");
            }
            Progress::Started {
                number,
                params,
                device,
                attempt,
                epochs,
            } => {
                self.counts.waiting -= 1;
                self.counts.running += 1;
                if !self.terminal {
                    let again = if attempt > 1 {
                        format!(" (attempt {attempt})")
                    } else {
                        String::new()
                    };
                    let _ = writeln!(
                        out,
                        "[{el:7.1}s] start  trial {number:>4} on {device}{again}: {params}"
                    );
                }
                self.running
                    .insert(number, (params, epochs, 0, f64::NAN, f64::NAN));
            }
            Progress::Epoch {
                number,
                epoch,
                train_loss,
                val_loss,
                ..
            } => {
                if let Some(r) = self.running.get_mut(&number) {
                    (r.2, r.3, r.4) = (epoch, train_loss, val_loss);
                }
            }
            Progress::Finished {
                number,
                state,
                objective,
                note,
                counts,
            } => {
                let params = self
                    .running
                    .remove(&number)
                    .map(|r| r.0)
                    .unwrap_or_default();
                self.finished_here += 1;
                let obj = objective
                    .map(|v| format!(" objective {v:.4}"))
                    .unwrap_or_default();
                let st = match state {
                    TrialState::Complete => "done",
                    TrialState::Pruned => "pruned",
                    TrialState::Failed => "FAILED",
                    _ => "?",
                };
                if self.terminal {
                    let _ = writeln!(
                        out,
                        "[{el:7.1}s] {st:<6} trial {number:>4}:{obj} ({note}) {params}"
                    );
                } else {
                    let _ = writeln!(
                        out,
                        "[{el:7.1}s] {st:<6} trial {number:>4}:{obj} ({note})  | done {} · running {} · failed {} · pruned {} · waiting {} of {}",
                        counts.complete,
                        counts.running,
                        counts.failed,
                        counts.pruned,
                        counts.waiting,
                        counts.total()
                    );
                }
                self.counts = counts;
            }
            Progress::Dropped { number, note } => {
                self.running.remove(&number);
                let _ = writeln!(out, "[{el:7.1}s] dropped trial {number:>4}: {note}");
            }
            Progress::WaitingForOthers { running_elsewhere } => {
                if !self.waiting_shown {
                    let _ = writeln!(
                        out,
                        "[{el:7.1}s] nothing left to claim; waiting for {running_elsewhere} trial(s) running in other workers (reclaimed here if their worker stops)"
                    );
                    self.waiting_shown = true;
                }
            }
            Progress::Submitted { job, tasks, script } => {
                let _ = writeln!(
                    out,
                    "submitted Slurm job array {job}: {tasks} worker task(s) running {}; logs beside it",
                    script.display()
                );
            }
            Progress::Counts { counts } => {
                let _ = writeln!(
                    out,
                    "[{el:7.1}s] done {} · running {} · failed {} · pruned {} · waiting {} of {}",
                    counts.complete,
                    counts.running,
                    counts.failed,
                    counts.pruned,
                    counts.waiting,
                    counts.total()
                );
                self.counts = counts;
            }
            Progress::SessionEnded => {
                let _ = writeln!(out, "[{el:7.1}s] this worker was silent past its lease and another process ended its session: its trials were handed on; stopping");
            }
            Progress::Fault { number, message } => {
                let _ = writeln!(out, "[{el:7.1}s] trial {number}: stopped on a fault of the machine, not of the trial (no attempt used): {message}");
                let _ = writeln!(out, "[{el:7.1}s] stopping: no new trials; running ones are interrupted and resume next time");
            }
            Progress::Stopping => {
                let _ = writeln!(out, "[{el:7.1}s] stopping: no new trials; running ones are interrupted and resume next time");
            }
            Progress::DataWarnings(ws) => {
                for w in ws {
                    let _ = writeln!(out, "warning: data: {w}");
                }
                let _ = writeln!(
                    out,
                    "  (`sweep data inspect` shows the details; `--strict-data` refuses to run)"
                );
            }
        }
        if self.terminal && !self.running.is_empty() {
            self.draw_block(&mut out);
        }
        let _ = out.flush();
    }
}

fn print_summary(s: &RunSummary, db: &DbLocation) {
    let c = &s.counts;
    println!();
    println!(
        "sweep `{}`: {} complete, {} pruned, {} failed, {} waiting, {} running; results in {}",
        s.sweep,
        c.complete,
        c.pruned,
        c.failed,
        c.waiting,
        c.running,
        db.display()
    );
    if s.best.entries.is_empty() {
        return;
    }
    println!();
    println!(
        "best configurations by {} (mean ± std over seeds; {} of {}):",
        s.objective,
        s.best.entries.len().min(10),
        s.best.entries.len()
    );
    let t = crate::results::leaderboard_table(&s.best, true, false, 10);
    print!(
        "{}",
        crate::results::render(&t, crate::results::Format::Table)
    );
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// `sweep worker`'s arguments.
#[derive(clap::Args, Debug)]
pub struct WorkerArgs {
    /// The shared results database to claim trials from (postgres://..., or a
    /// SQLite file on this machine; default SWEEP_DB).
    #[arg(long)]
    pub db: Option<String>,
    /// The sweep to work on (recorded by `sweep run --executor slurm|none`).
    /// Without it, the process runs one trial from a job read on standard input
    /// (what `sweep run` starts for each trial).
    #[arg(long)]
    pub sweep: Option<String>,
    /// The results folder the sweep was recorded with (shared by every machine).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Trials at once (default: the number of CPU cores).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Compute threads per trial (default: the CPU cores divided by --jobs).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Devices, comma-separated: cpu (default), or cuda:0,cuda:1,...
    #[arg(long, default_value = "cpu")]
    pub devices: String,
    /// Trials per device at once.
    #[arg(long, default_value_t = 1)]
    pub per_device: usize,
    /// Seconds without a heartbeat after which a worker's trials are reclaimed.
    #[arg(long, default_value_t = 60.0)]
    pub lease_seconds: f64,
    /// Attempts per trial before a failure is final.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i64,
    /// Stop and fail a trial that runs longer than this (overrides the
    /// sweep's `trial_timeout`).
    #[arg(long, value_parser = parse_timeout)]
    pub trial_timeout: Option<f64>,
}

/// `sweep worker`: with --db, a worker that claims trials of a shared sweep until
/// none is left; without, one trial from a job on stdin.
pub fn worker(a: WorkerArgs) -> ExitCode {
    if a.sweep.is_none() && a.db.is_none() {
        return trial_worker();
    }
    match a.db.clone().or_else(|| std::env::var("SWEEP_DB").ok()) {
        Some(db) => shared_worker(a, &db),
        None => {
            eprintln!("error: `sweep worker --sweep NAME` needs --db (or SWEEP_DB): the shared database to claim trials from");
            ExitCode::from(2)
        }
    }
}

/// Exit codes: 0 done (nothing left anywhere), 1 some trial failed or an error,
/// 2 usage, 130 stopped by a signal (SIGINT or SIGTERM: Slurm's cancel and
/// preemption), its running trials interrupted and back to waiting.
fn shared_worker(a: WorkerArgs, db: &str) -> ExitCode {
    let Some(sweep) = a.sweep.clone() else {
        eprintln!("error: `sweep worker --db ...` needs --sweep NAME");
        return ExitCode::from(2);
    };
    let devices = match parse_devices(&a.devices) {
        Ok(d) => d,
        Err(code) => return code,
    };
    if let Err(code) = check_counts(
        a.jobs,
        a.threads,
        a.per_device,
        a.max_attempts,
        a.lease_seconds,
    ) {
        return code;
    }
    if let Err(code) = preflight_devices(&devices, &a.devices) {
        return code;
    }
    let db = match DbLocation::parse(db) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(code) = refuse_shared_sqlite(&db) {
        return code;
    }
    let (jobs, per_device, threads) = local_slots(&devices, a.jobs, a.per_device, a.threads);
    let settings = RunSettings {
        jobs,
        db,
        results: a.results.clone(),
        fail_fast: false,
        max_attempts: a.max_attempts,
        worker_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sweep")),
        devices,
        per_device,
        threads_per_worker: threads,
        lease_seconds: a.lease_seconds,
        strict_data: false,
        retry_failed: false,
        trial_timeout: a.trial_timeout,
    };
    let rt = match scheduler_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate()).ok();
        let mut int = signal(SignalKind::interrupt()).ok();
        tokio::spawn(async move {
            let t = async {
                match term.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            let i = async {
                match int.as_mut() {
                    Some(s) => s.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! { _ = t => {}, _ = i => {} }
            eprintln!("worker stopping: running trials are interrupted and go back to waiting");
            let _ = stop_tx.send(true);
        });
        let mut r = Renderer::new();
        r.terminal = false;
        runner::work(&sweep, &settings, |p| r.show(p), stop_rx).await
    });
    match result {
        Ok(w) => {
            let c = &w.counts;
            println!(
                "worker done: sweep `{sweep}` has {} complete, {} pruned, {} failed, {} waiting, {} running",
                c.complete, c.pruned, c.failed, c.waiting, c.running
            );
            if w.interrupted {
                ExitCode::from(130)
            } else if w.any_failed {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => error_exit(&e),
    }
}

/// Prints a scheduler's error; exit code 2 for a usage or spec error, 3 for a
/// fault of the machine (fix it and run again), else 1.
fn error_exit(e: &sweep_orchestrator::Error) -> ExitCode {
    eprintln!("error: {e}");
    if e.is_fault() && !matches!(e, sweep_orchestrator::Error::Fault(_)) {
        eprintln!("(a fault of the machine, not of the sweep: nothing stored was lost; fix it and run the same command again)");
    }
    ExitCode::from(if e.is_usage() {
        2
    } else if e.is_fault() {
        3
    } else {
        1
    })
}

/// The trial process: a job on stdin, events on stdout. SIGINT or SIGTERM stops
/// the trial between batches (it then reports itself interrupted).
fn trial_worker() -> ExitCode {
    // First thing: a Ctrl-C that reaches the process group now must interrupt, not
    // kill; so must Slurm's SIGTERM (cancel, preemption, time limit).
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, on_sigint as *const () as libc::sighandler_t);
    }
    // The job is the first line; the rest of stdin carries the replies to
    // each epoch when a pruner judges the trial.
    let mut stdin = std::io::BufReader::new(std::io::stdin());
    let mut input = String::new();
    if let Err(e) = std::io::BufRead::read_line(&mut stdin, &mut input) {
        eprintln!("error: reading the job: {e}");
        return ExitCode::from(2);
    }
    let job: sweep_orchestrator::protocol::Job = match serde_json::from_str(&input) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("error: the job on stdin is not valid: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = StopFlag::new();
    // Stop on SIGINT, and when the orchestrator dies (we get re-parented): a trial
    // nobody records would only race the rerun that reclaims it.
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    let watcher = stop.clone();
    std::thread::spawn(move || loop {
        // SAFETY: as above.
        if INTERRUPTED.load(Ordering::SeqCst) || unsafe { libc::getppid() } != parent {
            watcher.request();
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    });
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match sweep_orchestrator::worker::run_job(&job, &mut out, &mut stdin, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
