//! System metrics reach W&B's "System" charts: stats records in the offline log (read back by the
//! real wandb 0.31's `leet inspect`), `wandb-events.jsonl` lines when the real `wandb sync` uploads
//! that log, and the same lines from our online client; never history rows.

mod common;

use std::path::Path;
use std::time::Duration;

use exptrack_core::{
    Batch, Event, ExperimentConfig, ExperimentTracker, Metric, RunStatus, Tracker,
};
use exptrack_wandb::{Mode, WandbTracker};
use serde_json::Value;

const T0: i64 = 1_760_000_000_000;

/// Training metrics at steps 0..5 and, between them, system samples with their own steps (as the
/// sampler logs them), including one GPU.
fn events() -> Vec<Event> {
    let mut ev = Vec::new();
    for s in 0..5u64 {
        ev.push(Event::Metrics {
            step: s,
            timestamp_ms: T0 + 1000 * s as i64,
            values: vec![Metric::new("train/loss", 1.0 / (s as f64 + 1.0))],
        });
        ev.push(Event::Metrics {
            step: 100 + s,
            timestamp_ms: T0 + 1000 * s as i64 + 500,
            values: vec![
                Metric::new("system/cpu_percent", 10.0 + s as f64),
                Metric::new("system/memory_percent", 40.5),
                Metric::new("system/process_rss_mb", 123.0),
                Metric::new("system/gpu_0_utilization_percentage", 87.0),
                Metric::new("system/gpu_0_memory_usage_megabytes", 2.0),
                Metric::new("system/gpu_0_temperature_celsius", 61.0),
                Metric::new("system/disk_percent", f64::NAN),
            ],
        });
    }
    ev
}

fn feed(t: &mut WandbTracker) {
    let ev = events();
    for (i, e) in ev.iter().enumerate() {
        t.write(&Batch {
            first_seq: i as u64,
            events: std::slice::from_ref(e),
        })
        .unwrap();
    }
    t.flush().unwrap();
}

fn offline(dir: &Path, run_id: &str) -> WandbTracker {
    let mut t = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(dir)
        .project("exptrack-test")
        .build()
        .unwrap();
    t.open(&common::context(dir, "system", run_id, "")).unwrap();
    feed(&mut t);
    t.close(RunStatus::Completed).unwrap();
    t
}

/// The five samples as W&B names them (`_timestamp` in seconds), however they were read back.
fn check_samples(samples: &[serde_json::Map<String, Value>], prefix: &str, who: &str) {
    assert_eq!(samples.len(), 5, "{who}: {samples:?}");
    for (i, s) in samples.iter().enumerate() {
        // Numbers compared as numbers (wandb writes 10 for 10.0).
        let get = |k: &str| s.get(&format!("{prefix}{k}")).and_then(Value::as_f64);
        assert_eq!(get("cpu_percent"), Some(10.0 + i as f64), "{who}: {s:?}");
        assert_eq!(get("memory_percent"), Some(40.5), "{who}");
        assert_eq!(get("proc.memory.rssMB"), Some(123.0), "{who}");
        assert_eq!(get("gpu.0.gpu"), Some(87.0), "{who}");
        assert_eq!(get("gpu.0.temp"), Some(61.0), "{who}");
        assert_eq!(
            get("gpu.0.memoryAllocatedBytes"),
            Some(2.0 * 1024.0 * 1024.0),
            "{who}"
        );
        // A value JSON cannot hold is left out, not sent as a string or a null.
        assert!(
            !s.contains_key(&format!("{prefix}disk_percent")),
            "{who}: {s:?}"
        );
    }
}

/// No history row carries a system key, and the training steps are 0..5 exactly.
fn check_history(rows: &[Value], who: &str) {
    let steps: Vec<u64> = rows.iter().map(|r| r["_step"].as_u64().unwrap()).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4], "{who}: {rows:?}");
    for r in rows {
        let keys: Vec<&String> = r.as_object().unwrap().keys().collect();
        assert!(
            keys.iter().all(|k| !k.starts_with("system")),
            "{who}: a system metric in a history row: {r}"
        );
    }
}

#[test]
fn offline_system_metrics_are_stats_records_read_back_by_leet_inspect() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = offline(tmp.path(), "sys-leet");
    let inspect = common::leet_inspect(&py, tmp.path(), t.log_path().unwrap());
    assert!(inspect.ok, "leet inspect failed: {}", inspect.stderr);
    let stats: Vec<_> = inspect
        .records
        .iter()
        .filter(|r| r["type"] == "stats")
        .collect();
    let samples: Vec<_> = stats
        .iter()
        .map(|r| r["stats"]["item"].as_object().cloned().unwrap())
        .collect();
    check_samples(&samples, "", "leet inspect");
    // The sample's own time, not the time it was written.
    assert!(
        stats[0]["stats"]["timestamp"]
            .as_str()
            .is_some_and(|t| t.starts_with("2025-10-09T08:53:20.5")),
        "{}",
        stats[0]
    );
    let rows: Vec<Value> = inspect
        .records
        .iter()
        .filter(|r| r["type"] == "history")
        .map(|r| {
            // leet prints a history row's items as an object of key -> value.
            r["history"]["item"].clone()
        })
        .collect();
    check_history(&rows, "leet inspect");
}

/// The lines of `file` (`wandb-events.jsonl`, `wandb-history.jsonl`) a client sent in its
/// file_stream requests, in offset order.
fn stream_lines(reqs: &[Value], file: &str) -> Vec<Value> {
    let mut by_offset = std::collections::BTreeMap::new();
    for r in reqs {
        if r.get("failed_with").is_some_and(|f| !f.is_null()) {
            continue;
        }
        if !r["path"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/file_stream")
        {
            continue;
        }
        let Some(f) = r["body"]["files"].get(file) else {
            continue;
        };
        let start = f["offset"].as_u64().unwrap();
        for (i, line) in f["content"].as_array().unwrap().iter().enumerate() {
            let v: Value = serde_json::from_str(line.as_str().unwrap()).unwrap();
            by_offset.insert(start + i as u64, v);
        }
    }
    by_offset.into_values().collect()
}

fn check_events(reqs: &[Value], who: &str) {
    let lines: Vec<_> = stream_lines(reqs, "wandb-events.jsonl")
        .into_iter()
        .map(|v| v.as_object().cloned().unwrap())
        .collect();
    check_samples(&lines, "system.", who);
    for (i, l) in lines.iter().enumerate() {
        assert_eq!(l["_wandb"], true, "{who}");
        let ts = l["_timestamp"].as_f64().unwrap();
        let want = (T0 + 1000 * i as i64 + 500) as f64 / 1000.0;
        assert!((ts - want).abs() < 1e-3, "{who}: _timestamp {ts} != {want}");
        assert!(l["_runtime"].as_f64().is_some(), "{who}: {l:?}");
    }
    check_history(&stream_lines(reqs, "wandb-history.jsonl"), who);
}

#[test]
fn wandb_sync_uploads_our_system_metrics_as_events() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let t = offline(tmp.path(), "sys-sync");
    let out = common::run(
        common::isolated(&common::wandb_exe(&py), tmp.path())
            .env("WANDB_BASE_URL", rec.base_url())
            .env("WANDB_API_KEY", common::FAKE_KEY)
            .arg("sync")
            .arg(t.run_dir().unwrap()),
    );
    assert!(out.status.success(), "wandb sync failed");
    check_events(&rec.requests(), "wandb sync");
}

#[test]
fn online_client_sends_system_metrics_as_events() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let mut t = WandbTracker::builder()
        .mode(Mode::Online)
        .api_key(common::FAKE_KEY)
        .base_url(rec.base_url())
        .dir(tmp.path())
        .project("exptrack-test")
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    t.open(&common::context(tmp.path(), "system", "sys-online", ""))
        .unwrap();
    feed(&mut t);
    t.close(RunStatus::Completed).unwrap();
    check_events(&rec.requests(), "online client");
}

/// The real sampler of exptrack-core, through the dispatcher, into an offline W&B run.
#[test]
fn the_sampler_fills_the_system_charts() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let wandb = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(tmp.path())
        .build()
        .unwrap();
    let t = ExperimentTracker::builder(ExperimentConfig::named("sampler"))
        .runs_dir(tmp.path().join("runs"))
        .handle_signals(false)
        .collect_system_info(false)
        .system_metrics(Duration::from_millis(20))
        .with_tracker(Box::new(wandb))
        .build()
        .unwrap();
    for s in 0..20u64 {
        t.log_metrics(s, &[("train/loss", 1.0 / (s as f64 + 1.0))])
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    t.finish(RunStatus::Completed).unwrap();
    let log = walk(&tmp.path().join("wandb"))
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "wandb"))
        .expect("a .wandb log");
    let inspect = common::leet_inspect(&py, tmp.path(), &log);
    assert!(inspect.ok, "leet inspect failed: {}", inspect.stderr);
    let samples: Vec<_> = inspect
        .records
        .iter()
        .filter(|r| r["type"] == "stats")
        .map(|r| r["stats"]["item"].clone())
        .collect();
    assert!(samples.len() >= 3, "{samples:?}");
    for s in &samples {
        let mem = s["memory_percent"].as_f64().expect("memory_percent");
        assert!(mem > 0.0 && mem <= 100.0, "{s}");
        assert!(
            s["proc.memory.rssMB"].as_f64().is_some_and(|v| v > 1.0),
            "{s}"
        );
    }
    let rows: Vec<Value> = inspect
        .records
        .iter()
        .filter(|r| r["type"] == "history")
        .map(|r| r["history"]["item"].clone())
        .collect();
    assert_eq!(rows.len(), 20, "{rows:?}");
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
