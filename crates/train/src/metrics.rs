//! Classification metrics from confusion counts, with scikit-learn's definitions
//! (`classification_report(zero_division=0)`, `balanced_accuracy_score`,
//! `roc_auc_score(multi_class="ovr", average="macro")`).

use serde::{Deserialize, Serialize};

/// Counts `[true][predicted]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confusion {
    pub counts: Vec<Vec<u64>>,
}

impl Confusion {
    pub fn new(k: usize) -> Self {
        Confusion {
            counts: vec![vec![0; k]; k],
        }
    }
    pub fn add(&mut self, truth: u32, pred: u32) {
        self.counts[truth as usize][pred as usize] += 1;
    }
    pub fn total(&self) -> u64 {
        self.counts.iter().flatten().sum()
    }
    pub fn correct(&self) -> u64 {
        (0..self.counts.len()).map(|i| self.counts[i][i]).sum()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMetrics {
    pub name: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    pub support: u64,
}

/// A classification report: per class, averages, accuracy, balanced accuracy,
/// one-vs-rest macro AUC, and the confusion counts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub classes: Vec<ClassMetrics>,
    pub macro_precision: f64,
    pub macro_recall: f64,
    pub macro_f1: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub weighted_f1: f64,
    pub accuracy: f64,
    pub balanced_accuracy: f64,
    /// `None` when fewer than two classes are present in the truth.
    pub macro_auc: Option<f64>,
    pub confusion: Confusion,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

impl Report {
    /// Builds the report; `scores` (row-major `n × k` probabilities, with `truth`)
    /// enables the AUC.
    pub fn new(names: &[String], confusion: Confusion, scores: Option<(&[f32], &[u32])>) -> Report {
        let k = names.len();
        let c = &confusion.counts;
        let mut classes = Vec::with_capacity(k);
        for i in 0..k {
            let tp = c[i][i];
            let support: u64 = c[i].iter().sum();
            let predicted: u64 = (0..k).map(|r| c[r][i]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall == 0.0 {
                0.0
            } else {
                2.0 * precision * recall / (precision + recall)
            };
            classes.push(ClassMetrics {
                name: names[i].clone(),
                precision,
                recall,
                f1,
                support,
            });
        }
        let total = confusion.total();
        let mean =
            |f: fn(&ClassMetrics) -> f64| classes.iter().map(f).sum::<f64>() / k.max(1) as f64;
        let weighted = |f: fn(&ClassMetrics) -> f64| {
            if total == 0 {
                0.0
            } else {
                classes.iter().map(|m| f(m) * m.support as f64).sum::<f64>() / total as f64
            }
        };
        let present: Vec<&ClassMetrics> = classes.iter().filter(|m| m.support > 0).collect();
        let balanced_accuracy = if present.is_empty() {
            0.0
        } else {
            present.iter().map(|m| m.recall).sum::<f64>() / present.len() as f64
        };
        Report {
            macro_precision: mean(|m| m.precision),
            macro_recall: mean(|m| m.recall),
            macro_f1: mean(|m| m.f1),
            weighted_precision: weighted(|m| m.precision),
            weighted_recall: weighted(|m| m.recall),
            weighted_f1: weighted(|m| m.f1),
            accuracy: ratio(confusion.correct(), total),
            balanced_accuracy,
            macro_auc: scores.and_then(|(s, y)| macro_auc_ovr(s, y, k)),
            classes,
            confusion,
        }
    }
}

/// Area under the ROC curve of `scores` for positives `is_pos` (Mann-Whitney U with
/// mid-ranks for ties). `None` without both positives and negatives.
pub fn binary_auc(scores: &[f32], is_pos: &[bool]) -> Option<f64> {
    let n_pos = is_pos.iter().filter(|p| **p).count();
    let n_neg = is_pos.len() - n_pos;
    if n_pos == 0 || n_neg == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|a, b| scores[*a].total_cmp(&scores[*b]));
    let mut rank_sum_pos = 0.0;
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && scores[order[j + 1]] == scores[order[i]] {
            j += 1;
        }
        let mid = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            if is_pos[o] {
                rank_sum_pos += mid;
            }
        }
        i = j + 1;
    }
    let u = rank_sum_pos - (n_pos * (n_pos + 1)) as f64 / 2.0;
    Some(u / (n_pos as f64 * n_neg as f64))
}

/// One-vs-rest AUC averaged over the classes present in `truth`.
pub fn macro_auc_ovr(scores: &[f32], truth: &[u32], k: usize) -> Option<f64> {
    let mut aucs = Vec::new();
    let mut col = Vec::with_capacity(truth.len());
    let mut pos = Vec::with_capacity(truth.len());
    for c in 0..k {
        col.clear();
        pos.clear();
        for (i, y) in truth.iter().enumerate() {
            col.push(scores[i * k + c]);
            pos.push(*y as usize == c);
        }
        if let Some(a) = binary_auc(&col, &pos) {
            aucs.push(a);
        }
    }
    if aucs.len() < 2 && k > 2 {
        return None;
    }
    (!aucs.is_empty()).then(|| aucs.iter().sum::<f64>() / aucs.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// scikit-learn reference:
    /// ```python
    /// from sklearn.metrics import classification_report, balanced_accuracy_score, roc_auc_score
    /// y_true=[0,0,0,0,1,1,1,2,2,3,3,3]; y_pred=[0,0,1,0,1,2,1,2,0,3,3,1]
    /// classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    /// balanced_accuracy_score(y_true, y_pred)
    /// roc_auc_score(y_true, PROBS, multi_class="ovr", average="macro")
    /// ```
    #[test]
    fn report_matches_sklearn() {
        let y_true = [0u32, 0, 0, 0, 1, 1, 1, 2, 2, 3, 3, 3];
        let y_pred = [0u32, 0, 1, 0, 1, 2, 1, 2, 0, 3, 3, 1];
        let mut cm = Confusion::new(4);
        for (t, p) in y_true.iter().zip(&y_pred) {
            cm.add(*t, *p);
        }
        let names: Vec<String> = (0..4).map(|i| i.to_string()).collect();
        let r = Report::new(&names, cm, Some((&PROBS.concat(), &y_true)));
        let close = |a: f64, b: f64| assert!((a - b).abs() < 1e-7, "{a} vs {b}");
        for (m, want) in r.classes.iter().zip(REF_PER_CLASS) {
            close(m.precision, want[0]);
            close(m.recall, want[1]);
            close(m.f1, want[2]);
            assert_eq!(m.support as f64, want[3]);
        }
        close(r.macro_precision, REF_MACRO[0]);
        close(r.macro_recall, REF_MACRO[1]);
        close(r.macro_f1, REF_MACRO[2]);
        close(r.weighted_precision, REF_WEIGHTED[0]);
        close(r.weighted_recall, REF_WEIGHTED[1]);
        close(r.weighted_f1, REF_WEIGHTED[2]);
        close(r.accuracy, REF_ACCURACY);
        close(r.balanced_accuracy, REF_BALANCED);
        close(r.macro_auc.unwrap(), REF_AUC);
    }

    #[test]
    fn auc_with_ties() {
        // sklearn.metrics.roc_auc_score([0,0,1,1],[0.1,0.4,0.35,0.8]) = 0.75; ties count 1/2
        assert_eq!(
            binary_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]),
            Some(0.75)
        );
        assert_eq!(binary_auc(&[0.5, 0.5], &[false, true]), Some(0.5));
        assert_eq!(binary_auc(&[0.5, 0.5], &[true, true]), None);
    }

    const PROBS: [[f32; 4]; 12] = [
        [0.70, 0.10, 0.10, 0.10],
        [0.40, 0.30, 0.20, 0.10],
        [0.25, 0.25, 0.25, 0.25],
        [0.50, 0.20, 0.20, 0.10],
        [0.10, 0.60, 0.20, 0.10],
        [0.20, 0.30, 0.40, 0.10],
        [0.25, 0.25, 0.25, 0.25],
        [0.10, 0.20, 0.60, 0.10],
        [0.30, 0.10, 0.20, 0.40],
        [0.10, 0.10, 0.20, 0.60],
        [0.20, 0.20, 0.20, 0.40],
        [0.10, 0.40, 0.10, 0.40],
    ];
    // scikit-learn 1.9.1: precision, recall, f1, support per class
    const REF_PER_CLASS: [[f64; 4]; 4] = [
        [0.75, 0.75, 0.75, 4.0],
        [0.5, 0.66666667, 0.57142857, 3.0],
        [0.5, 0.5, 0.5, 2.0],
        [1.0, 0.66666667, 0.8, 3.0],
    ];
    const REF_MACRO: [f64; 3] = [0.6875, 0.64583333, 0.65535714];
    const REF_WEIGHTED: [f64; 3] = [0.70833333, 0.66666667, 0.67619048];
    const REF_ACCURACY: f64 = 0.66666667;
    const REF_BALANCED: f64 = 0.64583333;
    const REF_AUC: f64 = 0.87323495;
}
