//! One worker thread per tracker: live batches in, gaps replayed from the log, retries with
//! backoff, panics contained, flush and close on request.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, bounded, select, unbounded};

use crate::event::{Event, EventKind};
use crate::metadata::RunStatus;
use crate::store::{LogTail, RunWriter, SeqIndex};
use crate::tracker::{Batch, RunContext, Tracker, TrackerError};

use super::queue::FlushAck;
use super::report::TrackerReport;

/// Live batches queued per worker before it falls back to replaying from the log.
const WORKER_QUEUE: usize = 64;
/// Live bytes queued per worker before it falls back to replaying from the log: a slow backend
/// holds at most this much of the run's payload in memory (plus the batch it is writing).
pub(crate) const WORKER_QUEUE_BYTES: usize = 64 << 20;

/// Longest wait between retries of a failing tracker.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

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

/// A live batch on its way to one worker.
pub(super) struct DataBatch {
    pub(super) first_seq: u64,
    pub(super) events: Arc<Vec<Event>>,
    pub(super) bytes: usize,
}

/// A request from the dispatcher to one worker.
pub(super) enum Ctrl {
    Flush {
        upto: u64,
        reply: Sender<FlushAck>,
    },
    Close {
        status: RunStatus,
        upto: u64,
        deadline: Instant,
        reply: Sender<TrackerReport>,
    },
}

/// The dispatcher's side of one worker.
pub(crate) struct WorkerHandle {
    pub(super) name: String,
    pub(super) canceller: Option<crate::tracker::Canceller>,
    pub(super) supported: [bool; EventKind::COUNT],
    pub(super) data_tx: Sender<DataBatch>,
    pub(super) ctrl_tx: Sender<Ctrl>,
    pub(super) join: Option<JoinHandle<()>>,
    pub(super) shared: Arc<WorkerShared>,
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
        resume_limit: writer.last_seq(),
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
    /// The end of the log when the run was opened: a [`Tracker::resume_point`] can only be about
    /// events of earlier processes, so it is clamped to this.
    resume_limit: u64,
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
                let _ = reply.send(TrackerReport {
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
                    self.skip_held_events()?;
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

    /// Moves past the events the tracker says it already holds from an earlier process
    /// ([`Tracker::resume_point`]), so a replay after a crash does not send them again.
    fn skip_held_events(&mut self) -> Result<(), Stop> {
        let held = match catch_unwind(AssertUnwindSafe(|| self.tracker.resume_point())) {
            Ok(held) => held,
            Err(_) => {
                self.poison("panicked in resume_point");
                return Err(Stop::GaveUp);
            }
        };
        if let Some(held) = held.map(|h| h.min(self.resume_limit))
            && held > self.delivered
        {
            tracing::info!(
                backend = %self.name,
                cursor = self.delivered,
                held,
                "backend already holds events past its cursor; replay starts after them"
            );
            self.delivered = held;
            // Durably held by the tracker's own account: what the cursor records.
            self.shared.durable.store(held, Ordering::SeqCst);
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
        // Opening may have moved past events the tracker already holds (`resume_point`).
        let skip = (self.delivered + 1).saturating_sub(first_seq);
        let Some(events) = usize::try_from(skip)
            .ok()
            .and_then(|skip| events.get(skip..))
            .filter(|rest| !rest.is_empty())
        else {
            return Ok(());
        };
        let first_seq = first_seq + skip;
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
