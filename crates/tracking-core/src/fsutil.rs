//! File-system plumbing shared by every exptrack crate: atomic replace with a directory fsync,
//! exclusive lock files, and a millisecond wall clock.
//!
//! The run store, the checkpointer, the evaluator and the trainer all use these, so a fix here
//! (an fsync that was missing, a lock that was not released) reaches every one of them.
//!
//! ```
//! use exptrack_core::fsutil::{LockFile, now_ms, write_atomic};
//! # fn main() -> std::io::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let path = dir.path().join("state.json");
//! write_atomic(&path, b"{\"step\": 1}")?;
//! assert_eq!(std::fs::read(&path)?, b"{\"step\": 1}");
//!
//! let lock = LockFile::try_acquire(&dir.path().join(".lock"))?
//!     .ok_or_else(|| std::io::Error::other("another process holds the lock"))?;
//! // A second handle (in this or another process) is refused while the first is held.
//! assert!(LockFile::try_acquire(lock.path())?.is_none());
//! drop(lock);
//! assert!(LockFile::try_acquire(&dir.path().join(".lock"))?.is_some());
//! assert!(now_ms() > 1_600_000_000_000);
//! # Ok(()) }
//! ```

use std::fs::{self, File, OpenOptions, TryLockError};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Replaces `path` with `bytes` atomically: writes a temporary file in the same directory,
/// fsyncs it, renames it over `path` and fsyncs the directory. A reader (or a crash) sees either
/// the old contents or the new ones, never a mix; after it returns, the new contents survive a
/// power loss.
///
/// The temporary file is named `.<name>.tmp-<pid>-<n>` (unique per process and call, so two
/// threads replacing one file do not collide) and removed when a step fails.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".to_owned());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
    let written = (|| {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// fsyncs a directory, so that a rename or a new file in it survives a power loss (a no-op where
/// directories cannot be opened, e.g. on Windows).
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()?;
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// An exclusive advisory lock on a file (std's [`File::try_lock`]), held until dropped.
///
/// The operating system releases it when the process dies, SIGKILL included, so a stale lock
/// file never blocks a later process. It is exclusive between processes and between handles of
/// one process (each [`try_acquire`](Self::try_acquire) opens its own handle).
#[derive(Debug)]
pub struct LockFile {
    file: File,
    path: PathBuf,
}

impl LockFile {
    /// Creates `path` if needed and takes its lock without waiting. `Ok(None)` when another
    /// process (or handle) holds it; `Err` when the file cannot be opened or locked.
    pub fn try_acquire(path: &Path) -> io::Result<Option<LockFile>> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(LockFile {
                file,
                path: path.to_path_buf(),
            })),
            Err(TryLockError::WouldBlock) => Ok(None),
            Err(TryLockError::Error(e)) => Err(e),
        }
    }

    /// Whether someone holds the lock on `path` now (false when the file does not exist). Only
    /// a snapshot: the answer may change right after.
    pub fn is_held(path: &Path) -> bool {
        let Ok(f) = OpenOptions::new().write(true).open(path) else {
            return false;
        };
        match f.try_lock() {
            Ok(()) => {
                let _ = f.unlock();
                false
            }
            Err(_) => true,
        }
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Closing the file releases the lock too; unlocking first makes it explicit.
        let _ = self.file.unlock();
    }
}

/// Milliseconds since the Unix epoch (UTC). Never panics: a clock before 1970 gives a negative
/// value, one past the `i64` range saturates.
pub fn now_ms() -> i64 {
    use std::time::{SystemTime, UNIX_EPOCH};
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => i64::try_from(e.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("a.json")]);
    }

    #[test]
    fn write_atomic_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("a.json");
        assert!(write_atomic(&p, b"x").is_err());
        assert!(!p.exists());
    }

    #[test]
    fn write_atomic_from_many_threads_keeps_one_whole_value() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a");
        std::thread::scope(|s| {
            for i in 0..8u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..20 {
                        write_atomic(p, &[i; 4096]).unwrap();
                    }
                });
            }
        });
        let got = fs::read(&p).unwrap();
        assert_eq!(got.len(), 4096);
        assert!(got.iter().all(|b| *b == got[0]));
    }

    #[test]
    fn a_held_lock_is_refused_and_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        assert!(!LockFile::is_held(&p));
        let l = LockFile::try_acquire(&p).unwrap().unwrap();
        assert_eq!(l.path(), p);
        assert!(LockFile::is_held(&p));
        assert!(LockFile::try_acquire(&p).unwrap().is_none());
        drop(l);
        assert!(!LockFile::is_held(&p));
        assert!(LockFile::try_acquire(&p).unwrap().is_some());
    }

    #[test]
    fn now_ms_is_the_epoch_clock() {
        let a = now_ms();
        let b = chrono::Utc::now().timestamp_millis();
        assert!((b - a).abs() < 5_000, "{a} vs {b}");
    }
}
