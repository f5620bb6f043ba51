//! Metadata read from disk is not trusted: a corrupt or hostile `checkpoint.json`,
//! `registry.json` or lease file makes that checkpoint invalid (named, skipped), never an abort,
//! a huge allocation or a path outside the checkpoint directory.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{ALGOS, config, hashed, payload, reference_digest};
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, Compression, Error, ModelCheckpointer};
use serde_json::{Value, json};

const HUGE: u64 = 1_000_000_000_000_000;

fn ck(step: u64) -> Checkpoint {
    Checkpoint::new(step)
        .metric("val_loss", 1.0 / step as f64)
        .file("model.bpk", payload(3000, step, false))
        .file("optimizer.bpk", payload(5000, step + 100, true))
}

/// An experiment with checkpoints 1 and 2; returns its directory.
fn two_checkpoints(root: &Path, cfg: CheckpointConfig) -> PathBuf {
    let mut c = ModelCheckpointer::open(
        "exp",
        CheckpointConfig {
            dir: root.to_owned(),
            ..cfg
        },
    )
    .unwrap();
    c.save(ck(1)).unwrap();
    c.save(ck(2)).unwrap();
    c.experiment_dir().to_owned()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    fs::write(path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
}

fn meta(exp: &Path, step: u64) -> PathBuf {
    exp.join(format!("ckpt-{step:012}/checkpoint.json"))
}

/// Opens `exp` afresh (as a resuming run does) and checks that step 2 is invalid and named,
/// and that `load_latest_valid` and `resume_or_start` fall back to step 1.
fn falls_back_past_step_2(root: &Path, cfg: CheckpointConfig, must_mention: &[&str]) {
    let cfg = CheckpointConfig {
        dir: root.to_owned(),
        ..cfg
    };
    let mut c = ModelCheckpointer::open("exp", cfg.clone()).unwrap();
    let err = c.load(2).unwrap_err();
    // Invalid metadata is corruption; JSON that does not parse (e.g. an unknown digest
    // algorithm) is its own kind, which every reader treats the same way.
    assert!(
        err.is_corruption() || matches!(err, Error::Json { .. }),
        "{err}"
    );
    for m in must_mention {
        assert!(err.to_string().contains(m), "{m:?} not in: {err}");
    }
    assert!(c.verify(2).is_err());
    let loaded = c.load_latest_valid().unwrap().expect("a valid checkpoint");
    assert_eq!(loaded.step(), 1);
    assert_eq!(
        loaded.file("model.bpk").unwrap(),
        &payload(3000, 1, false)[..]
    );
    match c.resume_or_start().unwrap() {
        exptrack_checkpoint::Resume::Resumed(r) => assert_eq!(r.step(), 1),
        other => panic!("expected a resume from step 1, got {other:?}"),
    }
    // A read-only reader (the evaluator, `ckpt verify`) sees the same.
    let ro = ModelCheckpointer::open_read_only("exp", cfg).unwrap();
    assert_eq!(ro.load(2).unwrap_err().to_string(), err.to_string());
    assert_eq!(ro.load_latest_valid().unwrap().unwrap().step(), 1);
}

/// Issue 12: `files[0].size = 1000000000000000` aborted the process ("memory allocation of
/// 1000000000000000 bytes failed") on load. Now the sizes are compared with each other and with
/// the file on disk before any buffer is made, for raw and zstd files and both algorithms.
#[test]
fn huge_recorded_size_is_invalid_before_anything_is_allocated() {
    for algo in ALGOS {
        for compression in [Compression::Off, Compression::Zstd(3)] {
            let cfg = CheckpointConfig {
                compression,
                ..hashed(config(Path::new("")), algo)
            };
            // Only `size` is hostile.
            let tmp = tempfile::tempdir().unwrap();
            let exp = two_checkpoints(tmp.path(), cfg.clone());
            edit_json(&meta(&exp, 2), |v| v["files"][0]["size"] = json!(HUGE));
            falls_back_past_step_2(tmp.path(), cfg.clone(), &["model.bpk", &HUGE.to_string()]);

            // `size` and `stored_size` agree with each other but not with the file on disk.
            let tmp = tempfile::tempdir().unwrap();
            let exp = two_checkpoints(tmp.path(), cfg.clone());
            edit_json(&meta(&exp, 2), |v| {
                v["files"][0]["size"] = json!(HUGE);
                v["files"][0]["stored_size"] = json!(HUGE);
            });
            falls_back_past_step_2(tmp.path(), cfg.clone(), &["model.bpk", &HUGE.to_string()]);
        }
    }
}

/// A zstd file whose recorded size is plausible for its stored bytes but not what its frame
/// declares: refused from the frame header, before the buffer is made.
#[test]
fn zstd_size_is_checked_against_the_frame_header() {
    let cfg = CheckpointConfig {
        compression: Compression::Zstd(3),
        ..config(Path::new(""))
    };
    let tmp = tempfile::tempdir().unwrap();
    let exp = two_checkpoints(tmp.path(), cfg.clone());
    let mut lie = 0;
    edit_json(&meta(&exp, 2), |v| {
        lie = v["files"][0]["stored_size"].as_u64().unwrap() * 1000;
        v["files"][0]["size"] = json!(lie);
    });
    falls_back_past_step_2(tmp.path(), cfg, &["model.bpk", &lie.to_string(), "3000"]);
}

/// Issue 12: names read from `checkpoint.json` were joined to the checkpoint directory without
/// validation, so a hostile name read (and `export_best` wrote) outside it. Each bad entry
/// here points at a real file outside with the right size and digest, so the old code loaded
/// it as step 2; now step 2 is invalid, named, and skipped.
#[test]
fn names_from_checkpoint_json_never_leave_the_checkpoint_directory() {
    let secret = payload(777, 42, false);
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("secret.bin");
    fs::write(&outside, &secret).unwrap();
    let absolute = outside.to_str().unwrap().to_owned();
    let names = [
        "../../../secret.bin".to_owned(),
        absolute,
        "..".to_owned(),
        "sub/../../../../secret.bin".to_owned(),
        ".hidden".to_owned(),
        "checkpoint.json".to_owned(),
        "back\\slash".to_owned(),
        String::new(),
        "caf\u{e9}.bin".to_owned(),
        "x".repeat(201),
    ];
    for (i, name) in names.iter().enumerate() {
        let root = tmp.path().join(format!("case{i}"));
        let exp = two_checkpoints(&root, config(Path::new("")));
        edit_json(&meta(&exp, 2), |v| {
            v["files"][0]["name"] = json!(name);
            v["files"][0]["size"] = json!(secret.len());
            v["files"][0]["stored_size"] = json!(secret.len());
            v["files"][0]["hash"] = json!(reference_digest(ALGOS[0], &secret));
        });
        let shown = format!("{:?}", name.chars().take(80).collect::<String>());
        let shown = shown.trim_matches('"');
        falls_back_past_step_2(&root, config(Path::new("")), &["checkpoint.json", shown]);
        let c = ModelCheckpointer::open("exp", config(&root)).unwrap();
        assert_eq!(
            c.reconcile_report().unreadable,
            ["ckpt-000000000002"],
            "{name:?}"
        );
        assert_eq!(c.list().iter().map(|i| i.step).collect::<Vec<_>>(), [1]);
    }
    // The same name twice.
    let root = tmp.path().join("twice");
    let exp = two_checkpoints(&root, config(Path::new("")));
    edit_json(&meta(&exp, 2), |v| {
        v["files"][1]["name"] = json!("model.bpk")
    });
    falls_back_past_step_2(&root, config(Path::new("")), &["model.bpk", "twice"]);
}

/// The experiment id, the format version and the digests in `checkpoint.json` are checked too.
#[test]
fn bad_ids_versions_and_digests_make_the_checkpoint_invalid() {
    type Edit = Box<dyn Fn(&mut Value)>;
    let cases: [(&str, Edit); 6] = [
        (
            "experiment_id",
            Box::new(|v| v["experiment_id"] = json!("../exp")),
        ),
        (
            "format_version 3",
            Box::new(|v| v["format_version"] = json!(3)),
        ),
        (
            "format_version 0",
            Box::new(|v| v["format_version"] = json!(0)),
        ),
        (
            "unknown hash algorithm",
            Box::new(|v| v["files"][0]["hash"] = json!(format!("md5:{}", "0".repeat(64)))),
        ),
        (
            "64 hex digits",
            Box::new(|v| v["files"][0]["hash"] = json!("blake3:abc")),
        ),
        (
            "no hash",
            Box::new(|v| {
                v["files"][0].as_object_mut().unwrap().remove("hash");
            }),
        ),
    ];
    for (what, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let exp = two_checkpoints(tmp.path(), config(Path::new("")));
        edit_json(&meta(&exp, 2), |v| edit(v));
        falls_back_past_step_2(
            tmp.path(),
            config(Path::new("")),
            &["checkpoint.json", what],
        );
    }
}

/// A `checkpoint.json` too big to be metadata is refused without reading it into memory.
#[test]
fn oversized_metadata_is_refused_unread() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = two_checkpoints(tmp.path(), config(Path::new("")));
    let f = fs::OpenOptions::new()
        .write(true)
        .open(meta(&exp, 2))
        .unwrap();
    f.set_len(300 << 20).unwrap(); // sparse: nothing is written
    drop(f);
    falls_back_past_step_2(
        tmp.path(),
        config(Path::new("")),
        &["checkpoint.json", "refused"],
    );
}

/// A hostile `registry.json` (it is a cache) is rebuilt from the checkpoints, not used.
#[test]
fn hostile_registry_is_rebuilt() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = two_checkpoints(tmp.path(), config(Path::new("")));
    let reg = exp.join("registry.json");
    edit_json(&reg, |v| {
        v["experiment_id"] = json!("../../elsewhere");
        v["checkpoints"][0]["dir"] = json!("/etc");
        v["checkpoints"][0]["files"][0]["name"] = json!("../../x");
        v["checkpoints"][0]["files"][0]["size"] = json!(HUGE);
    });
    let c = ModelCheckpointer::open("exp", config(tmp.path())).unwrap();
    assert_eq!(c.list().len(), 2);
    let v: Value = serde_json::from_slice(&fs::read(&reg).unwrap()).unwrap();
    assert_eq!(v["experiment_id"], "exp");
    assert_eq!(v["checkpoints"][0]["dir"], "ckpt-000000000001");
    assert_eq!(v["checkpoints"][0]["files"][0]["name"], "model.bpk");
    c.load(1).unwrap();
}

/// Lease file names are parsed strictly: odd ones are ignored (they protect nothing and are not
/// followed anywhere), numbers too big for a step or a pid included.
#[test]
fn odd_lease_file_names_are_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = CheckpointConfig {
        max_checkpoints: Some(1),
        ..config(tmp.path())
    };
    let mut c = ModelCheckpointer::open("exp", cfg).unwrap();
    c.save(ck(1)).unwrap();
    let leases = c.experiment_dir().join("leases");
    fs::create_dir_all(&leases).unwrap();
    let me = std::process::id();
    for name in [
        format!("99999999999999999999999-{me}-0"),
        "1-99999999999-0".to_owned(),
        format!("1-{me}"),
        format!("-1-{me}-0"),
        format!("1 -{me}-0"),
        "garbage".to_owned(),
    ] {
        fs::write(leases.join(&name), b"").unwrap();
    }
    fs::create_dir(leases.join(format!("2-{me}-dir"))).unwrap();
    c.save(ck(2)).unwrap();
    c.save(ck(3)).unwrap();
    c.wait().unwrap();
    assert_eq!(
        c.list().iter().map(|i| i.step).collect::<Vec<_>>(),
        [3],
        "odd names lease nothing"
    );
    assert!(matches!(c.load(1), Err(Error::NotFound { .. })));
}
