//! The model directory exptrack logs to MLflow: an MLflow model (an `MLmodel` file naming the
//! `exptrack_burn` flavour, with the input/output signature) holding the burn record
//! (`model.bpk`), the weights as safetensors (`model.safetensors`, PyTorch layout) and
//! `exptrack_model.json`, which says how to rebuild the model ([`ModelSpec`]).
//!
//! ```text
//! model/
//!   MLmodel                 flavors.exptrack_burn {architecture, record, weights, ...}, signature
//!   exptrack_model.json     ModelSpec: architecture, its config, input shape, classes
//!   model.bpk               the burn record (burnpack)
//!   model.safetensors       the weights in PyTorch's conventions
//! ```
//!
//! Writing the weights needs burn (feature `burn`: `save_model_dir`); this module writes and
//! reads the description, so the layout is checked without burn.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The MLflow flavour name in `MLmodel`.
pub const FLAVOR: &str = "exptrack_burn";
/// MLflow's model description file.
pub const MLMODEL_FILE: &str = "MLmodel";
/// The flavour's own description of the model.
pub const SPEC_FILE: &str = "exptrack_model.json";
/// The burn record (burnpack bytes of `model.into_record()`).
pub const RECORD_FILE: &str = "model.bpk";
/// The weights as safetensors (PyTorch layout).
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// Layout version of [`SPEC_FILE`].
pub const SPEC_FORMAT_VERSION: u32 = 1;
/// The burn version the records are written with.
pub const BURN_VERSION: &str = "0.22.1";

/// How to rebuild and feed a logged model: stored as [`SPEC_FILE`] in the model directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ModelSpec {
    /// Layout version ([`SPEC_FORMAT_VERSION`]).
    pub format_version: u32,
    /// The model type, e.g. `exptrack_trainer::quickstart::Mlp` (what `exptrack eval` can
    /// rebuild; other types are evaluated through the library with your own model code).
    pub architecture: String,
    /// The architecture's constructor arguments (e.g. `{"inputs": 16, "hidden": 128,
    /// "classes": 10}`).
    pub config: serde_json::Value,
    /// Shape of one input item (without the batch dimension), float32.
    pub input_shape: Vec<usize>,
    /// Number of classes (the output is `[batch, num_classes]` logits).
    pub num_classes: usize,
    /// Class names, by index (empty: the indices).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub class_names: Vec<String>,
    /// The experiment whose checkpoints the model came from (for ensembles of its checkpoints).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experiment_id: Option<String>,
    /// The training step of the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u64>,
}

impl ModelSpec {
    /// A classifier spec: `architecture` with its `config`, inputs of `input_shape`,
    /// `num_classes` outputs.
    pub fn classifier(
        architecture: impl Into<String>,
        config: serde_json::Value,
        input_shape: Vec<usize>,
        num_classes: usize,
    ) -> Self {
        ModelSpec {
            format_version: SPEC_FORMAT_VERSION,
            architecture: architecture.into(),
            config,
            input_shape,
            num_classes,
            class_names: Vec::new(),
            experiment_id: None,
            step: None,
        }
    }

    /// Sets the experiment id.
    pub fn experiment_id(mut self, id: impl Into<String>) -> Self {
        self.experiment_id = Some(id.into());
        self
    }

    /// Sets the step.
    pub fn step(mut self, step: u64) -> Self {
        self.step = Some(step);
        self
    }

    /// Sets the class names.
    pub fn class_names(mut self, names: Vec<String>) -> Self {
        self.class_names = names;
        self
    }

    /// The name of class `i` (its index when no names were given).
    pub fn class_name(&self, i: usize) -> String {
        self.class_names
            .get(i)
            .cloned()
            .unwrap_or_else(|| i.to_string())
    }

    /// Values per input item.
    pub fn input_len(&self) -> usize {
        self.input_shape.iter().product()
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |message: String| {
            Err(Error::Model {
                path: path.to_owned(),
                message,
            })
        };
        if self.format_version > SPEC_FORMAT_VERSION {
            return bad(format!(
                "format version {} is newer than this exptrack ({SPEC_FORMAT_VERSION})",
                self.format_version
            ));
        }
        if self.input_shape.is_empty() || self.input_len() == 0 {
            return bad(format!("input shape {:?} is empty", self.input_shape));
        }
        if self.num_classes < 2 {
            return bad(format!(
                "{} classes: a classifier needs 2 or more",
                self.num_classes
            ));
        }
        if !self.class_names.is_empty() && self.class_names.len() != self.num_classes {
            return bad(format!(
                "{} class names for {} classes",
                self.class_names.len(),
                self.num_classes
            ));
        }
        Ok(())
    }
}

/// A YAML single-quoted scalar.
fn q(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The text of the `MLmodel` file for `spec`: MLflow's model format (flavour, signature, creation
/// time, uuid) with [`FLAVOR`] naming the files. `weights` says whether [`WEIGHTS_FILE`] is
/// present.
pub fn mlmodel_text(spec: &ModelSpec, run_id: Option<&str>, weights: bool) -> String {
    let shape = |dims: &[usize]| {
        let mut s = String::from("[-1");
        for d in dims {
            s.push_str(&format!(", {d}"));
        }
        s.push(']');
        s
    };
    let tensor = |dims: &[usize]| {
        format!(
            r#"[{{"type": "tensor", "tensor-spec": {{"dtype": "float32", "shape": {}}}}}]"#,
            shape(dims)
        )
    };
    let now = chrono_like_utc_now();
    let mut out = String::new();
    out.push_str("artifact_path: model\n");
    out.push_str("flavors:\n");
    out.push_str(&format!("  {FLAVOR}:\n"));
    out.push_str(&format!("    architecture: {}\n", q(&spec.architecture)));
    out.push_str(&format!("    burn_version: {}\n", q(BURN_VERSION)));
    out.push_str(&format!(
        "    exptrack_version: {}\n",
        q(env!("CARGO_PKG_VERSION"))
    ));
    out.push_str(&format!("    record: {}\n", q(RECORD_FILE)));
    if weights {
        out.push_str(&format!("    weights: {}\n", q(WEIGHTS_FILE)));
    }
    out.push_str(&format!("    spec: {}\n", q(SPEC_FILE)));
    out.push_str(&format!("    output: {}\n", q("logits")));
    out.push_str(&format!(
        "model_uuid: {}\n",
        q(&exptrack_core::metadata::new_hex_id())
    ));
    if let Some(r) = run_id {
        out.push_str(&format!("run_id: {}\n", q(r)));
    }
    out.push_str("signature:\n");
    out.push_str(&format!("  inputs: {}\n", q(&tensor(&spec.input_shape))));
    out.push_str(&format!("  outputs: {}\n", q(&tensor(&[spec.num_classes]))));
    out.push_str("  params: null\n");
    out.push_str(&format!("utc_time_created: {}\n", q(&now)));
    out
}

/// Writes [`SPEC_FILE`] and [`MLMODEL_FILE`] into `dir` (created); the weight files are written
/// by the caller (`save_model_dir` with the `burn` feature).
pub fn write_description(
    dir: &Path,
    spec: &ModelSpec,
    run_id: Option<&str>,
    weights: bool,
) -> Result<()> {
    spec.check(&dir.join(SPEC_FILE))?;
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        op: "create model directory",
        path: dir.to_owned(),
        source,
    })?;
    let json = serde_json::to_vec_pretty(spec).map_err(|e| Error::Model {
        path: dir.join(SPEC_FILE),
        message: e.to_string(),
    })?;
    for (name, bytes) in [
        (SPEC_FILE, json),
        (
            MLMODEL_FILE,
            mlmodel_text(spec, run_id, weights).into_bytes(),
        ),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|source| Error::Io {
            op: "write",
            path,
            source,
        })?;
    }
    Ok(())
}

/// Reads a model directory's [`ModelSpec`], checking that it is an MLflow model of the
/// [`FLAVOR`] flavour with its record; errors name what is missing.
pub fn read_model_dir(dir: &Path) -> Result<ModelSpec> {
    let missing = |what: &str| Error::Model {
        path: dir.to_owned(),
        message: format!("{what} is missing: not a model directory written by exptrack"),
    };
    let mlmodel = std::fs::read_to_string(dir.join(MLMODEL_FILE))
        .map_err(|_| missing(&format!("the {MLMODEL_FILE} file")))?;
    if !mlmodel
        .lines()
        .any(|l| l.trim_end() == format!("  {FLAVOR}:"))
    {
        return Err(Error::Model {
            path: dir.join(MLMODEL_FILE),
            message: format!("it does not name the {FLAVOR} flavour"),
        });
    }
    let path = dir.join(SPEC_FILE);
    let bytes = std::fs::read(&path).map_err(|_| missing(SPEC_FILE))?;
    let spec: ModelSpec = serde_json::from_slice(&bytes).map_err(|e| Error::Model {
        path: path.clone(),
        message: e.to_string(),
    })?;
    spec.check(&path)?;
    if !dir.join(RECORD_FILE).is_file() {
        return Err(missing(RECORD_FILE));
    }
    Ok(spec)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff` in UTC (MLflow's `utc_time_created` format), without a date
/// library: days from the Unix epoch by the civil-from-days algorithm.
fn chrono_like_utc_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = d.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:06}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_round_trips_and_names_what_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        let spec = ModelSpec::classifier(
            "exptrack_trainer::quickstart::Mlp",
            serde_json::json!({"inputs": 16, "hidden": 8, "classes": 3}),
            vec![16],
            3,
        )
        .step(40);
        write_description(&dir, &spec, Some("abc"), true).unwrap();
        let text = std::fs::read_to_string(dir.join(MLMODEL_FILE)).unwrap();
        assert!(text.contains("  exptrack_burn:\n"), "{text}");
        assert!(text.contains(r#""shape": [-1, 16]"#), "{text}");
        assert!(text.contains(r#""shape": [-1, 3]"#), "{text}");
        assert!(text.contains("run_id: 'abc'"), "{text}");
        // No record yet: named.
        let e = read_model_dir(&dir).unwrap_err().to_string();
        assert!(e.contains(RECORD_FILE), "{e}");
        std::fs::write(dir.join(RECORD_FILE), b"x").unwrap();
        assert_eq!(read_model_dir(&dir).unwrap(), spec);
        std::fs::remove_file(dir.join(MLMODEL_FILE)).unwrap();
        let e = read_model_dir(&dir).unwrap_err().to_string();
        assert!(e.contains("MLmodel"), "{e}");
    }

    #[test]
    fn utc_time_has_mlflow_shape() {
        let t = chrono_like_utc_now();
        assert_eq!(t.len(), "2026-12-02 02:40:00.000000".len(), "{t}");
        assert!(t.starts_with("20"), "{t}");
    }
}
