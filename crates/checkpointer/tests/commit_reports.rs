//! Every commit is reported through the commit hook (`on_commit`, `report_to`): synchronous and
//! background saves, with the steps retention deleted, by reference (never the weights).

use std::sync::{Arc, Mutex};

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};
use exptrack_core::store::RunReader;
use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};

type Seen = Arc<Mutex<Vec<(u64, Vec<u64>)>>>;

fn open(dir: &std::path::Path, keep: usize, async_save: bool) -> (ModelCheckpointer, Seen) {
    let config = CheckpointConfig {
        dir: dir.to_owned(),
        max_checkpoints: Some(keep),
        async_save,
        ..CheckpointConfig::default()
    };
    let mut ckpt = ModelCheckpointer::open("exp-1", config).unwrap();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    assert!(!ckpt.has_commit_hook());
    ckpt.on_commit(move |info, pruned| s.lock().unwrap().push((info.step, pruned.to_vec())));
    assert!(ckpt.has_commit_hook());
    (ckpt, seen)
}

fn ckpt(step: u64) -> Checkpoint {
    Checkpoint::new(step)
        .metric("val_loss", 1.0 / (step + 1) as f64)
        .file("model.bpk", vec![step as u8; 100 + step as usize])
}

#[test]
fn sync_and_async_commits_are_reported_in_order_with_pruned_steps() {
    for async_save in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let (mut c, seen) = open(tmp.path(), 2, async_save);
        for s in 1..=4 {
            c.save_auto(ckpt(s)).unwrap();
        }
        c.wait().unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            [(1, vec![]), (2, vec![]), (3, vec![1]), (4, vec![2])],
            "async_save = {async_save}"
        );
    }
}

#[test]
fn an_explicit_prune_is_reported_with_the_next_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let config = CheckpointConfig {
        dir: tmp.path().to_owned(),
        ..CheckpointConfig::default()
    };
    let mut c = ModelCheckpointer::open("exp-1", config.clone()).unwrap();
    for s in 1..=3 {
        c.save(ckpt(s)).unwrap();
    }
    drop(c);
    // Reopened with a tighter policy: prune deletes 1 and 2, the next commit says so.
    let (mut c, seen) = open(tmp.path(), 1, false);
    assert_eq!(c.prune().unwrap(), [1, 2]);
    c.save(ckpt(4)).unwrap();
    assert_eq!(*seen.lock().unwrap(), [(4, vec![1, 2, 3])]);
}

#[test]
fn report_to_logs_checkpoint_events_by_reference() {
    let tmp = tempfile::tempdir().unwrap();
    let tracker = ExperimentTracker::builder(ExperimentConfig::named("ckpt-report"))
        .runs_dir(tmp.path().join("runs"))
        .handle_signals(false)
        .build()
        .unwrap();
    let config = CheckpointConfig {
        dir: tmp.path().join("checkpoints"),
        max_checkpoints: Some(1),
        monitor: Some("val_loss".into()),
        async_save: true,
        ..CheckpointConfig::default()
    };
    let mut c = ModelCheckpointer::open("exp-1", config).unwrap();
    c.report_to(tracker.clone());
    for s in 1..=3 {
        c.save_async(ckpt(s)).unwrap();
    }
    c.wait().unwrap();
    let infos = c.list();
    drop(c);
    let run_dir = tracker.run_dir().to_path_buf();
    tracker.finish(RunStatus::Completed).unwrap();

    let set = RunReader::open(&run_dir).unwrap().checkpoints().unwrap();
    // Keep last 1 plus the best (the newest here, as val_loss falls): only 3 is left.
    assert_eq!(infos.iter().map(|i| i.step).collect::<Vec<_>>(), [3]);
    assert_eq!(set.present().map(|r| r.step).collect::<Vec<_>>(), [3]);
    assert_eq!(set.pruned().collect::<Vec<_>>(), [1, 2]);
    let r = set.present().next().unwrap();
    let info = &infos[0];
    assert_eq!(r.location, info.dir.display().to_string());
    assert!(r.is_best);
    assert_eq!(r.files.len(), 1);
    assert_eq!(r.files[0].name, "model.bpk");
    assert_eq!(r.files[0].size, 103);
    assert_eq!(r.files[0].hash, info.files[0].hash.to_string());
    assert!(
        r.files[0].hash.starts_with("blake3:"),
        "{}",
        r.files[0].hash
    );
    assert_eq!(r.metrics[0].key, "val_loss");
    assert_eq!(r.metrics[0].value, 0.25);
    // By reference: the log holds no copy of the weights.
    let log = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    assert!(!log.contains(r#""kind":"artifact""#), "{log}");
}
