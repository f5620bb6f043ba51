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

#[cfg(feature = "s3")]
pub mod seaweed;

/// The S3 server of this test binary (started once, its client variables exported), or None
/// when `weed` is missing outside CI.
#[cfg(feature = "s3")]
pub fn s3_server() -> Option<&'static seaweed::Weed> {
    use std::sync::OnceLock;
    static SERVER: OnceLock<Option<seaweed::Weed>> = OnceLock::new();
    SERVER
        .get_or_init(|| {
            let w = seaweed::Weed::start()?;
            w.export_env();
            Some(w)
        })
        .as_ref()
}

/// A raw client of the test server (not the code under test's connection).
#[cfg(feature = "s3")]
pub fn s3_raw() -> std::sync::Arc<dyn object_store::ObjectStore> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    std::sync::Arc::new(
        object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(seaweed::BUCKET)
            .build()
            .expect("raw S3 client"),
    )
}

/// The object key of a checkpoint file (`<prefix>/<exp>/ckpt-<step>/<upload>/<name>`).
#[cfg(feature = "s3")]
pub fn s3_key_of(
    info: &exptrack_checkpoint::CheckpointInfo,
    name: &str,
) -> object_store::path::Path {
    use futures_util::TryStreamExt;
    let dir = info.dir.to_string_lossy().to_string();
    let rel = dir
        .strip_prefix(&format!("s3://{}/", seaweed::BUCKET))
        .expect("s3 dir");
    let store = s3_raw();
    let prefix = object_store::path::Path::from(rel);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let metas: Vec<object_store::ObjectMeta> = rt
        .block_on(store.list(Some(&prefix)).try_collect())
        .expect("list");
    let file_name = format!("/{name}");
    metas
        .into_iter()
        .map(|m| m.location)
        .find(|l| {
            l.as_ref().ends_with(&file_name) && l.parts().count() == prefix.parts().count() + 2
        })
        .expect("object of the file")
}

/// Flips a byte in the middle of a stored checkpoint file on the S3 server.
#[cfg(feature = "s3")]
pub fn s3_corrupt(info: &exptrack_checkpoint::CheckpointInfo, name: &str) {
    use object_store::ObjectStoreExt;
    let key = s3_key_of(info, name);
    let store = s3_raw();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut bytes = store
            .get(&key)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xFF;
        store.put(&key, bytes.into()).await.unwrap();
    });
}
