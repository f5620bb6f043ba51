//! Building summaries from exptrack events.

use std::collections::BTreeMap;

use exptrack_core::{Metric, ParamValue, RunStatus};
use prost::Message;
use prost::encoding::{encode_varint, encoded_len_varint};

use crate::proto::{self, summary};

/// The file-version string of the first record.
pub const FILE_VERSION: &str = "brain.Event:2";
/// Suffix TensorBoard's text summaries (and tbparse) expect on text tags.
pub const TEXT_TAG_SUFFIX: &str = "/text_summary";
/// Tag of the hparams experiment record.
pub const HPARAMS_EXPERIMENT_TAG: &str = "_hparams_/experiment";
/// Tag of the hparams session-start record.
pub const HPARAMS_SESSION_START_TAG: &str = "_hparams_/session_start_info";
/// Tag of the hparams session-end record.
pub const HPARAMS_SESSION_END_TAG: &str = "_hparams_/session_end_info";
/// Number of equal-width buckets of a histogram with distinct values.
pub const HISTOGRAM_BUCKETS: usize = 30;

/// `f64` seconds from milliseconds.
pub(crate) fn wall_time(timestamp_ms: i64) -> f64 {
    timestamp_ms as f64 / 1000.0
}

/// A step as TensorBoard's `int64` (saturating).
pub(crate) fn step_i64(step: u64) -> i64 {
    i64::try_from(step).unwrap_or(i64::MAX)
}

fn len_delimited_len(len: usize) -> usize {
    1 + encoded_len_varint(len as u64) + len
}

fn scalar_value_len(tag: &str) -> usize {
    let tag_len = if tag.is_empty() {
        0
    } else {
        len_delimited_len(tag.len())
    };
    tag_len + 5
}

/// Appends the protobuf encoding of
/// `Event{wall_time, step, summary: Summary{value: [Value{tag, simple_value}...]}}` to `buf`
/// without building the message (no allocation). Byte-identical to encoding the same message
/// with `prost` (checked by a property test).
pub(crate) fn encode_scalars_event(
    buf: &mut Vec<u8>,
    wall_time: f64,
    step: i64,
    values: &[Metric],
) {
    let summary_len: usize = values
        .iter()
        .map(|m| len_delimited_len(scalar_value_len(&m.key)))
        .sum();
    buf.reserve(20 + len_delimited_len(summary_len));
    if wall_time != 0.0 {
        buf.push(0x09); // field 1, 64-bit
        buf.extend_from_slice(&wall_time.to_le_bytes());
    }
    if step != 0 {
        buf.push(0x10); // field 2, varint
        encode_varint(step as u64, buf);
    }
    buf.push(0x2a); // field 5 (summary), length-delimited
    encode_varint(summary_len as u64, buf);
    for m in values {
        buf.push(0x0a); // Summary.value (field 1)
        encode_varint(scalar_value_len(&m.key) as u64, buf);
        if !m.key.is_empty() {
            buf.push(0x0a); // Value.tag (field 1)
            encode_varint(m.key.len() as u64, buf);
            buf.extend_from_slice(m.key.as_bytes());
        }
        buf.push(0x15); // Value.simple_value (field 2), 32-bit
        buf.extend_from_slice(&(m.value as f32).to_le_bytes());
    }
}

/// The reference (allocating) form of the writer's direct encoder (`encode_scalars_event`,
/// private): the same event built as a prost message.
pub fn scalars_event(wall_time: f64, step: i64, values: &[Metric]) -> proto::Event {
    summary_event(
        wall_time,
        step,
        values
            .iter()
            .map(|m| summary::Value {
                tag: m.key.clone(),
                value: Some(summary::value::Value::SimpleValue(m.value as f32)),
                ..Default::default()
            })
            .collect(),
    )
}

/// An event carrying one summary with `values`.
pub fn summary_event(wall_time: f64, step: i64, values: Vec<summary::Value>) -> proto::Event {
    proto::Event {
        wall_time,
        step,
        what: Some(proto::event::What::Summary(proto::Summary {
            value: values,
        })),
    }
}

/// The first record of every file.
pub fn file_version_event(wall_time: f64) -> proto::Event {
    proto::Event {
        wall_time,
        step: 0,
        what: Some(proto::event::What::FileVersion(FILE_VERSION.to_owned())),
    }
}

fn plugin_metadata(plugin_name: &str, content: Vec<u8>) -> proto::SummaryMetadata {
    proto::SummaryMetadata {
        plugin_data: Some(proto::summary_metadata::PluginData {
            plugin_name: plugin_name.to_owned(),
            content,
        }),
        ..Default::default()
    }
}

/// A text summary value: tag `<tag>/text_summary`, plugin `text`, a `DT_STRING` tensor of shape
/// `[1]` (what TensorBoard's text plugin and tbparse's `.text` read).
pub fn text_value(tag: &str, text: &str) -> summary::Value {
    summary::Value {
        tag: format!("{tag}{TEXT_TAG_SUFFIX}"),
        metadata: Some(plugin_metadata("text", Vec::new())),
        value: Some(summary::value::Value::Tensor(proto::TensorProto {
            dtype: proto::data_type::DT_STRING,
            tensor_shape: Some(proto::TensorShapeProto {
                dim: vec![proto::tensor_shape_proto::Dim {
                    size: 1,
                    name: String::new(),
                }],
                unknown_rank: false,
            }),
            string_val: vec![text.as_bytes().to_vec()],
            ..Default::default()
        })),
        ..Default::default()
    }
}

/// An image summary value (PNG bytes as given; no transposing, no re-encoding).
pub fn image_value(tag: &str, width: u32, height: u32, channels: u8, png: &[u8]) -> summary::Value {
    summary::Value {
        tag: tag.to_owned(),
        value: Some(summary::value::Value::Image(summary::Image {
            height: i32::try_from(height).unwrap_or(i32::MAX),
            width: i32::try_from(width).unwrap_or(i32::MAX),
            colorspace: i32::from(channels),
            encoded_image_string: png.to_vec(),
        })),
        ..Default::default()
    }
}

/// A histogram summary value, see [`histogram`].
pub fn histogram_value(tag: &str, values: &[f64]) -> summary::Value {
    summary::Value {
        tag: tag.to_owned(),
        value: Some(summary::value::Value::Histo(histogram(values))),
        ..Default::default()
    }
}

/// Buckets raw values into a [`HistogramProto`](proto::HistogramProto).
///
/// - NaN and ±infinity are left out (they have no place on an axis); `num`, `sum`, `min`, `max`
///   describe the finite values only, and the bucket counts add up to `num`.
/// - Distinct values: [`HISTOGRAM_BUCKETS`] equal-width buckets from `min` to `max`; bucket `i`
///   holds `[e_i, e_{i+1})`, the last one also holds `max`, `bucket_limit[i] = e_{i+1}` (so the
///   last limit is `max`), matching how TensorBoard draws them (left edge of the first bucket is
///   `min`, right edge of the last is `max`).
/// - All values equal: one bucket whose limit is that value.
/// - No finite value: `num = 0` and one empty bucket at 0 (TensorBoard expects at least one).
pub fn histogram(values: &[f64]) -> proto::HistogramProto {
    let mut num = 0usize;
    let mut min = f64::INFINITY;
    let mut max = f64::NEG_INFINITY;
    let mut sum = 0.0;
    let mut sum_squares = 0.0;
    for &v in values.iter().filter(|v| v.is_finite()) {
        num += 1;
        min = min.min(v);
        max = max.max(v);
        sum += v;
        sum_squares += v * v;
    }
    if num == 0 {
        return proto::HistogramProto {
            bucket_limit: vec![0.0],
            bucket: vec![0.0],
            ..Default::default()
        };
    }
    let (bucket_limit, bucket) = if min == max {
        (vec![max], vec![num as f64])
    } else {
        let k = HISTOGRAM_BUCKETS;
        // Halves keep `max - min` finite even for values near ±f64::MAX.
        let half_range = max / 2.0 - min / 2.0;
        let mut counts = vec![0.0f64; k];
        for &v in values.iter().filter(|v| v.is_finite()) {
            let fraction = (v / 2.0 - min / 2.0) / half_range;
            // `as usize` saturates (and maps NaN to 0); clamp puts `max` into the last bucket.
            let i = ((fraction * k as f64) as usize).min(k - 1);
            counts[i] += 1.0;
        }
        let step = half_range / k as f64;
        let mut limits: Vec<f64> = (1..k)
            .map(|i| (min / 2.0 + step * i as f64) * 2.0)
            .collect();
        limits.push(max);
        (limits, counts)
    };
    proto::HistogramProto {
        min,
        max,
        num: num as f64,
        sum,
        sum_squares,
        bucket_limit,
        bucket,
    }
}

/// The value TensorBoard's hparams summaries carry (`metadata.NULL_TENSOR`: empty `DT_FLOAT`).
fn null_tensor() -> proto::TensorProto {
    proto::TensorProto {
        dtype: proto::data_type::DT_FLOAT,
        tensor_shape: Some(proto::TensorShapeProto {
            dim: vec![proto::tensor_shape_proto::Dim {
                size: 0,
                name: String::new(),
            }],
            unknown_rank: false,
        }),
        ..Default::default()
    }
}

/// A `_hparams_/...` summary value carrying `data` (version 0).
pub fn hparams_value(tag: &str, data: proto::h_params_plugin_data::Data) -> summary::Value {
    let content = proto::HParamsPluginData {
        version: 0,
        data: Some(data),
    }
    .encode_to_vec();
    summary::Value {
        tag: tag.to_owned(),
        metadata: Some(plugin_metadata("hparams", content)),
        value: Some(summary::value::Value::Tensor(null_tensor())),
        ..Default::default()
    }
}

/// A parameter as a `google.protobuf.Value` (integers as numbers, like TensorBoard does).
pub fn param_to_value(v: &ParamValue) -> proto::Value {
    use proto::value::Kind;
    let kind = match v {
        ParamValue::Str(s) => Kind::StringValue(s.clone()),
        ParamValue::Int(i) => Kind::NumberValue(*i as f64),
        ParamValue::Float(f) => Kind::NumberValue(*f),
        ParamValue::Bool(b) => Kind::BoolValue(*b),
    };
    proto::Value { kind: Some(kind) }
}

fn param_type(v: &ParamValue) -> i32 {
    use proto::hparam_type::*;
    match v {
        ParamValue::Str(_) => DATA_TYPE_STRING,
        ParamValue::Bool(_) => DATA_TYPE_BOOL,
        ParamValue::Int(_) | ParamValue::Float(_) => DATA_TYPE_FLOAT64,
    }
}

/// `_hparams_/session_start_info` for `params`.
pub fn session_start_value(
    params: &[(String, ParamValue)],
    start_time_secs: f64,
) -> summary::Value {
    let hparams: BTreeMap<String, proto::Value> = params
        .iter()
        .map(|(k, v)| (k.clone(), param_to_value(v)))
        .collect();
    hparams_value(
        HPARAMS_SESSION_START_TAG,
        proto::h_params_plugin_data::Data::SessionStartInfo(proto::SessionStartInfo {
            hparams,
            start_time_secs,
            ..Default::default()
        }),
    )
}

/// `_hparams_/experiment` declaring `params` and the scalar `metric_tags`.
pub fn experiment_value(
    name: &str,
    description: &str,
    time_created_secs: f64,
    params: &[(String, ParamValue)],
    metric_tags: &[String],
) -> summary::Value {
    hparams_value(
        HPARAMS_EXPERIMENT_TAG,
        proto::h_params_plugin_data::Data::Experiment(proto::Experiment {
            name: name.to_owned(),
            description: description.to_owned(),
            user: String::new(),
            time_created_secs,
            hparam_infos: params
                .iter()
                .map(|(k, v)| proto::HParamInfo {
                    name: k.clone(),
                    r#type: param_type(v),
                    ..Default::default()
                })
                .collect(),
            metric_infos: metric_tags
                .iter()
                .map(|tag| proto::MetricInfo {
                    name: Some(proto::MetricName {
                        group: String::new(),
                        tag: tag.clone(),
                    }),
                    ..Default::default()
                })
                .collect(),
        }),
    )
}

/// The hparams session status of a run status.
pub fn session_status(status: RunStatus) -> i32 {
    use proto::session_status::*;
    match status {
        RunStatus::Completed => STATUS_SUCCESS,
        RunStatus::Failed | RunStatus::Killed => STATUS_FAILURE,
        RunStatus::Running => STATUS_RUNNING,
    }
}

/// `_hparams_/session_end_info`.
pub fn session_end_value(status: RunStatus, end_time_secs: f64) -> summary::Value {
    hparams_value(
        HPARAMS_SESSION_END_TAG,
        proto::h_params_plugin_data::Data::SessionEndInfo(proto::SessionEndInfo {
            status: session_status(status),
            end_time_secs,
        }),
    )
}

/// Markdown table of tags, written as a text summary.
pub fn tags_markdown(tags: &[(String, String)]) -> String {
    fn cell(s: &str) -> String {
        s.replace('|', "\\|").replace('\n', " ")
    }
    let mut out = String::from("| tag | value |\n|---|---|\n");
    for (k, v) in tags {
        out.push_str(&format!("| {} | {} |\n", cell(k), cell(v)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_scalar_summary() {
        let s = proto::Summary {
            value: vec![summary::Value {
                tag: "t".into(),
                value: Some(summary::value::Value::SimpleValue(1.0)),
                ..Default::default()
            }],
        };
        assert_eq!(
            s.encode_to_vec(),
            [0x0a, 0x08, 0x0a, 0x01, 0x74, 0x15, 0x00, 0x00, 0x80, 0x3f]
        );
    }

    #[test]
    fn golden_scalar_event_fast_path() {
        let mut buf = Vec::new();
        encode_scalars_event(&mut buf, 0.0, 0, &[Metric::new("t", 1.0)]);
        // Event.summary (field 5, len 10) wrapping the golden Summary above.
        assert_eq!(
            buf,
            [
                0x2a, 0x0a, 0x0a, 0x08, 0x0a, 0x01, 0x74, 0x15, 0x00, 0x00, 0x80, 0x3f
            ]
        );
    }

    #[test]
    fn golden_hparams_session_start() {
        let data = proto::HParamsPluginData {
            version: 0,
            data: Some(proto::h_params_plugin_data::Data::SessionStartInfo(
                proto::SessionStartInfo {
                    hparams: [("lr".to_owned(), param_to_value(&ParamValue::Float(0.5)))]
                        .into_iter()
                        .collect(),
                    ..Default::default()
                },
            )),
        };
        assert_eq!(
            data.encode_to_vec(),
            [
                0x1a, 0x11, 0x0a, 0x0f, 0x0a, 0x02, 0x6c, 0x72, 0x12, 0x09, 0x11, 0x00, 0x00, 0x00,
                0x00, 0x00, 0x00, 0xe0, 0x3f
            ]
        );
    }

    #[test]
    fn golden_hparams_session_end() {
        let data = proto::HParamsPluginData {
            version: 0,
            data: Some(proto::h_params_plugin_data::Data::SessionEndInfo(
                proto::SessionEndInfo {
                    status: session_status(RunStatus::Completed),
                    end_time_secs: 0.0,
                },
            )),
        };
        assert_eq!(data.encode_to_vec(), [0x22, 0x02, 0x08, 0x01]);
    }

    #[test]
    fn session_status_mapping() {
        use proto::session_status::*;
        assert_eq!(session_status(RunStatus::Completed), STATUS_SUCCESS);
        assert_eq!(session_status(RunStatus::Failed), STATUS_FAILURE);
        assert_eq!(session_status(RunStatus::Killed), STATUS_FAILURE);
        assert_eq!(session_status(RunStatus::Running), STATUS_RUNNING);
    }

    fn total(h: &proto::HistogramProto) -> f64 {
        h.bucket.iter().sum()
    }

    #[test]
    fn histogram_equal_width() {
        let values: Vec<f64> = (0..=300).map(f64::from).collect();
        let h = histogram(&values);
        assert_eq!(h.num, 301.0);
        assert_eq!(total(&h), 301.0);
        assert_eq!(h.bucket.len(), HISTOGRAM_BUCKETS);
        assert_eq!(h.bucket_limit.len(), HISTOGRAM_BUCKETS);
        assert_eq!((h.min, h.max), (0.0, 300.0));
        assert_eq!(*h.bucket_limit.last().unwrap(), 300.0);
        assert_eq!(h.bucket_limit[0], 10.0);
        // [0, 10) holds 0..=9; the last bucket [290, 300] holds 290..=300.
        assert_eq!(h.bucket[0], 10.0);
        assert_eq!(h.bucket[29], 11.0);
        assert_eq!(h.sum, (0..=300).sum::<i32>() as f64);
        assert!(h.bucket_limit.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn histogram_edge_cases() {
        let empty = histogram(&[]);
        assert_eq!((empty.num, total(&empty)), (0.0, 0.0));
        assert_eq!(empty.bucket.len(), empty.bucket_limit.len());

        let non_finite = histogram(&[f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
        assert_eq!((non_finite.num, total(&non_finite)), (0.0, 0.0));

        let constant = histogram(&[2.5; 7]);
        assert_eq!(constant.bucket, vec![7.0]);
        assert_eq!(constant.bucket_limit, vec![2.5]);

        let mixed = histogram(&[f64::NAN, 1.0, 2.0, f64::INFINITY]);
        assert_eq!((mixed.num, total(&mixed)), (2.0, 2.0));

        let huge = histogram(&[-f64::MAX, f64::MAX, 0.0]);
        assert_eq!((huge.num, total(&huge)), (3.0, 3.0));
        assert!(huge.bucket_limit.iter().all(|l| l.is_finite()));
        assert_eq!(huge.bucket[0], 1.0);
        assert_eq!(huge.bucket[HISTOGRAM_BUCKETS - 1], 1.0);
    }
}
