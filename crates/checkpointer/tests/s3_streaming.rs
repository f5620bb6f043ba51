//! Issue 15: `verify` on an object store streams each object through the hash without holding
//! it (memory stays at a few MiB whatever the checkpoint's size, so multi-GB checkpoints verify
//! on a small machine), and a load streams into the content's final buffer with the hash
//! following (no second, whole-object download buffer, compressed or not). Measured with a
//! counting global allocator: the peak of live heap bytes above the level before the call, and
//! the largest single allocation, against an in-process store (`memory://`) and a real S3 server
//! (SeaweedFS, `common/seaweed.rs`).
#![cfg(feature = "s3")]

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::payload;
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, Compression, ModelCheckpointer};

/// Counts live heap bytes, their peak and the largest single allocation.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static LARGEST: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = LIVE.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
    LARGEST.fetch_max(size, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, passed on.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract, passed on.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// One measurement at a time (the counters are process-wide).
static MEASURING: Mutex<()> = Mutex::new(());

/// Runs `f`; returns its value, the peak of live heap bytes above the level before it, and the
/// largest single allocation during it.
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    LARGEST.store(0, Ordering::Relaxed);
    let value = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(start);
    (value, peak, LARGEST.load(Ordering::Relaxed))
}

const MIB: usize = 1 << 20;
/// The checkpoint file: bigger than any budget below, so buffering it whole cannot pass.
const SIZE: usize = 48 * MIB;
/// What a streaming verify may hold: a few pipe buffers and the download queue.
const VERIFY_BUDGET: usize = 16 * MIB;

/// Saves one checkpoint of [`SIZE`] incompressible bytes (so a zstd object is as big as its
/// content) under `root`, then measures `verify` and `load` of it.
fn streams(root: &str, experiment: &str, compression: Compression) {
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let config = CheckpointConfig {
        dir: root.into(),
        compression,
        ..CheckpointConfig::default()
    };
    let data = payload(SIZE, 11, false);
    let mut ckpt = ModelCheckpointer::open(experiment, config).expect("open");
    let info = ckpt
        .save(Checkpoint::new(1).file("model.bpk", data.clone()))
        .expect("save");
    let stored = info.files[0].stored_size as usize;
    assert!(stored > SIZE * 9 / 10, "{compression:?}: stored {stored}");

    let (verified, peak, largest) = measure(|| ckpt.verify(1));
    verified.expect("verify");
    assert!(
        peak < VERIFY_BUDGET && largest < VERIFY_BUDGET / 2,
        "{root} {compression:?}: verify of a {} MiB object held {} MiB at its peak (largest \
         buffer {} MiB): it is not streamed",
        SIZE / MIB,
        peak / MIB,
        largest / MIB
    );

    let (loaded, peak, largest) = measure(|| ckpt.load_file(1, "model.bpk"));
    let loaded = loaded.expect("load");
    assert!(
        loaded == data,
        "{root} {compression:?}: loaded bytes differ"
    );
    drop(loaded);
    assert!(
        largest <= SIZE,
        "the content's buffer is the largest allocation"
    );
    assert!(
        peak < SIZE + VERIFY_BUDGET,
        "{root} {compression:?}: a load of {} MiB held {} MiB at its peak: the object was \
         buffered besides the content",
        SIZE / MIB,
        peak / MIB
    );
}

#[test]
fn verify_and_load_stream_on_an_in_process_store() {
    streams("memory://streaming/p", "raw", Compression::Off);
    streams("memory://streaming/p", "zstd", Compression::Zstd(1));
}

#[test]
fn verify_and_load_stream_on_s3() {
    let Some(server) = common::s3_server() else {
        return;
    };
    let root = server.url("streaming");
    streams(&root, "raw", Compression::Off);
    streams(&root, "zstd", Compression::Zstd(1));
    // The streaming verify still catches a flipped byte and names the object.
    let config = CheckpointConfig {
        dir: root.clone().into(),
        ..CheckpointConfig::default()
    };
    let ckpt = ModelCheckpointer::open("raw", config).expect("open");
    let info = ckpt.latest().expect("checkpoint");
    common::s3_corrupt(&info, "model.bpk");
    let e = ckpt.verify(info.step).expect_err("corruption not detected");
    let text = e.to_string();
    assert!(text.contains("model.bpk"), "{text}");
}

/// Rewrites the `checkpoint.json` of `info` on the S3 server with `edit` applied.
fn edit_remote_manifest(
    info: &exptrack_checkpoint::CheckpointInfo,
    edit: impl FnOnce(&mut serde_json::Value),
) {
    use object_store::ObjectStoreExt;
    let dir = info.dir.to_string_lossy().to_string();
    let rel = dir
        .strip_prefix(&format!("s3://{}/", common::seaweed::BUCKET))
        .expect("s3 dir");
    let key = object_store::path::Path::from(format!("{rel}/checkpoint.json"));
    let store = common::s3_raw();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bytes = store
            .get(&key)
            .await
            .expect("checkpoint.json")
            .bytes()
            .await
            .unwrap();
        let mut v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        edit(&mut v);
        store
            .put(&key, serde_json::to_vec(&v).unwrap().into())
            .await
            .unwrap();
    });
}

/// A `checkpoint.json` on S3 that lies about a file's size is refused before a buffer of that
/// size is made: a raw file's recorded size against the object's size, a zstd file's against
/// the size its frame header declares (issue 15; the local checkpointer checks both before it
/// allocates, too).
#[test]
fn a_lying_size_on_s3_is_refused_before_the_buffer_is_made() {
    let Some(server) = common::s3_server() else {
        return;
    };
    let _one = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
    let root = server.url("lying-sizes");
    for (experiment, compression) in [("raw", Compression::Off), ("zstd", Compression::Zstd(1))] {
        let config = CheckpointConfig {
            dir: root.clone().into(),
            compression,
            ..CheckpointConfig::default()
        };
        let data = payload(2 * MIB, 5, false);
        let mut ckpt = ModelCheckpointer::open(experiment, config.clone()).expect("open");
        let info = ckpt
            .save(Checkpoint::new(1).file("model.bpk", data))
            .expect("save");
        // 1 GiB: small enough that any machine's allocator hands it out (lazily zeroed), so
        // a load that makes the buffer before checking shows it as its largest allocation.
        let lie: u64 = 1 << 30;
        edit_remote_manifest(&info, |v| {
            v["files"][0]["size"] = serde_json::json!(lie);
            if compression == Compression::Off {
                v["files"][0]["stored_size"] = serde_json::json!(lie);
            }
        });
        drop(ckpt);
        let ckpt = ModelCheckpointer::open(experiment, config).expect("reopen");
        let (loaded, _peak, largest) = measure(|| ckpt.load_file(1, "model.bpk"));
        let e = loaded.expect_err("a lying size loaded");
        let text = e.to_string();
        assert!(
            text.contains("model.bpk") && text.contains(&lie.to_string()),
            "{compression:?}: the error names neither the file nor the size: {text}"
        );
        assert!(
            largest < 64 * MIB,
            "{compression:?}: a {largest}-byte buffer was made for a size the object does not have"
        );
    }
}
