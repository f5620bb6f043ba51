//! Against a real S3 server (SeaweedFS; see `common/seaweed.rs`): crash safety with SIGKILL of a
//! saving process at random moments, two processes saving and pruning the same prefix, orphan
//! cleanup, and secrets kept out of errors and `Debug`.
//!
//! The children are this test binary re-executed with `EXPTRACK_S3_CHILD` set (the server's
//! variables are inherited), running only `s3_child_role`.
#![cfg(feature = "s3")]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::payload;
use common::seaweed::SECRET;
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, Compression, Mode, ModelCheckpointer};
use rand::Rng;

const CHILD_ENV: &str = "EXPTRACK_S3_CHILD";

fn mix(step: u64) -> u64 {
    let mut x = step.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn loss(step: u64) -> f64 {
    (mix(step) % 1000) as f64 / 1000.0
}

/// Up to 40 MiB: some saves are multipart uploads (parts of 16 MiB), most single puts.
fn model_len(step: u64) -> usize {
    if step.is_multiple_of(4) {
        17 << 20 | (mix(step) % (20 << 20)) as usize
    } else {
        1024 + (mix(step ^ 0xABCD) % (2 << 20)) as usize
    }
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

fn cfg(root: &str, zstd: bool) -> CheckpointConfig {
    CheckpointConfig {
        dir: root.into(),
        max_checkpoints: Some(3),
        keep_best: Some(2),
        monitor: Some("val_loss".into()),
        mode: Mode::Min,
        compression: if zstd {
            Compression::Zstd(1)
        } else {
            Compression::Off
        },
        ..CheckpointConfig::default()
    }
}

/// The child roles: `save` resumes after the latest checkpoint and saves forever; `bulk` saves
/// steps `start..start+n` with no retention; `prune` prunes with keep-last 2 in a loop.
#[test]
fn s3_child_role() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let root = std::env::var("EXPTRACK_S3_ROOT").expect("root");
    match role.as_str() {
        "save" => {
            let zstd = std::env::var("EXPTRACK_S3_ZSTD").is_ok();
            let mut c = ModelCheckpointer::open("exp", cfg(&root, zstd)).expect("child open");
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
        "bulk" => {
            let start: u64 = std::env::var("EXPTRACK_S3_START").unwrap().parse().unwrap();
            let config = CheckpointConfig {
                dir: root.clone().into(),
                ..CheckpointConfig::default()
            };
            let mut c = ModelCheckpointer::open("shared", config).expect("open");
            for step in start..start + 40 {
                c.save(Checkpoint::new(step).file("m", vec![step as u8; 512]))
                    .expect("save");
            }
        }
        "prune" => {
            let config = CheckpointConfig {
                dir: root.clone().into(),
                max_checkpoints: Some(2),
                ..CheckpointConfig::default()
            };
            let mut c = ModelCheckpointer::open("shared", config).expect("open");
            let deadline = Instant::now() + Duration::from_secs(120);
            let stop = std::path::PathBuf::from(std::env::var("EXPTRACK_S3_STOP").unwrap());
            while !stop.exists() && Instant::now() < deadline {
                c.refresh().expect("refresh");
                c.prune().expect("prune");
            }
        }
        other => panic!("unknown role {other}"),
    }
}

fn child(role: &str, root: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "s3_child_role",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, role)
    .env("EXPTRACK_S3_ROOT", root)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    cmd
}

fn registry_steps(c: &ModelCheckpointer) -> Vec<u64> {
    let reg = c.stored_registry().unwrap().expect("registry.json");
    reg["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["step"].as_u64().unwrap())
        .collect()
}

fn check(root: &str, trial: usize) -> u64 {
    let c = ModelCheckpointer::open("exp", cfg(root, false))
        .unwrap_or_else(|e| panic!("trial {trial}: open: {e}"));
    let listed: Vec<u64> = c.list().iter().map(|i| i.step).collect();
    assert_eq!(
        registry_steps(&c),
        listed,
        "trial {trial}: registry lists the markers"
    );
    let Some(latest) = listed.last().copied() else {
        return 0;
    };
    for s in &listed {
        c.verify(*s)
            .unwrap_or_else(|e| panic!("trial {trial}: step {s} does not verify: {e}"));
    }
    let loaded = c.load_latest().unwrap().unwrap();
    assert_eq!(loaded.step(), latest);
    assert_eq!(
        loaded.file("model.bpk").unwrap(),
        &payload(model_len(latest), latest, latest.is_multiple_of(2))[..]
    );
    let mut best = 1;
    for s in 1..=latest {
        if loss(s) < loss(best) {
            best = s;
        }
    }
    assert!(
        listed.contains(&best),
        "trial {trial}: best {best} missing from {listed:?}"
    );
    for s in latest.saturating_sub(2).max(1)..=latest {
        assert!(
            listed.contains(&s),
            "trial {trial}: recent {s} missing from {listed:?}"
        );
    }
    latest
}

#[test]
fn sigkill_of_a_saving_process_at_random_moments_20_trials() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(server) = common::s3_server() else {
        return;
    };
    let root = server.url(&format!("crash-{}", std::process::id()));
    let mut rng = rand::rng();
    let mut progress = 0;
    let started = Instant::now();
    for trial in 0..20 {
        let mut cmd = child("save", &root);
        if trial % 2 == 1 {
            cmd.env("EXPTRACK_S3_ZSTD", "1");
        }
        let mut c = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(rng.random_range(300..=1500)));
        c.kill().unwrap(); // SIGKILL
        let status = c.wait().unwrap();
        assert!(
            status.code().is_none(),
            "trial {trial}: child exited by itself ({status})"
        );
        let latest = check(&root, trial);
        assert!(
            latest >= progress,
            "trial {trial}: committed checkpoints lost ({latest} < {progress})"
        );
        progress = latest;
    }
    eprintln!(
        "20 kills, reached step {progress} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert!(progress > 0, "the child never committed anything");
    // With no grace period, an open removes every leftover of the crashes: what remains under
    // the prefix is exactly the committed checkpoints' objects.
    exptrack_checkpoint::testing::set_orphan_grace(Duration::ZERO);
    let c = ModelCheckpointer::open("exp", cfg(&root, false)).unwrap();
    let report = c.reconcile_report();
    eprintln!("removed on open: {:?}", report.removed_temp);
    let again = ModelCheckpointer::open_read_only("exp", cfg(&root, false)).unwrap();
    assert_eq!(
        again.list().iter().map(|i| i.step).collect::<Vec<_>>(),
        c.list().iter().map(|i| i.step).collect::<Vec<_>>()
    );
    drop(c);
    let c = ModelCheckpointer::open("exp", cfg(&root, false)).unwrap();
    assert!(
        c.reconcile_report().removed_temp.is_empty(),
        "a second open finds nothing left: {:?}",
        c.reconcile_report()
    );
    for i in c.list() {
        c.verify(i.step).unwrap();
    }
    exptrack_checkpoint::testing::set_orphan_grace(Duration::from_secs(3600));
}

#[test]
fn two_processes_saving_and_pruning_lose_no_registry_update() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(server) = common::s3_server() else {
        return;
    };
    let root = server.url(&format!("shared-{}", std::process::id()));
    let tmp = tempfile::tempdir().unwrap();
    let stop = tmp.path().join("stop");
    let mut a = child("bulk", &root)
        .env("EXPTRACK_S3_START", "1")
        .spawn()
        .unwrap();
    let mut b = child("bulk", &root)
        .env("EXPTRACK_S3_START", "1000")
        .spawn()
        .unwrap();
    let mut p = child("prune", &root)
        .env("EXPTRACK_S3_STOP", &stop)
        .spawn()
        .unwrap();
    assert!(a.wait().unwrap().success());
    assert!(b.wait().unwrap().success());
    std::fs::write(&stop, b"").unwrap();
    assert!(p.wait().unwrap().success(), "pruner failed");
    let config = CheckpointConfig {
        dir: root.clone().into(),
        ..CheckpointConfig::default()
    };
    let r = ModelCheckpointer::open_read_only("shared", config).unwrap();
    let listed: Vec<u64> = r.list().iter().map(|i| i.step).collect();
    let reg = registry_steps(&r);
    assert_eq!(
        reg, listed,
        "registry.json agrees with the committed checkpoints"
    );
    // The pruner keeps the 2 newest steps it saw; the newest of all must be there.
    assert!(listed.contains(&1039), "{listed:?}");
    for s in &listed {
        r.verify(*s).unwrap();
    }
}

#[test]
fn secrets_never_in_errors_or_debug() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let Some(server) = common::s3_server() else {
        return;
    };
    let config = CheckpointConfig {
        dir: "s3://no-such-bucket-exptrack/x".into(),
        ..CheckpointConfig::default()
    };
    let err = ModelCheckpointer::open("exp", config).unwrap_err();
    for text in [err.to_string(), format!("{err:?}")] {
        assert!(!text.contains(SECRET), "{text}");
    }
    let c = ModelCheckpointer::open("exp", cfg(&server.url("debug"), false)).unwrap();
    assert!(!format!("{c:?}").contains(SECRET));
    let lease = c.lease(1).unwrap_err();
    assert!(!format!("{lease:?} {lease}").contains(SECRET));
    // Credentials in the URL are refused without echoing them.
    let config = CheckpointConfig {
        dir: format!("s3://key:{SECRET}@bucket/x").into(),
        ..CheckpointConfig::default()
    };
    let err = ModelCheckpointer::open("exp", config).unwrap_err();
    assert!(!format!("{err} {err:?}").contains(SECRET), "{err}");
}
