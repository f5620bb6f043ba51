//! Pre-signed upload URLs are secrets: their signature and credential must never reach a log line,
//! an error, the finish report or any file under the run directory, even when uploads are retried
//! (a retry used to log the full URL).
//!
//! Runs the online tracker behind the real dispatcher against the local W&B stand-in
//! (tests/recorder.py), which hands out upload URLs with a signature query string and fails the
//! first uploads; every `tracing` line of the process is captured.

mod common;

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use exptrack_wandb::{Mode, WandbTracker};

const SIGNATURE: &str = "5ec7e75166a7e7e5deadbeef0badc0ffee";
const CREDENTIAL: &str = "svc-uploader%40exptrack-test.iam.example";

/// Collects everything the global `tracing` subscriber writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn files_containing(root: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Ok(bytes) = std::fs::read(&p)
                && String::from_utf8_lossy(&bytes).contains(needle)
            {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

#[test]
fn presigned_upload_urls_never_reach_logs_errors_or_files() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let captured = Captured::default();
    let sink = captured.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish(),
    )
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let rec_dir = tmp.path().join("recorder");
    std::fs::create_dir_all(&rec_dir).unwrap();
    let rec = common::Recorder::start(&py, &rec_dir);
    rec.presign(&format!(
        "X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Credential={CREDENTIAL}&X-Goog-Expires=900&X-Goog-Signature={SIGNATURE}"
    ));
    // The first three uploads fail: the HTTP client retries (and logs), then the dispatcher
    // retries the batch (and logs), then it goes through.
    rec.fail_next("/upload/", 3, 503);

    let root = tmp.path().join("work");
    std::fs::create_dir_all(&root).unwrap();
    let artifact = root.join("notes.txt");
    std::fs::write(&artifact, "hello").unwrap();
    let wandb = WandbTracker::builder()
        .mode(Mode::Online)
        .api_key(common::FAKE_KEY)
        .base_url(rec.base_url())
        .dir(&root)
        .project("exptrack-test")
        .flush_interval(Duration::ZERO)
        .retry(exptrack_http::RetryConfig {
            max_retries: 1,
            initial_backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            jitter: Duration::from_millis(5),
            policy: exptrack_http::RetryPolicy::wandb(),
            ..exptrack_http::RetryConfig::default()
        })
        .build()
        .unwrap();
    let run = ExperimentTracker::builder(ExperimentConfig::named("redact"))
        .runs_dir(root.join("runs"))
        .handle_signals(false)
        .collect_system_info(false)
        .finish_timeout(Duration::from_secs(60))
        .with_tracker(Box::new(wandb))
        .build()
        .unwrap();
    for s in 0..5u64 {
        run.log_metrics(s, &[("train/loss", 1.0 / (s + 1) as f64)])
            .unwrap();
    }
    run.log_artifact(&artifact, "notes.txt").unwrap();
    let report = run.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");

    let requests = rec.requests();
    let puts: Vec<_> = requests.iter().filter(|r| r["method"] == "PUT").collect();
    assert!(
        puts.iter()
            .filter(|r| r.get("failed_with").is_some())
            .count()
            == 3
            && puts.iter().any(|r| r.get("failed_with").is_none()),
        "three failed uploads, then one that went through: {puts:?}"
    );

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("retrying after") && logs.contains("/upload/"),
        "the upload retries were logged:\n{logs}"
    );
    assert!(
        logs.contains("X-Goog-Signature=REDACTED"),
        "the URL is shown redacted:\n{logs}"
    );
    for secret in [SIGNATURE, CREDENTIAL, "svc-uploader@", common::FAKE_KEY] {
        assert!(!logs.contains(secret), "{secret} in a log line:\n{logs}");
        let text = format!("{report} {report:?}");
        assert!(!text.contains(secret), "{secret} in the report: {text}");
        let hits = files_containing(&root, secret);
        assert!(hits.is_empty(), "{secret} in {hits:?}");
    }
}
