//! The quickstart as a library call: trains, interrupts and resumes, reports a completed
//! experiment, retrains when forced, and writes results.json in the run directory; its run lists
//! the checkpoints of both processes (`Event::Checkpoint` per commit, pruned steps named).

use exptrack::quickstart::{QuickstartArgs, run};

#[path = "quickstart_bin/small_run.rs"]
mod small_run;

fn config() -> String {
    format!(
        r#"
[experiment]
name = "quickstart-test"

[checkpointing]
max_checkpoints = 2
async = true
fsync = false
{}"#,
        small_run::SMALL_RUN
    )
}

#[test]
fn quickstart_interrupts_resumes_completes_and_forces() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("quickstart.toml");
    std::fs::write(&cfg, config()).unwrap();
    let args = |force: bool, stop: Option<u64>| QuickstartArgs {
        config: Some(cfg.clone()),
        force,
        runs_dir: Some(dir.path().join("runs")),
        stop_after_step: stop,
        quiet: true,
        ..QuickstartArgs::default()
    };

    let first = run(args(false, Some(25))).unwrap();
    assert!(first.result.interrupted);
    assert_eq!(first.result.steps, 25);

    let second = run(args(false, None)).unwrap();
    assert!(!second.already_completed);
    assert_eq!(second.result.resumed_from_step, Some(25));
    assert_eq!(second.result.steps, 64); // 2 epochs × 32 batches
    assert!(
        second.final_accuracy > 0.8,
        "accuracy {}",
        second.final_accuracy
    );
    // The interrupted run was continued (same run directory) and completed with results.json.
    assert_eq!(first.run_dir, second.run_dir);
    let run_dir = second.run_dir.clone().unwrap();
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(run_dir.join("results.json")).unwrap()).unwrap();
    let acc = results["extra"]["final_valid_accuracy"]
        .as_f64()
        .unwrap_or_else(|| panic!("no final_valid_accuracy in {results}"));
    assert!((acc - second.final_accuracy).abs() < 1e-12);
    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    assert!(events.contains("train/loss") && events.contains("valid/accuracy"));
    // Every commit of both processes is reported (20 and the stop at 25, then the epoch ends at
    // 32 and 64 and the saves at 40 and 60); the last two are kept.
    assert_eq!(events.matches(r#""kind":"checkpoint""#).count(), 6);
    let set = exptrack::store::RunReader::open(&run_dir)
        .unwrap()
        .checkpoints()
        .unwrap();
    assert_eq!(set.present().map(|r| r.step).collect::<Vec<_>>(), [60, 64]);
    assert_eq!(set.pruned().collect::<Vec<_>>(), [20, 25, 32, 40]);
    for r in set.present() {
        assert_eq!(
            std::path::Path::new(&r.location),
            second.checkpoint_dir.join(r.name())
        );
        assert!(second.checkpoint_dir.join(r.name()).is_dir(), "{r:?}");
        assert!(!r.files.is_empty() && r.files.iter().all(|f| f.size > 0));
    }
    for step in set.pruned() {
        let gone = second.checkpoint_dir.join(exptrack::checkpoint_name(step));
        assert!(!gone.exists(), "{} was deleted", gone.display());
    }

    let third = run(args(false, None)).unwrap();
    assert!(third.already_completed);
    assert_eq!(third.final_accuracy, second.final_accuracy);

    let forced = run(args(true, None)).unwrap();
    assert!(!forced.already_completed);
    assert_eq!(forced.result.resumed_from_step, None);
    assert_eq!(forced.result.steps, 64);
    assert_ne!(forced.run_dir, second.run_dir);
}
