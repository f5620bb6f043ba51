//! Behaviour of ModelCheckpointer: commits, reconcile, integrity, leases, completion, async, disk full.

mod common;

use std::fs;
use std::path::Path;

use common::{ALGOS, config, config_last_best, hashed, payload, reference_digest, zstd};
use exptrack_checkpoint::{
    Checkpoint, CheckpointConfig, Compression, Error, HashAlgo, ModelCheckpointer, REGISTRY_JSON,
    Resume,
};

fn steps(c: &ModelCheckpointer) -> Vec<u64> {
    c.list().iter().map(|i| i.step).collect()
}

fn ck(step: u64, loss: f64) -> Checkpoint {
    Checkpoint::new(step)
        .epoch(step / 10)
        .metric("val_loss", loss)
        .metric("train_loss", loss * 2.0)
        .file("model.bpk", payload(3000 + step as usize, step, false))
        .file("optimizer.bpk", payload(100, step + 1000, true))
}

fn registry(dir: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(dir.join(REGISTRY_JSON)).unwrap()).unwrap()
}

#[test]
fn save_load_round_trip_with_and_without_zstd() {
    for compress in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config_last_best(tmp.path(), 2);
        if compress {
            cfg = zstd(cfg);
        }
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        let big = payload(3 << 20, 7, true);
        let info = c
            .save(
                Checkpoint::new(5)
                    .epoch(1)
                    .metric("val_loss", 0.5)
                    .file("model.bpk", big.clone())
                    .extra(serde_json::json!({"rng": 42})),
            )
            .unwrap();
        assert!(info.is_best);
        assert_eq!(info.files[0].size, big.len() as u64);
        if compress {
            assert!(
                info.files[0].stored_size < info.files[0].size / 2,
                "zstd should shrink compressible data"
            );
        }
        let dir = c.experiment_dir().join("ckpt-000000000005");
        assert!(dir.join("checkpoint.json").is_file());
        let loaded = c.load(5).unwrap();
        assert_eq!(loaded.file("model.bpk").unwrap(), &big[..]);
        assert_eq!(loaded.info.extra["rng"], 42);
        assert_eq!(loaded.info.epoch, Some(1));
        c.verify(5).unwrap();
        let reg = registry(c.experiment_dir());
        assert_eq!(reg["latest"], 5);
        assert_eq!(reg["best"], 5);
        let recorded = reg["checkpoints"][0]["files"][0]["hash"].as_str().unwrap();
        assert_eq!(recorded, reference_digest(HashAlgo::Blake3, &big));
        assert_eq!(reg["format_version"], 2);
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("checkpoint.json")).unwrap()).unwrap();
        assert_eq!(json["format_version"], 2);
        assert_eq!(json["files"][0]["hash"], recorded);
        assert!(json["files"][0].get("sha256").is_none(), "{json}");
    }
}

/// The default is BLAKE3; `hash = "sha256"` records SHA-256; both equal the reference crates'
/// digests, in the record and on disk.
#[test]
fn digests_match_independent_implementations() {
    let data = payload(20 << 20, 3, false);
    for (algo, explicit) in [(HashAlgo::Blake3, false), (HashAlgo::Sha256, true)] {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = config(tmp.path());
        if explicit {
            cfg = hashed(cfg, algo);
        }
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        let info = c.save(Checkpoint::new(1).file("w", data.clone())).unwrap();
        assert_eq!(info.files[0].hash.algo(), algo);
        assert_eq!(
            info.files[0].hash.to_string(),
            reference_digest(algo, &data)
        );
        let on_disk: serde_json::Value = serde_json::from_slice(
            &fs::read(c.experiment_dir().join("ckpt-000000000001/checkpoint.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(on_disk["files"][0]["hash"], reference_digest(algo, &data));
        c.verify(1).unwrap();
    }
}

#[test]
fn file_from_path_streams_and_hashes() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src.bin");
    let data = payload(17 << 20, 9, true);
    fs::write(&src, &data).unwrap();
    for cfg in [
        config(&tmp.path().join("a")),
        zstd(config(&tmp.path().join("b"))),
    ] {
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        c.save(Checkpoint::new(1).file_from_path("big", &src))
            .unwrap();
        assert_eq!(c.load_file(1, "big").unwrap(), data);
        c.verify(1).unwrap();
    }
}

#[test]
fn retention_keeps_last_and_best_and_every() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config_last_best(tmp.path(), 2);
    cfg.keep_every = Some(4);
    let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
    let losses = [0.9, 0.2, 0.5, 0.6, 0.7, 0.8, 0.3];
    for (i, l) in losses.iter().enumerate() {
        c.save(ck(i as u64 + 1, *l)).unwrap();
    }
    assert_eq!(steps(&c), vec![2, 4, 6, 7]);
    c.wait().unwrap(); // pruned directories are removed in the background
    assert_eq!(c.best().unwrap().step, 2);
    assert_eq!(c.latest().unwrap().step, 7);
    let on_disk: Vec<String> = {
        let mut v: Vec<String> = fs::read_dir(c.experiment_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.starts_with("ckpt-") || n.starts_with(".del") || n.starts_with(".tmp"))
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        on_disk,
        [
            "ckpt-000000000002",
            "ckpt-000000000004",
            "ckpt-000000000006",
            "ckpt-000000000007"
        ]
    );
}

/// Issue 12: with only `monitor` set, the config added keep-best-1 and deleted every checkpoint
/// but the latest and the best, while its docs say everything is kept. Only explicit rules delete.
#[test]
fn monitor_alone_deletes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    for (i, extra) in ["", "keep_best = 0"].into_iter().enumerate() {
        let t: toml::Table = toml::from_str(&format!("monitor = \"val_loss\"\n{extra}")).unwrap();
        let cfg = CheckpointConfig {
            dir: tmp.path().join(i.to_string()),
            ..CheckpointConfig::from_table(&t).unwrap()
        };
        assert!(
            cfg.policy().rules().is_empty(),
            "{extra}: {:?}",
            cfg.policy()
        );
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        for (s, loss) in [(1, 0.9), (2, 0.2), (3, 0.5), (4, 0.6), (5, 0.7)] {
            c.save(ck(s, loss)).unwrap();
        }
        c.wait().unwrap();
        assert_eq!(steps(&c), [1, 2, 3, 4, 5], "{extra}");
        assert_eq!(c.best().unwrap().step, 2);
        assert!(c.prune_plan().is_empty());
    }
}

#[test]
fn is_best_is_strict_improvement_and_survives_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
    assert!(c.save(ck(1, 0.5)).unwrap().is_best);
    assert!(!c.save(ck(2, 0.5)).unwrap().is_best);
    assert!(c.save(ck(3, 0.4)).unwrap().is_best);
    drop(c);
    let mut c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
    assert!(
        !c.save(ck(4, 0.45)).unwrap().is_best,
        "best value must be remembered across restarts"
    );
    assert_eq!(steps(&c), vec![3, 4]);
}

#[test]
fn reconcile_removes_temp_rebuilds_missing_drops_vanished() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = config_last_best(tmp.path(), 10);
    let exp = {
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        for s in 1..=3 {
            c.save(ck(s, 1.0 / s as f64)).unwrap();
        }
        c.experiment_dir().to_owned()
    };
    // A crash mid-save leaves a temp dir; a crash mid-delete a .del dir.
    fs::create_dir(exp.join(".tmp-ckpt-000000000004-1-0")).unwrap();
    fs::write(exp.join(".tmp-ckpt-000000000004-1-0/model.bpk"), b"partial").unwrap();
    fs::write(exp.join(".tmp-registry.json-77"), b"{").unwrap();
    // Registry lost step 3 (crash between commit rename and registry rewrite): rebuilt.
    let mut reg = registry(&exp);
    reg["checkpoints"]
        .as_array_mut()
        .unwrap()
        .retain(|c| c["step"] != 3);
    fs::write(exp.join(REGISTRY_JSON), serde_json::to_vec(&reg).unwrap()).unwrap();
    // Step 1 vanished (deleted by hand): dropped.
    fs::remove_dir_all(exp.join("ckpt-000000000001")).unwrap();
    // Mid-delete leftover.
    fs::rename(
        exp.join("ckpt-000000000002"),
        exp.join(".del-ckpt-000000000002-1-5"),
    )
    .unwrap();

    let c = ModelCheckpointer::open("exp", cfg).unwrap();
    let r = c.reconcile_report();
    assert_eq!(r.rebuilt, vec![3]);
    assert_eq!(r.dropped, vec![1, 2]);
    let mut removed = r.removed_temp.clone();
    removed.sort();
    assert_eq!(
        removed,
        [
            ".del-ckpt-000000000002-1-5",
            ".tmp-ckpt-000000000004-1-0",
            ".tmp-registry.json-77"
        ]
    );
    assert!(!exp.join(".tmp-ckpt-000000000004-1-0").exists());
    assert_eq!(steps(&c), vec![3]);
    let reg = registry(&exp);
    assert_eq!(reg["latest"], 3);
    assert_eq!(reg["checkpoints"].as_array().unwrap().len(), 1);
    // A missing registry is rebuilt entirely.
    drop(c);
    fs::remove_file(exp.join(REGISTRY_JSON)).unwrap();
    let c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 10)).unwrap();
    assert_eq!(c.reconcile_report().rebuilt, vec![3]);
    assert_eq!(registry(&exp)["latest"], 3);
}

#[test]
fn unreadable_and_foreign_checkpoints_are_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = {
        let mut c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
        c.save(ck(1, 0.1)).unwrap();
        c.experiment_dir().to_owned()
    };
    fs::create_dir(exp.join("ckpt-000000000009")).unwrap();
    fs::write(exp.join("ckpt-000000000009/checkpoint.json"), b"not json").unwrap();
    let mut c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
    assert_eq!(c.reconcile_report().unreadable, ["ckpt-000000000009"]);
    for s in 2..5 {
        c.save(ck(s, 1.0)).unwrap();
    }
    assert!(
        exp.join("ckpt-000000000009").exists(),
        "never delete what we cannot read"
    );
}

#[test]
fn flipped_byte_names_the_file_and_falls_back() {
    let both = |algo| {
        [
            hashed(config(Path::new("")), algo),
            hashed(zstd(config(Path::new(""))), algo),
        ]
    };
    for cfg in ALGOS.into_iter().flat_map(both) {
        let tmp = tempfile::tempdir().unwrap();
        let algo = cfg.hash;
        let cfg = CheckpointConfig {
            dir: tmp.path().to_owned(),
            ..cfg
        };
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        c.save(ck(1, 0.5)).unwrap();
        c.save(
            Checkpoint::new(2)
                .file("model.bpk", payload(2 << 20, 2, true))
                .file("optimizer.bpk", vec![1; 10]),
        )
        .unwrap();
        let victim = c.experiment_dir().join("ckpt-000000000002/model.bpk");
        let mut bytes = fs::read(&victim).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        fs::write(&victim, &bytes).unwrap();

        for err in [
            c.verify(2).unwrap_err(),
            c.load(2).unwrap_err(),
            c.load_latest().unwrap_err(),
        ] {
            assert!(err.is_corruption(), "{err}");
            assert!(
                err.to_string().contains("ckpt-000000000002/model.bpk"),
                "error must name the file: {err}"
            );
            if cfg_is_raw(&c) {
                assert!(
                    err.to_string().contains(algo.name()),
                    "names the recorded algorithm: {err}"
                );
            }
        }
        let fallback = c.load_latest_valid().unwrap().unwrap();
        assert_eq!(fallback.step(), 1);
        match c.resume_or_start().unwrap() {
            Resume::Resumed(r) => assert_eq!(r.step(), 1),
            other => panic!("expected resume from 1, got {other:?}"),
        }
        // Truncation is caught too.
        fs::write(&victim, &bytes[..10]).unwrap();
        assert!(c.verify(2).unwrap_err().is_corruption());
        assert!(c.load(2).unwrap_err().is_corruption());
    }
}

fn cfg_is_raw(c: &ModelCheckpointer) -> bool {
    c.config().compression == Compression::Off
}

#[test]
fn all_corrupt_is_an_error_not_a_silent_fresh_start() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    c.save(Checkpoint::new(1).file("m", vec![1; 100])).unwrap();
    fs::write(c.experiment_dir().join("ckpt-000000000001/m"), vec![2; 100]).unwrap();
    assert!(c.load_latest_valid().unwrap_err().is_corruption());
    let empty = ModelCheckpointer::open("other", config(tmp.path())).unwrap();
    assert!(empty.load_latest_valid().unwrap().is_none());
}

#[test]
fn leases_block_deletion_until_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
    c.save(ck(1, 0.1)).unwrap();
    c.save(ck(2, 0.9)).unwrap();
    let lease = c.lease(2).unwrap();
    assert_eq!(lease.step(), 2);
    c.save(ck(3, 0.9)).unwrap();
    assert_eq!(steps(&c), vec![1, 2, 3], "leased step 2 must survive");
    assert!(c.prune_plan().is_empty());
    // A lease from a reader opened separately (read-only) counts as well.
    let reader = ModelCheckpointer::open_read_only("exp", config_last_best(tmp.path(), 1)).unwrap();
    let lease3 = reader.lease(3).unwrap();
    assert!(reader.load(3).is_ok());
    c.save(ck(4, 0.9)).unwrap();
    assert_eq!(steps(&c), vec![1, 2, 3, 4]);
    drop(lease);
    assert_eq!(c.prune_plan(), vec![2]);
    assert_eq!(c.prune().unwrap(), vec![2]);
    drop(lease3);
    assert_eq!(c.prune().unwrap(), vec![3]);
    assert_eq!(steps(&c), vec![1, 4]);
    assert!(matches!(c.lease(3), Err(Error::NotFound { step: 3, .. })));
    // Leases of dead processes are stale and ignored.
    fs::write(c.experiment_dir().join("leases/4-999999999-0"), b"").unwrap();
    c.save(ck(5, 0.9)).unwrap();
    assert_eq!(steps(&c), vec![1, 5]);
}

#[test]
fn lease_file_of_a_live_process_protects() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
    c.save(ck(1, 0.1)).unwrap();
    c.save(ck(2, 0.9)).unwrap();
    // pid 1 (init) is alive: a lease another process holds.
    fs::create_dir_all(c.experiment_dir().join("leases")).unwrap();
    fs::write(c.experiment_dir().join("leases/2-1-0"), b"").unwrap();
    c.save(ck(3, 0.9)).unwrap();
    assert_eq!(steps(&c), vec![1, 2, 3]);
}

#[test]
fn read_only_and_single_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    assert!(matches!(
        ModelCheckpointer::open("exp", config(tmp.path())),
        Err(Error::Locked { .. })
    ));
    c.save(ck(1, 0.1)).unwrap();
    let mut r = ModelCheckpointer::open_read_only("exp", config(tmp.path())).unwrap();
    assert_eq!(steps(&r), vec![1]);
    assert!(matches!(r.save(ck(2, 0.1)), Err(Error::ReadOnly { .. })));
    c.save(ck(2, 0.1)).unwrap();
    assert!(
        r.load(2).is_ok(),
        "a reader can load checkpoints committed after it opened"
    );
    r.refresh().unwrap();
    assert_eq!(steps(&r), vec![1, 2]);
    drop(c);
    ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
}

#[test]
fn saving_an_existing_step_replaces_it() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    c.save(Checkpoint::new(7).file("m", vec![1; 10])).unwrap();
    c.save(Checkpoint::new(7).file("m", vec![2; 20])).unwrap();
    assert_eq!(c.load_file(7, "m").unwrap(), vec![2; 20]);
    assert_eq!(steps(&c), vec![7]);
    c.wait().unwrap();
    let leftovers = fs::read_dir(c.experiment_dir()).unwrap().filter(|e| {
        let n = e.as_ref().unwrap().file_name();
        let n = n.to_string_lossy();
        n.starts_with(".tmp") || n.starts_with(".del")
    });
    assert_eq!(leftovers.count(), 0);
    let _lease = c.lease(7).unwrap();
    assert!(matches!(
        c.save(Checkpoint::new(7).file("m", vec![3])),
        Err(Error::Leased { step: 7 })
    ));
}

#[test]
fn invalid_names_and_ids_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        ModelCheckpointer::open("../x", config(tmp.path())),
        Err(Error::InvalidExperimentId { .. })
    ));
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    for name in ["", "a/b", ".hidden", "checkpoint.json"] {
        let e = c.save(Checkpoint::new(1).file(name, vec![1])).unwrap_err();
        assert!(matches!(e, Error::InvalidFileName { .. }), "{name:?}: {e}");
    }
    let e = c
        .save(Checkpoint::new(1).file("a", vec![1]).file("a", vec![2]))
        .unwrap_err();
    assert!(matches!(e, Error::InvalidFileName { .. }));
    assert!(c.list().is_empty());
}

#[test]
fn completion_and_force_restart() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
        assert!(matches!(c.resume_or_start().unwrap(), Resume::Fresh));
        c.save(ck(1, 0.3)).unwrap();
        assert!(!c.is_completed());
        c.mark_completed(serde_json::json!({"val_loss": 0.3}))
            .unwrap();
        assert!(c.is_completed());
    }
    {
        let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
        match c.resume_or_start().unwrap() {
            Resume::Completed(r) => assert_eq!(r["val_loss"], 0.3),
            other => panic!("expected Completed, got {other:?}"),
        }
        assert_eq!(c.completed_results().unwrap().unwrap()["val_loss"], 0.3);
    }
    let mut cfg = config(tmp.path());
    cfg.force = true;
    let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
    assert!(matches!(c.resume_or_start().unwrap(), Resume::Fresh));
    assert!(!c.is_completed());
    assert!(c.list().is_empty());
    let archive: Vec<_> = fs::read_dir(c.experiment_dir().join("archive"))
        .unwrap()
        .collect();
    assert_eq!(
        archive.len(),
        1,
        "old checkpoints are archived, not destroyed"
    );
    c.save(ck(1, 0.5)).unwrap();
    assert_eq!(steps(&c), vec![1]);
}

#[test]
fn async_saves_commit_in_order_and_drop_waits() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = config_last_best(tmp.path(), 3);
    cfg.max_in_flight = 2;
    {
        let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
        for s in 1..=6 {
            c.save_async(ck(s, 1.0 / s as f64)).unwrap();
        }
        c.wait().unwrap();
        assert_eq!(steps(&c), vec![4, 5, 6]);
        c.save_async(ck(7, 0.01)).unwrap();
        // drop waits
    }
    let c = ModelCheckpointer::open("exp", cfg).unwrap();
    assert_eq!(c.latest().unwrap().step, 7);
    c.verify(7).unwrap();
}

#[test]
fn async_error_surfaces_on_next_call_and_on_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    c.save(ck(1, 0.5)).unwrap();
    c.fail_writes_after(Some(0));
    c.save_async(ck(2, 0.4)).unwrap();
    // Surfaces on wait().
    let e = c.wait().unwrap_err();
    assert!(matches!(e, Error::AsyncSave { step: 2, .. }), "{e}");
    assert!(e.is_disk_full());
    assert!(c.wait().is_ok(), "reported once");
    // Surfaces on the next save_async.
    c.save_async(ck(3, 0.4)).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    c.fail_writes_after(None);
    let e = c.save_async(ck(4, 0.4)).unwrap_err();
    assert!(matches!(e, Error::AsyncSave { step: 3, .. }), "{e}");
    // ... or on the next sync save.
    c.fail_writes_after(Some(0));
    c.save_async(ck(5, 0.4)).unwrap();
    let e = c.save(ck(6, 0.4)).unwrap_err();
    assert!(matches!(e, Error::AsyncSave { step: 5, .. }), "{e}");
    c.fail_writes_after(None);
    c.save(ck(6, 0.4)).unwrap();
    assert_eq!(steps(&c), vec![1, 6]);
    for s in [1, 6] {
        c.verify(s).unwrap();
    }
}

#[test]
fn injected_disk_full_keeps_earlier_checkpoints() {
    for algo in ALGOS {
        injected_disk_full_keeps_earlier_checkpoints_with(algo);
    }
}

fn injected_disk_full_keeps_earlier_checkpoints_with(algo: HashAlgo) {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = |d: &Path| hashed(config_last_best(d, 1), algo);
    let mut c = ModelCheckpointer::open("exp", cfg(tmp.path())).unwrap();
    c.save(ck(1, 0.5)).unwrap();
    c.save(ck(2, 0.6)).unwrap();
    // Fail at several points: first file, mid file, second file, checkpoint.json, registry.
    for budget in [
        0u64,
        1,
        4096,
        3000 + 3,
        3000 + 3 + 100,
        3000 + 3 + 100 + 200,
    ] {
        c.fail_writes_after(Some(budget));
        match c.save(ck(3, 0.1)) {
            Err(e) => {
                assert!(e.is_disk_full(), "budget {budget}: {e}");
                assert!(e.to_string().contains("disk full"), "{e}");
                assert_eq!(steps(&c), vec![1, 2], "budget {budget}");
            }
            // The budget allowed the whole checkpoint; only registry.json failed (a cache).
            Ok(_) => {
                assert!(budget > 3100, "budget {budget} should have failed");
                c.fail_writes_after(None);
                // Step 3 is the new latest and best: retention (keep last 1 + best) dropped 1 and 2.
                assert_eq!(steps(&c), vec![3]);
                break;
            }
        }
        c.fail_writes_after(None);
        for s in steps(&c) {
            c.verify(s).unwrap();
        }
        let names: Vec<String> = fs::read_dir(c.experiment_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(
            !names.iter().any(|n| n.starts_with(".tmp")),
            "partial save cleaned up: {names:?}"
        );
    }
    c.fail_writes_after(None);
    drop(c);
    let c = ModelCheckpointer::open("exp", config_last_best(tmp.path(), 1)).unwrap();
    for s in steps(&c) {
        c.verify(s).unwrap();
    }
}

#[test]
fn real_enospc_on_a_small_tmpfs() {
    let mnt = tempfile::tempdir().unwrap();
    let path = mnt.path().to_str().unwrap().to_owned();
    let ok = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "tmpfs", &path])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "skipping: cannot mount a tmpfs here (needs root and mount permission); the injected-writer test covers ENOSPC"
        );
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount").arg(&self.0).status();
        }
    }
    let _guard = Unmount(path.clone());
    let result = std::panic::catch_unwind(|| {
        for compression in [Compression::Off, Compression::Zstd(1)] {
            let root = mnt.path().join(format!("{compression:?}"));
            let cfg = CheckpointConfig {
                compression,
                ..config_last_best(&root, 2)
            };
            let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
            c.save(
                Checkpoint::new(1)
                    .metric("val_loss", 0.5)
                    .file("m", payload(1 << 20, 1, false)),
            )
            .unwrap();
            let e = c
                .save(
                    Checkpoint::new(2)
                        .metric("val_loss", 0.4)
                        .file("m", payload(8 << 20, 2, false)),
                )
                .unwrap_err();
            assert!(e.is_disk_full(), "{e}");
            assert!(
                e.to_string().contains("ckpt-000000000002"),
                "names the checkpoint being written: {e}"
            );
            assert_eq!(steps(&c), vec![1]);
            c.verify(1).unwrap();
            drop(c);
            let c = ModelCheckpointer::open(
                "exp",
                CheckpointConfig {
                    compression,
                    ..config_last_best(&root, 2)
                },
            )
            .unwrap();
            assert_eq!(steps(&c), vec![1]);
            c.load(1).unwrap();
            fs::remove_dir_all(&root).unwrap();
        }
    });
    drop(_guard);
    if let Err(p) = result {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn config_from_toml() {
    let t: toml::Table = toml::from_str(
        r#"
        dir = "ck"
        max_checkpoints = 3
        keep_best = 2
        monitor = "val_acc"
        mode = "max"
        keep_every = 1000
        compression = "zstd:5"
        async = true
        max_in_flight = 2
        "#,
    )
    .unwrap();
    let c = CheckpointConfig::from_table(&t).unwrap();
    assert_eq!(c.compression, Compression::Zstd(5));
    assert!(c.async_save);
    assert_eq!(c.policy().rules().len(), 3);
    for (src, want) in [
        ("compression = 1", Compression::Zstd(1)),
        ("compression = \"off\"", Compression::Off),
        ("compression = true", Compression::Zstd(3)),
    ] {
        let t: toml::Table = toml::from_str(src).unwrap();
        assert_eq!(CheckpointConfig::from_table(&t).unwrap().compression, want);
    }
    let t: toml::Table = toml::from_str("max_checkpoint = 3").unwrap();
    let e = CheckpointConfig::from_table(&t).unwrap_err().to_string();
    assert!(e.contains("max_checkpoint"), "{e}");
    for bad in [
        "compression = 40",
        "max_in_flight = 0",
        "keep_best = 2",
        "mode = \"up\"",
    ] {
        let t: toml::Table = toml::from_str(bad).unwrap();
        assert!(CheckpointConfig::from_table(&t).is_err(), "{bad}");
    }
}

/// Numbers in `[checkpointing]` that are out of range, of the wrong type or not finite are config
/// errors naming the key, never panics; the largest integers are valid and work.
#[test]
fn config_numbers_out_of_range_name_the_key() {
    for key in [
        "max_checkpoints",
        "keep_best",
        "keep_every",
        "max_in_flight",
        "compression",
    ] {
        for value in [
            "-1",
            "inf",
            "-inf",
            "nan",
            "1e300",
            "1.5",
            "-9223372036854775808",
            "[]",
        ] {
            let src = format!("monitor = \"val_loss\"\n{key} = {value}");
            let t: toml::Table = toml::from_str(&src).unwrap();
            match CheckpointConfig::from_table(&t) {
                Err(e @ Error::Config { .. }) => {
                    assert!(e.to_string().contains(key), "{src}: {e}")
                }
                other => panic!("{src}: {other:?}"),
            }
        }
    }
    for (src, key) in [
        ("hash = \"md5\"", "hash"),
        ("hash = 1", "hash"),
        ("hash = \"BLAKE3\"", "hash"),
        ("fsync = \"yes\"", "fsync"),
        ("dir = 3", "dir"),
    ] {
        let t: toml::Table = toml::from_str(src).unwrap();
        let e = CheckpointConfig::from_table(&t).unwrap_err();
        assert!(e.to_string().contains(key), "{src}: {e}");
    }
    let t: toml::Table = toml::from_str("hash = \"sha256\"").unwrap();
    assert_eq!(
        CheckpointConfig::from_table(&t).unwrap().hash,
        HashAlgo::Sha256
    );
    assert_eq!(CheckpointConfig::default().hash, HashAlgo::Blake3);
    let tmp = tempfile::tempdir().unwrap();
    let max = i64::MAX;
    let t: toml::Table = toml::from_str(&format!(
        "monitor = \"val_loss\"\nmax_checkpoints = {max}\nkeep_best = {max}\nkeep_every = {max}\nmax_in_flight = {max}"
    ))
    .unwrap();
    let cfg = CheckpointConfig {
        dir: tmp.path().to_owned(),
        ..CheckpointConfig::from_table(&t).unwrap()
    };
    let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
    for s in 1..=3 {
        c.save_async(ck(s, 0.5)).unwrap();
    }
    c.wait().unwrap();
    assert_eq!(steps(&c), [1, 2, 3]);
}

#[test]
fn export_best_writes_plain_verified_files() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", zstd(config_last_best(tmp.path(), 1))).unwrap();
    c.save(ck(1, 0.9)).unwrap();
    c.save(ck(2, 0.1)).unwrap();
    c.save(ck(3, 0.5)).unwrap();
    let out = tmp.path().join("model_best");
    let info = c.export_best(&out).unwrap();
    assert_eq!(info.step, 2);
    assert_eq!(
        fs::read(out.join("model.bpk")).unwrap(),
        payload(3002, 2, false)
    );
    let meta: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["files"][0]["encoding"], "raw");
    let no_monitor = ModelCheckpointer::open("exp2", config(tmp.path())).unwrap();
    assert!(no_monitor.export_best(tmp.path().join("x")).is_err());
}

/// Sizes around the switch to the threaded hash (4 MiB) and the 2 MiB read pipeline pieces: every
/// path (inline and threaded; raw and zstd; load, verify; both algorithms) agrees with the
/// reference digest, and a
/// flipped byte at the start, in the middle or in the last piece, a truncation or an extension of
/// a big file is caught and named.
#[test]
fn threaded_hash_paths_agree_and_catch_corruption() {
    let sizes = [(4 << 20) - 1, 4 << 20, (9 << 20) + 3, 12 << 20];
    for (algo, compress) in ALGOS.into_iter().flat_map(|a| [(a, false), (a, true)]) {
        let tmp = tempfile::tempdir().unwrap();
        let mut cfg = hashed(config(tmp.path()), algo);
        if compress {
            cfg = zstd(cfg);
        }
        let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
        for (i, &len) in sizes.iter().enumerate() {
            let step = i as u64 + 1;
            let data = payload(len, step, compress);
            let info = c
                .save(Checkpoint::new(step).file("model.bpk", data.clone()))
                .unwrap();
            assert_eq!(
                info.files[0].hash.to_string(),
                reference_digest(algo, &data),
                "len {len} zstd {compress}"
            );
            assert!(c.load_file(step, "model.bpk").unwrap() == data);
            c.verify(step).unwrap();
        }
        // Corrupt the biggest one in several places (raw files only: a flipped byte inside a
        // zstd frame is a decode error or a digest mismatch, both corruption, checked below).
        let last = sizes.len() as u64;
        let victim = c
            .experiment_dir()
            .join(format!("ckpt-{last:012}"))
            .join("model.bpk");
        let good = fs::read(&victim).unwrap();
        let n = good.len();
        let flips = [0, n / 2, n - 1, n - (1 << 20)];
        for at in flips {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            fs::write(&victim, &bad).unwrap();
            for err in [c.verify(last).unwrap_err(), c.load(last).unwrap_err()] {
                assert!(err.is_corruption(), "flip at {at}: {err}");
                assert!(err.to_string().contains("model.bpk"), "{err}");
            }
            assert_eq!(
                c.load_latest_valid().unwrap().unwrap().step(),
                last - 1,
                "falls back past the corrupt one"
            );
        }
        for bad in [good[..n - 5].to_vec(), [good.clone(), vec![0; 5]].concat()] {
            fs::write(&victim, &bad).unwrap();
            assert!(c.verify(last).unwrap_err().is_corruption());
            assert!(c.load(last).unwrap_err().is_corruption());
        }
        fs::write(&victim, &good).unwrap();
        c.verify(last).unwrap();
    }
}

/// A disk that fills in the middle of a big (threaded-hash) write: a disk-full error, no partial
/// checkpoint, the earlier one intact.
#[test]
fn disk_full_during_a_big_threaded_write() {
    for algo in ALGOS {
        disk_full_during_a_big_threaded_write_with(algo);
    }
}

fn disk_full_during_a_big_threaded_write_with(algo: HashAlgo) {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", hashed(config(tmp.path()), algo)).unwrap();
    let first = payload(6 << 20, 1, false);
    c.save(Checkpoint::new(1).file("model.bpk", first.clone()))
        .unwrap();
    for budget in [0, 1 << 20, (5 << 20) + 17] {
        c.fail_writes_after(Some(budget));
        let err = c
            .save(Checkpoint::new(2).file("model.bpk", payload(8 << 20, 2, false)))
            .unwrap_err();
        assert!(err.is_disk_full(), "budget {budget}: {err}");
        c.fail_writes_after(None);
        assert_eq!(steps(&c), vec![1]);
        assert_eq!(c.load_file(1, "model.bpk").unwrap(), first);
    }
}

/// A checkpoint with several big files is loaded and verified with the files in parallel: every
/// file comes back under its own name, and corruption in any one is reported naming that file.
#[test]
fn several_big_files_load_in_parallel_and_name_the_bad_one() {
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    let files = [
        ("model.bpk", payload(5 << 20, 1, false)),
        ("optimizer.bpk", payload(10 << 20, 2, false)),
        ("scheduler.json", payload(100, 3, true)),
        ("ema.bpk", payload(6 << 20, 4, false)),
    ];
    let mut ckpt = Checkpoint::new(1);
    for (name, data) in &files {
        ckpt = ckpt.file(*name, data.clone());
    }
    c.save(ckpt).unwrap();
    let loaded = c.load(1).unwrap();
    for (name, data) in &files {
        assert!(loaded.file(name).unwrap() == &data[..], "{name}");
    }
    c.verify(1).unwrap();
    for (victim, _) in &files {
        let path = c.experiment_dir().join("ckpt-000000000001").join(victim);
        let good = fs::read(&path).unwrap();
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] ^= 1;
        fs::write(&path, &bad).unwrap();
        for err in [c.load(1).unwrap_err(), c.verify(1).unwrap_err()] {
            assert!(err.is_corruption(), "{err}");
            assert!(err.to_string().contains(victim), "names {victim}: {err}");
        }
        fs::write(&path, &good).unwrap();
    }
    c.verify(1).unwrap();
}

/// The pruner renames a victim to `.del-*` before re-checking leases, and puts it back if a lease
/// appeared. A reader arriving in that gap waits for the decision: it gets its lease when the
/// checkpoint comes back, and `NotFound` when it is really deleted (or the renamed copy is a
/// leftover that never resolves, after at most about a second).
#[test]
fn lease_in_the_prune_gap_waits_for_the_pruners_decision() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let mut c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    c.save(Checkpoint::new(1).file("m", vec![1; 10])).unwrap();
    let dir = c.experiment_dir().join("ckpt-000000000001");
    let away = c.experiment_dir().join(".del-ckpt-000000000001-99-0");

    // Put back (a lease appeared): the reader's lease succeeds.
    fs::rename(&dir, &away).unwrap();
    let (d, a) = (dir.clone(), away.clone());
    let restorer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        fs::rename(&a, &d).unwrap();
    });
    let lease = c.lease(1).expect("lease once the pruner puts it back");
    assert_eq!(lease.step(), 1);
    restorer.join().unwrap();
    drop(lease);

    // Really deleted: NotFound once the renamed copy is gone.
    fs::rename(&dir, &away).unwrap();
    let a = away.clone();
    let reaper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(100));
        fs::remove_dir_all(&a).unwrap();
    });
    let t = Instant::now();
    assert!(matches!(c.lease(1), Err(Error::NotFound { .. })));
    assert!(
        t.elapsed() >= Duration::from_millis(90),
        "waited for the decision"
    );
    reaper.join().unwrap();

    // A leftover that never resolves: NotFound after the bounded wait.
    c.save(Checkpoint::new(2).file("m", vec![2; 10])).unwrap();
    let dir2 = c.experiment_dir().join("ckpt-000000000002");
    fs::rename(
        &dir2,
        c.experiment_dir().join(".del-ckpt-000000000002-99-1"),
    )
    .unwrap();
    let t = Instant::now();
    assert!(matches!(c.lease(2), Err(Error::NotFound { .. })));
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    // With nothing pending, a missing step is NotFound at once.
    let t = Instant::now();
    assert!(matches!(c.lease(77), Err(Error::NotFound { .. })));
    assert!(t.elapsed() < Duration::from_millis(500));
}
