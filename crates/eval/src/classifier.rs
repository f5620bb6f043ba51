//! burn models as classifiers (feature `burn`): save a model directory, rebuild the model from
//! it (or from a checkpoint's record) and get class probabilities.

use std::path::Path;

use burn::module::Module;
use burn::store::ModuleRecord;
use burn::tensor::{Bytes, Device, Tensor, TensorData};
use exptrack_trainer::quickstart::Mlp;

use crate::error::{BoxError, Error, Result};
use crate::model_dir::{ModelSpec, RECORD_FILE, WEIGHTS_FILE, read_model_dir, write_description};

/// The architecture name of the quickstart's MLP ([`exptrack_trainer::quickstart::Mlp`]); its
/// [`ModelSpec::config`] is `{"inputs", "hidden", "classes"}`.
pub const QUICKSTART_MLP: &str = "exptrack_trainer::quickstart::Mlp";

/// Items per forward pass.
const BATCH: usize = 1024;

/// A model that maps inputs to class logits: what the evaluation, the MLflow evaluation and the
/// ensembles run. Implement it for your own model to evaluate it with this crate.
pub trait Classifier {
    /// Number of classes (columns of the logits).
    fn num_classes(&self) -> usize;
    /// Values per input item.
    fn input_len(&self) -> usize;
    /// Logits `[rows, num_classes]`, row-major, for `rows` items of `input_len` values.
    fn logits(&self, inputs: &[f32], rows: usize) -> std::result::Result<Vec<f32>, BoxError>;
}

/// The spec of a quickstart MLP with `hidden` units ([`QUICKSTART_MLP`]).
pub fn quickstart_spec(inputs: usize, hidden: usize, classes: usize) -> ModelSpec {
    ModelSpec::classifier(
        QUICKSTART_MLP,
        serde_json::json!({"inputs": inputs, "hidden": hidden, "classes": classes}),
        vec![inputs],
        classes,
    )
}

/// The quickstart's [`Mlp`] as a [`Classifier`] on a device.
#[derive(Debug, Clone)]
pub struct MlpClassifier {
    model: Mlp,
    device: Device,
    inputs: usize,
    classes: usize,
}

impl MlpClassifier {
    /// A fresh model of `spec` (architecture [`QUICKSTART_MLP`]) with the record `bytes` loaded.
    pub fn from_record(spec: &ModelSpec, bytes: Vec<u8>, device: &Device) -> Result<Self> {
        let dim = |key: &str| {
            spec.config
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|v| usize::try_from(v).ok())
                .filter(|v| *v > 0)
                .ok_or_else(|| Error::Evaluation {
                    message: format!("the {QUICKSTART_MLP} config has no positive {key:?}"),
                    source: None,
                })
        };
        if spec.architecture != QUICKSTART_MLP {
            return Err(Error::Evaluation {
                message: format!(
                    "architecture {:?} is not {QUICKSTART_MLP}",
                    spec.architecture
                ),
                source: None,
            });
        }
        let (inputs, hidden, classes) = (dim("inputs")?, dim("hidden")?, dim("classes")?);
        let model = load_record(Mlp::new(inputs, hidden, classes, device), bytes)?;
        Ok(MlpClassifier {
            model,
            device: device.clone(),
            inputs,
            classes,
        })
    }

    /// The model.
    pub fn model(&self) -> &Mlp {
        &self.model
    }
}

impl Classifier for MlpClassifier {
    fn num_classes(&self) -> usize {
        self.classes
    }

    fn input_len(&self) -> usize {
        self.inputs
    }

    fn logits(&self, inputs: &[f32], rows: usize) -> std::result::Result<Vec<f32>, BoxError> {
        let x = Tensor::<2>::from_data(
            TensorData::new(inputs.to_vec(), [rows, self.inputs]),
            &self.device,
        );
        let out = self
            .model
            .forward(x)
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| format!("reading logits back: {e:?}"))?;
        Ok(out)
    }
}

/// Loads a record written by [`save_model_dir`] (or a checkpoint's `model.bpk`) into
/// `template`; shapes are checked (a mismatch is an error, not a panic).
pub fn load_record<M: Module>(template: M, bytes: Vec<u8>) -> Result<M> {
    let record = ModuleRecord::from_bytes(Bytes::from_bytes_vec(bytes))
        .map_err(|e| Error::eval("reading the model record", e.to_string()))?;
    template
        .try_load_record(record)
        .map_err(|e| Error::eval("loading the model record", e.to_string()))
}

/// Writes `model` as an MLflow model directory (see [`model_dir`](crate::model_dir)):
/// `model.bpk`, `model.safetensors`, `exptrack_model.json` and `MLmodel`. Log it with
/// `tracker.log_model(dir, "model", Some(step))`; `exptrack eval` and the gate read it back.
pub fn save_model_dir<M: Module>(
    model: &M,
    spec: &ModelSpec,
    dir: &Path,
    run_id: Option<&str>,
) -> Result<()> {
    write_description(dir, spec, run_id, true)?;
    let record = model
        .clone()
        .into_record()
        .into_bytes()
        .map_err(|e| Error::eval("serializing the model record", e.to_string()))?;
    let record: Vec<u8> = record.to_vec();
    let weights = exptrack_checkpoint::burn_support::safetensors_bytes(model)
        .map_err(|e| Error::eval("writing the safetensors weights", e))?;
    for (name, bytes) in [(RECORD_FILE, record), (WEIGHTS_FILE, weights)] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| Error::Io {
            op: "write",
            path,
            source,
        })?;
    }
    Ok(())
}

/// Rebuilds the classifier of a model directory: the architectures `exptrack` knows
/// ([`QUICKSTART_MLP`]); for others, read the record with [`load_record`] into your own model and
/// implement [`Classifier`] for it.
pub fn load_classifier(dir: &Path, device: &Device) -> Result<(Box<dyn Classifier>, ModelSpec)> {
    let spec = read_model_dir(dir)?;
    let bytes = std::fs::read(dir.join(RECORD_FILE)).map_err(|source| Error::Io {
        op: "read",
        path: dir.join(RECORD_FILE),
        source,
    })?;
    match spec.architecture.as_str() {
        QUICKSTART_MLP => {
            let c = MlpClassifier::from_record(&spec, bytes, device)?;
            Ok((Box::new(c), spec))
        }
        other => Err(Error::Model {
            path: dir.to_owned(),
            message: format!(
                "architecture {other:?} is not built into exptrack (known: {QUICKSTART_MLP}); \
                 evaluate it through the library: load the record with \
                 exptrack_eval::load_record into your model and implement Classifier for it"
            ),
        }),
    }
}

/// Class probabilities `[items, classes]` (softmax of the logits, in f64) of `classifier` on
/// `inputs` (`rows` items), in batches.
pub fn class_probabilities(
    classifier: &dyn Classifier,
    inputs: &[f32],
    rows: usize,
) -> Result<Vec<f64>> {
    let (len, classes) = (classifier.input_len(), classifier.num_classes());
    if inputs.len() != rows * len {
        return Err(Error::Evaluation {
            message: format!("{} input values for {rows} items of {len}", inputs.len()),
            source: None,
        });
    }
    let mut probs = Vec::with_capacity(rows * classes);
    let mut start = 0;
    while start < rows {
        let end = (start + BATCH).min(rows);
        let logits = classifier
            .logits(&inputs[start * len..end * len], end - start)
            .map_err(|e| Error::Evaluation {
                message: "the model's forward pass failed".to_owned(),
                source: Some(e),
            })?;
        if logits.len() != (end - start) * classes {
            return Err(Error::Evaluation {
                message: format!(
                    "the model returned {} logits for {} items of {classes} classes",
                    logits.len(),
                    end - start
                ),
                source: None,
            });
        }
        for row in logits.chunks_exact(classes) {
            probs.extend(softmax(row));
        }
        start = end;
    }
    Ok(probs)
}

/// A numerically stable softmax in f64.
pub(crate) fn softmax(row: &[f32]) -> Vec<f64> {
    let max = row
        .iter()
        .map(|&v| f64::from(v))
        .fold(f64::NEG_INFINITY, f64::max);
    let exp: Vec<f64> = row.iter().map(|&v| (f64::from(v) - max).exp()).collect();
    let z: f64 = exp.iter().sum();
    exp.into_iter().map(|e| e / z).collect()
}
