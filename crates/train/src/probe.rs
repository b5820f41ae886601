//! Initialization health: per-layer statistics of one fixed batch, taken before
//! the first update and again after the first epoch.
//!
//! The batch is `batch_size` images evenly spaced through the training split
//! (every class in proportion), without augmentation, so that both measurements see the same images
//! and no random stream of the trial is touched: a trial's numbers are the same
//! with and without the probe. The forward pass is the training-mode one
//! (batch-norm on batch statistics) without dropout and without updating the
//! running statistics; the gradients come from the trial's own loss and are
//! thrown away.

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use crate::config::Activation;
use crate::engine::Engine;
use crate::error::Result;
use crate::loss::CrossEntropy;
use crate::model::Model;

/// One layer's health on the probe batch. A layer's output is what it hands
/// on: a convolution block's activated and pooled maps, a dense block's
/// activations (before dropout), the logits for `output`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerHealth {
    /// `conv0`, `hidden1`, `output`.
    pub layer: String,
    /// Output units: channels of a convolution, neurons of a dense layer, classes.
    pub units: usize,
    /// Mean and standard deviation (population) of the layer's outputs, over
    /// every image, unit and position.
    #[serde(with = "crate::serde_float")]
    pub activation_mean: f64,
    #[serde(with = "crate::serde_float")]
    pub activation_std: f64,
    /// Share of units whose output is zero for every image and position of the
    /// batch (dead ReLUs); NaN for other activations and for `output`.
    #[serde(with = "crate::serde_float")]
    pub dead_share: f64,
    /// L2 norm of the gradient of the layer's weight.
    #[serde(with = "crate::serde_float")]
    pub gradient_norm: f64,
    /// Standard deviation (population) of the layer's weight.
    #[serde(with = "crate::serde_float")]
    pub weight_std: f64,
    /// Every unit's outputs equal the first unit's on the whole batch (the symmetry
    /// a constant initialization creates and training cannot break); false for a
    /// layer of one unit.
    pub identical_units: bool,
}

/// One measurement of every layer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// `init` (before the first update) or `epoch1` (after the first epoch).
    pub phase: String,
    /// 0 for `init`, 1 for `epoch1`.
    pub epoch: usize,
    /// The trial's loss on the probe batch.
    #[serde(with = "crate::serde_float")]
    pub loss: f64,
    /// ln(classes): the loss of a classifier that predicts every class alike, where
    /// a well-initialized one starts.
    #[serde(with = "crate::serde_float")]
    pub chance_loss: f64,
    /// Images in the probe batch.
    pub images: usize,
    pub layers: Vec<LayerHealth>,
}

/// At most `n` items evenly spaced through `items` (all of them when fewer):
/// item `⌊i · len / n⌋` for `i < n`.
pub fn evenly_spaced(items: &[usize], n: usize) -> Vec<usize> {
    let take = n.min(items.len());
    (0..take).map(|i| items[i * items.len() / take]).collect()
}

/// Population mean and standard deviation, in f64.
pub fn mean_std(v: &[f32]) -> (f64, f64) {
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = v.len() as f64;
    let mean = v.iter().map(|x| *x as f64).sum::<f64>() / n;
    let var = v.iter().map(|x| (*x as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Values of `a` (`[N, U]` or `[N, U, H, W]`, row-major) unit by unit: the values
/// of unit `u` are `a[n][u][..]` for every `n`.
fn unit_values(a: &[f32], n: usize, units: usize, u: usize) -> impl Iterator<Item = f32> + '_ {
    let per = a.len() / (n * units).max(1);
    (0..n).flat_map(move |i| {
        a[(i * units + u) * per..(i * units + u + 1) * per]
            .iter()
            .copied()
    })
}

/// Share of units whose every value is exactly zero.
pub fn dead_share(a: &[f32], n: usize, units: usize) -> f64 {
    if units == 0 {
        return f64::NAN;
    }
    let dead = (0..units)
        .filter(|u| unit_values(a, n, units, *u).all(|x| x == 0.0))
        .count();
    dead as f64 / units as f64
}

/// Whether every unit's values equal the first unit's (to 1e-6 of their size).
pub fn identical_units(a: &[f32], n: usize, units: usize) -> bool {
    if units < 2 || a.is_empty() {
        return false;
    }
    let first: Vec<f32> = unit_values(a, n, units, 0).collect();
    (1..units).all(|u| {
        unit_values(a, n, units, u)
            .zip(&first)
            .all(|(x, y)| (x - y).abs() <= 1e-6 * (1.0 + y.abs()))
    })
}

/// Measures `model` on the batch `x` (`[N, C, H, W]` flattened, `labels.len()`
/// images of `channels × size × size`): through the CPU engine when there is
/// one (one training step's cost), else through candle's autograd.
#[allow(clippy::too_many_arguments)]
pub fn probe(
    model: &mut Model,
    engine: Option<&mut Engine>,
    x: &[f32],
    (channels, size): (usize, usize),
    labels: &[u32],
    ce: &CrossEntropy,
    phase: &str,
    epoch: usize,
) -> Result<Probe> {
    let n = labels.len();
    // per layer: (its output values, the L2 norm of its weight's gradient)
    let (loss, measured): (f64, Vec<(Vec<f32>, f64)>) = match engine {
        Some(e) => {
            let p = e.probe_pass(model, x, labels, ce)?;
            (
                p.loss as f64,
                p.outputs.into_iter().zip(p.gradient_norms).collect(),
            )
        }
        None => {
            let xs = Tensor::from_slice(x, (n, channels, size, size), model.device())?;
            let (logits, captured) = model.forward_capture(&xs)?;
            let loss = ce.loss(&logits, labels)?;
            let grads = loss.backward()?;
            let mut measured = Vec::new();
            for (layer, (_, a)) in model.layers().zip(&captured) {
                let g = match grads.get(layer.weight.as_tensor()) {
                    Some(g) => l2(&g.flatten_all()?.to_vec1::<f32>()?),
                    None => f64::NAN,
                };
                measured.push((a.flatten_all()?.to_vec1::<f32>()?, g));
            }
            (loss.to_scalar::<f32>()? as f64, measured)
        }
    };
    let relu = model.activation == Activation::Relu;
    let mut layers = Vec::new();
    for (layer, (values, gradient_norm)) in model.layers().zip(measured) {
        let name = layer.name.clone();
        let units = layer.weight.dims()[0];
        let (activation_mean, activation_std) = mean_std(&values);
        let weight = layer.weight.as_tensor().flatten_all()?.to_vec1::<f32>()?;
        layers.push(LayerHealth {
            dead_share: if relu && name != "output" {
                dead_share(&values, n, units)
            } else {
                f64::NAN
            },
            identical_units: identical_units(&values, n, units),
            layer: name,
            units,
            activation_mean,
            activation_std,
            gradient_norm,
            weight_std: mean_std(&weight).1,
        });
    }
    let classes = model.output.weight.dims()[0];
    Ok(Probe {
        phase: phase.to_string(),
        epoch,
        loss,
        chance_loss: (classes as f64).ln(),
        images: n,
        layers,
    })
}

/// The L2 norm, summed in f64.
pub(crate) fn l2(v: &[f32]) -> f64 {
    v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Arch, ModelConfig};
    use crate::rng::Rng;
    use candle_core::Device;

    /// The CPU engine's probe and candle autograd's measure the same thing:
    /// same loss, outputs and gradient norms; and neither moves batch-norm's
    /// running statistics or any weight.
    #[test]
    fn the_engine_and_autograd_probe_alike_and_change_nothing() {
        let mlp = ModelConfig {
            hidden: Some(vec![32, 16]),
            batch_norm: true,
            dropout: 0.4,
            ..ModelConfig::default()
        };
        let cnn = ModelConfig {
            arch: Arch::Cnn,
            conv_channels: vec![4, 6],
            hidden: Some(vec![12]),
            batch_norm: true,
            dropout: 0.3,
            ..ModelConfig::default()
        };
        for (cfg, size) in [(mlp, 6), (cnn, 9)] {
            let dev = Device::Cpu;
            let mut a = Model::new(&cfg, 3, size, 5, 7, &dev).unwrap();
            let mut b = Model::new(&cfg, 3, size, 5, 7, &dev).unwrap();
            let mut engine = Engine::new(&b, 3, size).unwrap();
            let n = 10;
            let mut r = Rng::new(3);
            let x: Vec<f32> = (0..n * 3 * size * size)
                .map(|_| r.normal() as f32)
                .collect();
            let labels: Vec<u32> = (0..n as u32).map(|i| i % 5).collect();
            let ce = CrossEntropy::new(vec![1.0; 5], 0.0);
            let before = b.snapshot().unwrap();
            let pa = probe(&mut a, None, &x, (3, size), &labels, &ce, "init", 0).unwrap();
            let pb = probe(
                &mut b,
                Some(&mut engine),
                &x,
                (3, size),
                &labels,
                &ce,
                "init",
                0,
            )
            .unwrap();
            assert_eq!(
                a.snapshot().unwrap(),
                before,
                "autograd probe moved the model"
            );
            assert_eq!(
                b.snapshot().unwrap(),
                before,
                "engine probe moved the model"
            );
            assert!(
                (pa.loss - pb.loss).abs() < 1e-4 * pa.loss,
                "{} vs {}",
                pa.loss,
                pb.loss
            );
            assert_eq!(pa.layers.len(), pb.layers.len());
            for (la, lb) in pa.layers.iter().zip(&pb.layers) {
                let close = |x: f64, y: f64| (x - y).abs() <= 1e-3 * (1.0 + x.abs());
                assert_eq!((&la.layer, la.units), (&lb.layer, lb.units));
                assert!(
                    close(la.activation_mean, lb.activation_mean),
                    "{la:?} vs {lb:?}"
                );
                assert!(
                    close(la.activation_std, lb.activation_std),
                    "{la:?} vs {lb:?}"
                );
                assert!(
                    close(la.gradient_norm, lb.gradient_norm),
                    "{la:?} vs {lb:?}"
                );
                assert_eq!(la.weight_std, lb.weight_std);
                assert!(
                    la.dead_share == lb.dead_share
                        || (la.dead_share.is_nan() && lb.dead_share.is_nan()),
                    "{la:?} vs {lb:?}"
                );
                assert_eq!(la.identical_units, lb.identical_units);
                assert!(la.gradient_norm > 0.0);
            }
        }
    }

    #[test]
    fn units_are_read_per_channel_over_images_and_positions() {
        // 2 images, 3 units, 2 positions: unit 1 is zero everywhere (dead), unit
        // 2 is zero in image 0 only (alive).
        let a = [
            1.0, 2.0, 0.0, 0.0, 0.0, 0.0, //
            3.0, 4.0, 0.0, 0.0, 5.0, 0.0,
        ];
        assert!((dead_share(&a, 2, 3) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(
            unit_values(&a, 2, 3, 2).collect::<Vec<_>>(),
            [0.0, 0.0, 5.0, 0.0]
        );
        assert!(!identical_units(&a, 2, 3));
        let same = [0.5, 0.5, 0.5, -1.0, -1.0, -1.0];
        assert!(identical_units(&same, 2, 3));
        assert!(
            !identical_units(&[1.0, 2.0], 2, 1),
            "one unit is not a symmetry"
        );
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
        assert!(mean_std(&[]).0.is_nan());
        assert_eq!(evenly_spaced(&[10, 11, 12, 13, 14, 15], 3), [10, 12, 14]);
        assert_eq!(evenly_spaced(&[10, 11], 5), [10, 11]);
        assert!(evenly_spaced(&[], 4).is_empty());
    }
}
