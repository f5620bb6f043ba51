//! The byte pipelines: hashed durable writes, verified reads, and the fsync/rename helpers.
//!
//! Speed comes from overlapping the costs of a durable hashed write: every [`KICK`] bytes
//! `sync_file_range(SYNC_FILE_RANGE_WRITE)` starts writeback of what was just written, so the disk
//! works while later pieces are still being copied, and the final `fsync` only waits for the tail.
//! Hashing (BLAKE3 ~3.3 GB/s per core, SHA-256 ~1.5 GB/s with SHA-NI) is the one CPU-heavy step:
//! for payloads of at least [`PAR_MIN`] bytes on a machine with a second core it runs on a helper
//! thread beside the writer (the bytes are borrowed immutably, so what is hashed is what is
//! written); otherwise, or when the thread cannot be started, each [`SUB`]-sized piece is hashed
//! inline just before it is written, while it is in the CPU cache. Reads mirror this: the calling
//! thread reads [`PIPE`]-sized pieces into the final buffer (kernel readahead via
//! `POSIX_FADV_SEQUENTIAL`) and hands each finished piece to a hashing thread, so a verified read
//! costs about max(read, hash) instead of their sum. A raw BLAKE3 file of at least [`PAR_MIN`]
//! bytes goes further ([`split`]): it is cut along BLAKE3's own tree and read *and* hashed by up
//! to four threads at once (one per core), each with its own file handle, so with two cores a
//! hot-cache verified load takes about (copy + hash) / 2, less than the one-core copy of a raw
//! read. SHA-256 and zstd files keep the pipeline (neither can be split). With
//! [`RAYON_MIN_CORES`] or more cores the pipeline's hashing thread spreads BLAKE3's tree over
//! rayon's pool; below that a wider hash would only take cores from the read.
//! docs/performance.md has the measurements behind these choices.
//!
//! A raw file that is not in the page cache, loaded or verified with drop-behind on (the
//! default, `keep_in_page_cache = false`), is read with `O_DIRECT` instead ([`direct`]): several
//! requests in flight into reused aligned buffers, nothing entering the page cache.
//!
//! [`write`] holds the hashed durable writes, [`read`] the verified reads, [`split`] the
//! split BLAKE3 read, [`direct`] the cold direct read, [`fs`] the directory helpers (fsync,
//! rename-exchange, removal).

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::OnceLock;
use std::thread;

use crate::error::{Error, Result};
use crate::format::FileEntry;
use crate::hash::{FileHash, HashAlgo, Hasher};

#[cfg(test)]
mod cache_tests;
mod direct;
mod fs;
mod read;
mod split;
mod write;

pub use fs::evict_from_page_cache;
pub(crate) use fs::{exchange, fsync_dir, is_atomic_temp, remove_tree};
#[cfg_attr(not(feature = "object-store"), allow(unused_imports))]
pub(crate) use read::{ZSTD_HEADER_MAX, check_zstd_frame, fill_stored, verify_stored, zeroed};
pub(crate) use read::{read_verified, verify_file};
pub(crate) use write::{
    WriteOpts, replace_atomic, sync_files, write_bytes, write_from_path, write_small_unsynced,
};

/// Size of one write/read/hash chunk.
pub(crate) const CHUNK: usize = 8 << 20;

/// Start writeback after this many new bytes.
const KICK: u64 = 8 << 20;

/// With drop-behind, how far behind the last started writeback the writer waits for the disk
/// and drops pages from the page cache (a few writeback batches stay in flight), and how far
/// behind a reader of a file that was not cached drops what it read ([`DropBehind`]).
const DROP_LAG: u64 = 4 * KICK;

/// Hash-then-write piece size (fits in L2, so the write copies from cache).
const SUB: usize = 1 << 20;

/// Payloads at least this big are hashed on a helper thread when a second core exists.
const PAR_MIN: usize = 4 << 20;

/// Piece handed from the reading thread to the hashing thread (small, so the hash tail after the
/// last read is short).
const PIPE: usize = 2 << 20;

/// With at least this many cores, a hashing thread spreads BLAKE3 over rayon's pool (a reader or
/// writer and the hashing thread itself use two; the rest would otherwise be idle for this work).
pub(crate) const RAYON_MIN_CORES: usize = 4;

fn cores() -> usize {
    static CORES: OnceLock<usize> = OnceLock::new();
    *CORES.get_or_init(|| thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Whether a helper thread can run beside the caller (more than one core available).
fn spare_core() -> bool {
    cores() > 1
}

/// Whether a hashing thread should also use rayon's pool (see [`RAYON_MIN_CORES`]).
fn wide_hash() -> bool {
    cores() >= RAYON_MIN_CORES
}

/// Hints sequential access (doubles readahead on Linux).
fn advise_sequential(file: &File) {
    #[cfg(target_os = "linux")]
    // SAFETY: valid fd; posix_fadvise only reads its arguments.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

/// Drops a range (`len` 0: to the end) from the page cache. Only a hint: dirty pages are kept,
/// so nothing that is not on the disk is lost.
#[cfg(target_os = "linux")]
fn drop_cached(file: &File, offset: u64, len: u64) {
    let (Ok(off), Ok(n)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    // SAFETY: valid fd; posix_fadvise only reads its arguments.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), off, n, libc::POSIX_FADV_DONTNEED);
    }
}

#[cfg(not(target_os = "linux"))]
fn drop_cached(_file: &File, _offset: u64, _len: u64) {}

/// A reader of a file that drops what it has read from the page cache, [`DROP_LAG`] bytes
/// behind it: a load of a file that was not cached then needs its output buffer and a few MiB
/// of cache instead of twice the file's size, and leaves the cache to the training data. On a
/// VM that returns free guest memory to its host, taking a fresh page for every byte read made
/// a cold 2 GiB read swing between 1.1 and 4 s; dropping behind, it ran at 1.0-1.2 s.
struct DropBehind<'a> {
    file: &'a File,
    pos: u64,
    dropped: u64,
}

impl<'a> DropBehind<'a> {
    fn new(file: &'a File) -> Self {
        DropBehind {
            file,
            pos: 0,
            dropped: 0,
        }
    }
}

impl Read for DropBehind<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (&mut &*self.file).read(buf)?;
        if n == 0 && !buf.is_empty() && self.pos > self.dropped {
            // The end: the last stretch too (readers read until a 0, see `ensure_eof`).
            drop_cached(self.file, self.dropped, 0);
            self.dropped = self.pos;
            return Ok(0);
        }
        self.pos += n as u64;
        // One fadvise per DROP_LAG bytes, for the range that is at least DROP_LAG behind.
        if self.pos >= self.dropped + 2 * DROP_LAG {
            let end = self.pos - DROP_LAG;
            drop_cached(self.file, self.dropped, end - self.dropped);
            self.dropped = end;
        }
        Ok(n)
    }
}

/// Reads `reader` to the end in [`SUB`] pieces, hashing each and handing it to `each`. Returns the
/// digest and the byte count.
fn hashed_pump<R: Read>(
    mut reader: R,
    path: &Path,
    algo: HashAlgo,
    mut each: impl FnMut(&[u8]) -> Result<()>,
) -> Result<(FileHash, u64)> {
    let mut h = Hasher::new(algo);
    let mut buf = vec![0u8; SUB];
    let mut n = 0u64;
    loop {
        let k = match reader.read(&mut buf) {
            Ok(0) => return Ok((h.finish(), n)),
            Ok(k) => k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io("read", path, e)),
        };
        h.update(&buf[..k]);
        each(&buf[..k])?;
        n += k as u64;
    }
}

/// Applies `op` to every file, big files (at least [`PAR_MIN`] bytes) on their own threads when
/// there is more than one of them and a second core, so their hashing runs in parallel. Results
/// come back in the order of `files`; on failure, the error of the first failing file in that
/// order.
pub(crate) fn each_file<T: Send>(
    files: &[FileEntry],
    op: impl Fn(&FileEntry) -> Result<T> + Sync,
) -> Result<Vec<T>> {
    let big = files.iter().filter(|f| f.size >= PAR_MIN as u64).count();
    if big < 2 || !spare_core() {
        return files.iter().map(&op).collect();
    }
    thread::scope(|s| {
        let op = &op;
        let handles: Vec<_> = files
            .iter()
            .map(|f| {
                if f.size < PAR_MIN as u64 {
                    return None;
                }
                thread::Builder::new()
                    .name("exptrack-ckpt-load".to_owned())
                    .spawn_scoped(s, move || op(f))
                    .ok()
            })
            .collect();
        files
            .iter()
            .zip(handles)
            .map(|(f, h)| match h {
                Some(h) => h.join().unwrap_or_else(|_| {
                    Err(Error::Worker {
                        message: "checkpoint load thread panicked".to_owned(),
                    })
                }),
                None => op(f),
            })
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    })
}

pub(crate) fn check_digest(path: &Path, entry: &FileEntry, digest: &FileHash) -> Result<()> {
    if digest != &entry.hash {
        return Err(Error::Corrupt {
            path: path.to_owned(),
            algo: entry.hash.algo(),
            expected: entry.hash.hex().to_owned(),
            actual: digest.hex().to_owned(),
        });
    }
    Ok(())
}
