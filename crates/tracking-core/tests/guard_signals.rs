//! Ctrl-C / SIGTERM mark an open run Killed; the system-metrics sampler logs `system/*`.

use std::process::Command;
use std::time::{Duration, Instant};

use exptrack_core::store::RunReader;
use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};

const CHILD_ENV: &str = "EXPTRACK_SIGNAL_CHILD_DIR";

/// Runs in the child process only: opens a run with signal handling on, logs, and waits to be
/// killed.
#[test]
fn signal_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let t = ExperimentTracker::builder(ExperimentConfig::named("sig"))
        .runs_dir(&dir)
        .collect_system_info(false)
        .build()
        .unwrap();
    for i in 0..10 {
        t.log_metrics(i, &[("x", i as f64)]).unwrap();
    }
    t.flush().unwrap();
    // Written under another name and renamed, so the parent never reads a half-written file.
    std::fs::write(
        format!("{dir}/ready.tmp"),
        t.run_dir().to_string_lossy().as_bytes(),
    )
    .unwrap();
    std::fs::rename(format!("{dir}/ready.tmp"), format!("{dir}/ready")).unwrap();
    std::thread::sleep(Duration::from_secs(60));
    panic!("not killed");
}

#[cfg(unix)]
#[test]
fn sigterm_marks_the_run_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = Command::new(exe)
        .args(["signal_child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, tmp.path())
        .spawn()
        .unwrap();
    let ready = tmp.path().join("ready");
    let t0 = Instant::now();
    while !ready.exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "child never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let run_dir = std::fs::read_to_string(&ready).unwrap();
    let pid = child.id() as i32;
    // SAFETY: plain kill(2) on our own child's pid.
    let rc = unsafe { libc_kill(pid, 15) };
    assert_eq!(rc, 0);
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(130),
        "exits with 130 after marking the run"
    );
    let reader = RunReader::open(&run_dir).unwrap();
    let meta = reader.metadata().unwrap();
    assert_eq!(meta.status, RunStatus::Killed);
    let events = reader.events().unwrap();
    assert_eq!(events.len(), 11, "10 metrics and the final status");
}

#[cfg(unix)]
unsafe extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[cfg(feature = "system-metrics")]
#[test]
fn system_metrics_are_sampled() {
    let tmp = tempfile::tempdir().unwrap();
    let t = ExperimentTracker::builder(ExperimentConfig::named("sys"))
        .runs_dir(tmp.path())
        .handle_signals(false)
        .collect_system_info(false)
        .system_metrics(Duration::from_millis(50))
        .build()
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    let s = RunReader::open(&dir).unwrap().summary().unwrap();
    for k in [
        "system/cpu_percent",
        "system/memory_percent",
        "system/process_rss_mb",
    ] {
        let m = s.get(k).unwrap_or_else(|| panic!("{k} missing: {s:?}"));
        assert!(m.count >= 2, "{k}: {m:?}");
    }
    assert!(s["system/memory_percent"].last > 0.0 && s["system/memory_percent"].last <= 100.0);
    assert!(s["system/process_rss_mb"].last > 1.0);
}
