//! Plain-text tables: the per-epoch table, the classification report, the confusion matrix.

use sweep_train::{EpochMetrics, Report, StopReason, TrialOutcome};

pub const EPOCH_HEADER: &str = "epoch  train_loss  train_acc  val_loss  val_acc  val_macro_f1  val_bal_acc  learning_rate  seconds";

pub fn epoch_row(m: &EpochMetrics) -> String {
    format!(
        "{:>5}  {:>10.4}  {:>9.4}  {:>8.4}  {:>7.4}  {:>12.4}  {:>11.4}  {:>13.3e}  {:>7.2}",
        m.epoch,
        m.train_loss,
        m.train_accuracy,
        m.val_loss,
        m.val_accuracy,
        m.val_macro_f1,
        m.val_balanced_accuracy,
        m.learning_rate,
        m.seconds
    )
}

/// Initialization health of a trial, for `sweep train`: the probe's loss against
/// ln(classes), and per layer the dead share and identical units, before the
/// first update → after the first epoch.
pub fn health(o: &TrialOutcome) -> String {
    let [init, after] = match o.probes.as_slice() {
        [a, b] => [a, b],
        [a] => [a, a],
        _ => return String::new(),
    };
    let mut s = format!(
        "initialization health (before the first update → after epoch 1, on {} training images):\n  loss {:.4} → {:.4} (ln {} = {:.4}: where a classifier that tells no class apart sits)\n",
        init.images,
        init.loss,
        after.loss,
        init.chance_loss.exp().round(),
        init.chance_loss
    );
    for (a, b) in init.layers.iter().zip(&after.layers) {
        let dead = |l: &sweep_train::LayerHealth| {
            if l.dead_share.is_nan() {
                "-".to_string()
            } else {
                format!("{:.0}%", 100.0 * l.dead_share)
            }
        };
        let same = |l: &sweep_train::LayerHealth| if l.identical_units { "yes" } else { "no" };
        s += &format!(
            "  {:<8} activation std {:.3} → {:.3} · dead units {} → {} · gradient norm {:.2e} → {:.2e} · identical units {} → {}\n",
            a.layer,
            a.activation_std,
            b.activation_std,
            dead(a),
            dead(b),
            a.gradient_norm,
            b.gradient_norm,
            same(a),
            same(b)
        );
    }
    if init
        .layers
        .iter()
        .any(|l| l.layer != "output" && l.identical_units)
    {
        s += "  warning: every unit of a hidden layer computes the same thing (a constant initialization?): they get the same gradient and stay identical\n";
    }
    s
}

pub fn stop_line(o: &TrialOutcome) -> String {
    let how = match &o.stop {
        StopReason::EpochLimit => format!("completed {} epochs", o.epochs.len()),
        StopReason::EarlyStopping { epoch } => format!("stopped early after epoch {epoch}"),
        StopReason::Diverged { epoch, batch, loss } => {
            format!("diverged: loss {loss} at epoch {epoch}, batch {batch}")
        }
        StopReason::Interrupted { epoch } => format!("interrupted during epoch {epoch}"),
        StopReason::Pruned { rule, .. } => rule.clone(),
    };
    let best = o
        .best_epoch
        .map(|e| format!("; best epoch {e}"))
        .unwrap_or_default();
    let used = o
        .report_epoch
        .map(|e| format!("; report from epoch {e}"))
        .unwrap_or_default();
    format!("{how} in {:.1}s{best}{used}", o.seconds)
}

pub fn report(r: &Report) -> String {
    let w = r
        .classes
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(0)
        .max(17);
    let mut s = format!("{:>w$}  precision  recall  f1-score  support\n\n", "");
    for c in &r.classes {
        s += &format!(
            "{:>w$}  {:>9.4}  {:>6.4}  {:>8.4}  {:>7}\n",
            c.name, c.precision, c.recall, c.f1, c.support
        );
    }
    let total: u64 = r.classes.iter().map(|c| c.support).sum();
    s += "\n";
    s += &format!(
        "{:>w$}  {:>9}  {:>6}  {:>8.4}  {:>7}\n",
        "accuracy", "", "", r.accuracy, total
    );
    s += &format!(
        "{:>w$}  {:>9.4}  {:>6.4}  {:>8.4}  {:>7}\n",
        "macro avg", r.macro_precision, r.macro_recall, r.macro_f1, total
    );
    s += &format!(
        "{:>w$}  {:>9.4}  {:>6.4}  {:>8.4}  {:>7}\n",
        "weighted avg", r.weighted_precision, r.weighted_recall, r.weighted_f1, total
    );
    s += &format!(
        "{:>w$}  {:>9}  {:>6}  {:>8.4}\n",
        "balanced accuracy", "", "", r.balanced_accuracy
    );
    if let Some(auc) = r.macro_auc {
        s += &format!(
            "{:>w$}  {:>9}  {:>6}  {:>8.4}\n",
            "macro AUC (ovr)", "", "", auc
        );
    }
    s
}

/// Rows are true classes, columns predicted; columns are numbered and the legend
/// names them, so 100 classes stay readable.
pub fn confusion(r: &Report) -> String {
    let k = r.classes.len();
    let names: Vec<&str> = r.classes.iter().map(|c| c.name.as_str()).collect();
    let nw = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4);
    let cw = r
        .confusion
        .counts
        .iter()
        .flatten()
        .max()
        .map(|m| m.to_string().len())
        .unwrap_or(1)
        .max(k.to_string().len())
        .max(2);
    let mut s = String::from("confusion matrix (rows: true class, columns: predicted class)\n");
    s += &format!("{:>w$}  ", "", w = nw + 4);
    for j in 0..k {
        s += &format!(" {:>cw$}", j);
    }
    s += "\n";
    for (i, row) in r.confusion.counts.iter().enumerate() {
        s += &format!("{:>3} {:>nw$}  ", i, names[i]);
        for v in row {
            s += &format!(" {:>cw$}", v);
        }
        s += "\n";
    }
    s
}
