//! `sweep run` and the hidden `sweep worker`: settings resolution, Ctrl-C handling
//! and progress rendering around the orchestrator.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

use sweep_orchestrator::runner::{self, Progress, RunSettings, RunSummary};
use sweep_orchestrator::spec::SweepSpec;
use sweep_orchestrator::store::TrialState;
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
    /// Results database (default results/sweep.db, or SWEEP_DB).
    #[arg(long)]
    pub db: Option<PathBuf>,
    /// Results folder (default results/).
    #[arg(long, default_value = "results")]
    pub results: PathBuf,
    /// Print the number of trials and the first few configurations; run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Stop starting trials after the first failure.
    #[arg(long)]
    pub fail_fast: bool,
    /// Attempts per trial before a failure is final.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: i64,
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
    let devices: Vec<String> = a
        .devices
        .split(',')
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .collect();
    if devices.is_empty()
        || devices
            .iter()
            .any(|d| d != "cpu" && !d.starts_with("cuda:"))
    {
        eprintln!(
            "error: --devices {:?}: expected cpu or cuda:0,cuda:1,...",
            a.devices
        );
        return ExitCode::from(2);
    }
    if let Some(bad) = devices
        .iter()
        .find(|d| d.starts_with("cuda:") && d[5..].parse::<usize>().is_err())
    {
        eprintln!("error: --devices {}: `{bad}` is not cuda:N", a.devices);
        return ExitCode::from(2);
    }
    // Open each GPU once before any trial is claimed: a missing device is one
    // clear error, not every trial failing its attempts.
    #[cfg(feature = "cuda")]
    for d in devices.iter().filter(|d| d.starts_with("cuda:")) {
        if let Err(e) = sweep_orchestrator::worker::device(d) {
            eprintln!("error: --devices {}: cannot open {d}: {e}", a.devices);
            return ExitCode::from(2);
        }
    }
    #[cfg(not(feature = "cuda"))]
    if devices.iter().any(|d| d.starts_with("cuda:")) {
        eprintln!(
            "error: --devices {}: this build has no CUDA support (CPU only); build with `--features cuda` (scripts/build-cuda)",
            a.devices
        );
        return ExitCode::from(2);
    }
    if a.jobs == Some(0) || a.threads == Some(0) || a.per_device == 0 || a.max_attempts < 1 {
        eprintln!("error: --jobs, --threads, --per-device and --max-attempts must be at least 1");
        return ExitCode::from(2);
    }
    if a.dry_run {
        return dry_run(&spec);
    }
    let jobs = a.jobs.unwrap_or_else(|| {
        if devices == ["cpu"] {
            cores()
        } else {
            devices.len() * a.per_device
        }
    });
    let per_device = if devices == ["cpu"] {
        jobs
    } else {
        a.per_device
    };
    let db =
        a.db.or_else(|| std::env::var_os("SWEEP_DB").map(PathBuf::from))
            .unwrap_or_else(|| a.results.join("sweep.db"));
    let settings = RunSettings {
        jobs,
        db: db.clone(),
        results: a.results.clone(),
        fail_fast: a.fail_fast,
        max_attempts: a.max_attempts,
        worker_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("sweep")),
        devices,
        per_device,
        threads_per_worker: a.threads.unwrap_or(cores() / jobs).max(1),
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let result = rt.block_on(async {
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping: running trials finish their current batch and will resume on the next run (Ctrl-C again to quit at once)");
                let _ = stop_tx.send(true);
                if tokio::signal::ctrl_c().await.is_ok() {
                    eprintln!("quitting at once; running trials will be reclaimed on the next run");
                    std::process::exit(130);
                }
            }
        });
        let mut r = Renderer::new(&spec);
        runner::run(&spec, &settings, |p| r.show(p), stop_rx).await
    });
    match result {
        Ok(summary) => {
            print_summary(&summary, &db);
            let report = a.results.join(&summary.sweep).join("report.html");
            match crate::results::report(&summary.sweep, &db, &report) {
                Ok(()) => println!("report: {}", report.display()),
                Err(e) => eprintln!("warning: the HTML report was not written: {e:#}"),
            }
            if summary.interrupted {
                ExitCode::from(130)
            } else if summary.counts.failed > 0 || summary.failed_in_run {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn dry_run(spec: &SweepSpec) -> ExitCode {
    match spec.expand() {
        Ok(plans) => {
            let combos = plans.len() / spec.seeds.len().max(1);
            println!("sweep `{}`: {} trials ({} configurations × {} seeds, after exclusions and de-duplication)", spec.name, plans.len(), combos, spec.seeds.len());
            println!(
                "objective: {} ({})",
                spec.objective,
                spec.direction.as_str()
            );
            for (i, p) in plans.iter().take(5).enumerate() {
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
            if plans.len() > 5 {
                println!("\n... and {} more", plans.len() - 5);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
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
    fn new(_spec: &SweepSpec) -> Self {
        Renderer {
            start: std::time::Instant::now(),
            terminal: std::io::stdout().is_terminal(),
            counts: Default::default(),
            finished_here: 0,
            running: Default::default(),
            drawn: 0,
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
        let total = c.total().max(1);
        let done = c.complete + c.pruned + c.failed;
        let width = 30;
        let filled = (done as usize * width) / total as usize;
        let el = self.start.elapsed().as_secs_f64();
        let remaining = (c.waiting + c.running) as f64;
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
                self.counts = counts;
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
            Progress::Stopping => {
                let _ = writeln!(out, "[{el:7.1}s] stopping: no new trials; running ones are interrupted and resume next time");
            }
        }
        if self.terminal && !self.running.is_empty() {
            self.draw_block(&mut out);
        }
        let _ = out.flush();
    }
}

fn print_summary(s: &RunSummary, db: &std::path::Path) {
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
    if s.best.is_empty() {
        return;
    }
    println!();
    println!(
        "best configurations by {} (mean ± std over seeds):",
        s.objective
    );
    println!(
        "{:>4}  {:>8}  {:>8}  {:>5}  configuration",
        "rank", "mean", "std", "seeds"
    );
    for (i, r) in s.best.iter().take(10).enumerate() {
        println!(
            "{:>4}  {:>8.4}  {:>8.4}  {:>5}  {}",
            i + 1,
            r.mean,
            r.std,
            r.n,
            if r.params.is_empty() {
                "(base)"
            } else {
                &r.params
            }
        );
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigint(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// The worker process: a job on stdin, events on stdout. SIGINT stops the trial
/// between batches (it then reports itself interrupted).
pub fn worker() -> ExitCode {
    // First thing: a Ctrl-C that reaches the process group now must interrupt, not kill.
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe { libc::signal(libc::SIGINT, on_sigint as *const () as libc::sighandler_t) };
    let mut input = String::new();
    if let Err(e) = std::io::Read::read_to_string(&mut std::io::stdin(), &mut input) {
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
    match sweep_orchestrator::worker::run_job(&job, &mut out, &stop) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
