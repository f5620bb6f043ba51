//! Hashed durable writes: data files, small metadata files and atomic replaces.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use super::{
    CHUNK, DROP_LAG, KICK, PAR_MIN, PIPE, SUB, advise_sequential, drop_cached, hashed_pump,
    spare_core, wide_hash,
};
use crate::config::Compression;
use crate::error::{Error, IoContext, Result};
use crate::format::{FileEntry, file_entry as entry};
use crate::hash::{FileHash, HashAlgo, Hasher};

/// Runs `work` while `data`'s digest is computed, and returns both. `work` gets a per-piece
/// callback to call with each piece just before writing it, and whether a helper thread is
/// hashing: then the callback is a no-op and the helper hashes the whole of `data` concurrently
/// (so `work` can go on to fsync meanwhile); otherwise (small data, one core, or no thread could
/// be spawned) the callback is the inline hasher. When `work` fails, the helper stops early.
fn hash_beside<T>(
    data: &[u8],
    algo: HashAlgo,
    work: impl FnOnce(&mut dyn FnMut(&[u8]), bool) -> Result<T>,
) -> Result<(T, FileHash)> {
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let stop = &stop;
        let helper = if data.len() >= PAR_MIN && spare_core() {
            thread::Builder::new()
                .name("exptrack-ckpt-hash".to_owned())
                .spawn_scoped(s, move || {
                    let mut h = Hasher::new(algo);
                    let wide = wide_hash();
                    for piece in data.chunks(PIPE) {
                        if stop.load(Ordering::Relaxed) {
                            return None;
                        }
                        h.update_par(piece, wide);
                    }
                    Some(h.finish())
                })
                .ok()
        } else {
            None
        };
        match helper {
            Some(helper) => {
                let result = work(&mut |_| {}, true);
                if result.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                let digest = helper.join();
                result.and_then(|value| match digest {
                    Ok(Some(d)) => Ok((value, d)),
                    _ => Err(Error::Worker {
                        message: "hash thread stopped without a digest".to_owned(),
                    }),
                })
            }
            None => {
                let mut h = Hasher::new(algo);
                let value = work(&mut |piece| h.update(piece), false)?;
                Ok((value, h.finish()))
            }
        }
    })
}

/// Options shared by all writes of one checkpointer.
#[derive(Debug, Clone, Default)]
pub(crate) struct WriteOpts {
    /// fsync files and directories.
    pub fsync: bool,
    /// Drop checkpoint bytes from the page cache behind the writer (with `fsync`, once they are
    /// on the disk) and behind a reader of a file that was not cached (see
    /// [`CheckpointConfig::keep_in_page_cache`](crate::CheckpointConfig::keep_in_page_cache)).
    pub drop_behind: bool,
    /// Fault injection: bytes that may still be written before writes fail with ENOSPC.
    pub budget: Option<Arc<AtomicU64>>,
}

/// A file writer that starts writeback early, can drop what is on the disk from the page cache
/// behind it, and can simulate a full disk.
struct SyncingWriter<'a> {
    file: File,
    opts: &'a WriteOpts,
    written: u64,
    kicked: u64,
    /// Bytes from the start already waited for and dropped from the page cache.
    dropped: u64,
}

impl<'a> SyncingWriter<'a> {
    fn new(file: File, opts: &'a WriteOpts) -> Self {
        SyncingWriter {
            file,
            opts,
            written: 0,
            kicked: 0,
            dropped: 0,
        }
    }

    /// fsyncs now (when fsync is on), e.g. while another thread finishes the digest.
    fn sync_now(&mut self) -> io::Result<()> {
        if self.opts.fsync {
            self.file.sync_all()?;
            self.kicked = self.written;
            if self.opts.drop_behind {
                drop_cached(&self.file, 0, 0);
                self.dropped = self.written;
            }
        }
        Ok(())
    }

    /// With drop-behind: waits until the range that is [`DROP_LAG`] behind the last kick is on
    /// the disk and drops it from the page cache. The writer thus reuses a few MiB of cache pages
    /// instead of taking a fresh page for every byte of a big checkpoint (which would push the
    /// trainer's data out of the cache, and costs a host fault per page on a VM that hands free
    /// guest memory back). A write error found while waiting is returned: the kernel reports it
    /// once, so a later fsync would not see it.
    fn drop_behind(&mut self) -> io::Result<()> {
        if !(self.opts.fsync && self.opts.drop_behind) || self.kicked < self.dropped + DROP_LAG {
            return Ok(());
        }
        let end = self.kicked - DROP_LAG;
        if end > self.dropped {
            wait_written(&self.file, self.dropped, end - self.dropped)?;
            drop_cached(&self.file, self.dropped, end - self.dropped);
            self.dropped = end;
        }
        Ok(())
    }

    /// Starts writeback of the tail and returns the file for a later [`sync_files`].
    fn finish(self) -> (File, u64) {
        if self.opts.fsync && self.written > self.kicked {
            start_writeback(&self.file, self.kicked, self.written - self.kicked);
        }
        (self.file, self.written)
    }
}

impl Write for SyncingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut len = buf.len();
        if let Some(budget) = &self.opts.budget {
            let avail = budget.load(Ordering::SeqCst);
            if avail == 0 && len > 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOSPC));
            }
            len = len.min(usize::try_from(avail).unwrap_or(usize::MAX));
            budget.fetch_sub(len as u64, Ordering::SeqCst);
        }
        let n = self.file.write(&buf[..len])?;
        self.written += n as u64;
        if self.opts.fsync && self.written - self.kicked >= KICK {
            start_writeback(&self.file, self.kicked, self.written - self.kicked);
            self.kicked = self.written;
            self.drop_behind()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Asks the kernel to start writing back a range now. Only a hint: errors surface at fsync.
#[cfg(target_os = "linux")]
fn start_writeback(file: &File, offset: u64, len: u64) {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: the fd is valid for the lifetime of `file`; sync_file_range only reads its arguments.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), off, n, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_file: &File, _offset: u64, _len: u64) {}

/// Writes a range back and waits until it is on the disk (not a durability barrier: the disk's
/// cache and the metadata still need the final fsync). Returns the write error, if any.
#[cfg(target_os = "linux")]
fn wait_written(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return Ok(());
    };
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: the fd is valid for the lifetime of `file`; sync_file_range only reads its arguments.
    let rc = unsafe { libc::sync_file_range(file.as_raw_fd(), off, n, flags) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn wait_written(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Ok(())
}

fn create_new(path: &Path) -> Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .ctx("create", path)
}

/// Threads zstd may use for big inputs.
fn zstd_workers() -> u32 {
    thread::available_parallelism()
        .map(|n| n.get() as u32)
        .unwrap_or(1)
        .clamp(1, 8)
}

fn zstd_encoder<W: Write>(
    sink: W,
    level: i32,
    pledged: Option<u64>,
    path: &Path,
) -> Result<zstd::Encoder<'static, W>> {
    let mut enc = zstd::Encoder::new(sink, level).ctx("zstd init", path)?;
    if pledged.is_none_or(|n| n >= 4 * CHUNK as u64) {
        // Fails only when zstd was built without multithreading; single-threaded is fine then.
        let _ = enc.multithread(zstd_workers());
    }
    enc.set_pledged_src_size(pledged).ctx("zstd init", path)?;
    Ok(enc)
}

/// A written file whose fsync is still due (see [`sync_files`]).
pub(crate) type Unsynced = (std::path::PathBuf, File);

/// fsyncs files concurrently (the journal commits they need are batched), when `opts.fsync`.
pub(crate) fn sync_files(files: Vec<Unsynced>, opts: &WriteOpts) -> Result<()> {
    if !opts.fsync {
        return Ok(());
    }
    let mut files = files.into_iter();
    let Some((first_path, first)) = files.next() else {
        return Ok(());
    };
    thread::scope(|s| {
        let drop_behind = opts.drop_behind;
        let sync = move |p: &Path, f: &File| {
            f.sync_all().ctx("fsync", p)?;
            if drop_behind {
                drop_cached(f, 0, 0);
            }
            Ok(())
        };
        let others: Vec<_> = files.map(|(p, f)| s.spawn(move || sync(&p, &f))).collect();
        let mut result = sync(&first_path, &first);
        for h in others {
            let r = h
                .join()
                .map_err(|_| Error::Worker {
                    message: "fsync thread panicked".to_owned(),
                })
                .and_then(|r| r);
            if result.is_ok() {
                result = r;
            }
        }
        result
    })
}

/// Writes `data` to a new file `path` (compressing if asked) while its digest is computed (see
/// [`hash_beside`]). The returned file still needs [`sync_files`].
pub(crate) fn write_bytes(
    path: &Path,
    name: &str,
    data: &[u8],
    compression: Compression,
    algo: HashAlgo,
    opts: &WriteOpts,
) -> Result<(FileEntry, Unsynced)> {
    let mut w = SyncingWriter::new(create_new(path)?, opts);
    let ((), digest) = hash_beside(data, algo, |on_piece, threaded| {
        match compression {
            Compression::Off => {
                for piece in data.chunks(SUB) {
                    on_piece(piece);
                    w.write_all(piece).ctx("write", path)?;
                }
            }
            Compression::Zstd(level) => {
                let mut enc = zstd_encoder(&mut w, level, Some(data.len() as u64), path)?;
                for piece in data.chunks(SUB) {
                    on_piece(piece);
                    enc.write_all(piece).ctx("write", path)?;
                }
                enc.finish().ctx("write", path)?;
            }
        }
        if threaded {
            // The disk flush does not need the digest: wait for it while the helper hashes
            // (the later `sync_files` then finds nothing left to write).
            w.sync_now().ctx("fsync", path)?;
        }
        Ok(())
    })?;
    let (file, stored) = w.finish();
    Ok((
        entry(name, data.len() as u64, digest, stored, compression),
        (path.to_owned(), file),
    ))
}

/// Copies the file `src` into a new file `path`, hashing each piece as it passes. The returned file
/// still needs [`sync_files`].
pub(crate) fn write_from_path(
    path: &Path,
    name: &str,
    src: &Path,
    compression: Compression,
    algo: HashAlgo,
    opts: &WriteOpts,
) -> Result<(FileEntry, Unsynced)> {
    let source = File::open(src).ctx("open", src)?;
    advise_sequential(&source);
    let pledged = source.metadata().ok().map(|m| m.len());
    let mut w = SyncingWriter::new(create_new(path)?, opts);
    let (digest, size) = match compression {
        Compression::Off => hashed_pump(&source, src, algo, |piece| {
            w.write_all(piece).ctx("write", path)
        })?,
        Compression::Zstd(level) => {
            let mut enc = zstd_encoder(&mut w, level, pledged, path)?;
            let r = hashed_pump(&source, src, algo, |piece| {
                enc.write_all(piece).ctx("write", path)
            })?;
            enc.finish().ctx("write", path)?;
            r
        }
    };
    let (file, stored) = w.finish();
    Ok((
        entry(name, size, digest, stored, compression),
        (path.to_owned(), file),
    ))
}

/// Writes a small file (writeback started) whose fsync is still due.
pub(crate) fn write_small_unsynced(
    path: &Path,
    bytes: &[u8],
    opts: &WriteOpts,
) -> Result<(Unsynced, u64)> {
    let mut w = SyncingWriter::new(create_new(path)?, opts);
    w.write_all(bytes).ctx("write", path)?;
    let (file, n) = w.finish();
    Ok(((path.to_owned(), file), n))
}

/// Atomically replaces `dir/name` with `bytes`. Durable (`opts.fsync`): the project's one
/// atomic replace, [`exptrack_core::fsutil::write_atomic`] (temp file, fsync, rename, directory
/// fsync). Without fsync (scratch runs): a temp file renamed into place, atomic against process
/// crashes only.
pub(crate) fn replace_atomic(dir: &Path, name: &str, bytes: &[u8], opts: &WriteOpts) -> Result<()> {
    let target = dir.join(name);
    if opts.fsync {
        return exptrack_core::fsutil::write_atomic(&target, bytes).ctx("replace", &target);
    }
    let tmp = dir.join(format!(
        "{}{name}-{}",
        crate::format::TMP_PREFIX,
        std::process::id()
    ));
    let result = std::fs::write(&tmp, bytes)
        .ctx("write", &tmp)
        .and_then(|()| std::fs::rename(&tmp, &target).ctx("rename", &target));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
