//! The real `quickstart` example binary (built by `cargo test` beside this test, in
//! `target/<profile>/examples/`): how it reports failures.
//!
//! - Its errors print with `Display` and their cause chain, never as a `Debug` dump.
//! - Against a real `mlflow server --app-name basic-auth` with a wrong password, training goes on
//!   and the end of the run says, in one line, that MLflow got nothing, why (HTTP 401,
//!   authentication failed, which variables the credentials came from), how many events are only
//!   local and which command delivers them; nothing claims the run is on the server. The promised
//!   sync then delivers the run.

#[cfg(feature = "mlflow")]
#[path = "../crates/backend-mlflow/tests/common/mod.rs"]
mod mlflow_harness;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// A small, fast quickstart config (seconds in the dev profile).
fn config(name: &str) -> String {
    format!(
        r#"[experiment]
name = "{name}"

[tracking]
use_tensorboard = false

[checkpointing]
max_checkpoints = 1
async = true
fsync = false

[training]
num_epochs = 1
batch_size = 64
learning_rate = 0.003
log_frequency = 5
checkpoint_save_frequency = 10
seed = 3
device = "cpu"
progress = false

[quickstart]
train_items = 640
valid_items = 128
hidden = 16
"#
    )
}

/// The example binary, or `None` (after saying why) when this test was built without it (e.g.
/// `cargo test --test examples` builds no examples; `cargo test` and scripts/test.sh do). In CI a
/// missing binary fails.
fn quickstart_exe() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir
        .join("examples")
        .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} is not built (run `cargo test` without --test, or `cargo build --example quickstart` \
         with the same features)",
        path.display()
    );
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: {why}");
    None
}

fn run(exe: &Path, cwd: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(exe);
    cmd.args(args)
        .current_dir(cwd)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("MLFLOW_TRACKING_USERNAME")
        .env_remove("MLFLOW_TRACKING_PASSWORD")
        .env_remove("MLFLOW_TRACKING_TOKEN")
        .env_remove("WANDB_API_KEY")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run quickstart")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `Debug` output of a struct or enum variant (`Checkpoint { message: .., source: Some(..) }`,
/// `Config("...")`, `Os { code: 20, .. }`).
fn debug_shape(s: &str) -> Option<&str> {
    const MARKERS: [&str; 7] = [
        " { message:",
        "source: Some(",
        "source: None",
        "Os { code:",
        "kind: ",
        "Config(\"",
        "Error { ",
    ];
    MARKERS.into_iter().find(|m| s.contains(m))
}

#[test]
fn errors_print_display_with_causes_never_debug() {
    let Some(exe) = quickstart_exe() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("q.toml");
    std::fs::write(&cfg, config("display-errors")).unwrap();
    let not_a_dir = tmp.path().join("a-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let broken = tmp.path().join("broken.toml");
    std::fs::write(&broken, "[experiment\nname = 1").unwrap();
    let escape = tmp.path().join("escape.toml");
    std::fs::write(&escape, config("../../escape")).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let runs = tmp.path().join("runs");
    let cases: [(&str, Vec<&str>); 4] = [
        // The runs root is a file: an I/O error with a cause (was `Error: Checkpoint { .. }`).
        (
            "runs root is a file",
            vec!["--config", cfg_s, "--runs", not_a_dir.to_str().unwrap()],
        ),
        ("broken config", vec!["--config", broken.to_str().unwrap()]),
        (
            "experiment name ../../escape",
            vec![
                "--config",
                escape.to_str().unwrap(),
                "--runs",
                runs.to_str().unwrap(),
            ],
        ),
        ("bad argument", vec!["--stop-after-step", "soon"]),
    ];
    for (what, args) in cases {
        let o = run(&exe, tmp.path(), &args, &[("EXPTRACK_LOG", "off")]);
        let err = text(&o.stderr);
        if what == "experiment name ../../escape" && o.status.success() {
            // Accepted (the name is made safe): then nothing may have escaped the runs root.
            assert!(!tmp.path().parent().unwrap().join("escape").exists());
            continue;
        }
        assert_eq!(o.status.code(), Some(1), "{what}: {err}");
        let last = err.lines().last().unwrap_or_default();
        assert!(last.starts_with("Error: "), "{what}: {err}");
        assert!(debug_shape(&err).is_none(), "{what}: Debug output: {err}");
    }
    // The I/O case names the cause, not just the wrapper.
    let o = run(
        &exe,
        tmp.path(),
        &["--config", cfg_s, "--runs", not_a_dir.to_str().unwrap()],
        &[],
    );
    let err = text(&o.stderr);
    assert!(
        err.contains("Not a directory") || err.contains("not a directory"),
        "{err}"
    );
}

#[cfg(feature = "mlflow")]
#[test]
fn rejected_mlflow_credentials_are_reported_once_with_cause_and_sync_command() {
    let Some(exe) = quickstart_exe() else {
        return;
    };
    let Some(mlflow) = mlflow_harness::mlflow_exe() else {
        return;
    };
    const RIGHT: &str = "right-Pa55word-for-admin";
    const WRONG: &str = "wrong-Pa55word-typo";
    let server = mlflow_harness::MlflowServer::start_basic_auth(&mlflow, RIGHT);
    let uri = server.uri();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("q.toml");
    std::fs::write(&cfg, config("auth-check")).unwrap();
    let runs = tmp.path().join("runs");
    let o = run(
        &exe,
        tmp.path(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "--runs",
            runs.to_str().unwrap(),
            "--mlflow",
            &uri,
            "--quiet",
        ],
        &[
            ("MLFLOW_TRACKING_USERNAME", "admin"),
            ("MLFLOW_TRACKING_PASSWORD", WRONG),
        ],
    );
    let (out, err) = (text(&o.stdout), text(&o.stderr));
    let both = format!("--- stdout\n{out}\n--- stderr\n{err}");
    // Training goes on.
    assert!(o.status.success(), "{both}");
    assert!(out.contains("final validation accuracy"), "{both}");
    // One line for MLflow, with everything needed.
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("mlflow")).collect();
    assert_eq!(lines.len(), 1, "one line about MLflow: {both}");
    let line = lines[0];
    assert!(
        line.starts_with("warning: mlflow: FAILED, nothing delivered"),
        "{line}"
    );
    for needle in [
        "HTTP 401",
        "authentication failed",
        "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
        "are only in the local store",
        "exptrack sync ",
        &format!("--to mlflow={uri}"),
    ] {
        assert!(line.contains(needle), "{needle:?} missing: {line}");
    }
    assert!(!err.contains("flush before plotting"), "{both}");
    // Nothing claims the run is on the server.
    assert!(
        !out.contains(&format!("MLflow:         {uri} (experiment")),
        "{both}"
    );
    assert!(out.contains("nothing of this run reached"), "{both}");
    // No secret anywhere.
    assert!(!both.contains(WRONG) && !both.contains(RIGHT), "{both}");

    // The server really has nothing.
    let status = exptrack_http::reqwest::blocking::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(format!("{uri}/api/2.0/mlflow/experiments/get-by-name"))
        .query(&[("experiment_name", "auth-check")])
        .basic_auth("admin", Some(RIGHT))
        .send()
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 404, "the experiment must not exist");

    // The events counted in the line are all in the local store; the promised sync (here through
    // the library, with the right password) delivers them.
    let run_dir = {
        let start = line.find("exptrack sync ").unwrap() + "exptrack sync ".len();
        let rest = &line[start..];
        PathBuf::from(&rest[..rest.find(" --to").unwrap()])
    };
    let count: u64 = {
        let start = line.find("all ").unwrap() + 4;
        line[start..].split(' ').next().unwrap().parse().unwrap()
    };
    let last = exptrack::store::RunReader::open(&run_dir)
        .unwrap()
        .last_seq()
        .unwrap();
    assert_eq!(count, last, "{line}");
    let mut tracker = exptrack::mlflow::MlflowTracker::builder()
        .tracking_uri(&uri)
        .basic_auth("admin", RIGHT)
        .experiment_name("auth-check")
        .build()
        .unwrap();
    let r = exptrack::mlflow::sync_run_with(&run_dir, &mut tracker).unwrap();
    assert_eq!(r.delivered, last);
    let exp = server.get(
        "experiments/get-by-name",
        &[("experiment_name", "auth-check")],
    );
    assert!(exp["experiment"]["experiment_id"].is_string(), "{exp}");
}
