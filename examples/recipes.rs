//! Recipe batches: trains every experiment config under a directory (grouped in sub-directories
//! by category) as one study, skips experiments that completed before (showing their earlier
//! results), resumes interrupted ones, and prints a comparison table.
//!
//! ```text
//! cargo run --release --example recipes -- examples/recipes
//! cargo run --release --example recipes -- examples/recipes --category baseline --json
//! ```
//!
//! The recipes in `examples/recipes/` are the study of Zhang et al. 2017, "Understanding deep
//! learning requires rethinking generalization", at laptop size: the same MLP trained on true
//! labels, on 20 % / 50 % / 80 % corrupted labels and on random labels. It fits every training
//! set (training accuracy near 1.0), while its accuracy on held-out data with true labels falls
//! with the corruption level, to chance (0.1) for random labels. Measured figures: docs/studies.md.
//!
//! Options:
//! - `--category NAME`: only the recipes in that sub-directory.
//! - `--force`: retrain experiments that completed before.
//! - `--json`: print the table as a JSON array of rows on stdout (progress stays on stderr).
//! - `--runs DIR`: root of the run store, with checkpoints in `DIR/checkpoints` (default: each
//!   recipe's `[tracking].runs_dir` and `[checkpointing].dir`).
//! - `--mlflow URI`: also log to an MLflow server (build with `--features mlflow`).
//! - `--wandb offline|online`: also log to W&B (build with `--features wandb`).
//! - `--stop-after-step N`: stop each recipe trained in this call after its checkpoint at step
//!   N, as if interrupted; the next call resumes them.
//! - `--quiet`: no per-epoch progress.
//!
//! Exit status: 0 when every recipe completed (now or before), 1 when one failed or was
//! interrupted, 2 for a usage error.
//!
//! A recipe is an experiment config with two sections of its own besides `[training]`:
//!
//! ```toml
//! [data]                    # a seeded Gaussian mixture (no download)
//! train_items = 1000        # the training set, whose labels are corrupted
//! valid_items = 1000        # held out, true labels: evaluated every epoch (valid/accuracy)
//! test_items = 2000         # held out, true labels: evaluated once at the end (test/accuracy)
//! features = 32
//! classes = 10
//! clusters_per_class = 2
//! cluster_spread = 1.0      # std of the cluster centres (items: centre + N(0, 1))
//! data_seed = 1
//! label_corruption = 0.2    # fraction of training labels replaced by a uniformly random class
//! corruption_seed = 7
//!
//! [model]
//! hidden = 512              # width of the MLP's two hidden layers
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use exptrack::error::Reported;
use exptrack::{ExperimentConfig, RunStatus};
use exptrack_trainer::batch::{self, BatchOptions, RecipeOutcome, RecipeRun, RowStatus};
use exptrack_trainer::data::ClassificationData;
use exptrack_trainer::quickstart::Mlp;
use exptrack_trainer::{TrainingConfig, TrainingManager};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    dir: PathBuf,
    category: Option<String>,
    force: bool,
    json: bool,
    runs: Option<PathBuf>,
    mlflow: Option<String>,
    wandb: Option<String>,
    stop_after_step: Option<u64>,
    quiet: bool,
}

const USAGE: &str = "usage: recipes [DIR (default examples/recipes)] [--category NAME] [--force] \
                     [--json] [--runs DIR] [--mlflow URI] [--wandb offline|online] \
                     [--stop-after-step N] [--quiet]";

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: PathBuf::from("examples/recipes"),
        category: None,
        force: false,
        json: false,
        runs: None,
        mlflow: None,
        wandb: None,
        stop_after_step: None,
        quiet: false,
    };
    let mut dir_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--category" => args.category = Some(it.next().ok_or("--category needs a name")?),
            "--force" => args.force = true,
            "--json" => args.json = true,
            "--quiet" => args.quiet = true,
            "--runs" | "--runs-dir" => {
                args.runs = Some(it.next().ok_or("--runs needs a directory")?.into())
            }
            "--mlflow" => args.mlflow = Some(it.next().ok_or("--mlflow needs a tracking URI")?),
            "--wandb" => {
                let mode = it.next().ok_or("--wandb needs offline or online")?;
                if mode != "offline" && mode != "online" {
                    return Err(format!("--wandb {mode:?}: expected offline or online"));
                }
                args.wandb = Some(mode);
            }
            "--stop-after-step" => {
                let n = it.next().ok_or("--stop-after-step needs a step")?;
                args.stop_after_step =
                    Some(n.parse().map_err(|e| format!("--stop-after-step: {e}"))?);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other if !other.starts_with('-') && !dir_given => {
                args.dir = other.into();
                dir_given = true;
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// The recipe's `[data]` and `[model]` sections.
#[derive(Debug, Clone)]
struct Study {
    train_items: usize,
    valid_items: usize,
    test_items: usize,
    features: usize,
    classes: usize,
    clusters_per_class: usize,
    cluster_spread: f64,
    data_seed: u64,
    label_corruption: f64,
    corruption_seed: u64,
    hidden: usize,
}

impl Study {
    fn from_config(cfg: &ExperimentConfig) -> Result<Self, String> {
        let (data, model) = (cfg.section("data"), cfg.section("model"));
        for (section, table, known) in [
            (
                "data",
                data,
                &[
                    "train_items",
                    "valid_items",
                    "test_items",
                    "features",
                    "classes",
                    "clusters_per_class",
                    "cluster_spread",
                    "data_seed",
                    "label_corruption",
                    "corruption_seed",
                ][..],
            ),
            ("model", model, &["hidden"][..]),
        ] {
            if let Some(k) = table
                .into_iter()
                .flat_map(|t| t.keys())
                .find(|k| !known.contains(&k.as_str()))
            {
                return Err(format!(
                    "[{section}].{k} is not a known key (known: {})",
                    known.join(", ")
                ));
            }
        }
        let get = |section: &str, key: &str| match section {
            "data" => data.and_then(|t| t.get(key)),
            _ => model.and_then(|t| t.get(key)),
        };
        let count = |section: &str, key: &str, default: usize| match get(section, key) {
            None => Ok(default),
            Some(v) => v
                .as_integer()
                .and_then(|i| usize::try_from(i).ok())
                .filter(|i| *i > 0)
                .ok_or_else(|| format!("[{section}].{key} must be a positive integer")),
        };
        let seed = |key: &str, default: u64| match get("data", key) {
            None => Ok(default),
            Some(v) => v
                .as_integer()
                .and_then(|i| u64::try_from(i).ok())
                .ok_or_else(|| format!("[data].{key} must be a non-negative integer")),
        };
        let float = |key: &str, default: f64| match get("data", key) {
            None => Ok(default),
            Some(v) => v
                .as_float()
                .or_else(|| v.as_integer().map(|i| i as f64))
                .ok_or_else(|| format!("[data].{key} must be a number")),
        };
        let study = Study {
            train_items: count("data", "train_items", 1000)?,
            valid_items: count("data", "valid_items", 1000)?,
            test_items: count("data", "test_items", 2000)?,
            features: count("data", "features", 32)?,
            classes: count("data", "classes", 10)?,
            clusters_per_class: count("data", "clusters_per_class", 2)?,
            cluster_spread: float("cluster_spread", 1.0)?,
            data_seed: seed("data_seed", 1)?,
            label_corruption: float("label_corruption", 0.0)?,
            corruption_seed: seed("corruption_seed", 7)?,
            hidden: count("model", "hidden", 512)?,
        };
        if !(0.0..=1.0).contains(&study.label_corruption) {
            return Err(format!(
                "[data].label_corruption = {} is outside 0.0..=1.0",
                study.label_corruption
            ));
        }
        if !(study.cluster_spread.is_finite() && study.cluster_spread > 0.0) {
            return Err("[data].cluster_spread must be a positive number".into());
        }
        Ok(study)
    }

    /// `(train, valid, test)`: one Gaussian mixture (`clusters_per_class` clusters per class,
    /// centres `~ N(0, cluster_spread²)` per feature, items `centre + N(0, 1)`), split three ways;
    /// only the training labels are corrupted.
    #[allow(clippy::type_complexity)]
    fn datasets(
        &self,
    ) -> Result<
        (
            ClassificationData<2>,
            ClassificationData<2>,
            ClassificationData<2>,
        ),
        BoxError,
    > {
        let mut rng = SplitMix64(self.data_seed ^ 0x2A17_5EED);
        let mut normal = move || -> f32 {
            // Box–Muller.
            let u1 = rng.uniform().max(f64::EPSILON);
            let u2 = rng.uniform();
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        };
        let clusters = self.classes * self.clusters_per_class;
        let centres: Vec<Vec<f32>> = (0..clusters)
            .map(|_| {
                (0..self.features)
                    .map(|_| self.cluster_spread as f32 * normal())
                    .collect()
            })
            .collect();
        let mut split = |n: usize| -> Result<ClassificationData<2>, BoxError> {
            let mut x = Vec::with_capacity(n * self.features);
            let mut y = Vec::with_capacity(n);
            for i in 0..n {
                let cluster = i % clusters;
                for c in &centres[cluster] {
                    x.push(c + normal());
                }
                y.push((cluster / self.clusters_per_class) as i64);
            }
            Ok(ClassificationData::new(
                x,
                vec![self.features],
                y,
                self.classes,
            )?)
        };
        let train = split(self.train_items)?;
        let valid = split(self.valid_items)?;
        let test = split(self.test_items)?;
        let train = train.with_label_corruption(self.label_corruption, self.corruption_seed)?;
        Ok((train, valid, test))
    }
}

/// A small seeded generator (SplitMix64), so the data needs no extra dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Trains one recipe: the MLP on its data, logged through an ExperimentTracker (local store plus
/// the backends the config and flags switch on), checkpointed, resumed when interrupted. At the
/// end it evaluates the training set (with its possibly corrupted labels: `train/accuracy`) and
/// the test set (true labels: `test/accuracy`).
fn train_recipe(run: &RecipeRun<'_>, args: &Args) -> Result<RecipeOutcome, BoxError> {
    let study = Study::from_config(run.config())?;
    let mut config = run.config().clone();
    if let Some(uri) = &args.mlflow {
        config.tracking.use_mlflow = true;
        config.tracking.mlflow_tracking_uri = Some(uri.clone());
    }
    if let Some(mode) = &args.wandb {
        config.tracking.use_wandb = true;
        config.tracking.wandb_mode = Some(mode.clone());
    }
    let mut tcfg = TrainingConfig::from_experiment(&config)?;
    if args.quiet || args.json {
        tcfg.progress = false;
    }
    let (train, valid, test) = study.datasets()?;
    let checkpoints = run.checkpointer()?;

    let mut builder = run.tracker_builder(config.clone());
    for t in exptrack::trackers_from_config(&config)? {
        builder = builder.with_tracker(t);
    }
    let tracker = builder.build()?;
    let run_dir = tracker.run_dir().to_path_buf();
    tracker.log_hyperparameters(&[
        ("data.label_corruption", study.label_corruption),
        ("data.train_items", study.train_items as f64),
        ("model.hidden", study.hidden as f64),
    ])?;

    let mut manager = TrainingManager::new(tcfg)?
        .with_sink(Arc::new(tracker.clone()))
        .with_checkpointer(checkpoints);
    if let Some(step) = args.stop_after_step {
        manager = manager.stop_after_step(step);
    }
    let model = Mlp::new(
        study.features,
        study.hidden,
        study.classes,
        manager.device(),
    );
    let fitted = manager.fit(model, &train, &valid);
    let (model, result) = match fitted {
        Ok(r) => r,
        Err(e) => {
            drop(manager);
            let _ = tracker.finish(RunStatus::Failed);
            return Err(e.into());
        }
    };
    let outcome = if result.interrupted {
        RecipeOutcome::interrupted(&run_dir)
    } else {
        // Accuracy on the training set as trained (corrupted labels) and on the clean test set.
        let rename = |m: Vec<(String, f64)>, split: &str| -> Vec<(String, f64)> {
            m.into_iter()
                .map(|(k, v)| (k.replacen("valid/", &format!("{split}/"), 1), v))
                .collect()
        };
        let train_m = rename(manager.validate(&model, &train)?, "train");
        let test_m = rename(manager.validate(&model, &test)?, "test");
        let final_m: Vec<(String, f64)> = train_m
            .iter()
            .filter(|(k, _)| k == "train/accuracy")
            .chain(test_m.iter())
            .cloned()
            .collect();
        tracker.log_metrics(result.steps, &final_m)?;
        for (k, v) in &final_m {
            tracker.set_result(
                &format!("final_{}", k.replace('/', "_")),
                serde_json::json!(v),
            )?;
        }
        RecipeOutcome::completed(&run_dir)
    }
    .resumed_from(result.resumed_from_step);
    drop(manager); // waits for the manager's background checkpoint saves
    let report = tracker.finish(if result.interrupted {
        RunStatus::Killed
    } else {
        RunStatus::Completed
    })?;
    for line in report.problem_lines() {
        eprintln!("warning: {line}");
    }
    Ok(outcome)
}

fn main() -> Result<ExitCode, Reported> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return Ok(ExitCode::from(2));
        }
    };
    let mut options = BatchOptions::new().force(args.force);
    if let Some(c) = &args.category {
        options = options.category(c.clone());
    }
    if let Some(dir) = &args.runs {
        options = options.runs_dir(dir.clone());
    }
    let report = batch::run_all(&args.dir, &options, |run| train_recipe(run, &args))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        println!();
        print!(
            "{}",
            report.table(&[
                "train/accuracy",
                "valid/accuracy",
                "test/accuracy",
                "train/loss"
            ])
        );
    }
    let unfinished = report
        .rows
        .iter()
        .filter(|r| matches!(r.status, RowStatus::Failed | RowStatus::Interrupted))
        .count();
    Ok(if unfinished == 0 {
        ExitCode::SUCCESS
    } else {
        if !args.json {
            eprintln!(
                "{unfinished} of {} recipes did not complete; rerun to resume",
                report.rows.len()
            );
        }
        ExitCode::from(1)
    })
}
