//! Measurement helpers for `scripts/bench-train`: training-step throughput of the
//! reference models on random inputs, and data-path throughput. Returns numbers;
//! prints nothing.

use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::Serialize;

use crate::config::{
    Arch, Augmentation, AugmentationSettings, DataConfig, ModelConfig, OptimizerKind,
    SyntheticConfig, TrainConfig,
};
use crate::data::{Batcher, Dataset};
use crate::error::{Error, Result};
use crate::loss::CrossEntropy;
use crate::model::Model;
use crate::optim::Optimizer;
use crate::rng::Rng;

/// The reference models of `../shared/peers` (input 64×64×3, 7 classes).
pub fn reference_model(name: &str) -> Result<ModelConfig> {
    let base = ModelConfig::default();
    Ok(match name {
        "mlp" => ModelConfig {
            arch: Arch::Mlp,
            hidden: Some(vec![512, 128]),
            ..base
        },
        "mlp_bn_dropout" => ModelConfig {
            arch: Arch::Mlp,
            hidden: Some(vec![512, 256]),
            batch_norm: true,
            dropout: 0.5,
            ..base
        },
        "cnn" => ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![16, 32],
            hidden: Some(vec![128]),
            ..base
        },
        other => {
            return Err(Error::Invalid(format!(
                "unknown reference model `{other}` (mlp, mlp_bn_dropout, cnn)"
            )))
        }
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct StepResult {
    pub model: String,
    /// `engine` (the CPU engine) or `autograd` (candle's generic backward).
    pub path: String,
    pub batch: usize,
    pub optimizer: String,
    pub threads: usize,
    pub forward_ms: f64,
    pub backward_ms: f64,
    pub step_ms: f64,
    pub total_ms: f64,
    pub samples_per_s: f64,
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median times of `steps` training steps (after 5 warm-up steps) of a reference
/// model, through the CPU engine or (`autograd`) candle's generic backward.
pub fn step_throughput(
    model: &str,
    batch: usize,
    optimizer: &str,
    steps: usize,
    autograd: bool,
    dev: &Device,
) -> Result<StepResult> {
    // The CPU engine runs on the CPU only; other devices train through autograd.
    let autograd = autograd || !dev.is_cpu();
    let cfg = reference_model(model)?;
    let kind = match optimizer {
        "adam" => OptimizerKind::Adam,
        "adamw" => OptimizerKind::Adamw,
        "sgd" => OptimizerKind::Sgd,
        o => {
            return Err(Error::Invalid(format!(
                "unknown optimizer `{o}` (adam, adamw, sgd)"
            )))
        }
    };
    let train = TrainConfig {
        optimizer: kind,
        learning_rate: 1e-3,
        weight_decay: 1e-4,
        ..TrainConfig::default()
    };
    let mut m = Model::new(&cfg, 3, 64, 7, 0, dev)?;
    let params = m.params();
    let mut opt = Optimizer::new(&train, &params);
    let ce = CrossEntropy::new(vec![1.0; 7], 0.0);
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..batch * 3 * 64 * 64)
        .map(|_| rng.normal() as f32)
        .collect();
    let xs = Tensor::from_slice(&x, (batch, 3, 64, 64), dev)?;
    let y: Vec<u32> = (0..batch).map(|_| rng.below(7) as u32).collect();
    let mut engine = if autograd {
        None
    } else {
        Some(crate::engine::Engine::new(&m, 3, 64)?)
    };
    let (mut f, mut b, mut s, mut t) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..steps + 5 {
        let t0 = Instant::now();
        let (fwd, bwd);
        if autograd {
            let logits = m.forward_t(&xs, true, &mut rng)?;
            let loss = ce.loss(&logits, &y)?;
            let _ = loss.to_scalar::<f32>()?;
            let t1 = Instant::now();
            let g = loss.backward()?;
            fwd = (t1 - t0).as_secs_f64();
            bwd = t1.elapsed().as_secs_f64();
            opt.step(&params, &g, 1e-3)?;
            // Wait for the device, so the step's time is all counted.
            dev.synchronize()?;
        } else {
            let e = engine.as_mut().expect("an engine when not autograd");
            e.train_step(&mut m, &x, &y, &ce, &mut rng)?;
            (fwd, bwd) = e.last_timing();
            opt.step_slices(&params, e.grads(), 1e-3)?;
        }
        let total = t0.elapsed().as_secs_f64();
        if i >= 5 {
            f.push(fwd * 1e3);
            b.push(bwd * 1e3);
            s.push((total - fwd - bwd) * 1e3);
            t.push(total * 1e3);
        }
    }
    let total = median(&mut t);
    Ok(StepResult {
        model: model.into(),
        path: if autograd { "autograd" } else { "engine" }.into(),
        batch,
        optimizer: optimizer.into(),
        threads: candle_core::utils::get_num_threads(),
        forward_ms: median(&mut f),
        backward_ms: median(&mut b),
        step_ms: median(&mut s),
        total_ms: total,
        samples_per_s: batch as f64 / (total / 1e3),
    })
}

#[derive(Clone, Debug, Serialize)]
pub struct DataResult {
    /// What was augmented: `none`, `reference` (the PyTorch script's set), a
    /// transform's name alone, or `all`.
    pub set: String,
    /// Probability each listed transform applies with.
    pub probability: f64,
    pub images: usize,
    pub augment: bool,
    pub samples_per_s: f64,
    /// Milliseconds to build one batch of 64.
    pub batch_ms: f64,
}

/// The augmentation sets `sweep bench-data` measures: none, the reference
/// script's, each transform alone (probability 1), and every transform (at
/// the default probability 0.5, and at 1).
pub fn data_sets() -> Vec<(String, Vec<Augmentation>, f64)> {
    let mut out = vec![
        ("none".to_string(), vec![], 0.5),
        (
            "reference".to_string(),
            vec![
                Augmentation::Hflip,
                Augmentation::BrightnessContrast,
                Augmentation::ShiftScaleRotate,
            ],
            0.5,
        ),
    ];
    for a in Augmentation::ORDER {
        out.push((a.name().to_string(), vec![a], 1.0));
    }
    out.push(("all".to_string(), Augmentation::ORDER.to_vec(), 0.5));
    out.push(("all".to_string(), Augmentation::ORDER.to_vec(), 1.0));
    out
}

/// Samples per second of building shuffled training batches of 64 images of
/// 64×64×3 (augmentation with `augs` at `probability` and default limits,
/// normalization, CHW layout), decode excluded.
pub fn data_throughput(
    set: &str,
    augs: &[Augmentation],
    probability: f64,
    epochs: usize,
) -> Result<DataResult> {
    let data = DataConfig {
        synthetic: Some(SyntheticConfig {
            classes: 7,
            per_class: 140,
            image_size: 64,
            seed: 0,
        }),
        image_size: 64,
        augment: augs.to_vec(),
        augmentation: AugmentationSettings {
            probability,
            ..AugmentationSettings::default()
        },
        ..DataConfig::default()
    };
    let ds = Dataset::load(&data)?;
    let mut batcher = Batcher::new(&data);
    let mut rng = Rng::new(3);
    let mut order: Vec<usize> = (0..ds.len()).collect();
    let (mut buf, mut labels) = (Vec::new(), Vec::new());
    // one untimed epoch: buffers and blur plans warm, as in training
    for chunk in order.chunks(64) {
        batcher.fill(&ds, chunk, Some(&mut rng), &mut buf, &mut labels);
    }
    let t0 = Instant::now();
    for _ in 0..epochs {
        rng.shuffle(&mut order);
        for chunk in order.chunks(64) {
            batcher.fill(&ds, chunk, Some(&mut rng), &mut buf, &mut labels);
        }
    }
    let n = ds.len() * epochs;
    let samples_per_s = n as f64 / t0.elapsed().as_secs_f64();
    Ok(DataResult {
        set: set.to_string(),
        probability,
        images: ds.len(),
        augment: !augs.is_empty(),
        samples_per_s,
        batch_ms: 64.0 / samples_per_s * 1e3,
    })
}
