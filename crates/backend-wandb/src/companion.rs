//! A companion writer of another process's W&B run ([`attach_to_run`]): what wandb 0.31's
//! "shared" mode does for a non-primary writer (`x_primary=False`, `x_update_finish_state=False`,
//! `x_label`), checked against the real client's requests and its `wandb sync`.
//!
//! - Rows carry the step as the step metric, no `_step`; each metric is defined against the step
//!   metric (metric records offline, `_wandb.m` in the run's config online, as wandb-core encodes
//!   `define_metric`).
//! - The summary holds the companion's own keys; config, tags, group, notes, metadata files and
//!   the exit status are the owner's: the run record names only the run, and closing sends no
//!   exit code and uploads none of `config.yaml`, `wandb-summary.json`, `wandb-metadata.json`.
//! - System metrics are suffixed `/l:<label>` (wandb's system monitor does so for a label).
//! - Offline, the run record is marked `resume` (field 24), so `wandb sync` continues the run
//!   instead of starting it over; the directory is named `companion-offline-run-...` so a plain
//!   `wandb sync` skips it, and `exptrack-companion.json` beside the log says how to upload it
//!   ([`sync_command`](Companion::sync_command)).
//!
//! [`attach_to_run`]: crate::WandbTrackerBuilder::attach_to_run

use std::path::Path;

use crate::error::Result;
use crate::local::LocalRun;
use crate::online::RunFields;
use crate::proto::{MetricOptions, MetricRecord, RecordType, RunRecord};
use crate::run::RunState;
use crate::{Active, WandbTrackerBuilder};

/// The step metric of a companion's rows unless
/// [`step_metric`](crate::WandbTrackerBuilder::step_metric) says otherwise.
pub const DEFAULT_STEP_METRIC: &str = "trainer/global_step";

/// How a companion's local run directory starts (`companion-offline-run-<stamp>-<id>`,
/// `companion-run-...` online): not `offline-`, so a plain `wandb sync` (which would apply the
/// companion's summary and exit status to the whole run) skips it as it skips online runs; its
/// [`sync_command`](Companion::sync_command) includes it with `--include-online`.
pub(crate) const DIR_PREFIX: &str = "companion-";

/// The file beside a companion's `.wandb` log that describes it.
pub(crate) const MARKER_FILE: &str = "exptrack-companion.json";

/// The settings of an open companion.
#[derive(Debug)]
pub(crate) struct Companion {
    /// The owner's W&B run id.
    pub(crate) run_id: String,
    /// wandb's `x_label`.
    pub(crate) label: String,
    /// This writer's id in shared mode (a new one per process, as wandb does).
    pub(crate) client_id: String,
}

impl Companion {
    /// The companion the settings describe (None for the run's owner); `exptrack_run_id` is the
    /// companion's own exptrack run id, its default label.
    pub(crate) fn from_settings(s: &WandbTrackerBuilder, exptrack_run_id: &str) -> Option<Self> {
        let run_id = crate::run::sanitize_run_id(s.attach.as_deref()?);
        Some(Companion {
            run_id,
            label: s
                .label
                .clone()
                .unwrap_or_else(|| exptrack_run_id.to_owned()),
            client_id: exptrack_core::metadata::new_hex_id(),
        })
    }

    /// Makes the run record name only the run (the owner's config, tags, group, display name,
    /// notes and job type stay) and marks it as continuing that run.
    pub(crate) fn run_record(&self, record: &mut RunRecord) {
        *record = RunRecord {
            run_id: record.run_id.clone(),
            entity: record.entity.clone(),
            project: record.project.clone(),
            start_time: record.start_time.clone(),
            resume: true,
            ..RunRecord::default()
        };
    }

    /// System metric names with the label, as wandb's system monitor writes them for a label.
    pub(crate) fn label_system(&self, items: &mut [(String, f64)]) {
        for (key, _) in items {
            key.push_str("/l:");
            key.push_str(&self.label);
        }
    }

    /// The command that uploads the companion's local run into the owner's run: wandb's sync in
    /// shared mode, as a non-primary writer that does not set the run's final state. Run it
    /// after the owner's run was uploaded.
    pub(crate) fn sync_command(&self, dir: &Path) -> String {
        format!(
            "WANDB_MODE=shared WANDB__PRIMARY=false WANDB__UPDATE_FINISH_STATE=false \
             WANDB__LABEL={} wandb sync --include-online {}",
            crate::shell_quote(&self.label),
            crate::shell_quote(&dir.display().to_string())
        )
    }

    /// Writes `exptrack-companion.json` beside the log: which run it joins and how to upload it.
    pub(crate) fn write_marker(&self, local: &LocalRun, step_metric: &str) -> Result<()> {
        let marker = serde_json::json!({
            "companion_of": self.run_id,
            "label": self.label,
            "step_metric": step_metric,
            "sync": self.sync_command(&local.dir),
            "note": "Upload the owner's run first. A plain `wandb sync` of this directory would \
                     apply this writer's summary and exit status to the whole run.",
        });
        let text = serde_json::to_string_pretty(&marker).unwrap_or_default();
        local.write_beside(MARKER_FILE, text.as_bytes())
    }
}

/// A step metric every row carries (a companion's always; the owner's when
/// [`step_metric`](crate::WandbTrackerBuilder::step_metric) is set), and the metrics defined
/// against it so far (`define_metric(key, step_metric=...)`).
#[derive(Debug)]
pub(crate) struct StepAxis {
    /// The key holding each row's step.
    pub(crate) step_metric: String,
    /// Metric definitions so far, in order (the step metric first).
    defined: Vec<String>,
}

impl StepAxis {
    /// The axis the settings ask for: the configured step metric, else the default one for a
    /// companion; None for an owner without one.
    pub(crate) fn from_settings(s: &WandbTrackerBuilder) -> Option<Self> {
        let step_metric = s
            .step_metric
            .clone()
            .or_else(|| s.attach.as_ref().map(|_| DEFAULT_STEP_METRIC.to_owned()))?;
        Some(StepAxis {
            step_metric,
            defined: Vec::new(),
        })
    }

    /// Metric records for `keys` not defined yet (the step metric's own definition first).
    pub(crate) fn define(&mut self, keys: Vec<String>) -> Vec<MetricRecord> {
        let mut out = Vec::new();
        if keys.is_empty() {
            return out;
        }
        if self.defined.is_empty() {
            self.defined.push(self.step_metric.clone());
            out.push(MetricRecord {
                name: self.step_metric.clone(),
                options: Some(MetricOptions {
                    defined: true,
                    ..MetricOptions::default()
                }),
                ..MetricRecord::default()
            });
        }
        for key in keys {
            if self.defined.contains(&key) {
                continue;
            }
            self.defined.push(key.clone());
            out.push(MetricRecord {
                name: key,
                step_metric: self.step_metric.clone(),
                options: Some(MetricOptions {
                    step_sync: true,
                    defined: true,
                    ..MetricOptions::default()
                }),
                ..MetricRecord::default()
            });
        }
        out
    }

    /// The `_wandb` config entry for `UpsertBucket` (its `value`): `{"m": [...]}`, the metric
    /// definitions as wandb-core encodes them (protobuf field numbers as keys; `5` is the
    /// 1-based index of the step metric; `6` the options set: 1 step_sync, 3 defined).
    pub(crate) fn wandb_config_json(&self) -> String {
        let m: Vec<serde_json::Value> = self
            .defined
            .iter()
            .enumerate()
            .map(|(i, name)| {
                if i == 0 {
                    serde_json::json!({"1": name, "6": [3], "7": []})
                } else {
                    serde_json::json!({"1": name, "5": 1, "6": [1, 3], "7": []})
                }
            })
            .collect();
        serde_json::json!({"value": {"m": m}}).to_string()
    }
}

/// The config for `UpsertBucket`: a companion's metric definitions only; the owner's run config,
/// with its metric definitions when its rows carry a step metric.
pub(crate) fn run_config_json(
    companion: Option<&Companion>,
    axis: Option<&StepAxis>,
    state: &RunState,
) -> String {
    let wandb = axis.map(StepAxis::wandb_config_json);
    match (companion, wandb) {
        (Some(_), wandb) => {
            let wandb = wandb.unwrap_or_else(|| "{\"value\":{\"m\":[]}}".to_owned());
            crate::json::object([("_wandb", wandb.as_str())])
        }
        (None, wandb) => state.config_upsert_json(wandb.as_deref()),
    }
}

impl Active {
    /// Defines the metrics that first appear in the rows just completed, against the step
    /// metric (metric records before the rows; online, a config update with the definitions).
    /// Nothing without a step metric.
    pub(crate) fn define_new_metrics(&mut self) -> Result<()> {
        let Some(axis) = self.axis.as_mut() else {
            return Ok(());
        };
        let records = axis.define(self.state.take_new_metrics());
        if records.is_empty() {
            return Ok(());
        }
        for record in records {
            self.local.append(RecordType::Metric(record))?;
        }
        self.run_update_pending = true;
        Ok(())
    }

    /// The run fields for `UpsertBucket`: `owner`'s for the owner, only the run's name and this
    /// writer's id for a companion.
    pub(crate) fn companion_fields(&self, owner: RunFields) -> RunFields {
        match &self.companion {
            Some(c) => RunFields::companion(
                owner.run_id,
                owner.project,
                owner.entity,
                c.client_id.clone(),
            ),
            None => owner,
        }
    }

    /// Companion: suffixes system metric names with the label.
    pub(crate) fn label_system_metrics(&self, items: &mut [(String, f64)]) {
        if let Some(c) = &self.companion {
            c.label_system(items);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn companion() -> Companion {
        let s = WandbTrackerBuilder::default().attach_to_run("2026 train/1");
        Companion::from_settings(&s, "async-eval").unwrap()
    }

    #[test]
    fn defaults_and_definitions() {
        let c = companion();
        assert_eq!(c.run_id, "2026-train-1");
        assert_eq!(c.label, "async-eval");
        assert_eq!(c.client_id.len(), 32);
        assert_ne!(c.client_id, companion().client_id);
        let owner = WandbTrackerBuilder::default();
        assert!(StepAxis::from_settings(&owner).is_none());
        assert!(Companion::from_settings(&owner, "x").is_none());
        let mut c = StepAxis::from_settings(&owner.clone().attach_to_run("r")).unwrap();
        assert_eq!(c.step_metric, DEFAULT_STEP_METRIC);
        let first = c.define(vec!["eval/valid/accuracy".into(), "eval/valid/loss".into()]);
        let names: Vec<&str> = first.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(
            names,
            [
                DEFAULT_STEP_METRIC,
                "eval/valid/accuracy",
                "eval/valid/loss"
            ]
        );
        assert_eq!(first[0].step_metric, "");
        assert_eq!(first[1].step_metric, DEFAULT_STEP_METRIC);
        assert!(c.define(vec!["eval/valid/loss".into()]).is_empty());
        let config: serde_json::Value = serde_json::from_str(&run_config_json(
            Some(&companion()),
            Some(&c),
            &RunState::new(0),
        ))
        .unwrap();
        let m = &config["_wandb"]["value"]["m"];
        assert_eq!(m[0]["1"], DEFAULT_STEP_METRIC);
        assert_eq!(m[2]["1"], "eval/valid/loss");
        assert_eq!(m[2]["5"], 1);
        assert_eq!(config.as_object().unwrap().len(), 1, "no user config");
        // The owner's config keeps its keys beside the definitions.
        let mut state = RunState::new(0);
        state.set_config("lr", "0.1".into());
        let owner: serde_json::Value =
            serde_json::from_str(&run_config_json(None, Some(&c), &state)).unwrap();
        assert_eq!(owner["lr"]["value"], 0.1);
        assert_eq!(owner["_wandb"]["value"]["m"][1]["1"], "eval/valid/accuracy");
    }

    #[test]
    fn the_run_record_names_only_the_run() {
        let c = companion();
        let mut r = RunRecord {
            run_id: "2026-train-1".into(),
            project: "p".into(),
            tags: vec!["t".into()],
            display_name: "d".into(),
            run_group: "g".into(),
            notes: "n".into(),
            ..RunRecord::default()
        };
        c.run_record(&mut r);
        assert_eq!(
            r,
            RunRecord {
                run_id: "2026-train-1".into(),
                project: "p".into(),
                resume: true,
                ..RunRecord::default()
            }
        );
        let mut sys = vec![("cpu".to_owned(), 1.0)];
        c.label_system(&mut sys);
        assert_eq!(sys[0].0, "cpu/l:async-eval");
        let cmd = c.sync_command(Path::new("/x/companion-offline-run-1-2026-train-1"));
        assert!(
            cmd.starts_with("WANDB_MODE=shared WANDB__PRIMARY=false"),
            "{cmd}"
        );
        assert!(
            cmd.ends_with("wandb sync --include-online /x/companion-offline-run-1-2026-train-1"),
            "{cmd}"
        );
    }
}
