//! Training diagnostics through the real binary on real images (the digits
//! set): stored per trial, compared over seeds like any metric, shown per
//! trial, and absent (and said to be) for trials an older Sweep recorded.

mod common;

use std::collections::BTreeMap;

use common::{stdout, sweep};

/// Few images per class (9 to train on, 3 to validate), a wide MLP, 40 epochs:
/// without regularization it memorizes its 90 training images; dropout, weight
/// decay and augmentation are swept.
const SPEC: &str = r#"
name = "gap"
seeds = [1, 2]
objective = "val.accuracy"
[data]
root = "ROOT"
image_size = 8
channels = 1
max_per_class = 12
val_fraction = 0.25
[model]
hidden = [256, 128]
init = "kaiming_normal"
[train]
epochs = 40
batch_size = 16
learning_rate = 1e-3
optimizer = "adamw"
[grid]
model.dropout = [0.0, 0.5]
train.weight_decay = [0.0, 0.5]
data.augment = [[], ["shift_scale_rotate"]]
"#;

/// Mean of a column per configuration (dropout, weight decay, augment) from
/// the per-trial export.
fn means(rows: &[Vec<String>], metric: &str) -> BTreeMap<(String, String, String), f64> {
    let h = &rows[0];
    let col = |name: &str| {
        h.iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {h:?}"))
    };
    let mut by: BTreeMap<(String, String, String), Vec<f64>> = BTreeMap::new();
    for r in &rows[1..] {
        by.entry((
            r[col("model.dropout")].clone(),
            r[col("train.weight_decay")].clone(),
            r[col("data.augment")].clone(),
        ))
        .or_default()
        .push(r[col(metric)].parse().unwrap());
    }
    by.into_iter()
        .map(|(k, v)| (k, v.iter().sum::<f64>() / v.len() as f64))
        .collect()
}

#[test]
fn regularization_closes_the_generalization_gap_and_compare_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let spec = SPEC.replace("ROOT", &common::data::digits().display().to_string());
    std::fs::write(dir.path().join("gap.toml"), spec).unwrap();
    stdout(&sweep(dir.path(), &["run", "gap.toml", "--jobs", "2"]));

    let export = stdout(&sweep(
        dir.path(),
        &["export", "gap", "--table", "trials", "--format", "csv"],
    ));
    let rows: Vec<Vec<String>> = export
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    assert_eq!(rows.len(), 17);
    for name in [
        "speed.epochs_to_95",
        "speed.seconds_to_95",
        "stability.batch_loss_std",
        "overfit.loss_gap_best",
        "init.loss",
        "init.hidden0.dead_share",
        "epoch1.output.gradient_norm",
        "val.f1.3",
        "val.recall.9",
    ] {
        assert!(rows[0].iter().any(|c| c == name), "no {name} in the export");
    }
    // (the export's CSV quotes the list: `"[""shift_scale_rotate""]"`)
    let plain = ("0.0".to_string(), "0.0".to_string(), "[]".to_string());
    let regularized = (
        "0.5".to_string(),
        "0.5".to_string(),
        "\"[\"\"shift_scale_rotate\"\"]\"".to_string(),
    );
    for metric in ["overfit.loss_gap_last", "overfit.accuracy_gap_last"] {
        let m = means(&rows, metric);
        eprintln!("{metric}: {m:?}");
        assert!(
            m[&plain] > m[&regularized] + 0.02,
            "{metric}: plain {} vs dropout + weight decay + augmentation {}",
            m[&plain],
            m[&regularized]
        );
    }
    // the memorizing MLP: its training loss ends far below its validation loss
    assert!(means(&rows, "overfit.loss_gap_last")[&plain] > 0.05);

    // compare ranks a diagnostic in its own direction (a smaller gap first),
    // with a baseline test and main effects like any metric
    let cmp = stdout(&sweep(
        dir.path(),
        &["compare", "gap", "--metric", "overfit.loss_gap_last"],
    ));
    let first = cmp.lines().nth(1).unwrap();
    assert!(first.contains("0.5") && first.contains("best"), "{cmp}");
    let base = stdout(&sweep(
        dir.path(),
        &[
            "compare",
            "gap",
            "--metric",
            "overfit.loss_gap_last",
            "--rows",
            "model.dropout",
            "--baseline",
            "model.dropout=0.0",
            "--format",
            "csv",
        ],
    ));
    assert!(base.lines().next().unwrap().contains("p_value"), "{base}");
    let effects = stdout(&sweep(
        dir.path(),
        &[
            "compare",
            "gap",
            "--metric",
            "speed.epochs_to_95",
            "--effects",
        ],
    ));
    assert!(effects.contains("model.dropout"), "{effects}");
    let sorted = stdout(&sweep(
        dir.path(),
        &[
            "trials",
            "gap",
            "--sort",
            "overfit.val_loss_rise",
            "--limit",
            "3",
        ],
    ));
    assert_eq!(sorted.lines().count(), 4, "{sorted}");

    // one trial's diagnostics
    let show = stdout(&sweep(dir.path(), &["show", "gap", "1"]));
    for part in [
        "training diagnostics",
        "speed.epochs_to_95",
        "overfit.loss_gap_last",
        "init.loss_over_chance",
        "layer health",
        "hidden1",
    ] {
        assert!(show.contains(part), "no {part} in show:\n{show}");
    }

    // the report answers the same questions with charts and a health table
    let report = std::fs::read_to_string(dir.path().join("results/gap/report.html")).unwrap();
    let diag = &report[report
        .find("<h2>Training diagnostics</h2>")
        .expect("a diagnostics section")..];
    let diag = &diag[..diag[4..].find("<h2>").map_or(diag.len(), |i| i + 4)];
    for part in [
        "How fast?",
        "How much overfitting?",
        "How smooth?",
        "Initialization health",
        "all trials",
        "<td>hidden1</td>",
    ] {
        assert!(diag.contains(part), "no {part} in the diagnostics section");
    }
    // one effect chart per swept setting for each of the three questions
    assert_eq!(diag.matches("<svg").count(), 9, "{diag}");

    // A database an older Sweep wrote: no metrics version, no diagnostics for
    // some trials. compare says why they are left out; show says there are none.
    let db = dir.path().join("results/sweep.db");
    let rt = tokio_runtime();
    rt.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}", db.display());
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE trials SET metrics_version = NULL WHERE number <= 4")
            .execute(&mut c)
            .await
            .unwrap();
        sqlx::query("DELETE FROM final_metrics WHERE trial_id IN (SELECT id FROM trials WHERE number <= 4) AND (name LIKE 'speed.%' OR name LIKE 'overfit.%' OR name LIKE 'stability.%' OR name LIKE 'init.%' OR name LIKE 'epoch1.%' OR name LIKE 'val.f1.%' OR name LIKE 'val.recall.%')")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let o = sweep(
        dir.path(),
        &["compare", "gap", "--metric", "speed.epochs_to_95"],
    );
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "{all}");
    assert!(
        all.contains("4 recorded before training diagnostics"),
        "{all}"
    );
    let old = stdout(&sweep(dir.path(), &["show", "gap", "2"]));
    assert!(
        old.contains("training diagnostics: none (the trial was recorded by an older Sweep)"),
        "{old}"
    );
}

fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
