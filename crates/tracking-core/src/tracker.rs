//! The [`Tracker`] trait that every backend implements.

use std::fmt;
use std::path::PathBuf;

use crate::event::{Event, EventKind};
use crate::metadata::{ExperimentMetadata, RunStatus};

/// What a tracker is given when its run opens.
#[derive(Debug, Clone)]
pub struct RunContext {
    /// The run's identity and provenance.
    pub metadata: ExperimentMetadata,
    /// The whole configuration document (all sections, including ones core does not know).
    pub config: toml::Table,
    /// The run's local directory (`<runs>/<experiment_id>/<run_id>`); backends may write beside it.
    pub run_dir: PathBuf,
    /// Whether this run continues an earlier one (same run id, events appended).
    pub resumed: bool,
}

/// A batch of consecutive events as delivered to a tracker.
///
/// `first_seq` is the sequence number of `events[0]` in the run's local store; events are numbered
/// consecutively. A batch that failed is delivered again whole, so a backend that can partially
/// succeed should remember the last sequence number it durably wrote and skip up to it.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Sequence number of the first event.
    pub first_seq: u64,
    /// The events, in order.
    pub events: &'a [Event],
}

impl Batch<'_> {
    /// Sequence number of the last event (`first_seq - 1` for an empty batch).
    pub fn last_seq(&self) -> u64 {
        (self.first_seq + self.events.len() as u64).saturating_sub(1)
    }

    /// Events with their sequence numbers.
    pub fn iter_seq(&self) -> impl Iterator<Item = (u64, &Event)> {
        let first = self.first_seq;
        self.events
            .iter()
            .enumerate()
            .map(move |(i, e)| (first + i as u64, e))
    }
}

/// Called from another thread to make a tracker's blocking calls give up (e.g. stop an HTTP
/// request that is waiting to retry) once `finish` has waited long enough.
pub type Canceller = Box<dyn Fn() + Send + Sync + 'static>;

/// Whether an error is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Try again later (network down, server 5xx/429, disk momentarily full). The events stay in
    /// the local spool and are redelivered in order.
    Transient,
    /// Retrying will not help (bad input, authentication, a changed param). The batch is reported
    /// as failed and skipped.
    Permanent,
}

/// An error reported by a [`Tracker`].
#[derive(Debug)]
pub struct TrackerError {
    class: ErrorClass,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

impl TrackerError {
    /// A transient error (retried with backoff).
    pub fn transient(message: impl Into<String>) -> Self {
        TrackerError {
            class: ErrorClass::Transient,
            message: message.into(),
            source: None,
        }
    }

    /// A permanent error (the batch is skipped and reported).
    pub fn permanent(message: impl Into<String>) -> Self {
        TrackerError {
            class: ErrorClass::Permanent,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying error.
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Transient or permanent.
    pub fn class(&self) -> ErrorClass {
        self.class
    }

    /// Whether retrying may help.
    pub fn is_transient(&self) -> bool {
        self.class == ErrorClass::Transient
    }

    /// The message (without the source chain).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for TrackerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)?;
        if let Some(s) = &self.source {
            write!(f, ": {s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for TrackerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl From<std::io::Error> for TrackerError {
    fn from(e: std::io::Error) -> Self {
        TrackerError::transient("I/O error").with_source(e)
    }
}

/// A destination for a run's events (TensorBoard, MLflow, W&B, the local store, a test double).
///
/// # Contract
/// - The dispatcher calls [`open`](Tracker::open) once, then [`write`](Tracker::write) with
///   consecutive batches in sequence order, [`flush`](Tracker::flush) when the user asks for a
///   barrier, and [`close`](Tracker::close) once with the final status. All calls come from one
///   thread dedicated to this tracker, so a slow tracker never delays another one or the caller.
/// - [`supports`](Tracker::supports) is asked once per kind at registration and cached; events of
///   unsupported kinds are filtered out before `write` (with one warning per kind).
/// - A transient error (or a panic) makes the dispatcher retry with backoff; the same batch (or a
///   replay from the local store that starts at the same sequence number) is delivered again.
///   A permanent error skips the batch and is reported by `finish`.
/// - `open` failing transiently is retried too: events wait in the local store.
/// - `close` may be called after a failed `open`; it must not panic.
/// - **Delivery is at least once across processes, made exactly once by
///   [`resume_point`](Tracker::resume_point).** Within a process every event reaches `write` once,
///   in order. The record of what a tracker durably holds (its cursor in `cursors.json`) is a file
///   of its own, written after a successful `flush` or `close` and at most once a second, so after
///   a crash (kill -9, power loss) a tracker may already hold events past its cursor. Right after
///   `open`, the dispatcher (and [`sync_run`](crate::sync_run)) asks `resume_point` and replays
///   from `max(cursor, resume_point) + 1`. A tracker that can tell what it holds (e.g. by recording
///   the last sequence number next to its data, durably with it) returns it and is never sent an
///   event twice; one that cannot keeps the default `None` and may see the events between its
///   cursor and the crash again (its `write` should then tolerate them: MLflow deduplicates
///   identical metric rows, for instance).
/// - `resume_point` must not be below the last sequence number acknowledged by a successful
///   `flush` or `close` of an earlier process (the cursor), and must not claim events the tracker
///   could lose: returning `Some(n)` means "I durably hold every event up to `n` of this run, and
///   none after it". Values past the end of the local log are clamped to it.
pub trait Tracker: Send {
    /// Short stable name, e.g. `"tensorboard"`; used for the delivered-offset cursor and in logs.
    fn name(&self) -> &str;

    /// Whether this tracker handles events of `kind`.
    fn supports(&self, kind: EventKind) -> bool;

    /// Opens the run (create remote run, open files).
    fn open(&mut self, ctx: &RunContext) -> Result<(), TrackerError>;

    /// Writes a batch of events (already filtered to supported kinds, possibly empty).
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError>;

    /// Makes everything written so far durable / visible.
    fn flush(&mut self) -> Result<(), TrackerError>;

    /// Ends the run with `status`. Called once.
    fn close(&mut self, status: RunStatus) -> Result<(), TrackerError>;

    /// A handle that makes this tracker's blocking calls give up promptly, called from the
    /// dispatcher thread when the finish timeout has passed. Asked once at registration; the
    /// default is none (the dispatcher then leaves a stuck tracker's thread behind).
    fn canceller(&self) -> Option<Canceller> {
        None
    }

    /// The highest sequence number of this run that the tracker durably holds from earlier
    /// processes, or `None` when it cannot tell (the default). Asked once, right after a
    /// successful [`open`](Tracker::open); replay then starts after the larger of this and the
    /// tracker's cursor, so events it stored before a crash are not sent again. See the trait's
    /// "Contract" section for what a tracker promises by returning `Some`.
    fn resume_point(&mut self) -> Option<u64> {
        None
    }
}

impl<T: Tracker + ?Sized> Tracker for Box<T> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn supports(&self, kind: EventKind) -> bool {
        (**self).supports(kind)
    }
    fn open(&mut self, ctx: &RunContext) -> Result<(), TrackerError> {
        (**self).open(ctx)
    }
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError> {
        (**self).write(batch)
    }
    fn flush(&mut self) -> Result<(), TrackerError> {
        (**self).flush()
    }
    fn close(&mut self, status: RunStatus) -> Result<(), TrackerError> {
        (**self).close(status)
    }
    fn canceller(&self) -> Option<Canceller> {
        (**self).canceller()
    }
    fn resume_point(&mut self) -> Option<u64> {
        (**self).resume_point()
    }
}
