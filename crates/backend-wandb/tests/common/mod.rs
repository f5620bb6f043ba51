//! Shared test helpers: the real `wandb==0.31.0` peer, an isolated environment for it, and the
//! HTTP recorder standing in for the W&B server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use exptrack_core::{ExperimentMetadata, RunContext};

/// A 40-character fake API key.
pub const FAKE_KEY: &str = "0123456789abcdef0123456789abcdef01234567";

/// The peer Python with `wandb==0.31.0`, or `None` (after printing why) when it is missing and
/// `CI` is not `true`. In CI a missing peer fails the test.
pub fn peer_python() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let missing = |why: String| -> Option<PathBuf> {
        if ci {
            panic!("wandb peer required in CI: {why}");
        }
        eprintln!("skipping: {why}");
        None
    };
    let Some(py) = std::env::var_os("EXPTRACK_PEER_PYTHON") else {
        return missing("EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh)".into());
    };
    let py = PathBuf::from(py);
    let out = Command::new(&py)
        .args(["-c", "import wandb; print(wandb.__version__)"])
        .env("WANDB_SILENT", "true")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let v = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            if v != "0.31.0" {
                return missing(format!("wandb {v} found, 0.31.0 required"));
            }
            Some(py)
        }
        Ok(o) => missing(format!(
            "`import wandb` failed with {}: {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => missing(format!("cannot run {}: {e}", py.display())),
    }
}

/// The `wandb` executable next to the interpreter.
pub fn wandb_exe(py: &Path) -> PathBuf {
    py.parent().expect("python has a parent dir").join("wandb")
}

/// A command with HOME / WANDB_* pointing into `home`, no credentials inherited (W&B settings,
/// `NETRC`, exptrack's runs dir), stdin closed, and every non-loopback HTTP request sent to a dead
/// local proxy. (The CLI's W&B tests use it too.)
pub fn isolated(program: &Path, home: &Path) -> Command {
    let mut cmd = Command::new(program);
    for (k, _) in std::env::vars_os() {
        if let Some(k) = k.to_str()
            && (k.starts_with("WANDB_")
                || k.to_ascii_lowercase().ends_with("_proxy")
                || k == "NETRC"
                || k == "EXPTRACK_RUNS_DIR")
        {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null());
    for d in ["home", "config", "cache", "data"] {
        std::fs::create_dir_all(home.join(d)).unwrap();
    }
    cmd.env("HOME", home.join("home"))
        .env("WANDB_CONFIG_DIR", home.join("config"))
        .env("WANDB_CACHE_DIR", home.join("cache"))
        .env("WANDB_DATA_DIR", home.join("data"))
        .env("WANDB_SILENT", "true")
        .env("WANDB_DISABLE_GIT", "true")
        .env("WANDB_ERROR_REPORTING", "false")
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("HTTPS_PROXY", "http://127.0.0.1:9")
        .env("http_proxy", "http://127.0.0.1:9")
        .env("https_proxy", "http://127.0.0.1:9")
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost");
    cmd
}

/// Runs and returns the output, printing stderr when it failed.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    if !out.status.success() {
        eprintln!(
            "command failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Runs a shell command line that calls `wandb` (as a user would paste it, e.g. a companion's
/// shared-mode `wandb sync`) in the isolated environment, against the recorder, and asserts it
/// succeeded.
pub fn run_wandb_shell(py: &Path, home: &Path, rec: &Recorder, command: &str) {
    let bin = wandb_exe(py).parent().expect("venv bin").to_owned();
    let out = run(isolated(Path::new("/bin/sh"), home)
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("WANDB_BASE_URL", rec.base_url())
        .env("WANDB_API_KEY", FAKE_KEY)
        .arg("-c")
        .arg(command));
    assert!(out.status.success(), "{command} failed");
}

/// `wandb leet inspect --json FILE`: success, one JSON value per record, and stderr.
pub struct Inspect {
    pub ok: bool,
    pub records: Vec<serde_json::Value>,
    pub stderr: String,
}

/// Runs `wandb leet inspect --json FILE`.
pub fn leet_inspect(py: &Path, home: &Path, file: &Path) -> Inspect {
    let out = isolated(&wandb_exe(py), home)
        .args(["leet", "inspect", "--json"])
        .arg(file)
        .output()
        .expect("run wandb leet inspect");
    let records = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad JSON line {l:?}: {e}")))
        .collect();
    Inspect {
        ok: out.status.success(),
        records,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The W&B server stand-in (tests/recorder.py) on 127.0.0.1.
pub struct Recorder {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Recorder {
    pub fn start(py: &Path, dir: &Path) -> Recorder {
        Self::spawn(py, dir, false)
    }

    /// A recorder that keeps each run's history lines and answers `UpsertBucket` and
    /// `RunResumeStatus` with them, like a server that holds the run (recorder.py `--stateful`).
    pub fn start_stateful(py: &Path, dir: &Path) -> Recorder {
        Self::spawn(py, dir, true)
    }

    fn spawn(py: &Path, dir: &Path, stateful: bool) -> Recorder {
        let log = dir.join(format!("requests-{}.jsonl", rand_suffix()));
        // Via the crates directory, so the CLI's tests (which include this file) find it too;
        // the root package's tests (the facade) find it under crates/.
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
        let script = [
            manifest.join("../backend-wandb/tests/recorder.py"),
            manifest.join("crates/backend-wandb/tests/recorder.py"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .expect("tests/recorder.py of exptrack-wandb");
        let mut child = Command::new(py)
            .arg(script)
            .arg(&log)
            .args(stateful.then_some("--stateful"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start recorder");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .expect("recorder port");
        let port = line.trim().parse().expect("recorder printed its port");
        Recorder { child, port, log }
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Makes the next `count` requests whose path contains `path_part` fail with `status`.
    pub fn fail_next(&self, path_part: &str, count: u32, status: u16) {
        let body = format!(r#"{{"match":"{path_part}","left":{count},"status":{status}}}"#);
        self.control(&body);
    }

    /// Appends `query` to every upload URL handed out from now on (like a pre-signed URL's
    /// signature).
    pub fn presign(&self, query: &str) {
        self.control(&serde_json::json!({ "presign": query }).to_string());
    }

    fn control(&self, body: &str) {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "POST /_control HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    }

    /// The stateful recorder's runs: `{run: {"history": {offset: line}, "summary", "config"}}`.
    pub fn state(&self) -> serde_json::Value {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        use std::io::{Read, Write};
        write!(
            s,
            "GET /_state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (_, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
        serde_json::from_str(body).unwrap()
    }

    /// Every request recorded so far.
    pub fn requests(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Starts a fresh log (e.g. between two clients).
    pub fn reset(&mut self) -> PathBuf {
        let old = self.log.clone();
        let text = std::fs::read_to_string(&old).unwrap_or_default();
        std::fs::write(&old, "").unwrap();
        let saved = old.with_extension(format!("{}.jsonl", rand_suffix()));
        std::fs::write(&saved, text).unwrap();
        saved
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{:x}", n & 0xffff_ffff)
}

/// An online tracker talking to `rec` (project `exptrack-test`, entity `team-a`, writing its local
/// copy under `dir`; no timed flushes, so what is sent follows the test's flushes).
pub fn online_tracker(rec: &Recorder, dir: &Path) -> exptrack_wandb::WandbTracker {
    exptrack_wandb::WandbTracker::builder()
        .mode(exptrack_wandb::Mode::Online)
        .api_key(FAKE_KEY)
        .base_url(rec.base_url())
        .dir(dir)
        .project("exptrack-test")
        .entity("team-a")
        .flush_interval(std::time::Duration::from_secs(3600))
        .build()
        .expect("online tracker")
}

/// A run context for experiment `name` with run id `run_id` and the given TOML config.
pub fn context(dir: &Path, name: &str, run_id: &str, config: &str) -> RunContext {
    let mut metadata = ExperimentMetadata::new(name, "0123456789abcdef0123");
    metadata.run_id = run_id.to_owned();
    metadata.tags = vec!["exp-tag".to_owned()];
    metadata.description = "a test run".to_owned();
    RunContext {
        metadata,
        config: toml::from_str(config).expect("config TOML"),
        run_dir: dir.join("runs").join(run_id),
        resumed: false,
    }
}
