//! Shared helpers: runs written by the real tracker, the built binary, and a real `mlflow server`
//! (the MLflow backend's harness).
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};

/// Runs `exptrack` with `args` (no progress bars: stderr is not a terminal) and returns its output.
pub fn exptrack(args: &[&str]) -> Output {
    exptrack_env(args, &[])
}

/// Like [`exptrack`] with extra environment variables.
pub fn exptrack_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_exptrack"));
    cmd.args(args)
        .env_remove("EXPTRACK_RUNS_DIR")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("WANDB_API_KEY")
        .env_remove("WANDB_MODE")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run exptrack")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Asserts the exit code, printing both streams on mismatch.
#[track_caller]
pub fn assert_code(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// A run of experiment `name` with `config` (TOML body added after `[experiment]`).
pub struct RunSpec<'a> {
    pub name: &'a str,
    pub extra_toml: &'a str,
    /// Multiplier on the loss curve (smaller = better run).
    pub loss_scale: f64,
    pub steps: u64,
    pub results: &'a [(&'a str, serde_json::Value)],
    pub model_file: Option<&'a Path>,
}

impl Default for RunSpec<'_> {
    fn default() -> Self {
        RunSpec {
            name: "cli-test",
            extra_toml: "",
            loss_scale: 1.0,
            steps: 50,
            results: &[],
            model_file: None,
        }
    }
}

/// Writes a completed run under `runs`; returns (run dir, run id).
pub fn make_run(runs: &Path, spec: &RunSpec<'_>) -> (PathBuf, String) {
    let text = format!(
        "[experiment]\nname = \"{}\"\n{}",
        spec.name, spec.extra_toml
    );
    let cfg = ExperimentConfig::parse(&text, "test.toml").expect("config");
    let t = ExperimentTracker::builder(cfg)
        .runs_dir(runs)
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .expect("tracker");
    for step in 1..=spec.steps {
        let x = step as f64;
        t.log_metrics(
            step,
            &[
                ("train/loss", spec.loss_scale * 2.0 / x.sqrt()),
                ("train/lr", 0.01),
            ],
        )
        .unwrap();
        if step % 10 == 0 {
            t.log_metrics(
                step,
                &[
                    ("valid/loss", spec.loss_scale * 2.5 / x.sqrt()),
                    ("valid/accuracy", 1.0 - spec.loss_scale * 0.3 / x.sqrt()),
                ],
            )
            .unwrap();
        }
    }
    for (k, v) in spec.results {
        t.set_result(k, v.clone()).unwrap();
    }
    if let Some(m) = spec.model_file {
        t.log_model(m, "model/model.bin", Some(spec.steps)).unwrap();
    }
    let dir = t.run_dir().to_path_buf();
    let id = t.metadata().run_id.clone();
    t.finish(RunStatus::Completed).unwrap();
    (dir, id)
}

// ------------------------------------------------------------------ MLflow peer

// The real `mlflow server` harness of the MLflow backend's tests (free port, sqlite store,
// process group killed at exit, CI=true fails when the peer is missing), shared rather than copied.
#[path = "../../../backend-mlflow/tests/common/mod.rs"]
mod mlflow_harness;

#[allow(unused_imports)] // not every test binary starts a server
pub use mlflow_harness::{MlflowServer, mlflow_exe};
