//! Training diagnostics as final metrics: convergence speed, stability,
//! overfitting, initialization health and per-class scores, stored beside
//! `val.macro_f1` so that `compare`, `--effects`, `--baseline`, `trials --sort`,
//! the export and the report use them like any other metric.
//!
//! Each definition is one function of a trial's history (the epochs it ran, as
//! stored) or of its probes; docs/results.md gives the same definitions in words.

use std::collections::BTreeMap;

use sweep_train::{EpochMetrics, LayerHealth, Probe, Report};

/// The share of the best value that counts as "converged".
pub const CONVERGED: f64 = 0.95;

/// The first epoch (1-based) whose value reaches `CONVERGED` of the best value of
/// `values`: for a maximized metric `v ≥ 0.95 × best`, for a minimized one
/// `v ≤ best / 0.95` (within 5.3% of the best). Non-finite values never reach it.
/// `None` without a finite value or when the best is not positive (a ratio of a
/// negative best means nothing).
pub fn epochs_to_converge(values: &[f64], maximize: bool) -> Option<usize> {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let best = if maximize {
        finite.fold(f64::NEG_INFINITY, f64::max)
    } else {
        finite.fold(f64::INFINITY, f64::min)
    };
    if !best.is_finite() || best <= 0.0 {
        return None;
    }
    let reached = |v: f64| {
        v.is_finite()
            && if maximize {
                v >= CONVERGED * best
            } else {
                v <= best / CONVERGED
            }
    };
    values.iter().position(|v| reached(*v)).map(|i| i + 1)
}

/// Wall seconds through the end of `epoch` (1-based): the sum of the first
/// `epoch` epochs' times.
pub fn seconds_through(seconds: &[f64], epoch: usize) -> f64 {
    seconds.iter().take(epoch).sum()
}

/// Mean of the values (the area under the curve per epoch); infinite when one of
/// them is not finite (a curve that blew up has no finite area), NaN when empty.
pub fn mean_over_epochs(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    if values.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    values.iter().sum::<f64>() / values.len() as f64
}

/// Mean of the finite values; NaN when there is none.
pub fn mean_finite(values: &[f64]) -> f64 {
    let f: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if f.is_empty() {
        f64::NAN
    } else {
        f.iter().sum::<f64>() / f.len() as f64
    }
}

/// Epochs in which the value went up from the epoch before (a non-finite value
/// after a finite one counts as up).
pub fn rises(values: &[f64]) -> usize {
    values
        .windows(2)
        .filter(|w| w[1] > w[0] || (w[0].is_finite() && !w[1].is_finite()))
        .count()
}

/// How far the last value rose above the lowest one, and the epoch (1-based) of
/// that lowest value, where the rise began; `(0, None)` when the last value is
/// the lowest. NaN and `None` without a finite value.
pub fn rise_from_minimum(values: &[f64]) -> (f64, Option<usize>) {
    let Some((imin, min)) = values
        .iter()
        .copied()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .fold(None, |acc: Option<(usize, f64)>, (i, v)| match acc {
            Some((_, m)) if m <= v => acc,
            _ => Some((i, v)),
        })
    else {
        return (f64::NAN, None);
    };
    let last = *values.last().expect("a finite value was found");
    let rise = last - min;
    if rise > 0.0 || !last.is_finite() {
        (rise, Some(imin + 1))
    } else {
        (0.0, None)
    }
}

/// The objective's value in an epoch, when it is one of the epoch metrics.
pub fn epoch_value(m: &EpochMetrics, objective: &str) -> Option<f64> {
    Some(match objective {
        "val.macro_f1" => m.val_macro_f1,
        "val.accuracy" => m.val_accuracy,
        "val.balanced_accuracy" => m.val_balanced_accuracy,
        "val.loss" => m.val_loss,
        "train.loss" => m.train_loss,
        "train.accuracy" => m.train_accuracy,
        _ => return None,
    })
}

/// Convergence, stability and overfitting metrics of one trial's history.
/// `objective` and `maximize` are the sweep's (an objective that is not an
/// epoch metric, such as `val.macro_auc`, uses validation macro-F1 for speed);
/// `best_epoch` is the trial's best epoch. Empty for a trial without epochs.
pub fn history_metrics(
    epochs: &[EpochMetrics],
    objective: &str,
    maximize: bool,
    best_epoch: Option<usize>,
) -> Vec<(String, f64)> {
    let Some(last) = epochs.last() else {
        return Vec::new();
    };
    let col = |f: fn(&EpochMetrics) -> f64| epochs.iter().map(f).collect::<Vec<f64>>();
    let (curve, up) = match epochs.first().and_then(|m| epoch_value(m, objective)) {
        Some(_) => (
            epochs
                .iter()
                .map(|m| epoch_value(m, objective).unwrap_or(f64::NAN))
                .collect(),
            maximize,
        ),
        None => (col(|m| m.val_macro_f1), true),
    };
    let val_loss = col(|m| m.val_loss);
    let converged = epochs_to_converge(&curve, up);
    let (rise, rise_epoch) = rise_from_minimum(&val_loss);
    let at_best = best_epoch.and_then(|b| epochs.iter().find(|m| m.epoch == b));
    let gaps = |m: Option<&EpochMetrics>| match m {
        Some(m) => (m.train_accuracy - m.val_accuracy, m.val_loss - m.train_loss),
        None => (f64::NAN, f64::NAN),
    };
    let (acc_best, loss_best) = gaps(at_best);
    let (acc_last, loss_last) = gaps(Some(last));
    let opt = |v: Option<usize>| v.map(|x| x as f64).unwrap_or(f64::NAN);
    vec![
        ("speed.epochs_to_95".into(), opt(converged)),
        (
            "speed.seconds_to_95".into(),
            converged
                .map(|e| seconds_through(&col(|m| m.seconds), e))
                .unwrap_or(f64::NAN),
        ),
        ("speed.val_loss_mean".into(), mean_over_epochs(&val_loss)),
        ("speed.first_train_loss".into(), epochs[0].train_loss),
        (
            "stability.batch_loss_std".into(),
            mean_finite(&col(|m| m.train_loss_std)),
        ),
        (
            "stability.batch_loss_step_std".into(),
            mean_finite(&col(|m| m.train_loss_step_std)),
        ),
        ("stability.val_loss_rises".into(), rises(&val_loss) as f64),
        ("overfit.accuracy_gap_best".into(), acc_best),
        ("overfit.accuracy_gap_last".into(), acc_last),
        ("overfit.loss_gap_best".into(), loss_best),
        ("overfit.loss_gap_last".into(), loss_last),
        ("overfit.val_loss_rise".into(), rise),
        ("overfit.rise_epoch".into(), opt(rise_epoch)),
    ]
}

/// A layer's statistics by their stored names.
pub fn layer_stats(l: &LayerHealth) -> [(&'static str, f64); 6] {
    [
        ("activation_mean", l.activation_mean),
        ("activation_std", l.activation_std),
        ("dead_share", l.dead_share),
        ("gradient_norm", l.gradient_norm),
        ("weight_std", l.weight_std),
        ("identical_units", f64::from(u8::from(l.identical_units))),
    ]
}

/// Initialization-health metrics of the probes: per phase (`init`, `epoch1`) the
/// loss, the loss over ln(classes), the share of dead units over every hidden
/// ReLU unit (convolutions and dense layers pooled), the number of hidden layers
/// whose units are identical, and every layer's statistics as
/// `PHASE.LAYER.STAT`.
pub fn probe_metrics(probes: &[Probe]) -> Vec<(String, f64)> {
    let mut out = Vec::new();
    for p in probes {
        let ph = &p.phase;
        out.push((format!("{ph}.loss"), p.loss));
        out.push((format!("{ph}.loss_over_chance"), p.loss / p.chance_loss));
        let hidden: Vec<&LayerHealth> = p.layers.iter().filter(|l| l.layer != "output").collect();
        let relu: Vec<&&LayerHealth> = hidden.iter().filter(|l| !l.dead_share.is_nan()).collect();
        let units: usize = relu.iter().map(|l| l.units).sum();
        if units > 0 {
            let dead: f64 = relu.iter().map(|l| l.dead_share * l.units as f64).sum();
            out.push((format!("{ph}.dead_share"), dead / units as f64));
        }
        out.push((
            format!("{ph}.identical_layers"),
            hidden.iter().filter(|l| l.identical_units).count() as f64,
        ));
        for l in &p.layers {
            for (stat, v) in layer_stats(l) {
                out.push((format!("{ph}.{}.{stat}", l.layer), v));
            }
        }
    }
    out
}

/// The layers that `phase` (`init`, `epoch1`) measured, from stored metric
/// names (`init.hidden0.weight_std`), each once, in the network's order:
/// convolutions, dense layers, `output`.
pub fn layers_of<'a>(phase: &str, names: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
    let mut layers: Vec<&str> = names
        .into_iter()
        .filter_map(|k| {
            let rest = k.strip_prefix(phase)?.strip_prefix('.')?;
            let (layer, stat) = rest.split_once('.')?;
            (stat == "weight_std").then_some(layer)
        })
        .collect();
    layers.sort_by_key(|l| (!l.starts_with("conv"), *l == "output", l.to_string()));
    layers.dedup();
    layers
}

/// Per-class F1 and recall of a report as `val.f1.CLASS` and `val.recall.CLASS`.
pub fn class_scores(r: &Report) -> Vec<(String, f64)> {
    r.classes
        .iter()
        .flat_map(|c| {
            [
                (format!("val.f1.{}", c.name), c.f1),
                (format!("val.recall.{}", c.name), c.recall),
            ]
        })
        .collect()
}

/// Whether a higher value of `metric` is better, for metrics other than the
/// sweep's objective: times, losses, gaps, rises, dead and identical units and
/// the epochs to converge are better low; everything else high.
pub fn higher_is_better(metric: &str) -> bool {
    let low = metric.ends_with("loss")
        || metric == "train_seconds"
        || metric.starts_with("speed.")
        || metric.starts_with("stability.")
        || metric.starts_with("overfit.")
        || metric.ends_with(".loss_over_chance")
        || metric.ends_with("dead_share")
        || metric.ends_with("identical_units")
        || metric.ends_with("identical_layers");
    !low
}

/// The diagnostic metrics a set of stored metric names holds, grouped for
/// `sweep show`: (group, [(name, value)]) in a fixed order.
pub fn grouped(metrics: &BTreeMap<String, f64>) -> Vec<(&'static str, Vec<(&str, f64)>)> {
    let groups: [(&str, &str); 5] = [
        ("convergence speed", "speed."),
        ("stability", "stability."),
        ("overfitting", "overfit."),
        ("initialization (before the first update)", "init."),
        ("after the first epoch", "epoch1."),
    ];
    let mut out = Vec::new();
    for (title, prefix) in groups {
        let rows: Vec<(&str, f64)> = metrics
            .iter()
            .filter(|(k, _)| k.starts_with(prefix) && k.matches('.').count() == 1)
            .map(|(k, v)| (k.as_str(), *v))
            .collect();
        if !rows.is_empty() {
            out.push((title, rows));
        }
    }
    out
}

/// Metric names for a message, with the per-layer and per-class families
/// folded: `init.LAYER.STAT`, `val.f1.CLASS`, followed by what LAYER, STAT and
/// CLASS stand for (at most 12 classes named).
pub fn describe_names<'a>(names: impl IntoIterator<Item = &'a str>) -> String {
    use std::collections::BTreeSet;
    let (mut plain, mut layers, mut stats, mut classes) = (
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
        BTreeSet::new(),
    );
    for n in names {
        let phase = ["init.", "epoch1."]
            .into_iter()
            .find_map(|p| Some((p, n.strip_prefix(p)?.split_once('.')?)));
        if let Some((p, (layer, stat))) = phase {
            plain.insert(format!("{p}LAYER.STAT"));
            layers.insert(layer);
            stats.insert(stat);
            continue;
        }
        let class = ["val.f1.", "val.recall."]
            .into_iter()
            .find_map(|p| Some((p, n.strip_prefix(p)?)));
        if let Some((p, c)) = class {
            plain.insert(format!("{p}CLASS"));
            classes.insert(c);
            continue;
        }
        plain.insert(n.to_string());
    }
    let join = |v: Vec<&str>| v.join(", ");
    let mut s = join(plain.iter().map(String::as_str).collect());
    if !layers.is_empty() {
        s += &format!(
            "; LAYER: {}; STAT: {}",
            join(layers.into_iter().collect()),
            join(stats.into_iter().collect())
        );
    }
    if !classes.is_empty() {
        let n = classes.len();
        let mut shown: Vec<&str> = classes.into_iter().take(12).collect();
        if n > 12 {
            shown.push("…");
        }
        s += &format!("; CLASS: {} ({n} classes)", join(shown));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(e: usize, train: (f64, f64), val: (f64, f64), f1: f64) -> EpochMetrics {
        EpochMetrics {
            epoch: e,
            train_loss: train.0,
            train_accuracy: train.1,
            val_loss: val.0,
            val_accuracy: val.1,
            val_macro_f1: f1,
            val_balanced_accuracy: f1,
            learning_rate: 1e-3,
            seconds: 2.0,
            data_seconds: 0.5,
            step_seconds: 1.0,
            train_loss_std: 0.1 * e as f64,
            train_loss_step_std: f64::NAN,
        }
    }

    fn get(m: &[(String, f64)], name: &str) -> f64 {
        m.iter()
            .find(|(k, _)| k == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .1
    }

    #[test]
    fn convergence_is_the_first_epoch_within_five_percent_of_the_best() {
        // best 0.80: 0.76 is exactly 95% of it
        assert_eq!(
            epochs_to_converge(&[0.2, 0.5, 0.76, 0.8, 0.7], true),
            Some(3)
        );
        assert_eq!(epochs_to_converge(&[0.2, 0.5, 0.75, 0.8], true), Some(4));
        // minimized: within best / 0.95 = 1.0526 of best 1.0
        assert_eq!(epochs_to_converge(&[2.0, 1.05, 1.0], false), Some(2));
        assert_eq!(epochs_to_converge(&[2.0, 1.06, 1.0], false), Some(3));
        // one epoch, a flat curve: the first epoch
        assert_eq!(epochs_to_converge(&[0.3], true), Some(1));
        assert_eq!(epochs_to_converge(&[0.5, 0.5, 0.5], true), Some(1));
        // nothing finite, a zero best (a model that never learned): undefined
        assert_eq!(epochs_to_converge(&[f64::NAN, f64::INFINITY], true), None);
        assert_eq!(epochs_to_converge(&[0.0, 0.0], true), None);
        // a non-finite value never counts as reached
        assert_eq!(epochs_to_converge(&[f64::NAN, 0.4], true), Some(2));
        assert_eq!(seconds_through(&[1.0, 2.0, 4.0], 2), 3.0);
    }

    #[test]
    fn rises_and_the_rise_from_the_minimum() {
        assert_eq!(rises(&[1.0, 0.8, 0.9, 0.7, 0.75]), 2);
        assert_eq!(rises(&[1.0]), 0);
        assert_eq!(rises(&[1.0, f64::NAN]), 1, "blowing up counts as rising");
        let (r, e) = rise_from_minimum(&[1.0, 0.6, 0.5, 0.7, 0.9]);
        assert!((r - 0.4).abs() < 1e-12);
        assert_eq!(e, Some(3));
        assert_eq!(rise_from_minimum(&[1.0, 0.8, 0.6]), (0.0, None));
        assert_eq!(rise_from_minimum(&[0.6]), (0.0, None));
        // a tie keeps the first minimum: the rise began there
        assert_eq!(rise_from_minimum(&[0.5, 0.5, 0.7]).1, Some(1));
        let (r, e) = rise_from_minimum(&[0.9, 0.5, f64::INFINITY]);
        assert!(r.is_infinite() && e == Some(2));
        assert!(rise_from_minimum(&[]).0.is_nan());
        assert_eq!(mean_over_epochs(&[1.0, 2.0, 3.0]), 2.0);
        assert!(mean_over_epochs(&[1.0, f64::NAN]).is_infinite());
        assert!(mean_over_epochs(&[]).is_nan());
    }

    #[test]
    fn a_history_gives_speed_stability_and_gaps() {
        // overfitting: training accuracy climbs, validation loss turns up at epoch 3
        let h = vec![
            epoch(1, (2.0, 0.3), (1.8, 0.35), 0.30),
            epoch(2, (1.2, 0.6), (1.2, 0.55), 0.50),
            epoch(3, (0.7, 0.8), (1.0, 0.62), 0.58),
            epoch(4, (0.3, 0.95), (1.3, 0.6), 0.56),
        ];
        let m = history_metrics(&h, "val.macro_f1", true, Some(3));
        assert_eq!(get(&m, "speed.epochs_to_95"), 3.0); // 0.95 × 0.58 = 0.551
        assert_eq!(get(&m, "speed.seconds_to_95"), 6.0);
        assert!((get(&m, "speed.val_loss_mean") - 1.325).abs() < 1e-12);
        assert_eq!(get(&m, "speed.first_train_loss"), 2.0);
        assert!((get(&m, "stability.batch_loss_std") - 0.25).abs() < 1e-12);
        assert!(get(&m, "stability.batch_loss_step_std").is_nan());
        assert_eq!(get(&m, "stability.val_loss_rises"), 1.0);
        assert!((get(&m, "overfit.accuracy_gap_best") - 0.18).abs() < 1e-12);
        assert!((get(&m, "overfit.accuracy_gap_last") - 0.35).abs() < 1e-12);
        assert!((get(&m, "overfit.loss_gap_best") - 0.3).abs() < 1e-12);
        assert!((get(&m, "overfit.loss_gap_last") - 1.0).abs() < 1e-12);
        assert!((get(&m, "overfit.val_loss_rise") - 0.3).abs() < 1e-12);
        assert_eq!(get(&m, "overfit.rise_epoch"), 3.0);

        // a minimized objective converges on its own curve
        let m = history_metrics(&h, "val.loss", false, Some(3));
        assert_eq!(get(&m, "speed.epochs_to_95"), 3.0);
        // an objective without an epoch curve falls back to macro-F1
        let m = history_metrics(&h, "val.macro_auc", true, None);
        assert_eq!(get(&m, "speed.epochs_to_95"), 3.0);
        assert!(get(&m, "overfit.accuracy_gap_best").is_nan());

        // early stopping and one epoch: defined, no rise
        let m = history_metrics(&h[..1], "val.macro_f1", true, Some(1));
        assert_eq!(get(&m, "speed.epochs_to_95"), 1.0);
        assert_eq!(get(&m, "overfit.val_loss_rise"), 0.0);
        assert!(get(&m, "overfit.rise_epoch").is_nan());
        assert_eq!(get(&m, "stability.val_loss_rises"), 0.0);

        // a diverged trial: the epochs before the blow-up, the blow-up is a rise
        let mut d = h[..2].to_vec();
        d.push(epoch(3, (f64::NAN, 0.1), (f64::NAN, 0.1), 0.0));
        let m = history_metrics(&d, "val.macro_f1", true, None);
        assert_eq!(get(&m, "speed.epochs_to_95"), 2.0);
        assert!(get(&m, "speed.val_loss_mean").is_infinite());
        assert_eq!(get(&m, "stability.val_loss_rises"), 1.0);
        assert!(history_metrics(&[], "val.macro_f1", true, None).is_empty());
    }

    #[test]
    fn probes_become_named_metrics() {
        let layer = |name: &str, units, dead, same| LayerHealth {
            layer: name.into(),
            units,
            activation_mean: 0.2,
            activation_std: 0.5,
            dead_share: dead,
            gradient_norm: 0.01,
            weight_std: 0.1,
            identical_units: same,
        };
        let p = Probe {
            phase: "init".into(),
            epoch: 0,
            loss: 2.302585,
            chance_loss: 10f64.ln(),
            images: 64,
            layers: vec![
                layer("hidden0", 100, 0.5, true),
                layer("hidden1", 300, 0.1, true),
                layer("output", 10, f64::NAN, true),
            ],
        };
        let m = probe_metrics(&[p]);
        assert!((get(&m, "init.loss_over_chance") - 1.0).abs() < 1e-6);
        // (50 + 30) dead of 400 hidden units
        assert!((get(&m, "init.dead_share") - 0.2).abs() < 1e-12);
        assert_eq!(
            get(&m, "init.identical_layers"),
            2.0,
            "the output layer is not counted"
        );
        assert_eq!(get(&m, "init.hidden1.identical_units"), 1.0);
        assert!(get(&m, "init.output.dead_share").is_nan());
        assert!(!higher_is_better("init.dead_share"));
        assert!(!higher_is_better("speed.epochs_to_95"));
        assert!(!higher_is_better("val.loss"));
        assert!(higher_is_better("val.f1.mel"));
        assert!(higher_is_better("init.hidden0.gradient_norm"));
        let names =
            m.iter()
                .map(|(k, _)| k.as_str())
                .chain(["val.f1.mel", "val.recall.nv", "val.loss"]);
        assert_eq!(
            describe_names(names),
            "init.LAYER.STAT, init.dead_share, init.identical_layers, init.loss, init.loss_over_chance, \
             val.f1.CLASS, val.loss, val.recall.CLASS; LAYER: hidden0, hidden1, output; \
             STAT: activation_mean, activation_std, dead_share, gradient_norm, identical_units, weight_std; \
             CLASS: mel, nv (2 classes)"
        );
    }
}
