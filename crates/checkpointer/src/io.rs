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
//! costs about max(read, hash) instead of their sum; BLAKE3 is faster than the read, so that is
//! the read. With [`RAYON_MIN_CORES`] or more cores the hashing thread also spreads BLAKE3's tree
//! over rayon's pool; below that a wider hash would only take cores from the read.
//! docs/performance.md has the measurements behind these choices.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::thread;

use crate::config::Compression;
use crate::error::{Error, IoContext, Result};
use crate::format::{Encoding, FileEntry};
use crate::hash::{FileHash, HashAlgo, Hasher};

/// Size of one write/read/hash chunk.
pub(crate) const CHUNK: usize = 8 << 20;
/// Start writeback after this many new bytes.
const KICK: u64 = 8 << 20;
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
    /// Fault injection: bytes that may still be written before writes fail with ENOSPC.
    pub budget: Option<Arc<AtomicU64>>,
}

/// A file writer that starts writeback early and can simulate a full disk.
struct SyncingWriter<'a> {
    file: File,
    opts: &'a WriteOpts,
    written: u64,
    kicked: u64,
}

impl<'a> SyncingWriter<'a> {
    fn new(file: File, opts: &'a WriteOpts) -> Self {
        SyncingWriter {
            file,
            opts,
            written: 0,
            kicked: 0,
        }
    }

    /// fsyncs now (when fsync is on), e.g. while another thread finishes the digest.
    fn sync_now(&mut self) -> io::Result<()> {
        if self.opts.fsync {
            self.file.sync_all()?;
            self.kicked = self.written;
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

fn entry(
    name: &str,
    size: u64,
    hash: FileHash,
    stored_size: u64,
    compression: Compression,
) -> FileEntry {
    FileEntry {
        name: name.to_owned(),
        size,
        hash,
        stored_size,
        encoding: match compression {
            Compression::Off => Encoding::Raw,
            Compression::Zstd(_) => Encoding::Zstd,
        },
    }
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
        let others: Vec<_> = files
            .map(|(p, f)| s.spawn(move || f.sync_all().ctx("fsync", &p)))
            .collect();
        let mut result = first.sync_all().ctx("fsync", &first_path);
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

/// Reads a stored file completely into memory, decompressing if needed, and checks its size and
/// digest (each piece is hashed right after it is read, while readahead fetches the next).
///
/// Nothing is allocated before the sizes recorded in `entry` agree with the file on disk: its
/// length must be `stored_size`, raw content must be that long too, and a zstd frame must declare
/// `size` as its content size (when it declares one). The buffer itself is allocated fallibly.
pub(crate) fn read_verified(path: &Path, entry: &FileEntry) -> Result<Vec<u8>> {
    let file = File::open(path).ctx("open", path)?;
    let on_disk = check_stored_len(&file, path, entry)?;
    if entry.encoding == Encoding::Raw && entry.size != on_disk {
        return Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected: entry.size,
            actual: on_disk,
        });
    }
    if entry.encoding == Encoding::Zstd {
        check_zstd_header(&file, path, entry)?;
    }
    advise_sequential(&file);
    let mut out = zeroed(entry.size).ok_or_else(|| Error::OutOfMemory {
        path: path.to_owned(),
        bytes: entry.size,
    })?;
    let digest = match entry.encoding {
        Encoding::Raw => fill_hashed(file, &mut out, path, false, entry.hash.algo())?,
        Encoding::Zstd => {
            let dec = zstd::Decoder::new(file).map_err(|source| Error::Decompress {
                path: path.to_owned(),
                source,
            })?;
            fill_hashed(dec, &mut out, path, true, entry.hash.algo())?
        }
    };
    check_digest(path, entry, &digest)?;
    Ok(out)
}

/// A zero-filled buffer of `len` bytes, or None when it cannot be allocated (instead of aborting
/// the process). Like `vec![0; len]` the pages come zeroed from the allocator, not by a memset.
fn zeroed(len: u64) -> Option<Vec<u8>> {
    let len = usize::try_from(len).ok()?;
    if len == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<u8>(len).ok()?;
    // SAFETY: `layout` has a non-zero size (len > 0).
    let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: `ptr` comes from the global allocator with the layout of a `Vec<u8>` of capacity
    // `len` (align 1, `len` bytes), and all `len` bytes are initialized (zeroed).
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Checks a zstd file's declared content size (frame header) against `entry.size`, before a
/// buffer of that size is made.
fn check_zstd_header(file: &File, path: &Path, entry: &FileEntry) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; 18];
    let mut n = 0;
    while n < header.len() {
        match file.read_at(&mut header[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    match zstd::zstd_safe::get_frame_content_size(&header[..n]) {
        Ok(Some(declared)) if declared != entry.size => Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected: entry.size,
            actual: declared,
        }),
        Ok(_) => Ok(()),
        Err(_) => Err(Error::Decompress {
            path: path.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidData, "not a zstd frame"),
        }),
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

/// Hashes a stored file without keeping it in memory.
pub(crate) fn verify_file(path: &Path, entry: &FileEntry) -> Result<()> {
    let file = File::open(path).ctx("open", path)?;
    check_stored_len(&file, path, entry)?;
    advise_sequential(&file);
    let algo = entry.hash.algo();
    let (digest, n) = match entry.encoding {
        Encoding::Raw => hashed_drain(file, path, entry.size, algo)?,
        Encoding::Zstd => {
            let dec = zstd::Decoder::new(file).map_err(|source| Error::Decompress {
                path: path.to_owned(),
                source,
            })?;
            hashed_drain(DecodeErrors(dec), path, entry.size, algo)
                .map_err(|e| as_decompress(e, path))?
        }
    };
    if n != entry.size {
        return Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected: entry.size,
            actual: n,
        });
    }
    check_digest(path, entry, &digest)
}

/// Reads `reader` to the end and returns its digest and length, keeping nothing. When `expected`
/// bytes are many and a second core exists, a helper thread hashes while this one reads (a few
/// [`PIPE`]-sized buffers go back and forth); otherwise [`hashed_pump`].
fn hashed_drain<R: Read>(
    mut reader: R,
    path: &Path,
    expected: u64,
    algo: HashAlgo,
) -> Result<(FileHash, u64)> {
    if expected < PAR_MIN as u64 || !spare_core() {
        return hashed_pump(reader, path, algo, |_| Ok(()));
    }
    let piped = thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::channel::<(Vec<u8>, usize)>();
        let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
        let spawned = thread::Builder::new()
            .name("exptrack-ckpt-hash".to_owned())
            .spawn_scoped(s, move || {
                let mut h = Hasher::new(algo);
                let wide = wide_hash();
                for (buf, k) in full_rx {
                    h.update_par(&buf[..k], wide);
                    // The reader may have stopped already; the buffer is simply dropped then.
                    let _ = empty_tx.send(buf);
                }
                h.finish()
            });
        let Ok(hasher) = spawned else {
            return None;
        };
        let mut spare: Vec<Vec<u8>> = (0..3).map(|_| vec![0u8; PIPE]).collect();
        let mut n = 0u64;
        let mut result = Ok(());
        loop {
            let mut buf = match spare.pop() {
                Some(b) => b,
                None => match empty_rx.recv() {
                    Ok(b) => b,
                    Err(_) => break,
                },
            };
            let k = match read_full(&mut reader, &mut buf) {
                Ok(0) => break,
                Ok(k) => k,
                Err(e) => {
                    result = Err(Error::io("read", path, e));
                    break;
                }
            };
            n += k as u64;
            if full_tx.send((buf, k)).is_err() {
                break;
            }
        }
        drop(full_tx);
        let digest = hasher.join().map_err(|_| Error::Worker {
            message: "hash thread panicked".to_owned(),
        });
        Some(result.and(digest).map(|d| (d, n)))
    });
    match piped {
        Some(result) => result,
        None => hashed_pump(reader, path, algo, |_| Ok(())),
    }
}

/// Reads until `buf` is full or the reader ends; returns the bytes read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut k = 0;
    while k < buf.len() {
        match reader.read(&mut buf[k..]) {
            Ok(0) => break,
            Ok(m) => k += m,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(k)
}

/// Marks decoder errors so they can be told apart from I/O errors.
struct DecodeErrors<R>(R);

impl<R: Read> Read for DecodeErrors<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0
            .read(buf)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

fn as_decompress(e: Error, path: &Path) -> Error {
    match e {
        Error::Io { source, .. } if source.kind() == io::ErrorKind::InvalidData => {
            Error::Decompress {
                path: path.to_owned(),
                source,
            }
        }
        other => other,
    }
}

/// The file's length, which must be `entry.stored_size`.
fn check_stored_len(file: &File, path: &Path, entry: &FileEntry) -> Result<u64> {
    let len = file.metadata().ctx("stat", path)?.len();
    if len != entry.stored_size {
        return Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected: entry.stored_size,
            actual: len,
        });
    }
    Ok(len)
}

fn check_digest(path: &Path, entry: &FileEntry, digest: &FileHash) -> Result<()> {
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

/// Fills `out` from `reader` and returns the digest of what was read. The reader must then be at
/// its end. Big buffers are hashed on a helper thread, [`PIPE`] bytes behind the reader; small ones
/// (or with one core) piece by piece while each is still in cache.
fn fill_hashed<R: Read>(
    mut reader: R,
    out: &mut [u8],
    path: &Path,
    compressed: bool,
    algo: HashAlgo,
) -> Result<FileHash> {
    let expected = out.len() as u64;
    let fill = |reader: &mut R, piece: &mut [u8], done: u64| {
        reader.read_exact(piece).map_err(|source| {
            if source.kind() == io::ErrorKind::UnexpectedEof {
                Error::SizeMismatch {
                    path: path.to_owned(),
                    expected,
                    actual: done,
                }
            } else if compressed {
                Error::Decompress {
                    path: path.to_owned(),
                    source,
                }
            } else {
                Error::io("read", path, source)
            }
        })
    };
    if out.len() >= PAR_MIN && spare_core() {
        let piped = thread::scope(|s| {
            let (tx, rx) = mpsc::channel::<&[u8]>();
            let spawned = thread::Builder::new()
                .name("exptrack-ckpt-hash".to_owned())
                .spawn_scoped(s, move || {
                    let mut h = Hasher::new(algo);
                    let wide = wide_hash();
                    for piece in rx {
                        h.update_par(piece, wide);
                    }
                    h.finish()
                });
            let Ok(hasher) = spawned else {
                return None;
            };
            let mut done = 0u64;
            let mut result = Ok(());
            for piece in out.chunks_mut(PIPE) {
                if let Err(e) = fill(&mut reader, piece, done) {
                    result = Err(e);
                    break;
                }
                done += piece.len() as u64;
                let filled: &[u8] = piece;
                if tx.send(filled).is_err() {
                    break;
                }
            }
            drop(tx);
            let digest = hasher.join().map_err(|_| Error::Worker {
                message: "hash thread panicked".to_owned(),
            });
            Some(result.and(digest))
        });
        if let Some(result) = piped {
            let digest = result?;
            ensure_eof(&mut reader, path, expected, compressed)?;
            return Ok(digest);
        }
    }
    let mut h = Hasher::new(algo);
    let mut done = 0u64;
    for piece in out.chunks_mut(SUB) {
        fill(&mut reader, piece, done)?;
        h.update(&*piece);
        done += piece.len() as u64;
    }
    ensure_eof(&mut reader, path, expected, compressed)?;
    Ok(h.finish())
}

fn ensure_eof<R: Read>(reader: &mut R, path: &Path, expected: u64, compressed: bool) -> Result<()> {
    let mut probe = [0u8; 1];
    match reader.read(&mut probe) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected,
            actual: expected + 1,
        }),
        Err(source) if compressed => Err(Error::Decompress {
            path: path.to_owned(),
            source,
        }),
        Err(source) => Err(Error::io("read", path, source)),
    }
}

/// fsyncs a directory (makes its entries durable).
pub(crate) fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx("fsync", dir)
}

/// Writes a small file (JSON) to a new path, fsynced when asked.
pub(crate) fn write_small(path: &Path, bytes: &[u8], opts: &WriteOpts) -> Result<()> {
    let (unsynced, _) = write_small_unsynced(path, bytes, opts)?;
    sync_files(vec![unsynced], opts)
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

/// Atomically replaces `dir/name` with `bytes`: temp file, fsync, rename, fsync dir.
pub(crate) fn replace_atomic(dir: &Path, name: &str, bytes: &[u8], opts: &WriteOpts) -> Result<()> {
    let tmp = dir.join(format!(
        "{}{name}-{}",
        crate::format::TMP_PREFIX,
        std::process::id()
    ));
    let target = dir.join(name);
    let _ = std::fs::remove_file(&tmp);
    let result = write_small(&tmp, bytes, opts)
        .and_then(|()| std::fs::rename(&tmp, &target).ctx("rename", &target));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    if opts.fsync {
        fsync_dir(dir)?;
    }
    Ok(())
}

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
    let f = File::open(path)?;
    #[cfg(target_os = "linux")]
    // SAFETY: valid fd; posix_fadvise only reads its arguments.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
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
