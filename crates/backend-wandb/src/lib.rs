//! # exptrack-wandb
//!
//! A [Weights & Biases](https://wandb.ai) backend for exptrack.
//!
//! - **Offline** (the default without an API key, or with `WANDB_MODE=offline`): writes
//!   `wandb/offline-run-YYYYMMDD_HHMMSS-<run id>/run-<run id>.wandb` plus `files/`
//!   (`config.yaml`, `wandb-summary.json`, `wandb-metadata.json`), byte-compatible with
//!   wandb 0.31, so `wandb sync wandb/offline-run-*` uploads it later.
//! - **Online** (an API key is configured, or `WANDB_MODE=online`): creates the run with GraphQL
//!   `UpsertBucket` and streams history and summary through `file_stream`, batched at most every
//!   few seconds, with W&B's retry rules. A local `wandb/run-*/` copy is written as well, so a run
//!   whose upload failed can still be `wandb sync`ed.
//!
//! The W&B run id is the exptrack run id (sanitized), so resuming an experiment continues the same
//! W&B run.
//!
//! A **companion** (`WandbTrackerBuilder::attach_to_run`, e.g. an evaluator in another process)
//! writes into another process's run as wandb's shared mode does for a non-primary writer: its
//! rows carry a step metric (`trainer/global_step`) defined as their x-axis, and the run's
//! config, tags, metadata and exit status stay the owner's; offline it writes its own directory
//! for a shared-mode `wandb sync` ([`WandbTracker::sync_command`]).
//!
//! ## How events map to W&B
//! | exptrack | W&B |
//! |---|---|
//! | `Metrics { step, values }` | one history row per step (`_step`, `_runtime`, `_timestamp` added; consecutive events with the same step are merged into one row until the next flush; metrics of a step logged after a flush form a second row with the same `_step`, so each metric still has one point per step; keys such as `train/loss` stay flat, as with `wandb.log`, and W&B groups them into sections by their prefix). The summary holds each key's latest value. Rows whose step is lower than an earlier one are dropped (W&B steps must increase). |
//! | `Metrics` with `system/...` keys (the system-metrics sampler's) | stats records (the W&B UI's "System" charts; online, `wandb-events.jsonl` lines), with wandb's own names where the meaning is the same (`memory_percent`, `proc.memory.rssMB`, `gpu.<i>.gpu`, `gpu.<i>.memoryAllocated`, `gpu.<i>.memoryAllocatedBytes`, `gpu.<i>.temp`); not history rows (their steps are the sampler's, not training's) and not the summary |
//! | `Params` | config keys (`wandb.config`) |
//! | the experiment's TOML config | config keys, one per top-level table, except `[tracking]` |
//! | `Tags` | run tags `key:value` (or `key` when the value is empty); experiment tags as they are |
//! | `Image` | as `wandb.Image`: the PNG at `files/media/images/<tag>_<step>_<sha256[:20]>.png` (a files record, uploaded by `wandb sync` or directly online) and the history value `{"_type": "image-file", "path", "sha256", "size", "format", "width", "height"}` in the step's row |
//! | `Histogram` | as `wandb.Histogram`: `{"_type": "histogram", "values", "bins"}` (64 equal-width buckets of the finite values) in the step's row |
//! | `Text` | as a one-column `wandb.Table` (`text`): `files/media/table/<tag>_<step>_<sha256[:20]>.table.json` and a `table-file` history value |
//! | `Result` (`set_result`) | a summary key (`wandb.run.summary[key] = value`) |
//! | `Checkpoint` (a commit, by reference) | the summary's `checkpoints` map: `ckpt-<step>` → its manifest (location, step, epoch, files with sizes and digests, metrics, `is_best`) for each checkpoint that exists (a step retention deleted leaves it); `checkpoints/latest` and `checkpoints/best` name the newest and the best (`null` when none is left). A resumed run starts from the checkpoints it reported before. The weights are never uploaded |
//! | `Artifact` | a run file (`files/<name>`, uploaded by `wandb sync` or directly online) |
//! | `Status` / `close` | the exit record: 0 completed, 1 failed, 255 killed |
//!
//! Media share the step rules of metrics: they join the row of their step, and media of a step
//! lower than an earlier one are dropped.
//!
//! Known limit: a flush completes the open row (a flush is a barrier), so values of a step that
//! arrive after that step's row was flushed form a second row with the same `_step`. The online
//! file stream sends it as it is, but `wandb sync` (wandb 0.31) numbers such a row, and every
//! later row, one step higher (checked against the real `wandb sync`). Log a step's metrics and
//! media together (the dispatcher then delivers them in one batch).
//!
//! ## Reading `.wandb` files
//! [`txlog::LogReader`] reads transaction logs (ours or the Python client's), checking every
//! CRC; [`proto`] holds the record types.
//!
//! # Feature flags
//! None.
//!
//! # Example
//! ```
//! use exptrack_core::{Batch, Event, ExperimentMetadata, Metric, RunContext, RunStatus, Tracker};
//! use exptrack_wandb::{Mode, WandbTracker};
//!
//! let dir = std::env::temp_dir().join(format!("exptrack-wandb-doc-{}", std::process::id()));
//! let mut tracker = WandbTracker::builder().mode(Mode::Offline).dir(&dir).project("demo").build()?;
//! let ctx = RunContext {
//!     metadata: ExperimentMetadata::new("demo", "0123456789abcdef"),
//!     config: toml::Table::new(),
//!     run_dir: dir.join("runs"),
//!     resumed: false,
//! };
//! tracker.open(&ctx)?;
//! let events = [Event::Metrics { step: 0, timestamp_ms: 0, values: vec![Metric::new("loss", 0.5)] }];
//! tracker.write(&Batch { first_seq: 0, events: &events })?;
//! tracker.close(RunStatus::Completed)?;
//! if let Some(cmd) = tracker.sync_command() {
//!     println!("upload later with: {cmd}");
//! }
//! # std::fs::remove_dir_all(&dir).ok();
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![warn(missing_debug_implementations, unreachable_pub)]

mod builder;
mod companion;
mod error;
mod events;
mod json;
mod local;
mod media;
mod online;
mod open;
pub mod proto;
mod run;
mod system;
pub mod txlog;

/// Entry points for the fuzz targets in `fuzz/` (not a stable API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
#[path = "fuzz.rs"]
pub mod __fuzz;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Local, Utc};
use exptrack_core::{Batch, EventKind, RunContext, RunStatus, Tracker, TrackerError};

pub use builder::{DEFAULT_BASE_URL, Mode, WandbTrackerBuilder};
pub use companion::DEFAULT_STEP_METRIC;
pub use error::{Error, Result};
pub use events::SUMMARY_CHECKPOINTS;
pub use json::parse_lenient;
pub use online::default_retry;
pub use run::sanitize_run_id;

use local::LocalRun;
use online::{OnlineRun, RunFields};
use proto::{
    ConfigRecord, CpuInfo, EnvironmentRecord, GitRepoRecord, HeaderRecord, KeyValue, MemoryInfo,
    RecordType, RunExitRecord, RunRecord, SummaryRecord, Timestamp, VersionInfo,
};
use run::RunState;

/// The Weights & Biases tracker. Build it with [`WandbTracker::builder`].
#[derive(Debug)]
pub struct WandbTracker {
    settings: WandbTrackerBuilder,
    active: Option<Active>,
    closed: bool,
}

/// Everything about an open run.
#[derive(Debug)]
struct Active {
    run_id: String,
    mode: Mode,
    project: String,
    entity: String,
    state: RunState,
    local: LocalRun,
    online: Option<OnlineRun>,
    /// Sequence number of the last event applied (redelivered events up to it are skipped).
    last_seq: Option<u64>,
    /// The last terminal status seen in a `Status` event.
    status: Option<RunStatus>,
    run_record: RunRecord,
    environment: EnvironmentRecord,
    /// Whether config.yaml / wandb-summary.json need rewriting.
    files_dirty: bool,
    /// Online: files waiting for upload (`(name, local path)`).
    uploads: Vec<(String, PathBuf)>,
    /// Online: config / tags changed and not yet sent.
    run_update_pending: bool,
    /// The exit code decided by `close` once the local log is closed (`Some(None)`: no exit).
    closed_local: Option<Option<i32>>,
    /// When the run started (ms since the epoch): system metrics' `_runtime` counts from it.
    start_ms: i64,
    /// The checkpoints reported so far (what the summary's `checkpoints` map lists).
    checkpoints: exptrack_core::CheckpointSet,
    /// A companion writer of another process's run (`attach_to_run`).
    companion: Option<companion::Companion>,
    /// The step metric rows carry and the metrics defined against it (`step_metric`).
    axis: Option<companion::StepAxis>,
}

impl WandbTracker {
    /// A builder with nothing set (call [`WandbTrackerBuilder::from_env`] to read `WANDB_*`).
    pub fn builder() -> WandbTrackerBuilder {
        WandbTrackerBuilder::default()
    }

    /// `WandbTracker::builder().from_env().build()`.
    pub fn from_env() -> Result<Self> {
        Self::builder().from_env().build()
    }

    pub(crate) fn from_builder(settings: WandbTrackerBuilder) -> Self {
        WandbTracker {
            settings,
            active: None,
            closed: false,
        }
    }

    /// The W&B run id, once the run is open.
    pub fn run_id(&self) -> Option<&str> {
        self.active.as_ref().map(|a| a.run_id.as_str())
    }

    /// The mode the run opened in ([`Mode::Offline`] or [`Mode::Online`]).
    pub fn mode(&self) -> Option<Mode> {
        self.active.as_ref().map(|a| a.mode)
    }

    /// The local run directory (`…/wandb/offline-run-…` or `…/wandb/run-…`), once open.
    pub fn run_dir(&self) -> Option<&Path> {
        self.active.as_ref().map(|a| a.local.dir.as_path())
    }

    /// The `.wandb` transaction log, once open.
    pub fn log_path(&self) -> Option<&Path> {
        self.active.as_ref().map(|a| a.local.log_path.as_path())
    }

    /// The command that uploads this run later (`wandb sync <run dir>`; a companion's is the
    /// shared-mode sync that appends to the owner's run), once open.
    pub fn sync_command(&self) -> Option<String> {
        let a = self.active.as_ref()?;
        Some(match &a.companion {
            Some(c) => c.sync_command(&a.local.dir),
            None => format!(
                "wandb sync {}",
                shell_quote(&a.local.dir.display().to_string())
            ),
        })
    }

    /// The run's URL on the server (online mode).
    pub fn run_url(&self) -> Option<String> {
        let a = self.active.as_ref()?;
        a.online.as_ref()?;
        let base = self
            .settings
            .base_url
            .as_deref()
            .unwrap_or(DEFAULT_BASE_URL);
        let app = base.replace("://api.", "://");
        Some(format!(
            "{}/{}/{}/runs/{}",
            app.trim_end_matches('/'),
            a.entity,
            a.project,
            a.run_id
        ))
    }
}

impl Active {
    /// Writes what is pending locally and (online) sends what is due (everything when `force`).
    fn flush(&mut self, force: bool) -> Result<()> {
        self.flush_local()?;
        self.send_online(force, None)
    }

    /// Completes the open row (a flush is a barrier: readers see every point written before it),
    /// writes summary changes and run files and hands the log to the OS.
    fn flush_local(&mut self) -> Result<()> {
        if let Some(row) = self.state.finish_row() {
            self.emit_rows(vec![row])?;
        }
        let changes = self.state.take_summary_changes();
        if !changes.is_empty() {
            self.local.append(RecordType::Summary(SummaryRecord {
                update: items(&changes),
                remove: Vec::new(),
            }))?;
            if let Some(online) = self.online.as_mut() {
                online.set_summary(self.state.summary_json());
            }
            // Results change the summary without a history row.
            self.files_dirty = true;
        }
        if self.files_dirty {
            self.write_files()?;
        }
        self.local.flush()
    }

    fn send_online(&mut self, force: bool, exit_code: Option<i32>) -> Result<()> {
        let Some(online) = self.online.as_mut() else {
            return Ok(());
        };
        if !(force || online.due()) {
            return Ok(());
        }
        if self.run_update_pending {
            let tags = self.state.tags().to_vec();
            let config = companion::run_config_json(
                self.companion.as_ref(),
                self.axis.as_ref(),
                &self.state,
            );
            online.update_run(Some(&config), Some(&tags))?;
            self.run_update_pending = false;
        }
        if !self.uploads.is_empty() {
            online.upload(&self.uploads)?;
            self.uploads.clear();
        }
        online.send(exit_code)
    }

    fn write_files(&mut self) -> Result<()> {
        self.local.write_file(
            "config.yaml",
            local::config_yaml(self.state.config()).as_bytes(),
        )?;
        self.local
            .write_file("wandb-summary.json", self.state.summary_json().as_bytes())?;
        self.files_dirty = false;
        Ok(())
    }

    fn metadata_json(&self) -> String {
        let e = &self.environment;
        let mut m = serde_json::Map::new();
        let mut put = |k: &str, v: serde_json::Value| {
            if !(v.is_null() || v.as_str() == Some("")) {
                m.insert(k.to_owned(), v);
            }
        };
        put("os", e.os.clone().into());
        put(
            "startedAt",
            e.started_at
                .as_ref()
                .and_then(|t| DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.max(0) as u32))
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
                .into(),
        );
        put("program", e.program.clone().into());
        put("root", e.root.clone().into());
        put("host", e.host.clone().into());
        put("executable", e.executable.clone().into());
        if e.cpu_count_logical > 0 {
            put("cpu_count_logical", e.cpu_count_logical.into());
        }
        if let Some(mem) = &e.memory {
            put(
                "memory",
                serde_json::json!({"total": mem.total.to_string()}),
            );
        }
        if let Some(cpu) = &e.cpu {
            put("cpu", serde_json::json!({"model": cpu.model}));
        }
        if let Some(g) = &e.git {
            put("git", serde_json::json!({"commit": g.commit}));
        }
        serde_json::to_string_pretty(&serde_json::Value::Object(m)).unwrap_or_default()
    }

    fn close(&mut self, status: RunStatus) -> Result<()> {
        let exit_code = match self.closed_local {
            Some(code) => code,
            None => {
                let status = if status.is_terminal() {
                    Some(status)
                } else {
                    self.status
                };
                let runtime = self.state.runtime_secs(exptrack_core::now_ms());
                let exit_code = status.and_then(run::exit_code);
                // A companion's summary holds only its own keys (the runtime is the owner's).
                if exit_code.is_some() && self.companion.is_none() {
                    // As the Python client does: the run's wall time under `_wandb.runtime`.
                    self.state
                        .set_summary("_wandb", format!("{{\"runtime\":{}}}", runtime as i64));
                }
                // Local part first; the server part may fail and be retried.
                if let Some(row) = self.state.finish_row() {
                    self.emit_rows(vec![row])?;
                }
                self.flush_local()?;
                if let Some(code) = exit_code {
                    self.local.append(RecordType::Exit(RunExitRecord {
                        exit_code: code,
                        runtime: i32::try_from(runtime as i64).unwrap_or(i32::MAX),
                    }))?;
                }
                self.local.close()?;
                self.closed_local = Some(exit_code);
                if self.online.is_some() && self.companion.is_none() {
                    for n in ["wandb-summary.json", "config.yaml", "wandb-metadata.json"] {
                        self.uploads
                            .push((n.to_owned(), self.local.files_dir.join(n)));
                    }
                }
                exit_code
            }
        };
        // Without an exit code (the run did not end) the stream stays open for a resume; a
        // companion never sets the owner's final state.
        self.send_online(true, exit_code.filter(|_| self.companion.is_none()))
    }
}

/// Replays a stored exptrack run (`<runs>/<experiment_id>/<run_id>/`) into W&B through `tracker`,
/// from the W&B cursor in the run's `cursors.json`; a thin wrapper over
/// [`exptrack_core::store::sync_run`]. In offline mode this writes a `wandb/offline-run-*`
/// directory ready for `wandb sync`; online it uploads directly.
pub fn sync_run(
    run_dir: &Path,
    tracker: &mut WandbTracker,
) -> exptrack_core::Result<exptrack_core::store::SyncReport> {
    exptrack_core::store::sync_run(run_dir, tracker)
}

fn items(kv: &[(String, String)]) -> Vec<KeyValue> {
    kv.iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            nested_key: Vec::new(),
            value_json: v.clone(),
        })
        .collect()
}

/// W&B project names may not contain `/ \ # ? % :`; those (and whitespace) become `-`.
fn sanitize_project(name: &str) -> String {
    let p: String = name
        .trim()
        .chars()
        .map(|c| {
            if "/\\#?%:".contains(c) || c.is_whitespace() {
                '-'
            } else {
                c
            }
        })
        .take(128)
        .collect();
    if p.is_empty() {
        "uncategorized".to_owned()
    } else {
        p
    }
}

fn shell_quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-+:@".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

impl Tracker for WandbTracker {
    fn name(&self) -> &str {
        "wandb"
    }

    fn supports(&self, kind: EventKind) -> bool {
        if self.settings.mode == Some(Mode::Disabled) {
            return false;
        }
        // A companion leaves the run's config and tags to the owner.
        if self.settings.attach.is_some() && matches!(kind, EventKind::Params | EventKind::Tags) {
            return false;
        }
        matches!(
            kind,
            EventKind::Metrics
                | EventKind::Params
                | EventKind::Tags
                | EventKind::Text
                | EventKind::Image
                | EventKind::Histogram
                | EventKind::Artifact
                | EventKind::Status
                | EventKind::Result
                | EventKind::Checkpoint
        )
    }

    fn open(&mut self, ctx: &RunContext) -> Result<(), TrackerError> {
        if self.closed {
            return Err(TrackerError::permanent("W&B: the run was already closed"));
        }
        self.open_run(ctx).map_err(TrackerError::from)
    }

    fn write(&mut self, batch: &Batch<'_>) -> Result<(), TrackerError> {
        let Some(active) = self.active.as_mut() else {
            // Disabled mode, or not opened: nothing to do.
            return Ok(());
        };
        let mut problems = Vec::new();
        for (seq, event) in batch.iter_seq() {
            if active.last_seq.is_some_and(|last| seq <= last) {
                continue; // redelivered after a transient failure: already applied
            }
            active.apply(event, &mut problems)?;
            active.last_seq = Some(seq);
        }
        if active.online.as_ref().is_some_and(OnlineRun::due) {
            active.flush(false)?;
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(TrackerError::permanent(format!(
                "W&B: {}",
                problems.join("; ")
            )))
        }
    }

    fn flush(&mut self) -> Result<(), TrackerError> {
        match self.active.as_mut() {
            Some(active) => active.flush(true).map_err(TrackerError::from),
            None => Ok(()),
        }
    }

    fn close(&mut self, status: RunStatus) -> Result<(), TrackerError> {
        if self.closed {
            return Ok(());
        }
        let result = match self.active.as_mut() {
            Some(active) => active.close(status),
            None => Ok(()),
        };
        if result.as_ref().is_ok() || !result.as_ref().is_err_and(Error::is_transient) {
            self.closed = true;
        }
        result.map_err(TrackerError::from)
    }
}
