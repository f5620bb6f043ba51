//! Issue 12, hardening: bad input and faults never crash a run and never lose an event silently.
//! Everything here goes through the public API.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{Behaviour, TestTracker};
use exptrack_core::metadata::check_component;
use exptrack_core::store::{RunReader, read_cursors, write_cursors};
use exptrack_core::{ArtifactKind, Event, ExperimentConfig, ExperimentTracker, Resume, RunStatus};

fn builder(cfg: ExperimentConfig, dir: &Path) -> exptrack_core::ExperimentTrackerBuilder {
    ExperimentTracker::builder(cfg)
        .runs_dir(dir)
        .handle_signals(false)
        .collect_system_info(false)
}

fn parse(tracking: &str) -> exptrack_core::Result<ExperimentConfig> {
    ExperimentConfig::parse(
        &format!("[experiment]\nname = \"x\"\n\n[tracking]\n{tracking}\n"),
        "exp.toml",
    )
}

// ---- 1. numeric config keys -------------------------------------------------------------------

#[test]
fn out_of_range_tracking_numbers_name_key_line_and_range() {
    for (line, key) in [
        ("finish_timeout_secs = inf", "tracking.finish_timeout_secs"),
        ("finish_timeout_secs = -1.0", "tracking.finish_timeout_secs"),
        ("finish_timeout_secs = nan", "tracking.finish_timeout_secs"),
        (
            "finish_timeout_secs = 1e300",
            "tracking.finish_timeout_secs",
        ),
        (
            "system_metrics_interval_secs = 1e19",
            "tracking.system_metrics_interval_secs",
        ),
        (
            "system_metrics_interval_secs = inf",
            "tracking.system_metrics_interval_secs",
        ),
        (
            "system_metrics_interval_secs = -5",
            "tracking.system_metrics_interval_secs",
        ),
        (
            "system_metrics_interval_secs = 0.000001",
            "tracking.system_metrics_interval_secs",
        ),
        ("queue_capacity = 0", "tracking.queue_capacity"),
        ("queue_capacity = 1000000000000", "tracking.queue_capacity"),
        ("queue_capacity_bytes = 12", "tracking.queue_capacity_bytes"),
    ] {
        let err = parse(line).unwrap_err().to_string();
        assert!(err.starts_with("exp.toml:5:1: "), "{line}: {err}");
        assert!(err.contains(key), "{line}: {err}");
        assert!(err.contains("allowed"), "{line}: {err}");
    }
    // The edges of the ranges are fine; 0 switches the sampler off.
    for ok in [
        "finish_timeout_secs = 0",
        "finish_timeout_secs = 86400",
        "system_metrics_interval_secs = 0",
        "system_metrics_interval_secs = 0.5",
        "queue_capacity = 1",
    ] {
        parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
    // A wrong type names the key and its line too.
    let err = parse("queue_capacity = -3").unwrap_err().to_string();
    assert!(err.starts_with("exp.toml:5:"), "{err}");
    assert!(err.contains("tracking.queue_capacity"), "{err}");
}

/// Before the fix: `Duration::from_secs_f64` panicked in `build` (exit 101) on values set in code.
#[test]
fn values_set_in_code_are_checked_by_build_not_panicked_on() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = ExperimentConfig::named("x");
    cfg.tracking.finish_timeout_secs = f64::INFINITY;
    let err = builder(cfg, tmp.path()).build().unwrap_err().to_string();
    assert!(
        err.contains("tracking.finish_timeout_secs") && err.contains("allowed"),
        "{err}"
    );

    let mut cfg = ExperimentConfig::named("x");
    cfg.tracking.system_metrics_interval_secs = Some(1e19);
    let err = builder(cfg, tmp.path()).build().unwrap_err().to_string();
    assert!(
        err.contains("tracking.system_metrics_interval_secs"),
        "{err}"
    );
}

/// Before the fix: `Instant::now() + Duration::MAX` panicked in `flush_timeout` and in the
/// dispatcher's `finish`, and the sampler thread panicked "overflow when adding duration to
/// instant".
#[test]
fn extreme_durations_in_the_builder_never_panic() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, seen) = TestTracker::new("rec", Behaviour::default());
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .with_tracker(Box::new(rec))
        .finish_timeout(Duration::MAX)
        .flush_interval(Duration::MAX)
        .system_metrics(Duration::MAX)
        .build()
        .unwrap();
    t.log_metric(1, "a", 1.0).unwrap();
    t.flush_timeout(Duration::MAX).unwrap();
    std::thread::sleep(Duration::from_millis(150)); // the sampler thread runs its loop
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    assert_eq!(seen.lock().unwrap().closed, Some(RunStatus::Completed));

    // A zero interval switches the sampler off instead of spinning.
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .system_metrics(Duration::ZERO)
        .finish_timeout(Duration::ZERO)
        .build()
        .unwrap();
    t.finish(RunStatus::Completed).unwrap();
}

// ---- 3. a failed append never shifts sequence numbers ------------------------------------------

fn non_utf8_path() -> std::path::PathBuf {
    use std::os::unix::ffi::OsStrExt;
    std::path::PathBuf::from(std::ffi::OsStr::from_bytes(b"/tmp/bad-\xff-name.bin"))
}

/// Before the fix, the artifact was accepted, its line failed to encode half-way through
/// `append`, the batch was fanned out under numbers the log did not have, and the next metric
/// (given the same number again by the log) was skipped by the tracker as already delivered.
#[test]
fn an_unstorable_artifact_is_refused_and_shifts_no_sequence_number() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, seen) = TestTracker::new("rec", Behaviour::default());
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .with_tracker(Box::new(rec))
        .build()
        .unwrap();
    t.log_metric(1, "a", 1.0).unwrap();
    t.flush().unwrap();
    let err = t
        .log_event(Event::Artifact {
            path: non_utf8_path(),
            name: "bad".into(),
            artifact_kind: ArtifactKind::File,
            step: None,
        })
        .unwrap_err();
    assert!(err.to_string().contains("UTF-8"), "{err}");
    t.flush().unwrap();
    t.log_metric(2, "a", 2.0).unwrap();
    t.flush().unwrap();
    let dir = t.run_dir().to_path_buf();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");

    let logged = RunReader::open(&dir).unwrap().events().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen.events, logged,
        "the tracker got exactly the log, under the log's numbers"
    );
    assert_eq!(
        logged.len(),
        3,
        "two metrics and the final status: {logged:?}"
    );
}

/// Disk full: `RLIMIT_FSIZE` makes every append past a size fail (EFBIG), in a child process.
/// Every event logged must reach the live tracker once, in order, under the number the log
/// would give it; the log on disk stays a valid prefix; the report names the failure.
///
/// Before the fix, the numbers of a batch whose write failed were consumed while the batch was
/// fanned out under later numbers, and the next batches were skipped as already delivered.
#[test]
fn a_full_disk_shifts_no_sequence_number_and_loses_nothing_silently() {
    if std::env::var_os("EXPTRACK_TEST_DISK_FULL_CHILD").is_some() {
        return disk_full_child();
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_full_disk_shifts_no_sequence_number_and_loses_nothing_silently",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EXPTRACK_TEST_DISK_FULL_CHILD", tmp.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("CHILD OK"), "{text}");
}

fn disk_full_child() {
    let root = std::path::PathBuf::from(std::env::var_os("EXPTRACK_TEST_DISK_FULL_CHILD").unwrap());
    let (rec, seen) = TestTracker::new("rec", Behaviour::default());
    let t = builder(ExperimentConfig::named("x"), &root)
        .with_tracker(Box::new(rec))
        .build()
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    for step in 0..20 {
        t.log_metric(step, "a", step as f64).unwrap();
        t.flush().unwrap();
    }
    // From here on, no file of this process may grow much past the log's size; small rewrites
    // (metadata, summary, cursors) still fit.
    let log_len = std::fs::metadata(dir.join("events.jsonl")).unwrap().len();
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: log_len + 300,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    for step in 20..60 {
        t.log_metric(step, "a", step as f64).unwrap();
        if step % 3 == 0 {
            let _ = t.flush(); // reports the store's failure; must not panic or hang
        }
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    unsafe {
        let lim = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
    }
    assert!(!report.store_errors.is_empty(), "{report}");
    assert!(!report.is_complete(), "{report}");

    // The tracker got every event once, in order, numbered 1, 2, 3, ...
    let seen = seen.lock().unwrap();
    let seqs: Vec<u64> = seen.events.iter().map(|(s, _)| *s).collect();
    assert_eq!(
        seqs,
        (1..=61).collect::<Vec<_>>(),
        "60 metrics and the status"
    );
    for (seq, e) in &seen.events {
        match e {
            Event::Metrics { step, .. } => assert_eq!(*step + 1, *seq),
            Event::Status { status, .. } => assert_eq!(*status, RunStatus::Completed),
            other => panic!("unexpected {other:?}"),
        }
    }
    // The log is a valid prefix of what the tracker got (a torn tail, if any, is ignored).
    let logged = RunReader::open(&dir).unwrap().events().unwrap();
    assert!(logged.len() >= 20 && logged.len() < 61, "{}", logged.len());
    assert_eq!(&seen.events[..logged.len()], &logged[..]);
    println!("CHILD OK");
}

/// A backend that misses live batches while the log cannot be written learns at `finish` that
/// they will never come: the report names the events not delivered instead of claiming success.
#[test]
fn events_a_backend_missed_while_the_log_was_down_are_reported_not_delivered() {
    if std::env::var_os("EXPTRACK_TEST_DISK_FULL_SLOW_CHILD").is_some() {
        return disk_full_slow_child();
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "events_a_backend_missed_while_the_log_was_down_are_reported_not_delivered",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("EXPTRACK_TEST_DISK_FULL_SLOW_CHILD", tmp.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("CHILD OK"), "{text}");
}

fn disk_full_slow_child() {
    let root =
        std::path::PathBuf::from(std::env::var_os("EXPTRACK_TEST_DISK_FULL_SLOW_CHILD").unwrap());
    let (slow, seen) = TestTracker::new(
        "slow",
        Behaviour {
            sleep_each: Some(Duration::from_millis(30)),
            ..Behaviour::default()
        },
    );
    let t = builder(ExperimentConfig::named("x"), &root)
        .with_tracker(Box::new(slow))
        .finish_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    t.log_metric(0, "a", 0.0).unwrap();
    t.flush().unwrap();
    let log_len = std::fs::metadata(dir.join("events.jsonl")).unwrap().len();
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let lim = libc::rlimit {
            rlim_cur: log_len,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &lim), 0);
    }
    // Many small batches, faster than the slow tracker takes them: its live queue overflows.
    let n = 400u64;
    for step in 1..=n {
        t.log_metric(step, "a", step as f64).unwrap();
        std::thread::sleep(Duration::from_micros(300));
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    let b = &report.trackers[0];
    let seen = seen.lock().unwrap();
    let got = seen.events.len() as u64;
    let last = n + 2; // metrics 0..=n and the status
    assert!(
        got < last,
        "the slow backend was meant to miss live batches"
    );
    assert!(!b.complete, "{report}");
    let text = b.errors.join("\n");
    assert!(text.contains("not delivered"), "{report}");
    // What it got is in order, under the right numbers.
    for w in seen.events.windows(2) {
        assert!(w[0].0 < w[1].0);
    }
    for (seq, e) in &seen.events {
        if let Event::Metrics { step, .. } = e {
            assert_eq!(*step + 1, *seq);
        }
    }
    println!("CHILD OK got {got} of {last}");
}

// ---- 4. cursors never point past the log ------------------------------------------------------

/// Before the fix, a cursor past the log (written before the log was durable, then a power loss)
/// made the resumed run's tracker skip every new event whose number it reused.
#[test]
fn a_cursor_past_the_log_is_clamped_on_resume() {
    let tmp = tempfile::tempdir().unwrap();
    let (rec, _) = TestTracker::new("rec", Behaviour::default());
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .with_tracker(Box::new(rec))
        .build()
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    for step in 0..3 {
        t.log_metric(step, "a", 1.0).unwrap();
    }
    t.finish(RunStatus::Failed).unwrap();
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 4);
    // The log lost its tail in a power loss; the cursor had reached the disk.
    let mut cursors = read_cursors(&dir).unwrap();
    cursors.insert("rec".into(), 1000);
    write_cursors(&dir, &cursors).unwrap();

    let (rec, seen) = TestTracker::new("rec", Behaviour::default());
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .with_tracker(Box::new(rec))
        .resume(Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(t.run_dir(), dir);
    assert_eq!(read_cursors(&dir).unwrap()["rec"], 4, "clamped at open");
    t.log_metric(3, "a", 1.0).unwrap();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let seqs: Vec<u64> = seen
        .lock()
        .unwrap()
        .events
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs, vec![5, 6], "the new metric and the final status");
}

// ---- 2 and 5. names and ids -------------------------------------------------------------------

#[test]
fn a_hostile_experiment_name_is_displayed_verbatim_and_stored_inside_the_runs_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    for name in [
        "../../escape",
        "..",
        ".hidden",
        "a/b\\c",
        "ü ö",
        &"x".repeat(500),
    ] {
        let t = builder(ExperimentConfig::named(name), &runs)
            .build()
            .unwrap();
        let id = t.metadata().experiment_id.clone();
        assert!(check_component(&id).is_ok(), "{name:?} -> {id:?}");
        assert_eq!(t.metadata().experiment_name, name);
        let dir = t.run_dir().to_path_buf();
        let report = t.finish(RunStatus::Completed).unwrap();
        assert!(report.is_complete());
        let real = std::fs::canonicalize(&dir).unwrap();
        assert!(
            real.starts_with(std::fs::canonicalize(&runs).unwrap()),
            "{real:?}"
        );
        assert_eq!(real.parent().unwrap().file_name().unwrap(), id.as_str());
    }
}

#[test]
fn ids_given_by_the_user_are_refused_when_they_break_the_rule() {
    let tmp = tempfile::tempdir().unwrap();
    for id in ["../x", "", ".x", "a/b", "x y"] {
        let err = builder(ExperimentConfig::named("x"), tmp.path())
            .resume(Resume::RunId(id.to_owned()))
            .build()
            .unwrap_err()
            .to_string();
        assert!(err.contains(&format!("{id:?}")), "{id:?}: {err}");
    }
    let err = ExperimentConfig::parse(
        "[experiment]\nname = \"x\"\nid = \"../../etc\"\n",
        "exp.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("exp.toml:3:1: experiment.id"), "{err}");
    assert!(
        std::fs::read_dir(tmp.path()).unwrap().next().is_none(),
        "nothing created"
    );
}

/// Before the fix, `LatestUnfinished` rebuilt the run directory from `metadata.json`'s `run_id`,
/// so a copied or edited run directory was resumed somewhere else (or outside the runs dir).
#[test]
fn latest_unfinished_resumes_the_directory_it_found_whatever_its_metadata_says() {
    let tmp = tempfile::tempdir().unwrap();
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .build()
        .unwrap();
    let dir = t.run_dir().to_path_buf();
    t.log_metric(0, "a", 0.0).unwrap();
    t.finish(RunStatus::Failed).unwrap();
    let meta_path = dir.join("metadata.json");
    let mut meta: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&meta_path).unwrap()).unwrap();
    meta["run_id"] = "../../../outside".into();
    std::fs::write(&meta_path, serde_json::to_vec(&meta).unwrap()).unwrap();

    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .resume(Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(t.run_dir(), dir);
    assert_eq!(
        t.metadata().run_id,
        dir.file_name().unwrap().to_str().unwrap()
    );
    t.log_metric(1, "a", 1.0).unwrap();
    t.finish(RunStatus::Completed).unwrap();
    let seqs: Vec<u64> = RunReader::open(&dir)
        .unwrap()
        .events()
        .unwrap()
        .iter()
        .map(|(s, _)| *s)
        .collect();
    assert_eq!(seqs, vec![1, 2, 3, 4]);
    assert!(!tmp.path().join("outside").exists());
}

// ---- 6. memory bounds ---------------------------------------------------------------------------

fn png_of(len: usize) -> Vec<u8> {
    // A valid PNG header (1x1 RGBA) followed by padding: big, and cheap to build.
    let mut png = vec![
        0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, b'I', b'H', b'D', b'R', 0, 0,
        0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0, 0,
    ];
    png.resize(len, 0);
    png
}

/// Large images with a slow backend: the caller's queue holds at most its byte bound, nothing is
/// dropped, and the caller waits only for the dispatcher's hand-off (not for the slow backend).
#[test]
fn large_images_are_bounded_in_bytes_and_all_delivered() {
    let tmp = tempfile::tempdir().unwrap();
    let (slow, seen) = TestTracker::new(
        "slow",
        Behaviour {
            sleep_each: Some(Duration::from_millis(20)),
            ..Behaviour::default()
        },
    );
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .with_tracker(Box::new(slow))
        .queue_bytes(4 << 20)
        .finish_timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let n = 48u64;
    let image = png_of(1 << 20); // 1 MiB each: 48 MiB logged through a 4 MiB queue
    let started = std::time::Instant::now();
    for step in 0..n {
        t.log_image(step, "img", image.clone()).unwrap();
    }
    let logging = started.elapsed();
    // The slow backend takes at least 20 ms per batch; the caller is not held to its pace.
    assert!(logging < Duration::from_secs(20), "{logging:?}");
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let seen = seen.lock().unwrap();
    let steps: Vec<u64> = seen
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Image { step, png, .. } => {
                assert_eq!(png.len(), 1 << 20);
                Some(*step)
            }
            _ => None,
        })
        .collect();
    assert_eq!(steps, (0..n).collect::<Vec<_>>());
}

/// An image larger than the whole byte bound goes through alone instead of waiting forever.
#[test]
fn an_event_larger_than_the_byte_bound_goes_through() {
    let tmp = tempfile::tempdir().unwrap();
    let t = builder(ExperimentConfig::named("x"), tmp.path())
        .queue_bytes(1 << 10)
        .build()
        .unwrap();
    for step in 0..3 {
        t.log_image(step, "big", png_of(256 << 10)).unwrap();
    }
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    assert_eq!(RunReader::open(&dir).unwrap().events().unwrap().len(), 4);
}
