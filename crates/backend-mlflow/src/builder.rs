//! [`MlflowTrackerBuilder`]: configuration from code and from the environment, like MLflow's
//! Python client.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use exptrack_http::{Auth, HttpClient, RetryConfig, Secret};

use crate::client::MlflowClient;
use crate::error::{Error, Result};
use crate::tracker::MlflowTracker;

/// The retry settings a tracker uses by default: a few quick retries per request (3 retries,
/// 0.5 s doubling to 8 s, 30 s request timeout, 60 s in total). Longer outages are the
/// dispatcher's business: events wait in the local spool and are redelivered.
pub fn default_tracker_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        initial_backoff: Duration::from_millis(500),
        max_backoff: Duration::from_secs(8),
        backoff_factor: 2.0,
        jitter: Duration::from_millis(250),
        request_timeout: Duration::from_secs(30),
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    }
}

/// Which existing run a companion tracker logs into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Attach {
    /// An MLflow run id.
    MlflowRun(String),
    /// The MLflow run tagged with this exptrack identity.
    ExptrackRun {
        experiment_id: String,
        run_id: String,
    },
}

/// Builds an [`MlflowTracker`] (or just an [`MlflowClient`]).
///
/// Environment variables (read by [`from_env`](Self::from_env), same names as MLflow's Python
/// client): `MLFLOW_TRACKING_URI`, `MLFLOW_TRACKING_USERNAME` + `MLFLOW_TRACKING_PASSWORD` (Basic
/// auth; takes precedence over the token), `MLFLOW_TRACKING_TOKEN` (Bearer),
/// `MLFLOW_TRACKING_INSECURE_TLS`, `MLFLOW_TRACKING_SERVER_CERT_PATH`, `MLFLOW_EXPERIMENT_NAME`,
/// `MLFLOW_HTTP_REQUEST_MAX_RETRIES`, `MLFLOW_HTTP_REQUEST_TIMEOUT` (seconds). Setters called
/// after `from_env` override the environment.
///
/// ```no_run
/// use exptrack_mlflow::MlflowTracker;
/// let tracker = MlflowTracker::builder()
///     .from_env()
///     .tracking_uri("http://127.0.0.1:5000")
///     .experiment_name("mnist")
///     .strict(false)
///     .build()?;
/// # Ok::<(), exptrack_mlflow::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct MlflowTrackerBuilder {
    pub(crate) tracking_uri: Option<String>,
    pub(crate) experiment_name: Option<String>,
    pub(crate) run_name: Option<String>,
    pub(crate) auth: Auth,
    pub(crate) insecure_tls: bool,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) strict: bool,
    pub(crate) retry: Option<RetryConfig>,
    pub(crate) name: Option<String>,
    /// Log into this existing run as a companion writer (see [`attach_to_run`](Self::attach_to_run)).
    pub(crate) attach: Option<Attach>,
    /// Where the credentials came from (environment variable names or code), for errors.
    pub(crate) auth_source: Option<String>,
}

impl std::fmt::Debug for MlflowTrackerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowTrackerBuilder")
            .field(
                "tracking_uri",
                &self.tracking_uri.as_deref().map(exptrack_http::redact_str),
            )
            .field("experiment_name", &self.experiment_name)
            .field("run_name", &self.run_name)
            .field("auth", &self.auth)
            .field("insecure_tls", &self.insecure_tls)
            .field("ca_cert", &self.ca_cert)
            .field("strict", &self.strict)
            .field("retry", &self.retry)
            .field("auth_source", &self.auth_source)
            .field("attach", &self.attach)
            .finish()
    }
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

impl MlflowTrackerBuilder {
    /// A builder with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the `MLFLOW_*` environment variables (see the type docs).
    pub fn from_env(self) -> Self {
        let vars: HashMap<String, String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("MLFLOW_"))
            .collect();
        self.apply_env(|k| vars.get(k).cloned().filter(|v| !v.is_empty()))
    }

    pub(crate) fn apply_env(mut self, get: impl Fn(&str) -> Option<String>) -> Self {
        if let Some(v) = get("MLFLOW_TRACKING_URI") {
            self.tracking_uri = Some(v);
        }
        if let Some(v) = get("MLFLOW_EXPERIMENT_NAME") {
            self.experiment_name = Some(v);
        }
        let (user, password, token) = (
            get("MLFLOW_TRACKING_USERNAME"),
            get("MLFLOW_TRACKING_PASSWORD"),
            get("MLFLOW_TRACKING_TOKEN"),
        );
        // Only the names of the variables are recorded, never their values.
        match (user, password, token) {
            (Some(user), Some(password), _) => {
                self.auth = Auth::Basic {
                    user,
                    password: Secret::new(password),
                };
                self.auth_source = Some(
                    "user name and password read from MLFLOW_TRACKING_USERNAME and \
                     MLFLOW_TRACKING_PASSWORD"
                        .to_owned(),
                );
            }
            (_, _, Some(token)) => {
                self.auth = Auth::Bearer(Secret::new(token));
                self.auth_source = Some("token read from MLFLOW_TRACKING_TOKEN".to_owned());
            }
            (Some(_), None, None) => {
                self.auth_source = Some(
                    "no credentials sent: MLFLOW_TRACKING_USERNAME is set but \
                     MLFLOW_TRACKING_PASSWORD is not"
                        .to_owned(),
                );
            }
            (None, Some(_), None) => {
                self.auth_source = Some(
                    "no credentials sent: MLFLOW_TRACKING_PASSWORD is set but \
                     MLFLOW_TRACKING_USERNAME is not"
                        .to_owned(),
                );
            }
            (None, None, None) => {
                if self.auth == Auth::None {
                    self.auth_source = Some(
                        "no credentials sent: none of MLFLOW_TRACKING_USERNAME, \
                         MLFLOW_TRACKING_PASSWORD, MLFLOW_TRACKING_TOKEN is set"
                            .to_owned(),
                    );
                }
            }
        }
        if let Some(v) = get("MLFLOW_TRACKING_INSECURE_TLS") {
            self.insecure_tls = truthy(&v);
        }
        if let Some(v) = get("MLFLOW_TRACKING_SERVER_CERT_PATH") {
            self.ca_cert = Some(PathBuf::from(v));
        }
        let mut retry = self.retry.clone().unwrap_or_else(default_tracker_retry);
        let mut changed = false;
        if let Some(n) = get("MLFLOW_HTTP_REQUEST_MAX_RETRIES").and_then(|v| v.trim().parse().ok())
        {
            retry.max_retries = n;
            changed = true;
        }
        if let Some(s) = get("MLFLOW_HTTP_REQUEST_TIMEOUT").and_then(|v| v.trim().parse().ok()) {
            retry.request_timeout = Duration::from_secs(s);
            changed = true;
        }
        if changed {
            self.retry = Some(retry);
        }
        self
    }

    /// The server, e.g. `http://127.0.0.1:5000`.
    pub fn tracking_uri(mut self, uri: impl Into<String>) -> Self {
        self.tracking_uri = Some(uri.into());
        self
    }

    /// The MLflow experiment (default: the run's `experiment_name`).
    pub fn experiment_name(mut self, name: impl Into<String>) -> Self {
        self.experiment_name = Some(name.into());
        self
    }

    /// The MLflow run name (default: exptrack's run id).
    pub fn run_name(mut self, name: impl Into<String>) -> Self {
        self.run_name = Some(name.into());
        self
    }

    /// Credentials.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth_source = Some(format!(
            "{} (set in code)",
            crate::client::describe_auth(&auth)
        ));
        self.auth = auth;
        self
    }

    /// Bearer token (like `MLFLOW_TRACKING_TOKEN`).
    pub fn token(self, token: impl Into<String>) -> Self {
        self.auth(Auth::bearer(token))
    }

    /// Basic authentication (like `MLFLOW_TRACKING_USERNAME`/`PASSWORD`).
    pub fn basic_auth(self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth(Auth::basic(user, password))
    }

    /// Accept invalid TLS certificates.
    pub fn insecure_tls(mut self, yes: bool) -> Self {
        self.insecure_tls = yes;
        self
    }

    /// Trust an extra PEM CA certificate.
    pub fn server_cert_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// Strict mode: invalid keys are errors instead of being repaired (with one warning per key).
    pub fn strict(mut self, yes: bool) -> Self {
        self.strict = yes;
        self
    }

    /// Retry settings (default: [`default_tracker_retry`]).
    pub fn retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The tracker's name (its cursor key in the local store; default `mlflow`). Give each
    /// tracker a distinct name when logging to two MLflow servers at once.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Builds just the REST client.
    pub fn build_client(&self) -> Result<MlflowClient> {
        let uri = self.tracking_uri.as_deref().ok_or_else(|| {
            Error::Config(
                "no tracking URI: call .tracking_uri(..) or set MLFLOW_TRACKING_URI (e.g. http://127.0.0.1:5000)".into(),
            )
        })?;
        let mut http = HttpClient::builder()
            .auth(self.auth.clone())
            .retry(self.retry.clone().unwrap_or_else(default_tracker_retry))
            .insecure_tls(self.insecure_tls);
        if let Some(ca) = &self.ca_cert {
            http = http.ca_cert(ca.clone());
        }
        let http = http
            .build()
            .map_err(|e| Error::http("creating the HTTP client", e))?;
        let client = MlflowClient::new(uri, http)?;
        Ok(match &self.auth_source {
            Some(hint) => client.with_credentials_hint(hint.clone()),
            None => client,
        })
    }

    /// Logs into the existing MLflow run `run_id` as a *companion* writer (e.g. an evaluator in
    /// another process beside the training that owns the run): its metrics, text, artifacts and
    /// results go to that run; its params, tags and status do not (the owner's stay), and
    /// closing it leaves the run's status alone. The companion keeps its own local run (its own
    /// write-ahead log), so two processes never share one event log.
    pub fn attach_to_run(mut self, run_id: impl Into<String>) -> Self {
        self.attach = Some(Attach::MlflowRun(run_id.into()));
        self
    }

    /// [`attach_to_run`](Self::attach_to_run) for the MLflow run of an exptrack run: the one
    /// tagged `exptrack.experiment_id = experiment_id` and `exptrack.run_id = run_id` (what
    /// this backend tags every run with), found when the companion opens.
    pub fn attach_to_exptrack_run(
        mut self,
        experiment_id: impl Into<String>,
        run_id: impl Into<String>,
    ) -> Self {
        self.attach = Some(Attach::ExptrackRun {
            experiment_id: experiment_id.into(),
            run_id: run_id.into(),
        });
        self
    }

    /// Builds the tracker (no network access until the run opens).
    pub fn build(self) -> Result<MlflowTracker> {
        let client = self.build_client()?;
        Ok(MlflowTracker::from_parts(client, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> MlflowTrackerBuilder {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        MlflowTrackerBuilder::new().apply_env(|k| m.get(k).cloned())
    }

    #[test]
    fn basic_takes_precedence_over_token() {
        let b = env(&[
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:1"),
            ("MLFLOW_TRACKING_USERNAME", "alice"),
            ("MLFLOW_TRACKING_PASSWORD", "pw-secret"),
            ("MLFLOW_TRACKING_TOKEN", "tok-secret"),
            ("MLFLOW_TRACKING_INSECURE_TLS", "true"),
            ("MLFLOW_EXPERIMENT_NAME", "exp"),
            ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2"),
        ]);
        assert!(matches!(&b.auth, Auth::Basic { user, .. } if user == "alice"));
        assert!(b.insecure_tls);
        assert_eq!(b.experiment_name.as_deref(), Some("exp"));
        assert_eq!(b.retry.as_ref().map(|r| r.max_retries), Some(2));
        let dbg = format!("{b:?}");
        assert!(
            !dbg.contains("pw-secret") && !dbg.contains("tok-secret"),
            "{dbg}"
        );
        let t = b.build().unwrap();
        let dbg = format!("{t:?}");
        assert!(
            !dbg.contains("pw-secret") && !dbg.contains("tok-secret"),
            "{dbg}"
        );
    }

    #[test]
    fn token_alone_is_bearer_and_setters_override() {
        let b = env(&[
            ("MLFLOW_TRACKING_TOKEN", "tok"),
            ("MLFLOW_TRACKING_USERNAME", "alice"),
        ])
        .tracking_uri("http://127.0.0.1:2");
        assert!(matches!(&b.auth, Auth::Bearer(t) if t.expose() == "tok"));
        assert_eq!(b.tracking_uri.as_deref(), Some("http://127.0.0.1:2"));
    }

    #[test]
    fn auth_errors_name_the_variables_never_the_values() {
        let b = env(&[
            ("MLFLOW_TRACKING_URI", "http://127.0.0.1:1"),
            ("MLFLOW_TRACKING_USERNAME", "alice"),
            ("MLFLOW_TRACKING_PASSWORD", "pw-secret"),
        ]);
        let hint = b.auth_source.clone().unwrap();
        assert!(
            hint.contains("MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"),
            "{hint}"
        );
        assert!(!hint.contains("pw-secret"), "{hint}");
        let only_user = env(&[("MLFLOW_TRACKING_USERNAME", "alice")]);
        assert!(matches!(only_user.auth, Auth::None));
        assert!(
            only_user
                .auth_source
                .as_deref()
                .is_some_and(|h| h.contains("MLFLOW_TRACKING_PASSWORD is not")),
            "{:?}",
            only_user.auth_source
        );
        let token = env(&[("MLFLOW_TRACKING_TOKEN", "tok-secret")]);
        let hint = token.auth_source.clone().unwrap();
        assert!(hint.contains("MLFLOW_TRACKING_TOKEN") && !hint.contains("tok-secret"));
        let coded = MlflowTrackerBuilder::new().basic_auth("bob", "pw-2");
        let hint = coded.auth_source.clone().unwrap();
        assert!(
            hint.contains("set in code") && !hint.contains("pw-2"),
            "{hint}"
        );
    }

    #[test]
    fn missing_uri_is_a_config_error() {
        let e = MlflowTrackerBuilder::new().build().unwrap_err();
        assert!(matches!(e, Error::Config(_)), "{e}");
    }
}
