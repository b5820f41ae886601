//! The `sweep` command line: parses arguments, resolves settings, runs, prints.

mod data;
mod mlflow;
mod render;
mod results;
mod sweep;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use sweep_train::{
    Dataset, EpochMetrics, Observer, StopFlag, TrialConfig, TrialOptions, TrialStart,
};

#[derive(Parser)]
#[command(
    name = "sweep",
    version,
    about = "Train image classifiers under many settings and compare them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `sweep mlflow ...`
#[derive(Subcommand, Debug)]
enum MlflowCommand {
    /// Send a recorded sweep to an MLflow tracking server: what is not there
    /// yet (a run per trial, created once: running it again creates nothing
    /// new). docs/mlflow.md.
    Sync(mlflow::SyncArgs),
}

/// `sweep data ...`
#[derive(Subcommand, Debug)]
enum DataCommand {
    /// Exploratory analysis of the data named by a trial config, a sweep spec or
    /// an image folder (docs/data.md).
    Inspect(data::InspectArgs),
    /// A PNG grid of one image under each configured augmentation alone (always
    /// applied, with the config's limits), then under all of them as training
    /// applies them: see what the limits do before training.
    Augment(data::AugmentArgs),
}

#[derive(Subcommand)]
enum Command {
    /// Train one configuration (a TOML file with [data], [model], [train]) and print
    /// per-epoch metrics, the classification report and the confusion matrix.
    Train {
        /// The configuration file.
        config: PathBuf,
        /// Write the best checkpoint (best.safetensors) and config.json here.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Override train.seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override train.epochs.
        #[arg(long)]
        epochs: Option<usize>,
        /// Print the outcome as JSON instead of tables.
        #[arg(long)]
        json: bool,
        /// cpu (default), or cuda:N in a build with the `cuda` feature.
        #[arg(long, default_value = "cpu")]
        device: String,
        /// Skip the initialization-health probe (to measure its cost:
        /// scripts/bench-diagnostics).
        #[arg(long, hide = true)]
        no_probe: bool,
    },
    /// Run (or resume) a sweep: every combination of the spec's [grid] times its seeds,
    /// in parallel worker processes, every metric stored in SQLite.
    Run(sweep::RunArgs),
    /// MLflow: `sweep mlflow sync SWEEP` (docs/mlflow.md).
    Mlflow {
        #[command(subcommand)]
        command: MlflowCommand,
    },
    /// List the sweeps in the database: trials by state and the best objective so far.
    Ls {
        #[command(flatten)]
        out: results::Output,
    },
    /// Progress of one sweep: counts by state, running trials with their epoch, ETA.
    Status {
        sweep: String,
        #[command(flatten)]
        out: results::Output,
    },
    /// One row per trial with its swept parameters, seed, state and final metrics.
    Trials {
        sweep: String,
        /// Only trials in this state.
        #[arg(long)]
        state: Option<String>,
        /// PARAM=VALUE filters (repeatable).
        #[arg(long = "where")]
        filters: Vec<String>,
        /// Sort by this final metric (default: the objective; losses ascending).
        #[arg(long)]
        sort: Option<String>,
        #[arg(long)]
        limit: Option<usize>,
        #[command(flatten)]
        out: results::Output,
    },
    /// Everything about one trial: configuration, curve, report, confusion matrix.
    Show {
        sweep: String,
        trial: i64,
        #[command(flatten)]
        out: results::Output,
    },
    /// Compare configurations over seeds: mean, std and count per cell; with
    /// --baseline, the difference and Welch's t-test p-value; --effects for the main
    /// effect of every swept parameter.
    Compare {
        sweep: String,
        /// Parameters that make the rows (default: every swept parameter, ranked).
        #[arg(long)]
        rows: Option<String>,
        /// Parameters that make the columns.
        #[arg(long)]
        cols: Option<String>,
        /// The metric (default: the sweep's objective), e.g. val.balanced_accuracy.
        #[arg(long)]
        metric: Option<String>,
        /// PARAM=VALUE[,PARAM=VALUE]: the reference configuration.
        #[arg(long)]
        baseline: Option<String>,
        /// The mean metric per value of each swept parameter.
        #[arg(long)]
        effects: bool,
        /// Add min, max and the 95% confidence interval of the mean.
        #[arg(long)]
        ci: bool,
        #[command(flatten)]
        out: results::Output,
    },
    /// Export long tables: trials (one row per trial), epochs (one row per epoch and
    /// metric) or confusion (one row per confusion cell).
    Export {
        sweep: String,
        #[arg(long, default_value = "trials")]
        table: String,
        #[command(flatten)]
        out: results::Output,
    },
    /// Look at a data set before a sweep: classes and the split a trial would
    /// use, unreadable files, original sizes and colour modes, pixel statistics
    /// (the normalize lines to paste), duplicates across the split.
    Data {
        #[command(subcommand)]
        command: DataCommand,
    },
    /// Evaluate a trial's best checkpoint on another image folder with the same
    /// classes (a held-out test set): classification report and confusion matrix.
    Eval {
        sweep: String,
        trial: i64,
        /// The image folder (root/<class>/*.png|jpg|jpeg|bmp).
        #[arg(long)]
        data: PathBuf,
        /// The results folder, when it moved since the sweep ran (default: the
        /// folder the database recorded; results/ for older databases). Also the
        /// default place of the database (DIR/sweep.db) when --db is not given.
        #[arg(long)]
        results: Option<PathBuf>,
        #[command(flatten)]
        out: results::Output,
    },
    /// Write the sweep's self-contained HTML report (default <results>/<sweep>/report.html,
    /// in the results folder the sweep recorded).
    Report {
        sweep: String,
        /// The results folder, when it moved since the sweep ran (default: the
        /// folder the database recorded; results/ for older databases). Also the
        /// default place of the database (DIR/sweep.db) when --db is not given.
        #[arg(long)]
        results: Option<PathBuf>,
        /// Configurations shown in the leaderboard and the stopping chart before
        /// the rest is folded away.
        #[arg(long, default_value_t = 20)]
        top: usize,
        #[command(flatten)]
        out: results::Output,
    },
    /// Run a read-only SQL query on the results database.
    Sql {
        query: String,
        #[command(flatten)]
        out: results::Output,
    },
    /// A worker for a sweep shared through a database: claims trials of a sweep
    /// recorded by `sweep run --executor slurm|none` until none is left (start any
    /// number, on any machine that sees the results folder).
    Worker(sweep::WorkerArgs),
    /// Measure training steps of the reference models (used by scripts/bench-train).
    #[command(hide = true)]
    BenchStep {
        /// MODEL:BATCH:OPTIMIZER, e.g. mlp:64:adam
        specs: Vec<String>,
        #[arg(long, default_value_t = 30)]
        steps: usize,
        /// cpu (default), or cuda:N in a build with the `cuda` feature (autograd path).
        #[arg(long, default_value = "cpu")]
        device: String,
    },
    /// Measure the results store's write path (used by scripts/bench-sweep).
    #[command(hide = true)]
    BenchStore {
        /// A database file to create (must not exist), or a postgres:// URL of a
        /// server where a fresh database `sweep_bench_store` is created.
        db: String,
        #[arg(long, default_value_t = 20)]
        trials: usize,
        #[arg(long, default_value_t = 50)]
        epochs: usize,
    },
    /// Claims per second from a recorded sweep with many workers at once
    /// (used by scripts/bench-large).
    #[command(hide = true)]
    BenchClaims {
        /// The database (a file, or a postgres:// URL) holding the sweep.
        db: String,
        #[arg(long)]
        sweep: String,
        #[arg(long, default_value_t = 8)]
        workers: usize,
        #[arg(long, default_value_t = 2000)]
        claims: usize,
    },
    /// Sampler quality on Branin / Hartmann-6, and TPE's proposal time (used by
    /// scripts/bench-search, which runs Optuna side by side).
    #[command(hide = true)]
    BenchSearch {
        /// branin, hartmann6, or proposal (the time of one TPE proposal).
        what: String,
        /// tpe (multivariate, the default), tpe-univariate, or random.
        #[arg(long, default_value = "tpe")]
        method: String,
        #[arg(long, default_value_t = 50)]
        trials: usize,
        /// Sampler seeds 0..N, one line each.
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// `proposal`: finished configurations before the timed proposals.
        #[arg(long, default_value_t = 1000)]
        history: usize,
        #[arg(long, default_value_t = 6)]
        params: usize,
        #[arg(long, default_value_t = 20)]
        repeats: usize,
    },
    /// Write a generated, finished study of N trials into a new database (used
    /// by scripts/bench-report to measure the report at scale).
    #[command(hide = true)]
    GenerateStudy {
        /// A database file to create (must not exist).
        db: PathBuf,
        #[arg(long, default_value_t = 1000)]
        trials: usize,
        #[arg(long, default_value = "big")]
        name: String,
    },
    /// Measure the data path: batches with no augmentation, the reference
    /// script's, each transform alone, and all of them.
    #[command(hide = true)]
    BenchData {
        #[arg(long, default_value_t = 3)]
        epochs: usize,
        /// Only the sets of this name (`none`, `reference`, a transform, `all`).
        #[arg(long)]
        only: Option<String>,
    },
}

fn bench_search(
    what: &str,
    method: &str,
    trials: usize,
    seeds: u64,
    history: usize,
    params: usize,
    repeats: usize,
) -> Result<()> {
    use sweep_orchestrator::search::{bench, Method};
    if what == "proposal" {
        let ms = bench::proposal_ms(history, params, repeats);
        println!(
            "{}",
            serde_json::json!({"history": history, "params": params, "repeats": repeats, "ms_per_proposal": ms})
        );
        return Ok(());
    }
    let Some(problem) = bench::problem(what) else {
        anyhow::bail!("bench-search {what}: choose branin, hartmann6 or proposal");
    };
    let (m, multivariate) = match method {
        "tpe" => (Method::Tpe, true),
        "tpe-univariate" => (Method::Tpe, false),
        "random" => (Method::Random, false),
        other => anyhow::bail!("--method {other}: choose tpe, tpe-univariate or random"),
    };
    for seed in 0..seeds {
        let t = std::time::Instant::now();
        let best = bench::minimize(&problem, m, multivariate, trials, seed);
        println!(
            "{}",
            serde_json::json!({"function": what, "method": method, "seed": seed, "trials": trials,
                "best": best, "regret": best - problem.minimum, "seconds": t.elapsed().as_secs_f64()})
        );
    }
    Ok(())
}

fn bench_step(specs: Vec<String>, steps: usize, device: &str) -> Result<()> {
    let device = sweep_orchestrator::worker::device(device)?;
    for spec in specs {
        let parts: Vec<&str> = spec.split(':').collect();
        anyhow::ensure!(
            parts.len() == 3 || (parts.len() == 4 && parts[3] == "autograd"),
            "bench spec `{spec}` is not MODEL:BATCH:OPTIMIZER[:autograd]"
        );
        let batch: usize = parts[1]
            .parse()
            .with_context(|| format!("batch size in `{spec}`"))?;
        let r = sweep_train::bench::step_throughput(
            parts[0],
            batch,
            parts[2],
            steps,
            parts.len() == 4,
            &device,
        )?;
        println!("RESULT {}", serde_json::to_string(&r)?);
    }
    Ok(())
}

fn bench_store(db: String, trials: usize, epochs: usize) -> Result<()> {
    use sweep_orchestrator::store::{create_postgres_database, DbLocation};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let db = match DbLocation::parse(&db)? {
        DbLocation::Sqlite(p) => {
            anyhow::ensure!(!p.exists(), "{} exists; give a new file", p.display());
            DbLocation::Sqlite(p)
        }
        DbLocation::Postgres(base) => {
            DbLocation::Postgres(rt.block_on(create_postgres_database(&base, "sweep_bench_store"))?)
        }
    };
    let rate = rt.block_on(sweep_orchestrator::bench::epoch_rows_per_second(
        &db, trials, epochs,
    ))?;
    println!(
        "RESULT {}",
        serde_json::json!({ "epoch_rows_per_s": rate, "trials": trials, "epochs": epochs })
    );
    Ok(())
}

fn bench_claims(db: &str, sweep: &str, workers: usize, claims: usize) -> Result<()> {
    let db = sweep_orchestrator::store::DbLocation::parse(db)?;
    let (rate, made) = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(sweep_orchestrator::bench::claims_per_second(
            &db, sweep, workers, claims,
        ))?;
    println!(
        "RESULT {}",
        serde_json::json!({ "claims_per_s": rate, "claims": made, "workers": workers })
    );
    Ok(())
}

fn generate_study(db: &std::path::Path, trials: usize, name: &str) -> Result<()> {
    anyhow::ensure!(!db.exists(), "{} exists; give a new file", db.display());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(sweep_orchestrator::bench::generate_study(
            &sweep_orchestrator::store::DbLocation::Sqlite(db.to_path_buf()),
            name,
            trials,
        ))?;
    Ok(())
}

fn bench_data(epochs: usize, only: Option<&str>) -> Result<()> {
    for (set, augs, p) in sweep_train::bench::data_sets() {
        if only.is_some_and(|o| o != set) {
            continue;
        }
        let r = sweep_train::bench::data_throughput(&set, &augs, p, epochs)?;
        println!("RESULT {}", serde_json::to_string(&r)?);
    }
    Ok(())
}

struct TablePrinter {
    json: bool,
}

impl Observer for TablePrinter {
    fn on_init(&mut self, r: &sweep_train::InitReport) {
        if !self.json {
            println!("pretrained: {}", r.summary());
        }
    }
    fn on_start(&mut self, s: &TrialStart) {
        if self.json {
            return;
        }
        println!(
            "{} classes, {} training / {} validation images, {} parameters, {} batches per epoch",
            s.classes.len(),
            s.train_counts.iter().sum::<usize>(),
            s.val_counts.iter().sum::<usize>(),
            s.num_parameters,
            s.batches_per_epoch
        );
        println!();
        println!("{}", render::EPOCH_HEADER);
    }
    fn on_epoch(&mut self, m: &EpochMetrics) {
        if !self.json {
            println!("{}", render::epoch_row(m));
            let _ = std::io::stdout().flush();
        }
    }
}

fn train(
    config: PathBuf,
    out: Option<PathBuf>,
    seed: Option<u64>,
    epochs: Option<usize>,
    json: bool,
    device: &str,
    probe: bool,
) -> Result<()> {
    let device = sweep_orchestrator::worker::device(device)?;
    let mut cfg = TrialConfig::from_file(&config)?;
    if let Some(s) = seed {
        cfg.train.seed = s;
    }
    if let Some(e) = epochs {
        anyhow::ensure!(e > 0, "--epochs must be at least 1");
        cfg.train.epochs = e;
    }
    let ds = Dataset::load(&cfg.data)
        .with_context(|| format!("loading the data named in {}", config.display()))?;
    if !ds.skipped.is_empty() && !json {
        eprintln!(
            "warning: skipped {} unreadable image(s) (data.on_bad_image = \"skip\"):",
            ds.skipped.len()
        );
        for (p, why) in ds.skipped.iter().take(5) {
            eprintln!("  {}: {why}", p.display());
        }
    }
    let stop = StopFlag::new();
    let opts = TrialOptions {
        checkpoint_dir: out,
        probe,
        ..TrialOptions::default()
    };
    let mut printer = TablePrinter { json };
    let outcome = sweep_train::run_trial(&cfg, &ds, &device, &opts, &mut printer, &stop)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
        return Ok(());
    }
    println!();
    println!("{}", render::stop_line(&outcome));
    print!("{}", render::health(&outcome));
    if let Some(r) = &outcome.report {
        println!();
        println!("{}", render::report(r));
        println!("{}", render::confusion(r));
    }
    if let Some(p) = &outcome.checkpoint {
        println!("best checkpoint: {}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => return sweep::run(args),
        Command::Worker(args) => return sweep::worker(args),
        Command::Mlflow {
            command: MlflowCommand::Sync(args),
        } => return mlflow::sync(args),
        Command::Ls { out } => results::ls(&out),
        Command::Status { sweep, out } => results::status(&sweep, &out),
        Command::Trials {
            sweep,
            state,
            filters,
            sort,
            limit,
            out,
        } => results::trials(
            results::TrialsArgs {
                sweep,
                state,
                filters,
                sort,
                limit,
            },
            &out,
        ),
        Command::Show { sweep, trial, out } => results::show(&sweep, trial, &out),
        Command::Compare {
            sweep,
            rows,
            cols,
            metric,
            baseline,
            effects,
            ci,
            out,
        } => results::compare(
            results::CompareArgs {
                sweep,
                rows,
                cols,
                metric,
                baseline,
                effects,
                ci,
            },
            &out,
        ),
        Command::Export { sweep, table, out } => results::export(&sweep, &table, &out),
        Command::Sql { query, out } => results::sql(&query, &out),
        Command::Report {
            sweep,
            results: dir,
            top,
            out,
        } => results::report_cmd(&sweep, dir.as_deref(), top, &out),
        Command::Data {
            command: DataCommand::Inspect(args),
        } => data::inspect(args),
        Command::Data {
            command: DataCommand::Augment(args),
        } => data::augment(args),
        Command::Eval {
            sweep,
            trial,
            data,
            results: dir,
            out,
        } => results::eval(&sweep, trial, &data, dir.as_deref(), &out),
        Command::Train {
            config,
            out,
            seed,
            epochs,
            json,
            device,
            no_probe,
        } => train(config, out, seed, epochs, json, &device, !no_probe),
        Command::BenchStep {
            specs,
            steps,
            device,
        } => bench_step(specs, steps, &device),
        Command::BenchData { epochs, only } => bench_data(epochs, only.as_deref()),
        Command::BenchSearch {
            what,
            method,
            trials,
            seeds,
            history,
            params,
            repeats,
        } => bench_search(&what, &method, trials, seeds, history, params, repeats),
        Command::BenchStore { db, trials, epochs } => bench_store(db, trials, epochs),
        Command::GenerateStudy { db, trials, name } => generate_study(&db, trials, &name),
        Command::BenchClaims {
            db,
            sweep,
            workers,
            claims,
        } => bench_claims(&db, &sweep, workers, claims),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
