//! The loop's evaluation: validation metrics, best tracking and early stopping.

use burn::tensor::{FloatDType, Tensor};

use super::{Loop, TrainingManager};
use crate::amp::cast_module;
use crate::config::Mode;
use crate::data::{BatchContext, BatchSource};
use crate::error::Result;
use crate::grads::read_scalars;
use crate::model::{ModelOutput, TrainModel};
use crate::result::EvalRecord;

impl TrainingManager {
    /// Evaluates `model` on `data` (no autodiff, compute dtype of the run): `valid/loss` (mean
    /// over items) and, for classification, `valid/accuracy`.
    pub fn validate<M, S>(&self, model: &M, data: &S) -> Result<Vec<(String, f64)>>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        let dtype = self.config.mixed_precision.dtype();
        let eval_model = model.valid();
        let eval_model = match dtype {
            Some(d) => cast_module(eval_model, d),
            None => eval_model,
        };
        let ctx = BatchContext {
            device: self.device.clone().without_autodiff(),
            float_dtype: dtype.unwrap_or(FloatDType::F32),
        };
        let n = data.len();
        let bs = self.config.batch_size;
        let (mut loss_sum, mut items, mut correct, mut is_cls) = (0.0, 0usize, 0.0, false);
        let mut start = 0;
        while start < n {
            let end = (start + bs).min(n);
            let idx: Vec<usize> = (start..end).collect();
            let out = eval_model.step(data.batch(&idx, &ctx)?);
            let nb = out.num_items.max(1);
            let loss = out.loss.cast(FloatDType::F32).reshape([1]);
            let vals = match out.output {
                ModelOutput::Classification { logits, targets } => {
                    is_cls = true;
                    let [b, _] = logits.dims();
                    let pred = logits.argmax(1).reshape([b]);
                    let hits = pred.equal(targets).float().cast(FloatDType::F32).sum();
                    read_scalars(Tensor::cat(vec![loss, hits], 0))?
                }
                _ => read_scalars(loss)?,
            };
            loss_sum += vals.first().copied().unwrap_or(f64::NAN) * nb as f64;
            correct += vals.get(1).copied().unwrap_or(0.0);
            items += nb;
            start = end;
        }
        let mut m = vec![("valid/loss".to_owned(), loss_sum / items.max(1) as f64)];
        if is_cls {
            m.push(("valid/accuracy".to_owned(), correct / items.max(1) as f64));
        }
        Ok(m)
    }

    /// Evaluate: validation metrics (logged with the epoch's mean training loss), the history,
    /// the plateau schedule, best tracking and early stopping.
    pub(super) fn evaluate<M, S>(&self, model: &M, lp: &mut Loop<M>, valid: &S) -> Result<()>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        let st = &mut lp.st;
        if st.last_eval_step == Some(st.step) {
            lp.last_valid = st
                .history
                .last()
                .map(|h| h.metrics.clone())
                .unwrap_or_default();
            return Ok(());
        }
        st.last_eval_step = Some(st.step);
        let metrics = if valid.is_empty() {
            Vec::new()
        } else {
            self.validate(model, valid)?
        };
        let train_loss = st.eval_loss / st.eval_steps.max(1) as f64;
        st.eval_loss = 0.0;
        st.eval_steps = 0;
        let mut logged = metrics.clone();
        logged.push(("train/epoch_loss".to_owned(), train_loss));
        self.log(st.step, &logged)?;
        st.history.push(EvalRecord {
            epoch: st.epoch,
            step: st.step,
            train_loss,
            metrics: metrics.clone(),
        });
        let monitor = lp.monitor.as_str();
        let value = metrics
            .iter()
            .find(|(k, _)| k == monitor)
            .map(|(_, v)| *v)
            .or_else(|| (monitor == "train/loss").then_some(train_loss));
        lp.last_valid = metrics;
        let Some(value) = value else {
            return Ok(());
        };
        if lp.schedule.wants_metric() {
            lp.schedule.observe(value);
        }
        let es = self.config.early_stopping.as_ref();
        let min_delta = es.map(|e| e.min_delta).unwrap_or(0.0);
        if es.is_some_and(|e| e.check_finite) && !value.is_finite() {
            st.stopped_early = true;
            st.stop_reason = Some(format!("{monitor} is {value} at step {}", st.step));
            return Ok(());
        }
        let improved = match (st.best, lp.mode) {
            (None, _) => value.is_finite(),
            (Some(b), Mode::Min) => value < b - min_delta,
            (Some(b), Mode::Max) => value > b + min_delta,
        };
        if improved {
            st.best = Some(value);
            st.best_epoch = Some(st.epoch);
            st.best_step = Some(st.step);
            st.bad_evals = 0;
            if self.restore_best() {
                lp.best_model = Some(model.clone());
            }
        } else {
            st.bad_evals += 1;
            if let Some(e) = es
                && st.bad_evals >= e.patience
            {
                st.stopped_early = true;
                st.stop_reason = Some(format!(
                    "{monitor} did not improve by more than {} for {} evaluations (best {:?} at step {:?})",
                    e.min_delta, st.bad_evals, st.best, st.best_step
                ));
            }
        }
        Ok(())
    }
}
