//! Training on real data: the digits set (in the repository, or the shared
//! copy) and the larger shared sets in `SWEEP_TEST_DATA` (skipped with a
//! visible line when absent; a failure under `SWEEP_REQUIRE_DATA=1`).

mod common;

use sweep_train::{run_trial, Dataset, Device, NoObserver, StopFlag, TrialConfig, TrialOptions};

fn config(text: &str, root: &std::path::Path) -> TrialConfig {
    let text = text.replace("ROOT", &root.display().to_string());
    TrialConfig::from_toml_str(&text, "test").unwrap()
}

/// The reference MLP (hidden 512, 128; Adam 1e-3) on the 8×8 digits.
#[test]
fn reference_mlp_learns_digits() {
    let cfg = config(
        r#"
[data]
root = "ROOT"
image_size = 8
channels = 1
[model]
arch = "mlp"
[train]
epochs = 15
batch_size = 64
learning_rate = 1e-3
seed = 1
"#,
        &common::digits(),
    );
    let ds = Dataset::load(&cfg.data).unwrap();
    assert_eq!(ds.len(), 1797);
    assert_eq!(ds.num_classes(), 10);
    let out = run_trial(
        &cfg,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut NoObserver,
        &StopFlag::new(),
    )
    .unwrap();
    let acc = out.report.as_ref().unwrap().accuracy;
    eprintln!("digits, reference MLP, 15 epochs: validation accuracy {acc:.4}");
    assert!(acc >= 0.90, "digits validation accuracy {acc}");
}

/// Constant initialization keeps every hidden unit identical (the symmetry failure);
/// kaiming_normal learns. Same data, same seed, same everything else.
#[test]
fn constant_init_fails_where_kaiming_learns() {
    let base = r#"
[data]
root = "ROOT"
image_size = 8
channels = 1
[model]
hidden = [64, 32]
init = "INIT"
init_value = 0.05
[train]
epochs = 8
learning_rate = 1e-3
seed = 3
"#;
    let root = common::digits();
    let ds = Dataset::load(&config(&base.replace("INIT", "kaiming_normal"), &root).data).unwrap();
    let run = |init: &str| {
        let cfg = config(&base.replace("INIT", init), &root);
        run_trial(
            &cfg,
            &ds,
            &Device::Cpu,
            &TrialOptions::default(),
            &mut NoObserver,
            &StopFlag::new(),
        )
        .unwrap()
    };
    let (constant, kaiming) = (run("constant"), run("kaiming_normal"));
    let acc = |o: &sweep_train::TrialOutcome| o.report.as_ref().unwrap().accuracy;
    eprintln!(
        "digits, 8 epochs: constant init accuracy {:.4}, kaiming_normal {:.4}",
        acc(&constant),
        acc(&kaiming)
    );
    assert!(acc(&kaiming) > 0.85, "kaiming {}", acc(&kaiming));
    assert!(
        acc(&constant) < 0.5 && acc(&constant) + 0.35 < acc(&kaiming),
        "constant {} vs kaiming {}",
        acc(&constant),
        acc(&kaiming)
    );

    // The probes say why, before training and after the first epoch: under
    // constant init every hidden layer's units are identical (and stay so), and
    // the loss sits at ln(10), where a classifier that cannot tell classes apart
    // is; kaiming_normal has neither.
    let chance = 10f64.ln();
    for (o, name) in [(&constant, "constant"), (&kaiming, "kaiming_normal")] {
        let phases: Vec<&str> = o.probes.iter().map(|p| p.phase.as_str()).collect();
        assert_eq!(phases, ["init", "epoch1"], "{name}");
        for p in &o.probes {
            eprintln!(
                "{name} {}: loss {:.4} (ln 10 = {chance:.4}); {}",
                p.phase,
                p.loss,
                p.layers
                    .iter()
                    .map(|l| format!(
                        "{} identical {} dead {:.2} act std {:.3} grad {:.3e} w std {:.3}",
                        l.layer,
                        l.identical_units,
                        l.dead_share,
                        l.activation_std,
                        l.gradient_norm,
                        l.weight_std
                    ))
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            assert_eq!(p.chance_loss, chance);
            assert_eq!(p.layers.len(), 3);
        }
        let hidden_identical = |i: usize| o.probes[i].layers[..2].iter().all(|l| l.identical_units);
        if name == "constant" {
            assert!(
                hidden_identical(0) && hidden_identical(1),
                "constant init not flagged"
            );
            assert!(
                (o.probes[0].loss - chance).abs() < 1e-4,
                "{}",
                o.probes[0].loss
            );
            assert!(
                (o.probes[1].loss - chance).abs() < 0.1 * chance,
                "constant init's loss left ln(10) after an epoch: {}",
                o.probes[1].loss
            );
        } else {
            assert!(
                o.probes
                    .iter()
                    .all(|p| p.layers.iter().all(|l| !l.identical_units)),
                "kaiming_normal flagged"
            );
            assert!(
                o.probes[1].loss < 0.8 * chance,
                "kaiming_normal's loss after an epoch: {}",
                o.probes[1].loss
            );
        }
    }
}

/// On the imbalanced skin set (60% one class), an MLP with batch-norm, dropout and
/// balanced class weights beats the majority-class baseline on balanced accuracy
/// (which scores 1/7 for always predicting one class).
#[test]
fn skin_mlp_with_regularization_beats_majority_baseline() {
    let Some(root) = common::shared_data("skin") else {
        return;
    };
    let cfg = config(
        r#"
[data]
root = "ROOT"
image_size = 24
[model]
hidden = [256, 64]
batch_norm = true
dropout = 0.3
init = "kaiming_normal"
[train]
epochs = 12
batch_size = 64
class_weights = "balanced"
seed = 5
"#,
        &root,
    );
    let ds = Dataset::load(&cfg.data).unwrap();
    assert_eq!(ds.num_classes(), 7);
    let counts = ds.class_counts();
    let majority = *counts.iter().max().unwrap() as f64 / ds.len() as f64;
    assert!(majority > 0.5, "skin is imbalanced: {counts:?}");
    let out = run_trial(
        &cfg,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut NoObserver,
        &StopFlag::new(),
    )
    .unwrap();
    let r = out.report.unwrap();
    let baseline = 1.0 / 7.0;
    eprintln!(
        "skin 24px, MLP + batch-norm + dropout + balanced weights: balanced accuracy {:.4} (majority baseline {baseline:.4}), macro-F1 {:.4}, accuracy {:.4}",
        r.balanced_accuracy, r.macro_f1, r.accuracy
    );
    assert!(
        r.balanced_accuracy > baseline + 0.1,
        "balanced accuracy {} vs baseline {baseline}",
        r.balanced_accuracy
    );
    assert_eq!(r.confusion.total() as usize, out.val_size);
}

/// 100 classes with 20 images each: the split keeps every class on both sides and
/// the report and confusion matrix are 100 wide.
#[test]
fn caltech_hundred_classes_few_images() {
    let Some(root) = common::shared_data("caltech101_100") else {
        return;
    };
    let cfg = config(
        r#"
[data]
root = "ROOT"
image_size = 16
val_fraction = 0.2
[model]
hidden = [128]
[train]
epochs = 2
seed = 2
"#,
        &root,
    );
    let ds = Dataset::load(&cfg.data).unwrap();
    assert_eq!(ds.num_classes(), 100);
    assert!(ds.classes.contains(&"Faces".to_string()));
    let out = run_trial(
        &cfg,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut NoObserver,
        &StopFlag::new(),
    )
    .unwrap();
    assert_eq!(out.val_size, 400);
    let r = out.report.unwrap();
    assert_eq!(r.classes.len(), 100);
    assert!(r.classes.iter().all(|c| c.support == 4));
}

/// The labels CSV path gives the same data set as the folder scan.
#[test]
fn labels_csv_matches_folder_scan() {
    let root = common::digits();
    let folder = config(
        "[data]\nroot = \"ROOT\"\nimage_size = 8\nchannels = 1\n",
        &root,
    );
    let csv = config(
        "[data]\nroot = \"ROOT\"\nlabels = \"labels.csv\"\nimage_size = 8\nchannels = 1\n",
        &root,
    );
    let a = Dataset::load(&folder.data).unwrap();
    let b = Dataset::load(&csv.data).unwrap();
    assert_eq!(a.classes, b.classes);
    assert_eq!(a.len(), b.len());
    let index = |d: &Dataset| {
        let mut v: Vec<(String, u32, Vec<u8>)> = (0..d.len())
            .map(|i| (d.sources[i].clone(), d.label(i), d.image(i).to_vec()))
            .collect();
        v.sort();
        v
    };
    assert_eq!(index(&a), index(&b));
}
