//! Per-metric statistics (`summary.json`) and the results of a completed run (`results.json`),
//! with the bounded in-memory histories behind them.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::Result;
use crate::event::finite_or_string;
use crate::metadata::ExperimentMetadata;
#[cfg(doc)]
use crate::metadata::RunStatus;

/// Statistics of one metric.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    /// Last value logged.
    #[serde(with = "finite_or_string")]
    pub last: f64,
    /// Smallest value (NaN ignored).
    #[serde(with = "finite_or_string")]
    pub min: f64,
    /// Largest value (NaN ignored).
    #[serde(with = "finite_or_string")]
    pub max: f64,
    /// Number of values.
    pub count: u64,
    /// Step of the last value.
    pub last_step: u64,
    /// Step at which `min` was reached.
    pub min_step: u64,
    /// Step at which `max` was reached.
    pub max_step: u64,
}

impl MetricSummary {
    fn new(step: u64, v: f64) -> Self {
        let (min, max) = if v.is_nan() {
            (f64::INFINITY, f64::NEG_INFINITY)
        } else {
            (v, v)
        };
        MetricSummary {
            last: v,
            min,
            max,
            count: 1,
            last_step: step,
            min_step: step,
            max_step: step,
        }
    }

    fn update(&mut self, step: u64, v: f64) {
        self.last = v;
        self.count += 1;
        self.last_step = step;
        if v < self.min {
            self.min = v;
            self.min_step = step;
        }
        if v > self.max {
            self.max = v;
            self.max_step = step;
        }
    }
}

/// `summary.json`: per-metric statistics, by metric key.
pub type Summary = BTreeMap<String, MetricSummary>;

/// One metric's history as kept for `results.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MetricHistory {
    /// Steps, in logging order.
    pub steps: Vec<u64>,
    /// Values (non-finite as strings).
    #[serde(with = "vec_f64")]
    pub values: Vec<f64>,
    /// True when the history was longer than the in-memory cap and only its beginning is kept
    /// (the full history is always in `events.jsonl`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

mod vec_f64 {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct W(#[serde(with = "crate::event::finite_or_string")] f64);

    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|x| W(*x)))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<W>::deserialize(d)?.into_iter().map(|w| w.0).collect())
    }
}

/// `results.json`, written when a run finishes with [`RunStatus::Completed`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunResults {
    /// Experiment id.
    pub experiment_id: String,
    /// Run id.
    pub run_id: String,
    /// Always true in a written file (the file exists only for completed runs).
    pub completed: bool,
    /// The configuration document.
    pub config: serde_json::Value,
    /// Run start.
    pub start_time: DateTime<Utc>,
    /// Run end.
    pub end_time: DateTime<Utc>,
    /// Duration in seconds.
    pub duration_secs: f64,
    /// Final (last) value of every metric.
    pub final_metrics: BTreeMap<String, serde_json::Value>,
    /// Per metric, min and max with their steps and the last value.
    pub summary: Summary,
    /// Metric histories (each capped at [`HISTORY_CAP`] points).
    pub history: BTreeMap<String, MetricHistory>,
    /// Values the caller added with `ExperimentTracker::set_result` (e.g. best epoch, test
    /// accuracy).
    #[serde(default)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// How many points of one metric's history are kept in memory for `results.json`.
pub const HISTORY_CAP: usize = 100_000;
/// How many history points, over all metrics, are kept in memory for `results.json` (16 bytes
/// each: 64 MiB). Later points still update the summary; their histories are marked `truncated`.
/// The full history is always in `events.jsonl`.
pub const HISTORY_TOTAL_CAP: usize = 4_000_000;
/// How many distinct metric keys get a summary and a history (later keys are in `events.jsonl`
/// only, and a warning says so once).
pub const MAX_METRIC_KEYS: usize = 100_000;

fn json_f64(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v)
        .map(serde_json::Value::Number)
        .unwrap_or_else(|| serde_json::Value::String(crate::event::float_to_string(v)))
}

/// Per-metric statistics and history, kept by the writer.
struct Stats {
    summary: MetricSummary,
    history: MetricHistory,
}

/// FNV-1a: metric keys are short, trusted strings; SipHash's DoS resistance is not needed on the
/// hot path.
#[derive(Default)]
struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.0 = h;
    }
}

/// Per-key statistics with bounded memory ([`HISTORY_CAP`], [`HISTORY_TOTAL_CAP`],
/// [`MAX_METRIC_KEYS`]).
#[derive(Default)]
pub(crate) struct StatsMap {
    map: HashMap<String, Stats, std::hash::BuildHasherDefault<Fnv>>,
    /// History points kept, over all keys.
    points: usize,
    /// Whether the key limit was reported.
    warned_keys: bool,
}

impl StatsMap {
    /// `summary.json`'s contents, sorted by key.
    pub(crate) fn summary(&self) -> Summary {
        self.map
            .iter()
            .map(|(k, v)| (k.clone(), v.summary.clone()))
            .collect()
    }

    /// `results.json`'s contents for the run described by `meta` (ended now if it has no end
    /// time), with `extra` from [`crate::Event::Result`]; the config is redacted.
    pub(crate) fn results(
        &self,
        meta: &ExperimentMetadata,
        config: &toml::Table,
        extra: &BTreeMap<String, serde_json::Value>,
    ) -> Result<RunResults> {
        let end = meta.end_time.unwrap_or_else(Utc::now);
        let summary = self.summary();
        Ok(RunResults {
            experiment_id: meta.experiment_id.clone(),
            run_id: meta.run_id.clone(),
            completed: true,
            config: serde_json::to_value(crate::redact_config(config))?,
            start_time: meta.start_time,
            end_time: end,
            duration_secs: (end - meta.start_time).num_milliseconds() as f64 / 1000.0,
            final_metrics: summary
                .iter()
                .map(|(k, s)| (k.clone(), json_f64(s.last)))
                .collect(),
            summary,
            history: self
                .map
                .iter()
                .map(|(k, v)| (k.clone(), v.history.clone()))
                .collect(),
            extra: extra.clone(),
        })
    }
}

/// Adds one point of `key` to the statistics (and its history, within the bounds).
pub(crate) fn update_stats(stats: &mut StatsMap, key: &str, step: u64, v: f64) {
    if let Some(s) = stats.map.get_mut(key) {
        s.summary.update(step, v);
        push_history(s, &mut stats.points, step, v);
        return;
    }
    if stats.map.len() >= MAX_METRIC_KEYS {
        if !stats.warned_keys {
            stats.warned_keys = true;
            tracing::warn!(
                key,
                "more than {MAX_METRIC_KEYS} metric keys: later keys get no summary (they are \
                 still logged and delivered)"
            );
        }
        return;
    }
    let mut s = Stats {
        summary: MetricSummary::new(step, v),
        history: MetricHistory::default(),
    };
    push_history(&mut s, &mut stats.points, step, v);
    stats.map.insert(key.to_owned(), s);
}

fn push_history(s: &mut Stats, points: &mut usize, step: u64, v: f64) {
    if s.history.steps.len() < HISTORY_CAP && *points < HISTORY_TOTAL_CAP {
        s.history.steps.push(step);
        s.history.values.push(v);
        *points += 1;
    } else {
        s.history.truncated = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_history_is_bounded_over_all_keys() {
        let mut stats = StatsMap::default();
        for k in 0..50 {
            let key = format!("k{k}");
            for step in 0..(HISTORY_TOTAL_CAP / 40) as u64 {
                update_stats(&mut stats, &key, step, 1.0);
            }
        }
        assert_eq!(stats.points, HISTORY_TOTAL_CAP);
        let kept: usize = stats.map.values().map(|s| s.history.steps.len()).sum();
        assert_eq!(kept, HISTORY_TOTAL_CAP);
        assert!(stats.map.values().any(|s| s.history.truncated));
        // The summary still counts every point.
        assert!(
            stats
                .map
                .values()
                .all(|s| s.summary.count == (HISTORY_TOTAL_CAP / 40) as u64)
        );
    }
}
