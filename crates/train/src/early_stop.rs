//! Early stopping and best-epoch choice as pure functions of the metric history.

use crate::config::{EarlyStoppingConfig, Mode};

/// Whether `value` improves on `best` by more than `min_delta` in `mode`.
pub fn improves(value: f64, best: Option<f64>, mode: Mode, min_delta: f64) -> bool {
    if !value.is_finite() {
        return false;
    }
    match best {
        None => true,
        Some(b) => match mode {
            Mode::Min => value < b - min_delta,
            Mode::Max => value > b + min_delta,
        },
    }
}

/// The 0-based index of the best epoch of `history` (first of equals), judged with
/// `min_delta` as Keras' `EarlyStopping` does.
pub fn best_epoch(history: &[f64], mode: Mode, min_delta: f64) -> Option<usize> {
    let mut best: Option<(usize, f64)> = None;
    for (i, v) in history.iter().enumerate() {
        if improves(*v, best.map(|b| b.1), mode, min_delta) {
            best = Some((i, *v));
        }
    }
    best.map(|b| b.0)
}

/// True when training should stop after the last epoch of `history`: `patience`
/// epochs have passed without improving on the best.
pub fn should_stop(history: &[f64], cfg: &EarlyStoppingConfig) -> bool {
    match best_epoch(history, cfg.resolved_mode(), cfg.min_delta) {
        Some(b) => history.len() - 1 - b >= cfg.patience.max(1),
        None => history.len() >= cfg.patience.max(1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Monitor;

    #[test]
    fn patience_counts_epochs_without_improvement() {
        let cfg = EarlyStoppingConfig {
            patience: 2,
            min_delta: 0.01,
            monitor: Monitor::ValLoss,
            ..Default::default()
        };
        assert!(!should_stop(&[1.0, 0.9], &cfg));
        assert!(!should_stop(&[1.0, 0.9, 0.895], &cfg)); // within min_delta: not an improvement, 1 epoch
        assert!(should_stop(&[1.0, 0.9, 0.895, 0.91], &cfg));
        assert_eq!(
            best_epoch(&[1.0, 0.9, 0.895, 0.91], Mode::Min, 0.01),
            Some(1)
        );
        let max = EarlyStoppingConfig {
            patience: 1,
            monitor: Monitor::ValMacroF1,
            ..Default::default()
        };
        assert!(should_stop(&[0.2, 0.5, 0.4], &max));
        assert!(!should_stop(&[0.2, 0.5, 0.6], &max));
    }

    #[test]
    fn non_finite_values_never_improve() {
        assert_eq!(
            best_epoch(&[f64::NAN, 2.0, f64::INFINITY], Mode::Min, 0.0),
            Some(1)
        );
        assert_eq!(best_epoch(&[f64::NAN], Mode::Max, 0.0), None);
    }
}
