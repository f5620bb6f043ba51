//! Retries against a tiny HTTP server on 127.0.0.1 (std `TcpListener`, one scripted response per
//! connection).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use exptrack_http::{Auth, Error, HttpClient, RetryConfig, RetryPolicy};

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    request_line: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

/// Serves `responses` in order (one per connection, `Connection: close`), then stops.
fn serve(responses: Vec<String>) -> (String, Arc<Mutex<Vec<Seen>>>, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let h = thread::spawn(move || {
        for resp in responses {
            let (mut stream, _) = listener.accept().unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let mut headers = Vec::new();
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                let (k, v) = (k.trim().to_ascii_lowercase(), v.trim().to_owned());
                if k == "content-length" {
                    len = v.parse().unwrap();
                }
                headers.push((k, v));
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            seen2.lock().unwrap().push(Seen {
                request_line: request_line.trim_end().to_owned(),
                headers,
                body,
            });
            stream.write_all(resp.as_bytes()).unwrap();
            stream.flush().unwrap();
        }
    });
    (format!("http://{addr}"), seen, h)
}

fn response(status: &str, extra: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Type: application/json\r\nConnection: close\r\n{extra}\r\n{body}",
        body.len()
    )
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A client whose next retry would be 30 s away: a test that returns quickly proves that
/// something other than the backoff (cancel, a deadline) ended the wait.
fn slow_retry_client() -> HttpClient {
    HttpClient::builder()
        .retry(RetryConfig {
            max_retries: 10,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(600),
            ..fast_retry()
        })
        .no_proxy(true)
        .build()
        .unwrap()
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 4,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(50),
        jitter: Duration::from_millis(5),
        request_timeout: Duration::from_secs(5),
        retry_timeout: Duration::from_secs(20),
        ..RetryConfig::default()
    }
}

#[test]
fn retries_503_then_succeeds_and_sends_auth() {
    let (base, seen, h) = serve(vec![
        response(
            "503 Service Unavailable",
            "",
            r#"{"error_code":"TEMPORARILY_UNAVAILABLE","message":"busy"}"#,
        ),
        response("200 OK", "", r#"{"ok":true}"#),
    ]);
    let client = HttpClient::builder()
        .auth(Auth::bearer("tok-abc"))
        .retry(fast_retry())
        .no_proxy(true)
        .build()
        .unwrap();
    let v: serde_json::Value = client
        .post_json(&format!("{base}/api/x"), &serde_json::json!({"a": 1}))
        .unwrap();
    assert_eq!(v, serde_json::json!({"ok": true}));
    h.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2, "one retry");
    for s in seen.iter() {
        assert_eq!(s.request_line, "POST /api/x HTTP/1.1");
        assert_eq!(s.body, br#"{"a":1}"#, "body resent whole");
        assert!(
            s.headers
                .iter()
                .any(|(k, v)| k == "authorization" && v == "Bearer tok-abc")
        );
    }
}

#[test]
fn honours_retry_after_seconds() {
    let (base, seen, h) = serve(vec![
        response("429 Too Many Requests", "Retry-After: 1\r\n", "{}"),
        response("200 OK", "", "{}"),
    ]);
    let client = HttpClient::builder()
        .retry(fast_retry())
        .no_proxy(true)
        .build()
        .unwrap();
    let t = Instant::now();
    let _: serde_json::Value = client.get_json(&format!("{base}/"), &[]).unwrap();
    let waited = t.elapsed();
    h.join().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
    assert!(waited >= Duration::from_secs(1), "waited {waited:?}");
    assert!(waited < Duration::from_secs(4), "waited {waited:?}");
}

/// A server asking for an absurd wait (`Retry-After` of u64::MAX seconds, or a date in year
/// 9999) once panicked the client with an `Instant + Duration` overflow. The wait is capped at
/// `MAX_RETRY_AFTER`: beyond the retry budget the request fails at once with the server's status,
/// within it the client waits the capped time (here ended early by a cancel).
#[test]
fn huge_retry_after_is_capped_not_a_panic() {
    for header in [
        "Retry-After: 18446744073709551615\r\n",
        "Retry-After: Fri, 31 Dec 9999 23:59:59 GMT\r\n",
    ] {
        // Budget 20 s < the 120 s cap: give up at once with the 503 (transient: try later).
        let (base, seen, h) = serve(vec![response("503 Service Unavailable", header, "{}")]);
        let client = HttpClient::builder()
            .retry(fast_retry())
            .no_proxy(true)
            .build()
            .unwrap();
        let t = Instant::now();
        let err = client
            .get_json::<serde_json::Value>(&format!("{base}/"), &[])
            .unwrap_err();
        h.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert_eq!(err.status(), Some(503), "{err}");
        assert!(err.is_transient());
        assert_eq!(seen.lock().unwrap().len(), 1);

        // Budget 600 s > the cap: the client sleeps (capped), and a cancel ends the wait.
        let (base, _seen, h) = serve(vec![response("429 Too Many Requests", header, "{}")]);
        let client = slow_retry_client();
        let token = client.cancel_token().clone();
        let canceller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(300));
            token.cancel();
        });
        let t = Instant::now();
        let err = client
            .get_json::<serde_json::Value>(&format!("{base}/"), &[])
            .unwrap_err();
        canceller.join().unwrap();
        h.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
        assert!(
            matches!(
                err,
                Error::GaveUp {
                    reason: "cancelled",
                    attempts: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }
    assert_eq!(
        RetryConfig::default().backoff(0, Some(Duration::MAX), 0.0),
        exptrack_http::MAX_RETRY_AFTER
    );
}

#[test]
fn client_errors_are_not_retried_and_are_permanent() {
    let (base, seen, h) = serve(vec![response(
        "400 Bad Request",
        "",
        r#"{"error_code":"INVALID_PARAMETER_VALUE","message":"Changing param values is not allowed"}"#,
    )]);
    let client = HttpClient::builder()
        .auth(Auth::basic("alice", "pw-very-secret"))
        .retry(fast_retry())
        .no_proxy(true)
        .build()
        .unwrap();
    let err = client
        .post_json::<_, serde_json::Value>(&format!("{base}/p"), &serde_json::json!({}))
        .unwrap_err();
    h.join().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 1);
    assert!(!err.is_transient());
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("INVALID_PARAMETER_VALUE"));
    let text = format!("{err} {err:?}");
    assert!(text.contains("Changing param values"), "{text}");
    assert!(!text.contains("pw-very-secret"), "{text}");
}

#[test]
fn wandb_policy_retries_other_4xx() {
    let (base, seen, h) = serve(vec![
        response("418 I'm a teapot", "", "{}"),
        response("200 OK", "", "{}"),
    ]);
    let client = HttpClient::builder()
        .retry(RetryConfig {
            policy: RetryPolicy::wandb(),
            ..fast_retry()
        })
        .no_proxy(true)
        .build()
        .unwrap();
    let _: serde_json::Value = client.get_json(&format!("{base}/"), &[]).unwrap();
    h.join().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 2);
}

#[test]
fn retries_exhausted_is_transient() {
    let (base, seen, h) = serve(vec![
        response("502 Bad Gateway", "", "oops"),
        response("502 Bad Gateway", "", "oops"),
        response("502 Bad Gateway", "", "oops"),
    ]);
    let client = HttpClient::builder()
        .retry(RetryConfig {
            max_retries: 2,
            ..fast_retry()
        })
        .no_proxy(true)
        .build()
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>(&format!("{base}/"), &[])
        .unwrap_err();
    h.join().unwrap();
    assert_eq!(seen.lock().unwrap().len(), 3);
    assert!(err.is_transient());
    assert_eq!(err.status(), Some(502));
}

#[test]
fn connection_refused_is_retried_then_transient() {
    // Bind then drop to get a port nobody listens on.
    let port = closed_port();
    let client = HttpClient::builder()
        .retry(RetryConfig {
            max_retries: 2,
            ..fast_retry()
        })
        .no_proxy(true)
        .build()
        .unwrap();
    let err = client
        .get_json::<serde_json::Value>(&format!("http://127.0.0.1:{port}/"), &[])
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    match err {
        Error::Transport { attempts, .. } => assert_eq!(attempts, 3),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn cancel_stops_waiting_at_once() {
    let port = closed_port();
    let client = slow_retry_client();
    let token = client.cancel_token().clone();
    let t = Instant::now();
    let canceller = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        token.cancel();
    });
    let err = client
        .get_json::<serde_json::Value>(&format!("http://127.0.0.1:{port}/"), &[])
        .unwrap_err();
    canceller.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(
        matches!(
            err,
            Error::GaveUp {
                reason: "cancelled",
                ..
            }
        ),
        "{err:?}"
    );
    // Later requests fail fast until reset.
    assert!(matches!(
        client.get_json::<serde_json::Value>(&format!("http://127.0.0.1:{port}/"), &[]),
        Err(Error::GaveUp { attempts: 0, .. })
    ));
}

#[test]
fn deadline_gives_up() {
    let port = closed_port();
    let client = slow_retry_client();
    let t = Instant::now();
    let err = client
        .send_with_retry_until(Some(Instant::now() + Duration::from_millis(200)), |c| {
            Ok(c.get(format!("http://127.0.0.1:{port}/")))
        })
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(
            err,
            Error::GaveUp {
                reason: "deadline reached",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[test]
fn put_file_streams_and_resends_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob.bin");
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(&path, &data).unwrap();
    let (base, seen, h) = serve(vec![
        response("500 Internal Server Error", "", "{}"),
        response("200 OK", "", ""),
    ]);
    let client = HttpClient::builder()
        .retry(fast_retry())
        .no_proxy(true)
        .build()
        .unwrap();
    let resp = client
        .put_file(&format!("{base}/a/blob.bin"), &path, None)
        .unwrap();
    assert!(resp.status().is_success());
    h.join().unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for s in seen.iter() {
        assert_eq!(s.request_line, "PUT /a/blob.bin HTTP/1.1");
        assert_eq!(s.body, data);
    }
    // A missing file is a permanent I/O error.
    let err = client
        .put_file(&format!("{base}/x"), &dir.path().join("missing"), None)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }) && !err.is_transient());
}
