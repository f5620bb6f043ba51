//! burn 0.22 integration (feature `burn`): a module record, a [`ModuleOptimizer`] and an LR scheduler
//! record in one checkpoint, so a resumed run has everything.
//!
//! Each piece is stored as its burnpack bytes under a fixed file name ([`MODEL_FILE`],
//! [`OPTIMIZER_FILE`], [`SCHEDULER_FILE`]), hashed and committed like any other file.
//!
//! ```no_run
//! use burn::lr_scheduler::{DynLrScheduler, LrScheduler};
//! use burn::module::Module;
//! use burn::optim::ModuleOptimizer;
//! use exptrack_checkpoint::{Checkpoint, ModelCheckpointer, burn_support::BurnCheckpoint as _};
//!
//! fn save<M: Module>(
//!     checkpointer: &mut ModelCheckpointer,
//!     step: u64,
//!     val_loss: f64,
//!     model: &M,
//!     optim: &ModuleOptimizer,
//!     scheduler: &DynLrScheduler,
//! ) -> exptrack_checkpoint::Result<()> {
//!     let ckpt = Checkpoint::new(step)
//!         .metric("val_loss", val_loss)
//!         .with_model(model)?
//!         .with_optimizer(optim)?
//!         .with_lr_scheduler_record(scheduler.to_record())?;
//!     checkpointer.save_async(ckpt)
//! }
//!
//! /// On resume: the latest checkpoint that verifies, loaded into fresh model/optimizer/scheduler.
//! fn resume<M: Module>(
//!     checkpointer: &ModelCheckpointer,
//!     model: M,
//!     optim: ModuleOptimizer,
//!     scheduler: DynLrScheduler,
//! ) -> exptrack_checkpoint::Result<Option<(M, ModuleOptimizer, DynLrScheduler)>> {
//!     let Some(mut loaded) = checkpointer.load_latest_valid()? else {
//!         return Ok(None); // nothing saved yet: start fresh
//!     };
//!     let model = loaded.load_model(model)?;
//!     let optim = loaded.load_optimizer(optim)?;
//!     let scheduler = scheduler.load_record(loaded.lr_scheduler_record()?);
//!     Ok(Some((model, optim, scheduler)))
//! }
//! ```
//!
//! With the `safetensors` feature, [`export_safetensors`] writes a module's weights as a
//! `.safetensors` file in PyTorch's conventions (burn-store's `BurnToPyTorchAdapter`: `Linear`
//! weights transposed to `[out, in]`, norm `gamma`/`beta` named `weight`/`bias`), atomically, for
//! PyTorch users; [`BurnCheckpoint::with_safetensors`] adds the same bytes to a checkpoint.
//! It is a separate feature because it pulls burn-store's safetensors support into the build.
//!
//! ```no_run
//! # #[cfg(feature = "safetensors")]
//! fn export_best<M: burn::module::Module>(
//!     checkpointer: &exptrack_checkpoint::ModelCheckpointer,
//!     template_model: M,
//! ) -> Result<(), Box<dyn std::error::Error>> {
//!     // The best checkpoint's weights, for `safetensors.torch.load_file` on the Python side.
//!     let best = checkpointer.best().ok_or("no checkpoint")?;
//!     let mut best = checkpointer.load(best.step)?;
//!     let model = best.load_model(template_model)?;
//!     exptrack_checkpoint::burn_support::export_safetensors(&model, "best.safetensors")?;
//!     Ok(())
//! }
//! ```
//!

// The docs above link to the `safetensors` feature's items, absent without it (a doc build
// with the feature checks those links).
#![cfg_attr(not(feature = "safetensors"), allow(rustdoc::broken_intra_doc_links))]

use burn::lr_scheduler::LrSchedulerRecord;
use burn::module::Module;
use burn::optim::ModuleOptimizer;
use burn::store::{ModuleRecord, RecordError};
use burn::tensor::Bytes;

use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::error::{Error, Result};

/// File name of the model record.
pub const MODEL_FILE: &str = "model.bpk";
/// File name of the optimizer state.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// File name of the LR scheduler record.
pub const SCHEDULER_FILE: &str = "scheduler.bpk";

fn record_err(name: &str, e: RecordError) -> Error {
    Error::Record {
        name: name.to_owned(),
        message: e.to_string(),
    }
}

/// `Bytes` → `Vec<u8>` without a copy when the allocation allows it.
fn to_vec(bytes: Bytes) -> Vec<u8> {
    bytes.try_into_vec::<u8>().unwrap_or_else(|b| b.to_vec())
}

/// File name of the safetensors copy of the weights ([`BurnCheckpoint::with_safetensors`]).
#[cfg(feature = "safetensors")]
pub const SAFETENSORS_FILE: &str = "model.safetensors";

/// A module's weights as safetensors bytes in PyTorch's conventions (see the module docs), with
/// the metadata `{"format": "pt"}`. Deterministic: the same weights give the same bytes.
#[cfg(feature = "safetensors")]
pub fn safetensors_bytes<M: Module>(model: &M) -> Result<Vec<u8>> {
    use burn::store::{BurnToPyTorchAdapter, ModuleSnapshot, SafetensorsStore};
    let err = |e: burn::store::SafetensorsStoreError| Error::Record {
        name: SAFETENSORS_FILE.to_owned(),
        message: e.to_string(),
    };
    // One metadata entry, `format: pt`: what Hugging Face transformers requires of a PyTorch
    // safetensors file, and with a single key the header (burn-store keeps metadata in a
    // HashMap) is the same bytes every time, so identical weights give identical files.
    let mut store = SafetensorsStore::from_bytes(None)
        .with_to_adapter(BurnToPyTorchAdapter)
        .clear_metadata()
        .metadata("format", "pt");
    model.save_into(&mut store).map_err(err)?;
    store.get_bytes().map_err(err)
}

/// Writes a module's weights to `path` as safetensors (PyTorch conventions), atomically: a
/// temporary sibling, fsync, rename, fsync of the directory. An existing file is replaced.
#[cfg(feature = "safetensors")]
pub fn export_safetensors<M: Module>(model: &M, path: impl AsRef<std::path::Path>) -> Result<()> {
    let path = path.as_ref();
    let bytes = safetensors_bytes(model)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::InvalidFileName {
            name: path.display().to_string(),
            reason: "an export path needs a UTF-8 file name",
        })?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    crate::io::replace_atomic(
        dir,
        name,
        &bytes,
        &crate::io::WriteOpts {
            fsync: true,
            drop_behind: false,
            budget: None,
        },
    )
}

/// Builder methods that put burn state into a [`Checkpoint`].
pub trait BurnCheckpoint: Sized {
    /// Adds `model.clone().into_record().into_bytes()` as [`MODEL_FILE`] (cloning a module only
    /// clones tensor handles).
    fn with_model<M: Module>(self, model: &M) -> Result<Self>;
    /// Adds the optimizer state (`optim.into_bytes()`) as [`OPTIMIZER_FILE`].
    fn with_optimizer(self, optim: &ModuleOptimizer) -> Result<Self>;
    /// Adds an LR scheduler record (`scheduler.to_record()`) as [`SCHEDULER_FILE`].
    fn with_lr_scheduler_record(self, record: LrSchedulerRecord) -> Result<Self>;
    /// Adds the weights as safetensors in PyTorch's conventions ([`safetensors_bytes`]) as
    /// [`SAFETENSORS_FILE`], hashed and committed like the rest.
    #[cfg(feature = "safetensors")]
    fn with_safetensors<M: Module>(self, model: &M) -> Result<Self>;
}

impl BurnCheckpoint for Checkpoint {
    fn with_model<M: Module>(self, model: &M) -> Result<Self> {
        let bytes = model
            .clone()
            .into_record()
            .into_bytes()
            .map_err(|e| record_err(MODEL_FILE, e))?;
        Ok(self.file(MODEL_FILE, to_vec(bytes)))
    }

    fn with_optimizer(self, optim: &ModuleOptimizer) -> Result<Self> {
        let bytes = optim
            .into_bytes()
            .map_err(|e| record_err(OPTIMIZER_FILE, e))?;
        Ok(self.file(OPTIMIZER_FILE, to_vec(bytes)))
    }

    fn with_lr_scheduler_record(self, record: LrSchedulerRecord) -> Result<Self> {
        let bytes = record
            .into_bytes()
            .map_err(|e| record_err(SCHEDULER_FILE, e))?;
        Ok(self.file(SCHEDULER_FILE, to_vec(bytes)))
    }

    #[cfg(feature = "safetensors")]
    fn with_safetensors<M: Module>(self, model: &M) -> Result<Self> {
        Ok(self.file(SAFETENSORS_FILE, safetensors_bytes(model)?))
    }
}

impl LoadedCheckpoint {
    /// Loads [`MODEL_FILE`] into `model` (shapes are validated; a mismatch is an error, not a panic).
    pub fn load_model<M: Module>(&mut self, model: M) -> Result<M> {
        let bytes = Bytes::from_bytes_vec(self.take(MODEL_FILE)?);
        let record = ModuleRecord::from_bytes(bytes).map_err(|e| record_err(MODEL_FILE, e))?;
        model
            .try_load_record(record)
            .map_err(|e| record_err(MODEL_FILE, e))
    }

    /// Loads [`OPTIMIZER_FILE`] into `optim` (created by the same optimizer config).
    pub fn load_optimizer(&mut self, optim: ModuleOptimizer) -> Result<ModuleOptimizer> {
        let bytes = Bytes::from_bytes_vec(self.take(OPTIMIZER_FILE)?);
        optim
            .from_bytes(bytes)
            .map_err(|e| record_err(OPTIMIZER_FILE, e))
    }

    /// The LR scheduler record stored as [`SCHEDULER_FILE`]; pass it to the scheduler's `load_record`.
    pub fn lr_scheduler_record(&mut self) -> Result<LrSchedulerRecord> {
        let bytes = Bytes::from_bytes_vec(self.take(SCHEDULER_FILE)?);
        LrSchedulerRecord::from_bytes(bytes).map_err(|e| record_err(SCHEDULER_FILE, e))
    }
}
