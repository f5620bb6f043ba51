//! The [`Evaluator`]: runs a model over a dataset and logs its metrics under `eval/<name>/...`.

use super::*;

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

pub(super) fn to_f64<const D: usize>(t: burn::tensor::Tensor<D>) -> Result<Vec<f64>> {
    let v = t
        .cast(FloatDType::F32)
        .try_into_data()
        .map_err(|e| Error::Readback(format!("{e:?}")))?
        .try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(v.into_iter().map(f64::from).collect())
}
