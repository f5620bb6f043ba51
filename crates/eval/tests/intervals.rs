//! Intervals that would overflow the clock's arithmetic are refused with a clear error (issue
//! 12/18): before, `poll_interval(Duration::MAX)` built and `run_until` panicked on
//! `Instant + Duration`, and the example's `Duration::from_secs_f64` panicked on `inf`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_eval::{BoxError, EvalWatcher, MAX_INTERVAL, StopReason, parse_interval_secs};

fn builder<'t>(
    dir: &std::path::Path,
    tracker: &'t exptrack_core::ExperimentTracker,
) -> exptrack_eval::EvalWatcherBuilder<'t> {
    EvalWatcher::builder(dir, "exp")
        .dataset("valid", |c: &LoadedCheckpoint| {
            common::fake_eval(c, 0.0).map_err(BoxError::from)
        })
        .tracker(tracker)
}

#[test]
fn huge_intervals_are_refused_and_the_longest_accepted_one_does_not_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt_dir = tmp.path().join("checkpoints");
    let mut trainer = common::trainer(&ckpt_dir, "exp", None);
    trainer.save(common::checkpoint(1)).unwrap();
    let tracker = common::eval_tracker(&tmp.path().join("runs"), "eval");

    for (what, b) in [
        (
            "poll_interval",
            builder(&ckpt_dir, &tracker).poll_interval(Duration::MAX),
        ),
        (
            "flush_timeout",
            builder(&ckpt_dir, &tracker).flush_timeout(Duration::MAX),
        ),
        (
            "poll_interval",
            builder(&ckpt_dir, &tracker).poll_interval(MAX_INTERVAL + Duration::from_secs(1)),
        ),
    ] {
        let e = b
            .build()
            .expect_err("a huge interval must be refused")
            .to_string();
        assert!(e.contains(what) && e.contains("maximum"), "{e}");
    }

    // The longest accepted interval: the sleep between polls is cut short by the stop flag.
    let mut watcher = builder(&ckpt_dir, &tracker)
        .poll_interval(MAX_INTERVAL)
        .stop_when_completed(false)
        .build()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let setter = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::SeqCst);
        })
    };
    let started = Instant::now();
    let summary = watcher.run_until(&stop).unwrap();
    setter.join().unwrap();
    assert_eq!(summary.reason, StopReason::Stopped);
    assert_eq!(summary.evaluated_steps(), [1]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn interval_text_is_parsed_without_panics() {
    assert_eq!(parse_interval_secs("2").unwrap(), Duration::from_secs(2));
    assert_eq!(
        parse_interval_secs(" 0.25 ").unwrap(),
        Duration::from_millis(250)
    );
    for bad in [
        "inf", "-inf", "NaN", "-1", "0", "1e-12", "1e300", "2592001", "ten", "",
    ] {
        let e = parse_interval_secs(bad).expect_err(bad).to_string();
        assert!(e.contains("interval"), "{bad}: {e}");
    }
    assert_eq!(parse_interval_secs("2592000").unwrap(), MAX_INTERVAL);
}
