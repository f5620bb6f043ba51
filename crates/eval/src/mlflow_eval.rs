//! Evaluation decoupled from training, from an MLflow run (feature `mlflow`): download the model
//! the run logged, evaluate it on a test set, and log the results to the same run.
//!
//! What is logged to the run: the metrics `eval/<dataset>/...` (the trainer Evaluator's keys:
//! `accuracy`, `precision_macro`, ..., `loss`, `ece`) and, with an ensemble,
//! `ensemble/<dataset>/...`; the artifacts [`REPORT_FILE`](crate::REPORT_FILE),
//! [`CONFUSION_FILE`](crate::CONFUSION_FILE) and [`MISCLASSIFIED_FILE`](crate::MISCLASSIFIED_FILE)
//! at the run's artifact root (under `ensemble/` for the ensemble's).

use std::path::{Path, PathBuf};

use exptrack_checkpoint::{CheckpointConfig, Mode, ModelCheckpointer};
use exptrack_mlflow::{MetricPoint, MlflowClient, TAG_EXPERIMENT_ID, TAG_LOGGED_MODEL};

use crate::classifier::{QUICKSTART_MLP, class_probabilities, load_classifier};
use crate::classify::ClassificationEvaluation;
use crate::data::TestSet;
use crate::ensemble::{Ensemble, EnsembleOptions, evaluate_ensemble, mlp_member};
use crate::error::{Error, Result};
use crate::model_dir::ModelSpec;

/// Where the model of an MLflow run is.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ModelLocation {
    /// The registry source: `models:/<model_id>` (a logged model) or `runs:/<run_id>/<path>`.
    pub source: String,
    /// The artifact root to read from.
    pub artifact_uri: String,
    /// The directory under it (empty: the root).
    pub rel_dir: String,
    /// The files found there (relative to the artifact root).
    pub files: Vec<String>,
}

/// Finds the model an MLflow run logged: its logged model (tag `exptrack.logged_model_id`), else
/// the files under `runs:/<run_id>/<artifact_path>`. An error names what is missing when there
/// are no files: a version registered from it would be empty.
pub fn find_run_model(
    client: &MlflowClient,
    run_id: &str,
    artifact_path: &str,
) -> Result<ModelLocation> {
    let mlflow = |context: String| move |source| Error::Mlflow { context, source };
    let run = client
        .get_run(run_id)
        .map_err(mlflow(format!("getting run {run_id}")))?;
    let artifact_path = artifact_path.trim_matches('/').to_owned();
    let (source, artifact_uri, rel_dir) = match run.data.tag(TAG_LOGGED_MODEL) {
        Some(m) => {
            let info = client
                .get_logged_model(m)
                .map_err(mlflow(format!("reading logged model {m}")))?;
            (format!("models:/{m}"), info.artifact_uri, String::new())
        }
        None => (
            format!("runs:/{run_id}/{artifact_path}"),
            run.info.artifact_uri.clone(),
            artifact_path,
        ),
    };
    let files: Vec<String> = client
        .list_artifact_files(&artifact_uri, &rel_dir, 10_000)
        .map_err(mlflow(format!("listing {source}")))?
        .into_iter()
        .map(|f| f.path)
        .collect();
    if files.is_empty() {
        return Err(Error::Model {
            path: PathBuf::from(&source),
            message: format!(
                "it holds no model: MLflow run {run_id} logged none (log the model directory \
                 during training with tracker.log_model(dir, \"model\", step))"
            ),
        });
    }
    Ok(ModelLocation {
        source,
        artifact_uri,
        rel_dir,
        files,
    })
}

/// Settings of [`evaluate_mlflow_run`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MlflowEvalOptions {
    /// The dataset's name in the metric keys (default `test`).
    pub dataset: String,
    /// Where the run keeps its model when it has no logged model (default `model`).
    pub artifact_path: String,
    /// Where the model is downloaded and the artifacts are written before upload.
    pub work_dir: PathBuf,
    /// Also evaluate the ensemble of the best checkpoints (needs `checkpoint_dir`).
    pub ensemble: Option<EnsembleOptions>,
    /// The checkpointer's directory (`[checkpointing].dir`) for the ensemble.
    pub checkpoint_dir: Option<PathBuf>,
    /// The experiment id of the checkpoints (default: the model's spec, else the run's
    /// `exptrack.experiment_id` tag).
    pub experiment_id: Option<String>,
}

impl MlflowEvalOptions {
    /// Defaults, working in `work_dir`.
    pub fn new(work_dir: impl Into<PathBuf>) -> Self {
        MlflowEvalOptions {
            dataset: "test".into(),
            artifact_path: "model".into(),
            work_dir: work_dir.into(),
            ensemble: None,
            checkpoint_dir: None,
            experiment_id: None,
        }
    }

    /// Evaluates the ensemble of the best `k` checkpoints by `monitor` too.
    pub fn ensemble(
        mut self,
        checkpoint_dir: impl Into<PathBuf>,
        k: usize,
        monitor: &str,
        mode: Mode,
    ) -> Self {
        self.checkpoint_dir = Some(checkpoint_dir.into());
        self.ensemble = Some(EnsembleOptions::new(k, monitor, mode));
        self
    }
}

/// What [`evaluate_mlflow_run`] did.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MlflowEvaluation {
    /// The MLflow run.
    pub run_id: String,
    /// Where the model came from.
    pub model: ModelLocation,
    /// The model's description.
    pub spec: ModelSpec,
    /// The logged model's metrics.
    pub evaluation: ClassificationEvaluation,
    /// The ensemble's, when asked for.
    pub ensemble: Option<Ensemble>,
    /// Artifact paths uploaded to the run.
    pub artifacts: Vec<String>,
    /// The step the metrics were logged at (the model's step, else 0).
    pub step: u64,
}

/// Downloads the model MLflow run `run_id` logged, evaluates it (and the ensemble, when asked)
/// on `data`, and logs metrics and artifacts to the same run (see the module docs).
pub fn evaluate_mlflow_run(
    client: &MlflowClient,
    run_id: &str,
    data: &TestSet,
    options: &MlflowEvalOptions,
    device: &burn::tensor::Device,
) -> Result<MlflowEvaluation> {
    let mlflow = |context: String| move |source| Error::Mlflow { context, source };
    let model = find_run_model(client, run_id, &options.artifact_path)?;
    let model_dir = options.work_dir.join("model");
    if model_dir.exists() {
        std::fs::remove_dir_all(&model_dir).map_err(|source| Error::Io {
            op: "clear",
            path: model_dir.clone(),
            source,
        })?;
    }
    client
        .download_dir(&model.artifact_uri, &model.rel_dir, &model_dir)
        .map_err(mlflow(format!("downloading {}", model.source)))?;
    let (classifier, spec) = load_classifier(&model_dir, device)?;
    if data.input_len != spec.input_len() {
        return Err(Error::Evaluation {
            message: format!(
                "the test set has {} values per item, the model takes {} (shape {:?})",
                data.input_len,
                spec.input_len(),
                spec.input_shape
            ),
            source: None,
        });
    }
    if let Some(bad) = data.labels.iter().find(|l| **l >= spec.num_classes) {
        return Err(Error::Evaluation {
            message: format!(
                "the test set has label {bad}; the model has {} classes",
                spec.num_classes
            ),
            source: None,
        });
    }
    let probs = class_probabilities(classifier.as_ref(), &data.inputs, data.len())?;
    let evaluation = ClassificationEvaluation::from_probabilities(
        &options.dataset,
        probs,
        spec.num_classes,
        &data.labels,
    )?;

    let run = client
        .get_run(run_id)
        .map_err(mlflow(format!("getting run {run_id}")))?;
    let ensemble = match &options.ensemble {
        None => None,
        Some(opts) => {
            let dir = options
                .checkpoint_dir
                .clone()
                .ok_or_else(|| Error::Config {
                    message: "an ensemble needs the checkpoint directory".into(),
                })?;
            let experiment_id = options
                .experiment_id
                .clone()
                .or_else(|| spec.experiment_id.clone())
                .or_else(|| run.data.tag(TAG_EXPERIMENT_ID).map(str::to_owned))
                .ok_or_else(|| Error::Config {
                    message: format!(
                        "which experiment's checkpoints? the model names none and run {run_id} has no {TAG_EXPERIMENT_ID} tag"
                    ),
                })?;
            if spec.architecture != QUICKSTART_MLP {
                return Err(Error::Config {
                    message: format!(
                        "ensembles of {:?} checkpoints need your model code: use exptrack_eval::evaluate_ensemble",
                        spec.architecture
                    ),
                });
            }
            let config = CheckpointConfig {
                dir,
                ..CheckpointConfig::default()
            };
            let checkpointer =
                ModelCheckpointer::open_read_only(&experiment_id, config).map_err(|source| {
                    Error::Checkpoint {
                        experiment_id: experiment_id.clone(),
                        source,
                    }
                })?;
            Some(evaluate_ensemble(
                &checkpointer,
                opts,
                &options.dataset,
                &data.labels,
                spec.num_classes,
                mlp_member(&spec, data, device),
            )?)
        }
    };

    // Artifacts: the model's at the root, the ensemble's under ensemble/.
    let out_dir = options.work_dir.join("artifacts");
    let mut uploads = Vec::new();
    let title = format!("{} ({})", options.dataset, model.source);
    for f in evaluation.write_artifacts(&out_dir, data, &spec, &title)? {
        uploads.push((file_name(&f), f));
    }
    if let Some(e) = &ensemble {
        let title = format!(
            "{}: ensemble of steps {:?}",
            options.dataset,
            e.member_steps()
        );
        for f in e
            .evaluation
            .write_artifacts(&out_dir.join("ensemble"), data, &spec, &title)?
        {
            uploads.push((format!("ensemble/{}", file_name(&f)), f));
        }
    }
    let mut artifacts = Vec::new();
    for (rel, path) in uploads {
        client
            .upload_artifact(&run.info.artifact_uri, &rel, &path)
            .map_err(mlflow(format!("uploading {rel}")))?;
        artifacts.push(rel);
    }
    let step = spec.step.unwrap_or(0);
    let now = exptrack_core::fsutil::now_ms();
    let mut scalars = evaluation.scalars("eval");
    if let Some(e) = &ensemble {
        scalars.extend(e.scalars());
    }
    let metrics: Vec<MetricPoint> = scalars
        .into_iter()
        .map(|(key, value)| MetricPoint {
            key,
            value,
            timestamp: now,
            step: i64::try_from(step).unwrap_or(i64::MAX),
        })
        .collect();
    client
        .log_batch_chunked(run_id, &metrics, &[], &[])
        .map_err(mlflow(format!("logging metrics to run {run_id}")))?;
    Ok(MlflowEvaluation {
        run_id: run_id.to_owned(),
        model,
        spec,
        evaluation,
        ensemble,
        artifacts,
        step,
    })
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
