//! Checkpoint reports in the local store: written to `events.jsonl`, and read back by
//! `RunReader::checkpoints` as the checkpoints that exist and those retention deleted.

use exptrack_core::CheckpointSet;
use exptrack_core::Event;
use exptrack_core::conformance::{checkpoint_report, checkpoint_run, log_through_store};
use exptrack_core::store::RunReader;

#[test]
fn the_store_lists_present_and_pruned_checkpoints() {
    let tmp = tempfile::tempdir().unwrap();
    let dir =
        log_through_store(&tmp.path().join("runs"), "ckpt", vec![], checkpoint_run()).unwrap();
    let set = RunReader::open(&dir).unwrap().checkpoints().unwrap();
    let present: Vec<u64> = set.present().map(|c| c.step).collect();
    assert_eq!(present, [4, 6]);
    assert_eq!(set.pruned().collect::<Vec<_>>(), [2]);
    let six = set.present().last().unwrap();
    assert_eq!(six.files[0].name, "model.bpk");
    assert_eq!(six.total_size(), 6007);
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    assert_eq!(text.matches(r#""kind":"checkpoint""#).count(), 3, "{text}");
}

#[test]
fn a_pruned_step_committed_again_is_present() {
    let mut set = CheckpointSet::new();
    set.apply(&checkpoint_report(2, false, &[]));
    set.apply(&checkpoint_report(3, false, &[2]));
    assert_eq!(set.pruned().collect::<Vec<_>>(), [2]);
    let mut again = checkpoint_report(2, true, &[]);
    again.files.truncate(1);
    set.apply(&again);
    assert!(set.pruned().next().is_none());
    let two = set.present().next().unwrap();
    assert_eq!((two.step, two.is_best, two.files.len()), (2, true, 1));
    assert!(!set.is_empty());
    // Other kinds do not touch it.
    assert_eq!(Event::Checkpoint(again).kind().to_string(), "checkpoint");
}

#[test]
fn manifest_and_markdown_describe_the_checkpoint() {
    let mut r = checkpoint_report(4, true, &[2]);
    r.metrics.push(exptrack_core::Metric::new("acc", f64::NAN));
    let m = r.manifest();
    assert_eq!(m["step"], 4);
    assert_eq!(m["size"], 4007);
    assert_eq!(m["files"][1]["name"], "optim.bpk");
    assert_eq!(m["metrics"]["val_loss"], 0.25);
    assert_eq!(m["metrics"]["acc"], "NaN");
    let md = r.markdown();
    assert!(md.contains("| optim.bpk | 7 |"), "{md}");
    assert!(
        md.contains("pruned (deleted by retention): ckpt-000000000002"),
        "{md}"
    );
}

#[test]
fn latest_best_and_manifests_follow_retention() {
    let mut set = CheckpointSet::new();
    assert!(set.latest().is_none() && set.best().is_none());
    for e in checkpoint_run() {
        if let Event::Checkpoint(r) = e {
            set.apply(&r);
        }
    }
    // 4 was the best when saved, 6 is newer (and not best), 2 was deleted.
    assert_eq!(set.latest().map(|r| r.step), Some(6));
    assert_eq!(set.best().map(|r| r.step), Some(4));
    let m = set.manifests();
    assert_eq!(
        m.keys().collect::<Vec<_>>(),
        ["ckpt-000000000004", "ckpt-000000000006"]
    );
    assert_eq!(
        m["ckpt-000000000004"],
        checkpoint_report(4, true, &[]).manifest()
    );
    // Retention deletes the best one: no best is left, the latest stays.
    set.apply(&checkpoint_report(8, false, &[4]));
    assert!(set.best().is_none());
    assert_eq!(set.latest().map(|r| r.step), Some(8));
    assert_eq!(set.pruned().collect::<Vec<_>>(), [2, 4]);
}

#[test]
fn a_resumed_run_starts_from_the_checkpoints_it_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let dir = log_through_store(&runs, "ckpt-resume", vec![], checkpoint_run()).unwrap();
    let mut ctx = exptrack_core::conformance::context(tmp.path(), "ckpt-resume");
    ctx.run_dir = dir;
    let fresh = exptrack_core::store::resumed_checkpoints(&ctx);
    assert!(fresh.is_empty(), "a new run starts empty");
    ctx.resumed = true;
    let set = exptrack_core::store::resumed_checkpoints(&ctx);
    assert_eq!(set.present().map(|r| r.step).collect::<Vec<_>>(), [4, 6]);
    assert_eq!(set.pruned().collect::<Vec<_>>(), [2]);
    ctx.run_dir = tmp.path().join("nowhere");
    // A run directory that cannot be read: nothing to start from (and a warning).
    assert!(exptrack_core::store::resumed_checkpoints(&ctx).is_empty());
}

/// The fuzz corpus seed for checkpoint reports (`fuzz/corpus/events_jsonl/checkpoints`, written
/// by `fuzz/seeds/make_seeds.py`) is a valid log, so the fuzzer starts from the reader's
/// checkpoint path and not from a rejected line.
#[test]
fn the_fuzz_seed_of_checkpoint_reports_is_a_valid_log() {
    let seed = std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus/events_jsonl/checkpoints"),
    )
    .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("metadata.json"), b"{}").unwrap();
    // The first byte is the target's selector; the rest is the log.
    std::fs::write(tmp.path().join("events.jsonl"), &seed[1..]).unwrap();
    let reader = RunReader::open(tmp.path()).unwrap();
    assert_eq!(reader.events().unwrap().len(), 5);
    let set = reader.checkpoints().unwrap();
    assert_eq!(set.present().map(|r| r.step).collect::<Vec<_>>(), [4, 6]);
    assert_eq!(set.pruned().collect::<Vec<_>>(), [2]);
    let four = set.present().next().unwrap();
    assert!(four.location.starts_with("s3://"), "{}", four.location);
    assert!(four.metrics[1].value.is_nan());
}
