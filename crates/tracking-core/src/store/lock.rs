//! The run lock (`<run_dir>/.lock`): one process writes (or syncs) a run at a time.

use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::LockFile;

/// Why a run's lock is taken: decides what a refusal says.
#[derive(Clone, Copy)]
pub(crate) enum LockFor {
    Writing,
    Sync,
}

/// Takes the exclusive lock of a run directory (`.lock`); a run another process holds is refused
/// with a message that fits `purpose`.
pub(crate) fn lock_run_dir(dir: &Path, purpose: LockFor) -> Result<LockFile> {
    let path = dir.join(".lock");
    match LockFile::try_acquire(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(Error::Config(match purpose {
            LockFor::Writing => format!(
                "run directory {} is open in another process; use a new run (or wait for it to \
                 finish)",
                dir.display()
            ),
            LockFor::Sync => format!(
                "run {} is open in another process (its tracker holds {}): sync it after that \
                 process has finished the run; its own tracker is still delivering",
                dir.display(),
                path.display()
            ),
        })),
        Err(source) => Err(Error::Io {
            context: match purpose {
                LockFor::Writing => "locking run directory",
                LockFor::Sync => "locking run directory for sync",
            },
            path,
            source,
        }),
    }
}

/// Whether another process (or handle) has the run open.
pub fn run_in_use(dir: &Path) -> bool {
    LockFile::is_held(&dir.join(".lock"))
}
