//! burn-train [`Checkpointer`]s that put the model, optimizer and LR scheduler records of an
//! epoch into one [`ModelCheckpointer`] checkpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use burn::tensor::Bytes;
use burn::train::checkpoint::{Checkpoint as Record, Checkpointer, CheckpointerError};
use exptrack_checkpoint::burn_support::{MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE};
use exptrack_checkpoint::{Checkpoint, LoadedCheckpoint, ModelCheckpointer};
use serde::{Deserialize, Serialize};

use super::logger::{EpochMark, HistoryRow, Shared};
use crate::logging::MetricSink;

/// Key of the adapter's state in a checkpoint's `extra`.
pub(crate) const EXTRA_KEY: &str = "burn_train";

/// How long a commit waits for the loggers to finish the epoch (they run on burn-train's
/// event-store thread, which is normally done long before the checkpoint arrives).
const EPOCH_WAIT: Duration = Duration::from_secs(120);

/// Which of burn-train's three records a [`RecordCheckpointer`] receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Part {
    /// The model's `ModuleRecord` (stored as `model.bpk`).
    Model,
    /// The optimizer's `OptimizerRecord` (stored as `optimizer.bpk`).
    Optimizer,
    /// The LR scheduler's `LrSchedulerRecord` (stored as `scheduler.bpk`).
    Scheduler,
}

impl Part {
    /// All parts, in the order they are stored.
    pub const ALL: [Part; 3] = [Part::Model, Part::Optimizer, Part::Scheduler];

    /// The file name inside a checkpoint (the same names as
    /// [`exptrack_checkpoint::burn_support`], so `LoadedCheckpoint::load_model` reads it).
    pub fn file_name(self) -> &'static str {
        match self {
            Part::Model => MODEL_FILE,
            Part::Optimizer => OPTIMIZER_FILE,
            Part::Scheduler => SCHEDULER_FILE,
        }
    }
}

/// The adapter's state stored in each checkpoint (`extra.burn_train`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ResumeState {
    pub(crate) epoch: usize,
    pub(crate) train_step: u64,
    pub(crate) valid_step: u64,
    #[serde(default)]
    pub(crate) history: Vec<HistoryRow>,
}

/// The checkpointer and the records of epochs not yet complete.
pub(crate) struct Store {
    ckpt: Mutex<ModelCheckpointer>,
    /// Where the loggers send the metrics: synced before each commit, so a checkpoint never
    /// commits ahead of the durable local log (as in the `TrainingManager`).
    sink: Arc<dyn MetricSink>,
    buffers: Mutex<BTreeMap<usize, BTreeMap<Part, Vec<u8>>>>,
    /// The checkpoint loaded (and verified) for the resume, handed out part by part.
    resume: Mutex<Option<(usize, LoadedCheckpoint)>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn err(message: impl Into<String>) -> CheckpointerError {
    CheckpointerError::Unknown(message.into())
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("ckpt", &self.ckpt)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub(crate) fn new(
        ckpt: ModelCheckpointer,
        sink: Arc<dyn MetricSink>,
        resume: Option<(usize, LoadedCheckpoint)>,
    ) -> Self {
        Store {
            ckpt: Mutex::new(ckpt),
            sink,
            buffers: Mutex::new(BTreeMap::new()),
            resume: Mutex::new(resume),
        }
    }

    pub(crate) fn checkpointer(&self) -> MutexGuard<'_, ModelCheckpointer> {
        lock(&self.ckpt)
    }

    /// Buffers one record; commits the epoch when all three are there.
    fn put(
        &self,
        shared: &Shared,
        epoch: usize,
        part: Part,
        bytes: Vec<u8>,
    ) -> Result<(), CheckpointerError> {
        let complete = {
            let mut b = lock(&self.buffers);
            let parts = b.entry(epoch).or_default();
            parts.insert(part, bytes);
            if parts.len() < Part::ALL.len() {
                return Ok(());
            }
            let parts = b.remove(&epoch).unwrap_or_default();
            // An older epoch still incomplete now never will be: burn-train saves in order.
            let stale: Vec<usize> = b.range(..epoch).map(|(e, _)| *e).collect();
            for e in stale {
                b.remove(&e);
                tracing::warn!(
                    epoch = e,
                    "burn-train checkpoint of this epoch never got all three records; dropped"
                );
            }
            parts
        };
        self.commit(shared, epoch, complete)
    }

    fn commit(
        &self,
        shared: &Shared,
        epoch: usize,
        mut parts: BTreeMap<Part, Vec<u8>>,
    ) -> Result<(), CheckpointerError> {
        let mark: EpochMark = shared.wait_epoch(epoch, EPOCH_WAIT).ok_or_else(|| {
            err(format!(
                "epoch {epoch}: its metrics never reached exptrack's loggers (register them with \
                 exptrack's burn_train::Tracking::attach)"
            ))
        })?;
        let (metrics, history) = {
            let s = shared.lock();
            (s.epoch_values(epoch), s.rows_up_to(epoch))
        };
        let state = ResumeState {
            epoch,
            train_step: mark.train_step,
            valid_step: mark.valid_step,
            history,
        };
        let extra = serde_json::to_value(&state)
            .map_err(|e| err(format!("epoch {epoch}: encoding the resume state: {e}")))?;
        let mut c = Checkpoint::new(mark.train_step)
            .epoch(epoch as u64)
            .metrics(metrics)
            .extra(serde_json::json!({ EXTRA_KEY: extra }));
        for part in Part::ALL {
            let bytes = parts
                .remove(&part)
                .ok_or_else(|| err(format!("epoch {epoch}: no {} record", part.file_name())))?;
            c = c.file(part.file_name(), bytes);
        }
        // The epoch's metrics reach the durable local log before its checkpoint can commit: a
        // crash right after the commit must not lose the points the resumed run will not log
        // again (it starts after this epoch).
        self.sink.sync().map_err(|e| {
            err(format!(
                "epoch {epoch}: syncing the tracker's log before the checkpoint: {e}"
            ))
        })?;
        // In the background: the next epoch trains while this one is written.
        self.checkpointer()
            .save_async(c)
            .map_err(|e| err(format!("saving the checkpoint of epoch {epoch}: {e}")))
    }

    fn restore(&self, epoch: usize, part: Part) -> Result<Vec<u8>, CheckpointerError> {
        {
            let mut r = lock(&self.resume);
            if let Some((e, loaded)) = r.as_mut()
                && *e == epoch
                && let Ok(bytes) = loaded.take(part.file_name())
            {
                return Ok(bytes);
            }
        }
        let ckpt = self.checkpointer();
        ckpt.wait()
            .map_err(|e| err(format!("finishing checkpoint saves before a restore: {e}")))?;
        let info = ckpt
            .list()
            .into_iter()
            .rev()
            .find(|i| i.epoch == Some(epoch as u64))
            .ok_or_else(|| {
                err(format!(
                    "no checkpoint of epoch {epoch} in {}",
                    ckpt.experiment_dir().display()
                ))
            })?;
        ckpt.load_file(info.step, part.file_name())
            .map_err(|e| err(format!("epoch {epoch}: {e}")))
    }
}

/// One of burn-train's three checkpointers (model, optimizer, LR scheduler), made by
/// [`Tracking::attach`](super::Tracking::attach). Records are buffered per epoch; when the
/// third arrives, the three go into **one** [`ModelCheckpointer`] checkpoint (atomic commit,
/// sha256 per file, registry, retention, leases), saved in the background, keyed by the global
/// training step with the epoch, the epoch's metrics (`train/loss`, `valid/loss`, …, for
/// `monitor`) and the step counters for a resume. A record that arrives alone never makes a
/// checkpoint.
///
/// `delete` does nothing: which checkpoints stay is the `ModelCheckpointer`'s retention
/// (`max_checkpoints`, `keep_best` with `monitor = "valid/loss"`, …), which never deletes the
/// latest checkpoint or one a reader (an `EvalWatcher`) holds a lease on.
pub struct RecordCheckpointer {
    part: Part,
    shared: Arc<Shared>,
    store: Arc<Store>,
}

impl std::fmt::Debug for RecordCheckpointer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordCheckpointer")
            .field("part", &self.part)
            .finish_non_exhaustive()
    }
}

impl RecordCheckpointer {
    pub(crate) fn new(part: Part, shared: Arc<Shared>, store: Arc<Store>) -> Self {
        RecordCheckpointer {
            part,
            shared,
            store,
        }
    }

    /// Which record this checkpointer receives.
    pub fn part(&self) -> Part {
        self.part
    }
}

impl<R: Record> Checkpointer<R> for RecordCheckpointer {
    fn save(&self, epoch: usize, record: R) -> Result<(), CheckpointerError> {
        let bytes = record
            .checkpoint_into_bytes()
            .map_err(CheckpointerError::Record)?;
        let bytes = bytes.try_into_vec::<u8>().unwrap_or_else(|b| b.to_vec());
        self.store.put(&self.shared, epoch, self.part, bytes)
    }

    fn delete(&self, epoch: usize) -> Result<(), CheckpointerError> {
        tracing::debug!(
            epoch,
            part = ?self.part,
            "burn-train asked to delete a checkpoint; retention is the ModelCheckpointer's"
        );
        Ok(())
    }

    fn restore(&self, epoch: usize) -> Result<R, CheckpointerError> {
        let bytes = self.store.restore(epoch, self.part)?;
        R::checkpoint_from_bytes(Bytes::from_bytes_vec(bytes)).map_err(CheckpointerError::Record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::train::logger::MetricLogger;
    use burn::train::metric::store::{EpochSummary, Split};
    use exptrack_checkpoint::CheckpointConfig;

    use crate::burn_train::logger::TrackerLogger;
    use crate::logging::MemorySink;

    fn store(dir: &std::path::Path) -> Arc<Store> {
        store_with(dir, Arc::new(MemorySink::new()))
    }

    fn store_with(dir: &std::path::Path, sink: Arc<dyn MetricSink>) -> Arc<Store> {
        let config = CheckpointConfig {
            dir: dir.to_owned(),
            fsync: false,
            ..CheckpointConfig::default()
        };
        let ckpt = ModelCheckpointer::open("bt", config).expect("open");
        Arc::new(Store::new(ckpt, sink, None))
    }

    /// A sink whose log cannot be made durable.
    struct Unsyncable;

    impl MetricSink for Unsyncable {
        fn log_metrics(&self, _step: u64, _values: &[(String, f64)]) -> crate::error::Result<()> {
            Ok(())
        }
        fn sync(&self) -> crate::error::Result<()> {
            Err(crate::error::Error::Tracking {
                message: "disk full".into(),
                source: None,
            })
        }
    }

    /// Issue 12: the log is synced before the commit, so a sink that cannot sync means no
    /// checkpoint (never one ahead of the durable log), and the error says why.
    #[test]
    fn a_log_that_cannot_be_synced_commits_no_checkpoint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = Arc::new(Shared::default());
        let store = store_with(tmp.path(), Arc::new(Unsyncable));
        let mut logger = TrackerLogger::with_shared(MemorySink::new(), Arc::clone(&shared));
        end_epoch(&mut logger, 1);
        let part = |p| RecordCheckpointer::new(p, Arc::clone(&shared), Arc::clone(&store));
        Checkpointer::<()>::save(&part(Part::Model), 1, ()).expect("save");
        Checkpointer::<()>::save(&part(Part::Optimizer), 1, ()).expect("save");
        let e = Checkpointer::<()>::save(&part(Part::Scheduler), 1, ())
            .expect_err("committed without a synced log");
        let text = e.to_string();
        assert!(
            text.contains("syncing") && text.contains("disk full"),
            "{text}"
        );
        store.checkpointer().wait().expect("wait");
        assert!(store.checkpointer().list().is_empty());
    }

    fn end_epoch(logger: &mut TrackerLogger<MemorySink>, epoch: usize) {
        logger.log_epoch_summary(EpochSummary::new(epoch, Split::Train));
        logger.log_epoch_summary(EpochSummary::new(epoch, Split::Valid));
    }

    #[test]
    fn a_record_alone_never_makes_a_checkpoint() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let shared = Arc::new(Shared::default());
        let store = store(tmp.path());
        let mut logger = TrackerLogger::with_shared(MemorySink::new(), Arc::clone(&shared));
        let part = |p| RecordCheckpointer::new(p, Arc::clone(&shared), Arc::clone(&store));
        let (model, optim, sched) = (
            part(Part::Model),
            part(Part::Optimizer),
            part(Part::Scheduler),
        );
        end_epoch(&mut logger, 1);
        end_epoch(&mut logger, 2);

        // Epoch 1: only the model and the optimizer arrive (a crash before the scheduler).
        Checkpointer::<()>::save(&model, 1, ()).expect("save");
        Checkpointer::<()>::save(&optim, 1, ()).expect("save");
        store.checkpointer().wait().expect("wait");
        assert!(
            store.checkpointer().list().is_empty(),
            "an incomplete epoch was committed"
        );

        // Epoch 2 arrives whole: one checkpoint with all three files; epoch 1 is dropped.
        for p in [&sched, &optim, &model] {
            Checkpointer::<()>::save(p, 2, ()).expect("save");
        }
        store.checkpointer().wait().expect("wait");
        let list = store.checkpointer().list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].epoch, Some(2));
        let names: Vec<&str> = list[0].files.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, [MODEL_FILE, OPTIMIZER_FILE, SCHEDULER_FILE]);
        // A late record of epoch 1 completes nothing.
        Checkpointer::<()>::save(&sched, 1, ()).expect("save");
        store.checkpointer().wait().expect("wait");
        assert_eq!(store.checkpointer().list().len(), 1);

        // Restoring reads the committed record back.
        Checkpointer::<()>::restore(&model, 2).expect("restore");
        assert!(Checkpointer::<()>::restore(&model, 1).is_err());
    }
}
