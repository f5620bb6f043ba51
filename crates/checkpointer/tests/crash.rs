//! Crash safety: a child process saves in a loop and is SIGKILLed at random moments; after each kill
//! the directory must open to a consistent registry in which every checkpoint verifies, the latest
//! loads with the exact bytes that were saved, and the best of the whole history is still there.
//!
//! The child is this test binary re-executed with `EXPTRACK_CRASH_CHILD_DIR` set, running only
//! `crash_child_role`.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::payload;
use exptrack_checkpoint::{
    Checkpoint, CheckpointConfig, Compression, HashAlgo, Mode, ModelCheckpointer, REGISTRY_JSON,
};
use rand::Rng;

const CHILD_ENV: &str = "EXPTRACK_CRASH_CHILD_DIR";

fn cfg(dir: &Path, zstd: bool) -> CheckpointConfig {
    CheckpointConfig {
        dir: dir.to_owned(),
        max_checkpoints: Some(3),
        keep_best: Some(2),
        monitor: Some("val_loss".into()),
        mode: Mode::Min,
        keep_every: Some(10),
        compression: if zstd {
            Compression::Zstd(1)
        } else {
            Compression::Off
        },
        ..CheckpointConfig::default()
    }
}

fn mix(step: u64) -> u64 {
    let mut x = step.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn loss(step: u64) -> f64 {
    (mix(step) % 1000) as f64 / 1000.0
}

/// Up to 6 MiB: about a third of the saves are big enough (>= 4 MiB) for the threaded-hash write
/// path, the rest take the inline one.
fn model_len(step: u64) -> usize {
    1024 + (mix(step ^ 0xABCD) % (6 << 20)) as usize
}

fn checkpoint_for(step: u64) -> Checkpoint {
    Checkpoint::new(step)
        .metric("val_loss", loss(step))
        .file(
            "model.bpk",
            payload(model_len(step), step, step.is_multiple_of(2)),
        )
        .file("optimizer.bpk", payload(4096, step + 7, true))
        .extra(serde_json::json!({ "step": step }))
}

/// The child role: resume after the latest checkpoint and save forever.
#[test]
fn crash_child_role() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let zstd = std::env::var("EXPTRACK_CRASH_ZSTD").is_ok();
    let mut config = cfg(Path::new(&dir), zstd);
    if std::env::var("EXPTRACK_CRASH_SHA256").is_ok() {
        config.hash = HashAlgo::Sha256;
    }
    let mut c = ModelCheckpointer::open("exp", config).expect("child open");
    let mut step = c.latest().map_or(1, |i| i.step + 1);
    loop {
        if step.is_multiple_of(3) {
            c.save_async(checkpoint_for(step))
                .expect("child save_async");
        } else {
            c.save(checkpoint_for(step)).expect("child save");
        }
        step += 1;
    }
}

fn check(dir: &Path, trial: usize) -> u64 {
    let c = ModelCheckpointer::open("exp", cfg(dir, false))
        .unwrap_or_else(|e| panic!("trial {trial}: open: {e}"));
    let listed: Vec<u64> = c.list().iter().map(|i| i.step).collect();
    let exp = c.experiment_dir();
    // Registry consistent with the directories.
    let reg: serde_json::Value =
        serde_json::from_slice(&std::fs::read(exp.join(REGISTRY_JSON)).unwrap()).unwrap();
    let reg_steps: Vec<u64> = reg["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect();
    assert_eq!(
        reg_steps, listed,
        "trial {trial}: registry lists the directories"
    );
    let mut on_disk: Vec<u64> = std::fs::read_dir(exp)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            assert!(
                !n.starts_with(".tmp") && !n.starts_with(".del"),
                "trial {trial}: leftover {n}"
            );
            n.strip_prefix("ckpt-").map(|s| s.parse().unwrap())
        })
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, listed, "trial {trial}");
    let Some(latest) = listed.last().copied() else {
        return 0;
    };
    assert_eq!(reg["latest"].as_u64(), Some(latest));
    for s in &listed {
        c.verify(*s)
            .unwrap_or_else(|e| panic!("trial {trial}: step {s} does not verify: {e}"));
    }
    // The latest loads with exactly the bytes that were saved.
    let loaded = c.load_latest().unwrap().unwrap();
    assert_eq!(loaded.step(), latest);
    assert_eq!(
        loaded.file("model.bpk").unwrap(),
        &payload(model_len(latest), latest, latest % 2 == 0)[..]
    );
    assert_eq!(loaded.info.extra["step"], latest);
    // Every step up to `latest` was committed at some point: the best of that history must be here.
    let mut best = 1;
    for s in 1..=latest {
        if loss(s) < loss(best) {
            best = s;
        }
    }
    assert!(
        listed.contains(&best),
        "trial {trial}: best step {best} missing from {listed:?}"
    );
    assert_eq!(c.best().map(|i| i.step), Some(best), "trial {trial}");
    assert_eq!(reg["best"].as_u64(), Some(best));
    // Retention: the last 3 are all present.
    for s in latest.saturating_sub(2).max(1)..=latest {
        assert!(
            listed.contains(&s),
            "trial {trial}: recent step {s} missing from {listed:?}"
        );
    }
    latest
}

fn run_trials(trials: usize, max_delay_ms: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rng();
    let started = Instant::now();
    let mut progress = 0;
    for trial in 0..trials {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "--exact",
            "crash_child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, tmp.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        // Every combination of raw/zstd and BLAKE3/SHA-256, in one directory: the checker opens it
        // with the default algorithm and verifies each checkpoint with the one it records.
        if trial % 2 == 1 {
            cmd.env("EXPTRACK_CRASH_ZSTD", "1");
        }
        if trial % 4 >= 2 {
            cmd.env("EXPTRACK_CRASH_SHA256", "1");
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(1..=max_delay_ms)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(
            status.code().is_none(),
            "trial {trial}: child exited by itself ({status}); it must only die by SIGKILL"
        );
        let latest = check(tmp.path(), trial);
        assert!(
            latest >= progress,
            "trial {trial}: committed checkpoints lost ({latest} < {progress})"
        );
        progress = latest;
    }
    eprintln!(
        "{trials} kills, reached step {progress} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        progress > 0,
        "the child never committed anything; delays too short?"
    );
}

#[test]
fn sigkill_at_random_moments_20_trials() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    run_trials(20, 250);
}

#[test]
#[ignore = "stress: 200 SIGKILLs (run with --ignored)"]
fn sigkill_at_random_moments_200_trials() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    run_trials(200, 250);
}
