//! A conformance suite for [`Tracker`] implementations (feature `conformance`).
//!
//! Every backend runs these checks in its own tests against its real peer (the TensorBoard reader,
//! an `mlflow server`, the wandb package's reader), through a [`ReadBack`] that reads what the
//! backend stored. Each check returns `Err(message)` instead of panicking so the caller's test can
//! add context.
//!
//! ```no_run
//! use std::path::Path;
//! use exptrack_core::Tracker;
//! use exptrack_core::conformance::{self, ReadBack};
//!
//! /// Runs every check on trackers that `make` builds, reading back through `reader`.
//! fn check(make: &mut dyn FnMut() -> Box<dyn Tracker>, reader: &mut dyn ReadBack, dir: &Path) {
//!     let f32_values = false; // true for a backend that stores metrics as f32 (TensorBoard)
//!     let failures = conformance::run_all(make, reader, dir, f32_values);
//!     assert!(failures.is_empty(), "{failures:#?}");
//! }
//! ```

use std::path::Path;

use crate::event::{CheckpointFile, CheckpointReport, Event, EventKind, Metric, ParamValue};
use crate::metadata::{ExperimentMetadata, RunStatus};
use crate::tracker::{Batch, RunContext, Tracker};

/// Reads back what a tracker stored for a run.
pub trait ReadBack {
    /// Every scalar point stored for the run, in storage order, as `(step, key, value)`.
    fn scalars(&mut self, ctx: &RunContext) -> Result<Vec<(u64, String, f64)>, String>;
}

/// A fresh run context under `dir` (a new run id each call).
pub fn context(dir: &Path, name: &str) -> RunContext {
    let mut metadata = ExperimentMetadata::new(name, "0123456789abcdef0123456789abcdef");
    metadata.description = "conformance run".to_owned();
    RunContext {
        run_dir: dir.join(&metadata.experiment_id).join(&metadata.run_id),
        metadata,
        config: toml::Table::new(),
        resumed: false,
    }
}

fn metrics(step: u64, pairs: &[(&str, f64)]) -> Event {
    Event::Metrics {
        step,
        timestamp_ms: 1_700_000_000_000 + step as i64,
        values: pairs.iter().map(|(k, v)| Metric::new(*k, *v)).collect(),
    }
}

/// A checkpoint report fixture for backends' tests: the checkpoint of `step` under
/// `/ckpt/exp-1/ckpt-<step>` with two files (`model.bpk` of `1000 * step` bytes, `optim.bpk`),
/// metric `val_loss` = `1 / step`, best when `best`, and `pruned` steps.
pub fn checkpoint_report(step: u64, best: bool, pruned: &[u64]) -> CheckpointReport {
    CheckpointReport {
        step,
        epoch: Some(step / 2),
        timestamp_ms: 1_700_000_000_000 + step as i64,
        location: format!("/ckpt/exp-1/{}", crate::event::checkpoint_name(step)),
        files: vec![
            CheckpointFile {
                name: "model.bpk".into(),
                size: 1000 * step,
                hash: format!("blake3:{:064x}", step),
            },
            CheckpointFile {
                name: "optim.bpk".into(),
                size: 7,
                hash: format!("blake3:{:064x}", step + 1000),
            },
        ],
        metrics: vec![Metric::new("val_loss", 1.0 / step as f64)],
        is_best: best,
        pruned: pruned.to_vec(),
    }
}

/// What a run with checkpoints logs, for backends' read-back tests: metrics at steps 0..=6 and a
/// checkpoint report at steps 2, 4 and 6 (4 the best; the report of 6 says retention deleted 2).
/// A backend should then show checkpoints 4 and 6 as present and 2 as pruned.
pub fn checkpoint_run() -> Vec<Event> {
    let mut out = Vec::new();
    for s in 0..=6u64 {
        out.push(metrics(s, &[("train/loss", 1.0 / (s as f64 + 1.0))]));
        let report = match s {
            2 => checkpoint_report(2, true, &[]),
            4 => checkpoint_report(4, true, &[]),
            6 => checkpoint_report(6, false, &[2]),
            _ => continue,
        };
        out.push(Event::Checkpoint(report));
    }
    out
}

/// Logs `events` as a program does: through a real [`ExperimentTracker`] (the local store under
/// `runs_dir`, the dispatcher) delivering to `trackers`, then finishes the run as completed.
/// Returns the run's directory, or the problems the finish report lists.
///
/// [`ExperimentTracker`]: crate::ExperimentTracker
pub fn log_through_store(
    runs_dir: &Path,
    name: &str,
    trackers: Vec<Box<dyn Tracker>>,
    events: Vec<Event>,
) -> Result<std::path::PathBuf, String> {
    let mut builder = crate::ExperimentTracker::builder(crate::ExperimentConfig::named(name))
        .runs_dir(runs_dir)
        .handle_signals(false)
        .collect_system_info(false);
    for t in trackers {
        builder = builder.with_tracker(t);
    }
    let run = builder.build().map_err(e("open"))?;
    for ev in events {
        run.log_event(ev).map_err(e("log"))?;
    }
    let dir = run.run_dir().to_path_buf();
    let report = run.finish(RunStatus::Completed).map_err(e("finish"))?;
    let problems = report.problem_lines();
    if problems.is_empty() {
        Ok(dir)
    } else {
        Err(problems.join("; "))
    }
}

/// Continues the stored run in `run_dir` on `tracker` as a resumed process does: opens it with the
/// run's context (`resumed`, its metadata and directory), writes `events` after the last sequence
/// number of the local log, and closes it as completed.
pub fn resume_and_write(
    tracker: &mut dyn Tracker,
    run_dir: &Path,
    events: &[Event],
) -> Result<(), String> {
    let reader = crate::store::RunReader::open(run_dir).map_err(e("open the stored run"))?;
    let ctx = RunContext {
        metadata: reader.metadata().map_err(e("metadata"))?,
        config: toml::Table::new(),
        run_dir: run_dir.to_path_buf(),
        resumed: true,
    };
    tracker.open(&ctx).map_err(e("open"))?;
    let first_seq = reader.last_seq().map_err(e("log"))? + 1;
    tracker
        .write(&Batch { first_seq, events })
        .map_err(e("write"))?;
    tracker.close(RunStatus::Completed).map_err(e("close"))
}

fn e<T>(what: &str) -> impl FnOnce(T) -> String + '_
where
    T: std::fmt::Display,
{
    move |err| format!("{what}: {err}")
}

/// Metrics written in several batches come back with the same steps, keys and values (as f32
/// where `f32_values`), in step order per key.
pub fn metrics_keep_step_order(
    tracker: &mut dyn Tracker,
    ctx: &RunContext,
    read: &mut dyn ReadBack,
    f32_values: bool,
) -> Result<(), String> {
    tracker.open(ctx).map_err(e("open"))?;
    let mut seq = 1;
    let mut expected = Vec::new();
    for chunk in 0..5u64 {
        let events: Vec<Event> = (0..50u64)
            .map(|i| {
                let step = chunk * 50 + i;
                let v = (step as f64) * 0.37 - 3.0;
                expected.push((step, "conf/a".to_owned(), v));
                expected.push((step, "conf/b".to_owned(), -v));
                metrics(step, &[("conf/a", v), ("conf/b", -v)])
            })
            .collect();
        tracker
            .write(&Batch {
                first_seq: seq,
                events: &events,
            })
            .map_err(e("write"))?;
        seq += events.len() as u64;
    }
    tracker.close(RunStatus::Completed).map_err(e("close"))?;
    let got = read.scalars(ctx)?;
    for key in ["conf/a", "conf/b"] {
        let want: Vec<(u64, f64)> = expected
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(s, _, v)| (*s, if f32_values { *v as f32 as f64 } else { *v }))
            .collect();
        let have: Vec<(u64, f64)> = got
            .iter()
            .filter(|(_, k, _)| k == key)
            .map(|(s, _, v)| (*s, *v))
            .collect();
        if want != have {
            return Err(format!(
                "{key}: stored points differ from those written ({} written, {} read; first \
                 written {:?}, first read {:?})",
                want.len(),
                have.len(),
                want.first(),
                have.first()
            ));
        }
    }
    Ok(())
}

/// After `flush` returns, a reader sees everything written before it (the run stays open).
pub fn flush_is_barrier(
    tracker: &mut dyn Tracker,
    ctx: &RunContext,
    read: &mut dyn ReadBack,
) -> Result<(), String> {
    tracker.open(ctx).map_err(e("open"))?;
    let events: Vec<Event> = (0..20u64)
        .map(|s| metrics(s, &[("conf/flushed", s as f64)]))
        .collect();
    tracker
        .write(&Batch {
            first_seq: 1,
            events: &events,
        })
        .map_err(e("write"))?;
    tracker.flush().map_err(e("flush"))?;
    let n = read
        .scalars(ctx)?
        .iter()
        .filter(|(_, k, _)| k == "conf/flushed")
        .count();
    tracker.close(RunStatus::Completed).map_err(e("close"))?;
    if n != 20 {
        return Err(format!("after flush a reader saw {n} of 20 points"));
    }
    Ok(())
}

/// A batch holding every event kind, including ones the tracker does not support, is accepted
/// without error; the supported metrics in it are stored.
pub fn unsupported_kind_is_skipped(
    tracker: &mut dyn Tracker,
    ctx: &RunContext,
    read: &mut dyn ReadBack,
) -> Result<(), String> {
    tracker.open(ctx).map_err(e("open"))?;
    let png = minimal_png();
    let events = vec![
        metrics(1, &[("conf/mixed", 1.0)]),
        Event::Params {
            params: vec![("conf_param".to_owned(), ParamValue::Int(3))],
        },
        Event::Tags {
            tags: vec![("conf_tag".to_owned(), "x".to_owned())],
        },
        Event::Text {
            step: 1,
            timestamp_ms: 0,
            tag: "conf_text".to_owned(),
            text: "hello".to_owned(),
        },
        Event::Image {
            step: 1,
            timestamp_ms: 0,
            tag: "conf_image".to_owned(),
            width: 1,
            height: 1,
            channels: 3,
            png,
        },
        Event::Histogram {
            step: 1,
            timestamp_ms: 0,
            tag: "conf_hist".to_owned(),
            values: vec![1.0, 2.0, 2.5],
        },
        metrics(2, &[("conf/mixed", 2.0)]),
    ];
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind()).collect();
    tracker
        .write(&Batch {
            first_seq: 1,
            events: &events,
        })
        .map_err(|err| format!("write of a batch with kinds {kinds:?}: {err}"))?;
    tracker.close(RunStatus::Completed).map_err(e("close"))?;
    let n = read
        .scalars(ctx)?
        .iter()
        .filter(|(_, k, _)| k == "conf/mixed")
        .count();
    if n != 2 {
        return Err(format!("{n} of 2 metric points stored from a mixed batch"));
    }
    Ok(())
}

/// The dispatcher redelivers a batch whole after a transient error; a tracker that already stored
/// part or all of it must not store it twice.
pub fn redelivered_batch_is_not_duplicated(
    tracker: &mut dyn Tracker,
    ctx: &RunContext,
    read: &mut dyn ReadBack,
) -> Result<(), String> {
    tracker.open(ctx).map_err(e("open"))?;
    let events: Vec<Event> = (0..10u64)
        .map(|s| metrics(s, &[("conf/redelivered", s as f64)]))
        .collect();
    let batch = Batch {
        first_seq: 1,
        events: &events,
    };
    tracker.write(&batch).map_err(e("write"))?;
    tracker.write(&batch).map_err(e("second write"))?;
    // A later batch overlapping the first (a replay from the log that starts earlier).
    let more: Vec<Event> = (5..15u64)
        .map(|s| metrics(s, &[("conf/redelivered", s as f64)]))
        .collect();
    tracker
        .write(&Batch {
            first_seq: 6,
            events: &more,
        })
        .map_err(e("overlapping write"))?;
    tracker.close(RunStatus::Completed).map_err(e("close"))?;
    let steps: Vec<u64> = read
        .scalars(ctx)?
        .iter()
        .filter(|(_, k, _)| k == "conf/redelivered")
        .map(|(s, _, _)| *s)
        .collect();
    let want: Vec<u64> = (0..15).collect();
    if steps != want {
        return Err(format!("stored steps {steps:?}, want each of 0..15 once"));
    }
    Ok(())
}

/// Runs every check, each on a fresh tracker and run; returns the failures.
pub fn run_all(
    make: &mut dyn FnMut() -> Box<dyn Tracker>,
    read: &mut dyn ReadBack,
    dir: &Path,
    f32_values: bool,
) -> Vec<String> {
    let mut failures = Vec::new();
    let mut check = |name: &str, r: Result<(), String>| {
        if let Err(msg) = r {
            failures.push(format!("{name}: {msg}"));
        }
    };
    let ctx = context(dir, "conformance-order");
    check(
        "metrics_keep_step_order",
        metrics_keep_step_order(make().as_mut(), &ctx, read, f32_values),
    );
    let ctx = context(dir, "conformance-flush");
    check(
        "flush_is_barrier",
        flush_is_barrier(make().as_mut(), &ctx, read),
    );
    let ctx = context(dir, "conformance-mixed");
    check(
        "unsupported_kind_is_skipped",
        unsupported_kind_is_skipped(make().as_mut(), &ctx, read),
    );
    let ctx = context(dir, "conformance-redelivery");
    check(
        "redelivered_batch_is_not_duplicated",
        redelivered_batch_is_not_duplicated(make().as_mut(), &ctx, read),
    );
    failures
}

/// A valid 1×1 RGB PNG.
pub fn minimal_png() -> Vec<u8> {
    vec![
        0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44,
        0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x02, 0x00, 0x00, 0x00, 0x90,
        0x77, 0x53, 0xDE, 0x00, 0x00, 0x00, 0x0C, 0x49, 0x44, 0x41, 0x54, 0x08, 0xD7, 0x63, 0xF8,
        0xCF, 0xC0, 0x00, 0x00, 0x03, 0x01, 0x01, 0x00, 0x18, 0xDD, 0x8D, 0xB0, 0x00, 0x00, 0x00,
        0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE, 0x42, 0x60, 0x82,
    ]
}
