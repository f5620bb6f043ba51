//! Recipe batches: a directory of experiment configs ("recipes", TOML files grouped in
//! sub-directories by category) trained as one study, with completion detection.
//!
//! The caller supplies the training function, so a batch works for any model:
//!
//! ```no_run
//! use exptrack_trainer::batch::{self, BatchOptions, RecipeOutcome};
//!
//! let options = BatchOptions::new().category("baseline");
//! let report = batch::run_all("examples/recipes", &options, |recipe| {
//!     // Train `recipe.config()` here: log through `recipe.tracker_builder(..)`, checkpoint
//!     // through `recipe.checkpointer()`, and say how it ended.
//!     let tracker = recipe.tracker_builder(recipe.config().clone()).build()?;
//!     tracker.log_metrics(1, &[("valid/accuracy", 0.9)])?;
//!     let run_dir = tracker.run_dir().to_path_buf();
//!     tracker.finish(exptrack_core::RunStatus::Completed)?;
//!     Ok::<_, exptrack_core::Error>(RecipeOutcome::completed(run_dir))
//! })?;
//! print!("{}", report.table(&[]));
//! # Ok::<(), exptrack_trainer::batch::BatchError>(())
//! ```
//!
//! For each recipe, in path order, [`run_all`]:
//! - **skips** an experiment that completed before (the same config hash gives the same
//!   experiment id, and its checkpoint directory holds the completion marker, as for the
//!   quickstart), showing its earlier results, unless [`BatchOptions::force`];
//! - otherwise calls the training function, which **resumes** an interrupted experiment (the
//!   tracker reopens the unfinished run, the trainer loads the latest checkpoint);
//! - reports a **failure** (an error, a panic, an unreadable recipe) in that recipe's row and goes
//!   on with the next recipe.
//!
//! The [`BatchReport`] holds one [`RecipeRow`] per recipe: its status, and the best and final
//! value of each metric of the experiment's run read back from the local run store (the same
//! figures as `exptrack runs compare`), plus the values set with `set_result`. It renders as a
//! comparison [`table`](BatchReport::table) or as JSON ([`to_json`](BatchReport::to_json)).
//! [`status`] tells each recipe's [`RecipeState`] (completed / interrupted / not started) without
//! training; `exptrack batch status DIR` does the same from the command line.
//!
//! Paths are resolved as the quickstart does: the run store is `[tracking].runs_dir` and the
//! checkpoints `[checkpointing].dir` (relative to the working directory), unless
//! [`BatchOptions::runs_dir`] overrides both (the store at `DIR`, checkpoints in
//! `DIR/checkpoints`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack_core::store::{self, MetricSummary, RunReader};
use exptrack_core::{ExperimentConfig, ExperimentTrackerBuilder, Resume};
use serde::Serialize;

/// Errors that stop a whole batch (a failure inside one recipe is reported in its row instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The recipe directory (or one below it) could not be read.
    #[error("reading recipe directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No recipe matched (an empty directory, or a category filter that names no category).
    #[error("no recipes under {}{}", dir.display(), filter_note(filter.as_deref(), categories))]
    NoRecipes {
        /// The recipe directory.
        dir: PathBuf,
        /// The category filter, if any.
        filter: Option<String>,
        /// The categories that exist.
        categories: Vec<String>,
    },
}

fn filter_note(filter: Option<&str>, categories: &[String]) -> String {
    match filter {
        None => String::new(),
        Some(c) if categories.is_empty() => format!(" in category {c:?} (there are no categories)"),
        Some(c) => format!(" in category {c:?} (categories: {})", categories.join(", ")),
    }
}

/// `Result` with [`BatchError`].
pub type Result<T, E = BatchError> = std::result::Result<T, E>;

/// How a batch runs. Build with [`BatchOptions::new`] and the setters.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    runs_dir: Option<PathBuf>,
    category: Option<String>,
    force: bool,
    progress: bool,
}

impl BatchOptions {
    /// Defaults: paths from each recipe, every category, completed experiments skipped, progress
    /// lines on stderr.
    pub fn new() -> Self {
        BatchOptions {
            progress: true,
            ..BatchOptions::default()
        }
    }

    /// Overrides every recipe's `[tracking].runs_dir` (the run store) and puts checkpoints in
    /// `dir/checkpoints`.
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runs_dir = Some(dir.into());
        self
    }

    /// Only the recipes of this category (a sub-directory of the recipe directory; nested
    /// categories match by prefix: `vision` selects `vision/cnn/*.toml`).
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// Retrain experiments that completed before (their checkpoints are archived, a new run starts).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// One progress line per recipe on stderr (default on; stdout stays free for the table or
    /// the JSON).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    fn selects(&self, category: &str) -> bool {
        match &self.category {
            None => true,
            Some(c) => {
                let c = c.trim_matches('/');
                category == c || category.starts_with(&format!("{c}/"))
            }
        }
    }
}

/// One recipe file.
#[derive(Debug, Clone)]
pub struct Recipe {
    path: PathBuf,
    name: String,
    category: String,
    config: std::result::Result<ExperimentConfig, String>,
}

impl Recipe {
    /// Reads and parses one recipe file. `name` is its path relative to the recipe directory
    /// (`baseline/true_labels.toml`); the category is its directory part (`baseline`, or `""`
    /// for a file directly in the recipe directory). A file that does not parse is still a recipe;
    /// its [`config_error`](Self::config_error) says why, and a batch reports it as failed.
    pub fn load(path: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        let path = path.into();
        let name = name.into();
        let category = category_of(&name);
        let config = ExperimentConfig::from_file(&path).map_err(|e| e.to_string());
        Recipe {
            path,
            name,
            category,
            config,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the recipe directory, with `/` separators.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The category (the directory part of [`name`](Self::name)).
    pub fn category(&self) -> &str {
        &self.category
    }

    /// The parsed config, or why the file is not a valid experiment config.
    pub fn parsed(&self) -> std::result::Result<&ExperimentConfig, &str> {
        self.config.as_ref().map_err(String::as_str)
    }

    /// Why the file is not a valid experiment config, if it is not.
    pub fn config_error(&self) -> Option<&str> {
        self.config.as_ref().err().map(String::as_str)
    }

    /// The experiment id (`{name}-{12 hex of the config hash}`), when the config parsed.
    pub fn experiment_id(&self) -> Option<String> {
        self.config
            .as_ref()
            .ok()
            .map(ExperimentConfig::experiment_id)
    }
}

fn category_of(name: &str) -> String {
    name.rfind('/')
        .map_or_else(String::new, |i| name[..i].to_owned())
}

/// Finds the recipes under `dir`: every `*.toml` file, recursively (hidden files and directories
/// skipped), sorted by relative path, filtered by [`BatchOptions::category`]. An empty result is
/// [`BatchError::NoRecipes`].
pub fn discover(dir: impl AsRef<Path>, options: &BatchOptions) -> Result<Vec<Recipe>> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    walk(dir, "", 0, &mut files)?;
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let categories: BTreeSet<String> = files
        .iter()
        .map(|(_, n)| category_of(n))
        .filter(|c| !c.is_empty())
        .collect();
    let recipes: Vec<Recipe> = files
        .into_iter()
        .filter(|(_, name)| options.selects(&category_of(name)))
        .map(|(path, name)| Recipe::load(path, name))
        .collect();
    if recipes.is_empty() {
        return Err(BatchError::NoRecipes {
            dir: dir.to_path_buf(),
            filter: options.category.clone(),
            categories: categories.into_iter().collect(),
        });
    }
    Ok(recipes)
}

/// Deeper than this, directories are not searched (a symlink loop ends here).
const MAX_DEPTH: usize = 16;

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let io = |source| BatchError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue; // not UTF-8: not a name a recipe (or its category) can have
        };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let name = if prefix.is_empty() {
            file_name.clone()
        } else {
            format!("{prefix}/{file_name}")
        };
        // Follows symlinks; a dangling one is skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, &name, depth + 1, out)?;
            }
        } else if meta.is_file() && file_name.ends_with(".toml") {
            out.push((path, name));
        }
    }
    Ok(())
}

/// Where a recipe's run store and checkpoints are.
#[derive(Debug, Clone)]
pub struct Locations {
    /// Root of the local run store.
    pub runs_dir: PathBuf,
    /// The `[checkpointing]` section (with the directory resolved and `force` set).
    pub checkpoint: CheckpointConfig,
}

/// Resolves the run store and checkpoint directory of `config` as the quickstart does.
pub fn locations(
    config: &ExperimentConfig,
    options: &BatchOptions,
) -> std::result::Result<Locations, String> {
    let mut checkpoint = match config.section("checkpointing") {
        Some(t) => CheckpointConfig::from_table(t).map_err(|e| format!("[checkpointing]: {e}"))?,
        None => CheckpointConfig::default(),
    };
    let runs_dir = match &options.runs_dir {
        Some(dir) => {
            checkpoint.dir = dir.join("checkpoints");
            dir.clone()
        }
        None => config.tracking.runs_dir.clone(),
    };
    checkpoint.force = options.force;
    Ok(Locations {
        runs_dir,
        checkpoint,
    })
}

/// Whether an experiment completed, was interrupted, or never started (the store's rule, shared
/// with `exptrack batch status`).
pub use exptrack_core::store::ExperimentState as RecipeState;

/// What is on disk for one experiment.
#[derive(Debug, Clone)]
pub struct StateReport {
    /// The state.
    pub state: RecipeState,
    /// The step of the newest checkpoint, if any.
    pub checkpoint_step: Option<u64>,
    /// The run whose metrics describe the experiment: the latest completed run of a completed
    /// experiment, else the latest run.
    pub run: Option<store::RunEntry>,
    /// Whether that run is open in a process right now (its lock is held).
    pub in_use: bool,
}

impl StateReport {
    /// A short description: `completed`, `interrupted at step 40 (last run killed)`, ...
    pub fn describe(&self) -> String {
        let mut s = self.state.to_string();
        if self.state == RecipeState::Interrupted {
            match self.checkpoint_step {
                Some(step) => s.push_str(&format!(" at step {step}")),
                None => s.push_str(" (no checkpoint)"),
            }
            if let Some(run) = &self.run {
                if self.in_use {
                    s.push_str("; its run is open in another process");
                } else {
                    s.push_str(&format!("; last run {}", run.metadata.status));
                }
            }
        }
        s
    }
}

/// The state of one experiment (`experiment_id`) from its checkpoint directory and run store,
/// without writing anything.
pub fn experiment_state(
    experiment_id: &str,
    locations: &Locations,
) -> std::result::Result<StateReport, String> {
    let mut completed = false;
    let mut checkpoint_step = None;
    if locations.checkpoint.dir.join(experiment_id).is_dir() {
        let ckpt = ModelCheckpointer::open_read_only(experiment_id, locations.checkpoint.clone())
            .map_err(|e| format!("reading checkpoints of {experiment_id}: {e}"))?;
        completed = ckpt
            .completed_results()
            .map_err(|e| format!("reading the completion marker of {experiment_id}: {e}"))?
            .is_some();
        checkpoint_step = ckpt.latest().map(|c| c.step);
    }
    let store::ExperimentProgress { state, run, in_use } = store::experiment_progress(
        &locations.runs_dir,
        experiment_id,
        completed,
        checkpoint_step.is_some(),
    )
    .map_err(|e| listing_error(&locations.runs_dir, e))?;
    Ok(StateReport {
        state,
        checkpoint_step,
        run,
        in_use,
    })
}

fn listing_error(runs_dir: &Path, e: exptrack_core::Error) -> String {
    format!("listing runs under {}: {e}", runs_dir.display())
}

/// What the training function is given for one recipe.
#[derive(Debug)]
pub struct RecipeRun<'a> {
    recipe: &'a Recipe,
    config: &'a ExperimentConfig,
    experiment_id: String,
    locations: Locations,
    before: RecipeState,
    force: bool,
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

/// What happened to one recipe in a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowStatus {
    /// Trained from the start to completion in this batch.
    Trained,
    /// Resumed from a checkpoint and completed in this batch.
    Resumed,
    /// Completed before; not trained again (its earlier results are shown).
    Skipped,
    /// Stopped before completing; a rerun resumes it.
    Interrupted,
    /// The recipe could not be read, or its training failed or panicked.
    Failed,
    /// Only asked for its state ([`status`]): completed.
    Completed,
    /// Only asked for its state ([`status`]): never started.
    NotStarted,
}

impl fmt::Display for RowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RowStatus::Trained => "trained",
            RowStatus::Resumed => "resumed",
            RowStatus::Skipped => "skipped (completed earlier)",
            RowStatus::Interrupted => "interrupted",
            RowStatus::Failed => "failed",
            RowStatus::Completed => "completed",
            RowStatus::NotStarted => "not started",
        })
    }
}

/// One metric of a row: its final value and its best (by the direction its name implies:
/// `loss`/`error` lower, `accuracy`/`f1`/... higher; none when the name says neither).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricCell {
    /// Last value logged.
    #[serde(rename = "final")]
    pub final_value: f64,
    /// Its step.
    pub final_step: u64,
    /// Best value.
    pub best: Option<f64>,
    /// Its step.
    pub best_step: Option<u64>,
}

impl MetricCell {
    fn from_summary(key: &str, s: &MetricSummary) -> Self {
        let best = store::best_of(key, s);
        MetricCell {
            final_value: s.last,
            final_step: s.last_step,
            best: best.map(|b| b.0),
            best_step: best.map(|b| b.1),
        }
    }
}

/// Which direction is better for a metric, guessed from the last segment of its key (the rule of
/// `exptrack runs compare`); `None` when unknown.
pub use exptrack_core::store::better_is_lower;

/// One recipe's line of a [`BatchReport`].
#[derive(Debug, Clone, Serialize)]
pub struct RecipeRow {
    /// The experiment id (`None` when the recipe did not parse).
    pub experiment_id: Option<String>,
    /// The recipe's path relative to the recipe directory.
    pub recipe: String,
    /// Its category.
    pub category: String,
    /// What happened.
    pub status: RowStatus,
    /// Why it failed (with the cause chain), or what a `status` query found odd.
    pub error: Option<String>,
    /// The checkpoint step it resumed from (this batch), or the newest checkpoint's step
    /// ([`status`] of an interrupted experiment).
    pub resumed_from_step: Option<u64>,
    /// The run the metrics come from.
    pub run_id: Option<String>,
    /// That run's directory.
    pub run_dir: Option<PathBuf>,
    /// Per metric key (system metrics left out), final and best values.
    pub metrics: BTreeMap<String, MetricCell>,
    /// The values the run set with `set_result` (its `results.json`).
    pub results: BTreeMap<String, serde_json::Value>,
}

impl RecipeRow {
    fn new(recipe: &Recipe, status: RowStatus) -> Self {
        RecipeRow {
            experiment_id: recipe.experiment_id(),
            recipe: recipe.name.clone(),
            category: recipe.category.clone(),
            status,
            error: None,
            resumed_from_step: None,
            run_id: None,
            run_dir: None,
            metrics: BTreeMap::new(),
            results: BTreeMap::new(),
        }
    }

    fn failed(recipe: &Recipe, error: String) -> Self {
        RecipeRow {
            error: Some(error),
            ..RecipeRow::new(recipe, RowStatus::Failed)
        }
    }

    /// The final value of a metric.
    pub fn final_metric(&self, key: &str) -> Option<f64> {
        self.metrics.get(key).map(|m| m.final_value)
    }

    /// Fills metrics and results from a run directory. A run whose files cannot be read leaves
    /// the metrics empty and says why in `error` (the row keeps its status).
    fn read_run(&mut self, dir: &Path) {
        match read_metrics(dir) {
            Ok((run_id, metrics, results)) => {
                self.run_id = Some(run_id);
                self.metrics = metrics;
                self.results = results;
            }
            Err(e) => {
                if self.error.is_none() {
                    self.error = Some(e);
                }
            }
        }
        self.run_dir = Some(dir.to_path_buf());
    }
}

type RunMetrics = (
    String,
    BTreeMap<String, MetricCell>,
    BTreeMap<String, serde_json::Value>,
);

/// `(run id, metrics, results)` of a run: `results.json`'s summary when it has one, else
/// `summary.json` (as `exptrack runs compare` reads them).
fn read_metrics(dir: &Path) -> std::result::Result<RunMetrics, String> {
    let why =
        |what: &str, e: exptrack_core::Error| format!("reading {what} of {}: {e}", dir.display());
    let reader = RunReader::open(dir).map_err(|e| why("the run", e))?;
    let run_id = reader
        .metadata()
        .map_err(|e| why("metadata.json", e))?
        .run_id;
    let results = reader.results().map_err(|e| why("results.json", e))?;
    let summary = match &results {
        Some(r) if !r.summary.is_empty() => r.summary.clone(),
        _ => reader.summary().map_err(|e| why("summary.json", e))?,
    };
    let metrics = summary
        .iter()
        .filter(|(k, _)| !k.starts_with("system/"))
        .map(|(k, s)| (k.clone(), MetricCell::from_summary(k, s)))
        .collect();
    Ok((
        run_id,
        metrics,
        results.map(|r| r.extra).unwrap_or_default(),
    ))
}

/// The rows of a batch, in recipe order.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(transparent)]
pub struct BatchReport {
    /// One row per recipe.
    pub rows: Vec<RecipeRow>,
}

/// Metric keys the default [`BatchReport::table`] shows, when the runs have them.
pub const DEFAULT_TABLE_KEYS: [&str; 6] = [
    "train/accuracy",
    "train/loss",
    "valid/accuracy",
    "valid/loss",
    "test/accuracy",
    "test/loss",
];

impl BatchReport {
    /// The rows whose recipe failed.
    pub fn failed(&self) -> impl Iterator<Item = &RecipeRow> {
        self.rows.iter().filter(|r| r.status == RowStatus::Failed)
    }

    /// A row by recipe name.
    pub fn row(&self, recipe: &str) -> Option<&RecipeRow> {
        self.rows.iter().find(|r| r.recipe == recipe)
    }

    /// The rows as a JSON array (experiment id, recipe path, status, metrics, ...).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_else(|e| serde_json::json!({ "error": e.to_string() }))
    }

    /// The comparison table: one line per recipe (recipe, experiment id, status) and, per metric
    /// key, `final / best` (the best only where the key names a direction and it differs in
    /// print). `keys` empty: those of [`DEFAULT_TABLE_KEYS`] that some row has, else every
    /// metric key. Failures are listed under the table with their errors.
    pub fn table(&self, keys: &[&str]) -> String {
        let keys: Vec<String> = if keys.is_empty() {
            let present: Vec<String> = DEFAULT_TABLE_KEYS
                .iter()
                .filter(|k| self.rows.iter().any(|r| r.metrics.contains_key(**k)))
                .map(|k| (*k).to_owned())
                .collect();
            if present.is_empty() {
                let all: BTreeSet<&String> =
                    self.rows.iter().flat_map(|r| r.metrics.keys()).collect();
                all.into_iter().cloned().collect()
            } else {
                present
            }
        } else {
            keys.iter().map(|k| (*k).to_owned()).collect()
        };
        let mut head = vec![
            "recipe".to_owned(),
            "experiment".to_owned(),
            "status".to_owned(),
        ];
        head.extend(keys.iter().cloned());
        let mut lines = vec![head];
        for r in &self.rows {
            let mut status = r.status.to_string();
            if let (RowStatus::Resumed, Some(step)) = (r.status, r.resumed_from_step) {
                status = format!("resumed from step {step}");
            }
            let mut line = vec![
                r.recipe.clone(),
                r.experiment_id.clone().unwrap_or_else(|| "-".to_owned()),
                status,
            ];
            for k in &keys {
                line.push(match r.metrics.get(k) {
                    None => "-".to_owned(),
                    Some(m) => {
                        let last = num(m.final_value);
                        match m.best.map(num) {
                            Some(b) if b != last => format!("{last} / {b}"),
                            _ => last,
                        }
                    }
                });
            }
            lines.push(line);
        }
        let widths: Vec<usize> = (0..lines[0].len())
            .map(|c| {
                lines
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let mut out = String::new();
        for (i, line) in lines.iter().enumerate() {
            let mut s = String::new();
            for (c, cell) in line.iter().enumerate() {
                if c > 0 {
                    s.push_str("  ");
                }
                s.push_str(cell);
                s.extend(std::iter::repeat_n(' ', widths[c] - cell.chars().count()));
            }
            out.push_str(s.trim_end());
            out.push('\n');
            if i == 0 {
                let total = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
                out.push_str(&"-".repeat(total));
                out.push('\n');
            }
        }
        if !keys.is_empty() {
            out.push_str("metrics: final / best (the best where it differs)\n");
        }
        for r in &self.rows {
            if let Some(e) = &r.error {
                let what = if r.status == RowStatus::Failed {
                    "failed"
                } else {
                    "note"
                };
                out.push_str(&format!("{what}: {}: {e}\n", r.recipe));
            }
        }
        out
    }
}

fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        v.to_string()
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
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

fn progress_line(row: &RecipeRow) -> String {
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

fn run_one<F, E>(
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
fn attach_latest_run(row: &mut RecipeRow, experiment_id: &str, locations: &Locations) {
    if let Ok(runs) = store::experiment_runs(&locations.runs_dir, experiment_id)
        && let Some(run) = runs.last()
    {
        row.read_run(&run.dir);
    }
}

#[cfg(test)]
mod tests {
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
}
