//! Checkpoints written by the version-1 format (SHA-256 digests in `"sha256"` fields) still load,
//! verify and prune.
//!
//! `tests/fixtures/v1-sha256/` was written by that format's code (commit a79377e, with the
//! `write_v1_fixture` test this file had then; see `tests/fixtures/README.md`). `content` is the
//! generator's, so the bytes can be checked.

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};

/// Deterministic bytes of one fixture file.
fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A private copy of the committed fixture (tests never modify the committed bytes).
fn fixture_copy() -> (tempfile::TempDir, std::path::PathBuf) {
    fn copy(from: &std::path::Path, to: &std::path::Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let dest = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &dest);
            } else {
                std::fs::copy(e.path(), dest).unwrap();
            }
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v1-sha256");
    copy(&src, tmp.path());
    let root = tmp.path().to_owned();
    (tmp, root)
}

fn fixture_cfg(root: &std::path::Path) -> CheckpointConfig {
    CheckpointConfig {
        dir: root.to_owned(),
        monitor: Some("val_loss".into()),
        ..CheckpointConfig::default()
    }
}

fn json(path: std::path::PathBuf) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// The committed fixture really is version 1: `"sha256"` fields, no `"hash"`.
#[test]
fn fixture_is_the_version_1_format() {
    let (_tmp, root) = fixture_copy();
    let exp = root.join("fixture-v1");
    for step in [10, 20, 30] {
        let v = json(exp.join(format!("ckpt-{step:012}/checkpoint.json")));
        assert_eq!(v["format_version"], 1);
        for f in v["files"].as_array().unwrap() {
            assert_eq!(f["sha256"].as_str().unwrap().len(), 64, "{f}");
            assert!(f.get("hash").is_none(), "{f}");
        }
    }
    assert_eq!(json(exp.join("registry.json"))["format_version"], 1);
}

/// Version-1 checkpoints (SHA-256) load, verify with SHA-256 and prune; new saves beside them are
/// BLAKE3 version 2, and the registry is rewritten in version 2 keeping their SHA-256 digests.
#[test]
fn version_1_checkpoints_load_verify_and_prune() {
    let (_tmp, root) = fixture_copy();
    let exp = root.join("fixture-v1");
    let old_sha = json(exp.join("ckpt-000000000020/checkpoint.json"))["files"][0]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();

    let ro = ModelCheckpointer::open_read_only("fixture-v1", fixture_cfg(&root)).unwrap();
    assert_eq!(
        ro.list().iter().map(|i| i.step).collect::<Vec<_>>(),
        [10, 20, 30]
    );
    assert_eq!(ro.best().unwrap().step, 20);
    for step in [10u64, 20, 30] {
        let loaded = ro.load(step).unwrap();
        assert_eq!(loaded.info.format_version, 1);
        assert_eq!(loaded.info.epoch, Some(step / 10));
        assert_eq!(loaded.info.extra["data_position"], step * 64);
        for f in &loaded.info.files {
            assert_eq!(f.hash.algo(), exptrack_checkpoint::HashAlgo::Sha256);
        }
        assert_eq!(loaded.file("model.bpk").unwrap(), &content(step, 3000)[..]);
        assert_eq!(
            loaded.file("optimizer.bpk").unwrap(),
            &content(step + 1, 5000)[..]
        );
        ro.verify(step).unwrap();
    }
    assert_eq!(
        ro.list()[2].files[0].encoding,
        exptrack_checkpoint::Encoding::Zstd
    );
    drop(ro);

    let cfg = CheckpointConfig {
        max_checkpoints: Some(1),
        ..fixture_cfg(&root)
    };
    let mut c = ModelCheckpointer::open("fixture-v1", cfg).unwrap();
    let reg = json(exp.join("registry.json"));
    assert_eq!(reg["format_version"], exptrack_checkpoint::FORMAT_VERSION);
    assert_eq!(
        reg["checkpoints"][1]["files"][0]["hash"],
        format!("sha256:{old_sha}")
    );
    // Keep last 1: the latest (30) and the best (20) stay.
    assert_eq!(c.prune().unwrap(), [10]);
    c.wait().unwrap();
    assert!(!exp.join("ckpt-000000000010").exists());
    let info = c
        .save(
            Checkpoint::new(40)
                .metric("val_loss", 0.6)
                .file("model.bpk", content(40, 3000)),
        )
        .unwrap();
    assert_eq!(info.format_version, exptrack_checkpoint::FORMAT_VERSION);
    assert_eq!(
        info.files[0].hash.algo(),
        exptrack_checkpoint::HashAlgo::Blake3
    );
    assert_eq!(
        c.list().iter().map(|i| i.step).collect::<Vec<_>>(),
        [20, 40]
    );
    assert_eq!(c.load_latest_valid().unwrap().unwrap().step(), 40);
    c.verify(20).unwrap();
    assert_eq!(
        c.load(20).unwrap().file("model.bpk").unwrap(),
        &content(20, 3000)[..]
    );
}

/// Corruption of a version-1 checkpoint is caught by SHA-256 (named) and skipped.
#[test]
fn version_1_corruption_is_caught_and_skipped() {
    let (_tmp, root) = fixture_copy();
    let exp = root.join("fixture-v1");
    for (step, victim) in [(30u64, "model.bpk"), (30, "optimizer.bpk")] {
        let path = exp.join(format!("ckpt-{step:012}/{victim}"));
        let good = std::fs::read(&path).unwrap();
        let mut bad = good.clone();
        let at = bad.len() - 1;
        bad[at] ^= 0x10;
        for bytes in [bad, good[..good.len() - 3].to_vec()] {
            std::fs::write(&path, &bytes).unwrap();
            let c = ModelCheckpointer::open_read_only("fixture-v1", fixture_cfg(&root)).unwrap();
            for err in [c.load(step).unwrap_err(), c.verify(step).unwrap_err()] {
                assert!(err.is_corruption(), "{err}");
                assert!(err.to_string().contains(victim), "{err}");
            }
            assert_eq!(c.load_latest_valid().unwrap().unwrap().step(), 20);
        }
        std::fs::write(&path, &good).unwrap();
    }
    // A raw version-1 file: the mismatch is reported as SHA-256.
    let path = exp.join("ckpt-000000000020/model.bpk");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[7] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let c = ModelCheckpointer::open_read_only("fixture-v1", fixture_cfg(&root)).unwrap();
    let err = c.verify(20).unwrap_err();
    assert!(err.to_string().contains("sha256"), "{err}");
}
