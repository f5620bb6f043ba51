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
//! A worker whose queue is full (slow or failing backend) simply misses live batches: it notices the
//! gap from the sequence numbers and replays the missing events from `events.jsonl`, so nothing is
//! dropped and the dispatcher never waits for a backend.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{
    Receiver, RecvTimeoutError, Sender, TrySendError, bounded, select, unbounded,
};

use crate::event::{Event, EventKind, now_ms};
use crate::metadata::{ExperimentMetadata, RunStatus};
use crate::store::{LogTail, RunWriter, SeqIndex, write_cursors};
use crate::tracker::{Batch, RunContext, Tracker, TrackerError};

/// Most events handed to trackers in one batch.
pub(crate) const MAX_BATCH: usize = 4096;
/// Most bytes of events ([`Event::approx_bytes`]) in one batch (a batch holds at least one event).
pub(crate) const MAX_BATCH_BYTES: usize = 8 << 20;
/// Live batches queued per worker before it falls back to replaying from the log.
const WORKER_QUEUE: usize = 64;
/// Live bytes queued per worker before it falls back to replaying from the log: a slow backend
/// holds at most this much of the run's payload in memory (plus the batch it is writing).
pub(crate) const WORKER_QUEUE_BYTES: usize = 64 << 20;

/// Byte accounting of the caller → dispatcher queue (the channel bounds messages; this bounds
/// their payload).
#[derive(Debug)]
pub(crate) struct QueueBytes {
    used: AtomicUsize,
    max: usize,
    /// False once the dispatcher thread is gone (then nobody frees room).
    alive: AtomicBool,
}

/// The sending side of the caller → dispatcher queue, shared by the handle and the sampler.
#[derive(Clone)]
pub(crate) struct Queue {
    tx: Sender<Msg>,
    bytes: Arc<QueueBytes>,
}

impl Queue {
    /// A queue of `capacity` messages and `max_bytes` bytes; the receiver and the accounting go to
    /// the dispatcher.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
    ) -> (Queue, Receiver<Msg>, Arc<QueueBytes>) {
        let (tx, rx) = bounded(capacity);
        let bytes = Arc::new(QueueBytes {
            used: AtomicUsize::new(0),
            max: max_bytes.max(1),
            alive: AtomicBool::new(true),
        });
        (
            Queue {
                tx,
                bytes: Arc::clone(&bytes),
            },
            rx,
            bytes,
        )
    }

    /// Enqueues a message. An event first waits for room in bytes: only while the queue already
    /// holds more than its byte bound of events that the dispatcher has not taken yet (it takes
    /// them before writing anything, so the wait is for that hand-off, not for disk or network).
    /// An event larger than the whole bound goes through once the queue is empty.
    pub(crate) fn send(&self, msg: Msg) -> Result<(), ()> {
        let n = match &msg {
            Msg::Event(e) => e.approx_bytes(),
            _ => 0,
        };
        if n > 0 {
            self.reserve(n)?;
        }
        self.tx.send(msg).map_err(|_| {
            self.bytes.release(n);
        })
    }

    fn reserve(&self, n: usize) -> Result<(), ()> {
        let b = &self.bytes;
        let mut wait = Duration::from_micros(50);
        loop {
            let used = b.used.load(Ordering::SeqCst);
            if used == 0 || used.saturating_add(n) <= b.max {
                if b.used
                    .compare_exchange(
                        used,
                        used.saturating_add(n),
                        Ordering::SeqCst,
                        Ordering::SeqCst,
                    )
                    .is_ok()
                {
                    return Ok(());
                }
                continue;
            }
            if !b.alive.load(Ordering::SeqCst) {
                return Err(());
            }
            std::thread::sleep(wait);
            wait = (wait * 2).min(Duration::from_millis(2));
        }
    }
}

impl QueueBytes {
    pub(crate) fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                Some(u.saturating_sub(n))
            });
    }

    /// Bytes of events in the queue now.
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// Marks the queue's dispatcher gone when dropped (also when its thread panics).
struct Alive(Arc<QueueBytes>);

impl Drop for Alive {
    fn drop(&mut self) {
        self.0.alive.store(false, Ordering::SeqCst);
    }
}
/// Longest wait between retries of a failing tracker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// A message from the caller's handle to the dispatcher.
pub(crate) enum Msg {
    Event(Event),
    Flush(Sender<FlushAck>),
    Finish(RunStatus, Sender<FinishReport>),
}

/// One acknowledgement of a flush (from the store or a tracker).
#[derive(Debug)]
pub(crate) struct FlushAck {
    pub(crate) name: String,
    pub(crate) error: Option<String>,
}

/// How one tracker fared, reported by `finish`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendReport {
    /// Tracker name.
    pub name: String,
    /// Last sequence number it durably stored (acknowledged by a successful flush or close).
    pub delivered_seq: u64,
    /// Last sequence number of the run.
    pub last_seq: u64,
    /// Whether it received every event and was closed.
    pub complete: bool,
    /// Errors it reported (permanent errors skip their batch; transient ones that outlived the
    /// finish timeout leave events in the spool).
    pub errors: Vec<String>,
}

/// What `finish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishReport {
    /// The run directory.
    pub run_dir: PathBuf,
    /// The final status recorded.
    pub status: RunStatus,
    /// Sequence number of the last event in the local store.
    pub last_seq: u64,
    /// Per tracker.
    pub backends: Vec<BackendReport>,
    /// Errors of the local store itself.
    pub store_errors: Vec<String>,
}

impl BackendReport {
    /// Whether this tracker received every event, was closed and reported no error.
    pub fn is_ok(&self) -> bool {
        self.complete && self.errors.is_empty()
    }

    /// Events of the run this tracker has not durably stored: they are only in the local store
    /// (`events.jsonl`) until a sync delivers them.
    pub fn undelivered(&self) -> u64 {
        self.last_seq.saturating_sub(self.delivered_seq)
    }

    /// Whether the tracker stored nothing of the run.
    pub fn got_nothing(&self) -> bool {
        self.delivered_seq == 0 && self.last_seq > 0
    }

    /// The first error it reported (usually the cause of the others), with a count of the rest.
    pub fn cause(&self) -> Option<String> {
        let first = self.errors.first()?;
        Some(match self.errors.len() {
            1 => first.clone(),
            n => format!("{first} (and {} more error(s))", n - 1),
        })
    }
}

impl FinishReport {
    /// Whether the store and every tracker got everything without error.
    pub fn is_complete(&self) -> bool {
        self.store_errors.is_empty() && self.backends.iter().all(BackendReport::is_ok)
    }

    /// The report of the tracker called `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendReport> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// Whether the tracker called `name` received the whole run (false for an unknown name).
    pub fn reached(&self, name: &str) -> bool {
        self.backend(name).is_some_and(|b| b.complete)
    }

    /// One line per problem, for printing at the end of a run (empty when
    /// [`is_complete`](Self::is_complete)): each failed tracker with its cause, how many events are
    /// only in the local store, and the command that delivers them later
    /// (`exptrack sync RUN_DIR --to NAME`); then each error of the local store.
    ///
    /// ```
    /// # use exptrack_core::{BackendReport, FinishReport, RunStatus};
    /// let report = FinishReport {
    ///     run_dir: "runs/demo/r1".into(),
    ///     status: RunStatus::Completed,
    ///     last_seq: 49,
    ///     backends: vec![BackendReport {
    ///         name: "mlflow".into(),
    ///         delivered_seq: 0,
    ///         last_seq: 49,
    ///         complete: false,
    ///         errors: vec!["open failed: HTTP 401".into()],
    ///     }],
    ///     store_errors: vec![],
    /// };
    /// let lines = report.problem_lines();
    /// assert_eq!(lines.len(), 1);
    /// assert!(lines[0].starts_with("mlflow: FAILED, nothing delivered: open failed: HTTP 401;"));
    /// assert!(lines[0].contains("all 49 events are only in the local store"));
    /// assert!(lines[0].contains("exptrack sync runs/demo/r1 --to mlflow"));
    /// ```
    pub fn problem_lines(&self) -> Vec<String> {
        self.problem_lines_with(|name| name.to_owned())
    }

    /// [`problem_lines`](Self::problem_lines) with the `--to` argument of the sync command chosen
    /// per tracker name (e.g. `mlflow=http://host:5000` when the URI is not in the environment).
    pub fn problem_lines_with(&self, sync_target: impl Fn(&str) -> String) -> Vec<String> {
        let mut lines = Vec::new();
        for b in &self.backends {
            if b.is_ok() {
                continue;
            }
            let state = if b.complete {
                "delivered with errors".to_owned()
            } else if b.got_nothing() {
                "FAILED, nothing delivered".to_owned()
            } else {
                format!(
                    "FAILED, {} of {} events delivered",
                    b.delivered_seq, b.last_seq
                )
            };
            let mut line = format!("{}: {state}", b.name);
            match b.cause() {
                Some(c) => line.push_str(&format!(": {}", c.replace(['\n', '\r'], " "))),
                None if !b.complete => line.push_str(": did not finish in time"),
                None => {}
            }
            if b.undelivered() > 0 {
                let how_many = if b.got_nothing() {
                    format!("all {} events are", b.undelivered())
                } else if b.undelivered() == 1 {
                    "1 event is".to_owned()
                } else {
                    format!("{} events are", b.undelivered())
                };
                line.push_str(&format!(
                    "; {how_many} only in the local store ({}); deliver them with `exptrack sync {} --to {}`",
                    self.run_dir.join("events.jsonl").display(),
                    self.run_dir.display(),
                    sync_target(&b.name)
                ));
            }
            lines.push(line);
        }
        for e in &self.store_errors {
            lines.push(format!("local store: {}", e.replace(['\n', '\r'], " ")));
        }
        lines
    }
}

impl std::fmt::Display for FinishReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "run {} finished as {} with {} events",
            self.run_dir.display(),
            self.status,
            self.last_seq
        )?;
        for line in self.problem_lines() {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Shared between a worker and the dispatcher.
#[derive(Debug, Default)]
pub(crate) struct WorkerShared {
    /// Last sequence number the tracker has durably stored (acknowledged by a successful
    /// `flush` or `close`, not just `write`): what `cursors.json` records.
    pub(crate) durable: AtomicU64,
    /// Events this tracker will never get (missed live and not in the log).
    pub(crate) lost: AtomicU64,
    /// Bytes of live batches waiting in its queue.
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) errors: Mutex<Vec<String>>,
}

impl WorkerShared {
    fn push_error(&self, e: String) {
        if let Ok(mut v) = self.errors.lock() {
            if v.len() < 100 {
                v.push(e);
            } else if v.len() == 100 {
                v.push("(further errors omitted)".to_owned());
            }
        }
    }
}

struct DataBatch {
    first_seq: u64,
    events: Arc<Vec<Event>>,
    bytes: usize,
}

enum Ctrl {
    Flush {
        upto: u64,
        reply: Sender<FlushAck>,
    },
    Close {
        status: RunStatus,
        upto: u64,
        deadline: Instant,
        reply: Sender<BackendReport>,
    },
}

pub(crate) struct WorkerHandle {
    name: String,
    canceller: Option<crate::tracker::Canceller>,
    supported: [bool; EventKind::COUNT],
    data_tx: Sender<DataBatch>,
    ctrl_tx: Sender<Ctrl>,
    join: Option<JoinHandle<()>>,
    shared: Arc<WorkerShared>,
}

/// Settings the dispatcher needs.
pub(crate) struct DispatchSettings {
    pub(crate) finish_timeout: Duration,
}

pub(crate) fn spawn_worker(
    tracker: Box<dyn Tracker>,
    ctx: RunContext,
    start_delivered: u64,
    writer: &RunWriter,
    flush_interval: Duration,
) -> std::io::Result<WorkerHandle> {
    let name = tracker.name().to_owned();
    let canceller = tracker.canceller();
    let mut supported = [false; EventKind::COUNT];
    for k in EventKind::ALL {
        supported[k.index()] = tracker.supports(k);
    }
    let (data_tx, data_rx) = bounded(WORKER_QUEUE);
    let (ctrl_tx, ctrl_rx) = unbounded();
    let shared = Arc::new(WorkerShared::default());
    shared.durable.store(start_delivered, Ordering::SeqCst);
    let worker = Worker {
        tracker,
        name: name.clone(),
        ctx,
        data_rx,
        ctrl_rx,
        pending: VecDeque::new(),
        shared: Arc::clone(&shared),
        delivered: start_delivered,
        opened: false,
        poisoned: false,
        dirty: false,
        last_flush: Instant::now(),
        flush_interval,
        log_path: writer.events_path().to_path_buf(),
        index: writer.index(),
        tail: None,
        deadline: None,
        failures: 0,
    };
    let join = std::thread::Builder::new()
        .name(format!("exptrack-{name}"))
        .spawn(move || worker.run())?;
    Ok(WorkerHandle {
        name,
        canceller,
        supported,
        data_tx,
        ctrl_tx,
        join: Some(join),
        shared,
    })
}

struct Worker {
    tracker: Box<dyn Tracker>,
    name: String,
    ctx: RunContext,
    data_rx: Receiver<DataBatch>,
    ctrl_rx: Receiver<Ctrl>,
    pending: VecDeque<Ctrl>,
    shared: Arc<WorkerShared>,
    delivered: u64,
    opened: bool,
    poisoned: bool,
    dirty: bool,
    last_flush: Instant,
    flush_interval: Duration,
    log_path: PathBuf,
    index: Arc<Mutex<SeqIndex>>,
    tail: Option<(LogTail, u64)>,
    deadline: Option<Instant>,
    failures: u32,
}

/// Why delivery stopped.
enum Stop {
    /// The deadline passed or the tracker is disabled.
    GaveUp,
}

impl Worker {
    fn run(mut self) {
        loop {
            if let Some(c) = self.pending.pop_front() {
                if self.handle_ctrl(c) {
                    return;
                }
                continue;
            }
            select! {
                recv(self.ctrl_rx) -> c => match c {
                    Ok(c) => self.pending.push_back(c),
                    Err(_) => return,
                },
                recv(self.data_rx) -> b => match b {
                    Ok(b) => {
                        self.shared.queued_bytes.fetch_sub(b.bytes, Ordering::SeqCst);
                        let _ = self.deliver(b.first_seq, &b.events);
                    }
                    Err(_) => return,
                },
                default(Duration::from_millis(200)) => self.maybe_flush(),
            }
        }
    }

    fn maybe_flush(&mut self) {
        if self.dirty && !self.poisoned && self.last_flush.elapsed() >= self.flush_interval {
            let _ = self.call_flush();
        }
    }

    fn call_flush(&mut self) -> Result<(), String> {
        self.dirty = false;
        self.last_flush = Instant::now();
        if !self.opened || self.poisoned {
            return Ok(());
        }
        let upto = self.delivered;
        match catch_unwind(AssertUnwindSafe(|| self.tracker.flush())) {
            Ok(Ok(())) => {
                self.shared.durable.store(upto, Ordering::SeqCst);
                Ok(())
            }
            Ok(Err(e)) => {
                tracing::warn!(backend = %self.name, error = %e, "flush failed");
                Err(e.to_string())
            }
            Err(_) => {
                self.poison("panicked in flush");
                Err("panicked in flush".to_owned())
            }
        }
    }

    fn poison(&mut self, what: &str) {
        self.poisoned = true;
        let msg = format!("{what}; tracker disabled for the rest of the run");
        tracing::error!(backend = %self.name, "{msg}");
        self.shared.push_error(msg);
    }

    /// Returns true when the worker should exit.
    fn handle_ctrl(&mut self, c: Ctrl) -> bool {
        match c {
            Ctrl::Flush { upto, reply } => {
                let caught_up = self.catch_up(upto).is_ok();
                let error = match self.call_flush() {
                    Err(e) => Some(e),
                    Ok(()) if !caught_up => {
                        Some(format!("delivered {} of {upto} events", self.delivered))
                    }
                    Ok(()) => None,
                };
                let _ = reply.send(FlushAck {
                    name: self.name.clone(),
                    error,
                });
                false
            }
            Ctrl::Close {
                status,
                upto,
                deadline,
                reply,
            } => {
                self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)));
                let caught_up = self.catch_up(upto).is_ok() && self.delivered >= upto;
                let mut closed = false;
                if self.opened && !self.poisoned {
                    match catch_unwind(AssertUnwindSafe(|| self.tracker.close(status))) {
                        Ok(Ok(())) => {
                            closed = true;
                            self.shared.durable.store(self.delivered, Ordering::SeqCst);
                        }
                        Ok(Err(e)) => self.shared.push_error(format!("close failed: {e}")),
                        Err(_) => self.poison("panicked in close"),
                    }
                }
                let errors = self
                    .shared
                    .errors
                    .lock()
                    .map(|v| v.clone())
                    .unwrap_or_default();
                let _ = reply.send(BackendReport {
                    name: self.name.clone(),
                    delivered_seq: self.shared.durable.load(Ordering::SeqCst),
                    last_seq: upto,
                    complete: caught_up && closed && self.shared.lost.load(Ordering::SeqCst) == 0,
                    errors,
                });
                true
            }
        }
    }

    /// Waits `d` (or until the deadline), still accepting control messages.
    fn pause(&mut self, d: Duration) -> Result<(), Stop> {
        let until = crate::clock::after(d);
        loop {
            let now = Instant::now();
            if let Some(dl) = self.deadline
                && now >= dl
            {
                return Err(Stop::GaveUp);
            }
            let mut wake = until;
            if let Some(dl) = self.deadline {
                wake = wake.min(dl);
            }
            if now >= until {
                return Ok(());
            }
            match self
                .ctrl_rx
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(c) => {
                    if let Ctrl::Close { deadline, .. } = &c {
                        self.deadline = Some(self.deadline.map_or(*deadline, |x| x.min(*deadline)));
                    }
                    self.pending.push_back(c);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(wake.saturating_duration_since(now))
                }
            }
        }
    }

    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let base = Duration::from_millis(100)
            .saturating_mul(1u32 << self.failures.min(10).saturating_sub(1))
            .min(MAX_BACKOFF);
        // ±25 % jitter.
        let jitter = 0.75 + rand::random::<f64>() * 0.5;
        base.mul_f64(jitter)
    }

    fn ensure_open(&mut self) -> Result<(), Stop> {
        while !self.opened {
            if self.poisoned {
                return Err(Stop::GaveUp);
            }
            match catch_unwind(AssertUnwindSafe(|| self.tracker.open(&self.ctx))) {
                Ok(Ok(())) => {
                    self.opened = true;
                    self.failures = 0;
                }
                Ok(Err(e)) if e.is_transient() => {
                    self.log_transient("open", &e);
                    let d = self.backoff();
                    self.pause(d)?;
                }
                Ok(Err(e)) => {
                    self.poison(&format!("open failed: {e}"));
                    return Err(Stop::GaveUp);
                }
                Err(_) => {
                    self.poison("panicked in open");
                    return Err(Stop::GaveUp);
                }
            }
        }
        Ok(())
    }

    fn log_transient(&self, what: &str, e: &TrackerError) {
        // First failure and then every 10th, so an outage does not flood the log.
        if self.failures.is_multiple_of(10) {
            tracing::warn!(
                backend = %self.name,
                error = %e,
                retries = self.failures,
                "{what} failed; retrying (events wait in the local store)"
            );
        }
    }

    /// Delivers a live batch, replaying any gap before it from the log.
    fn deliver(&mut self, first_seq: u64, events: &[Event]) -> Result<(), Stop> {
        if events.is_empty() || self.poisoned {
            return Ok(());
        }
        let last = first_seq + events.len() as u64 - 1;
        if last <= self.delivered {
            return Ok(());
        }
        if first_seq > self.delivered + 1 {
            self.catch_up(first_seq - 1)?;
        }
        let skip = (self.delivered + 1).saturating_sub(first_seq) as usize;
        let slice = events.get(skip..).unwrap_or(&[]);
        self.write_with_retry(first_seq + skip as u64, slice)
    }

    /// Replays from the log until `upto` is delivered.
    fn catch_up(&mut self, upto: u64) -> Result<(), Stop> {
        while self.delivered < upto {
            if self.poisoned {
                return Err(Stop::GaveUp);
            }
            let from = self.delivered + 1;
            let events = match self.read_log(from, upto) {
                Ok(ev) => ev,
                Err(e) => {
                    self.shared
                        .push_error(format!("cannot replay events from seq {from}: {e}"));
                    self.poisoned = true;
                    return Err(Stop::GaveUp);
                }
            };
            if events.is_empty() {
                let broken_at = self.index.lock().ok().and_then(|i| i.broken_at);
                match broken_at {
                    // Never going to be in the log: report the events as not delivered and go
                    // on with the next ones, so one gap does not stop the backend.
                    Some(at) if from >= at => {
                        self.lost(from, upto);
                        return Ok(());
                    }
                    // Not in the log yet (a write is being retried): try again later.
                    _ => return Err(Stop::GaveUp),
                }
            }
            self.write_with_retry(from, &events)?;
        }
        Ok(())
    }

    /// Records events `from..=upto` as never delivered to this tracker (they missed the live
    /// queue and are not in the log) and moves past them.
    fn lost(&mut self, from: u64, upto: u64) {
        let n = upto - from + 1;
        self.shared.lost.fetch_add(n, Ordering::SeqCst);
        let msg = format!(
            "events {from}..={upto} ({n}) not delivered: they missed the live queue and are not in \
             the local log, which could not be written (see the local store's errors)"
        );
        tracing::error!(backend = %self.name, "{msg}");
        self.shared.push_error(msg);
        self.delivered = upto;
        self.dirty = true;
    }

    fn read_log(&mut self, from: u64, upto: u64) -> crate::error::Result<Vec<Event>> {
        let positioned = matches!(&self.tail, Some((_, next)) if *next == from);
        if !positioned {
            let offset = self
                .index
                .lock()
                .map(|idx| idx.offset_for(from))
                .unwrap_or(0);
            self.tail = Some((LogTail::open(&self.log_path, offset)?, from));
        }
        let Some((tail, next)) = self.tail.as_mut() else {
            return Ok(Vec::new());
        };
        let events = tail.read(from, upto, 1000)?;
        *next = from + events.len() as u64;
        Ok(events)
    }

    fn write_with_retry(&mut self, first_seq: u64, events: &[Event]) -> Result<(), Stop> {
        if events.is_empty() {
            return Ok(());
        }
        self.ensure_open()?;
        let batch = Batch { first_seq, events };
        loop {
            if self.poisoned {
                return Err(Stop::GaveUp);
            }
            match catch_unwind(AssertUnwindSafe(|| self.tracker.write(&batch))) {
                Ok(Ok(())) => {
                    self.ack(batch.last_seq());
                    return Ok(());
                }
                Ok(Err(e)) if e.is_transient() => {
                    self.log_transient("write", &e);
                    let d = self.backoff();
                    self.pause(d)?;
                }
                Ok(Err(e)) => {
                    let msg = format!(
                        "events {}..={} rejected: {e}",
                        batch.first_seq,
                        batch.last_seq()
                    );
                    tracing::error!(backend = %self.name, "{msg}");
                    self.shared.push_error(msg);
                    self.ack(batch.last_seq());
                    return Ok(());
                }
                Err(_) => {
                    self.poison(&format!(
                        "panicked while writing events {}..={}",
                        batch.first_seq,
                        batch.last_seq()
                    ));
                    return Err(Stop::GaveUp);
                }
            }
        }
    }

    fn ack(&mut self, seq: u64) {
        if self.failures > 0 {
            tracing::info!(backend = %self.name, "delivery recovered");
        }
        self.failures = 0;
        self.delivered = seq;
        self.dirty = true;
    }
}

/// The dispatcher thread's state.
pub(crate) struct Dispatcher {
    pub(crate) rx: Receiver<Msg>,
    pub(crate) queue_bytes: Arc<QueueBytes>,
    pub(crate) writer: RunWriter,
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) metadata: ExperimentMetadata,
    pub(crate) config: toml::Table,
    pub(crate) settings: DispatchSettings,
    pub(crate) store_errors: Vec<String>,
    pub(crate) warned: [bool; EventKind::COUNT],
    pub(crate) finished: Arc<AtomicBool>,
    pub(crate) last_cursors: BTreeMap<String, u64>,
}

impl Dispatcher {
    pub(crate) fn run(mut self) {
        let _alive = Alive(Arc::clone(&self.queue_bytes));
        let mut batch: Vec<Event> = Vec::new();
        let mut last_tick = Instant::now();
        let mut last_summary = Instant::now();
        loop {
            let msg = match self.rx.recv_timeout(Duration::from_millis(500)) {
                Ok(m) => Some(m),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => {
                    // Every handle is gone without finish (should not happen: the guard finishes).
                    self.finish(RunStatus::Failed, None);
                    return;
                }
            };
            let mut control = None;
            if let Some(m) = msg {
                match m {
                    Msg::Event(e) => {
                        // Taking an event off the queue frees its bytes at once: a caller waiting
                        // for room waits for this hand-off only, never for the writes below.
                        let mut batch_bytes = e.approx_bytes();
                        self.queue_bytes.release(batch_bytes);
                        batch.push(e);
                        while batch.len() < MAX_BATCH && batch_bytes < MAX_BATCH_BYTES {
                            match self.rx.try_recv() {
                                Ok(Msg::Event(e)) => {
                                    let n = e.approx_bytes();
                                    self.queue_bytes.release(n);
                                    batch_bytes += n;
                                    batch.push(e);
                                }
                                Ok(other) => {
                                    control = Some(other);
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    other => control = Some(other),
                }
            }
            if !batch.is_empty() {
                self.dispatch(std::mem::take(&mut batch));
            }
            if let Some(c) = control {
                match c {
                    Msg::Event(_) => {}
                    Msg::Flush(reply) => self.flush(reply),
                    Msg::Finish(status, reply) => {
                        self.finish(status, Some(reply));
                        return;
                    }
                }
            }
            if last_tick.elapsed() >= Duration::from_secs(1) {
                last_tick = Instant::now();
                self.save_cursors();
            }
            if last_summary.elapsed() >= Duration::from_secs(5) {
                last_summary = Instant::now();
                if let Err(e) = self.writer.write_summary() {
                    self.store_error(format!("writing summary: {e}"));
                }
            }
        }
    }

    fn store_error(&mut self, e: String) {
        if self.store_errors.len() < 20 {
            tracing::error!("local store: {e}");
            self.store_errors.push(e);
        }
    }

    fn dispatch(&mut self, mut events: Vec<Event>) {
        // The batch gets its sequence numbers here, once: the numbers fanned out below are the
        // ones in the log (or that the log would have, had the write not failed).
        let appended = self.writer.append(&mut events);
        for d in appended.dropped {
            self.store_error(d);
        }
        if let Some(e) = appended.error {
            self.store_error(e);
        }
        if events.is_empty() {
            return;
        }
        let first_seq = appended.first_seq;
        // One warning per kind a tracker does not support.
        let mut present = [false; EventKind::COUNT];
        for e in &events {
            present[e.kind().index()] = true;
        }
        for w in &self.workers {
            for k in EventKind::ALL {
                let i = k.index();
                if present[i] && !w.supported[i] && !self.warned[i] {
                    tracing::warn!(backend = %w.name, kind = %k, "backend does not support this event kind; such events are skipped for it");
                }
            }
        }
        for k in EventKind::ALL {
            let i = k.index();
            if present[i] && self.workers.iter().any(|w| !w.supported[i]) {
                self.warned[i] = true;
            }
        }
        let bytes: usize = events.iter().map(Event::approx_bytes).sum();
        let events = Arc::new(events);
        for w in &self.workers {
            // A worker holding too much already catches up from the log instead.
            let queued = w.shared.queued_bytes.load(Ordering::SeqCst);
            if queued > 0 && queued.saturating_add(bytes) > WORKER_QUEUE_BYTES {
                continue;
            }
            let b = DataBatch {
                first_seq,
                events: Arc::clone(&events),
                bytes,
            };
            w.shared.queued_bytes.fetch_add(bytes, Ordering::SeqCst);
            match w.data_tx.try_send(b) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    w.shared.queued_bytes.fetch_sub(bytes, Ordering::SeqCst);
                }
            }
        }
    }

    fn flush(&mut self, reply: Sender<FlushAck>) {
        let mut error = None;
        if let Err(e) = self.writer.sync() {
            error = Some(e.to_string());
            self.store_error(format!("syncing: {e}"));
        }
        if let Err(e) = self.writer.write_summary() {
            self.store_error(format!("writing summary: {e}"));
        }
        self.save_cursors();
        let upto = self.writer.last_seq();
        for w in &self.workers {
            let _ = w.ctrl_tx.send(Ctrl::Flush {
                upto,
                reply: reply.clone(),
            });
        }
        let _ = reply.send(FlushAck {
            name: "local".to_owned(),
            error,
        });
    }

    fn save_cursors(&mut self) {
        let mut cursors = self.last_cursors.clone();
        for w in &self.workers {
            cursors.insert(w.name.clone(), w.shared.durable.load(Ordering::SeqCst));
        }
        if cursors != self.last_cursors {
            // The log first: a cursor must never point past the durable log, or after a power
            // loss the events that reuse those sequence numbers would be skipped for the backend.
            if let Err(e) = self.writer.sync() {
                self.store_error(format!("syncing before writing cursors: {e}"));
                return;
            }
            match write_cursors(&self.ctx_dir(), &cursors) {
                Ok(()) => self.last_cursors = cursors,
                Err(e) => self.store_error(format!("writing cursors: {e}")),
            }
        }
    }

    fn ctx_dir(&self) -> PathBuf {
        self.writer
            .events_path()
            .parent()
            .map(|p| p.to_path_buf())
            .unwrap_or_default()
    }

    fn finish(&mut self, status: RunStatus, reply: Option<Sender<FinishReport>>) {
        self.finished.store(true, Ordering::SeqCst);
        self.dispatch(vec![Event::Status {
            status,
            timestamp_ms: now_ms(),
        }]);
        self.metadata.status = status;
        self.metadata.end_time = Some(chrono::Utc::now());
        if let Err(e) = self.writer.sync_final(true) {
            self.store_error(format!("syncing: {e}"));
        }
        if let Err(e) = self.writer.write_summary() {
            self.store_error(format!("writing summary: {e}"));
        }
        if let Err(e) = self.writer.write_metadata(&self.metadata) {
            self.store_error(format!("writing metadata: {e}"));
        }
        if status == RunStatus::Completed
            && let Err(e) = self.writer.write_results(&self.metadata, &self.config)
        {
            self.store_error(format!("writing results: {e}"));
        }
        let upto = self.writer.last_seq();
        let deadline = crate::clock::after(self.settings.finish_timeout);
        let (rtx, rrx) = unbounded();
        for w in &self.workers {
            let _ = w.ctrl_tx.send(Ctrl::Close {
                status,
                upto,
                deadline,
                reply: rtx.clone(),
            });
        }
        drop(rtx);
        let mut reports: BTreeMap<String, BackendReport> = BTreeMap::new();
        let mut cancelled = false;
        let grace = crate::clock::add(deadline, Duration::from_secs(2));
        while reports.len() < self.workers.len() {
            let now = Instant::now();
            if now >= deadline && !cancelled {
                // Ask trackers still working to give up their blocking calls.
                cancelled = true;
                for w in &self.workers {
                    if !reports.contains_key(&w.name)
                        && let Some(c) = &w.canceller
                    {
                        c();
                    }
                }
            }
            let wake = if cancelled { grace } else { deadline };
            match rrx.recv_timeout(wake.saturating_duration_since(now)) {
                Ok(r) => {
                    reports.insert(r.name.clone(), r);
                }
                Err(RecvTimeoutError::Timeout) if !cancelled => {}
                Err(_) => break,
            }
        }
        let mut backends = Vec::new();
        for w in &mut self.workers {
            match reports.remove(&w.name) {
                Some(r) => {
                    if let Some(j) = w.join.take() {
                        let _ = j.join();
                    }
                    backends.push(r);
                }
                None => {
                    let mut errors = w
                        .shared
                        .errors
                        .lock()
                        .map(|v| v.clone())
                        .unwrap_or_default();
                    errors.push(format!(
                        "did not finish within {:?} (hung?); left running in the background",
                        self.settings.finish_timeout
                    ));
                    backends.push(BackendReport {
                        name: w.name.clone(),
                        delivered_seq: w.shared.durable.load(Ordering::SeqCst),
                        last_seq: upto,
                        complete: false,
                        errors,
                    });
                }
            }
        }
        self.save_cursors();
        let report = FinishReport {
            run_dir: self.ctx_dir(),
            status,
            last_seq: upto,
            backends,
            store_errors: self.store_errors.clone(),
        };
        if !report.is_complete() {
            tracing::warn!("{report}");
        }
        if let Some(r) = reply {
            let _ = r.send(report);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(bytes: usize) -> Msg {
        Msg::Event(Event::Image {
            step: 0,
            timestamp_ms: 0,
            tag: String::new(),
            width: 1,
            height: 1,
            channels: 4,
            png: vec![0; bytes],
        })
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_and_waits_only_for_the_hand_off() {
        let (q, rx, bytes) = Queue::new(1000, 1 << 20);
        let sender = std::thread::spawn(move || {
            for _ in 0..16 {
                q.send(image(256 << 10)).unwrap();
            }
        });
        // Nobody takes events: the sender stops after the bound (4 × 256 KiB < 1 MiB + an event).
        std::thread::sleep(Duration::from_millis(200));
        assert!(bytes.used() <= (1 << 20), "{}", bytes.used());
        assert!(rx.len() <= 4, "{} queued", rx.len());
        // Taking them off (as the dispatcher does, before any write) lets it go on.
        let mut got = 0;
        while got < 16 {
            if let Ok(Msg::Event(e)) = rx.recv_timeout(Duration::from_secs(5)) {
                bytes.release(e.approx_bytes());
                got += 1;
            }
        }
        sender.join().unwrap();
        assert_eq!(bytes.used(), 0);
    }

    #[test]
    fn a_gone_dispatcher_does_not_leave_a_sender_waiting() {
        let (q, rx, bytes) = Queue::new(1000, 1 << 10);
        q.send(image(4 << 10)).unwrap(); // larger than the bound, alone: goes through
        let alive = Alive(Arc::clone(&bytes));
        drop(alive);
        drop(rx);
        assert!(q.send(image(4 << 10)).is_err());
    }
}
