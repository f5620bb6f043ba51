//! Running a batch: the training function's view of a recipe, and the loop over recipes.

use super::*;

/// What the training function is given for one recipe.
#[derive(Debug)]
pub struct RecipeRun<'a> {
    pub(super) recipe: &'a Recipe,
    pub(super) config: &'a ExperimentConfig,
    pub(super) experiment_id: String,
    pub(super) locations: Locations,
    pub(super) before: RecipeState,
    pub(super) force: bool,
}

impl RecipeRun<'_> {
    /// The recipe.
    pub fn recipe(&self) -> &Recipe {
        self.recipe
    }

    /// Its parsed experiment config.
    pub fn config(&self) -> &ExperimentConfig {
        self.config
    }

    /// Its experiment id.
    pub fn experiment_id(&self) -> &str {
        &self.experiment_id
    }

    /// Root of the local run store to log to.
    pub fn runs_dir(&self) -> &Path {
        &self.locations.runs_dir
    }

    /// The checkpoint configuration (directory resolved, `force` set from the batch).
    pub fn checkpoint_config(&self) -> &CheckpointConfig {
        &self.locations.checkpoint
    }

    /// The state before this call: [`RecipeState::Interrupted`] means the training function
    /// should resume.
    pub fn state_before(&self) -> RecipeState {
        self.before
    }

    /// Whether the batch retrains completed experiments.
    pub fn force(&self) -> bool {
        self.force
    }

    /// How the tracker should open its run: a fresh run when forced, else the latest
    /// unfinished run of the experiment (an interrupted one resumes its curves).
    pub fn resume(&self) -> Resume {
        if self.force {
            Resume::Never
        } else {
            Resume::LatestUnfinished
        }
    }

    /// A tracker builder for `config` (normally [`config`](Self::config), perhaps with backends
    /// switched on) logging to [`runs_dir`](Self::runs_dir) with [`resume`](Self::resume).
    pub fn tracker_builder(&self, config: ExperimentConfig) -> ExperimentTrackerBuilder {
        exptrack_core::ExperimentTracker::builder(config)
            .runs_dir(&self.locations.runs_dir)
            .resume(self.resume())
    }

    /// Opens the experiment's checkpointer (for [`TrainingManager::with_checkpointer`](crate::TrainingManager::with_checkpointer);
    /// its config carries `force`).
    pub fn checkpointer(&self) -> crate::Result<ModelCheckpointer> {
        ModelCheckpointer::open(&self.experiment_id, self.locations.checkpoint.clone()).map_err(
            |e| crate::Error::Checkpoint {
                message: e.to_string(),
                source: Some(Box::new(e)),
            },
        )
    }
}

/// How a training function ended (an error is the third way).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecipeOutcome {
    /// It stopped before completing (on request, or a signal); a rerun resumes.
    pub interrupted: bool,
    /// The checkpoint step it resumed from, if it resumed.
    pub resumed_from_step: Option<u64>,
    /// The run directory it logged to (the batch reads its metrics back); `None`: the
    /// experiment's latest run.
    pub run_dir: Option<PathBuf>,
}

impl RecipeOutcome {
    /// Trained to completion, logging to `run_dir`.
    pub fn completed(run_dir: impl Into<PathBuf>) -> Self {
        RecipeOutcome {
            run_dir: Some(run_dir.into()),
            ..RecipeOutcome::default()
        }
    }

    /// Stopped before completing, logging to `run_dir`.
    pub fn interrupted(run_dir: impl Into<PathBuf>) -> Self {
        RecipeOutcome {
            interrupted: true,
            run_dir: Some(run_dir.into()),
            ..RecipeOutcome::default()
        }
    }

    /// Records the step it resumed from.
    pub fn resumed_from(mut self, step: Option<u64>) -> Self {
        self.resumed_from_step = step;
        self
    }
}

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

/// Each recipe's state (completed / interrupted / not started) and, where a run exists, its
/// metrics, without training anything. Rows have status [`RowStatus::Completed`],
/// [`RowStatus::Interrupted`] (with the newest checkpoint's step in `resumed_from_step`),
/// [`RowStatus::NotStarted`], or [`RowStatus::Failed`] for a recipe that does not parse.
pub fn status(dir: impl AsRef<Path>, options: &BatchOptions) -> Result<BatchReport> {
    let recipes = discover(dir, options)?;
    let mut rows = Vec::with_capacity(recipes.len());
    for recipe in &recipes {
        let Ok(config) = recipe.parsed() else {
            rows.push(RecipeRow::failed(
                recipe,
                recipe.config_error().unwrap_or_default().to_owned(),
            ));
            continue;
        };
        let state =
            locations(config, options).and_then(|l| experiment_state(&config.experiment_id(), &l));
        rows.push(match state {
            Err(e) => RecipeRow::failed(recipe, e),
            Ok(report) => {
                let mut row = RecipeRow::new(
                    recipe,
                    match report.state {
                        RecipeState::Completed => RowStatus::Completed,
                        RecipeState::Interrupted => RowStatus::Interrupted,
                        RecipeState::NotStarted => RowStatus::NotStarted,
                    },
                );
                if report.state == RecipeState::Interrupted {
                    row.resumed_from_step = report.checkpoint_step;
                    row.error = Some(report.describe());
                }
                if let Some(run) = &report.run {
                    row.read_run(&run.dir);
                }
                row
            }
        });
    }
    Ok(BatchReport { rows })
}

/// Runs every recipe under `dir` (filtered by [`BatchOptions::category`]) through `train`, in
/// path order: completed experiments are skipped (unless forced) with their earlier results,
/// interrupted ones are handed to `train` to resume, and a recipe that fails (an error from
/// `train`, a panic inside it, a file that is not a valid config, two recipes with the same
/// experiment id) is reported in its row while the batch goes on.
///
/// Errors only when the directory cannot be read or no recipe matches.
pub fn run_all<F, E>(
    dir: impl AsRef<Path>,
    options: &BatchOptions,
    mut train: F,
) -> Result<BatchReport>
where
    F: FnMut(&RecipeRun<'_>) -> std::result::Result<RecipeOutcome, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let recipes = discover(dir, options)?;
    let total = recipes.len();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut rows = Vec::with_capacity(total);
    for (i, recipe) in recipes.iter().enumerate() {
        let tag = format!("[{}/{total}] {}", i + 1, recipe.name);
        let row = run_one(recipe, options, &mut seen, &mut train, &tag);
        if options.progress {
            eprintln!("{tag}: {}", progress_line(&row));
        }
        rows.push(row);
    }
    Ok(BatchReport { rows })
}

pub(super) fn progress_line(row: &RecipeRow) -> String {
    let mut s = match (row.status, &row.error) {
        (RowStatus::Failed, Some(e)) => format!("failed: {e}"),
        (RowStatus::Skipped, _) => "completed earlier, skipped (--force retrains)".to_owned(),
        (RowStatus::Resumed, _) => match row.resumed_from_step {
            Some(step) => format!("resumed from step {step}, completed"),
            None => "resumed, completed".to_owned(),
        },
        (RowStatus::Trained, _) => "completed".to_owned(),
        (RowStatus::Interrupted, _) => "interrupted; rerun to resume".to_owned(),
        (other, _) => other.to_string(),
    };
    let shown: Vec<String> = DEFAULT_TABLE_KEYS
        .iter()
        .filter_map(|k| row.final_metric(k).map(|v| format!("{k} {}", num(v))))
        .collect();
    if !shown.is_empty() {
        s.push_str(&format!(" ({})", shown.join(", ")));
    }
    s
}

pub(super) fn run_one<F, E>(
    recipe: &Recipe,
    options: &BatchOptions,
    seen: &mut BTreeMap<String, String>,
    train: &mut F,
    tag: &str,
) -> RecipeRow
where
    F: FnMut(&RecipeRun<'_>) -> std::result::Result<RecipeOutcome, E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let config = match recipe.parsed() {
        Ok(c) => c,
        Err(e) => return RecipeRow::failed(recipe, format!("not a valid experiment config: {e}")),
    };
    let experiment_id = config.experiment_id();
    if let Some(first) = seen.get(&experiment_id) {
        return RecipeRow::failed(
            recipe,
            format!(
                "same experiment id {experiment_id} as {first} (the same config); recipes of a \
                 batch must differ"
            ),
        );
    }
    seen.insert(experiment_id.clone(), recipe.name.clone());
    let locations = match locations(config, options) {
        Ok(l) => l,
        Err(e) => return RecipeRow::failed(recipe, e),
    };
    let before = match experiment_state(&experiment_id, &locations) {
        Ok(s) => s,
        Err(e) => return RecipeRow::failed(recipe, e),
    };
    if before.in_use {
        return RecipeRow::failed(
            recipe,
            format!(
                "its run {} is open in another process; not starting a second writer",
                before
                    .run
                    .as_ref()
                    .map_or_else(String::new, |r| r.dir.display().to_string())
            ),
        );
    }
    if before.state == RecipeState::Completed && !options.force {
        let mut row = RecipeRow::new(recipe, RowStatus::Skipped);
        if let Some(run) = &before.run {
            row.read_run(&run.dir);
        }
        return row;
    }
    if options.progress {
        let what = match (before.state, options.force) {
            (RecipeState::Completed, _) => "retraining (--force)".to_owned(),
            (RecipeState::Interrupted, false) => format!("resuming: {}", before.describe()),
            (RecipeState::Interrupted, true) => "starting over (--force)".to_owned(),
            (RecipeState::NotStarted, _) => "training".to_owned(),
        };
        eprintln!("{tag} ({experiment_id}): {what}");
    }
    let run = RecipeRun {
        recipe,
        config,
        experiment_id: experiment_id.clone(),
        locations: locations.clone(),
        before: before.state,
        force: options.force,
    };
    let outcome = match catch_unwind(AssertUnwindSafe(|| train(&run))) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(e)) => {
            let e: Box<dyn std::error::Error + Send + Sync> = e.into();
            let mut row = RecipeRow::failed(recipe, exptrack_core::error::report(e.as_ref()));
            attach_latest_run(&mut row, &experiment_id, &locations);
            return row;
        }
        Err(panic) => {
            let mut row = RecipeRow::failed(
                recipe,
                format!("panicked: {}", panic_message(panic.as_ref())),
            );
            attach_latest_run(&mut row, &experiment_id, &locations);
            return row;
        }
    };
    let status = if outcome.interrupted {
        RowStatus::Interrupted
    } else if outcome.resumed_from_step.is_some() {
        RowStatus::Resumed
    } else {
        RowStatus::Trained
    };
    let mut row = RecipeRow::new(recipe, status);
    row.resumed_from_step = outcome.resumed_from_step;
    match outcome.run_dir {
        Some(dir) => row.read_run(&dir),
        None => attach_latest_run(&mut row, &experiment_id, &locations),
    }
    row
}

/// Reads the experiment's latest run into the row (a failed or interrupted recipe still shows
/// how far it got).
pub(super) fn attach_latest_run(row: &mut RecipeRow, experiment_id: &str, locations: &Locations) {
    if let Ok(runs) = store::experiment_runs(&locations.runs_dir, experiment_id)
        && let Some(run) = runs.last()
    {
        row.read_run(&run.dir);
    }
}
