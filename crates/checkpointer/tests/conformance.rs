//! The checkpointer's conformance suite: the same test functions run against a local directory,
//! the in-process memory store (any object-store feature) and a real S3 server (SeaweedFS, feature
//! `s3`; see `common/seaweed.rs`). Save, load, verify, retention, leases, replace, resume,
//! completion, async saves, corruption fallback, readers, concurrent writers.

mod common;

use common::{payload, reference_digest};
use exptrack_checkpoint::{
    Checkpoint, CheckpointConfig, CheckpointInfo, Compression, Error, HashAlgo, Mode,
    ModelCheckpointer, Resume,
};

/// One place checkpoints can live, and how a test corrupts a stored file there.
pub struct Backend {
    /// For messages.
    pub name: &'static str,
    /// `[checkpointing] dir`.
    pub root: String,
    /// Flips a byte of a stored file of a checkpoint (None: not possible here).
    pub corrupt: Option<fn(&Backend, &CheckpointInfo, &str)>,
    /// Whether several writers may share the location (object stores).
    pub shared_writers: bool,
    _tmp: Option<tempfile::TempDir>,
}

impl Backend {
    fn config(&self) -> CheckpointConfig {
        CheckpointConfig {
            dir: self.root.clone().into(),
            ..CheckpointConfig::default()
        }
    }

    fn last_best(&self, n: usize) -> CheckpointConfig {
        CheckpointConfig {
            max_checkpoints: Some(n),
            monitor: Some("val_loss".into()),
            mode: Mode::Min,
            ..self.config()
        }
    }
}

#[cfg(feature = "object-store")]
fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{tag}-{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn local() -> Option<Backend> {
    let tmp = tempfile::tempdir().unwrap();
    Some(Backend {
        name: "local",
        root: tmp.path().display().to_string(),
        corrupt: Some(|_, info, name| {
            let path = info.path_of(name);
            let mut bytes = std::fs::read(&path).unwrap();
            let mid = bytes.len() / 2;
            bytes[mid] ^= 0xFF;
            std::fs::write(&path, bytes).unwrap();
        }),
        shared_writers: false,
        _tmp: Some(tmp),
    })
}

#[cfg(feature = "object-store")]
fn memory() -> Option<Backend> {
    Some(Backend {
        name: "memory",
        root: format!("memory://{}/runs", unique("mem")),
        corrupt: None,
        shared_writers: true,
        _tmp: None,
    })
}

#[cfg(feature = "s3")]
fn s3() -> Option<Backend> {
    let server = common::s3_server()?;
    Some(Backend {
        name: "s3",
        root: server.url(&unique("conf")),
        corrupt: Some(|_, info, name| common::s3_corrupt(info, name)),
        shared_writers: true,
        _tmp: None,
    })
}

fn steps(c: &ModelCheckpointer) -> Vec<u64> {
    c.list().iter().map(|i| i.step).collect()
}

fn ck(step: u64, loss: f64) -> Checkpoint {
    Checkpoint::new(step)
        .epoch(step / 10)
        .metric("val_loss", loss)
        .file("model.bpk", payload(3000 + step as usize, step, false))
        .file("optimizer.bpk", payload(100, step + 1000, true))
}

/// The suite: each function gets a fresh location.
mod suite {
    use super::*;

    pub fn round_trip_raw_and_zstd_both_digests(b: &Backend) {
        // 40 MiB: several multipart parts on an object store; the small file one plain put.
        let big = payload(40 << 20, 7, true);
        for (i, (compression, algo)) in [
            (Compression::Off, HashAlgo::Blake3),
            (Compression::Zstd(1), HashAlgo::Sha256),
        ]
        .into_iter()
        .enumerate()
        {
            let cfg = CheckpointConfig {
                compression,
                hash: algo,
                ..b.last_best(2)
            };
            let id = format!("exp-{i}");
            let mut c = ModelCheckpointer::open(&id, cfg.clone()).unwrap();
            let info = c
                .save(
                    Checkpoint::new(5)
                        .epoch(1)
                        .metric("val_loss", 0.5)
                        .file("model.bpk", big.clone())
                        .file("small.bin", b"tiny".to_vec())
                        .file("empty.bin", Vec::new())
                        .extra(serde_json::json!({"rng": 42})),
                )
                .unwrap();
            assert!(info.is_best);
            assert_eq!(info.files[0].hash.to_string(), reference_digest(algo, &big));
            if compression != Compression::Off {
                assert!(info.files[0].stored_size < info.files[0].size / 2);
            }
            let r = ModelCheckpointer::open_read_only(&id, cfg).unwrap();
            let loaded = r.load(5).unwrap();
            assert_eq!(loaded.file("model.bpk").unwrap(), &big[..]);
            assert_eq!(loaded.file("small.bin").unwrap(), b"tiny");
            assert_eq!(loaded.file("empty.bin").unwrap(), b"");
            assert_eq!(loaded.info.extra["rng"], 42);
            assert_eq!(r.load_file(5, "small.bin").unwrap(), b"tiny");
            r.verify(5).unwrap();
            assert!(matches!(
                r.load_file(5, "nope"),
                Err(Error::NoSuchFile { .. })
            ));
            assert!(matches!(r.load(6), Err(Error::NotFound { step: 6, .. })));
        }
    }

    pub fn file_from_path_streams_and_hashes(b: &Backend) {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("weights.bin");
        let data = payload(20 << 20, 3, true);
        std::fs::write(&src, &data).unwrap();
        for (i, compression) in [Compression::Off, Compression::Zstd(3)]
            .into_iter()
            .enumerate()
        {
            let cfg = CheckpointConfig {
                compression,
                ..b.config()
            };
            let mut c = ModelCheckpointer::open(&format!("path-{i}"), cfg).unwrap();
            let info = c
                .save(Checkpoint::new(1).file_from_path("weights.bin", &src))
                .unwrap();
            assert_eq!(info.files[0].size, data.len() as u64);
            assert_eq!(
                info.files[0].hash.to_string(),
                reference_digest(HashAlgo::Blake3, &data)
            );
            assert_eq!(c.load_file(1, "weights.bin").unwrap(), data);
        }
    }

    pub fn retention_keeps_last_best_and_every(b: &Backend) {
        let cfg = CheckpointConfig {
            keep_every: Some(10),
            ..b.last_best(2)
        };
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        let losses = [
            0.9, 0.2, 0.5, 0.6, 0.7, 0.8, 0.85, 0.95, 0.99, 0.97, 0.98, 0.96,
        ];
        for (i, l) in losses.iter().enumerate() {
            c.save(ck(i as u64 + 1, *l)).unwrap();
        }
        assert_eq!(steps(&c), vec![2, 10, 11, 12]);
        assert_eq!(c.best().unwrap().step, 2);
        assert_eq!(c.latest().unwrap().step, 12);
        drop(c);
        let c = ModelCheckpointer::open("exp", cfg).unwrap();
        assert_eq!(steps(&c), vec![2, 10, 11, 12], "what survives reopens");
        assert!(
            c.reconcile_report().rebuilt.is_empty(),
            "registry was current"
        );
        assert!(c.reconcile_report().dropped.is_empty());
        for s in steps(&c) {
            c.verify(s).unwrap();
        }
    }

    pub fn is_best_is_strict_and_survives_reopen(b: &Backend) {
        let cfg = b.last_best(10);
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        assert!(c.save(ck(1, 0.5)).unwrap().is_best);
        assert!(!c.save(ck(2, 0.5)).unwrap().is_best);
        assert!(c.save(ck(3, 0.4)).unwrap().is_best);
        drop(c);
        let c = ModelCheckpointer::open("exp", cfg).unwrap();
        let best: Vec<bool> = c.list().iter().map(|i| i.is_best).collect();
        assert_eq!(best, vec![true, false, true]);
        assert_eq!(c.best().unwrap().step, 3);
    }

    pub fn leases_block_deletion_until_dropped(b: &Backend) {
        let cfg = b.last_best(1);
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        c.save(ck(1, 0.1)).unwrap();
        c.save(ck(2, 0.9)).unwrap();
        let lease = c.lease(2).unwrap();
        assert_eq!(lease.step(), 2);
        c.save(ck(3, 0.9)).unwrap();
        assert_eq!(steps(&c), vec![1, 2, 3], "leased step 2 must survive");
        assert!(c.prune_plan().is_empty());
        let reader = ModelCheckpointer::open_read_only("exp", cfg).unwrap();
        let lease3 = reader.lease(3).unwrap();
        assert!(reader.load(3).is_ok());
        c.save(ck(4, 0.9)).unwrap();
        assert_eq!(steps(&c), vec![1, 2, 3, 4]);
        assert!(matches!(c.save(ck(3, 0.9)), Err(Error::Leased { step: 3 })));
        drop(lease);
        assert_eq!(c.prune_plan(), vec![2]);
        assert_eq!(c.prune().unwrap(), vec![2]);
        drop(lease3);
        assert_eq!(c.prune().unwrap(), vec![3]);
        assert_eq!(steps(&c), vec![1, 4]);
        assert!(matches!(c.lease(3), Err(Error::NotFound { step: 3, .. })));
        assert!(matches!(
            reader.load(3),
            Err(Error::NotFound { step: 3, .. })
        ));
    }

    pub fn saving_an_existing_step_replaces_it(b: &Backend) {
        let cfg = b.config();
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        c.save(Checkpoint::new(5).file("m", vec![1; 100])).unwrap();
        c.save(Checkpoint::new(5).file("m", vec![2; 50]).file("n", vec![3]))
            .unwrap();
        c.wait().unwrap();
        assert_eq!(steps(&c), vec![5]);
        assert_eq!(c.load_file(5, "m").unwrap(), vec![2; 50]);
        drop(c);
        let c = ModelCheckpointer::open("exp", cfg).unwrap();
        let l = c.load(5).unwrap();
        assert_eq!(l.file("m").unwrap(), &[2; 50][..]);
        assert_eq!(l.file("n").unwrap(), &[3][..]);
        assert!(
            c.reconcile_report().removed_temp.is_empty(),
            "{:?}",
            c.reconcile_report()
        );
    }

    pub fn resume_loads_latest_valid(b: &Backend) {
        let cfg = b.last_best(3);
        {
            let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
            assert!(matches!(c.resume_or_start().unwrap(), Resume::Fresh));
            for s in 1..=4 {
                c.save(ck(s, 1.0 / s as f64)).unwrap();
            }
        }
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        match c.resume_or_start().unwrap() {
            Resume::Resumed(l) => {
                assert_eq!(l.step(), 4);
                assert_eq!(l.file("model.bpk").unwrap(), &payload(3004, 4, false)[..]);
            }
            other => panic!("expected Resumed, got {other:?}"),
        }
    }

    pub fn completion_and_force_restart(b: &Backend) {
        {
            let mut c = ModelCheckpointer::open("exp", b.config()).unwrap();
            c.save(ck(1, 0.3)).unwrap();
            assert!(!c.is_completed());
            c.mark_completed(serde_json::json!({"val_loss": 0.3}))
                .unwrap();
            assert!(c.is_completed());
        }
        {
            let mut c = ModelCheckpointer::open("exp", b.config()).unwrap();
            match c.resume_or_start().unwrap() {
                Resume::Completed(r) => assert_eq!(r["val_loss"], 0.3),
                other => panic!("expected Completed, got {other:?}"),
            }
        }
        let mut cfg = b.config();
        cfg.force = true;
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        assert!(matches!(c.resume_or_start().unwrap(), Resume::Fresh));
        assert!(!c.is_completed());
        assert!(c.list().is_empty());
        c.save(ck(1, 0.5)).unwrap();
        assert_eq!(steps(&c), vec![1]);
        drop(c);
        let c = ModelCheckpointer::open("exp", b.config()).unwrap();
        assert_eq!(steps(&c), vec![1]);
        assert_eq!(
            c.load_file(1, "model.bpk").unwrap(),
            payload(3001, 1, false)
        );
    }

    pub fn async_saves_commit_in_order_and_drop_waits(b: &Backend) {
        let mut cfg = b.last_best(3);
        cfg.max_in_flight = 2;
        {
            let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
            for s in 1..=6 {
                c.save_async(ck(s, 1.0 / s as f64)).unwrap();
            }
            c.wait().unwrap();
            assert_eq!(steps(&c), vec![4, 5, 6]);
            c.save_async(ck(7, 0.01)).unwrap();
        }
        let c = ModelCheckpointer::open("exp", cfg).unwrap();
        assert_eq!(c.latest().unwrap().step, 7);
        c.verify(7).unwrap();
    }

    pub fn corruption_names_the_file_and_falls_back(b: &Backend) {
        let Some(corrupt) = b.corrupt else {
            return;
        };
        for compression in [Compression::Off, Compression::Zstd(3)] {
            let cfg = CheckpointConfig {
                compression,
                ..b.config()
            };
            let id = format!("exp-{}", compression != Compression::Off);
            let mut c = ModelCheckpointer::open(&id, cfg).unwrap();
            c.save(ck(1, 0.5)).unwrap();
            let info = c.save(ck(2, 0.4)).unwrap();
            corrupt(b, &info, "model.bpk");
            let err = c.verify(2).unwrap_err();
            assert!(err.is_corruption(), "{err}");
            assert!(err.to_string().contains("model.bpk"), "{err}");
            assert!(c.load(2).unwrap_err().is_corruption());
            let l = c.load_latest_valid().unwrap().unwrap();
            assert_eq!(l.step(), 1, "falls back to the previous valid checkpoint");
            match c.resume_or_start().unwrap() {
                Resume::Resumed(l) => assert_eq!(l.step(), 1),
                other => panic!("{other:?}"),
            }
        }
    }

    pub fn reader_sees_commits_after_refresh(b: &Backend) {
        let mut w = ModelCheckpointer::open("exp", b.config()).unwrap();
        let r = ModelCheckpointer::open_read_only("exp", b.config()).unwrap();
        assert!(r.list().is_empty());
        w.save(ck(1, 0.5)).unwrap();
        assert!(r.list().is_empty());
        // A committed step loads even before a refresh.
        assert_eq!(r.load(1).unwrap().step(), 1);
        r.refresh().unwrap();
        assert_eq!(steps(&r), vec![1]);
        assert!(matches!(
            r.open_check_read_only(),
            Err(Error::ReadOnly { .. })
        ));
    }

    /// Object stores have no writer lock: two writers of one location lose no registry update.
    pub fn concurrent_writers_lose_no_registry_update(b: &Backend) {
        if !b.shared_writers {
            return;
        }
        let cfg = b.config();
        let threads: Vec<_> = (0..2u64)
            .map(|t| {
                let cfg = cfg.clone();
                std::thread::spawn(move || {
                    let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
                    for i in 0..8 {
                        let step = t * 100 + i;
                        c.save(Checkpoint::new(step).file("m", vec![t as u8; 64]))
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let r = ModelCheckpointer::open_read_only("exp", cfg).unwrap();
        let want: Vec<u64> = (0..8).chain(100..108).collect();
        assert_eq!(steps(&r), want);
        // The registry (read as stored, without a writer's repair) lists every save.
        let reg = r.registry_steps().unwrap();
        assert_eq!(reg, want, "registry.json lost an update");
    }
}

trait ReadOnlyCheck {
    fn open_check_read_only(&self) -> Result<(), Error>;
    fn registry_steps(&self) -> Option<Vec<u64>>;
}

impl ReadOnlyCheck for ModelCheckpointer {
    fn open_check_read_only(&self) -> Result<(), Error> {
        // `prune` needs `&mut`; a read-only handle refuses through `mark_completed` too, but
        // `prune_plan` is allowed: check the error path with a clone-free call.
        let mut again =
            ModelCheckpointer::open_read_only(self.experiment_id(), self.config().clone())?;
        again.prune().map(|_| ())
    }

    fn registry_steps(&self) -> Option<Vec<u64>> {
        let reg = self.stored_registry().ok()??;
        Some(
            reg["checkpoints"]
                .as_array()?
                .iter()
                .filter_map(|c| c["step"].as_u64())
                .collect(),
        )
    }
}

macro_rules! conformance {
    ($backend:ident: $($test:ident),* $(,)?) => {
        mod $backend {
            $(
                #[test]
                fn $test() {
                    let Some(b) = super::$backend() else { return };
                    eprintln!("{} on {}", stringify!($test), b.name);
                    super::suite::$test(&b);
                }
            )*
        }
    };
}

macro_rules! all_backends {
    ($($backend:ident),*) => {
        $(
            conformance!($backend:
                round_trip_raw_and_zstd_both_digests,
                file_from_path_streams_and_hashes,
                retention_keeps_last_best_and_every,
                is_best_is_strict_and_survives_reopen,
                leases_block_deletion_until_dropped,
                saving_an_existing_step_replaces_it,
                resume_loads_latest_valid,
                completion_and_force_restart,
                async_saves_commit_in_order_and_drop_waits,
                corruption_names_the_file_and_falls_back,
                reader_sees_commits_after_refresh,
                concurrent_writers_lose_no_registry_update,
            );
        )*
    };
}

all_backends!(local);
#[cfg(feature = "object-store")]
all_backends!(memory);
#[cfg(feature = "s3")]
all_backends!(s3);
