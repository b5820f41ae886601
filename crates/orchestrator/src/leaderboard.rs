//! The ranked list of configurations that `compare` prints and the report
//! shows: one column per swept setting (short labels for long values), the
//! objective's mean ± std over seeds, and whether each configuration can be
//! told apart from the best one: Welch's t-test against the best, with the
//! p-values adjusted for the number of comparisons by Holm's step-down method
//! (Holm 1979; `statsmodels.stats.multitest.multipletests(method="holm")`).

use std::collections::BTreeMap;

use crate::query::{format_num, TrialRow};
use crate::stats::{self, Summary};

/// How the p-values against the best are adjusted (named in the outputs).
pub const CORRECTION: &str = "Holm";
/// The family-wise error rate below which a configuration counts as worse.
pub const ALPHA: f64 = 0.05;

/// One configuration of the leaderboard.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Entry {
    /// Its swept settings, by name (the stored text).
    pub settings: BTreeMap<String, String>,
    pub summary: Summary,
    /// The objective of each complete seed.
    pub values: Vec<f64>,
    /// The complete trials' ids, in seed order.
    pub trials: Vec<i64>,
    /// Its other trials (pruned, diverged, failed, unfinished): not in the mean.
    pub left_out: usize,
    /// Welch's p-value against the best configuration, and adjusted (Holm);
    /// None for the best itself and where a test is not defined (one seed).
    pub p_raw: Option<f64>,
    pub p_adjusted: Option<f64>,
}

impl Entry {
    /// Worse than the best, beyond seed noise (adjusted p below [`ALPHA`]).
    pub fn distinguishable(&self) -> bool {
        self.p_adjusted.is_some_and(|p| p < ALPHA)
    }

    /// In words: "best", "worse (p = 0.003)", "not distinguishable (p = 0.41)"
    /// or "untested (1 seed)".
    pub fn verdict(&self, rank: usize) -> String {
        match self.p_adjusted {
            _ if rank == 0 => "best".into(),
            Some(p) if p < ALPHA => format!("worse ({})", p_clause(p)),
            Some(p) => format!("not distinguishable ({})", p_clause(p)),
            None => format!(
                "untested ({} seed{})",
                self.summary.n,
                if self.summary.n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// A p-value as the outputs show it: three decimals, or "< 0.001".
pub fn short_p(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".into()
    } else {
        format!("{p:.3}")
    }
}

/// A p-value in words: `p = 0.041`, or `p < 0.001`.
pub fn p_clause(p: f64) -> String {
    if p < 0.001 {
        "p < 0.001".into()
    } else {
        format!("p = {p:.3}")
    }
}

/// The ranked configurations of a sweep.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Leaderboard {
    pub metric: String,
    pub maximize: bool,
    /// The swept settings that differ between configurations, in name order.
    pub params: Vec<String>,
    /// Best first.
    pub entries: Vec<Entry>,
}

/// Groups the complete trials with a finite `metric` by their swept settings
/// and ranks the groups by mean (`maximize`: highest first). Every other
/// configuration is tested against the best (Welch), and the p-values are
/// adjusted together (Holm).
pub fn leaderboard(trials: &[TrialRow], metric: &str, maximize: bool) -> Leaderboard {
    // settings → (complete values, their trial ids, trials left out)
    type Group = (Vec<f64>, Vec<i64>, usize);
    let mut groups: BTreeMap<Vec<(String, String)>, Group> = BTreeMap::new();
    for t in trials {
        let key: Vec<(String, String)> = t.params.clone().into_iter().collect();
        let g = groups.entry(key).or_default();
        match t.metrics.get(metric).copied().filter(|v| v.is_finite()) {
            Some(v) if t.state == "complete" => {
                g.0.push(v);
                g.1.push(t.id);
            }
            _ => g.2 += 1,
        }
    }
    let mut entries: Vec<Entry> = groups
        .into_iter()
        .filter_map(|(key, (values, ids, left_out))| {
            Some(Entry {
                summary: stats::summarize(&values)?,
                settings: key.into_iter().collect(),
                values,
                trials: ids,
                left_out,
                p_raw: None,
                p_adjusted: None,
            })
        })
        .collect();
    entries.sort_by(|a, b| {
        let o = a.summary.mean.total_cmp(&b.summary.mean);
        if maximize {
            o.reverse()
        } else {
            o
        }
    });
    if let Some(best) = entries.first().map(|e| e.values.clone()) {
        for e in entries.iter_mut().skip(1) {
            e.p_raw = stats::welch(&e.values, &best).map(|w| w.2);
        }
        let tested: Vec<usize> = (1..entries.len())
            .filter(|i| entries[*i].p_raw.is_some())
            .collect();
        let raw: Vec<f64> = tested
            .iter()
            .map(|i| entries[*i].p_raw.unwrap_or(1.0))
            .collect();
        for (i, p) in tested.into_iter().zip(holm(&raw)) {
            entries[i].p_adjusted = Some(p);
        }
    }
    // the settings that tell configurations apart
    let mut params: Vec<String> = trials
        .first()
        .map(|t| t.params.keys().cloned().collect())
        .unwrap_or_default();
    if entries.len() > 1 {
        params.retain(|p| {
            let first = entries[0].settings.get(p);
            entries.iter().any(|e| e.settings.get(p) != first)
        });
    }
    Leaderboard {
        metric: metric.to_string(),
        maximize,
        params,
        entries,
    }
}

/// Holm's step-down adjustment of `p` (same order out as in): the k-th
/// smallest becomes max over j ≤ k of min(1, (m − j + 1)·p₍ⱼ₎).
pub fn holm(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|a, b| p[*a].total_cmp(&p[*b]));
    let mut out = vec![1.0; m];
    let mut running: f64 = 0.0;
    for (j, i) in order.into_iter().enumerate() {
        running = running.max(((m - j) as f64 * p[i]).min(1.0));
        out[i] = running;
    }
    out
}

/// Column names for settings: the last part of the name (`dropout` for
/// `model.dropout`), or the whole name where two settings share it.
pub fn short_names(params: &[String]) -> Vec<String> {
    let last = |p: &str| p.rsplit('.').next().unwrap_or(p).to_string();
    params
        .iter()
        .map(|p| {
            let l = last(p);
            if params.iter().filter(|q| last(q) == l).count() > 1 {
                p.clone()
            } else {
                l
            }
        })
        .collect()
}

/// A setting's value as a short label: lists of names are counted or joined
/// (`none`, `hflip+vflip`, `4 ops`), numbers lose trailing zeros, long text
/// is cut. The full value belongs in a tooltip or a CSV.
pub fn short_value(stored: &str) -> String {
    match crate::select::stored_value(stored) {
        serde_json::Value::Array(items) if items.is_empty() => "none".into(),
        serde_json::Value::Array(items) if items.iter().all(|v| v.is_string()) => {
            let names: Vec<&str> = items.iter().filter_map(|v| v.as_str()).collect();
            let joined = names.join("+");
            if joined.chars().count() <= 16 {
                joined
            } else {
                format!("{} ops", names.len())
            }
        }
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items
                .iter()
                .map(|v| short_value(&v.to_string()))
                .collect::<Vec<_>>()
                .join(",")
        ),
        serde_json::Value::Number(n) => match n.as_f64() {
            Some(x) if x.fract() == 0.0 && x.abs() < 1e6 => format!("{x}"),
            Some(x) if x.abs() >= 1e-3 && x.abs() < 1e6 => {
                let s = format!("{x:.4}");
                s.trim_end_matches('0').trim_end_matches('.').to_string()
            }
            Some(x) => format!("{x:.2e}"),
            None => n.to_string(),
        },
        serde_json::Value::String(s) if s.chars().count() > 18 => {
            format!("{}…", s.chars().take(17).collect::<String>())
        }
        serde_json::Value::String(s) => s,
        other => other.to_string(),
    }
}

/// "0.4263 ± 0.0712" (the std left out for one seed).
pub fn mean_std(s: &Summary) -> String {
    if s.n > 1 {
        format!("{} ± {}", format_num(s.mean), format_num(s.std))
    } else {
        format_num(s.mean)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holm_matches_statsmodels() {
        // statsmodels.stats.multitest.multipletests([0.01, 0.04, 0.03, 0.005],
        //     method="holm")[1] -> [0.03, 0.06, 0.06, 0.02]
        let got = holm(&[0.01, 0.04, 0.03, 0.005]);
        for (g, w) in got.iter().zip([0.03, 0.06, 0.06, 0.02]) {
            assert!((g - w).abs() < 1e-12, "{got:?}");
        }
        // capped at 1, monotone in the sorted order
        assert_eq!(holm(&[0.5, 0.9]), vec![1.0, 1.0]);
        assert!(holm(&[]).is_empty());
    }

    #[test]
    fn short_labels_for_long_values() {
        assert_eq!(short_value("[]"), "none");
        assert_eq!(short_value("[\"hflip\",\"vflip\"]"), "hflip+vflip");
        assert_eq!(
            short_value("[\"brightness_contrast\",\"hflip\",\"shift_scale_rotate\",\"vflip\"]"),
            "4 ops"
        );
        assert_eq!(short_value("[512,128]"), "[512,128]");
        assert_eq!(short_value("[0.25,1e-4]"), "[0.25,1.00e-4]");
        assert_eq!(short_value("0.0001"), "1.00e-4");
        assert_eq!(short_value("0.00510102"), "0.0051");
        assert_eq!(short_value("0.5"), "0.5");
        assert_eq!(short_value("0.0"), "0");
        assert_eq!(short_value("cnn"), "cnn");
        assert_eq!(short_value("true"), "true");
        assert_eq!(
            short_names(&[
                "model.dropout".into(),
                "data.augment".into(),
                "model.init".into(),
                "data.init".into()
            ]),
            ["dropout", "augment", "model.init", "data.init"]
        );
    }

    fn trial(id: i64, dropout: &str, state: &str, v: f64) -> TrialRow {
        TrialRow::for_test(
            id,
            state,
            &[("model.dropout", dropout), ("model.arch", "mlp")],
            &[("val.macro_f1", v)],
        )
    }

    #[test]
    fn ranks_tests_against_the_best_and_corrects() {
        let trials = vec![
            trial(1, "0.0", "complete", 0.50),
            trial(2, "0.0", "complete", 0.52),
            trial(3, "0.0", "complete", 0.51),
            trial(4, "0.5", "complete", 0.30),
            trial(5, "0.5", "complete", 0.31),
            trial(6, "0.5", "complete", 0.29),
            trial(7, "0.2", "complete", 0.49),
            trial(8, "0.2", "complete", 0.53),
            trial(9, "0.2", "pruned", 0.1),
            trial(10, "0.3", "complete", 0.45),
        ];
        let b = leaderboard(&trials, "val.macro_f1", true);
        // model.arch never differs: no column for it
        assert_eq!(b.params, ["model.dropout"]);
        let order: Vec<&str> = b
            .entries
            .iter()
            .map(|e| e.settings["model.dropout"].as_str())
            .collect();
        assert_eq!(order, ["0.0", "0.2", "0.3", "0.5"]);
        assert_eq!(b.entries[1].left_out, 1, "the pruned seed is left out");
        // scipy.stats.ttest_ind([0.30, 0.31, 0.29], [0.50, 0.52, 0.51],
        //     equal_var=False).pvalue = 1.3574608703867271e-05; two tests: Holm
        // multiplies the smaller by 2
        let worst = &b.entries[3];
        let raw = worst.p_raw.unwrap();
        assert!((raw - 1.3574608703867271e-05).abs() < 1e-10, "{raw}");
        assert!((worst.p_adjusted.unwrap() - 2.0 * raw).abs() < 1e-12);
        assert!(worst.distinguishable());
        assert_eq!(worst.verdict(3), "worse (p < 0.001)");
        // two seeds close to the best's: not told apart
        assert!(!b.entries[1].distinguishable());
        assert!(b.entries[1].verdict(1).starts_with("not distinguishable"));
        // one seed: no test
        assert_eq!(b.entries[2].p_adjusted, None);
        assert_eq!(b.entries[2].verdict(2), "untested (1 seed)");
        assert_eq!(b.entries[0].verdict(0), "best");
    }
}
