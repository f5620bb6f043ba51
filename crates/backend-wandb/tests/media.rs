//! Images, histograms, text and results reach W&B the way the Python SDK logs them: read back with
//! the real wandb 0.31 (`leet inspect` of the offline log, `wandb sync` to the recorder) and from
//! what our online client sends to the recorder.

mod common;
#[path = "common/upload.rs"]
mod upload;

use std::path::{Path, PathBuf};

use exptrack_core::{Batch, Event, Metric, RunStatus, Tracker};
use exptrack_wandb::{Mode, WandbTracker};
use serde_json::{Value, json};
use upload::Upload;

const T0: i64 = 1_760_000_000_000;

/// A 3x2 RGB PNG.
fn png() -> Vec<u8> {
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, 3, 2);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    let mut w = e.write_header().unwrap();
    w.write_image_data(&[
        255, 0, 0, 0, 255, 0, 0, 0, 255, 10, 20, 30, 40, 50, 60, 70, 80, 90,
    ])
    .unwrap();
    w.finish().unwrap();
    out
}

fn events() -> Vec<Event> {
    let mut ev = Vec::new();
    for s in 0..10u64 {
        ev.push(Event::Metrics {
            step: s,
            timestamp_ms: T0 + 1000 * s as i64,
            values: vec![Metric::new("train/loss", 1.0 / (s as f64 + 1.0))],
        });
        if s == 3 {
            ev.push(Event::Text {
                step: s,
                timestamp_ms: T0 + 3000,
                tag: "notes".into(),
                text: "# halfway\nloss is *falling*".into(),
            });
        }
        if s == 5 {
            ev.push(Event::Histogram {
                step: s,
                timestamp_ms: T0 + 5000,
                tag: "weights/fc1".into(),
                values: (0..100)
                    .map(|i| i as f64 / 10.0)
                    .chain([f64::NAN])
                    .collect(),
            });
        }
        if s == 9 {
            ev.push(Event::Image {
                step: s,
                timestamp_ms: T0 + 9000,
                tag: "samples/grid".into(),
                width: 3,
                height: 2,
                channels: 3,
                png: png(),
            });
        }
    }
    ev.push(Event::Result {
        key: "test/accuracy".into(),
        value: json!(0.93),
        timestamp_ms: T0 + 10_000,
    });
    ev.push(Event::Result {
        key: "best_epoch".into(),
        value: json!(7),
        timestamp_ms: T0 + 10_000,
    });
    ev.push(Event::Status {
        status: RunStatus::Completed,
        timestamp_ms: T0 + 11_000,
    });
    ev
}

fn feed(t: &mut WandbTracker) {
    let ev = events();
    for e in &ev {
        assert!(t.supports(e.kind()), "W&B should support {}", e.kind());
    }
    // One batch (and one flush) per step, as the dispatcher delivers what a training loop logs
    // at once. (A step's media logged after a flush of that step's row would make a second row
    // with the same `_step`, which `wandb sync` renumbers; see the crate docs.)
    let mut seq = 0u64;
    let mut start = 0;
    while start < ev.len() {
        let step = ev[start].step();
        let mut end = start + 1;
        while end < ev.len() && step.is_some() && ev[end].step() == step {
            end += 1;
        }
        t.write(&Batch {
            first_seq: seq,
            events: &ev[start..end],
        })
        .unwrap();
        t.flush().unwrap();
        seq += (end - start) as u64;
        start = end;
    }
}

fn offline_run(dir: &Path, run_id: &str) -> (WandbTracker, PathBuf) {
    std::fs::create_dir_all(dir).unwrap();
    let mut t = WandbTracker::builder()
        .mode(Mode::Offline)
        .dir(dir)
        .project("exptrack-test")
        .entity("team-a")
        .build()
        .unwrap();
    t.open(&common::context(dir, "media", run_id, "")).unwrap();
    feed(&mut t);
    t.close(RunStatus::Completed).unwrap();
    let run_dir = t.run_dir().unwrap().to_owned();
    (t, run_dir)
}

/// The history values our run must show (read back by any of the three readers).
fn check_rows(rows: &[Value], files: &dyn Fn(&str) -> Option<Vec<u8>>, who: &str) {
    // The value in a row of its step (a flush between a step's metrics and its media makes a
    // second row with the same `_step`, as with metrics).
    let value = |step: u64, key: &str| {
        rows.iter()
            .find(|r| r["_step"] == step && r.get(key).is_some())
            .map(|r| r[key].clone())
            .unwrap_or_else(|| panic!("{who}: no {key} at step {step}: {rows:?}"))
    };
    let img = &value(9, "samples/grid");
    assert_eq!(img["_type"], "image-file", "{who}: {img}");
    assert_eq!(img["format"], "png");
    assert_eq!(
        (img["width"].clone(), img["height"].clone()),
        (json!(3), json!(2))
    );
    let path = img["path"].as_str().unwrap();
    assert!(
        path.starts_with("media/images/samples/grid_9_") && path.ends_with(".png"),
        "{who}: {path}"
    );
    assert_eq!(img["size"], png().len());
    assert_eq!(
        img["sha256"],
        exptrack_core::media::sha256_hex(&png()),
        "{who}"
    );
    assert_eq!(
        files(path).as_deref(),
        Some(&png()[..]),
        "{who}: image file {path}"
    );

    let h = &value(5, "weights/fc1");
    assert_eq!(h["_type"], "histogram", "{who}: {h}");
    let counts: Vec<u64> = h["values"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 64);
    assert_eq!(counts.iter().sum::<u64>(), 100, "{who}: NaN left out");
    let bins = h["bins"].as_array().unwrap();
    assert_eq!(bins.len(), 65);
    assert_eq!(bins[0], 0.0);
    assert_eq!(bins[64], 9.9);

    let t = &value(3, "notes");
    assert_eq!(t["_type"], "table-file", "{who}: {t}");
    assert_eq!(
        (t["ncols"].clone(), t["nrows"].clone()),
        (json!(1), json!(1))
    );
    let tpath = t["path"].as_str().unwrap();
    assert!(tpath.starts_with("media/table/notes_3_") && tpath.ends_with(".table.json"));
    let table: Value = serde_json::from_slice(&files(tpath).expect("table file")).unwrap();
    assert_eq!(
        table,
        json!({"columns": ["text"], "data": [["# halfway\nloss is *falling*"]]}),
        "{who}"
    );
}

fn check_summary(summary: &Value, who: &str) {
    assert_eq!(summary["test/accuracy"], 0.93, "{who}: {summary}");
    assert_eq!(summary["best_epoch"], 7, "{who}");
    assert_eq!(summary["samples/grid"]["_type"], "image-file", "{who}");
    assert_eq!(summary["train/loss"], 0.1, "{who}");
}

#[test]
fn offline_media_and_results_read_back_with_leet_inspect() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (t, run_dir) = offline_run(tmp.path(), "media-leet");
    let inspect = common::leet_inspect(&py, tmp.path(), t.log_path().unwrap());
    assert!(inspect.ok, "leet inspect failed: {}", inspect.stderr);
    let rows: Vec<Value> = inspect
        .records
        .iter()
        .filter(|r| r["type"] == "history")
        .map(|r| r["history"]["item"].clone())
        .collect();
    let files_dir = run_dir.join("files");
    check_rows(
        &rows,
        &|p| std::fs::read(files_dir.join(p)).ok(),
        "leet inspect",
    );
    // Every media file is announced in a files record (so `wandb sync` uploads it).
    let announced: Vec<String> = inspect
        .records
        .iter()
        .filter(|r| r["type"] == "files")
        .flat_map(|r| r["files"]["files"].as_array().cloned().unwrap_or_default())
        .map(|f| f["path"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        announced
            .iter()
            .any(|p| p.starts_with("media/images/samples/grid_9_"))
            && announced
                .iter()
                .any(|p| p.starts_with("media/table/notes_3_")),
        "{announced:?}"
    );
    // The results are summary updates.
    let mut summary = serde_json::Map::new();
    for r in inspect.records.iter().filter(|r| r["type"] == "summary") {
        if let Some(u) = r["summary"]["update"].as_object() {
            summary.extend(u.clone());
        }
    }
    check_summary(&Value::Object(summary), "leet inspect");
    let file_summary = exptrack_wandb::parse_lenient(
        &std::fs::read_to_string(files_dir.join("wandb-summary.json")).unwrap(),
    )
    .unwrap();
    check_summary(&file_summary, "wandb-summary.json");
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
}

/// Uploaded file content by run-relative name, from the recorder's PUT requests.
fn put_bytes(reqs: &[Value], run_id: &str, name: &str) -> Option<Vec<u8>> {
    let path = format!("/upload/{run_id}/{name}");
    reqs.iter()
        .rev()
        .find(|r| r["method"] == "PUT" && r["path"] == path.as_str())
        .map(|r| {
            r["put_text"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        })
}

fn check_upload(reqs: &[Value], run_id: &str, who: &str) {
    let u = Upload::from_requests(reqs);
    // The recorder keeps uploads as (lossy) text: compare the PNG by length and the table exactly.
    let files = |name: &str| -> Option<Vec<u8>> {
        let path = format!("/upload/{run_id}/{name}");
        let r = reqs
            .iter()
            .rev()
            .find(|r| r["method"] == "PUT" && r["path"] == path.as_str())?;
        if name.ends_with(".png") {
            assert_eq!(r["put_len"], png().len(), "{who}: uploaded PNG size");
            Some(png())
        } else {
            put_bytes(reqs, run_id, name)
        }
    };
    check_rows(&u.rows(), &files, who);
    check_summary(u.summary.as_ref().expect("a summary"), who);
    assert!(
        u.uploaded
            .iter()
            .any(|p| p.starts_with("media/images/samples/grid_9_")),
        "{who}: {:?}",
        u.uploaded
    );
}

#[test]
fn wandb_sync_uploads_our_media_and_results() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let (_t, run_dir) = offline_run(tmp.path(), "media-sync");
    wandb_sync(&py, tmp.path(), &rec, &run_dir);
    check_upload(&rec.requests(), "media-sync", "wandb sync");
}

#[test]
fn online_client_sends_media_and_results() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let rec = common::Recorder::start(&py, tmp.path());
    let mut t = common::online_tracker(&rec, tmp.path());
    t.open(&common::context(tmp.path(), "media", "media-online", ""))
        .unwrap();
    feed(&mut t);
    t.close(RunStatus::Completed).unwrap();
    check_upload(&rec.requests(), "media-online", "online client");
}
