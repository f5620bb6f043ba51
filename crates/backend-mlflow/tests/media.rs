//! Every event kind reaches a real `mlflow server` the way MLflow's own client writes it: the
//! standard source/user/git tags, images in `log_image(key=, step=)`'s layout (with the compressed
//! WebP copy and the `mlflow.loggedImages` tag the UI's image panel needs), histograms as JSON
//! artifacts and results as tags and metrics. Everything is read back through the REST API.

mod common;

use std::io::Cursor;
use std::path::Path;

use exptrack_core::{
    Batch, Event, ExperimentMetadata, GitInfo, Metric, RunContext, RunStatus, Tracker,
};
use exptrack_mlflow::MlflowTracker;
use serde_json::{Value, json};

use common::{kv, shared_server};

fn ctx(exp: &str, dir: &Path) -> RunContext {
    let mut md = ExperimentMetadata::new(exp, "ab12cd34ef56ab12cd34ef56");
    md.system.user = "alice".into();
    md.system.program = "/home/alice/proj/target/release/train".into();
    md.system.git = Some(GitInfo {
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        dirty: false,
        branch: Some("main".into()),
    });
    RunContext {
        metadata: md,
        config: toml::Table::new(),
        run_dir: dir.to_path_buf(),
        resumed: false,
    }
}

/// A 600x300 RGB PNG: left half red, right half blue.
fn png() -> Vec<u8> {
    let (w, h) = (600u32, 300u32);
    let mut data = Vec::new();
    for _y in 0..h {
        for x in 0..w {
            data.extend_from_slice(if x < w / 2 {
                &[255, 0, 0]
            } else {
                &[0, 0, 255]
            });
        }
    }
    let mut out = Vec::new();
    let mut e = png::Encoder::new(&mut out, w, h);
    e.set_color(png::ColorType::Rgb);
    e.set_depth(png::BitDepth::Eight);
    let mut wr = e.write_header().unwrap();
    wr.write_image_data(&data).unwrap();
    wr.finish().unwrap();
    out
}

const T0: i64 = 1_700_000_000_000;

fn write(t: &mut MlflowTracker, first_seq: u64, events: &[Event]) {
    t.write(&Batch { first_seq, events }).unwrap();
}

/// The files under `path` of the run's artifacts, as the UI lists them.
fn list(server: &common::MlflowServer, run_id: &str, path: &str) -> Vec<(String, i64)> {
    let v = server.get("artifacts/list", &[("run_id", run_id), ("path", path)]);
    v["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|f| f["is_dir"] != json!(true))
        .map(|f| {
            (
                f["path"].as_str().unwrap().to_owned(),
                common::as_i64(&f["file_size"]),
            )
        })
        .collect()
}

/// Parses an image file name the way MLflow's UI does (`images/<key>+step+<n>+timestamp+<ms>+
/// <id>[+compressed].<ext>`): (key with `~` as `/`, step, timestamp, compressed, extension).
fn parse_ui(path: &str) -> (String, i64, i64, bool, String) {
    let name = path.strip_prefix("images/").expect("under images/");
    let (stem, ext) = name.rsplit_once('.').unwrap();
    let parts: Vec<&str> = stem.split('+').collect();
    assert!(parts.len() >= 6, "{path}");
    assert_eq!((parts[1], parts[3]), ("step", "timestamp"), "{path}");
    (
        parts[0].replace('~', "/"),
        parts[2].parse().unwrap(),
        parts[4].parse().unwrap(),
        stem.ends_with("+compressed"),
        ext.to_owned(),
    )
}

#[test]
fn every_event_kind_reads_back_from_the_server() {
    let Some(server) = shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let ctx = ctx("media", tmp.path());
    let mut t = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .build()
        .unwrap();
    for k in exptrack_core::EventKind::ALL {
        assert!(t.supports(k), "MLflow should support {k}");
    }
    t.open(&ctx).unwrap();
    let run_id = t.run_id().unwrap().to_owned();
    let image = png();
    let mut events = Vec::new();
    for s in 0..10u64 {
        events.push(Event::Metrics {
            step: s,
            timestamp_ms: T0 + s as i64,
            values: vec![Metric::new("train/loss", 1.0 / (s as f64 + 1.0))],
        });
    }
    events.push(Event::Image {
        step: 9,
        timestamp_ms: T0 + 9,
        tag: "samples/grid".into(),
        width: 600,
        height: 300,
        channels: 3,
        png: image.clone(),
    });
    events.push(Event::Image {
        step: 4,
        timestamp_ms: T0 + 4,
        tag: "samples/grid".into(),
        width: 1,
        height: 1,
        channels: 3,
        png: b"not a png".to_vec(),
    });
    events.push(Event::Histogram {
        step: 5,
        timestamp_ms: T0 + 5,
        tag: "weights/fc1".into(),
        values: (0..100)
            .map(f64::from)
            .chain([f64::NAN, f64::INFINITY])
            .collect(),
    });
    events.push(Event::Result {
        key: "test/accuracy".into(),
        value: json!(0.93),
        timestamp_ms: T0 + 20,
    });
    events.push(Event::Result {
        key: "best_checkpoint".into(),
        value: json!("ckpt-000009"),
        timestamp_ms: T0 + 20,
    });
    write(&mut t, 1, &events);
    // Redelivery (after a transient failure) writes the same files again, not new ones.
    write(&mut t, 1, &events);
    t.close(RunStatus::Completed).unwrap();

    let run = server.run(&run_id);
    let tags = kv(&run, "tags");
    assert_eq!(tags["mlflow.source.type"], "LOCAL");
    assert_eq!(
        tags["mlflow.source.name"],
        "/home/alice/proj/target/release/train"
    );
    assert_eq!(tags["mlflow.user"], "alice");
    assert_eq!(
        tags["mlflow.source.git.commit"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(tags["mlflow.source.git.branch"], "main");
    assert_eq!(tags["mlflow.loggedImages"], "True");

    // Images: one PNG + compressed WebP per (valid) image, named as log_image names them.
    let files = list(server, &run_id, "images");
    assert_eq!(files.len(), 3, "{files:?}");
    let artifact_uri = run["info"]["artifact_uri"].as_str().unwrap().to_owned();
    let mut pngs = 0;
    for (path, size) in &files {
        let (key, step, ts, compressed, ext) = parse_ui(path);
        assert_eq!(key, "samples/grid");
        let bytes = server.artifact(&artifact_uri, path);
        assert_eq!(bytes.len() as i64, *size);
        match (step, compressed, ext.as_str()) {
            (9, false, "png") => {
                assert_eq!(ts, T0 + 9);
                assert_eq!(bytes, image);
                pngs += 1;
                let webp = path.replace(".png", "+compressed.webp");
                assert!(files.iter().any(|(p, _)| *p == webp), "{webp} missing");
            }
            (9, true, "webp") => {
                let mut d = image_webp::WebPDecoder::new(Cursor::new(&bytes)).unwrap();
                assert_eq!(
                    d.dimensions(),
                    (256, 128),
                    "fits 256 like compress_image_size"
                );
                let mut px = vec![0; d.output_buffer_size().unwrap()];
                d.read_image(&mut px).unwrap();
                assert_eq!(&px[..3], [255, 0, 0]);
                assert_eq!(&px[px.len() - 3..], [0, 0, 255]);
            }
            // An undecodable PNG is still kept (without a compressed copy).
            (4, false, "png") => assert_eq!(bytes, b"not a png"),
            other => panic!("unexpected image file {path}: {other:?}"),
        }
    }
    assert_eq!(pngs, 1);

    // Histograms: a JSON artifact per step.
    let hist: Value = serde_json::from_slice(
        &server.artifact(&artifact_uri, "histograms/weights/fc1/step_00000005.json"),
    )
    .unwrap();
    assert_eq!(hist["step"], 5);
    assert_eq!(hist["count"], 100);
    assert_eq!(
        (hist["nan"].clone(), hist["pos_inf"].clone()),
        (json!(1), json!(1))
    );
    let counts: Vec<u64> = hist["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_u64().unwrap())
        .collect();
    assert_eq!(counts.len(), 64);
    assert_eq!(counts.iter().sum::<u64>(), 100);
    assert_eq!(hist["bins"][0], 0.0);
    assert_eq!(hist["bins"][64], 99.0);

    // Results: tags for every result, the metric for numbers (at the latest step).
    assert_eq!(tags["exptrack.result.test/accuracy"], "0.93");
    assert_eq!(tags["exptrack.result.best_checkpoint"], "ckpt-000009");
    let acc = server.history(&run_id, "test/accuracy");
    assert_eq!(acc.len(), 1, "{acc:?}");
    assert_eq!(acc[0].0, 9);
    assert_eq!(acc[0].1, json!(0.93));
}
