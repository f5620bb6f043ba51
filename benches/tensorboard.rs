//! TensorBoard backend benchmarks: scalars per second written through `TensorBoardTracker`.
//!
//! Workload (the same as `benches/peers/tensorboardx_scalars.py`): 20,000 steps x 10 tags =
//! 200,000 scalars; one `Metrics` event per step, delivered in batches of 64 events as the
//! dispatcher does. Criterion reports elements (scalars) per second. Target: >= 1 M scalars/s.
//!
//! - `tensorboard/tracker_write_flush`: `write` every batch, then `flush` (everything handed to
//!   the OS, readable by TensorBoard), which is what the Python peer's `flush()` does.
//! - `tensorboard/tracker_write_close`: the same plus `close` (which also fsyncs the file).
//! - `tensorboard/file_writer_scalars`: the bare `EventFileWriter::write_scalars` path.
//! - `baseline/prost_encode_framed`: the same events built as `prost` messages (allocating the
//!   tags) and framed into a `Vec`, no I/O, in the same process, as a reference point.
//!
//! Run: `cargo bench --bench tensorboard`; the Python tensorboardX peer:
//! `$EXPTRACK_PEER_PYTHON benches/peers/tensorboardx_scalars.py`.

// `criterion_group!` generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use exptrack_core::{Batch, Event, ExperimentMetadata, Metric, RunContext, RunStatus, Tracker};
use exptrack_tensorboard::prost::Message;
use exptrack_tensorboard::{EventFileWriter, TensorBoardTracker, encode, record};

const STEPS: u64 = 20_000;
const TAGS: [&str; 10] = [
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
const BATCH: usize = 64;
const SCALARS: u64 = STEPS * TAGS.len() as u64;

fn events() -> Vec<Event> {
    (0..STEPS)
        .map(|step| Event::Metrics {
            step,
            timestamp_ms: 1_700_000_000_000 + step as i64,
            values: TAGS
                .iter()
                .enumerate()
                .map(|(i, t)| Metric::new(*t, (step as f64 * 0.001 + i as f64).sin()))
                .collect(),
        })
        .collect()
}

fn ctx(root: &std::path::Path) -> RunContext {
    let metadata = ExperimentMetadata::new("bench", "0123456789abcdef");
    RunContext {
        run_dir: root.join(&metadata.run_id),
        metadata,
        config: Default::default(),
        resumed: false,
    }
}

fn write_batches(tb: &mut TensorBoardTracker, events: &[Event]) {
    for (i, chunk) in events.chunks(BATCH).enumerate() {
        tb.write(&Batch {
            first_seq: (i * BATCH) as u64,
            events: chunk,
        })
        .expect("write");
    }
}

fn bench(c: &mut Criterion) {
    let events = events();
    let root = tempfile::tempdir().expect("tempdir");

    let mut g = c.benchmark_group("tensorboard");
    g.throughput(Throughput::Elements(SCALARS));
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(10));

    g.bench_function("tracker_write_flush", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut tb = TensorBoardTracker::new(Some(root.path().to_path_buf()));
                tb.open(&ctx(root.path())).expect("open");
                let start = Instant::now();
                write_batches(&mut tb, &events);
                tb.flush().expect("flush");
                total += start.elapsed();
                let dir = tb.log_dir().expect("open").to_path_buf();
                tb.close(RunStatus::Completed).expect("close");
                std::fs::remove_dir_all(dir).expect("cleanup");
            }
            total
        })
    });

    g.bench_function("tracker_write_close", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let mut tb = TensorBoardTracker::new(Some(root.path().to_path_buf()));
                tb.open(&ctx(root.path())).expect("open");
                let dir = tb.log_dir().expect("open").to_path_buf();
                let start = Instant::now();
                write_batches(&mut tb, &events);
                tb.close(RunStatus::Completed).expect("close");
                total += start.elapsed();
                std::fs::remove_dir_all(dir).expect("cleanup");
            }
            total
        })
    });

    g.bench_function("file_writer_scalars", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for i in 0..iters {
                let dir = root.path().join(format!("raw-{i}"));
                let mut w = EventFileWriter::create(&dir).expect("create");
                let start = Instant::now();
                for e in &events {
                    if let Event::Metrics {
                        step,
                        timestamp_ms,
                        values,
                    } = e
                    {
                        w.write_scalars(*timestamp_ms as f64 / 1000.0, *step as i64, values)
                            .expect("write");
                    }
                }
                w.flush().expect("flush");
                total += start.elapsed();
                drop(w);
                std::fs::remove_dir_all(dir).expect("cleanup");
            }
            total
        })
    });
    g.finish();

    let mut g = c.benchmark_group("baseline");
    g.throughput(Throughput::Elements(SCALARS));
    g.sample_size(20);
    g.bench_function("prost_encode_framed", |b| {
        let mut out = Vec::with_capacity(8 << 20);
        let mut data = Vec::with_capacity(1024);
        b.iter(|| {
            out.clear();
            for e in &events {
                if let Event::Metrics {
                    step,
                    timestamp_ms,
                    values,
                } = e
                {
                    let msg =
                        encode::scalars_event(*timestamp_ms as f64 / 1000.0, *step as i64, values);
                    data.clear();
                    msg.encode(&mut data).expect("vec grows");
                    record::frame_record(&mut out, &data);
                }
            }
            black_box(out.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
