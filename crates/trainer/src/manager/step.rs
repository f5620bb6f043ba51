//! The loop's step and log: one optimizer step and the periodic training metrics.

use std::time::Instant;

use burn::optim::GradientsParams;
use burn::tensor::{DType, FloatDType, Tensor};

use super::{Loop, StepStats, TrainingManager, mix};
use crate::amp::cast_module;
use crate::config::ClippingKind;
use crate::data::BatchSource;
use crate::error::{Error, Result};
use crate::grads::{self, clip_coefficient, read_scalars};
use crate::model::{TrainModel, TrainStepOutput};

impl TrainingManager {
    /// Step: one optimizer step over up to `gradient_accumulation_steps` micro-batches (loss
    /// scaling, accumulation, one host readback, clipping, the schedule), and its accounting.
    pub(super) fn step<M, S>(
        &self,
        mut model: M,
        lp: &mut Loop<M>,
        train: &S,
        batches: &[&[usize]],
    ) -> Result<(M, StepStats)>
    where
        M: TrainModel,
        S: BatchSource<Batch = M::Batch>,
    {
        let cfg = &self.config;
        let amp = cfg.mixed_precision.dtype();
        let k = cfg.gradient_accumulation_steps;
        let st = &mut lp.st;
        self.device.seed(mix(cfg.seed ^ mix(st.step)));
        let scale = st.scaler.as_ref().map(|s| s.scale).unwrap_or(1.0);
        let inject = self.inject_nonfinite.contains(&st.step);
        let mut loss_sum: Option<Tensor<1>> = None;
        let mut single: Option<GradientsParams> = None;
        let mut items = 0usize;
        let end = (st.position + k).min(batches.len());
        for idx in &batches[st.position..end] {
            let batch = train.batch(idx, &lp.train_ctx)?;
            let out = match amp {
                Some(d) => cast_module(model.clone(), d).train_step(batch),
                None => model.train_step(batch),
            };
            let (out, own_grads) = match out {
                TrainStepOutput::Loss(out) => (out, None),
                TrainStepOutput::Gradients { .. } if amp.is_some() => {
                    return Err(Error::Config(format!(
                        "mixed_precision = \"{}\" needs the loss before backward to scale \
                         it, but this model computes its own gradients (e.g. burn-train's \
                         TrainStep); use mixed_precision = \"off\", or train it from its \
                         loss (BurnTrainModel::with_inference_loss, or TrainModel::step)",
                        cfg.mixed_precision.name()
                    )));
                }
                TrainStepOutput::Gradients { grads, output } => (output, Some(grads)),
            };
            items += out.num_items;
            let loss = if out.loss.dtype() == DType::F32 {
                out.loss
            } else {
                out.loss.cast(FloatDType::F32)
            };
            let loss = if loss.dims() == [1] {
                loss
            } else {
                loss.reshape([1])
            };
            let g = match own_grads {
                Some(g) => g,
                None => {
                    let mut scaled = if scale != 1.0 {
                        loss.clone().mul_scalar(scale)
                    } else {
                        loss.clone()
                    };
                    if inject {
                        scaled = scaled.mul_scalar(f32::INFINITY);
                    }
                    GradientsParams::from_grads(scaled.backward(), &model)
                }
            };
            if k == 1 {
                single = Some(g);
            } else {
                lp.acc.add(&model, g);
            }
            let l = if k == 1 { loss } else { loss.detach() };
            loss_sum = Some(match loss_sum {
                Some(s) => s.add(l),
                None => l,
            });
        }
        // With k = 1 the accumulator (a visit of every parameter) is skipped.
        let (grads, n_micro) = match single.take() {
            Some(g) => (g, 1),
            None => lp.acc.take_sum(),
        };
        let inv = 1.0 / (n_micro as f64 * scale);
        let need_norm = amp.is_some() || cfg.gradient_clipping == ClippingKind::Norm;
        // ONE host readback per step: [loss sum, squared grad norm (when needed)].
        let loss_t = loss_sum.ok_or_else(|| Error::Data("empty step".into()))?;
        let readback = match (need_norm, grads::squared_norm(&model, &grads)) {
            (true, Some(sq)) => Tensor::cat(vec![loss_t, sq], 0),
            _ => loss_t,
        };
        let vals = read_scalars(readback)?;
        let step_loss = vals.first().copied().unwrap_or(f64::NAN) / n_micro as f64;
        let grad_norm = vals.get(1).map(|sq| sq.sqrt() * inv);
        let finite = grad_norm.is_none_or(f64::is_finite);
        let take_step = match st.scaler.as_mut() {
            Some(s) => s.update(finite),
            None => true,
        };
        // A skipped step does not advance the schedule (see `TrainingConfig::mixed_precision`).
        let lr = if take_step {
            lp.schedule.next_lr()
        } else {
            lp.schedule.peek_lr()
        };
        if take_step {
            let mut factor = inv;
            if let (ClippingKind::Norm, Some(norm)) = (cfg.gradient_clipping, grad_norm) {
                factor *= clip_coefficient(norm, cfg.max_grad_norm);
            }
            let grads = match cfg.gradient_clipping {
                ClippingKind::Value => {
                    grads::scale_and_clamp(&model, grads, factor, cfg.max_grad_norm)
                }
                _ => grads::scale(&model, grads, factor),
            };
            model = model.optimize(&mut lp.optim, lr, grads);
        }
        st.step += 1;
        st.position = end;
        if step_loss.is_finite() || amp.is_none() {
            st.window_loss += step_loss;
            st.eval_loss += step_loss;
        }
        st.window_steps += 1;
        st.eval_steps += 1;
        st.window_items += items as u64;

        let check_finite = cfg.early_stopping.as_ref().is_some_and(|e| e.check_finite);
        if check_finite && !step_loss.is_finite() && amp.is_none() {
            st.stopped_early = true;
            st.stop_reason = Some(format!("training loss is {step_loss} at step {}", st.step));
        }
        Ok((model, StepStats { lr, grad_norm }))
    }

    /// Log: every `log_frequency` steps, the window's mean loss, the rate, throughput, epoch,
    /// loss scale and gradient norm, to the sink and the progress display.
    pub(super) fn log_step<M>(&self, lp: &mut Loop<M>, stats: &StepStats) -> Result<()> {
        let st = &mut lp.st;
        if !st.step.is_multiple_of(self.config.log_frequency) {
            lp.progress.step(st.step, String::new, false);
            return Ok(());
        }
        let elapsed = lp.window_start.elapsed().as_secs_f64().max(1e-9);
        let mean = st.window_loss / st.window_steps.max(1) as f64;
        let ips = st.window_items as f64 / elapsed;
        let lr = stats.lr;
        let mut m = vec![
            ("train/loss".to_owned(), mean),
            ("train/lr".to_owned(), lr),
            ("train/items_per_sec".to_owned(), ips),
            ("train/epoch".to_owned(), st.epoch as f64),
        ];
        if let Some(s) = &st.scaler {
            m.push(("train/loss_scale".to_owned(), s.scale));
        }
        if let Some(g) = stats.grad_norm {
            m.push(("train/grad_norm".to_owned(), g));
        }
        self.log(st.step, &m)?;
        let epochs = self.config.num_epochs;
        lp.progress.step(
            st.step,
            || {
                format!(
                    "epoch {}/{epochs} step {} loss {mean:.4} lr {lr:.3e} {ips:.0} items/s",
                    st.epoch + 1,
                    st.step
                )
            },
            true,
        );
        st.window_loss = 0.0;
        st.window_steps = 0;
        st.window_items = 0;
        lp.window_start = Instant::now();
        Ok(())
    }
}
