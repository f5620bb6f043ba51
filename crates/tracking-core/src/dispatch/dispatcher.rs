//! The dispatcher thread: drains the caller's queue into batches, appends them to the log, fans
//! them out to the workers, saves cursors and summary on timers, and runs `flush` and `finish`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError, unbounded};

use crate::event::{Event, EventKind, now_ms};
use crate::metadata::{ExperimentMetadata, RunStatus};
use crate::store::{CursorFile, RunWriter};

use super::queue::{Alive, FlushAck, Msg, QueueBytes};
use super::report::{FinishReport, TrackerReport};
use super::worker::{Ctrl, DataBatch, WORKER_QUEUE_BYTES, WorkerHandle};

/// Most events handed to trackers in one batch.
pub(crate) const MAX_BATCH: usize = 4096;
/// Most bytes of events ([`Event::approx_bytes`]) in one batch (a batch holds at least one event).
pub(crate) const MAX_BATCH_BYTES: usize = 8 << 20;

/// Settings the dispatcher needs.
pub(crate) struct DispatchSettings {
    pub(crate) finish_timeout: Duration,
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
    /// The one owner of `cursors.json`.
    pub(crate) cursors: CursorFile,
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
                    Msg::SyncLog(reply) => {
                        let error = self.writer.sync().err().map(|e| {
                            self.store_error(format!("syncing: {e}"));
                            e.to_string()
                        });
                        let _ = reply.send(FlushAck {
                            name: "local".to_owned(),
                            error,
                        });
                    }
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

    /// Saves every worker's durable cursor (when one changed), after fsyncing the log: a cursor
    /// must never point past the durable log, or after a power loss the events that reuse those
    /// sequence numbers would be skipped for the backend.
    fn save_cursors(&mut self) {
        let updates: Vec<(String, u64)> = self
            .workers
            .iter()
            .map(|w| (w.name.clone(), w.shared.durable.load(Ordering::SeqCst)))
            .collect();
        let writer = &mut self.writer;
        if let Err(e) = self.cursors.save(updates, || writer.sync()) {
            self.store_error(format!("writing cursors: {e}"));
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
        let mut reports: BTreeMap<String, TrackerReport> = BTreeMap::new();
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
        let mut trackers = Vec::new();
        for w in &mut self.workers {
            match reports.remove(&w.name) {
                Some(r) => {
                    if let Some(j) = w.join.take() {
                        let _ = j.join();
                    }
                    trackers.push(r);
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
                    trackers.push(TrackerReport {
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
            trackers,
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
