//! The real quickstart binary (`examples/quickstart.rs`) for the tests that run it as a user
//! would: tests/quickstart_hardening.rs and tests/quickstart_s3.rs.
//!
//! The binary is the one `cargo test` builds beside the test (`target/<profile>/examples/`);
//! when it is missing (e.g. `cargo test --test quickstart_hardening`) it is built once with
//! `cargo build --example quickstart` into the same target directory (with `--features s3` when
//! the test itself has it).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The quickstart example's executable.
pub fn quickstart_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let beside = std::env::current_exe().ok().and_then(|exe| {
            let path = exe
                .parent()?
                .parent()?
                .join("examples")
                .join(format!("quickstart{}", std::env::consts::EXE_SUFFIX));
            path.is_file().then_some(path)
        });
        if let Some(path) = beside {
            return path;
        }
        let mut args = vec!["build", "--example", "quickstart", "--message-format=json"];
        if cfg!(feature = "s3") {
            args.extend(["--features", "s3"]);
        }
        let out = Command::new(env!("CARGO"))
            .args(&args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("running cargo build");
        assert!(
            out.status.success(),
            "cargo build --example quickstart failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["target"]["name"] == "quickstart")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no quickstart executable")
    })
}

/// Writes `config` to `dir/quick.toml` and runs the quickstart in `dir` with
/// `--config quick.toml` and `args`, the variables `env` set and no MLflow / W&B variables of
/// the caller's. Returns the output and its stdout and stderr as one text.
pub fn run_in(dir: &Path, config: &str, args: &[&str], env: &[(&str, String)]) -> (Output, String) {
    std::fs::write(dir.join("quick.toml"), config).unwrap();
    let mut cmd = Command::new(quickstart_binary());
    cmd.args(["--config", "quick.toml"])
        .args(args)
        .current_dir(dir)
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("WANDB_API_KEY");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}
