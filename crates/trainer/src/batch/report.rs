//! The comparison report: one row per recipe, rendered as a table or JSON.

use super::*;

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
    pub(super) fn from_summary(key: &str, s: &MetricSummary) -> Self {
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
    pub(super) fn new(recipe: &Recipe, status: RowStatus) -> Self {
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

    pub(super) fn failed(recipe: &Recipe, error: String) -> Self {
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
    pub(super) fn read_run(&mut self, dir: &Path) {
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

pub(super) type RunMetrics = (
    String,
    BTreeMap<String, MetricCell>,
    BTreeMap<String, serde_json::Value>,
);

/// `(run id, metrics, results)` of a run: `results.json`'s summary when it has one, else
/// `summary.json` (as `exptrack runs compare` reads them).
pub(super) fn read_metrics(dir: &Path) -> std::result::Result<RunMetrics, String> {
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

pub(super) fn num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.4}")
    } else {
        v.to_string()
    }
}
