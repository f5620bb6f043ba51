//! The experiment configuration file and its identity hash.
//!
//! ```toml
//! [experiment]
//! name = "transformer_classification"
//! description = "..."
//! tags = ["nlp", "transformer"]
//! # hash_exclude = ["tracking"]      # the default: switching a backend on keeps the experiment id
//!
//! [tracking]
//! use_tensorboard = true
//! tensorboard_log_dir = "runs"
//! use_mlflow = false
//! mlflow_tracking_uri = "http://127.0.0.1:5000"
//! use_wandb = false
//! wandb_project = "deep-learning-project"
//!
//! [checkpointing]   # passed through to the checkpointer
//! [training]        # passed through to the trainer
//! ```
//!
//! Sections other than these four are kept (and hashed) but not interpreted here. Unknown keys inside
//! `[experiment]` and `[tracking]` are errors naming the key, file, line and column.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::metadata::derive_experiment_id;

/// `[experiment]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentSection {
    /// Experiment name (required).
    pub name: String,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Version of the user's code or model.
    #[serde(default)]
    pub version: String,
    /// Overrides the derived experiment id.
    #[serde(default)]
    pub id: Option<String>,
    /// Dotted keys left out of the config hash (default `["tracking"]`). `experiment.hash_exclude`
    /// itself is always left out.
    #[serde(default = "default_hash_exclude")]
    pub hash_exclude: Vec<String>,
}

fn default_hash_exclude() -> Vec<String> {
    vec!["tracking".to_owned()]
}

/// `[tracking]`: which backends to open and where the local store lives. `Debug` redacts the
/// secrets of URIs ([`crate::redact_uri`]).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrackingSection {
    /// Root of the local run store (`<runs_dir>/<experiment_id>/<run_id>/`).
    pub runs_dir: PathBuf,
    /// Write TensorBoard event files.
    pub use_tensorboard: bool,
    /// Root for TensorBoard files (`<dir>/<experiment_id>/<run_id>/`); defaults to `runs_dir`.
    pub tensorboard_log_dir: Option<PathBuf>,
    /// Log to an MLflow server.
    pub use_mlflow: bool,
    /// MLflow tracking URI (`MLFLOW_TRACKING_URI` is used when absent).
    pub mlflow_tracking_uri: Option<String>,
    /// MLflow experiment name (defaults to the experiment name).
    pub mlflow_experiment_name: Option<String>,
    /// Log to Weights & Biases.
    pub use_wandb: bool,
    /// W&B project.
    pub wandb_project: Option<String>,
    /// W&B entity.
    pub wandb_entity: Option<String>,
    /// `offline`, `online` or `auto` (online when an API key is configured).
    pub wandb_mode: Option<String>,
    /// Directory for W&B offline runs (`WANDB_DIR` overrides).
    pub wandb_dir: Option<PathBuf>,
    /// Sample `system/*` metrics every this many seconds (off when absent or 0; otherwise
    /// [`SYSTEM_METRICS_INTERVAL_SECS`]).
    ///
    /// Off by default, unlike W&B's SDK: exptrack is a library that also runs inside tests,
    /// sweeps and CI jobs, where a sampler thread and `system/*` series nobody asked for are
    /// noise in every backend. Turn it on with e.g. `system_metrics_interval_secs = 15` (W&B's
    /// own interval). The samples land where each tool shows system metrics: MLflow's "System
    /// metrics" tab (`system/...` metrics), W&B's system charts (stats records, with wandb's
    /// names), TensorBoard scalars under `system/`; per-GPU values with the `nvml` feature.
    pub system_metrics_interval_secs: Option<f64>,
    /// Capacity of the caller → dispatcher queue, in messages ([`QUEUE_CAPACITY`]).
    pub queue_capacity: usize,
    /// Capacity of the caller → dispatcher queue, in bytes of event payload (images, text,
    /// histograms; [`QUEUE_BYTES`], default 256 MiB). A call that would pass it waits until the
    /// dispatcher has taken earlier events off the queue; one event larger than the bound is let
    /// through alone.
    pub queue_capacity_bytes: u64,
    /// How long `finish` waits for slow backends before leaving their events in the spool
    /// ([`FINISH_TIMEOUT_SECS`]).
    pub finish_timeout_secs: f64,
}

impl Default for TrackingSection {
    fn default() -> Self {
        TrackingSection {
            runs_dir: PathBuf::from("runs"),
            use_tensorboard: true,
            tensorboard_log_dir: None,
            use_mlflow: false,
            mlflow_tracking_uri: None,
            mlflow_experiment_name: None,
            use_wandb: false,
            wandb_project: None,
            wandb_entity: None,
            wandb_mode: None,
            wandb_dir: None,
            system_metrics_interval_secs: None,
            queue_capacity: 65_536,
            queue_capacity_bytes: 256 << 20,
            finish_timeout_secs: 30.0,
        }
    }
}

/// Allowed range of `[tracking].queue_capacity` (messages). The queue's slots are allocated up
/// front, so the upper bound keeps a typo from reserving gigabytes.
pub const QUEUE_CAPACITY: (usize, usize) = (1, 1 << 24);
/// Allowed range of `[tracking].queue_capacity_bytes`: 1 MiB to 64 GiB.
pub const QUEUE_BYTES: (u64, u64) = (1 << 20, 64 << 30);
/// Allowed range of `[tracking].finish_timeout_secs` (seconds, finite): up to one day.
pub const FINISH_TIMEOUT_SECS: (f64, f64) = (0.0, 86_400.0);
/// Allowed range of a non-zero `[tracking].system_metrics_interval_secs` (seconds, finite); 0
/// switches the sampler off.
pub const SYSTEM_METRICS_INTERVAL_SECS: (f64, f64) = (0.01, 86_400.0);

#[derive(Deserialize)]
struct KnownSections {
    experiment: ExperimentSection,
    #[serde(default)]
    tracking: TrackingSection,
}

impl std::fmt::Debug for TrackingSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let redacted = |s: &Option<String>| s.as_deref().map(crate::redact_uri);
        f.debug_struct("TrackingSection")
            .field("runs_dir", &self.runs_dir)
            .field("use_tensorboard", &self.use_tensorboard)
            .field("tensorboard_log_dir", &self.tensorboard_log_dir)
            .field("use_mlflow", &self.use_mlflow)
            .field("mlflow_tracking_uri", &redacted(&self.mlflow_tracking_uri))
            .field("mlflow_experiment_name", &self.mlflow_experiment_name)
            .field("use_wandb", &self.use_wandb)
            .field("wandb_project", &self.wandb_project)
            .field("wandb_entity", &self.wandb_entity)
            .field("wandb_mode", &self.wandb_mode)
            .field("wandb_dir", &self.wandb_dir)
            .field(
                "system_metrics_interval_secs",
                &self.system_metrics_interval_secs,
            )
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_capacity_bytes", &self.queue_capacity_bytes)
            .field("finish_timeout_secs", &self.finish_timeout_secs)
            .finish()
    }
}

/// A parsed configuration document. `Debug` redacts secrets ([`crate::redact_config`]).
#[derive(Clone, PartialEq)]
pub struct ExperimentConfig {
    /// `[experiment]`.
    pub experiment: ExperimentSection,
    /// `[tracking]`.
    pub tracking: TrackingSection,
    /// The whole document as written (every section, including `[checkpointing]`, `[training]` and
    /// any of the user's own).
    pub document: toml::Table,
    /// The file it came from, if any.
    pub source: Option<PathBuf>,
    /// Where each key was written, for errors that name a line.
    locations: Locations,
}

impl std::fmt::Debug for ExperimentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExperimentConfig")
            .field("experiment", &self.experiment)
            .field("tracking", &self.tracking)
            .field("document", &crate::redact_config(&self.document))
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// Where each key of a parsed document was written. Layout is not part of a config's identity:
/// two configs compare equal whatever their layout.
#[derive(Clone, Default)]
struct Locations {
    /// What errors call the document (its file, or the `origin` given to `parse`).
    origin: Option<PathBuf>,
    /// The text, while it still describes the document.
    text: Option<Arc<str>>,
    /// Dotted key → (byte offset of the key, byte range of its value).
    keys: BTreeMap<String, (usize, Range<usize>)>,
}

impl PartialEq for Locations {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl std::fmt::Debug for Locations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Locations")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl Locations {
    fn from_text(text: &str, origin: &Path) -> Self {
        let mut keys = BTreeMap::new();
        if let Ok(doc) = toml::de::DeTable::parse(text) {
            collect_keys(doc.get_ref(), "", &mut keys);
        }
        Locations {
            origin: Some(origin.to_path_buf()),
            text: Some(Arc::from(text)),
            keys,
        }
    }

    /// The innermost key whose value contains byte `offset`.
    fn key_at(&self, offset: usize) -> Option<&str> {
        self.keys
            .iter()
            .filter(|(_, (_, v))| v.start <= offset && offset < v.end.max(v.start + 1))
            .max_by_key(|(k, _)| k.len())
            .map(|(k, _)| k.as_str())
    }
}

fn collect_keys(
    table: &toml::de::DeTable<'_>,
    prefix: &str,
    out: &mut BTreeMap<String, (usize, Range<usize>)>,
) {
    for (k, v) in table {
        let dotted = if prefix.is_empty() {
            k.get_ref().to_string()
        } else {
            format!("{prefix}.{}", k.get_ref())
        };
        if let toml::de::DeValue::Table(t) = v.get_ref() {
            collect_keys(t, &dotted, out);
        }
        out.insert(dotted, (k.span().start, v.span()));
    }
}

impl ExperimentConfig {
    /// Reads and parses a TOML file. Errors name the file, line and column.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).ctx("reading config file", path)?;
        let mut cfg = Self::parse(&text, path)?;
        cfg.source = Some(path.to_path_buf());
        Ok(cfg)
    }

    /// Parses a TOML document; `origin` is used in error messages.
    pub fn parse(text: &str, origin: impl AsRef<Path>) -> Result<Self> {
        let origin = origin.as_ref();
        let document: toml::Table =
            toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
        let locations = Locations::from_text(text, origin);
        let known: KnownSections =
            toml::from_str(text).map_err(|e| parse_error_at(text, &locations, origin, &e))?;
        let cfg = ExperimentConfig {
            experiment: known.experiment,
            tracking: known.tracking,
            document,
            source: None,
            locations,
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// A minimal config in code: just an experiment name, defaults everywhere else.
    pub fn named(name: impl Into<String>) -> Self {
        let name = name.into();
        let mut experiment = toml::Table::new();
        experiment.insert("name".into(), toml::Value::String(name.clone()));
        let mut document = toml::Table::new();
        document.insert("experiment".into(), toml::Value::Table(experiment));
        ExperimentConfig {
            experiment: ExperimentSection {
                name,
                description: String::new(),
                tags: Vec::new(),
                version: String::new(),
                id: None,
                hash_exclude: default_hash_exclude(),
            },
            tracking: TrackingSection::default(),
            document,
            source: None,
            locations: Locations::default(),
        }
    }

    /// Sets (or replaces) a whole section of the document, e.g. `training`, so it is hashed and
    /// passed to the trackers. `experiment` and `tracking` are re-parsed and validated.
    pub fn set_section(&mut self, name: &str, table: toml::Table) -> Result<()> {
        // The text no longer describes the document: forget it and the section's locations.
        self.locations.text = None;
        let prefix = format!("{name}.");
        self.locations
            .keys
            .retain(|k, _| k != name && !k.starts_with(&prefix));
        self.document
            .insert(name.to_owned(), toml::Value::Table(table.clone()));
        match name {
            "experiment" => {
                self.experiment = toml::Value::Table(table)
                    .try_into()
                    .map_err(|e: toml::de::Error| Error::Config(e.message().to_owned()))?
            }
            "tracking" => {
                self.tracking = toml::Value::Table(table)
                    .try_into()
                    .map_err(|e: toml::de::Error| Error::Config(e.message().to_owned()))?
            }
            _ => {}
        }
        self.validate()
    }

    /// A section of the document (e.g. `training`), if present.
    pub fn section(&self, name: &str) -> Option<&toml::Table> {
        self.document.get(name).and_then(|v| v.as_table())
    }

    /// Checks every value of `[experiment]` and `[tracking]` (run again by
    /// [`ExperimentTrackerBuilder::build`](crate::ExperimentTrackerBuilder::build), so values set
    /// in code are checked too). Errors name the key, its line and the allowed range.
    pub fn validate(&self) -> Result<()> {
        if self.experiment.name.trim().is_empty() {
            return Err(self.key_error("experiment.name", "must not be empty"));
        }
        if let Some(id) = &self.experiment.id
            && !id.is_empty()
            && let Err(why) = crate::metadata::check_component(id)
        {
            return Err(self.key_error(
                "experiment.id",
                format!(
                    "= {id:?} {why}; an experiment id becomes a directory name (at most 200 bytes of \
                     A-Z, a-z, 0-9, '_', '-' and '.', not starting with '.')"
                ),
            ));
        }
        let t = &self.tracking;
        let (lo, hi) = QUEUE_CAPACITY;
        if !(lo..=hi).contains(&t.queue_capacity) {
            return Err(self.key_error(
                "tracking.queue_capacity",
                format!(
                    "= {} is out of range: allowed {lo} to {hi} (messages)",
                    t.queue_capacity
                ),
            ));
        }
        let (lo, hi) = QUEUE_BYTES;
        if !(lo..=hi).contains(&t.queue_capacity_bytes) {
            return Err(self.key_error(
                "tracking.queue_capacity_bytes",
                format!(
                    "= {} is out of range: allowed {lo} to {hi} (bytes)",
                    t.queue_capacity_bytes
                ),
            ));
        }
        let (lo, hi) = FINISH_TIMEOUT_SECS;
        check_secs(
            self,
            "tracking.finish_timeout_secs",
            t.finish_timeout_secs,
            lo,
            hi,
            false,
        )?;
        if let Some(s) = t.system_metrics_interval_secs {
            let (lo, hi) = SYSTEM_METRICS_INTERVAL_SECS;
            check_secs(
                self,
                "tracking.system_metrics_interval_secs",
                s,
                lo,
                hi,
                true,
            )?;
        }
        Ok(())
    }

    /// Line and column (1-based) where a dotted key (e.g. `training.learning_rate`) was written,
    /// when the config was parsed from text and the key is in it.
    pub fn locate(&self, dotted_key: &str) -> Option<(usize, usize)> {
        let text = self.locations.text.as_deref()?;
        let (offset, _) = self.locations.keys.get(dotted_key)?;
        Some(line_col(text, *offset))
    }

    /// An error about the value of a dotted key: `file:line:column: key message` when the key's
    /// place is known ([`Error::ConfigParse`]), else `key message` ([`Error::Config`]). Sections
    /// interpreted elsewhere (`[training]`, `[checkpointing]`) report their bad values with it.
    ///
    /// ```
    /// use exptrack_core::ExperimentConfig;
    /// let cfg = ExperimentConfig::parse("[experiment]\nname = \"x\"\n[training]\nlr = -1\n", "exp.toml")?;
    /// let err = cfg.key_error("training.lr", "= -1 is out of range: allowed > 0");
    /// assert_eq!(err.to_string(), "exp.toml:4:1: training.lr = -1 is out of range: allowed > 0");
    /// # Ok::<(), exptrack_core::Error>(())
    /// ```
    pub fn key_error(&self, dotted_key: &str, message: impl std::fmt::Display) -> Error {
        match (self.locate(dotted_key), self.locations.origin.as_ref()) {
            (Some((line, column)), Some(origin)) => Error::ConfigParse {
                path: self.source.clone().unwrap_or_else(|| origin.clone()),
                line,
                column,
                message: format!("{dotted_key} {message}"),
            },
            _ => Error::Config(format!("{dotted_key} {message}")),
        }
    }

    /// Deserializes section `name` (e.g. `training`) into `T`, `None` when absent. When the config
    /// was parsed from text, errors (unknown keys, wrong types) name the file, line, column and
    /// key, like errors in `[experiment]` and `[tracking]`.
    pub fn section_as<T: DeserializeOwned>(&self, name: &str) -> Result<Option<T>> {
        let Some(table) = self.section(name) else {
            return Ok(None);
        };
        if let Some(text) = self.locations.text.as_deref()
            && let Ok(doc) = toml::de::DeTable::parse(text)
        {
            let section = doc.get_ref().iter().find_map(|(k, v)| {
                let key: &str = k.get_ref();
                match (key == name, v.get_ref()) {
                    (true, toml::de::DeValue::Table(t)) => {
                        Some(toml::Spanned::new(v.span(), t.clone()))
                    }
                    _ => None,
                }
            });
            if let Some(section) = section {
                let origin = self
                    .source
                    .clone()
                    .or_else(|| self.locations.origin.clone());
                let origin = origin.unwrap_or_default();
                return T::deserialize(toml::de::Deserializer::from(section))
                    .map(Some)
                    .map_err(|e| parse_error_at(text, &self.locations, &origin, &e));
            }
        }
        toml::Value::Table(table.clone())
            .try_into()
            .map(Some)
            .map_err(|e: toml::de::Error| Error::Config(format!("[{name}]: {}", e.message())))
    }

    /// The config hash (see [`config_hash`]) with this document's exclusions.
    pub fn hash(&self) -> String {
        let mut exclude = self.experiment.hash_exclude.clone();
        exclude.push("experiment.hash_exclude".to_owned());
        config_hash(&self.document, &exclude)
    }

    /// The experiment id: `[experiment].id` when set, else `{name}-{first 12 hex of hash}`.
    pub fn experiment_id(&self) -> String {
        match &self.experiment.id {
            Some(id) if !id.is_empty() => crate::metadata::sanitize_component(id),
            _ => derive_experiment_id(&self.experiment.name, &self.hash()),
        }
    }

    /// The document serialized back to TOML with its secrets redacted
    /// ([`crate::redact_config`]): what is written as the run's `config.toml`.
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(&crate::redact_config(&self.document)).unwrap_or_default()
    }
}

/// Checks a number of seconds: finite and within `lo..=hi` (or 0 when `zero_is_off`).
fn check_secs(
    cfg: &ExperimentConfig,
    key: &str,
    v: f64,
    lo: f64,
    hi: f64,
    zero_is_off: bool,
) -> Result<()> {
    if v.is_finite() && ((lo..=hi).contains(&v) || (zero_is_off && v == 0.0)) {
        return Ok(());
    }
    let off = if zero_is_off { ", or 0 for off" } else { "" };
    Err(cfg.key_error(
        key,
        format!(
            "= {} is out of range: allowed {lo} to {hi} seconds{off}",
            toml_float(v)
        ),
    ))
}

/// A float as TOML writes it (`inf`, `-inf`, `nan`).
fn toml_float(v: f64) -> String {
    if v.is_nan() {
        "nan".to_owned()
    } else if v.is_infinite() {
        if v > 0.0 { "inf" } else { "-inf" }.to_owned()
    } else {
        format!("{v:?}")
    }
}

/// [`parse_error`], naming the key whose value the error is in.
fn parse_error_at(text: &str, loc: &Locations, origin: &Path, e: &toml::de::Error) -> Error {
    let mut err = parse_error(text, origin, e);
    if let (Error::ConfigParse { message, .. }, Some(span)) = (&mut err, e.span())
        && let Some(key) = loc.key_at(span.start)
        && !message.contains(key)
    {
        *message = format!("{key}: {message}");
    }
    err
}

fn parse_error(text: &str, origin: &Path, e: &toml::de::Error) -> Error {
    let (line, column) = match e.span() {
        Some(span) => line_col(text, span.start),
        None => (1, 1),
    };
    Error::ConfigParse {
        path: origin.to_path_buf(),
        line,
        column,
        message: e.message().trim().to_owned(),
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let column = before
        .get(line_start..)
        .map(|s| s.chars().count())
        .unwrap_or(0)
        + 1;
    (line, column)
}

mod hash;
#[cfg(test)]
mod tests;

pub use hash::{canonical_string, config_hash};
