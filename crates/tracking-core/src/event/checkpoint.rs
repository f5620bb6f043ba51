//! Checkpoints reported by reference: [`CheckpointReport`] (one commit) and [`CheckpointSet`]
//! (the checkpoints a sequence of reports says exist).

use serde::{Deserialize, Serialize};

use super::{Metric, ParamValue, TimestampMs, float_to_string};

/// One file of a [`CheckpointReport`]: what it is called, how big it is and its digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointFile {
    /// Name inside the checkpoint, e.g. `model.bpk`.
    pub name: String,
    /// Size of the content in bytes (uncompressed).
    pub size: u64,
    /// Digest of the content with its algorithm, e.g. `blake3:<hex>` (as in `checkpoint.json`).
    pub hash: String,
}

/// A committed checkpoint, reported by reference: [`Event::Checkpoint`](super::Event::Checkpoint).
///
/// # Why its own kind, not an [`Event::Artifact`](super::Event::Artifact)
/// An `Artifact` names a local file that a backend uploads; checkpoints can be gigabytes (and may
/// live in an object store already), so a checkpoint is reported as a *description* — where it is,
/// its step, each file's name, size and digest, the metrics it was saved with — and no backend
/// copies the weights. A backend that does not know this kind skips it (the enum is
/// non-exhaustive), where a reference squeezed into `Artifact` would make an older backend upload
/// the weights after all.
///
/// # Retention
/// The reports form a list of *commits*. Retention deletes checkpoints later; a report names the
/// steps retention deleted since the previous report in [`pruned`](Self::pruned) (the deletion by
/// this commit's save, and any by an explicit `prune` before it). A backend therefore shows a
/// checkpoint from the report of its commit until a later report names its step in `pruned`; a
/// step committed again (a save of an existing step replaces it) is shown with its latest report.
/// Steps deleted by a `prune` after the last commit of a run are not reported.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointReport {
    /// The checkpoint's training step (its key).
    pub step: u64,
    /// Epoch, if the trainer has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Commit time.
    pub timestamp_ms: TimestampMs,
    /// Where the checkpoint lives: its directory, or its object-store URL
    /// (`s3://bucket/prefix/<experiment>/ckpt-<step>`).
    pub location: String,
    /// Its files, in the order they were saved.
    pub files: Vec<CheckpointFile>,
    /// Metrics it was saved with (non-finite values kept, as in [`Event::Metrics`](super::Event::Metrics)).
    #[serde(default)]
    pub metrics: Vec<Metric>,
    /// Whether it was the best checkpoint (by the checkpointer's monitor) when saved.
    #[serde(default)]
    pub is_best: bool,
    /// Steps whose checkpoints retention deleted since the previous report (see the type's docs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<u64>,
}

impl CheckpointReport {
    /// The checkpoint's directory name, `ckpt-<step, 12 digits>` (as the checkpointer names it):
    /// the key backends list checkpoints under.
    pub fn name(&self) -> String {
        checkpoint_name(self.step)
    }

    /// Sum of the files' sizes.
    pub fn total_size(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }

    /// The report as one JSON object (what MLflow's manifest artifact and W&B's summary entry
    /// hold): `{"step", "epoch", "location", "is_best", "size", "files": [{"name", "size",
    /// "hash"}], "metrics": {key: value}, "timestamp_ms"}`; non-finite metrics become strings.
    pub fn manifest(&self) -> serde_json::Value {
        let metrics: serde_json::Map<String, serde_json::Value> = self
            .metrics
            .iter()
            .map(|m| (m.key.clone(), ParamValue::Float(m.value).to_json()))
            .collect();
        serde_json::json!({
            "step": self.step,
            "epoch": self.epoch,
            "location": self.location,
            "is_best": self.is_best,
            "size": self.total_size(),
            "files": self.files,
            "metrics": metrics,
            "timestamp_ms": self.timestamp_ms,
        })
    }

    /// The report as markdown (what TensorBoard's text panel shows): a heading line with the
    /// step, location and total size, a table of the files, the metrics, and the pruned steps.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "**{}** (step {}{}{}): `{}`, {} bytes\n\n| file | size | hash |\n|---|---|---|\n",
            self.name(),
            self.step,
            self.epoch
                .map(|e| format!(", epoch {e}"))
                .unwrap_or_default(),
            if self.is_best { ", best" } else { "" },
            self.location,
            self.total_size(),
        );
        for f in &self.files {
            s.push_str(&format!("| {} | {} | `{}` |\n", f.name, f.size, f.hash));
        }
        if !self.metrics.is_empty() {
            let m: Vec<String> = self
                .metrics
                .iter()
                .map(|m| format!("{} = {}", m.key, float_to_string(m.value)))
                .collect();
            s.push_str(&format!("\nmetrics: {}\n", m.join(", ")));
        }
        if !self.pruned.is_empty() {
            let p: Vec<String> = self.pruned.iter().map(|s| checkpoint_name(*s)).collect();
            s.push_str(&format!(
                "\npruned (deleted by retention): {}\n",
                p.join(", ")
            ));
        }
        s
    }
}

/// The checkpoints a sequence of [`CheckpointReport`]s says exist: each report adds (or replaces)
/// its step and removes the steps it names as pruned. What the local store's `runs show` and the
/// W&B summary list.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CheckpointSet {
    present: std::collections::BTreeMap<u64, CheckpointReport>,
    pruned: std::collections::BTreeSet<u64>,
}

impl CheckpointSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one report (in log order).
    pub fn apply(&mut self, report: &CheckpointReport) {
        for s in &report.pruned {
            self.present.remove(s);
            self.pruned.insert(*s);
        }
        self.pruned.remove(&report.step);
        self.present.insert(report.step, report.clone());
    }

    /// The checkpoints that exist, oldest step first (each with its latest report).
    pub fn present(&self) -> impl Iterator<Item = &CheckpointReport> {
        self.present.values()
    }

    /// Steps reported and later deleted by retention (and not committed again since).
    pub fn pruned(&self) -> impl Iterator<Item = u64> + '_ {
        self.pruned.iter().copied()
    }

    /// True when no report was applied that left a checkpoint or a pruned step.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty() && self.pruned.is_empty()
    }

    /// The checkpoint of the highest step that exists.
    pub fn latest(&self) -> Option<&CheckpointReport> {
        self.present.values().next_back()
    }

    /// The best checkpoint that exists: of those that were the best when saved, the one of the
    /// highest step (none when retention deleted every one of them).
    pub fn best(&self) -> Option<&CheckpointReport> {
        self.present.values().rev().find(|r| r.is_best)
    }

    /// `{name: manifest}` of the checkpoints that exist (see [`CheckpointReport::manifest`]), in
    /// step order: what the W&B summary's `checkpoints` map and MLflow's index hold.
    pub fn manifests(&self) -> serde_json::Map<String, serde_json::Value> {
        self.present
            .values()
            .map(|r| (r.name(), r.manifest()))
            .collect()
    }
}

/// `ckpt-<step, 12 digits>`: the checkpointer's name for the checkpoint of `step`.
pub fn checkpoint_name(step: u64) -> String {
    format!("ckpt-{step:012}")
}
