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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
/// Live batches queued per worker before it falls back to replaying from the log.
const WORKER_QUEUE: usize = 64;
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

impl FinishReport {
    /// Whether the store and every tracker got everything without error.
    pub fn is_complete(&self) -> bool {
        self.store_errors.is_empty()
            && self
                .backends
                .iter()
                .all(|b| b.complete && b.errors.is_empty())
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
        for e in &self.store_errors {
            write!(f, "\n  local store: {e}")?;
        }
        for b in &self.backends {
            if !b.complete {
                write!(
                    f,
                    "\n  {}: {} of {} events delivered; the rest stay in {}/events.jsonl — replay them with \
                     `exptrack sync {} --to {}` (or exptrack_core::store::sync_run)",
                    b.name,
                    b.delivered_seq,
                    b.last_seq,
                    self.run_dir.display(),
                    self.run_dir.display(),
                    b.name
                )?;
            }
            for e in &b.errors {
                write!(f, "\n  {}: {e}", b.name)?;
            }
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
                    Ok(b) => { let _ = self.deliver(b.first_seq, &b.events); }
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
                    complete: caught_up && closed,
                    errors,
                });
                true
            }
        }
    }

    /// Waits `d` (or until the deadline), still accepting control messages.
    fn pause(&mut self, d: Duration) -> Result<(), Stop> {
        let until = Instant::now() + d;
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
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(wake - now),
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
                // Not in the log (the store failed to write it): nothing more we can do.
                return Err(Stop::GaveUp);
            }
            self.write_with_retry(from, &events)?;
        }
        Ok(())
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
                        batch.push(e);
                        while batch.len() < MAX_BATCH {
                            match self.rx.try_recv() {
                                Ok(Msg::Event(e)) => batch.push(e),
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

    fn dispatch(&mut self, events: Vec<Event>) {
        let first_seq = match self.writer.append(&events) {
            Ok(s) => s,
            Err(e) => {
                self.store_error(format!("appending events: {e}"));
                // Fan out anyway so live backends still get the events; replay will not be
                // possible for them.
                self.writer.last_seq() + 1
            }
        };
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
        let events = Arc::new(events);
        for w in &self.workers {
            let b = DataBatch {
                first_seq,
                events: Arc::clone(&events),
            };
            match w.data_tx.try_send(b) {
                Ok(()) | Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {}
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
        if let Err(e) = self.writer.sync() {
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
        let deadline = Instant::now() + self.settings.finish_timeout;
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
        let grace = deadline + Duration::from_secs(2);
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
