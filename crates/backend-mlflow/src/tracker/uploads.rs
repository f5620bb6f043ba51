//! Uploads that are more than one file: images the way MLflow's `log_image(key=, step=)` writes
//! them, and model artifacts as MLflow 3 logged models (creation not repeated on redelivery).

use std::path::Path;

use super::{MlflowTracker, TAG_LOGGED_IMAGES, TAG_LOGGED_MODEL, TAG_RUN_ID};
use crate::error::{Error, Result};
use crate::media::{self, ImagePaths};
use crate::types::{KeyValue, LoggedModelStatus};

/// Progress of a logged model whose creation must not be repeated on redelivery.
#[derive(Debug, Clone)]
pub(super) struct ModelProgress {
    model_id: String,
    artifact_uri: String,
    uploaded: bool,
}

impl MlflowTracker {
    pub(super) fn log_model(
        &mut self,
        seq: u64,
        path: &Path,
        name: &str,
        step: Option<u64>,
    ) -> Result<()> {
        let run = self.open_run()?.clone();
        let file_name = name.rsplit('/').next().unwrap_or(name).to_owned();
        let progress = match self.models.get(&seq) {
            Some(p) => p.clone(),
            None => {
                if !path.is_file() && !path.is_dir() {
                    return Err(Error::Io {
                        context: "model artifact",
                        path: path.to_owned(),
                        source: std::io::Error::new(
                            std::io::ErrorKind::NotFound,
                            "not a file or directory",
                        ),
                    });
                }
                let model_name = file_name
                    .split('.')
                    .next()
                    .filter(|s| !s.is_empty())
                    .unwrap_or("model")
                    .to_owned();
                let mut tags = vec![
                    KeyValue::new("exptrack.artifact_name", name),
                    KeyValue::new(TAG_RUN_ID, run.run_id.clone()),
                ];
                if let Some(s) = step {
                    tags.push(KeyValue::new("exptrack.step", s.to_string()));
                }
                let info = self.client.create_logged_model(
                    &run.experiment_id,
                    &model_name,
                    Some(&run.run_id),
                    &[],
                    &tags,
                )?;
                let p = ModelProgress {
                    model_id: info.model_id,
                    artifact_uri: info.artifact_uri,
                    uploaded: false,
                };
                self.models.insert(seq, p.clone());
                p
            }
        };
        if !progress.uploaded {
            if path.is_dir() {
                // An MLflow model directory (`MLmodel` and its files): its content is the
                // logged model's artifact root, as `mlflow.<flavor>.log_model` lays it out.
                let files = self.client.upload_dir(&progress.artifact_uri, "", path)?;
                if files.is_empty() {
                    return Err(Error::Config(format!(
                        "model directory {} is empty",
                        path.display()
                    )));
                }
            } else {
                self.client
                    .upload_artifact(&progress.artifact_uri, &file_name, path)?;
            }
            if let Some(p) = self.models.get_mut(&seq) {
                p.uploaded = true;
            }
        }
        self.client
            .finalize_logged_model(&progress.model_id, LoggedModelStatus::LoggedModelReady)?;
        self.client
            .log_outputs(&run.run_id, &[(&progress.model_id, step)])?;
        self.client.log_batch(
            &run.run_id,
            &[],
            &[],
            &[KeyValue::new(TAG_LOGGED_MODEL, progress.model_id.clone())],
        )?;
        self.models.remove(&seq);
        self.logged_models
            .push((name.to_owned(), progress.model_id.clone()));
        Ok(())
    }

    /// Uploads an image as `log_image(key=, step=)` does (the PNG, its compressed WebP copy) and
    /// tags the run `mlflow.loggedImages` once, so the UI's image panel lists it.
    pub(super) fn log_image(
        &mut self,
        tag: &str,
        step: u64,
        timestamp_ms: i64,
        png: &[u8],
    ) -> Result<()> {
        let uri = self.open_run()?.artifact_uri.clone();
        let paths = ImagePaths::new(tag, step, timestamp_ms, png);
        self.client.upload_artifact_bytes(&uri, &paths.png, png)?;
        match media::compressed_webp(png) {
            Ok(webp) => self
                .client
                .upload_artifact_bytes(&uri, &paths.webp, &webp)?,
            Err(why) => {
                if self.warned.insert(format!("webp:{tag}")) {
                    tracing::warn!(
                        target: "exptrack_mlflow",
                        "image {tag:?}: no compressed copy for MLflow's image panel ({why}); the PNG is uploaded"
                    );
                }
            }
        }
        if !self.images_tagged {
            let run_id = self.open_run()?.run_id.clone();
            self.client.log_batch(
                &run_id,
                &[],
                &[],
                &[KeyValue::new(TAG_LOGGED_IMAGES, "True")],
            )?;
            self.images_tagged = true;
        }
        Ok(())
    }
}
