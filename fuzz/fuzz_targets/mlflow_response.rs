//! The MLflow client's response handling (`exptrack_http::decode`, the error-body parser, and every
//! `MlflowClient` call's field extraction), against a loopback HTTP server that answers with the
//! fuzz input: `0xFF`-separated answers `<status byte><body>` (status 200, 404, 400 or 403), served
//! in order, the last one repeated. The first byte picks the call. No panic, no hang (a server
//! that repeats a page token must not loop the client forever), no unbounded allocation.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use exptrack_fuzz::{answers_from, server, set_answers};
use exptrack_http::{HttpClient, RetryConfig, RetryPolicy};
use exptrack_mlflow::{MlflowClient, MlflowRunStatus};
use libfuzzer_sys::fuzz_target;

fn client() -> &'static MlflowClient {
    static C: OnceLock<MlflowClient> = OnceLock::new();
    C.get_or_init(|| {
        let retry = RetryConfig {
            max_retries: 0,
            initial_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            backoff_factor: 1.0,
            jitter: Duration::ZERO,
            request_timeout: Duration::from_secs(5),
            retry_timeout: Duration::from_secs(5),
            policy: RetryPolicy::standard(),
        };
        let http = HttpClient::builder()
            .retry(retry)
            .no_proxy(true)
            .build()
            .expect("http client");
        MlflowClient::new(server(), http).expect("client")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&call, rest)) = data.split_first() else {
        return;
    };
    set_answers(answers_from(rest, 8));
    let c = client();
    match call % 14 {
        0 => drop(c.get_or_create_experiment("exp")),
        1 => drop(c.create_run("1", "run", 0, &[])),
        2 => drop(c.get_run("r")),
        3 => drop(c.search_runs(&["1"], "", 10, &[])),
        4 => drop(c.update_run("r", MlflowRunStatus::Finished, Some(1))),
        5 => drop(c.get_metric_history("r", "loss")),
        6 => drop(c.get_or_create_registered_model("m")),
        7 => drop(c.create_model_version("m", "runs:/r/model", Some("r"), None)),
        8 => drop(c.get_model_version("m", "1")),
        9 => drop(c.get_model_version_by_alias("m", "champion")),
        10 => drop(c.get_logged_model("m-1")),
        11 => drop(c.create_logged_model("1", "model", Some("r"), &[], &[])),
        12 => drop(c.server_version()),
        _ => drop(c.log_batch("r", &[], &[], &[])),
    }
});
