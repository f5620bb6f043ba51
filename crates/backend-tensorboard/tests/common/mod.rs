//! Shared test helpers: run contexts, peer Python discovery, tiny HTTP client.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use exptrack_core::{Batch, Event, ExperimentMetadata, RunContext, Tracker};

/// A run context for `name` with its run dir under `root`.
pub fn ctx(root: &Path, name: &str) -> RunContext {
    let metadata = ExperimentMetadata::new(name, "0123456789abcdef0123");
    RunContext {
        run_dir: root
            .join("runs")
            .join(&metadata.experiment_id)
            .join(&metadata.run_id),
        metadata,
        config: Default::default(),
        resumed: false,
    }
}

/// Writes `events` through `tracker` in batches of `batch_size`, numbering from `first_seq`.
pub fn write_all(tracker: &mut dyn Tracker, events: &[Event], batch_size: usize, first_seq: u64) {
    let mut seq = first_seq;
    for chunk in events.chunks(batch_size.max(1)) {
        tracker
            .write(&Batch {
                first_seq: seq,
                events: chunk,
            })
            .expect("write");
        seq += chunk.len() as u64;
    }
}

/// The peer interpreter with `modules` importable, or `None` after printing "skipping: ..." (or a
/// panic when `CI=true`).
pub fn peer_python(modules: &[&str]) -> Option<PathBuf> {
    let ci = std::env::var("CI").map(|v| v == "true").unwrap_or(false);
    let unavailable = |why: String| -> Option<PathBuf> {
        if ci {
            panic!("peer Python unavailable with CI=true: {why}");
        }
        eprintln!("skipping: {why}");
        None
    };
    let Some(py) = std::env::var_os("EXPTRACK_PEER_PYTHON").map(PathBuf::from) else {
        return unavailable(
            "EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh and export its last line)"
                .into(),
        );
    };
    let import = format!("import {}", modules.join(", "));
    match Command::new(&py).args(["-c", &import]).output() {
        Ok(out) if out.status.success() => Some(py),
        Ok(out) => unavailable(format!(
            "{} cannot `{import}`: {}",
            py.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => unavailable(format!("cannot run {}: {e}", py.display())),
    }
}

/// Runs `script` (a file next to the tests) with `args`, returns its stdout parsed as JSON.
pub fn run_python_json(py: &Path, script: &str, args: &[&str]) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/py")
        .join(script);
    let out = Command::new(py)
        .arg(&script)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{} failed: {}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}): {}",
            script.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A TCP port that was free on 127.0.0.1 a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// `GET http://127.0.0.1:{port}{path}` with HTTP/1.0; returns (status, body).
pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    exchange(port, request.as_bytes())
}

fn exchange(port: u16, request: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    s.write_all(request)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| std::io::Error::other("no header end"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    Ok((status, raw[split + 4..].to_vec()))
}

/// `POST` of a JSON body with TensorBoard's `X-XSRF-Protected` header; returns (status, body).
pub fn http_post_json(port: u16, path: &str, body: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         X-XSRF-Protected: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    exchange(port, request.as_bytes())
}

/// Percent-encodes a query component.
pub fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A real PNG of `width` x `height` with `channels` (1..=4) channels.
pub fn png(width: u32, height: u32, channels: u8) -> Vec<u8> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    };
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width, height);
        enc.set_color(color);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("png header");
        let n = (width * height * u32::from(channels)) as usize;
        let data: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
        w.write_image_data(&data).expect("png data");
    }
    out
}

/// Kills a child process when dropped.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
