//! Offline runs: the directory layout, our reader, and `wandb leet inspect` from wandb 0.31.

mod common;

use std::path::Path;

use exptrack_core::{RunStatus, Tracker};
use exptrack_wandb::proto::RecordType;
use exptrack_wandb::txlog::read_records;
use exptrack_wandb::{Mode, WandbTracker};

#[path = "common/runs.rs"]
mod runs;

fn offline_run(dir: &Path, run_id: &str) -> WandbTracker {
    let artifact = dir.join("readme.txt");
    std::fs::write(&artifact, "hello").unwrap();
    let mut t = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(dir)
        .project("exptrack-test")
        .build()
        .unwrap();
    let ctx = common::context(dir, "wbtest", run_id, runs::CONFIG);
    t.open(&ctx).unwrap();
    runs::feed(&mut t, &runs::events(&artifact), 4);
    t.close(RunStatus::Completed).unwrap();
    t
}

#[test]
fn layout_and_records_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let t = offline_run(tmp.path(), "run:one");
    let run_dir = t.run_dir().unwrap().to_owned();
    let name = run_dir.file_name().unwrap().to_str().unwrap().to_owned();
    assert!(
        name.starts_with("offline-run-") && name.ends_with("-run-one"),
        "{name}"
    );
    assert_eq!(run_dir.parent().unwrap(), tmp.path().join("wandb"));
    for f in [
        "config.yaml",
        "wandb-summary.json",
        "wandb-metadata.json",
        "notes/readme.txt",
    ] {
        assert!(run_dir.join("files").join(f).is_file(), "missing files/{f}");
    }
    let log = run_dir.join("run-run-one.wandb");
    assert_eq!(t.log_path().unwrap(), log);

    let records = read_records(&log).unwrap();
    let kinds: Vec<&str> = records
        .iter()
        .map(|r| r.record_type.as_ref().map_or("?", RecordType::name))
        .collect();
    assert_eq!(kinds[..3], ["header", "run", "environment"]);
    assert_eq!(*kinds.last().unwrap(), "exit");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.num, i as i64 + 1);
    }
    let histories: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.record_type {
            Some(RecordType::History(h)) => Some(h),
            _ => None,
        })
        .collect();
    assert_eq!(
        histories.len(),
        runs::STEPS as usize,
        "one row per step (step 3 merged)"
    );
    for (s, h) in histories.iter().enumerate() {
        let keys: Vec<String> = h.item.iter().map(|i| i.nested_key.join(".")).collect();
        for (k, _) in runs::step_values(s as u64) {
            assert!(keys.contains(&k), "step {s} lacks {k}: {keys:?}");
        }
        let step = h.item.iter().find(|i| i.nested_key == ["_step"]).unwrap();
        assert_eq!(step.value_json, s.to_string());
    }
    let Some(RecordType::Exit(exit)) = &records.last().unwrap().record_type else {
        unreachable!()
    };
    assert_eq!(exit.exit_code, 0);
    let Some(RecordType::Run(run)) = &records[1].record_type else {
        unreachable!()
    };
    assert_eq!(run.run_id, "run-one");
    assert_eq!(run.project, "exptrack-test");
    let cfg: Vec<&str> = run
        .config
        .as_ref()
        .unwrap()
        .update
        .iter()
        .map(|i| i.key.as_str())
        .collect();
    assert_eq!(cfg, ["experiment", "model", "optim"]);

    let summary = exptrack_wandb::parse_lenient(
        &std::fs::read_to_string(run_dir.join("files/wandb-summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(summary["_step"], 11);
    assert_eq!(summary["weird"], "NaN");
    assert_eq!(summary["big"], "Infinity");
    assert_eq!(summary["val/loss"], 2.0 / 12.0);
    let yaml = std::fs::read_to_string(run_dir.join("files/config.yaml")).unwrap();
    assert!(yaml.contains("\"batch_size\":\n    value: 32"), "{yaml}");
}

#[test]
fn failed_runs_exit_nonzero_and_unfinished_runs_have_no_exit() {
    for (status, want) in [
        (RunStatus::Failed, Some(1)),
        (RunStatus::Killed, Some(255)),
        (RunStatus::Running, None),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let mut t = WandbTracker::builder()
            .mode(Mode::Offline)
            .dir(tmp.path())
            .build()
            .unwrap();
        t.open(&common::context(tmp.path(), "x", "r1", "")).unwrap();
        t.close(status).unwrap();
        let records = read_records(t.log_path().unwrap()).unwrap();
        let exit = records.iter().find_map(|r| match &r.record_type {
            Some(RecordType::Exit(e)) => Some(e.exit_code),
            _ => None,
        });
        assert_eq!(exit, want, "{status:?}");
    }
}

#[test]
fn wandb_leet_inspect_reads_every_record_and_rejects_a_flipped_byte() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = offline_run(tmp.path(), "leet1");
    let log = t.log_path().unwrap().to_owned();
    let ours = read_records(&log).unwrap();
    let inspect = common::leet_inspect(&py, tmp.path(), &log);
    assert!(inspect.ok, "leet inspect failed: {}", inspect.stderr);
    assert!(!inspect.stderr.contains("corrupt"), "{}", inspect.stderr);
    let theirs = inspect.records;
    assert_eq!(
        theirs.len(),
        ours.len(),
        "leet saw {} records, we wrote {}",
        theirs.len(),
        ours.len()
    );
    for (o, t) in ours.iter().zip(&theirs) {
        assert_eq!(t["num"], o.num);
        assert_eq!(t["type"], o.record_type.as_ref().unwrap().name(), "{t}");
    }
    let rows: Vec<&serde_json::Value> = theirs.iter().filter(|r| r["type"] == "history").collect();
    for (s, r) in rows.iter().enumerate() {
        let item = &r["history"]["item"];
        assert_eq!(item["_step"], s as u64, "{r}");
        assert_eq!(item["train/loss"], 1.0 / (s as f64 + 1.0), "{r}");
    }
    assert_eq!(rows[7]["history"]["item"]["weird"], "NaN");
    let run = theirs.iter().find(|r| r["type"] == "run").unwrap();
    assert_eq!(run["run"]["run_id"], "leet1");
    assert_eq!(
        run["run"]["config"]["update"]["model"]["layers"], 4,
        "{run}"
    );
    let exit = theirs.last().unwrap();
    assert_eq!(exit["type"], "exit");

    // wandb 0.31's `leet inspect` exits nonzero for a damaged header; for a damaged chunk it
    // reports "skipped corrupt data" on stderr, drops the rest of that block and exits 0.
    let bytes = std::fs::read(&log).unwrap();
    let bad = tmp.path().join("bad.wandb");
    for at in [0usize, 4, 6] {
        let mut b = bytes.clone();
        b[at] ^= 0x10;
        std::fs::write(&bad, &b).unwrap();
        assert!(read_records(&bad).is_err());
        let inspect = common::leet_inspect(&py, tmp.path(), &bad);
        assert!(
            !inspect.ok,
            "leet inspect accepted a damaged header (byte {at})"
        );
    }
    let mut b = bytes.clone();
    let at = bytes.len() / 2;
    b[at] ^= 0x10;
    std::fs::write(&bad, &b).unwrap();
    assert!(read_records(&bad).is_err());
    let inspect = common::leet_inspect(&py, tmp.path(), &bad);
    assert!(
        inspect.stderr.contains("corrupt"),
        "no corruption reported: {}",
        inspect.stderr
    );
    assert!(inspect.records.len() < ours.len());
}
