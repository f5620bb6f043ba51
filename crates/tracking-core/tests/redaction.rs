//! Issue 12, secrets: a tracking URI with `user:pw@`, a token in a query string and a
//! credential-named key appear in no file of the run directory, in no `Debug` output and in no
//! log line.

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

const SECRETS: [&str; 3] = ["S3cretPw", "S3cretTok", "S3cretKey"];

fn files_under(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// Before the fix, `config.toml` and `results.json` held the URI as written and `Debug` of the
/// config printed it.
#[test]
fn secrets_reach_no_file_no_debug_output_and_no_log_line() {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(|| Capture)
        .with_ansi(false)
        .init();
    let tmp = tempfile::tempdir().unwrap();
    let text = r#"
[experiment]
name = "secrets"

[tracking]
use_tensorboard = false
mlflow_tracking_uri = "https://alice:S3cretPw@mlflow.example:5000/"

[data]
url = "https://data.example/set.tar?token=S3cretTok&part=1"
api_key = "S3cretKey"
"#;
    let cfg = ExperimentConfig::parse(text, "secrets.toml").unwrap();
    let debug = format!("{cfg:?} {:?}", cfg.tracking);
    for s in SECRETS {
        assert!(!debug.contains(s), "Debug shows {s}: {debug}");
    }
    assert!(debug.contains("alice:***@mlflow.example"), "{debug}");
    // The config itself keeps the real values (the backends need them).
    assert_eq!(
        cfg.tracking.mlflow_tracking_uri.as_deref(),
        Some("https://alice:S3cretPw@mlflow.example:5000/")
    );

    let t = ExperimentTracker::builder(cfg.clone())
        .runs_dir(tmp.path())
        .handle_signals(false)
        .collect_system_info(false)
        .build()
        .unwrap();
    t.log_metric(1, "loss", 0.5).unwrap();
    t.set_result("best", 1.into()).unwrap();
    let dir = t.run_dir().to_path_buf();
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.is_complete(), "{report}");
    let report_text = format!("{report} {report:?}");

    let mut files = Vec::new();
    files_under(tmp.path(), &mut files);
    assert!(files.iter().any(|f| f.ends_with("config.toml")));
    assert!(files.iter().any(|f| f.ends_with("results.json")));
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        for s in SECRETS {
            assert!(!text.contains(s), "{} holds {s}:\n{text}", f.display());
        }
    }
    let config_toml = std::fs::read_to_string(dir.join("config.toml")).unwrap();
    assert!(
        config_toml.contains("alice:***@mlflow.example"),
        "{config_toml}"
    );
    assert!(config_toml.contains("token=***&part=1"), "{config_toml}");
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
    for s in SECRETS {
        assert!(!logs.contains(s), "a log line holds {s}:\n{logs}");
        assert!(!report_text.contains(s));
    }
}
