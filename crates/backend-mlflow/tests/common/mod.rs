//! Test harness: a real `mlflow server` (from the peer venv) on 127.0.0.1.
//!
//! - The interpreter comes from `EXPTRACK_PEER_PYTHON`; `mlflow` is the executable beside it.
//!   Missing: with `CI=true` the test fails, otherwise it prints `skipping: ...` and returns.
//! - The server gets a free port, a sqlite store and an artifacts destination in a temp dir,
//!   `MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false`, `--workers 1`, its own process group (setsid);
//!   `/health` is polled until it answers.
//! - Every server started is registered for an `atexit` hook that SIGKILLs its process group when
//!   the test binary exits (Rust statics are never dropped), and `Drop` kills it too.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once, OnceLock};
use std::time::{Duration, Instant};

use exptrack_http::reqwest;
use serde_json::Value;

static PGIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static ATEXIT: Once = Once::new();

extern "C" fn kill_all_servers() {
    if let Ok(pgids) = PGIDS.lock() {
        for &pg in pgids.iter() {
            // SAFETY: kill(2) on a process group we created; no memory is touched.
            unsafe {
                libc::kill(-pg, libc::SIGKILL);
                // Reap the group leader (our child) so no zombie is left.
                libc::waitpid(pg, std::ptr::null_mut(), 0);
            }
        }
    }
}

/// The `mlflow` executable from the peer venv, or `None` (after printing why) when absent and
/// not in CI. Panics in CI.
pub fn mlflow_exe() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let why = match std::env::var("EXPTRACK_PEER_PYTHON") {
        Err(_) => "EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh)".to_owned(),
        Ok(py) => {
            let exe = Path::new(&py).with_file_name("mlflow");
            if exe.is_file() {
                return Some(exe);
            }
            format!("no mlflow executable next to {py} (pip install mlflow==3.17.2)")
        }
    };
    if ci {
        panic!("MLflow peer missing in CI: {why}");
    }
    // Written to the real stderr, past libtest's output capture, so the skip is visible.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: MLflow peer missing: {why}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `mlflow server`.
pub struct MlflowServer {
    exe: PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    /// The admin password of a `--app-name basic-auth` server (user `admin`), `None` without auth.
    pub admin_password: Option<String>,
}

impl MlflowServer {
    /// Starts a server with a fresh store and waits until it is healthy.
    pub fn start(exe: &Path) -> MlflowServer {
        Self::start_inner(exe, None)
    }

    /// Starts `mlflow server --app-name basic-auth` (MLflow's basic HTTP authentication) whose
    /// user `admin` has `admin_password`; every REST call needs those credentials, `/health`
    /// does not.
    pub fn start_basic_auth(exe: &Path, admin_password: &str) -> MlflowServer {
        Self::start_inner(exe, Some(admin_password.to_owned()))
    }

    fn start_inner(exe: &Path, admin_password: Option<String>) -> MlflowServer {
        let dir = tempfile::Builder::new()
            .prefix("exptrack-mlflow-")
            .tempdir()
            .expect("tempdir");
        let mut s = MlflowServer {
            exe: exe.to_owned(),
            dir,
            port: free_port(),
            child: None,
            admin_password,
        };
        s.spawn();
        s.wait_healthy(Duration::from_secs(240));
        s
    }

    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn spawn(&mut self) {
        ATEXIT.call_once(|| {
            // SAFETY: registering a plain extern "C" fn with no captured state.
            unsafe {
                libc::atexit(kill_all_servers);
            }
        });
        let d = self.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .expect("log");
        let mut cmd = Command::new(&self.exe);
        cmd.arg("server")
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", d.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(d.join("artifacts"))
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
                "--workers",
                "1",
            ])
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .env_remove("MLFLOW_TRACKING_USERNAME")
            .env_remove("MLFLOW_TRACKING_PASSWORD")
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        if let Some(pw) = &self.admin_password {
            // The auth app's own user store and settings (see mlflow/server/auth/basic_auth.ini).
            let ini = d.join("basic_auth.ini");
            std::fs::write(
                &ini,
                format!(
                    "[mlflow]\ndefault_permission = READ\ndatabase_uri = sqlite:///{}\n\
                     admin_username = admin\n\
                     authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n",
                    d.join("basic_auth.db").display()
                ),
            )
            .expect("auth config");
            cmd.args(["--app-name", "basic-auth"])
                .env("MLFLOW_AUTH_CONFIG_PATH", &ini)
                .env("MLFLOW_AUTH_ADMIN_PASSWORD", pw)
                .env(
                    "MLFLOW_FLASK_SERVER_SECRET_KEY",
                    "exptrack-test-only-secret",
                );
        }
        // SAFETY: setsid is async-signal-safe; runs in the child between fork and exec.
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
        let pgid = child.id() as i32;
        PGIDS.lock().expect("pgids").push(pgid);
        self.child = Some(child);
    }

    fn wait_healthy(&mut self, limit: Duration) {
        let t = Instant::now();
        let client = reqwest::blocking::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("client");
        loop {
            if let Ok(r) = client.get(format!("{}/health", self.uri())).send()
                && r.status().is_success()
            {
                return;
            }
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                let log =
                    std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
                panic!("mlflow server exited ({status}):\n{log}");
            }
            if t.elapsed() > limit {
                panic!("mlflow server not healthy after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// SIGKILLs the server's whole process group and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pg = c.id() as i32;
            // SAFETY: kill(2) on our own process group.
            unsafe {
                libc::kill(-pg, libc::SIGKILL);
            }
            let _ = c.wait();
            PGIDS.lock().expect("pgids").retain(|&p| p != pg);
            // Wait until the port is free (children may take a moment to die).
            let t = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && t.elapsed() < Duration::from_secs(10)
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }

    /// Starts the server again on the same store and port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_healthy(Duration::from_secs(240));
    }

    /// `GET /api/2.0/mlflow/<path>` as JSON, independent of the crate under test.
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let r = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!("{}/api/2.0/mlflow/{path}", self.uri()))
            .query(query)
            .pipe_auth(self)
            .send()
            .expect("GET");
        let status = r.status();
        let v: Value = r.json().expect("json");
        assert!(status.is_success(), "GET {path}: {status} {v}");
        v
    }

    /// `POST /api/2.0/mlflow/<path>`.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        let r = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .post(format!("{}/api/2.0/mlflow/{path}", self.uri()))
            .json(body)
            .pipe_auth(self)
            .send()
            .expect("POST");
        let status = r.status();
        let v: Value = r.json().expect("json");
        assert!(status.is_success(), "POST {path}: {status} {v}");
        v
    }

    /// Raw bytes of an artifact via the proxy.
    pub fn artifact(&self, artifact_uri: &str, rel: &str) -> Vec<u8> {
        let path = artifact_uri
            .strip_prefix("mlflow-artifacts:")
            .expect("proxied artifact uri")
            .trim_start_matches('/');
        let r = reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(format!(
                "{}/api/2.0/mlflow-artifacts/artifacts/{path}/{rel}",
                self.uri()
            ))
            .send()
            .expect("GET artifact");
        assert!(r.status().is_success(), "artifact {rel}: {}", r.status());
        r.bytes().expect("bytes").to_vec()
    }

    /// The metric history as (step, value, timestamp), in the server's order.
    pub fn history(&self, run_id: &str, key: &str) -> Vec<(i64, Value, i64)> {
        let v = self.get(
            "metrics/get-history",
            &[
                ("run_id", run_id),
                ("metric_key", key),
                ("max_results", "25000"),
            ],
        );
        v["metrics"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    as_i64(&m["step"]),
                    m["value"].clone(),
                    as_i64(&m["timestamp"]),
                )
            })
            .collect()
    }

    pub fn run(&self, run_id: &str) -> Value {
        self.get("runs/get", &[("run_id", run_id)])["run"].clone()
    }
}

/// Adds the admin's credentials for a basic-auth server.
trait PipeAuth {
    fn pipe_auth(self, server: &MlflowServer) -> Self;
}

impl PipeAuth for reqwest::blocking::RequestBuilder {
    fn pipe_auth(self, server: &MlflowServer) -> Self {
        match &server.admin_password {
            Some(pw) => self.basic_auth("admin", Some(pw)),
            None => self,
        }
    }
}

pub fn as_i64(v: &Value) -> i64 {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(0)
}

/// `key → value` of a run's `data.tags` or `data.params`.
pub fn kv(run: &Value, field: &str) -> std::collections::BTreeMap<String, String> {
    run["data"][field]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            (
                p["key"].as_str().unwrap_or_default().to_owned(),
                p["value"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

impl Drop for MlflowServer {
    fn drop(&mut self) {
        self.kill();
    }
}

static SHARED: OnceLock<Option<MlflowServer>> = OnceLock::new();

/// The server shared by all tests of this binary (started on first use), or `None` when the peer
/// is missing outside CI.
pub fn shared_server() -> Option<&'static MlflowServer> {
    SHARED
        .get_or_init(|| mlflow_exe().map(|exe| MlflowServer::start(&exe)))
        .as_ref()
}
