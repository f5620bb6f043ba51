//! Property tests: random event sequences written through the tracker read back through our
//! reader; the allocation-free scalar encoder matches prost byte for byte.

mod common;

use std::collections::BTreeMap;

use exptrack_core::{Event, Metric, ParamValue, RunStatus, Tracker};
use exptrack_tensorboard::proto::{
    self, event::What, h_params_plugin_data::Data, summary::value::Value as V,
};
use exptrack_tensorboard::{EventFileWriter, TensorBoardTracker, encode, read_event_file};
use proptest::prelude::*;
use prost::Message;

const KEYS: &[&str] = &["loss", "acc", "train/lr", "", "ünï/cödé", "a b|c"];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_owned)
}

fn metric() -> impl Strategy<Value = Metric> {
    (key(), any::<f64>()).prop_map(|(k, v)| Metric::new(k, v))
}

fn param_value() -> impl Strategy<Value = ParamValue> {
    prop_oneof![
        "[a-z]{0,8}".prop_map(ParamValue::Str),
        any::<i64>().prop_map(ParamValue::Int),
        (-1.0e6f64..1.0e6).prop_map(ParamValue::Float),
        any::<bool>().prop_map(ParamValue::Bool),
    ]
}

fn status() -> impl Strategy<Value = RunStatus> {
    prop::sample::select(vec![
        RunStatus::Running,
        RunStatus::Completed,
        RunStatus::Failed,
        RunStatus::Killed,
    ])
}

fn event() -> impl Strategy<Value = Event> {
    let step = 0u64..5_000;
    let ts = 0i64..2_000_000_000_000;
    prop_oneof![
        4 => (step.clone(), ts.clone(), prop::collection::vec(metric(), 0..6))
            .prop_map(|(step, timestamp_ms, values)| Event::Metrics { step, timestamp_ms, values }),
        1 => prop::collection::vec((key(), param_value()), 0..4)
            .prop_map(|params| Event::Params { params }),
        1 => prop::collection::vec(("[a-z]{1,5}", "[ -~]{0,10}"), 0..3)
            .prop_map(|tags| Event::Tags { tags }),
        1 => (step.clone(), ts.clone(), key(), "\\PC{0,40}")
            .prop_map(|(step, timestamp_ms, tag, text)| Event::Text { step, timestamp_ms, tag, text }),
        1 => (step.clone(), ts.clone(), key(), 1u32..5000, 1u32..5000, 1u8..=4,
              prop::collection::vec(any::<u8>(), 0..64))
            .prop_map(|(step, timestamp_ms, tag, width, height, channels, png)| Event::Image {
                step, timestamp_ms, tag, width, height, channels, png }),
        1 => (step, ts, key(), prop::collection::vec(
                prop_oneof![8 => -1.0e3f64..1.0e3, 1 => any::<f64>()], 0..80))
            .prop_map(|(step, timestamp_ms, tag, values)| Event::Histogram { step, timestamp_ms, tag, values }),
        1 => (status(), 0i64..10).prop_map(|(status, timestamp_ms)| Event::Status { status, timestamp_ms }),
    ]
}

/// What one record means, with the fields that must survive the round trip.
#[derive(Debug, PartialEq)]
enum Rec {
    Scalars {
        step: i64,
        wall: u64,
        values: Vec<(String, u32)>,
    },
    Text {
        step: i64,
        wall: u64,
        tag: String,
        text: String,
    },
    TagsText {
        text: String,
    },
    Image {
        step: i64,
        wall: u64,
        tag: String,
        wh: (i32, i32),
        channels: i32,
        png: Vec<u8>,
    },
    Histo {
        step: i64,
        wall: u64,
        tag: String,
        num: f64,
        min: f64,
        max: f64,
    },
    SessionStart(BTreeMap<String, proto::Value>),
    Experiment {
        hparams: Vec<(String, i32)>,
        metrics: Vec<String>,
    },
    SessionEnd(i32),
}

fn wall(ms: i64) -> u64 {
    (ms as f64 / 1000.0).to_bits()
}

fn pv(v: &ParamValue) -> proto::Value {
    use proto::value::Kind;
    proto::Value {
        kind: Some(match v {
            ParamValue::Str(s) => Kind::StringValue(s.clone()),
            ParamValue::Int(i) => Kind::NumberValue(*i as f64),
            ParamValue::Float(f) => Kind::NumberValue(*f),
            ParamValue::Bool(b) => Kind::BoolValue(*b),
        }),
    }
}

fn start_session(out: &mut Vec<Rec>, params: &[(String, ParamValue)], started: &mut bool) {
    if !*started && !params.is_empty() {
        out.push(Rec::SessionStart(
            params.iter().map(|(k, v)| (k.clone(), pv(v))).collect(),
        ));
        *started = true;
    }
}

/// The records the tracker must produce for `events` closed with `close` (an independent model of
/// the mapping documented on `TensorBoardTracker`).
fn model(events: &[Event], close: RunStatus) -> Vec<Rec> {
    let mut out = Vec::new();
    let mut params: Vec<(String, ParamValue)> = Vec::new();
    let mut started = false;
    let mut tags: Vec<String> = Vec::new();
    for e in events {
        match e {
            Event::Metrics {
                step,
                timestamp_ms,
                values,
            } if !values.is_empty() => {
                start_session(&mut out, &params, &mut started);
                for m in values {
                    if !tags.contains(&m.key) {
                        tags.push(m.key.clone());
                    }
                }
                out.push(Rec::Scalars {
                    step: *step as i64,
                    wall: wall(*timestamp_ms),
                    values: values
                        .iter()
                        .map(|m| (m.key.clone(), (m.value as f32).to_bits()))
                        .collect(),
                });
            }
            Event::Params { params: p } => {
                for (k, v) in p {
                    match params.iter_mut().find(|(key, _)| key == k) {
                        Some(slot) => slot.1 = v.clone(),
                        None => params.push((k.clone(), v.clone())),
                    }
                }
            }
            Event::Tags { tags: t } if !t.is_empty() => out.push(Rec::TagsText {
                text: encode::tags_markdown(t),
            }),
            Event::Text {
                step,
                timestamp_ms,
                tag,
                text,
            } => {
                start_session(&mut out, &params, &mut started);
                out.push(Rec::Text {
                    step: *step as i64,
                    wall: wall(*timestamp_ms),
                    tag: format!("{tag}/text_summary"),
                    text: text.clone(),
                });
            }
            Event::Image {
                step,
                timestamp_ms,
                tag,
                width,
                height,
                channels,
                png,
            } => {
                start_session(&mut out, &params, &mut started);
                out.push(Rec::Image {
                    step: *step as i64,
                    wall: wall(*timestamp_ms),
                    tag: tag.clone(),
                    wh: (*width as i32, *height as i32),
                    channels: i32::from(*channels),
                    png: png.clone(),
                });
            }
            Event::Histogram {
                step,
                timestamp_ms,
                tag,
                values,
            } => {
                start_session(&mut out, &params, &mut started);
                let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
                let (min, max) = if finite.is_empty() {
                    (0.0, 0.0)
                } else {
                    (
                        finite.iter().copied().fold(f64::INFINITY, f64::min),
                        finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                    )
                };
                out.push(Rec::Histo {
                    step: *step as i64,
                    wall: wall(*timestamp_ms),
                    tag: tag.clone(),
                    num: finite.len() as f64,
                    min,
                    max,
                });
            }
            _ => {}
        }
    }
    if !params.is_empty() {
        start_session(&mut out, &params, &mut started);
        out.push(Rec::Experiment {
            hparams: params
                .iter()
                .map(|(k, v)| {
                    let t = match v {
                        ParamValue::Str(_) => 1,
                        ParamValue::Bool(_) => 2,
                        _ => 3,
                    };
                    (k.clone(), t)
                })
                .collect(),
            metrics: tags,
        });
        out.push(Rec::SessionEnd(match close {
            RunStatus::Completed => 1,
            RunStatus::Failed | RunStatus::Killed => 2,
            RunStatus::Running => 3,
        }));
    }
    out
}

/// Decodes the records of a file (after the file_version record), checking histogram invariants.
fn decode(path: &std::path::Path) -> Vec<Rec> {
    let file = read_event_file(path).expect("read back");
    assert_eq!(file.truncated_tail, None);
    let mut events = file.events.into_iter().map(|r| r.event);
    let first = events.next().expect("file_version record");
    assert_eq!(first.what, Some(What::FileVersion("brain.Event:2".into())));
    let mut out = Vec::new();
    for e in events {
        let Some(What::Summary(s)) = e.what else {
            panic!("unexpected record {e:?}")
        };
        if s.value
            .iter()
            .all(|v| matches!(v.value, Some(V::SimpleValue(_))))
        {
            out.push(Rec::Scalars {
                step: e.step,
                wall: e.wall_time.to_bits(),
                values: s
                    .value
                    .iter()
                    .map(|v| match v.value {
                        Some(V::SimpleValue(x)) => (v.tag.clone(), x.to_bits()),
                        _ => unreachable!(),
                    })
                    .collect(),
            });
            continue;
        }
        assert_eq!(s.value.len(), 1, "one non-scalar value per event");
        let v = s.value.into_iter().next().unwrap();
        let plugin = v.metadata.as_ref().and_then(|m| m.plugin_data.clone());
        match (v.value, plugin) {
            (Some(V::Tensor(t)), Some(p)) if p.plugin_name == "text" => {
                assert_eq!(t.dtype, proto::data_type::DT_STRING);
                let dims: Vec<i64> = t.tensor_shape.unwrap().dim.iter().map(|d| d.size).collect();
                assert_eq!(dims, [1]);
                assert_eq!(t.string_val.len(), 1);
                let text = String::from_utf8(t.string_val[0].clone()).unwrap();
                if v.tag == "tags/text_summary"
                    && e.step == 0
                    && text.starts_with("| tag | value |")
                {
                    out.push(Rec::TagsText { text });
                } else {
                    out.push(Rec::Text {
                        step: e.step,
                        wall: e.wall_time.to_bits(),
                        tag: v.tag,
                        text,
                    });
                }
            }
            (Some(V::Tensor(_)), Some(p)) if p.plugin_name == "hparams" => {
                let data = proto::HParamsPluginData::decode(p.content.as_slice()).unwrap();
                assert_eq!(data.version, 0);
                out.push(match data.data.unwrap() {
                    Data::SessionStartInfo(s) => {
                        assert_eq!(v.tag, "_hparams_/session_start_info");
                        Rec::SessionStart(s.hparams)
                    }
                    Data::Experiment(x) => {
                        assert_eq!(v.tag, "_hparams_/experiment");
                        Rec::Experiment {
                            hparams: x
                                .hparam_infos
                                .into_iter()
                                .map(|h| (h.name, h.r#type))
                                .collect(),
                            metrics: x
                                .metric_infos
                                .into_iter()
                                .map(|m| m.name.unwrap().tag)
                                .collect(),
                        }
                    }
                    Data::SessionEndInfo(x) => {
                        assert_eq!(v.tag, "_hparams_/session_end_info");
                        Rec::SessionEnd(x.status)
                    }
                });
            }
            (Some(V::Image(i)), None) => out.push(Rec::Image {
                step: e.step,
                wall: e.wall_time.to_bits(),
                tag: v.tag,
                wh: (i.width, i.height),
                channels: i.colorspace,
                png: i.encoded_image_string,
            }),
            (Some(V::Histo(h)), None) => {
                assert_eq!(h.bucket.iter().sum::<f64>(), h.num, "counts add up to num");
                assert_eq!(h.bucket.len(), h.bucket_limit.len());
                assert!(!h.bucket.is_empty());
                assert!(h.bucket_limit.windows(2).all(|w| w[0] <= w[1]));
                assert!(h.bucket_limit.iter().all(|l| l.is_finite()));
                out.push(Rec::Histo {
                    step: e.step,
                    wall: e.wall_time.to_bits(),
                    tag: v.tag,
                    num: h.num,
                    min: h.min,
                    max: h.max,
                })
            }
            other => panic!("unexpected value {other:?}"),
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn events_round_trip_through_writer_and_reader(
        events in prop::collection::vec(event(), 0..40),
        batch_size in 1usize..8,
        close in status(),
    ) {
        let root = tempfile::tempdir().unwrap();
        let ctx = common::ctx(root.path(), "prop");
        let mut tb = TensorBoardTracker::new(Some(root.path().join("tb")));
        tb.open(&ctx).unwrap();
        let path = tb.event_file().unwrap().to_path_buf();
        common::write_all(&mut tb, &events, batch_size, 0);
        tb.close(close).unwrap();
        prop_assert_eq!(decode(&path), model(&events, close));
    }

    #[test]
    fn fast_scalar_encoding_matches_prost(
        wall_ms in prop_oneof![Just(0i64), any::<i64>()],
        step in prop_oneof![Just(0u64), any::<u64>()],
        values in prop::collection::vec(
            (prop_oneof![key(), "\\PC{0,200}"], any::<f64>()).prop_map(|(k, v)| Metric::new(k, v)),
            0..8),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let wall_time = wall_ms as f64 / 1000.0;
        let step = i64::try_from(step).unwrap_or(i64::MAX);
        let mut fast = EventFileWriter::create_at(dir.path().join("fast")).unwrap();
        fast.write_scalars(wall_time, step, &values).unwrap();
        fast.flush().unwrap();
        let mut slow = EventFileWriter::create_at(dir.path().join("slow")).unwrap();
        slow.write_event(&encode::scalars_event(wall_time, step, &values)).unwrap();
        slow.flush().unwrap();
        let fast_file = read_event_file(fast.path()).unwrap();
        prop_assert_eq!(fast_file.events.len(), 2);
        let start = fast_file.events[1].offset as usize;
        let fast_bytes = std::fs::read(fast.path()).unwrap();
        let slow_bytes = std::fs::read(slow.path()).unwrap();
        // The file_version records have the same length (only their wall times differ).
        prop_assert_eq!(&fast_bytes[start..], &slow_bytes[start..]);
    }
}
