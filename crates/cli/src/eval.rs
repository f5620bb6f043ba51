//! `exptrack eval --mlflow URI --run-id ID --data FILE [--ensemble K --checkpoints DIR]`:
//! evaluates the model an MLflow run logged, on a test set, and logs the results to that run.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::Ctx;
use crate::error::{CliError, Result};

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// MLflow tracking URI (also MLFLOW_TRACKING_URI).
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URI")]
    mlflow: String,
    /// The MLflow run whose model is evaluated and which receives the results.
    #[arg(long, value_name = "ID")]
    run_id: String,
    /// Test set: CSV, one item per line, the model's input values then the class index.
    #[arg(long, value_name = "FILE")]
    data: PathBuf,
    /// The dataset's name in the metric keys (`eval/<NAME>/accuracy`, ...).
    #[arg(long, default_value = "test", value_name = "NAME")]
    dataset: String,
    /// Where the run keeps its model when it has no logged model: `runs:/<id>/<PATH>`.
    #[arg(long, default_value = "model", value_name = "PATH")]
    artifact_path: String,
    /// Also evaluate the ensemble of the best K checkpoints (mean of their softmax
    /// probabilities), logged under `ensemble/<NAME>/...`; needs --checkpoints.
    #[arg(long, value_name = "K", requires = "checkpoints")]
    ensemble: Option<usize>,
    /// The checkpointer's directory (`[checkpointing].dir`) for --ensemble: a path, or
    /// `s3://bucket/prefix` (also `gs://`, `az://`) with the cli's `s3`/`gcs`/`azure` feature
    /// (credentials from the usual environment variables, e.g. `AWS_ACCESS_KEY_ID`).
    #[arg(long, value_name = "DIR|URL")]
    checkpoints: Option<PathBuf>,
    /// The experiment id of the checkpoints (default: from the model, else the run's tags).
    #[arg(long, value_name = "ID")]
    experiment_id: Option<String>,
    /// The metric stored with each checkpoint that ranks the ensemble's members.
    #[arg(long, default_value = "valid/accuracy", value_name = "METRIC")]
    monitor: String,
    /// Whether a larger or a smaller --monitor value is better.
    #[arg(long, value_enum, default_value_t = Better::Max)]
    mode: Better,
    /// Device to run the model on (`cpu`, or a GPU backend the build includes).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Keep the downloaded model and the written artifacts here (default: a temporary directory).
    #[arg(long, value_name = "DIR")]
    work_dir: Option<PathBuf>,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Better {
    /// Larger is better (accuracy).
    Max,
    /// Smaller is better (loss).
    Min,
}

#[cfg(not(feature = "eval"))]
pub(crate) fn eval(_ctx: &Ctx, a: &EvalArgs) -> Result<()> {
    let _ = (a.json, a.ensemble, a.mode);
    Err(CliError::usage(
        "this exptrack was built without the `eval` feature (it needs burn to run the model)",
    )
    .hint("rebuild with `cargo install --path crates/cli --features eval` or run `cargo run -p exptrack-cli --features eval -- eval ...`"))
}

#[cfg(feature = "eval")]
pub(crate) fn eval(ctx: &Ctx, a: &EvalArgs) -> Result<()> {
    use exptrack_eval::{Error as EvalError, MlflowEvalOptions, TestSet};
    use exptrack_mlflow::MlflowTrackerBuilder;

    let client = MlflowTrackerBuilder::new()
        .from_env()
        .tracking_uri(a.mlflow.clone())
        .build_client()
        .map_err(|e| CliError::usage(format!("MLflow settings: {e}")))?;
    let device = exptrack_trainer::device::parse_device(&a.device)
        .map_err(|e| CliError::usage(format!("--device {:?}: {e}", a.device)))?;
    let tmp;
    let work_dir = match &a.work_dir {
        Some(d) => d.clone(),
        None => {
            tmp = TempDir::new()?;
            tmp.0.clone()
        }
    };
    let mut options = MlflowEvalOptions::new(&work_dir);
    options.dataset = a.dataset.clone();
    options.artifact_path = a.artifact_path.clone();
    options.experiment_id = a.experiment_id.clone();
    if let (Some(k), Some(dir)) = (a.ensemble, &a.checkpoints) {
        let mode = match a.mode {
            Better::Max => exptrack_checkpoint::Mode::Max,
            Better::Min => exptrack_checkpoint::Mode::Min,
        };
        options = options.ensemble(dir, k, &a.monitor, mode);
    }
    let eval_err = |e: EvalError| match e {
        EvalError::Model { .. } => CliError::check(e.to_string()).hint(
            "the run must log its model during training (tracker.log_model(dir, \"model\", step))",
        ),
        EvalError::Data { .. } | EvalError::Config { .. } => CliError::usage(e.to_string()),
        EvalError::Mlflow { .. } => CliError::backend(e.to_string())
            .hint("check --mlflow / MLFLOW_TRACKING_URI and that the server is reachable"),
        other => CliError::backend(other.to_string()),
    };
    // The test set's width comes from the model: read it after the download.
    let spinner = crate::output::spinner(ctx.progress, "finding the run's model in MLflow");
    let location = exptrack_eval::find_run_model(&client, &a.run_id, &a.artifact_path);
    spinner.finish_and_clear();
    let location = location.map_err(eval_err)?;
    let width = input_width(&client, &location, &work_dir).map_err(eval_err)?;
    let data = TestSet::from_csv(&a.data, width).map_err(eval_err)?;
    let spinner = crate::output::spinner(
        ctx.progress,
        &format!("evaluating {} on {} items", location.source, data.len()),
    );
    let outcome = exptrack_eval::evaluate_mlflow_run(&client, &a.run_id, &data, &options, &device);
    spinner.finish_and_clear();
    let outcome = outcome.map_err(eval_err)?;

    let e = &outcome.evaluation;
    if a.json {
        let mut v = serde_json::json!({
            "run_id": outcome.run_id,
            "model_source": outcome.model.source,
            "dataset": a.dataset,
            "items": data.len(),
            "step": outcome.step,
            "metrics": e.scalars("eval").into_iter().map(|(k, v)| (k, json_f64(v)))
                .collect::<serde_json::Map<_, _>>(),
            "artifacts": outcome.artifacts,
        });
        if let Some(en) = &outcome.ensemble {
            v["ensemble"] = serde_json::json!({
                "members": en.member_steps(),
                "metrics": en.scalars().into_iter().map(|(k, v)| (k, json_f64(v))).collect::<serde_json::Map<_, _>>(),
            });
        }
        println!("{v}");
    } else {
        println!(
            "{} on {} ({} items): accuracy {:.4}, macro F1 {:.4}, ECE {:.4}, loss {:.4}",
            outcome.model.source,
            a.dataset,
            data.len(),
            e.accuracy(),
            e.report
                .classification
                .as_ref()
                .map_or(f64::NAN, |c| c.f1_macro),
            e.ece(),
            e.report.loss
        );
        if let Some(en) = &outcome.ensemble {
            println!(
                "ensemble of {} checkpoints (steps {:?}): accuracy {:.4}, ECE {:.4}",
                en.members.len(),
                en.member_steps(),
                en.evaluation.accuracy(),
                en.evaluation.ece()
            );
        }
        println!(
            "logged to MLflow run {}: {} metrics at step {}, artifacts {}",
            outcome.run_id,
            e.scalars("eval").len() + outcome.ensemble.as_ref().map_or(0, |en| en.scalars().len()),
            outcome.step,
            outcome.artifacts.join(", ")
        );
    }
    Ok(())
}

/// Values per input item of the run's model, read from its `exptrack_model.json`.
#[cfg(feature = "eval")]
fn input_width(
    client: &exptrack_mlflow::MlflowClient,
    location: &exptrack_eval::ModelLocation,
    work_dir: &std::path::Path,
) -> exptrack_eval::Result<usize> {
    use exptrack_eval::model_dir::SPEC_FILE;
    let rel = if location.rel_dir.is_empty() {
        SPEC_FILE.to_owned()
    } else {
        format!("{}/{SPEC_FILE}", location.rel_dir)
    };
    if !location.files.contains(&rel) {
        return Err(exptrack_eval::Error::Model {
            path: PathBuf::from(&location.source),
            message: format!(
                "{SPEC_FILE} is missing (files: {}): not a model directory written by \
                 exptrack_eval::save_model_dir",
                location.files.join(", ")
            ),
        });
    }
    let bytes = client
        .download_artifact(&location.artifact_uri, &rel)
        .map_err(|source| exptrack_eval::Error::Mlflow {
            context: format!("downloading {rel}"),
            source,
        })?;
    std::fs::create_dir_all(work_dir).map_err(|source| exptrack_eval::Error::Io {
        op: "create directory",
        path: work_dir.to_owned(),
        source,
    })?;
    let spec: exptrack_eval::ModelSpec =
        serde_json::from_slice(&bytes).map_err(|e| exptrack_eval::Error::Model {
            path: PathBuf::from(&location.source).join(SPEC_FILE),
            message: e.to_string(),
        })?;
    Ok(spec.input_len())
}

#[cfg(feature = "eval")]
fn json_f64(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(v.to_string()))
}

/// A temporary directory removed on drop.
#[cfg(feature = "eval")]
struct TempDir(PathBuf);

#[cfg(feature = "eval")]
impl TempDir {
    fn new() -> Result<Self> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "exptrack-eval-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir)
            .map_err(|e| CliError::backend(format!("creating {}: {e}", dir.display())))?;
        Ok(TempDir(dir))
    }
}

#[cfg(feature = "eval")]
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
