//! Weight initialization schemes, with PyTorch's formulas (`torch.nn.init`), drawn
//! from our seeded stream. Biases start at zero except under `pytorch_default`.

use crate::config::{Activation, InitScheme, ModelConfig};
use crate::rng::Rng;

/// PyTorch's `calculate_gain` for the activation (GELU has none there; it takes
/// ReLU's, √2, as common practice does).
pub fn gain(act: Activation) -> f64 {
    match act {
        Activation::Relu | Activation::Gelu => std::f64::consts::SQRT_2,
        Activation::Tanh => 5.0 / 3.0,
        Activation::Sigmoid => 1.0,
    }
}

/// Fills a weight of `fan_in`, `fan_out` (receptive field included) and a bias.
/// `act` is the activation that follows the layer (the output layer uses the model's
/// activation gain too, as `nn.init.kaiming_normal_(..., nonlinearity=...)` loops do).
pub fn init_layer(
    cfg: &ModelConfig,
    fan_in: usize,
    fan_out: usize,
    weight: &mut [f32],
    bias: &mut [f32],
    rng: &mut Rng,
) {
    let fi = fan_in as f64;
    let fo = fan_out as f64;
    let g = gain(cfg.activation);
    let uniform = |rng: &mut Rng, bound: f64| rng.uniform(-bound, bound) as f32;
    match cfg.init {
        InitScheme::KaimingNormal => {
            let std = g / fi.sqrt();
            weight
                .iter_mut()
                .for_each(|w| *w = (rng.normal() * std) as f32);
        }
        InitScheme::KaimingUniform => {
            let bound = g * (3.0 / fi).sqrt();
            weight.iter_mut().for_each(|w| *w = uniform(rng, bound));
        }
        InitScheme::XavierNormal => {
            let std = (2.0 / (fi + fo)).sqrt();
            weight
                .iter_mut()
                .for_each(|w| *w = (rng.normal() * std) as f32);
        }
        InitScheme::XavierUniform => {
            let bound = (6.0 / (fi + fo)).sqrt();
            weight.iter_mut().for_each(|w| *w = uniform(rng, bound));
        }
        InitScheme::Uniform => {
            weight
                .iter_mut()
                .for_each(|w| *w = rng.uniform(cfg.init_low, cfg.init_high) as f32);
        }
        InitScheme::Normal => {
            weight
                .iter_mut()
                .for_each(|w| *w = (rng.normal() * cfg.init_std) as f32);
        }
        InitScheme::Constant => weight.iter_mut().for_each(|w| *w = cfg.init_value as f32),
        InitScheme::PytorchDefault => {
            // kaiming_uniform_(a=√5) gives bound 1/√fan_in; the bias uses the same bound.
            let bound = 1.0 / fi.sqrt();
            weight.iter_mut().for_each(|w| *w = uniform(rng, bound));
            bias.iter_mut().for_each(|b| *b = uniform(rng, bound));
            return;
        }
    }
    bias.iter_mut().for_each(|b| *b = 0.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn std_of(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().map(|x| *x as f64).sum::<f64>() / n;
        (v.iter().map(|x| (*x as f64 - m).powi(2)).sum::<f64>() / n).sqrt()
    }

    /// Standard deviations of a 512×1024 layer against the formulas of torch.nn.init:
    ///   kaiming_normal_(w, nonlinearity='relu'):  std = sqrt(2)/sqrt(fan_in)
    ///   kaiming_uniform_(w, nonlinearity='relu'): bound = sqrt(2)*sqrt(3/fan_in), std = bound/sqrt(3)
    ///   xavier_normal_(w):  std = sqrt(2/(fan_in+fan_out))
    ///   xavier_uniform_(w): bound = sqrt(6/(fan_in+fan_out)), std = bound/sqrt(3)
    ///   nn.Linear default (kaiming_uniform_(a=sqrt(5))): bound = 1/sqrt(fan_in)
    #[test]
    fn init_statistics_match_pytorch_formulas() {
        let (fi, fo) = (1024usize, 512usize);
        let cases = [
            (
                InitScheme::KaimingNormal,
                (2.0f64).sqrt() / (fi as f64).sqrt(),
            ),
            (
                InitScheme::KaimingUniform,
                (2.0f64).sqrt() * (3.0 / fi as f64).sqrt() / 3f64.sqrt(),
            ),
            (InitScheme::XavierNormal, (2.0 / (fi + fo) as f64).sqrt()),
            (
                InitScheme::XavierUniform,
                (6.0 / (fi + fo) as f64).sqrt() / 3f64.sqrt(),
            ),
            (
                InitScheme::PytorchDefault,
                1.0 / (fi as f64).sqrt() / 3f64.sqrt(),
            ),
            (InitScheme::Normal, 0.01),
            (InitScheme::Uniform, 0.1 / 12f64.sqrt()),
        ];
        for (scheme, want) in cases {
            let cfg = ModelConfig {
                init: scheme,
                ..ModelConfig::default()
            };
            let mut w = vec![0f32; fi * fo];
            let mut b = vec![1f32; fo];
            init_layer(&cfg, fi, fo, &mut w, &mut b, &mut Rng::new(9));
            let got = std_of(&w);
            assert!(
                (got / want - 1.0).abs() < 0.02,
                "{scheme:?}: std {got} want {want}"
            );
            if scheme == InitScheme::PytorchDefault {
                let bound = 1.0 / (fi as f32).sqrt();
                assert!(b.iter().all(|x| x.abs() <= bound) && b.iter().any(|x| *x != 0.0));
            } else {
                assert!(b.iter().all(|x| *x == 0.0), "{scheme:?}: bias not zero");
            }
        }
        let cfg = ModelConfig {
            init: InitScheme::Constant,
            init_value: 0.3,
            ..ModelConfig::default()
        };
        let mut w = vec![0f32; 10];
        init_layer(&cfg, 5, 2, &mut w, &mut [0.0; 2], &mut Rng::new(1));
        assert!(w.iter().all(|x| *x == 0.3));
    }
}
