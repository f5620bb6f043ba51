//! On-disk metadata: `checkpoint.json` in every checkpoint directory and `registry.json` beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Mode;

/// Version of the `checkpoint.json` / `registry.json` layout written by this crate.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the metadata file inside each checkpoint directory (reserved; not usable as a file name).
pub const CHECKPOINT_JSON: &str = "checkpoint.json";
/// Name of the index file in the experiment directory.
pub const REGISTRY_JSON: &str = "registry.json";
/// Name of the completion marker in the experiment directory.
pub const RESULTS_JSON: &str = "results.json";

/// How one stored file is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Stored as given.
    Raw,
    /// A zstd frame of the content.
    Zstd,
}

/// One file of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct FileEntry {
    /// Name inside the checkpoint (also the file name on disk).
    pub name: String,
    /// Size of the content in bytes (uncompressed).
    pub size: u64,
    /// Hex sha256 of the content (uncompressed).
    pub sha256: String,
    /// Bytes on disk (differs from `size` when compressed).
    pub stored_size: u64,
    /// How it is stored.
    pub encoding: Encoding,
}

/// Everything known about one committed checkpoint: the content of its `checkpoint.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// Layout version ([`FORMAT_VERSION`]).
    pub format_version: u32,
    /// The experiment this checkpoint belongs to.
    pub experiment_id: String,
    /// Global training step (the checkpoint's key).
    pub step: u64,
    /// Epoch, if the trainer has one.
    pub epoch: Option<u64>,
    /// Metrics at save time (train/val loss, accuracy, ...). Non-finite values are stored as the
    /// strings `"NaN"`, `"inf"`, `"-inf"` (JSON has no such numbers).
    #[serde(with = "finite_map")]
    pub metrics: BTreeMap<String, f64>,
    /// Whether this checkpoint was the best so far when it was saved.
    pub is_best: bool,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_ms: i64,
    /// The files, in the order they were given.
    pub files: Vec<FileEntry>,
    /// Free-form user data (trainer state that is not a file, data position, RNG seeds ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub extra: serde_json::Value,
    /// Directory of the checkpoint (not stored; filled in when read).
    #[serde(skip)]
    pub dir: PathBuf,
}

impl CheckpointInfo {
    /// Sum of the content sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// Sum of the bytes on disk.
    pub fn stored_size(&self) -> u64 {
        self.files.iter().map(|f| f.stored_size).sum()
    }

    /// The entry for `name`.
    pub fn file(&self, name: &str) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.name == name)
    }

    /// Path of a stored file (it may be compressed; see [`FileEntry::encoding`]).
    pub fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `Event::Artifact`s describing this checkpoint's files, to hand to an `ExperimentTracker`
    /// (artifact names are `checkpoints/ckpt-<step>/<file>`). Compressed files are zstd frames.
    pub fn artifact_events(&self) -> Vec<exptrack_core::Event> {
        let dir_name = dir_name(self.step);
        self.files
            .iter()
            .map(|f| exptrack_core::Event::Artifact {
                path: self.dir.join(&f.name),
                name: format!("checkpoints/{dir_name}/{}", f.name),
                artifact_kind: exptrack_core::ArtifactKind::Model,
                step: Some(self.step),
            })
            .collect()
    }
}

/// `registry.json`: the index of an experiment's checkpoints. A cache of the directories, rebuilt
/// from them on open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Registry {
    pub format_version: u32,
    pub experiment_id: String,
    pub latest: Option<u64>,
    pub best: Option<u64>,
    pub monitor: Option<String>,
    pub mode: Mode,
    pub checkpoints: Vec<RegistryEntry>,
}

/// One line of the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RegistryEntry {
    pub step: u64,
    pub epoch: Option<u64>,
    pub dir: String,
    pub created_ms: i64,
    pub is_best: bool,
    #[serde(with = "finite_map")]
    pub metrics: BTreeMap<String, f64>,
    pub total_size: u64,
    pub stored_size: u64,
    pub files: Vec<FileEntry>,
}

impl RegistryEntry {
    pub(crate) fn from_info(info: &CheckpointInfo) -> Self {
        RegistryEntry {
            step: info.step,
            epoch: info.epoch,
            dir: dir_name(info.step),
            created_ms: info.created_ms,
            is_best: info.is_best,
            metrics: info.metrics.clone(),
            total_size: info.total_size(),
            stored_size: info.stored_size(),
            files: info.files.clone(),
        }
    }
}

/// Width of the zero-padded step in directory names.
pub(crate) const STEP_DIGITS: usize = 12;
/// Prefix of committed checkpoint directories.
pub(crate) const DIR_PREFIX: &str = "ckpt-";
/// Prefix of anything temporary in the experiment directory (removed on open).
pub(crate) const TMP_PREFIX: &str = ".tmp-";
/// Prefix of checkpoints being deleted (removed on open unless leased).
pub(crate) const DEL_PREFIX: &str = ".del-";

/// `ckpt-000000000042`.
pub(crate) fn dir_name(step: u64) -> String {
    format!("{DIR_PREFIX}{step:0width$}", width = STEP_DIGITS)
}

/// The step of a committed checkpoint directory name.
pub(crate) fn parse_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix(DIR_PREFIX)?;
    if digits.len() < STEP_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The step in the rest of a `.del-ckpt-<step>-<pid>-<n>` name (after the `.del-` prefix).
pub(crate) fn del_step(rest: &str) -> Option<u64> {
    let digits = rest.strip_prefix(DIR_PREFIX)?.split('-').next()?;
    parse_dir_name(&format!("{DIR_PREFIX}{digits}"))
}

/// Serde for metric maps that keeps NaN and infinities (as strings) instead of turning them into null.
mod finite_map {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    #[serde(untagged)]
    enum Num {
        F(f64),
        S(String),
        Null(()),
    }

    pub(super) fn serialize<S: Serializer>(
        m: &BTreeMap<String, f64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let conv: BTreeMap<&str, Num> = m
            .iter()
            .map(|(k, v)| {
                let n = if v.is_finite() {
                    Num::F(*v)
                } else if v.is_nan() {
                    Num::S("NaN".into())
                } else if *v > 0.0 {
                    Num::S("inf".into())
                } else {
                    Num::S("-inf".into())
                };
                (k.as_str(), n)
            })
            .collect();
        conv.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, f64>, D::Error> {
        let raw = BTreeMap::<String, Num>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, n)| {
                let v = match n {
                    Num::F(v) => v,
                    Num::Null(()) => f64::NAN,
                    Num::S(s) => match s.as_str() {
                        "NaN" | "nan" => f64::NAN,
                        "inf" | "+inf" | "Infinity" => f64::INFINITY,
                        "-inf" | "-Infinity" => f64::NEG_INFINITY,
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "metric {k}: not a number: {other:?}"
                            )));
                        }
                    },
                };
                Ok((k, v))
            })
            .collect()
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> crate::Result<T> {
    use crate::error::IoContext;
    let bytes = std::fs::read(path).ctx("read", path)?;
    serde_json::from_slice(&bytes).map_err(|source| crate::Error::Json {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_names_round_trip_and_sort() {
        assert_eq!(dir_name(42), "ckpt-000000000042");
        assert_eq!(parse_dir_name("ckpt-000000000042"), Some(42));
        assert_eq!(parse_dir_name(&dir_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_dir_name("ckpt-42"), None);
        assert_eq!(parse_dir_name(".tmp-ckpt-000000000042"), None);
        assert!(dir_name(9) < dir_name(10));
    }
}
