//! Test doubles: an in-process tracker that records what it receives and can fail, hang or panic
//! on demand.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exptrack_core::{Batch, Event, EventKind, RunContext, RunStatus, Tracker, TrackerError};

/// What a [`TestTracker`] saw.
#[derive(Debug, Default)]
pub struct Seen {
    pub opened: usize,
    pub events: Vec<(u64, Event)>,
    pub flushes: usize,
    pub closed: Option<RunStatus>,
    pub write_calls: usize,
}

/// Behaviour switches.
#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Fail (transiently) this many write calls first.
    pub fail_first: usize,
    /// Sleep this long in the write call with this (1-based) index.
    pub hang_on_call: Option<(usize, Duration)>,
    /// Sleep this long in every write.
    pub sleep_each: Option<Duration>,
    /// Panic in every write.
    pub panic: bool,
    /// Fail open transiently this many times.
    pub fail_open: usize,
    /// Only these kinds are supported (all when None).
    pub kinds: Option<Vec<EventKind>>,
    /// What [`Tracker::resume_point`] answers (the highest seq it claims to hold already).
    pub resume_point: Option<u64>,
}

pub struct TestTracker {
    pub name: String,
    pub seen: Arc<Mutex<Seen>>,
    pub behaviour: Behaviour,
    calls: AtomicUsize,
    open_calls: usize,
}

impl TestTracker {
    pub fn new(name: &str, behaviour: Behaviour) -> (Self, Arc<Mutex<Seen>>) {
        let seen = Arc::new(Mutex::new(Seen::default()));
        (
            TestTracker {
                name: name.to_owned(),
                seen: Arc::clone(&seen),
                behaviour,
                calls: AtomicUsize::new(0),
                open_calls: 0,
            },
            seen,
        )
    }
}

impl Tracker for TestTracker {
    fn name(&self) -> &str {
        &self.name
    }
    fn supports(&self, kind: EventKind) -> bool {
        self.behaviour
            .kinds
            .as_ref()
            .is_none_or(|k| k.contains(&kind))
    }
    fn open(&mut self, _ctx: &RunContext) -> Result<(), TrackerError> {
        self.open_calls += 1;
        if self.open_calls <= self.behaviour.fail_open {
            return Err(TrackerError::transient("server unreachable (injected)"));
        }
        self.seen.lock().unwrap().opened += 1;
        Ok(())
    }
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        self.seen.lock().unwrap().write_calls += 1;
        if self.behaviour.panic {
            panic!("injected panic in write");
        }
        if let Some((call, d)) = self.behaviour.hang_on_call
            && call == n
        {
            std::thread::sleep(d);
        }
        if let Some(d) = self.behaviour.sleep_each {
            std::thread::sleep(d);
        }
        if n <= self.behaviour.fail_first {
            return Err(TrackerError::transient("injected failure"));
        }
        let mut seen = self.seen.lock().unwrap();
        for (seq, e) in batch.iter_seq() {
            if self.supports(e.kind()) {
                seen.events.push((seq, e.clone()));
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TrackerError> {
        self.seen.lock().unwrap().flushes += 1;
        Ok(())
    }
    fn close(&mut self, status: RunStatus) -> Result<(), TrackerError> {
        self.seen.lock().unwrap().closed = Some(status);
        Ok(())
    }
    fn resume_point(&mut self) -> Option<u64> {
        self.behaviour.resume_point
    }
}

/// Metric values of every Metrics event seen, flattened as (step, key, value).
pub fn metric_points(events: &[(u64, Event)]) -> Vec<(u64, String, f64)> {
    let mut out = Vec::new();
    for (_, e) in events {
        if let Event::Metrics { step, values, .. } = e {
            for m in values {
                out.push((*step, m.key.clone(), m.value));
            }
        }
    }
    out
}
