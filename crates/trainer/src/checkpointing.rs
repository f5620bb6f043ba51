//! What one checkpoint of a training run holds, written and read through exptrack-checkpoint's
//! [`ModelCheckpointer`] (atomic commits, hashes, retention, background saves):
//!
//! - `model.bpk`, `optimizer.bpk` and, for burn's own schedulers, `scheduler.bpk`: burn records,
//!   through [`exptrack_checkpoint::burn_support`];
//! - `trainer.json`: the loop's position (epoch, micro-batch, step), the seed that the data order
//!   and the per-step device seed derive from, the loss scaler, early-stopping, logging-window and
//!   history state, and the schedule's own state ([`ScheduleState`]);
//! - `best_model.bpk`, with `restore_best_weights`: the best weights so far.

use burn::module::Module;
use burn::optim::ModuleOptimizer;
use exptrack_checkpoint::burn_support::{BurnCheckpoint, MODEL_FILE, SCHEDULER_FILE};
use exptrack_checkpoint::{Checkpoint, LoadedCheckpoint, ModelCheckpointer, Resume};
use serde::{Deserialize, Serialize};

use crate::amp::LossScaler;
use crate::error::{Error, Result};
use crate::result::EvalRecord;
use crate::scheduler::{LrSchedule, ScheduleState};

/// The loop's state in a checkpoint.
pub(crate) const TRAINER_FILE: &str = "trainer.json";
/// The best weights so far (with `restore_best_weights`).
pub(crate) const BEST_MODEL_FILE: &str = "best_model.bpk";

/// Everything of the loop that a checkpoint must carry besides model, optimizer and schedule.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub(crate) struct TrainerState {
    /// Epoch in progress.
    pub(crate) epoch: usize,
    /// Micro-batches of this epoch already consumed.
    pub(crate) position: usize,
    /// Global optimizer step.
    pub(crate) step: u64,
    /// Seed (the epoch order and the per-step device seed derive from it, the epoch and the step).
    pub(crate) seed: u64,
    pub(crate) scaler: Option<LossScaler>,
    /// Early stopping / best tracking.
    pub(crate) best: Option<f64>,
    pub(crate) best_epoch: Option<usize>,
    pub(crate) best_step: Option<u64>,
    pub(crate) bad_evals: usize,
    pub(crate) last_eval_step: Option<u64>,
    /// Logging window: loss sum, steps, items since the last log.
    pub(crate) window_loss: f64,
    pub(crate) window_steps: u64,
    pub(crate) window_items: u64,
    /// Since the last evaluation.
    pub(crate) eval_loss: f64,
    pub(crate) eval_steps: u64,
    pub(crate) history: Vec<EvalRecord>,
    pub(crate) stopped_early: bool,
    pub(crate) stop_reason: Option<String>,
    pub(crate) epochs_completed: usize,
}

/// `trainer.json` as written.
#[derive(Serialize)]
struct TrainerFileRef<'a> {
    #[serde(flatten)]
    state: &'a TrainerState,
    schedule: ScheduleState,
}

/// `trainer.json` as read.
#[derive(Deserialize)]
struct TrainerFile {
    #[serde(flatten)]
    state: TrainerState,
    schedule: ScheduleState,
}

/// A checkpointer error as the trainer's.
pub(crate) fn ckpt_err(e: exptrack_checkpoint::Error) -> Error {
    Error::Checkpoint {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

fn json_err(what: &'static str) -> impl Fn(serde_json::Error) -> Error {
    move |source| Error::Json { what, source }
}

/// The pieces of one checkpoint.
pub(crate) struct Parts<'a, M> {
    pub(crate) model: &'a M,
    pub(crate) optim: &'a ModuleOptimizer,
    pub(crate) schedule: &'a LrSchedule,
    pub(crate) state: &'a TrainerState,
    pub(crate) best_model: Option<&'a M>,
    /// Metrics at save time (the last validation), for retention's `monitor`.
    pub(crate) metrics: &'a [(String, f64)],
}

impl<M: Module> Parts<'_, M> {
    /// The checkpoint, every piece a file of it.
    pub(crate) fn to_checkpoint(&self) -> Result<Checkpoint> {
        let trainer = serde_json::to_vec(&TrainerFileRef {
            state: self.state,
            schedule: self.schedule.state(),
        })
        .map_err(json_err("trainer state"))?;
        let mut ck = Checkpoint::new(self.state.step)
            .epoch(self.state.epoch as u64)
            .metrics(self.metrics.iter().cloned())
            .with_model(self.model)
            .and_then(|c| c.with_optimizer(self.optim))
            .map_err(ckpt_err)?
            .file(TRAINER_FILE, trainer);
        if let Some(record) = self.schedule.burn_record() {
            ck = ck.with_lr_scheduler_record(record).map_err(ckpt_err)?;
        }
        if let Some(best) = self.best_model {
            ck = ck.file(BEST_MODEL_FILE, best_model_bytes(best)?);
        }
        Ok(ck)
    }
}

/// The best weights as a second module record in the checkpoint: the bytes `burn_support` writes
/// for [`MODEL_FILE`] (burn's module record as burnpack), under [`BEST_MODEL_FILE`].
fn best_model_bytes<M: Module>(model: &M) -> Result<Vec<u8>> {
    let bytes = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::Record {
            what: "best model record",
            message: e.to_string(),
        })?;
    Ok(bytes.to_vec())
}

/// Loads [`BEST_MODEL_FILE`] into `model` through `burn_support`'s model loader.
fn load_best_model<M: Module>(loaded: &mut LoadedCheckpoint, model: M) -> Result<Option<M>> {
    let Some(bytes) = loaded.files.remove(BEST_MODEL_FILE) else {
        return Ok(None);
    };
    loaded.files.insert(MODEL_FILE.to_owned(), bytes);
    loaded.load_model(model).map(Some).map_err(ckpt_err)
}

/// What a checkpoint restores.
pub(crate) struct Restored<M> {
    pub(crate) model: M,
    pub(crate) optim: ModuleOptimizer,
    pub(crate) state: TrainerState,
    pub(crate) best_model: Option<M>,
}

/// Restores model, optimizer, schedule, loop state and best weights from `loaded`.
pub(crate) fn restore<M: Module>(
    mut loaded: LoadedCheckpoint,
    model: M,
    optim: ModuleOptimizer,
    schedule: &mut LrSchedule,
) -> Result<Restored<M>> {
    let model = loaded.load_model(model).map_err(ckpt_err)?;
    let optim = loaded.load_optimizer(optim).map_err(ckpt_err)?;
    let trainer: TrainerFile =
        serde_json::from_slice(&loaded.take(TRAINER_FILE).map_err(ckpt_err)?)
            .map_err(json_err("trainer state"))?;
    let burn_record = if loaded.file(SCHEDULER_FILE).is_some() {
        Some(loaded.lr_scheduler_record().map_err(ckpt_err)?)
    } else {
        None
    };
    schedule.load_state(trainer.schedule, burn_record)?;
    let best_model = load_best_model(&mut loaded, model.clone())?;
    Ok(Restored {
        model,
        optim,
        state: trainer.state,
        best_model,
    })
}

/// The weights a completed experiment returns: the best ones when they were restored at the
/// end, else the last checkpoint's.
pub(crate) fn final_weights<M: Module>(
    mut loaded: LoadedCheckpoint,
    model: M,
    best: bool,
) -> Result<M> {
    if best && let Some(m) = load_best_model(&mut loaded, model.clone())? {
        return Ok(m);
    }
    loaded.load_model(model).map_err(ckpt_err)
}

/// The checkpointer's resume decision. With `force` in its config an unfinished experiment
/// restarts too: `resume_or_start` archives only a completed one, so it is marked completed
/// first.
pub(crate) fn resume_point(ckpt: &mut ModelCheckpointer) -> Result<Resume> {
    if ckpt.config().force && !ckpt.is_completed() && ckpt.latest().is_some() {
        ckpt.mark_completed(serde_json::json!({ "reset": true }))
            .map_err(ckpt_err)?;
    }
    ckpt.resume_or_start().map_err(ckpt_err)
}
