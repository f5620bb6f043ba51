//! Directory helpers: fsync, atomic exchange, removal, page-cache eviction.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{Error, IoContext, Result};

/// Atomically swaps two directory entries (Linux `renameat2(RENAME_EXCHANGE)`). Returns false when the
/// file system does not support it.
#[cfg(target_os = "linux")]
pub(crate) fn exchange(a: &Path, b: &Path) -> Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let ca = CString::new(a.as_os_str().as_bytes())
        .map_err(|e| Error::io("rename", a, io::Error::other(e)))?;
    let cb = CString::new(b.as_os_str().as_bytes())
        .map_err(|e| Error::io("rename", b, io::Error::other(e)))?;
    // SAFETY: both strings are valid NUL-terminated paths that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Ok(false),
        _ => Err(Error::io("rename", b, err)),
    }
}

#[cfg(not(target_os = "linux"))]
pub(crate) fn exchange(_a: &Path, _b: &Path) -> Result<bool> {
    Ok(false)
}

/// Evicts a file's clean pages from the page cache (used by benchmarks for cold reads).
#[doc(hidden)]
pub fn evict_from_page_cache(path: &Path) -> std::io::Result<()> {
    super::drop_cached(&File::open(path)?, 0, 0);
    Ok(())
}

/// Removes a directory tree, treating "already gone" as success.
pub(crate) fn remove_tree(path: &Path) -> Result<()> {
    match std::fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("remove", path, e)),
    }
}

/// fsyncs a directory (makes its entries durable).
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    exptrack_core::fsutil::sync_dir(dir).ctx("fsync", dir)
}

/// Whether `name` is a temporary file of [`exptrack_core::fsutil::write_atomic`]
/// (`.<name>.tmp-<pid>-<n>`), left behind by a crash in the middle of a replace.
pub(crate) fn is_atomic_temp(name: &str) -> bool {
    name.starts_with('.') && name.contains(".tmp-")
}
