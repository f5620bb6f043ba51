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

#[cfg(feature = "wandb")]
#[test]
fn a_backend_error_keeps_its_source() {
    let cfg = ExperimentConfig::parse(
        "[experiment]\nname = \"x\"\n[tracking]\nuse_wandb = true\nwandb_mode = \"sometimes\"\n",
        "x.toml",
    )
    .unwrap();
    let err = exptrack::tracker(cfg).unwrap_err();
    assert!(
        matches!(
            err,
            exptrack::FacadeError::Backend {
                backend: "wandb",
                ..
            }
        ),
        "{err:?}"
    );
    let source = std::error::Error::source(&err).expect("the wandb error as the source");
    assert!(err.to_string().contains(&source.to_string()), "{err}");
}

/// `Experiment`: one config in; completed experiments are reported, with their results, and
/// `force` starts over in a new run.
#[cfg(feature = "trainer")]
#[test]
fn an_experiment_trains_then_reports_completion_and_force_starts_over() {
    use exptrack::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
    use exptrack::{Experiment, Resume, Start};

    const CONFIG: &str = "[experiment]\nname = \"facade-experiment\"\n[tracking]\n\
                          use_tensorboard = false\n[checkpointing]\nasync = true\nfsync = false\n\
                          [training]\nnum_epochs = 1\nbatch_size = 32\nprogress = false\n";
    let tmp = tempfile::tempdir().unwrap();
    let experiment = || Experiment::from_toml(CONFIG).unwrap().runs_dir(tmp.path());
    assert_eq!(experiment().resume(), Resume::LatestUnfinished);
    assert_eq!(experiment().force(true).resume(), Resume::Never);
    let (train, valid) = generate_dataset(128, 32, 3).unwrap();

    let Start::Train(mut run) = experiment().start().unwrap() else {
        panic!("a new experiment is not completed");
    };
    assert_eq!(run.resumes_from(), None);
    assert_eq!(run.experiment_id(), experiment().id());
    assert!(
        run.checkpoint_dir()
            .starts_with(tmp.path().join("checkpoints"))
    );
    let first_run = run.run_dir().to_path_buf();
    let model = Mlp::new(FEATURES, 16, CLASSES, run.device());
    let (_, result) = run.fit(model, &train, &valid).unwrap();
    assert!(run.finish(&result).unwrap().is_complete());

    let Start::Completed(done) = experiment().start().unwrap() else {
        panic!("the experiment completed");
    };
    let text = done.to_string();
    assert!(
        text.contains("already completed") && text.contains("valid/accuracy"),
        "{text}"
    );
    assert_eq!(done.training_result().unwrap().steps, result.steps);

    let Start::Train(run) = experiment().force(true).start().unwrap() else {
        panic!("forced");
    };
    assert_ne!(
        run.run_dir(),
        first_run,
        "a forced experiment starts a new run"
    );
    run.finish_as(exptrack::RunStatus::Killed).unwrap();
}

#[cfg(feature = "trainer")]
#[test]
fn experiment_config_errors_name_the_key() {
    let err =
        exptrack::Experiment::from_toml("[experiment]\nname = \"x\"\n[training]\nbatch_size = 0\n")
            .unwrap_err()
            .to_string();
    assert!(err.contains("batch_size"), "{err}");
}
