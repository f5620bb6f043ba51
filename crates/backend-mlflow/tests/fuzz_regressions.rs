//! Server answers found by the `mlflow_response` fuzz target (fuzz/, scripts/fuzz.sh), kept as
//! tests against a loopback server that gives every request the same answer.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use exptrack_http::{HttpClient, RetryConfig, RetryPolicy};
use exptrack_mlflow::MlflowClient;

/// Answers every request on every connection with `200` and `body`.
fn serve_forever(body: &'static str) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || answer_all(conn, body));
        }
    });
    format!("http://{addr}")
}

fn answer_all(conn: TcpStream, body: &str) {
    let mut out = conn.try_clone().unwrap();
    let mut rd = BufReader::new(conn);
    loop {
        let mut len = 0usize;
        loop {
            let mut line = String::new();
            if rd.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line.trim_end().is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut req = vec![0; len];
        if rd.read_exact(&mut req).is_err() {
            return;
        }
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

fn client(uri: &str) -> MlflowClient {
    let retry = RetryConfig {
        max_retries: 0,
        request_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(5),
        policy: RetryPolicy::standard(),
        ..RetryConfig::default()
    };
    let http = HttpClient::builder()
        .retry(retry)
        .no_proxy(true)
        .build()
        .unwrap();
    MlflowClient::new(uri, http).unwrap()
}

/// A server (or a caching proxy) that answers every `metrics/get-history` page with the same
/// `next_page_token`: the client asked for the "next" page forever, collecting the same metrics
/// again each time (unbounded time and memory). Now it stops with an error naming the token.
#[test]
fn metric_history_stops_when_the_server_repeats_a_page_token() {
    let uri = serve_forever(
        r#"{"metrics":[{"key":"loss","value":0.5,"timestamp":1,"step":1}],"next_page_token":"abc"}"#,
    );
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let r = client(&uri).get_metric_history("run", "loss");
        let _ = tx.send(r.map(|m| m.len()).map_err(|e| e.to_string()));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("get_metric_history did not return: it follows a repeated page token forever");
    let err = got.expect_err("a repeated page token is an error");
    assert!(err.contains("abc"), "{err}");
}
