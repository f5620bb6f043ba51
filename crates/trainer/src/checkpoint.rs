//! Where the trainer's checkpoints go.
//!
//! The trainer writes a [`TrainingCheckpoint`] (named byte buffers: model record, optimizer
//! record, scheduler and trainer state, plus step, epoch and metrics) through the small
//! [`CheckpointStore`] trait. [`DirCheckpointStore`] is a self-contained crash-safe store
//! (write to a temporary directory, fsync, rename, fsync the parent; keep the newest N);
//! the full-featured [`ModelCheckpointer`](exptrack_checkpoint::ModelCheckpointer) of
//! `exptrack-checkpoint` (hashed, retention rules, async saves) implements the same trait.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// One checkpoint of a training run.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingCheckpoint {
    /// Global optimizer step.
    pub step: u64,
    /// Epoch in progress (0-based).
    pub epoch: u64,
    /// Metrics at save time (e.g. the last validation).
    pub metrics: Vec<(String, f64)>,
    /// Named files (`model.bpk`, `optimizer.bpk`, `scheduler.json`, `trainer.json`, ...).
    pub files: Vec<(String, Vec<u8>)>,
}

impl TrainingCheckpoint {
    /// A file's bytes by name.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
    }
}

/// Persistent storage for checkpoints and the "experiment completed" marker.
pub trait CheckpointStore: Send {
    /// Saves a checkpoint (may return before it is durable if the store is asynchronous;
    /// [`flush`](Self::flush) waits).
    fn save(&mut self, checkpoint: TrainingCheckpoint) -> Result<()>;
    /// Waits until every save has completed.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// The newest complete, valid checkpoint, if any.
    fn load_latest(&mut self) -> Result<Option<TrainingCheckpoint>>;
    /// Records that the experiment completed, with a JSON summary of its results.
    fn mark_completed(&mut self, summary: &serde_json::Value) -> Result<()>;
    /// The completion summary, when the experiment already completed.
    fn completed(&mut self) -> Result<Option<serde_json::Value>>;
    /// Forgets the completion marker and all checkpoints (a forced rerun starts over).
    fn reset(&mut self) -> Result<()>;
}

impl<T: CheckpointStore + ?Sized> CheckpointStore for Box<T> {
    fn save(&mut self, checkpoint: TrainingCheckpoint) -> Result<()> {
        (**self).save(checkpoint)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
    fn load_latest(&mut self) -> Result<Option<TrainingCheckpoint>> {
        (**self).load_latest()
    }
    fn mark_completed(&mut self, summary: &serde_json::Value) -> Result<()> {
        (**self).mark_completed(summary)
    }
    fn completed(&mut self) -> Result<Option<serde_json::Value>> {
        (**self).completed()
    }
    fn reset(&mut self) -> Result<()> {
        (**self).reset()
    }
}

fn ckpt_err(e: exptrack_checkpoint::Error) -> Error {
    Error::Checkpoint {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// exptrack-checkpoint's manager as the trainer's store: saves go through `save_auto` (in the
/// background when `[checkpointing] async = true`), loads through `load_latest_valid` (corrupt
/// checkpoints are skipped), completion through `mark_completed` / `completed_results`.
/// [`reset`](CheckpointStore::reset) archives the experiment's checkpoints and needs the
/// checkpointer opened with `force = true`.
impl CheckpointStore for exptrack_checkpoint::ModelCheckpointer {
    fn save(&mut self, c: TrainingCheckpoint) -> Result<()> {
        let mut ck = exptrack_checkpoint::Checkpoint::new(c.step)
            .epoch(c.epoch)
            .metrics(c.metrics);
        for (name, bytes) in c.files {
            ck = ck.file(name, bytes);
        }
        self.save_auto(ck).map(|_| ()).map_err(ckpt_err)
    }

    fn flush(&mut self) -> Result<()> {
        self.wait().map_err(ckpt_err)
    }

    fn load_latest(&mut self) -> Result<Option<TrainingCheckpoint>> {
        let Some(loaded) = self.load_latest_valid().map_err(ckpt_err)? else {
            return Ok(None);
        };
        Ok(Some(TrainingCheckpoint {
            step: loaded.info.step,
            epoch: loaded.info.epoch.unwrap_or(0),
            metrics: loaded.info.metrics.clone().into_iter().collect(),
            files: loaded.files.into_iter().collect(),
        }))
    }

    fn mark_completed(&mut self, summary: &serde_json::Value) -> Result<()> {
        exptrack_checkpoint::ModelCheckpointer::mark_completed(self, summary.clone())
            .map_err(ckpt_err)
    }

    fn completed(&mut self) -> Result<Option<serde_json::Value>> {
        self.completed_results().map_err(ckpt_err)
    }

    fn reset(&mut self) -> Result<()> {
        if !self.config().force {
            return Err(Error::Checkpoint {
                message: "restarting needs the checkpointer opened with `force = true`".into(),
                source: None,
            });
        }
        if self.latest().is_none() && !self.is_completed() {
            return Ok(());
        }
        if !self.is_completed() {
            // `resume_or_start` archives only a completed experiment: mark it first.
            exptrack_checkpoint::ModelCheckpointer::mark_completed(
                self,
                serde_json::json!({ "reset": true }),
            )
            .map_err(ckpt_err)?;
        }
        self.resume_or_start().map(|_| ()).map_err(ckpt_err)
    }
}

#[derive(Serialize, Deserialize)]
struct Meta {
    step: u64,
    epoch: u64,
    metrics: Vec<(String, f64)>,
    files: Vec<(String, u64)>,
}

const META: &str = "meta.json";
const COMPLETED: &str = "COMPLETED.json";

/// A crash-safe directory store: `<dir>/step-<012>/` per checkpoint, written to a `.tmp-`
/// directory, fsynced and renamed; only directories with a valid `meta.json` whose file sizes
/// match are loaded. Keeps the newest `keep_last` checkpoints (never deleting before the new
/// one is committed).
#[derive(Debug, Clone)]
pub struct DirCheckpointStore {
    dir: PathBuf,
    keep_last: usize,
}

impl DirCheckpointStore {
    /// A store in `dir` (created when absent) keeping the newest `keep_last` (≥ 1) checkpoints.
    pub fn new(dir: impl Into<PathBuf>, keep_last: usize) -> Result<Self> {
        let dir = dir.into();
        fs::create_dir_all(&dir).ctx("creating checkpoint directory", &dir)?;
        Ok(DirCheckpointStore {
            dir,
            keep_last: keep_last.max(1),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn committed_steps(&self) -> Result<Vec<u64>> {
        let mut steps = Vec::new();
        for entry in fs::read_dir(&self.dir).ctx("listing checkpoints", &self.dir)? {
            let entry = entry.ctx("listing checkpoints", &self.dir)?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if let Some(step) = name.strip_prefix("step-").and_then(|s| s.parse().ok()) {
                steps.push(step);
            }
        }
        steps.sort_unstable();
        Ok(steps)
    }

    fn read(&self, step: u64) -> Result<TrainingCheckpoint> {
        let d = self.dir.join(format!("step-{step:012}"));
        let meta_path = d.join(META);
        let meta: Meta = serde_json::from_slice(
            &fs::read(&meta_path).ctx("reading checkpoint metadata", &meta_path)?,
        )
        .map_err(|source| Error::Json {
            what: "checkpoint metadata",
            source,
        })?;
        let mut files = Vec::with_capacity(meta.files.len());
        for (name, len) in meta.files {
            let p = d.join(&name);
            let bytes = fs::read(&p).ctx("reading checkpoint file", &p)?;
            if bytes.len() as u64 != len {
                return Err(Error::Checkpoint {
                    message: format!(
                        "{} has {} bytes, metadata says {len}",
                        p.display(),
                        bytes.len()
                    ),
                    source: None,
                });
            }
            files.push((name, bytes));
        }
        Ok(TrainingCheckpoint {
            step: meta.step,
            epoch: meta.epoch,
            metrics: meta.metrics,
            files,
        })
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut f = fs::File::create(path).ctx("creating", path)?;
    f.write_all(bytes).ctx("writing", path)?;
    f.sync_all().ctx("syncing", path)
}

fn sync_dir(path: &Path) -> Result<()> {
    exptrack_core::fsutil::sync_dir(path).ctx("syncing directory", path)
}

impl CheckpointStore for DirCheckpointStore {
    fn save(&mut self, c: TrainingCheckpoint) -> Result<()> {
        let final_dir = self.dir.join(format!("step-{:012}", c.step));
        let tmp = self.dir.join(format!(".tmp-step-{:012}", c.step));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).ctx("removing stale temporary checkpoint", &tmp)?;
        }
        fs::create_dir_all(&tmp).ctx("creating temporary checkpoint", &tmp)?;
        let mut sizes = Vec::with_capacity(c.files.len());
        for (name, bytes) in &c.files {
            if name.contains('/') || name.contains('\\') || name.starts_with('.') || name == META {
                return Err(Error::Checkpoint {
                    message: format!("invalid checkpoint file name `{name}`"),
                    source: None,
                });
            }
            write_synced(&tmp.join(name), bytes)?;
            sizes.push((name.clone(), bytes.len() as u64));
        }
        let meta = Meta {
            step: c.step,
            epoch: c.epoch,
            metrics: c.metrics,
            files: sizes,
        };
        let meta_bytes = serde_json::to_vec_pretty(&meta).map_err(|source| Error::Json {
            what: "checkpoint metadata",
            source,
        })?;
        write_synced(&tmp.join(META), &meta_bytes)?;
        sync_dir(&tmp)?;
        if final_dir.exists() {
            fs::remove_dir_all(&final_dir).ctx("replacing checkpoint", &final_dir)?;
        }
        fs::rename(&tmp, &final_dir).ctx("committing checkpoint", &final_dir)?;
        sync_dir(&self.dir)?;
        // Prune only after the new checkpoint is committed.
        let steps = self.committed_steps()?;
        if steps.len() > self.keep_last {
            for s in &steps[..steps.len() - self.keep_last] {
                let d = self.dir.join(format!("step-{s:012}"));
                fs::remove_dir_all(&d).ctx("pruning checkpoint", &d)?;
            }
        }
        Ok(())
    }

    fn load_latest(&mut self) -> Result<Option<TrainingCheckpoint>> {
        for step in self.committed_steps()?.into_iter().rev() {
            match self.read(step) {
                Ok(c) => return Ok(Some(c)),
                Err(e) => tracing::warn!("skipping unreadable checkpoint at step {step}: {e}"),
            }
        }
        Ok(None)
    }

    fn mark_completed(&mut self, summary: &serde_json::Value) -> Result<()> {
        let p = self.dir.join(COMPLETED);
        let bytes = serde_json::to_vec_pretty(summary).map_err(|source| Error::Json {
            what: "completion summary",
            source,
        })?;
        exptrack_core::fsutil::write_atomic(&p, &bytes).ctx("writing completion marker", &p)
    }

    fn completed(&mut self) -> Result<Option<serde_json::Value>> {
        let p = self.dir.join(COMPLETED);
        match fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| Error::Json {
                    what: "completion summary",
                    source,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Io {
                action: "reading completion marker",
                path: p,
                source: e,
            }),
        }
    }

    fn reset(&mut self) -> Result<()> {
        let p = self.dir.join(COMPLETED);
        if p.exists() {
            fs::remove_file(&p).ctx("removing completion marker", &p)?;
        }
        for s in self.committed_steps()? {
            let d = self.dir.join(format!("step-{s:012}"));
            fs::remove_dir_all(&d).ctx("removing checkpoint", &d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ckpt(step: u64) -> TrainingCheckpoint {
        TrainingCheckpoint {
            step,
            epoch: 1,
            metrics: vec![("valid/loss".into(), 0.5)],
            files: vec![("model.bpk".into(), vec![step as u8; 10])],
        }
    }

    #[test]
    fn saves_loads_prunes_and_skips_torn_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DirCheckpointStore::new(dir.path(), 2).unwrap();
        assert!(s.load_latest().unwrap().is_none());
        for step in [1, 2, 3] {
            s.save(ckpt(step)).unwrap();
        }
        assert_eq!(s.committed_steps().unwrap(), vec![2, 3]);
        assert_eq!(s.load_latest().unwrap().unwrap(), ckpt(3));
        // Truncate the newest checkpoint's file: it is skipped, the previous one loads.
        fs::write(dir.path().join("step-000000000003/model.bpk"), [1u8; 3]).unwrap();
        assert_eq!(s.load_latest().unwrap().unwrap().step, 2);
        // A leftover temporary directory is ignored.
        fs::create_dir_all(dir.path().join(".tmp-step-000000000009")).unwrap();
        assert_eq!(s.load_latest().unwrap().unwrap().step, 2);
    }

    #[test]
    fn model_checkpointer_works_as_a_store() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = exptrack_checkpoint::CheckpointConfig {
            dir: dir.path().to_path_buf(),
            force: true,
            fsync: false,
            ..Default::default()
        };
        let mut s = exptrack_checkpoint::ModelCheckpointer::open("exp", cfg).unwrap();
        assert!(CheckpointStore::load_latest(&mut s).unwrap().is_none());
        CheckpointStore::save(&mut s, ckpt(3)).unwrap();
        CheckpointStore::save(&mut s, ckpt(7)).unwrap();
        CheckpointStore::flush(&mut s).unwrap();
        assert_eq!(CheckpointStore::load_latest(&mut s).unwrap().unwrap(), {
            let mut c = ckpt(7);
            c.epoch = 1;
            c
        });
        CheckpointStore::mark_completed(&mut s, &serde_json::json!({"a": 1})).unwrap();
        assert_eq!(
            CheckpointStore::completed(&mut s).unwrap(),
            Some(serde_json::json!({"a": 1}))
        );
        CheckpointStore::reset(&mut s).unwrap();
        assert!(CheckpointStore::completed(&mut s).unwrap().is_none());
        assert!(CheckpointStore::load_latest(&mut s).unwrap().is_none());
    }

    #[test]
    fn completion_marker_round_trips_and_reset_clears() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = DirCheckpointStore::new(dir.path(), 1).unwrap();
        assert!(s.completed().unwrap().is_none());
        s.save(ckpt(5)).unwrap();
        s.mark_completed(&serde_json::json!({"valid/accuracy": 0.9}))
            .unwrap();
        assert_eq!(
            s.completed().unwrap().unwrap()["valid/accuracy"],
            serde_json::json!(0.9)
        );
        s.reset().unwrap();
        assert!(s.completed().unwrap().is_none());
        assert!(s.load_latest().unwrap().is_none());
    }
}
