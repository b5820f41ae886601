//! The store on real SQLite files and on a real PostgreSQL server: migrations,
//! guarded state transitions, explicit NaN, heartbeats and reclaiming, concurrent
//! claims, read-only access refusing writes. Every test runs on both backends.
//!
//! PostgreSQL comes from `SWEEP_TEST_PG` (a `postgres://` URL of any database on
//! a server where this user may create databases; `.ci/run` starts one). Without
//! it the PostgreSQL half is skipped with a note, unless `SWEEP_REQUIRE_PG=1`
//! (set by `.ci/run`), which makes a missing server a failure.

use std::path::Path;

use sweep_orchestrator::store::{
    create_postgres_database, DbLocation, Finish, NewSweep, NewTrial, Store, TrialState,
    MIGRATIONS, PG_MIGRATIONS,
};
use sweep_train::EpochMetrics;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn sweep(name: &str) -> NewSweep {
    NewSweep {
        name: name.into(),
        description: None,
        spec_path: "s.toml".into(),
        spec_text: "name = \"x\"".into(),
        spec_hash: "h".into(),
        objective: "val.macro_f1".into(),
        direction: "maximize".into(),
        dataset: "synthetic".into(),
        dataset_fingerprint: "fp1".into(),
        tool_version: "0".into(),
        git_commit: None,
        results_dir: None,
        host: "h".into(),
    }
}

fn trial(key: &str) -> NewTrial {
    NewTrial {
        key: key.into(),
        config_json: "{}".into(),
        base: None,
        seed: 1,
        params: vec![(
            "model.dropout".into(),
            "float".into(),
            "0.5".into(),
            Some(0.5),
            true,
        )],
    }
}

/// A fresh PostgreSQL database for one test, or None (skipped) without a server.
fn postgres(test: &str) -> Option<DbLocation> {
    let Ok(base) = std::env::var("SWEEP_TEST_PG") else {
        assert!(
            std::env::var("SWEEP_REQUIRE_PG").is_err(),
            "SWEEP_REQUIRE_PG is set but SWEEP_TEST_PG (a postgres:// URL) is not"
        );
        visible(&format!(
            "skipped: {test}: the PostgreSQL half (no SWEEP_TEST_PG; set SWEEP_TEST_PG=postgres://... to run it)"
        ));
        return None;
    };
    let name = format!("sweep_store_{test}_{}", std::process::id());
    let url = rt()
        .block_on(create_postgres_database(&base, &name))
        .unwrap_or_else(|e| panic!("SWEEP_TEST_PG={base}: {e}"));
    Some(DbLocation::Postgres(url))
}

/// The test on a SQLite file in `dir`, then on PostgreSQL when there is one.
fn on_both(test: &str, dir: &Path, f: impl Fn(DbLocation)) {
    f(DbLocation::Sqlite(dir.join(format!("{test}/sweep.db"))));
    if let Some(pg) = postgres(test) {
        f(pg);
    }
}

#[test]
fn every_migration_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let list = |dir: &Path| {
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".sql"))
            .collect();
        files.sort();
        files
    };
    let names = |m: &[(i64, &str, &str)]| -> Vec<String> {
        m.iter()
            .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
            .collect()
    };
    assert_eq!(
        list(&dir.join("postgres")),
        names(PG_MIGRATIONS),
        "a migration in migrations/postgres/ is not listed in store::PG_MIGRATIONS"
    );
    assert_eq!(
        names(MIGRATIONS),
        names(PG_MIGRATIONS),
        "SQLite and PostgreSQL need the same migrations (same numbers and names)"
    );
    let files = list(&dir);
    let embedded = names(MIGRATIONS);
    assert_eq!(files, embedded, "a migration in migrations/ is not listed in store::MIGRATIONS (or misnamed: NNNN_description.sql)");
}

fn metrics() -> EpochMetrics {
    EpochMetrics {
        epoch: 1,
        train_loss: f64::NAN,
        train_accuracy: 0.5,
        val_loss: f64::INFINITY,
        val_accuracy: 0.5,
        val_macro_f1: 0.4,
        val_balanced_accuracy: 0.5,
        learning_rate: 1e-3,
        seconds: 1.0,
        data_seconds: 0.1,
        step_seconds: 0.8,
        train_loss_std: 0.05,
        train_loss_step_std: f64::NAN,
    }
}

fn pruned() -> Finish<'static> {
    Finish {
        state: TrialState::Pruned,
        stop_reason: "diverged".into(),
        stop_detail: None,
        stop_epoch: Some(1),
        best_epoch: None,
        report_epoch: None,
        num_parameters: 10,
        train_size: 8,
        val_size: 2,
        duration_seconds: 1.0,
        report: None,
        extra_metrics: vec![("train.loss".into(), f64::NAN)],
        artifacts: vec![],
        init_json: None,
    }
}

#[test]
fn transitions_are_guarded_and_finishing_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    on_both("transitions", dir.path(), |db| {
        rt().block_on(async {
            let s = Store::open(&db).await.unwrap();
            let id = s.upsert_sweep(&sweep("a")).await.unwrap();
            assert_eq!(s.upsert_sweep(&sweep("a")).await.unwrap(), id);
            let mut other = sweep("a");
            other.dataset_fingerprint = "fp2".into();
            assert!(s
                .upsert_sweep(&other)
                .await
                .unwrap_err()
                .to_string()
                .contains("different data set"));

            assert_eq!(
                s.add_trials(id, &[trial("k1"), trial("k2")]).await.unwrap(),
                2
            );
            assert_eq!(
                s.add_trials(id, &[trial("k1"), trial("k3")]).await.unwrap(),
                1,
                "content keys are unique per sweep"
            );
            let session = s.start_session(id, 1, "h").await.unwrap();
            let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            assert_eq!((c.number, c.attempt), (1, 1));
            let m = metrics();
            assert!(s.record_epoch(c.id, session, &m).await.unwrap());
            let f = pruned();
            // another session cannot finish it; finishing twice, or failing a
            // finished trial, changes nothing (a repeat by the same session,
            // as a retry after a lost connection sends, is recognized as done)
            assert!(!s.finish(c.id, session + 1000, &f).await.unwrap());
            assert!(s.finish(c.id, session, &f).await.unwrap());
            let rows = |s: &Store| {
                let pool = s.pool().clone();
                async move {
                    let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM final_metrics")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    n
                }
            };
            let n = rows(&s).await;
            assert!(s.finish(c.id, session, &f).await.unwrap());
            assert_eq!(rows(&s).await, n);
            assert!(!s.finish(c.id, session + 1000, &f).await.unwrap());
            assert!(!s.fail(c.id, session, "late").await.unwrap());
            assert!(!s.record_epoch(c.id, session, &m).await.unwrap());
            let (v, k): (Option<f64>, String) = sqlx::query_as(
                "SELECT value, value_kind FROM epoch_metrics WHERE name = 'loss' AND split = 'train'",
            )
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!((v, k.as_str()), (None, "nan"));
            let (k,): (String,) = sqlx::query_as(
                "SELECT value_kind FROM epoch_metrics WHERE name = 'loss' AND split = 'val'",
            )
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!(k, "inf");

            // fail → requeue up to the limit
            let c2 = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            s.record_epoch(c2.id, session, &m).await.unwrap();
            assert!(s.fail(c2.id, session, "boom").await.unwrap());
            let (n,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM epoch_metrics WHERE trial_id = $1")
                    .bind(c2.id)
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            assert_eq!(n, 0, "a failed attempt leaves no partial rows");
            assert_eq!(s.requeue_failed(id, 1).await.unwrap(), 0);
            assert_eq!(s.requeue_failed(id, 2).await.unwrap(), 1);

            // an interrupted trial gives its attempt back
            let c3 = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            assert_eq!((c3.id, c3.attempt), (c2.id, 2));
            assert!(s.interrupt(c3.id, session).await.unwrap());
            let c4 = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            assert_eq!((c4.id, c4.attempt), (c2.id, 2));

            // a new session reclaims what an ended one left running
            let later = s.start_session(id, 2, "h").await.unwrap();
            assert_eq!(
                s.reclaim_stale(id, later, 3600.0).await.unwrap(),
                0,
                "a live session's trials stay its own"
            );
            s.end_session(session, "crashed").await.unwrap();
            assert_eq!(
                s.reclaim_stale(id, later, 3600.0).await.unwrap(),
                1
            );
            let counts = s.counts(id).await.unwrap();
            assert_eq!((counts.waiting, counts.pruned, counts.running), (2, 1, 0));
            let (outcome,): (String,) = sqlx::query_as(
                "SELECT outcome FROM trial_attempts WHERE trial_id = $1 ORDER BY attempt DESC LIMIT 1",
            )
            .bind(c2.id)
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!(outcome, "orphaned");
            assert_eq!(s.integrity_check().await.unwrap(), "ok");
            s.close().await;

            // read-only: queries work, writes are refused by the database itself
            let ro = Store::open_read_only(&db).await.unwrap();
            assert_eq!(ro.counts(id).await.unwrap().total(), 3);
            let e = sqlx::query("DELETE FROM trials")
                .execute(ro.pool())
                .await
                .unwrap_err()
                .to_string();
            assert!(e.contains("readonly") || e.contains("read-only"), "{e}");
            ro.close().await;
        });
    });
    assert!(rt()
        .block_on(Store::open_read_only(&dir.path().join("none.db")))
        .is_err());
}

#[test]
fn a_lapsed_heartbeat_hands_the_trial_to_another_session() {
    let dir = tempfile::tempdir().unwrap();
    on_both("heartbeat", dir.path(), |db| {
        rt().block_on(async {
            // a's process declares a one-second lease; b's the default minute
            let s = Store::open(&db).await.unwrap().with_lease(1.0);
            let id = s.upsert_sweep(&sweep("hb")).await.unwrap();
            s.add_trials(id, &[trial("k1"), trial("k2")]).await.unwrap();
            let a = s.start_session(id, 10, "node-a").await.unwrap();
            let other = Store::open(&db).await.unwrap();
            let b = other.start_session(id, 11, "node-b").await.unwrap();
            let c = s.claim_next(id, a, "cpu").await.unwrap().unwrap();
            s.record_epoch(c.id, a, &metrics()).await.unwrap();
            assert_eq!(s.running_elsewhere(id, b).await.unwrap(), 1);
            assert_eq!(s.running_elsewhere(id, a).await.unwrap(), 0);
            // a beat within the lease keeps it
            assert!(s.heartbeat(a).await.unwrap());
            assert_eq!(s.reclaim_stale(id, b, 30.0).await.unwrap(), 0);
            // each session's own lease counts, not the reclaimer's: b's trial is
            // safe from a reclaimer that would call anything older than now stale
            let cb = other.claim_next(id, b, "cpu").await.unwrap().unwrap();
            assert_eq!(s.reclaim_stale(id, a, 0.0).await.unwrap(), 0);
            assert_eq!(other.held(id, b).await.unwrap(), vec![cb.id]);
            assert!(other.interrupt(cb.id, b).await.unwrap());
            // no beat for longer than a's lease: b takes a's trial over
            tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
            assert_eq!(other.reclaim_stale(id, b, 3600.0).await.unwrap(), 1);
            assert!(s.held(id, a).await.unwrap().is_empty(), "a can tell it lost the trial");
            let again = other.claim_next(id, b, "cpu").await.unwrap().unwrap();
            assert_eq!((again.id, again.attempt), (c.id, 1), "a reclaimed attempt is not counted");
            // a's late results are refused; b's land
            assert!(!s.record_epoch(c.id, a, &metrics()).await.unwrap());
            assert!(!s.finish(c.id, a, &pruned()).await.unwrap());
            assert!(other.finish(c.id, b, &pruned()).await.unwrap());
            let rows: Vec<(i64, Option<String>)> = sqlx::query_as(
                "SELECT session_id, outcome FROM trial_attempts WHERE trial_id = $1 ORDER BY attempt",
            )
            .bind(c.id)
            .fetch_all(s.pool())
            .await
            .unwrap();
            assert_eq!(
                rows,
                vec![(a, Some("orphaned".to_string())), (b, Some("pruned".to_string()))]
            );
            // a session ended by someone else learns it at its next beat
            other.end_session(a, "vanished").await.unwrap();
            assert!(!s.heartbeat(a).await.unwrap());
            assert!(other.heartbeat(b).await.unwrap());
            s.close().await;
            other.close().await;
        });
    });
}

#[test]
fn database_locations_are_checked() {
    assert_eq!(
        DbLocation::parse("postgres://u@h/db").unwrap(),
        DbLocation::Postgres("postgres://u@h/db".into())
    );
    assert_eq!(
        DbLocation::parse("sqlite://r/x.db").unwrap(),
        DbLocation::Sqlite("r/x.db".into())
    );
    let e = DbLocation::parse("postgress://u:secret@h/db")
        .unwrap_err()
        .to_string();
    assert!(e.contains("postgress://") && !e.contains("secret"), "{e}");
    assert_eq!(
        DbLocation::Postgres("postgres://u:secret@h:5/db".into()).display(),
        "postgres://u:***@h:5/db"
    );
    // `..` in a SQLite path means what the file system says, not what a URL
    // parser would make of it
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a")).unwrap();
    let db = dir.path().join("a/../b.db");
    rt().block_on(async {
        let s = Store::open(&db).await.unwrap();
        s.close().await;
    });
    assert!(dir.path().join("b.db").is_file());
    assert!(!dir.path().join("a/b.db").exists());
}

#[test]
fn concurrent_claims_take_each_trial_once() {
    let dir = tempfile::tempdir().unwrap();
    on_both("claims", dir.path(), |db| {
        rt().block_on(async {
            let s = Store::open(&db).await.unwrap();
            let id = s.upsert_sweep(&sweep("c")).await.unwrap();
            let keys: Vec<NewTrial> = (0..40).map(|i| trial(&format!("k{i}"))).collect();
            s.add_trials(id, &keys).await.unwrap();
            if let DbLocation::Postgres(_) = db {
                // A claim in flight elsewhere (trial 1 locked, not yet committed)
                // is skipped, not waited for, and does not hide the other trials.
                let mut other = s.pool().begin().await.unwrap();
                sqlx::query("SELECT id FROM trials WHERE number = 1 FOR UPDATE")
                    .execute(&mut *other)
                    .await
                    .unwrap();
                let session = s.start_session(id, 99, "h").await.unwrap();
                let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
                assert_eq!(c.number, 2);
                assert!(s.interrupt(c.id, session).await.unwrap());
                other.rollback().await.unwrap();
            }
            s.close().await;
            // Four claimers, each with its own connection pool, as separate
            // processes would be.
            let mut handles = Vec::new();
            for w in 0..4 {
                let db = db.clone();
                handles.push(tokio::spawn(async move {
                    let s = Store::open(&db).await.unwrap();
                    let session = s.start_session(id, w, "h").await.unwrap();
                    let mut mine = Vec::new();
                    while let Some(c) = s.claim_next(id, session, "cpu").await.unwrap() {
                        mine.push(c.number);
                    }
                    s.close().await;
                    mine
                }));
            }
            let mut all = Vec::new();
            for h in handles {
                all.extend(h.await.unwrap());
            }
            all.sort();
            assert_eq!(all, (1..=40).collect::<Vec<i64>>());
        });
    });
}

#[test]
fn a_hundred_class_report_lands_whole() {
    // 120 classes: up to 14,400 confusion cells, written in several multi-row
    // statements; every count must come back.
    let dir = tempfile::tempdir().unwrap();
    on_both("report", dir.path(), |db| {
        rt().block_on(async {
            let k = 120;
            let names: Vec<String> = (0..k).map(|i| format!("class{i}")).collect();
            // Asymmetric, with distinct counts: a swapped column or a lost row
            // shows.
            // (column 0 also collects t % 4 extra mistakes per row, so that
            // precision and recall differ)
            let count = |t: u32, p: u32| (t * 7 + p * 3 + 1) % 5 + if p == 0 { t % 4 } else { 0 };
            let mut cm = sweep_train::metrics::Confusion::new(k);
            for t in 0..k as u32 {
                for p in 0..k as u32 {
                    for _ in 0..count(t, p) {
                        cm.add(t, p);
                    }
                }
            }
            let cells = cm.counts.iter().flatten().filter(|n| **n > 0).count() as i64;
            let total = cm.total() as i64;
            let report = sweep_train::Report::new(&names, cm, None);
            let s = Store::open(&db).await.unwrap();
            let id = s.upsert_sweep(&sweep("r")).await.unwrap();
            s.add_trials(id, &[trial("k")]).await.unwrap();
            let session = s.start_session(id, 1, "h").await.unwrap();
            let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            let mut f = pruned();
            f.state = TrialState::Complete;
            f.report = Some(&report);
            assert!(s.finish(c.id, session, &f).await.unwrap());
            let (n, sum): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*), CAST(SUM(count) AS BIGINT) FROM confusion_cells WHERE trial_id = $1",
            )
            .bind(c.id)
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!((n, sum), (cells, total));
            let (classes,): (i64,) =
                sqlx::query_as("SELECT COUNT(*) FROM class_metrics WHERE trial_id = $1")
                    .bind(c.id)
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            assert_eq!(classes, k as i64);
            let (one,): (i64,) = sqlx::query_as(
                "SELECT count FROM confusion_cells WHERE trial_id = $1 AND true_index = 2 AND predicted_index = 1",
            )
            .bind(c.id)
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!((one, count(2, 1), count(1, 2)), (3, 3, 4));
            let (precision, recall, support): (f64, f64, i64) = sqlx::query_as(
                "SELECT precision, recall, support FROM class_metrics WHERE trial_id = $1 AND class_index = 0",
            )
            .bind(c.id)
            .fetch_one(s.pool())
            .await
            .unwrap();
            let want = &report.classes[0];
            assert_eq!(
                (precision, recall, support),
                (want.precision, want.recall, want.support as i64)
            );
            assert_ne!(want.precision, want.recall, "the check can tell them apart");
            let (auc_kind,): (String,) = sqlx::query_as(
                "SELECT value_kind FROM final_metrics WHERE trial_id = $1 AND name = 'val.macro_auc'",
            )
            .bind(c.id)
            .fetch_one(s.pool())
            .await
            .unwrap();
            assert_eq!(auc_kind, "nan", "no scores: AUC stored as an explicit NaN");
            s.close().await;
        });
    });
}

/// A line on the real standard error, past the test harness's capture, so that
/// a skip shows in `cargo test`'s output even though the test passes.
fn visible(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// A SQLite database at `path` as a Sweep that knew only the migrations up to
/// `version` left it.
async fn older_sqlite(path: &Path, version: i64) -> sqlx::AnyPool {
    use sweep_orchestrator::store::{migrator_through, Backend};
    sqlx::any::install_default_drivers();
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&format!("sqlite://{}?mode=rwc", path.display()))
        .await
        .unwrap();
    migrator_through(Backend::Sqlite, version)
        .run(&pool)
        .await
        .unwrap();
    pool
}

/// The results folder is recorded with the sweep, kept by a run that does not
/// name one, replaced by one that does; a database from before the column
/// (migrations 1–2) is migrated and its sweeps fall back to `results/`.
#[test]
fn the_results_folder_is_recorded_and_older_databases_fall_back() {
    use sweep_orchestrator::query;

    let dir = tempfile::tempdir().unwrap();
    on_both("results_dir", dir.path(), |db| {
        rt().block_on(async {
            let s = Store::open(&db).await.unwrap();
            let mut a = sweep("a");
            a.results_dir = Some("/data/study/results".into());
            s.upsert_sweep(&a).await.unwrap();
            let info = query::sweep(&s, "a").await.unwrap();
            assert_eq!(info.results_dir.as_deref(), Some("/data/study/results"));
            assert_eq!(
                info.results_dir(None),
                Path::new("/data/study/results"),
                "the recorded folder is the default"
            );
            assert_eq!(
                info.results_dir(Some(Path::new("moved"))),
                Path::new("moved"),
                "--results overrides it"
            );
            s.upsert_sweep(&sweep("a")).await.unwrap();
            let info = query::sweep(&s, "a").await.unwrap();
            assert_eq!(info.results_dir.as_deref(), Some("/data/study/results"));
            a.results_dir = Some("/elsewhere/results".into());
            s.upsert_sweep(&a).await.unwrap();
            let info = query::sweep(&s, "a").await.unwrap();
            assert_eq!(info.results_dir.as_deref(), Some("/elsewhere/results"));
            s.close().await;
        })
    });

    // A database written before migration 3.
    let old = dir.path().join("old.db");
    rt().block_on(async {
        let pool = older_sqlite(&old, 2).await;
        sqlx::query("INSERT INTO sweeps (name, spec_path, spec_text, spec_hash, objective, direction, dataset, dataset_fingerprint, tool_version, host, created_at, updated_at) VALUES ('old', 's.toml', '', 'h', 'val.macro_f1', 'maximize', 'synthetic', 'fp', '0', 'h', '2026-01-01', '2026-01-01')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;

        let s = Store::open(DbLocation::Sqlite(old.clone())).await.unwrap();
        let info = query::sweep(&s, "old").await.unwrap();
        assert_eq!(info.results_dir, None);
        assert_eq!(info.results_dir(None), Path::new("results"));
        let err = info.locate("trials/0001/last.safetensors", None).unwrap_err();
        assert!(err.contains("not found in results/old (the default)"), "{err}");
        assert!(err.contains("pass --results DIR"), "{err}");
        s.close().await;
    });
}

/// A database an older Sweep wrote (through migration 4, before the training
/// diagnostics) migrates: its finished trials keep every stored metric and
/// read back with no metrics version, which `compare` uses to say why they
/// have no diagnostics; trials finished after the upgrade are version 2.
#[test]
fn a_database_from_before_diagnostics_keeps_its_trials() {
    use sweep_orchestrator::query;
    use sweep_orchestrator::store::METRICS_VERSION;

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("before-diagnostics.db");
    rt().block_on(async {
        let pool = older_sqlite(&old, 4).await;
        for sql in [
            "INSERT INTO sweeps (id, name, spec_path, spec_text, spec_hash, objective, direction, dataset, dataset_fingerprint, tool_version, host, created_at, updated_at) VALUES (1, 'old', 's.toml', '', 'h', 'val.macro_f1', 'maximize', 'synthetic', 'fp', '0', 'h', '2026-01-01', '2026-01-01')",
            "INSERT INTO trials (id, sweep_id, number, key, config_json, seed, state, created_at, stop_epoch) VALUES (1, 1, 1, 'k1', '{}', 1, 'complete', '2026-01-01', 3)",
            "INSERT INTO trials (id, sweep_id, number, key, config_json, seed, state, created_at) VALUES (2, 1, 2, 'k2', '{}', 1, 'waiting', '2026-01-01')",
            "INSERT INTO final_metrics (trial_id, name, value, value_kind) VALUES (1, 'val.macro_f1', 0.41, 'finite')",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let s = Store::open(DbLocation::Sqlite(old.clone())).await.unwrap();
        let trials = query::trials(&s, 1).await.unwrap();
        assert_eq!(trials[0].metrics_version, None);
        assert_eq!(trials[0].metrics.get("val.macro_f1"), Some(&0.41));
        assert!(!trials[0].metrics.contains_key("speed.epochs_to_95"));
        let note = query::excluded(&trials, "speed.epochs_to_95");
        assert!(
            note.contains("1 recorded before training diagnostics"),
            "{note}"
        );
        assert_eq!(query::excluded(&trials, "val.macro_f1"), "excluded from the aggregates: 1 unfinished");

        // the waiting trial runs under the new Sweep and is recorded as version 2
        let session = s.start_session(1, 1, "h").await.unwrap();
        let c = s.claim_next(1, session, "cpu").await.unwrap().unwrap();
        assert_eq!(c.number, 2);
        assert!(s.finish(c.id, session, &pruned()).await.unwrap());
        let trials = query::trials(&s, 1).await.unwrap();
        assert_eq!(trials[1].metrics_version, Some(METRICS_VERSION));
        assert_eq!(trials[0].metrics_version, None, "old trials are not relabelled");
        s.close().await;
    });
}

/// A pruner judges a configuration, not a lone seed, once per rung (by its
/// first trial to get there): on the mean over its seeds that reached the
/// rung, against the other configurations averaged over those same seeds; and
/// it prunes the configuration whole (its waiting seeds never
/// start, its running ones stop at their next epoch). A grid's configurations
/// are told apart by their swept settings.
#[test]
fn a_pruner_judges_and_prunes_whole_configurations_over_paired_seeds() {
    use sweep_orchestrator::search::{asha::AshaPruner, driver::judge, Decision};
    let dir = tempfile::tempdir().unwrap();
    on_both("configurations", dir.path(), |db| {
        rt().block_on(async {
            let s = Store::open(&db).await.unwrap();
            let id = s.upsert_sweep(&sweep("grid")).await.unwrap();
            // three configurations (dropout) × seeds 1, 2, numbered seed-major
            let configs = [("a", 0.0), ("b", 0.5), ("c", 0.2)];
            let mut trials = Vec::new();
            for seed in [1, 2] {
                for (name, dropout) in configs {
                    let mut t = trial(&format!("{name}{seed}"));
                    t.seed = seed;
                    t.params = vec![
                        ("model.dropout".into(), "float".into(), format!("{dropout:?}"), Some(dropout), true),
                        ("train.seed".into(), "int".into(), seed.to_string(), Some(seed as f64), false),
                    ];
                    trials.push(t);
                }
            }
            assert_eq!(s.add_trials(id, &trials).await.unwrap(), 6);
            let session = s.start_session(id, 1, "h").await.unwrap();
            let mut ids = std::collections::BTreeMap::new();
            for _ in 0..5 {
                let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
                ids.insert(c.number, c.id);
            }
            let (a1, b1, c1, a2, b2) = (ids[&1], ids[&2], ids[&3], ids[&4], ids[&5]);
            let epoch = |trial: i64, e: usize, f1: f64| {
                let s = &s;
                async move {
                    let mut m = metrics();
                    m.epoch = e;
                    m.val_macro_f1 = f1;
                    assert!(s.record_epoch(trial, session, &m).await.unwrap());
                }
            };
            for (t, f1) in [(a1, 0.5), (b1, 0.3), (c1, 0.4), (a2, 0.1), (b2, 0.6)] {
                epoch(t, 1, f1 / 2.0).await;
                epoch(t, 2, f1).await;
            }
            let c_trials = s.configuration_trials(id, c1).await.unwrap();
            assert_eq!(c_trials.len(), 2, "c on seeds 1 and 2: {c_trials:?}");
            assert!(c_trials.contains(&c1));
            let asha = AshaPruner {
                min_epochs: 2,
                reduction_factor: 2,
            };
            let j = |trial: i64, conf: Vec<i64>, e: usize| {
                let (s, asha) = (&s, &asha);
                async move {
                    judge(s, asha, id, trial, &conf, e, 10, "val.macro_f1", true)
                        .await
                        .unwrap()
                }
            };
            // c has reached epoch 2 on seed 1 only: against a and b on seed 1
            // (0.5, 0.3) its 0.4 is not the best one of three
            let Decision::Prune(why) = j(c1, c_trials.clone(), 2).await else {
                panic!("c is not the best of three on seed 1")
            };
            assert!(why.contains("top 1 of 3 configurations"), "{why}");
            assert!(why.ends_with("compared by their mean over seed 1"), "{why}");
            // its seed 2 had not started: it never will
            let (state, epoch_at, detail): (String, Option<i64>, Option<String>) =
                sqlx::query_as("SELECT state, stop_epoch, stop_detail FROM trials WHERE number = 6")
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            assert_eq!((state.as_str(), epoch_at), ("pruned", Some(0)));
            assert!(detail.unwrap().contains("its seed 1 was pruned at epoch 2"));
            // a's seed 1 reached epoch 2 first: a's seed 2 is not tested again
            let a_trials = s.configuration_trials(id, a2).await.unwrap();
            assert_eq!(j(a2, a_trials.clone(), 2).await, Decision::Continue);
            // a judged by its first trial, now on both its seeds: mean 0.3
            // against b's 0.45 (c has nothing on seed 2 and is left out), though
            // a's seed 1 alone (0.5) was the best
            let Decision::Prune(why) = j(a1, a_trials.clone(), 2).await else {
                panic!("a's mean over seeds 1 and 2 is the worse one")
            };
            assert!(why.contains("top 1 of 2 configurations"), "{why}");
            assert!(why.contains("mean over seeds 1, 2"), "{why}");
            let b_trials = s.configuration_trials(id, b2).await.unwrap();
            assert_eq!(j(b1, b_trials, 2).await, Decision::Continue);
            // once a's seed 1 is recorded as pruned, a's seed 2 stops at its next
            // epoch, whether or not the rule looks at that epoch
            let mut f = pruned();
            f.stop_reason = "pruned".into();
            f.stop_epoch = Some(2);
            f.stop_detail = Some(why);
            assert!(s.finish(a1, session, &f).await.unwrap());
            epoch(a2, 3, 0.15).await;
            let Decision::Prune(why) = j(a2, a_trials, 3).await else {
                panic!("a's seed 2 goes on after a was pruned")
            };
            assert_eq!(
                why,
                "pruned with its configuration: trial 1 (seed 1) of the same configuration was pruned at epoch 2"
            );
            s.close().await;
        })
    });
}

#[test]
fn leases_are_written_by_the_database_clock() {
    let dir = tempfile::tempdir().unwrap();
    on_both("clock", dir.path(), |db| {
        rt().block_on(async {
            let s = Store::open(&db).await.unwrap().with_lease(90.0);
            let id = s.upsert_sweep(&sweep("c")).await.unwrap();
            let session = s.start_session(id, 1, "h").await.unwrap();
            assert!(s.heartbeat(session).await.unwrap());
            let (beat, expires): (String, String) = sqlx::query_as(
                "SELECT heartbeat_at, lease_expires_at FROM sessions WHERE id = $1",
            )
            .bind(session)
            .fetch_one(s.pool())
            .await
            .unwrap();
            // the database's own idea of now, in the same text
            let server_now: (String,) = sqlx::query_as(match s.backend() {
                sweep_orchestrator::store::Backend::Sqlite => {
                    "SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
                }
                sweep_orchestrator::store::Backend::Postgres => {
                    "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"')"
                }
            })
            .fetch_one(s.pool())
            .await
            .unwrap();
            let secs = |t: &str| sweep_orchestrator::query::seconds_since(t).unwrap();
            assert!((secs(&beat) - secs(&server_now.0)).abs() < 5.0, "{beat} vs {}", server_now.0);
            let lease = secs(&beat) - secs(&expires);
            assert!((lease - 90.0).abs() < 1.0, "{beat} → {expires}");
            // a session that beat just now is not taken over; one whose lease
            // the database says has passed is
            let t = trial("t1");
            s.add_trials(id, &[t]).await.unwrap();
            let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            let other = s.start_session(id, 2, "h2").await.unwrap();
            assert_eq!(s.reclaim_stale(id, other, 90.0).await.unwrap(), 0);
            sqlx::query("UPDATE sessions SET lease_expires_at = '2000-01-01T00:00:00.000Z' WHERE id = $1")
                .bind(session)
                .execute(s.pool())
                .await
                .unwrap();
            assert_eq!(s.reclaim_stale(id, other, 90.0).await.unwrap(), 1);
            let (state,): (String,) = sqlx::query_as("SELECT state FROM trials WHERE id = $1")
                .bind(c.id)
                .fetch_one(s.pool())
                .await
                .unwrap();
            assert_eq!(state, "waiting");
        })
    });
}

/// A grid's waiting trials are stored as their difference from a base that
/// they share (migration 0006), with rows for their swept settings only; the
/// claim writes the whole configuration and every setting's row, so a trial
/// that ran reads as before. Queries see every trial's whole configuration.
#[test]
fn waiting_trials_are_stored_as_differences_and_claimed_whole() {
    use std::sync::Arc;
    use sweep_orchestrator::query;
    use sweep_orchestrator::store::compact::{self, ConfigBase};

    let base = serde_json::json!({
        "model": {"dropout": 0.0, "hidden": [16]},
        "train": {"seed": 1, "learning_rate": 0.001, "early_stopping": null}
    });
    let row = Arc::new(ConfigBase {
        hash: "base1".into(),
        json: base.to_string(),
    });
    let mut whole1 = base.clone();
    whole1["model"]["dropout"] = serde_json::json!(0.5);
    let mut whole2 = base.clone();
    whole2["train"]["seed"] = serde_json::json!(2);
    whole2["train"]["early_stopping"] = serde_json::json!({"patience": 3});
    let stored = |key: &str, whole: &serde_json::Value, dropout: f64| {
        let mut t = trial(key);
        t.config_json = compact::stored_difference(whole, &base).unwrap();
        t.base = Some(Arc::clone(&row));
        t.params = vec![(
            "model.dropout".into(),
            "float".into(),
            format!("{dropout:?}"),
            Some(dropout),
            true,
        )];
        t
    };
    let dir = tempfile::tempdir().unwrap();
    on_both("differences", dir.path(), |db| {
        rt().block_on(async {
            let s = Store::open(&db).await.unwrap();
            let id = s.upsert_sweep(&sweep("grid")).await.unwrap();
            let trials = [stored("k1", &whole1, 0.5), stored("k2", &whole2, 0.0)];
            assert_eq!(trials[0].config_json, r#"{"model":{"dropout":0.5}}"#);
            assert_eq!(s.add_trials(id, &trials).await.unwrap(), 2);
            // a rerun adds nothing, not even a second base
            assert_eq!(s.add_trials(id, &trials).await.unwrap(), 0);
            let count = |sql: &'static str| {
                let s = &s;
                async move {
                    let (n,): (i64,) = sqlx::query_as(sql).fetch_one(s.pool()).await.unwrap();
                    n
                }
            };
            assert_eq!(count("SELECT COUNT(*) FROM config_bases").await, 1);
            assert_eq!(count("SELECT COUNT(*) FROM trial_params").await, 2);
            assert_eq!(count("SELECT COUNT(*) FROM trials WHERE base_id IS NOT NULL").await, 2);
            // every query sees the whole configuration of a waiting trial
            let rows = query::trials(&s, id).await.unwrap();
            let parsed = |t: &str| serde_json::from_str::<serde_json::Value>(t).unwrap();
            assert_eq!(parsed(&rows[0].config_json()), whole1);
            assert_eq!(parsed(&rows[1].config_json()), whole2);
            assert_eq!(rows[0].params["model.dropout"], "0.5");

            // claimed: whole, in the row and in the worker's hands
            let session = s.start_session(id, 1, "h").await.unwrap();
            let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            assert_eq!(c.key, "k1");
            assert_eq!(parsed(&c.config_json), whole1);
            let (text, base_id): (String, Option<i64>) =
                sqlx::query_as("SELECT config_json, base_id FROM trials WHERE id = $1")
                    .bind(c.id)
                    .fetch_one(s.pool())
                    .await
                    .unwrap();
            assert_eq!(parsed(&text), whole1);
            assert_eq!(base_id, None);
            let params: Vec<(String, String, i64)> = sqlx::query_as(
                "SELECT name, value_text, swept FROM trial_params WHERE trial_id = $1 ORDER BY name",
            )
            .bind(c.id)
            .fetch_all(s.pool())
            .await
            .unwrap();
            let shown: Vec<(&str, &str, i64)> = params
                .iter()
                .map(|(n, v, s)| (n.as_str(), v.as_str(), *s))
                .collect();
            assert_eq!(
                shown,
                [
                    ("model.dropout", "0.5", 1),
                    ("model.hidden", "[16]", 0),
                    ("train.early_stopping", "none", 0),
                    ("train.learning_rate", "0.001", 0),
                    ("train.seed", "1", 0),
                ]
            );
            // the second, with a setting that is a table where the base has none
            let c = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
            assert_eq!(parsed(&c.config_json), whole2);
            assert_eq!(count("SELECT COUNT(*) FROM trials WHERE base_id IS NOT NULL").await, 0);
            s.close().await;
        });
    });
}
