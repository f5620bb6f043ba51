//! Inputs found by the `checkpoint_json` fuzz target (fuzz/, scripts/fuzz.sh), kept as tests.

use std::path::Path;

use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
use sha2::{Digest, Sha256};

/// Writes `<root>/exp/ckpt-000000000001/` with `model.bin` = `content` and a `checkpoint.json`
/// whose only file entry claims `size` bytes encoded as `encoding`.
fn write_checkpoint(root: &Path, content: &[u8], size: u64, encoding: &str) {
    let dir = root.join("exp").join("ckpt-000000000001");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("model.bin"), content).unwrap();
    let info = serde_json::json!({
        "format_version": 1,
        "experiment_id": "exp",
        "step": 1,
        "epoch": null,
        "metrics": {},
        "is_best": false,
        "created_ms": 0,
        "files": [{
            "name": "model.bin",
            "size": size,
            "sha256": hex::encode(Sha256::digest(content)),
            "stored_size": content.len(),
            "encoding": encoding,
        }],
    });
    std::fs::write(
        dir.join("checkpoint.json"),
        serde_json::to_vec(&info).unwrap(),
    )
    .unwrap();
}

fn open(root: &Path) -> ModelCheckpointer {
    let config = CheckpointConfig {
        dir: root.to_path_buf(),
        fsync: false,
        ..CheckpointConfig::default()
    };
    ModelCheckpointer::open_read_only("exp", config).unwrap()
}

/// A raw entry whose `size` (2^62) is far beyond its 8 bytes on disk: `load` allocated `size`
/// bytes before reading, so the process aborted ("memory allocation failed") instead of
/// reporting the mismatch.
#[test]
fn raw_entry_with_a_huge_size_is_an_error_not_an_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    write_checkpoint(tmp.path(), b"weights!", 1 << 62, "raw");
    let c = open(tmp.path());
    // Either skipped as unreadable on open or listed and refused on load: never loaded, never an
    // allocation of the recorded size.
    assert!(c.list().len() <= 1);
    assert!(c.load(1).is_err());
    assert!(c.load_file(1, "model.bin").is_err());
    assert!(!matches!(c.load_latest_valid(), Ok(Some(_))));
}

/// The same for a zstd entry: the decompressed size comes from `checkpoint.json`, and 2^62 was
/// allocated before a single byte was decompressed.
#[test]
fn zstd_entry_with_a_huge_size_is_an_error_not_an_allocation() {
    let tmp = tempfile::tempdir().unwrap();
    let frame = zstd::encode_all(&b"weights!"[..], 1).unwrap();
    write_checkpoint(tmp.path(), &frame, 1 << 62, "zstd");
    let c = open(tmp.path());
    assert!(c.load(1).is_err());
    assert!(c.load_file(1, "model.bin").is_err());
}
