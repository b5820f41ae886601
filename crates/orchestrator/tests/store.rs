//! The store on real SQLite files: migrations, guarded state transitions, explicit
//! NaN, read-only access refusing writes.

use std::path::Path;

use sweep_orchestrator::store::{Finish, NewSweep, NewTrial, Store, TrialState, MIGRATIONS};
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
        host: "h".into(),
    }
}

fn trial(key: &str) -> NewTrial {
    NewTrial {
        key: key.into(),
        config_json: "{}".into(),
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

#[test]
fn every_migration_file_is_embedded() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    files.sort();
    let embedded: Vec<String> = MIGRATIONS
        .iter()
        .map(|(v, d, _)| format!("{v:04}_{d}.sql"))
        .collect();
    assert_eq!(files, embedded, "a migration in migrations/ is not listed in store::MIGRATIONS (or misnamed: NNNN_description.sql)");
}

#[test]
fn transitions_are_guarded_and_finishing_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("sub/sweep.db");
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
        // finishing a trial twice, or failing a finished one, changes nothing
        let m = EpochMetrics {
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
        };
        s.record_epoch(c.id, &m).await.unwrap();
        let f = Finish {
            state: TrialState::Pruned,
            stop_reason: "diverged".into(),
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
        };
        s.finish(c.id, &f).await.unwrap();
        assert!(s
            .finish(c.id, &f)
            .await
            .unwrap_err()
            .to_string()
            .contains("changed 0 rows"));
        assert!(s.fail(c.id, "late").await.is_err());
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
        s.record_epoch(c2.id, &m).await.unwrap();
        s.fail(c2.id, "boom").await.unwrap();
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM epoch_metrics WHERE trial_id = ?")
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
        s.interrupt(c3.id).await.unwrap();
        let c4 = s.claim_next(id, session, "cpu").await.unwrap().unwrap();
        assert_eq!((c4.id, c4.attempt), (c2.id, 2));

        // a new session reclaims what an old one left running
        let later = s.start_session(id, 2, "h").await.unwrap();
        assert_eq!(s.reclaim_orphans(id, later).await.unwrap(), 1);
        let counts = s.counts(id).await.unwrap();
        assert_eq!((counts.waiting, counts.pruned, counts.running), (2, 1, 0));
        assert_eq!(s.integrity_check().await.unwrap(), "ok");
        s.close().await;

        // read-only: queries work, writes are refused by SQLite
        let ro = Store::open_read_only(&db).await.unwrap();
        assert_eq!(ro.counts(id).await.unwrap().total(), 3);
        let e = sqlx::query("DELETE FROM trials")
            .execute(ro.pool())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("readonly"), "{e}");
        ro.close().await;
    });
    assert!(rt()
        .block_on(Store::open_read_only(&dir.path().join("none.db")))
        .is_err());
}
