//! Evaluation: classification (accuracy, precision/recall/F1 macro and weighted, confusion
//! matrix, a classification report in scikit-learn's `output_dict` shape), regression (MSE, MAE,
//! RMSE, R²) and uncertainty (mean entropy, mean confidence, expected calibration error)
//! metrics, an [`Evaluator`] that runs a model over a dataset and logs under
//! `eval/<name>/...`, and a K-fold cross-validation helper.

use burn::tensor::{FloatDType, activation::softmax};
use serde::{Deserialize, Serialize};

use crate::data::{BatchContext, BatchSource};
use crate::error::{Error, Result};
use crate::logging::MetricSink;
use crate::model::{ModelOutput, TrainModel};

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

/// Everything an [`Evaluator`] computed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationReport {
    /// The dataset name (`eval/<name>/...`).
    pub name: String,
    /// Mean loss over items.
    pub loss: f64,
    /// For classification outputs.
    pub classification: Option<ClassificationMetrics>,
    /// For classification outputs (from the softmax of the logits).
    pub uncertainty: Option<UncertaintyMetrics>,
    /// For regression outputs.
    pub regression: Option<RegressionMetrics>,
}

impl EvaluationReport {
    /// All scalars with the `eval/<name>/` prefix.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let p = format!("eval/{}/", self.name);
        let mut out = vec![(format!("{p}loss"), self.loss)];
        if let Some(c) = &self.classification {
            out.extend(c.scalars().into_iter().map(|(k, v)| (format!("{p}{k}"), v)));
        }
        if let Some(u) = &self.uncertainty {
            out.push((format!("{p}mean_entropy"), u.mean_entropy));
            out.push((format!("{p}mean_confidence"), u.mean_confidence));
            out.push((format!("{p}ece"), u.ece));
        }
        if let Some(r) = &self.regression {
            out.push((format!("{p}mse"), r.mse));
            out.push((format!("{p}mae"), r.mae));
            out.push((format!("{p}rmse"), r.rmse));
            out.push((format!("{p}r2"), r.r2));
        }
        out
    }

    /// Logs the scalars at `step`, and the classification report as JSON text under
    /// `eval/<name>/classification_report`.
    pub fn log(&self, sink: &dyn MetricSink, step: u64) -> Result<()> {
        sink.log_metrics(step, &self.scalars())?;
        if let Some(c) = &self.classification {
            sink.log_text(
                step,
                &format!("eval/{}/classification_report", self.name),
                &c.report_json(None).to_string(),
            )?;
        }
        Ok(())
    }
}

/// Runs a model over a dataset and computes the metrics its outputs allow.
#[derive(Debug, Clone)]
pub struct Evaluator {
    name: String,
    batch_size: usize,
    ece_bins: usize,
}

impl Evaluator {
    /// An evaluator for the dataset called `name` (batch size 256, 15 ECE bins).
    pub fn new(name: impl Into<String>) -> Self {
        Evaluator {
            name: name.into(),
            batch_size: 256,
            ece_bins: 15,
        }
    }

    /// Sets the batch size.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }

    /// Sets the number of ECE bins.
    pub fn ece_bins(mut self, n: usize) -> Self {
        self.ece_bins = n.max(1);
        self
    }

    /// Evaluates `model` (in validation mode, f32) on `data` on `device`.
    pub fn evaluate<M, S>(
        &self,
        model: &M,
        data: &S,
        device: &burn::tensor::Device,
    ) -> Result<EvaluationReport>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        let m = model.valid();
        let ctx = BatchContext {
            device: device.clone().without_autodiff(),
            float_dtype: FloatDType::F32,
        };
        let (mut loss_sum, mut items) = (0.0, 0usize);
        let (mut preds, mut targets, mut probs) = (Vec::new(), Vec::new(), Vec::new());
        let (mut reg_p, mut reg_t) = (Vec::new(), Vec::new());
        let mut num_classes = 0;
        let mut start = 0;
        while start < data.len() {
            let end = (start + self.batch_size).min(data.len());
            let idx: Vec<usize> = (start..end).collect();
            let out = m.step(data.batch(&idx, &ctx)?);
            let loss = to_f64(out.loss)?;
            loss_sum += loss.first().copied().unwrap_or(f64::NAN) * out.num_items as f64;
            items += out.num_items;
            match out.output {
                ModelOutput::Classification { logits, targets: t } => {
                    let [_, c] = logits.dims();
                    num_classes = c;
                    let p = to_f64(softmax(logits.cast(FloatDType::F32), 1))?;
                    for row in p.chunks(c.max(1)) {
                        let arg = row
                            .iter()
                            .enumerate()
                            .fold(
                                (0, f64::NEG_INFINITY),
                                |acc, (i, &v)| {
                                    if v > acc.1 { (i, v) } else { acc }
                                },
                            )
                            .0;
                        preds.push(arg);
                    }
                    probs.extend(p);
                    let tv = t
                        .into_data()
                        .convert::<i64>()
                        .try_into_vec::<i64>()
                        .map_err(|e| Error::Readback(format!("{e:?}")))?;
                    targets.extend(tv.into_iter().map(|v| v.max(0) as usize));
                }
                ModelOutput::Regression {
                    predictions,
                    targets: t,
                } => {
                    reg_p.extend(to_f64(predictions)?);
                    reg_t.extend(to_f64(t)?);
                }
                ModelOutput::None => {}
            }
            start = end;
        }
        let classification = if preds.is_empty() {
            None
        } else {
            Some(classification_metrics(&preds, &targets, num_classes)?)
        };
        let uncertainty = if preds.is_empty() {
            None
        } else {
            Some(uncertainty_metrics(
                &probs,
                num_classes,
                &targets,
                self.ece_bins,
            )?)
        };
        let regression = if reg_p.is_empty() {
            None
        } else {
            Some(regression_metrics(&reg_p, &reg_t)?)
        };
        Ok(EvaluationReport {
            name: self.name.clone(),
            loss: loss_sum / items.max(1) as f64,
            classification,
            uncertainty,
            regression,
        })
    }
}

fn to_f64<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f64>> {
    let v = t
        .cast(FloatDType::F32)
        .try_into_data()
        .map_err(|e| Error::Readback(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// scikit-learn `KFold` splits: `(train, valid)` index lists; the first `n % k` folds get one
/// extra item; with `shuffle` the indices are permuted with `seed` first.
pub fn kfold_indices(
    n: usize,
    k: usize,
    seed: u64,
    shuffle: bool,
) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 || k > n {
        return Err(Error::Config(format!(
            "K-fold needs 2 <= k <= n, got k = {k}, n = {n}"
        )));
    }
    let order = crate::data::epoch_order(n, seed, 0, shuffle);
    let mut folds = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        let valid: Vec<usize> = order[start..start + size].to_vec();
        let train: Vec<usize> = order[..start]
            .iter()
            .chain(&order[start + size..])
            .copied()
            .collect();
        folds.push((train, valid));
        start += size;
    }
    Ok(folds)
}

/// Per-fold metrics with their mean and (population) standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidationResult {
    /// Each fold's metrics.
    pub folds: Vec<Vec<(String, f64)>>,
    /// Mean per metric (over folds that reported it).
    pub mean: Vec<(String, f64)>,
    /// Population standard deviation per metric.
    pub std: Vec<(String, f64)>,
}

impl CrossValidationResult {
    /// Mean and std of a metric.
    pub fn summary(&self, key: &str) -> Option<(f64, f64)> {
        let m = self.mean.iter().find(|(k, _)| k == key)?.1;
        let s = self.std.iter().find(|(k, _)| k == key)?.1;
        Some((m, s))
    }

    /// Logs `cv/fold<i>/<metric>`, `cv/mean/<metric>` and `cv/std/<metric>` at step 0.
    pub fn log(&self, sink: &dyn MetricSink) -> Result<()> {
        let mut all = Vec::new();
        for (i, f) in self.folds.iter().enumerate() {
            all.extend(f.iter().map(|(k, v)| (format!("cv/fold{i}/{k}"), *v)));
        }
        all.extend(self.mean.iter().map(|(k, v)| (format!("cv/mean/{k}"), *v)));
        all.extend(self.std.iter().map(|(k, v)| (format!("cv/std/{k}"), *v)));
        sink.log_metrics(0, &all)
    }
}

/// Runs `run_fold(fold, train_indices, valid_indices)` for each of `k` folds and aggregates
/// the metrics it returns.
pub fn cross_validate<F>(
    n: usize,
    k: usize,
    seed: u64,
    mut run_fold: F,
) -> Result<CrossValidationResult>
where
    F: FnMut(usize, &[usize], &[usize]) -> Result<Vec<(String, f64)>>,
{
    let mut folds = Vec::with_capacity(k);
    for (i, (train, valid)) in kfold_indices(n, k, seed, true)?.iter().enumerate() {
        folds.push(run_fold(i, train, valid)?);
    }
    let mut keys: Vec<String> = Vec::new();
    for f in &folds {
        for (key, _) in f {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    let mut mean = Vec::new();
    let mut std = Vec::new();
    for key in keys {
        let vals: Vec<f64> = folds
            .iter()
            .filter_map(|f| f.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
        mean.push((key.clone(), m));
        std.push((key, var.sqrt()));
    }
    Ok(CrossValidationResult { folds, mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} vs {b}");
    }

    #[test]
    fn classification_matches_hand_computation() {
        // targets 0 0 0 1 1 2 ; preds 0 0 1 1 2 2
        // class0: tp2 fp0 fn1 -> p 1, r 2/3, f1 0.8; support 3
        // class1: tp1 fp1 fn1 -> p .5, r .5, f1 .5; support 2
        // class2: tp1 fp1 fn0 -> p .5, r 1, f1 2/3; support 1
        let m = classification_metrics(&[0, 0, 1, 1, 2, 2], &[0, 0, 0, 1, 1, 2], 3).unwrap();
        close(m.accuracy, 4.0 / 6.0);
        close(m.precision_macro, (1.0 + 0.5 + 0.5) / 3.0);
        close(m.recall_macro, (2.0 / 3.0 + 0.5 + 1.0) / 3.0);
        close(m.f1_macro, (0.8 + 0.5 + 2.0 / 3.0) / 3.0);
        close(m.precision_weighted, (3.0 * 1.0 + 2.0 * 0.5 + 0.5) / 6.0);
        close(m.recall_weighted, (3.0 * 2.0 / 3.0 + 2.0 * 0.5 + 1.0) / 6.0);
        close(m.f1_weighted, (3.0 * 0.8 + 2.0 * 0.5 + 2.0 / 3.0) / 6.0);
        assert_eq!(
            m.confusion,
            vec![vec![2, 1, 0], vec![0, 1, 1], vec![0, 0, 1]]
        );
        let r = m.report_json(Some(&["a".into(), "b".into(), "c".into()]));
        close(r["a"]["f1-score"].as_f64().unwrap(), 0.8);
        assert_eq!(r["c"]["support"], 1);
        close(r["accuracy"].as_f64().unwrap(), 4.0 / 6.0);
        assert_eq!(r["macro avg"]["support"], 6);
    }

    #[test]
    fn absent_classes_are_left_out_and_zero_division_is_zero() {
        // class 2 never occurs nor is predicted: excluded from the macro average.
        // class 1 is never predicted: precision 0.
        let m = classification_metrics(&[0, 0], &[0, 1], 3).unwrap();
        assert_eq!(m.per_class.len(), 2);
        close(m.precision_macro, (0.5 + 0.0) / 2.0);
        close(m.recall_macro, (1.0 + 0.0) / 2.0);
        assert!(classification_metrics(&[0], &[3], 3).is_err());
    }

    #[test]
    fn regression_matches_hand_computation() {
        // errors: 0.5, -0.5, 0, 1 ; targets mean 2.5, ss_tot = 2.25+.25+.25+2.25 = 5
        let m = regression_metrics(&[1.5, 1.5, 3.0, 5.0], &[1.0, 2.0, 3.0, 4.0]).unwrap();
        close(m.mse, (0.25 + 0.25 + 0.0 + 1.0) / 4.0);
        close(m.mae, 2.0 / 4.0);
        close(m.rmse, (1.5f64 / 4.0).sqrt());
        close(m.r2, 1.0 - 1.5 / 5.0);
        close(regression_metrics(&[2.0], &[2.0]).unwrap().r2, 1.0);
    }

    #[test]
    fn uncertainty_matches_hand_computation() {
        // 4 items, 2 classes, 2 bins: (0, .5], (.5, 1]
        // item: probs        conf  pred target correct
        // 0:   [.9 .1]       .9    0    0      1
        // 1:   [.8 .2]       .8    0    1      0
        // 2:   [.4 .6]       .6    1    1      1
        // 3:   [.5 .5]       .5    0    0      1   -> bin 0 (conf exactly .5)
        let p = [0.9, 0.1, 0.8, 0.2, 0.4, 0.6, 0.5, 0.5];
        let m = uncertainty_metrics(&p, 2, &[0, 1, 1, 0], 2).unwrap();
        let h = |a: f64, b: f64| -(a * a.ln() + b * b.ln());
        close(
            m.mean_entropy,
            (h(0.9, 0.1) + h(0.8, 0.2) + h(0.4, 0.6) + h(0.5, 0.5)) / 4.0,
        );
        close(m.mean_confidence, (0.9 + 0.8 + 0.6 + 0.5) / 4.0);
        // bin1: n=3, acc 2/3, conf 2.3/3 ; bin0: n=1, acc 1, conf .5
        let ece = (2.0 / 3.0 - 2.3 / 3.0f64).abs() * 3.0 / 4.0 + (1.0f64 - 0.5).abs() / 4.0;
        close(m.ece, ece);
    }

    #[test]
    fn kfold_splits_like_sklearn_and_aggregates() {
        let folds = kfold_indices(10, 3, 0, false).unwrap();
        let sizes: Vec<usize> = folds.iter().map(|(_, v)| v.len()).collect();
        assert_eq!(sizes, vec![4, 3, 3]);
        assert_eq!(folds[1].1, vec![4, 5, 6]);
        assert_eq!(folds[1].0, vec![0, 1, 2, 3, 7, 8, 9]);
        let cv = cross_validate(10, 3, 1, |i, train, valid| {
            assert_eq!(train.len() + valid.len(), 10);
            Ok(vec![("acc".into(), [0.5, 0.7, 0.9][i])])
        })
        .unwrap();
        let (m, s) = cv.summary("acc").unwrap();
        close(m, 0.7);
        close(s, (0.08f64 / 3.0).sqrt());
        assert!(kfold_indices(3, 4, 0, false).is_err());
    }
}
