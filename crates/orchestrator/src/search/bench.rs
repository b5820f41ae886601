//! Sampler quality and speed on standard test functions (Branin, Hartmann-6),
//! for `scripts/bench-search`, which runs Optuna on the same functions side by
//! side. The samplers run exactly as in a sweep (the same proposal streams,
//! the same history built from finished configurations).

use std::time::Instant;

use serde_json::Value as Json;

use super::{
    proposal_rng, sampler, Distribution, Method, Observation, Point, SearchSettings, Space,
};

/// Branin on x1 ∈ [-5, 10], x2 ∈ [0, 15]; minimum 0.397887.
pub fn branin(x1: f64, x2: f64) -> f64 {
    let pi = std::f64::consts::PI;
    let (a, b, c, r, s, t) = (
        1.0,
        5.1 / (4.0 * pi * pi),
        5.0 / pi,
        6.0,
        10.0,
        1.0 / (8.0 * pi),
    );
    a * (x2 - b * x1 * x1 + c * x1 - r).powi(2) + s * (1.0 - t) * x1.cos() + s
}

pub const BRANIN_MIN: f64 = 0.397_887;

/// Hartmann-6 on [0, 1]^6; minimum −3.32237.
pub fn hartmann6(x: &[f64; 6]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            let inner: f64 = (0..6).map(|j| A[i][j] * (x[j] - P[i][j]).powi(2)).sum();
            ALPHA[i] * (-inner).exp()
        })
        .sum::<f64>()
}

pub const HARTMANN6_MIN: f64 = -3.32237;

fn uniform(names: &[&str], low: f64, high: f64) -> Space {
    Space {
        params: names
            .iter()
            .map(|n| (n.to_string(), Distribution::Uniform { low, high }))
            .collect(),
    }
}

/// A test function with its space and known minimum.
pub struct Problem {
    pub space: Space,
    pub f: fn(&Point) -> f64,
    pub minimum: f64,
}

fn get(p: &Point, k: &str) -> f64 {
    p.get(k).and_then(Json::as_f64).unwrap_or(f64::NAN)
}

pub fn problem(name: &str) -> Option<Problem> {
    match name {
        "branin" => Some(Problem {
            space: Space {
                params: vec![
                    (
                        "x1".into(),
                        Distribution::Uniform {
                            low: -5.0,
                            high: 10.0,
                        },
                    ),
                    (
                        "x2".into(),
                        Distribution::Uniform {
                            low: 0.0,
                            high: 15.0,
                        },
                    ),
                ],
            },
            f: |p| branin(get(p, "x1"), get(p, "x2")),
            minimum: BRANIN_MIN,
        }),
        "hartmann6" => Some(Problem {
            space: uniform(&["x1", "x2", "x3", "x4", "x5", "x6"], 0.0, 1.0),
            f: |p| {
                let x: Vec<f64> = (1..=6).map(|i| get(p, &format!("x{i}"))).collect();
                hartmann6(&x.try_into().expect("six values"))
            },
            minimum: HARTMANN6_MIN,
        }),
        _ => None,
    }
}

/// Minimizes `problem` with `trials` proposals of `method` under sampler `seed`;
/// returns the best value found.
pub fn minimize(
    problem: &Problem,
    method: Method,
    multivariate: bool,
    trials: usize,
    seed: u64,
) -> f64 {
    let settings = SearchSettings {
        method,
        trials,
        seed,
        startup_trials: 10,
        ei_candidates: 24,
        multivariate,
    };
    let s = sampler(&settings).expect("a sampler method");
    let mut history: Vec<Observation> = Vec::with_capacity(trials);
    let mut best = f64::INFINITY;
    for n in 0..trials {
        let point = s.propose(&problem.space, &history, &mut proposal_rng(seed, n));
        let v = (problem.f)(&point);
        best = best.min(v);
        history.push(Observation {
            point,
            loss: Some(v),
            pruned: false,
        });
    }
    best
}

/// Milliseconds TPE takes per proposal after `history` finished configurations
/// over `params` uniform settings (mean of `repeats` proposals).
pub fn proposal_ms(history: usize, params: usize, repeats: usize) -> f64 {
    let names: Vec<String> = (0..params).map(|i| format!("x{i}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let space = uniform(&refs, 0.0, 1.0);
    let mut rng = sweep_train::rng::Rng::new(0);
    let past: Vec<Observation> = (0..history)
        .map(|_| Observation {
            point: names
                .iter()
                .map(|n| (n.clone(), Json::from(rng.next_f64())))
                .collect(),
            loss: Some(rng.next_f64()),
            pruned: false,
        })
        .collect();
    let s = sampler(&SearchSettings {
        method: Method::Tpe,
        trials: history + repeats,
        seed: 0,
        startup_trials: 10,
        ei_candidates: 24,
        multivariate: true,
    })
    .expect("tpe");
    let t = Instant::now();
    for n in 0..repeats.max(1) {
        std::hint::black_box(s.propose(&space, &past, &mut proposal_rng(0, history + n)));
    }
    t.elapsed().as_secs_f64() * 1000.0 / repeats.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_test_functions_have_their_known_minima() {
        // Branin's three minimizers; Hartmann-6's (Surjanovic & Bingham's library)
        for (x1, x2) in [
            (-std::f64::consts::PI, 12.275),
            (std::f64::consts::PI, 2.275),
            (9.42478, 2.475),
        ] {
            assert!((branin(x1, x2) - BRANIN_MIN).abs() < 1e-5, "{x1} {x2}");
        }
        let x = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!(
            (hartmann6(&x) - HARTMANN6_MIN).abs() < 1e-4,
            "{}",
            hartmann6(&x)
        );
    }

    #[test]
    fn tpe_beats_random_on_branin() {
        let p = problem("branin").unwrap();
        let med = |m| {
            let mut v: Vec<f64> = (0..9)
                .map(|s| minimize(&p, m, true, 50, s) - p.minimum)
                .collect();
            v.sort_by(f64::total_cmp);
            v[4]
        };
        let (tpe, random) = (med(Method::Tpe), med(Method::Random));
        assert!(tpe < random, "median regret: tpe {tpe}, random {random}");
    }
}
