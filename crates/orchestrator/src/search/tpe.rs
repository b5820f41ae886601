//! The tree-structured Parzen estimator (Bergstra et al., 2011), univariate, as
//! Optuna's `TPESampler` does it by default: after `startup_trials` random
//! configurations, the finished ones are split into the best
//! `min(ceil(0.1·n), 25)` ("below") and the rest ("above", pruned ones last);
//! each setting gets two Parzen estimators, l(x) over the best and g(x) over the
//! rest (truncated Gaussians at each observation, plus a prior over the whole
//! range, bandwidths from the distances to neighbours clipped as Optuna's
//! "magic clip"); `ei_candidates` draws from l(x) are scored by log l − log g
//! and the best is proposed. Older observations weigh less once there are more
//! than 25 (Optuna's `default_weights`).

use sweep_train::rng::Rng;

use super::random;
use super::{Distribution, Observation, Point, Sampler, Space};

pub struct TpeSampler {
    pub startup_trials: usize,
    pub ei_candidates: usize,
}

/// How many of `n` finished configurations count as "good".
pub fn gamma(n: usize) -> usize {
    (n.div_ceil(10)).min(25)
}

/// Observation weights in proposal order, oldest first.
pub fn weights(n: usize) -> Vec<f64> {
    if n < 25 {
        return vec![1.0; n];
    }
    let ramp = n - 25;
    let mut w: Vec<f64> = (0..ramp)
        .map(|i| {
            if ramp == 1 {
                1.0 / n as f64
            } else {
                1.0 / n as f64 + (1.0 - 1.0 / n as f64) * i as f64 / (ramp - 1) as f64
            }
        })
        .collect();
    w.extend(std::iter::repeat_n(1.0, 25));
    w
}

impl Sampler for TpeSampler {
    fn propose(&self, space: &Space, history: &[Observation], rng: &mut Rng) -> Point {
        // (proposal order, loss or pruned) of every configuration with a result
        let mut done: Vec<(usize, &Observation)> = history
            .iter()
            .enumerate()
            .filter(|(_, o)| o.loss.is_some_and(f64::is_finite) || o.pruned)
            .collect();
        if done.len() < self.startup_trials.max(1) {
            return random::RandomSampler.propose(space, history, rng);
        }
        // best first; pruned configurations rank after every finished one
        done.sort_by(|(ia, a), (ib, b)| {
            let key = |o: &Observation| (o.pruned || o.loss.is_none(), o.loss.unwrap_or(0.0));
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(ia.cmp(ib))
        });
        let finished = done.iter().filter(|(_, o)| !o.pruned).count();
        let n_below = gamma(done.len()).min(finished.max(1)).min(done.len());
        let (mut below, mut above) = (done[..n_below].to_vec(), done[n_below..].to_vec());
        // weights follow proposal order (older weigh less)
        below.sort_by_key(|(i, _)| *i);
        above.sort_by_key(|(i, _)| *i);
        let (wb, wa) = (weights(below.len()), weights(above.len()));
        space
            .params
            .iter()
            .map(|(name, d)| {
                let coords = |group: &[(usize, &Observation)]| -> Vec<f64> {
                    group
                        .iter()
                        .map(|(_, o)| {
                            o.point
                                .get(name)
                                .and_then(|v| d.coordinate_of(v))
                                .unwrap_or(f64::NAN)
                        })
                        .collect()
                };
                let (xb, xa) = (coords(&below), coords(&above));
                let v = match d {
                    Distribution::Choice { values } => {
                        let l = Categorical::new(values.len(), &xb, &wb);
                        let g = Categorical::new(values.len(), &xa, &wa);
                        let best = (0..self.ei_candidates.max(1))
                            .map(|_| l.sample(rng))
                            .max_by(|a, b| {
                                (l.log_pdf(*a) - g.log_pdf(*a))
                                    .total_cmp(&(l.log_pdf(*b) - g.log_pdf(*b)))
                                    .then(b.cmp(a))
                            })
                            .expect("at least one candidate");
                        values[best].clone()
                    }
                    numeric => {
                        let (lo, hi) = numeric.internal_bounds().expect("numeric");
                        let l = Parzen::new(&xb, &wb, lo, hi);
                        let g = Parzen::new(&xa, &wa, lo, hi);
                        let x = (0..self.ei_candidates.max(1))
                            .map(|_| l.sample(rng))
                            .map(|x| (x, l.log_pdf(x) - g.log_pdf(x)))
                            .fold((f64::NAN, f64::NEG_INFINITY), |best, c| {
                                if c.1 > best.1 || best.0.is_nan() {
                                    c
                                } else {
                                    best
                                }
                            })
                            .0;
                        numeric.value_at(x)
                    }
                };
                (name.clone(), v)
            })
            .collect()
    }
}

/// A mixture of Gaussians truncated to `[lo, hi]`: one per observation and a
/// prior at the centre with the whole range as its spread.
pub struct Parzen {
    mus: Vec<f64>,
    sigmas: Vec<f64>,
    /// Mixture weights, normalized.
    weights: Vec<f64>,
    lo: f64,
    hi: f64,
}

impl Parzen {
    pub fn new(obs: &[f64], w: &[f64], lo: f64, hi: f64) -> Parzen {
        let range = hi - lo;
        let keep: Vec<(f64, f64)> = obs
            .iter()
            .zip(w)
            .filter(|(x, _)| x.is_finite())
            .map(|(x, w)| (x.clamp(lo, hi), *w))
            .collect();
        let prior = 0.5 * (lo + hi);
        // bandwidth: the larger gap to a neighbour (the prior's centre included),
        // the outermost ones measured inwards; clipped to [range / min(100, 1 + kernels), range]
        let mut with_prior: Vec<(f64, usize)> = keep
            .iter()
            .map(|(x, _)| *x)
            .chain(std::iter::once(prior))
            .enumerate()
            .map(|(i, x)| (x, i))
            .collect();
        with_prior.sort_by(|a, b| a.0.total_cmp(&b.0));
        let m = with_prior.len();
        let mut ends = Vec::with_capacity(m + 2);
        ends.push(lo);
        ends.extend(with_prior.iter().map(|p| p.0));
        ends.push(hi);
        let mut sorted_sigmas: Vec<f64> = (1..=m)
            .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
            .collect();
        if ends.len() >= 4 {
            sorted_sigmas[0] = ends[2] - ends[1];
            sorted_sigmas[m - 1] = ends[m] - ends[m - 1];
        }
        let mut sigmas = vec![0.0; m];
        for (s, (_, i)) in sorted_sigmas.iter().zip(&with_prior) {
            sigmas[*i] = *s;
        }
        let min_sigma = range / (100f64).min(1.0 + m as f64);
        let mut mus: Vec<f64> = keep.iter().map(|(x, _)| *x).collect();
        let mut sig: Vec<f64> = sigmas[..keep.len()]
            .iter()
            .map(|s| s.clamp(min_sigma, range))
            .collect();
        let mut weights: Vec<f64> = keep.iter().map(|(_, w)| *w).collect();
        mus.push(prior);
        sig.push(range);
        weights.push(1.0);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|w| *w /= total);
        Parzen {
            mus,
            sigmas: sig,
            weights,
            lo,
            hi,
        }
    }

    pub fn sample(&self, rng: &mut Rng) -> f64 {
        let k = pick(&self.weights, rng);
        let (mu, s) = (self.mus[k], self.sigmas[k]);
        // rejection from the untruncated Gaussian: every centre lies inside the
        // range and no spread exceeds it, so at least ~1/3 of draws land inside
        for _ in 0..1000 {
            let x = mu + s * rng.normal();
            if (self.lo..=self.hi).contains(&x) {
                return x;
            }
        }
        mu
    }

    pub fn log_pdf(&self, x: f64) -> f64 {
        let terms: Vec<f64> = (0..self.mus.len())
            .map(|k| {
                let (mu, s) = (self.mus[k], self.sigmas[k]);
                let z = (x - mu) / s;
                let mass = normal_cdf((self.hi - mu) / s) - normal_cdf((self.lo - mu) / s);
                self.weights[k].ln()
                    - 0.5 * z * z
                    - s.ln()
                    - 0.5 * (2.0 * std::f64::consts::PI).ln()
                    - mass.max(1e-300).ln()
            })
            .collect();
        log_sum_exp(&terms)
    }
}

/// A mixture over choices: each observation puts weight 1 on its choice on top
/// of a uniform share, plus a uniform prior.
pub struct Categorical {
    probs: Vec<f64>,
}

impl Categorical {
    pub fn new(k: usize, obs: &[f64], w: &[f64]) -> Categorical {
        // mixture of per-observation distributions, each (1/k + [c == obs]) / 2, and the prior
        let mut probs = vec![0.0; k];
        let mut total = 0.0;
        for (x, w) in obs.iter().zip(w) {
            if !x.is_finite() {
                continue;
            }
            let c = (*x as usize).min(k - 1);
            for (j, p) in probs.iter_mut().enumerate() {
                *p += w * (1.0 / k as f64 + f64::from(u8::from(j == c))) / 2.0;
            }
            total += w;
        }
        for p in probs.iter_mut() {
            *p += 1.0 / k as f64;
        }
        total += 1.0;
        probs.iter_mut().for_each(|p| *p /= total);
        Categorical { probs }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        pick(&self.probs, rng)
    }

    pub fn log_pdf(&self, c: usize) -> f64 {
        self.probs[c].ln()
    }
}

fn pick(weights: &[f64], rng: &mut Rng) -> usize {
    let total: f64 = weights.iter().sum();
    let mut u = rng.next_f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if u < *w {
            return i;
        }
        u -= w;
    }
    weights.len() - 1
}

fn log_sum_exp(xs: &[f64]) -> f64 {
    let m = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !m.is_finite() {
        return m;
    }
    m + xs.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
}

/// Φ(z), the standard normal CDF, from erfc (W. J. Cody's rational
/// approximations as in Numerical Recipes' `erfcc`, relative error < 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let r = t
        * (-z * z - 1.265_512_23
            + t * (1.000_023_68
                + t * (0.374_091_96
                    + t * (0.096_784_18
                        + t * (-0.186_288_06
                            + t * (0.278_868_07
                                + t * (-1.135_203_98
                                    + t * (1.488_515_87
                                        + t * (-0.822_152_23 + t * 0.170_872_77)))))))))
            .exp();
    if x >= 0.0 {
        r
    } else {
        2.0 - r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::proposal_rng;

    #[test]
    fn gamma_and_weights_follow_optuna() {
        // optuna.samplers._tpe.sampler.default_gamma / default_weights
        assert_eq!(gamma(1), 1);
        assert_eq!(gamma(10), 1);
        assert_eq!(gamma(11), 2);
        assert_eq!(gamma(1000), 25);
        assert_eq!(weights(3), vec![1.0; 3]);
        let w = weights(30);
        assert_eq!(w.len(), 30);
        assert!((w[0] - 1.0 / 30.0).abs() < 1e-12 && (w[4] - 1.0).abs() < 1e-12);
        assert!(w[25..].iter().all(|x| *x == 1.0));
    }

    #[test]
    fn the_normal_cdf_is_accurate() {
        // scipy.stats.norm.cdf
        for (z, want) in [
            (0.0, 0.5),
            (1.0, 0.841_344_746_068_542_9),
            (-2.0, 0.022_750_131_948_179_2),
            (3.5, 0.999_767_370_920_964_5),
        ] {
            assert!((normal_cdf(z) - want).abs() < 2e-7, "{z}");
        }
    }

    #[test]
    fn the_parzen_density_integrates_to_one_and_samples_inside() {
        let p = Parzen::new(&[0.1, 0.15, 0.9], &[1.0, 1.0, 1.0], 0.0, 1.0);
        let n = 20_000;
        let integral: f64 = (0..n)
            .map(|i| p.log_pdf((i as f64 + 0.5) / n as f64).exp() / n as f64)
            .sum();
        assert!((integral - 1.0).abs() < 1e-3, "{integral}");
        let mut rng = Rng::new(1);
        let xs: Vec<f64> = (0..5000).map(|_| p.sample(&mut rng)).collect();
        assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
        // two of the three kernels sit near 0.1: most mass is there
        let near = xs.iter().filter(|x| **x < 0.4).count() as f64 / xs.len() as f64;
        assert!(near > 0.5, "{near}");
    }

    /// After its random start, TPE concentrates near the optimum of a simple
    /// function: (x − 0.3)² on [0, 1] with a log-uniform nuisance setting.
    #[test]
    fn tpe_concentrates_near_the_optimum_after_startup() {
        let space = Space {
            params: vec![
                (
                    "x".into(),
                    Distribution::Uniform {
                        low: 0.0,
                        high: 1.0,
                    },
                ),
                (
                    "c".into(),
                    Distribution::Choice {
                        values: vec!["a".into(), "b".into(), "c".into()],
                    },
                ),
            ],
        };
        let f = |p: &Point| {
            let x = p["x"].as_f64().unwrap();
            (x - 0.3).powi(2) + if p["c"] == "b" { 0.0 } else { 0.05 }
        };
        let tpe = TpeSampler {
            startup_trials: 10,
            ei_candidates: 24,
        };
        let mut history = Vec::new();
        for n in 0..60 {
            let p = tpe.propose(&space, &history, &mut proposal_rng(5, n));
            history.push(Observation {
                loss: Some(f(&p)),
                point: p,
                pruned: false,
            });
        }
        let late = &history[40..];
        let near = late
            .iter()
            .filter(|o| (o.point["x"].as_f64().unwrap() - 0.3).abs() < 0.1)
            .count();
        let b = late.iter().filter(|o| o.point["c"] == "b").count();
        // random would put 20% of x within 0.1 and a third on "b"
        assert!(near >= 12, "{near} of 20 late proposals near the optimum");
        assert!(b >= 12, "{b} of 20 late proposals on the best choice");
        let best = history
            .iter()
            .map(|o| o.loss.unwrap())
            .fold(f64::INFINITY, f64::min);
        assert!(best < 0.001, "{best}");
        // and the same seed gives the same sequence
        let again: Vec<Point> = {
            let mut h = Vec::new();
            for n in 0..15 {
                let p = tpe.propose(&space, &h, &mut proposal_rng(5, n));
                h.push(Observation {
                    loss: Some(f(&p)),
                    point: p,
                    pruned: false,
                });
            }
            h.into_iter().map(|o| o.point).collect()
        };
        assert_eq!(
            again,
            history[..15]
                .iter()
                .map(|o| o.point.clone())
                .collect::<Vec<_>>()
        );
    }
}
