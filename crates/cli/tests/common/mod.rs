//! Shared helpers: runs written by the real tracker, the built binary, and a real `mlflow server`.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

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

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The `mlflow` executable next to `EXPTRACK_PEER_PYTHON`; `None` after printing
/// `skipping: ...` when it is missing outside CI; panics when it is missing in CI.
pub fn mlflow_exe() -> Option<PathBuf> {
    let why = match std::env::var("EXPTRACK_PEER_PYTHON") {
        Err(_) => "EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh)".to_owned(),
        Ok(py) => {
            let exe = Path::new(&py).with_file_name("mlflow");
            if exe.is_file() {
                return Some(exe);
            }
            format!("no mlflow executable beside {py}")
        }
    };
    assert!(!ci(), "MLflow peer missing with CI=true: {why}");
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: MLflow peer missing: {why}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A `mlflow server` on 127.0.0.1 in its own process group; killed (the whole group) on drop.
pub struct MlflowServer {
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Child,
}

impl MlflowServer {
    pub fn start(exe: &Path) -> MlflowServer {
        let dir = tempfile::Builder::new()
            .prefix("exptrack-cli-mlflow-")
            .tempdir()
            .expect("tempdir");
        let port = free_port();
        let d = dir.path();
        let log = std::fs::File::create(d.join("server.log")).expect("log");
        let mut cmd = Command::new(exe);
        cmd.arg("server")
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", d.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(d.join("artifacts"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // SAFETY: only setsid(2), which is async-signal-safe, runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn mlflow server");
        let mut s = MlflowServer { dir, port, child };
        s.wait_healthy(Duration::from_secs(240));
        s
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "mlflow server exited ({status}) before becoming healthy:\n{}",
                    self.log_tail()
                );
            }
            if health_ok(self.port) {
                return;
            }
            assert!(
                start.elapsed() < limit,
                "mlflow server not healthy after {limit:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log.get(start..).unwrap_or("").to_owned()
    }
}

/// `GET /health` over a plain TCP connection (no HTTP client dependency needed).
fn health_ok(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    buf.starts_with(b"HTTP/1.1 200") || buf.starts_with(b"HTTP/1.0 200")
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: kill(2) on the process group this test created (setsid made the child its
        // leader); no memory is shared.
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
