//! Where the time of a durable save goes: interleaved runs of raw write+fsync and a full save.
//!
//! `cargo run --release -p exptrack-checkpoint --example save_profile -- 64M 5 [dir]`

use std::io::Write;
use std::time::{Duration, Instant};

mod profile_common;

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, Compression, ModelCheckpointer};

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    let profile_common::Setup { data, rounds, tmp } = profile_common::setup()?;
    let cfg = CheckpointConfig {
        dir: tmp.path().join("ck"),
        max_checkpoints: Some(1),
        ..CheckpointConfig::default()
    };
    let cfg_z = CheckpointConfig {
        compression: Compression::Zstd(1),
        dir: tmp.path().join("ckz"),
        ..cfg.clone()
    };
    let mut ck = ModelCheckpointer::open("p", cfg)?;
    let mut ckz = ModelCheckpointer::open("p", cfg_z)?;
    let mut t: [Vec<Duration>; 10] = Default::default();
    let inline = |path: &std::path::Path, sub: usize| -> std::io::Result<()> {
        use sha2::Digest;
        use std::os::fd::AsRawFd;
        let mut f = std::fs::File::create(path)?;
        let mut h = sha2::Sha256::new();
        let mut off = 0i64;
        let mut kicked = 0i64;
        for c in data.chunks(sub) {
            h.update(c);
            f.write_all(c)?;
            off += c.len() as i64;
            if off - kicked >= 8 << 20 {
                // SAFETY: valid fd.
                unsafe {
                    libc::sync_file_range(
                        f.as_raw_fd(),
                        kicked,
                        off - kicked,
                        libc::SYNC_FILE_RANGE_WRITE,
                    )
                };
                kicked = off;
            }
        }
        std::hint::black_box(h.finalize());
        f.sync_all()
    };
    let chunked = |path: &std::path::Path, hash: bool, kick: bool| -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let mut f = std::fs::File::create(path)?;
        std::thread::scope(|s| {
            let h = hash.then(|| {
                s.spawn(|| {
                    use sha2::Digest;
                    sha2::Sha256::digest(&data)
                })
            });
            let mut off = 0i64;
            for c in data.chunks(8 << 20) {
                f.write_all(c)?;
                if kick {
                    // SAFETY: valid fd.
                    unsafe {
                        libc::sync_file_range(
                            f.as_raw_fd(),
                            off,
                            c.len() as i64,
                            libc::SYNC_FILE_RANGE_WRITE,
                        )
                    };
                }
                off += c.len() as i64;
            }
            if let Some(h) = h {
                std::hint::black_box(h.join().unwrap());
            }
            f.sync_all()
        })
    };
    for step in 1..=rounds as u64 {
        let raw = tmp.path().join("raw.bin");
        let _ = std::fs::remove_file(&raw);
        let s = Instant::now();
        let mut f = std::fs::File::create(&raw)?;
        f.write_all(&data)?;
        f.sync_all()?;
        t[0].push(s.elapsed());

        let c = Checkpoint::new(step).file("model.bpk", data.clone());
        let s = Instant::now();
        ck.save(c)?;
        t[1].push(s.elapsed());

        let s = Instant::now();
        let digest = {
            use sha2::Digest;
            sha2::Sha256::digest(&data)
        };
        t[2].push(s.elapsed());
        std::hint::black_box(digest);

        let c = Checkpoint::new(step).file("model.bpk", data.clone());
        let s = Instant::now();
        ckz.save(c)?;
        t[3].push(s.elapsed());
        for (i, (hash, kick)) in [(false, false), (true, false), (false, true), (true, true)]
            .into_iter()
            .enumerate()
        {
            let p = tmp.path().join(format!("v{i}.bin"));
            let _ = std::fs::remove_file(&p);
            let s = Instant::now();
            chunked(&p, hash, kick)?;
            t[4 + i].push(s.elapsed());
        }
        for (i, sub) in [256usize << 10, 1 << 20].into_iter().enumerate() {
            let p = tmp.path().join(format!("w{i}.bin"));
            let _ = std::fs::remove_file(&p);
            let s = Instant::now();
            inline(&p, sub)?;
            t[8 + i].push(s.elapsed());
        }
    }
    profile_common::print_medians(
        &[
            "raw write+fsync",
            "durable save",
            "sha256 alone",
            "durable save zstd1",
            "chunked",
            "chunked+hash",
            "chunked+kick",
            "chunked+hash thread+kick",
            "inline256K+kick",
            "inline1M+kick",
        ],
        &mut t,
    );
    Ok(())
}
