//! The quickstart: a burn MLP classifier trained on a generated dataset (no download), logged
//! through an [`ExperimentTracker`] (local store plus whatever trackers the caller passes, e.g.
//! TensorBoard), checkpointed, resumed when interrupted and rerun, and skipped with
//! "already completed" when it has finished before (unless forced).
//!
//! ```no_run
//! use exptrack_trainer::quickstart::{QuickstartArgs, run};
//! let outcome = run(QuickstartArgs::default())?;
//! println!("validation accuracy {:.3}", outcome.final_accuracy);
//! # Ok::<(), exptrack_trainer::Error>(())
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};
use exptrack_core::{ExperimentConfig, ExperimentTracker, FinishReport, RunStatus, Tracker};
use rand::{Rng, SeedableRng};

use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};

use crate::checkpoint::CheckpointStore;
use crate::config::TrainingConfig;
use crate::data::{ClassificationBatch, ClassificationData};
use crate::error::{Error, Result};
use crate::manager::{TrainingManager, TrainingResult};
use crate::model::{StepOutput, TrainModel};

/// Number of input features of the generated dataset.
pub const FEATURES: usize = 16;
/// Number of classes of the generated dataset.
pub const CLASSES: usize = 10;

/// The default experiment configuration of the quickstart (used when no file is given).
pub const DEFAULT_CONFIG: &str = r#"[experiment]
name = "quickstart"
description = "burn MLP classifier on a generated Gaussian-mixture dataset"
tags = ["quickstart", "mlp"]

[tracking]
runs_dir = "runs"
use_tensorboard = true

[checkpointing]
dir = "runs/checkpoints"
max_checkpoints = 2
async = true

[training]
num_epochs = 8
batch_size = 64
learning_rate = 0.002
optimizer = "adamw"
weight_decay = 0.0001
scheduler = "cosine"
warmup_steps = 50
gradient_clipping = "norm"
max_grad_norm = 1.0
log_frequency = 25
eval_frequency = 0
checkpoint_save_frequency = 200
seed = 42
device = "cpu"

[training.early_stopping]
monitor = "valid/accuracy"
mode = "max"
patience = 3
min_delta = 0.0005
restore_best_weights = true

[quickstart]
train_items = 8000
valid_items = 2000
hidden = 128
"#;

/// A two-hidden-layer ReLU MLP classifier.
#[derive(Module, Debug)]
pub struct Mlp {
    fc1: Linear,
    fc2: Linear,
    out: Linear,
}

impl Mlp {
    /// `inputs → hidden → hidden → classes`, on `device`.
    pub fn new(inputs: usize, hidden: usize, classes: usize, device: &Device) -> Self {
        Mlp {
            fc1: LinearConfig::new(inputs, hidden).init(device),
            fc2: LinearConfig::new(hidden, hidden).init(device),
            out: LinearConfig::new(hidden, classes).init(device),
        }
    }

    /// Logits `[batch, classes]`.
    pub fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let x = relu(self.fc1.forward(x));
        let x = relu(self.fc2.forward(x));
        self.out.forward(x)
    }
}

impl TrainModel for Mlp {
    type Batch = ClassificationBatch<2>;

    fn step(&self, batch: Self::Batch) -> StepOutput {
        StepOutput::classification(self.forward(batch.inputs), batch.targets)
    }
}

/// A Gaussian mixture with two clusters per class (so the classes are not linearly separable):
/// cluster centres `~ N(0, 1.2²)` per feature, items `centre + N(0, 1)`. Deterministic in `seed`.
/// Returns `(train, valid)`.
pub fn generate_dataset(
    train_items: usize,
    valid_items: usize,
    seed: u64,
) -> Result<(ClassificationData<2>, ClassificationData<2>)> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5EED_DA7A);
    let mut normal = move || -> f32 {
        // Box–Muller.
        let u1: f64 = rng.random_range(f64::EPSILON..1.0);
        let u2: f64 = rng.random_range(0.0..1.0);
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let centres: Vec<Vec<f32>> = (0..CLASSES * 2)
        .map(|_| (0..FEATURES).map(|_| 1.2 * normal()).collect())
        .collect();
    let total = train_items + valid_items;
    let mut x = Vec::with_capacity(total * FEATURES);
    let mut y = Vec::with_capacity(total);
    for i in 0..total {
        let cluster = i % (CLASSES * 2);
        for c in &centres[cluster] {
            x.push(c + normal());
        }
        y.push((cluster / 2) as i64);
    }
    let split = train_items * FEATURES;
    let valid_x = x.split_off(split);
    let valid_y = y.split_off(train_items);
    Ok((
        ClassificationData::new(x, vec![FEATURES], y, CLASSES)?,
        ClassificationData::new(valid_x, vec![FEATURES], valid_y, CLASSES)?,
    ))
}

/// Inputs of [`run`].
#[derive(Default)]
pub struct QuickstartArgs {
    /// An experiment config file (TOML); [`DEFAULT_CONFIG`] when `None`.
    pub config: Option<PathBuf>,
    /// Retrain even when the experiment already completed.
    pub force: bool,
    /// Overrides `[tracking].runs_dir`.
    pub runs_dir: Option<PathBuf>,
    /// Extra trackers (e.g. TensorBoard from `exptrack-tensorboard`) besides the local store.
    pub trackers: Vec<Box<dyn Tracker>>,
    /// Stop (as if killed) after the checkpoint at this optimizer step; rerun to resume.
    pub stop_after_step: Option<u64>,
    /// Progress bars / lines on stdout.
    pub quiet: bool,
    /// Per tracker name, the `--to` argument of `exptrack sync` that delivers its events later
    /// (e.g. `("mlflow", "mlflow=http://127.0.0.1:5000")`); default: the tracker's name.
    pub sync_targets: Vec<(String, String)>,
}

impl std::fmt::Debug for QuickstartArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuickstartArgs")
            .field("config", &self.config)
            .field("force", &self.force)
            .field("runs_dir", &self.runs_dir)
            .field("trackers", &self.trackers.len())
            .field("stop_after_step", &self.stop_after_step)
            .field("quiet", &self.quiet)
            .field("sync_targets", &self.sync_targets.len())
            .finish()
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
    /// Where checkpoints live.
    pub checkpoint_dir: PathBuf,
    /// Wall time of this call.
    pub elapsed: Duration,
    /// How the run's finish went for the local store and each tracker (`None` when already
    /// completed). Its [`problem_lines`](exptrack_core::FinishReport::problem_lines) were printed
    /// on stderr.
    pub finish: Option<FinishReport>,
}

fn tracking(e: exptrack_core::Error) -> Error {
    Error::Tracking {
        message: e.to_string(),
        source: Some(Box::new(e)),
    }
}

/// Loads the quickstart's experiment config (a file, or [`DEFAULT_CONFIG`]).
pub fn load_config(path: Option<&std::path::Path>) -> Result<ExperimentConfig> {
    match path {
        Some(p) => ExperimentConfig::from_file(p).map_err(|e| Error::Config(e.to_string())),
        None => ExperimentConfig::parse(DEFAULT_CONFIG, "quickstart (built-in config)")
            .map_err(|e| Error::Config(e.to_string())),
    }
}

fn quickstart_usize(cfg: &ExperimentConfig, key: &str, default: usize) -> Result<usize> {
    match cfg.section("quickstart").and_then(|t| t.get(key)) {
        None => Ok(default),
        Some(v) => v
            .as_integer()
            .and_then(|i| usize::try_from(i).ok())
            .filter(|i| *i > 0)
            .ok_or_else(|| Error::Config(format!("[quickstart].{key} must be a positive integer"))),
    }
}

/// Runs the quickstart. Prints progress (unless `quiet`) and, for an experiment that already
/// completed, "already completed" with the earlier results, returning success without training.
pub fn run(args: QuickstartArgs) -> Result<QuickstartOutcome> {
    let started = Instant::now();
    let exp = load_config(args.config.as_deref())?;
    let mut tcfg = TrainingConfig::from_experiment(&exp)?;
    if args.quiet {
        tcfg.progress = false;
    }
    let train_items = quickstart_usize(&exp, "train_items", 8000)?;
    let valid_items = quickstart_usize(&exp, "valid_items", 2000)?;
    let hidden = quickstart_usize(&exp, "hidden", 128)?;
    let runs_root = args
        .runs_dir
        .clone()
        .unwrap_or_else(|| exp.tracking.runs_dir.clone());
    let mut ccfg = match exp.section("checkpointing") {
        Some(t) => CheckpointConfig::from_table(t).map_err(|e| Error::Config(e.to_string()))?,
        None => CheckpointConfig::default(),
    };
    if let Some(dir) = &args.runs_dir {
        ccfg.dir = dir.join("checkpoints");
    }
    ccfg.force = args.force;
    let experiment_id = exp.experiment_id();
    let checkpoint_dir = ccfg.dir.join(&experiment_id);
    let mut store =
        ModelCheckpointer::open(&experiment_id, ccfg).map_err(|e| Error::Checkpoint {
            message: e.to_string(),
            source: Some(Box::new(e)),
        })?;

    if !args.force
        && let Some(summary) = store.completed()?
    {
        let mut result: TrainingResult =
            serde_json::from_value(summary).map_err(|source| Error::Json {
                what: "completion summary",
                source,
            })?;
        result.already_completed = true;
        let acc = result.final_metric("valid/accuracy").unwrap_or(f64::NAN);
        let best = match (result.best_metric, result.best_epoch) {
            (Some(m), Some(e)) => format!(", best {} {m:.4} at epoch {}", result.monitor, e + 1),
            (Some(m), None) => format!(", best {} {m:.4}", result.monitor),
            _ => String::new(),
        };
        println!(
            "experiment `{}` already completed (checkpoints in {}): valid/accuracy {:.4}, \
             valid/loss {:.4}{best}; pass --force to retrain",
            experiment_id,
            checkpoint_dir.display(),
            acc,
            result.final_metric("valid/loss").unwrap_or(f64::NAN),
        );
        return Ok(QuickstartOutcome {
            already_completed: true,
            final_accuracy: acc,
            result,
            run_dir: None,
            checkpoint_dir,
            elapsed: started.elapsed(),
            finish: None,
        });
    }

    let mut builder = ExperimentTracker::builder(exp.clone())
        .runs_dir(&runs_root)
        .resume(if args.force {
            exptrack_core::Resume::Never
        } else {
            exptrack_core::Resume::LatestUnfinished
        });
    for t in args.trackers {
        builder = builder.with_tracker(t);
    }
    let tracker = Arc::new(builder.build().map_err(tracking)?);
    let run_dir = tracker.run_dir().to_path_buf();

    let (train, valid) = generate_dataset(train_items, valid_items, tcfg.seed)?;
    let mut manager = TrainingManager::new(tcfg)?
        .with_sink(Arc::clone(&tracker))
        .with_checkpoints(store)
        .force(args.force);
    if let Some(step) = args.stop_after_step {
        manager = manager.stop_after_step(step);
    }
    let model = Mlp::new(FEATURES, hidden, CLASSES, manager.device());
    let fitted = manager.fit(model, &train, &valid);
    drop(manager); // releases the manager's handle on the tracker
    let tracker = Arc::try_unwrap(tracker).map_err(|_| Error::Tracking {
        message: "the experiment tracker is still shared".into(),
        source: None,
    })?;
    let sync_targets = args.sync_targets;
    let (_model, result) = match fitted {
        Ok(r) => r,
        Err(e) => {
            if let Ok(report) = tracker.finish(RunStatus::Failed) {
                print_problems(&report, &sync_targets);
            }
            return Err(e);
        }
    };
    let acc = result.final_metric("valid/accuracy").unwrap_or(f64::NAN);
    let report = if result.interrupted {
        tracker.finish(RunStatus::Killed).map_err(tracking)?
    } else {
        tracker
            .set_result("final_valid_accuracy", serde_json::json!(acc))
            .map_err(tracking)?;
        log_plots(&tracker, &run_dir);
        tracker.finish(RunStatus::Completed).map_err(tracking)?
    };
    print_problems(&report, &sync_targets);
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
        elapsed: started.elapsed(),
        finish: Some(report),
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

/// Renders the run's curves into `<run_dir>/plots` and logs them as artifacts (feature `plots`).
/// A plotting failure is reported on stderr and never fails the run.
fn log_plots(tracker: &ExperimentTracker, run_dir: &std::path::Path) {
    #[cfg(feature = "plots")]
    {
        // The plots are drawn from the local store: make sure it has every event first. A
        // backend that did not confirm is reported (once, with its cause) when the run finishes.
        if let Err(e) = tracker.flush_timeout(Duration::from_secs(10)) {
            tracing::debug!("flush before plotting: {e}");
        }
        match exptrack_plot::plot_run(run_dir, run_dir.join("plots")) {
            Ok(files) => {
                for f in files {
                    let name = match f.file_name() {
                        Some(n) => format!("plots/{}", n.to_string_lossy()),
                        None => continue,
                    };
                    if let Err(e) = tracker.log_artifact(&f, &name) {
                        eprintln!("warning: logging plot {}: {e}", f.display());
                    }
                }
            }
            Err(e) => eprintln!("warning: plotting the run failed: {e}"),
        }
    }
    #[cfg(not(feature = "plots"))]
    let _ = (tracker, run_dir);
}
