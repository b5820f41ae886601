//! The median rule (Optuna's `MedianPruner`): after `min_epochs`, a trial
//! whose best value so far is worse than the median of its finished peers'
//! values at the same epoch is stopped. Peers are the other configurations on
//! the same seeds (see [`super::driver::judge`]); the rule waits for
//! `startup_trials` of them to have finished.

use super::{shown, Decision, Peer, Pruner};

pub struct MedianPruner {
    pub min_epochs: usize,
    pub startup_trials: usize,
}

impl Pruner for MedianPruner {
    fn judges(&self, epoch: usize, epochs: usize) -> bool {
        epoch >= self.min_epochs.max(1) && epoch < epochs
    }

    fn decide(&self, epoch: usize, own: &[f64], peers: &[Peer], metric: &str) -> Decision {
        let mut done: Vec<f64> = peers
            .iter()
            .filter(|p| p.finished && p.loss.is_finite())
            .map(|p| p.loss)
            .collect();
        if done.len() < self.startup_trials.max(1) {
            return Decision::Continue;
        }
        done.sort_by(f64::total_cmp);
        let n = done.len();
        let median = if n % 2 == 1 {
            done[n / 2]
        } else {
            0.5 * (done[n / 2 - 1] + done[n / 2])
        };
        let best = own.iter().copied().fold(f64::INFINITY, f64::min);
        if best > median || best.is_nan() {
            Decision::Prune(format!(
                "pruned by the median rule at epoch {epoch}: best {metric} so far {} is worse than the median {} of {n} finished configurations at this epoch",
                shown(best, metric),
                shown(median, metric)
            ))
        } else {
            Decision::Continue
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(losses: &[f64]) -> Vec<Peer> {
        losses
            .iter()
            .map(|l| Peer {
                loss: *l,
                finished: true,
            })
            .collect()
    }

    #[test]
    fn worse_than_the_median_of_finished_peers_is_pruned() {
        let m = MedianPruner {
            min_epochs: 2,
            startup_trials: 3,
        };
        assert!(!m.judges(1, 10) && m.judges(2, 10) && !m.judges(10, 10));
        // macro-F1 as losses: peers 0.5, 0.6, 0.7 → median 0.6
        let p = peers(&[-0.5, -0.6, -0.7]);
        assert_eq!(
            m.decide(3, &[-0.4, -0.65], &p, "val.macro_f1"),
            Decision::Continue
        );
        let Decision::Prune(why) = m.decide(3, &[-0.4, -0.55], &p, "val.macro_f1") else {
            panic!("not pruned")
        };
        assert!(
            why.contains("epoch 3")
                && why.contains("0.5500")
                && why.contains("median 0.6000")
                && why.contains("3 finished"),
            "{why}"
        );
        // running peers do not count: not enough finished ones yet
        let mut few = peers(&[-0.5, -0.6]);
        few.push(Peer {
            loss: -0.9,
            finished: false,
        });
        assert_eq!(
            m.decide(3, &[-0.1], &few, "val.macro_f1"),
            Decision::Continue
        );
    }
}
