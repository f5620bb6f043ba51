//! Every event kind survives the trip through `events.jsonl`.

use exptrack_core::store::RunReader;
use exptrack_core::{
    ArtifactKind, Event, ExperimentConfig, ExperimentTracker, Metric, ParamValue, RunStatus,
};
use proptest::prelude::*;

fn one_of_each(artifact: std::path::PathBuf) -> Vec<Event> {
    vec![
        Event::Metrics {
            step: 3,
            timestamp_ms: 1_700_000_000_123,
            values: vec![
                Metric::new("train/loss", 0.25),
                Metric::new("nan", f64::NAN),
                Metric::new("inf", f64::INFINITY),
                Metric::new("ninf", f64::NEG_INFINITY),
                Metric::new("tiny", 5e-324),
                Metric::new("unicode ключ", -1.5),
            ],
        },
        Event::Params {
            params: vec![
                ("lr".into(), ParamValue::Float(1e-3)),
                ("layers".into(), ParamValue::Int(-4)),
                ("opt".into(), ParamValue::Str("adamw \"quoted\"\n".into())),
                ("amp".into(), ParamValue::Bool(true)),
                ("weird".into(), ParamValue::Float(f64::NAN)),
            ],
        },
        Event::Tags {
            tags: vec![("team".into(), "vision".into())],
        },
        Event::Text {
            step: 4,
            timestamp_ms: 1,
            tag: "notes".into(),
            text: "# Title\nline two\u{0}".into(),
        },
        Event::Image {
            step: 5,
            timestamp_ms: 2,
            tag: "img".into(),
            width: 2,
            height: 1,
            channels: 3,
            png: vec![0x89, b'P', b'N', b'G', 0, 255, 1, 2],
        },
        Event::Histogram {
            step: 6,
            timestamp_ms: 3,
            tag: "weights".into(),
            values: vec![0.0, -1.0, 1e300, f64::NAN],
        },
        Event::Artifact {
            path: artifact,
            name: "models/best.bpk".into(),
            artifact_kind: ArtifactKind::Model,
            step: Some(6),
        },
        Event::Status {
            status: RunStatus::Running,
            timestamp_ms: 4,
        },
        Event::Result {
            key: "best".into(),
            value: serde_json::json!({"epoch": 3, "acc": 0.5, "name": "ckpt \"7\"", "none": null}),
            timestamp_ms: 5,
        },
        Event::Checkpoint(exptrack_core::CheckpointReport {
            metrics: vec![Metric::new("val_loss", f64::NAN)],
            pruned: vec![1, 2],
            ..exptrack_core::conformance::checkpoint_report(6, true, &[])
        }),
    ]
}

/// NaN != NaN, so compare through the JSON encoding (which is exact for finite floats).
fn same(a: &Event, b: &Event) -> bool {
    serde_json::to_string(a).unwrap() == serde_json::to_string(b).unwrap()
}

#[test]
fn every_event_kind_round_trips_through_the_store() {
    let tmp = tempfile::tempdir().unwrap();
    let artifact = tmp.path().join("best.bpk");
    std::fs::write(&artifact, b"weights").unwrap();
    let artifact = std::fs::canonicalize(artifact).unwrap();
    let events = one_of_each(artifact);
    assert_eq!(
        events.iter().map(|e| e.kind()).collect::<Vec<_>>(),
        exptrack_core::EventKind::ALL.to_vec(),
        "the test covers every kind"
    );
    let t = ExperimentTracker::builder(ExperimentConfig::named("rt"))
        .runs_dir(tmp.path().join("runs"))
        .handle_signals(false)
        .build()
        .unwrap();
    for e in &events {
        t.log_event(e.clone()).unwrap();
    }
    let dir = t.run_dir().to_path_buf();
    t.finish(RunStatus::Completed).unwrap();
    let back = RunReader::open(&dir).unwrap().events().unwrap();
    assert_eq!(back.len(), events.len() + 1);
    for (i, (e, (seq, b))) in events.iter().zip(back.iter()).enumerate() {
        assert_eq!(*seq, i as u64 + 1);
        assert!(same(e, b), "{e:?}\n!=\n{b:?}");
    }
    // Non-finite values are kept exactly.
    let Event::Metrics { values, .. } = &back[0].1 else {
        panic!()
    };
    assert!(values[1].value.is_nan());
    assert_eq!(values[2].value, f64::INFINITY);
    assert_eq!(values[3].value, f64::NEG_INFINITY);
    assert_eq!(values[4].value, 5e-324);
    // One JSON object per line, with its seq.
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seq"], serde_json::json!(i + 1));
        assert!(v["kind"].is_string());
    }
}

fn arb_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        -1e6..1e6f64,
    ]
}

fn arb_param() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        any::<String>().prop_map(ParamValue::Str),
        any::<i64>().prop_map(ParamValue::Int),
        arb_f64().prop_map(ParamValue::Float),
        any::<bool>().prop_map(ParamValue::Bool),
    ]
}

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            any::<u64>(),
            any::<i64>(),
            prop::collection::vec((any::<String>(), arb_f64()), 0..5)
        )
            .prop_map(|(step, ts, v)| Event::Metrics {
                step,
                timestamp_ms: ts,
                values: v.into_iter().map(|(k, x)| Metric::new(k, x)).collect()
            }),
        prop::collection::vec((any::<String>(), arb_param()), 0..4)
            .prop_map(|params| Event::Params { params }),
        (any::<u64>(), any::<String>(), any::<String>()).prop_map(|(step, tag, text)| {
            Event::Text {
                step,
                timestamp_ms: 0,
                tag,
                text,
            }
        }),
        (any::<u64>(), prop::collection::vec(any::<u8>(), 0..64)).prop_map(|(step, png)| {
            Event::Image {
                step,
                timestamp_ms: 0,
                tag: "i".into(),
                width: 1,
                height: 1,
                channels: 4,
                png,
            }
        }),
        (any::<u64>(), prop::collection::vec(arb_f64(), 0..16)).prop_map(|(step, values)| {
            Event::Histogram {
                step,
                timestamp_ms: 0,
                tag: "h".into(),
                values,
            }
        }),
        (any::<String>(), any::<String>(), any::<i64>(), -1e6..1e6f64).prop_map(
            |(key, text, i, x)| Event::Result {
                key,
                value: serde_json::json!([text, i, x, true, null]),
                timestamp_ms: i,
            }
        ),
        (
            any::<u64>(),
            any::<Option<u64>>(),
            any::<String>(),
            prop::collection::vec((any::<String>(), any::<u64>(), any::<String>()), 0..3),
            prop::collection::vec((any::<String>(), arb_f64()), 0..3),
            any::<bool>(),
            prop::collection::vec(any::<u64>(), 0..3),
        )
            .prop_map(|(step, epoch, location, files, metrics, is_best, pruned)| {
                Event::Checkpoint(exptrack_core::CheckpointReport {
                    step,
                    epoch,
                    timestamp_ms: 0,
                    location,
                    files: files
                        .into_iter()
                        .map(|(name, size, hash)| exptrack_core::CheckpointFile {
                            name,
                            size,
                            hash,
                        })
                        .collect(),
                    metrics: metrics
                        .into_iter()
                        .map(|(k, x)| Metric::new(k, x))
                        .collect(),
                    is_best,
                    pruned,
                })
            }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn json_encoding_round_trips(e in arb_event()) {
        let s = serde_json::to_string(&e).unwrap();
        prop_assert!(!s.contains('\n'), "one line per event");
        let back: Event = serde_json::from_str(&s).unwrap();
        prop_assert_eq!(serde_json::to_string(&back).unwrap(), s);
    }
}
