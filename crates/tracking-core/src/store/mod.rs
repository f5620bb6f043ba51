//! The local run store: `runs/<experiment_id>/<run_id>/`.
//!
//! | file | contents |
//! |---|---|
//! | `metadata.json` | [`ExperimentMetadata`](crate::ExperimentMetadata), rewritten atomically at open and close |
//! | `config.toml` | the whole configuration document |
//! | `events.jsonl` | every [`Event`](crate::Event), one JSON object per line with its sequence number `seq` (1, 2, …); append-only, flushed to the OS after each batch and fsynced on `flush`, `finish` and before every `cursors.json` write |
//! | `summary.json` | last, min, max, count per metric |
//! | `cursors.json` | per backend, the last `seq` it has durably stored |
//! | `results.json` | on success: config, metric histories, best and final values, `completed: true`, timestamps |
//!
//! `events.jsonl` is the write-ahead log for every other backend: a backend that fails is replayed
//! from its cursor, in order, when it recovers, and [`sync_run`] replays a finished run later.
//!
//! One file per concern: `layout` (names, atomic replace), `lock` (the run lock), `writer` (the
//! append-only log and the files written at open and finish), `seq_index` (sequence number →
//! offset), `tail` (reading the log, torn tails), `summary` (statistics and results), `cursors`
//! (the one owner of `cursors.json`), `reader` ([`RunReader`]), `runs` (listing runs),
//! `experiment` (one experiment's runs and its [`ExperimentState`]), `compare` (a metric's
//! direction and best value, for comparing runs) and `sync` ([`sync_run`]).

mod compare;
mod cursors;
mod experiment;
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz;
mod layout;
mod lock;
mod reader;
mod runs;
mod seq_index;
mod summary;
mod sync;
mod tail;
mod writer;

pub use compare::{best_of, better_is_lower};
pub use cursors::{Cursors, read_cursors, write_cursors};
pub use experiment::{ExperimentProgress, ExperimentState, experiment_progress, experiment_runs};
pub use layout::{files, run_dir, sync_dir, write_atomic};
pub use lock::run_in_use;
pub use reader::{RunReader, resumed_checkpoints};
pub use runs::{RunEntry, find_run, list_runs, run_status};
pub use summary::{
    HISTORY_CAP, HISTORY_TOTAL_CAP, MAX_METRIC_KEYS, MetricHistory, MetricSummary, RunResults,
    Summary,
};
pub use sync::{SyncReport, sync_run};
pub use writer::LOG_BACKLOG_MAX;

pub(crate) use cursors::CursorFile;
pub(crate) use reader::max_metric_steps;
pub(crate) use seq_index::SeqIndex;
pub(crate) use tail::LogTail;
pub(crate) use writer::RunWriter;
