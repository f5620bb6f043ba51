//! One experiment's runs in the store, and whether the experiment completed, was interrupted or
//! never started: the rule `exptrack batch status` and the trainer's recipe batches share.

use std::fmt;
use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::metadata::RunStatus;

use super::lock::run_in_use;
use super::runs::{RunEntry, list_runs};

/// The runs of experiment `experiment_id` under a runs root, oldest first (by start time, then
/// run id); empty when the experiment has no directory there.
pub fn experiment_runs(runs_root: &Path, experiment_id: &str) -> Result<Vec<RunEntry>> {
    let exp_dir = runs_root.join(experiment_id);
    if !exp_dir.is_dir() {
        return Ok(Vec::new());
    }
    // `list_runs` sorts oldest first.
    Ok(list_runs(runs_root)?
        .into_iter()
        .filter(|r| r.dir.parent() == Some(exp_dir.as_path()))
        .collect())
}

/// Whether an experiment completed, was interrupted, or never started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExperimentState {
    /// It completed (the checkpointer's completion marker, or its latest run completed).
    Completed,
    /// It started and did not complete: a checkpoint to resume from, or an unfinished run.
    Interrupted,
    /// Nothing of it is on disk.
    NotStarted,
}

impl fmt::Display for ExperimentState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExperimentState::Completed => "completed",
            ExperimentState::Interrupted => "interrupted",
            ExperimentState::NotStarted => "not started",
        })
    }
}

/// What the store says of one experiment: see [`experiment_progress`].
#[derive(Debug, Clone)]
pub struct ExperimentProgress {
    /// The state.
    pub state: ExperimentState,
    /// The run whose metrics describe the experiment: the latest completed run of a completed
    /// experiment, else the latest run.
    pub run: Option<RunEntry>,
    /// Whether that run is open in a process right now (its lock is held).
    pub in_use: bool,
}

/// The state of experiment `experiment_id` under `runs_root`, given what its checkpoints say
/// (`completed`: the checkpointer's completion marker is there; `has_checkpoint`: it holds a
/// checkpoint to resume from). The marker means completed and a checkpoint without it
/// interrupted; with neither, the latest run decides (completed, or else interrupted), and an
/// experiment without runs has not started. Reads only.
pub fn experiment_progress(
    runs_root: &Path,
    experiment_id: &str,
    completed: bool,
    has_checkpoint: bool,
) -> Result<ExperimentProgress> {
    let runs = experiment_runs(runs_root, experiment_id)?;
    let latest = runs.last().cloned();
    let state = if completed {
        ExperimentState::Completed
    } else if has_checkpoint {
        ExperimentState::Interrupted
    } else {
        match &latest {
            Some(r) if r.metadata.status == RunStatus::Completed => ExperimentState::Completed,
            Some(_) => ExperimentState::Interrupted,
            None => ExperimentState::NotStarted,
        }
    };
    let run = if state == ExperimentState::Completed {
        runs.iter()
            .rev()
            .find(|r| r.metadata.status == RunStatus::Completed)
            .cloned()
            .or(latest)
    } else {
        latest
    };
    let in_use = run.as_ref().is_some_and(|r| run_in_use(&r.dir));
    Ok(ExperimentProgress { state, run, in_use })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ExperimentConfig, ExperimentTracker, Resume};

    fn tracker(root: &Path, name: &str) -> ExperimentTracker {
        ExperimentTracker::builder(ExperimentConfig::named(name))
            .runs_dir(root)
            .resume(Resume::Never)
            .handle_signals(false)
            .collect_system_info(false)
            .build()
            .unwrap()
    }

    fn id_of(name: &str) -> String {
        ExperimentConfig::named(name).experiment_id()
    }

    #[test]
    fn runs_are_those_of_the_experiment_oldest_first() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(experiment_runs(tmp.path(), &id_of("a")).unwrap().is_empty());
        let first = tracker(tmp.path(), "a");
        let first_dir = first.run_dir().to_path_buf();
        first.finish(RunStatus::Completed).unwrap();
        tracker(tmp.path(), "b")
            .finish(RunStatus::Completed)
            .unwrap();
        // Runs sort by start time: the second must start later.
        std::thread::sleep(std::time::Duration::from_millis(5));
        let second = tracker(tmp.path(), "a");
        let second_dir = second.run_dir().to_path_buf();
        second.finish(RunStatus::Failed).unwrap();
        let dirs: Vec<_> = experiment_runs(tmp.path(), &id_of("a"))
            .unwrap()
            .into_iter()
            .map(|r| r.dir)
            .collect();
        assert_eq!(dirs, [first_dir, second_dir]);
    }

    #[test]
    fn the_state_follows_the_checkpoints_then_the_latest_run() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        let id = id_of("x");
        let p = experiment_progress(root, &id, false, false).unwrap();
        assert_eq!(p.state, ExperimentState::NotStarted);
        assert!(p.run.is_none() && !p.in_use);
        // A checkpoint without runs is still an interrupted experiment; the marker completes it.
        let p = experiment_progress(root, &id, false, true).unwrap();
        assert_eq!(p.state, ExperimentState::Interrupted);
        assert_eq!(
            experiment_progress(root, &id, true, true).unwrap().state,
            ExperimentState::Completed
        );

        let done = tracker(root, "x");
        let done_dir = done.run_dir().to_path_buf();
        done.finish(RunStatus::Completed).unwrap();
        drop(done);
        let p = experiment_progress(root, &id, false, false).unwrap();
        assert_eq!(p.state, ExperimentState::Completed);
        assert_eq!(p.run.unwrap().dir, done_dir);

        std::thread::sleep(std::time::Duration::from_millis(5));
        // A later run that is still open: interrupted, described by that run, in use.
        let open = tracker(root, "x");
        let open_dir = open.run_dir().to_path_buf();
        let p = experiment_progress(root, &id, false, false).unwrap();
        assert_eq!(p.state, ExperimentState::Interrupted);
        assert_eq!(p.run.as_ref().unwrap().dir, open_dir);
        assert!(p.in_use);
        // With the completion marker, the latest completed run describes it.
        let p = experiment_progress(root, &id, true, true).unwrap();
        assert_eq!(p.state, ExperimentState::Completed);
        assert_eq!(p.run.unwrap().dir, done_dir);
        assert!(!p.in_use);
        open.finish(RunStatus::Killed).unwrap();
        drop(open);
        assert!(!experiment_progress(root, &id, false, false).unwrap().in_use);
    }

    #[test]
    fn states_print_as_words_and_serialize_in_snake_case() {
        assert_eq!(ExperimentState::NotStarted.to_string(), "not started");
        assert_eq!(
            serde_json::to_value(ExperimentState::NotStarted).unwrap(),
            "not_started"
        );
        assert_eq!(ExperimentState::Interrupted.to_string(), "interrupted");
    }
}
