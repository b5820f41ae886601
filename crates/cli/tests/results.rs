//! The query commands on a real sweep database: ls, compare (with a baseline and
//! effects), export, sql (read-only), and reading while a sweep runs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::{stdout, sweep};

const SPEC: &str = r#"
name = "q"
seeds = [1, 2, 3]
[data]
image_size = 12
[data.synthetic]
classes = 3
per_class = 20
image_size = 12
[model]
hidden = [32]
[train]
epochs = 3
batch_size = 16
[grid]
model.dropout = [0.0, 0.5]
"#;

fn csv(text: &str) -> Vec<Vec<String>> {
    text.lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn query_commands_answer_from_the_database() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), SPEC).unwrap();
    stdout(&sweep(dir.path(), &["run", "s.toml", "--jobs", "2"]));

    let ls = stdout(&sweep(dir.path(), &["ls"]));
    assert!(ls.lines().nth(1).unwrap().starts_with("q "), "{ls}");
    assert!(ls.contains("val.macro_f1 (maximize)"), "{ls}");

    // the per-trial export is the ground truth for the comparison
    let trials = csv(&stdout(&sweep(
        dir.path(),
        &["export", "q", "--table", "trials", "--format", "csv"],
    )));
    let h = &trials[0];
    let col = |name: &str| {
        h.iter()
            .position(|c| c == name)
            .unwrap_or_else(|| panic!("no column {name} in {h:?}"))
    };
    assert_eq!(trials.len(), 7);
    let mut by: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for r in &trials[1..] {
        assert_eq!(r[col("state")], "complete");
        by.entry(r[col("model.dropout")].clone())
            .or_default()
            .push(r[col("val.macro_f1")].parse().unwrap());
        assert!(r[col("checkpoint")].ends_with(".safetensors"));
    }
    let cmp = csv(&stdout(&sweep(
        dir.path(),
        &["compare", "q", "--format", "csv", "--ci"],
    )));
    assert_eq!(
        cmp[0],
        [
            "rank",
            "model.dropout",
            "mean",
            "std",
            "n",
            "min",
            "max",
            "ci95_low",
            "ci95_high",
            "p_vs_best_holm"
        ]
    );
    assert_eq!(cmp.len(), 3);
    assert_eq!(cmp[1][9], "", "the best is not tested against itself");
    let p: f64 = cmp[2][9].parse().unwrap();
    assert!((0.0..=1.0).contains(&p), "{p}");
    for r in &cmp[1..] {
        let v = &by[&r[1]];
        let mean = v.iter().sum::<f64>() / 3.0;
        let std = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 2.0).sqrt();
        assert!(
            (r[2].parse::<f64>().unwrap() - mean).abs() < 1e-12,
            "{r:?} vs {v:?}"
        );
        assert!((r[3].parse::<f64>().unwrap() - std).abs() < 1e-12);
        assert_eq!(r[4], "3");
        let (lo, hi): (f64, f64) = (r[7].parse().unwrap(), r[8].parse().unwrap());
        // t(0.975, 2) = 4.302652729911275 (scipy.stats.t.ppf)
        assert!((hi - lo - 2.0 * 4.302_652_729_911_275 * std / 3f64.sqrt()).abs() < 1e-6);
    }
    assert!(
        cmp[1][2].parse::<f64>().unwrap() >= cmp[2][2].parse::<f64>().unwrap(),
        "ranked best first"
    );

    let base: serde_json::Value = serde_json::from_str(&stdout(&sweep(
        dir.path(),
        &[
            "compare",
            "q",
            "--baseline",
            "model.dropout=0.0",
            "--format",
            "json",
        ],
    )))
    .unwrap();
    let rows = base.as_array().unwrap();
    let me = rows.iter().find(|r| r["model.dropout"] == "0.0").unwrap();
    assert_eq!(me["delta"], 0.0);
    assert!(
        (me["p_value"].as_f64().unwrap() - 1.0).abs() < 1e-12,
        "a configuration against itself: p = 1"
    );
    let other = rows.iter().find(|r| r["model.dropout"] == "0.5").unwrap();
    let p = other["p_value"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&p));

    // another metric than the objective ranks by its own direction: losses ascending
    let by_loss = csv(&stdout(&sweep(
        dir.path(),
        &["compare", "q", "--metric", "val.loss", "--format", "csv"],
    )));
    assert!(
        by_loss[1][2].parse::<f64>().unwrap() <= by_loss[2][2].parse::<f64>().unwrap(),
        "{by_loss:?}"
    );
    // filters on an empty selection give an empty table, not an error
    let none = stdout(&sweep(
        dir.path(),
        &[
            "trials",
            "q",
            "--state",
            "failed",
            "--where",
            "model.dropout=0.5",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(none.lines().count(), 1, "{none}");
    // no duplicate columns in the export
    let mut hs = trials[0].clone();
    hs.sort();
    hs.dedup();
    assert_eq!(hs.len(), trials[0].len(), "{:?}", trials[0]);
    let eff = stdout(&sweep(
        dir.path(),
        &["compare", "q", "--effects", "--format", "markdown"],
    ));
    assert!(
        eff.starts_with("| parameter | value | mean val.macro_f1 | std | trials |"),
        "{eff}"
    );
    assert_eq!(
        eff.lines()
            .filter(|l| l.starts_with("| model.dropout |"))
            .count(),
        2
    );

    let grid = stdout(&sweep(
        dir.path(),
        &[
            "compare",
            "q",
            "--rows",
            "model.dropout",
            "--cols",
            "model.dropout",
        ],
    ));
    assert!(grid.contains("(n=3)"), "{grid}");

    let epochs = csv(&stdout(&sweep(
        dir.path(),
        &["export", "q", "--table", "epochs", "--format", "csv"],
    )));
    // 6 trials × 3 epochs × 12 rows (docs/schema.md, epoch_metrics)
    assert_eq!(epochs.len() - 1, 6 * 3 * 12);
    let conf = csv(&stdout(&sweep(
        dir.path(),
        &[
            "export",
            "q",
            "--table",
            "confusion",
            "--format",
            "csv",
            "-o",
            "conf.csv",
        ],
    )));
    assert!(conf.is_empty(), "-o writes the file, not stdout");
    let conf = csv(&std::fs::read_to_string(dir.path().join("conf.csv")).unwrap());
    assert_eq!(conf[0], ["trial", "true_class", "predicted_class", "count"]);
    assert_eq!(
        conf[1..]
            .iter()
            .map(|r| r[3].parse::<u64>().unwrap())
            .sum::<u64>(),
        6 * 12
    );
    assert!(conf[1..].iter().all(|r| r[1].starts_with("class")));

    let n = stdout(&sweep(
        dir.path(),
        &[
            "sql",
            "SELECT COUNT(*) AS n, AVG(seed) AS s FROM trials",
            "--format",
            "json",
        ],
    ));
    let v: serde_json::Value = serde_json::from_str(&n).unwrap();
    assert_eq!(v[0]["n"], 6);
    assert_eq!(v[0]["s"], 2.0);
    let refused = sweep(dir.path(), &["sql", "DELETE FROM trials"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(stdout(&sweep(
        dir.path(),
        &["sql", "SELECT COUNT(*) AS n FROM trials", "--format", "csv"]
    ))
    .contains("\n6\n"));

    let missing = sweep(dir.path(), &["compare", "nope"]);
    assert!(String::from_utf8_lossy(&missing.stderr)
        .contains("no sweep named `nope` in this database; it has: q"));
    let bad = sweep(dir.path(), &["compare", "q", "--rows", "model.dropot"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("`model.dropot` is not a swept parameter")
    );
}

#[test]
fn readers_work_while_a_sweep_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("s.toml"),
        SPEC.replace("epochs = 3", "epochs = 60"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sweep"))
        .args(["run", "s.toml", "--jobs", "2"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut saw_running = false;
    let t0 = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() && t0.elapsed().as_secs() < 120 {
        let o = sweep(dir.path(), &["ls", "--format", "json"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("locked"), "{err}");
        if o.status.success() {
            let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
            saw_running |= v[0]["running"].as_i64().unwrap_or(0) > 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(30));
    }
    assert!(child.wait().unwrap().success());
    assert!(saw_running, "ls never saw a running trial");
}

/// Three classes of 8×8 PNG images, `n` per class, in `root/<class>/`.
fn write_images(root: &Path, n: u8) {
    for (c, v) in [("bcc", 30u8), ("mel", 140), ("nv", 230)] {
        std::fs::create_dir_all(root.join(c)).unwrap();
        for i in 0..n {
            image::RgbImage::from_fn(8, 8, |x, y| {
                image::Rgb([v, v.wrapping_add((x * 7 + y * 3) as u8 + i * 5), 255 - v])
            })
            .save(root.join(c).join(format!("{i}.png")))
            .unwrap();
        }
    }
}

/// The database records where the sweep wrote its files: eval, report, show and
/// export find them from another working directory without --results; when the
/// folder really moved, the error names where it looked and --results finds it.
#[test]
fn commands_find_the_sweeps_files_without_results() {
    let dir = tempfile::tempdir().unwrap();
    let study = dir.path().join("study");
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    write_images(&study.join("train"), 10);
    write_images(&elsewhere.join("test"), 4);
    let spec = "name = \"img\"\nseeds = [1]\n[data]\nroot = \"train\"\nimage_size = 8\n[model]\nhidden = [16]\n[train]\nepochs = 2\n[grid]\ntrain.learning_rate = [0.001, 0.01]\n";
    std::fs::write(study.join("s.toml"), spec).unwrap();
    stdout(&sweep(
        &study,
        &["run", "s.toml", "--jobs", "2", "--results", "out"],
    ));
    let out = std::fs::canonicalize(study.join("out")).unwrap();
    let db = out.join("sweep.db");
    let db = db.to_str().unwrap();

    let recorded = stdout(&sweep(
        &elsewhere,
        &[
            "sql",
            "SELECT results_dir FROM sweeps",
            "--db",
            db,
            "--format",
            "csv",
        ],
    ));
    assert_eq!(recorded, format!("results_dir\n{}\n", out.display()));

    // eval from another working directory, no --results
    let text = stdout(&sweep(
        &elsewhere,
        &["eval", "img", "1", "--data", "test", "--db", db],
    ));
    assert!(text.contains("on test (12 images)"), "{text}");

    // report: written into the recorded folder, not ./results
    let rep = stdout(&sweep(&elsewhere, &["report", "img", "--db", db]));
    let html = out.join("img/report.html");
    assert!(rep.contains(&html.display().to_string()), "{rep}");
    assert!(html.is_file());
    assert!(!elsewhere.join("results").exists());

    // show lists the trial's files, absolute, and they exist
    let show = stdout(&sweep(&elsewhere, &["show", "img", "2", "--db", db]));
    let ck = out.join("img/trials/0002/attempt-1");
    assert!(
        show.contains(&format!("folder           {}", ck.display())),
        "{show}"
    );
    assert!(
        show.contains("checkpoint       ") && !show.contains("(missing)"),
        "{show}"
    );

    // export: the checkpoint column is an absolute path to a real file
    let tr = csv(&stdout(&sweep(
        &elsewhere,
        &[
            "export", "img", "--table", "trials", "--format", "csv", "--db", db,
        ],
    )));
    let col = tr[0].iter().position(|h| h == "checkpoint").unwrap();
    for row in &tr[1..] {
        let p = Path::new(&row[col]);
        assert!(p.is_absolute() && p.is_file(), "{row:?}");
    }

    // the folder moves: the error says where it looked; --results finds it (and
    // the database in it)
    let moved = dir.path().join("moved");
    std::fs::rename(&out, &moved).unwrap();
    let db_moved = moved.join("sweep.db");
    let gone = sweep(
        &elsewhere,
        &[
            "eval",
            "img",
            "1",
            "--data",
            "test",
            "--db",
            db_moved.to_str().unwrap(),
        ],
    );
    let err = String::from_utf8_lossy(&gone.stderr);
    assert!(!gone.status.success());
    assert!(
        err.contains("trials/0001/")
            && err.contains(&format!(
                "{} (recorded by the sweep)",
                out.join("img").display()
            ))
            && err.contains("pass --results DIR"),
        "{err}"
    );
    let text = stdout(&sweep(
        &elsewhere,
        &[
            "eval",
            "img",
            "1",
            "--data",
            "test",
            "--results",
            moved.to_str().unwrap(),
        ],
    ));
    assert!(text.contains("on test (12 images)"), "{text}");
}

/// status, trials (filters and sort), show and eval on a real sweep over an image
/// folder; eval scores the trial's checkpoint on a held-out folder.
#[test]
fn status_trials_show_and_eval() {
    let dir = tempfile::tempdir().unwrap();
    let make = write_images;
    make(&dir.path().join("train"), 10);
    make(&dir.path().join("test"), 4);
    let spec = "name = \"img\"\nseeds = [1, 2]\n[data]\nroot = \"train\"\nimage_size = 8\n[model]\nhidden = [16]\n[train]\nepochs = 4\n[grid]\ntrain.learning_rate = [0.001, 0.01]\n";
    std::fs::write(dir.path().join("s.toml"), spec).unwrap();
    stdout(&sweep(dir.path(), &["run", "s.toml", "--jobs", "2"]));

    let st = stdout(&sweep(dir.path(), &["status", "img"]));
    assert!(st.contains("sweep `img`: 4 trials — complete 4"), "{st}");

    let tr = csv(&stdout(&sweep(
        dir.path(),
        &[
            "trials",
            "img",
            "--where",
            "train.learning_rate=0.01",
            "--sort",
            "val.accuracy",
            "--format",
            "csv",
        ],
    )));
    assert_eq!(tr.len(), 3);
    let acc = tr[0].iter().position(|h| h == "val.accuracy").unwrap();
    assert!(tr[1][acc].parse::<f64>().unwrap() >= tr[2][acc].parse::<f64>().unwrap());
    for h in ["best_epoch", "epochs_run", "train_seconds"] {
        assert!(tr[0].iter().any(|c| c == h), "{h} missing: {:?}", tr[0]);
    }
    let one = csv(&stdout(&sweep(
        dir.path(),
        &[
            "trials", "img", "--where", "seed=2", "--limit", "1", "--format", "csv",
        ],
    )));
    assert_eq!(one.len(), 2);
    let bad = sweep(
        dir.path(),
        &["trials", "img", "--where", "model.dropout=0.5"],
    );
    assert!(String::from_utf8_lossy(&bad.stderr)
        .contains("not a swept parameter; swept: seed, train.learning_rate"));

    let show = stdout(&sweep(dir.path(), &["show", "img", "1"]));
    for needle in [
        "trial 1 of sweep `img` (seed 1): complete",
        "\"learning_rate\": 0.001",
        "classification report",
        "bcc",
        "confusion matrix",
        "val.balanced_accuracy",
    ] {
        assert!(show.contains(needle), "missing {needle:?}:\n{show}");
    }

    let ev: serde_json::Value = serde_json::from_str(&stdout(&sweep(
        dir.path(),
        &["eval", "img", "1", "--data", "test", "--format", "json"],
    )))
    .unwrap();
    let support: u64 = ev["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["support"].as_u64().unwrap())
        .sum();
    assert_eq!(support, 12, "every test image is scored");
    let text = stdout(&sweep(dir.path(), &["eval", "img", "1", "--data", "test"]));
    assert!(
        text.contains("on test (12 images)") && text.contains("macro avg"),
        "{text}"
    );

    std::fs::create_dir_all(dir.path().join("other/cat")).unwrap();
    std::fs::create_dir_all(dir.path().join("other/dog")).unwrap();
    for d in ["cat", "dog"] {
        image::RgbImage::new(8, 8)
            .save(dir.path().join("other").join(d).join("0.png"))
            .unwrap();
    }
    let wrong = sweep(dir.path(), &["eval", "img", "1", "--data", "other"]);
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("classes differ"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
}

#[test]
fn csv_neutralises_formula_text_but_not_numbers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("s.toml"), SPEC).unwrap();
    stdout(&sweep(dir.path(), &["run", "s.toml", "--jobs", "2"]));
    let out = stdout(&sweep(
        dir.path(),
        &[
            "sql",
            "SELECT '=1+1' AS f, '-0.5' AS n, -2 AS i, '@x' AS a",
            "--format",
            "csv",
        ],
    ));
    assert_eq!(out, "f,n,i,a\n'=1+1,-0.5,-2,'@x\n");
}

/// `--where` and `--baseline` take TOML values and compare them as values: a
/// list with its commas, `1e-3` against a stored `0.001`, a list of
/// augmentations in any order; `compare` shows one column per setting.
#[test]
fn conditions_take_toml_values_and_compare_them_as_values() {
    let dir = tempfile::tempdir().unwrap();
    let spec = r#"
name = "v"
[data]
image_size = 8
[data.synthetic]
classes = 2
per_class = 10
image_size = 8
[train]
epochs = 1
batch_size = 8
[grid]
model.hidden = [[16], [32, 8]]
train.learning_rate = [1e-3, 1e-2]
data.augment = [[], ["vflip", "hflip"]]
"#;
    std::fs::write(dir.path().join("s.toml"), spec).unwrap();
    stdout(&sweep(dir.path(), &["run", "s.toml", "--jobs", "2"]));
    let count = |cond: &str| {
        csv(&stdout(&sweep(
            dir.path(),
            &["trials", "v", "--where", cond, "--format", "csv"],
        )))
        .len()
            - 1
    };
    assert_eq!(count("model.hidden=[32, 8]"), 4);
    assert_eq!(count("model.hidden=[32,8]"), 4);
    assert_eq!(
        count("model.hidden=[8, 32]"),
        0,
        "a layer list keeps its order"
    );
    assert_eq!(count("train.learning_rate=1e-3"), 4);
    assert_eq!(count("train.learning_rate=0.001"), 4);
    assert_eq!(count("train.learning_rate=0.002"), 0);
    assert_eq!(count("data.augment=[]"), 4);
    assert_eq!(count(r#"data.augment=["hflip", "vflip"]"#), 4);
    assert_eq!(count(r#"data.augment=["vflip","hflip"]"#), 4);
    // several conditions in one option, commas inside lists kept
    assert_eq!(
        count("model.hidden=[32, 8],train.learning_rate=1e-2,data.augment=[]"),
        1
    );
    let bad = sweep(dir.path(), &["trials", "v", "--where", "model.hidden=[32,"]);
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("--where model.hidden=[32,: the value is not TOML"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    let base: serde_json::Value = serde_json::from_str(&stdout(&sweep(
        dir.path(),
        &[
            "compare",
            "v",
            "--baseline",
            "model.hidden=[32, 8],train.learning_rate=1e-3,data.augment=[]",
            "--format",
            "json",
        ],
    )))
    .unwrap();
    let rows = base.as_array().unwrap();
    assert_eq!(rows.len(), 8);
    let me = rows
        .iter()
        .find(|r| {
            r["model.hidden"] == "[32,8]"
                && r["train.learning_rate"] == "0.001"
                && r["data.augment"] == "[]"
        })
        .unwrap();
    assert_eq!(me["delta"], 0.0, "{rows:?}");
    let base_mean = me["mean"].as_f64().unwrap();
    for r in rows {
        let d = r["delta"].as_f64().unwrap() - (r["mean"].as_f64().unwrap() - base_mean);
        assert!(d.abs() < 1e-12, "{r:?}");
    }
    let none = sweep(
        dir.path(),
        &["compare", "v", "--baseline", "model.hidden=[64]"],
    );
    assert!(
        String::from_utf8_lossy(&none.stderr)
            .contains("no complete trial matches the baseline model.hidden=[64]"),
        "{}",
        String::from_utf8_lossy(&none.stderr)
    );

    // the terminal table: a column per setting, short labels, the test against the best
    let table = stdout(&sweep(dir.path(), &["compare", "v"]));
    let header = table.lines().next().unwrap();
    for h in [
        "rank",
        "augment",
        "hidden",
        "learning_rate",
        "mean",
        "vs best (Holm)",
    ] {
        assert!(header.contains(h), "{h} missing: {header}");
    }
    for v in ["[32,8]", "hflip+vflip", "none", "best", "untested (1 seed)"] {
        assert!(table.contains(v), "{v} missing:\n{table}");
    }
}

/// The report at the scale of a real study: a generated 1,000-trial sweep (216
/// configurations, 7 classes, early stopping, some diverged and failed trials)
/// gives one self-contained file well under 2 MB whose long lists show their
/// top rows and fold the rest away, and whose leaderboard agrees with `compare`.
#[test]
fn a_thousand_trial_report_stays_small_and_folds_what_is_long() {
    let dir = tempfile::tempdir().unwrap();
    stdout(&sweep(
        dir.path(),
        &["generate-study", "big.db", "--trials", "1000"],
    ));
    stdout(&sweep(
        dir.path(),
        &["report", "big", "--db", "big.db", "-o", "r.html"],
    ));
    stdout(&sweep(
        dir.path(),
        &[
            "report", "big", "--db", "big.db", "-o", "r5.html", "--top", "5",
        ],
    ));
    let html = std::fs::read_to_string(dir.path().join("r.html")).unwrap();
    assert!(html.len() < 2_000_000, "{} bytes", html.len());
    for bad in ["<script", "src=", "http:", "https:", "@import", "url("] {
        assert!(!html.contains(bad), "not self-contained: {bad}");
    }
    let section = |h: &str, from: &str| -> String {
        let start = h.find(from).unwrap_or_else(|| panic!("no {from}"));
        let rest = &h[start + from.len()..];
        rest[..rest.find("<h2>").unwrap_or(rest.len())].to_string()
    };
    // the leaderboard: the top 20 (or --top) rows, the other 196 folded
    for (file, shown) in [("r.html", 20), ("r5.html", 5)] {
        let h = std::fs::read_to_string(dir.path().join(file)).unwrap();
        let board = section(&h, "<h2>Leaderboard</h2>");
        let open = &board[..board.find("<details>").expect("the rest folded")];
        assert_eq!(
            open.matches("<tr").count(),
            shown + 1,
            "{file}: header + {shown}"
        );
        assert!(board.contains(&format!("the other {} configurations", 216 - shown)));
        assert_eq!(
            board.matches("<tr").count(),
            216 + 2,
            "every configuration, two headers"
        );
    }
    let board = section(&html, "<h2>Leaderboard</h2>");
    assert!(board.contains("216 configurations"), "{}", &board[..300]);
    assert!(board.contains("adjusted for the number of comparisons by Holm's method"));
    // columns per setting, short labels with the full value on hover
    for h in [
        "augment",
        "arch",
        "batch_norm",
        "dropout",
        "init",
        "weight_decay",
    ] {
        assert!(board.contains(&format!(">{h}</th>")), "no column {h}");
    }
    assert!(board.contains(">4 ops</td>"));
    // the best row is compare's best
    let cmp: serde_json::Value = serde_json::from_str(&stdout(&sweep(
        dir.path(),
        &["compare", "big", "--db", "big.db", "--format", "json"],
    )))
    .unwrap();
    let best_mean = cmp[0]["mean"].as_f64().unwrap();
    let first_row = &board[board.find("<tr class=best>").unwrap()..];
    let first_row = &first_row[..first_row.find("</tr>").unwrap()];
    assert!(
        first_row.contains(&format!("<b>{best_mean:.4} ± ")),
        "{first_row} vs {best_mean}"
    );
    // interactions: 15 pairs of 6 settings, the 6 strongest shown
    let inter = section(&html, "<h2>Interactions</h2>");
    assert_eq!(inter.matches("<svg").count(), 15);
    assert!(inter.contains("the other 9 pairs"));
    // the generated interaction (batch-norm helps the CNN more) is among the first shown
    let shown = &inter[..inter.find("<details>").unwrap()];
    assert!(
        shown.contains("batch_norm × arch") || shown.contains("arch × batch_norm"),
        "{}",
        shown.len()
    );
    // dark cells carry light text
    assert!(inter.contains("style=\"fill:#fff\""));
    // learning curves: loss, accuracy and macro-F1 with bands and seed counts
    let curves = section(&html, "<h2>Learning curves</h2>");
    assert_eq!(curves.matches("<svg").count(), 3);
    assert!(curves.contains("<polygon"), "bands");
    assert!(curves.contains(">n="), "seeds left where they drop out");
    // the winner over all its seeds, and per class
    let winner = section(&html, "<h2>What the best configuration gets wrong</h2>");
    assert!(
        winner.contains("over all its 5 seeds"),
        "{}",
        &winner[..400]
    );
    assert!(winner.contains("#1 recall") && winner.contains(">vasc</td>"));
    // stopping: every configuration has a row; the rare trials are listed one by one
    let stop = section(&html, "<h2>Where training stopped</h2>");
    assert!(stop.contains("the other 196 configurations"));
    let counts = csv(&stdout(&sweep(
        dir.path(),
        &[
            "sql",
            "SELECT COUNT(*) FROM trials WHERE state = 'failed' OR (state = 'pruned' AND stop_reason = 'diverged')",
            "--db",
            "big.db",
            "--format",
            "csv",
        ],
    )));
    let rare: usize = counts[1][0].parse().unwrap();
    assert!(rare > 0);
    assert!(
        stop.contains(&format!("Trials that diverged or failed ({rare})")),
        "{rare}"
    );
    assert!(
        !html.contains("early_stopping</td>"),
        "early-stopped trials are not listed one by one"
    );
}
