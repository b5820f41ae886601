//! Measurements for `scripts/bench-sweep`: the store's write path. Returns numbers,
//! prints nothing.

use std::time::Instant;

use sweep_train::EpochMetrics;

use crate::error::Result;
use crate::store::{DbLocation, NewSweep, NewTrial, Store};

/// Writes `epochs` epochs of metrics (10 rows each) for each of `trials` trials into
/// a fresh database, as `sweep run` does (one transaction per epoch). Returns rows
/// per second.
pub async fn epoch_rows_per_second(db: &DbLocation, trials: usize, epochs: usize) -> Result<f64> {
    let store = Store::open(db).await?;
    let id = store
        .upsert_sweep(&NewSweep {
            name: "bench".into(),
            description: None,
            spec_path: String::new(),
            spec_text: String::new(),
            spec_hash: String::new(),
            objective: "val.macro_f1".into(),
            direction: "maximize".into(),
            dataset: "bench".into(),
            dataset_fingerprint: "0".into(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: None,
            results_dir: None,
            host: "bench".into(),
        })
        .await?;
    let new: Vec<NewTrial> = (0..trials)
        .map(|i| NewTrial {
            key: format!("k{i}"),
            config_json: "{}".into(),
            seed: i as u64,
            params: vec![],
        })
        .collect();
    store.add_trials(id, &new).await?;
    let session = store.start_session(id, 0, "bench").await?;
    let mut rows = 0usize;
    let t0 = Instant::now();
    while let Some(c) = store.claim_next(id, session, "cpu").await? {
        for e in 1..=epochs {
            let m = EpochMetrics {
                epoch: e,
                train_loss: 1.0 / e as f64,
                train_accuracy: 0.5,
                val_loss: 1.1 / e as f64,
                val_accuracy: 0.5,
                val_macro_f1: 0.4,
                val_balanced_accuracy: 0.45,
                learning_rate: 1e-3,
                seconds: 0.1,
                data_seconds: 0.01,
                step_seconds: 0.08,
            };
            store.record_epoch(c.id, session, &m).await?;
            rows += crate::store::epoch_rows(&m).len();
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    store.close().await;
    Ok(rows as f64 / secs)
}
