//! Hand-written [prost] messages for the subset of wandb's `wandb_internal.Record` that exptrack
//! writes and reads.
//!
//! Field numbers are those of `wandb/proto/wandb_internal.proto` in wandb 0.31 (checked against the
//! descriptors shipped in the `wandb==0.31.0` Python package). Fields and record types not listed
//! here are skipped when decoding files written by the Python client.

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    /// Seconds since the Unix epoch.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Nanoseconds within the second.
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

impl Timestamp {
    /// A timestamp from milliseconds since the Unix epoch.
    pub fn from_millis(ms: i64) -> Self {
        Timestamp {
            seconds: ms.div_euclid(1000),
            // In 0..1_000_000_000, so it fits an i32.
            nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
        }
    }
}

/// One entry of the transaction log.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Record {
    /// Sequence number of the record (1-based).
    #[prost(int64, tag = "1")]
    pub num: i64,
    /// What the record is.
    #[prost(
        oneof = "RecordType",
        tags = "2, 3, 5, 6, 7, 12, 17, 18, 20, 21, 22, 26"
    )]
    pub record_type: Option<RecordType>,
    /// Optional record id.
    #[prost(string, tag = "19")]
    pub uuid: String,
}

/// The payload of a [`Record`] (the subset exptrack knows).
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RecordType {
    /// One row of history.
    #[prost(message, tag = "2")]
    History(HistoryRecord),
    /// Summary updates.
    #[prost(message, tag = "3")]
    Summary(SummaryRecord),
    /// Config updates.
    #[prost(message, tag = "5")]
    Config(ConfigRecord),
    /// Files to upload from the run's `files/` directory.
    #[prost(message, tag = "6")]
    Files(FilesRecord),
    /// System metrics (what the W&B UI's system charts show).
    #[prost(message, tag = "7")]
    Stats(StatsRecord),
    /// A metric definition (`run.define_metric`): its x-axis, visibility, summary.
    #[prost(message, tag = "12")]
    Metric(MetricRecord),
    /// The run's identity (the first one starts the run; later ones update it).
    #[prost(message, tag = "17")]
    Run(RunRecord),
    /// The run's end.
    #[prost(message, tag = "18")]
    Exit(RunExitRecord),
    /// Final record (empty).
    #[prost(message, tag = "20")]
    Final(FinalRecord),
    /// Version header.
    #[prost(message, tag = "21")]
    Header(HeaderRecord),
    /// Footer (empty).
    #[prost(message, tag = "22")]
    Footer(FooterRecord),
    /// Machine and program the run executed on.
    #[prost(message, tag = "26")]
    Environment(EnvironmentRecord),
}

impl RecordType {
    /// The record type's name as wandb's `leet inspect --json` prints it (`"history"`, `"run"`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            RecordType::History(_) => "history",
            RecordType::Summary(_) => "summary",
            RecordType::Config(_) => "config",
            RecordType::Files(_) => "files",
            RecordType::Stats(_) => "stats",
            RecordType::Metric(_) => "metric",
            RecordType::Run(_) => "run",
            RecordType::Exit(_) => "exit",
            RecordType::Final(_) => "final",
            RecordType::Header(_) => "header",
            RecordType::Footer(_) => "footer",
            RecordType::Environment(_) => "environment",
        }
    }
}

/// `StatsRecord`: one sample of system metrics.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsRecord {
    /// `StatsType`; only `SYSTEM` (0) exists.
    #[prost(int32, tag = "1")]
    pub stats_type: i32,
    /// When the sample was taken.
    #[prost(message, optional, tag = "2")]
    pub timestamp: Option<Timestamp>,
    /// The sampled values.
    #[prost(message, repeated, tag = "3")]
    pub item: Vec<StatsItem>,
}

/// `StatsItem`: one system metric (W&B's own names: `cpu`, `memory_percent`,
/// `proc.memory.rssMB`, `gpu.0.gpu`, ...).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StatsItem {
    /// The metric's name.
    #[prost(string, tag = "1")]
    pub key: String,
    /// Its value as JSON.
    #[prost(string, tag = "16")]
    pub value_json: String,
}

/// `HeaderRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HeaderRecord {
    /// Who wrote the file.
    #[prost(message, optional, tag = "1")]
    pub version_info: Option<VersionInfo>,
}

/// `VersionInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct VersionInfo {
    /// The writer's name and version.
    #[prost(string, tag = "1")]
    pub producer: String,
    /// The oldest reader version that understands the file.
    #[prost(string, tag = "2")]
    pub min_consumer: String,
}

/// `RunRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunRecord {
    /// Run id (the run's name in URLs).
    #[prost(string, tag = "1")]
    pub run_id: String,
    /// Entity (user or team); empty for the default entity.
    #[prost(string, tag = "2")]
    pub entity: String,
    /// Project.
    #[prost(string, tag = "3")]
    pub project: String,
    /// Initial config.
    #[prost(message, optional, tag = "4")]
    pub config: Option<ConfigRecord>,
    /// Run group.
    #[prost(string, tag = "6")]
    pub run_group: String,
    /// Job type.
    #[prost(string, tag = "7")]
    pub job_type: String,
    /// Display name.
    #[prost(string, tag = "8")]
    pub display_name: String,
    /// Notes (description).
    #[prost(string, tag = "9")]
    pub notes: String,
    /// Tags.
    #[prost(string, repeated, tag = "10")]
    pub tags: Vec<String>,
    /// Host name.
    #[prost(string, tag = "13")]
    pub host: String,
    /// Start time.
    #[prost(message, optional, tag = "17")]
    pub start_time: Option<Timestamp>,
    /// Whether the run continues an earlier one.
    #[prost(bool, tag = "18")]
    pub resumed: bool,
    /// Seconds the run had already run before this segment.
    #[prost(int32, tag = "20")]
    pub runtime: i32,
    /// Git provenance.
    #[prost(message, optional, tag = "21")]
    pub git: Option<GitRepoRecord>,
    /// The writer resumes an existing run (`wandb.init(resume=...)`): `wandb sync` then asks the
    /// server for the run's state and appends (history after its last line, `_step` after its
    /// last step, config merged) instead of starting it over.
    #[prost(bool, tag = "24")]
    pub resume: bool,
}

/// `MetricRecord`: a metric definition, as `run.define_metric(name, step_metric=...)` writes it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricRecord {
    /// The metric's name (empty for a glob definition).
    #[prost(string, tag = "1")]
    pub name: String,
    /// A glob such as `eval/*` (empty for a named metric).
    #[prost(string, tag = "2")]
    pub glob_name: String,
    /// The metric used as this one's x-axis.
    #[prost(string, tag = "4")]
    pub step_metric: String,
    /// Options.
    #[prost(message, optional, tag = "6")]
    pub options: Option<MetricOptions>,
}

/// `MetricOptions`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricOptions {
    /// Log the step metric's last value with every row of this metric.
    #[prost(bool, tag = "1")]
    pub step_sync: bool,
    /// Hidden from the automatic charts.
    #[prost(bool, tag = "2")]
    pub hidden: bool,
    /// Defined by the user (not only expanded from a glob).
    #[prost(bool, tag = "3")]
    pub defined: bool,
}

/// `GitRepoRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct GitRepoRecord {
    /// Remote URL.
    #[prost(string, tag = "1")]
    pub remote_url: String,
    /// Commit hash.
    #[prost(string, tag = "2")]
    pub commit: String,
}

/// `ConfigRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ConfigRecord {
    /// Keys set.
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<KeyValue>,
    /// Keys removed.
    #[prost(message, repeated, tag = "2")]
    pub remove: Vec<KeyValue>,
}

/// `ConfigItem`, `SummaryItem` and `HistoryItem` share these fields (the typed value fields
/// 3–8 of `HistoryItem` are not used: wandb reads `value_json`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    /// A flat key (used when `nested_key` is empty).
    #[prost(string, tag = "1")]
    pub key: String,
    /// A key path; `["a", "b"]` is `{"a": {"b": value}}`.
    #[prost(string, repeated, tag = "2")]
    pub nested_key: Vec<String>,
    /// The value as JSON (`NaN`, `Infinity`, `-Infinity` allowed).
    #[prost(string, tag = "16")]
    pub value_json: String,
}

impl KeyValue {
    /// The item's key path, whichever of `key` / `nested_key` holds it.
    pub fn path(&self) -> Vec<&str> {
        if self.nested_key.is_empty() {
            vec![self.key.as_str()]
        } else {
            self.nested_key.iter().map(String::as_str).collect()
        }
    }
}

/// `HistoryRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryRecord {
    /// The row's values, including `_step`, `_runtime` and `_timestamp`.
    #[prost(message, repeated, tag = "1")]
    pub item: Vec<KeyValue>,
    /// The step (informational; `_step` in `item` is what sync uses).
    #[prost(message, optional, tag = "2")]
    pub step: Option<HistoryStep>,
}

/// `HistoryStep`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HistoryStep {
    /// Step number.
    #[prost(int64, tag = "1")]
    pub num: i64,
}

/// `SummaryRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SummaryRecord {
    /// Keys set.
    #[prost(message, repeated, tag = "1")]
    pub update: Vec<KeyValue>,
    /// Keys removed.
    #[prost(message, repeated, tag = "2")]
    pub remove: Vec<KeyValue>,
}

/// `FilesRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilesRecord {
    /// Files (paths relative to the run's `files/` directory).
    #[prost(message, repeated, tag = "1")]
    pub files: Vec<FilesItem>,
}

/// `FilesItem`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct FilesItem {
    /// Path relative to `files/`, with `/` separators.
    #[prost(string, tag = "1")]
    pub path: String,
    /// When to upload: 0 NOW, 1 END, 2 LIVE.
    #[prost(int32, tag = "2")]
    pub policy: i32,
    /// 0 OTHER, 1 WANDB, 2 MEDIA, 3 ARTIFACT.
    #[prost(int32, tag = "3")]
    pub r#type: i32,
}

/// `FilesItem.PolicyType.NOW`: upload as soon as possible.
pub const POLICY_NOW: i32 = 0;
/// `FilesItem.PolicyType.END`: upload when the run ends.
pub const POLICY_END: i32 = 1;
/// `FilesItem.FileType.OTHER`.
pub const FILE_TYPE_OTHER: i32 = 0;
/// `FilesItem.FileType.MEDIA`.
pub const FILE_TYPE_MEDIA: i32 = 2;

/// `RunExitRecord`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RunExitRecord {
    /// 0 for success.
    #[prost(int32, tag = "1")]
    pub exit_code: i32,
    /// Run time in seconds.
    #[prost(int32, tag = "2")]
    pub runtime: i32,
}

/// `FinalRecord` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FinalRecord {}

/// `FooterRecord` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct FooterRecord {}

/// `EnvironmentRecord` (the subset exptrack fills in).
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvironmentRecord {
    /// Operating system.
    #[prost(string, tag = "1")]
    pub os: String,
    /// When the program started.
    #[prost(message, optional, tag = "3")]
    pub started_at: Option<Timestamp>,
    /// Program name.
    #[prost(string, tag = "6")]
    pub program: String,
    /// Git provenance.
    #[prost(message, optional, tag = "9")]
    pub git: Option<GitRepoRecord>,
    /// Working directory.
    #[prost(string, tag = "11")]
    pub root: String,
    /// Host name.
    #[prost(string, tag = "12")]
    pub host: String,
    /// Executable path.
    #[prost(string, tag = "14")]
    pub executable: String,
    /// Logical CPU count.
    #[prost(uint32, tag = "17")]
    pub cpu_count_logical: u32,
    /// Memory.
    #[prost(message, optional, tag = "21")]
    pub memory: Option<MemoryInfo>,
    /// CPU.
    #[prost(message, optional, tag = "22")]
    pub cpu: Option<CpuInfo>,
    /// Identifies the writing process.
    #[prost(string, tag = "199")]
    pub writer_id: String,
}

/// `MemoryInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MemoryInfo {
    /// Total bytes.
    #[prost(uint64, tag = "1")]
    pub total: u64,
}

/// `CpuInfo`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CpuInfo {
    /// Physical cores.
    #[prost(uint32, tag = "1")]
    pub count: u32,
    /// Logical cores.
    #[prost(uint32, tag = "2")]
    pub count_logical: u32,
    /// Model name.
    #[prost(string, tag = "3")]
    pub model: String,
}
