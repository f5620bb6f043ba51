//! The tracker behind exptrack-core's dispatcher, and replaying a stored run with `sync_run`.

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use exptrack_wandb::proto::RecordType;
use exptrack_wandb::txlog::read_records;
use exptrack_wandb::{Mode, WandbTracker};

const CONFIG: &str = "[experiment]\nname = \"storesync\"\n\n[model]\nlayers = 2\n";

fn summary_of(records: &[exptrack_wandb::proto::Record]) -> (usize, Option<i32>, Vec<String>) {
    let mut rows = 0;
    let mut exit = None;
    let mut config = Vec::new();
    for r in records {
        match &r.record_type {
            Some(RecordType::History(_)) => rows += 1,
            Some(RecordType::Exit(e)) => exit = Some(e.exit_code),
            Some(RecordType::Config(c)) => config.extend(c.update.iter().map(|i| i.key.clone())),
            Some(RecordType::Run(run)) => {
                if let Some(c) = &run.config {
                    config.extend(c.update.iter().map(|i| i.key.clone()));
                }
            }
            _ => {}
        }
    }
    (rows, exit, config)
}

#[test]
fn live_dispatch_and_sync_run_write_the_same_run() {
    let tmp = tempfile::tempdir().unwrap();
    let live = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(tmp.path().join("live"))
        .build()
        .unwrap();
    let cfg = ExperimentConfig::parse(CONFIG, "<test>").unwrap();
    let t = ExperimentTracker::builder(cfg)
        .runs_dir(tmp.path().join("runs"))
        .handle_signals(false)
        .collect_system_info(false)
        .with_tracker(Box::new(live))
        .build()
        .unwrap();
    t.log_hyperparameters(&[("lr", 0.01)]).unwrap();
    for s in 0..50u64 {
        t.log_metrics(s, &[("train/loss", 1.0 / (s as f64 + 1.0))])
            .unwrap();
    }
    let run_dir = t.run_dir().to_owned();
    let run_id = t.metadata().run_id.clone();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(format!("{report:?}").contains("wandb"), "{report:?}");

    let find = |root: &std::path::Path| {
        let wandb = root.join("wandb");
        let dir = std::fs::read_dir(&wandb)
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().contains("offline-run-"))
            .expect("an offline run directory");
        dir.join(format!("run-{run_id}.wandb"))
    };
    let live_records = read_records(&find(&tmp.path().join("live"))).unwrap();
    let (rows, exit, config) = summary_of(&live_records);
    assert_eq!(rows, 50);
    assert_eq!(exit, Some(0));
    assert!(
        config.contains(&"lr".to_owned()) && config.contains(&"model".to_owned()),
        "{config:?}"
    );

    // The live tracker advanced the "wandb" cursor to the end: a replay would deliver nothing.
    let cursors = run_dir.join("cursors.json");
    let text = std::fs::read_to_string(&cursors).unwrap();
    assert!(text.contains("wandb"), "{text}");
    std::fs::remove_file(&cursors).unwrap();
    let mut replay = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(tmp.path().join("replay"))
        .build()
        .unwrap();
    let report = exptrack_wandb::sync_run(&run_dir, &mut replay).unwrap();
    assert!(report.closed);
    assert!(report.delivered >= 51, "{report:?}");
    assert_eq!(replay.run_id(), Some(run_id.as_str()));
    let replayed = read_records(&find(&tmp.path().join("replay"))).unwrap();
    assert_eq!(summary_of(&replayed), (rows, exit, config));
}
