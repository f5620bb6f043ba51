//! On-disk metadata: `checkpoint.json` in every checkpoint directory and `registry.json` beside them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::Mode;
use crate::hash::{FileHash, HashAlgo};

/// Version of the `checkpoint.json` / `registry.json` layout written by this crate.
///
/// - 1: each file's SHA-256 in a `"sha256": "<hex>"` field.
/// - 2: each file's digest with its algorithm, `"hash": "blake3:<hex>"` or `"hash": "sha256:<hex>"`.
///
/// Both are read; a newer version is refused (the checkpoint is unreadable, with that reason).
pub const FORMAT_VERSION: u32 = 2;

/// Largest `checkpoint.json` / `registry.json` read (a bigger one is refused, not loaded whole).
pub(crate) const MAX_JSON_BYTES: u64 = 256 << 20;

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
#[serde(try_from = "FileEntryRepr", into = "FileEntryRepr")]
#[non_exhaustive]
pub struct FileEntry {
    /// Name inside the checkpoint (also the file name on disk).
    pub name: String,
    /// Size of the content in bytes (uncompressed).
    pub size: u64,
    /// Digest of the content (uncompressed), with its algorithm.
    pub hash: FileHash,
    /// Bytes on disk (differs from `size` when compressed).
    pub stored_size: u64,
    /// How it is stored.
    pub encoding: Encoding,
}

/// `FileEntry` as stored: version 2 writes `hash`; version 1 has `sha256` instead.
#[derive(Serialize, Deserialize)]
struct FileEntryRepr {
    name: String,
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hash: Option<FileHash>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
    stored_size: u64,
    encoding: Encoding,
}

impl TryFrom<FileEntryRepr> for FileEntry {
    type Error = String;

    fn try_from(r: FileEntryRepr) -> Result<Self, String> {
        let hash = match (r.hash, r.sha256) {
            (Some(h), None) => h,
            (None, Some(hex)) => FileHash::new(HashAlgo::Sha256, &hex)?,
            (Some(_), Some(_)) => return Err(format!("file {:?}: both hash and sha256", r.name)),
            (None, None) => return Err(format!("file {:?}: no hash", r.name)),
        };
        Ok(FileEntry {
            name: r.name,
            size: r.size,
            hash,
            stored_size: r.stored_size,
            encoding: r.encoding,
        })
    }
}

impl From<FileEntry> for FileEntryRepr {
    fn from(f: FileEntry) -> Self {
        FileEntryRepr {
            name: f.name,
            size: f.size,
            hash: Some(f.hash),
            sha256: None,
            stored_size: f.stored_size,
            encoding: f.encoding,
        }
    }
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
    /// Directory of the checkpoint (not stored; filled in when read). For an object store, its
    /// URL `s3://bucket/prefix/<experiment_id>/ckpt-<step>` as a path (not a local file).
    #[serde(skip)]
    pub dir: PathBuf,
    /// Object stores only: the upload whose objects hold the files
    /// (`ckpt-<step>/<upload>/<name>`), so a save of an existing step never overwrites the data
    /// its committed `checkpoint.json` names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upload: Option<String>,
    /// The commit's number in the experiment: 1 for its first save, one more for each later
    /// save (a counter that never goes back, also across reopenings and for a step saved
    /// again). A reader that saw commit `n` and next sees `n + k` knows `k - 1` commits came and
    /// went in between (e.g. removed by retention). `None` in checkpoints written before the
    /// counter existed (they stay readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_seq: Option<u64>,
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

    /// This checkpoint as a tracker report ([`exptrack_core::Event::Checkpoint`]): its location
    /// (directory or object-store URL), step, epoch, each file's name, size and hash, metrics and
    /// whether it was the best, plus `pruned`, the steps retention deleted since the last report.
    /// Nothing is read or copied: checkpoints are reported by reference.
    pub fn checkpoint_report(&self, pruned: &[u64]) -> exptrack_core::CheckpointReport {
        exptrack_core::CheckpointReport {
            step: self.step,
            epoch: self.epoch,
            timestamp_ms: self.created_ms,
            location: self.dir.display().to_string(),
            files: self
                .files
                .iter()
                .map(|f| exptrack_core::CheckpointFile {
                    name: f.name.clone(),
                    size: f.size,
                    hash: f.hash.to_string(),
                })
                .collect(),
            metrics: self
                .metrics
                .iter()
                .map(|(k, v)| exptrack_core::Metric::new(k.clone(), *v))
                .collect(),
            is_best: self.is_best,
            pruned: pruned.to_vec(),
        }
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
    /// [`CheckpointInfo::commit_seq`] (absent for checkpoints written before it existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_seq: Option<u64>,
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
            commit_seq: info.commit_seq,
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

/// Largest zstd expansion: every block yields at most 128 KiB and takes at least 4 bytes (an RLE
/// block), so no frame decodes to more than 32768 times its size; a `size` beyond that is a lie.
pub(crate) const MAX_ZSTD_RATIO: u64 = 32768;

fn invalid(path: &Path, message: String) -> crate::Error {
    crate::Error::InvalidMetadata {
        path: path.to_owned(),
        message,
    }
}

impl CheckpointInfo {
    /// Checks a `checkpoint.json` read from `path` before anything is done with it: a version this
    /// crate reads, safe names (the project's one rule, [`exptrack_core::metadata::check_component`];
    /// file names are joined to the checkpoint directory), no name twice, and sizes that agree
    /// with each other (raw: content = stored bytes; zstd: within the format's largest expansion).
    /// Sizes are compared with the files on disk when they are read, before any buffer is made.
    pub(crate) fn check(&self, path: &Path) -> crate::Result<()> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(invalid(
                path,
                format!(
                    "format_version {} is not one this exptrack-checkpoint reads (1..={FORMAT_VERSION})",
                    self.format_version
                ),
            ));
        }
        if let Err(reason) = exptrack_core::metadata::check_component(&self.experiment_id) {
            return Err(invalid(
                path,
                format!("experiment_id {:?} {reason}", truncate(&self.experiment_id)),
            ));
        }
        if let Some(upload) = &self.upload
            && let Err(reason) = exptrack_core::metadata::check_component(upload)
        {
            return Err(invalid(
                path,
                format!("upload {:?} {reason}", truncate(upload)),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for f in &self.files {
            let name = truncate(&f.name);
            if let Err(reason) = exptrack_core::metadata::check_component(&f.name) {
                return Err(invalid(path, format!("file name {name:?} {reason}")));
            }
            if f.name == CHECKPOINT_JSON {
                return Err(invalid(path, format!("file name {name:?} is reserved")));
            }
            if !seen.insert(f.name.as_str()) {
                return Err(invalid(path, format!("file name {name:?} is listed twice")));
            }
            let consistent = match f.encoding {
                Encoding::Raw => f.size == f.stored_size,
                Encoding::Zstd => f.size <= f.stored_size.saturating_mul(MAX_ZSTD_RATIO),
            };
            if !consistent {
                return Err(invalid(
                    path,
                    format!(
                        "file {name:?}: size {} cannot come from {} stored bytes ({:?})",
                        f.size, f.stored_size, f.encoding
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl Registry {
    /// Checks the names in a `registry.json` (it is only a cache, so a bad one is rebuilt).
    pub(crate) fn check(&self, path: &Path) -> crate::Result<()> {
        if self.format_version == 0 || self.format_version > FORMAT_VERSION {
            return Err(invalid(
                path,
                format!("format_version {} not readable", self.format_version),
            ));
        }
        let names = std::iter::once(self.experiment_id.as_str())
            .chain(self.checkpoints.iter().map(|c| c.dir.as_str()))
            .chain(
                self.checkpoints
                    .iter()
                    .flat_map(|c| c.files.iter().map(|f| f.name.as_str())),
            );
        for name in names {
            if let Err(reason) = exptrack_core::metadata::check_component(name) {
                return Err(invalid(path, format!("name {:?} {reason}", truncate(name))));
            }
        }
        Ok(())
    }
}

/// At most 80 characters of a name read from disk, for messages.
fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads and parses a JSON file (refusing one over [`MAX_JSON_BYTES`] instead of loading it).
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> crate::Result<T> {
    use crate::error::IoContext;
    use std::io::Read;
    let file = std::fs::File::open(path).ctx("open", path)?;
    let len = file.metadata().ctx("stat", path)?.len();
    if len > MAX_JSON_BYTES {
        return Err(invalid(
            path,
            format!("{len} bytes; metadata files over {MAX_JSON_BYTES} bytes are refused"),
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_JSON_BYTES + 1)
        .read_to_end(&mut bytes)
        .ctx("read", path)?;
    serde_json::from_slice(&bytes).map_err(|source| crate::Error::Json {
        path: path.to_owned(),
        source,
    })
}

/// Reads `dir/checkpoint.json` and [checks](CheckpointInfo::check) it; `info.dir` is set to `dir`.
pub(crate) fn read_info(dir: &Path) -> crate::Result<CheckpointInfo> {
    let path = dir.join(CHECKPOINT_JSON);
    let mut info: CheckpointInfo = read_json(&path)?;
    info.check(&path)?;
    info.dir = dir.to_owned();
    Ok(info)
}

/// The manifest entry of a file written (locally or to an object store) with `compression`.
pub(crate) fn file_entry(
    name: &str,
    size: u64,
    hash: crate::hash::FileHash,
    stored_size: u64,
    compression: crate::config::Compression,
) -> FileEntry {
    FileEntry {
        name: name.to_owned(),
        size,
        hash,
        stored_size,
        encoding: match compression {
            crate::config::Compression::Off => Encoding::Raw,
            crate::config::Compression::Zstd(_) => Encoding::Zstd,
        },
    }
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
