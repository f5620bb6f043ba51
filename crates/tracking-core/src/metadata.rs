//! Run identity and provenance: [`ExperimentMetadata`], [`RunStatus`], [`SystemInfo`].

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The lifecycle state of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Still running (or crashed without a chance to say otherwise).
    Running,
    /// Finished successfully.
    Completed,
    /// Ended by an error or a panic.
    Failed,
    /// Ended by Ctrl-C, SIGTERM or the user.
    Killed,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        !matches!(self, RunStatus::Running)
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Killed => "killed",
        })
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "running" => Ok(RunStatus::Running),
            "completed" | "finished" | "success" => Ok(RunStatus::Completed),
            "failed" | "failure" => Ok(RunStatus::Failed),
            "killed" => Ok(RunStatus::Killed),
            other => Err(format!(
                "unknown run status {other:?} (expected running, completed, failed or killed)"
            )),
        }
    }
}

/// Git provenance of the working directory the run was started from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitInfo {
    /// `HEAD` commit hash.
    pub commit: String,
    /// Whether the work tree had uncommitted changes.
    pub dirty: bool,
    /// Current branch, if not detached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// The machine and software a run executed on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SystemInfo {
    /// Host name.
    pub hostname: String,
    /// Operating system (e.g. `linux`), with its version when known.
    pub os: String,
    /// CPU architecture.
    pub arch: String,
    /// CPU model name, when known.
    #[serde(default)]
    pub cpu_model: String,
    /// Logical CPU cores.
    pub cpu_cores: usize,
    /// Total memory in bytes (0 when unknown).
    pub total_memory_bytes: u64,
    /// Versions of relevant crates (`exptrack-core`, and whatever callers add, e.g. `burn`).
    pub crate_versions: BTreeMap<String, String>,
    /// Git commit and dirty flag when run inside a git checkout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    /// The login name of the user who started the run (empty when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// The program that started the run: the executable's path (empty when unknown).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub program: String,
}

impl SystemInfo {
    /// Collects information about this machine and the git checkout containing `cwd` (if any).
    /// Never fails: unknown fields stay empty.
    pub fn collect(cwd: &Path) -> Self {
        let mut crate_versions = BTreeMap::new();
        crate_versions.insert(
            "exptrack-core".to_owned(),
            env!("CARGO_PKG_VERSION").to_owned(),
        );
        let (cpu_model, total_memory_bytes, os) = system_details();
        SystemInfo {
            hostname: hostname(),
            os,
            arch: std::env::consts::ARCH.to_owned(),
            cpu_model,
            cpu_cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            total_memory_bytes,
            crate_versions,
            git: git_info(cwd),
            user: user_name(),
            program: program_path(),
        }
    }
}

/// The login name from `LOGNAME`, `USER`, `LNAME` or `USERNAME` (the order Python's
/// `getpass.getuser` uses), empty when none is set.
pub fn user_name() -> String {
    ["LOGNAME", "USER", "LNAME", "USERNAME"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty())
        .unwrap_or_default()
}

/// The running executable's path (`argv[0]` when the OS cannot say), empty when unknown.
fn program_path() -> String {
    std::env::current_exe()
        .ok()
        .map(|p| p.display().to_string())
        .or_else(|| {
            std::env::args_os()
                .next()
                .map(|a| a.to_string_lossy().into_owned())
        })
        .unwrap_or_default()
}

/// The machine's host name (empty when unknown).
pub fn hostname() -> String {
    if let Ok(h) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            return h.to_owned();
        }
    }
    std::env::var("HOSTNAME")
        .or_else(|_| std::env::var("COMPUTERNAME"))
        .unwrap_or_default()
}

#[cfg(feature = "system-metrics")]
fn system_details() -> (String, u64, String) {
    use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
    let sys = System::new_with_specifics(
        RefreshKind::nothing()
            .with_cpu(CpuRefreshKind::nothing())
            .with_memory(MemoryRefreshKind::nothing().with_ram()),
    );
    let cpu = sys
        .cpus()
        .first()
        .map(|c| c.brand().trim().to_owned())
        .unwrap_or_default();
    let os = match System::long_os_version() {
        Some(v) => format!("{} ({v})", std::env::consts::OS),
        None => std::env::consts::OS.to_owned(),
    };
    (cpu, sys.total_memory(), os)
}

#[cfg(not(feature = "system-metrics"))]
fn system_details() -> (String, u64, String) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    (cpu, 0, std::env::consts::OS.to_owned())
}

fn git(cwd: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(cwd)
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_info(cwd: &Path) -> Option<GitInfo> {
    let commit = git(cwd, &["rev-parse", "HEAD"])?;
    let dirty = git(cwd, &["status", "--porcelain", "--untracked-files=no"])
        .map(|s| !s.is_empty())
        .unwrap_or(false);
    let branch = git(cwd, &["symbolic-ref", "--short", "-q", "HEAD"]).filter(|b| !b.is_empty());
    Some(GitInfo {
        commit,
        dirty,
        branch,
    })
}

/// Who and what a run is. Serialized as the run's `metadata.json` with these stable field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExperimentMetadata {
    /// Human name of the experiment (`[experiment].name`).
    pub experiment_name: String,
    /// Stable identity of the experiment: `{name}-{first 12 hex of config_hash}` by default.
    pub experiment_id: String,
    /// This run's id (unique within the experiment).
    pub run_id: String,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// Tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// User-supplied version string (e.g. of the model code).
    #[serde(default)]
    pub version: String,
    /// sha256 of the canonical config (see [`crate::config_hash`]).
    pub config_hash: String,
    /// When the run started.
    pub start_time: DateTime<Utc>,
    /// When the run ended (absent while running).
    #[serde(default)]
    pub end_time: Option<DateTime<Utc>>,
    /// Current status.
    pub status: RunStatus,
    /// Machine and software.
    #[serde(default)]
    pub system: SystemInfo,
}

impl ExperimentMetadata {
    /// Metadata for a new run of `experiment_name` with the given config hash; the experiment id is
    /// derived as `{sanitized name}-{first 12 hex of hash}` and the run id is fresh.
    pub fn new(experiment_name: impl Into<String>, config_hash: impl Into<String>) -> Self {
        let experiment_name = experiment_name.into();
        let config_hash = config_hash.into();
        let experiment_id = derive_experiment_id(&experiment_name, &config_hash);
        ExperimentMetadata {
            experiment_name,
            experiment_id,
            run_id: new_run_id(),
            description: String::new(),
            tags: Vec::new(),
            version: String::new(),
            config_hash,
            start_time: Utc::now(),
            end_time: None,
            status: RunStatus::Running,
            system: SystemInfo::default(),
        }
    }
}

/// `{sanitized name}-{first 12 hex chars of hash}`: the directory name of an experiment, derived
/// from its display name (which is kept verbatim in the metadata and sent to backends as is). The
/// result always passes [`check_component`]: see [`sanitize_component`]; the name part is cut to
/// leave room for the hash.
///
/// ```
/// use exptrack_core::metadata::{check_component, derive_experiment_id};
/// let id = derive_experiment_id("../../escape", "0123456789abcdef");
/// assert_eq!(id, "_._.._escape-0123456789ab");
/// assert!(check_component(&id).is_ok());
/// ```
pub fn derive_experiment_id(name: &str, config_hash: &str) -> String {
    let short: String = config_hash
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(12)
        .collect();
    let mut name = sanitize_component(name);
    if short.is_empty() {
        return name;
    }
    name.truncate(MAX_COMPONENT - short.len() - 1);
    format!("{name}-{short}")
}

/// Longest path component accepted by [`check_component`] (bytes).
pub const MAX_COMPONENT: usize = 200;

/// Makes a string safe as one path component, always passing [`check_component`]: keeps
/// `[A-Za-z0-9_.-]`, maps every other character to `_`, turns leading dots into `_`, cuts the result
/// to [`MAX_COMPONENT`] bytes and never returns an empty string.
pub fn sanitize_component(s: &str) -> String {
    let mut leading = true;
    let mut out: String = s
        .chars()
        .map(|c| {
            let keep = c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.');
            let c = if !keep || (leading && c == '.') {
                '_'
            } else {
                c
            };
            leading = false;
            c
        })
        .take(MAX_COMPONENT)
        .collect();
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// The one rule for a name that becomes a path component (an experiment id, a run id, a file name
/// inside a checkpoint), used by the local store, the checkpointer and every reader of names from disk:
/// non-empty, at most 200 bytes, not starting with `.`, and only `[A-Za-z0-9_.-]`. `Err` says why.
///
/// ```
/// use exptrack_core::metadata::check_component;
/// assert!(check_component("ckpt-000042").is_ok());
/// assert!(check_component("../escape").is_err());
/// assert!(check_component("/etc/passwd").is_err());
/// ```
pub fn check_component(s: &str) -> std::result::Result<(), &'static str> {
    if s.is_empty() {
        return Err("is empty");
    }
    if s.len() > MAX_COMPONENT {
        return Err("is longer than 200 bytes");
    }
    if s.starts_with('.') {
        return Err("starts with '.'");
    }
    if s.contains(['/', '\\']) {
        return Err("contains a path separator");
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    {
        return Err("contains a character other than A-Z, a-z, 0-9, '_', '-' and '.'");
    }
    Ok(())
}

/// A fresh run id: `YYYYMMDD-HHMMSS-` plus 6 random lowercase hex characters (sortable by start).
pub fn new_run_id() -> String {
    let suffix: u32 = rand::random::<u32>() & 0x00ff_ffff;
    format!("{}-{suffix:06x}", Utc::now().format("%Y%m%d-%H%M%S"))
}

/// 32 random lowercase hex characters (128 bits from an OS-seeded generator): for ids that must
/// not collide across processes and machines, such as a W&B writer id or an MLflow
/// `model_uuid`.
///
/// ```
/// let id = exptrack_core::metadata::new_hex_id();
/// assert_eq!(id.len(), 32);
/// assert!(id.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
/// ```
pub fn new_hex_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

#[cfg(test)]
mod hex_id_tests {
    #[test]
    fn hex_ids_do_not_repeat() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| super::new_hex_id()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| id.len() == 32));
    }
}
