//! The facade builds the backends that `[tracking]` switches on.

use exptrack::{ExperimentConfig, RunStatus};

#[cfg(feature = "tensorboard")]
#[test]
fn tensorboard_is_on_by_default_and_writes_beside_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg =
        ExperimentConfig::parse("[experiment]\nname = \"facade\"\n", "facade.toml").unwrap();
    cfg.tracking.runs_dir = tmp.path().join("runs");
    let t = exptrack::tracker(cfg)
        .unwrap()
        .handle_signals(false)
        .build()
        .unwrap();
    assert_eq!(t.tracker_count(), 1);
    t.log_metrics(1, &[("loss", 0.5)]).unwrap();
    let dir = t.run_dir().to_path_buf();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n.contains("tfevents")), "{names:?}");
    for f in [
        "events.jsonl",
        "metadata.json",
        "summary.json",
        "results.json",
        "cursors.json",
    ] {
        assert!(names.iter().any(|n| n == f), "{f} missing: {names:?}");
    }
}

#[test]
fn every_backend_can_be_switched_off() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = ExperimentConfig::parse(
        "[experiment]\nname = \"off\"\n[tracking]\nuse_tensorboard = false\n",
        "off.toml",
    )
    .unwrap();
    let t = exptrack::tracker(cfg)
        .unwrap()
        .runs_dir(tmp.path())
        .handle_signals(false)
        .build()
        .unwrap();
    assert_eq!(t.tracker_count(), 0);
    t.finish(RunStatus::Completed).unwrap();
}

#[cfg(not(feature = "mlflow"))]
#[test]
fn a_backend_that_is_not_compiled_in_is_a_clear_error() {
    let cfg = ExperimentConfig::parse(
        "[experiment]\nname = \"x\"\n[tracking]\nuse_mlflow = true\n",
        "x.toml",
    )
    .unwrap();
    let err = exptrack::tracker(cfg).unwrap_err().to_string();
    assert!(err.contains("`mlflow` feature"), "{err}");
}

#[cfg(feature = "wandb")]
#[test]
fn wandb_offline_from_the_config() {
    let tmp = tempfile::tempdir().unwrap();
    let text = format!(
        "[experiment]\nname = \"wb\"\n[tracking]\nuse_tensorboard = false\nuse_wandb = true\nwandb_mode = \"offline\"\nwandb_project = \"p\"\nwandb_dir = {:?}\n",
        tmp.path().join("wb").display().to_string()
    );
    let cfg = ExperimentConfig::parse(&text, "wb.toml").unwrap();
    let t = exptrack::tracker(cfg)
        .unwrap()
        .runs_dir(tmp.path().join("runs"))
        .handle_signals(false)
        .build()
        .unwrap();
    t.log_metrics(1, &[("loss", 0.5)]).unwrap();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let wandb_root = tmp.path().join("wb").join("wandb");
    let runs: Vec<_> = std::fs::read_dir(&wandb_root)
        .unwrap_or_else(|e| panic!("{}: {e}", wandb_root.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        runs.iter().any(|n| n.starts_with("offline-run-")),
        "{runs:?}"
    );
}

#[test]
fn bad_wandb_mode_is_reported() {
    let cfg = ExperimentConfig::parse(
        "[experiment]\nname = \"x\"\n[tracking]\nuse_wandb = true\nwandb_mode = \"sometimes\"\n",
        "x.toml",
    )
    .unwrap();
    let err = exptrack::tracker(cfg).unwrap_err().to_string();
    assert!(err.contains("wandb"), "{err}");
}
