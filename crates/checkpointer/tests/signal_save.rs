//! A real SIGTERM while a background (`save_async`) checkpoint save is in flight: the library's
//! signal handler marks the run killed, then waits (bounded by the finish timeout) for the save,
//! so the checkpoint ends committed and verified — or, when the wait runs out, absent — and the
//! rerun resumes from it.
//!
//! The child is this test binary re-executed with `EXPTRACK_SIGSAVE_CHILD_DIR` set, running only
//! `sigsave_child_role`. The large checkpoint file is read from a FIFO that the parent feeds, so
//! the save is provably in flight when the signal arrives (no timing guesswork).

#![cfg(unix)]

mod common;

use std::ffi::CString;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use exptrack_checkpoint::{Checkpoint, ModelCheckpointer, Resume};
use exptrack_core::store::RunReader;
use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use sha2::{Digest, Sha256};

const CHILD_ENV: &str = "EXPTRACK_SIGSAVE_CHILD_DIR";
const TIMEOUT_ENV: &str = "EXPTRACK_SIGSAVE_FINISH_TIMEOUT_MS";
/// Size of the checkpoint file streamed through the FIFO.
const BIG: usize = 48 << 20;
const CHUNK: usize = 1 << 20;

fn chunk(i: usize) -> Vec<u8> {
    common::payload(CHUNK, i as u64 + 1, false)
}

/// The child: a run with signal handling on, a committed checkpoint at step 1, then a background
/// save of step 2 whose big file comes from the FIFO; then "trains" until killed.
#[test]
fn sigsave_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let dir = PathBuf::from(dir);
    let timeout_ms: u64 = std::env::var(TIMEOUT_ENV).unwrap().parse().unwrap();
    let tracker = ExperimentTracker::builder(ExperimentConfig::named("sigsave"))
        .runs_dir(dir.join("runs"))
        .collect_system_info(false)
        .finish_timeout(Duration::from_millis(timeout_ms))
        .build()
        .unwrap();
    tracker.log_metrics(1, &[("train/loss", 1.0)]).unwrap();
    let mut ckpt = ModelCheckpointer::open("sigsave", common::config(&dir.join("ckpt"))).unwrap();
    ckpt.save(Checkpoint::new(1).file("model.bin", chunk(999)))
        .unwrap();
    ckpt.save_async(Checkpoint::new(2).file_from_path("model.bin", dir.join("fifo")))
        .unwrap();
    // Written under another name and renamed, so the parent never reads a half-written file.
    std::fs::write(
        dir.join("accepted.tmp"),
        tracker.run_dir().to_string_lossy().as_bytes(),
    )
    .unwrap();
    std::fs::rename(dir.join("accepted.tmp"), dir.join("accepted")).unwrap();
    std::thread::sleep(Duration::from_secs(120));
    panic!("not killed");
}

fn spawn_child(dir: &Path, finish_timeout: Duration) -> Child {
    let fifo = CString::new(dir.join("fifo").as_os_str().as_bytes()).unwrap();
    // SAFETY: mkfifo(3) with a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0);
    Command::new(std::env::current_exe().unwrap())
        .args([
            "sigsave_child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, dir)
        .env(TIMEOUT_ENV, finish_timeout.as_millis().to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the child's "accepted" file; returns the run directory it names.
fn wait_accepted(dir: &Path) -> PathBuf {
    let t0 = Instant::now();
    loop {
        if let Ok(s) = std::fs::read_to_string(dir.join("accepted")) {
            return PathBuf::from(s);
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "child never saved");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sigterm(child: &Child) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGTERM) }, 0);
}

/// Waits for the child with a limit (a hung child is killed and fails the test).
fn wait_exit(mut child: Child, limit: Duration) -> (Option<i32>, String) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status.code(), err);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("child did not exit within {limit:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn sigterm_waits_for_the_async_save_which_commits_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let child = spawn_child(dir, Duration::from_secs(60));
    let run_dir = wait_accepted(dir);
    // Opening blocks until the child's save thread opens the FIFO for reading: the save is in
    // flight from here on.
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("fifo"))
        .unwrap();
    let mut sent = Sha256::new();
    let mut written = 0;
    let mut broken = false;
    for i in 0..BIG / CHUNK {
        if i == 8 {
            sigterm(&child);
            // Let the handler run while the save is still reading.
            std::thread::sleep(Duration::from_millis(300));
        }
        let c = chunk(i);
        if fifo.write_all(&c).is_err() {
            // The reader is gone: the process exited without waiting for its save.
            broken = true;
            break;
        }
        sent.update(&c);
        written += c.len();
    }
    drop(fifo);
    let (code, stderr) = wait_exit(child, Duration::from_secs(90));
    assert!(
        !broken,
        "the process exited during the save (after {written} bytes), abandoning it:\n{stderr}"
    );
    assert_eq!(code, Some(130), "{stderr}");
    assert!(
        stderr.contains("run marked killed") && stderr.contains("waiting up to"),
        "{stderr}"
    );
    assert!(stderr.contains("checkpoint save finished"), "{stderr}");

    // Committed and verified, with exactly the bytes that were streamed.
    let c = ModelCheckpointer::open("sigsave", common::config(&dir.join("ckpt"))).unwrap();
    assert_eq!(c.latest().map(|i| i.step), Some(2));
    c.verify(2).unwrap();
    let bytes = c.load_file(2, "model.bin").unwrap();
    assert_eq!(bytes.len(), BIG);
    assert_eq!(Sha256::digest(&bytes), sent.finalize());
    drop(c);
    assert_eq!(
        RunReader::open(&run_dir)
            .unwrap()
            .metadata()
            .unwrap()
            .status,
        RunStatus::Killed
    );

    // The rerun resumes: the same run, from the step-2 checkpoint.
    let t = ExperimentTracker::builder(ExperimentConfig::named("sigsave"))
        .runs_dir(dir.join("runs"))
        .collect_system_info(false)
        .handle_signals(false)
        .resume(exptrack_core::Resume::LatestUnfinished)
        .build()
        .unwrap();
    assert_eq!(t.run_dir(), run_dir);
    t.finish(RunStatus::Completed).unwrap();
    let mut c = ModelCheckpointer::open("sigsave", common::config(&dir.join("ckpt"))).unwrap();
    match c.resume_or_start().unwrap() {
        Resume::Resumed(l) => assert_eq!(l.step(), 2),
        _ => panic!("no resume from step 2"),
    }
}

#[test]
fn sigterm_wait_is_bounded_and_an_unfinished_save_is_absent() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let child = spawn_child(dir, Duration::from_millis(1500));
    let run_dir = wait_accepted(dir);
    let mut fifo = std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("fifo"))
        .unwrap();
    for i in 0..4 {
        fifo.write_all(&chunk(i)).unwrap();
    }
    // The save stalls (its source never ends) while the signal arrives: the exit waits the finish
    // timeout, says so, and goes.
    let t0 = Instant::now();
    sigterm(&child);
    let (code, stderr) = wait_exit(child, Duration::from_secs(60));
    let waited = t0.elapsed();
    drop(fifo);
    assert_eq!(code, Some(130), "{stderr}");
    assert!(stderr.contains("gave up waiting"), "{stderr}");
    assert!(stderr.contains("checkpoint save"), "{stderr}");
    assert!(waited >= Duration::from_millis(1400), "{waited:?}");

    // Step 2 was never committed; step 1 is intact and the rerun resumes from it.
    let mut c = ModelCheckpointer::open("sigsave", common::config(&dir.join("ckpt"))).unwrap();
    assert_eq!(c.list().iter().map(|i| i.step).collect::<Vec<_>>(), vec![1]);
    c.verify(1).unwrap();
    match c.resume_or_start().unwrap() {
        Resume::Resumed(l) => assert_eq!(l.step(), 1),
        _ => panic!("no resume from step 1"),
    }
    assert_eq!(
        RunReader::open(&run_dir)
            .unwrap()
            .metadata()
            .unwrap()
            .status,
        RunStatus::Killed
    );
}
