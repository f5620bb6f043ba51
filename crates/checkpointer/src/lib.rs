//! Crash-safe, integrity-checked, retention-managed checkpoints.
//!
//! A [`Checkpoint`] is a set of named files (model, optimizer, scheduler, trainer state ...) plus
//! metadata (step, epoch, metrics). [`ModelCheckpointer`] stores each one as
//! `<dir>/<experiment_id>/ckpt-<step, 12 digits>/` with a `checkpoint.json`, and keeps
//! `registry.json` (every checkpoint with its metrics, sizes, hashes and the latest/best pointers)
//! beside them.
//!
//! # Guarantees
//! - **Atomic commits.** A save is written to a temporary sibling directory; every file and the
//!   directory are fsynced, it is renamed into place and the parent is fsynced. A reader never sees a
//!   half-written checkpoint; a crash at any instant loses nothing that was committed (the registry
//!   is reconciled with the directories on open).
//! - **Integrity.** Each file's digest (BLAKE3 by default, SHA-256 with `hash = "sha256"`; recorded
//!   as `"hash": "blake3:<hex>"`) is computed while it is written (on a second thread) and verified
//!   on every load with the recorded algorithm, at less cost than the read itself; a mismatch names
//!   the file, and
//!   [`load_latest_valid`](ModelCheckpointer::load_latest_valid) falls back to the newest checkpoint
//!   that verifies. Metadata read from disk is checked before use: names must be plain file names
//!   (never a path out of the checkpoint directory) and recorded sizes must match the files on
//!   disk before any buffer is allocated; a checkpoint that fails is invalid, and skipped.
//! - **Retention** ([`RetentionPolicy`] of [`Rule`]s: keep last N, keep best k by a metric, keep every
//!   N steps) runs only after the new checkpoint is committed and never deletes the latest, the best
//!   or a checkpoint that a reader holds a [`Lease`] on (also from another process).
//! - **Disk full** (ENOSPC) is a clear [`Error::DiskFull`]; the partial save is discarded and earlier
//!   checkpoints are untouched.
//! - **Async saves** ([`save_async`](ModelCheckpointer::save_async)) take owned buffers; the caller
//!   blocks only to hand them over, errors surface on the next call or on
//!   [`wait`](ModelCheckpointer::wait), and dropping the checkpointer waits for them.
//!
//! # Object storage
//! With the `s3`, `gcs` or `azure` feature, `[checkpointing] dir` may be a URL:
//! `s3://bucket/prefix` (also `gs://`, `az://`; see [`Location`]). Every guarantee above holds
//! there too, with the commit made of unique keys and one create-only write: each file is
//! uploaded while it is hashed (multipart with parallel parts for big files) under
//! `ckpt-<step>/<upload>/`, then `checkpoint.json` is written last with a create-only put (a
//! replace is a put conditional on its e-tag). `registry.json` is replaced conditionally on its
//! e-tag and, on a conflict, re-read and the change applied again, so several writers (a trainer
//! and a pruning CLI) lose no update: there is no writer lock on an object store. Downloads are
//! verified while they arrive; deletion removes the marker first; leases are small objects;
//! leftovers of crashes are removed by a later writer's open (after a grace period, since another
//! writer may still be uploading). Requests are retried with backoff on 5xx, 429 and connection
//! errors; credentials come from the provider's environment variables and never appear in
//! messages or `Debug`. [`ModelCheckpointer::open_url`] opens an experiment by its URL.
//!
//! # Example
//! ```
//! use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer, Resume};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let tmp = tempfile::tempdir()?;
//! let config = CheckpointConfig {
//!     dir: tmp.path().join("checkpoints"),
//!     max_checkpoints: Some(3),
//!     monitor: Some("val_loss".into()),
//!     ..CheckpointConfig::default()
//! };
//! let mut ckpt = ModelCheckpointer::open("my-experiment", config)?;
//! let start = match ckpt.resume_or_start()? {
//!     Resume::Resumed(c) => c.step() + 1,
//!     Resume::Fresh => 0,
//!     Resume::Completed(_) => return Ok(()),
//! };
//! for step in start..start + 5 {
//!     let weights = vec![0u8; 4096]; // e.g. model.into_record().into_bytes()
//!     ckpt.save_async(Checkpoint::new(step).metric("val_loss", 1.0 / (step + 1) as f64).file("model.bpk", weights))?;
//! }
//! ckpt.wait()?;
//! assert_eq!(ckpt.latest().map(|c| c.step), Some(start + 4));
//! ckpt.mark_completed(serde_json::json!({ "val_loss": 0.2 }))?;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//! - `burn` (off by default): `burn_support` helpers that put a burn 0.22 module record, a
//!   `ModuleOptimizer` and an LR scheduler record into one checkpoint and load them back.
//! - `burn-flex` (off by default): `burn` plus burn's flex CPU backend; what the crate's burn tests
//!   run on.
//! - `safetensors` (off by default): `burn` plus safetensors export of a module's weights.
//! - `s3`, `gcs`, `azure` (off by default): checkpoints in Amazon S3 (and S3-compatible servers),
//!   Google Cloud Storage, Azure Blob Storage, via `object_store` 0.14 with rustls and `ring` (no
//!   aws-lc build). Each pulls in tokio and an HTTP client.
//! - `testing` (off by default): test hooks (`ModelCheckpointer::fail_writes_after`, the
//!   stored registry, the orphan grace period); not for production.
//!
//! # Performance
//! See `docs/performance.md` for measured ratios against raw `write`+`fsync` and raw `read`, and
//! `cargo run --release -p exptrack-checkpoint --example save_profile` for a quick breakdown.

#![warn(missing_debug_implementations, unreachable_pub)]

mod checkpoint;
mod config;
mod error;
mod format;
mod hash;
mod io;
mod lease;
mod location;
mod manager;
mod retention;
mod shared;
mod storage;

#[cfg(feature = "burn")]
pub mod burn_support;

pub use checkpoint::{Checkpoint, LoadedCheckpoint};
pub use config::{CheckpointConfig, Compression, Mode};
pub use error::{Error, RemoteError, Result};
pub use format::{
    CHECKPOINT_JSON, CheckpointInfo, Encoding, FORMAT_VERSION, FileEntry, REGISTRY_JSON,
    RESULTS_JSON,
};
pub use hash::{FileHash, HashAlgo};
#[doc(hidden)]
pub use io::evict_from_page_cache;
pub use lease::Lease;
pub use location::Location;
pub use manager::{ModelCheckpointer, ReconcileReport, Resume};
pub use retention::{RetentionPolicy, Rule};

/// Test hooks (feature `testing`): not for production use.
#[cfg(feature = "testing")]
pub mod testing {
    /// Sets how old a leftover of a crashed save or deletion in an object store must be before
    /// an opening writer removes it (default one hour, so another writer's upload in progress is
    /// left alone). Process-wide.
    #[cfg(feature = "object-store")]
    pub fn set_orphan_grace(grace: std::time::Duration) {
        crate::storage::object::set_orphan_grace(grace);
    }
}

pub(crate) use exptrack_core::fsutil::now_ms;
