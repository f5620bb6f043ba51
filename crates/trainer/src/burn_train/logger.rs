//! burn-train [`MetricLogger`]s: [`TrackerLogger`] (write-only, to a [`MetricSink`]) and
//! [`MetricHistory`] (in memory, answers `read_numeric`), sharing one step counter.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use serde::{Deserialize, Serialize};

use crate::logging::MetricSink;

/// `train`, `valid` or `test` (a tagged test split is `test/<tag>`).
pub(crate) fn split_name(split: &Split) -> String {
    match split {
        Split::Train => "train".to_owned(),
        Split::Valid => "valid".to_owned(),
        Split::Test(None) => "test".to_owned(),
        Split::Test(Some(tag)) => format!("test/{}", metric_key(tag)),
    }
}

/// A burn-train metric name as a tracker key: lower case, spaces as `_` (`Learning Rate` →
/// `learning_rate`).
pub fn metric_key(name: &str) -> String {
    name.trim().to_lowercase().replace(' ', "_")
}

/// Running mean of one metric over one epoch of one split, plus burn-train's final value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Agg {
    /// Sum of `value × count` of the batch entries.
    pub(crate) sum: f64,
    /// Number of items behind `sum`.
    pub(crate) count: u64,
    /// The authoritative epoch value computed at the end of the split, if it came.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) last: Option<f64>,
}

impl Agg {
    fn add(&mut self, entry: &NumericEntry) {
        match entry {
            NumericEntry::Value(v) => {
                self.sum += v;
                self.count += 1;
            }
            NumericEntry::Aggregated {
                aggregated_value,
                count,
            } => {
                self.sum += aggregated_value * *count as f64;
                self.count += *count as u64;
            }
            NumericEntry::Final(v) => self.last = Some(*v),
        }
    }

    /// The epoch value: the final one, else the mean of the batches.
    pub(crate) fn value(&self) -> Option<f64> {
        self.last
            .or_else(|| (self.count > 0).then(|| self.sum / self.count as f64))
    }

    /// What burn-train's aggregator expects from `read_numeric`: it averages `Aggregated`
    /// entries and takes a trailing `Final` as the epoch's value.
    fn entries(&self) -> Vec<NumericEntry> {
        let mut out = Vec::with_capacity(2);
        if self.count > 0 {
            out.push(NumericEntry::Aggregated {
                aggregated_value: self.sum / self.count as f64,
                count: usize::try_from(self.count).unwrap_or(usize::MAX),
            });
        }
        if let Some(v) = self.last {
            out.push(NumericEntry::Final(v));
        }
        out
    }
}

/// One history row: `(split, burn-train metric name, epoch)` → aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct HistoryRow {
    pub(crate) split: String,
    pub(crate) metric: String,
    pub(crate) epoch: usize,
    #[serde(flatten)]
    pub(crate) agg: Agg,
}

/// Steps reached at the end of an epoch (after its validation).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpochMark {
    pub(crate) train_step: u64,
    pub(crate) valid_step: u64,
}

/// What the loggers and the checkpointer share.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// Training iterations logged so far, over all epochs and resumes.
    pub(crate) train_step: u64,
    /// Validation iterations logged so far.
    pub(crate) valid_step: u64,
    /// `(split, name, epoch)` → aggregate.
    pub(crate) history: BTreeMap<(String, String, usize), Agg>,
    /// Train step at the end of each epoch's training split.
    train_marks: BTreeMap<usize, u64>,
    /// Steps at the end of each epoch (its validation split done).
    pub(crate) marks: BTreeMap<usize, EpochMark>,
    /// Points the sink refused (the tracker was finished or failed).
    pub(crate) dropped: u64,
}

impl State {
    pub(crate) fn rows_up_to(&self, epoch: usize) -> Vec<HistoryRow> {
        self.history
            .iter()
            .filter(|((_, _, e), _)| *e <= epoch)
            .map(|((split, metric, e), agg)| HistoryRow {
                split: split.clone(),
                metric: metric.clone(),
                epoch: *e,
                agg: *agg,
            })
            .collect()
    }

    /// `split/metric_key → value` of one epoch (what a checkpoint records as its metrics).
    pub(crate) fn epoch_values(&self, epoch: usize) -> BTreeMap<String, f64> {
        self.history
            .iter()
            .filter(|((_, _, e), _)| *e == epoch)
            .filter_map(|((split, metric, _), agg)| {
                agg.value()
                    .map(|v| (format!("{split}/{}", metric_key(metric)), v))
            })
            .collect()
    }

    /// Seeds the state from a resumed checkpoint.
    pub(crate) fn restore(&mut self, mark: EpochMark, epoch: usize, rows: Vec<HistoryRow>) {
        self.train_step = mark.train_step;
        self.valid_step = mark.valid_step;
        self.marks.insert(epoch, mark);
        for r in rows {
            self.history.insert((r.split, r.metric, r.epoch), r.agg);
        }
    }
}

/// State shared by the loggers and the checkpointer, with a condition variable signalled at
/// every epoch end.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    state: Mutex<State>,
    epoch_done: Condvar,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain counters and maps: usable after a panic elsewhere.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits (at most `limit`) until epoch `epoch` has ended in the loggers.
    pub(crate) fn wait_epoch(&self, epoch: usize, limit: Duration) -> Option<EpochMark> {
        let guard = self.lock();
        let (guard, _) = self
            .epoch_done
            .wait_timeout_while(guard, limit, |s| !s.marks.contains_key(&epoch))
            .unwrap_or_else(|e| e.into_inner());
        guard.marks.get(&epoch).copied()
    }

    fn end_split(&self, summary: &EpochSummary) {
        let mut s = self.lock();
        let epoch = summary.epoch_number;
        match summary.split {
            Split::Train => {
                let step = s.train_step;
                s.train_marks.insert(epoch, step);
            }
            Split::Valid => {
                let train_step = s.train_marks.get(&epoch).copied().unwrap_or(s.train_step);
                let valid_step = s.valid_step;
                s.marks.insert(
                    epoch,
                    EpochMark {
                        train_step,
                        valid_step,
                    },
                );
                drop(s);
                self.epoch_done.notify_all();
            }
            Split::Test(_) => {}
        }
    }
}

/// The numeric value of an update entry: burn-train's numeric entry, else its serialized form.
fn numeric(entry: &Option<NumericEntry>, serialized: &str) -> Option<NumericEntry> {
    match entry {
        Some(e) => Some(e.clone()),
        None => NumericEntry::deserialize(serialized).ok(),
    }
}

/// Write-only burn-train [`MetricLogger`] that sends every numeric metric to a [`MetricSink`]
/// (an [`ExperimentTracker`](exptrack_core::ExperimentTracker), so every backend):
///
/// - each training iteration as `train/<name>` at the global training step (1, 2, 3, … over all
///   epochs and across a resume), each validation iteration as `valid/<name>` at the global
///   validation step;
/// - each split's epoch value (burn-train's final value) as `epoch/<split>/<name>` at step =
///   epoch number.
///
/// Metric names are lower-cased with spaces as `_` ([`metric_key`]): `Loss` → `train/loss`.
/// `log` runs on burn-train's event-store thread and only enqueues (the tracker writes on its
/// own threads), so burn-train never waits on tracking I/O. `read_numeric` answers `Err`:
/// register a [`MetricHistory`] beside it ([`Tracking::attach`](super::Tracking::attach) does).
pub struct TrackerLogger<S> {
    sink: S,
    shared: Arc<Shared>,
    names: HashMap<MetricId, String>,
}

impl<S> std::fmt::Debug for TrackerLogger<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackerLogger")
            .field("metrics", &self.names.len())
            .finish_non_exhaustive()
    }
}

impl<S: MetricSink> TrackerLogger<S> {
    /// A logger with its own step counters. To keep burn-train's metric-based checkpointing and
    /// early stopping working, register a logger that answers `read_numeric` before it
    /// ([`MetricHistory`] or burn-train's `FileMetricLogger`); [`Tracking::attach`](super::Tracking::attach)
    /// does both, and resumes the step counters.
    pub fn new(sink: S) -> Self {
        Self::with_shared(sink, Arc::new(Shared::default()))
    }

    pub(crate) fn with_shared(sink: S, shared: Arc<Shared>) -> Self {
        TrackerLogger {
            sink,
            shared,
            names: HashMap::new(),
        }
    }

    fn send(&self, step: u64, values: &[(String, f64)]) {
        if let Err(e) = self.sink.log_metrics(step, values) {
            let mut s = self.shared.lock();
            s.dropped += values.len() as u64;
            if s.dropped == values.len() as u64 {
                tracing::warn!(error = %e, "burn-train metrics could not be logged (further failures are counted, not logged)");
            }
        }
    }
}

impl<S: MetricSink + 'static> MetricLogger for TrackerLogger<S> {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let split_key = split_name(split);
        let mut values = Vec::with_capacity(update.entries_numeric.len());
        let mut is_final = false;
        for u in &update.entries_numeric {
            let Some(name) = self.names.get(&u.entry.metric_id) else {
                continue;
            };
            let Some(entry) = numeric(&u.numeric_entry, &u.entry.serialized_entry.serialized)
            else {
                continue;
            };
            is_final |= matches!(entry, NumericEntry::Final(_));
            values.push((metric_key(name), entry.current()));
        }
        if update.entries_numeric.is_empty() {
            return; // text metrics only: nothing numeric to log, and no way to tell the kind
        }
        if is_final {
            let values: Vec<(String, f64)> = values
                .into_iter()
                .map(|(k, v)| (format!("epoch/{split_key}/{k}"), v))
                .collect();
            if !values.is_empty() {
                self.send(epoch as u64, &values);
            }
            return;
        }
        let step = {
            let mut s = self.shared.lock();
            match split {
                Split::Train => {
                    s.train_step += 1;
                    s.train_step
                }
                Split::Valid => {
                    s.valid_step += 1;
                    s.valid_step
                }
                Split::Test(_) => return,
            }
        };
        let values: Vec<(String, f64)> = values
            .into_iter()
            .map(|(k, v)| (format!("{split_key}/{k}"), v))
            .collect();
        if !values.is_empty() {
            self.send(step, &values);
        }
    }

    fn read_numeric(
        &mut self,
        name: &str,
        _epoch: usize,
        _split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        Err(format!(
            "exptrack's TrackerLogger is write-only (no history of {name:?}): register a \
             MetricHistory beside it"
        ))
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id.clone(), definition.name.to_string());
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.shared.end_split(&summary);
    }
}

/// In-memory burn-train [`MetricLogger`] that answers `read_numeric` per epoch (what burn-train's
/// metric checkpointing and early stopping query) and logs nothing anywhere.
///
/// Unlike burn-train's `InMemoryMetricLogger`, it keys by the epoch number burn-train passes, so
/// it stays right after a resume, and [`Tracking`](super::Tracking) restores the history of the
/// epochs before the resume from the checkpoint: "best epoch by valid loss" is found over the
/// whole run. It keeps one running mean per metric, split and epoch (not every batch).
pub struct MetricHistory {
    shared: Arc<Shared>,
    names: HashMap<MetricId, String>,
}

impl std::fmt::Debug for MetricHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricHistory")
            .field("metrics", &self.names.len())
            .finish_non_exhaustive()
    }
}

impl Default for MetricHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl MetricHistory {
    /// An empty history.
    pub fn new() -> Self {
        Self::with_shared(Arc::new(Shared::default()))
    }

    pub(crate) fn with_shared(shared: Arc<Shared>) -> Self {
        MetricHistory {
            shared,
            names: HashMap::new(),
        }
    }
}

impl MetricLogger for MetricHistory {
    fn log(&mut self, update: MetricsUpdate, epoch: usize, split: &Split) {
        let split_key = split_name(split);
        let mut s = self.shared.lock();
        for u in &update.entries_numeric {
            let Some(name) = self.names.get(&u.entry.metric_id) else {
                continue;
            };
            let serialized = &u.entry.serialized_entry;
            if serialized.is_not_available() {
                continue;
            }
            // What burn-train's FileMetricLogger stores and reads back: the serialized entry.
            let Ok(entry) = NumericEntry::deserialize(&serialized.serialized) else {
                continue;
            };
            s.history
                .entry((split_key.clone(), name.clone(), epoch))
                .or_default()
                .add(&entry);
        }
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        let s = self.shared.lock();
        Ok(s.history
            .get(&(split_name(split), name.to_owned(), epoch))
            .map(Agg::entries)
            .unwrap_or_default())
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.names
            .insert(definition.metric_id.clone(), definition.name.to_string());
    }

    fn log_epoch_summary(&mut self, _summary: EpochSummary) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aggregate_gives_burn_train_the_batch_mean_and_the_final_value() {
        let mut a = Agg::default();
        a.add(&NumericEntry::Aggregated {
            aggregated_value: 1.0,
            count: 3,
        });
        a.add(&NumericEntry::Aggregated {
            aggregated_value: 3.0,
            count: 1,
        });
        a.add(&NumericEntry::Value(6.0));
        assert_eq!(a.value(), Some((3.0 + 3.0 + 6.0) / 5.0));
        a.add(&NumericEntry::Final(2.5));
        assert_eq!(a.value(), Some(2.5));
        let e = a.entries();
        assert!(matches!(e.last(), Some(NumericEntry::Final(v)) if *v == 2.5));
    }

    #[test]
    fn metric_names_become_keys() {
        assert_eq!(metric_key("Loss"), "loss");
        assert_eq!(metric_key("Learning Rate"), "learning_rate");
        assert_eq!(split_name(&Split::Valid), "valid");
    }
}
