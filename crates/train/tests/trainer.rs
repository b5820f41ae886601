//! Behaviour of the epoch loop on generated data: determinism, divergence, early
//! stopping with restored weights, interruption, checkpoints, observers.

use sweep_train::model::Model;
use sweep_train::trainer::load_checkpoint;
use sweep_train::{
    run_trial, Dataset, Device, EpochMetrics, Histogram, NoObserver, Observer, StopFlag,
    StopReason, TrialConfig, TrialOptions, TrialStart,
};

fn cfg(extra_model: &str, extra_train: &str) -> TrialConfig {
    let epochs = if extra_train.contains("epochs") {
        ""
    } else {
        "epochs = 4"
    };
    let hidden = if extra_model.contains("hidden") {
        ""
    } else {
        "hidden = [64, 32]"
    };
    TrialConfig::from_toml_str(
        &format!(
            r#"
[data]
image_size = 16
augment = ["hflip", "brightness_contrast", "shift_scale_rotate"]
[data.synthetic]
classes = 4
per_class = 40
image_size = 16
[model]
{hidden}
{extra_model}
[train]
{epochs}
batch_size = 16
seed = 11
{extra_train}
"#
        ),
        "test",
    )
    .unwrap()
}

fn run(c: &TrialConfig, opts: &TrialOptions, obs: &mut dyn Observer) -> sweep_train::TrialOutcome {
    let ds = Dataset::load(&c.data).unwrap();
    run_trial(c, &ds, &Device::Cpu, opts, obs, &StopFlag::new()).unwrap()
}

fn strip_times(e: &[EpochMetrics]) -> Vec<EpochMetrics> {
    e.iter()
        .map(|m| EpochMetrics {
            seconds: 0.0,
            data_seconds: 0.0,
            step_seconds: 0.0,
            ..m.clone()
        })
        .collect()
}

#[test]
fn same_config_and_seed_give_identical_metrics() {
    let c = cfg(
        "batch_norm = true\ndropout = 0.3\ninit = \"kaiming_uniform\"",
        "",
    );
    let a = run(&c, &TrialOptions::default(), &mut NoObserver);
    let b = run(&c, &TrialOptions::default(), &mut NoObserver);
    assert_eq!(strip_times(&a.epochs), strip_times(&b.epochs));
    assert_eq!(a.report, b.report);
    let mut other = c.clone();
    other.train.seed = 12;
    let o = run(&other, &TrialOptions::default(), &mut NoObserver);
    assert_ne!(
        strip_times(&a.epochs),
        strip_times(&o.epochs),
        "a different seed must change something"
    );
}

/// The initialization-health probe reads the model and throws its gradients
/// away: with and without it, a CNN with batch-norm, dropout and augmentation
/// trains to the same numbers (its batch comes from no random stream, its
/// batch-norm pass leaves the running statistics as they were).
#[test]
fn the_probe_changes_nothing_a_trial_computes() {
    for model in [
        "batch_norm = true\ndropout = 0.3",
        "arch = \"cnn\"\nconv_channels = [4, 8]\nbatch_norm = true\ndropout = 0.2",
    ] {
        let c = cfg(model, "");
        let with = run(&c, &TrialOptions::default(), &mut NoObserver);
        let without = run(
            &c,
            &TrialOptions {
                probe: false,
                ..TrialOptions::default()
            },
            &mut NoObserver,
        );
        assert_eq!(with.probes.len(), 2, "{model}");
        assert!(without.probes.is_empty());
        assert_eq!(
            strip_times(&with.epochs),
            strip_times(&without.epochs),
            "{model}"
        );
        assert_eq!(with.report, without.report, "{model}");
        // per-epoch batch-loss spreads are there, from the losses of the batches
        assert!(with
            .epochs
            .iter()
            .all(|m| m.train_loss_std > 0.0 && m.train_loss_step_std > 0.0));
        let init = &with.probes[0];
        assert_eq!(
            (init.phase.as_str(), init.epoch, init.images),
            ("init", 0, 16)
        );
        let names: Vec<&str> = init.layers.iter().map(|l| l.layer.as_str()).collect();
        let want: &[&str] = if model.contains("cnn") {
            &["conv0", "conv1", "hidden0", "hidden1", "output"]
        } else {
            &["hidden0", "hidden1", "output"]
        };
        assert_eq!(names, want);
        assert_eq!(
            init.layers[0].units,
            if model.contains("cnn") { 4 } else { 64 }
        );
        assert!(init
            .layers
            .iter()
            .all(|l| l.gradient_norm > 0.0 && l.weight_std > 0.0));
    }
}

#[test]
fn a_diverging_trial_ends_as_diverged_not_a_panic() {
    let c = cfg(
        "init = \"normal\"\ninit_std = 5.0",
        "optimizer = \"sgd\"\nlearning_rate = 1e12",
    );
    let out = run(&c, &TrialOptions::default(), &mut NoObserver);
    match out.stop {
        StopReason::Diverged { epoch, batch, loss } => {
            assert!(epoch >= 1 && batch >= 1 && !loss.is_finite());
        }
        other => panic!("expected divergence, got {other:?}"),
    }
    assert!(out.report.is_none());
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    // A learning rate this high overfits/oscillates quickly; patience 1 stops early.
    let c = cfg("", "epochs = 30\nlearning_rate = 0.01\n[train.early_stopping]\nmonitor = \"val_loss\"\npatience = 1\nrestore_best = true");
    let dir = tempfile::tempdir().unwrap();
    let opts = TrialOptions {
        checkpoint_dir: Some(dir.path().to_path_buf()),
        ..TrialOptions::default()
    };
    let out = run(&c, &opts, &mut NoObserver);
    let StopReason::EarlyStopping { epoch } = out.stop else {
        panic!("expected early stop, got {:?}", out.stop)
    };
    assert!(epoch < 30);
    let best = out.best_epoch.unwrap();
    assert_eq!(epoch, best + 1, "patience 1 stops one epoch after the best");
    assert_eq!(out.report_epoch, Some(best));
    let best_m = &out.epochs[best - 1];
    let r = out.report.as_ref().unwrap();
    assert_eq!(r.accuracy, best_m.val_accuracy);
    assert!(out.epochs.iter().all(|e| e.val_loss >= best_m.val_loss));

    // The checkpoint holds the best weights: reloading it reproduces the best report.
    let ckpt = out.checkpoint.unwrap();
    assert!(ckpt.ends_with("best.safetensors") && dir.path().join("config.json").is_file());
    let saved: TrialConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("config.json")).unwrap())
            .unwrap();
    assert_eq!(saved, c);
    let ds = Dataset::load(&c.data).unwrap();
    let mut model = Model::new(&c.model, 3, 16, 4, 999, &Device::Cpu).unwrap();
    load_checkpoint(&mut model, &ckpt).unwrap();
    let split = sweep_train::trainer::split_for(&c, &ds).unwrap();
    let mut batcher = sweep_train::data::Batcher::new(&c.data);
    let (mut buf, mut labels) = (Vec::new(), Vec::new());
    batcher.fill(&ds, &split.val, None, &mut buf, &mut labels);
    let x = candle_core::Tensor::from_slice(&buf, (labels.len(), 3, 16, 16), &Device::Cpu).unwrap();
    let logits = model
        .forward_t(&x, false, &mut sweep_train::rng::Rng::new(0))
        .unwrap()
        .to_vec2::<f32>()
        .unwrap();
    let correct = logits
        .iter()
        .zip(&labels)
        .filter(|(row, y)| {
            let am = row
                .iter()
                .enumerate()
                .fold(0, |b, (i, v)| if *v > row[b] { i } else { b });
            am as u32 == **y
        })
        .count();
    assert_eq!(correct as f64 / labels.len() as f64, r.accuracy);
}

#[test]
fn without_restore_the_report_is_from_the_last_epoch() {
    let c = cfg("", "epochs = 3");
    let out = run(&c, &TrialOptions::default(), &mut NoObserver);
    assert_eq!(out.stop, StopReason::EpochLimit);
    assert_eq!(out.report_epoch, Some(3));
    assert_eq!(out.report.unwrap().macro_f1, out.epochs[2].val_macro_f1);
}

#[derive(Default)]
struct Recorder {
    start: Option<TrialStart>,
    epochs: Vec<usize>,
    batches: usize,
    hist: Vec<(usize, Vec<Histogram>)>,
}

impl Observer for Recorder {
    fn on_start(&mut self, s: &TrialStart) {
        self.start = Some(s.clone());
    }
    fn on_batch(&mut self, _: usize, _: usize, _: usize) {
        self.batches += 1;
    }
    fn on_epoch(&mut self, m: &EpochMetrics) {
        self.epochs.push(m.epoch);
    }
    fn on_histograms(&mut self, e: usize, h: &[Histogram]) {
        self.hist.push((e, h.to_vec()));
    }
}

#[test]
fn observer_sees_start_batches_epochs_and_histograms() {
    let c = cfg("batch_norm = true", "epochs = 3");
    let mut rec = Recorder::default();
    let opts = TrialOptions {
        histogram_every: Some(2),
        gradient_histograms: true,
        ..TrialOptions::default()
    };
    let out = run(&c, &opts, &mut rec);
    let start = rec.start.unwrap();
    assert_eq!(start.train_counts.iter().sum::<usize>(), out.train_size);
    assert_eq!(start.val_counts, vec![8, 8, 8, 8]);
    assert_eq!(rec.epochs, vec![1, 2, 3]);
    assert_eq!(rec.batches, 3 * start.batches_per_epoch);
    assert_eq!(rec.hist.iter().map(|h| h.0).collect::<Vec<_>>(), vec![2, 3]);
    let names: Vec<&str> = rec.hist[0].1.iter().map(|h| h.name.as_str()).collect();
    assert!(
        names.contains(&"hidden0.weight")
            && names.contains(&"hidden0.weight.grad")
            && names.contains(&"hidden0.bn.weight")
    );
    assert!(
        !names.iter().any(|n| n.contains("running")),
        "running statistics are not parameters"
    );
    let h = &rec.hist[0].1[0];
    assert_eq!(h.count as usize, 64 * 16 * 16 * 3);
    assert_eq!(h.bucket_counts.iter().sum::<u64>(), h.count);
}

#[test]
fn the_stop_flag_interrupts_between_batches() {
    let c = cfg("", "epochs = 50");
    let ds = Dataset::load(&c.data).unwrap();
    let stop = StopFlag::new();
    struct StopAt(StopFlag);
    impl Observer for StopAt {
        fn on_epoch(&mut self, m: &EpochMetrics) {
            if m.epoch == 2 {
                self.0.request();
            }
        }
    }
    let out = run_trial(
        &c,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut StopAt(stop.clone()),
        &stop,
    )
    .unwrap();
    assert_eq!(out.stop, StopReason::Interrupted { epoch: 3 });
    assert_eq!(out.epochs.len(), 2);
}

/// A pruner's answer after an epoch ends the trial there: the outcome keeps
/// the epochs run, reports the last one's weights and says which rule stopped it.
/// The last epoch is never asked.
#[test]
fn an_observer_can_prune_after_an_epoch() {
    let c = cfg("", "epochs = 4");
    let ds = Dataset::load(&c.data).unwrap();
    struct PruneAt(usize, Vec<usize>);
    impl Observer for PruneAt {
        fn stop_after_epoch(&mut self, m: &EpochMetrics) -> Option<String> {
            self.1.push(m.epoch);
            (m.epoch == self.0).then(|| format!("rule at {}", m.epoch))
        }
    }
    let mut obs = PruneAt(2, Vec::new());
    let out = run_trial(
        &c,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut obs,
        &StopFlag::new(),
    )
    .unwrap();
    assert_eq!(
        out.stop,
        StopReason::Pruned {
            epoch: 2,
            rule: "rule at 2".into()
        }
    );
    assert_eq!(out.epochs.len(), 2);
    assert_eq!(out.report_epoch, Some(2));
    assert!(out.report.is_some());
    let mut never = PruneAt(99, Vec::new());
    let full = run_trial(
        &c,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut never,
        &StopFlag::new(),
    )
    .unwrap();
    assert_eq!(full.stop, StopReason::EpochLimit);
    assert_eq!(
        never.1,
        vec![1, 2, 3],
        "asked after every epoch but the last"
    );
}

#[test]
fn cnn_with_batch_norm_trains_and_evaluates() {
    let c = cfg(
        "arch = \"cnn\"\nconv_channels = [8, 16]\nhidden = [32]\nbatch_norm = true\ndropout = 0.2",
        "epochs = 2",
    );
    let out = run(&c, &TrialOptions::default(), &mut NoObserver);
    assert_eq!(out.epochs.len(), 2);
    assert!(out
        .epochs
        .iter()
        .all(|e| e.train_loss.is_finite() && e.val_loss.is_finite()));
    // conv0 8·3·9+8, bn 16, conv1 16·8·9+16, bn 32, hidden 32·(16·4·4)+32, bn 64, out 4·32+4
    assert_eq!(
        out.num_parameters,
        8 * 27 + 8 + 16 + 16 * 72 + 16 + 32 + 32 * 256 + 32 + 64 + 4 * 32 + 4
    );
}

/// The CPU engine (the default on the CPU) and candle's generic autograd train the
/// same trial to the same metrics: same initialization, batches, augmentation and
/// dropout masks; only floating-point rounding differs.
#[test]
fn the_cpu_engine_and_candle_autograd_train_the_same_trial() {
    for (model, train) in [
        (
            "batch_norm = true\ndropout = 0.3",
            "optimizer = \"sgd\"\nmomentum = 0.9\nlearning_rate = 0.05",
        ),
        (
            "arch = \"cnn\"\nconv_channels = [4, 8]\nhidden = [16]",
            "optimizer = \"sgd\"\nlearning_rate = 0.05\nweight_decay = 1e-3",
        ),
        ("activation = \"tanh\"", "optimizer = \"adamw\""),
    ] {
        let c = cfg(model, &format!("{train}\nepochs = 3"));
        let fast = run(&c, &TrialOptions::default(), &mut NoObserver);
        let slow = run(
            &c,
            &TrialOptions {
                autograd: true,
                ..TrialOptions::default()
            },
            &mut NoObserver,
        );
        for (a, b) in fast.epochs.iter().zip(&slow.epochs) {
            for (what, x, y) in [
                ("train loss", a.train_loss, b.train_loss),
                ("val loss", a.val_loss, b.val_loss),
            ] {
                assert!(
                    (x - y).abs() < 1e-3 * y.abs().max(1.0),
                    "{model} / {train}: epoch {} {what}: engine {x} vs autograd {y}",
                    a.epoch
                );
            }
            assert!(
                (a.val_accuracy - b.val_accuracy).abs() <= 1.0 / 32.0,
                "{model}: epoch {} accuracy {} vs {}",
                a.epoch,
                a.val_accuracy,
                b.val_accuracy
            );
        }
    }
}

/// The tensors of a checkpoint, by name.
fn tensors(path: &std::path::Path) -> std::collections::HashMap<String, Vec<f32>> {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu)
        .unwrap()
        .into_iter()
        .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
        .collect()
}

/// `train.freeze`: frozen layers end the run with the weights they started
/// with (no update, no weight decay: the decay would move them), the others
/// train. With `freeze_epochs`, they train after that many epochs. On the CPU
/// engine and through candle's autograd alike.
#[test]
fn frozen_layers_keep_their_weights_until_unfrozen() {
    for autograd in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg(
            "arch = \"cnn\"\nconv_channels = [4, 8]\nhidden = [16]\nbatch_norm = true",
            "epochs = 3\noptimizer = \"adamw\"\nweight_decay = 0.1\nfreeze = [\"conv\"]",
        );
        let opts = TrialOptions {
            checkpoint_dir: Some(dir.path().join("a")),
            autograd,
            ..TrialOptions::default()
        };
        let o = run(&c, &opts, &mut NoObserver);
        let ds = Dataset::load(&c.data).unwrap();
        let init = Model::new(
            &c.model,
            3,
            16,
            ds.num_classes(),
            c.train.seed,
            &Device::Cpu,
        )
        .unwrap();
        let init: std::collections::HashMap<String, Vec<f32>> = init
            .state()
            .into_iter()
            .map(|(n, t)| (n, t.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect();
        // the last epoch's weights (the report's, without early stopping)
        let after = tensors(o.report_checkpoint.as_ref().unwrap());
        for (name, v) in &after {
            let frozen_param = name.starts_with("conv") && !name.contains("running_");
            if frozen_param {
                assert_eq!(v, &init[name], "{name} is frozen (autograd {autograd})");
            } else if !name.contains("running_") {
                assert_ne!(v, &init[name], "{name} trains (autograd {autograd})");
            }
        }
        // frozen for the first epoch only: unchanged after epoch 1 (while
        // conv1 trains), changed after epoch 3
        for (epochs, moved) in [(1, false), (3, true)] {
            let c2 = cfg(
                "arch = \"cnn\"\nconv_channels = [4, 8]\nhidden = [16]\nbatch_norm = true",
                &format!("epochs = {epochs}\noptimizer = \"adamw\"\nfreeze = [\"conv0\"]\nfreeze_epochs = 1"),
            );
            let opts = TrialOptions {
                checkpoint_dir: Some(dir.path().join(format!("b{epochs}"))),
                autograd,
                ..TrialOptions::default()
            };
            let o2 = run(&c2, &opts, &mut NoObserver);
            assert_eq!(o2.report_epoch, Some(epochs));
            let after = tensors(o2.report_checkpoint.as_ref().unwrap());
            assert_eq!(
                after["conv0.weight"] != init["conv0.weight"],
                moved,
                "conv0 after {epochs} epochs"
            );
            assert_ne!(
                after["conv1.weight"], init["conv1.weight"],
                "conv1 trains from the start"
            );
        }
    }
}

/// `model.init_from` a checkpoint of a 4-class run into a 3-class run: the
/// report (observer and outcome) lists what was loaded and what was not; with
/// the loaded layers frozen they end the run exactly as the source had them.
#[test]
fn a_trial_starts_from_a_checkpoint_and_says_what_it_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let model = "arch = \"cnn\"\nconv_channels = [4, 8]\nhidden = [16]";
    let src = cfg(model, "epochs = 2");
    let o = run(
        &src,
        &TrialOptions {
            checkpoint_dir: Some(dir.path().to_path_buf()),
            ..TrialOptions::default()
        },
        &mut NoObserver,
    );
    let ck = o.checkpoint.unwrap();
    // 3 classes instead of 4: the output layer cannot be loaded
    let mut c = cfg(
        &format!("{model}\ninit_from = {:?}", ck.display().to_string()),
        "epochs = 1\nfreeze = [\"conv\", \"hidden\"]",
    );
    c.data.synthetic.as_mut().unwrap().classes = 3;
    struct Seen(Option<sweep_train::InitReport>);
    impl Observer for Seen {
        fn on_init(&mut self, r: &sweep_train::InitReport) {
            self.0 = Some(r.clone());
        }
    }
    let mut seen = Seen(None);
    let out_dir = dir.path().join("fine");
    let o = run(
        &c,
        &TrialOptions {
            checkpoint_dir: Some(out_dir),
            ..TrialOptions::default()
        },
        &mut seen,
    );
    let report = o.init.clone().expect("an init report");
    assert_eq!(seen.0.as_ref(), Some(&report));
    assert_eq!(
        report.loaded,
        [
            "conv0.weight",
            "conv0.bias",
            "conv1.weight",
            "conv1.bias",
            "hidden0.weight",
            "hidden0.bias"
        ]
    );
    assert_eq!(report.initialized.len(), 2, "{report:?}");
    // everything loaded and frozen is the source's, bit for bit
    let (before, after) = (tensors(&ck), tensors(o.report_checkpoint.as_ref().unwrap()));
    for name in &report.loaded {
        assert_eq!(before[name], after[name], "{name}");
    }
    assert_ne!(before["output.bias"].len(), after["output.bias"].len());

    // `sweep train` has no database: a SWEEP/N source is refused by name
    let mut c = cfg(&format!("{model}\ninit_from = \"caltech/3\""), "epochs = 1");
    c.data.synthetic.as_mut().unwrap().classes = 3;
    let ds = Dataset::load(&c.data).unwrap();
    let err = run_trial(
        &c,
        &ds,
        &Device::Cpu,
        &TrialOptions::default(),
        &mut NoObserver,
        &StopFlag::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("caltech/3") && err.contains(".safetensors"),
        "{err}"
    );
}

#[test]
fn freeze_and_init_from_are_checked_by_name() {
    let bad = |model: &str, train: &str| {
        TrialConfig::from_toml_str(
            &format!("[data.synthetic]\n[model]\n{model}\n[train]\n{train}\n"),
            "t.toml",
        )
        .unwrap_err()
        .to_string()
    };
    let e = bad(
        "arch = \"cnn\"\nconv_channels = [4]",
        "freeze = [\"conv1\"]",
    );
    assert!(
        e.contains("train.freeze") && e.contains("conv1") && e.contains("conv0, hidden0, output"),
        "{e}"
    );
    let e = bad("init_from = \"pretrained.pt\"", "");
    assert!(
        e.contains("model.init_from") && e.contains("pretrained.pt"),
        "{e}"
    );
    // a layer name is that layer; a kind is every layer of it
    use sweep_train::config::ModelConfig;
    assert!(!ModelConfig::freeze_matches("hidden1", "hidden10"));
    assert!(ModelConfig::freeze_matches("hidden", "hidden10"));
    assert!(!ModelConfig::freeze_matches("conv", "convx"));
    // a grid that does not tile the image is refused (8 px, 5 steps: 3 left over)
    let e = TrialConfig::from_toml_str(
        "[data]\nimage_size = 8\naugment = [\"grid_distortion\"]\n[data.synthetic]\n",
        "t.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("data.augmentation.grid_num_steps") && e.contains("3 left over"),
        "{e}"
    );
    // "none" is no pretraining
    let c = TrialConfig::from_toml_str(
        "[data.synthetic]\n[model]\ninit_from = \"none\"\n",
        "t.toml",
    )
    .unwrap();
    assert_eq!(c.model.init_from, None);
}
