//! `wandb sync` (wandb 0.31) uploads our offline runs; the Python client's offline run of the same
//! logical run uploads the same data; our online client sends what `wandb sync` sends.

mod common;
#[path = "common/runs.rs"]
mod runs;
#[path = "common/upload.rs"]
mod upload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use exptrack_core::{RunStatus, Tracker};
use exptrack_wandb::{Mode, WandbTracker};
use serde_json::{Value, json};
use upload::{Upload, strip};

fn our_offline_run(dir: &Path, run_id: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let artifact = dir.join("readme.txt");
    std::fs::write(&artifact, "hello from exptrack").unwrap();
    let mut t = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(dir)
        .project("exptrack-test")
        .entity("team-a")
        .build()
        .unwrap();
    t.open(&common::context(dir, "wbtest", run_id, runs::CONFIG))
        .unwrap();
    runs::feed(&mut t, &runs::events(&artifact), 5);
    t.close(RunStatus::Completed).unwrap();
    t.run_dir().unwrap().to_owned()
}

fn wandb_sync(py: &Path, home: &Path, rec: &common::Recorder, run_dir: &Path) {
    let out = common::run(
        common::isolated(&common::wandb_exe(py), home)
            .env("WANDB_BASE_URL", rec.base_url())
            .env("WANDB_API_KEY", common::FAKE_KEY)
            .arg("sync")
            .arg(run_dir),
    );
    assert!(out.status.success(), "wandb sync failed");
    let marker = std::fs::read_dir(run_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().ends_with(".wandb.synced"));
    assert!(marker, "wandb sync did not mark the run synced");
}

fn expected_rows() -> Vec<Value> {
    (0..runs::STEPS)
        .map(|s| {
            let mut row = serde_json::Map::new();
            for (k, v) in runs::step_values(s) {
                let v = if v.is_finite() {
                    json!(v)
                } else if v.is_nan() {
                    json!("NaN")
                } else {
                    json!("Infinity")
                };
                row.insert(k, v);
            }
            row.insert("_step".into(), json!(s));
            Value::Object(row)
        })
        .collect()
}

fn assert_same_numbers(a: &Value, b: &Value, what: &str) {
    // Integral floats may print as `1` or `1.0`; compare numbers as f64.
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            assert_eq!(x.as_f64(), y.as_f64(), "{what}: {a} != {b}")
        }
        (Value::Object(x), Value::Object(y)) => {
            let kx: Vec<_> = x.keys().collect();
            let ky: Vec<_> = y.keys().collect();
            assert_eq!(kx, ky, "{what}: keys differ\n{a}\n{b}");
            for (k, v) in x {
                assert_same_numbers(v, &y[k], &format!("{what}.{k}"));
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{what}: {a} != {b}");
            for (i, (v, w)) in x.iter().zip(y).enumerate() {
                assert_same_numbers(v, w, &format!("{what}[{i}]"));
            }
        }
        _ => assert_eq!(a, b, "{what}"),
    }
}

fn expected_config() -> Value {
    json!({
        "experiment": {"name": "wbtest"},
        "model": {"act": "relu", "layers": 4},
        "optim": {"betas": [0.9, 0.999], "lr": 0.001},
        "batch_size": 32, "dropout": 0.1, "optimizer": "adam", "amp": true,
    })
}

fn config_without_wandb(u: &Upload) -> Value {
    let mut c = u.config();
    c.remove("_wandb");
    serde_json::to_value(c).unwrap()
}

#[test]
fn wandb_sync_uploads_our_offline_run() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let run_dir = our_offline_run(tmp.path(), "sync-1");
    wandb_sync(&py, tmp.path(), &rec, &run_dir);
    let u = Upload::from_requests(&rec.requests());

    let first = &u.upserts[0];
    assert_eq!(first["name"], "sync-1");
    assert_eq!(first["project"], "exptrack-test");
    assert_eq!(first["entity"], "team-a");
    assert_eq!(first["displayName"], "wbtest");
    assert_eq!(first["notes"], "a test run");
    assert_same_numbers(&config_without_wandb(&u), &expected_config(), "config");
    let tags = u.tags();
    for t in ["exp-tag", "team:vision", "baseline"] {
        assert!(
            tags.contains(&t.to_owned()),
            "tag {t} missing from {tags:?}"
        );
    }
    assert_eq!(
        u.stream_paths[0],
        "/files/team-a/exptrack-test/sync-1/file_stream"
    );

    let rows = u.rows();
    assert_same_numbers(
        &Value::Array(u.rows_without_times()),
        &Value::Array(expected_rows()),
        "history",
    );
    for (s, r) in rows.iter().enumerate() {
        let ts = r["_timestamp"].as_f64().unwrap();
        let want = (runs::T0 + 1000 * s as i64 + if s == 3 { 10 } else { 0 }) as f64 / 1000.0;
        assert!(
            (ts - want).abs() < 1e-6,
            "row {s}: _timestamp {ts} != {want}"
        );
        assert!(r["_runtime"].as_f64().is_some(), "row {s} lacks _runtime");
    }
    let summary = u.summary.clone().expect("a summary was sent");
    let last = runs::STEPS - 1;
    assert_eq!(summary["_step"], last);
    assert_eq!(summary["train/loss"], 1.0 / (last as f64 + 1.0));
    assert_eq!(summary["val/loss"], 2.0 / 12.0);
    assert_eq!(summary["weird"], "NaN");
    assert_eq!(summary["big"], "Infinity");
    assert_eq!(u.complete, Some(true));
    assert_eq!(u.exitcode, Some(0));
    assert!(
        u.uploaded.contains(&"notes/readme.txt".to_owned()),
        "{:?}",
        u.uploaded
    );
    assert_eq!(
        u.puts
            .get("/upload/sync-1/notes/readme.txt")
            .map(String::as_str),
        Some("hello from exptrack"),
        "{:?}",
        u.puts.keys()
    );
    let expected_auth = format!(
        "Basic {}",
        base64_encode(format!("api:{}", common::FAKE_KEY).as_bytes())
    );
    assert!(
        u.auth
            .iter()
            .all(|a| a.as_deref() == Some(expected_auth.as_str()))
    );
}

#[test]
fn python_offline_run_and_ours_upload_the_same_data() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = common::Recorder::start(&py, tmp.path());

    let ours_dir = our_offline_run(&tmp.path().join("ours"), "diff-1");
    wandb_sync(&py, tmp.path(), &rec, &ours_dir);
    let ours = Upload::from_requests(&rec.requests());
    rec.reset();

    let py_root = tmp.path().join("py");
    std::fs::create_dir_all(&py_root).unwrap();
    let out = common::run(
        common::isolated(&py, tmp.path())
            .env("WANDB_MODE", "offline")
            .arg("-c")
            .arg(runs::PY_SCRIPT)
            .arg(&py_root)
            .arg("diff-1")
            .arg("exptrack-test"),
    );
    assert!(out.status.success(), "the Python client failed");
    let py_files_dir = PathBuf::from(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .lines()
            .last()
            .unwrap(),
    );
    let py_run_dir = py_files_dir.parent().unwrap();
    wandb_sync(&py, tmp.path(), &rec, py_run_dir);
    let theirs = Upload::from_requests(&rec.requests());

    assert_eq!(ours.rows().len(), runs::STEPS as usize);
    assert_eq!(theirs.rows().len(), runs::STEPS as usize);
    assert_same_numbers(
        &Value::Array(ours.rows_without_times()),
        &Value::Array(theirs.rows_without_times()),
        "history rows",
    );
    let ignore = ["_runtime", "_timestamp", "_wandb"];
    assert_same_numbers(
        &strip(ours.summary.clone().unwrap(), &ignore),
        &strip(theirs.summary.clone().unwrap(), &ignore),
        "summary",
    );
    assert_same_numbers(
        &config_without_wandb(&ours),
        &config_without_wandb(&theirs),
        "config",
    );
    let (mut a, mut b) = (ours.tags(), theirs.tags());
    a.sort();
    b.sort();
    assert_eq!(a, b, "tags");
    assert_eq!(ours.exitcode, theirs.exitcode);
    assert_eq!(ours.complete, theirs.complete);
}

#[test]
fn online_client_sends_what_wandb_sync_sends() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mut rec = common::Recorder::start(&py, tmp.path());

    let offline_dir = our_offline_run(&tmp.path().join("offline"), "online-1");
    wandb_sync(&py, tmp.path(), &rec, &offline_dir);
    let synced = Upload::from_requests(&rec.requests());
    rec.reset();

    let dir = tmp.path().join("online");
    std::fs::create_dir_all(&dir).unwrap();
    let artifact = dir.join("readme.txt");
    std::fs::write(&artifact, "hello from exptrack").unwrap();
    let mut t = WandbTracker::builder()
        .mode(Mode::Online)
        .api_key(common::FAKE_KEY)
        .base_url(rec.base_url())
        .dir(&dir)
        .project("exptrack-test")
        .entity("team-a")
        .flush_interval(Duration::from_secs(3600))
        .build()
        .unwrap();
    t.open(&common::context(&dir, "wbtest", "online-1", runs::CONFIG))
        .unwrap();
    runs::feed(&mut t, &runs::events(&artifact), 5);
    t.close(RunStatus::Completed).unwrap();
    assert_eq!(t.mode(), Some(Mode::Online));
    let debug = format!("{t:?}");
    assert!(
        !debug.contains(common::FAKE_KEY),
        "the API key leaked into Debug"
    );
    let online = Upload::from_requests(&rec.requests());

    // Same mutation fields.
    let fields = |u: &Upload| -> Vec<String> {
        let mut k: Vec<String> = u.upserts[0].as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(fields(&online), fields(&synced));
    for key in [
        "name",
        "project",
        "entity",
        "displayName",
        "notes",
        "groupName",
        "host",
    ] {
        assert_eq!(
            online.upserts[0][key], synced.upserts[0][key],
            "UpsertBucket {key}"
        );
    }
    assert_same_numbers(
        &config_without_wandb(&online),
        &config_without_wandb(&synced),
        "config",
    );
    let (mut a, mut b) = (online.tags(), synced.tags());
    a.sort();
    b.sort();
    assert_eq!(a, b, "tags");
    // Same file_stream content, byte for byte where the clients agree on formatting.
    assert_eq!(online.stream_paths[0], synced.stream_paths[0]);
    assert_eq!(online.rows().len(), runs::STEPS as usize);
    assert_same_numbers(
        &Value::Array(online.rows()),
        &Value::Array(synced.rows()),
        "history lines",
    );
    assert_same_numbers(
        &strip(online.summary.clone().unwrap(), &["_wandb", "_runtime"]),
        &strip(synced.summary.clone().unwrap(), &["_wandb", "_runtime"]),
        "summary",
    );
    assert_eq!(online.complete, Some(true));
    assert_eq!(online.exitcode, synced.exitcode);
    let (mut a, mut b) = (online.uploaded.clone(), synced.uploaded.clone());
    a.sort();
    b.sort();
    a.dedup();
    b.dedup();
    assert_eq!(a, b, "uploaded files");
    assert!(
        online.auth.iter().all(|x| x == &synced.auth[0]),
        "same Authorization"
    );
    assert!(!online.put_auth.is_empty());
    assert!(
        online.put_auth.iter().all(Option::is_none),
        "credentials sent to an upload URL"
    );
    assert!(synced.put_auth.iter().all(Option::is_none));
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

fn online_tracker(
    rec: &common::Recorder,
    dir: &Path,
    retry: exptrack_http::RetryConfig,
) -> WandbTracker {
    WandbTracker::builder()
        .mode(Mode::Online)
        .api_key(common::FAKE_KEY)
        .base_url(rec.base_url())
        .dir(dir)
        .project("exptrack-test")
        .flush_interval(Duration::ZERO)
        .retry(retry)
        .build()
        .unwrap()
}

/// Calls `f` until it succeeds, as the dispatcher redelivers after transient errors.
fn until_ok(failures: &mut u32, mut f: impl FnMut() -> Result<(), exptrack_core::TrackerError>) {
    loop {
        match f() {
            Ok(()) => return,
            Err(e) if e.is_transient() => *failures += 1,
            Err(e) => panic!("permanent error: {e}"),
        }
        assert!(*failures < 50, "never recovered");
    }
}

#[test]
fn transient_failures_are_redelivered_without_gaps_or_duplicates() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let artifact = tmp.path().join("readme.txt");
    std::fs::write(&artifact, "hello").unwrap();
    let retry = exptrack_http::RetryConfig {
        policy: exptrack_http::RetryPolicy::wandb(),
        ..exptrack_http::RetryConfig::no_retries()
    };
    let mut t = online_tracker(&rec, tmp.path(), retry);
    let mut failures = 0;
    rec.fail_next("graphql", 1, 503);
    let ctx = common::context(tmp.path(), "wbtest", "flaky-1", runs::CONFIG);
    until_ok(&mut failures, || t.open(&ctx));
    assert_eq!(failures, 1);

    let events = runs::events(&artifact);
    let mut seq = 0u64;
    for (i, chunk) in events.chunks(3).enumerate() {
        if i % 2 == 1 {
            // 503, 429 and a 500 in a row: each is transient.
            rec.fail_next("file_stream", 3, [503, 429, 500][i % 3]);
        }
        let batch = exptrack_core::Batch {
            first_seq: seq,
            events: chunk,
        };
        until_ok(&mut failures, || t.write(&batch));
        until_ok(&mut failures, || t.flush());
        seq += chunk.len() as u64;
    }
    rec.fail_next("file_stream", 1, 502);
    until_ok(&mut failures, || t.close(RunStatus::Completed));
    assert!(
        failures >= 6,
        "the injected failures were not hit ({failures})"
    );

    let u = Upload::from_requests(&rec.requests());
    // Step 3's two events straddle a flush here, so step 3 has two rows (one per metric).
    assert_same_numbers(
        &Value::Array(merge_by_step(u.rows_without_times())),
        &Value::Array(expected_rows()),
        "history",
    );
    assert_eq!(u.exitcode, Some(0));
    assert_eq!(u.summary.as_ref().unwrap()["_step"], runs::STEPS - 1);
}

#[test]
fn unauthorized_is_permanent_and_never_shows_the_key() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    rec.fail_next("graphql", 1, 401);
    let mut t = online_tracker(&rec, tmp.path(), exptrack_wandb::default_retry());
    let err = t
        .open(&common::context(tmp.path(), "wbtest", "denied-1", ""))
        .expect_err("401 must fail");
    assert!(!err.is_transient());
    let mut texts = vec![format!("{err}"), format!("{err:?}"), format!("{t:?}")];
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(&err);
    while let Some(s) = source {
        texts.push(format!("{s} {s:?}"));
        source = s.source();
    }
    assert!(texts[0].contains("401"), "{}", texts[0]);
    for text in texts {
        assert!(!text.contains(common::FAKE_KEY), "the key leaked: {text}");
        assert!(!text.contains(&base64_encode(
            format!("api:{}", common::FAKE_KEY).as_bytes()
        )));
    }
    t.close(RunStatus::Failed).unwrap();
}

/// Merges consecutive rows with the same `_step` (disjoint keys).
fn merge_by_step(rows: Vec<Value>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    for r in rows {
        match out.last_mut() {
            Some(prev) if prev["_step"] == r["_step"] => {
                for (k, v) in r.as_object().unwrap() {
                    let old = prev.as_object_mut().unwrap().insert(k.clone(), v.clone());
                    assert!(
                        k == "_step" || old.is_none(),
                        "{k} logged twice at one step"
                    );
                }
            }
            _ => out.push(r),
        }
    }
    out
}
