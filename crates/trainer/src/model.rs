//! The small trait a model implements to be trained by the
//! [`TrainingManager`](crate::TrainingManager).

use burn::module::Module;
use burn::optim::{GradientsParams, ModuleOptimizer};
use burn::tensor::{Int, Tensor};

/// What a model returns for a batch.
#[derive(Debug, Clone)]
pub struct StepOutput {
    /// The mean loss over the batch (one element; any float dtype, the trainer casts to f32).
    pub loss: Tensor<1>,
    /// Outputs for metrics (validation accuracy, the [`Evaluator`](crate::eval::Evaluator)).
    pub output: ModelOutput,
    /// Items in the batch (for throughput and weighted means).
    pub num_items: usize,
}

impl StepOutput {
    /// The usual classification step: mean cross-entropy of `logits: [batch, classes]` against
    /// class indices `targets: [batch]`, with the logits kept for accuracy.
    pub fn classification(logits: Tensor<2>, targets: Tensor<1, Int>) -> Self {
        let num_items = targets.dims()[0];
        let loss = burn::nn::loss::CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), targets.clone());
        StepOutput {
            loss,
            num_items,
            output: ModelOutput::Classification { logits, targets },
        }
    }
}

/// Model outputs the trainer knows how to score.
#[derive(Debug, Clone)]
pub enum ModelOutput {
    /// `logits: [batch, classes]`, `targets: [batch]`: accuracy is reported.
    Classification {
        /// Unnormalized scores.
        logits: Tensor<2>,
        /// Class indices.
        targets: Tensor<1, Int>,
    },
    /// `predictions`, `targets`: `[batch, outputs]`.
    Regression {
        /// Predicted values.
        predictions: Tensor<2>,
        /// True values.
        targets: Tensor<2>,
    },
    /// Only the loss is reported.
    None,
}

/// A model the trainer can fit: it computes its loss and outputs for a batch.
///
/// The same method serves training and validation; in validation the trainer calls it on
/// `model.valid()` (no autodiff, training flags such as dropout off).
///
/// ```
/// use exptrack_trainer::burn::module::Module;
/// use exptrack_trainer::burn::nn::{Linear, LinearConfig};
/// use exptrack_trainer::device::parse_device;
/// use exptrack_trainer::{ClassificationBatch, StepOutput, TrainModel};
///
/// #[derive(Module, Debug)]
/// struct Classifier {
///     fc: Linear,
/// }
///
/// impl TrainModel for Classifier {
///     type Batch = ClassificationBatch<2>;
///     fn step(&self, batch: Self::Batch) -> StepOutput {
///         // Cross-entropy loss; the trainer reports `valid/accuracy` from the logits.
///         StepOutput::classification(self.fc.forward(batch.inputs), batch.targets)
///     }
/// }
///
/// # fn main() -> Result<(), exptrack_trainer::Error> {
/// let model = Classifier { fc: LinearConfig::new(4, 3).init(&parse_device("cpu")?) };
/// # let _ = model;
/// # Ok(()) }
/// ```
pub trait TrainModel: Module + 'static {
    /// The batch type (produced by a [`BatchSource`](crate::data::BatchSource)).
    type Batch;
    /// Forward pass and loss for one batch.
    fn step(&self, batch: Self::Batch) -> StepOutput;

    /// One training micro-batch. The default returns [`step`](Self::step)'s loss, which the
    /// trainer scales (mixed precision) and backpropagates. A model that computes its own
    /// gradients (burn-train's `TrainStep`, see the `burn-train` feature) returns
    /// [`TrainStepOutput::Gradients`] instead; the trainer then averages, clips and applies them
    /// as they are, which rules out mixed precision (its loss cannot be scaled before backward).
    fn train_step(&self, batch: Self::Batch) -> TrainStepOutput {
        TrainStepOutput::Loss(self.step(batch))
    }

    /// Applies one optimizer update with the (unscaled, averaged, clipped) gradients. The
    /// default is `optim.step(lr, self, grads)`; override it to act around the update (burn-train's
    /// `TrainStep::optimize`, e.g. clamping weights afterwards).
    fn optimize(self, optim: &mut ModuleOptimizer, lr: f64, grads: GradientsParams) -> Self {
        optim.step(lr, self, grads)
    }
}

/// What [`TrainModel::train_step`] returns.
#[derive(Debug)]
pub enum TrainStepOutput {
    /// The loss, still on the autodiff graph: the trainer scales and backpropagates it.
    Loss(StepOutput),
    /// Gradients the model computed itself from its unscaled loss, keyed by the parameters of
    /// the model `train_step` was called on; `output.loss` is only read for logging.
    Gradients {
        /// The gradients.
        grads: GradientsParams,
        /// Loss and outputs of the batch.
        output: StepOutput,
    },
}
