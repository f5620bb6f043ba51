//! Shared test helpers.
#![allow(dead_code)]

use std::path::Path;

use exptrack_checkpoint::{CheckpointConfig, Compression, Mode};

/// A config rooted at `dir` with durable writes.
pub fn config(dir: &Path) -> CheckpointConfig {
    CheckpointConfig {
        dir: dir.to_owned(),
        ..CheckpointConfig::default()
    }
}

/// Keep last `n`, best 1 by val_loss (min).
pub fn config_last_best(dir: &Path, n: usize) -> CheckpointConfig {
    CheckpointConfig {
        max_checkpoints: Some(n),
        monitor: Some("val_loss".into()),
        mode: Mode::Min,
        ..config(dir)
    }
}

/// With zstd.
pub fn zstd(mut c: CheckpointConfig) -> CheckpointConfig {
    c.compression = Compression::Zstd(3);
    c
}

/// Deterministic pseudo-random bytes (xorshift), compressible to a degree when `compressible`.
pub fn payload(len: usize, seed: u64, compressible: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        if compressible {
            v.extend_from_slice(&[b[0], 0, 0, b[1], b[2] & 3, 0, 0, 0]);
        } else {
            v.extend_from_slice(&b);
        }
    }
    v.truncate(len);
    v
}

/// Both digest algorithms, the default first.
pub const ALGOS: [exptrack_checkpoint::HashAlgo; 2] = [
    exptrack_checkpoint::HashAlgo::Blake3,
    exptrack_checkpoint::HashAlgo::Sha256,
];

/// With this digest algorithm.
pub fn hashed(mut c: CheckpointConfig, algo: exptrack_checkpoint::HashAlgo) -> CheckpointConfig {
    c.hash = algo;
    c
}

/// `algo:hex` of `data`, computed by the reference crates (not by exptrack-checkpoint).
pub fn reference_digest(algo: exptrack_checkpoint::HashAlgo, data: &[u8]) -> String {
    use sha2::Digest;
    match algo {
        exptrack_checkpoint::HashAlgo::Blake3 => format!("blake3:{}", blake3::hash(data).to_hex()),
        exptrack_checkpoint::HashAlgo::Sha256 => {
            format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
        }
        other => panic!("no reference for {other}"),
    }
}
