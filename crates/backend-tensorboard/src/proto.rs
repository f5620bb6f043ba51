//! Hand-written protobuf messages of the TensorBoard event format (a subset of TensorFlow's
//! `event.proto`, `summary.proto`, `tensor.proto`, `tensor_shape.proto`, `histogram.proto` and
//! TensorBoard's `plugins/hparams/*.proto`), declared with `prost` derive so that no `protoc` is
//! needed at build time.
//!
//! Field numbers follow the upstream `.proto` files (tensorboard 2.21). Fields this crate never
//! writes are left out; `prost` skips unknown fields when decoding, so files written by other
//! tools still decode.

use std::collections::BTreeMap;

/// `tensorflow.Event`: one record of an event file.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Event {
    /// Seconds since the Unix epoch.
    #[prost(double, tag = "1")]
    pub wall_time: f64,
    /// Global step.
    #[prost(int64, tag = "2")]
    pub step: i64,
    /// The payload.
    #[prost(oneof = "event::What", tags = "3, 4, 5")]
    pub what: Option<event::What>,
}

/// Nested types of [`Event`].
pub mod event {
    /// The payload of an [`Event`](super::Event).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// File format version, `brain.Event:2`; the first record of every file.
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// A serialized `GraphDef` (never written by this crate).
        #[prost(bytes = "vec", tag = "4")]
        GraphDef(Vec<u8>),
        /// Summary values.
        #[prost(message, tag = "5")]
        Summary(super::Summary),
    }
}

/// `tensorflow.Summary`: a set of tagged values recorded at one step.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Summary {
    /// The values.
    #[prost(message, repeated, tag = "1")]
    pub value: Vec<summary::Value>,
}

/// Nested types of [`Summary`].
pub mod summary {
    /// `tensorflow.Summary.Image`: an encoded image.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Image {
        /// Height in pixels.
        #[prost(int32, tag = "1")]
        pub height: i32,
        /// Width in pixels.
        #[prost(int32, tag = "2")]
        pub width: i32,
        /// Number of channels (1 grey, 2 grey+alpha, 3 RGB, 4 RGBA).
        #[prost(int32, tag = "3")]
        pub colorspace: i32,
        /// The encoded image (PNG).
        #[prost(bytes = "vec", tag = "4")]
        pub encoded_image_string: Vec<u8>,
    }

    /// `tensorflow.Summary.Value`: one tagged value.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The tag (series name).
        #[prost(string, tag = "1")]
        pub tag: String,
        /// Legacy node name (unused).
        #[prost(string, tag = "7")]
        pub node_name: String,
        /// Plugin metadata (which dashboard interprets a tensor value).
        #[prost(message, optional, tag = "9")]
        pub metadata: Option<super::SummaryMetadata>,
        /// The value itself.
        #[prost(oneof = "value::Value", tags = "2, 4, 5, 8")]
        pub value: Option<value::Value>,
    }

    /// Nested types of [`Value`].
    pub mod value {
        /// The payload of a summary [`Value`](super::Value).
        #[derive(Clone, PartialEq, prost::Oneof)]
        pub enum Value {
            /// A scalar (what `EventAccumulator.Scalars` and tbparse's `.scalars` read).
            #[prost(float, tag = "2")]
            SimpleValue(f32),
            /// An image.
            #[prost(message, tag = "4")]
            Image(super::Image),
            /// A histogram.
            #[prost(message, tag = "5")]
            Histo(super::super::HistogramProto),
            /// A tensor (text, hparams, tensor-form scalars).
            #[prost(message, tag = "8")]
            Tensor(super::super::TensorProto),
        }
    }
}

/// `tensorflow.SummaryMetadata`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryMetadata {
    /// The plugin that owns the value.
    #[prost(message, optional, tag = "1")]
    pub plugin_data: Option<summary_metadata::PluginData>,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Longer description.
    #[prost(string, tag = "3")]
    pub summary_description: String,
    /// Data class (see [`data_class`]).
    #[prost(int32, tag = "4")]
    pub data_class: i32,
}

/// Nested types of [`SummaryMetadata`].
pub mod summary_metadata {
    /// `tensorflow.SummaryMetadata.PluginData`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PluginData {
        /// Plugin name, e.g. `text` or `hparams`.
        #[prost(string, tag = "1")]
        pub plugin_name: String,
        /// Plugin-specific content.
        #[prost(bytes = "vec", tag = "2")]
        pub content: Vec<u8>,
    }
}

/// Values of [`SummaryMetadata::data_class`].
pub mod data_class {
    /// Unknown (legacy values).
    pub const UNKNOWN: i32 = 0;
    /// Scalar time series.
    pub const SCALAR: i32 = 1;
    /// Tensor time series.
    pub const TENSOR: i32 = 2;
    /// Sequences of blobs (images, audio).
    pub const BLOB_SEQUENCE: i32 = 3;
}

/// `tensorflow.HistogramProto`: bucket `i` counts values in `(bucket_limit[i-1], bucket_limit[i]]`
/// (the first bucket starts at `min`, the last ends at `max`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistogramProto {
    /// Smallest value.
    #[prost(double, tag = "1")]
    pub min: f64,
    /// Largest value.
    #[prost(double, tag = "2")]
    pub max: f64,
    /// Number of values.
    #[prost(double, tag = "3")]
    pub num: f64,
    /// Sum of the values.
    #[prost(double, tag = "4")]
    pub sum: f64,
    /// Sum of the squared values.
    #[prost(double, tag = "5")]
    pub sum_squares: f64,
    /// Right edge of each bucket.
    #[prost(double, repeated, tag = "6")]
    pub bucket_limit: Vec<f64>,
    /// Count in each bucket.
    #[prost(double, repeated, tag = "7")]
    pub bucket: Vec<f64>,
}

/// `tensorflow.TensorProto` (the fields this crate uses).
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorProto {
    /// Element type (see [`data_type`]).
    #[prost(int32, tag = "1")]
    pub dtype: i32,
    /// Shape.
    #[prost(message, optional, tag = "2")]
    pub tensor_shape: Option<TensorShapeProto>,
    /// Version (unused).
    #[prost(int32, tag = "3")]
    pub version_number: i32,
    /// Packed little-endian content (alternative to the typed fields).
    #[prost(bytes = "vec", tag = "4")]
    pub tensor_content: Vec<u8>,
    /// `DT_FLOAT` values.
    #[prost(float, repeated, tag = "5")]
    pub float_val: Vec<f32>,
    /// `DT_DOUBLE` values.
    #[prost(double, repeated, tag = "6")]
    pub double_val: Vec<f64>,
    /// `DT_INT32` values.
    #[prost(int32, repeated, tag = "7")]
    pub int_val: Vec<i32>,
    /// `DT_STRING` values.
    #[prost(bytes = "vec", repeated, tag = "8")]
    pub string_val: Vec<Vec<u8>>,
    /// `DT_INT64` values.
    #[prost(int64, repeated, tag = "10")]
    pub int64_val: Vec<i64>,
    /// `DT_BOOL` values.
    #[prost(bool, repeated, tag = "11")]
    pub bool_val: Vec<bool>,
}

/// Values of [`TensorProto::dtype`].
pub mod data_type {
    /// 32-bit float.
    pub const DT_FLOAT: i32 = 1;
    /// 64-bit float.
    pub const DT_DOUBLE: i32 = 2;
    /// 32-bit integer.
    pub const DT_INT32: i32 = 3;
    /// Byte string.
    pub const DT_STRING: i32 = 7;
    /// 64-bit integer.
    pub const DT_INT64: i32 = 9;
    /// Boolean.
    pub const DT_BOOL: i32 = 10;
}

/// `tensorflow.TensorShapeProto`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct TensorShapeProto {
    /// Dimensions, outermost first.
    #[prost(message, repeated, tag = "2")]
    pub dim: Vec<tensor_shape_proto::Dim>,
    /// Whether the rank is unknown.
    #[prost(bool, tag = "3")]
    pub unknown_rank: bool,
}

/// Nested types of [`TensorShapeProto`].
pub mod tensor_shape_proto {
    /// One dimension.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dim {
        /// Size.
        #[prost(int64, tag = "1")]
        pub size: i64,
        /// Optional name.
        #[prost(string, tag = "2")]
        pub name: String,
    }
}

/// `tensorboard.hparams.HParamsPluginData`: the content of the `_hparams_/...` summaries.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamsPluginData {
    /// Must be 0.
    #[prost(int32, tag = "1")]
    pub version: i32,
    /// Which of the three records this is.
    #[prost(oneof = "h_params_plugin_data::Data", tags = "2, 3, 4")]
    pub data: Option<h_params_plugin_data::Data>,
}

/// Nested types of [`HParamsPluginData`].
pub mod h_params_plugin_data {
    /// The payload of [`HParamsPluginData`](super::HParamsPluginData).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Data {
        /// `_hparams_/experiment`.
        #[prost(message, tag = "2")]
        Experiment(super::Experiment),
        /// `_hparams_/session_start_info`.
        #[prost(message, tag = "3")]
        SessionStartInfo(super::SessionStartInfo),
        /// `_hparams_/session_end_info`.
        #[prost(message, tag = "4")]
        SessionEndInfo(super::SessionEndInfo),
    }
}

/// `tensorboard.hparams.Experiment`: the hyperparameters and metrics of the HParams dashboard.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Experiment {
    /// Name.
    #[prost(string, tag = "6")]
    pub name: String,
    /// Description.
    #[prost(string, tag = "1")]
    pub description: String,
    /// User.
    #[prost(string, tag = "2")]
    pub user: String,
    /// Creation time, seconds since the epoch.
    #[prost(double, tag = "3")]
    pub time_created_secs: f64,
    /// The hyperparameters.
    #[prost(message, repeated, tag = "4")]
    pub hparam_infos: Vec<HParamInfo>,
    /// The metrics.
    #[prost(message, repeated, tag = "5")]
    pub metric_infos: Vec<MetricInfo>,
}

/// `tensorboard.hparams.HParamInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HParamInfo {
    /// Name (key in [`SessionStartInfo::hparams`]).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Display name.
    #[prost(string, tag = "2")]
    pub display_name: String,
    /// Description.
    #[prost(string, tag = "3")]
    pub description: String,
    /// Type (see [`hparam_type`]).
    #[prost(int32, tag = "4")]
    pub r#type: i32,
    /// Domain.
    #[prost(oneof = "h_param_info::Domain", tags = "5, 6")]
    pub domain: Option<h_param_info::Domain>,
    /// Whether values differ between sessions.
    #[prost(bool, tag = "7")]
    pub differs: bool,
}

/// Nested types of [`HParamInfo`].
pub mod h_param_info {
    /// The domain of a hyperparameter.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Domain {
        /// A discrete set of values.
        #[prost(message, tag = "5")]
        DomainDiscrete(super::ListValue),
        /// A real interval.
        #[prost(message, tag = "6")]
        DomainInterval(super::Interval),
    }
}

/// Values of [`HParamInfo::type`](HParamInfo).
pub mod hparam_type {
    /// Unset.
    pub const DATA_TYPE_UNSET: i32 = 0;
    /// String.
    pub const DATA_TYPE_STRING: i32 = 1;
    /// Boolean.
    pub const DATA_TYPE_BOOL: i32 = 2;
    /// 64-bit float (also used for integers).
    pub const DATA_TYPE_FLOAT64: i32 = 3;
}

/// `tensorboard.hparams.Interval`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Interval {
    /// Lower bound.
    #[prost(double, tag = "1")]
    pub min_value: f64,
    /// Upper bound.
    #[prost(double, tag = "2")]
    pub max_value: f64,
}

/// `tensorboard.hparams.MetricName`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricName {
    /// Group (the run sub-directory relative to the session; empty for the session itself).
    #[prost(string, tag = "1")]
    pub group: String,
    /// The scalar tag.
    #[prost(string, tag = "2")]
    pub tag: String,
}

/// `tensorboard.hparams.MetricInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricInfo {
    /// Which scalar series.
    #[prost(message, optional, tag = "1")]
    pub name: Option<MetricName>,
    /// Display name.
    #[prost(string, tag = "3")]
    pub display_name: String,
    /// Description.
    #[prost(string, tag = "4")]
    pub description: String,
    /// Dataset type (0 unknown, 1 training, 2 validation).
    #[prost(int32, tag = "5")]
    pub dataset_type: i32,
}

/// `tensorboard.hparams.SessionStartInfo`: one session's hyperparameter values.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionStartInfo {
    /// Hyperparameter values by name.
    #[prost(btree_map = "string, message", tag = "1")]
    pub hparams: BTreeMap<String, Value>,
    /// Model URI.
    #[prost(string, tag = "2")]
    pub model_uri: String,
    /// Monitoring URL.
    #[prost(string, tag = "3")]
    pub monitor_url: String,
    /// Session group name.
    #[prost(string, tag = "4")]
    pub group_name: String,
    /// Start time, seconds since the epoch.
    #[prost(double, tag = "5")]
    pub start_time_secs: f64,
}

/// `tensorboard.hparams.SessionEndInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SessionEndInfo {
    /// Final status (see [`session_status`]).
    #[prost(int32, tag = "1")]
    pub status: i32,
    /// End time, seconds since the epoch.
    #[prost(double, tag = "2")]
    pub end_time_secs: f64,
}

/// Values of [`SessionEndInfo::status`].
pub mod session_status {
    /// Unknown.
    pub const STATUS_UNKNOWN: i32 = 0;
    /// Finished successfully.
    pub const STATUS_SUCCESS: i32 = 1;
    /// Failed.
    pub const STATUS_FAILURE: i32 = 2;
    /// Still running.
    pub const STATUS_RUNNING: i32 = 3;
}

/// `google.protobuf.Value` (without `struct_value`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct Value {
    /// The value.
    #[prost(oneof = "value::Kind", tags = "1, 2, 3, 4, 6")]
    pub kind: Option<value::Kind>,
}

/// Nested types of [`Value`].
pub mod value {
    /// The kind of a [`Value`](super::Value).
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// Null.
        #[prost(int32, tag = "1")]
        NullValue(i32),
        /// A number.
        #[prost(double, tag = "2")]
        NumberValue(f64),
        /// A string.
        #[prost(string, tag = "3")]
        StringValue(String),
        /// A boolean.
        #[prost(bool, tag = "4")]
        BoolValue(bool),
        /// A list.
        #[prost(message, tag = "6")]
        ListValue(super::ListValue),
    }
}

/// `google.protobuf.ListValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ListValue {
    /// The elements.
    #[prost(message, repeated, tag = "1")]
    pub values: Vec<Value>,
}
