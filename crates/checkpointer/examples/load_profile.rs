//! Verified load (BLAKE3, the default) vs raw read, hot and cold page cache, interleaved rounds.
//!
//! `cargo run --release -p exptrack-checkpoint --example load_profile -- 64M 9 [dir]`

use std::time::{Duration, Instant};

mod profile_common;

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer, evict_from_page_cache};

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    let profile_common::Setup { data, rounds, tmp } = profile_common::setup()?;
    let raw = tmp.path().join("raw.bin");
    std::fs::write(&raw, &data)?;
    let mut ck = ModelCheckpointer::open(
        "p",
        CheckpointConfig {
            dir: tmp.path().join("ck"),
            ..CheckpointConfig::default()
        },
    )?;
    let info = ck.save(Checkpoint::new(1).file("model.bpk", data.clone()))?;
    let stored = info.path_of("model.bpk");
    let mut t: [Vec<Duration>; 6] = Default::default();
    for _ in 0..rounds {
        for cold in [false, true] {
            if cold {
                evict_from_page_cache(&raw)?;
            }
            let s = Instant::now();
            let v = std::fs::read(&raw)?;
            t[usize::from(cold) * 2].push(s.elapsed());
            assert_eq!(v.len(), data.len());
            drop(v);
            if cold {
                evict_from_page_cache(&stored)?;
            }
            let s = Instant::now();
            let v = ck.load_file(1, "model.bpk")?;
            t[usize::from(cold) * 2 + 1].push(s.elapsed());
            assert_eq!(v.len(), data.len());
        }
        let s = Instant::now();
        let d = {
            use sha2::Digest;
            sha2::Sha256::digest(&data)
        };
        t[4].push(s.elapsed());
        std::hint::black_box(d);
        let s = Instant::now();
        std::hint::black_box(blake3::hash(&data));
        t[5].push(s.elapsed());
    }
    profile_common::print_medians(
        &[
            "raw read (hot)",
            "verified load (hot)",
            "raw read (cold)",
            "verified load (cold)",
            "sha256 alone",
            "blake3 alone (one thread)",
        ],
        &mut t,
    );
    Ok(())
}
