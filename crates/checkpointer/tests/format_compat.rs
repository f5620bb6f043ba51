//! Checkpoints written by the version-1 format (sha256 digests in `"sha256"` fields).
//!
//! `write_v1_fixture` made `tests/fixtures/v1-sha256/` with the code of that format (run it with
//! `EXPTRACK_WRITE_FIXTURE=<dir> cargo test -p exptrack-checkpoint --test format_compat -- --ignored`).

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, Compression, ModelCheckpointer};

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

#[test]
#[ignore = "writes the committed fixture; run only with the format it records"]
fn write_v1_fixture() {
    let root = std::path::PathBuf::from(std::env::var("EXPTRACK_WRITE_FIXTURE").unwrap());
    let cfg = |compression| CheckpointConfig {
        dir: root.clone(),
        monitor: Some("val_loss".into()),
        // Explicit, so that all three are kept.
        max_checkpoints: Some(100),
        compression,
        fsync: false,
        ..CheckpointConfig::default()
    };
    let mut c = ModelCheckpointer::open("fixture-v1", cfg(Compression::Off)).unwrap();
    for (step, loss) in [(10u64, 0.5), (20, 0.3)] {
        c.save(
            Checkpoint::new(step)
                .epoch(step / 10)
                .metric("val_loss", loss)
                .file("model.bpk", content(step, 3000))
                .file("optimizer.bpk", content(step + 1, 5000))
                .extra(serde_json::json!({ "data_position": step * 64 })),
        )
        .unwrap();
    }
    drop(c);
    let mut c = ModelCheckpointer::open("fixture-v1", cfg(Compression::Zstd(3))).unwrap();
    c.save(
        Checkpoint::new(30)
            .epoch(3)
            .metric("val_loss", 0.4)
            .file("model.bpk", content(30, 3000))
            .file("optimizer.bpk", content(31, 5000))
            .extra(serde_json::json!({ "data_position": 30 * 64 })),
    )
    .unwrap();
}
