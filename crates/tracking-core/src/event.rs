//! The event model: everything a run records flows through [`Event`].

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::metadata::RunStatus;

/// Milliseconds since the Unix epoch, UTC.
pub type TimestampMs = i64;

/// The current wall-clock time in milliseconds since the Unix epoch.
/// ([`crate::fsutil::now_ms`]; never panics).
pub fn now_ms() -> TimestampMs {
    crate::fsutil::now_ms()
}

/// One scalar metric value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metric {
    /// Metric name, e.g. `train/loss`.
    pub key: String,
    /// The value; NaN and ±infinity are kept (serialized as `"NaN"`, `"Infinity"`, `"-Infinity"`).
    #[serde(with = "finite_or_string")]
    pub value: f64,
}

impl Metric {
    /// A metric from a key and a value.
    pub fn new(key: impl Into<String>, value: f64) -> Self {
        Self {
            key: key.into(),
            value,
        }
    }
}

/// A typed hyperparameter value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamValue {
    /// A string.
    Str(String),
    /// A signed integer.
    Int(i64),
    /// A float (NaN and ±infinity allowed).
    Float(#[serde(with = "finite_or_string")] f64),
    /// A boolean.
    Bool(bool),
}

impl ParamValue {
    /// The value as a plain JSON value (non-finite floats become strings).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Str(s) => serde_json::Value::String(s.clone()),
            ParamValue::Int(i) => serde_json::Value::from(*i),
            ParamValue::Float(f) => serde_json::Number::from_f64(*f)
                .map(serde_json::Value::Number)
                .unwrap_or_else(|| serde_json::Value::String(float_to_string(*f))),
            ParamValue::Bool(b) => serde_json::Value::Bool(*b),
        }
    }
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Str(s) => f.write_str(s),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Float(x) => f.write_str(&float_to_string(*x)),
            ParamValue::Bool(b) => write!(f, "{b}"),
        }
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_owned())
    }
}
impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}
impl From<i64> for ParamValue {
    fn from(v: i64) -> Self {
        ParamValue::Int(v)
    }
}
impl From<i32> for ParamValue {
    fn from(v: i32) -> Self {
        ParamValue::Int(i64::from(v))
    }
}
impl From<u32> for ParamValue {
    fn from(v: u32) -> Self {
        ParamValue::Int(i64::from(v))
    }
}
impl From<usize> for ParamValue {
    fn from(v: usize) -> Self {
        ParamValue::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}
impl From<f32> for ParamValue {
    fn from(v: f32) -> Self {
        ParamValue::Float(f64::from(v))
    }
}
impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Bool(v)
    }
}

/// What kind of file an [`Event::Artifact`] refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    /// Any file (plots, reports, data).
    File,
    /// A model file (e.g. a checkpoint's weights); registries may register it.
    Model,
}

mod checkpoint;

pub use checkpoint::{CheckpointFile, CheckpointReport, CheckpointSet, checkpoint_name};

/// Everything a run records. Stored one per line in the local store's `events.jsonl` and delivered in
/// batches to every [`Tracker`](crate::Tracker).
///
/// The enum is `#[non_exhaustive]`: backends must ignore kinds they do not know.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// Scalar metrics recorded at one step.
    Metrics {
        /// The training step (global, monotonically increasing by convention).
        step: u64,
        /// Wall-clock time.
        timestamp_ms: TimestampMs,
        /// The values.
        values: Vec<Metric>,
    },
    /// Hyperparameters (logged once per key; re-logging a key with another value is an error for
    /// backends that forbid it, such as MLflow).
    Params {
        /// Name/value pairs, in the order given.
        params: Vec<(String, ParamValue)>,
    },
    /// Run tags.
    Tags {
        /// Name/value pairs.
        tags: Vec<(String, String)>,
    },
    /// Free text (markdown) at a step.
    Text {
        /// Step.
        step: u64,
        /// Wall-clock time.
        timestamp_ms: TimestampMs,
        /// Tag / name.
        tag: String,
        /// The text.
        text: String,
    },
    /// A PNG image at a step.
    Image {
        /// Step.
        step: u64,
        /// Wall-clock time.
        timestamp_ms: TimestampMs,
        /// Tag / name.
        tag: String,
        /// Width in pixels.
        width: u32,
        /// Height in pixels.
        height: u32,
        /// Channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
        channels: u8,
        /// The encoded PNG file.
        #[serde(with = "base64_bytes")]
        png: Vec<u8>,
    },
    /// A histogram of raw values at a step (backends bucket it themselves).
    Histogram {
        /// Step.
        step: u64,
        /// Wall-clock time.
        timestamp_ms: TimestampMs,
        /// Tag / name.
        tag: String,
        /// The raw values.
        #[serde(with = "vec_finite_or_string")]
        values: Vec<f64>,
    },
    /// A file to upload/keep with the run. The file is referenced, not copied: it must still exist
    /// when a backend delivers (or later replays) the event.
    Artifact {
        /// Local path of the file.
        path: PathBuf,
        /// Destination path inside the run's artifact store, e.g. `checkpoints/model.bpk`.
        name: String,
        /// File or model.
        artifact_kind: ArtifactKind,
        /// Step at which it was produced, if any.
        step: Option<u64>,
    },
    /// A committed checkpoint, by reference (never its weights): see [`CheckpointReport`] for
    /// why it is a kind of its own and what it says about checkpoints retention deleted.
    Checkpoint(CheckpointReport),
    /// A change of run status (the final one is sent by `finish`).
    Status {
        /// The new status.
        status: RunStatus,
        /// Wall-clock time.
        timestamp_ms: TimestampMs,
    },
    /// A result of the run (`ExperimentTracker::set_result`), e.g. the best epoch or the test
    /// accuracy: kept in `results.json` and shown in each backend's run summary. A later result
    /// with the same key replaces the earlier one.
    Result {
        /// Name.
        key: String,
        /// Any JSON value.
        value: serde_json::Value,
        /// Wall-clock time.
        timestamp_ms: TimestampMs,
    },
}

/// The kind of an [`Event`], used by trackers to declare what they support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EventKind {
    /// [`Event::Metrics`]
    Metrics,
    /// [`Event::Params`]
    Params,
    /// [`Event::Tags`]
    Tags,
    /// [`Event::Text`]
    Text,
    /// [`Event::Image`]
    Image,
    /// [`Event::Histogram`]
    Histogram,
    /// [`Event::Artifact`]
    Artifact,
    /// [`Event::Status`]
    Status,
    /// [`Event::Result`]
    Result,
    /// [`Event::Checkpoint`]
    Checkpoint,
}

impl EventKind {
    /// How many kinds there are (the size of per-kind tables).
    pub const COUNT: usize = 10;

    /// Every kind, in declaration order.
    pub const ALL: [EventKind; EventKind::COUNT] = [
        EventKind::Metrics,
        EventKind::Params,
        EventKind::Tags,
        EventKind::Text,
        EventKind::Image,
        EventKind::Histogram,
        EventKind::Artifact,
        EventKind::Status,
        EventKind::Result,
        EventKind::Checkpoint,
    ];

    /// A small dense index (`0..COUNT`) for per-kind tables.
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            EventKind::Metrics => "metrics",
            EventKind::Params => "params",
            EventKind::Tags => "tags",
            EventKind::Text => "text",
            EventKind::Image => "image",
            EventKind::Histogram => "histogram",
            EventKind::Artifact => "artifact",
            EventKind::Status => "status",
            EventKind::Result => "result",
            EventKind::Checkpoint => "checkpoint",
        };
        f.write_str(s)
    }
}

impl Event {
    /// Approximate bytes this event holds in memory (payloads, strings and a fixed overhead): what
    /// the caller → dispatcher queue's byte bound counts.
    pub fn approx_bytes(&self) -> usize {
        const BASE: usize = 64;
        BASE + match self {
            Event::Metrics { values, .. } => values.iter().map(|m| m.key.len() + 32).sum(),
            Event::Params { params } => params.iter().map(|(k, _)| k.len() + 48).sum(),
            Event::Tags { tags } => tags.iter().map(|(k, v)| k.len() + v.len() + 48).sum(),
            Event::Text { tag, text, .. } => tag.len() + text.len(),
            Event::Image { tag, png, .. } => tag.len() + png.len(),
            Event::Histogram { tag, values, .. } => tag.len() + values.len() * 8,
            Event::Artifact { path, name, .. } => path.as_os_str().len() + name.len(),
            Event::Status { .. } => 0,
            // The JSON text's length, a fair measure of what the value holds.
            Event::Result { key, value, .. } => key.len() + value.to_string().len(),
            Event::Checkpoint(c) => {
                c.location.len()
                    + c.files
                        .iter()
                        .map(|f| f.name.len() + f.hash.len() + 16)
                        .sum::<usize>()
                    + c.metrics.iter().map(|m| m.key.len() + 32).sum::<usize>()
                    + c.pruned.len() * 8
            }
        }
    }

    /// This event's kind.
    pub fn kind(&self) -> EventKind {
        match self {
            Event::Metrics { .. } => EventKind::Metrics,
            Event::Params { .. } => EventKind::Params,
            Event::Tags { .. } => EventKind::Tags,
            Event::Text { .. } => EventKind::Text,
            Event::Image { .. } => EventKind::Image,
            Event::Histogram { .. } => EventKind::Histogram,
            Event::Artifact { .. } => EventKind::Artifact,
            Event::Status { .. } => EventKind::Status,
            Event::Result { .. } => EventKind::Result,
            Event::Checkpoint(_) => EventKind::Checkpoint,
        }
    }

    /// The step the event belongs to, for kinds that have one.
    pub fn step(&self) -> Option<u64> {
        match self {
            Event::Metrics { step, .. }
            | Event::Text { step, .. }
            | Event::Image { step, .. }
            | Event::Histogram { step, .. } => Some(*step),
            Event::Artifact { step, .. } => *step,
            Event::Checkpoint(c) => Some(c.step),
            _ => None,
        }
    }
}

/// Formats a float the way the JSON encodings here do: shortest round-trip form, `NaN`, `Infinity`,
/// `-Infinity`.
pub fn float_to_string(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_owned()
    } else if v == f64::INFINITY {
        "Infinity".to_owned()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".to_owned()
    } else {
        format!("{v:?}")
    }
}

fn float_from_str(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "Infinity" | "inf" | "+Infinity" => Some(f64::INFINITY),
        "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
        other => other.parse().ok(),
    }
}

/// Serde helper: finite floats as JSON numbers, non-finite ones as strings.
pub mod finite_or_string {
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;

    /// Serialize.
    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_str(&super::float_to_string(*v))
        }
    }

    struct F64Visitor;
    impl Visitor<'_> for F64Visitor {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a number or one of \"NaN\", \"Infinity\", \"-Infinity\"")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
            super::float_from_str(v).ok_or_else(|| E::custom(format!("not a float: {v:?}")))
        }
    }

    /// Deserialize.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        d.deserialize_any(F64Visitor)
    }
}

mod vec_finite_or_string {
    use serde::ser::SerializeSeq;
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(serde::Serialize, Deserialize)]
    struct W(#[serde(with = "super::finite_or_string")] f64);

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for x in v {
            seq.serialize_element(&W(*x))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        let v: Vec<W> = Vec::deserialize(d)?;
        Ok(v.into_iter().map(|w| w.0).collect())
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}
