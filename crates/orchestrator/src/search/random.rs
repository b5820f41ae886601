//! Random search: every setting drawn independently and uniformly on its
//! internal axis (log-uniform settings uniformly in log space).

use sweep_train::rng::Rng;

use super::{Distribution, Observation, Point, Sampler, Space};

pub struct RandomSampler;

/// One setting drawn uniformly.
pub fn draw(d: &Distribution, rng: &mut Rng) -> serde_json::Value {
    match d {
        Distribution::Choice { values } => values[rng.below(values.len())].clone(),
        numeric => {
            let (lo, hi) = numeric.internal_bounds().expect("numeric bounds");
            numeric.value_at(rng.uniform(lo, hi))
        }
    }
}

impl Sampler for RandomSampler {
    fn propose(&self, space: &Space, _history: &[Observation], rng: &mut Rng) -> Point {
        space
            .params
            .iter()
            .map(|(k, d)| (k.clone(), draw(d, rng)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proposals_stay_inside_and_log_settings_are_uniform_in_log_space() {
        let space = Space {
            params: vec![
                (
                    "lr".into(),
                    Distribution::LogUniform {
                        low: 1e-4,
                        high: 1e-2,
                    },
                ),
                (
                    "epochs".into(),
                    Distribution::Int {
                        low: 5,
                        high: 40,
                        log: false,
                        step: 5,
                    },
                ),
                (
                    "arch".into(),
                    Distribution::Choice {
                        values: vec!["mlp".into(), "cnn".into()],
                    },
                ),
            ],
        };
        let mut rng = Rng::new(7);
        let n = 20_000;
        let (mut below_1e3, mut cnn) = (0, 0);
        for _ in 0..n {
            let p = RandomSampler.propose(&space, &[], &mut rng);
            let lr = p["lr"].as_f64().unwrap();
            assert!((1e-4..=1e-2).contains(&lr), "{lr}");
            let e = p["epochs"].as_i64().unwrap();
            assert!((5..=40).contains(&e) && e % 5 == 0, "{e}");
            below_1e3 += usize::from(lr < 1e-3);
            cnn += usize::from(p["arch"] == "cnn");
        }
        // 1e-3 is the middle of [1e-4, 1e-2] on a log axis (on a linear axis only 9% lie below it)
        let share = below_1e3 as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.02, "{share}");
        let share = cnn as f64 / n as f64;
        assert!((share - 0.5).abs() < 0.02, "{share}");
    }

    #[test]
    fn the_same_seed_gives_the_same_sequence() {
        let space = Space {
            params: vec![(
                "x".into(),
                Distribution::Uniform {
                    low: 0.0,
                    high: 1.0,
                },
            )],
        };
        let run = |seed| {
            (0..5)
                .map(|n| {
                    RandomSampler.propose(&space, &[], &mut super::super::proposal_rng(seed, n))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run(3), run(3));
        assert_ne!(run(3), run(4));
    }
}
