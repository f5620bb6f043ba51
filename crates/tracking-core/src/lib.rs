//! # exptrack-core
//!
//! The stable core that every exptrack backend builds on:
//!
//! - [`Event`]: everything a run records (metrics, params, tags, text, images, histograms,
//!   artifacts, status);
//! - [`Tracker`]: the small trait a backend implements (`open`, `write` a batch, `flush`, `close`);
//! - [`ExperimentConfig`] and [`config_hash`]: the TOML config and the experiment identity derived
//!   from it;
//! - [`ExperimentMetadata`]: who and what a run is;
//! - [`ExperimentTracker`]: the user's handle; calls never wait on I/O, one dispatcher thread fans
//!   events out to every tracker, each isolated on its own thread;
//! - [`store`]: the local run store (`runs/<experiment_id>/<run_id>/`), which is both the embedded
//!   default backend and the write-ahead log from which remote backends are replayed;
//! - [`fsutil`]: the file-system plumbing every exptrack crate shares (atomic replace with a
//!   directory fsync, lock files, a millisecond clock).
//!
//! # Names
//! In code, a destination of events (TensorBoard, MLflow, W&B, a test double) is a **tracker**:
//! the [`Tracker`] trait, [`TrackerReport`], [`FinishReport::trackers`], [`Error::Tracker`],
//! [`ExperimentTrackerBuilder::with_tracker`]. "Backend" is the word of user-facing text only:
//! the config keys (`[tracking] use_mlflow`), the command line (`exptrack sync RUN --to mlflow`),
//! log fields and error messages.
//!
//! # Feature flags
//! - `signals` (default): Ctrl-C / SIGTERM mark open runs `Killed` before the process exits.
//! - `system-metrics` (default): the optional `system/*` sampler and richer [`SystemInfo`].
//! - `nvml`: per-GPU utilisation, memory, temperature and power in the sampler through NVIDIA's
//!   NVML, loaded at run time (no CUDA at build time; without a driver: one debug line, no GPU
//!   keys, no error).
//! - `conformance`: the `conformance` module, a test suite for backend authors.
//! - `fuzzing`: entry points for the fuzz targets in `fuzz/` (hidden; not a stable API).

mod clock;
pub mod config;
#[cfg(feature = "conformance")]
pub mod conformance;
mod dispatch;
pub mod error;
pub mod event;
pub mod fsutil;
mod handle;
pub mod media;
pub mod metadata;
pub mod redact;
pub mod shutdown;
pub mod store;
mod sysmetrics;
pub mod tracker;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod __fuzz {
    pub use crate::store::fuzz::{open_resumed, tail_read};
}

pub use config::{ExperimentConfig, ExperimentSection, TrackingSection, config_hash};
pub use dispatch::{FinishReport, TrackerReport};
pub use error::{Error, Result};
pub use event::{
    ArtifactKind, CheckpointFile, CheckpointReport, CheckpointSet, Event, EventKind, Metric,
    ParamValue, TimestampMs, checkpoint_name, now_ms,
};
pub use handle::{ExperimentTracker, ExperimentTrackerBuilder, Resume};
pub use media::png_dimensions;
pub use metadata::{ExperimentMetadata, GitInfo, RunStatus, SystemInfo};
pub use redact::{redact_config, redact_uri};
pub use store::sync_run;
pub use tracker::{Batch, Canceller, ErrorClass, RunContext, Tracker, TrackerError};
