//! How our events become a W&B run: history rows, summary, config and tags. Shared by the offline
//! writer and the online client, so both send the same data.

use std::collections::{BTreeMap, BTreeSet};

use exptrack_core::{Event, RunStatus, TimestampMs};

use crate::json;
use crate::proto::{HistoryRecord, HistoryStep, KeyValue};

/// Keys wandb adds to every history row; user metrics with these names are dropped.
pub(crate) const RESERVED: [&str; 3] = ["_step", "_runtime", "_timestamp"];

/// One history row: flat keys (a `/` stays part of the key, as with `wandb.log`) and JSON values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Row {
    pub(crate) step: u64,
    /// `(key, value_json)`: metrics first, then the step metric (when set), `_runtime`,
    /// `_timestamp`, and `_step` (not for a companion).
    pub(crate) items: Vec<(String, String)>,
}

impl Row {
    /// The row as one `wandb-history.jsonl` line.
    pub(crate) fn json_line(&self) -> String {
        json::object(self.items.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The row as a history record.
    pub(crate) fn record(&self) -> HistoryRecord {
        HistoryRecord {
            item: self
                .items
                .iter()
                .map(|(k, v)| KeyValue {
                    key: String::new(),
                    nested_key: vec![k.clone()],
                    value_json: v.clone(),
                })
                .collect(),
            step: Some(HistoryStep {
                num: i64::try_from(self.step).unwrap_or(i64::MAX),
            }),
        }
    }
}

#[derive(Debug)]
struct Pending {
    step: u64,
    timestamp_ms: TimestampMs,
    /// `(key, value_json)`.
    values: Vec<(String, String)>,
}

/// The run's accumulated state.
#[derive(Debug)]
pub(crate) struct RunState {
    start_ms: TimestampMs,
    pending: Option<Pending>,
    last_step: Option<u64>,
    /// Latest value (JSON) of every summary key.
    summary: BTreeMap<String, String>,
    summary_dirty: BTreeSet<String>,
    /// Config keys in first-set order, with JSON values.
    config: Vec<(String, String)>,
    config_dirty: Vec<(String, String)>,
    tags: Vec<String>,
    tags_dirty: bool,
    /// Rows dropped because their step went backwards.
    pub(crate) dropped_rows: u64,
    warned_reserved: bool,
    /// The step metric rows carry (their step under this key; a companion's rows instead of
    /// `_step`).
    step_metric: Option<String>,
    /// A companion writer: no `_step`, its summary only the keys it logs, no config, no tags.
    companion: bool,
    /// With a step metric: metric keys of completed rows not yet handed out by
    /// [`take_new_metrics`](Self::take_new_metrics), in first-seen order.
    new_metrics: Vec<String>,
    seen_metrics: BTreeSet<String>,
}

impl RunState {
    pub(crate) fn new(start_ms: TimestampMs) -> Self {
        RunState {
            start_ms,
            pending: None,
            last_step: None,
            summary: BTreeMap::new(),
            summary_dirty: BTreeSet::new(),
            config: Vec::new(),
            config_dirty: Vec::new(),
            tags: Vec::new(),
            tags_dirty: false,
            dropped_rows: 0,
            warned_reserved: false,
            step_metric: None,
            companion: false,
            new_metrics: Vec::new(),
            seen_metrics: BTreeSet::new(),
        }
    }

    /// The state of a writer whose rows also carry their step as `step_metric`; a `companion`
    /// sets no config and no tags, and its rows carry no `_step`.
    pub(crate) fn for_writer(
        start_ms: TimestampMs,
        step_metric: Option<String>,
        companion: bool,
    ) -> Self {
        RunState {
            step_metric,
            companion,
            ..RunState::new(start_ms)
        }
    }

    /// Whether this is a companion's state.
    pub(crate) fn is_companion(&self) -> bool {
        self.companion
    }

    /// With a step metric: the metric keys that appeared in rows completed since the last call.
    pub(crate) fn take_new_metrics(&mut self) -> Vec<String> {
        std::mem::take(&mut self.new_metrics)
    }

    /// Seconds since the start at `now_ms` (never negative).
    pub(crate) fn runtime_secs(&self, now_ms: TimestampMs) -> f64 {
        (now_ms.saturating_sub(self.start_ms)).max(0) as f64 / 1000.0
    }

    /// Applies one event; completed history rows are appended to `rows`.
    pub(crate) fn apply(&mut self, event: &Event, rows: &mut Vec<Row>) {
        match event {
            Event::Metrics {
                step,
                timestamp_ms,
                values,
            } => {
                let items: Vec<(String, String)> = values
                    .iter()
                    .map(|m| (m.key.clone(), json::f64_json(m.value)))
                    .collect();
                self.add_items(*step, *timestamp_ms, items, rows);
            }
            Event::Result { key, value, .. } => {
                if key.is_empty() || RESERVED.contains(&key.as_str()) {
                    tracing::warn!(key = %key, "W&B: dropping a result with an empty or reserved key");
                } else {
                    self.set_summary(key, json::value_json(value));
                }
            }
            Event::Params { params } => {
                for (k, v) in params {
                    self.set_config(k, json::param_json(v));
                }
            }
            Event::Tags { tags } => {
                for (k, v) in tags {
                    self.add_tag(if v.is_empty() {
                        k.clone()
                    } else {
                        format!("{k}:{v}")
                    });
                }
            }
            _ => {}
        }
    }

    /// Adds `(key, value_json)` items (metrics, media) to the row of `step`; returns `false`
    /// (and counts the row as dropped) when the step is lower than an earlier one.
    pub(crate) fn add_items(
        &mut self,
        step: u64,
        timestamp_ms: TimestampMs,
        values: Vec<(String, String)>,
        rows: &mut Vec<Row>,
    ) -> bool {
        let floor = match &self.pending {
            Some(p) => Some(p.step),
            None => self.last_step,
        };
        if floor.is_some_and(|f| step < f) {
            self.dropped_rows += 1;
            if self.dropped_rows == 1 {
                tracing::warn!(
                    step,
                    last = floor,
                    "W&B: dropping metrics whose step is lower than an earlier one \
                     (W&B steps must increase); further drops are only counted"
                );
            }
            return false;
        }
        if self.pending.as_ref().is_some_and(|p| p.step != step)
            && let Some(row) = self.finish_row()
        {
            rows.push(row);
        }
        let pending = self.pending.get_or_insert_with(|| Pending {
            step,
            timestamp_ms,
            values: Vec::new(),
        });
        pending.timestamp_ms = pending.timestamp_ms.max(timestamp_ms);
        for (key, value) in values {
            if key.is_empty()
                || RESERVED.contains(&key.as_str())
                || self.step_metric.as_ref() == Some(&key)
            {
                if !self.warned_reserved {
                    self.warned_reserved = true;
                    tracing::warn!(
                        key = %key,
                        "W&B: dropping a metric with an empty or reserved key (or a companion's step metric)"
                    );
                }
                continue;
            }
            match pending.values.iter_mut().find(|(k, _)| *k == key) {
                Some(slot) => slot.1 = value,
                None => pending.values.push((key, value)),
            }
        }
        true
    }

    /// Whether a row at `step` would be kept (it is not lower than an earlier step).
    pub(crate) fn accepts_step(&self, step: u64) -> bool {
        let floor = match &self.pending {
            Some(p) => Some(p.step),
            None => self.last_step,
        };
        floor.is_none_or(|f| step >= f)
    }

    /// Completes the row being gathered (if any), updating the summary.
    pub(crate) fn finish_row(&mut self) -> Option<Row> {
        let p = self.pending.take()?;
        self.last_step = Some(p.step);
        let mut items: Vec<(String, String)> = p.values;
        if self.step_metric.is_some() {
            for (k, _) in &items {
                if self.seen_metrics.insert(k.clone()) {
                    self.new_metrics.push(k.clone());
                }
            }
        }
        // A companion's summary holds only the keys it logs.
        let own_keys = items.len();
        if let Some(step_metric) = &self.step_metric {
            items.push((step_metric.clone(), p.step.to_string()));
        }
        items.push((
            "_runtime".to_owned(),
            json::f64_json(self.runtime_secs(p.timestamp_ms)),
        ));
        items.push((
            "_timestamp".to_owned(),
            json::f64_json(p.timestamp_ms as f64 / 1000.0),
        ));
        // `_step` is the owner's; W&B orders a companion's rows itself.
        if !self.companion {
            items.push(("_step".to_owned(), p.step.to_string()));
        }
        let summary_keys = if self.companion {
            own_keys
        } else {
            items.len()
        };
        for (k, v) in &items[..summary_keys] {
            self.set_summary(k, v.clone());
        }
        Some(Row {
            step: p.step,
            items,
        })
    }

    /// Sets a summary key (JSON value).
    pub(crate) fn set_summary(&mut self, key: &str, value_json: String) {
        if self.summary.get(key) != Some(&value_json) {
            self.summary.insert(key.to_owned(), value_json);
            self.summary_dirty.insert(key.to_owned());
        }
    }

    /// Summary keys changed since the last call, with their values.
    pub(crate) fn take_summary_changes(&mut self) -> Vec<(String, String)> {
        let dirty = std::mem::take(&mut self.summary_dirty);
        dirty
            .into_iter()
            .filter_map(|k| self.summary.get(&k).map(|v| (k, v.clone())))
            .collect()
    }

    /// The whole summary as one JSON object (one `wandb-summary.json` line).
    pub(crate) fn summary_json(&self) -> String {
        json::object(self.summary.iter().map(|(k, v)| (k.as_str(), v.as_str())))
    }

    /// The whole summary.
    #[cfg(test)]
    pub(crate) fn summary(&self) -> &BTreeMap<String, String> {
        &self.summary
    }

    /// Sets a config key (JSON value); a companion leaves the config to the owner.
    pub(crate) fn set_config(&mut self, key: &str, value_json: String) {
        if self.is_companion() {
            return;
        }
        match self.config.iter_mut().find(|(k, _)| k == key) {
            Some(slot) if slot.1 == value_json => return,
            Some(slot) => slot.1 = value_json.clone(),
            None => self.config.push((key.to_owned(), value_json.clone())),
        }
        self.config_dirty.retain(|(k, _)| k != key);
        self.config_dirty.push((key.to_owned(), value_json));
    }

    /// Config keys changed since the last call.
    pub(crate) fn take_config_changes(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.config_dirty)
    }

    /// The whole config.
    pub(crate) fn config(&self) -> &[(String, String)] {
        &self.config
    }

    /// The config as W&B's `{"key": {"value": v}}` JSON, with `_wandb` (wandb's own entry, e.g.
    /// metric definitions) when given.
    pub(crate) fn config_upsert_json(&self, wandb: Option<&str>) -> String {
        let wrapped: Vec<(String, String)> = self
            .config
            .iter()
            .map(|(k, v)| (k.clone(), format!("{{\"value\":{v}}}")))
            .collect();
        json::object(
            wrapped
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain(wandb.map(|w| ("_wandb", w))),
        )
    }

    /// Adds a tag (duplicates ignored); a companion leaves the tags to the owner.
    pub(crate) fn add_tag(&mut self, tag: String) {
        if self.is_companion() {
            return;
        }
        let tag = tag.trim().to_owned();
        if !tag.is_empty() && !self.tags.contains(&tag) {
            self.tags.push(tag);
            self.tags_dirty = true;
        }
    }

    /// Whether tags changed since the last call (and resets the flag).
    pub(crate) fn take_tags_changed(&mut self) -> bool {
        std::mem::take(&mut self.tags_dirty)
    }

    /// All tags.
    pub(crate) fn tags(&self) -> &[String] {
        &self.tags
    }
}

/// The W&B exit code for a final status (`None`: the run did not end).
pub(crate) fn exit_code(status: RunStatus) -> Option<i32> {
    match status {
        RunStatus::Completed => Some(0),
        RunStatus::Failed => Some(1),
        RunStatus::Killed => Some(255),
        RunStatus::Running => None,
    }
}

/// Makes `id` acceptable as a W&B run id: keeps `[A-Za-z0-9_.-]`, maps anything else to `-`,
/// caps the length at 128 and never returns an empty string.
pub fn sanitize_run_id(id: &str) -> String {
    let mut out: String = id
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(128)
        .collect();
    if out.is_empty() {
        out.push_str("run");
    }
    out
}

/// A config value from the experiment's TOML document, for the W&B config.
pub(crate) fn toml_config(table: &toml::Table) -> Vec<(String, String)> {
    table
        .iter()
        // `[tracking]` is plumbing (which backends, where), not a hyperparameter.
        .filter(|(k, _)| k.as_str() != "tracking")
        .map(|(k, v)| (k.clone(), json::toml_json(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use exptrack_core::Metric;

    fn m(step: u64, ts: i64, kv: &[(&str, f64)]) -> Event {
        Event::Metrics {
            step,
            timestamp_ms: ts,
            values: kv.iter().map(|(k, v)| Metric::new(*k, *v)).collect(),
        }
    }

    #[test]
    fn same_step_merges_and_backwards_steps_drop() {
        let mut s = RunState::new(1000);
        let mut rows = Vec::new();
        s.apply(&m(0, 1500, &[("a", 1.0)]), &mut rows);
        s.apply(&m(0, 1600, &[("b", 2.0), ("a", 3.0)]), &mut rows);
        assert!(rows.is_empty());
        s.apply(&m(2, 2000, &[("a", 4.0)]), &mut rows);
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].json_line(),
            r#"{"a":3,"b":2,"_runtime":0.6,"_timestamp":1.6,"_step":0}"#
        );
        s.apply(&m(1, 2100, &[("a", 5.0)]), &mut rows);
        assert_eq!(s.dropped_rows, 1);
        let last = s.finish_row().unwrap();
        assert_eq!(last.step, 2);
        assert_eq!(s.summary()["a"], "4");
        assert_eq!(s.summary()["b"], "2");
        assert_eq!(s.summary()["_step"], "2");
    }

    #[test]
    fn run_ids() {
        assert_eq!(
            sanitize_run_id("20260101-120000-abcdef"),
            "20260101-120000-abcdef"
        );
        assert_eq!(sanitize_run_id("a/b:c d"), "a-b-c-d");
        assert_eq!(sanitize_run_id("  "), "run");
    }
}
