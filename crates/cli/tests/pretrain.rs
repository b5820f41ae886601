//! Pretraining then fine-tuning through the real binary on the real digits:
//! a sweep whose trials start from another sweep's trial (`model.init_from =
//! "SWEEP/N"`) refuses to start until that trial is complete, then loads its
//! checkpoint, stores what it loaded with the trial and shows it.

mod common;

use common::{stdout, sweep};

fn spec(name: &str, root: &str, extra: &str) -> String {
    format!(
        r#"name = "{name}"
seeds = [1]
[data]
root = "{root}"
image_size = 16
channels = 1
[model]
arch = "cnn"
conv_channels = [6]
hidden = [24]
[train]
epochs = 2
batch_size = 64
{extra}
"#
    )
}

#[test]
fn a_sweep_starts_from_another_sweeps_trial_once_it_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let root = common::data::digits().display().to_string();
    std::fs::write(dir.path().join("pre.toml"), spec("pre", &root, "")).unwrap();
    std::fs::write(
        dir.path().join("fine.toml"),
        spec(
            "fine",
            &root,
            "freeze = [\"conv\"]\nfreeze_epochs = 1\n[grid]\nmodel.init_from = [\"none\", \"pre/1\"]\ndata.max_per_class = [6]\n",
        ),
    )
    .unwrap();

    // no such sweep yet: refused, naming the spec, the key and the sweep
    let o = sweep(dir.path(), &["run", "fine.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(
        err.contains("fine.toml")
            && err.contains("model.init_from")
            && err.contains("no sweep named `pre`"),
        "{err}"
    );

    // recorded but not run: still refused, and nothing of `fine` recorded
    stdout(&sweep(
        dir.path(),
        &["run", "pre.toml", "--executor", "none"],
    ));
    let o = sweep(dir.path(), &["run", "fine.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("trial 1 of sweep `pre` is waiting, not complete"),
        "{err}"
    );
    assert_eq!(
        sweep_names(dir.path()),
        ["pre"],
        "the refused sweep recorded nothing"
    );

    // once `pre` has run, `fine` runs: one trial from scratch, one pretrained
    stdout(&sweep(dir.path(), &["run", "pre.toml"]));
    stdout(&sweep(dir.path(), &["run", "fine.toml"]));
    let mut pretrained = 0;
    for n in ["1", "2"] {
        let shown = stdout(&sweep(dir.path(), &["show", "fine", n]));
        if shown.contains("\"init_from\": \"pre/1\"") {
            pretrained += 1;
            assert!(
                shown.contains("pretrained: loaded 6 of 6 tensors from pre/1"),
                "{shown}"
            );
        } else {
            assert!(!shown.contains("pretrained:"), "{shown}");
        }
    }
    assert_eq!(pretrained, 1);

    // a weights file relative to a spec in another folder, run from here: the
    // spec's folder is where it is looked up, and workers get it absolute
    let sub = dir.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    let ck = dir
        .path()
        .join("results/pre/trials/0001/attempt-1/best.safetensors");
    std::fs::copy(&ck, sub.join("pre.safetensors")).unwrap();
    std::fs::write(
        sub.join("base.toml"),
        spec("fromfile", &root, "").replace(
            "hidden = [24]",
            "hidden = [24]\ninit_from = \"pre.safetensors\"",
        ),
    )
    .unwrap();
    stdout(&sweep(dir.path(), &["run", "sub/base.toml"]));
    let shown = stdout(&sweep(dir.path(), &["show", "fromfile", "1"]));
    assert!(
        shown.contains("pretrained: loaded 6 of 6 tensors from /"),
        "{shown}"
    );

    // a sweep cannot wait for itself
    std::fs::write(
        dir.path().join("selfish.toml"),
        spec(
            "selfish",
            &root,
            "[grid]\nmodel.init_from = [\"none\", \"selfish/1\"]\n",
        ),
    )
    .unwrap();
    let o = sweep(dir.path(), &["run", "selfish.toml"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("its own trials"),
        "{err}"
    );
    let sql = stdout(&sweep(
        dir.path(),
        &["sql", "SELECT COUNT(*) AS n FROM trials t JOIN sweeps s ON s.id = t.sweep_id WHERE s.name = 'fine' AND t.init_json IS NOT NULL", "--format", "json"],
    ));
    assert!(sql.contains("\"n\": 1") || sql.contains("\"n\":1"), "{sql}");
}

/// The sweeps of `dir`'s results database, as `sweep ls` lists them.
fn sweep_names(dir: &std::path::Path) -> Vec<String> {
    let out = stdout(&sweep(dir, &["ls", "--format", "json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["sweep"].as_str().unwrap().to_string())
        .collect()
}
