//! Runs the real `sweep` binary in a temporary folder.

use std::path::Path;
use std::process::{Command, Output};

fn sweep(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run sweep")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

const CONFIG: &str = r#"
[data]
image_size = 12
[data.synthetic]
classes = 3
per_class = 30
image_size = 12
[model]
hidden = [32]
[train]
epochs = 3
batch_size = 16
seed = 4
"#;

#[test]
fn train_prints_epochs_report_and_confusion_matrix() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), CONFIG).unwrap();
    let o = sweep(&["train", "t.toml", "--out", "ckpt"], dir.path());
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(
        out.contains("3 classes, 72 training / 18 validation images"),
        "{out}"
    );
    assert!(
        out.contains("epoch  train_loss  train_acc  val_loss  val_acc  val_macro_f1"),
        "{out}"
    );
    for e in 1..=3 {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(&format!("{e} "))),
            "epoch {e} row missing:\n{out}"
        );
    }
    assert!(out.contains("completed 3 epochs"), "{out}");
    for needle in [
        "precision  recall  f1-score  support",
        "macro avg",
        "weighted avg",
        "balanced accuracy",
        "macro AUC (ovr)",
        "confusion matrix",
        "class00",
        "class02",
    ] {
        assert!(out.contains(needle), "missing {needle:?}:\n{out}");
    }
    // the confusion matrix rows add up to the validation size
    let rows: u64 = out
        .lines()
        .skip_while(|l| !l.starts_with("confusion matrix"))
        .skip(2)
        .take(3)
        .map(|l| {
            l.split_whitespace()
                .skip(2)
                .map(|v| v.parse::<u64>().unwrap())
                .sum::<u64>()
        })
        .sum();
    assert_eq!(rows, 18);
    assert!(dir.path().join("ckpt/best.safetensors").is_file());
    assert!(dir.path().join("ckpt/config.json").is_file());
}

#[test]
fn json_output_is_machine_readable() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("t.toml"), CONFIG).unwrap();
    let o = sweep(&["train", "t.toml", "--json", "--epochs", "1"], dir.path());
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["epochs"].as_array().unwrap().len(), 1);
    assert_eq!(v["stop"]["reason"], "epoch_limit");
    assert!(v["report"]["macro_f1"].is_number());
}

#[test]
fn bad_config_names_file_line_and_key_and_does_no_work() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        CONFIG.replace("hidden = [32]", "hidden = [32]\ndropout = 1.5"),
    )
    .unwrap();
    let o = sweep(&["train", "bad.toml", "--out", "ckpt"], dir.path());
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        err.contains("bad.toml:10: `model.dropout` must be in [0, 1), got 1.5"),
        "{err}"
    );
    assert!(out.is_empty(), "no work may start: {out}");
    assert!(!dir.path().join("ckpt").exists());

    std::fs::write(
        dir.path().join("typo.toml"),
        CONFIG.replace("epochs = 3", "epoch = 3"),
    )
    .unwrap();
    let (_, err) = text(&sweep(&["train", "typo.toml"], dir.path()));
    assert!(
        err.contains("typo.toml:")
            && err.contains("unknown field `epoch`")
            && err.contains("did you mean `epochs`"),
        "{err}"
    );

    let (_, err) = text(&sweep(&["train", "missing.toml"], dir.path()));
    assert!(err.contains("missing.toml"), "{err}");
}

#[test]
fn missing_data_root_is_named() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("t.toml"),
        "[data]\nroot = \"no/such/folder\"\n",
    )
    .unwrap();
    let o = sweep(&["train", "t.toml"], dir.path());
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(
        err.contains("no/such/folder") && err.contains("t.toml"),
        "{err}"
    );
}

#[test]
fn zero_jobs_or_threads_is_refused_before_any_work() {
    let dir = tempfile::tempdir().unwrap();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/demo.toml");
    for flag in ["--jobs", "--threads"] {
        let o = sweep(&["run", spec, flag, "0"], dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{flag}: {err}");
        assert!(
            err.contains("--threads") && err.contains("at least 1"),
            "{err}"
        );
        assert!(
            !dir.path().join("results").exists(),
            "{flag} 0 created results"
        );
    }
}

/// The default build is CPU only: asking for a GPU says how to get a CUDA build;
/// a malformed device is named.
#[test]
fn cuda_devices_need_a_cuda_build_and_well_formed_names() {
    let dir = tempfile::tempdir().unwrap();
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/demo.toml");
    let o = sweep(&["run", spec, "--devices", "cuda:zero"], dir.path());
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert!(err.contains("`cuda:zero` is not cuda:N"), "{err}");
    if !cfg!(feature = "cuda") {
        let o = sweep(&["run", spec, "--devices", "cuda:0"], dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            err.contains("--features cuda") && err.contains("scripts/build-cuda"),
            "{err}"
        );
        let cfg = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sweeps/demo-train.toml");
        let o = sweep(&["train", cfg, "--device", "cuda:0"], dir.path());
        let (_, err) = text(&o);
        assert!(!o.status.success() && err.contains("cuda:0"), "{err}");
    }
    assert!(!dir.path().join("results").exists());
}

#[test]
fn a_runaway_grid_is_refused_with_its_count_before_anything_is_expanded() {
    let dir = tempfile::tempdir().unwrap();
    // 10^4 × 20^2 × 5 seeds = 2,000,000 trials; 30 values of a sixth key
    // make it 60,000,000, and a seventh 10^15: none is ever expanded.
    let values = |n: usize, scale: f64| {
        (1..=n)
            .map(|i| format!("{}", i as f64 * scale))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let spec = format!(
        "name = \"huge\"\nseeds = [1, 2, 3, 4, 5]\n[data.synthetic]\nclasses = 3\nper_class = 10\nimage_size = 8\n[grid]\n\
         train.learning_rate = [{}]\ntrain.weight_decay = [{}]\nmodel.dropout = [{}]\n\
         train.batch_size = [{}]\ntrain.epochs = [{}]\ndata.augmentation.probability = [{}]\n\
         [[exclude]]\nmodel.dropout = 0.1\n",
        values(10, 1e-3),
        values(10, 1e-4),
        values(9, 0.1),
        values(20, 1.0),
        values(20, 1.0),
        values(10, 0.1),
    );
    std::fs::write(dir.path().join("huge.toml"), spec).unwrap();
    for args in [
        &["run", "huge.toml", "--dry-run"][..],
        &["run", "huge.toml"][..],
    ] {
        let t = std::time::Instant::now();
        let o = sweep(args, dir.path());
        let (_, err) = text(&o);
        assert_eq!(o.status.code(), Some(2), "{err}");
        assert!(
            t.elapsed() < std::time::Duration::from_secs(5),
            "{:?}",
            t.elapsed()
        );
        // Counted, not expanded: the exclusion drops one dropout in nine, and
        // the augmentation probability has no effect without augmentations
        // (its ten values are one trial).
        assert!(
            err.contains("the grid has 1600000 trials (data.augmentation.probability 10 × model.dropout 9 × train.batch_size 20 × train.epochs 20 × train.learning_rate 10 × train.weight_decay 10 × 5 seed(s), after exclusions and de-duplication), more than --max-trials 100000")
                && err.contains("[search] method = \"random\" or \"tpe\""),
            "{err}"
        );
    }
    // A dry run says how many and shows the first trials, whatever the size.
    let t = std::time::Instant::now();
    let o = sweep(
        &["run", "huge.toml", "--dry-run", "--max-trials", "2000000"],
        dir.path(),
    );
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(t.elapsed() < std::time::Duration::from_secs(5));
    assert!(
        out.contains("sweep `huge`: 1600000 trials (320000 configurations × 5 seeds, after exclusions and de-duplication)")
            && out.contains("model.dropout=0.2 train.batch_size=1 train.epochs=1 train.learning_rate=0.001 train.weight_decay=0.0001\n")
            && out.contains("trial 5 (seed 5)")
            && !out.contains("trial 6 ")
            && out.contains("... and 1599995 more"),
        "{out}"
    );
    assert!(!dir.path().join("results").exists(), "nothing recorded");
    // --max-trials holds small grids to a limit too, and raises it on purpose
    std::fs::write(
        dir.path().join("small.toml"),
        "name = \"small\"\nseeds = [1, 2]\n[data.synthetic]\nclasses = 3\nper_class = 10\nimage_size = 8\n[grid]\nmodel.dropout = [0.0, 0.5]\n",
    )
    .unwrap();
    let o = sweep(
        &["run", "small.toml", "--dry-run", "--max-trials", "3"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).1.contains("the grid has 4 trials"),
        "{}",
        text(&o).1
    );
    let o = sweep(
        &["run", "small.toml", "--dry-run", "--max-trials", "4"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o).1);
    assert!(text(&o).0.contains("4 trials"), "{}", text(&o).0);
}
