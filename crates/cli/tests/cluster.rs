//! Sweep on a real Slurm cluster with a real PostgreSQL server as the shared store
//! (started by `scripts/cluster-up`, which `.ci/run` calls): a job array of
//! workers whose results equal a local run's, an array task frozen mid-trial
//! whose trial is reclaimed after its lease and which `scancel` then ends, and
//! workers started by hand next to a reader. Without a cluster: a worker killed
//! with SIGKILL mid-trial, its trial reclaimed by another worker on the same
//! SQLite file. Every check reads the database.
//!
//! Needs `SWEEP_TEST_PG` (a postgres:// URL on a server where this user may
//! create databases) and `SWEEP_TEST_SLURM=1` (sbatch, squeue, scancel on PATH,
//! jobs running on this machine). Without them these tests are skipped with a
//! note, unless `SWEEP_REQUIRE_PG=1` (set by `.ci/run`) makes that a failure.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use sweep_orchestrator::store::{create_postgres_database, DbLocation, Store};

fn sweep_cmd(dir: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.args(args).current_dir(dir).env_remove("SWEEP_DB");
    c
}

fn run(dir: &Path, args: &[&str]) -> Output {
    sweep_cmd(dir, args).output().unwrap()
}

fn text(o: &[u8]) -> String {
    String::from_utf8_lossy(o).into_owned()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A fresh PostgreSQL database for this test, or None when there is no server.
fn postgres(test: &str) -> Option<String> {
    let Ok(base) = std::env::var("SWEEP_TEST_PG") else {
        assert!(
            std::env::var("SWEEP_REQUIRE_PG").is_err(),
            "SWEEP_REQUIRE_PG is set but SWEEP_TEST_PG is not (run scripts/cluster-up)"
        );
        visible(&format!(
            "skipped: {test}: no PostgreSQL (SWEEP_TEST_PG; scripts/cluster-up starts one)"
        ));
        return None;
    };
    let name = format!("sweep_cluster_{test}_{}", std::process::id());
    Some(
        rt().block_on(create_postgres_database(&base, &name))
            .unwrap_or_else(|e| panic!("SWEEP_TEST_PG={base}: {e}")),
    )
}

/// The cluster tests share one small Slurm node (and CI's two cores): they run
/// one at a time, so that each job array gets the CPUs its timing assumes.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// PostgreSQL and Slurm both, or None (skipped).
fn cluster(test: &str) -> Option<String> {
    if std::env::var("SWEEP_TEST_SLURM").is_err() {
        assert!(
            std::env::var("SWEEP_REQUIRE_PG").is_err(),
            "SWEEP_REQUIRE_PG is set but SWEEP_TEST_SLURM is not (run scripts/cluster-up)"
        );
        visible(&format!(
            "skipped: {test}: no Slurm (SWEEP_TEST_SLURM=1; scripts/cluster-up starts one)"
        ));
        return None;
    }
    postgres(test)
}

fn spec(name: &str, epochs: usize, per_class: usize) -> String {
    sized_spec(name, epochs, per_class, 12, 32)
}

fn sized_spec(name: &str, epochs: usize, per_class: usize, image: usize, hidden: usize) -> String {
    format!(
        r#"
name = "{name}"
seeds = [1, 2]
[data]
image_size = {image}
[data.synthetic]
classes = 3
per_class = {per_class}
image_size = {image}
[model]
hidden = [{hidden}]
[train]
epochs = {epochs}
batch_size = 16
[grid]
model.dropout = [0.0, 0.5]
train.weight_decay = [0.0, 0.01]
[logging]
histogram_every = 0
"#
    )
}

/// Rows of a query on a database (a postgres:// URL or a SQLite file path).
fn query<T>(url: &str, sql: &str) -> Vec<T>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    rt().block_on(async {
        let s = Store::open_read_only(&DbLocation::parse(url).unwrap())
            .await
            .unwrap();
        let rows = sqlx::query_as::<_, T>(sql)
            .fetch_all(s.pool())
            .await
            .unwrap();
        s.close().await;
        rows
    })
}

/// Every trial complete, claimed once, with exactly one attempt that completed.
fn assert_each_trial_once(url: &str, n: i64) {
    let rows: Vec<(i64, String, i64)> = query(
        url,
        "SELECT number, state, attempts FROM trials ORDER BY number",
    );
    assert_eq!(rows.len() as i64, n, "{rows:?}");
    for (number, state, attempts) in &rows {
        assert_eq!(
            (state.as_str(), *attempts),
            ("complete", 1),
            "trial {number}"
        );
    }
    let done: Vec<(i64, i64)> = query(
        url,
        "SELECT trial_id, COUNT(*) FROM trial_attempts WHERE outcome = 'complete' GROUP BY trial_id ORDER BY trial_id",
    );
    assert_eq!(done.len() as i64, n);
    assert!(
        done.iter().all(|(_, c)| *c == 1),
        "a trial completed twice: {done:?}"
    );
    let (unfinished,): (i64,) = query(
        url,
        "SELECT COUNT(*) FROM trial_attempts WHERE ended_at IS NULL",
    )[0];
    assert_eq!(unfinished, 0);
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn job_id(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("submitted Slurm job array "))
        .and_then(|r| r.split(':').next())
        .unwrap_or_else(|| panic!("no job id in:\n{stdout}"))
        .to_string()
}

fn squeue() -> String {
    text(
        &Command::new("squeue")
            .args(["-h", "-o", "%i %j %T %R"])
            .output()
            .unwrap()
            .stdout,
    )
}

#[test]
fn slurm_is_refused_on_sqlite_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("refuse", 1, 10)).unwrap();
    let o = run(dir.path(), &["run", "s.toml", "--executor", "slurm"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("PostgreSQL") && err.contains("network file systems"),
        "{err}"
    );
    assert!(
        err.contains("results/sweep.db"),
        "names the database: {err}"
    );
    assert!(!dir.path().join("results").exists(), "nothing is written");
}

#[test]
fn a_job_array_runs_every_trial_once_and_matches_a_local_run() {
    let _one = serial();
    let Some(url) = cluster("array") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), spec("arr", 2, 30)).unwrap();
    let local = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            "local.db",
            "--results",
            "res-local",
            "--jobs",
            "2",
            "--threads",
            "1",
        ],
    );
    assert!(local.status.success(), "{}", text(&local.stderr));

    // The Slurm run in the background; the test watches squeue meanwhile.
    let child = sweep_cmd(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res-slurm",
            "--executor",
            "slurm",
            "--slurm-array-size",
            "3",
            "--slurm-array-parallelism",
            "2",
            "--slurm-mem",
            "400M",
            "--threads",
            "1",
            "--lease-seconds",
            "10",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    let watcher = std::thread::spawn(|| {
        let mut seen = Vec::new();
        for _ in 0..600 {
            let q = squeue();
            for l in q.lines().filter(|l| l.contains("sweep-arr")) {
                if !seen.contains(&l.to_string()) {
                    seen.push(l.to_string());
                }
            }
            if !seen.is_empty() && q.trim().is_empty() {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        seen
    });
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    let job = job_id(&stdout);
    let seen = watcher.join().unwrap();
    eprintln!("squeue lines seen:\n{}", seen.join("\n"));
    assert!(
        seen.iter()
            .any(|l| l.starts_with(&format!("{job}_")) && l.contains("RUNNING")),
        "array tasks ran under Slurm: {seen:?}"
    );
    let control = text(
        &Command::new("scontrol")
            .args(["show", "job", &job])
            .output()
            .unwrap()
            .stdout,
    );
    eprintln!("scontrol show job {job}:\n{control}");
    assert!(
        stdout.contains("8 complete, 0 pruned, 0 failed"),
        "{stdout}"
    );
    assert_each_trial_once(&url, 8);
    // three workers (one per array task), each its own session
    let (sessions,): (i64,) = query(
        &url,
        "SELECT COUNT(DISTINCT session_id) FROM trial_attempts",
    )[0];
    assert!((1..=3).contains(&sessions), "{sessions}");

    // the same study, whichever executor ran it
    let cmp = |db: &str| {
        let o = run(d, &["compare", "arr", "--db", db]);
        assert!(o.status.success(), "{}", text(&o.stderr));
        text(&o.stdout)
    };
    let (a, b) = (cmp("local.db"), cmp(&url));
    eprintln!("compare, local run:\n{a}\ncompare, Slurm run:\n{b}");
    assert_eq!(a, b);
    assert!(a.starts_with("rank") && a.contains("dropout"), "{a}");
    assert!(stdout.contains("report: "), "{stdout}");
    assert!(d.join("res-slurm/arr/report.html").is_file());
    // the workers wrote TensorBoard logs and their own logs in the shared folder
    assert!(d
        .join("res-slurm/arr/tensorboard/0001/attempt-1")
        .read_dir()
        .unwrap()
        .next()
        .is_some());
    let logs: Vec<_> = d.join("res-slurm/arr/slurm").read_dir().unwrap().collect();
    assert!(logs.len() >= 2, "worker script and logs: {logs:?}");
    // and a second run finds nothing to do
    let again = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res-slurm",
            "--executor",
            "slurm",
        ],
    );
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        !text(&again.stdout).contains("submitted"),
        "{}",
        text(&again.stdout)
    );
}

#[test]
fn a_postgresql_restart_mid_sweep_is_ridden_out_and_every_trial_completes_once() {
    let _one = serial();
    let Some(url) = cluster("restart") else {
        return;
    };
    let Ok(restart) = std::env::var("SWEEP_TEST_PG_RESTART") else {
        assert!(
            std::env::var("SWEEP_REQUIRE_PG").is_err(),
            "SWEEP_REQUIRE_PG is set but SWEEP_TEST_PG_RESTART is not (run scripts/cluster-up)"
        );
        visible("skipped: restart: no SWEEP_TEST_PG_RESTART (scripts/cluster-up sets it)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), sized_spec("rst", 8, 60, 16, 64)).unwrap();
    let child = sweep_cmd(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res",
            "--executor",
            "slurm",
            "--slurm-array-size",
            "2",
            "--slurm-array-parallelism",
            "2",
            "--slurm-mem",
            "400M",
            "--threads",
            "1",
            "--lease-seconds",
            "30",
        ],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // (0 until the sweep has created its tables)
    let complete = || {
        rt().block_on(async {
            let s = Store::open_read_only(&DbLocation::parse(&url).unwrap())
                .await
                .ok()?;
            let n: Option<(i64,)> =
                sqlx::query_as("SELECT COUNT(*) FROM trials WHERE state = 'complete'")
                    .fetch_one(s.pool())
                    .await
                    .ok();
            s.close().await;
            n.map(|n| n.0)
        })
        .unwrap_or(0)
    };
    wait_for(
        "a first trial to complete",
        Duration::from_secs(180),
        || complete() >= 1,
    );
    let before = complete();
    // The server goes away (every connection cut) and comes back.
    let t = Instant::now();
    let status = Command::new("sh")
        .args(["-c", &restart])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{restart}");
    eprintln!(
        "PostgreSQL restarted in {:.1} s with {before} of 8 trials complete",
        t.elapsed().as_secs_f64()
    );
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(before < 8, "the restart came after the sweep: {before}");
    assert!(
        stdout.contains("8 complete, 0 pruned, 0 failed"),
        "{stdout}"
    );
    assert_each_trial_once(&url, 8);
}

#[test]
fn a_silent_array_task_loses_its_trial_after_its_lease_then_scancel_ends_it() {
    let _one = serial();
    let Some(url) = cluster("scancel") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Trials of a few seconds each, so that one is surely mid-flight when killed.
    std::fs::write(d.join("s.toml"), sized_spec("kill", 8, 200, 32, 512)).unwrap();
    let o = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res",
            "--executor",
            "slurm",
            "--detach",
            "--slurm-array-size",
            "2",
            "--slurm-array-parallelism",
            "2",
            "--slurm-mem",
            "400M",
            "--threads",
            "1",
            "--lease-seconds",
            "4",
        ],
    );
    let stdout = text(&o.stdout);
    assert!(o.status.success(), "{stdout}\n{}", text(&o.stderr));
    let job = job_id(&stdout);
    // Wait until both workers are mid-trial. (Slurm cannot kill a task without
    // warning: `scancel`, even with --signal=KILL, sends SIGTERM first, which a
    // worker answers by handing its trials back at once. A worker that stops
    // beating without a word, as on a hung node or across a network partition,
    // is what the lease is for, so the test freezes one.)
    wait_for("two trials running", Duration::from_secs(120), || {
        let (n,): (i64,) = query(
            &url,
            "SELECT COUNT(*) FROM trials t JOIN epoch_metrics e ON e.trial_id = t.id AND e.epoch = 1 AND e.name = 'loss' AND e.split = 'train' WHERE t.state = 'running'",
        )[0];
        n >= 2
    });
    let before = squeue();
    let victim: Vec<(i64, i64)> = query(
        &url,
        "SELECT t.number, s.pid FROM trials t JOIN sessions s ON s.id = t.session_id WHERE t.state = 'running' ORDER BY t.number",
    );
    // Freeze the first task (worker and trial, as a hung node or a network
    // partition would): Slurm still shows it RUNNING, but it stops beating.
    let scancel = |args: &[&str]| {
        let k = Command::new("scancel").args(args).output().unwrap();
        assert!(k.status.success(), "scancel {args:?}: {}", text(&k.stderr));
    };
    scancel(&["--full", "--signal=STOP", &format!("{job}_0")]);
    // Which worker is frozen: its process is in state T.
    let stopped = |pid: i64| {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|st| {
                st.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('T')
            })
            .unwrap_or(false)
    };
    let mut frozen_pid = None;
    wait_for(
        "the first task's worker to stop",
        Duration::from_secs(30),
        || {
            frozen_pid = victim.iter().map(|v| v.1).find(|p| stopped(*p));
            frozen_pid.is_some()
        },
    );
    let frozen_pid = frozen_pid.unwrap();
    wait_for(
        "the frozen worker's trial to be reclaimed",
        Duration::from_secs(120),
        || {
            let (n,): (i64,) = query(
                &url,
                "SELECT COUNT(*) FROM trial_attempts WHERE outcome = 'orphaned'",
            )[0];
            n == 1
        },
    );
    let frozen = squeue();
    // Now cancel it: Slurm sends SIGCONT and SIGTERM; the worker wakes up holding
    // a trial that is no longer its own, and its late result must not land.
    scancel(&[&format!("{job}_0")]);
    wait_for(
        "the cancelled task to leave squeue",
        Duration::from_secs(60),
        || !squeue().contains(&format!("{job}_0 ")),
    );
    eprintln!(
        "squeue before:\n{before}running trials and their workers' pids: {victim:?}\nsqueue with task 0 frozen (SIGSTOP):\n{frozen}squeue after scancel {job}_0:\n{}",
        squeue()
    );
    wait_for("every trial to finish", Duration::from_secs(300), || {
        let (n,): (i64,) = query(
            &url,
            "SELECT COUNT(*) FROM trials WHERE state IN ('complete', 'pruned', 'failed')",
        )[0];
        n == 8
    });
    wait_for("the array to end", Duration::from_secs(60), || {
        !squeue().contains(&format!("{job}_"))
    });
    assert_each_trial_once(&url, 8);
    let orphaned: Vec<(i64, String, i64)> = query(
        &url,
        "SELECT t.number, a.error, s.pid FROM trial_attempts a JOIN trials t ON t.id = a.trial_id JOIN sessions s ON s.id = a.session_id WHERE a.outcome = 'orphaned'",
    );
    eprintln!(
        "orphaned attempts (trial, why, worker pid): {orphaned:?}; frozen worker {frozen_pid}"
    );
    assert_eq!(
        orphaned.len(),
        1,
        "the frozen worker's trial, reclaimed once"
    );
    assert_eq!(
        orphaned[0].2, frozen_pid,
        "only the frozen worker lost a trial"
    );
    assert!(orphaned[0].1.contains("heartbeats"), "{orphaned:?}");
    let sessions: Vec<(i64, Option<String>)> =
        query(&url, "SELECT pid, end_reason FROM sessions ORDER BY id");
    eprintln!("sessions (pid, end): {sessions:?}");
    assert!(
        sessions.contains(&(frozen_pid, Some("interrupted".to_string()))),
        "the cancelled worker stopped on SIGTERM: {sessions:?}"
    );
    assert!(
        sessions.iter().any(|s| s.1.as_deref() == Some("finished")),
        "{sessions:?}"
    );
    let log =
        std::fs::read_to_string(d.join(format!("res/kill/slurm/worker-{job}_0.out"))).unwrap();
    eprintln!("worker {job}_0's log:\n{log}");
    assert!(
        log.contains("dropped trial"),
        "the late result was refused: {log}"
    );
    let st = run(d, &["status", "kill", "--db", &url]);
    assert!(
        text(&st.stdout).contains("complete 8"),
        "{}",
        text(&st.stdout)
    );
}

#[test]
fn hand_started_workers_share_a_sweep_while_a_reader_follows() {
    let _one = serial();
    let Some(url) = postgres("workers") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), spec("hand", 3, 30)).unwrap();
    let rec = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res",
            "--executor",
            "none",
        ],
    );
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    assert!(
        text(&rec.stdout).contains("sweep worker --db"),
        "{}",
        text(&rec.stdout)
    );

    // a worker that cannot see the results folder says which path
    let blind = run(
        d,
        &[
            "worker",
            "--db",
            &url,
            "--sweep",
            "hand",
            "--results",
            "elsewhere",
        ],
    );
    assert!(!blind.status.success());
    let e = text(&blind.stderr);
    assert!(
        e.contains("elsewhere/hand/manifest.json") && e.contains("shared"),
        "{e}"
    );

    let worker = || {
        sweep_cmd(
            d,
            &[
                "worker",
                "--db",
                &url,
                "--sweep",
                "hand",
                "--results",
                "res",
                "--jobs",
                "1",
                "--threads",
                "1",
                "--lease-seconds",
                "10",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (w1, w2) = (worker(), worker());
    let reader_url = url.clone();
    let reader_dir = d.to_path_buf();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = stop.clone();
    let reader = std::thread::spawn(move || {
        let (mut reads, mut saw_workers) = (0, 0);
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            let o = run(&reader_dir, &["status", "hand", "--db", &reader_url]);
            assert!(o.status.success(), "status failed: {}", text(&o.stderr));
            let out = text(&o.stdout);
            assert!(out.contains("sweep `hand`: 8 trials"), "{out}");
            if out.contains("workers not ended: ") && out.contains("last heartbeat") {
                saw_workers += 1;
            }
            reads += 1;
        }
        (reads, saw_workers)
    });
    let (o1, o2) = (
        w1.wait_with_output().unwrap(),
        w2.wait_with_output().unwrap(),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (reads, saw_workers) = reader.join().unwrap();
    for o in [&o1, &o2] {
        assert!(
            o.status.success(),
            "{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
        assert!(!text(&o.stderr).contains("error"), "{}", text(&o.stderr));
    }
    assert!(reads >= 2, "the reader ran alongside: {reads}");
    assert!(saw_workers >= 1, "status lists the live workers");
    assert_each_trial_once(&url, 8);
    // both workers took part
    let (sessions,): (i64,) = query(
        &url,
        "SELECT COUNT(DISTINCT session_id) FROM trial_attempts",
    )[0];
    assert_eq!(sessions, 2);
}

/// A TPE search with ASHA recorded on PostgreSQL and run by two hand-started
/// workers: each proposes from the history it reads, proposal numbers are
/// unique, no configuration is run twice, every trial ends once (complete or
/// pruned), and the budget is met exactly.
#[test]
fn two_workers_share_a_search_on_postgres() {
    let _one = serial();
    let Some(url) = postgres("search") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let spec = r#"
name = "shared-search"
seeds = [1, 2]
[data]
image_size = 12
[data.synthetic]
classes = 3
per_class = 30
image_size = 12
[model]
hidden = [32]
[train]
epochs = 6
batch_size = 16
[search]
method = "tpe"
trials = 8
startup_trials = 3
[space]
train.learning_rate = { log_uniform = [1e-4, 3e-1] }
model.dropout = { uniform = [0.0, 0.6] }
[pruner]
method = "asha"
min_epochs = 1
reduction_factor = 2
[logging]
histogram_every = 0
"#;
    std::fs::write(d.join("s.toml"), spec).unwrap();
    let rec = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res",
            "--executor",
            "none",
        ],
    );
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    let worker = || {
        sweep_cmd(
            d,
            &[
                "worker",
                "--db",
                &url,
                "--sweep",
                "shared-search",
                "--results",
                "res",
                "--jobs",
                "1",
                "--threads",
                "1",
                "--lease-seconds",
                "10",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (w1, w2) = (worker(), worker());
    for o in [
        w1.wait_with_output().unwrap(),
        w2.wait_with_output().unwrap(),
    ] {
        assert!(
            o.status.success(),
            "{}\n{}",
            text(&o.stdout),
            text(&o.stderr)
        );
    }
    let proposals: Vec<(i64, String)> = query(
        &url,
        "SELECT number, params_json FROM proposals ORDER BY number",
    );
    assert_eq!(
        proposals.iter().map(|p| p.0).collect::<Vec<_>>(),
        (0..8).collect::<Vec<_>>()
    );
    let mut configs: Vec<&String> = proposals.iter().map(|p| &p.1).collect();
    configs.sort();
    configs.dedup();
    assert_eq!(configs.len(), 8, "no configuration proposed twice");
    let trials: Vec<(i64, i64, String, i64, Option<i64>)> = query(
        &url,
        "SELECT proposal, seed, state, attempts, stop_epoch FROM trials ORDER BY proposal, seed",
    );
    assert_eq!(trials.len(), 16, "{trials:?}");
    for (p, seed, state, attempts, stop) in &trials {
        // each ran once, or never: pruned with its configuration before it started
        assert!(
            ((state == "complete" || state == "pruned") && *attempts == 1)
                || (state == "pruned" && *attempts == 0 && *stop == Some(0)),
            "proposal {p} seed {seed}: {state}, {attempts} attempts, stopped at {stop:?}"
        );
    }
    let ran = trials.iter().filter(|t| t.3 == 1).count();
    let ended: Vec<(i64, i64)> = query(
        &url,
        "SELECT trial_id, COUNT(*) FROM trial_attempts WHERE ended_at IS NOT NULL GROUP BY trial_id",
    );
    assert_eq!(ended.len(), ran);
    assert!(ended.iter().all(|(_, n)| *n == 1), "{ended:?}");
    let (sessions,): (i64,) = query(
        &url,
        "SELECT COUNT(DISTINCT session_id) FROM trial_attempts",
    )[0];
    assert_eq!(sessions, 2, "both workers ran trials");
}

#[test]
fn a_worker_killed_outright_loses_its_trial_after_its_lease() {
    // No cluster needed: two `sweep worker` processes share a SQLite file on this
    // machine. The first is killed with SIGKILL mid-trial (no chance to hand
    // anything back, as on a node crash or an out-of-memory kill); the second
    // takes its trial over once the first's lease has lapsed.
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("s.toml"), sized_spec("hard", 6, 150, 32, 256)).unwrap();
    let rec = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            "r.db",
            "--results",
            "res",
            "--executor",
            "none",
        ],
    );
    assert!(rec.status.success(), "{}", text(&rec.stderr));
    let db = d.join("r.db").display().to_string();
    let worker = || {
        sweep_cmd(
            d,
            &[
                "worker",
                "--db",
                "r.db",
                "--sweep",
                "hard",
                "--results",
                "res",
                "--jobs",
                "1",
                "--threads",
                "1",
                "--lease-seconds",
                "3",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
    };
    let mut a = worker();
    let a_pid = a.id() as i64;
    wait_for(
        "the first worker mid-trial",
        Duration::from_secs(120),
        || {
            let (n,): (i64,) = query(
            &db,
            "SELECT COUNT(*) FROM trials t JOIN epoch_metrics e ON e.trial_id = t.id AND e.epoch = 1 AND e.name = 'loss' AND e.split = 'train' WHERE t.state = 'running'",
        )[0];
            n >= 1
        },
    );
    a.kill().unwrap();
    a.wait().unwrap();
    let lost: Vec<(i64,)> = query(&db, "SELECT number FROM trials WHERE state = 'running'");
    assert_eq!(
        lost.len(),
        1,
        "the killed worker's trial is left running: {lost:?}"
    );
    let b = worker().wait_with_output().unwrap();
    let out = text(&b.stdout);
    assert!(b.status.success(), "{out}\n{}", text(&b.stderr));
    assert_each_trial_once(&db, 8);
    let orphaned: Vec<(i64, i64)> = query(
        &db,
        "SELECT t.number, s.pid FROM trial_attempts a JOIN trials t ON t.id = a.trial_id JOIN sessions s ON s.id = a.session_id WHERE a.outcome = 'orphaned'",
    );
    assert_eq!(orphaned, vec![(lost[0].0, a_pid)], "{out}");
    let ends: Vec<(i64, Option<String>)> =
        query(&db, "SELECT pid, end_reason FROM sessions ORDER BY id");
    assert!(
        ends.contains(&(a_pid, None)),
        "the killed worker never ended its session: {ends:?}"
    );
    assert_eq!(
        ends.last().unwrap().1.as_deref(),
        Some("finished"),
        "{ends:?}"
    );
}

/// A line on the real standard error, past the test harness's capture, so that
/// a skip shows in `cargo test`'s output even though the test passes.
fn visible(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// With `--executor slurm`, the process that follows the job array logs to
/// MLflow (the workers never talk to it): every trial of the array is one
/// finished run under the sweep's parent, read back with MLflow's own client,
/// and `sweep mlflow sync` on the PostgreSQL database then creates nothing.
#[test]
fn a_followed_job_array_is_logged_to_mlflow_once_per_trial() {
    let _one = serial();
    let (Ok(mlflow), Ok(py)) = (
        std::env::var("SWEEP_TEST_MLFLOW"),
        std::env::var("SWEEP_MLFLOW_PYTHON"),
    ) else {
        assert!(
            std::env::var("SWEEP_REQUIRE_MLFLOW").is_err(),
            "SWEEP_REQUIRE_MLFLOW is set but SWEEP_TEST_MLFLOW is not (run scripts/mlflow-up)"
        );
        visible("skipped: a_followed_job_array_is_logged_to_mlflow_once_per_trial: no MLflow (SWEEP_TEST_MLFLOW; scripts/mlflow-up starts one)");
        return;
    };
    let Some(url) = cluster("mlflow") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let name = format!("arr-mlflow-{}", std::process::id());
    std::fs::write(d.join("s.toml"), spec(&name, 2, 30)).unwrap();
    let o = run(
        d,
        &[
            "run",
            "s.toml",
            "--db",
            &url,
            "--results",
            "res",
            "--executor",
            "slurm",
            "--slurm-array-size",
            "2",
            "--slurm-mem",
            "400M",
            "--threads",
            "1",
            "--lease-seconds",
            "10",
            "--mlflow",
            &mlflow,
        ],
    );
    let out = format!("{}\n{}", text(&o.stdout), text(&o.stderr));
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("MLflow: all 8 started trials of `{name}` are in")),
        "{out}"
    );
    let rb = common::mlflow::readback_with(&py, &mlflow, &name, &[], Some("val.loss"));
    common::mlflow::none_deleted(&rb);
    let parent = common::mlflow::parents(&rb);
    assert_eq!(parent.len(), 1);
    assert_eq!(parent[0]["status"], "FINISHED");
    let kids = common::mlflow::children(&rb);
    let keys = common::mlflow::trial_keys(&kids);
    assert_eq!((kids.len(), keys.len()), (8, 8));
    let stored: Vec<(String,)> = query(&url, "SELECT key FROM trials ORDER BY key");
    assert_eq!(
        keys,
        stored.iter().map(|k| k.0.as_str()).collect::<Vec<_>>()
    );
    for r in &kids {
        assert_eq!(r["status"], "FINISHED");
        assert_eq!(r["parent_run_id"], parent[0]["run_id"]);
        assert_eq!(r["history"]["val.loss"].as_array().unwrap().len(), 2);
        let arts = r["artifacts"].as_array().unwrap();
        assert!(arts.iter().any(|a| a == "best.safetensors"), "{arts:?}");
    }
    let again = run(
        d,
        &["mlflow", "sync", &name, "--db", &url, "--uri", &mlflow],
    );
    let out = format!("{}\n{}", text(&again.stdout), text(&again.stderr));
    assert!(again.status.success(), "{out}");
    assert!(out.contains("(0 runs created by this command)"), "{out}");
}
