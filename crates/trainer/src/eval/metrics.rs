//! Classification, regression and uncertainty metrics from predictions and targets.

use super::*;

/// Per-class scores.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScores {
    /// Class index.
    pub class: usize,
    /// TP / (TP + FP), 0 when nothing was predicted as this class (scikit-learn's default).
    pub precision: f64,
    /// TP / (TP + FN), 0 when the class does not occur.
    pub recall: f64,
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub f1: f64,
    /// Occurrences in the targets.
    pub support: u64,
}

/// Classification metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassificationMetrics {
    /// Fraction of correct predictions.
    pub accuracy: f64,
    /// Unweighted mean over the classes present in targets or predictions.
    pub precision_macro: f64,
    /// Unweighted mean recall.
    pub recall_macro: f64,
    /// Unweighted mean F1.
    pub f1_macro: f64,
    /// Mean weighted by support.
    pub precision_weighted: f64,
    /// Support-weighted recall.
    pub recall_weighted: f64,
    /// Support-weighted F1.
    pub f1_weighted: f64,
    /// `confusion[true][predicted]` counts.
    pub confusion: Vec<Vec<u64>>,
    /// Per-class scores (classes present in targets or predictions).
    pub per_class: Vec<ClassScores>,
    /// Number of items.
    pub count: u64,
}

/// Computes [`ClassificationMetrics`] from predicted and true class indices.
pub fn classification_metrics(
    predictions: &[usize],
    targets: &[usize],
    num_classes: usize,
) -> Result<ClassificationMetrics> {
    if predictions.len() != targets.len() {
        return Err(Error::Data(format!(
            "{} predictions for {} targets",
            predictions.len(),
            targets.len()
        )));
    }
    if let Some(bad) = predictions
        .iter()
        .chain(targets)
        .find(|c| **c >= num_classes)
    {
        return Err(Error::Data(format!("class {bad} outside 0..{num_classes}")));
    }
    let mut confusion = vec![vec![0u64; num_classes]; num_classes];
    for (&p, &t) in predictions.iter().zip(targets) {
        confusion[t][p] += 1;
    }
    let n = targets.len() as u64;
    let correct: u64 = (0..num_classes).map(|c| confusion[c][c]).sum();
    let mut per_class = Vec::new();
    for c in 0..num_classes {
        let tp = confusion[c][c];
        let support: u64 = confusion[c].iter().sum();
        let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
        if support == 0 && predicted == 0 {
            continue;
        }
        let precision = if predicted == 0 {
            0.0
        } else {
            tp as f64 / predicted as f64
        };
        let recall = if support == 0 {
            0.0
        } else {
            tp as f64 / support as f64
        };
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        per_class.push(ClassScores {
            class: c,
            precision,
            recall,
            f1,
            support,
        });
    }
    let k = per_class.len().max(1) as f64;
    let total = n.max(1) as f64;
    let macro_of = |f: fn(&ClassScores) -> f64| per_class.iter().map(f).sum::<f64>() / k;
    let weighted_of = |f: fn(&ClassScores) -> f64| {
        per_class
            .iter()
            .map(|s| f(s) * s.support as f64)
            .sum::<f64>()
            / total
    };
    Ok(ClassificationMetrics {
        accuracy: correct as f64 / total,
        precision_macro: macro_of(|s| s.precision),
        recall_macro: macro_of(|s| s.recall),
        f1_macro: macro_of(|s| s.f1),
        precision_weighted: weighted_of(|s| s.precision),
        recall_weighted: weighted_of(|s| s.recall),
        f1_weighted: weighted_of(|s| s.f1),
        confusion,
        per_class,
        count: n,
    })
}

impl ClassificationMetrics {
    /// A report shaped like scikit-learn's `classification_report(..., output_dict=True)`:
    /// one object per class name, plus `accuracy`, `macro avg` and `weighted avg`.
    pub fn report_json(&self, class_names: Option<&[String]>) -> serde_json::Value {
        let mut map = serde_json::Map::new();
        for s in &self.per_class {
            let name = class_names
                .and_then(|n| n.get(s.class).cloned())
                .unwrap_or_else(|| s.class.to_string());
            map.insert(
                name,
                serde_json::json!({"precision": s.precision, "recall": s.recall,
                                   "f1-score": s.f1, "support": s.support}),
            );
        }
        map.insert("accuracy".into(), serde_json::json!(self.accuracy));
        map.insert(
            "macro avg".into(),
            serde_json::json!({"precision": self.precision_macro, "recall": self.recall_macro,
                               "f1-score": self.f1_macro, "support": self.count}),
        );
        map.insert(
            "weighted avg".into(),
            serde_json::json!({"precision": self.precision_weighted,
                               "recall": self.recall_weighted,
                               "f1-score": self.f1_weighted, "support": self.count}),
        );
        serde_json::Value::Object(map)
    }

    /// The scalar metrics as `(name, value)`.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        vec![
            ("accuracy".into(), self.accuracy),
            ("precision_macro".into(), self.precision_macro),
            ("recall_macro".into(), self.recall_macro),
            ("f1_macro".into(), self.f1_macro),
            ("precision_weighted".into(), self.precision_weighted),
            ("recall_weighted".into(), self.recall_weighted),
            ("f1_weighted".into(), self.f1_weighted),
        ]
    }
}

/// Regression metrics.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RegressionMetrics {
    /// Mean squared error.
    pub mse: f64,
    /// Mean absolute error.
    pub mae: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Coefficient of determination `1 - SS_res / SS_tot` (scikit-learn: 1 for a perfect fit of
    /// constant targets, 0 for an imperfect one).
    pub r2: f64,
}

/// Computes [`RegressionMetrics`] over all values (multi-output values are flattened).
pub fn regression_metrics(predictions: &[f64], targets: &[f64]) -> Result<RegressionMetrics> {
    if predictions.len() != targets.len() || targets.is_empty() {
        return Err(Error::Data(format!(
            "{} predictions for {} targets",
            predictions.len(),
            targets.len()
        )));
    }
    let n = targets.len() as f64;
    let mean_t = targets.iter().sum::<f64>() / n;
    let (mut ss_res, mut abs, mut ss_tot) = (0.0, 0.0, 0.0);
    for (&p, &t) in predictions.iter().zip(targets) {
        ss_res += (p - t) * (p - t);
        abs += (p - t).abs();
        ss_tot += (t - mean_t) * (t - mean_t);
    }
    let r2 = if ss_tot == 0.0 {
        if ss_res == 0.0 { 1.0 } else { 0.0 }
    } else {
        1.0 - ss_res / ss_tot
    };
    Ok(RegressionMetrics {
        mse: ss_res / n,
        mae: abs / n,
        rmse: (ss_res / n).sqrt(),
        r2,
    })
}

/// Uncertainty / calibration metrics of predicted class probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct UncertaintyMetrics {
    /// Mean predictive entropy `-Σ p ln p` (nats).
    pub mean_entropy: f64,
    /// Mean of the top probability.
    pub mean_confidence: f64,
    /// Expected calibration error over `bins` equal-width confidence bins `(i/B, (i+1)/B]`:
    /// `Σ_b |acc_b - conf_b| · n_b / N` (Guo et al. 2017).
    pub ece: f64,
    /// Number of bins used.
    pub bins: usize,
}

/// Computes [`UncertaintyMetrics`]; `probs` is row-major `[n, num_classes]`.
pub fn uncertainty_metrics(
    probs: &[f64],
    num_classes: usize,
    targets: &[usize],
    bins: usize,
) -> Result<UncertaintyMetrics> {
    if num_classes == 0 || probs.len() != targets.len() * num_classes || targets.is_empty() {
        return Err(Error::Data(format!(
            "{} probabilities for {} items of {num_classes} classes",
            probs.len(),
            targets.len()
        )));
    }
    let bins = bins.max(1);
    let mut bin_n = vec![0u64; bins];
    let mut bin_conf = vec![0.0; bins];
    let mut bin_acc = vec![0.0; bins];
    let (mut ent, mut conf_sum) = (0.0, 0.0);
    for (row, &t) in probs.chunks(num_classes).zip(targets) {
        let (mut best, mut conf) = (0usize, f64::NEG_INFINITY);
        for (c, &p) in row.iter().enumerate() {
            if p > 0.0 {
                ent -= p * p.ln();
            }
            if p > conf {
                conf = p;
                best = c;
            }
        }
        conf_sum += conf;
        // Bin i holds confidences in (i/B, (i+1)/B]; a confidence of exactly 0 goes to bin 0.
        let b = ((conf * bins as f64).ceil() as usize)
            .saturating_sub(1)
            .min(bins - 1);
        bin_n[b] += 1;
        bin_conf[b] += conf;
        bin_acc[b] += if best == t { 1.0 } else { 0.0 };
    }
    let n = targets.len() as f64;
    let ece = (0..bins)
        .filter(|&b| bin_n[b] > 0)
        .map(|b| {
            let nb = bin_n[b] as f64;
            (bin_acc[b] / nb - bin_conf[b] / nb).abs() * nb / n
        })
        .sum();
    Ok(UncertaintyMetrics {
        mean_entropy: ent / n,
        mean_confidence: conf_sum / n,
        ece,
        bins,
    })
}
