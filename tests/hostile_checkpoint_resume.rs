//! Issue 12, end to end: the quickstart (`exptrack::quickstart::run`, what
//! `cargo run --example quickstart -- --config FILE` runs) is interrupted after its third
//! checkpoint; the newest `checkpoint.json` is then made hostile (`files[0].size =
//! 1000000000000000`, or a file name that climbs out of the directory) and the quickstart is run
//! again. It used to abort ("memory allocation of 1000000000000000 bytes failed", exit 134); now
//! the bad checkpoint is reported invalid, the run resumes from the previous one and completes.
//!
//! Each run is a child process (this test binary re-executed with `EXPTRACK_HOSTILE_ROLE`), so
//! an abort is an exit status the parent can report rather than the end of the test binary.

use std::path::{Path, PathBuf};
use std::process::Command;

use exptrack::quickstart::{QuickstartArgs, run};

const ROLE: &str = "EXPTRACK_HOSTILE_ROLE";
const CONFIG: &str = "EXPTRACK_HOSTILE_CONFIG";
const STOP: &str = "EXPTRACK_HOSTILE_STOP";
const OUT: &str = "EXPTRACK_HOSTILE_OUT";
const TEST_NAME: &str = "hostile_checkpoint_json_is_skipped_and_the_run_completes";

/// 600 items / batch 50 = 12 steps per epoch, 3 epochs, a checkpoint every 6 steps.
fn config(root: &Path) -> String {
    format!(
        r#"
[experiment]
name = "hostile-resume"

[tracking]
runs_dir = '{runs}'

[checkpointing]
dir = '{ckpts}'
fsync = false

[training]
num_epochs = 3
batch_size = 50
learning_rate = 0.01
optimizer = "adamw"
log_frequency = 6
checkpoint_save_frequency = 6
seed = 3
device = "cpu"
progress = false

[quickstart]
train_items = 600
valid_items = 200
hidden = 16
"#,
        runs = root.join("runs").display(),
        ckpts = root.join("checkpoints").display(),
    )
}

/// The child: one quickstart run; writes `interrupted resumed_from_step steps` to `$OUT`.
fn child_role() {
    let stop = std::env::var(STOP).ok().map(|s| s.parse::<u64>().unwrap());
    let out = run(QuickstartArgs {
        config: Some(std::env::var(CONFIG).unwrap().into()),
        quiet: true,
        stop_after_step: stop,
        ..QuickstartArgs::default()
    })
    .unwrap();
    let r = &out.result;
    let line = format!(
        "{} {} {}",
        r.interrupted,
        r.resumed_from_step
            .map_or("-".to_owned(), |s| s.to_string()),
        r.steps
    );
    std::fs::write(std::env::var(OUT).unwrap(), line).unwrap();
}

/// Runs the quickstart in a child process; returns its report line.
fn quickstart(cfg: &Path, stop: Option<u64>) -> String {
    let out = cfg.with_extension("out");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, "child")
        .env(CONFIG, cfg)
        .env(OUT, &out);
    if let Some(s) = stop {
        cmd.env(STOP, s.to_string());
    }
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "quickstart run failed ({}):\n{}\n{}",
        result.status,
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    std::fs::read_to_string(&out).unwrap()
}

/// The single experiment directory under `<root>/checkpoints`.
fn experiment_dir(root: &Path) -> PathBuf {
    let dirs: Vec<PathBuf> = std::fs::read_dir(root.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs[0].clone()
}

#[test]
fn hostile_checkpoint_json_is_skipped_and_the_run_completes() {
    if std::env::var(ROLE).is_ok() {
        return child_role();
    }
    type Edit = fn(&mut serde_json::Value, &Path);
    let cases: [(&str, Edit); 2] = [
        ("size 1e15", |v, _| {
            v["files"][0]["size"] = serde_json::json!(1_000_000_000_000_000u64)
        }),
        ("name out of the directory", |v, ckpt| {
            // The checkpoint's own first file, moved outside and named by its absolute path:
            // size and digest are right, only the name is hostile.
            let name = v["files"][0]["name"].as_str().unwrap().to_owned();
            let outside = ckpt.parent().unwrap().parent().unwrap().join("outside.bin");
            std::fs::rename(ckpt.join(name), &outside).unwrap();
            v["files"][0]["name"] = serde_json::json!(outside.to_str().unwrap());
        }),
    ];
    for (what, edit) in cases {
        let tmp = tempfile::tempdir().unwrap();
        let cfg = tmp.path().join("hostile.toml");
        std::fs::write(&cfg, config(tmp.path())).unwrap();

        let first = quickstart(&cfg, Some(18));
        assert_eq!(
            first, "true - 18",
            "{what}: interrupted after the checkpoint at step 18"
        );
        let exp = experiment_dir(tmp.path());
        let newest = exp.join("ckpt-000000000018/checkpoint.json");
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&newest).unwrap()).unwrap();
        edit(&mut v, &exp.join("ckpt-000000000018"));
        std::fs::write(&newest, serde_json::to_vec_pretty(&v).unwrap()).unwrap();

        let second = quickstart(&cfg, None);
        assert_eq!(
            second, "false 12 36",
            "{what}: resumed from the previous valid checkpoint (12) and completed all 36 steps"
        );
        assert!(exp.join("results.json").is_file(), "{what}: completed");
    }
}
