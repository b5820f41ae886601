//! The same configuration, seed and data give bit-identical numbers on any
//! thread count (issue #22): through `sweep train` on 1, 2, 3, 4 and 8
//! threads (more than this machine's cores), and through `sweep run` with
//! other `--jobs` and `--threads`, on the real digits images with a CNN that
//! has batch-norm, dropout and augmentation, and a batch size that is not a
//! multiple of the engine's gradient groups.

mod common;

use std::path::Path;
use std::process::Command;

use common::{stdout, sweep};

const CONFIG: &str = r#"
[data]
root = "ROOT"
image_size = 16
channels = 1
augment = ["hflip", "brightness_contrast"]
[model]
arch = "cnn"
conv_channels = [6, 12]
hidden = [24]
batch_norm = true
dropout = 0.25
[train]
epochs = 2
batch_size = 50
seed = 4
"#;

/// The outcome without its timings and paths.
fn numbers(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.retain(|k, _| !k.contains("seconds") && !k.contains("checkpoint"));
            m.values_mut().for_each(numbers);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(numbers),
        _ => {}
    }
}

/// `sweep train` of `config` on each thread count: the same metrics and the
/// same checkpoint bytes as on the first.
fn same_on(config: &str, threads: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("c.toml"), config).unwrap();
    let mut reference: Option<(serde_json::Value, Vec<u8>)> = None;
    for threads in threads {
        let out = format!("ck{threads}");
        let o = Command::new(env!("CARGO_BIN_EXE_sweep"))
            .args(["train", "c.toml", "--json", "--out", &out])
            .current_dir(dir.path())
            .env("RAYON_NUM_THREADS", threads)
            .output()
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        numbers(&mut v);
        assert!(!v["epochs"].as_array().unwrap().is_empty());
        let weights = std::fs::read(dir.path().join(&out).join("best.safetensors")).unwrap();
        match &reference {
            None => reference = Some((v, weights)),
            Some((r, w)) => {
                assert!(
                    r == &v,
                    "metrics on {threads} threads differ from the first run"
                );
                assert!(
                    *w == weights,
                    "the checkpoint on {threads} threads differs from the first run"
                );
            }
        }
    }
}

#[test]
fn sweep_train_gives_the_same_numbers_and_weights_on_any_thread_count() {
    let root = common::data::digits();
    same_on(
        &CONFIG.replace("ROOT", &root.display().to_string()),
        &["1", "2", "3", "4", "8"],
    );
}

/// The issue's case: a skin-lesion CNN with batch-norm, dropout and
/// augmentation (one epoch at 32 px), on 1 and 3 threads.
#[test]
fn a_skin_cnn_gives_the_same_numbers_on_one_and_three_threads() {
    let Some(root) = common::data::shared_data("skin") else {
        return;
    };
    let config = CONFIG
        .replace("ROOT", &root.display().to_string())
        .replace(
            "image_size = 16\nchannels = 1",
            "image_size = 32\nchannels = 3",
        )
        .replace("conv_channels = [6, 12]", "conv_channels = [16, 32]")
        .replace("epochs = 2", "epochs = 1");
    assert!(config.contains("channels = 3"));
    same_on(&config, &["1", "3"]);
}

fn rows(db: &Path) -> Vec<(String, String, String, i64, f64)> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let s = sweep_orchestrator::store::Store::open_read_only(db).await.unwrap();
            let mut rows: Vec<(String, String, String, i64, f64)> = sqlx::query_as(
                "SELECT t.key, m.split, m.name, m.epoch, m.value FROM epoch_metrics m JOIN trials t ON t.id = m.trial_id \
                 WHERE m.split <> 'time' AND m.value IS NOT NULL ORDER BY t.key, m.split, m.name, m.epoch",
            )
            .fetch_all(s.pool())
            .await
            .unwrap();
            let finals: Vec<(String, String, f64)> = sqlx::query_as(
                "SELECT t.key, f.name, f.value FROM final_metrics f JOIN trials t ON t.id = f.trial_id \
                 WHERE f.value IS NOT NULL AND f.name NOT LIKE 'speed.%seconds%' AND f.name <> 'train_seconds' ORDER BY t.key, f.name",
            )
            .fetch_all(s.pool())
            .await
            .unwrap();
            s.close().await;
            rows.extend(finals.into_iter().map(|(k, n, v)| (k, "final".into(), n, 0, v)));
            rows
        })
}

/// Every trial's TensorBoard scalars (trial, tag, step, value), read back
/// from the event files; the timing tags left out.
fn scalars(tb: &Path) -> Vec<(String, String, String, i64, f64)> {
    use sweep_tensorboard::proto::{EventWhat, ValueKind};
    let mut out = Vec::new();
    for trial in std::fs::read_dir(tb).unwrap() {
        let trial = trial.unwrap().path();
        let name = trial.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with('_') {
            continue;
        }
        for file in std::fs::read_dir(trial.join("attempt-1")).unwrap() {
            for e in sweep_tensorboard::read_events(&file.unwrap().path()).unwrap() {
                if let Some(EventWhat::Summary(s)) = &e.what {
                    for v in &s.value {
                        if let Some(ValueKind::SimpleValue(x)) = &v.value {
                            if !v.tag.starts_with("time") {
                                out.push((
                                    name.clone(),
                                    "tb".into(),
                                    v.tag.clone(),
                                    e.step,
                                    f64::from(*x),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(!out.is_empty(), "no scalars under {}", tb.display());
    out.sort_by(|a, b| (&a.0, &a.2, a.3).cmp(&(&b.0, &b.2, b.3)));
    out
}

#[test]
fn sweep_run_gives_the_same_numbers_with_other_jobs_and_threads() {
    let root = common::data::digits();
    let spec = format!(
        "name = \"same\"\nseeds = [1, 2]\n{}[grid]\nmodel.dropout = [0.0, 0.25]\n",
        CONFIG
            .replace("ROOT", &root.display().to_string())
            .replace("seed = 4\n", "")
            .replace("dropout = 0.25\n", "")
    );
    let mut reference = None;
    for (jobs, threads) in [("2", "1"), ("1", "3")] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("s.toml"), &spec).unwrap();
        stdout(&sweep(
            dir.path(),
            &["run", "s.toml", "--jobs", jobs, "--threads", threads],
        ));
        let mut got = rows(&dir.path().join("results/sweep.db"));
        got.extend(scalars(&dir.path().join("results/same/tensorboard")));
        assert!(got.len() > 4 * 20, "{}", got.len());
        let shown = stdout(&sweep(dir.path(), &["show", "same", "1"]));
        assert!(
            shown.contains("numbers: thread-independent (metrics version 3)"),
            "{shown}"
        );
        match &reference {
            None => reference = Some(got),
            Some(r) => {
                let differ: Vec<_> = r.iter().zip(&got).filter(|(a, b)| a != b).take(3).collect();
                assert!(
                    r.len() == got.len() && differ.is_empty(),
                    "--jobs {jobs} --threads {threads}: {differ:?}"
                );
            }
        }
    }
}
