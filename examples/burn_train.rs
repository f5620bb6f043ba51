//! A classifier trained by **burn-train's own loop** (`SupervisedTraining::launch`) with
//! exptrack's logger and checkpointer: metrics go to TensorBoard (and MLflow / W&B), each epoch
//! is a crash-safe checkpoint, a rerun after an interruption resumes from the last committed
//! epoch, and a rerun after it finished says "already completed".
//!
//! ```text
//! cargo run --release --features burn-train --example burn_train
//! cargo run --release --features burn-train,mlflow --example burn_train -- --mlflow http://127.0.0.1:5000
//! cargo run --release --features burn-train,wandb --example burn_train -- --wandb offline
//! ```
//!
//! Options: `--runs DIR` (default `runs`), `--epochs N` (default 6), `--force` (retrain a
//! completed experiment), `--mlflow URI`, `--wandb offline|online`. Ctrl-C (or a crash) during
//! training, then the same command, resumes.
//!
//! The model, batcher and data loaders are written the way burn's examples write them; the
//! exptrack part is the few lines marked `exptrack:`.

use std::path::PathBuf;
use std::sync::Arc;

use exptrack::burn_train::Tracking;
use exptrack::checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack::trainer::burn;
use exptrack::{ExperimentConfig, RunStatus};

use burn::data::dataloader::DataLoaderBuilder;
use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::optim::AdamConfig;
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{
    ClassificationOutput, InferenceStep, Learner, SupervisedTraining, TrainOutput, TrainStep,
};

const FEATURES: usize = 16;
const CLASSES: usize = 4;

/// A two-layer MLP.
#[derive(Module, Debug)]
struct Model {
    fc1: Linear,
    fc2: Linear,
    out: Linear,
}

impl Model {
    fn new(device: &Device) -> Self {
        Model {
            fc1: LinearConfig::new(FEATURES, 64).init(device),
            fc2: LinearConfig::new(64, 64).init(device),
            out: LinearConfig::new(64, CLASSES).init(device),
        }
    }

    fn forward_classification(&self, batch: ClassBatch) -> ClassificationOutput {
        let x = relu(self.fc1.forward(batch.inputs));
        let logits = self.out.forward(relu(self.fc2.forward(x)));
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Model {
    type Input = ClassBatch;
    type Output = ClassificationOutput;
    fn step(&self, batch: ClassBatch) -> TrainOutput<ClassificationOutput> {
        let item = self.forward_classification(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Model {
    type Input = ClassBatch;
    type Output = ClassificationOutput;
    fn step(&self, batch: ClassBatch) -> ClassificationOutput {
        self.forward_classification(batch)
    }
}

#[derive(Clone, Debug)]
struct Item {
    x: Vec<f32>,
    label: i64,
}

#[derive(Clone, Debug)]
struct ClassBatch {
    inputs: Tensor<2>,
    targets: Tensor<1, Int>,
}

#[derive(Clone, Default)]
struct ClassBatcher;

impl Batcher<Item, ClassBatch> for ClassBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> ClassBatch {
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|i| i.x.iter().copied()).collect();
        let y: Vec<i64> = items.iter().map(|i| i.label).collect();
        ClassBatch {
            inputs: Tensor::<2>::from_data(TensorData::new(x, [n, FEATURES]), device),
            targets: Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device),
        }
    }
}

/// A generated dataset (no download): one noisy Gaussian blob per class, deterministic in `seed`.
fn dataset(n: usize, seed: u64) -> InMemDataset<Item> {
    let mut s = seed ^ 0x9E37_79B9_7F4A_7C15;
    let mut uniform = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut normal = move || {
        let (u1, u2) = (uniform().max(f64::EPSILON), uniform());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    };
    let centres: Vec<Vec<f32>> = (0..CLASSES)
        .map(|c| {
            (0..FEATURES)
                .map(|f| if f % CLASSES == c { 1.5 } else { 0.0 })
                .collect()
        })
        .collect();
    let items = (0..n)
        .map(|i| {
            let label = i % CLASSES;
            let x = centres[label].iter().map(|c| c + normal()).collect();
            Item {
                x,
                label: label as i64,
            }
        })
        .collect();
    InMemDataset::new(items)
}

#[derive(Debug)]
struct Args {
    runs: PathBuf,
    epochs: usize,
    force: bool,
    mlflow: Option<String>,
    wandb: Option<String>,
}

const USAGE: &str = "usage: burn_train [--runs DIR] [--epochs N] [--force] [--mlflow URI] \
                     [--wandb offline|online]";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        runs: PathBuf::from("runs"),
        epochs: 6,
        force: false,
        mlflow: None,
        wandb: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => a.runs = it.next().ok_or("--runs needs a directory")?.into(),
            "--epochs" => {
                let n = it.next().ok_or("--epochs needs a number")?;
                a.epochs = n.parse().map_err(|e| format!("--epochs {n:?}: {e}"))?;
            }
            "--force" => a.force = true,
            "--mlflow" => a.mlflow = Some(it.next().ok_or("--mlflow needs a tracking URI")?),
            "--wandb" => {
                let mode = it.next().ok_or("--wandb needs offline or online")?;
                if mode != "offline" && mode != "online" {
                    return Err(format!("--wandb {mode:?}: expected offline or online"));
                }
                a.wandb = Some(mode);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let (batch_size, lr, train_items, valid_items) = (64, 5e-3, 6000, 1500);

    // exptrack: the experiment, its backends (TensorBoard by default) and its checkpoints.
    let mut config = ExperimentConfig::named("burn-train-example");
    config.tracking.runs_dir = args.runs.clone();
    if let Some(uri) = &args.mlflow {
        config.tracking.use_mlflow = true;
        config.tracking.mlflow_tracking_uri = Some(uri.clone());
    }
    if let Some(mode) = &args.wandb {
        config.tracking.use_wandb = true;
        config.tracking.wandb_mode = Some(mode.clone());
    }
    let experiment_id = config.experiment_id();
    let checkpoints = CheckpointConfig {
        dir: args.runs.join("checkpoints"),
        max_checkpoints: Some(2),
        keep_best: Some(1),
        monitor: Some("valid/loss".into()),
        async_save: true,
        force: args.force,
        ..CheckpointConfig::default()
    };
    let checkpoint_dir = checkpoints.dir.join(&experiment_id);
    let ckpt = ModelCheckpointer::open(&experiment_id, checkpoints)?;
    if !args.force
        && let Some(results) = ckpt.completed_results()?
    {
        println!(
            "experiment `{experiment_id}` already completed (checkpoints in {}): {results}; \
             pass --force to retrain",
            checkpoint_dir.display()
        );
        return Ok(());
    }
    let tracker = exptrack::tracker(config)?
        .resume(if args.force {
            exptrack::Resume::Never
        } else {
            exptrack::Resume::LatestUnfinished
        })
        .build()?;
    let run_dir = tracker.run_dir().to_path_buf();
    let tracking = Tracking::new(Arc::new(tracker.clone())).with_checkpointer(ckpt)?;
    if let Some(r) = tracking.resume_point() {
        println!(
            "resuming after epoch {} (step {}) from {}",
            r.epoch,
            r.step,
            checkpoint_dir.display()
        );
    }

    // burn, as usual (burn-train trains the model on an autodiff device).
    let device = Device::default().autodiff();
    let model = Model::new(&device);
    tracking.log_config(&serde_json::json!({
        "num_epochs": args.epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "optimizer": "adam",
        "train_items": train_items,
        "valid_items": valid_items,
    }))?;
    tracking.log_model(&model)?;
    let train = DataLoaderBuilder::new(ClassBatcher)
        .batch_size(batch_size)
        .shuffle(42)
        .build(dataset(train_items, 1));
    let valid = DataLoaderBuilder::new(ClassBatcher)
        .batch_size(batch_size)
        .build(dataset(valid_items, 2));
    let training = SupervisedTraining::new(args.runs.join("burn-train-artifacts"), train, valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .num_epochs(args.epochs);
    // exptrack: our logger, metric history and checkpointers, and the resume epoch.
    let training = tracking.attach(training);
    let result = training.launch(Learner::new(model, AdamConfig::new().init(), lr));
    let outcome = tracking.finish(&result)?;
    drop(tracking);
    tracker.finish(if outcome.completed {
        RunStatus::Completed
    } else {
        RunStatus::Killed
    })?;

    println!();
    match (
        outcome.completed,
        outcome.final_metrics.get("valid/accuracy"),
    ) {
        (true, Some(acc)) => println!(
            "completed after epoch {}: valid accuracy {acc:.2}%",
            outcome.last_epoch.unwrap_or(0)
        ),
        (true, None) => println!("completed"),
        (false, _) => println!("interrupted; rerun the same command to resume"),
    }
    println!("run directory:  {}", run_dir.display());
    println!(
        "TensorBoard:    tensorboard --logdir {}",
        args.runs.display()
    );
    println!("checkpoints:    {}", checkpoint_dir.display());
    println!(
        "  cargo run -p exptrack-cli -- ckpt verify {}   (or ckpt list)",
        checkpoint_dir.display()
    );
    if let Some(uri) = &args.mlflow {
        println!("MLflow:         {uri} (experiment \"burn-train-example\")");
    }
    if args.wandb.is_some() {
        println!("W&B:            see the wandb directory (offline runs: `wandb sync <dir>`)");
    }
    Ok(())
}
