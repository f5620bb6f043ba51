//! Models written for burn-train (feature `burn-train`): [`BurnTrainModel`] lets a model that
//! implements burn-train's [`TrainStep`] and [`InferenceStep`] be trained by
//! [`TrainingManager::fit`](crate::TrainingManager::fit).
//!
//! What burn-train's `Learner` calls, the manager calls too: [`TrainStep::step`] for every training
//! micro-batch (the model runs its own backward), [`TrainStep::optimize`] for every update, and
//! [`InferenceStep::step`] on `model.valid()` for validation. The manager adds what it does for
//! any model: averaging over accumulated micro-batches (burn-train sums them), global-norm or value
//! clipping, its schedules, early stopping, checkpoints and resume, logging.
//!
//! Mixed precision needs the loss before backward (to cast and scale it), which `TrainStep::step`
//! does not give out: with `mixed_precision` on, wrap the model with
//! [`BurnTrainModel::with_inference_loss`], which trains from the loss of
//! [`InferenceStep::step`] run on the autodiff model (the same forward as validation; whatever
//! `TrainStep::step` adds beyond `loss.backward()` is then not run).
//!
//! Outputs convert through [`IntoStepOutput`], implemented for burn-train's
//! [`ClassificationOutput`] (accuracy is reported), [`RegressionOutput`],
//! [`MultiLabelClassificationOutput`] and [`SequenceOutput`] (loss only); implement it for your
//! own output type.
//!
//! ```no_run
//! use exptrack_trainer::{BatchSource, BurnTrainModel, TrainModel, TrainingConfig, TrainingManager};
//!
//! /// Trains `model`, a burn-train model (`TrainStep` + `InferenceStep`), with exptrack's loop.
//! fn train<M, S>(config: TrainingConfig, model: M, train: &S, valid: &S) -> exptrack_trainer::Result<M>
//! where
//!     BurnTrainModel<M>: TrainModel,
//!     S: BatchSource<Batch = <BurnTrainModel<M> as TrainModel>::Batch>,
//! {
//!     let mut manager = TrainingManager::new(config)?;
//!     let (trained, result) = manager.fit(BurnTrainModel::new(model), train, valid)?;
//!     println!("best {} = {:?} at step {:?}", result.monitor, result.best_metric, result.best_step);
//!     Ok(trained.into_inner())
//! }
//! ```

use burn::module::{Module, ModuleMapper, ModuleVisitor};
use burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::Device;
use burn::train::{
    ClassificationOutput, InferenceStep, MultiLabelClassificationOutput, RegressionOutput,
    SequenceOutput, TrainStep,
};

use crate::model::{ModelOutput, StepOutput, TrainModel, TrainStepOutput};

/// Converts a burn-train step output into the trainer's [`StepOutput`].
pub trait IntoStepOutput {
    /// The loss, the outputs to score and the number of items.
    fn into_step_output(self) -> StepOutput;
}

impl IntoStepOutput for StepOutput {
    fn into_step_output(self) -> StepOutput {
        self
    }
}

impl IntoStepOutput for ClassificationOutput {
    fn into_step_output(self) -> StepOutput {
        StepOutput {
            num_items: self.targets.dims()[0],
            loss: self.loss,
            output: ModelOutput::Classification {
                logits: self.output,
                targets: self.targets,
            },
        }
    }
}

impl IntoStepOutput for RegressionOutput {
    fn into_step_output(self) -> StepOutput {
        StepOutput {
            num_items: self.output.dims()[0],
            loss: self.loss,
            output: ModelOutput::Regression {
                predictions: self.output,
                targets: self.targets,
            },
        }
    }
}

impl IntoStepOutput for MultiLabelClassificationOutput {
    fn into_step_output(self) -> StepOutput {
        StepOutput {
            num_items: self.output.dims()[0],
            loss: self.loss,
            output: ModelOutput::None,
        }
    }
}

impl IntoStepOutput for SequenceOutput {
    fn into_step_output(self) -> StepOutput {
        StepOutput {
            num_items: self.logits.dims()[0],
            loss: self.loss,
            output: ModelOutput::None,
        }
    }
}

/// A burn-train model (`TrainStep` + `InferenceStep` on the same input type) as a
/// [`TrainModel`]. The wrapper is transparent to burn: it has the inner model's parameters under
/// the same paths, so checkpoints load into the unwrapped model and back.
#[derive(Debug, Clone)]
pub struct BurnTrainModel<M> {
    model: M,
    inference_loss: bool,
}

impl<M> BurnTrainModel<M> {
    /// Trains through the model's own `TrainStep::step` and `TrainStep::optimize` (mixed precision
    /// is refused; see [`with_inference_loss`](Self::with_inference_loss)).
    pub fn new(model: M) -> Self {
        BurnTrainModel {
            model,
            inference_loss: false,
        }
    }

    /// Trains from the loss of `InferenceStep::step` run on the autodiff model, so the manager
    /// can scale it for mixed precision; `TrainStep::step` is not called, `TrainStep::optimize`
    /// still is.
    pub fn with_inference_loss(model: M) -> Self {
        BurnTrainModel {
            model,
            inference_loss: true,
        }
    }

    /// The wrapped model.
    pub fn inner(&self) -> &M {
        &self.model
    }

    /// Unwraps the model.
    pub fn into_inner(self) -> M {
        self.model
    }

    fn with(self, f: impl FnOnce(M) -> M) -> Self {
        BurnTrainModel {
            model: f(self.model),
            inference_loss: self.inference_loss,
        }
    }
}

impl<M: Module> Module for BurnTrainModel<M> {
    fn collect_devices(&self, devices: Vec<Device>) -> Vec<Device> {
        self.model.collect_devices(devices)
    }
    fn fork(self, device: &Device) -> Self {
        self.with(|m| m.fork(device))
    }
    fn to_device(self, device: &Device) -> Self {
        self.with(|m| m.to_device(device))
    }
    fn train(self) -> Self {
        self.with(Module::train)
    }
    fn valid(&self) -> Self {
        BurnTrainModel {
            model: self.model.valid(),
            inference_loss: self.inference_loss,
        }
    }
    fn materialize(self) -> Self {
        self.with(Module::materialize)
    }
    fn visit<V: ModuleVisitor>(&self, visitor: &mut V) {
        self.model.visit(visitor)
    }
    fn map<Mp: ModuleMapper>(self, mapper: &mut Mp) -> Self {
        self.with(|m| m.map(mapper))
    }
}

impl<M, B> TrainModel for BurnTrainModel<M>
where
    M: TrainStep<Input = B> + InferenceStep<Input = B> + Module + 'static,
    <M as TrainStep>::Output: IntoStepOutput,
    <M as InferenceStep>::Output: IntoStepOutput,
{
    type Batch = B;

    fn step(&self, batch: B) -> StepOutput {
        InferenceStep::step(&self.model, batch).into_step_output()
    }

    fn train_step(&self, batch: B) -> TrainStepOutput {
        if self.inference_loss {
            return TrainStepOutput::Loss(self.step(batch));
        }
        let out = TrainStep::step(&self.model, batch);
        let mut output = out.item.into_step_output();
        output.loss = output.loss.detach(); // its graph went into `out.grads`
        TrainStepOutput::Gradients {
            grads: out.grads,
            output,
        }
    }

    fn optimize(self, optim: &mut ModuleOptimizer, lr: f64, grads: GradientsParams) -> Self {
        let inference_loss = self.inference_loss;
        BurnTrainModel {
            model: self
                .model
                .optimize(optim, ModuleLearningRate::from(lr), grads),
            inference_loss,
        }
    }
}
