//! Where the trainer's metrics go: a [`MetricSink`], implemented for exptrack's
//! [`ExperimentTracker`](exptrack_core::ExperimentTracker) (so every backend receives them) and
//! for [`MemorySink`] (tests, in-process inspection).

use std::sync::{Arc, Mutex};

use exptrack_core::ParamValue;

use crate::error::{Error, Result};

/// Receives what the trainer logs.
pub trait MetricSink: Send + Sync {
    /// Scalar metrics at a global step.
    fn log_metrics(&self, step: u64, values: &[(String, f64)]) -> Result<()>;
    /// Hyperparameters (once per run).
    fn log_hyperparameters(&self, _params: &[(String, ParamValue)]) -> Result<()> {
        Ok(())
    }
    /// A text record (e.g. the classification report JSON).
    fn log_text(&self, _step: u64, _tag: &str, _text: &str) -> Result<()> {
        Ok(())
    }
    /// A final result (goes to the run's `results.json`).
    fn set_result(&self, _key: &str, _value: serde_json::Value) -> Result<()> {
        Ok(())
    }
    /// Makes what was logged so far durable before a checkpoint is committed (a crash after the
    /// commit must not lose the metrics the resumed run will not log again). Default: nothing.
    fn sync(&self) -> Result<()> {
        Ok(())
    }
    /// A committed checkpoint, by reference (location, step, files with sizes and hashes,
    /// metrics): what [`TrainingManager`](crate::TrainingManager) reports after each commit of its
    /// checkpointer, from the checkpointer's save thread. Default: nothing.
    fn report_checkpoint(&self, _report: exptrack_core::CheckpointReport) -> Result<()> {
        Ok(())
    }
}

fn tracking(e: exptrack_core::Error) -> Error {
    Error::Tracking {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

impl MetricSink for exptrack_core::ExperimentTracker {
    fn log_metrics(&self, step: u64, values: &[(String, f64)]) -> Result<()> {
        exptrack_core::ExperimentTracker::log_metrics(self, step, values).map_err(tracking)
    }
    fn log_hyperparameters(&self, params: &[(String, ParamValue)]) -> Result<()> {
        exptrack_core::ExperimentTracker::log_hyperparameters(self, params).map_err(tracking)
    }
    fn log_text(&self, step: u64, tag: &str, text: &str) -> Result<()> {
        exptrack_core::ExperimentTracker::log_text(self, step, tag, text).map_err(tracking)
    }
    fn set_result(&self, key: &str, value: serde_json::Value) -> Result<()> {
        exptrack_core::ExperimentTracker::set_result(self, key, value).map_err(tracking)
    }
    fn sync(&self) -> Result<()> {
        exptrack_core::ExperimentTracker::sync_log(self).map_err(tracking)
    }
    fn report_checkpoint(&self, report: exptrack_core::CheckpointReport) -> Result<()> {
        self.log_event(exptrack_core::Event::Checkpoint(report))
            .map_err(tracking)
    }
}

impl<T: MetricSink + ?Sized> MetricSink for Arc<T> {
    fn log_metrics(&self, step: u64, values: &[(String, f64)]) -> Result<()> {
        (**self).log_metrics(step, values)
    }
    fn log_hyperparameters(&self, params: &[(String, ParamValue)]) -> Result<()> {
        (**self).log_hyperparameters(params)
    }
    fn log_text(&self, step: u64, tag: &str, text: &str) -> Result<()> {
        (**self).log_text(step, tag, text)
    }
    fn sync(&self) -> Result<()> {
        (**self).sync()
    }
    fn set_result(&self, key: &str, value: serde_json::Value) -> Result<()> {
        (**self).set_result(key, value)
    }
    fn report_checkpoint(&self, report: exptrack_core::CheckpointReport) -> Result<()> {
        (**self).report_checkpoint(report)
    }
}

/// Everything logged, kept in memory.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    inner: Arc<Mutex<MemoryLog>>,
}

/// The contents of a [`MemorySink`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryLog {
    /// `(step, key, value)` in logging order.
    pub metrics: Vec<(u64, String, f64)>,
    /// Hyperparameters.
    pub params: Vec<(String, ParamValue)>,
    /// `(step, tag, text)`.
    pub texts: Vec<(u64, String, String)>,
    /// Results.
    pub results: Vec<(String, serde_json::Value)>,
    /// Reported checkpoints, in commit order.
    pub checkpoints: Vec<exptrack_core::CheckpointReport>,
}

impl MemorySink {
    /// An empty sink.
    pub fn new() -> Self {
        Self::default()
    }

    /// A copy of everything logged so far.
    pub fn snapshot(&self) -> MemoryLog {
        match self.inner.lock() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The values logged under `key`, as `(step, value)`.
    pub fn series(&self, key: &str) -> Vec<(u64, f64)> {
        self.snapshot()
            .metrics
            .into_iter()
            .filter(|(_, k, _)| k == key)
            .map(|(s, _, v)| (s, v))
            .collect()
    }

    fn with<R>(&self, f: impl FnOnce(&mut MemoryLog) -> R) -> R {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }
}

impl MetricSink for MemorySink {
    fn log_metrics(&self, step: u64, values: &[(String, f64)]) -> Result<()> {
        self.with(|l| {
            l.metrics
                .extend(values.iter().map(|(k, v)| (step, k.clone(), *v)))
        });
        Ok(())
    }
    fn log_hyperparameters(&self, params: &[(String, ParamValue)]) -> Result<()> {
        self.with(|l| l.params.extend_from_slice(params));
        Ok(())
    }
    fn log_text(&self, step: u64, tag: &str, text: &str) -> Result<()> {
        self.with(|l| l.texts.push((step, tag.to_owned(), text.to_owned())));
        Ok(())
    }
    fn set_result(&self, key: &str, value: serde_json::Value) -> Result<()> {
        self.with(|l| l.results.push((key.to_owned(), value)));
        Ok(())
    }
    fn report_checkpoint(&self, report: exptrack_core::CheckpointReport) -> Result<()> {
        self.with(|l| l.checkpoints.push(report));
        Ok(())
    }
}
