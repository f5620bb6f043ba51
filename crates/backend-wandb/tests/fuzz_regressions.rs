//! Server answers found by the `wandb_response` fuzz target (fuzz/, scripts/fuzz.sh), kept as
//! tests against a loopback server.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use exptrack_core::{Batch, Event, Metric, RunStatus, Tracker};
use exptrack_wandb::{Mode, WandbTracker};

/// Answers `/graphql` with `graphql` and everything else with `{}`; records request bodies.
fn serve(graphql: &'static str) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let seen = seen2.clone();
            thread::spawn(move || answer_all(conn, graphql, &seen));
        }
    });
    (format!("http://{addr}"), seen)
}

fn answer_all(conn: TcpStream, graphql: &str, seen: &Mutex<Vec<String>>) {
    let mut out = conn.try_clone().unwrap();
    let mut rd = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        if rd.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
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
        let mut body = vec![0; len];
        if rd.read_exact(&mut body).is_err() {
            return;
        }
        seen.lock()
            .unwrap()
            .push(String::from_utf8_lossy(&body).into_owned());
        let answer = if request_line.contains("/graphql") {
            graphql
        } else {
            "{}"
        };
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(resp.as_bytes()).is_err() {
            return;
        }
    }
}

/// `UpsertBucket` answered with `historyLineCount` = u64::MAX (a resumed run, as the server tells
/// it): adding the lines sent overflowed the offset (a panic with overflow checks, a wrap to 0
/// without, so later history would overwrite the run's first lines). Now the offset saturates.
#[test]
fn a_huge_history_line_count_does_not_overflow_the_offset() {
    let (url, seen) = serve(
        r#"{"data":{"upsertBucket":{"bucket":{"project":{"name":"p","entity":{"name":"me"}},"historyLineCount":18446744073709551615}}}}"#,
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    let outcome = thread::spawn(move || {
        let mut t = WandbTracker::builder()
            .mode(Mode::Online)
            .api_key(common::FAKE_KEY)
            .base_url(url)
            .dir(&dir)
            .project("p")
            .flush_interval(Duration::ZERO)
            .build()
            .unwrap();
        t.open(&common::context(&dir, "wbtest", "huge-offset", ""))
            .unwrap();
        for step in 0..3 {
            let events = [Event::Metrics {
                step,
                timestamp_ms: 0,
                values: vec![Metric::new("loss", 1.0)],
            }];
            t.write(&Batch {
                first_seq: step + 1,
                events: &events,
            })
            .unwrap();
        }
        // Closing uploads files, which this server does not offer URLs for: an error, not a panic.
        let _ = t.close(RunStatus::Completed);
    })
    .join();
    assert!(
        outcome.is_ok(),
        "the W&B client panicked on a huge historyLineCount"
    );
    let streamed = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b.contains("wandb-history.jsonl"))
        .map(|b| serde_json::from_str::<serde_json::Value>(b).unwrap())
        .map(|v| v["files"]["wandb-history.jsonl"]["offset"].as_u64())
        .collect::<Vec<_>>();
    assert!(!streamed.is_empty(), "no history was sent");
    // The history continues where the server said, never back at line 0.
    assert!(
        streamed.iter().all(|o| *o == Some(u64::MAX)),
        "{streamed:?}"
    );
}
