//! The tree-structured Parzen estimator (Bergstra et al., 2011) as Optuna's
//! `TPESampler` does it with its defaults: after `startup_trials` random
//! configurations, the finished ones are split into the best
//! `min(ceil(0.1·n), 25)` ("below") and the rest ("above", pruned ones last);
//! two Parzen estimators, l(x) over the best and g(x) over the rest (a
//! truncated Gaussian at each observation, a categorical for choices, plus a
//! prior over the whole range), and `ei_candidates` draws from l(x) scored by
//! log l − log g: the best is proposed. Older observations weigh less once
//! there are more than 25 (Optuna's `default_weights`). Multivariate (Optuna
//! 5's default): one joint estimator whose kernels are products over the
//! settings, so settings that work together are proposed together; otherwise
//! one estimator per setting.

use sweep_train::rng::Rng;

use super::random;
use super::{Distribution, Observation, Point, Sampler, Space};

pub struct TpeSampler {
    pub startup_trials: usize,
    pub ei_candidates: usize,
    /// One joint estimator over every setting (Optuna 5's default) instead of
    /// one per setting.
    pub multivariate: bool,
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
        // (proposal order, observation) of every configuration with a result
        let mut done: Vec<(usize, &Observation)> = history
            .iter()
            .enumerate()
            .filter(|(_, o)| o.loss.is_some_and(f64::is_finite) || o.pruned)
            .collect();
        if done.len() < self.startup_trials.max(1) {
            return random::RandomSampler.propose(space, history, rng);
        }
        // configurations still running count as bad ones (Optuna 5's default
        // "constant liar"): parallel workers then propose away from each other
        let running = history
            .iter()
            .enumerate()
            .filter(|(_, o)| o.loss.is_none() && !o.pruned);
        // best first; pruned configurations rank after every finished one
        done.sort_by(|(ia, a), (ib, b)| {
            let key = |o: &Observation| (o.pruned || o.loss.is_none(), o.loss.unwrap_or(0.0));
            let (ka, kb) = (key(a), key(b));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then(ia.cmp(ib))
        });
        let n_below = gamma(done.len()).min(done.len());
        let (mut below, mut above) = (done[..n_below].to_vec(), done[n_below..].to_vec());
        above.extend(running);
        // weights follow proposal order (older weigh less)
        below.sort_by_key(|(i, _)| *i);
        above.sort_by_key(|(i, _)| *i);
        let (wb, wa) = (weights(below.len()), weights(above.len()));
        // internal coordinates: coords[d][i] of observation i. A point's keys
        // come sorted; so do these, so the settings are matched in one pass
        let mut by_name: Vec<(&str, usize)> = space
            .params
            .iter()
            .enumerate()
            .map(|(d, (n, _))| (n.as_str(), d))
            .collect();
        by_name.sort();
        let coords = |group: &[(usize, &Observation)]| -> Vec<Vec<f64>> {
            let mut out = vec![vec![f64::NAN; group.len()]; space.params.len()];
            for (i, (_, o)) in group.iter().enumerate() {
                let mut names = by_name.iter().peekable();
                for (k, v) in &o.point {
                    while names.next_if(|(n, _)| *n < k.as_str()).is_some() {}
                    if let Some((_, d)) = names.next_if(|(n, _)| *n == k.as_str()) {
                        out[*d][i] = space.params[*d].1.coordinate_of(v).unwrap_or(f64::NAN);
                    }
                }
            }
            out
        };
        let (xb, xa) = (coords(&below), coords(&above));
        let dims: Vec<&Distribution> = space.params.iter().map(|(_, d)| d).collect();
        let best = if self.multivariate {
            let l = Parzen::new(&dims, &xb, &wb);
            let g = Parzen::new(&dims, &xa, &wa);
            pick_best(&l, &g, self.ei_candidates, rng)
        } else {
            // one estimator pair per setting, each choosing its own best candidate
            (0..dims.len())
                .map(|d| {
                    let one = [dims[d]];
                    let l = Parzen::new(&one, &xb[d..=d], &wb);
                    let g = Parzen::new(&one, &xa[d..=d], &wa);
                    pick_best(&l, &g, self.ei_candidates, rng)[0]
                })
                .collect()
        };
        space
            .params
            .iter()
            .zip(best)
            .map(|((name, d), x)| (name.clone(), d.value_at(x)))
            .collect()
    }
}

/// The candidate drawn from `l` with the highest log l − log g.
fn pick_best(l: &Parzen, g: &Parzen, candidates: usize, rng: &mut Rng) -> Vec<f64> {
    let mut best: Option<(Vec<f64>, f64)> = None;
    for _ in 0..candidates.max(1) {
        let x = l.sample(rng);
        let score = l.log_pdf(&x) - g.log_pdf(&x);
        if best.as_ref().is_none_or(|(_, s)| score > *s) {
            best = Some((x, score));
        }
    }
    best.expect("at least one candidate").0
}

/// One setting's part of every kernel.
enum Axis {
    /// Truncated Gaussians on `[lo, hi]`: centre, spread and the log of the
    /// constant factor of each kernel's density.
    Numeric {
        lo: f64,
        hi: f64,
        mus: Vec<f64>,
        sigmas: Vec<f64>,
        log_norm: Vec<f64>,
    },
    /// Each kernel's probabilities of the choices.
    Choice { log_probs: Vec<Vec<f64>> },
}

/// A Parzen estimator: a mixture with one kernel per observation plus a prior
/// (centred, as wide as the range; uniform over choices). Each kernel is a
/// product over the settings it covers.
pub struct Parzen {
    log_weights: Vec<f64>,
    weights: Vec<f64>,
    axes: Vec<Axis>,
}

impl Parzen {
    /// `obs[d][i]`: observation i's internal coordinate on setting d; `w[i]` its
    /// weight. Bandwidths as Optuna 5: the larger gap to a neighbouring
    /// observation (the range's ends included), clipped to
    /// [range / min(100, kernels + 1), range]; each observation's categorical
    /// kernel puts 1 on its choice over a 1/kernels floor.
    pub fn new(dims: &[&Distribution], obs: &[Vec<f64>], w: &[f64]) -> Parzen {
        let n = w.len();
        let mut weights: Vec<f64> = w.to_vec();
        weights.push(1.0);
        let total: f64 = weights.iter().sum();
        weights.iter_mut().for_each(|x| *x /= total);
        let axes = dims
            .iter()
            .zip(obs)
            .map(|(d, xs)| match d {
                Distribution::Choice { values } => {
                    let k = values.len();
                    let floor = 1.0 / (n + 1) as f64;
                    let mut log_probs: Vec<Vec<f64>> = xs
                        .iter()
                        .map(|x| {
                            let row: Vec<f64> = (0..k)
                                .map(|j| {
                                    let hit = x.is_finite() && (*x as usize).min(k - 1) == j;
                                    floor + f64::from(u8::from(hit))
                                })
                                .collect();
                            let sum: f64 = row.iter().sum();
                            row.iter().map(|p| (p / sum).ln()).collect()
                        })
                        .collect();
                    log_probs.push(vec![(1.0 / k as f64).ln(); k]);
                    Axis::Choice { log_probs }
                }
                numeric => {
                    let (lo, hi) = numeric.internal_bounds().expect("numeric");
                    let range = hi - lo;
                    let prior = 0.5 * (lo + hi);
                    let mut mus: Vec<f64> = xs
                        .iter()
                        .map(|x| {
                            if x.is_finite() {
                                x.clamp(lo, hi)
                            } else {
                                prior
                            }
                        })
                        .collect();
                    let min_sigma = range / (100f64).min(1.0 + (n + 1) as f64);
                    let mut sigmas = neighbour_gaps(&mus, lo, hi);
                    sigmas
                        .iter_mut()
                        .for_each(|s| *s = s.clamp(min_sigma, range));
                    mus.push(prior);
                    sigmas.push(range);
                    let log_norm = mus
                        .iter()
                        .zip(&sigmas)
                        .map(|(mu, s)| {
                            let mass = normal_cdf((hi - mu) / s) - normal_cdf((lo - mu) / s);
                            -s.ln()
                                - 0.5 * (2.0 * std::f64::consts::PI).ln()
                                - mass.max(1e-300).ln()
                        })
                        .collect();
                    Axis::Numeric {
                        lo,
                        hi,
                        mus,
                        sigmas,
                        log_norm,
                    }
                }
            })
            .collect();
        Parzen {
            log_weights: weights.iter().map(|w| w.ln()).collect(),
            weights,
            axes,
        }
    }

    /// One draw: a kernel by weight, then each setting from that kernel.
    pub fn sample(&self, rng: &mut Rng) -> Vec<f64> {
        let k = pick(&self.weights, rng);
        self.axes
            .iter()
            .map(|a| match a {
                Axis::Numeric {
                    lo,
                    hi,
                    mus,
                    sigmas,
                    ..
                } => {
                    // rejection from the untruncated Gaussian: every centre lies
                    // inside the range and no spread exceeds it, so at least
                    // ~1/3 of draws land inside
                    for _ in 0..1000 {
                        let x = mus[k] + sigmas[k] * rng.normal();
                        if (*lo..=*hi).contains(&x) {
                            return x;
                        }
                    }
                    mus[k]
                }
                Axis::Choice { log_probs } => {
                    let p: Vec<f64> = log_probs[k].iter().map(|l| l.exp()).collect();
                    pick(&p, rng) as f64
                }
            })
            .collect()
    }

    pub fn log_pdf(&self, x: &[f64]) -> f64 {
        let mut terms = self.log_weights.clone();
        for (a, xd) in self.axes.iter().zip(x) {
            match a {
                Axis::Numeric {
                    mus,
                    sigmas,
                    log_norm,
                    ..
                } => {
                    for (k, t) in terms.iter_mut().enumerate() {
                        let z = (xd - mus[k]) / sigmas[k];
                        *t += log_norm[k] - 0.5 * z * z;
                    }
                }
                Axis::Choice { log_probs } => {
                    let c = *xd as usize;
                    for (k, t) in terms.iter_mut().enumerate() {
                        *t += log_probs[k][c.min(log_probs[k].len() - 1)];
                    }
                }
            }
        }
        log_sum_exp(&terms)
    }
}

/// Optuna's bandwidths: for each observation, the larger gap to its
/// neighbours among the observations and the range's ends; the outermost ones
/// measured inwards only.
fn neighbour_gaps(mus: &[f64], lo: f64, hi: f64) -> Vec<f64> {
    let mut sorted_obs: Vec<(f64, usize)> = mus
        .iter()
        .copied()
        .enumerate()
        .map(|(i, x)| (x, i))
        .collect();
    sorted_obs.sort_by(|a, b| a.0.total_cmp(&b.0));
    let m = sorted_obs.len();
    let mut ends = Vec::with_capacity(m + 2);
    ends.push(lo);
    ends.extend(sorted_obs.iter().map(|p| p.0));
    ends.push(hi);
    let mut sorted: Vec<f64> = (1..=m)
        .map(|i| (ends[i] - ends[i - 1]).max(ends[i + 1] - ends[i]))
        .collect();
    if ends.len() >= 4 {
        sorted[0] = ends[2] - ends[1];
        sorted[m - 1] = ends[m] - ends[m - 1];
    }
    let mut out = vec![0.0; m];
    for (s, (_, i)) in sorted.iter().zip(&sorted_obs) {
        out[*i] = *s;
    }
    out.truncate(mus.len());
    out
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
    // terms more than 40 below the largest add less than 1e-17 of it: skipped
    // (exp's underflow path is slow, and most kernels of a large history are there)
    m + xs
        .iter()
        .map(|x| x - m)
        .filter(|d| *d > -40.0)
        .map(f64::exp)
        .sum::<f64>()
        .ln()
}

/// Φ(z), the standard normal CDF, from erfc (W. J. Cody's rational
/// approximations as in Numerical Recipes' `erfcc`, relative error < 1.2e-7).
pub fn normal_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / std::f64::consts::SQRT_2)
}

fn erfc(x: f64) -> f64 {
    // beyond ±27 erfc is 0 or 2 to double precision (and exp would underflow, slowly)
    if x > 27.0 {
        return 0.0;
    }
    if x < -27.0 {
        return 2.0;
    }
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
        let d = Distribution::Uniform {
            low: 0.0,
            high: 1.0,
        };
        {
            let p = Parzen::new(&[&d], &[vec![0.1, 0.15, 0.9]], &[1.0, 1.0, 1.0]);
            let n = 20_000;
            let integral: f64 = (0..n)
                .map(|i| p.log_pdf(&[(i as f64 + 0.5) / n as f64]).exp() / n as f64)
                .sum();
            assert!((integral - 1.0).abs() < 1e-3, "{integral}");
            let mut rng = Rng::new(1);
            let xs: Vec<f64> = (0..5000).map(|_| p.sample(&mut rng)[0]).collect();
            assert!(xs.iter().all(|x| (0.0..=1.0).contains(x)));
            // two of the three kernels sit near 0.1: most mass is there
            let near = xs.iter().filter(|x| **x < 0.4).count() as f64 / xs.len() as f64;
            assert!(near > 0.5, "{near}");
        }
        // a joint estimator over a setting and a choice sums to one over both
        let c = Distribution::Choice {
            values: vec!["a".into(), "b".into()],
        };
        let p = Parzen::new(&[&d, &c], &[vec![0.2, 0.7], vec![0.0, 1.0]], &[1.0, 1.0]);
        let n = 4000;
        let total: f64 = (0..n)
            .flat_map(|i| [0.0, 1.0].map(|c| ((i as f64 + 0.5) / n as f64, c)))
            .map(|(x, c)| p.log_pdf(&[x, c]).exp() / n as f64)
            .sum();
        assert!((total - 1.0).abs() < 1e-3, "{total}");
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
        for multivariate in [false, true] {
            let tpe = TpeSampler {
                startup_trials: 10,
                ei_candidates: 24,
                multivariate,
            };
            // over 8 sampler seeds, the 20 proposals after the 40th
            let (mut near, mut b, mut best_all) = (0, 0, Vec::new());
            let mut history = Vec::new();
            for seed in 0..8 {
                history = Vec::new();
                for n in 0..60 {
                    let p = tpe.propose(&space, &history, &mut proposal_rng(seed, n));
                    history.push(Observation {
                        loss: Some(f(&p)),
                        point: p,
                        pruned: false,
                    });
                }
                let late = &history[40..];
                near += late
                    .iter()
                    .filter(|o| (o.point["x"].as_f64().unwrap() - 0.3).abs() < 0.1)
                    .count();
                b += late.iter().filter(|o| o.point["c"] == "b").count();
                best_all.push(
                    history
                        .iter()
                        .map(|o| o.loss.unwrap())
                        .fold(f64::INFINITY, f64::min),
                );
            }
            // random would put 20% of x within 0.1 of the optimum and a third on "b"
            assert!(
                near >= 64,
                "{near} of 160 late proposals near the optimum (multivariate {multivariate})"
            );
            assert!(
                b >= 80,
                "{b} of 160 late proposals on the best choice (multivariate {multivariate})"
            );
            best_all.sort_by(f64::total_cmp);
            assert!(best_all[4] < 0.002, "median best {best_all:?}");
            // and the same seed gives the same sequence
            let again: Vec<Point> = {
                let mut h = Vec::new();
                for n in 0..15 {
                    let p = tpe.propose(&space, &h, &mut proposal_rng(7, n));
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
}
