//! Reader leases: a checkpoint that a reader holds a lease on is never deleted by retention, also when
//! the reader is another process.
//!
//! A lease is a file `<experiment dir>/leases/<step>-<pid>-<n>`, created before the reader touches the
//! checkpoint and removed when the [`Lease`] is dropped. Leases of processes that no longer exist are
//! stale and ignored (and cleaned up). The pruner renames a victim away, then looks at the leases
//! again and puts it back if a lease appeared in between; a reader that finds the checkpoint
//! missing while such a renamed copy exists waits for that decision. So a reader either gets a
//! lease on a checkpoint that stays, or `NotFound` for one that is really gone.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, IoContext, Result};

/// Directory of lease files inside the experiment directory.
pub(crate) const LEASES_DIR: &str = "leases";

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// How long a reader waits for a pruner that has renamed the checkpoint away to decide.
const PRUNE_SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// An RAII reader lease on one checkpoint: while it lives, retention will not delete the checkpoint.
pub struct Lease {
    holder: Holder,
    step: u64,
    dir: PathBuf,
}

/// What makes a lease visible to pruners, removed when the lease is dropped.
enum Holder {
    /// A lease file in the experiment directory.
    File(PathBuf),
    /// A lease elsewhere (an object in an object store); the closure releases it.
    Remote(Option<Box<dyn FnOnce() + Send + Sync>>),
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Lease");
        d.field("step", &self.step).field("dir", &self.dir);
        if let Holder::File(file) = &self.holder {
            d.field("file", file);
        }
        d.finish_non_exhaustive()
    }
}

impl Lease {
    /// Takes a lease on the checkpoint directory `ckpt_dir` of `step`.
    pub(crate) fn acquire(exp_dir: &Path, step: u64, ckpt_dir: PathBuf) -> Result<Lease> {
        let leases = exp_dir.join(LEASES_DIR);
        std::fs::create_dir_all(&leases).ctx("create", &leases)?;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let file = leases.join(format!("{step}-{}-{n}", std::process::id()));
        std::fs::write(&file, b"").ctx("create", &file)?;
        let lease = Lease {
            holder: Holder::File(file),
            step,
            dir: ckpt_dir,
        };
        // Checked after the lease exists: see the module docs.
        if lease.committed() || lease.settled_after_prune(exp_dir) {
            return Ok(lease);
        }
        Err(Error::NotFound {
            step,
            dir: exp_dir.to_owned(),
        })
    }

    fn committed(&self) -> bool {
        self.dir.join(crate::format::CHECKPOINT_JSON).is_file()
    }

    /// The checkpoint was missing. A pruner may have renamed it to `.del-<dir>-*` just before our
    /// lease appeared; it then sees the lease and renames it back. Waits (at most
    /// [`PRUNE_SETTLE`]) while such a directory exists, and returns whether the checkpoint came
    /// back. Without this, a reader could get `NotFound` for a checkpoint that stays.
    fn settled_after_prune(&self, exp_dir: &Path) -> bool {
        let Some(dir_name) = self.dir.file_name().and_then(|n| n.to_str()) else {
            return false;
        };
        let prefix = format!("{}{dir_name}-", crate::format::DEL_PREFIX);
        let pending = || {
            std::fs::read_dir(exp_dir).is_ok_and(|rd| {
                rd.flatten().any(|e| {
                    e.file_name()
                        .to_str()
                        .is_some_and(|n| n.starts_with(&prefix))
                })
            })
        };
        let deadline = std::time::Instant::now() + PRUNE_SETTLE;
        while pending() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(2));
            if self.committed() {
                return true;
            }
        }
        self.committed()
    }

    /// A lease held elsewhere (an object store), released by `release` on drop.
    #[cfg_attr(not(feature = "object-store"), allow(dead_code))]
    pub(crate) fn remote(
        step: u64,
        dir: PathBuf,
        release: Box<dyn FnOnce() + Send + Sync>,
    ) -> Lease {
        Lease {
            holder: Holder::Remote(Some(release)),
            step,
            dir,
        }
    }

    /// The leased step.
    pub fn step(&self) -> u64 {
        self.step
    }

    /// The leased checkpoint's directory (safe to read while the lease lives).
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        match &mut self.holder {
            // Best effort: a lease file left behind is stale once this process exits.
            Holder::File(file) => {
                let _ = std::fs::remove_file(file);
            }
            Holder::Remote(release) => {
                if let Some(release) = release.take() {
                    release();
                }
            }
        }
    }
}

/// Steps leased by live processes. Stale lease files of dead processes are removed.
pub(crate) fn leased_steps(exp_dir: &Path) -> BTreeSet<u64> {
    let mut steps = BTreeSet::new();
    let Ok(rd) = std::fs::read_dir(exp_dir.join(LEASES_DIR)) else {
        return steps;
    };
    let me = std::process::id();
    for entry in rd.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some((step, pid)) = parse_lease_name(name) else {
            continue;
        };
        if pid == me || pid_alive(pid) {
            steps.insert(step);
        } else if entry.file_type().is_ok_and(|t| t.is_file()) {
            // A stale lease of a dead process (only plain files; the path is a child of `leases/`).
            let _ = std::fs::remove_file(entry.path());
        }
    }
    steps
}

/// `<step>-<pid>-<n>`, all decimal: the only lease file name this crate writes. Anything else
/// (other separators, signs, spaces, numbers out of range, a fourth part) is not a lease.
fn parse_lease_name(name: &str) -> Option<(u64, u32)> {
    exptrack_core::metadata::check_component(name).ok()?;
    let mut parts = name.split('-');
    let (step, pid, n) = (parts.next()?, parts.next()?, parts.next()?);
    let decimal = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if parts.next().is_some() || !decimal(step) || !decimal(pid) || !decimal(n) {
        return None;
    }
    Some((step.parse().ok()?, pid.parse().ok()?))
}

pub(crate) fn pid_alive(pid: u32) -> bool {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists; nothing is delivered.
        let rc = unsafe { libc::kill(pid, 0) };
        rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::parse_lease_name;

    #[test]
    fn lease_names_parse_strictly() {
        assert_eq!(parse_lease_name("12-345-0"), Some((12, 345)));
        for bad in [
            "12-345",
            "12-345-0-1",
            "+12-345-0",
            "12--0",
            "12-4294967296-0",
            "99999999999999999999-1-0",
            "12-345-x",
            ".12-345-0",
            "12-345-0 ",
        ] {
            assert_eq!(parse_lease_name(bad), None, "{bad}");
        }
    }
}
