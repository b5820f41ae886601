//! Cross-entropy with class weights and label smoothing, with the semantics of
//! `torch.nn.functional.cross_entropy(logits, y, weight=w, label_smoothing=eps)`:
//!
//! loss = Σᵢ [(1−ε)·w[yᵢ]·(−log pᵢ[yᵢ]) + ε/K·Σ_c w_c·(−log pᵢ[c])] / Σᵢ w[yᵢ]

use candle_core::{Tensor, D};

use crate::error::Result;

#[derive(Clone, Debug)]
pub struct CrossEntropy {
    weights: Vec<f32>,
    smoothing: f32,
}

impl CrossEntropy {
    /// `weights`: one per class (all 1 for unweighted).
    pub fn new(weights: Vec<f32>, smoothing: f64) -> Self {
        CrossEntropy {
            weights,
            smoothing: smoothing as f32,
        }
    }

    pub fn num_classes(&self) -> usize {
        self.weights.len()
    }

    /// The target matrix T (`[N, K]`) and the normalizer Σ w[yᵢ], so that
    /// loss = −Σ T ⊙ log_softmax(logits) / normalizer.
    pub fn targets(&self, labels: &[u32]) -> (Vec<f32>, f32) {
        let k = self.weights.len();
        let eps = self.smoothing;
        let mut t = vec![0f32; labels.len() * k];
        let mut norm = 0f32;
        for (i, &y) in labels.iter().enumerate() {
            let row = &mut t[i * k..(i + 1) * k];
            for (c, v) in row.iter_mut().enumerate() {
                *v = eps / k as f32 * self.weights[c];
            }
            row[y as usize] += (1.0 - eps) * self.weights[y as usize];
            norm += self.weights[y as usize];
        }
        (t, norm)
    }

    /// The mean loss of a batch as a scalar tensor that backpropagates to `logits`.
    pub fn loss(&self, logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
        let (sum, norm) = self.sum_and_norm(logits, labels)?;
        Ok((sum / norm as f64)?)
    }

    /// Σ of the numerator (a scalar tensor) and Σ w[yᵢ], for exact means over many batches.
    pub fn sum_and_norm(&self, logits: &Tensor, labels: &[u32]) -> Result<(Tensor, f32)> {
        let (t, norm) = self.targets(labels);
        let t = Tensor::from_vec(t, (labels.len(), self.weights.len()), logits.device())?;
        let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
        Ok(((logp * t)?.sum_all()?.neg()?, norm))
    }
}

impl CrossEntropy {
    /// [`CrossEntropy::sum_and_norm`] on host logits (`n × K`, row-major), in f64.
    pub fn sum_and_norm_host(&self, logits: &[f32], labels: &[u32]) -> (f64, f32) {
        let (t, norm) = self.targets(labels);
        let k = self.weights.len();
        let mut sum = 0f64;
        for (z, ti) in logits.chunks_exact(k).zip(t.chunks_exact(k)) {
            let max = z.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b)) as f64;
            let lse = max + z.iter().map(|v| (*v as f64 - max).exp()).sum::<f64>().ln();
            for (zi, tv) in z.iter().zip(ti) {
                sum -= *tv as f64 * (*zi as f64 - lse);
            }
        }
        (sum, norm)
    }
}

/// Softmax probabilities of one row of logits.
pub fn softmax_row(z: &[f32]) -> Vec<f32> {
    let max = z.iter().fold(f32::NEG_INFINITY, |a, b| a.max(*b));
    let e: Vec<f32> = z.iter().map(|v| (v - max).exp()).collect();
    let s: f32 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

/// scikit-learn's `compute_class_weight("balanced")`: n / (K · count_c).
pub fn balanced_weights(counts: &[usize]) -> Vec<f32> {
    let n: usize = counts.iter().sum();
    let k = counts.len();
    counts
        .iter()
        .map(|c| {
            if *c == 0 {
                0.0
            } else {
                n as f32 / (k as f32 * *c as f32)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn logits() -> Tensor {
        Tensor::new(
            &[
                [1.0f32, 2.0, 0.5],
                [0.1, -1.0, 2.0],
                [0.3, 0.3, 0.3],
                [2.5, -0.5, 1.0],
            ],
            &Device::Cpu,
        )
        .unwrap()
    }

    /// Reference values from PyTorch 2.x, float64:
    /// ```python
    /// import torch, torch.nn.functional as F
    /// x = torch.tensor([[1.0,2.0,0.5],[0.1,-1.0,2.0],[0.3,0.3,0.3],[2.5,-0.5,1.0]], dtype=torch.float64, requires_grad=True)
    /// y = torch.tensor([1,2,0,0]); w = torch.tensor([1.0,2.0,0.5], dtype=torch.float64)
    /// F.cross_entropy(x, y); F.cross_entropy(x, y, weight=w)
    /// F.cross_entropy(x, y, label_smoothing=0.1)
    /// l = F.cross_entropy(x, y, weight=w, label_smoothing=0.1); l.backward(); x.grad
    /// ```
    #[test]
    fn matches_pytorch_cross_entropy() {
        let y = [1u32, 2, 0, 0];
        let w = vec![1.0f32, 2.0, 0.5];
        let cases = [
            (vec![1.0f32; 3], 0.0, REF_PLAIN),
            (w.clone(), 0.0, REF_WEIGHTED),
            (vec![1.0f32; 3], 0.1, REF_SMOOTH),
            (w.clone(), 0.1, REF_WEIGHTED_SMOOTH),
        ];
        for (weights, eps, want) in cases {
            let got = CrossEntropy::new(weights, eps)
                .loss(&logits(), &y)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                (got as f64 - want).abs() < 1e-5,
                "eps {eps}: {got} vs {want}"
            );
        }
        let x = Var::from_tensor(&logits()).unwrap();
        let l = CrossEntropy::new(w, 0.1).loss(x.as_tensor(), &y).unwrap();
        let g = l.backward().unwrap();
        let grad = g.get(x.as_tensor()).unwrap().to_vec2::<f32>().unwrap();
        for (row, want) in grad.iter().zip(REF_GRAD) {
            for (a, b) in row.iter().zip(want) {
                assert!((*a as f64 - b).abs() < 1e-5, "{grad:?}");
            }
        }
    }

    #[test]
    fn balanced_weights_match_sklearn() {
        // compute_class_weight("balanced", classes=[0,1,2], y=[0]*6+[1]*3+[2]) = [0.5556, 1.1111, 3.3333]
        let w = balanced_weights(&[6, 3, 1]);
        for (a, b) in w.iter().zip([10.0 / 18.0, 10.0 / 9.0, 10.0 / 3.0]) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    // PyTorch 2.15.0, float64.
    const REF_PLAIN: f64 = 0.49651921;
    const REF_WEIGHTED: f64 = 0.5243452;
    const REF_SMOOTH: f64 = 0.59568588;
    const REF_WEIGHTED_SMOOTH: f64 = 0.64488304;
    const REF_GRAD: [[f64; 3]; 4] = [
        [0.091076845, -0.14710686, 0.056030015],
        [0.0082964968, -0.0095874392, 0.0012909424],
        [-0.13209877, 0.060493827, 0.071604938],
        [-0.02992067, -0.0059782705, 0.03589894],
    ];
}
