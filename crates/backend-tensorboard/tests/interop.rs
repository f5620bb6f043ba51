//! Interop with the real peers: tensorboard==2.21.0 (EventAccumulator and the `tensorboard`
//! server) and tbparse==0.0.9 read back a run written through the tracker.
//!
//! Needs `EXPTRACK_PEER_PYTHON` (see scripts/peers.sh); without it the test prints
//! "skipping: ..." unless `CI=true`, where it fails.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use exptrack_core::{Event, Metric, ParamValue, RunStatus, Tracker};
use exptrack_tensorboard::{TensorBoardTracker, encode};
use serde_json::Value as J;

const TAGS: [&str; 3] = ["train/loss", "train/accuracy", "lr"];
const N_SCALARS: usize = 10_000;

/// Deterministic, varied f64 values (signs, magnitudes, fractions).
fn value(i: usize) -> f64 {
    let x = (i as f64 * 0.618_033_988_749_895).fract();
    let exp = (i % 13) as i32 - 6;
    match i % 97 {
        0 => 1.0e-40, // subnormal as f32
        1 => -3.0e30,
        _ => (x - 0.3) * 10f64.powi(exp),
    }
}

struct Run {
    events: Vec<Event>,
    /// tag → [(step, f32 bits)] in write order.
    scalars: BTreeMap<String, Vec<(u64, u32)>>,
    hist_values: Vec<f64>,
    png: Vec<u8>,
}

fn build_run() -> Run {
    let mut events = vec![
        Event::Params {
            params: vec![
                ("lr".into(), ParamValue::Float(0.001)),
                ("batch_size".into(), ParamValue::Int(64)),
                ("optimizer".into(), ParamValue::Str("adam".into())),
                ("amp".into(), ParamValue::Bool(true)),
            ],
        },
        Event::Tags {
            tags: vec![("team".into(), "vision".into())],
        },
    ];
    let mut scalars: BTreeMap<String, Vec<(u64, u32)>> = BTreeMap::new();
    let mut written = 0;
    let mut step = 0u64;
    while written < N_SCALARS {
        let n = (N_SCALARS - written).min(TAGS.len());
        let values: Vec<Metric> = TAGS[..n]
            .iter()
            .enumerate()
            .map(|(j, tag)| Metric::new(*tag, value(written + j)))
            .collect();
        for m in &values {
            scalars
                .entry(m.key.clone())
                .or_default()
                .push((step, (m.value as f32).to_bits()));
        }
        written += n;
        events.push(Event::Metrics {
            step,
            timestamp_ms: 1_700_000_000_000 + step as i64 * 10,
            values,
        });
        step += 1;
    }
    let png = common::png(7, 5, 3);
    let hist_values: Vec<f64> = (0..1000)
        .map(|i| ((i * 37 % 1000) as f64 / 100.0 - 5.0).powi(3))
        .chain([f64::NAN, f64::INFINITY])
        .collect();
    events.insert(
        100,
        Event::Text {
            step: 5,
            timestamp_ms: 1_700_000_000_050,
            tag: "notes".into(),
            text: "hello **markdown** ünïcödé ✓".into(),
        },
    );
    events.insert(
        200,
        Event::Image {
            step: 10,
            timestamp_ms: 1_700_000_000_100,
            tag: "samples/input".into(),
            width: 7,
            height: 5,
            channels: 3,
            png: png.clone(),
        },
    );
    events.insert(
        300,
        Event::Histogram {
            step: 20,
            timestamp_ms: 1_700_000_000_200,
            tag: "weights/fc1".into(),
            values: hist_values.clone(),
        },
    );
    Run {
        events,
        scalars,
        hist_values,
        png,
    }
}

fn scalar_list(v: &J) -> Vec<(u64, u32)> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|p| (p[0].as_u64().unwrap(), p[1].as_u64().unwrap() as u32))
        .collect()
}

#[test]
fn tensorboard_and_tbparse_read_everything_back() {
    let Some(py) = common::peer_python(&["tensorboard", "tbparse"]) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let logdir = root.path().join("tb");
    let ctx = common::ctx(root.path(), "interop");
    let run = build_run();

    let mut tb = TensorBoardTracker::new(Some(logdir.clone()));
    tb.open(&ctx).unwrap();
    let run_dir = tb.log_dir().unwrap().to_path_buf();
    common::write_all(&mut tb, &run.events, 64, 0);
    tb.close(RunStatus::Completed).unwrap();

    let out = common::run_python_json(&py, "read_back.py", &[run_dir.to_str().unwrap()]);
    assert_eq!(out["tensorboard_version"], "2.21.0");

    // Scalars: every value, as f32, same steps, same order, through both readers.
    for key in ["ea_scalars", "tbparse_scalars"] {
        let got = out[key].as_object().unwrap();
        assert_eq!(got.len(), TAGS.len(), "{key}: {:?}", got.keys());
        let mut total = 0;
        for (tag, expected) in &run.scalars {
            let actual = scalar_list(&got[tag]);
            assert_eq!(actual.len(), expected.len(), "{key} {tag}");
            assert_eq!(&actual, expected, "{key} {tag}");
            total += actual.len();
        }
        assert_eq!(total, N_SCALARS, "{key}");
    }

    // Text.
    let text = &out["ea_text"]["notes/text_summary"];
    assert_eq!(text[0][0], 5);
    assert_eq!(text[0][1][0], "hello **markdown** ünïcödé ✓");
    let tbparse_text = out["tbparse_text"].as_array().unwrap();
    assert!(
        // tbparse drops the `/text_summary` suffix.
        tbparse_text
            .iter()
            .any(|r| r[0] == "notes" && r[1] == 5 && r[2] == "hello **markdown** ünïcödé ✓"),
        "{tbparse_text:?}"
    );
    assert!(
        tbparse_text
            .iter()
            .any(|r| r[0] == "tags" && r[2].as_str().unwrap().contains("| team | vision |")),
        "{tbparse_text:?}"
    );

    // Image: size as given (7 wide, 5 high; no transposing), PNG bytes untouched.
    let img = &out["ea_images"]["samples/input"][0];
    assert_eq!(
        (
            img["step"].as_u64(),
            img["width"].as_u64(),
            img["height"].as_u64()
        ),
        (Some(10), Some(7), Some(5))
    );
    assert_eq!(img["png_len"].as_u64(), Some(run.png.len() as u64));

    // Histogram: counts as we bucketed them, adding up to the finite values.
    let expected = encode::histogram(&run.hist_values);
    let h = &out["ea_histograms"]["weights/fc1"][0];
    assert_eq!(h["step"], 20);
    assert_eq!(h["num"].as_f64(), Some(1000.0));
    let counts: Vec<f64> = h["bucket"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    assert_eq!(counts, expected.bucket);
    assert_eq!(counts.iter().sum::<f64>(), 1000.0);
    assert_eq!(h["min"].as_f64(), Some(expected.min));
    assert_eq!(h["max"].as_f64(), Some(expected.max));
    let tbparse_counts: Vec<f64> = out["tbparse_histograms"][0]["counts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_f64().unwrap())
        .collect();
    assert_eq!(tbparse_counts, expected.bucket);

    // HParams: names, values, metric tags, end status.
    let hp = &out["ea_hparams"];
    let exp = &hp["_hparams_/experiment"];
    assert_eq!(exp["version"], 0);
    assert_eq!(
        exp["hparams"],
        serde_json::json!([["lr", 3], ["batch_size", 3], ["optimizer", 1], ["amp", 2]])
    );
    assert_eq!(
        exp["metrics"],
        serde_json::json!(["train/loss", "train/accuracy", "lr"])
    );
    assert_eq!(exp["name"], "interop");
    let start = &hp["_hparams_/session_start_info"]["hparams"];
    assert_eq!(start["lr"], serde_json::json!(["number_value", 0.001]));
    assert_eq!(
        start["batch_size"],
        serde_json::json!(["number_value", 64.0])
    );
    assert_eq!(
        start["optimizer"],
        serde_json::json!(["string_value", "adam"])
    );
    assert_eq!(start["amp"], serde_json::json!(["bool_value", true]));
    assert_eq!(hp["_hparams_/session_end_info"]["status"], 1, "SUCCESS");
    let tbparse_hp = &out["tbparse_hparams"];
    assert_eq!(tbparse_hp["lr"], 0.001);
    assert_eq!(tbparse_hp["batch_size"], 64.0);
    assert_eq!(tbparse_hp["optimizer"], "adam");
    assert_eq!(tbparse_hp["amp"], true);
}

#[test]
fn failed_and_killed_runs_end_as_failure_running_as_running() {
    let Some(py) = common::peer_python(&["tensorboard", "tbparse"]) else {
        return;
    };
    for (status, expected) in [
        (RunStatus::Failed, 2),
        (RunStatus::Killed, 2),
        (RunStatus::Running, 3),
    ] {
        let root = tempfile::tempdir().unwrap();
        let ctx = common::ctx(root.path(), "status");
        let mut tb = TensorBoardTracker::new(None);
        tb.open(&ctx).unwrap();
        let events = [
            Event::Params {
                params: vec![("seed".into(), ParamValue::Int(1))],
            },
            Event::Metrics {
                step: 1,
                timestamp_ms: 1_700_000_000_000,
                values: vec![Metric::new("loss", 1.0)],
            },
        ];
        common::write_all(&mut tb, &events, 8, 0);
        tb.close(status).unwrap();
        let out = common::run_python_json(&py, "read_back.py", &[ctx.run_dir.to_str().unwrap()]);
        assert_eq!(
            out["ea_hparams"]["_hparams_/session_end_info"]["status"], expected,
            "{status}"
        );
    }
}

/// Starts `tensorboard --logdir` on 127.0.0.1 and reads the scalars (and hparams) over HTTP.
#[test]
fn tensorboard_server_serves_the_scalars() {
    let Some(py) = common::peer_python(&["tensorboard"]) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let logdir = root.path().join("tb");
    let ctx = common::ctx(root.path(), "server");
    let run = build_run();
    let mut tb = TensorBoardTracker::new(Some(logdir.clone()));
    tb.open(&ctx).unwrap();
    common::write_all(&mut tb, &run.events, 64, 0);
    tb.close(RunStatus::Completed).unwrap();
    let run_name = format!("{}/{}", ctx.metadata.experiment_id, ctx.metadata.run_id);

    let port = common::free_port();
    let log = std::fs::File::create(root.path().join("tensorboard.log")).unwrap();
    let child = Command::new(&py)
        .args(["-m", "tensorboard.main", "--logdir"])
        .arg(&logdir)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args([
            "--samples_per_plugin",
            "scalars=100000",
            "--reload_interval",
            "1",
        ])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start tensorboard");
    let _guard = common::KillOnDrop(child);
    let log_tail =
        || std::fs::read_to_string(root.path().join("tensorboard.log")).unwrap_or_default();

    let deadline = Instant::now() + Duration::from_secs(120);
    for tag in TAGS {
        let expected = &run.scalars[tag];
        let path = format!(
            "/data/plugin/scalars/scalars?run={}&tag={}",
            common::urlencode(&run_name),
            common::urlencode(tag)
        );
        let rows = loop {
            if let Ok((200, body)) = common::http_get(port, &path)
                && let Ok(J::Array(rows)) = serde_json::from_slice::<J>(&body)
                && rows.len() >= expected.len()
            {
                break rows;
            }
            if Instant::now() > deadline {
                let get = |p: &str| {
                    common::http_get(port, p)
                        .map(|(s, b)| format!("{s} {}", String::from_utf8_lossy(&b)))
                        .unwrap_or_else(|e| e.to_string())
                };
                panic!(
                    "tensorboard did not serve {path} in time\nruns: {}\ntags: {}\nlast: {}\nlog:\n{}",
                    get("/data/runs"),
                    get("/data/plugin/scalars/tags"),
                    get(&path).chars().take(300).collect::<String>(),
                    log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        };
        let got: Vec<(u64, u32)> = rows
            .iter()
            .map(|r| {
                (
                    r[1].as_u64().unwrap(),
                    (r[2].as_f64().unwrap() as f32).to_bits(),
                )
            })
            .collect();
        assert_eq!(&got, expected, "{tag}");
    }

    // The HParams dashboard sees the session with our hyperparameters and metrics.
    let (status, body) = common::http_post_json(
        port,
        "/data/plugin/hparams/experiment",
        r#"{"experimentName":""}"#,
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let exp: J = serde_json::from_slice(&body).unwrap();
    let names: Vec<&str> = exp["hparamInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 4, "{exp}");
    for n in ["lr", "batch_size", "optimizer", "amp"] {
        assert!(names.contains(&n), "{exp}");
    }
    let metrics: Vec<&str> = exp["metricInfos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"]["tag"].as_str().unwrap())
        .collect();
    for t in TAGS {
        assert!(metrics.contains(&t), "{exp}");
    }
}
