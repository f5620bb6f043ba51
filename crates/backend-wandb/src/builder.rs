//! [`WandbTrackerBuilder`]: where the run goes (mode, project, entity, directory, server).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use exptrack_http::Secret;

use crate::WandbTracker;
use crate::error::{Error, Result};

/// The public W&B server.
pub const DEFAULT_BASE_URL: &str = "https://api.wandb.ai";

/// Where a [`WandbTracker`] sends the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Mode {
    /// Online when an API key is configured, otherwise offline (the default).
    #[default]
    Auto,
    /// Write `wandb/offline-run-*/` for a later `wandb sync`; no network.
    Offline,
    /// Stream to the W&B server (a local `wandb/run-*/` copy is written too).
    Online,
    /// Do nothing.
    Disabled,
}

impl FromStr for Mode {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(Mode::Auto),
            "offline" | "dryrun" => Ok(Mode::Offline),
            "online" | "run" => Ok(Mode::Online),
            "disabled" | "off" | "false" => Ok(Mode::Disabled),
            other => Err(Error::Config(format!(
                "unknown W&B mode {other:?} (expected offline, online, disabled or auto)"
            ))),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Auto => "auto",
            Mode::Offline => "offline",
            Mode::Online => "online",
            Mode::Disabled => "disabled",
        })
    }
}

/// Builds a [`WandbTracker`].
///
/// Precedence for every setting: a value set on the builder, then the `WANDB_*` environment
/// variable (read by [`from_env`](Self::from_env), which only fills settings still unset), then the
/// experiment config's `[tracking]` section (`wandb_project`, `wandb_entity`, `wandb_mode`,
/// `wandb_dir`, read when the run opens), then the default.
///
/// ```
/// use exptrack_wandb::{Mode, WandbTracker};
///
/// let tracker = WandbTracker::builder()
///     .project("my-project")
///     .mode(Mode::Offline)
///     .dir(std::env::temp_dir())
///     .from_env()
///     .build()?;
/// # drop(tracker);
/// # Ok::<(), exptrack_wandb::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct WandbTrackerBuilder {
    pub(crate) project: Option<String>,
    pub(crate) entity: Option<String>,
    pub(crate) dir: Option<PathBuf>,
    pub(crate) mode: Option<Mode>,
    pub(crate) run_id: Option<String>,
    pub(crate) api_key: Option<Secret>,
    pub(crate) base_url: Option<String>,
    pub(crate) display_name: Option<String>,
    pub(crate) group: Option<String>,
    pub(crate) job_type: Option<String>,
    pub(crate) notes: Option<String>,
    pub(crate) tags: Vec<String>,
    pub(crate) flush_interval: Option<Duration>,
    pub(crate) http: Option<exptrack_http::RetryConfig>,
    /// Write into this existing run as a companion (see [`attach_to_run`](Self::attach_to_run)).
    pub(crate) attach: Option<String>,
    pub(crate) label: Option<String>,
    pub(crate) step_metric: Option<String>,
    env_error: Option<String>,
}

impl WandbTrackerBuilder {
    /// W&B project (default: `[tracking] wandb_project`, else the experiment name).
    pub fn project(mut self, project: impl Into<String>) -> Self {
        self.project = Some(project.into());
        self
    }

    /// W&B entity (user or team; default: the API key's default entity).
    pub fn entity(mut self, entity: impl Into<String>) -> Self {
        self.entity = Some(entity.into());
        self
    }

    /// Directory in which `wandb/` is created (default: the current directory), like `WANDB_DIR`.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Offline, online, disabled or auto.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// W&B run id (default: the exptrack run id, so a resumed experiment continues the same run).
    /// Characters W&B does not accept are replaced.
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }

    /// API key (switches [`Mode::Auto`] to online).
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(Secret::new(key.into().trim()));
        self
    }

    /// Server URL (default `https://api.wandb.ai`), like `WANDB_BASE_URL`.
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// Display name (default: the experiment name).
    pub fn display_name(mut self, name: impl Into<String>) -> Self {
        self.display_name = Some(name.into());
        self
    }

    /// Run group (default: the experiment id, so runs of one experiment are grouped).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }

    /// Job type.
    pub fn job_type(mut self, job_type: impl Into<String>) -> Self {
        self.job_type = Some(job_type.into());
        self
    }

    /// Notes (default: the experiment description).
    pub fn notes(mut self, notes: impl Into<String>) -> Self {
        self.notes = Some(notes.into());
        self
    }

    /// An extra tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Online mode: send buffered history at most this often (default 5 s; everything is sent on
    /// `flush` and `close` regardless).
    pub fn flush_interval(mut self, every: Duration) -> Self {
        self.flush_interval = Some(every);
        self
    }

    /// Online mode: HTTP retry and timeout settings.
    pub fn retry(mut self, retry: exptrack_http::RetryConfig) -> Self {
        self.http = Some(retry);
        self
    }

    /// Writes into the existing W&B run `run_id` as a *companion* (e.g. an evaluator in another
    /// process beside the training that owns the run), the way wandb's "shared" mode does for a
    /// non-primary writer (`x_primary=False`, `x_update_finish_state=False`, `x_label`):
    ///
    /// - every metric row carries the [step metric](Self::step_metric) (the event's step) and no
    ///   `_step` (a second writer cannot continue the owner's `_step`; W&B orders the rows), and
    ///   each metric is defined against that step metric (`define_metric`), so its x-axis is the
    ///   training step;
    /// - the companion's summary holds only the keys it logs; the run's config, tags, group,
    ///   notes, metadata files and exit status stay the owner's (params and tags events are not
    ///   sent; closing the companion does not finish the run);
    /// - **online**, it joins the run in W&B's shared mode (the `X-WANDB-USE-ASYNC-FILESTREAM`
    ///   and client-id headers);
    /// - **offline** (W&B has no offline shared mode), it writes its own offline run directory
    ///   carrying `run_id` and the label, marked to resume the run; upload it *after* the
    ///   owner's with the shared-mode sync that [`WandbTracker::sync_command`](crate::WandbTracker::sync_command)
    ///   prints (`WANDB_MODE=shared WANDB__PRIMARY=false WANDB__UPDATE_FINISH_STATE=false
    ///   WANDB__LABEL=<label> wandb sync --include-online <dir>`), which appends the rows to
    ///   the run. The directory, `companion-offline-run-<stamp>-<run_id>`, is in the
    ///   companion's own exptrack run directory unless [`dir`](Self::dir) says otherwise, and
    ///   its name keeps a plain `wandb sync` (which would apply the companion's summary and exit
    ///   status to the whole run) from picking it up.
    ///
    /// `run_id` is the owner's W&B run id, by default its exptrack run id (sanitized the same
    /// way); it replaces [`run_id`](Self::run_id) and `WANDB_RUN_ID`. The companion keeps its
    /// own local run and write-ahead log.
    pub fn attach_to_run(mut self, run_id: impl Into<String>) -> Self {
        self.attach = Some(run_id.into());
        self
    }

    /// A companion's label (wandb's `x_label`; default: the companion's exptrack run id, e.g.
    /// `async-eval`): its system metrics are logged as `<name>/l:<label>`, as wandb's shared
    /// mode does, so the writers' system charts stay apart.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// A step metric: a history key that holds each row's step, against which every metric is
    /// defined (`define_metric(key, step_metric=...)`), so W&B draws the metrics over it. A
    /// companion always has one (default [`DEFAULT_STEP_METRIC`](crate::DEFAULT_STEP_METRIC),
    /// `trainer/global_step`); the owner has none unless set here, and then its rows carry it
    /// beside `_step` (as Lightning's W&B logger does), so its curves and a companion's share
    /// that x-axis.
    pub fn step_metric(mut self, key: impl Into<String>) -> Self {
        self.step_metric = Some(key.into());
        self
    }

    /// Fills settings not set yet from `WANDB_PROJECT`, `WANDB_ENTITY`, `WANDB_DIR`, `WANDB_MODE`,
    /// `WANDB_RUN_ID`, `WANDB_API_KEY` (else the `~/.netrc` entry for the server, as written by
    /// `wandb login`), `WANDB_BASE_URL`, `WANDB_NAME`, `WANDB_RUN_GROUP`, `WANDB_JOB_TYPE`,
    /// `WANDB_NOTES` and `WANDB_TAGS` (comma-separated).
    pub fn from_env(self) -> Self {
        self.with_env_lookup(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
    }

    pub(crate) fn with_env_lookup(mut self, get: impl Fn(&str) -> Option<String>) -> Self {
        fill(&mut self.project, get("WANDB_PROJECT"));
        fill(&mut self.entity, get("WANDB_ENTITY"));
        fill(&mut self.dir, get("WANDB_DIR").map(PathBuf::from));
        fill(&mut self.run_id, get("WANDB_RUN_ID"));
        fill(&mut self.base_url, get("WANDB_BASE_URL"));
        fill(&mut self.display_name, get("WANDB_NAME"));
        fill(&mut self.group, get("WANDB_RUN_GROUP"));
        fill(&mut self.job_type, get("WANDB_JOB_TYPE"));
        fill(&mut self.notes, get("WANDB_NOTES"));
        if self.mode.is_none()
            && let Some(m) = get("WANDB_MODE")
        {
            match m.parse() {
                Ok(m) => self.mode = Some(m),
                Err(e) => self.env_error = Some(format!("WANDB_MODE: {e}")),
            }
        }
        if let Some(tags) = get("WANDB_TAGS") {
            self.tags.extend(
                tags.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            );
        }
        if self.api_key.is_none() {
            self.api_key = get("WANDB_API_KEY")
                .map(|k| Secret::new(k.trim()))
                .or_else(|| {
                    let base = self.base_url.as_deref().unwrap_or(DEFAULT_BASE_URL);
                    let netrc = get("NETRC")
                        .map(PathBuf::from)
                        .or_else(|| get("HOME").map(|h| Path::new(&h).join(".netrc")))?;
                    let text = std::fs::read_to_string(netrc).ok()?;
                    netrc_password(&text, host_of(base)?).map(Secret::new)
                });
        }
        self
    }

    /// Checks the settings and builds the tracker (nothing is created until the run opens).
    pub fn build(self) -> Result<WandbTracker> {
        if let Some(e) = &self.env_error {
            return Err(Error::Config(e.clone()));
        }
        if let Some(url) = &self.base_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return Err(Error::Config(format!(
                "base URL {url:?} must start with http:// or https://"
            )));
        }
        if self.attach.is_none() && self.label.is_some() {
            return Err(Error::Config(
                "a label is a setting of a companion: call .attach_to_run(id)".into(),
            ));
        }
        if let Some(key) = &self.step_metric
            && (key.is_empty() || crate::run::RESERVED.contains(&key.as_str()))
        {
            return Err(Error::Config(format!(
                "step metric {key:?} must be a non-empty key other than _step, _runtime, _timestamp"
            )));
        }
        if self.mode == Some(Mode::Online) && self.api_key.is_none() {
            return Err(Error::Config(
                "online mode needs an API key (WANDB_API_KEY, `wandb login`, or .api_key())".into(),
            ));
        }
        Ok(WandbTracker::from_builder(self))
    }
}

fn fill<T>(slot: &mut Option<T>, v: Option<T>) {
    if slot.is_none() {
        *slot = v;
    }
}

/// The host part of an `http(s)://host[:port]/...` URL.
pub(crate) fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = host.split(':').next()?;
    (!host.is_empty()).then_some(host)
}

/// The `password` of `machine <host>` in a netrc file.
fn netrc_password(text: &str, host: &str) -> Option<String> {
    let mut tokens = text.split_whitespace();
    let mut in_machine = false;
    while let Some(t) = tokens.next() {
        match t {
            "machine" => in_machine = tokens.next() == Some(host),
            "default" => in_machine = false,
            "password" => {
                let p = tokens.next()?;
                if in_machine {
                    return Some(p.to_owned());
                }
            }
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn env_fills_only_unset_settings_and_netrc_is_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".netrc"),
            "machine other.example login u password nope\nmachine api.wandb.ai\n  login user\n  password k123\n",
        )
        .unwrap();
        let env: HashMap<&str, String> = [
            ("WANDB_PROJECT", "envproj".to_owned()),
            ("WANDB_MODE", "dryrun".to_owned()),
            ("HOME", dir.path().display().to_string()),
            ("WANDB_TAGS", "a, b,,".to_owned()),
        ]
        .into_iter()
        .collect();
        let b = WandbTrackerBuilder::default()
            .project("explicit")
            .with_env_lookup(|k| env.get(k).cloned());
        assert_eq!(b.project.as_deref(), Some("explicit"));
        assert_eq!(b.mode, Some(Mode::Offline));
        assert_eq!(b.tags, vec!["a", "b"]);
        assert_eq!(b.api_key.as_ref().map(Secret::expose), Some("k123"));
        assert_eq!(format!("{:?}", b.api_key), "Some([REDACTED])");
        assert!(!format!("{b:?}").contains("k123"));
    }

    #[test]
    fn bad_mode_is_reported_by_build() {
        let b = WandbTrackerBuilder::default()
            .with_env_lookup(|k| (k == "WANDB_MODE").then(|| "sideways".to_owned()));
        assert!(matches!(b.build(), Err(Error::Config(m)) if m.contains("sideways")));
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("https://api.wandb.ai"), Some("api.wandb.ai"));
        assert_eq!(host_of("http://127.0.0.1:8080/x"), Some("127.0.0.1"));
    }
}
