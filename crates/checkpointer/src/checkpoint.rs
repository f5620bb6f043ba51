//! What a caller hands to `save` and gets back from `load`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::format::{CHECKPOINT_JSON, CheckpointInfo};

/// Where one file's content comes from.
#[derive(Debug)]
pub(crate) enum Source {
    /// An owned buffer.
    Bytes(Vec<u8>),
    /// An existing file, streamed (for content that does not fit in memory twice).
    Path(PathBuf),
}

/// A checkpoint to save: named files plus metadata.
///
/// ```
/// use exptrack_checkpoint::Checkpoint;
/// let ckpt = Checkpoint::new(1200)
///     .epoch(3)
///     .metric("val_loss", 0.42)
///     .file("model.bpk", vec![1, 2, 3])
///     .file("optimizer.bpk", vec![4, 5]);
/// assert_eq!(ckpt.step(), 1200);
/// ```
#[derive(Debug)]
pub struct Checkpoint {
    pub(crate) step: u64,
    pub(crate) epoch: Option<u64>,
    pub(crate) metrics: BTreeMap<String, f64>,
    pub(crate) files: Vec<(String, Source)>,
    pub(crate) extra: serde_json::Value,
    /// Assigned by the save path ([`CheckpointInfo::commit_seq`](crate::CheckpointInfo::commit_seq)).
    pub(crate) commit_seq: Option<u64>,
}

impl Checkpoint {
    /// An empty checkpoint for a global step (the checkpoint's key; one checkpoint per step).
    pub fn new(step: u64) -> Self {
        Checkpoint {
            step,
            epoch: None,
            metrics: BTreeMap::new(),
            files: Vec::new(),
            extra: serde_json::Value::Null,
            commit_seq: None,
        }
    }

    /// The step.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// Sets the epoch.
    pub fn epoch(mut self, epoch: u64) -> Self {
        self.epoch = Some(epoch);
        self
    }

    /// Records a metric (e.g. `val_loss`); retention's `monitor` reads these.
    pub fn metric(mut self, key: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(key.into(), value);
        self
    }

    /// Records several metrics.
    pub fn metrics<K: Into<String>>(mut self, metrics: impl IntoIterator<Item = (K, f64)>) -> Self {
        self.metrics
            .extend(metrics.into_iter().map(|(k, v)| (k.into(), v)));
        self
    }

    /// Adds a file from an owned buffer (no copy is made).
    pub fn file(mut self, name: impl Into<String>, bytes: Vec<u8>) -> Self {
        self.files.push((name.into(), Source::Bytes(bytes)));
        self
    }

    /// Adds a file streamed from an existing path at save time (for content too big to hold twice).
    /// With `save_async` the file must stay unchanged until the save completes.
    pub fn file_from_path(mut self, name: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        self.files.push((name.into(), Source::Path(path.into())));
        self
    }

    /// Attaches free-form JSON (data position, RNG seeds, trainer state) stored in `checkpoint.json`.
    pub fn extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = extra;
        self
    }

    /// Rejects names that are not plain, unique file names (the project's one name rule,
    /// `exptrack_core::metadata::check_component`: ASCII letters, digits, `_`, `-`, `.`; not
    /// starting with `.`; at most 200 bytes).
    pub(crate) fn validate(&self) -> Result<()> {
        let mut seen = std::collections::BTreeSet::new();
        for (name, _) in &self.files {
            let bad = |reason| {
                Err(Error::InvalidFileName {
                    name: name.clone(),
                    reason,
                })
            };
            // The rule every name read back from checkpoint.json must pass, so what is saved loads.
            if let Err(reason) = exptrack_core::metadata::check_component(name) {
                return bad(reason);
            }
            if name == CHECKPOINT_JSON {
                return bad("reserved for the checkpoint's metadata");
            }
            if !seen.insert(name.as_str()) {
                return bad("given twice");
            }
        }
        Ok(())
    }
}

/// A checkpoint read back and verified.
#[derive(Debug, Clone)]
pub struct LoadedCheckpoint {
    /// Its metadata.
    pub info: CheckpointInfo,
    /// The file contents by name (decompressed, verified against the recorded digest).
    pub files: BTreeMap<String, Vec<u8>>,
}

impl LoadedCheckpoint {
    /// The step.
    pub fn step(&self) -> u64 {
        self.info.step
    }

    /// A file's content.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files.get(name).map(Vec::as_slice)
    }

    /// Takes a file's content out (no copy), or [`Error::NoSuchFile`].
    pub fn take(&mut self, name: &str) -> Result<Vec<u8>> {
        self.files.remove(name).ok_or_else(|| Error::NoSuchFile {
            step: self.info.step,
            name: name.to_owned(),
        })
    }
}
