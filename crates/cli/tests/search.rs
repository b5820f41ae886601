//! Search end to end with real processes: TPE with ASHA pruning through the
//! binary, `kill -9` at any point then a rerun that proposes exactly the same
//! configurations and reaches exactly the same results as an uninterrupted
//! run, extending a finished search, refusing another space, dry runs and
//! status. Databases are real SQLite files read through a read-only store.

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

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn spawn(dir: &Path, args: &[&str]) -> Child {
    sweep_cmd(dir, args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A TPE search with ASHA over a few settings of an MLP on generated images.
fn spec(trials: usize, space_extra: &str) -> String {
    format!(
        r#"
name = "search"
seeds = [1, 2]
[data]
image_size = 12
[data.synthetic]
classes = 3
per_class = 60
image_size = 12
[model]
hidden = [32]
[train]
epochs = 8
batch_size = 16
[search]
method = "tpe"
trials = {trials}
seed = 11
startup_trials = 3
[space]
train.learning_rate = {{ log_uniform = [1e-4, 3e-1] }}
model.dropout = {{ uniform = [0.0, 0.6] }}
model.hidden = {{ choice = [[32], [64, 16]] }}
{space_extra}
[pruner]
method = "asha"
min_epochs = 1
reduction_factor = 2
"#
    )
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn db_of(dir: &Path) -> PathBuf {
    dir.join("results/sweep.db")
}

/// Everything a search decided and measured: each proposal's configuration in
/// order, and each trial's proposal, seed, state, stop and final objective.
#[derive(Debug, PartialEq)]
struct Outcome {
    proposals: Vec<(i64, String)>,
    trials: Vec<TrialOutcome>,
}

/// (proposal, seed, state, stop detail, stop epoch, final val.macro_f1)
type TrialOutcome = (i64, i64, String, Option<String>, Option<i64>, Option<f64>);

fn outcome(db: &Path) -> Outcome {
    rt().block_on(async {
        let s = Store::open_read_only(db).await.unwrap();
        let proposals = sqlx::query_as("SELECT number, params_json FROM proposals ORDER BY number")
            .fetch_all(s.pool())
            .await
            .unwrap();
        let trials = sqlx::query_as(
            "SELECT t.proposal, t.seed, t.state, t.stop_detail, t.stop_epoch, f.value FROM trials t \
             LEFT JOIN final_metrics f ON f.trial_id = t.id AND f.name = 'val.macro_f1' ORDER BY t.proposal, t.seed",
        )
        .fetch_all(s.pool())
        .await
        .unwrap();
        assert_eq!(s.integrity_check().await.unwrap(), "ok");
        s.close().await;
        Outcome { proposals, trials }
    })
}

fn try_count(db: &Path, sql: &str) -> Option<i64> {
    rt().block_on(async {
        let s = Store::open_read_only(db).await.ok()?;
        let n: Option<(i64,)> = sqlx::query_as(sql).fetch_one(s.pool()).await.ok();
        s.close().await;
        n.map(|n| n.0)
    })
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

const ONE_AT_A_TIME: &[&str] = &["run", "s.toml", "--jobs", "1", "--threads", "1"];

/// With one trial at a time and a fixed sampler seed, a search killed with
/// `kill -9` (once while a trial trains, once right after a proposal was
/// recorded) and rerun proposes the same configurations in the same order and
/// reaches the same results, pruning decisions included, as an uninterrupted run.
#[test]
fn a_search_killed_at_any_point_resumes_to_exactly_the_same_search() {
    let clean = tempfile::tempdir().unwrap();
    std::fs::write(clean.path().join("s.toml"), spec(7, "")).unwrap();
    let out = ok(&run(clean.path(), ONE_AT_A_TIME));
    assert!(
        out.contains("search: no more proposals: the budget of 7 configurations is used"),
        "{out}"
    );
    let want = outcome(&db_of(clean.path()));
    assert_eq!(want.proposals.len(), 7);
    assert_eq!(want.trials.len(), 14);
    let pruned = want.trials.iter().filter(|t| t.2 == "pruned").count();
    assert!(pruned > 0, "ASHA pruned nothing: {want:?}");
    for t in want.trials.iter().filter(|t| t.2 == "pruned") {
        let why = t.3.as_deref().unwrap_or_default();
        assert!(
            (why.starts_with("pruned by ASHA at epoch ")
                && why.contains("rung")
                && why.contains("threshold")
                && why.contains("compared by their mean over seed"))
                || why.starts_with("pruned with its configuration"),
            "{why}"
        );
        // a configuration is pruned whole: none of its seeds completes
        assert!(
            want.trials
                .iter()
                .filter(|u| u.0 == t.0)
                .all(|u| u.2 == "pruned"),
            "configuration {} pruned on one seed only: {want:?}",
            t.0
        );
    }
    // the configurations differ (TPE proposes; nothing repeats)
    let mut distinct: Vec<&String> = want.proposals.iter().map(|p| &p.1).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), 7);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec(7, "")).unwrap();
    let db = db_of(dir.path());
    // kill 1: while a trial of the fourth configuration (a TPE proposal) trains
    let mut child = spawn(dir.path(), ONE_AT_A_TIME);
    wait_for(
        "a running trial of proposal 3",
        Duration::from_secs(120),
        || {
            try_count(
                &db,
                "SELECT COUNT(*) FROM trials WHERE proposal = 3 AND state = 'running'",
            )
            .unwrap_or(0)
                > 0
        },
    );
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        try_count(&db, "SELECT COUNT(*) FROM trials WHERE state = 'running'"),
        Some(1),
        "the killed run leaves its trial running"
    );
    // kill 2: right after a proposal is recorded, before its trials run
    let mut child = spawn(dir.path(), ONE_AT_A_TIME);
    wait_for("proposal 5", Duration::from_secs(120), || {
        try_count(&db, "SELECT COUNT(*) FROM proposals WHERE number = 5").unwrap_or(0) > 0
    });
    child.kill().unwrap();
    child.wait().unwrap();
    ok(&run(dir.path(), ONE_AT_A_TIME));
    assert!(
        try_count(
            &db,
            "SELECT COUNT(*) FROM trial_attempts WHERE outcome = 'orphaned'"
        )
        .unwrap()
            >= 1,
        "the killed attempts were reclaimed"
    );
    let got = outcome(&db);
    assert_eq!(
        got.proposals, want.proposals,
        "the same configurations in the same order"
    );
    assert_eq!(
        got.trials, want.trials,
        "the same states, stops and results"
    );

    // the report's parallel coordinates: an axis per sampled setting, short
    // names with the full ones on hover
    let html = std::fs::read_to_string(dir.path().join("results/search/report.html")).unwrap();
    assert!(html.contains("configurations across the sampled settings"));
    for (short, full) in [
        ("dropout", "model.dropout"),
        ("learning_rate", "train.learning_rate"),
    ] {
        assert!(
            html.contains(&format!(">{short}<title>{full}</title>")),
            "no axis {full}"
        );
    }

    // status tells the budget, the best so far and where trials were pruned
    let st = ok(&run(dir.path(), &["status", "search"]));
    assert!(
        st.contains("search (tpe): 7 of 7 configurations proposed; best so far: configuration"),
        "{st}"
    );
    assert!(
        st.contains(&format!("pruned by the pruner: {pruned} (")),
        "{st}"
    );
    // compare counts pruned trials apart from diverged ones
    let cmp = String::from_utf8_lossy(&run(dir.path(), &["compare", "search"]).stdout).into_owned();
    assert!(
        cmp.contains(&format!("{pruned} pruned (stopped by the pruner)")),
        "{cmp}"
    );
}

/// Raising the budget continues a finished search from where it stopped;
/// another space is refused before anything is written.
#[test]
fn a_larger_budget_extends_a_search_and_another_space_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec(3, "")).unwrap();
    ok(&run(dir.path(), ONE_AT_A_TIME));
    let db = db_of(dir.path());
    let first = outcome(&db);
    assert_eq!(first.proposals.len(), 3);

    std::fs::write(dir.path().join("s.toml"), spec(5, "")).unwrap();
    let out = ok(&run(dir.path(), ONE_AT_A_TIME));
    assert!(out.contains("search: configuration 4 proposed"), "{out}");
    let more = outcome(&db);
    assert_eq!(more.proposals.len(), 5);
    assert_eq!(
        more.proposals[..3],
        first.proposals[..],
        "earlier proposals are kept"
    );

    std::fs::write(
        dir.path().join("s.toml"),
        spec(5, "model.batch_norm = { choice = [false, true] }"),
    )
    .unwrap();
    let refused = run(dir.path(), ONE_AT_A_TIME);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(
        err.contains("was searched over another space")
            && err.contains("give the sweep another `name`"),
        "{err}"
    );
    assert_eq!(outcome(&db), more, "nothing was written");
}

/// `--dry-run` prints the space and the first configurations the sampler
/// proposes, and runs nothing; they are the ones a run then proposes first.
#[test]
fn a_dry_run_shows_the_space_and_the_first_proposals() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), spec(7, "")).unwrap();
    let out = ok(&run(dir.path(), &["run", "s.toml", "--dry-run"]));
    for needle in [
        "sweep `search`: tpe search, 7 configurations × 2 seeds = at most 14 trials",
        "pruner: asha (rungs at epochs 1 × 2^k, keeping the top 1/2)",
        "train.learning_rate  log_uniform(0.0001, 0.3)",
        "model.hidden         choice([32], [64,16])",
        "the first 3 configurations it proposes (random until 3 have finished; then TPE):",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    assert!(!db_of(dir.path()).exists(), "a dry run writes nothing");
    let first = out
        .lines()
        .find(|l| l.trim_start().starts_with("0: "))
        .unwrap()
        .trim_start()[3..]
        .to_string();
    std::fs::write(dir.path().join("s.toml"), spec(1, "")).unwrap();
    ok(&run(dir.path(), ONE_AT_A_TIME));
    let got = outcome(&db_of(dir.path()));
    let p: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&got.proposals[0].1).unwrap();
    let text = p
        .iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => format!("{k}={s}"),
            other => format!("{k}={other}"),
        })
        .collect::<Vec<_>>()
        .join(" ");
    assert_eq!(text, first);
}
