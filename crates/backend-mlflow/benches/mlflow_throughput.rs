//! Metrics per second into a local `mlflow server` (3.17.2, sqlite store): exptrack's
//! `MlflowTracker` against MLflow's own Python client running a `log_batch` loop
//! (`benches/peers/mlflow_log_batch.py`) on the same server, same shape (10 keys x 1000 steps
//! per iteration, 1000 points per request), and the ratio of the two.
//!
//! Needs the peer venv (`EXPTRACK_PEER_PYTHON`); without it the server benches are skipped and
//! only the offline encoding bench runs. Run: `cargo bench -p exptrack-mlflow`.

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exptrack_core::{
    Batch, Event, ExperimentConfig, ExperimentMetadata, ExperimentTracker, Metric, RunContext,
    RunStatus, Tracker,
};
use exptrack_mlflow::{MetricPoint, MlflowTracker};

const KEYS: usize = 10;
const STEPS: u64 = 1000;
const POINTS: u64 = KEYS as u64 * STEPS;

fn events(step0: u64) -> Vec<Event> {
    (step0..step0 + STEPS)
        .map(|s| Event::Metrics {
            step: s,
            timestamp_ms: 1_700_000_000_000 + s as i64,
            values: (0..KEYS)
                .map(|k| Metric::new(format!("m{k}"), 1.0 / (s as f64 + 1.0 + k as f64)))
                .collect(),
        })
        .collect()
}

#[derive(serde::Serialize)]
struct Body<'a> {
    run_id: &'a str,
    metrics: &'a [MetricPoint],
    params: &'a [exptrack_mlflow::KeyValue],
    tags: &'a [exptrack_mlflow::KeyValue],
}

fn python_baseline(uri: &str) -> Option<f64> {
    let py = std::env::var("EXPTRACK_PEER_PYTHON").ok()?;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../benches/peers/mlflow_log_batch.py"
    );
    let out = Command::new(py)
        .args([script, "--uri", uri, "--keys", "10", "--steps", "1000"])
        .args(["--batch", "1000", "--repeats", "7"])
        .env("NO_PROXY", "127.0.0.1,localhost")
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "python baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    // MLflow prints "View run ..." lines first; the result is the last line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last()?;
    let v: serde_json::Value = serde_json::from_str(line.trim()).ok()?;
    eprintln!("python log_batch loop: {}", line.trim());
    v["metrics_per_sec_median"].as_f64()
}

fn bench(c: &mut Criterion) {
    // Offline: the CPU cost of encoding one full log-batch body (1000 points).
    let points: Vec<MetricPoint> = (0..1000)
        .map(|i| MetricPoint {
            key: format!("train/m{}", i % 10),
            value: if i % 97 == 0 {
                f64::NAN
            } else {
                i as f64 * 0.5
            },
            timestamp: 1_700_000_000_000 + i,
            step: i,
        })
        .collect();
    let mut g = c.benchmark_group("mlflow_encode");
    g.throughput(Throughput::Elements(points.len() as u64));
    g.bench_function("log_batch_body_1000", |b| {
        b.iter(|| {
            // The same typed body the client serializes.
            serde_json::to_vec(&Body {
                run_id: "r",
                metrics: black_box(&points),
                params: &[],
                tags: &[],
            })
            .unwrap()
        })
    });
    g.finish();

    let Some(server) = common::shared_server() else {
        return;
    };
    let uri = server.uri();

    // Python before and after ours, on the same server, to see drift from machine load.
    let python_before = python_baseline(&uri);

    let tmp = tempfile::tempdir().unwrap();
    let mut ours = Vec::new();
    let mut g = c.benchmark_group("mlflow_server");
    g.sample_size(10)
        .measurement_time(Duration::from_secs(20))
        .throughput(Throughput::Elements(POINTS));
    // Each iteration writes 10k points into a fresh run (the server slows down as a run grows;
    // the Python baseline does the same), through `Tracker::write` as the dispatcher thread does.
    g.bench_function("exptrack_tracker_write_10k_points", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let ctx = RunContext {
                    metadata: ExperimentMetadata::new("bench-exptrack", "0123456789abcdef"),
                    config: toml::Table::new(),
                    run_dir: tmp.path().to_path_buf(),
                    resumed: false,
                };
                let mut tracker = MlflowTracker::builder().tracking_uri(&uri).build().unwrap();
                tracker.open(&ctx).unwrap();
                let ev = events(0);
                let t = Instant::now();
                tracker
                    .write(&Batch {
                        first_seq: 1,
                        events: &ev,
                    })
                    .unwrap();
                let d = t.elapsed();
                tracker.close(RunStatus::Completed).unwrap();
                ours.push(POINTS as f64 / d.as_secs_f64());
                total += d;
            }
            total
        })
    });

    // End to end through the user's handle: log_metrics calls, then a flush barrier.
    let handle = ExperimentTracker::builder(ExperimentConfig::named("bench-e2e"))
        .runs_dir(tmp.path())
        .handle_signals(false)
        .with_tracker(Box::new(
            MlflowTracker::builder().tracking_uri(&uri).build().unwrap(),
        ))
        .build()
        .unwrap();
    let mut e2e_step = 0u64;
    g.bench_function("exptrack_handle_log_and_flush_10k_points", |b| {
        b.iter_custom(|iters| {
            let t = Instant::now();
            for _ in 0..iters {
                for s in e2e_step..e2e_step + STEPS {
                    let vals: Vec<(String, f64)> =
                        (0..KEYS).map(|k| (format!("m{k}"), s as f64)).collect();
                    handle.log_metrics(s, &vals).unwrap();
                }
                e2e_step += STEPS;
                handle.flush_timeout(Duration::from_secs(120)).unwrap();
            }
            t.elapsed()
        })
    });
    g.finish();
    let _ = handle.finish(RunStatus::Completed);

    let python_after = python_baseline(&uri);
    let python = match (python_before, python_after) {
        (Some(a), Some(b)) => Some((a + b) / 2.0),
        (a, b) => a.or(b),
    };
    ours.sort_by(f64::total_cmp);
    let median = ours.get(ours.len() / 2).copied().unwrap_or(0.0);
    eprintln!(
        "exptrack MlflowTracker: median {median:.0} metrics/s over {} iterations",
        ours.len()
    );
    if let Some(py) = python {
        eprintln!(
            "ratio exptrack / python log_batch: {:.2}x ({median:.0} vs {py:.0} metrics/s)",
            median / py
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
