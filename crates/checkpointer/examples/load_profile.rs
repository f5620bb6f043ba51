//! Verified load vs raw read, hot and cold page cache, interleaved rounds.
//!
//! `cargo run --release -p exptrack-checkpoint --example load_profile -- 64M 9 [dir]`

use std::time::{Duration, Instant};

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer, evict_from_page_cache};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let size_mb: usize = args
        .get(1)
        .map(|s| s.trim_end_matches('M').parse())
        .transpose()?
        .unwrap_or(64);
    let rounds: usize = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(5);
    let base = args
        .get(3)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(base)?;
    let data: Vec<u8> = (0..size_mb << 20)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8)
        .collect();
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
    let mut t: [Vec<Duration>; 5] = Default::default();
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
    }
    for (name, v) in [
        "raw read (hot)",
        "verified load (hot)",
        "raw read (cold)",
        "verified load (cold)",
        "sha256 alone",
    ]
    .iter()
    .zip(t.iter_mut())
    {
        v.sort();
        println!(
            "{name:>22}: median {:>8.1} ms  min {:>8.1} ms",
            v[v.len() / 2].as_secs_f64() * 1e3,
            v[0].as_secs_f64() * 1e3
        );
    }
    Ok(())
}
