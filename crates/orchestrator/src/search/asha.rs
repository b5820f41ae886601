//! Asynchronous successive halving (ASHA; Li et al., 2020), as Optuna's
//! `SuccessiveHalvingPruner` does it: rungs at epochs `min_epochs·r^k`
//! (r = `reduction_factor`, below the trial's last epoch); at a rung, a trial
//! goes on only if its value is among the top ⌊n/r⌋ (at least the best one) of
//! the n configurations that have reached that rung so far on the same seeds,
//! itself included (see [`super::driver::judge`]). Nobody waits for a rung to fill: early trials are promoted
//! easily, later ones must beat more.

use super::{shown, Decision, Peer, Pruner};

pub struct AshaPruner {
    pub min_epochs: usize,
    pub reduction_factor: usize,
}

impl AshaPruner {
    /// The rung an epoch is, if any (0 = the first, at `min_epochs`).
    pub fn rung(&self, epoch: usize) -> Option<u32> {
        let (base, r) = (self.min_epochs.max(1), self.reduction_factor.max(2));
        let mut at = base;
        let mut k = 0;
        while at <= epoch {
            if at == epoch {
                return Some(k);
            }
            at = at.checked_mul(r)?;
            k += 1;
        }
        None
    }
}

impl Pruner for AshaPruner {
    fn judges(&self, epoch: usize, epochs: usize) -> bool {
        epoch < epochs && self.rung(epoch).is_some()
    }

    fn decide(&self, epoch: usize, own: &[f64], peers: &[Peer], metric: &str) -> Decision {
        let Some(rung) = self.rung(epoch) else {
            return Decision::Continue;
        };
        let Some(mine) = own.get(epoch - 1).copied() else {
            return Decision::Continue;
        };
        let mut all: Vec<f64> = peers
            .iter()
            .map(|p| p.loss)
            .filter(|l| l.is_finite())
            .collect();
        all.push(if mine.is_nan() { f64::INFINITY } else { mine });
        all.sort_by(f64::total_cmp);
        let keep = (all.len() / self.reduction_factor.max(2)).max(1);
        let threshold = all[keep - 1];
        if mine <= threshold {
            Decision::Continue
        } else {
            Decision::Prune(format!(
                "pruned by ASHA at epoch {epoch} (rung {rung}): {metric} {} is not in the top {keep} of {} configurations at this rung (threshold {})",
                shown(mine, metric),
                all.len(),
                shown(threshold, metric)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rungs_are_geometric_and_never_the_last_epoch() {
        let a = AshaPruner {
            min_epochs: 2,
            reduction_factor: 3,
        };
        let rungs: Vec<usize> = (1..=60).filter(|e| a.judges(*e, 54)).collect();
        assert_eq!(rungs, vec![2, 6, 18]);
        assert_eq!(a.rung(18), Some(2));
        assert!(!a.judges(54, 54));
    }

    #[test]
    fn only_the_top_fraction_of_a_rung_goes_on() {
        let a = AshaPruner {
            min_epochs: 1,
            reduction_factor: 3,
        };
        let peers = |v: &[f64]| -> Vec<Peer> {
            v.iter()
                .map(|l| Peer {
                    loss: *l,
                    finished: false,
                })
                .collect()
        };
        // the first trial at a rung always goes on
        assert_eq!(a.decide(1, &[0.9], &[], "val.loss"), Decision::Continue);
        // two at the rung: only the better one (⌊2/3⌋ = 0 → at least one)
        assert_eq!(
            a.decide(1, &[0.5], &peers(&[0.6]), "val.loss"),
            Decision::Continue
        );
        assert!(matches!(
            a.decide(1, &[0.7], &peers(&[0.6]), "val.loss"),
            Decision::Prune(_)
        ));
        // six at the rung: the top two go on
        let six = peers(&[0.1, 0.2, 0.3, 0.4, 0.5]);
        assert_eq!(a.decide(1, &[0.15], &six, "val.loss"), Decision::Continue);
        let Decision::Prune(why) = a.decide(1, &[0.25], &six, "val.loss") else {
            panic!("not pruned")
        };
        assert!(
            why.contains("rung 0")
                && why.contains("top 2 of 6")
                && why.contains("threshold 0.2000"),
            "{why}"
        );
        // a NaN (diverging) value never goes on once there is competition
        assert!(matches!(
            a.decide(1, &[f64::NAN], &peers(&[0.6]), "val.loss"),
            Decision::Prune(_)
        ));
    }
}
