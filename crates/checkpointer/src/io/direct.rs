//! Verified reads of files that are not in the page cache, with `O_DIRECT`: the disk writes
//! straight into a few reused, aligned buffers, several requests at a time, and nothing of the
//! file enters the page cache.
//!
//! Why: a buffered read of a cold file makes the kernel take a fresh page-cache page for every
//! 4 KiB it reads (and [`super::DropBehind`] then gives them back), and its readahead keeps only
//! a few hundred KiB in flight. On the VM where the checkpoint bench runs, a cold 512 MiB verified
//! load through that pipeline took 345-400 ms against 260-340 ms for one plain `read()` of the
//! whole file; with [`READERS`] direct requests of [`PIECE`] bytes in flight it took 265-310 ms,
//! and a cold 64 MiB load 38-40 ms against 45-51 ms (docs/performance.md).
//!
//! [`read_direct`] is used only where the page cache is not wanted anyway: a cold load or verify
//! with drop-behind on (`keep_in_page_cache = false`). Where the file system refuses direct I/O
//! (`EINVAL`, e.g. some network or FUSE file systems) it returns `None` and the caller reads
//! through the page cache as before. The kernel keeps direct reads coherent with the page cache
//! (dirty pages are written back first), so a partly cached file reads correctly too.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::Path;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;

use super::wide_hash;
use crate::error::{Error, Result};
use crate::hash::{FileHash, HashAlgo, Hasher};

/// Bytes one direct request reads (a multiple of [`ALIGN`]).
pub(super) const PIECE: usize = 2 << 20;

/// Direct requests in flight at once, one per reader thread (the threads mostly wait on the
/// disk, so they do not need cores of their own). 4 x 2 MiB beat 1, 2, 6, 8 and 16 readers and
/// 1, 4, 8 and 16 MiB pieces on this VM's virtio disk, within noise of 6 x 2 MiB.
const READERS: usize = 4;

/// Buffers per reader: a reader can start its next request while the caller still hashes the
/// previous one, and pieces that finish out of order wait their turn.
const BUFFERS_PER_READER: usize = 2;

/// Alignment of buffers, offsets and lengths for `O_DIRECT` (the largest logical block size in
/// use, 4 KiB, also covers 512-byte devices).
const ALIGN: usize = 4096;

/// How a reader stopped early.
enum Stop {
    /// The file system refused direct I/O: read through the page cache instead.
    Unsupported,
    /// A real failure, reported to the caller.
    Failed(Error),
}

/// Reads a file of `len` bytes with `O_DIRECT` and returns its `algo` digest, copying the bytes
/// into `out` when given (`out.len()` must be `len`). `None`: direct I/O is not available for
/// this file (not Linux, the file system refused it, or no reader thread could start); `file`
/// is left as it was and the caller reads it the usual way. `path` names the file in errors.
pub(crate) fn read_direct(
    file: &File,
    path: &Path,
    len: u64,
    algo: HashAlgo,
    out: Option<&mut [u8]>,
) -> Option<Result<FileHash>> {
    if out.as_ref().is_some_and(|o| o.len() as u64 != len) {
        return None;
    }
    let _direct = DirectMode::enable(file)?;
    let read_at = |buf: &mut [u8], offset: u64| {
        use std::os::unix::fs::FileExt;
        file.read_at(buf, offset)
    };
    let result = pump(read_at, path, len, algo, out)?;
    // A file that grew after its length was checked is not the file that was saved.
    Some(result.and_then(|digest| match file.metadata() {
        Ok(m) if m.len() == len => Ok(digest),
        Ok(m) => Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected: len,
            actual: m.len(),
        }),
        Err(e) => Err(Error::io("stat", path, e)),
    }))
}

/// Turns `O_DIRECT` on for an open file and off again when dropped (the flag belongs to the open
/// file description, which only this process's handle uses).
struct DirectMode<'a> {
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    file: &'a File,
}

impl<'a> DirectMode<'a> {
    #[cfg(target_os = "linux")]
    fn enable(file: &'a File) -> Option<Self> {
        set_direct(file, true).then_some(DirectMode { file })
    }

    #[cfg(not(target_os = "linux"))]
    fn enable(_file: &'a File) -> Option<Self> {
        None
    }
}

impl Drop for DirectMode<'_> {
    fn drop(&mut self) {
        #[cfg(target_os = "linux")]
        set_direct(self.file, false);
    }
}

/// Sets or clears `O_DIRECT` with `fcntl(F_SETFL)`; false where that fails (a file system
/// without direct I/O answers `EINVAL`).
#[cfg(target_os = "linux")]
fn set_direct(file: &File, on: bool) -> bool {
    use std::os::fd::AsRawFd;
    let fd = file.as_raw_fd();
    // SAFETY: valid fd; F_GETFL takes no argument.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return false;
    }
    let flags = if on {
        flags | libc::O_DIRECT
    } else {
        flags & !libc::O_DIRECT
    };
    // SAFETY: valid fd; F_SETFL takes an int of flags.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) == 0 }
}

/// A heap buffer aligned to [`ALIGN`], [`PIECE`] bytes long.
struct Aligned(NonNull<u8>);

// SAFETY: the buffer is plain owned memory; only its owner reaches it.
unsafe impl Send for Aligned {}

impl Aligned {
    const LAYOUT: std::alloc::Layout = match std::alloc::Layout::from_size_align(PIECE, ALIGN) {
        Ok(layout) => layout,
        Err(_) => panic!("PIECE and ALIGN make a valid layout"),
    };

    fn new() -> Option<Self> {
        // SAFETY: LAYOUT has a non-zero size.
        NonNull::new(unsafe { std::alloc::alloc(Self::LAYOUT) }).map(Aligned)
    }

    fn as_mut(&mut self) -> &mut [u8] {
        // SAFETY: the pointer owns PIECE bytes (allocated in `new`, freed only in `drop`). They
        // may be uninitialized, but u8 has no invalid values and the kernel, not Rust, writes
        // them; only the bytes a read reports are ever looked at.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_ptr(), PIECE) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with LAYOUT, freed once.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), Self::LAYOUT) }
    }
}

/// The engine behind [`read_direct`], over any positioned read (`read_at(buf, offset)`, as
/// `pread`), so that its error paths can be tested with injected faults. Reader threads take
/// a free buffer, then the next piece's number, read the piece (retrying short reads and
/// `EINTR`), copy it into its place in `out`, and send the buffer to the calling thread, which
/// hashes the pieces in file order and hands the buffers back. A reader takes its buffer before
/// its piece, so the lowest piece not yet hashed is always held by a reader that can finish it:
/// the buffers cannot all end up waiting. `None`: `read_at` answered `EINVAL`
/// ([`io::ErrorKind::InvalidInput`]) or no thread or buffer could be had.
fn pump<F>(
    read_at: F,
    path: &Path,
    len: u64,
    algo: HashAlgo,
    out: Option<&mut [u8]>,
) -> Option<Result<FileHash>>
where
    F: Fn(&mut [u8], u64) -> io::Result<usize> + Sync,
{
    let len_usize = usize::try_from(len).ok()?;
    let pieces = len_usize.div_ceil(PIECE);
    // The places in `out` the pieces go to, taken in order by the readers with their numbers.
    let places: Box<dyn Iterator<Item = (usize, Option<&mut [u8]>)> + Send> = match out {
        Some(out) => Box::new(out.chunks_mut(PIECE).map(Some).enumerate()),
        None => Box::new((0..pieces).map(|i| (i, None))),
    };
    let places = Mutex::new(places);
    let readers = READERS.min(pieces.max(1));
    let (pool_tx, pool_rx) = mpsc::channel::<Aligned>();
    for _ in 0..readers * BUFFERS_PER_READER {
        pool_tx.send(Aligned::new()?).ok()?;
    }
    let pool_rx = Mutex::new(pool_rx);
    let stop = AtomicBool::new(false);
    let stopped: Mutex<Option<Stop>> = Mutex::new(None);
    let failed = |why: Stop| {
        stop.store(true, Ordering::Relaxed);
        if let Ok(mut first) = stopped.lock() {
            first.get_or_insert(why);
        }
    };
    let (digest, hashed) = thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::channel::<(usize, Aligned, usize)>();
        let mut started = 0;
        for _ in 0..readers {
            let full_tx = full_tx.clone();
            let pool_tx = pool_tx.clone();
            let (places, pool_rx, stop, failed, read_at) =
                (&places, &pool_rx, &stop, &failed, &read_at);
            let reader = move || {
                loop {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let next = pool_rx.lock().ok().and_then(|rx| rx.recv().ok());
                    let Some(mut buf) = next else { break };
                    let next = places.lock().ok().and_then(|mut p| p.next());
                    let Some((i, place)) = next else {
                        // No piece left: the buffer wakes the next reader waiting for one.
                        let _ = pool_tx.send(buf);
                        break;
                    };
                    match read_piece(read_at, buf.as_mut(), i, len, path) {
                        Ok(n) => {
                            if let Some(place) = place {
                                place.copy_from_slice(&buf.as_mut()[..n]);
                            }
                            if full_tx.send((i, buf, n)).is_err() {
                                break;
                            }
                        }
                        Err(why) => {
                            failed(why);
                            // Wakes a reader waiting for a buffer, which then sees `stop`.
                            let _ = pool_tx.send(buf);
                            break;
                        }
                    }
                }
            };
            let spawned = thread::Builder::new()
                .name("exptrack-ckpt-direct".to_owned())
                .spawn_scoped(s, reader);
            if spawned.is_ok() {
                started += 1;
            }
        }
        drop(full_tx);
        if started == 0 {
            return None;
        }
        let mut h = Hasher::new(algo);
        let wide = wide_hash();
        let mut waiting = BTreeMap::new();
        let mut next = 0;
        for (i, buf, n) in full_rx {
            waiting.insert(i, (buf, n));
            while let Some((mut buf, n)) = waiting.remove(&next) {
                h.update_par(&buf.as_mut()[..n], wide);
                next += 1;
                let _ = pool_tx.send(buf);
            }
        }
        Some((h.finish(), next))
    })?;
    match stopped.into_inner().ok().flatten() {
        Some(Stop::Unsupported) => None,
        Some(Stop::Failed(e)) => Some(Err(e)),
        None if hashed == pieces => Some(Ok(digest)),
        None => Some(Err(Error::Worker {
            message: format!(
                "direct read of {} stopped after {hashed} of {pieces} pieces",
                path.display()
            ),
        })),
    }
}

/// Reads piece `i` of a `len`-byte file into `buf` (the request rounded up to [`ALIGN`]);
/// returns its length, which must be what the file's length says.
fn read_piece<F>(
    read_at: &F,
    buf: &mut [u8],
    i: usize,
    len: u64,
    path: &Path,
) -> std::result::Result<usize, Stop>
where
    F: Fn(&mut [u8], u64) -> io::Result<usize>,
{
    let offset = (i as u64) * PIECE as u64;
    // Both fit: offset < len, and a piece is at most PIECE bytes.
    let want = (len - offset).min(PIECE as u64) as usize;
    let request = want.next_multiple_of(ALIGN).min(buf.len());
    let mut got = 0;
    while got < want {
        match read_at(&mut buf[got..request], offset + got as u64) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return Err(Stop::Unsupported),
            Err(e) => return Err(Stop::Failed(Error::io("read", path, e))),
        }
    }
    if got != want {
        // Shorter than its length said, or (the last piece) longer: not the saved file.
        return Err(Stop::Failed(Error::SizeMismatch {
            path: path.to_owned(),
            expected: len,
            actual: offset + got as u64,
        }));
    }
    Ok(want)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::atomic::AtomicUsize;

    fn data(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 253) as u8).collect()
    }

    /// A `read_at` over bytes in memory that answers like `pread`, in pieces of at most
    /// `max` bytes (short reads), failing with `fail` at `fail_at` when given.
    fn mem_read(
        bytes: &[u8],
        max: usize,
        fail: Option<(u64, io::ErrorKind)>,
    ) -> impl Fn(&mut [u8], u64) -> io::Result<usize> + Sync + '_ {
        move |buf: &mut [u8], offset: u64| {
            if let Some((at, kind)) = fail
                && offset <= at
                && at < offset + buf.len() as u64
            {
                return Err(io::Error::from(kind));
            }
            let start = (offset as usize).min(bytes.len());
            let n = (bytes.len() - start).min(buf.len()).min(max);
            buf[..n].copy_from_slice(&bytes[start..start + n]);
            Ok(n)
        }
    }

    const SIZES: [usize; 6] = [
        1,
        ALIGN - 1,
        PIECE,
        PIECE + 1,
        3 * PIECE + 12_345,
        (READERS * BUFFERS_PER_READER + 3) * PIECE,
    ];

    #[test]
    fn every_byte_lands_in_place_and_the_digest_is_the_whole_files() {
        for algo in [HashAlgo::Blake3, HashAlgo::Sha256] {
            for len in SIZES {
                let bytes = data(len);
                // Short reads of odd sizes: the retry loop must put every byte in place.
                for max in [usize::MAX, 1 << 20, 77_777] {
                    let mut out = vec![0u8; len];
                    let digest = pump(
                        mem_read(&bytes, max, None),
                        Path::new("f"),
                        len as u64,
                        algo,
                        Some(&mut out),
                    )
                    .expect("no fallback")
                    .unwrap();
                    assert_eq!(digest, algo.digest(&bytes), "{algo:?} {len} {max}");
                    assert!(out == bytes, "{algo:?} len {len} max {max}: bytes differ");
                    let streamed = pump(
                        mem_read(&bytes, max, None),
                        Path::new("f"),
                        len as u64,
                        algo,
                        None,
                    )
                    .expect("no fallback")
                    .unwrap();
                    assert_eq!(streamed, digest);
                }
            }
        }
    }

    #[test]
    fn a_shorter_or_longer_file_is_a_size_mismatch() {
        let len = 3 * PIECE + 100;
        let bytes = data(len);
        for (actual, what) in [(len - 5000, "shorter"), (len + 10, "longer")] {
            let on_disk = data(actual);
            let mut out = vec![0u8; len];
            let err = pump(
                mem_read(&on_disk, usize::MAX, None),
                Path::new("f"),
                len as u64,
                HashAlgo::Blake3,
                Some(&mut out),
            )
            .expect("no fallback")
            .unwrap_err();
            assert!(matches!(err, Error::SizeMismatch { .. }), "{what}: {err}");
        }
        drop(bytes);
    }

    #[test]
    fn an_io_error_is_reported_and_einval_falls_back() {
        let len = 9 * PIECE;
        let bytes = data(len);
        for at in [0u64, (4 * PIECE + 10) as u64, (len - 1) as u64] {
            let err = pump(
                mem_read(&bytes, usize::MAX, Some((at, io::ErrorKind::Other))),
                Path::new("model.bin"),
                len as u64,
                HashAlgo::Blake3,
                Some(&mut vec![0u8; len]),
            )
            .expect("an I/O error is not a fallback")
            .unwrap_err();
            assert!(
                matches!(&err, Error::Io { path, .. } if path == Path::new("model.bin")),
                "{err}"
            );
            let fallback = pump(
                mem_read(&bytes, usize::MAX, Some((at, io::ErrorKind::InvalidInput))),
                Path::new("f"),
                len as u64,
                HashAlgo::Blake3,
                None,
            );
            assert!(fallback.is_none(), "EINVAL at {at} should fall back");
        }
    }

    #[test]
    fn interrupted_reads_are_retried() {
        let len = 2 * PIECE + 3;
        let bytes = data(len);
        let tries = AtomicUsize::new(0);
        let inner = mem_read(&bytes, usize::MAX, None);
        let flaky = |buf: &mut [u8], offset: u64| {
            if tries.fetch_add(1, Ordering::Relaxed).is_multiple_of(2) {
                return Err(io::Error::from(io::ErrorKind::Interrupted));
            }
            inner(buf, offset)
        };
        let digest = pump(flaky, Path::new("f"), len as u64, HashAlgo::Blake3, None)
            .expect("no fallback")
            .unwrap();
        assert_eq!(digest, HashAlgo::Blake3.digest(&bytes));
    }

    #[test]
    fn a_real_file_reads_back_verified_where_direct_io_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        let len = 2 * PIECE + 4097;
        let bytes = data(len);
        std::fs::File::create(&path)
            .unwrap()
            .write_all(&bytes)
            .unwrap();
        let file = File::open(&path).unwrap();
        let mut out = vec![0u8; len];
        match read_direct(&file, &path, len as u64, HashAlgo::Blake3, Some(&mut out)) {
            Some(digest) => {
                assert_eq!(digest.unwrap(), HashAlgo::Blake3.digest(&bytes));
                assert!(out == bytes);
            }
            None => eprintln!("no direct I/O on this file system; the fallback is tested above"),
        }
        // Whatever happened, the handle reads normally again (O_DIRECT cleared).
        let mut first = [0u8; 3];
        use std::os::unix::fs::FileExt;
        file.read_exact_at(&mut first, 1).unwrap();
        assert_eq!(first, bytes[1..4]);
        // The wrong length is refused, not read.
        assert!(
            read_direct(
                &file,
                &path,
                len as u64 + 1,
                HashAlgo::Blake3,
                Some(&mut out)
            )
            .is_none()
        );
    }
}
