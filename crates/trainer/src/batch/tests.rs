//! Unit tests of recipe batches. The parent declares this file as `#[cfg(test)] mod tests;`, so
//! none of it is compiled into the library.

use super::*;
use exptrack_core::{ExperimentTracker, RunStatus};

fn recipe_text(name: &str, lr: f64) -> String {
    format!(
        "[experiment]\nname = \"{name}\"\n\n[tracking]\nuse_tensorboard = false\n\n\
         [checkpointing]\nfsync = false\n\n[training]\nlearning_rate = {lr}\n"
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// A study of four recipes in two categories, one of which (`broken.toml`) is not TOML.
fn study(root: &Path) -> PathBuf {
    let dir = root.join("recipes");
    write(&dir, "baseline/a.toml", &recipe_text("a", 0.1));
    write(&dir, "baseline/b.toml", &recipe_text("b", 0.2));
    write(&dir, "noise/c.toml", &recipe_text("c", 0.3));
    write(&dir, "noise/broken.toml", "[experiment\nname=");
    write(&dir, "noise/.hidden.toml", &recipe_text("hidden", 0.4));
    write(&dir, "README.md", "not a recipe");
    dir
}

/// A training function without a model: logs `valid/accuracy` = learning rate at steps
/// 1..=4 (checkpointing each step through the real checkpointer), resuming after the last
/// checkpoint; `fail_at` / `panic_for` / `stop_at` inject faults for one recipe.
#[derive(Default)]
struct Fake {
    calls: Vec<String>,
    fail_for: Option<&'static str>,
    panic_for: Option<&'static str>,
    stop_for: Option<(&'static str, u64)>,
}

impl Fake {
    fn train(&mut self, run: &RecipeRun<'_>) -> crate::Result<RecipeOutcome> {
        let name = run.recipe().name().to_owned();
        self.calls.push(name.clone());
        let lr = run
            .config()
            .section("training")
            .and_then(|t| t.get("learning_rate"))
            .and_then(toml::Value::as_float)
            .unwrap_or(0.0);
        let mut ckpt = run.checkpointer()?;
        let resume = if run.force() {
            None
        } else {
            ckpt.load_latest_valid().unwrap().map(|c| c.info.step)
        };
        if run.force() {
            // The checkpointer was opened with `force`: a completed experiment's
            // checkpoints are archived and it starts fresh.
            ckpt.resume_or_start()
                .map_err(|e| crate::Error::Checkpoint {
                    message: e.to_string(),
                    source: Some(Box::new(e)),
                })?;
        }
        let tracker = run
            .tracker_builder(run.config().clone())
            .handle_signals(false)
            .collect_system_info(false)
            .build()
            .map_err(|e| crate::Error::Tracking {
                message: e.to_string(),
                source: None,
            })?;
        let run_dir = tracker.run_dir().to_path_buf();
        for step in resume.unwrap_or(0) + 1..=4 {
            tracker
                .log_metrics(step, &[("valid/accuracy", lr * step as f64 / 4.0)])
                .unwrap();
            tracker
                .log_metrics(step, &[("train/loss", 1.0 / step as f64)])
                .unwrap();
            ckpt.save(exptrack_checkpoint::Checkpoint::new(step).file("m", vec![step as u8]))
                .unwrap();
            if self.fail_for == Some(name.as_str()) && step == 2 {
                return Err(crate::Error::Data("injected failure after step 2".into()));
            }
            if self.panic_for == Some(name.as_str()) && step == 2 {
                panic!("injected panic");
            }
            if self.stop_for.is_some_and(|(n, s)| n == name && s == step) {
                tracker.finish(RunStatus::Killed).unwrap();
                return Ok(RecipeOutcome::interrupted(run_dir).resumed_from(resume));
            }
        }
        tracker.set_result("lr", serde_json::json!(lr)).unwrap();
        ckpt.mark_completed(serde_json::json!({ "lr": lr }))
            .unwrap();
        tracker.finish(RunStatus::Completed).unwrap();
        Ok(RecipeOutcome::completed(run_dir).resumed_from(resume))
    }
}

fn quiet(root: &Path) -> BatchOptions {
    BatchOptions::new()
        .runs_dir(root.join("runs"))
        .progress(false)
}

fn statuses(r: &BatchReport) -> Vec<(String, RowStatus)> {
    r.rows
        .iter()
        .map(|r| (r.recipe.clone(), r.status))
        .collect()
}

fn s(v: &[(&str, RowStatus)]) -> Vec<(String, RowStatus)> {
    v.iter().map(|(a, b)| ((*a).to_owned(), *b)).collect()
}

#[test]
fn discovery_sorts_filters_and_names_categories() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = study(tmp.path());
    let all = discover(&dir, &BatchOptions::new()).unwrap();
    let names: Vec<&str> = all.iter().map(Recipe::name).collect();
    assert_eq!(
        names,
        [
            "baseline/a.toml",
            "baseline/b.toml",
            "noise/broken.toml",
            "noise/c.toml"
        ]
    );
    assert_eq!(all[0].category(), "baseline");
    assert!(all[2].config_error().is_some());
    assert!(all[0].experiment_id().unwrap().starts_with("a-"));
    let noise = discover(&dir, &BatchOptions::new().category("noise/")).unwrap();
    assert_eq!(noise.len(), 2);
    let err = discover(&dir, &BatchOptions::new().category("nope")).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("\"nope\"") && msg.contains("baseline, noise"),
        "{msg}"
    );
    assert!(matches!(
        discover(tmp.path().join("missing"), &BatchOptions::new()),
        Err(BatchError::Io { .. })
    ));
}

#[test]
fn a_batch_trains_skips_resumes_and_retrains() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = study(tmp.path());
    let opts = quiet(tmp.path());

    let before = status(&dir, &opts).unwrap();
    assert!(
        before
            .rows
            .iter()
            .filter(|r| r.recipe != "noise/broken.toml")
            .all(|r| r.status == RowStatus::NotStarted)
    );

    // First run: `b` fails after a checkpoint, `c` is interrupted; the others go on.
    let mut fake = Fake {
        fail_for: Some("baseline/b.toml"),
        stop_for: Some(("noise/c.toml", 2)),
        ..Fake::default()
    };
    let r = run_all(&dir, &opts, |run| fake.train(run)).unwrap();
    assert_eq!(
        statuses(&r),
        s(&[
            ("baseline/a.toml", RowStatus::Trained),
            ("baseline/b.toml", RowStatus::Failed),
            ("noise/broken.toml", RowStatus::Failed),
            ("noise/c.toml", RowStatus::Interrupted),
        ])
    );
    let b = r.row("baseline/b.toml").unwrap();
    assert!(
        b.error.as_deref().unwrap().contains("injected failure"),
        "{b:?}"
    );
    assert_eq!(
        b.metrics["valid/accuracy"].final_step, 2,
        "a failed row shows how far it got"
    );
    let a = r.row("baseline/a.toml").unwrap();
    assert_eq!(a.final_metric("valid/accuracy"), Some(0.1));
    assert_eq!(a.metrics["train/loss"].best, Some(0.25));
    assert_eq!(a.metrics["train/loss"].best_step, Some(4));
    assert_eq!(a.results["lr"], serde_json::json!(0.1));

    // `status` sees the three states without training.
    let st = status(&dir, &opts).unwrap();
    assert_eq!(
        statuses(&st),
        s(&[
            ("baseline/a.toml", RowStatus::Completed),
            ("baseline/b.toml", RowStatus::Interrupted),
            ("noise/broken.toml", RowStatus::Failed),
            ("noise/c.toml", RowStatus::Interrupted),
        ])
    );
    assert_eq!(st.row("noise/c.toml").unwrap().resumed_from_step, Some(2));
    assert_eq!(
        st.row("baseline/a.toml")
            .unwrap()
            .final_metric("valid/accuracy"),
        Some(0.1)
    );

    // Rerun: `a` is skipped with its results, `b` and `c` resume from step 2 in their runs.
    let mut fake = Fake::default();
    let r2 = run_all(&dir, &opts, |run| fake.train(run)).unwrap();
    assert_eq!(fake.calls, ["baseline/b.toml", "noise/c.toml"]);
    assert_eq!(
        statuses(&r2),
        s(&[
            ("baseline/a.toml", RowStatus::Skipped),
            ("baseline/b.toml", RowStatus::Resumed),
            ("noise/broken.toml", RowStatus::Failed),
            ("noise/c.toml", RowStatus::Resumed),
        ])
    );
    let a2 = r2.row("baseline/a.toml").unwrap();
    assert_eq!(a2.final_metric("valid/accuracy"), Some(0.1));
    assert_eq!(a2.run_id, a.run_id, "the skipped row shows the earlier run");
    let c = r2.row("noise/c.toml").unwrap();
    assert_eq!(c.resumed_from_step, Some(2));
    assert_eq!(c.metrics["valid/accuracy"].final_step, 4);
    assert_eq!(c.metrics["valid/accuracy"].best_step, Some(4));
    assert_eq!(
        c.run_id,
        r.row("noise/c.toml").unwrap().run_id,
        "resumed in the same run"
    );

    // Everything completed: a third run trains nothing.
    let mut fake = Fake::default();
    let r3 = run_all(&dir, &opts, |run| fake.train(run)).unwrap();
    assert!(fake.calls.is_empty());
    assert_eq!(
        r3.rows
            .iter()
            .filter(|r| r.status == RowStatus::Skipped)
            .count(),
        3
    );

    // --force retrains every experiment in a new run.
    let mut fake = Fake::default();
    let r4 = run_all(
        &dir,
        &opts.clone().force(true).category("baseline"),
        |run| fake.train(run),
    )
    .unwrap();
    assert_eq!(fake.calls, ["baseline/a.toml", "baseline/b.toml"]);
    assert!(
        r4.rows.iter().all(|r| r.status == RowStatus::Trained),
        "{r4:?}"
    );
    assert_ne!(r4.row("baseline/a.toml").unwrap().run_id, a.run_id);

    // JSON rows and the table.
    let json = r2.to_json();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["status"], "skipped");
    assert_eq!(rows[0]["recipe"], "baseline/a.toml");
    assert_eq!(rows[0]["metrics"]["valid/accuracy"]["final"], 0.1);
    assert!(rows[0]["experiment_id"].as_str().unwrap().starts_with("a-"));
    assert!(rows[2]["experiment_id"].is_null());
    let table = r2.table(&[]);
    assert!(table.contains("skipped (completed earlier)"), "{table}");
    assert!(table.contains("resumed from step 2"), "{table}");
    assert!(table.contains("failed: noise/broken.toml"), "{table}");
    assert!(
        table.lines().next().unwrap().contains("valid/accuracy"),
        "{table}"
    );
}

#[test]
fn a_panic_and_a_duplicate_config_are_reported_and_the_batch_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recipes");
    write(&dir, "x/one.toml", &recipe_text("one", 0.5));
    write(&dir, "x/same.toml", &recipe_text("one", 0.5));
    write(&dir, "y/two.toml", &recipe_text("two", 0.7));
    let mut fake = Fake {
        panic_for: Some("x/one.toml"),
        ..Fake::default()
    };
    let r = run_all(&dir, &quiet(tmp.path()), |run| fake.train(run)).unwrap();
    assert_eq!(
        statuses(&r),
        s(&[
            ("x/one.toml", RowStatus::Failed),
            ("x/same.toml", RowStatus::Failed),
            ("y/two.toml", RowStatus::Trained),
        ])
    );
    assert!(
        r.rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("panicked: injected panic")
    );
    assert!(
        r.rows[1]
            .error
            .as_deref()
            .unwrap()
            .contains("as x/one.toml")
    );
    assert_eq!(r.failed().count(), 2);
    // The panicked run's guard marked it failed; it has a checkpoint, so it is interrupted.
    let st = status(&dir, &quiet(tmp.path())).unwrap();
    assert_eq!(st.rows[0].status, RowStatus::Interrupted);
    assert!(
        st.rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("last run failed"),
        "{st:?}"
    );
}

#[test]
fn a_run_open_elsewhere_is_not_written_twice() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("recipes");
    write(&dir, "x/one.toml", &recipe_text("one", 0.5));
    let opts = quiet(tmp.path());
    let config = ExperimentConfig::from_file(dir.join("x/one.toml")).unwrap();
    let open = ExperimentTracker::builder(config)
        .runs_dir(tmp.path().join("runs"))
        .handle_signals(false)
        .collect_system_info(false)
        .build()
        .unwrap();
    let mut fake = Fake::default();
    let r = run_all(&dir, &opts, |run| fake.train(run)).unwrap();
    assert!(fake.calls.is_empty());
    assert_eq!(r.rows[0].status, RowStatus::Failed);
    assert!(
        r.rows[0]
            .error
            .as_deref()
            .unwrap()
            .contains("open in another process")
    );
    open.finish(RunStatus::Completed).unwrap();
}

#[test]
fn metric_direction_follows_the_key() {
    assert_eq!(better_is_lower("valid/loss"), Some(true));
    assert_eq!(better_is_lower("train/accuracy"), Some(false));
    assert_eq!(better_is_lower("train/lr"), None);
}
