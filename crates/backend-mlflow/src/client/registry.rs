//! MLflow 3 logged models and the model registry: registered models, versions, aliases, stages.

use super::*;

impl MlflowClient {
    /// Creates an MLflow 3 logged model (status PENDING until finalized).
    pub fn create_logged_model(
        &self,
        experiment_id: &str,
        name: &str,
        source_run_id: Option<&str>,
        params: &[KeyValue],
        tags: &[KeyValue],
    ) -> Result<LoggedModelInfo> {
        let mut body = json!({
            "experiment_id": experiment_id,
            "name": name,
            "params": params,
            "tags": tags,
        });
        if let Some(r) = source_run_id {
            body["source_run_id"] = json!(r);
        }
        let v = self.post("logged-models", &body, || {
            format!("create logged model {name:?}")
        })?;
        Self::field(v, "/model/info", "logged-models create")
    }

    /// Sets a logged model's final status (READY after its artifacts are uploaded).
    pub fn finalize_logged_model(
        &self,
        model_id: &str,
        status: LoggedModelStatus,
    ) -> Result<LoggedModelInfo> {
        let url = self.api(&format!("logged-models/{model_id}"));
        let v: Value = self
            .http
            .send_json(
                Method::PATCH,
                &url,
                &json!({"model_id": model_id, "status": status}),
            )
            .map_err(|e| self.http_err(format!("finalize logged model {model_id}"), e))?;
        Self::field(v, "/model/info", "logged-models finalize")
    }

    /// A logged model.
    pub fn get_logged_model(&self, model_id: &str) -> Result<LoggedModelInfo> {
        let url = self.api(&format!("logged-models/{model_id}"));
        let resp = self
            .http
            .send_with_retry(|c| Ok(c.get(&url)))
            .map_err(|e| self.http_err(format!("get logged model {model_id}"), e))?;
        let v: Value = decode(resp).map_err(|e| self.http_err("get logged model", e))?;
        Self::field(v, "/model/info", "logged-models get")
    }

    // ---------------------------------------------------------------- registry

    /// Creates a registered model.
    pub fn create_registered_model(
        &self,
        name: &str,
        description: &str,
    ) -> Result<RegisteredModel> {
        let v = self.post(
            "registered-models/create",
            &json!({"name": name, "description": description}),
            || format!("create registered model {name:?}"),
        )?;
        Self::field(v, "/registered_model", "registered-models/create")
    }

    /// A registered model, or `None`.
    pub fn get_registered_model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        match self.get("registered-models/get", &[("name", name)], || {
            format!("get registered model {name:?}")
        }) {
            Ok(v) => Self::field(v, "/registered_model", "registered-models/get").map(Some),
            Err(e) if e.error_code() == Some("RESOURCE_DOES_NOT_EXIST") => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The registered model `name`, created if missing.
    pub fn get_or_create_registered_model(&self, name: &str) -> Result<RegisteredModel> {
        if let Some(m) = self.get_registered_model(name)? {
            return Ok(m);
        }
        match self.create_registered_model(name, "") {
            Err(e) if e.error_code() == Some("RESOURCE_ALREADY_EXISTS") => self
                .get_registered_model(name)?
                .ok_or_else(|| Error::UnexpectedResponse(format!("registered model {name:?}"))),
            other => other,
        }
    }

    /// Creates a model version of `name` from `source` (e.g. `runs:/<run_id>/<path>` or
    /// `models:/<model_id>`), linked to `run_id` and, for MLflow 3, the logged model.
    pub fn create_model_version(
        &self,
        name: &str,
        source: &str,
        run_id: Option<&str>,
        model_id: Option<&str>,
    ) -> Result<ModelVersion> {
        let mut body = json!({"name": name, "source": source});
        if let Some(r) = run_id {
            body["run_id"] = json!(r);
        }
        if let Some(m) = model_id {
            body["model_id"] = json!(m);
        }
        let v = self.post("model-versions/create", &body, || {
            format!("create version of model {name:?}")
        })?;
        Self::field(v, "/model_version", "model-versions/create")
    }

    /// A model version.
    pub fn get_model_version(&self, name: &str, version: &str) -> Result<ModelVersion> {
        let v = self.get(
            "model-versions/get",
            &[("name", name), ("version", version)],
            || format!("get version {version} of model {name:?}"),
        )?;
        Self::field(v, "/model_version", "model-versions/get")
    }

    /// Points `alias` of model `name` at `version` (moving it if it pointed elsewhere).
    pub fn set_alias(&self, name: &str, alias: &str, version: &str) -> Result<()> {
        self.post(
            "registered-models/alias",
            &json!({"name": name, "alias": alias, "version": version}),
            || format!("set alias {alias:?} of model {name:?} to version {version}"),
        )
        .map(drop)
    }

    /// The version `alias` points to, or `None` when the alias does not exist.
    pub fn get_model_version_by_alias(
        &self,
        name: &str,
        alias: &str,
    ) -> Result<Option<ModelVersion>> {
        match self.get(
            "registered-models/alias",
            &[("name", name), ("alias", alias)],
            || format!("get alias {alias:?} of model {name:?}"),
        ) {
            Ok(v) => Self::field(v, "/model_version", "registered-models/alias").map(Some),
            Err(e) if matches!(e.status(), Some(400 | 404)) => {
                // Servers answer a missing alias with 404 or with 400 INVALID_PARAMETER_VALUE
                // ("alias ... not found"): confirm through the model's alias list.
                match self.get_registered_model(name)? {
                    Some(m) if m.aliases.iter().any(|a| a.alias == alias) => Err(e),
                    _ => Ok(None),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes `alias` of model `name`.
    pub fn delete_alias(&self, name: &str, alias: &str) -> Result<()> {
        let _: Value = self
            .http
            .send_json(
                Method::DELETE,
                &self.api("registered-models/alias"),
                &json!({"name": name, "alias": alias}),
            )
            .map_err(|e| self.http_err(format!("delete alias {alias:?} of model {name:?}"), e))?;
        Ok(())
    }

    /// Moves a version to a stage (the pre-alias workflow, deprecated since MLflow 2.9 but
    /// still served); `archive_existing` archives the versions currently in that stage.
    pub fn transition_stage(
        &self,
        name: &str,
        version: &str,
        stage: Stage,
        archive_existing: bool,
    ) -> Result<ModelVersion> {
        let v = self.post(
            "model-versions/transition-stage",
            &json!({
                "name": name,
                "version": version,
                "stage": stage.as_str(),
                "archive_existing_versions": archive_existing,
            }),
            || {
                format!(
                    "transition version {version} of model {name:?} to {}",
                    stage.as_str()
                )
            },
        )?;
        Self::field(v, "/model_version", "model-versions/transition-stage")
    }
}
