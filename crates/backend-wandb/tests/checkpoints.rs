//! Committed checkpoints in the W&B run summary, by reference: `checkpoints` maps each checkpoint
//! that exists to its manifest, `checkpoints/latest` / `checkpoints/best` name the newest and the
//! best; a step retention deleted leaves the map, and a resumed run keeps the checkpoints of
//! before. Read back with the real wandb 0.31: `leet inspect` of the offline log, and what
//! `wandb sync` uploads to the recorder.

mod common;
#[path = "common/upload.rs"]
mod upload;

use std::path::{Path, PathBuf};

use exptrack_core::conformance::{
    checkpoint_report, checkpoint_run, log_through_store, resume_and_write,
};
use exptrack_core::{Batch, Event, EventKind, RunStatus, Tracker};
use exptrack_wandb::{Mode, SUMMARY_CHECKPOINTS, WandbTracker};
use serde_json::{Value, json};
use upload::Upload;

fn offline(dir: &Path) -> WandbTracker {
    WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(dir)
        .project("exptrack-test")
        .entity("team-a")
        .build()
        .unwrap()
}

/// The one offline run directory under `dir`.
fn offline_run_dir(dir: &Path) -> PathBuf {
    let runs: Vec<PathBuf> = std::fs::read_dir(dir.join("wandb"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("offline-run-"))
        })
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs[0].clone()
}

/// The summary as `leet inspect` reads it from the log: every summary record's updates, in order.
fn inspected_summary(py: &Path, home: &Path, run_dir: &Path) -> Value {
    let log = std::fs::read_dir(run_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "wandb"))
        .expect("a .wandb log");
    let inspect = common::leet_inspect(py, home, &log);
    assert!(inspect.ok, "leet inspect failed: {}", inspect.stderr);
    let mut summary = serde_json::Map::new();
    for r in inspect.records.iter().filter(|r| r["type"] == "summary") {
        if let Some(u) = r["summary"]["update"].as_object() {
            summary.extend(u.clone());
        }
    }
    Value::Object(summary)
}

fn file_summary(run_dir: &Path) -> Value {
    exptrack_wandb::parse_lenient(
        &std::fs::read_to_string(run_dir.join("files/wandb-summary.json")).unwrap(),
    )
    .unwrap()
}

fn names(v: &Value) -> Vec<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not a map: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// The summary after `checkpoint_run`: 4 and 6 exist (4 the best), 2 was deleted.
fn check_first(summary: &Value, who: &str) {
    let map = &summary[SUMMARY_CHECKPOINTS];
    assert_eq!(
        names(map),
        ["ckpt-000000000004", "ckpt-000000000006"],
        "{who}: {summary}"
    );
    assert_eq!(
        map["ckpt-000000000004"],
        checkpoint_report(4, true, &[]).manifest(),
        "{who}"
    );
    assert_eq!(
        map["ckpt-000000000006"],
        checkpoint_report(6, false, &[2]).manifest(),
        "{who}"
    );
    assert_eq!(map["ckpt-000000000006"]["files"][1]["name"], "optim.bpk");
    assert_eq!(summary["checkpoints/latest"], "ckpt-000000000006", "{who}");
    assert_eq!(summary["checkpoints/best"], "ckpt-000000000004", "{who}");
    // The metrics are still there beside it.
    assert_eq!(summary["train/loss"], 1.0 / 7.0, "{who}");
}

#[test]
fn the_summary_lists_the_checkpoints_that_exist() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let wb = tmp.path().join("wb");
    let tracker = offline(&wb);
    assert!(tracker.supports(EventKind::Checkpoint));
    // Through the dispatcher and the local store, as a training run reports its commits.
    let store_dir = log_through_store(
        &tmp.path().join("runs"),
        "wandb-checkpoints",
        vec![Box::new(tracker)],
        checkpoint_run(),
    )
    .unwrap();
    let run_dir = offline_run_dir(&wb);

    check_first(
        &inspected_summary(&py, tmp.path(), &run_dir),
        "leet inspect",
    );
    check_first(&file_summary(&run_dir), "wandb-summary.json");
    // By reference: no file of the checkpoints is in the run.
    let files: Vec<String> = walk(&run_dir.join("files"));
    assert!(
        files.iter().all(|f| !f.contains(".bpk")),
        "no weights: {files:?}"
    );

    // What the real `wandb sync` uploads.
    let rec = common::Recorder::start(&py, tmp.path());
    let out = common::run(
        common::isolated(&common::wandb_exe(&py), tmp.path())
            .env("WANDB_BASE_URL", rec.base_url())
            .env("WANDB_API_KEY", common::FAKE_KEY)
            .arg("sync")
            .arg(&run_dir),
    );
    assert!(out.status.success(), "wandb sync failed");
    let u = Upload::from_requests(&rec.requests());
    check_first(u.summary.as_ref().expect("a summary"), "wandb sync");

    // The run resumes in a new process and commits 8, whose save deletes 4 (the best).
    let wb2 = tmp.path().join("wb-resumed");
    let later = [Event::Checkpoint(checkpoint_report(8, false, &[4]))];
    resume_and_write(&mut offline(&wb2), &store_dir, &later).unwrap();
    let resumed_dir = offline_run_dir(&wb2);
    for (who, summary) in [
        (
            "leet inspect",
            inspected_summary(&py, tmp.path(), &resumed_dir),
        ),
        ("wandb-summary.json", file_summary(&resumed_dir)),
    ] {
        let map = &summary[SUMMARY_CHECKPOINTS];
        assert_eq!(
            names(map),
            ["ckpt-000000000006", "ckpt-000000000008"],
            "{who}: 6 from before the resume, 4 deleted"
        );
        assert_eq!(map["ckpt-000000000008"]["size"], 8007, "{who}");
        assert_eq!(summary["checkpoints/latest"], "ckpt-000000000008", "{who}");
        assert_eq!(summary["checkpoints/best"], json!(null), "{who}");
    }
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn the_online_client_sends_the_checkpoints_in_the_summary() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let mut t = common::online_tracker(&rec, tmp.path());
    t.open(&common::context(tmp.path(), "ckpt", "ckpt-online", ""))
        .unwrap();
    let events = checkpoint_run();
    t.write(&Batch {
        first_seq: 1,
        events: &events,
    })
    .unwrap();
    t.close(RunStatus::Completed).unwrap();
    let u = Upload::from_requests(&rec.requests());
    check_first(u.summary.as_ref().expect("a summary"), "online client");
}
