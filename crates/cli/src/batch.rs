//! `exptrack batch status DIR`: each recipe of a recipe directory (experiment configs grouped in
//! sub-directories by category) as completed / interrupted / not started, without training.
//!
//! The rule is the one of `exptrack_trainer::batch` (which runs the batches; the cli does not
//! link burn, so it reads the same files itself): a recipe's experiment id is the one its config
//! hashes to; it is *completed* when its checkpoint directory holds the completion marker (or,
//! without checkpoints, its latest run completed), *interrupted* when it has a checkpoint or an
//! unfinished run, else *not started*. Paths are each recipe's `[tracking].runs_dir` and
//! `[checkpointing].dir`, or `--runs DIR` (the store at DIR, checkpoints in DIR/checkpoints).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Args;
use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack_core::ExperimentConfig;
use exptrack_core::store::{ExperimentState, RunEntry, RunReader, experiment_progress};
use serde_json::{Value, json};

use crate::error::{CliError, Result};
use crate::output::{Table, num};

#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The recipe directory (TOML experiment configs, in sub-directories by category).
    dir: PathBuf,
    /// Only the recipes of this category (sub-directory).
    #[arg(long)]
    category: Option<String>,
    /// Root of the run store, with checkpoints in DIR/checkpoints (as the batch's --runs);
    /// default: each recipe's `[tracking].runs_dir` and `[checkpointing].dir` (the global --dir is
    /// not used: each recipe names its own store).
    #[arg(long, value_name = "DIR")]
    runs: Option<PathBuf>,
    /// Print a JSON array of rows instead of a table.
    #[arg(long)]
    json: bool,
}

/// Metrics shown in the table (their final values), when a recipe's run has them.
const SHOWN: [&str; 3] = ["train/accuracy", "valid/accuracy", "test/accuracy"];

/// One recipe's state.
struct Row {
    recipe: String,
    category: String,
    experiment_id: Option<String>,
    state: &'static str,
    checkpoint_step: Option<u64>,
    run: Option<RunEntry>,
    in_use: bool,
    error: Option<String>,
    finals: Vec<(String, f64)>,
}

fn walk(dir: &Path, prefix: &str, depth: usize, out: &mut Vec<(PathBuf, String)>) -> Result<()> {
    let rd = std::fs::read_dir(dir).map_err(|e| {
        CliError::new(
            if e.kind() == std::io::ErrorKind::NotFound {
                crate::error::Exit::Usage
            } else {
                crate::error::Exit::Backend
            },
            format!("reading recipe directory {}: {e}", dir.display()),
        )
    })?;
    for entry in rd.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let rel = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let path = entry.path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() && depth < 16 {
            walk(&path, &rel, depth + 1, out)?;
        } else if meta.is_file() && name.ends_with(".toml") {
            out.push((path, rel));
        }
    }
    Ok(())
}

fn category_of(rel: &str) -> String {
    rel.rfind('/')
        .map_or_else(String::new, |i| rel[..i].to_owned())
}

fn state_of(config: &ExperimentConfig, runs_override: Option<&Path>) -> Result<Row, String> {
    let mut ccfg = match config.section("checkpointing") {
        Some(t) => CheckpointConfig::from_table(t).map_err(|e| format!("[checkpointing]: {e}"))?,
        None => CheckpointConfig::default(),
    };
    let runs_dir = match runs_override {
        Some(d) => {
            ccfg.dir = d.join("checkpoints");
            d.to_path_buf()
        }
        None => config.tracking.runs_dir.clone(),
    };
    let id = config.experiment_id();
    let (mut completed, mut checkpoint_step) = (false, None);
    if ccfg.dir.join(&id).is_dir() {
        let ck = ModelCheckpointer::open_read_only(&id, ccfg)
            .map_err(|e| format!("reading checkpoints of {id}: {e}"))?;
        completed = ck
            .completed_results()
            .map_err(|e| format!("reading the completion marker of {id}: {e}"))?
            .is_some();
        checkpoint_step = ck.latest().map(|c| c.step);
    }
    let progress = experiment_progress(&runs_dir, &id, completed, checkpoint_step.is_some())
        .map_err(|e| format!("listing runs under {}: {e}", runs_dir.display()))?;
    let state = match progress.state {
        ExperimentState::Completed => "completed",
        ExperimentState::Interrupted => "interrupted",
        ExperimentState::NotStarted => "not started",
    };
    let (run, in_use) = (progress.run, progress.in_use);
    let mut finals = Vec::new();
    if let Some(r) = &run
        && let Ok(reader) = RunReader::open(&r.dir)
    {
        let summary = match reader.results() {
            Ok(Some(res)) if !res.summary.is_empty() => Some(res.summary),
            _ => reader.summary().ok(),
        };
        if let Some(s) = summary {
            for k in SHOWN {
                if let Some(m) = s.get(k) {
                    finals.push((k.to_owned(), m.last));
                }
            }
        }
    }
    Ok(Row {
        recipe: String::new(),
        category: String::new(),
        experiment_id: Some(id),
        state,
        checkpoint_step,
        run,
        in_use,
        error: None,
        finals,
    })
}

impl Row {
    fn detail(&self) -> String {
        match self.state {
            "interrupted" => {
                let mut s = match self.checkpoint_step {
                    Some(step) => format!("checkpoint at step {step}"),
                    None => "no checkpoint".to_owned(),
                };
                if let Some(r) = &self.run {
                    if self.in_use {
                        s.push_str("; run open in another process");
                    } else {
                        s.push_str(&format!("; last run {}", r.metadata.status));
                    }
                }
                s
            }
            "invalid" => self.error.clone().unwrap_or_default(),
            _ => String::new(),
        }
    }

    fn json(&self) -> Value {
        let finals: serde_json::Map<String, Value> = self
            .finals
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        json!({
            "recipe": self.recipe,
            "category": self.category,
            "experiment_id": self.experiment_id,
            "state": self.state.replace(' ', "_"),
            "checkpoint_step": self.checkpoint_step,
            "run_id": self.run.as_ref().map(|r| r.metadata.run_id.clone()),
            "last_run_status": self.run.as_ref().map(|r| r.metadata.status.to_string()),
            "in_use": self.in_use,
            "error": self.error,
            "final_metrics": finals,
        })
    }
}

pub(crate) fn status(a: &StatusArgs) -> Result<()> {
    let mut files = Vec::new();
    walk(&a.dir, "", 0, &mut files)?;
    files.sort_by(|x, y| x.1.cmp(&y.1));
    let categories: BTreeSet<String> = files
        .iter()
        .map(|(_, r)| category_of(r))
        .filter(|c| !c.is_empty())
        .collect();
    if let Some(c) = &a.category {
        let c = c.trim_matches('/');
        files.retain(|(_, r)| {
            let cat = category_of(r);
            cat == c || cat.starts_with(&format!("{c}/"))
        });
    }
    if files.is_empty() {
        let mut e = CliError::usage(format!(
            "no recipes (*.toml) under {}{}",
            a.dir.display(),
            a.category
                .as_ref()
                .map_or_else(String::new, |c| format!(" in category {c:?}"))
        ));
        if !categories.is_empty() {
            e = e.hint(format!(
                "categories: {}",
                categories.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        return Err(e);
    }
    let rows: Vec<Row> = files
        .into_iter()
        .map(|(path, rel)| {
            let category = category_of(&rel);
            let row = ExperimentConfig::from_file(&path)
                .map_err(|e| e.to_string())
                .and_then(|cfg| state_of(&cfg, a.runs.as_deref()));
            match row {
                Ok(mut r) => {
                    r.recipe = rel;
                    r.category = category;
                    r
                }
                Err(e) => Row {
                    recipe: rel,
                    category,
                    experiment_id: None,
                    state: "invalid",
                    checkpoint_step: None,
                    run: None,
                    in_use: false,
                    error: Some(e),
                    finals: Vec::new(),
                },
            }
        })
        .collect();

    if a.json {
        let v = Value::Array(rows.iter().map(Row::json).collect());
        println!(
            "{}",
            serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
        );
        return Ok(());
    }
    let shown: Vec<&str> = SHOWN
        .into_iter()
        .filter(|k| rows.iter().any(|r| r.finals.iter().any(|(n, _)| n == k)))
        .collect();
    let mut head = vec!["recipe", "experiment", "state", "detail"];
    head.extend(shown.iter().copied());
    let mut t = Table::new(head);
    for r in &rows {
        let mut cells = vec![
            r.recipe.clone(),
            r.experiment_id.clone().unwrap_or_else(|| "-".to_owned()),
            r.state.to_owned(),
            r.detail(),
        ];
        for k in &shown {
            cells.push(
                r.finals
                    .iter()
                    .find(|(n, _)| n == k)
                    .map_or_else(|| "-".to_owned(), |(_, v)| num(*v)),
            );
        }
        t.row(cells);
    }
    print!("{}", t.render());
    let count = |s: &str| rows.iter().filter(|r| r.state == s).count();
    println!(
        "{} recipes: {} completed, {} interrupted, {} not started{}",
        rows.len(),
        count("completed"),
        count("interrupted"),
        count("not started"),
        match count("invalid") {
            0 => String::new(),
            n => format!(", {n} invalid"),
        }
    );
    Ok(())
}
