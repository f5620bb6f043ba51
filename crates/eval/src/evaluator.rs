//! What the user plugs in: one [`Evaluator`] per named dataset.

use std::collections::BTreeMap;

use exptrack_checkpoint::LoadedCheckpoint;

use crate::error::BoxError;

/// Named metric values one evaluator produced for one checkpoint (e.g. `accuracy`, `loss`,
/// `entropy`). They are logged as `eval/<dataset>/<metric>`.
pub type EvalMetrics = BTreeMap<String, f64>;

/// Evaluates one checkpoint on one dataset.
///
/// The checkpoint is loaded and verified (its recorded digest) once per step and shared by every dataset's
/// evaluator: its files are in [`LoadedCheckpoint::files`] (decompressed bytes) and its metadata
/// (step, epoch, metrics at save time, free-form `extra`) in [`LoadedCheckpoint::info`].
///
/// Closures `FnMut(&LoadedCheckpoint) -> Result<impl IntoIterator<Item = (impl Into<String>,
/// f64)>, impl Into<BoxError>>` are accepted directly by
/// [`EvalWatcherBuilder::dataset`](crate::EvalWatcherBuilder::dataset); implement this trait for
/// evaluators that keep state (a model already on a device, a data loader).
///
/// An `Err` (or a panic) fails the step for this attempt: nothing is logged for any dataset, and
/// the step is tried again on the next poll, up to
/// [`max_attempts`](crate::EvalWatcherBuilder::max_attempts).
pub trait Evaluator: Send {
    /// Returns the metrics of `checkpoint` on this evaluator's dataset.
    fn evaluate(&mut self, checkpoint: &LoadedCheckpoint) -> Result<EvalMetrics, BoxError>;
}

impl<E: Evaluator + ?Sized> Evaluator for Box<E> {
    fn evaluate(&mut self, checkpoint: &LoadedCheckpoint) -> Result<EvalMetrics, BoxError> {
        (**self).evaluate(checkpoint)
    }
}

/// Adapter from a closure with a flexible return type to [`Evaluator`].
pub(crate) struct FnEvaluator<F>(pub(crate) F);

impl<F> Evaluator for FnEvaluator<F>
where
    F: FnMut(&LoadedCheckpoint) -> Result<EvalMetrics, BoxError> + Send,
{
    fn evaluate(&mut self, checkpoint: &LoadedCheckpoint) -> Result<EvalMetrics, BoxError> {
        (self.0)(checkpoint)
    }
}
