//! Object-store checkpoint speed against a local S3 server (SeaweedFS `weed mini`, started here
//! like the tests do): durable save vs a raw multipart put of the same bytes with object_store
//! (16 MiB parts, 8 in flight, like the checkpointer; each to a new key, the previous one deleted,
//! as the checkpointer's `max_checkpoints = 1` keeps one), and verified load vs a raw get. Run with
//! `cargo bench -p exptrack-checkpoint --features s3 --bench s3`.
//!
//! `EXPTRACK_BENCH_SIZES=64M,512M` (default) picks payload sizes, `EXPTRACK_BENCH_SAMPLES`
//! the samples per side (default 10; the server's own speed swings by ±20% from one 512 MiB put
//! to the next, so more samples steady the medians). Both sides run in this process, against
//! the same server, interleaved sample by sample (which side goes first alternates). At the end
//! two estimates of raw / ours are printed (>= 0.90 is the target): the ratio of the median
//! times, and the median of the per-sample ratios (each save paired with the raw put that ran
//! right beside it, so a slow spell of the server weighs on both halves of a pair alike).
//! `EXPTRACK_BENCH_PAIRS=1` also prints every pair.

mod common;
#[path = "../tests/common/seaweed.rs"]
mod seaweed;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};
use object_store::multipart::MultipartStore;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutPayload};

use common::{median_of, parse_size, payload, record, times_of};

const PART: usize = 16 << 20;
const CONCURRENCY: usize = 8;

/// A raw multipart put: the same part size and parallelism as the checkpointer, no hashing.
async fn raw_put(store: Arc<object_store::aws::AmazonS3>, key: &ObjPath, data: Bytes) {
    if data.len() <= PART {
        store.put(key, PutPayload::from(data)).await.unwrap();
        return;
    }
    let id = store.create_multipart(key).await.unwrap();
    let mut handles = std::collections::VecDeque::new();
    let mut ids = Vec::new();
    for (i, off) in (0..data.len()).step_by(PART).enumerate() {
        let part = data.slice(off..(off + PART).min(data.len()));
        let (s, k, id) = (store.clone(), key.clone(), id.clone());
        handles.push_back(tokio::spawn(async move {
            s.put_part(&k, &id, i, PutPayload::from(part)).await
        }));
        if handles.len() >= CONCURRENCY {
            ids.push(handles.pop_front().unwrap().await.unwrap().unwrap());
        }
    }
    while let Some(h) = handles.pop_front() {
        ids.push(h.await.unwrap().unwrap());
    }
    store.complete_multipart(key, &id, ids).await.unwrap();
}

fn main() {
    let Some(server) = seaweed::Weed::start() else {
        eprintln!("no weed: nothing to measure");
        return;
    };
    server.export_env();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let store = Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(seaweed::BUCKET)
            .build()
            .unwrap(),
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let sizes = common::size_labels("64M,512M");
    let samples = std::env::var("EXPTRACK_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(10, |n| n.max(10));
    let mut c = Criterion::default()
        .sample_size(samples)
        .warm_up_time(Duration::from_millis(100))
        .measurement_time(Duration::from_secs(1))
        .configure_from_args();
    let config = CheckpointConfig {
        dir: server.url("bench").into(),
        max_checkpoints: Some(1),
        ..CheckpointConfig::default()
    };
    let mut ck = ModelCheckpointer::open("bench", config).unwrap();
    let mut step = 0u64;
    for label in &sizes {
        let label = label.as_str();
        let len = parse_size(label);
        let data = payload(len);
        let bytes = Bytes::from(data.clone());
        // The baseline keeps one object like the checkpointer's `max_checkpoints = 1`: each raw
        // put goes to a new key and the previous key is deleted after it, so both sides grow
        // and shrink the store alike (an overwrite of one key would leave the deletion to the
        // server's background work).
        let mut raw_n = 0u64;
        let raw_key = |n: u64| ObjPath::from(format!("raw/{label}/{n}"));
        let mut key = raw_key(raw_n);
        rt.block_on(raw_put(store.clone(), &key, bytes.clone()));
        let mut g = c.benchmark_group(format!("s3/{label}"));
        g.throughput(Throughput::Bytes(len as u64));
        g.bench_function("durable_save", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // One save and one raw put of the same bytes, back to back (same server
                    // state, same load); which goes first alternates, so neither side always
                    // follows the other's deletion.
                    let raw_first = step % 2 == 1;
                    let mut raw = || {
                        raw_n += 1;
                        let next = raw_key(raw_n);
                        let t = Instant::now();
                        rt.block_on(async {
                            raw_put(store.clone(), &next, bytes.clone()).await;
                            store.delete(&key).await.unwrap();
                        });
                        record(label, "raw_put", t.elapsed());
                        key = next;
                    };
                    if raw_first {
                        raw();
                    }
                    step += 1;
                    let ckpt = Checkpoint::new(step).file("model.bpk", data.clone());
                    let t = Instant::now();
                    ck.save(ckpt).unwrap();
                    let d = t.elapsed();
                    record(label, "durable_save", d);
                    total += d;
                    if !raw_first {
                        raw();
                    }
                }
                total
            })
        });
        let mut loads = 0u64;
        g.bench_function("verified_load", |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // As for the saves: which of the two reads goes first alternates.
                    loads += 1;
                    let raw_first = loads.is_multiple_of(2);
                    let raw = || {
                        let t = Instant::now();
                        let got = rt.block_on(async {
                            store.get(&key).await.unwrap().bytes().await.unwrap()
                        });
                        record(label, "raw_get", t.elapsed());
                        assert_eq!(got.len(), len);
                    };
                    if raw_first {
                        raw();
                    }
                    let t = Instant::now();
                    let l = ck.load(step).unwrap();
                    let d = t.elapsed();
                    assert_eq!(l.file("model.bpk").map(<[u8]>::len), Some(len));
                    record(label, "verified_load", d);
                    total += d;
                    if !raw_first {
                        raw();
                    }
                }
                total
            })
        });
        g.finish();
    }
    println!("\nratios of median times (raw / ours; >= 0.90 is the target):");
    for label in &sizes {
        let m = |n: &str| median_of(label, n);
        if let (Some(s), Some(p), Some(l), Some(g)) = (
            m("durable_save"),
            m("raw_put"),
            m("verified_load"),
            m("raw_get"),
        ) {
            println!(
                "{label:>6}: save {s:.3}s vs raw put {p:.3}s -> {:.3};  load {l:.3}s vs raw get {g:.3}s -> {:.3}",
                p / s,
                g / l
            );
            let pr = |a: &str, b: &str| common::paired_ratio(label, a, b).unwrap_or(f64::NAN);
            println!(
                "{:>6}  median of paired ratios: save {:.3};  load {:.3}",
                "",
                pr("raw_put", "durable_save"),
                pr("raw_get", "verified_load")
            );
            if std::env::var_os("EXPTRACK_BENCH_PAIRS").is_some() {
                for (what, ours, base, base_name) in [
                    ("save", "durable_save", "raw_put", "raw put"),
                    ("load", "verified_load", "raw_get", "raw get"),
                ] {
                    for (o, r) in times_of(label, ours).iter().zip(times_of(label, base)) {
                        println!(
                            "{label:>6}  pair: {what} {o:.3}s  {base_name} {r:.3}s  -> {:.3}",
                            r / o
                        );
                    }
                }
            }
        }
    }
}
