//! MLflow REST entities (the subset exptrack reads and writes).

use serde::{Deserialize, Deserializer, Serialize};

/// MLflow int64 fields arrive as numbers or as strings.
fn de_i64<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum N {
        I(i64),
        S(String),
    }
    match N::deserialize(d)? {
        N::I(i) => Ok(i),
        N::S(s) => s.parse().map_err(serde::de::Error::custom),
    }
}

fn de_opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    #[derive(Deserialize)]
    struct W(#[serde(deserialize_with = "de_i64")] i64);
    Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
}

/// A key/value pair (params and tags).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    /// Key.
    pub key: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

impl KeyValue {
    /// A pair.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        KeyValue {
            key: key.into(),
            value: value.into(),
        }
    }
}

/// One metric point. Non-finite values travel as `"NaN"`, `"Infinity"`, `"-Infinity"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricPoint {
    /// Key.
    pub key: String,
    /// Value (note: the server stores ±infinity as ±1.7976931348623157e308).
    #[serde(with = "exptrack_core::event::finite_or_string")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[serde(deserialize_with = "de_i64", default)]
    pub timestamp: i64,
    /// Step.
    #[serde(deserialize_with = "de_i64", default)]
    pub step: i64,
}

/// An experiment.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Experiment {
    /// Id.
    pub experiment_id: String,
    /// Name.
    pub name: String,
    /// Where its runs' artifacts go, e.g. `mlflow-artifacts:/1`.
    #[serde(default)]
    pub artifact_location: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// Run status as MLflow names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MlflowRunStatus {
    /// Running.
    Running,
    /// Scheduled.
    Scheduled,
    /// Finished successfully.
    Finished,
    /// Failed.
    Failed,
    /// Killed.
    Killed,
}

impl MlflowRunStatus {
    /// The MLflow status for an exptrack status.
    pub fn from_core(s: exptrack_core::RunStatus) -> Self {
        match s {
            exptrack_core::RunStatus::Running => MlflowRunStatus::Running,
            exptrack_core::RunStatus::Completed => MlflowRunStatus::Finished,
            exptrack_core::RunStatus::Failed => MlflowRunStatus::Failed,
            exptrack_core::RunStatus::Killed => MlflowRunStatus::Killed,
        }
    }

    /// The exptrack status (`FINISHED` is reported as completed, `SCHEDULED` as running).
    pub fn to_core(self) -> exptrack_core::RunStatus {
        match self {
            MlflowRunStatus::Running | MlflowRunStatus::Scheduled => {
                exptrack_core::RunStatus::Running
            }
            MlflowRunStatus::Finished => exptrack_core::RunStatus::Completed,
            MlflowRunStatus::Failed => exptrack_core::RunStatus::Failed,
            MlflowRunStatus::Killed => exptrack_core::RunStatus::Killed,
        }
    }
}

/// A run's identity and state.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RunInfo {
    /// Run id.
    pub run_id: String,
    /// Experiment id.
    pub experiment_id: String,
    /// Display name.
    #[serde(default)]
    pub run_name: String,
    /// Status.
    pub status: MlflowRunStatus,
    /// Start (ms since the epoch).
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub start_time: Option<i64>,
    /// End (ms since the epoch).
    #[serde(default, deserialize_with = "de_opt_i64")]
    pub end_time: Option<i64>,
    /// Root of the run's artifacts, e.g. `mlflow-artifacts:/1/<run>/artifacts`.
    #[serde(default)]
    pub artifact_uri: String,
    /// `active` or `deleted`.
    #[serde(default)]
    pub lifecycle_stage: String,
}

/// A run's data (latest metric values, params, tags).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RunData {
    /// Latest value of each metric.
    #[serde(default)]
    pub metrics: Vec<MetricPoint>,
    /// Params.
    #[serde(default)]
    pub params: Vec<KeyValue>,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

impl RunData {
    /// The value of tag `key`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }

    /// The value of param `key`.
    pub fn param(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|t| t.key == key)
            .map(|t| t.value.as_str())
    }
}

/// A run.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Run {
    /// Identity and state.
    pub info: RunInfo,
    /// Data.
    #[serde(default)]
    pub data: RunData,
}

/// Status of an MLflow 3 logged model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LoggedModelStatus {
    /// Unknown.
    LoggedModelStatusUnspecified,
    /// Being uploaded.
    LoggedModelPending,
    /// Ready to use.
    LoggedModelReady,
    /// Upload failed.
    LoggedModelUploadFailed,
}

/// An MLflow 3 logged model (`/api/2.0/mlflow/logged-models`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LoggedModelInfo {
    /// Id, e.g. `m-…`.
    pub model_id: String,
    /// Experiment.
    pub experiment_id: String,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Root of its artifacts.
    #[serde(default)]
    pub artifact_uri: String,
    /// Status.
    pub status: LoggedModelStatus,
    /// The run that produced it.
    #[serde(default)]
    pub source_run_id: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<KeyValue>,
}

/// A registered model.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct RegisteredModel {
    /// Name.
    pub name: String,
    /// Description.
    #[serde(default)]
    pub description: String,
    /// Aliases and the versions they point to.
    #[serde(default)]
    pub aliases: Vec<ModelAlias>,
    /// Latest version per stage.
    #[serde(default)]
    pub latest_versions: Vec<ModelVersion>,
}

/// An alias of a registered model.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct ModelAlias {
    /// Alias, e.g. `champion`.
    pub alias: String,
    /// Version it points to.
    pub version: String,
}

/// A model version.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelVersion {
    /// Registered model name.
    pub name: String,
    /// Version number (as MLflow returns it, a string).
    pub version: String,
    /// Source URI (`runs:/…`, `models:/m-…`, `mlflow-artifacts:/…`).
    #[serde(default)]
    pub source: String,
    /// Run that produced it.
    #[serde(default)]
    pub run_id: String,
    /// `READY`, `PENDING_REGISTRATION`, `FAILED_REGISTRATION`.
    #[serde(default)]
    pub status: String,
    /// Stage (`None`, `Staging`, `Production`, `Archived`; deprecated in MLflow ≥ 2.9).
    #[serde(default)]
    pub current_stage: String,
    /// Aliases pointing here.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Logged model id (MLflow 3).
    #[serde(default)]
    pub model_id: Option<String>,
}

/// Registry stage for [`MlflowClient::transition_stage`](crate::MlflowClient::transition_stage).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `None`.
    None,
    /// `Staging`.
    Staging,
    /// `Production`.
    Production,
    /// `Archived`.
    Archived,
}

impl Stage {
    /// The name MLflow uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::None => "None",
            Stage::Staging => "Staging",
            Stage::Production => "Production",
            Stage::Archived => "Archived",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_run_with_string_ints() {
        let r: Run = serde_json::from_value(serde_json::json!({
            "info": {"run_id": "r", "experiment_id": "1", "status": "FINISHED",
                     "start_time": "17", "end_time": 20, "artifact_uri": "mlflow-artifacts:/1/r/artifacts"},
            "data": {"metrics": [{"key": "m", "value": "NaN", "timestamp": "5", "step": 3}],
                     "tags": [{"key": "t", "value": "v"}]}
        }))
        .unwrap();
        assert_eq!(r.info.start_time, Some(17));
        assert_eq!(r.info.end_time, Some(20));
        assert_eq!(r.info.status.to_core(), exptrack_core::RunStatus::Completed);
        assert!(r.data.metrics[0].value.is_nan());
        assert_eq!(r.data.metrics[0].timestamp, 5);
        assert_eq!(r.data.tag("t"), Some("v"));
    }

    #[test]
    fn metric_points_encode_non_finite_as_strings() {
        let m = |v| MetricPoint {
            key: "k".into(),
            value: v,
            timestamp: 1,
            step: 2,
        };
        assert_eq!(
            serde_json::to_value(m(f64::NAN)).unwrap()["value"],
            serde_json::json!("NaN")
        );
        assert_eq!(
            serde_json::to_value(m(f64::INFINITY)).unwrap()["value"],
            serde_json::json!("Infinity")
        );
        assert_eq!(
            serde_json::to_value(m(f64::NEG_INFINITY)).unwrap()["value"],
            serde_json::json!("-Infinity")
        );
        assert_eq!(
            serde_json::to_value(m(0.25)).unwrap()["value"],
            serde_json::json!(0.25)
        );
    }
}
