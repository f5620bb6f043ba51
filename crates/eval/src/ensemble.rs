//! Ensembles of an experiment's best checkpoints (feature `burn`): the mean of the members'
//! softmax probabilities, scored with the same metrics as one model, logged under
//! `ensemble/<dataset>/...`.
//!
//! ```no_run
//! use exptrack_checkpoint::{CheckpointConfig, Mode, ModelCheckpointer};
//! use exptrack_eval::{EnsembleOptions, TestSet, evaluate_ensemble, mlp_member, quickstart_spec};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = CheckpointConfig { dir: "runs/checkpoints".into(), ..CheckpointConfig::default() };
//! let checkpoints = ModelCheckpointer::open_read_only("quickstart-0123456789ab", config)?;
//! let data = TestSet::from_csv("test.csv".as_ref(), 16)?;
//! let spec = quickstart_spec(16, 128, 10);
//! let device = exptrack_trainer::device::parse_device("cpu")?;
//! let options = EnsembleOptions::new(3, "valid/accuracy", Mode::Max);
//! let ensemble = evaluate_ensemble(&checkpoints, &options, "test", &data.labels, 10,
//!     mlp_member(&spec, &data, &device))?;
//! println!("{} members: accuracy {:.4}, ECE {:.4}", ensemble.members.len(),
//!     ensemble.evaluation.accuracy(), ensemble.evaluation.ece());
//! # Ok(()) }
//! ```

use exptrack_checkpoint::{CheckpointInfo, LoadedCheckpoint, Mode, ModelCheckpointer};
use exptrack_core::ExperimentTracker;

use crate::classifier::{MlpClassifier, class_probabilities};
use crate::classify::ClassificationEvaluation;
use crate::data::TestSet;
use crate::error::{BoxError, Error, Result};
use crate::model_dir::{ModelSpec, RECORD_FILE};

/// Which checkpoints form the ensemble.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnsembleOptions {
    /// How many (the best `k`; fewer when fewer checkpoints have the metric).
    pub k: usize,
    /// The metric stored with each checkpoint (`checkpoint.json` `metrics`) that ranks them.
    pub monitor: String,
    /// Whether smaller or larger is better.
    pub mode: Mode,
}

impl EnsembleOptions {
    /// The best `k` by `monitor` in `mode`.
    pub fn new(k: usize, monitor: impl Into<String>, mode: Mode) -> Self {
        EnsembleOptions {
            k,
            monitor: monitor.into(),
            mode,
        }
    }
}

/// An evaluated ensemble.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Ensemble {
    /// The members, best first.
    pub members: Vec<CheckpointInfo>,
    /// The metrics of the mean probabilities.
    pub evaluation: ClassificationEvaluation,
}

impl Ensemble {
    /// The member steps, best first.
    pub fn member_steps(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.step).collect()
    }

    /// `ensemble/<dataset>/<metric>` scalars plus `ensemble/<dataset>/members`.
    pub fn scalars(&self) -> Vec<(String, f64)> {
        let mut s = self.evaluation.scalars("ensemble");
        s.push((
            format!("ensemble/{}/members", self.evaluation.report.name),
            self.members.len() as f64,
        ));
        s
    }

    /// Logs [`scalars`](Self::scalars) at `step` (usually the newest member's) and the member
    /// steps as the result `ensemble/<dataset>/member_steps`.
    pub fn log(&self, tracker: &ExperimentTracker, step: u64) -> Result<()> {
        let err = |source| Error::Tracking {
            run_id: tracker.metadata().run_id.clone(),
            source,
        };
        let scalars = self.scalars();
        let pairs: Vec<(&str, f64)> = scalars.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        tracker.log_metrics(step, &pairs).map_err(err)?;
        tracker
            .set_result(
                &format!("ensemble/{}/member_steps", self.evaluation.report.name),
                serde_json::json!(self.member_steps()),
            )
            .map_err(err)
    }
}

/// The best `k` committed checkpoints by a metric stored with them, best first (ties: the later
/// step first). Checkpoints without the metric, or with a non-finite value, are not candidates.
pub fn best_checkpoints(
    checkpointer: &ModelCheckpointer,
    options: &EnsembleOptions,
) -> Result<Vec<CheckpointInfo>> {
    if options.k == 0 {
        return Err(Error::Config {
            message: "an ensemble needs k >= 1 members".into(),
        });
    }
    checkpointer.refresh().map_err(|source| Error::Checkpoint {
        experiment_id: checkpointer.experiment_id().to_owned(),
        source,
    })?;
    let mut ranked: Vec<(f64, CheckpointInfo)> = checkpointer
        .list()
        .into_iter()
        .filter_map(|c| {
            let v = c.metrics.get(&options.monitor).copied()?;
            v.is_finite().then_some((v, c))
        })
        .collect();
    if ranked.is_empty() {
        let known: Vec<String> = checkpointer
            .list()
            .iter()
            .flat_map(|c| c.metrics.keys().cloned())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        return Err(Error::Config {
            message: format!(
                "no committed checkpoint of {} has the metric {:?} (metrics stored with them: {})",
                checkpointer.experiment_id(),
                options.monitor,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        });
    }
    ranked.sort_by(|(a, ca), (b, cb)| {
        let by_value = match options.mode {
            Mode::Max => b.total_cmp(a),
            Mode::Min => a.total_cmp(b),
        };
        by_value.then(cb.step.cmp(&ca.step))
    });
    ranked.truncate(options.k);
    Ok(ranked.into_iter().map(|(_, c)| c).collect())
}

/// Evaluates the ensemble of the best checkpoints ([`best_checkpoints`]): each member is leased
/// (retention cannot delete it meanwhile), loaded and verified, and `member` turns it into class
/// probabilities `[labels.len(), num_classes]`; the ensemble's probabilities are their mean.
pub fn evaluate_ensemble<F>(
    checkpointer: &ModelCheckpointer,
    options: &EnsembleOptions,
    dataset: &str,
    labels: &[usize],
    num_classes: usize,
    mut member: F,
) -> Result<Ensemble>
where
    F: FnMut(&LoadedCheckpoint) -> std::result::Result<Vec<f64>, BoxError>,
{
    let members = best_checkpoints(checkpointer, options)?;
    if members.len() < options.k {
        tracing::warn!(
            asked = options.k,
            found = members.len(),
            monitor = %options.monitor,
            "fewer committed checkpoints with the metric than ensemble members asked for"
        );
    }
    let ckpt_err = |source| Error::Checkpoint {
        experiment_id: checkpointer.experiment_id().to_owned(),
        source,
    };
    let mut sum = vec![0.0f64; labels.len() * num_classes];
    for m in &members {
        let _lease = checkpointer.lease(m.step).map_err(ckpt_err)?;
        let loaded = checkpointer.load(m.step).map_err(ckpt_err)?;
        let probs = member(&loaded).map_err(|e| Error::Evaluation {
            message: format!("ensemble member step {}", m.step),
            source: Some(e),
        })?;
        if probs.len() != sum.len() {
            return Err(Error::Evaluation {
                message: format!(
                    "member step {} gave {} probabilities, expected {}",
                    m.step,
                    probs.len(),
                    sum.len()
                ),
                source: None,
            });
        }
        for (s, p) in sum.iter_mut().zip(probs) {
            *s += p;
        }
    }
    let n = members.len() as f64;
    let mean: Vec<f64> = sum.into_iter().map(|s| s / n).collect();
    let evaluation =
        ClassificationEvaluation::from_probabilities(dataset, mean, num_classes, labels)?;
    Ok(Ensemble {
        members,
        evaluation,
    })
}

/// A member function for [`evaluate_ensemble`] for checkpoints of the quickstart's MLP (their
/// `model.bpk` loaded into a model of `spec`), evaluated on `data`.
pub fn mlp_member<'a>(
    spec: &'a ModelSpec,
    data: &'a TestSet,
    device: &'a burn::tensor::Device,
) -> impl FnMut(&LoadedCheckpoint) -> std::result::Result<Vec<f64>, BoxError> + 'a {
    move |c: &LoadedCheckpoint| {
        let bytes = c
            .file(RECORD_FILE)
            .ok_or_else(|| format!("checkpoint step {} has no {RECORD_FILE}", c.step()))?;
        let model = MlpClassifier::from_record(spec, bytes.to_vec(), device)?;
        Ok(class_probabilities(&model, &data.inputs, data.len())?)
    }
}
