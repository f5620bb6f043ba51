//! The built `exptrack` binary against runs and checkpoints written by the real libraries.

mod common;

use std::path::Path;

use common::*;
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};
use serde_json::Value;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn runs_list_show_compare() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let (_, a) = make_run(
        &runs,
        &RunSpec {
            extra_toml: "[model]\nhidden = 64\nlr = 0.01\n[data]\nbatch = 32\n",
            loss_scale: 1.0,
            results: &[("test_accuracy", serde_json::json!(0.91))],
            ..Default::default()
        },
    );
    let (dir_b, b) = make_run(
        &runs,
        &RunSpec {
            extra_toml: "[model]\nhidden = 128\nlr = 0.01\n[data]\nbatch = 32\n",
            loss_scale: 0.5,
            ..Default::default()
        },
    );

    // list: both runs, table and JSON.
    let o = exptrack(&["runs", "list", "--dir", s(&runs)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("RUN"), "{out}");
    assert!(out.contains(&a) && out.contains(&b) && out.contains("completed"));
    let o = exptrack(&["runs", "list", "--dir", s(&runs), "--json"]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.as_str()) && ids.contains(&b.as_str()));
    let o = exptrack(&[
        "runs",
        "list",
        "--dir",
        s(&runs),
        "--status",
        "failed",
        "--json",
    ]);
    assert_eq!(
        serde_json::from_str::<Value>(&stdout(&o)).unwrap(),
        serde_json::json!([])
    );

    // show by id, by prefix... and by directory.
    let o = exptrack(&["runs", "show", &a, "--dir", s(&runs)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    for needle in [
        "train/loss",
        "valid/accuracy",
        "test_accuracy",
        "0.91",
        "hidden = 64",
    ] {
        assert!(out.contains(needle), "{needle} missing:\n{out}");
    }
    assert!(
        !out.contains("checkpoints ("),
        "no checkpoints section without checkpoints:\n{out}"
    );
    let o = exptrack(&["runs", "show", s(&dir_b), "--json"]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["run"]["run_id"], b.as_str());
    assert_eq!(v["config"]["model"]["hidden"], 128);
    assert_eq!(v["summary"]["train/loss"]["count"], 50);

    // compare: the config difference, final and best metrics, duration.
    let o = exptrack(&["runs", "compare", &a, &b, "--dir", s(&runs)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("model.hidden") && out.contains("64") && out.contains("128"),
        "{out}"
    );
    assert!(
        !out.contains("data.batch"),
        "identical keys are hidden:\n{out}"
    );
    assert!(out.contains("duration") && out.contains("valid/loss"));
    assert!(
        out.lines()
            .any(|l| l.trim_start().starts_with("test_accuracy") && l.contains("0.91")),
        "{out}"
    );
    let o = exptrack(&["runs", "compare", &a, &b, "--dir", s(&runs), "--json"]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["runs"][0]["run_id"], a.as_str());
    assert_eq!(
        v["config_diff"]["model.hidden"],
        serde_json::json!(["64", "128"])
    );
    assert!(v["config_diff"].get("data.batch").is_none());
    let va = &v["metrics"]["valid/loss"][0];
    let vb = &v["metrics"]["valid/loss"][1];
    // Loss: best is the minimum (the last point, step 50), final is the last value.
    assert_eq!(va["best_step"], 50);
    let (fa, fb) = (va["final"].as_f64().unwrap(), vb["final"].as_f64().unwrap());
    assert!((fa - 2.5 / 50f64.sqrt()).abs() < 1e-12);
    assert!((fb - 0.5 * 2.5 / 50f64.sqrt()).abs() < 1e-12);
    // Accuracy: best is the maximum.
    assert_eq!(v["metrics"]["valid/accuracy"][0]["best_step"], 50);
    assert!(v["runs"][0]["duration_secs"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        v["results"]["test_accuracy"],
        serde_json::json!([0.91, null])
    );
    let o = exptrack(&[
        "runs",
        "compare",
        &a,
        &b,
        "--all",
        "--dir",
        s(&runs),
        "--json",
    ]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(
        v["config_diff"]["data.batch"],
        serde_json::json!(["32", "32"])
    );

    // Errors: unknown run (2), ambiguous prefix (2), with one-line message and a hint.
    let o = exptrack(&["runs", "show", "nope", "--dir", s(&runs)]);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(
        err.starts_with("error: run not found: nope\nhint: "),
        "{err}"
    );
    let common_prefix: String = a
        .chars()
        .zip(b.chars())
        .take_while(|(x, y)| x == y)
        .map(|p| p.0)
        .collect();
    if !common_prefix.is_empty() {
        let o = exptrack(&["runs", "show", &common_prefix, "--dir", s(&runs)]);
        assert_code(&o, 2);
        assert!(stderr(&o).contains("ambiguous"));
    }
}

/// A run whose real checkpointer reports its commits (`report_to`): four saves, the best at step
/// 20; retention keeps the last two and the best, so 10 is deleted.
#[test]
fn runs_show_lists_the_checkpoints_that_exist() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let t = exptrack_core::ExperimentTracker::builder(exptrack_core::ExperimentConfig::named(
        "cli-ckpt",
    ))
    .runs_dir(&runs)
    .collect_system_info(false)
    .handle_signals(false)
    .build()
    .unwrap();
    let cfg = CheckpointConfig {
        dir: tmp.path().join("checkpoints"),
        monitor: Some("valid/loss".into()),
        max_checkpoints: Some(2),
        fsync: false,
        ..CheckpointConfig::default()
    };
    let mut ck = ModelCheckpointer::open("exp-1", cfg).unwrap();
    ck.report_to(t.clone());
    save_checkpoints(&mut ck, &[(10, 0.5), (20, 0.2), (30, 0.4), (40, 0.3)]);
    let kept = ck.list();
    drop(ck);
    let id = t.metadata().run_id.clone();
    t.finish(exptrack_core::RunStatus::Completed).unwrap();
    assert_eq!(
        kept.iter().map(|c| c.step).collect::<Vec<_>>(),
        [20, 30, 40]
    );

    let o = exptrack(&["runs", "show", &id, "--dir", s(&runs)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(
        out.contains("\ncheckpoints (3 present, 1 pruned by retention)\n"),
        "{out}"
    );
    let rows: Vec<Vec<&str>> = out
        .lines()
        .skip_while(|l| !l.starts_with("checkpoints ("))
        .skip(2)
        .take_while(|l| l.starts_with("  "))
        .map(|l| l.split_whitespace().collect())
        .collect();
    let want: Vec<Vec<String>> = kept
        .iter()
        .map(|c| {
            let hash = c.files[0].hash.to_string();
            let (algo, digest) = hash.split_once(':').unwrap();
            let mut row = vec![
                c.step.to_string(),
                "5.0".to_owned(),
                "KiB".to_owned(),
                format!("{algo}:{}", &digest[..12]),
            ];
            if c.step == 20 {
                row.push("best".to_owned());
            }
            row
        })
        .collect();
    assert_eq!(rows, want, "{out}");

    let o = exptrack(&["runs", "show", &id, "--dir", s(&runs), "--json"]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let c = &v["checkpoints"];
    let steps: Vec<u64> = c["present"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [20, 30, 40]);
    assert_eq!(c["pruned"], serde_json::json!([10]));
    assert_eq!(c["best"], 20);
    assert_eq!(c["present"][0]["size"], 5096);
    assert_eq!(
        c["present"][0]["location"],
        kept[0].dir.display().to_string()
    );
}

fn decode_png(path: &Path) -> (u32, u32, usize) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    let colours: std::collections::HashSet<&[u8]> = buf.chunks_exact(3).collect();
    (info.width, info.height, colours.len())
}

#[test]
fn plot_writes_decodable_images() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let (dir, id) = make_run(&runs, &RunSpec::default());
    let out = tmp.path().join("plots");
    let o = exptrack(&["plot", &id, "--dir", s(&runs), "--out", s(&out)]);
    assert_code(&o, 0);
    let listed: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(listed.len(), 6, "{listed:?}");
    for stem in ["loss", "accuracy", "lr"] {
        let (w, h, colours) = decode_png(&out.join(format!("{stem}.png")));
        assert_eq!((w, h), (960, 600));
        assert!(colours > 20, "{stem}.png looks blank ({colours} colours)");
    }
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    let lines = svg
        .split("<polyline")
        .skip(1)
        .filter(|el| el[..el.find("/>").unwrap()].contains("stroke-width=\"2\""))
        .count();
    assert_eq!(lines, 2, "train/loss and valid/loss");

    // Default output directory: <run>/plots; size and format flags.
    let o = exptrack(&[
        "plot",
        s(&dir),
        "--svg-only",
        "--width",
        "400",
        "--height",
        "300",
    ]);
    assert_code(&o, 0);
    assert!(dir.join("plots/loss.svg").is_file());
    assert!(!dir.join("plots/loss.png").exists());
    let svg = std::fs::read_to_string(dir.join("plots/loss.svg")).unwrap();
    assert!(svg.starts_with("<svg width=\"400\" height=\"300\""));
}

/// Saves a checkpoint per `(step, valid/loss)`: `model.bin` (4096 bytes) and `optim.bin` (1000).
fn save_checkpoints(ck: &mut ModelCheckpointer, steps: &[(u64, f64)]) {
    for &(step, loss) in steps {
        ck.save(
            Checkpoint::new(step)
                .metric("valid/loss", loss)
                .file("model.bin", vec![step as u8; 4096])
                .file("optim.bin", vec![1u8; 1000]),
        )
        .unwrap();
    }
}

/// Five checkpoints; valid/loss is best (lowest) at step 30.
fn make_checkpoints(root: &Path) -> std::path::PathBuf {
    let cfg = CheckpointConfig {
        dir: root.to_path_buf(),
        monitor: Some("valid/loss".into()),
        max_checkpoints: Some(10),
        fsync: false,
        ..CheckpointConfig::default()
    };
    let mut ck = ModelCheckpointer::open("exp-1", cfg).unwrap();
    save_checkpoints(
        &mut ck,
        &[(10, 0.9), (20, 0.5), (30, 0.2), (40, 0.4), (50, 0.3)],
    );
    drop(ck);
    root.join("exp-1")
}

#[test]
fn ckpt_list_verify_prune_export() {
    let tmp = tempfile::tempdir().unwrap();
    let exp = make_checkpoints(&tmp.path().join("checkpoints"));

    let o = exptrack(&["ckpt", "list", s(&exp)]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("5 checkpoints"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("30 ") && l.contains("best")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("50 ") && l.contains("latest")),
        "{out}"
    );
    let o = exptrack(&["ckpt", "list", s(&exp), "--json"]);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v[0]["best"], 30);
    assert_eq!(v[0]["checkpoints"].as_array().unwrap().len(), 5);
    // The root holding the experiment works too.
    let o = exptrack(&["ckpt", "list", s(exp.parent().unwrap()), "--json"]);
    assert_code(&o, 0);

    // verify: clean.
    let o = exptrack(&["ckpt", "verify", s(&exp)]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("5 checkpoint(s) verified, 0 corrupt"),
        "{}",
        stdout(&o)
    );

    // prune --dry-run keeps everything on disk and lists what would go.
    let o = exptrack(&["ckpt", "prune", s(&exp), "--dry-run", "--keep-last", "1"]);
    assert_code(&o, 0);
    let out = stdout(&o);
    // Latest (50) and best (30) always stay.
    for step in [10, 20, 40] {
        assert!(
            out.contains(&format!(
                "would delete {}",
                exp.join(format!("ckpt-{step:012}")).display()
            )),
            "{out}"
        );
    }
    assert!(
        !out.contains("ckpt-000000000030") && !out.contains("ckpt-000000000050"),
        "{out}"
    );
    assert!(out.contains("3 checkpoint(s) would be deleted (dry run)"));
    for step in [10, 20, 30, 40, 50] {
        assert!(
            exp.join(format!("ckpt-{step:012}")).is_dir(),
            "dry run deleted {step}"
        );
    }
    // Without a rule, prune refuses (exit 2).
    let o = exptrack(&["ckpt", "prune", s(&exp), "--dry-run"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("hint: give --keep-last"));

    // export-best copies the best checkpoint (step 30), verified.
    let out_dir = tmp.path().join("best");
    let o = exptrack(&["ckpt", "export-best", s(&exp), s(&out_dir)]);
    assert_code(&o, 0);
    assert!(stdout(&o).contains("exported step 30"), "{}", stdout(&o));
    assert_eq!(
        std::fs::read(out_dir.join("model.bin")).unwrap(),
        vec![30u8; 4096]
    );
    assert_eq!(
        std::fs::read(out_dir.join("optim.bin")).unwrap(),
        vec![1u8; 1000]
    );
    let meta: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("checkpoint.json")).unwrap()).unwrap();
    assert_eq!(meta["step"], 30);
    // --monitor/--mode override what registry.json says: best by max loss is step 10.
    let out_dir2 = tmp.path().join("worst");
    let o = exptrack(&[
        "ckpt",
        "export-best",
        s(&exp),
        s(&out_dir2),
        "--mode",
        "max",
    ]);
    assert_code(&o, 0);
    assert_eq!(
        std::fs::read(out_dir2.join("model.bin")).unwrap(),
        vec![10u8; 4096]
    );

    // A real prune deletes.
    let o = exptrack(&["ckpt", "prune", s(&exp), "--keep-last", "1"]);
    assert_code(&o, 0);
    assert!(!exp.join("ckpt-000000000010").exists());
    assert!(exp.join("ckpt-000000000030").is_dir() && exp.join("ckpt-000000000050").is_dir());

    // verify: one flipped byte in a committed file is found (exit 1) and named.
    let victim = exp.join("ckpt-000000000050").join("model.bin");
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();
    let o = exptrack(&["ckpt", "verify", s(&exp)]);
    assert_code(&o, 1);
    let out = stdout(&o);
    assert!(out.contains("CORRUPT") && out.contains("step 50"), "{out}");
    assert!(out.contains("1 checkpoint(s) verified, 1 corrupt"), "{out}");
    let err = stderr(&o);
    assert!(err.starts_with("error: 1 corrupt checkpoint(s)"), "{err}");
    assert!(
        err.contains("model.bin"),
        "the corrupt file is named: {err}"
    );
    let o = exptrack(&["ckpt", "verify", s(&exp), "--json"]);
    assert_code(&o, 1);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["corrupt"], 1);

    // Not a checkpoint directory: exit 2 with a hint.
    let o = exptrack(&["ckpt", "verify", s(tmp.path())]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("hint:"));
}

#[test]
fn gate_thresholds_without_promotion() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let (_, id) = make_run(
        &runs,
        &RunSpec {
            results: &[("test_accuracy", serde_json::json!(0.93))],
            ..Default::default()
        },
    );
    let d = s(&runs);
    let gate = |rest: &[&str]| {
        let mut args = vec!["gate", id.as_str(), "--dir", d];
        args.extend_from_slice(rest);
        exptrack(&args)
    };
    let o = gate(&["--metric", "test_accuracy", "--min", "0.9"]);
    assert_code(&o, 0);
    assert!(
        stdout(&o).starts_with("PASS test_accuracy = 0.93"),
        "{}",
        stdout(&o)
    );
    let o = gate(&["--metric", "test_accuracy", "--min", "0.95"]);
    assert_code(&o, 1);
    assert!(stdout(&o).starts_with("FAIL"));
    assert!(stderr(&o).contains("below"));
    let o = gate(&["--metric", "test_accuracy", "--max", "0.9"]);
    assert_code(&o, 1);
    // A logged metric: last valid/loss = 2.5/sqrt(50) ~ 0.354; min over the run is the same.
    let o = gate(&["--metric", "valid/loss", "--max", "0.4", "--json"]);
    assert_code(&o, 0);
    let v: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["passed"], true);
    let o = gate(&["--metric", "valid/loss", "--stat", "max", "--max", "0.4"]);
    assert_code(&o, 1);
    // Unknown metric: exit 2 and the known keys as a hint.
    let o = gate(&["--metric", "nope", "--min", "1"]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("hint: known:"), "{}", stderr(&o));
    // Bad --promote syntax: exit 2.
    let o = gate(&[
        "--metric",
        "test_accuracy",
        "--min",
        "0.9",
        "--promote",
        "nomodel",
        "--mlflow",
        "http://127.0.0.1:9",
    ]);
    assert_code(&o, 2);
}

#[test]
fn sync_to_wandb_offline_and_resume_from_cursor() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let (dir, id) = make_run(&runs, &RunSpec::default());
    let wandb_dir = tmp.path().join("wb");
    let args = [
        "sync",
        id.as_str(),
        "--dir",
        s(&runs),
        "--to",
        "wandb",
        "--wandb-offline",
        "--wandb-dir",
        s(&wandb_dir),
        "--wandb-project",
        "p",
    ];
    let o = exptrack(&args);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.starts_with("wandb: delivered "), "{out}");
    assert!(out.contains("run closed as completed"));
    let cursors: Value =
        serde_json::from_slice(&std::fs::read(dir.join("cursors.json")).unwrap()).unwrap();
    let n = cursors["wandb"].as_u64().unwrap();
    assert!(n > 0);
    assert!(out.contains(&format!("delivered {n} event(s)")), "{out}");
    // Written in W&B's offline layout.
    let found = std::fs::read_dir(wandb_dir.join("wandb"))
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("offline-run-"));
    assert!(found);
    // Again: nothing left to deliver.
    let o = exptrack(&args);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("delivered 0 event(s)"),
        "{}",
        stdout(&o)
    );
    // Unknown backend: usage error from clap (exit 2).
    let o = exptrack(&["sync", &id, "--dir", s(&runs), "--to", "tensorboard"]);
    assert_code(&o, 2);
}

/// `exptrack sync` refuses a run that another process (here: a live tracker in this test process)
/// has open, delivers nothing and leaves its cursors alone; once the run is finished the same
/// command syncs it.
#[test]
fn sync_refuses_a_run_that_is_open() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let tracker =
        exptrack_core::ExperimentTracker::builder(exptrack_core::ExperimentConfig::named("busy"))
            .runs_dir(&runs)
            .handle_signals(false)
            .collect_system_info(false)
            .build()
            .unwrap();
    for i in 0..20u64 {
        tracker
            .log_metrics(i, &[("train/loss", 1.0 / (i + 1) as f64)])
            .unwrap();
    }
    tracker.flush().unwrap();
    let dir = tracker.run_dir().to_path_buf();
    let id = tracker.metadata().run_id.clone();
    let wandb_dir = tmp.path().join("wb");
    let args = [
        "sync",
        id.as_str(),
        "--dir",
        s(&runs),
        "--to",
        "wandb",
        "--wandb-offline",
        "--wandb-dir",
        s(&wandb_dir),
    ];
    let o = exptrack(&args);
    assert_code(&o, 2);
    let err = stderr(&o);
    assert!(err.contains("open in another process"), "{err}");
    assert!(err.contains("nothing was synced"), "{err}");
    assert!(!wandb_dir.exists(), "nothing written for W&B");
    let cursors = std::fs::read_to_string(dir.join("cursors.json")).unwrap_or_default();
    assert!(!cursors.contains("wandb"), "{cursors}");

    // The library refuses too (for callers other than the CLI).
    let mut t = exptrack_wandb::WandbTracker::builder()
        .mode(exptrack_wandb::Mode::Offline)
        .dir(&wandb_dir)
        .build()
        .unwrap();
    let e = exptrack_core::sync_run(&dir, &mut t).unwrap_err();
    assert!(e.to_string().contains("open in another process"), "{e}");
    assert!(!wandb_dir.join("wandb").exists());

    tracker.finish(exptrack_core::RunStatus::Completed).unwrap();
    let o = exptrack(&args);
    assert_code(&o, 0);
    assert!(
        stdout(&o).contains("run closed as completed"),
        "{}",
        stdout(&o)
    );
}
