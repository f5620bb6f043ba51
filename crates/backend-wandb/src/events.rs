//! How each event becomes W&B records: history rows (metrics and media, with their files),
//! stats records (system metrics), config and tags, run files, the summary (results and the
//! checkpoints that exist).

use exptrack_core::{CheckpointReport, Event};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::proto::{self, ConfigRecord, FilesItem, FilesRecord, RecordType, RunRecord};
use crate::run::Row;
use crate::{Active, items, json, media, system};

/// The summary key holding the checkpoints that exist: `{name: manifest}`.
pub const SUMMARY_CHECKPOINTS: &str = "checkpoints";
const SUMMARY_LATEST: &str = "checkpoints/latest";
const SUMMARY_BEST: &str = "checkpoints/best";

impl Active {
    /// Applies one event, writing the records it produces.
    pub(super) fn apply(&mut self, event: &Event, problems: &mut Vec<String>) -> Result<()> {
        match event {
            Event::Artifact { path, name, .. } => {
                if !path.is_file() {
                    problems.push(format!(
                        "artifact {name:?}: {} is not a file",
                        path.display()
                    ));
                    return Ok(());
                }
                match self.local.add_file(path, name) {
                    Ok(rel) => {
                        self.local.append(RecordType::Files(FilesRecord {
                            files: vec![FilesItem {
                                path: rel.clone(),
                                policy: proto::POLICY_NOW,
                                r#type: proto::FILE_TYPE_OTHER,
                            }],
                        }))?;
                        if self.online.is_some() {
                            self.uploads
                                .push((rel.clone(), self.local.files_dir.join(&rel)));
                        }
                    }
                    Err(e @ Error::Config(_)) => problems.push(e.to_string()),
                    Err(e) => return Err(e),
                }
            }
            Event::Status { status, .. } => {
                if status.is_terminal() {
                    self.status = Some(*status);
                }
            }
            Event::Image {
                step,
                timestamp_ms,
                tag,
                width,
                height,
                png,
                ..
            } => {
                let file = media::image(tag, *step, png, *width, *height);
                self.log_media(
                    *step,
                    *timestamp_ms,
                    tag,
                    file.value_json.clone(),
                    Some(file),
                )?;
            }
            Event::Text {
                step,
                timestamp_ms,
                tag,
                text,
            } => {
                let file = media::text_table(tag, *step, text);
                self.log_media(
                    *step,
                    *timestamp_ms,
                    tag,
                    file.value_json.clone(),
                    Some(file),
                )?;
            }
            Event::Histogram {
                step,
                timestamp_ms,
                tag,
                values,
            } => match media::histogram(values) {
                Some(value) => self.log_media(*step, *timestamp_ms, tag, value, None)?,
                None => tracing::warn!(
                    tag = %tag,
                    step,
                    "W&B: histogram skipped: it has no finite value to show"
                ),
            },
            Event::Metrics {
                step,
                timestamp_ms,
                values,
            } if values.iter().any(|m| m.key.starts_with(system::PREFIX)) => {
                let (mut sys, rest) = system::split(values);
                self.label_system_metrics(&mut sys);
                if !sys.is_empty() {
                    self.local
                        .append(RecordType::Stats(system::record(*timestamp_ms, &sys)))?;
                    if let Some(online) = self.online.as_mut() {
                        online.push_events([system::events_line(
                            *timestamp_ms,
                            self.start_ms,
                            &sys,
                        )]);
                    }
                }
                if !rest.is_empty() {
                    let ev = Event::Metrics {
                        step: *step,
                        timestamp_ms: *timestamp_ms,
                        values: rest,
                    };
                    let mut rows = Vec::new();
                    self.state.apply(&ev, &mut rows);
                    self.emit_rows(rows)?;
                    self.emit_config_and_tags()?;
                }
            }
            Event::Checkpoint(report) => {
                self.checkpoints.apply(report);
                self.show_checkpoints();
            }
            other => {
                let mut rows = Vec::new();
                self.state.apply(other, &mut rows);
                self.emit_rows(rows)?;
                self.emit_config_and_tags()?;
            }
        }
        Ok(())
    }

    /// Puts the checkpoints that exist in the summary: [`SUMMARY_CHECKPOINTS`] maps each one's
    /// name to its manifest ([`CheckpointReport::manifest`]: location, step, files with sizes and
    /// digests, metrics), `checkpoints/latest` and `checkpoints/best` name the newest and the
    /// best (`null` when retention deleted every best one). The weights are never uploaded.
    pub(super) fn show_checkpoints(&mut self) {
        let set = &self.checkpoints;
        let name = |r: Option<&CheckpointReport>| {
            r.map_or(Value::Null, |r| Value::String(r.name()))
                .to_string()
        };
        let (latest, best) = (name(set.latest()), name(set.best()));
        let map = json::value_json(&Value::Object(set.manifests()));
        self.state.set_summary(SUMMARY_CHECKPOINTS, map);
        self.state.set_summary(SUMMARY_LATEST, latest);
        self.state.set_summary(SUMMARY_BEST, best);
    }

    /// Adds a media value to the history row of `step`, first writing its file (when it has one)
    /// to `files/` with a files record (and, online, queuing its upload), as `wandb.log` does.
    fn log_media(
        &mut self,
        step: u64,
        timestamp_ms: exptrack_core::TimestampMs,
        key: &str,
        value_json: String,
        file: Option<media::MediaFile>,
    ) -> Result<()> {
        if let Some(file) = file
            && self.state.accepts_step(step)
        {
            let path = self.local.write_nested(&file.rel_path, &file.bytes)?;
            self.local.append(RecordType::Files(FilesRecord {
                files: vec![FilesItem {
                    path: file.rel_path.clone(),
                    policy: proto::POLICY_NOW,
                    // As the Python client records media files.
                    r#type: proto::FILE_TYPE_OTHER,
                }],
            }))?;
            if self.online.is_some() {
                self.uploads.push((file.rel_path, path));
            }
        }
        let mut rows = Vec::new();
        self.state.add_items(
            step,
            timestamp_ms,
            vec![(key.to_owned(), value_json)],
            &mut rows,
        );
        self.emit_rows(rows)
    }

    pub(super) fn emit_rows(&mut self, rows: Vec<Row>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.define_new_metrics()?;
        for row in &rows {
            self.local.append(RecordType::History(row.record()))?;
        }
        if let Some(online) = self.online.as_mut() {
            online.push_lines(rows.iter().map(Row::json_line));
        }
        self.files_dirty = true;
        Ok(())
    }

    pub(super) fn emit_config_and_tags(&mut self) -> Result<()> {
        let changes = self.state.take_config_changes();
        if !changes.is_empty() {
            self.local.append(RecordType::Config(ConfigRecord {
                update: items(&changes),
                remove: Vec::new(),
            }))?;
            self.files_dirty = true;
            self.run_update_pending = true;
        }
        if self.state.take_tags_changed() {
            // A later run record updates the run (sync sends the new tags).
            self.run_record.tags = self.state.tags().to_vec();
            let update = RunRecord {
                config: None,
                ..self.run_record.clone()
            };
            self.local.append(RecordType::Run(update))?;
            self.run_update_pending = true;
        }
        Ok(())
    }
}
