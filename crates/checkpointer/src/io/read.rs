//! Verified reads: whole files into memory, or streamed through the hash only.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;
use std::sync::mpsc;
use std::thread;

use super::{
    DropBehind, PAR_MIN, PIPE, SUB, advise_sequential, check_digest, cores, direct, hashed_pump,
    spare_core, split, wide_hash,
};
use crate::error::{Error, IoContext, Result};
use crate::format::{Encoding, FileEntry};
use crate::hash::{FileHash, HashAlgo, Hasher};

/// Reads a stored file completely into memory, decompressing if needed, and checks its size and
/// digest (each piece is hashed right after it is read, while readahead fetches the next; a large
/// raw BLAKE3 file on several threads at once, see [`split`]).
///
/// Nothing is allocated before the sizes recorded in `entry` agree with the file on disk: its
/// length must be `stored_size`, raw content must be that long too, and a zstd frame must declare
/// `size` as its content size (when it declares one). The buffer itself is allocated fallibly.
///
/// With `drop_behind`, a big file that was not in the page cache stays out of it: a raw one is
/// read with `O_DIRECT` ([`direct`]), a compressed one (or where direct I/O is refused) is
/// dropped from the cache as it is read ([`DropBehind`]); a cached file stays cached.
pub(crate) fn read_verified(path: &Path, entry: &FileEntry, drop_behind: bool) -> Result<Vec<u8>> {
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
    let algo = entry.hash.algo();
    // The stored length (a zstd file is shorter than its content).
    let cache = Cache::of(&file, on_disk);
    let split = if entry.encoding == Encoding::Raw
        && algo == HashAlgo::Blake3
        && cache == (Cache::Big { cached: true })
        && spare_core()
    {
        split::fill_split(path, &mut out, cores())
    } else {
        None
    };
    let cold = drop_behind && cache == (Cache::Big { cached: false });
    let direct = if cold && entry.encoding == Encoding::Raw && split.is_none() {
        direct::read_direct(&file, path, on_disk, algo, Some(&mut out))
    } else {
        None
    };
    let digest = match (split, direct) {
        (Some(digest), _) | (None, Some(digest)) => digest?,
        (None, None) if cold => fill_stored(DropBehind::new(&file), &mut out, path, entry)?,
        (None, None) => fill_stored(&file, &mut out, path, entry)?,
    };
    check_digest(path, entry, &digest)?;
    Ok(out)
}

/// What the page cache holds of a file, for the read strategy: small files are not probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cache {
    /// Below [`PAR_MIN`]: read plainly, never split nor dropped.
    Small,
    /// At least [`PAR_MIN`] bytes; whether it looks resident ([`split::looks_cached`]).
    Big { cached: bool },
}

impl Cache {
    fn of(file: &File, len: u64) -> Self {
        if len < PAR_MIN as u64 {
            Cache::Small
        } else {
            Cache::Big {
                cached: split::looks_cached(file, len),
            }
        }
    }
}

/// Fills `out` (`entry.size` bytes) with the content of the stored bytes `stored` yields
/// (decompressed per `entry.encoding`), hashing it as it fills ([`fill_hashed`]); returns the
/// digest. `path` names the file in errors.
pub(crate) fn fill_stored<R: Read>(
    stored: R,
    out: &mut [u8],
    path: &Path,
    entry: &FileEntry,
) -> Result<FileHash> {
    let algo = entry.hash.algo();
    match entry.encoding {
        Encoding::Raw => fill_hashed(stored, out, path, false, algo),
        Encoding::Zstd => {
            let dec = zstd::Decoder::new(stored).map_err(|source| Error::Decompress {
                path: path.to_owned(),
                source,
            })?;
            fill_hashed(dec, out, path, true, algo)
        }
    }
}

/// A zero-filled buffer of `len` bytes, or None when it cannot be allocated (instead of aborting
/// the process). Like `vec![0; len]` the pages come zeroed from the allocator, not by a memset.
///
/// A big buffer is backed by transparent huge pages where the kernel offers them
/// ([`advise_huge`]): a load fills every byte of it, and faulting it in 4 KiB pages costs more
/// than the copy into it (measured: 64 MiB in 40–48 ms with 4 KiB pages, 7.5 ms with 2 MiB ones).
pub(crate) fn zeroed(len: u64) -> Option<Vec<u8>> {
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
    advise_huge(ptr, len);
    // SAFETY: `ptr` comes from the global allocator with the layout of a `Vec<u8>` of capacity
    // `len` (align 1, `len` bytes), and all `len` bytes are initialized (zeroed).
    Some(unsafe { Vec::from_raw_parts(ptr, len, len) })
}

/// Buffers from this size on are advised to use transparent huge pages.
const HUGE_MIN: usize = 8 << 20;

/// The size of a transparent huge page on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// Advises the kernel to back whole 2 MiB pages inside `[ptr, ptr + len)` with transparent
/// huge pages (`MADV_HUGEPAGE`), for buffers of [`HUGE_MIN`] bytes or more that are about to be
/// filled completely. Only the aligned interior is advised, so no neighbouring allocation of the
/// allocator is affected, and of it only as many huge pages as the kernel has free right now
/// ([`free_huge_blocks`], three quarters of them): a huge-page fault that finds none free
/// compacts memory first (`defrag = madvise`, the kernel's default), and on a machine whose
/// memory is full of page cache, the usual state of one that trains, that made a 512 MiB buffer
/// take 1.4 s to fill instead of 0.5 s with 4 KiB pages (measured on the bench VM after a `dd`
/// of 14 GB; `compact_stall` +273). The rest of the buffer keeps 4 KiB pages. Where the free
/// count cannot be read (no `/proc/buddyinfo`) the whole interior is advised. Only a hint: where
/// THP is off (`never`) or the call fails, the buffer keeps small pages; its contents never
/// change.
fn advise_huge(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        if len < HUGE_MIN {
            return;
        }
        let free = std::fs::read_to_string("/proc/buddyinfo")
            .ok()
            .and_then(|text| free_huge_blocks(&text, huge_order()));
        if let Some((start, end)) = advised_range(ptr as usize, len, free) {
            // SAFETY: `[start, end)` lies inside the allocation `ptr..ptr + len` owned by the
            // caller and is page aligned; MADV_HUGEPAGE only changes how the range is backed,
            // never its contents or its mapping.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

/// The part of the buffer `[addr, addr + len)` to advise: its 2 MiB-aligned interior, cut to
/// three quarters of `free` huge pages when that count is known (None when nothing is left).
fn advised_range(addr: usize, len: usize, free: Option<usize>) -> Option<(usize, usize)> {
    let start = addr.checked_next_multiple_of(HUGE_PAGE)?;
    let mut end = addr.saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if let Some(free) = free {
        let budget = (free / 4 * 3).saturating_mul(HUGE_PAGE);
        end = end.min(start.saturating_add(budget));
    }
    (end > start).then_some((start, end))
}

/// The buddy-allocator order of one huge page: log2(2 MiB / the base page size).
#[cfg(target_os = "linux")]
fn huge_order() -> u32 {
    // SAFETY: sysconf only reads a system value.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two() && *p <= HUGE_PAGE);
    (HUGE_PAGE / page.unwrap_or(4096)).trailing_zeros()
}

/// Free blocks of `order` pages or more, counted in blocks of `order`, over every zone of
/// `/proc/buddyinfo` (`Node 0, zone Normal <free blocks of order 0> <order 1> ...`). None when
/// no line parses.
fn free_huge_blocks(buddyinfo: &str, order: u32) -> Option<usize> {
    let mut total: Option<usize> = None;
    for line in buddyinfo.lines() {
        let Some((_, rest)) = line.split_once("zone") else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        if fields.next().is_none() {
            continue;
        }
        let mut sum = 0usize;
        let mut ok = true;
        for (o, field) in (0u32..).zip(fields) {
            let Ok(count) = field.parse::<usize>() else {
                ok = false;
                break;
            };
            if o >= order {
                let per = 1usize.checked_shl(o - order).unwrap_or(usize::MAX);
                sum = sum.saturating_add(count.saturating_mul(per));
            }
        }
        if ok {
            total = Some(total.unwrap_or(0).saturating_add(sum));
        }
    }
    total
}

/// Checks a zstd file's declared content size (frame header) against `entry.size`, before a
/// buffer of that size is made.
fn check_zstd_header(file: &File, path: &Path, entry: &FileEntry) -> Result<()> {
    use std::os::unix::fs::FileExt;
    let mut header = [0u8; ZSTD_HEADER_MAX];
    let mut n = 0;
    while n < header.len() {
        match file.read_at(&mut header[n..], n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("read", path, e)),
        }
    }
    check_zstd_frame(&header[..n], path, entry)
}

/// The most bytes a zstd frame header takes (magic number included): what
/// [`check_zstd_frame`] needs to see.
pub(crate) const ZSTD_HEADER_MAX: usize = 18;

/// Checks the content size a zstd frame header declares (`header`: the stored file's first
/// bytes, up to [`ZSTD_HEADER_MAX`]) against `entry.size`: a manifest that claims a size the
/// frame does not have is refused before a buffer of that size is made. A frame that does not
/// declare its size passes (the decompressed length is checked as it fills).
pub(crate) fn check_zstd_frame(header: &[u8], path: &Path, entry: &FileEntry) -> Result<()> {
    match zstd::zstd_safe::get_frame_content_size(header) {
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

/// Hashes a stored file without keeping it in memory (nor, with `drop_behind`, in the page
/// cache when it was not there: see [`read_verified`]).
pub(crate) fn verify_file(path: &Path, entry: &FileEntry, drop_behind: bool) -> Result<()> {
    let file = File::open(path).ctx("open", path)?;
    let len = check_stored_len(&file, path, entry)?;
    advise_sequential(&file);
    if drop_behind && Cache::of(&file, len) == (Cache::Big { cached: false }) {
        if entry.encoding == Encoding::Raw
            && entry.size == len
            && let Some(digest) = direct::read_direct(&file, path, len, entry.hash.algo(), None)
        {
            return check_digest(path, entry, &digest?);
        }
        return verify_stored(DropBehind::new(&file), path, entry);
    }
    verify_stored(file, path, entry)
}

/// Hashes the content of the stored bytes `stored` yields (decompressed per `entry.encoding`)
/// without keeping it (a few [`PIPE`]-sized buffers at a time, whatever the file's size), and
/// checks its size and digest against `entry`. `path` names the file in errors.
pub(crate) fn verify_stored<R: Read>(stored: R, path: &Path, entry: &FileEntry) -> Result<()> {
    let algo = entry.hash.algo();
    let (digest, n) = match entry.encoding {
        Encoding::Raw => hashed_drain(stored, path, entry.size, algo)?,
        Encoding::Zstd => {
            let dec = zstd::Decoder::new(stored).map_err(|source| Error::Decompress {
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

/// Fills `out` from `reader` and returns the digest of what was read. The reader must then be at
/// its end. Big buffers are hashed on a helper thread, [`PIPE`] bytes behind the reader; small ones
/// (or with one core) piece by piece while each is still in cache.
pub(crate) fn fill_hashed<R: Read>(
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `VmFlags` line of the mapping of this process that contains `addr`.
    #[cfg(target_os = "linux")]
    fn vm_flags(addr: usize) -> String {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let head = line.split_whitespace().next().unwrap_or("");
            if let Some((a, b)) = head.split_once('-')
                && let (Ok(a), Ok(b)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                inside = (a..b).contains(&addr);
            } else if inside && let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.trim().to_owned();
            }
        }
        panic!("no mapping holds {addr:#x}");
    }

    #[test]
    fn big_buffers_are_zeroed_and_advised_huge_pages() {
        let len = 24 << 20;
        let mut buf = zeroed(len as u64).unwrap();
        assert_eq!(buf.len(), len);
        assert!(buf.iter().all(|&b| b == 0));
        buf[len - 1] = 7;
        assert_eq!(buf[len - 1], 7);
        #[cfg(target_os = "linux")]
        if std::path::Path::new("/sys/kernel/mm/transparent_hugepage/enabled").exists()
            && std::fs::read_to_string("/proc/buddyinfo")
                .ok()
                .and_then(|t| free_huge_blocks(&t, huge_order()))
                .is_none_or(|free| free >= 64)
        {
            let inner = (buf.as_ptr() as usize).next_multiple_of(HUGE_PAGE);
            let flags = vm_flags(inner);
            assert!(
                flags.split_whitespace().any(|f| f == "hg"),
                "the buffer's interior is not advised MADV_HUGEPAGE: {flags}"
            );
        }
    }

    /// `/proc/buddyinfo` of the 2-core bench VM after 14 GB went through the page cache.
    const BUDDYINFO: &str = "\
Node 0, zone      DMA      0      0      0      0      0      0      0      0      1      1      3
Node 0, zone    DMA32    384    405    333    244    163    100     72     55     49     47    695
Node 0, zone   Normal 117537  58288  29211  18670   7827   6927   4046   2114     15      0      0
";

    #[test]
    fn free_huge_blocks_counts_order_9_and_up() {
        // Orders 9 and 10 of each zone: DMA 1 + 3*2, DMA32 47 + 695*2, Normal 0 + 0*2.
        assert_eq!(free_huge_blocks(BUDDYINFO, 9), Some(7 + 1437));
        // Order 10 only.
        assert_eq!(free_huge_blocks(BUDDYINFO, 10), Some(3 + 695));
        assert_eq!(free_huge_blocks("", 9), None);
        assert_eq!(free_huge_blocks("Node 0, zone Normal x y", 9), None);
    }

    proptest::proptest! {
        #[test]
        fn free_huge_blocks_sums_what_it_is_given(
            zones in proptest::collection::vec(proptest::collection::vec(0usize..1 << 20, 11), 1..4),
            order in 0u32..11,
        ) {
            let text: String = zones
                .iter()
                .enumerate()
                .map(|(i, counts)| {
                    let c: Vec<String> = counts.iter().map(ToString::to_string).collect();
                    format!("Node 0, zone   Z{i} {}\n", c.join(" "))
                })
                .collect();
            let want: usize = zones
                .iter()
                .flat_map(|c| c.iter().enumerate().skip(order as usize))
                .map(|(o, n)| n << (o - order as usize))
                .sum();
            proptest::prop_assert_eq!(free_huge_blocks(&text, order), Some(want));
        }
    }

    #[test]
    fn advice_covers_the_interior_up_to_three_quarters_of_the_free_pages() {
        let base = 64 * HUGE_PAGE;
        // Unaligned start: the interior begins at the next 2 MiB boundary, ends at the last.
        let (addr, len) = (base + 4096, 10 * HUGE_PAGE);
        let interior = Some((base + HUGE_PAGE, base + 10 * HUGE_PAGE));
        assert_eq!(advised_range(addr, len, None), interior);
        assert_eq!(advised_range(addr, len, Some(1000)), interior);
        // 4 free: 3 advised.
        assert_eq!(
            advised_range(addr, len, Some(4)),
            Some((base + HUGE_PAGE, base + 4 * HUGE_PAGE))
        );
        assert_eq!(advised_range(addr, len, Some(1)), None);
        assert_eq!(advised_range(addr, len, Some(0)), None);
        assert_eq!(advised_range(base + 1, HUGE_PAGE, None), None);
    }

    #[test]
    fn small_and_empty_buffers() {
        assert!(zeroed(0).unwrap().is_empty());
        let small = zeroed(4096).unwrap();
        assert_eq!(small.len(), 4096);
        assert!(small.iter().all(|&b| b == 0));
        assert!(zeroed(u64::MAX).is_none());
    }
}
