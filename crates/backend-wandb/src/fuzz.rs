//! Drives the online client against a server (the fuzz target's loopback server), so its
//! response handling is fuzzed as it runs.

use std::path::Path;
use std::time::Duration;

use exptrack_http::{RetryConfig, RetryPolicy, Secret};

use crate::error::Result;
use crate::online::{OnlineRun, RunFields};

/// One online session: `UpsertBucket`, a `file_stream` request with one history line and the
/// summary, a second `UpsertBucket`, a `CreateRunFiles` + `PUT` of `file`, and the final
/// `file_stream` request. No retries, 5 s per request.
pub fn online_session(base_url: &str, file: &Path) -> Result<()> {
    let retry = RetryConfig {
        max_retries: 0,
        initial_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        backoff_factor: 1.0,
        jitter: Duration::ZERO,
        request_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(5),
        policy: RetryPolicy::wandb(),
    };
    let fields = RunFields {
        run_id: "fuzzrun".into(),
        project: "fuzz".into(),
        ..RunFields::default()
    };
    let key = Secret::new("0123456789abcdef0123456789abcdef01234567");
    let mut run = OnlineRun::start(base_url, &key, retry, Duration::ZERO, fields, "{}", &[])?;
    run.push_lines([r#"{"_step":0,"loss":1.5}"#.to_owned()]);
    run.set_summary(r#"{"loss":1.5}"#.to_owned());
    run.send(None)?;
    run.update_run(Some("{}"), None)?;
    run.upload(&[("model.bin".to_owned(), file.to_path_buf())])?;
    run.send(Some(0))
}
