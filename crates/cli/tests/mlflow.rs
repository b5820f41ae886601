//! MLflow against a real tracking server (`mlflow server`, SQLite backend, on
//! 127.0.0.1), read back with MLflow's own Python client
//! (scripts/mlflow-readback.py). `scripts/mlflow-up` (run by `.ci/run`) creates
//! the virtual environment (cached between runs) and starts one server:
//! SWEEP_TEST_MLFLOW is its address and SWEEP_MLFLOW_PYTHON the environment's
//! python, with which the outage test starts (and kills) servers of its own.
//! Without them these tests are skipped with a notice, unless
//! SWEEP_REQUIRE_MLFLOW=1 (set by `.ci/run`) makes that a failure.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::mlflow::{children, none_deleted, parents, readback, readback_with, trial_keys};

fn python(test: &str) -> Option<String> {
    match std::env::var("SWEEP_MLFLOW_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            assert!(
                std::env::var("SWEEP_REQUIRE_MLFLOW").is_err(),
                "SWEEP_REQUIRE_MLFLOW is set but SWEEP_MLFLOW_PYTHON is not (run scripts/mlflow-up)"
            );
            // on the real standard error, past the test harness's capture
            // (scripts/test-without-shared looks for it)
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {test}: no MLflow (SWEEP_MLFLOW_PYTHON; scripts/mlflow-up installs and starts one)"
            );
            None
        }
    }
}

/// An `mlflow server` of this test, in its own process group, killed with it.
struct Server {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    python: String,
    /// HTTPS with this authority's certificate (`ca.pem`, `cert.pem`,
    /// `key.pem` in `dir`), and MLflow's basic-auth app with this admin password.
    tls: bool,
    admin_password: Option<String>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    fn start(python: &str, dir: &Path) -> Server {
        Server::start_with(python, dir, false, None)
    }

    fn start_with(python: &str, dir: &Path, tls: bool, admin_password: Option<&str>) -> Server {
        let mut s = Server {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
            python: python.to_string(),
            tls,
            admin_password: admin_password.map(str::to_string),
        };
        s.restart();
        s
    }

    fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// Starts it (again, on the same port and store) and waits for /health.
    fn restart(&mut self) {
        std::fs::create_dir_all(self.dir.join("artifacts")).unwrap();
        let log = std::fs::File::create(self.dir.join("server.log")).unwrap();
        let mut cmd = Command::new(&self.python);
        cmd.args(["-m", "mlflow", "server"]);
        if self.tls {
            let (k, c) = (self.dir.join("key.pem"), self.dir.join("cert.pem"));
            cmd.arg("--uvicorn-opts").arg(format!(
                "--ssl-keyfile {} --ssl-certfile {}",
                k.display(),
                c.display()
            ));
        }
        if let Some(pw) = &self.admin_password {
            cmd.args(["--app-name", "basic-auth"])
                .env("MLFLOW_AUTH_ADMIN_PASSWORD", pw)
                .env("MLFLOW_FLASK_SERVER_SECRET_KEY", "sweep-test-secret");
        }
        let child = cmd
            .args(["--workers", "1", "--host", "127.0.0.1"])
            .args(["--port", &self.port.to_string()])
            .arg("--backend-store-uri")
            .arg(format!(
                "sqlite:///{}",
                self.dir.join("mlflow.db").display()
            ))
            .arg("--artifacts-destination")
            .arg(self.dir.join("artifacts"))
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .current_dir(&self.dir)
            .process_group(0)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let mut t = sweep_mlflow::Tracking::new(
            &self.url(),
            sweep_mlflow::Credentials::None,
            sweep_mlflow::Patience {
                tries: 1,
                ..Default::default()
            },
        )
        .unwrap();
        if self.tls {
            t = t.with_ca_file(&self.dir.join("ca.pem")).unwrap();
        }
        let t0 = Instant::now();
        while t.health().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(90),
                "mlflow server did not answer /health in 90 s: {}",
                std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `kill -9` of the whole server (its gunicorn/uvicorn workers too).
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the process group this test started.
            unsafe { libc::kill(-(c.id() as i32), libc::SIGKILL) };
            let _ = c.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sweep_cmd(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sweep"));
    c.current_dir(dir)
        .env_remove("SWEEP_DB")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD");
    c
}

fn spec(name: &str, seeds: &str, epochs: usize, per_class: usize, extra: &str) -> String {
    format!(
        r#"
name = "{name}"
seeds = {seeds}
objective = "val.macro_f1"
{extra}
[data]
image_size = 16
[data.synthetic]
classes = 3
per_class = {per_class}
image_size = 16
[model]
hidden = [32]
[train]
epochs = {epochs}
batch_size = 16
[grid]
model.dropout = [0.0, 0.5]
"#
    )
}

/// A unique name: a shared server outlives one test run.
fn unique(base: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{base}-{}-{nanos}", std::process::id())
}

/// `sweep sql` rows as CSV lines.
fn sql(dir: &Path, query: &str) -> Vec<String> {
    let o = sweep_cmd(dir)
        .args(["sql", query, "--format", "csv"])
        .output()
        .unwrap();
    let out = common::stdout(&o);
    out.lines().skip(1).map(str::to_string).collect()
}

/// A sweep logged live: experiment, parent and children, every param, every
/// epoch's metrics (equal to the database's), statuses (a trial that failed
/// twice is one FAILED run on its second attempt), artifacts; then `sync` and a
/// rerun of the sweep create nothing new.
#[test]
fn a_sweep_logged_live_reads_back_with_mlflows_own_client() {
    let Some(py) = python("a_sweep_logged_live_reads_back_with_mlflows_own_client") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // the server of .ci/run, or one of this test's own
    let own;
    let url = match std::env::var("SWEEP_TEST_MLFLOW") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            own = Server::start(&py, &dir.path().join("server"));
            own.url()
        }
    };
    let name = unique("live");
    std::fs::write(
        dir.path().join("s.toml"),
        spec(&name, "[1, 2, 3]", 4, 30, ""),
    )
    .unwrap();
    // seed 2's trials panic (SWEEP_FAULT_PANIC_SEED), twice each
    let run_failing = || {
        sweep_cmd(dir.path())
            .args([
                "run",
                "s.toml",
                "--jobs",
                "2",
                "--max-attempts",
                "2",
                "--mlflow",
                &url,
            ])
            .env("SWEEP_FAULT_PANIC_SEED", "2")
            .output()
            .unwrap()
    };
    let o = run_failing();
    let out = text(&o);
    // the two seed-2 trials fail (twice each): exit 1, as without MLflow
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "MLflow: all 6 started trials of `{name}` are in {url}/#/experiments/"
        )),
        "{out}"
    );

    let rb = readback(&py, &url, &name);
    assert_eq!(rb["experiment"]["name"], name.as_str());
    let parent = parents(&rb);
    assert_eq!(parent.len(), 1, "{rb:#}");
    let parent = parent[0];
    assert_eq!(parent["status"], "FINISHED");
    let kids = children(&rb);
    assert_eq!(kids.len(), 6, "one run per trial");

    // the database's view: number → (key, state, seed, dropout)
    let rows = sql(
        dir.path(),
        "SELECT t.number, t.key, t.state, t.seed, p.value_text FROM trials t JOIN trial_params p ON p.trial_id = t.id AND p.name = 'model.dropout' ORDER BY t.number",
    );
    assert_eq!(rows.len(), 6);
    for row in &rows {
        let f: Vec<&str> = row.split(',').collect();
        let (number, key, state, seed, dropout) = (f[0], f[1], f[2], f[3], f[4]);
        let run = kids
            .iter()
            .find(|r| r["tags"]["sweep.trial_key"] == key)
            .unwrap_or_else(|| panic!("no run for trial {number}"));
        assert_eq!(run["parent_run_id"], parent["run_id"]);
        assert_eq!(run["tags"]["sweep.trial"], number);
        assert_eq!(run["tags"]["sweep.state"], state);
        assert_eq!(run["params"]["model.dropout"], dropout);
        assert_eq!(run["params"]["train.seed"], seed);
        assert!(run["params"].get("seed").is_none(), "the seed once");
        assert_eq!(run["params"]["train.epochs"], "4");
        assert!(
            run["params"].as_object().unwrap().len() > 30,
            "every setting: {run:#}"
        );
        assert!(
            run["run_name"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{number} dropout=")),
            "{}",
            run["run_name"]
        );
        for tag in [
            "sweep.sweep",
            "sweep.dataset_fingerprint",
            "sweep.device",
            "sweep.stop_reason",
        ] {
            if state == "complete" || tag != "sweep.stop_reason" {
                assert!(run["tags"].get(tag).is_some(), "{tag} missing: {run:#}");
            }
        }
        match state {
            "complete" => {
                assert_eq!(run["status"], "FINISHED");
                // every epoch's metrics, equal to the stored ones, once each
                let stored = sql(
                    dir.path(),
                    &format!("SELECT e.epoch, e.value FROM epoch_metrics e JOIN trials t ON t.id = e.trial_id WHERE t.number = {number} AND e.split = 'val' AND e.name = 'macro_f1' ORDER BY e.epoch"),
                );
                let hist = run["history"]["val.macro_f1"].as_array().unwrap();
                assert_eq!(hist.len(), 4, "{hist:?}");
                for (h, s) in hist.iter().zip(&stored) {
                    let (e, v) = s.split_once(',').unwrap();
                    assert_eq!(h[0].as_i64().unwrap(), e.parse::<i64>().unwrap());
                    let v: f64 = v.parse().unwrap();
                    assert!((h[1].as_f64().unwrap() - v).abs() < 1e-9, "{h:?} vs {v}");
                }
                for m in [
                    "train.loss",
                    "val.loss",
                    "train.accuracy",
                    "val.accuracy",
                    "val.balanced_accuracy",
                    "train.learning_rate",
                ] {
                    assert_eq!(run["history"][m].as_array().map(Vec::len), Some(4), "{m}");
                }
                let final_f1: f64 = sql(
                    dir.path(),
                    &format!("SELECT f.value FROM final_metrics f JOIN trials t ON t.id = f.trial_id WHERE t.number = {number} AND f.name = 'val.macro_f1'"),
                )[0]
                .parse()
                .unwrap();
                assert!(
                    (run["metrics"]["final.val.macro_f1"].as_f64().unwrap() - final_f1).abs()
                        < 1e-9
                );
                assert!(run["metrics"]["final.val.macro_auc"].is_number());
                let arts: Vec<&str> = run["artifacts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| a.as_str().unwrap())
                    .collect();
                for a in [
                    "config.json",
                    "classification_report.txt",
                    "confusion_matrix.png",
                    "best.safetensors",
                ] {
                    assert!(arts.contains(&a), "{a} missing: {arts:?}");
                }
            }
            "failed" => {
                assert_eq!(run["status"], "FAILED");
                // re-run after its first failure: the same run, second attempt
                assert_eq!(run["tags"]["sweep.attempt"], "2");
                assert!(
                    run["tags"]["sweep.error"]
                        .as_str()
                        .unwrap()
                        .contains("SWEEP_FAULT_PANIC_SEED"),
                    "{run:#}"
                );
            }
            other => panic!("unexpected state {other}"),
        }
    }
    // the parent: the spec, the report, the best configuration's mean ± std
    let arts: Vec<&str> = parent["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(
        arts.contains(&"spec.toml") && arts.contains(&"report.html"),
        "{arts:?}"
    );
    let best: Vec<f64> = sql(
        dir.path(),
        "SELECT f.value FROM final_metrics f JOIN trials t ON t.id = f.trial_id JOIN trial_params p ON p.trial_id = t.id AND p.name = 'model.dropout' \
         WHERE f.name = 'val.macro_f1' AND t.state = 'complete' ORDER BY p.value_text, t.seed",
    )
    .iter()
    .map(|v| v.parse().unwrap())
    .collect();
    // two complete seeds per dropout: the better mean is the parent's best.mean
    let means = [(best[0] + best[1]) / 2.0, (best[2] + best[3]) / 2.0];
    let top = means[0].max(means[1]);
    assert!(
        (parent["metrics"]["best.mean"].as_f64().unwrap() - top).abs() < 1e-9,
        "{parent:#}"
    );
    assert_eq!(parent["metrics"]["best.seeds"].as_f64(), Some(2.0));
    assert_eq!(parent["metrics"]["trials.failed"].as_f64(), Some(2.0));

    // sync again, and rerun the sweep: nothing new, nothing doubled
    let ids: BTreeMap<String, String> = kids
        .iter()
        .map(|r| {
            (
                r["tags"]["sweep.trial_key"].as_str().unwrap().to_string(),
                r["run_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let s = sweep_cmd(dir.path())
        .args(["mlflow", "sync", &name, "--uri", &url])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", text(&s));
    assert!(
        text(&s).contains("(0 runs created by this command)"),
        "{}",
        text(&s)
    );
    let again = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--mlflow", &url])
        .output()
        .unwrap();
    assert!(
        text(&again).contains("(0 runs created by this command)"),
        "{}",
        text(&again)
    );
    let rb2 = readback(&py, &url, &name);
    none_deleted(&rb2);
    assert_eq!(parents(&rb2).len(), 1);
    let kids2 = children(&rb2);
    assert_eq!(kids2.len(), 6);
    for r in kids2 {
        let key = r["tags"]["sweep.trial_key"].as_str().unwrap();
        assert_eq!(ids[key], r["run_id"].as_str().unwrap());
        if r["status"] == "FINISHED" {
            assert_eq!(r["history"]["val.macro_f1"].as_array().unwrap().len(), 4);
        }
    }

    // The results removed and the sweep run again under the same name: a new
    // sweep (recorded anew), so a new parent with runs of its own; the first
    // sweep's runs are left as they are.
    std::fs::remove_dir_all(dir.path().join("results")).unwrap();
    let fresh = run_failing();
    assert!(
        text(&fresh).contains("(6 runs created by this command)"),
        "{}",
        text(&fresh)
    );
    let rb3 = readback(&py, &url, &name);
    none_deleted(&rb3);
    assert_eq!(parents(&rb3).len(), 2);
    assert_eq!(children(&rb3).len(), 12);
}

/// The server is killed (`kill -9`) while the sweep runs: the sweep finishes
/// as if nothing happened and says how many trials MLflow lacks; after a
/// restart, `sync` sends them, every trial is there exactly once with each
/// epoch once, and a second `sync` creates nothing.
#[test]
fn a_server_killed_mid_sweep_costs_nothing_and_sync_completes_it() {
    let Some(py) = python("a_server_killed_mid_sweep_costs_nothing_and_sync_completes_it") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(&py, &dir.path().join("server"));
    let url = server.url();
    let name = unique("outage");
    // long enough (8 trials, one at a time) that the kill lands mid-sweep
    std::fs::write(
        dir.path().join("s.toml"),
        spec(&name, "[1, 2, 3, 4]", 12, 300, ""),
    )
    .unwrap();
    let child = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--jobs", "1", "--mlflow", &url])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // wait for the first trial's run, then kill the server
    let t = sweep_mlflow::Tracking::new(&url, Default::default(), Default::default()).unwrap();
    let t0 = Instant::now();
    loop {
        let exp = t.experiment_by_name(&name).unwrap();
        if let Some(e) = exp {
            let runs = t.search_runs(&e.id, "tags.`sweep.role` = 'trial'").unwrap();
            if !runs.is_empty() {
                break;
            }
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no trial run appeared in MLflow"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server.kill();
    let o = child.wait_with_output().unwrap();
    let out = text(&o);
    assert!(o.status.success(), "the sweep must not fail: {out}");
    assert!(out.contains("8 complete"), "{out}");
    assert!(
        out.contains("MLflow (") && out.contains("not reached")
            || out.contains("started trials are not yet in"),
        "{out}"
    );
    assert!(out.contains(&format!("sweep mlflow sync {name}")), "{out}");

    // the server comes back (same store); sync sends the rest
    server.restart();
    let s = sweep_cmd(dir.path())
        .args(["mlflow", "sync", &name, "--uri", &url])
        .output()
        .unwrap();
    assert!(s.status.success(), "{}", text(&s));
    assert!(
        text(&s).contains(&format!("all 8 started trials of `{name}` are in")),
        "{}",
        text(&s)
    );
    let rb = readback(&py, &url, &name);
    none_deleted(&rb);
    assert_eq!(parents(&rb).len(), 1, "{rb:#}");
    assert_eq!(parents(&rb)[0]["status"], "FINISHED");
    let kids = children(&rb);
    let keys = trial_keys(&kids);
    assert_eq!((kids.len(), keys.len()), (8, 8), "each trial exactly once");
    for r in &kids {
        assert_eq!(r["status"], "FINISHED");
        let steps: Vec<i64> = r["history"]["val.loss"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h[0].as_i64().unwrap())
            .collect();
        // early stopping may end a trial before epoch 12; each epoch once
        let n = steps.len() as i64;
        assert_eq!(steps, (1..=n).collect::<Vec<_>>(), "{r:#}");
    }
    let again = sweep_cmd(dir.path())
        .args(["mlflow", "sync", &name, "--uri", &url])
        .output()
        .unwrap();
    assert!(
        text(&again).contains("(0 runs created by this command)"),
        "{}",
        text(&again)
    );
    assert_eq!(children(&readback(&py, &url, &name)).len(), 8);
}

/// `sweep run` killed outright (`kill -9` of it and its trial processes)
/// while a trial's epochs are in MLflow, then run again: the trial re-runs
/// into its own run (attempt 2), its epochs logged again at the same times
/// with the same values, so that every run holds each epoch once; nothing is
/// doubled and everything ends FINISHED.
#[test]
fn a_sweep_killed_outright_resumes_into_the_same_runs() {
    let Some(py) = python("a_sweep_killed_outright_resumes_into_the_same_runs") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&py, &dir.path().join("server"));
    let url = server.url();
    let name = unique("killed");
    // trials of about 5 s (15 epochs), one at a time
    let spec_text = spec(&name, "[1, 2]", 15, 400, "")
        .replace("image_size = 16", "image_size = 32")
        .replace("hidden = [32]", "hidden = [256]");
    std::fs::write(dir.path().join("s.toml"), spec_text).unwrap();
    let mut child = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--jobs", "1", "--mlflow", &url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let t = sweep_mlflow::Tracking::new(&url, Default::default(), Default::default()).unwrap();
    let t0 = Instant::now();
    // a running trial with two epochs in MLflow
    let seen = loop {
        if let Some(e) = t.experiment_by_name(&name).unwrap() {
            let running = t
                .search_runs(
                    &e.id,
                    "tags.`sweep.role` = 'trial' and attributes.status = 'RUNNING'",
                )
                .unwrap();
            if let Some(r) = running.into_iter().find(|r| {
                r.tags
                    .get("sweep.sent_epochs")
                    .and_then(|v| v.parse::<i64>().ok())
                    .is_some_and(|n| (2..15).contains(&n))
            }) {
                break r;
            }
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before the kill"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no running trial in MLflow"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    // SAFETY: killing the process group this test started.
    unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
    let _ = child.wait();
    let again = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--jobs", "1", "--mlflow", &url])
        .output()
        .unwrap();
    let out = text(&again);
    assert!(again.status.success(), "{out}");
    assert!(
        out.contains(&format!("MLflow: all 4 started trials of `{name}` are in")),
        "{out}"
    );
    let rb = readback(&py, &url, &name);
    none_deleted(&rb);
    assert_eq!(parents(&rb).len(), 1);
    assert_eq!(parents(&rb)[0]["status"], "FINISHED");
    let kids = children(&rb);
    assert_eq!(kids.len(), 4, "{rb:#}");
    for r in &kids {
        assert_eq!(r["status"], "FINISHED");
        for key in ["val.loss", "val.macro_f1", "train.loss"] {
            let steps: Vec<i64> = r["history"][key]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h[0].as_i64().unwrap())
                .collect();
            let n = steps.len() as i64;
            assert_eq!(
                steps,
                (1..=n).collect::<Vec<_>>(),
                "{key} of {}: {steps:?}",
                r["run_name"]
            );
        }
    }
    let resumed = kids
        .iter()
        .find(|r| r["run_id"] == seen.id.as_str())
        .unwrap();
    assert_eq!(resumed["tags"]["sweep.attempt"], "2", "{resumed:#}");
}

/// A server that accepts connections and never answers does not hold the
/// sweep: it finishes, the last pass gives up after its bound, and the
/// command says what is not in MLflow.
#[test]
fn a_server_that_never_answers_does_not_hold_the_sweep() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    // accept and hold every connection, answer nothing
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming() {
            held.push(s);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("hung", "[1]", 2, 30, "")).unwrap();
    let t0 = Instant::now();
    let o = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--mlflow", &url])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("2 complete"), "{out}");
    assert!(out.contains("not reached"), "{out}");
    assert!(out.contains("sweep mlflow sync hung"), "{out}");
    // a hang detector, not a speed target: the last pass is bounded (15 s)
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
}

/// Credentials never reach the database: a spec that holds them is refused
/// (naming the key and the variables to use), and `--mlflow` with them in the
/// URI stores nothing of them.
#[test]
fn credentials_stay_out_of_the_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        spec(
            "creds",
            "[1]",
            2,
            30,
            "[logging]\nmlflow = \"http://ann:s3cret@127.0.0.1:1\"",
        ),
    )
    .unwrap();
    let o = sweep_cmd(dir.path())
        .args(["run", "s.toml"])
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}");
    assert!(
        out.contains("logging.mlflow") && out.contains("MLFLOW_TRACKING_USERNAME"),
        "{out}"
    );
    assert!(!dir.path().join("results").exists(), "nothing recorded");
    // the URI with credentials on the command line: used, never stored or shown
    std::fs::write(dir.path().join("s.toml"), spec("creds", "[1]", 2, 30, "")).unwrap();
    let o = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--mlflow", "http://ann:s3cret@127.0.0.1:1"])
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(!out.contains("s3cret"), "{out}");
    assert!(
        out.contains("MLflow (http://127.0.0.1:1): not reached"),
        "{out}"
    );
    let db = std::fs::read(dir.path().join("results/sweep.db")).unwrap();
    let wal = std::fs::read(dir.path().join("results/sweep.db-wal")).unwrap_or_default();
    for bytes in [db, wal] {
        assert!(
            !bytes.windows(6).any(|w| w == b"s3cret"),
            "the password is in the database"
        );
    }
}

/// A private authority and a server certificate for 127.0.0.1 signed by it,
/// made with the `cryptography` package MLflow installs.
fn certificates(python: &str, dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import datetime, ipaddress, sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
d = sys.argv[1]
now = datetime.datetime.now(datetime.timezone.utc)
def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
ca_key = ec.generate_private_key(ec.SECP256R1())
ca = (x509.CertificateBuilder().subject_name(name("sweep test authority")).issuer_name(name("sweep test authority"))
      .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
      .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
      .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
      .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                                   key_encipherment=False, data_encipherment=False, key_agreement=False,
                                   encipher_only=False, decipher_only=False), critical=True)
      .sign(ca_key, hashes.SHA256()))
key = ec.generate_private_key(ec.SECP256R1())
cert = (x509.CertificateBuilder().subject_name(name("127.0.0.1")).issuer_name(ca.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256()))
open(f"{d}/ca.pem", "wb").write(ca.public_bytes(serialization.Encoding.PEM))
open(f"{d}/cert.pem", "wb").write(cert.public_bytes(serialization.Encoding.PEM))
open(f"{d}/key.pem", "wb").write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
"#;
    let o = Command::new(python)
        .args(["-c", script])
        .arg(dir)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// HTTPS with a private authority (MLFLOW_TRACKING_SERVER_CERT_PATH) and
/// MLflow's basic-auth app (MLFLOW_TRACKING_USERNAME / _PASSWORD), as MLflow's
/// own clients use them: the sweep is logged and reads back; a wrong password
/// and an unknown authority are refused with messages that say so and never
/// show the password.
#[test]
fn https_and_basic_auth_as_mlflows_clients_use_them() {
    let Some(py) = python("https_and_basic_auth_as_mlflows_clients_use_them") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let sdir = dir.path().join("server");
    certificates(&py, &sdir);
    let admin = "sweep-admin-pw-1";
    let server = Server::start_with(&py, &sdir, true, Some(admin));
    let url = server.url();
    assert!(url.starts_with("https://"));
    let ca = sdir.join("ca.pem");
    let ca = ca.to_str().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec("secure", "[1]", 2, 30, "")).unwrap();
    let env = [
        ("MLFLOW_TRACKING_USERNAME", "admin"),
        ("MLFLOW_TRACKING_PASSWORD", admin),
        ("MLFLOW_TRACKING_SERVER_CERT_PATH", ca),
    ];
    let o = sweep_cmd(dir.path())
        .args(["run", "s.toml", "--mlflow", &url])
        .envs(env)
        .output()
        .unwrap();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains("MLflow: all 2 started trials of `secure` are in https://"),
        "{out}"
    );
    assert!(!out.contains(admin), "{out}");
    let rb = readback_with(&py, &url, "secure", &env, Some("val.macro_f1"));
    assert_eq!(children(&rb).len(), 2);
    assert_eq!(parents(&rb).len(), 1);
    for r in children(&rb) {
        assert_eq!(r["status"], "FINISHED");
        assert_eq!(r["history"]["val.macro_f1"].as_array().unwrap().len(), 2);
    }

    // a wrong password: refused, said so, the password not shown
    let o = sweep_cmd(dir.path())
        .args(["mlflow", "sync", "secure", "--uri", &url])
        .envs(env)
        .env("MLFLOW_TRACKING_PASSWORD", "not-the-password")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(
        out.contains("HTTP 401") && out.contains("MLFLOW_TRACKING_USERNAME"),
        "{out}"
    );
    assert!(!out.contains("not-the-password"), "{out}");
    // the public authorities only: the certificate is not trusted
    let o = sweep_cmd(dir.path())
        .args(["mlflow", "sync", "secure", "--uri", &url])
        .envs(env[..2].iter().copied())
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.to_lowercase().contains("certificate"), "{out}");
    // right credentials and authority: in sync, nothing new
    let o = sweep_cmd(dir.path())
        .args(["mlflow", "sync", "secure", "--uri", &url])
        .envs(env)
        .output()
        .unwrap();
    assert!(
        text(&o).contains("(0 runs created by this command)"),
        "{}",
        text(&o)
    );
}
