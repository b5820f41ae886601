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
use crate::error::Result;
use crate::loss::CrossEntropy;
use crate::model::Model;

/// One layer's health on the probe batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerHealth {
    /// `conv0`, `hidden1`, `output`.
    pub layer: String,
    /// Output units: channels of a convolution, neurons of a dense layer, classes.
    pub units: usize,
    /// Mean and standard deviation (population) of the layer's outputs after its
    /// activation, over every image, unit and position (the logits for `output`).
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
    (0..n).flat_map(move |i| a[(i * units + u) * per..(i * units + u + 1) * per].iter().copied())
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

/// Measures `model` on the batch `xs` (`[N, C, H, W]`) with `labels`.
pub fn probe(
    model: &mut Model,
    xs: &Tensor,
    labels: &[u32],
    ce: &CrossEntropy,
    phase: &str,
    epoch: usize,
) -> Result<Probe> {
    let n = labels.len();
    let relu = model.activation == Activation::Relu;
    let (logits, captured) = model.forward_capture(xs)?;
    let loss = ce.loss(&logits, labels)?;
    let loss_value = loss.to_scalar::<f32>()? as f64;
    let grads = loss.backward()?;
    let classes = logits.dim(1)?;
    let mut layers = Vec::new();
    for (layer, (name, a)) in model.layers().zip(&captured) {
        let units = a.dim(1)?;
        let values = a.flatten_all()?.to_vec1::<f32>()?;
        let (activation_mean, activation_std) = mean_std(&values);
        let w = layer.weight.as_tensor();
        let weight = w.flatten_all()?.to_vec1::<f32>()?;
        let gradient_norm = match grads.get(w) {
            Some(g) => g
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .map(|x| (*x as f64).powi(2))
                .sum::<f64>()
                .sqrt(),
            None => f64::NAN,
        };
        layers.push(LayerHealth {
            layer: name.clone(),
            units,
            activation_mean,
            activation_std,
            dead_share: if relu && name != "output" {
                dead_share(&values, n, units)
            } else {
                f64::NAN
            },
            gradient_norm,
            weight_std: mean_std(&weight).1,
            identical_units: identical_units(&values, n, units),
        });
    }
    Ok(Probe {
        phase: phase.to_string(),
        epoch,
        loss: loss_value,
        chance_loss: (classes as f64).ln(),
        images: n,
        layers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_read_per_channel_over_images_and_positions() {
        // 2 images, 3 units, 2 positions: unit 1 is zero everywhere, unit 2 only
        // in image 0.
        let a = [
            1.0, 2.0, 0.0, 0.0, 0.0, 0.0, //
            3.0, 4.0, 0.0, 0.0, 5.0, 0.0,
        ];
        assert!((dead_share(&a, 2, 3) - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(unit_values(&a, 2, 3, 2).collect::<Vec<_>>(), [0.0, 0.0, 5.0, 0.0]);
        assert!(!identical_units(&a, 2, 3));
        let same = [0.5, 0.5, 0.5, -1.0, -1.0, -1.0];
        assert!(identical_units(&same, 2, 3));
        assert!(!identical_units(&[1.0, 2.0], 2, 1), "one unit is not a symmetry");
        let (m, s) = mean_std(&[1.0, 3.0]);
        assert_eq!((m, s), (2.0, 1.0));
        assert!(mean_std(&[]).0.is_nan());
        assert_eq!(evenly_spaced(&[10, 11, 12, 13, 14, 15], 3), [10, 12, 14]);
        assert_eq!(evenly_spaced(&[10, 11], 5), [10, 11]);
        assert!(evenly_spaced(&[], 4).is_empty());
    }
}
