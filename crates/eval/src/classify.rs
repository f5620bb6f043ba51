//! Classification evaluation from class probabilities (feature `burn`): the trainer
//! [`Evaluator`](exptrack_trainer::eval::Evaluator)'s metrics (accuracy, precision/recall/F1 macro
//! and weighted, loss, entropy, confidence, ECE), the classification report, the confusion matrix
//! and the misclassified examples as images.

use std::path::{Path, PathBuf};

use exptrack_plot::{ConfusionMatrix, GridTile, confusion_matrix_png, example_grid_png};
use exptrack_trainer::eval::{EvaluationReport, classification_metrics, uncertainty_metrics};

use crate::data::TestSet;
use crate::error::{Error, Result};
use crate::model_dir::ModelSpec;

/// `classification_report.json`: per-class precision/recall/F1/support, `accuracy`, `macro avg`
/// and `weighted avg` (scikit-learn's `output_dict` shape).
pub const REPORT_FILE: &str = "classification_report.json";
/// The confusion matrix heat map.
pub const CONFUSION_FILE: &str = "confusion_matrix.png";
/// A grid of misclassified inputs with their true and predicted labels.
pub const MISCLASSIFIED_FILE: &str = "misclassified_examples.png";
/// Equal-width confidence bins of the expected calibration error (as the trainer's Evaluator).
pub const ECE_BINS: usize = 15;
/// At most this many misclassified examples are drawn.
pub const MAX_EXAMPLES: usize = 64;

/// Everything computed for one dataset from a model's (or an ensemble's) class probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassificationEvaluation {
    /// The metrics, as the trainer's Evaluator reports them (`eval/<name>/...` scalars).
    pub report: EvaluationReport,
    /// Predicted class per item (argmax of the probabilities).
    pub predictions: Vec<usize>,
    /// `[items, classes]` probabilities, row-major.
    pub probabilities: Vec<f64>,
    /// Number of classes.
    pub num_classes: usize,
}

impl ClassificationEvaluation {
    /// Scores `probabilities` (`[labels.len(), num_classes]`) against `labels` for the dataset
    /// called `name`. The loss is the mean negative log-likelihood of the true class (each
    /// probability floored at 1e-12).
    pub fn from_probabilities(
        name: &str,
        probabilities: Vec<f64>,
        num_classes: usize,
        labels: &[usize],
    ) -> Result<Self> {
        if num_classes == 0 || probabilities.len() != labels.len() * num_classes {
            return Err(Error::Evaluation {
                message: format!(
                    "{} probabilities for {} items of {num_classes} classes",
                    probabilities.len(),
                    labels.len()
                ),
                source: None,
            });
        }
        let predictions: Vec<usize> = probabilities
            .chunks_exact(num_classes)
            .map(argmax)
            .collect();
        let classification = classification_metrics(&predictions, labels, num_classes)
            .map_err(|e| Error::eval("classification metrics", e))?;
        let uncertainty = uncertainty_metrics(&probabilities, num_classes, labels, ECE_BINS)
            .map_err(|e| Error::eval("calibration metrics", e))?;
        let nll: f64 = probabilities
            .chunks_exact(num_classes)
            .zip(labels)
            .map(|(row, &t)| -row[t].max(1e-12).ln())
            .sum();
        let report = EvaluationReport {
            name: name.to_owned(),
            loss: nll / labels.len().max(1) as f64,
            classification: Some(classification),
            uncertainty: Some(uncertainty),
            regression: None,
        };
        Ok(ClassificationEvaluation {
            report,
            predictions,
            probabilities,
            num_classes,
        })
    }

    /// Accuracy.
    pub fn accuracy(&self) -> f64 {
        self.report
            .classification
            .as_ref()
            .map_or(f64::NAN, |c| c.accuracy)
    }

    /// Expected calibration error ([`ECE_BINS`] bins).
    pub fn ece(&self) -> f64 {
        self.report.uncertainty.as_ref().map_or(f64::NAN, |u| u.ece)
    }

    /// The scalars under `<prefix>/<name>/<metric>` (`prefix` `"eval"` gives the Evaluator's
    /// keys; ensembles use `"ensemble"`).
    pub fn scalars(&self, prefix: &str) -> Vec<(String, f64)> {
        let own = format!("eval/{}/", self.report.name);
        self.report
            .scalars()
            .into_iter()
            .map(|(k, v)| {
                let rest = k.strip_prefix(&own).unwrap_or(&k).to_owned();
                (format!("{prefix}/{}/{rest}", self.report.name), v)
            })
            .collect()
    }

    /// The classification report (see [`REPORT_FILE`]) with class names from `spec`, plus the
    /// calibration figures and the confusion matrix.
    pub fn report_json(&self, spec: &ModelSpec) -> serde_json::Value {
        let names: Vec<String> = (0..self.num_classes).map(|i| spec.class_name(i)).collect();
        let mut v = match &self.report.classification {
            Some(c) => c.report_json(Some(&names)),
            None => serde_json::json!({}),
        };
        if let (Some(obj), Some(u)) = (v.as_object_mut(), &self.report.uncertainty) {
            obj.insert(
                "calibration".into(),
                serde_json::json!({"ece": u.ece, "bins": u.bins,
                                   "mean_confidence": u.mean_confidence,
                                   "mean_entropy": u.mean_entropy, "loss": self.report.loss}),
            );
            if let Some(c) = &self.report.classification {
                obj.insert(
                    "confusion_matrix".into(),
                    serde_json::json!({"matrix": c.confusion, "labels": names}),
                );
            }
        }
        v
    }

    /// The confusion matrix as a PNG heat map.
    pub fn confusion_png(&self, spec: &ModelSpec, title: &str) -> Result<Vec<u8>> {
        let c = self
            .report
            .classification
            .as_ref()
            .ok_or_else(|| Error::Evaluation {
                message: "no classification metrics".into(),
                source: None,
            })?;
        let mut m = ConfusionMatrix::new(
            c.confusion
                .iter()
                .map(|r| r.iter().map(|&v| v as f64).collect())
                .collect(),
        );
        m.labels = (0..self.num_classes).map(|i| spec.class_name(i)).collect();
        confusion_matrix_png(&m, title, 720)
            .map_err(|e| Error::eval("drawing the confusion matrix", e))
    }

    /// Indices of the misclassified items, in order.
    pub fn misclassified(&self, labels: &[usize]) -> Vec<usize> {
        self.predictions
            .iter()
            .zip(labels)
            .enumerate()
            .filter(|(_, (p, t))| p != t)
            .map(|(i, _)| i)
            .collect()
    }

    /// A grid of (at most [`MAX_EXAMPLES`]) misclassified inputs of `data`, the true and the
    /// predicted label under each, as PNG.
    pub fn misclassified_png(
        &self,
        data: &TestSet,
        spec: &ModelSpec,
        title: &str,
    ) -> Result<Vec<u8>> {
        let wrong = self.misclassified(&data.labels);
        let tiles: Vec<GridTile> = wrong
            .iter()
            .take(MAX_EXAMPLES)
            .map(|&i| {
                GridTile::from_input(
                    data.item(i),
                    &spec.input_shape,
                    format!(
                        "#{i} true {} / pred {}",
                        spec.class_name(data.labels[i]),
                        spec.class_name(self.predictions[i])
                    ),
                )
            })
            .collect();
        let title = format!(
            "{title}: {} of {} misclassified{}",
            wrong.len(),
            data.len(),
            if wrong.len() > MAX_EXAMPLES {
                format!(" (first {MAX_EXAMPLES} shown)")
            } else {
                String::new()
            }
        );
        example_grid_png(&tiles, &title, 8).map_err(|e| Error::eval("drawing the examples", e))
    }

    /// Writes [`REPORT_FILE`], [`CONFUSION_FILE`] and [`MISCLASSIFIED_FILE`] into `dir`
    /// (created); returns their paths.
    pub fn write_artifacts(
        &self,
        dir: &Path,
        data: &TestSet,
        spec: &ModelSpec,
        title: &str,
    ) -> Result<Vec<PathBuf>> {
        std::fs::create_dir_all(dir).map_err(|source| Error::Io {
            op: "create directory",
            path: dir.to_owned(),
            source,
        })?;
        let report = serde_json::to_vec_pretty(&self.report_json(spec))
            .map_err(|e| Error::eval("serializing the report", e))?;
        let files = [
            (REPORT_FILE, report),
            (CONFUSION_FILE, self.confusion_png(spec, title)?),
            (
                MISCLASSIFIED_FILE,
                self.misclassified_png(data, spec, title)?,
            ),
        ];
        let mut out = Vec::new();
        for (name, bytes) in files {
            let path = dir.join(name);
            std::fs::write(&path, bytes).map_err(|source| Error::Io {
                op: "write",
                path: path.clone(),
                source,
            })?;
            out.push(path);
        }
        Ok(out)
    }
}

fn argmax(row: &[f64]) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f64::NEG_INFINITY), |best, (i, &p)| {
            if p > best.1 { (i, p) } else { best }
        })
        .0
}
