//! # exptrack-tensorboard
//!
//! The TensorBoard backend of exptrack: runs become event files that the real `tensorboard`
//! (2.21), `EventAccumulator` and `tbparse` read.
//!
//! - [`TensorBoardTracker`]: an [`exptrack_core::Tracker`] (scalars, text, images, histograms,
//!   hparams, tags as text);
//! - [`EventFileWriter`]: our own tfevents writer (TFRecord framing with masked CRC-32C, events
//!   encoded with `prost` into a reused buffer);
//! - [`RecordReader`], [`read_event_file`], [`event_files`]: a reader that verifies both CRCs of
//!   every record, reports corruption with the byte offset and reads a truncated file up to its
//!   last whole record;
//! - [`proto`]: the protobuf messages, hand-written with `prost` derive (no `protoc` at build
//!   time); [`encode`]: how exptrack events map onto them.
//!
//! # Why not `tensorboard-rs`
//! tensorboard-rs 0.5.9 (the only TensorBoard writer crate) is not usable here: its
//! `add_hparams`, `add_text`, `add_histogram` and `add_images` are `unimplemented!()`, every I/O
//! error is a panic (`expect("")`), `add_image` transposes non-square images and scrambles the
//! channels, all writers use file suffix 0 (two writers in one second collide), it depends on
//! protobuf 2.x (affected by RUSTSEC-2024-0437) and has had no release since March 2022. The
//! format is small (a length-prefixed record with two CRCs around a protobuf), so we write it.
//!
//! # Feature flags
//! None.
//!
//! # Example
//! ```
//! use exptrack_core::{Batch, Event, ExperimentMetadata, Metric, RunContext, RunStatus, Tracker};
//! use exptrack_tensorboard::{TensorBoardTracker, read_event_file};
//!
//! let root = tempfile::tempdir()?;
//! let metadata = ExperimentMetadata::new("demo", "0123456789abcdef");
//! let ctx = RunContext {
//!     run_dir: root.path().join("run"),
//!     metadata,
//!     config: Default::default(),
//!     resumed: false,
//! };
//! let mut tb = TensorBoardTracker::new(Some(root.path().join("tb")));
//! tb.open(&ctx)?;
//! let events = [Event::Metrics { step: 1, timestamp_ms: 1_700_000_000_000,
//!                                values: vec![Metric::new("loss", 0.25)] }];
//! tb.write(&Batch { first_seq: 0, events: &events })?;
//! let file = tb.event_file().ok_or("no event file")?.to_path_buf();
//! tb.close(RunStatus::Completed)?;
//!
//! let read = read_event_file(&file)?;
//! assert_eq!(read.events.len(), 2); // file_version + one summary
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod encode;
mod error;
mod progress;
pub mod proto;
mod reader;
pub mod record;
mod tracker;
mod writer;

/// The `prost` version of the [`proto`] messages (for `prost::Message::decode`/`encode`).
pub use prost;

pub use error::{Corruption, Error, Result};
pub use reader::{
    EventFile, EventRecord, Record, RecordReader, event_files, read_event_file, read_events,
};
pub use tracker::{DEFAULT_FLUSH_INTERVAL, TensorBoardTracker, TensorBoardTrackerBuilder};
pub use writer::{EventFileWriter, event_file_name};
