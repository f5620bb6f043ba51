//! Tracking-core benchmarks.
//!
//! - `log_metrics_10_scalars/caller`: what one `log_metrics` call with 10 scalars costs the
//!   training loop (enqueue only; the queue is large enough that the dispatcher never pushes
//!   back during a measured batch, and is drained between batches). Target: ≤ 1 µs median.
//! - `sustained/local_store`: scalars per second from the caller into the local store's
//!   `events.jsonl`, including the final fsync (criterion reports elements/s). Target: ≥ 1 M/s.
//! - `baseline/serde_json_line`: the same events serialized into a `Vec` in the same process,
//!   so the store's overhead over bare serialization can be read as a ratio.
//!
//! Run: `cargo bench --bench tracking`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exptrack::{ExperimentConfig, ExperimentTracker, RunStatus};

const KEYS: [&str; 10] = [
    "train/loss",
    "train/acc",
    "train/lr",
    "train/grad_norm",
    "train/loss_scale",
    "val/loss",
    "val/acc",
    "throughput/items_per_s",
    "system/cpu_percent",
    "system/memory_percent",
];

fn tracker(dir: &std::path::Path, capacity: usize) -> ExperimentTracker {
    ExperimentTracker::builder(ExperimentConfig::named("bench"))
        .runs_dir(dir)
        .queue_capacity(capacity)
        .handle_signals(false)
        .collect_system_info(false)
        .build()
        .expect("tracker")
}

fn values(step: u64) -> [(&'static str, f64); 10] {
    let mut v = [("", 0.0); 10];
    for (i, k) in KEYS.iter().enumerate() {
        v[i] = (k, step as f64 * 0.001 + i as f64);
    }
    v
}

fn caller_cost(c: &mut Criterion) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let t = tracker(tmp.path(), 1 << 20);
    let mut step = 0u64;
    let mut g = c.benchmark_group("log_metrics_10_scalars");
    g.throughput(Throughput::Elements(1));
    g.bench_function("caller", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                // Measure in chunks well below the queue capacity, draining in between, so the
                // figure is the enqueue cost and not the dispatcher's throughput.
                let n = left.min(100_000);
                let t0 = Instant::now();
                for _ in 0..n {
                    step += 1;
                    t.log_metrics(step, black_box(&values(step))).expect("log");
                }
                total += t0.elapsed();
                left -= n;
                t.flush().expect("flush");
            }
            total
        })
    });
    g.finish();
    t.finish(RunStatus::Completed).expect("finish");
}

fn sustained(c: &mut Criterion) {
    const EVENTS: u64 = 100_000;
    let mut g = c.benchmark_group("sustained");
    g.sample_size(10);
    g.throughput(Throughput::Elements(EVENTS * KEYS.len() as u64));
    g.bench_function("local_store", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let tmp = tempfile::tempdir().expect("tempdir");
                let t = tracker(tmp.path(), 65_536);
                let t0 = Instant::now();
                for step in 0..EVENTS {
                    t.log_metrics(step, &values(step)).expect("log");
                }
                t.flush().expect("flush");
                total += t0.elapsed();
                t.finish(RunStatus::Completed).expect("finish");
            }
            total
        })
    });
    g.bench_function("baseline/serde_json_line", |b| {
        b.iter(|| {
            let mut buf = Vec::with_capacity(64 << 20);
            for step in 0..EVENTS {
                let ev = exptrack::Event::Metrics {
                    step,
                    timestamp_ms: exptrack::now_ms(),
                    values: values(step)
                        .iter()
                        .map(|(k, v)| exptrack::Metric::new(*k, *v))
                        .collect(),
                };
                serde_json::to_writer(&mut buf, &ev).expect("json");
                buf.push(b'\n');
            }
            black_box(buf.len())
        })
    });
    g.finish();
}

criterion_group!(benches, caller_cost, sustained);
criterion_main!(benches);
