//! `set_result` values reach TensorBoard as HParams metrics: a numeric result is a scalar at the
//! run's latest step and is listed among the HParams experiment's metrics; other results are
//! text. Read back with tensorboard 2.21's EventAccumulator (tests/py/read_back.py).

mod common;

use exptrack_core::{Event, Metric, ParamValue, RunStatus, Tracker};
use exptrack_tensorboard::TensorBoardTracker;
use serde_json::json;

#[test]
fn results_are_hparams_metrics() {
    let Some(py) = common::peer_python(&["tensorboard", "tbparse"]) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "results");
    let mut events = vec![Event::Params {
        params: vec![("lr".into(), ParamValue::Float(0.01))],
    }];
    for s in 0..=12u64 {
        events.push(Event::Metrics {
            step: s,
            timestamp_ms: 1_700_000_000_000 + s as i64,
            values: vec![Metric::new("train/loss", 1.0 / (s as f64 + 1.0))],
        });
    }
    events.push(Event::Result {
        key: "test/accuracy".into(),
        value: json!(0.75),
        timestamp_ms: 1_700_000_000_100,
    });
    events.push(Event::Result {
        key: "best_checkpoint".into(),
        value: json!("ckpt-000012"),
        timestamp_ms: 1_700_000_000_100,
    });
    let mut tb = TensorBoardTracker::new(Some(root.path().join("tb")));
    assert!(tb.supports(exptrack_core::EventKind::Result));
    tb.open(&ctx).unwrap();
    let run_dir = tb.log_dir().unwrap().to_path_buf();
    common::write_all(&mut tb, &events, 4, 0);
    tb.close(RunStatus::Completed).unwrap();

    let out = common::run_python_json(&py, "read_back.py", &[run_dir.to_str().unwrap()]);
    let acc = out["ea_scalars"]["test/accuracy"]
        .as_array()
        .expect("result scalar");
    assert_eq!(acc.len(), 1, "{acc:?}");
    assert_eq!(acc[0][0], 12, "at the latest step");
    assert_eq!(acc[0][1].as_u64(), Some(u64::from(0.75f32.to_bits())));
    let metrics = &out["ea_hparams"]["_hparams_/experiment"]["metrics"];
    assert_eq!(metrics, &json!(["train/loss", "test/accuracy"]), "{out}");
    let text = &out["ea_text"]["result/best_checkpoint/text_summary"];
    assert_eq!(text[0][1][0], "ckpt-000012", "{out}");
}
