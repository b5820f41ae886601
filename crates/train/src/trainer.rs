//! The epoch loop: one trial from (config, data set, device) to an outcome.
//! Everything it reports leaves as plain data through [`Observer`]; it prints nothing.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::config::{ClassWeights, ClassWeightsName, Monitor, TrialConfig};
use crate::data::{stratified_split, Batcher, Dataset, Split};
use crate::early_stop;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::loss::{balanced_weights, CrossEntropy};
use crate::metrics::{Confusion, Report};
use crate::model::Model;
use crate::optim::{learning_rate_at, Optimizer};
use crate::pretrained::InitReport;
use crate::probe::{probe, Probe};
use crate::rng::Rng;

/// A cloneable flag that asks a running trial to stop between batches.
#[derive(Clone, Debug, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn request(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_requested(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Options of a run that are not part of the trial's identity.
#[derive(Clone, Debug)]
pub struct TrialOptions {
    /// Weight histograms every N epochs (and at the last epoch); `None`: never.
    pub histogram_every: Option<usize>,
    /// Also histograms of the gradients of the epoch's last batch.
    pub gradient_histograms: bool,
    /// Where to write `best.safetensors` and `config.json`; `None`: nowhere.
    pub checkpoint_dir: Option<PathBuf>,
    /// The metric that picks the best epoch when early stopping is off.
    pub best_metric: Monitor,
    /// Train through candle's generic autograd even on the CPU (the CPU engine
    /// is used otherwise); for comparisons and benchmarks.
    pub autograd: bool,
    /// Measure initialization health (see [`crate::probe`]); on by default, off
    /// only to measure what it costs.
    pub probe: bool,
    /// The file `model.init_from` names, found by the caller (a sweep's trial's
    /// checkpoint); `None`: `model.init_from` itself, which must then be a file.
    pub init_weights: Option<PathBuf>,
}

impl Default for TrialOptions {
    fn default() -> Self {
        TrialOptions {
            histogram_every: None,
            gradient_histograms: false,
            checkpoint_dir: None,
            best_metric: Monitor::ValLoss,
            autograd: false,
            probe: true,
            init_weights: None,
        }
    }
}

/// Metrics of one epoch (1-based `epoch`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochMetrics {
    pub epoch: usize,
    #[serde(with = "crate::serde_float")]
    pub train_loss: f64,
    #[serde(with = "crate::serde_float")]
    pub train_accuracy: f64,
    #[serde(with = "crate::serde_float")]
    pub val_loss: f64,
    #[serde(with = "crate::serde_float")]
    pub val_accuracy: f64,
    #[serde(with = "crate::serde_float")]
    pub val_macro_f1: f64,
    #[serde(with = "crate::serde_float")]
    pub val_balanced_accuracy: f64,
    #[serde(with = "crate::serde_float")]
    pub learning_rate: f64,
    /// Wall time of the whole epoch (training and validation).
    #[serde(with = "crate::serde_float")]
    pub seconds: f64,
    /// Of which: building batches (augmentation, normalization).
    #[serde(with = "crate::serde_float")]
    pub data_seconds: f64,
    /// Of which: forward, loss, backward and optimizer steps.
    #[serde(with = "crate::serde_float")]
    pub step_seconds: f64,
    /// Standard deviation (population) of the epoch's batch losses: how rough the
    /// training curve is within the epoch. NaN with fewer than two batches.
    #[serde(with = "crate::serde_float", default = "nan")]
    pub train_loss_std: f64,
    /// Standard deviation of the differences between successive batch losses
    /// (batch-to-batch jumps, insensitive to the epoch's downward trend). NaN
    /// with fewer than three batches.
    #[serde(with = "crate::serde_float", default = "nan")]
    pub train_loss_step_std: f64,
}

fn nan() -> f64 {
    f64::NAN
}

/// The spread of a sequence of batch losses: (std of the values, std of their
/// successive differences), both population standard deviations; NaN where the
/// sequence is too short (fewer than 2 values, fewer than 2 differences).
pub fn batch_loss_spread(losses: &[f64]) -> (f64, f64) {
    fn std(v: &[f64]) -> f64 {
        if v.len() < 2 {
            return f64::NAN;
        }
        let n = v.len() as f64;
        let m = v.iter().sum::<f64>() / n;
        (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt()
    }
    let diffs: Vec<f64> = losses.windows(2).map(|w| w[1] - w[0]).collect();
    (std(losses), std(&diffs))
}

impl EpochMetrics {
    pub fn get(&self, m: Monitor) -> f64 {
        match m {
            Monitor::ValLoss => self.val_loss,
            Monitor::ValAccuracy => self.val_accuracy,
            Monitor::ValMacroF1 => self.val_macro_f1,
            Monitor::ValBalancedAccuracy => self.val_balanced_accuracy,
            Monitor::TrainLoss => self.train_loss,
        }
    }
}

/// A histogram of one tensor's values (TensorBoard's shape: bucket right edges).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    /// `hidden0.weight`, or `hidden0.weight.grad` for gradients.
    pub name: String,
    pub min: f64,
    pub max: f64,
    pub count: u64,
    pub sum: f64,
    pub sum_squares: f64,
    pub bucket_limits: Vec<f64>,
    pub bucket_counts: Vec<u64>,
}

impl Histogram {
    pub fn from_values(name: String, values: &[f32], buckets: usize) -> Histogram {
        let finite = values.iter().filter(|v| v.is_finite()).map(|v| *v as f64);
        let (mut min, mut max, mut sum, mut sq, mut n) =
            (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0.0, 0u64);
        for v in finite {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            sq += v * v;
            n += 1;
        }
        if n == 0 {
            (min, max) = (0.0, 0.0);
        }
        let width = if max > min {
            (max - min) / buckets as f64
        } else {
            1.0
        };
        let bucket_limits: Vec<f64> = (1..=buckets).map(|i| min + width * i as f64).collect();
        let mut bucket_counts = vec![0u64; buckets];
        for v in values.iter().filter(|v| v.is_finite()) {
            let i = (((*v as f64 - min) / width) as usize).min(buckets - 1);
            bucket_counts[i] += 1;
        }
        Histogram {
            name,
            min,
            max,
            count: n,
            sum,
            sum_squares: sq,
            bucket_limits,
            bucket_counts,
        }
    }
}

/// What a trial tells its observer before the first epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialStart {
    pub classes: Vec<String>,
    pub train_counts: Vec<usize>,
    pub val_counts: Vec<usize>,
    pub num_parameters: usize,
    pub batches_per_epoch: usize,
    pub class_weights: Vec<f32>,
}

/// Receives a trial's progress as plain data. Every method has an empty default.
pub trait Observer {
    fn on_start(&mut self, _start: &TrialStart) {}
    fn on_batch(&mut self, _epoch: usize, _batch: usize, _batches: usize) {}
    fn on_epoch(&mut self, _metrics: &EpochMetrics) {}
    fn on_histograms(&mut self, _epoch: usize, _histograms: &[Histogram]) {}
    /// Initialization health (see [`crate::probe`]): before the first update and
    /// after the first epoch.
    fn on_probe(&mut self, _probe: &Probe) {}
    /// What the model took from `model.init_from`, before training.
    fn on_init(&mut self, _report: &InitReport) {}
    /// Asked after each epoch but the last (once `on_epoch` and `on_histograms`
    /// have seen it): `Some(reason)` stops the trial there, as pruned (a search's
    /// pruner answering from the trial's peers). The default never stops.
    fn stop_after_epoch(&mut self, _metrics: &EpochMetrics) -> Option<String> {
        None
    }
}

/// An observer that ignores everything.
pub struct NoObserver;
impl Observer for NoObserver {}

/// Why a trial ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum StopReason {
    /// Ran every configured epoch.
    EpochLimit,
    /// Early stopping: no improvement for `patience` epochs after `epoch`.
    EarlyStopping { epoch: usize },
    /// A non-finite training loss at `epoch`, `batch` (1-based).
    Diverged {
        epoch: usize,
        batch: usize,
        #[serde(with = "crate::serde_float")]
        loss: f64,
    },
    /// The stop flag was raised.
    Interrupted { epoch: usize },
    /// Stopped after `epoch` by the observer (a pruner); `rule` says why.
    Pruned { epoch: usize, rule: String },
}

/// The result of a trial.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TrialOutcome {
    pub stop: StopReason,
    pub epochs: Vec<EpochMetrics>,
    /// 1-based epoch with the best monitored value.
    pub best_epoch: Option<usize>,
    /// The epoch whose weights gave `report` (the best one when restored).
    pub report_epoch: Option<usize>,
    /// Validation report of the final weights; `None` when the trial diverged or was
    /// interrupted before its first evaluation.
    pub report: Option<Report>,
    pub num_parameters: usize,
    pub train_size: usize,
    pub val_size: usize,
    /// The best epoch's weights (`best.safetensors`).
    pub checkpoint: Option<PathBuf>,
    /// The weights that gave `report` (the best checkpoint, or `last.safetensors`).
    pub report_checkpoint: Option<PathBuf>,
    pub seconds: f64,
    /// Initialization health before the first update and after the first epoch
    /// (absent when the training split has fewer than two images).
    #[serde(default)]
    pub probes: Vec<Probe>,
    /// What was loaded from `model.init_from`, when set.
    #[serde(default)]
    pub init: Option<InitReport>,
}

impl TrialOutcome {
    pub fn diverged(&self) -> bool {
        matches!(self.stop, StopReason::Diverged { .. })
    }
}

fn class_weights(cfg: &TrialConfig, counts: &[usize]) -> Result<Vec<f32>> {
    Ok(match &cfg.train.class_weights {
        ClassWeights::Named(ClassWeightsName::None) => vec![1.0; counts.len()],
        ClassWeights::Named(ClassWeightsName::Balanced) => balanced_weights(counts),
        ClassWeights::List(w) => {
            if w.len() != counts.len() {
                return Err(Error::Config {
                    location: "train.class_weights".into(),
                    message: format!("{} weights given for {} classes", w.len(), counts.len()),
                });
            }
            w.iter().map(|x| *x as f32).collect()
        }
    })
}

fn counts_of(ds: &Dataset, idx: &[usize]) -> Vec<usize> {
    let mut c = vec![0; ds.num_classes()];
    for i in idx {
        c[ds.label(*i) as usize] += 1;
    }
    c
}

/// Validation pass: loss (exact weighted mean) and report.
struct Eval {
    loss: f64,
    report: Report,
}

fn evaluate(
    model: &mut Model,
    logits: &mut Logits<'_>,
    ds: &Dataset,
    idx: &[usize],
    batcher: &mut Batcher,
    ce: &CrossEntropy,
    bs: usize,
) -> Result<Eval> {
    let k = ds.num_classes();
    let mut buf = Vec::new();
    let mut labels = Vec::new();
    let mut cm = Confusion::new(k);
    let mut probs = Vec::with_capacity(idx.len() * k);
    let mut truth = Vec::with_capacity(idx.len());
    let (mut num, mut den) = (0f64, 0f64);
    for chunk in idx.chunks(bs.max(1)) {
        batcher.fill(ds, chunk, None, &mut buf, &mut labels);
        let z = logits.eval(model, &buf, chunk.len())?;
        let (sum, norm) = ce.sum_and_norm_host(&z, &labels);
        num += sum;
        den += norm as f64;
        for (row, y) in z.chunks_exact(k).zip(&labels) {
            let p = crate::loss::softmax_row(row);
            cm.add(*y, argmax(&p));
            probs.extend_from_slice(&p);
            truth.push(*y);
        }
    }
    let report = Report::new(&ds.classes, cm, Some((&probs, &truth)));
    Ok(Eval {
        loss: if den > 0.0 { num / den } else { f64::NAN },
        report,
    })
}

/// Evaluation-mode logits through the CPU engine when there is one, else
/// through the model's generic forward pass.
struct Logits<'a> {
    engine: Option<&'a mut Engine>,
    channels: usize,
    size: usize,
    device: Device,
}

impl<'a> Logits<'a> {
    fn new(engine: Option<&'a mut Engine>, ds: &Dataset, device: &Device) -> Self {
        Logits {
            engine,
            channels: ds.channels,
            size: ds.image_size,
            device: device.clone(),
        }
    }

    fn eval(&mut self, model: &mut Model, x: &[f32], n: usize) -> Result<Vec<f32>> {
        match self.engine.as_deref_mut() {
            Some(e) => Ok(e.forward_eval(model, x, n)?.to_vec()),
            None => {
                let xs =
                    Tensor::from_slice(x, (n, self.channels, self.size, self.size), &self.device)?;
                let z = model.forward_t(&xs, false, &mut Rng::new(0))?;
                Ok(z.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

fn argmax(row: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best as u32
}

/// The last batch's gradients, from whichever path computed them.
enum LastGrads<'a> {
    Engine(&'a [Vec<f32>]),
    Autograd(&'a candle_core::backprop::GradStore),
}

fn histograms(model: &Model, grads: Option<LastGrads<'_>>) -> Result<Vec<Histogram>> {
    let mut out = Vec::new();
    for (i, p) in model.params().iter().enumerate() {
        let v = p.var.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        out.push(Histogram::from_values(p.name.clone(), &v, 30));
        let g = match &grads {
            Some(LastGrads::Engine(g)) => g.get(i).cloned(),
            Some(LastGrads::Autograd(store)) => match store.get(p.var.as_tensor()) {
                Some(g) => Some(g.flatten_all()?.to_vec1::<f32>()?),
                None => None,
            },
            None => None,
        };
        if let Some(v) = g {
            out.push(Histogram::from_values(format!("{}.grad", p.name), &v, 30));
        }
    }
    Ok(out)
}

/// Writes `best.safetensors` (every tensor of `state`) and `config.json`.
pub fn write_checkpoint(
    dir: &Path,
    file: &str,
    names: &[String],
    snapshot: &[Vec<f32>],
    shapes: &[Vec<usize>],
    cfg: &TrialConfig,
) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut map = std::collections::HashMap::new();
    for ((n, v), sh) in names.iter().zip(snapshot).zip(shapes) {
        map.insert(
            n.clone(),
            Tensor::from_slice(v, sh.as_slice(), &Device::Cpu)?,
        );
    }
    let path = dir.join(file);
    let tmp = dir.join(format!("{file}.tmp"));
    if let Err(e) = candle_core::safetensors::save(&map, &tmp) {
        // A half-written file helps nobody (and on a full disk takes the space).
        let _ = std::fs::remove_file(&tmp);
        return Err(match e {
            candle_core::Error::Io(io) => Error::io(&tmp, io),
            other => Error::Invalid(format!(
                "{}: writing the checkpoint: {other}",
                tmp.display()
            )),
        });
    }
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    let cfg_path = dir.join("config.json");
    std::fs::write(&cfg_path, cfg.to_json()).map_err(|e| Error::io(&cfg_path, e))?;
    Ok(path)
}

/// A model for `cfg` and `ds`'s image shape and classes, with a checkpoint's weights.
pub fn model_from_checkpoint(
    cfg: &TrialConfig,
    checkpoint: &Path,
    ds: &Dataset,
    device: &Device,
) -> Result<Model> {
    let mut model = Model::new(
        &cfg.model,
        ds.channels,
        ds.image_size,
        ds.num_classes(),
        cfg.train.seed,
        device,
    )?;
    load_checkpoint(&mut model, checkpoint)?;
    Ok(model)
}

/// Loads a checkpoint written by [`write_checkpoint`] into a freshly built model.
pub fn load_checkpoint(model: &mut Model, path: &Path) -> Result<()> {
    let tensors = candle_core::safetensors::load(path, &Device::Cpu)?;
    let mut snap = Vec::new();
    for (name, t) in model.state() {
        let loaded = tensors
            .get(&name)
            .ok_or_else(|| Error::Invalid(format!("{}: no tensor `{name}`", path.display())))?;
        if loaded.dims() != t.dims() {
            return Err(Error::Invalid(format!(
                "{}: `{name}` has shape {:?}, the model expects {:?}",
                path.display(),
                loaded.dims(),
                t.dims()
            )));
        }
        snap.push(loaded.flatten_all()?.to_vec1::<f32>()?);
    }
    model.restore(&snap)
}

/// Splits `ds` as the config says.
pub fn split_for(cfg: &TrialConfig, ds: &Dataset) -> Result<Split> {
    stratified_split(
        ds,
        cfg.data.val_fraction,
        cfg.data.max_per_class,
        cfg.data.split_seed.unwrap_or(cfg.train.seed),
    )
}

/// Trains one configuration on `ds` and evaluates it on the validation split.
pub fn run_trial(
    cfg: &TrialConfig,
    ds: &Dataset,
    device: &Device,
    opts: &TrialOptions,
    obs: &mut dyn Observer,
    stop: &StopFlag,
) -> Result<TrialOutcome> {
    let t_start = Instant::now();
    if ds.channels != cfg.data.channels || ds.image_size != cfg.data.image_size {
        return Err(Error::Invalid(format!(
            "data set has {}-channel {}px images, the config wants {}-channel {}px",
            ds.channels, ds.image_size, cfg.data.channels, cfg.data.image_size
        )));
    }
    let split = split_for(cfg, ds)?;
    let train_counts = counts_of(ds, &split.train);
    let val_counts = counts_of(ds, &split.val);
    let weights = class_weights(cfg, &train_counts)?;
    let ce = CrossEntropy::new(weights.clone(), cfg.train.label_smoothing);
    let seed = cfg.train.seed;
    let mut model = Model::new(
        &cfg.model,
        ds.channels,
        ds.image_size,
        ds.num_classes(),
        seed,
        device,
    )?;
    let init = match &cfg.model.init_from {
        Some(source) => {
            let file = match &opts.init_weights {
                Some(f) => f.clone(),
                None if crate::config::is_weights_file(source) => PathBuf::from(source),
                None => {
                    return Err(Error::Invalid(format!(
                        "model.init_from = {source:?} names a sweep's trial: `sweep run` finds its checkpoint in the results database; give `sweep train` a .safetensors file"
                    )))
                }
            };
            let report = crate::pretrained::load_matching(&mut model, &file, source)?;
            obs.on_init(&report);
            Some(report)
        }
        None => None,
    };
    let params = model.params();
    let frozen: Vec<bool> = params
        .iter()
        .map(|p| {
            let layer = p.name.split('.').next().unwrap_or(&p.name);
            cfg.train
                .freeze
                .iter()
                .any(|f| crate::config::ModelConfig::freeze_matches(f, layer))
        })
        .collect();
    let mut opt = Optimizer::new(&cfg.train, &params).with_frozen(frozen);
    let mut engine = if device.is_cpu() && !opts.autograd {
        Some(Engine::new(&model, ds.channels, ds.image_size)?)
    } else {
        None
    };
    let mut shuffle_rng = Rng::stream(seed, "shuffle");
    let mut augment_rng = Rng::stream(seed, "augment");
    let mut dropout_rng = Rng::stream(seed, "dropout");
    let mut batcher = Batcher::new(&cfg.data);
    let bs = cfg.train.batch_size;
    let batches = split.train.len().div_ceil(bs);
    obs.on_start(&TrialStart {
        classes: ds.classes.clone(),
        train_counts,
        val_counts,
        num_parameters: model.num_parameters(),
        batches_per_epoch: batches,
        class_weights: weights,
    });

    let es = cfg.train.early_stopping_active();
    let (monitor, mode, min_delta) = match es {
        Some(e) => (e.monitor, e.resolved_mode(), e.min_delta),
        None => (opts.best_metric, opts.best_metric.default_mode(), 0.0),
    };
    let names: Vec<String> = model.state().into_iter().map(|(n, _)| n).collect();
    let shapes: Vec<Vec<usize>> = model
        .state()
        .iter()
        .map(|(_, t)| t.dims().to_vec())
        .collect();

    let mut epochs: Vec<EpochMetrics> = Vec::new();
    let mut history: Vec<f64> = Vec::new();
    let mut best: Option<(usize, Report)> = None;
    let mut best_snapshot: Option<Vec<Vec<f32>>> = None;
    let mut last_report: Option<Report> = None;
    let mut order = split.train.clone();
    let mut buf = Vec::new();
    let mut labels = Vec::new();
    let (c, s) = (ds.channels, ds.image_size);
    let mut stop_reason = StopReason::EpochLimit;

    // The probe batch: `batch_size` images evenly spaced through the training
    // split (which lists classes one after another, so every class is in it in
    // proportion), never augmented, so no random stream is touched.
    let probe_batch = {
        let take = crate::probe::evenly_spaced(&split.train, bs);
        (take.len() >= 2).then(|| {
            let (mut pb, mut pl) = (Vec::new(), Vec::new());
            batcher.fill(ds, &take, None, &mut pb, &mut pl);
            (pb, pl)
        })
    };
    let probe_batch = probe_batch.filter(|_| opts.probe);
    let take_probe = |model: &mut Model,
                      engine: Option<&mut Engine>,
                      phase: &str,
                      epoch: usize|
     -> Result<Option<Probe>> {
        match &probe_batch {
            Some((pb, pl)) => Ok(Some(probe(
                model,
                engine,
                pb,
                (c, s),
                pl,
                &ce,
                phase,
                epoch,
            )?)),
            None => Ok(None),
        }
    };
    let mut probes = Vec::new();
    if let Some(p) = take_probe(&mut model, engine.as_mut(), "init", 0)? {
        obs.on_probe(&p);
        probes.push(p);
    }

    'epochs: for epoch in 1..=cfg.train.epochs {
        if !cfg.train.freeze.is_empty() && cfg.train.freeze_epochs.map(|n| n + 1) == Some(epoch) {
            // unfrozen: every layer trains, with a fresh optimizer
            opt = Optimizer::new(&cfg.train, &params);
        }
        let t_epoch = Instant::now();
        let lr = learning_rate_at(&cfg.train, epoch - 1);
        shuffle_rng.shuffle(&mut order);
        let (mut data_s, mut step_s) = (0f64, 0f64);
        let (mut loss_sum, mut correct, mut seen) = (0f64, 0u64, 0usize);
        let mut batch_losses = Vec::with_capacity(batches);
        let mut last_grads = None;
        for (b, chunk) in order.chunks(bs).enumerate() {
            // Batch-norm cannot normalize one sample (PyTorch refuses it); a final
            // batch of one is skipped, as DataLoader(drop_last=True) would.
            if chunk.len() == 1 && cfg.model.batch_norm && order.len() > 1 {
                continue;
            }
            if stop.is_requested() {
                stop_reason = StopReason::Interrupted { epoch };
                break 'epochs;
            }
            let t0 = Instant::now();
            batcher.fill(ds, chunk, Some(&mut augment_rng), &mut buf, &mut labels);
            let t1 = Instant::now();
            let n = chunk.len();
            let (lv, z) = match engine.as_mut() {
                Some(e) => {
                    let lv = e.train_step(&mut model, &buf, &labels, &ce, &mut dropout_rng)?;
                    (lv as f64, None)
                }
                None => {
                    let x = Tensor::from_slice(&buf, (n, c, s, s), device)?;
                    let logits = model.forward_t(&x, true, &mut dropout_rng)?;
                    let loss = ce.loss(&logits, &labels)?;
                    (loss.to_scalar::<f32>()? as f64, Some((logits, loss)))
                }
            };
            if !lv.is_finite() {
                stop_reason = StopReason::Diverged {
                    epoch,
                    batch: b + 1,
                    loss: lv,
                };
                break 'epochs;
            }
            let rows = match (z, engine.as_ref()) {
                (Some((logits, loss)), _) => {
                    let grads = loss.backward()?;
                    opt.step(&params, &grads, lr)?;
                    if opts.gradient_histograms {
                        last_grads = Some(grads);
                    }
                    logits.flatten_all()?.to_vec1::<f32>()?
                }
                (None, Some(e)) => {
                    opt.step_slices(&params, e.grads(), lr)?;
                    e.logits(n).to_vec()
                }
                (None, None) => unreachable!("a step without logits has an engine"),
            };
            let t2 = Instant::now();
            data_s += (t1 - t0).as_secs_f64();
            step_s += (t2 - t1).as_secs_f64();
            loss_sum += lv * n as f64;
            batch_losses.push(lv);
            seen += n;
            for (row, y) in rows.chunks_exact(ds.num_classes()).zip(&labels) {
                correct += u64::from(argmax(row) == *y);
            }
            obs.on_batch(epoch, b + 1, batches);
        }
        let (train_loss_std, train_loss_step_std) = batch_loss_spread(&batch_losses);
        let ev = evaluate(
            &mut model,
            &mut Logits::new(engine.as_mut(), ds, device),
            ds,
            &split.val,
            &mut batcher,
            &ce,
            cfg.train.eval_batch_size,
        )?;
        let m = EpochMetrics {
            epoch,
            train_loss: loss_sum / seen.max(1) as f64,
            train_accuracy: correct as f64 / seen.max(1) as f64,
            val_loss: ev.loss,
            val_accuracy: ev.report.accuracy,
            val_macro_f1: ev.report.macro_f1,
            val_balanced_accuracy: ev.report.balanced_accuracy,
            learning_rate: lr,
            seconds: t_epoch.elapsed().as_secs_f64(),
            data_seconds: data_s,
            step_seconds: step_s,
            train_loss_std,
            train_loss_step_std,
        };
        obs.on_epoch(&m);
        if epoch == 1 {
            if let Some(p) = take_probe(&mut model, engine.as_mut(), "epoch1", 1)? {
                obs.on_probe(&p);
                probes.push(p);
            }
        }
        if let Some(every) = opts.histogram_every {
            if epoch % every.max(1) == 0 || epoch == cfg.train.epochs {
                let grads = match (&engine, &last_grads) {
                    (Some(e), _) if opts.gradient_histograms && seen > 0 => {
                        Some(LastGrads::Engine(e.grads()))
                    }
                    (None, Some(g)) => Some(LastGrads::Autograd(g)),
                    _ => None,
                };
                obs.on_histograms(epoch, &histograms(&model, grads)?);
            }
        }
        history.push(m.get(monitor));
        let pruned = if epoch < cfg.train.epochs {
            obs.stop_after_epoch(&m)
        } else {
            None
        };
        epochs.push(m);
        if early_stop::best_epoch(&history, mode, min_delta) == Some(epoch - 1) {
            best_snapshot = Some(model.snapshot()?);
            best = Some((epoch, ev.report.clone()));
        }
        last_report = Some(ev.report);
        if let Some(rule) = pruned {
            stop_reason = StopReason::Pruned { epoch, rule };
            break;
        }
        if let Some(e) = es {
            if early_stop::should_stop(&history, e) && epoch < cfg.train.epochs {
                stop_reason = StopReason::EarlyStopping { epoch };
                break;
            }
        }
    }

    let best_epoch = best.as_ref().map(|b| b.0);
    let restore = es.map(|e| e.restore_best).unwrap_or(false);
    let (report, report_epoch) = match (&stop_reason, restore, &best) {
        (StopReason::Diverged { .. }, _, _) => (None, None),
        (_, true, Some((e, r))) => {
            if let Some(snap) = &best_snapshot {
                model.restore(snap)?;
            }
            (Some(r.clone()), Some(*e))
        }
        _ => (last_report, epochs.last().map(|e| e.epoch)),
    };
    let checkpoint = match (&opts.checkpoint_dir, &best_snapshot) {
        (Some(dir), Some(snap)) => Some(write_checkpoint(
            dir,
            "best.safetensors",
            &names,
            snap,
            &shapes,
            cfg,
        )?),
        _ => None,
    };
    // When the report comes from other weights than the best epoch's (no restore),
    // keep those too, so the stored metrics can be reproduced from a file.
    let report_checkpoint = match (&opts.checkpoint_dir, report_epoch) {
        (Some(dir), Some(e)) if Some(e) != best_epoch => Some(write_checkpoint(
            dir,
            "last.safetensors",
            &names,
            &model.snapshot()?,
            &shapes,
            cfg,
        )?),
        _ => checkpoint.clone(),
    };
    Ok(TrialOutcome {
        stop: stop_reason,
        best_epoch,
        report_epoch,
        report,
        num_parameters: model.num_parameters(),
        train_size: split.train.len(),
        val_size: split.val.len(),
        epochs,
        checkpoint,
        report_checkpoint,
        seconds: t_start.elapsed().as_secs_f64(),
        probes,
        init,
    })
}

/// Evaluates a saved checkpoint (written for `cfg`) on every image of `ds`, in
/// evaluation mode: the held-out test set report. `ds` must have the classes the
/// model was trained on, in the same order.
pub fn evaluate_checkpoint(
    cfg: &TrialConfig,
    checkpoint: &Path,
    ds: &Dataset,
    classes: &[String],
    device: &Device,
) -> Result<Report> {
    if ds.classes != classes {
        let missing: Vec<&String> = classes.iter().filter(|c| !ds.classes.contains(c)).collect();
        let extra: Vec<&String> = ds.classes.iter().filter(|c| !classes.contains(c)).collect();
        return Err(Error::Invalid(format!(
            "the evaluation data's classes differ from the training classes (missing: {}; not trained on: {})",
            if missing.is_empty() { "none".to_string() } else { missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") },
            if extra.is_empty() { "none".to_string() } else { extra.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ") },
        )));
    }
    let mut model = model_from_checkpoint(cfg, checkpoint, ds, device)?;
    let counts = counts_of(ds, &(0..ds.len()).collect::<Vec<_>>());
    let ce = CrossEntropy::new(class_weights(cfg, &counts)?, cfg.train.label_smoothing);
    let mut batcher = Batcher::new(&cfg.data);
    let all: Vec<usize> = (0..ds.len()).collect();
    let mut engine = cpu_engine(&model, ds)?;
    Ok(evaluate(
        &mut model,
        &mut Logits::new(engine.as_mut(), ds, device),
        ds,
        &all,
        &mut batcher,
        &ce,
        cfg.train.eval_batch_size,
    )?
    .report)
}

/// Predicted classes of `idx` with a saved checkpoint, in evaluation mode.
pub fn predict_checkpoint(
    cfg: &TrialConfig,
    checkpoint: &Path,
    ds: &Dataset,
    idx: &[usize],
    device: &Device,
) -> Result<Vec<u32>> {
    let mut model = model_from_checkpoint(cfg, checkpoint, ds, device)?;
    let mut batcher = Batcher::new(&cfg.data);
    let (mut buf, mut labels) = (Vec::new(), Vec::new());
    let mut out = Vec::with_capacity(idx.len());
    let mut engine = cpu_engine(&model, ds)?;
    let mut logits = Logits::new(engine.as_mut(), ds, device);
    for chunk in idx.chunks(cfg.train.eval_batch_size.max(1)) {
        batcher.fill(ds, chunk, None, &mut buf, &mut labels);
        let z = logits.eval(&mut model, &buf, chunk.len())?;
        for row in z.chunks_exact(ds.num_classes()) {
            out.push(argmax(row));
        }
    }
    Ok(out)
}

/// The CPU engine for a model on the CPU; `None` on other devices.
fn cpu_engine(model: &Model, ds: &Dataset) -> Result<Option<Engine>> {
    Ok(if model.device().is_cpu() {
        Some(Engine::new(model, ds.channels, ds.image_size)?)
    } else {
        None
    })
}
