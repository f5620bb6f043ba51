//! The conformance suite itself: it passes for a correct tracker and catches broken ones.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use exptrack_core::conformance::{self, ReadBack};
use exptrack_core::{Batch, Event, EventKind, RunContext, RunStatus, Tracker, TrackerError};

type Store = Arc<Mutex<HashMap<String, Vec<(u64, String, f64)>>>>;

/// An in-memory tracker; `dedupe` makes it skip sequence numbers it already stored.
struct Mem {
    store: Store,
    run: String,
    dedupe: bool,
    last_seq: u64,
    buffered: Vec<(u64, String, f64)>,
}

impl Tracker for Mem {
    fn name(&self) -> &str {
        "mem"
    }
    fn supports(&self, kind: EventKind) -> bool {
        kind == EventKind::Metrics
    }
    fn open(&mut self, ctx: &RunContext) -> Result<(), TrackerError> {
        self.run = ctx.metadata.run_id.clone();
        Ok(())
    }
    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError> {
        for (seq, e) in batch.iter_seq() {
            if self.dedupe && seq <= self.last_seq {
                continue;
            }
            self.last_seq = self.last_seq.max(seq);
            if let Event::Metrics { step, values, .. } = e {
                for m in values {
                    self.buffered.push((*step, m.key.clone(), m.value));
                }
            }
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), TrackerError> {
        self.store
            .lock()
            .unwrap()
            .entry(self.run.clone())
            .or_default()
            .append(&mut self.buffered);
        Ok(())
    }
    fn close(&mut self, _status: RunStatus) -> Result<(), TrackerError> {
        self.flush()
    }
}

struct Reader(Store);

impl ReadBack for Reader {
    fn scalars(&mut self, ctx: &RunContext) -> Result<Vec<(u64, String, f64)>, String> {
        Ok(self
            .0
            .lock()
            .unwrap()
            .get(&ctx.metadata.run_id)
            .cloned()
            .unwrap_or_default())
    }
}

fn mem(store: &Store, dedupe: bool) -> Box<dyn Tracker> {
    Box::new(Mem {
        store: Arc::clone(store),
        run: String::new(),
        dedupe,
        last_seq: 0,
        buffered: Vec::new(),
    })
}

#[test]
fn a_correct_tracker_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::default();
    let failures = conformance::run_all(
        &mut || mem(&store, true),
        &mut Reader(Arc::clone(&store)),
        tmp.path(),
        false,
    );
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn a_tracker_that_stores_redeliveries_twice_fails() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::default();
    let failures = conformance::run_all(
        &mut || mem(&store, false),
        &mut Reader(Arc::clone(&store)),
        tmp.path(),
        false,
    );
    assert_eq!(failures.len(), 1, "{failures:#?}");
    assert!(failures[0].starts_with("redelivered_batch_is_not_duplicated"));
}

#[test]
fn a_tracker_that_loses_precision_fails_the_order_check() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::default();
    let ctx = conformance::context(tmp.path(), "lossy");
    // Reading back as f64 what was stored exactly passes; demanding f32 rounding from an exact
    // store must fail (0.37 * k is not an f32).
    let r = conformance::metrics_keep_step_order(
        mem(&store, true).as_mut(),
        &ctx,
        &mut Reader(Arc::clone(&store)),
        true,
    );
    assert!(r.is_err());
}
