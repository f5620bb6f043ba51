//! Opening the run: the experiment, then the run to continue (by exptrack's tags), the run to
//! attach to (companion mode) or a new run with exptrack's and MLflow's standard tags.

use exptrack_core::{ExperimentMetadata, RunContext};

use super::{
    MlflowTracker, OpenRun, TAG_CONFIG_HASH, TAG_EXPERIMENT_ID, TAG_GIT_BRANCH, TAG_GIT_COMMIT,
    TAG_RUN_ID, TAG_SOURCE_NAME, TAG_SOURCE_TYPE, TAG_USER,
};
use crate::error::{Error, Result};
use crate::types::{KeyValue, MlflowRunStatus, Run};
use crate::validate::MAX_TAGS_PER_BATCH;

impl MlflowTracker {
    fn find_existing(&self, experiment_id: &str, ctx: &RunContext) -> Result<Option<Run>> {
        let md = &ctx.metadata;
        let by_run = format!(
            "tags.`{TAG_RUN_ID}` = '{}' AND tags.`{TAG_EXPERIMENT_ID}` = '{}'",
            quote(&md.run_id),
            quote(&md.experiment_id)
        );
        let mut runs = self.client.search_runs(
            &[experiment_id],
            &by_run,
            1,
            &["attributes.start_time DESC"],
        )?;
        if runs.is_empty() && ctx.resumed {
            let by_exp = format!(
                "tags.`{TAG_EXPERIMENT_ID}` = '{}'",
                quote(&md.experiment_id)
            );
            runs = self.client.search_runs(
                &[experiment_id],
                &by_exp,
                1,
                &["attributes.start_time DESC"],
            )?;
        }
        Ok(runs.into_iter().next())
    }

    fn open_attached(&mut self, attach: &crate::builder::Attach, ctx: &RunContext) -> Result<()> {
        use crate::builder::Attach;
        let run = match attach {
            Attach::MlflowRun(id) => self.client.get_run(id)?,
            Attach::ExptrackRun {
                experiment_id,
                run_id,
            } => {
                let exp_name = self
                    .experiment_name
                    .clone()
                    .unwrap_or_else(|| ctx.metadata.experiment_name.clone());
                let exp = self.client.get_experiment_by_name(&exp_name)?.ok_or_else(|| {
                    Error::Config(format!(
                        "attach to exptrack run {experiment_id}/{run_id}: MLflow has no experiment named {exp_name:?}"
                    ))
                })?;
                let filter = format!(
                    "tags.`{TAG_RUN_ID}` = '{}' AND tags.`{TAG_EXPERIMENT_ID}` = '{}'",
                    quote(run_id),
                    quote(experiment_id)
                );
                self.client
                    .search_runs(&[&exp.experiment_id], &filter, 1, &["attributes.start_time DESC"])?
                    .into_iter()
                    .next()
                    .ok_or_else(|| {
                        Error::Config(format!(
                            "attach to exptrack run {experiment_id}/{run_id}: no MLflow run in experiment {exp_name:?} carries its tags (has the training logged to MLflow yet?)"
                        ))
                    })?
            }
        };
        tracing::info!(
            target: "exptrack_mlflow",
            run_id = %run.info.run_id,
            "logging into the existing MLflow run as a companion writer"
        );
        self.remote_status = Some(run.info.status.to_core());
        self.run = Some(OpenRun {
            run_id: run.info.run_id,
            experiment_id: run.info.experiment_id,
            artifact_uri: run.info.artifact_uri,
        });
        Ok(())
    }

    pub(super) fn do_open(&mut self, ctx: &RunContext) -> Result<()> {
        if let Some(attach) = self.attach.clone() {
            return self.open_attached(&attach, ctx);
        }
        let md = &ctx.metadata;
        let exp_name = self
            .experiment_name
            .clone()
            .unwrap_or_else(|| md.experiment_name.clone());
        let experiment_id = self.client.get_or_create_experiment(&exp_name)?;
        if let Some(run) = self.find_existing(&experiment_id, ctx)? {
            let status = run.info.status.to_core();
            tracing::info!(
                target: "exptrack_mlflow",
                run_id = %run.info.run_id,
                "continuing existing MLflow run (status on server: {status})"
            );
            self.remote_status = Some(status);
            self.params = run
                .data
                .params
                .iter()
                .map(|p| (p.key.clone(), p.value.clone()))
                .collect();
            if status.is_terminal() && !md.status.is_terminal() {
                // Training continues: the run is running again until close.
                self.client
                    .update_run(&run.info.run_id, MlflowRunStatus::Running, None)?;
            }
            self.run = Some(OpenRun {
                run_id: run.info.run_id,
                experiment_id,
                artifact_uri: run.info.artifact_uri,
            });
            return Ok(());
        }
        let mut tags = vec![
            KeyValue::new(TAG_EXPERIMENT_ID, md.experiment_id.clone()),
            KeyValue::new(TAG_RUN_ID, md.run_id.clone()),
            KeyValue::new(TAG_CONFIG_HASH, md.config_hash.clone()),
        ];
        if !md.description.is_empty() {
            tags.push(KeyValue::new("mlflow.note.content", md.description.clone()));
        }
        if !md.version.is_empty() {
            tags.push(KeyValue::new("exptrack.version", md.version.clone()));
        }
        tags.extend(standard_tags(md));
        if !md.system.hostname.is_empty() {
            tags.push(KeyValue::new("exptrack.host", md.system.hostname.clone()));
        }
        for t in &md.tags {
            tags.push(KeyValue::new(t.clone(), String::new()));
        }
        let mut problems = Vec::new();
        let tags: Vec<KeyValue> = tags
            .into_iter()
            .filter_map(|kv| self.check_tag(kv, &mut problems))
            .collect();
        for p in problems {
            tracing::warn!(target: "exptrack_mlflow", "run tag skipped: {p}");
        }
        let run_name = self.run_name.clone().unwrap_or_else(|| md.run_id.clone());
        let start = md.start_time.timestamp_millis();
        // Runs/create takes at most 100 tags in practice; the rest follow in log-batch.
        let (first, rest) = tags.split_at(tags.len().min(MAX_TAGS_PER_BATCH));
        let info = self
            .client
            .create_run(&experiment_id, &run_name, start, first)?;
        if !rest.is_empty() {
            self.client
                .log_batch_chunked(&info.run_id, &[], &[], rest)?;
        }
        tracing::info!(target: "exptrack_mlflow", run_id = %info.run_id, "created MLflow run");
        self.remote_status = None;
        self.run = Some(OpenRun {
            run_id: info.run_id,
            experiment_id,
            artifact_uri: info.artifact_uri,
        });
        Ok(())
    }
}

/// MLflow's standard run tags (the ones its Python client fills) from the run's metadata:
/// `mlflow.source.type` (`LOCAL`), `mlflow.source.name` (the program), `mlflow.user`, and
/// `mlflow.source.git.commit` / `mlflow.source.git.branch` inside a git checkout. The UI shows them
/// as the run's "Source", "Created by" and git fields. Unknown values are left out.
pub fn standard_tags(md: &ExperimentMetadata) -> Vec<KeyValue> {
    let sys = &md.system;
    let mut tags = vec![KeyValue::new(TAG_SOURCE_TYPE, "LOCAL")];
    if !sys.program.is_empty() {
        tags.push(KeyValue::new(TAG_SOURCE_NAME, sys.program.clone()));
    }
    if !sys.user.is_empty() {
        tags.push(KeyValue::new(TAG_USER, sys.user.clone()));
    }
    if let Some(git) = &sys.git {
        tags.push(KeyValue::new(TAG_GIT_COMMIT, git.commit.clone()));
        if let Some(branch) = &git.branch {
            tags.push(KeyValue::new(TAG_GIT_BRANCH, branch.clone()));
        }
    }
    tags
}

/// Escapes a string for a single-quoted MLflow search literal.
fn quote(s: &str) -> String {
    s.replace('\\', "\\\\").replace('\'', "\\'")
}
