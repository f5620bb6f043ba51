//! Committed checkpoints ([`Event::Checkpoint`](exptrack_core::Event::Checkpoint)) on MLflow, by
//! reference: the weights are never uploaded.
//!
//! - Each report becomes a small manifest artifact, `checkpoints/ckpt-<step, 12 digits>.json`
//!   ([`CheckpointReport::manifest`]: location, step, epoch, files with sizes and digests,
//!   metrics, whether it was the best). A manifest stays after retention deletes its checkpoint:
//!   it records what was committed.
//! - Which checkpoints exist now is [`CHECKPOINT_INDEX`], `checkpoints/index.json`, rewritten
//!   after every report from the run's [`CheckpointSet`]: `{"latest": name, "best": name or null,
//!   "checkpoints": {name: manifest} of those that exist, "pruned": [names deleted by retention]}`.
//! - The run's tags [`TAG_CHECKPOINT_LATEST`] and [`TAG_CHECKPOINT_BEST`] name the newest and the
//!   best checkpoint that exist, so the run's overview shows them without opening an artifact;
//!   the best tag is deleted when retention deleted every checkpoint that was best.
//!
//! A resumed run (or `exptrack sync` from a cursor) starts from the checkpoints the run reported
//! before ([`resumed_checkpoints`]), so the index keeps listing them. Redelivery is safe: a report
//! applied again leaves the same set, and every upload replaces the file it writes.

use exptrack_core::store::resumed_checkpoints;
use exptrack_core::{CheckpointReport, CheckpointSet, RunContext, checkpoint_name};
use serde_json::{Value, json};

use super::MlflowTracker;
use crate::error::{Error, Result};
use crate::types::KeyValue;

/// Run tag naming the newest checkpoint that exists (`ckpt-<step, 12 digits>`).
pub const TAG_CHECKPOINT_LATEST: &str = "exptrack.checkpoints.latest";
/// Run tag naming the best checkpoint that exists (`ckpt-<step, 12 digits>`); absent when there
/// is none (no monitor, or retention deleted it).
pub const TAG_CHECKPOINT_BEST: &str = "exptrack.checkpoints.best";
/// The artifact listing the checkpoints that exist, rewritten after every checkpoint report:
/// `{"latest": name, "best": name or null, "checkpoints": {name: manifest}, "pruned": [names]}`
/// (names are `ckpt-<step, 12 digits>`; a manifest is [`CheckpointReport::manifest`], also
/// uploaded per commit at [`manifest_path`]). The tags [`TAG_CHECKPOINT_LATEST`] and
/// [`TAG_CHECKPOINT_BEST`] name the same checkpoints. The weights are never uploaded.
pub const CHECKPOINT_INDEX: &str = "checkpoints/index.json";

/// The artifact path of a checkpoint's manifest: `checkpoints/ckpt-<step, 12 digits>.json`.
pub fn manifest_path(step: u64) -> String {
    format!("checkpoints/{}.json", checkpoint_name(step))
}

/// The content of [`CHECKPOINT_INDEX`] for `set`.
fn index_json(set: &CheckpointSet) -> Value {
    json!({
        "latest": set.latest().map(CheckpointReport::name),
        "best": set.best().map(CheckpointReport::name),
        "checkpoints": set.manifests(),
        "pruned": set.pruned().map(checkpoint_name).collect::<Vec<_>>(),
    })
}

fn to_bytes(v: &Value) -> Result<Vec<u8>> {
    serde_json::to_vec_pretty(v)
        .map_err(|e| Error::Config(format!("checkpoint manifest is not JSON: {e}")))
}

impl MlflowTracker {
    /// Starts from the checkpoints a resumed run reported in earlier processes.
    pub(super) fn load_checkpoints(&mut self, ctx: &RunContext) {
        self.checkpoints = resumed_checkpoints(ctx);
        self.best_tagged = self.checkpoints.best().is_some();
    }

    /// Uploads the report's manifest, rewrites the index and sets the tags.
    pub(super) fn report_checkpoint(&mut self, report: &CheckpointReport) -> Result<()> {
        let run = self.open_run()?.clone();
        self.checkpoints.apply(report);
        self.client.upload_artifact_bytes(
            &run.artifact_uri,
            &manifest_path(report.step),
            &to_bytes(&report.manifest())?,
        )?;
        self.client.upload_artifact_bytes(
            &run.artifact_uri,
            CHECKPOINT_INDEX,
            &to_bytes(&index_json(&self.checkpoints))?,
        )?;
        let mut tags = Vec::new();
        if let Some(latest) = self.checkpoints.latest() {
            tags.push(KeyValue::new(TAG_CHECKPOINT_LATEST, latest.name()));
        }
        let best = self.checkpoints.best().map(CheckpointReport::name);
        if let Some(best) = &best {
            tags.push(KeyValue::new(TAG_CHECKPOINT_BEST, best.clone()));
        }
        if !tags.is_empty() {
            self.client.log_batch(&run.run_id, &[], &[], &tags)?;
        }
        if best.is_none() && self.best_tagged {
            self.client.delete_tag(&run.run_id, TAG_CHECKPOINT_BEST)?;
        }
        self.best_tagged = best.is_some();
        Ok(())
    }
}
