//! `sweep run` end to end with real processes: resume, kill -9 of the orchestrator
//! and of a worker, Ctrl-C, a diverging trial. Databases are real SQLite files,
//! checked through a read-only connection while the sweep runs.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sweep_orchestrator::store::Store;

fn sweep_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.args(args).current_dir(dir).env_remove("SWEEP_DB");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    sweep_cmd(dir, args).output().unwrap()
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    sweep_cmd(dir, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn spec(name: &str, epochs: usize, extra_grid: &str) -> String {
    format!(
        r#"
name = "{name}"
seeds = [1, 2]
[data]
image_size = 16
[data.synthetic]
classes = 3
per_class = 40
image_size = 16
[model]
hidden = [64]
[train]
epochs = {epochs}
batch_size = 16
[grid]
model.dropout = [0.0, 0.5]
{extra_grid}
"#
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// (number, state, attempts) of every trial.
fn trials(db: &Path) -> Vec<(i64, String, i64)> {
    try_trials(db).unwrap()
}

/// As `trials`, or `None` while the database is still being created.
fn try_trials(db: &Path) -> Option<Vec<(i64, String, i64)>> {
    rt().block_on(async {
        let s = Store::open_read_only(db).await.ok()?;
        let rows = sqlx::query_as("SELECT number, state, attempts FROM trials ORDER BY number")
            .fetch_all(s.pool())
            .await
            .ok();
        s.close().await;
        rows
    })
}

fn query_i64(db: &Path, sql: &str) -> i64 {
    try_query_i64(db, sql).unwrap()
}

fn try_query_i64(db: &Path, sql: &str) -> Option<i64> {
    rt().block_on(async {
        let s = Store::open_read_only(db).await.ok()?;
        let n: Option<(i64,)> = sqlx::query_as(sql).fetch_one(s.pool()).await.ok();
        s.close().await;
        n.map(|n| n.0)
    })
}

/// Trial key → final objective (val.macro_f1), for comparing runs.
fn objectives(db: &Path) -> Vec<(String, f64)> {
    rt().block_on(async {
        let s = Store::open_read_only(db).await.unwrap();
        let rows: Vec<(String, f64)> = sqlx::query_as("SELECT t.key, f.value FROM trials t JOIN final_metrics f ON f.trial_id = t.id AND f.name = 'val.macro_f1' ORDER BY t.key")
            .fetch_all(s.pool())
            .await
            .unwrap();
        assert_eq!(s.integrity_check().await.unwrap(), "ok");
        s.close().await;
        rows
    })
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn db_of(dir: &Path) -> PathBuf {
    dir.join("results/sweep.db")
}

#[test]
fn a_sweep_runs_and_a_second_run_resumes_without_rerunning() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("resume", 3, "")).unwrap();
    let o = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(out.contains("4 trials in the spec: 4 new"), "{out}");
    assert!(
        out.contains("best configurations by val.macro_f1 (mean ± std over seeds; 2 of 2)"),
        "{out}"
    );
    // the leaderboard: a column per setting, the test against the best
    let board: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("best configurations"))
        .skip(1)
        .take(3)
        .collect();
    assert!(
        board[0].starts_with("rank")
            && board[0].contains("dropout")
            && board[0].contains("vs best (Holm)"),
        "{out}"
    );
    let mut values: Vec<&str> = board[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap())
        .collect();
    values.sort();
    assert_eq!(values, ["0", "0.5"], "{out}");
    assert!(board[1].contains("best"), "{out}");
    let db = db_of(dir.path());
    assert_eq!(
        trials(&db)
            .iter()
            .filter(|t| t.1 == "complete" && t.2 == 1)
            .count(),
        4
    );
    assert_eq!(
        query_i64(&db, "SELECT COUNT(*) FROM epoch_metrics"),
        4 * 3 * 12
    );
    assert_eq!(
        query_i64(&db, "SELECT SUM(count) FROM confusion_cells"),
        4 * 24
    );
    assert!(dir
        .path()
        .join("results/resume/trials/0001/attempt-1/best.safetensors")
        .is_file());
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM artifacts WHERE kind = 'best_checkpoint' AND path = 'trials/0001/attempt-1/best.safetensors'"
        ),
        1
    );
    // the checkpoint that reproduces the stored metrics exists for every trial
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM artifacts WHERE kind = 'checkpoint'"
        ),
        4
    );

    let again = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    let out2 = String::from_utf8_lossy(&again.stdout);
    assert!(again.status.success());
    assert!(
        out2.contains("4 trials in the spec: 0 new; 4 already finished"),
        "{out2}"
    );
    assert!(
        !out2.contains("start  trial"),
        "nothing may re-run:\n{out2}"
    );
    assert_eq!(trials(&db).iter().filter(|t| t.2 == 1).count(), 4);

    // Editing the spec adds trials and keeps the old results.
    std::fs::write(
        dir.path().join("s.toml"),
        spec("resume", 3, "").replace("seeds = [1, 2]", "seeds = [1, 2, 3]"),
    )
    .unwrap();
    let o3 = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    let out3 = String::from_utf8_lossy(&o3.stdout);
    assert!(
        out3.contains("6 trials in the spec: 2 new; 4 already finished"),
        "{out3}"
    );
    assert_eq!(trials(&db).len(), 6);
    assert!(trials(&db).iter().all(|t| t.1 == "complete" && t.2 == 1));
}

#[test]
fn kill_9_of_the_orchestrator_then_rerun_completes_with_identical_results() {
    // the uninterrupted reference
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(clean.path().join("s.toml"), spec("killed", 60, "")).unwrap();
    assert!(run(clean.path(), &["run", "s.toml", "--jobs", "1"])
        .status
        .success());
    let want = objectives(&db_of(clean.path()));
    assert_eq!(want.len(), 4);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("killed", 60, "")).unwrap();
    let db = db_of(dir.path());
    let mut child = spawn(dir.path(), &["run", "s.toml", "--jobs", "1"]);
    wait_for(
        "one finished and one running trial",
        Duration::from_secs(120),
        || {
            let t = try_trials(&db).unwrap_or_default();
            t.iter().any(|t| t.1 == "complete") && t.iter().any(|t| t.1 == "running")
        },
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        trials(&db).iter().any(|t| t.1 == "running"),
        "the killed run leaves a running trial behind"
    );

    let o = run(dir.path(), &["run", "s.toml", "--jobs", "1"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("1 reclaimed from a stopped run"), "{out}");
    assert!(trials(&db).iter().all(|t| t.1 == "complete"));
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trial_attempts WHERE outcome = 'orphaned'"
        ),
        1
    );
    assert_eq!(
        objectives(&db),
        want,
        "results must equal the uninterrupted run's"
    );
}

#[test]
fn kill_9_of_a_worker_fails_its_trial_with_the_cause_and_retries_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("worker-killed", 60, "")).unwrap();
    let db = db_of(dir.path());
    let mut child = spawn(dir.path(), &["run", "s.toml", "--jobs", "1"]);
    let mut pid = 0;
    wait_for(
        "a running trial with a worker",
        Duration::from_secs(120),
        || {
            pid = try_query_i64(
                &db,
                "SELECT COALESCE(MAX(worker_pid), 0) FROM trials WHERE state = 'running'",
            )
            .unwrap_or(0);
            pid > 0
        },
    );
    // SAFETY: SIGKILL to the worker process the sweep started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the retried trial completes, so the sweep succeeds"
    );
    let failed: Vec<(String,)> = rt().block_on(async {
        let s = Store::open_read_only(&db).await.unwrap();
        let r = sqlx::query_as("SELECT error FROM trial_attempts WHERE outcome = 'failed'")
            .fetch_all(s.pool())
            .await
            .unwrap();
        s.close().await;
        r
    });
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].0.contains("killed by signal 9"),
        "{}",
        failed[0].0
    );
    let t = trials(&db);
    assert!(t.iter().all(|t| t.1 == "complete"));
    assert_eq!(
        t.iter().filter(|t| t.2 == 2).count(),
        1,
        "one trial needed a second attempt: {t:?}"
    );
}

#[test]
fn ctrl_c_interrupts_running_trials_which_resume_later() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("interrupted", 80, "")).unwrap();
    let db = db_of(dir.path());
    let mut child = spawn(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    wait_for(
        "running trials with epochs",
        Duration::from_secs(120),
        || try_query_i64(&db, "SELECT COUNT(*) FROM epoch_metrics").unwrap_or(0) > 0,
    );
    // SAFETY: SIGINT to the orchestrator only (not its workers): it must stop them.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let t = trials(&db);
    assert!(
        t.iter().all(|t| t.1 == "waiting" || t.1 == "complete"),
        "{t:?}"
    );
    assert!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trial_attempts WHERE outcome = 'interrupted'"
        ) >= 1
    );
    // interrupted trials keep no partial rows and no counted attempt
    assert_eq!(query_i64(&db, "SELECT COUNT(*) FROM epoch_metrics e JOIN trials t ON t.id = e.trial_id WHERE t.state = 'waiting'"), 0);
    assert!(t.iter().filter(|t| t.1 == "waiting").all(|t| t.2 == 0));
    let o = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    assert!(o.status.success());
    assert!(trials(&db).iter().all(|t| t.1 == "complete"));
}

#[test]
fn a_diverging_trial_is_pruned_and_the_sweep_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let text = spec("diverge", 2, "model.init_std = [0.01, 100.0]")
        .replace("hidden = [64]", "hidden = [64]\ninit = \"normal\"")
        .replace(
            "batch_size = 16",
            "batch_size = 16\noptimizer = \"sgd\"\nlearning_rate = 1e9",
        );
    std::fs::write(dir.path().join("s.toml"), text).unwrap();
    let o = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "pruned trials are a normal ending: {out}"
    );
    let db = db_of(dir.path());
    assert!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE state = 'pruned' AND stop_reason = 'diverged'"
        ) >= 1,
        "{out}"
    );
    assert_eq!(
        query_i64(
            &db,
            "SELECT COUNT(*) FROM trials WHERE state IN ('waiting', 'running', 'failed')"
        ),
        0
    );
}

#[test]
fn spec_errors_exit_2_and_dry_run_runs_nothing() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        "name = \"x\"\n[data]\n[data.synthetic]\n[grid]\nmodel.dropout = [2.0]\n",
    )
    .unwrap();
    let o = run(dir.path(), &["run", "bad.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr)
        .contains("bad.toml:5: `grid.model.dropout` must be in [0, 1)"));
    std::fs::write(dir.path().join("s.toml"), spec("dry", 2, "")).unwrap();
    let o = run(dir.path(), &["run", "s.toml", "--dry-run"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(
        out.contains("4 trials (2 configurations × 2 seeds"),
        "{out}"
    );
    assert!(
        !dir.path().join("results").exists(),
        "a dry run writes nothing"
    );
}

/// A worker that panics (fault injected through SWEEP_FAULT_PANIC_SEED) fails its
/// trial with the cause, is retried up to --max-attempts, and the sweep exits 1
/// while the other trials complete.
#[test]
fn a_failing_trial_is_retried_then_recorded_and_the_exit_code_is_1() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("failing", 2, "")).unwrap();
    let o = sweep_cmd(
        dir.path(),
        &["run", "s.toml", "--jobs", "2", "--max-attempts", "2"],
    )
    .env("SWEEP_FAULT_PANIC_SEED", "2")
    .output()
    .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    let db = db_of(dir.path());
    let t = trials(&db);
    let states: Vec<(&str, i64)> = t.iter().map(|t| (t.1.as_str(), t.2)).collect();
    // seeds alternate: trials 2 and 4 have seed 2
    assert_eq!(
        states,
        vec![
            ("complete", 1),
            ("failed", 2),
            ("complete", 1),
            ("failed", 2)
        ]
    );
    let err: (String,) = rt().block_on(async {
        let s = Store::open_read_only(&db).await.unwrap();
        let r = sqlx::query_as("SELECT error FROM trials WHERE state = 'failed' LIMIT 1")
            .fetch_one(s.pool())
            .await
            .unwrap();
        s.close().await;
        r
    });
    assert!(
        err.0.contains("exit code 101") && err.0.contains("injected fault"),
        "{}",
        err.0
    );
    assert!(
        dir.path()
            .join("results/failing/trials/0002/attempt-1/worker.log")
            .is_file(),
        "the worker's stderr is kept"
    );
    // the next run retries nothing more: the limit is reached
    let again = run(
        dir.path(),
        &["run", "s.toml", "--jobs", "1", "--max-attempts", "2"],
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stdout).contains("0 failed ones retried"));
}

/// Settings that only the data can check (class weights per class, classes too
/// small to split) are errors before any trial runs, naming the spec line.
#[test]
fn data_dependent_settings_are_checked_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("images");
    for (c, v, n) in [("a", 40u8, 6u8), ("b", 120, 6), ("c", 220, 1)] {
        std::fs::create_dir_all(data.join(c)).unwrap();
        for i in 0..n {
            image::RgbImage::from_pixel(8, 8, image::Rgb([v, v.wrapping_add(i * 9), 255 - v]))
                .save(data.join(c).join(format!("{i}.png")))
                .unwrap();
        }
    }
    let spec = "name = \"checked\"\n[data]\nroot = \"images\"\nimage_size = 8\n[grid]\ntrain.class_weights = [\"none\", [1.0, 2.0]]\n";
    std::fs::write(dir.path().join("s.toml"), spec).unwrap();
    let o = run(dir.path(), &["run", "s.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("s.toml:6: `grid.train.class_weights` has 2 weights, but the data has 3 classes (a, b, c)"), "{err}");
    assert!(!dir.path().join("results/sweep.db").exists() || trials(&db_of(dir.path())).is_empty());
    std::fs::write(
        dir.path().join("s.toml"),
        spec.replace("[1.0, 2.0]", "[1.0, 2.0, 3.0]"),
    )
    .unwrap();
    let o = run(dir.path(), &["run", "s.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("s.toml:3: `data.root` class `c` has 1 image(s)"),
        "{err}"
    );
}

/// Every trial writes a TensorBoard log (read back through the CRC-checking
/// reader) and the sweep writes a self-contained HTML report.
#[test]
fn a_sweep_writes_tensorboard_logs_and_a_report() {
    use sweep_tensorboard::proto::{EventWhat, ValueKind};
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        spec("tb", 3, "") + "[logging]\ngradient_histograms = true\n",
    )
    .unwrap();
    let o = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("report: results/tb/report.html"), "{out}");
    let tb = dir.path().join("results/tb/tensorboard");
    let mut trials: Vec<_> = std::fs::read_dir(&tb)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    trials.sort();
    assert_eq!(trials, ["0001", "0002", "0003", "0004", "_experiment"]);
    for t in &trials[..4] {
        // each start of a trial logs into its own run (`attempt-K`)
        let files: Vec<_> = std::fs::read_dir(tb.join(t).join("attempt-1"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "one event file per trial: {files:?}");
        let events = sweep_tensorboard::read_events(&files[0]).unwrap();
        let mut scalars = std::collections::BTreeMap::<String, usize>::new();
        let mut other = std::collections::BTreeSet::new();
        for e in &events {
            if let Some(EventWhat::Summary(s)) = &e.what {
                for v in &s.value {
                    match &v.value {
                        Some(ValueKind::SimpleValue(_)) => {
                            *scalars.entry(v.tag.clone()).or_default() += 1
                        }
                        Some(ValueKind::Histo(h)) => {
                            assert_eq!(h.bucket.iter().sum::<f64>(), h.num, "{}", v.tag);
                            other.insert(v.tag.split('/').next().unwrap().to_string());
                        }
                        Some(ValueKind::Image(i)) => {
                            assert!(i.encoded_image_string.starts_with(b"\x89PNG"));
                            other.insert(v.tag.clone());
                        }
                        _ => {
                            other.insert(v.tag.clone());
                        }
                    }
                }
            }
        }
        for tag in [
            "loss/train",
            "loss/val",
            "accuracy/val",
            "val/macro_f1",
            "val/balanced_accuracy",
            "learning_rate",
        ] {
            assert_eq!(scalars.get(tag), Some(&3), "{t}: {tag} in {scalars:?}");
        }
        // diagnostics: batch-loss spread per epoch; layer health before the
        // first update (step 0) and after epoch 1 (step 1)
        assert_eq!(
            scalars.get("stability/batch_loss_std"),
            Some(&3),
            "{scalars:?}"
        );
        assert_eq!(scalars.get("health/loss"), Some(&2), "{scalars:?}");
        assert_eq!(
            scalars.get("health/output/gradient_norm"),
            Some(&2),
            "{scalars:?}"
        );
        assert!(
            scalars
                .iter()
                .any(|(k, n)| k.starts_with("health/hidden0/") && *n == 2),
            "{scalars:?}"
        );
        for tag in [
            "weights",
            "gradients",
            "confusion_matrix",
            "validation_images",
            "config",
            "classification_report",
            "_hparams_/session_start_info",
            "_hparams_/session_end_info",
        ] {
            assert!(other.contains(tag), "{t}: {tag} missing from {other:?}");
        }
    }
    let html = std::fs::read_to_string(dir.path().join("results/tb/report.html")).unwrap();
    for needle in [
        "Leaderboard",
        "Main effects",
        "Learning curves",
        "What the best configuration gets wrong",
        "Where training stopped",
        "Provenance",
        "<svg",
        "model.dropout=0.5",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    assert!(
        !html.contains("src=") && !html.contains("http"),
        "the report must be self-contained"
    );
    // `sweep report` rewrites it on demand
    let o = run(dir.path(), &["report", "tb", "-o", "again.html"]);
    assert!(o.status.success());
    assert!(std::fs::read_to_string(dir.path().join("again.html"))
        .unwrap()
        .contains("Leaderboard"));
}

/// A second Ctrl-C quits at once: nothing is corrupted, and the next run reclaims
/// what was running and completes.
#[test]
fn a_second_ctrl_c_quits_at_once_without_corruption() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("twice", 200, "")).unwrap();
    let db = db_of(dir.path());
    let mut child = spawn(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    wait_for(
        "running trials with epochs",
        Duration::from_secs(120),
        || try_query_i64(&db, "SELECT COUNT(*) FROM epoch_metrics").unwrap_or(0) > 0,
    );
    // SAFETY: two SIGINTs to the orchestrator.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(5));
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    assert!(objectives_ok(&db));
    let o = run(dir.path(), &["run", "s.toml", "--jobs", "2"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(trials(&db).iter().all(|t| t.1 == "complete"));
}

fn objectives_ok(db: &Path) -> bool {
    rt().block_on(async {
        let s = Store::open_read_only(db).await.unwrap();
        let ok = s.integrity_check().await.unwrap() == "ok";
        s.close().await;
        ok
    })
}

/// A second `sweep run` of a sweep that is running is refused and changes nothing.
#[test]
fn a_second_run_of_a_running_sweep_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("busy", 200, "")).unwrap();
    let db = db_of(dir.path());
    let mut first = spawn(dir.path(), &["run", "s.toml", "--jobs", "1"]);
    wait_for("a running trial", Duration::from_secs(120), || {
        try_trials(&db)
            .unwrap_or_default()
            .iter()
            .any(|t| t.1 == "running")
    });
    let second = run(dir.path(), &["run", "s.toml", "--jobs", "1"]);
    assert_eq!(second.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("is already being run by process"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert!(first.wait().unwrap().success());
    assert!(trials(&db).iter().all(|t| t.1 == "complete" && t.2 == 1));
}
