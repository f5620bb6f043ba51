//! The dispatcher: one thread that owns the local store and fans batches out to one worker thread
//! per tracker.
//!
//! ```text
//! caller ──bounded queue──▶ dispatcher ──append──▶ events.jsonl (seq 1, 2, …)
//!                              │
//!                              ├─try_send─▶ worker "tensorboard" ─▶ Tracker::write
//!                              ├─try_send─▶ worker "mlflow"      ─▶ Tracker::write
//!                              └─try_send─▶ worker "wandb"       ─▶ Tracker::write
//! ```
//!
//! A worker whose queue is full (slow or failing tracker) simply misses live batches: it notices
//! the gap from the sequence numbers and replays the missing events from `events.jsonl`, so
//! nothing is dropped and the dispatcher never waits for a tracker.
//!
//! `queue` (the caller's bounded queue and its messages), `dispatcher` (the thread that numbers,
//! stores and fans out), `worker` (one thread per tracker) and `report` (what `finish` returns).

mod dispatcher;
mod queue;
mod report;
mod worker;

pub use report::{FinishReport, TrackerReport};

pub(crate) use dispatcher::{DispatchSettings, Dispatcher};
pub(crate) use queue::{Msg, Queue};
pub(crate) use worker::spawn_worker;
