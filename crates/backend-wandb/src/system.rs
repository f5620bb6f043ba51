//! System metrics (`system/...` keys) as W&B stats records, which the W&B UI shows in its
//! "System" charts, instead of history rows (whose `_step` belongs to training).

use exptrack_core::Metric;

use crate::proto::{StatsItem, StatsRecord, Timestamp};

/// The prefix exptrack's sampler (and any user metric meant as a system metric) uses.
pub(crate) const PREFIX: &str = "system/";

/// W&B's name for an exptrack system metric (the part after `system/`): the names wandb 0.31's own
/// system monitor writes where the meaning is the same, the exptrack name otherwise.
///
/// | exptrack | W&B |
/// |---|---|
/// | `memory_percent` | `memory_percent` |
/// | `process_rss_mb` | `proc.memory.rssMB` |
/// | `gpu_<i>_utilization_percentage` | `gpu.<i>.gpu` |
/// | `gpu_<i>_memory_usage_percentage` | `gpu.<i>.memoryAllocated` |
/// | `gpu_<i>_memory_usage_megabytes` | `gpu.<i>.memoryAllocatedBytes` (in bytes) |
/// | `gpu_<i>_temperature_celsius` | `gpu.<i>.temp` |
/// | anything else, e.g. `cpu_percent` (the whole machine's CPU use; W&B's `cpu` is the process's) | unchanged |
pub(crate) fn stats_name(name: &str) -> (String, f64) {
    match name {
        "memory_percent" => return ("memory_percent".into(), 1.0),
        "process_rss_mb" => return ("proc.memory.rssMB".into(), 1.0),
        _ => {}
    }
    if let Some(rest) = name.strip_prefix("gpu_")
        && let Some((index, what)) = rest.split_once('_')
        && !index.is_empty()
        && index.bytes().all(|b| b.is_ascii_digit())
    {
        let mapped = match what {
            "utilization_percentage" => Some(("gpu", 1.0)),
            "memory_usage_percentage" => Some(("memoryAllocated", 1.0)),
            "memory_usage_megabytes" => Some(("memoryAllocatedBytes", 1024.0 * 1024.0)),
            "temperature_celsius" => Some(("temp", 1.0)),
            _ => None,
        };
        if let Some((w, scale)) = mapped {
            return (format!("gpu.{index}.{w}"), scale);
        }
    }
    (name.to_owned(), 1.0)
}

/// Splits `values` into the system metrics (as `(W&B name, value)`, finite values only: JSON has
/// no NaN and W&B's charts could not show one) and the rest.
pub(crate) fn split(values: &[Metric]) -> (Vec<(String, f64)>, Vec<Metric>) {
    let mut system = Vec::new();
    let mut rest = Vec::new();
    for m in values {
        match m.key.strip_prefix(PREFIX) {
            Some(name) if !name.is_empty() => {
                if m.value.is_finite() {
                    let (key, scale) = stats_name(name);
                    system.push((key, m.value * scale));
                }
            }
            _ => rest.push(m.clone()),
        }
    }
    (system, rest)
}

/// A JSON number for a finite value (integers without a fraction, as wandb writes them).
fn json_number(v: f64) -> String {
    serde_json::Number::from_f64(v).map_or_else(|| "0".to_owned(), |n| n.to_string())
}

/// The stats record of one sample.
pub(crate) fn record(timestamp_ms: i64, items: &[(String, f64)]) -> StatsRecord {
    StatsRecord {
        stats_type: 0,
        timestamp: Some(Timestamp::from_millis(timestamp_ms)),
        item: items
            .iter()
            .map(|(k, v)| StatsItem {
                key: k.clone(),
                value_json: json_number(*v),
            })
            .collect(),
    }
}

/// The `wandb-events.jsonl` line of one sample, as wandb's file stream sends it: `system.`-prefixed
/// keys plus `_wandb`, `_timestamp` (seconds) and `_runtime` (seconds since the run started).
pub(crate) fn events_line(timestamp_ms: i64, start_ms: i64, items: &[(String, f64)]) -> String {
    let mut obj = serde_json::Map::new();
    for (k, v) in items {
        if let Some(n) = serde_json::Number::from_f64(*v) {
            obj.insert(format!("system.{k}"), serde_json::Value::Number(n));
        }
    }
    obj.insert("_wandb".into(), serde_json::Value::Bool(true));
    let secs = |ms: i64| serde_json::Number::from_f64(ms as f64 / 1000.0);
    if let Some(t) = secs(timestamp_ms) {
        obj.insert("_timestamp".into(), serde_json::Value::Number(t));
    }
    if let Some(r) = secs(timestamp_ms.saturating_sub(start_ms).max(0)) {
        obj.insert("_runtime".into(), serde_json::Value::Number(r));
    }
    serde_json::Value::Object(obj).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_wandb_where_the_meaning_is_the_same() {
        assert_eq!(stats_name("memory_percent").0, "memory_percent");
        assert_eq!(stats_name("process_rss_mb").0, "proc.memory.rssMB");
        assert_eq!(stats_name("gpu_0_utilization_percentage").0, "gpu.0.gpu");
        assert_eq!(stats_name("gpu_12_temperature_celsius").0, "gpu.12.temp");
        let (k, scale) = stats_name("gpu_1_memory_usage_megabytes");
        assert_eq!(
            (k.as_str(), scale),
            ("gpu.1.memoryAllocatedBytes", 1048576.0)
        );
        assert_eq!(stats_name("cpu_percent").0, "cpu_percent");
        assert_eq!(
            stats_name("gpu_x_temperature_celsius").0,
            "gpu_x_temperature_celsius"
        );
        assert_eq!(
            stats_name("gpu__temperature_celsius").0,
            "gpu__temperature_celsius"
        );
    }

    #[test]
    fn split_keeps_other_metrics_and_drops_non_finite_system_values() {
        let values = vec![
            Metric::new("train/loss", 0.5),
            Metric::new("system/cpu_percent", 12.5),
            Metric::new("system/memory_percent", f64::NAN),
            Metric::new("system/", 1.0),
        ];
        let (system, rest) = split(&values);
        assert_eq!(system, vec![("cpu_percent".to_owned(), 12.5)]);
        let keys: Vec<_> = rest.iter().map(|m| m.key.as_str()).collect();
        assert_eq!(keys, ["train/loss", "system/"]);
    }

    #[test]
    fn events_line_is_what_the_file_stream_carries() {
        let line = events_line(2_500, 1_000, &[("cpu_percent".into(), 3.0)]);
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["system.cpu_percent"], 3.0);
        assert_eq!(v["_wandb"], true);
        assert_eq!(v["_timestamp"], 2.5);
        assert_eq!(v["_runtime"], 1.5);
    }
}
