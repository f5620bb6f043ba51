//! The quickstart program (`cargo run --release --example quickstart`) as a library call: a burn
//! MLP classifier trained on a generated dataset (no download) through an [`Experiment`]:
//! tracked to the local store and every backend the config switches on, checkpointed, resumed
//! when interrupted and rerun, and skipped with "already completed" when it has finished before
//! (unless forced).
//!
//! ```no_run
//! use exptrack::quickstart::{QuickstartArgs, run};
//! let outcome = run(QuickstartArgs::default())?;
//! println!("validation accuracy {:.3}", outcome.final_accuracy);
//! # Ok::<(), exptrack::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use exptrack_core::{ExperimentConfig, FinishReport, RunStatus};
use exptrack_trainer::TrainingResult;
pub use exptrack_trainer::quickstart::{
    CLASSES, DEFAULT_CONFIG, FEATURES, Mlp, QuickstartSizes, generate_dataset, log_plots,
};

use crate::experiment::{Completed, Experiment, Start};
use crate::facade_error::Result;

/// Inputs of [`run`] (the example's command-line flags).
#[derive(Debug, Clone, Default)]
pub struct QuickstartArgs {
    /// An experiment config file (TOML); [`DEFAULT_CONFIG`] when `None`.
    pub config: Option<PathBuf>,
    /// Retrain even when the experiment already completed ([`Experiment::force`]).
    pub force: bool,
    /// Root of the local store and of local checkpoints ([`Experiment::runs_dir`]; checkpoints
    /// in object storage, `[checkpointing] dir = "s3://..."`, stay there).
    pub runs_dir: Option<PathBuf>,
    /// Also log to this MLflow tracking URI (`--mlflow URI`; feature `mlflow`).
    pub mlflow: Option<String>,
    /// Also log to W&B in this mode, `offline` or `online` (`--wandb MODE`; feature `wandb`).
    pub wandb: Option<String>,
    /// Stop (as if killed) after the checkpoint at this optimizer step; rerun to resume.
    pub stop_after_step: Option<u64>,
    /// No progress bars or lines on stdout.
    pub quiet: bool,
    /// Per tracker name, the `--to` argument of `exptrack sync` that delivers its events later
    /// (e.g. `("mlflow", "mlflow=http://127.0.0.1:5000")`); default: the tracker's name.
    pub sync_targets: Vec<(String, String)>,
}

impl QuickstartArgs {
    /// The experiment these arguments describe: the config file or [`DEFAULT_CONFIG`], with
    /// `--force`, `--runs`, `--mlflow`, `--wandb` and `--quiet` applied.
    pub fn experiment(&self) -> Result<Experiment> {
        let mut experiment = match &self.config {
            Some(path) => Experiment::from_file(path)?,
            None => Experiment::from_toml(DEFAULT_CONFIG)?,
        }
        .force(self.force);
        if let Some(dir) = &self.runs_dir {
            experiment = experiment.runs_dir(dir);
        }
        let tracking = experiment.tracking_mut();
        if let Some(uri) = &self.mlflow {
            tracking.use_mlflow = true;
            tracking.mlflow_tracking_uri = Some(uri.clone());
        }
        if let Some(mode) = &self.wandb {
            tracking.use_wandb = true;
            tracking.wandb_mode = Some(mode.clone());
        }
        if self.quiet {
            experiment.training_mut().progress = false;
        }
        Ok(experiment)
    }
}

/// What [`run`] did.
#[derive(Debug, Clone)]
pub struct QuickstartOutcome {
    /// The experiment had completed before; nothing was trained.
    pub already_completed: bool,
    /// The training result (the earlier one when already completed).
    pub result: TrainingResult,
    /// Final validation accuracy.
    pub final_accuracy: f64,
    /// The run directory in the local store (`None` when already completed).
    pub run_dir: Option<PathBuf>,
    /// Where checkpoints live: a directory, or an object-store URL
    /// (`s3://bucket/prefix/<experiment_id>`, for display).
    pub checkpoint_dir: PathBuf,
    /// The root of the local run store.
    pub runs_root: PathBuf,
    /// The experiment config, as used (overrides applied).
    pub config: ExperimentConfig,
    /// Wall time of this call.
    pub elapsed: Duration,
    /// How the run's finish went for the local store and each tracker (`None` when already
    /// completed). Its [`problem_lines`](exptrack_core::FinishReport::problem_lines) were printed
    /// on stderr.
    pub finish: Option<FinishReport>,
}

/// Runs the quickstart. Prints progress (unless `quiet`) and, for an experiment that already
/// completed, "already completed" with the earlier results, returning success without training.
pub fn run(args: QuickstartArgs) -> Result<QuickstartOutcome> {
    let started = Instant::now();
    let experiment = args.experiment()?;
    let sizes = QuickstartSizes::from_config(experiment.config())?;
    let seed = experiment.training().seed;
    let config = experiment.config().clone();
    let runs_root = experiment.runs_root().to_path_buf();
    let mut run = match experiment.start()? {
        Start::Completed(done) => return already_completed(done, config, runs_root, started),
        Start::Train(run) => run,
    };
    if let Some(step) = args.stop_after_step {
        run = run.stop_after_step(step);
    }
    let run_dir = run.run_dir().to_path_buf();
    let checkpoint_dir = run.checkpoint_dir().to_path_buf();
    let (train, valid) = generate_dataset(sizes.train_items, sizes.valid_items, seed)?;
    let model = Mlp::new(FEATURES, sizes.hidden, CLASSES, run.device());
    let result = match run.fit(model, &train, &valid) {
        Ok((_model, result)) => result,
        Err(e) => {
            if let Ok(report) = run.finish_as(RunStatus::Failed) {
                print_problems(&report, &args.sync_targets);
            }
            return Err(e);
        }
    };
    let acc = result.final_metric("valid/accuracy").unwrap_or(f64::NAN);
    if !result.interrupted {
        run.tracker()
            .set_result("final_valid_accuracy", serde_json::json!(acc))?;
        log_plots(run.tracker(), &run_dir);
    }
    let report = run.finish(&result)?;
    print_problems(&report, &args.sync_targets);
    if !args.quiet {
        println!(
            "{}: valid/accuracy {acc:.4} after {} steps ({:.1}s){}; run {}",
            if result.interrupted {
                "interrupted"
            } else {
                "completed"
            },
            result.steps,
            started.elapsed().as_secs_f64(),
            match result.resumed_from_step {
                Some(s) => format!(", resumed from step {s}"),
                None => String::new(),
            },
            run_dir.display()
        );
    }
    Ok(QuickstartOutcome {
        already_completed: false,
        final_accuracy: acc,
        result,
        run_dir: Some(run_dir),
        checkpoint_dir,
        runs_root,
        config,
        elapsed: started.elapsed(),
        finish: Some(report),
    })
}

/// "already completed" with the earlier results.
fn already_completed(
    done: Completed,
    config: ExperimentConfig,
    runs_root: PathBuf,
    started: Instant,
) -> Result<QuickstartOutcome> {
    println!("{done}; pass --force to retrain");
    let result = done.training_result().unwrap_or_default();
    Ok(QuickstartOutcome {
        already_completed: true,
        final_accuracy: result.final_metric("valid/accuracy").unwrap_or(f64::NAN),
        result: TrainingResult {
            already_completed: true,
            ..result
        },
        run_dir: None,
        checkpoint_dir: done.checkpoint_dir,
        runs_root,
        config,
        elapsed: started.elapsed(),
        finish: None,
    })
}

/// Prints one `warning:` line on stderr per tracker that did not get the whole run (and per
/// local-store error): the cause, how many events are only local, and the sync command.
fn print_problems(report: &FinishReport, sync_targets: &[(String, String)]) {
    let target = |name: &str| {
        sync_targets
            .iter()
            .find(|(n, _)| n == name)
            .map_or_else(|| name.to_owned(), |(_, t)| t.clone())
    };
    for line in report.problem_lines_with(target) {
        eprintln!("warning: {line}");
    }
}

/// The command that shows a run, as it works right after `cargo run --example quickstart` in
/// this repository (the `exptrack` binary need not be installed).
pub fn show_command(run_dir: &Path) -> String {
    format!(
        "cargo run -p exptrack-cli -- runs show {}",
        run_dir.display()
    )
}
