//! Where an experiment's checkpoints are kept: the small interface the manager needs.
//!
//! The manager ([`crate::ModelCheckpointer`] and its shared state) owns everything that does not
//! depend on the medium: retention decisions, the registry's content, async saves, resume and
//! completion. A [`Storage`] owns the medium: how a checkpoint is written and committed, how it is
//! hidden and removed, leases, verified reads. [`local::LocalStorage`] is a directory (temp dir,
//! fsync, rename); `object::ObjectStorage` (features `s3`, `gcs`, `azure`) is an object store
//! (unique upload keys, `checkpoint.json` written last with a create-only put).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};

use crate::checkpoint::Checkpoint;
use crate::error::Result;
use crate::format::{CheckpointInfo, FileEntry, Registry, RegistryEntry};
use crate::lease::Lease;
use crate::manager::ReconcileReport;

pub(crate) mod local;
#[cfg(feature = "object-store")]
pub(crate) mod object;

/// What a scan of the experiment found (and, for a writer, repaired).
#[derive(Debug, Default)]
pub(crate) struct Scan {
    /// Committed checkpoints of this experiment, by step.
    pub(crate) entries: BTreeMap<u64, CheckpointInfo>,
    /// Leftovers removed, foreign and unreadable checkpoints (`rebuilt`/`dropped` are the
    /// manager's).
    pub(crate) report: ReconcileReport,
}

/// A checkpoint written but not yet visible. `info.dir` is where it will be once published.
#[derive(Debug)]
pub(crate) struct Staged {
    pub(crate) info: CheckpointInfo,
    /// The storage's handle on the written data (a temp directory, an upload id).
    pub(crate) token: PathBuf,
}

/// Data that is no longer visible to any reader and still has to be removed.
#[derive(Debug, Clone)]
pub(crate) struct Doomed(pub(crate) PathBuf);

/// A change to the registry, for stores where several writers may update it (object stores):
/// applied to the registry as it is now, so no writer's update is lost.
#[derive(Debug, Default)]
#[cfg_attr(not(feature = "object-store"), allow(dead_code))]
pub(crate) struct Delta {
    pub(crate) add: Vec<RegistryEntry>,
    pub(crate) remove: Vec<u64>,
}

impl Delta {
    /// `current`'s checkpoints with this change applied, oldest first.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) fn apply(&self, current: &[RegistryEntry]) -> Vec<RegistryEntry> {
        let mut by_step: BTreeMap<u64, RegistryEntry> =
            current.iter().map(|e| (e.step, e.clone())).collect();
        for step in &self.remove {
            by_step.remove(step);
        }
        for e in &self.add {
            by_step.insert(e.step, e.clone());
        }
        by_step.into_values().collect()
    }
}

/// A registry built from a list of entries (latest and best recomputed by the manager's policy).
pub(crate) type Rebuild<'a> = &'a dyn Fn(Vec<RegistryEntry>) -> Registry;

/// The medium under one experiment's checkpoints. See the module docs for who does what.
pub(crate) trait Storage: Send + Sync + fmt::Debug {
    /// The experiment's location, for messages and `CheckpointInfo::dir` (`<dir>/<experiment_id>`
    /// or `s3://bucket/prefix/<experiment_id>`).
    fn location(&self) -> &Path;

    /// Lists the committed checkpoints of `experiment_id`. With `repair`, removes what interrupted
    /// saves and deletions left behind (except what a live lease still needs).
    fn scan(&self, experiment_id: &str, repair: bool) -> Result<Scan>;

    /// `registry.json` as stored, or None when missing or unreadable (it is only a cache).
    fn read_registry(&self) -> Option<Registry>;

    /// Stores the registry: `full` (the writer's whole view) where it is the only writer, or
    /// `delta` applied to the stored registry where writers share the location.
    fn update_registry(&self, full: &Registry, delta: &Delta, rebuild: Rebuild<'_>) -> Result<()>;

    /// Makes commits and deletions since the last registry write durable when the registry write
    /// itself failed (a directory fsync; nothing for object stores, whose writes are durable).
    fn sync_commits(&self) -> Result<()>;

    /// The checkpoint of `step` as stored now (None when not committed).
    fn info(&self, step: u64) -> Result<Option<CheckpointInfo>>;

    /// Writes `ckpt`'s files and its metadata where no reader looks yet.
    fn stage(&self, ckpt: Checkpoint, experiment_id: &str, is_best: bool) -> Result<Staged>;

    /// Makes a staged checkpoint visible (atomically replacing one of the same step). Returns the
    /// replaced checkpoint's data, to be removed.
    fn publish(&self, staged: &Staged) -> Result<Option<Doomed>>;

    /// Forgets a staged checkpoint that will not be published (best effort).
    fn discard(&self, staged: &Staged);

    /// Hides the checkpoints of `steps` from readers; a step that a reader leased meanwhile is put
    /// back. Returns the hidden steps with their data, to be removed.
    fn retire(&self, steps: &[u64]) -> Result<Vec<(u64, Doomed)>>;

    /// Removes hidden data (called off the save's critical path).
    fn remove(&self, doomed: &Doomed) -> Result<()>;

    /// Takes a reader lease on `step` (NotFound when it is not committed).
    fn lease(&self, step: u64) -> Result<Lease>;

    /// Steps leased by live readers.
    fn leased_steps(&self) -> BTreeSet<u64>;

    /// Reads and verifies one file of a committed checkpoint.
    fn read_file(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<Vec<u8>>;

    /// Verifies one file without keeping it.
    fn verify_file(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<()>;

    /// Replaces `results.json` (the completion marker).
    fn write_results(&self, bytes: &[u8]) -> Result<()>;

    /// `results.json`, parsed, if it exists.
    fn read_results(&self) -> Result<Option<serde_json::Value>>;

    /// Moves the checkpoints of `steps`, the registry and the results under `archive/<name>/`.
    fn archive(&self, steps: &[u64], name: &str) -> Result<String>;
}
