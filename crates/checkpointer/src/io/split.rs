//! Split verified reads: a large raw BLAKE3 file read *and* hashed by several threads at once.
//!
//! A plain read from the page cache runs on one core (the kernel's copy to user space), so even a
//! perfectly overlapped hash (the pipeline in [`super::read`]) leaves the load at best as fast as
//! that one copy, plus the hash of the last piece and the hand-offs. BLAKE3 is a tree hash: the
//! digest of a file is the root of a binary tree whose subtrees can be hashed independently
//! (`blake3::hazmat`). So the file is cut along that tree into a few subtrees; each thread opens
//! the file itself (its own readahead state), `pread`s its subtrees straight into their place in
//! the final buffer and hashes each piece while it is still in the CPU cache; the subtrees'
//! chaining values are then merged into the root digest. With two cores a hot-cache verified load
//! then takes about (copy + hash) / 2, less than the single-threaded copy a raw read is.
//!
//! The tree follows BLAKE3's rule that every left subtree holds a power-of-two number of chunks
//! ([`left_subtree_len`]): it is built top-down and cut until the leaves are small enough to share
//! out evenly; consecutive leaves go to the same thread. The unit tests compare the result with
//! `blake3::hash` for many lengths and thread counts.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::thread;

use blake3::hazmat::{
    ChainingValue, HasherExt, Mode, left_subtree_len, merge_subtrees_non_root, merge_subtrees_root,
};

use super::{PIPE, advise_sequential};
use crate::error::{Error, Result};
use crate::hash::{FileHash, HashAlgo};

/// At most this many threads read one file (more would only contend for the same memory bus).
pub(super) const MAX_WORKERS: usize = 4;

/// Leaves per worker: enough that an uneven tree (a length just over a power of two) still shares
/// out within about 1/LEAVES of even.
const LEAVES_PER_WORKER: u64 = 8;

/// A leaf of the tree: its offset and length in bytes.
type Leaf = (u64, u64);

/// A BLAKE3 subtree over `len` bytes at `off` (leaf) or a parent of two subtrees.
enum Node {
    Leaf { off: u64, len: u64 },
    Parent(Box<Node>, Box<Node>),
}

impl Node {
    /// The tree over `[off, off + len)`, cut until no leaf is longer than `max_leaf` (a leaf of
    /// one chunk or less is never cut).
    fn build(off: u64, len: u64, max_leaf: u64) -> Node {
        if len <= max_leaf || len <= blake3::CHUNK_LEN as u64 {
            return Node::Leaf { off, len };
        }
        let left = left_subtree_len(len);
        Node::Parent(
            Box::new(Node::build(off, left, max_leaf)),
            Box::new(Node::build(off + left, len - left, max_leaf)),
        )
    }

    fn leaves(&self, out: &mut Vec<Leaf>) {
        match self {
            Node::Leaf { off, len } => out.push((*off, *len)),
            Node::Parent(l, r) => {
                l.leaves(out);
                r.leaves(out);
            }
        }
    }

    /// The chaining value of this subtree from its leaves' values, taken in order.
    fn chaining_value(
        &self,
        cvs: &mut impl Iterator<Item = ChainingValue>,
    ) -> Option<ChainingValue> {
        match self {
            Node::Leaf { .. } => cvs.next(),
            Node::Parent(l, r) => {
                let l = l.chaining_value(cvs)?;
                let r = r.chaining_value(cvs)?;
                Some(merge_subtrees_non_root(&l, &r, Mode::Hash))
            }
        }
    }

    /// The root digest (the whole input must be longer than one chunk, so the root is a parent).
    fn root(&self, cvs: &mut impl Iterator<Item = ChainingValue>) -> Option<blake3::Hash> {
        match self {
            Node::Leaf { .. } => None,
            Node::Parent(l, r) => {
                let l = l.chaining_value(cvs)?;
                let r = r.chaining_value(cvs)?;
                Some(merge_subtrees_root(&l, &r, Mode::Hash))
            }
        }
    }
}

/// BLAKE3's tree over `len` bytes (more than one chunk), cut into leaves, and the leaves shared
/// out: consecutive leaves per worker, about `len / workers` bytes each.
fn plan(len: u64, workers: usize) -> (Node, Vec<Vec<Leaf>>) {
    // Below `len`, so the root is always cut (its digest is a merge of two subtrees).
    let max_leaf = len
        .div_ceil(workers as u64 * LEAVES_PER_WORKER)
        .max(PIPE as u64)
        .min(len - 1);
    let tree = Node::build(0, len, max_leaf);
    let mut leaves = Vec::new();
    tree.leaves(&mut leaves);

    // Consecutive leaves per worker, each share about len / workers bytes.
    let mut shares: Vec<Vec<Leaf>> = Vec::with_capacity(workers);
    let mut current = Vec::new();
    let mut taken = 0u64;
    for (off, n) in leaves {
        current.push((off, n));
        taken += n;
        let due = len * (shares.len() as u64 + 1) / workers as u64;
        if taken >= due && shares.len() + 1 < workers {
            shares.push(std::mem::take(&mut current));
        }
    }
    if !current.is_empty() {
        shares.push(current);
    }

    (tree, shares)
}

/// Whether the file looks resident in the page cache: a few pages across it, asked with
/// `mincore` on a mapping of the file that is never touched. Several streams only pay when the
/// data is in memory; from the disk, parallel streams far apart cost more than they give
/// (measured: 0.86 of a raw cold read against 0.9+ for the one-stream pipeline).
///
/// The probe must not read: an earlier probe with `preadv2(RWF_NOWAIT)` started readahead at
/// each of its eight places in a cold file (`RWF_NOWAIT` only refuses to *wait*), so eight
/// scattered reads raced the load's own sequential one and left the descriptor's readahead
/// state pointing at the end of the file.
pub(super) fn looks_cached(file: &File, len: u64) -> bool {
    #[cfg(target_os = "linux")]
    {
        resident_probes(file, len).unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (file, len);
        false
    }
}

/// Some(whether all probe pages are resident); None when the file cannot be mapped.
#[cfg(target_os = "linux")]
fn resident_probes(file: &File, len: u64) -> Option<bool> {
    use std::os::fd::AsRawFd;
    const PROBES: u64 = 8;
    if len == 0 {
        return Some(true);
    }
    // SAFETY: sysconf only reads its argument.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
        .ok()
        .filter(|p| *p > 0)?;
    let map_len = usize::try_from(len).ok()?;
    // SAFETY: a new read-only shared mapping of the open file; it is never dereferenced (mincore
    // only looks at residency, so a file shrunk meanwhile cannot fault) and is unmapped below.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            map_len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return None;
    }
    let pages = len.div_ceil(page);
    let resident = (0..PROBES).all(|i| {
        let at = (pages - 1) * i / (PROBES - 1) * page;
        let mut vec = [0u8; 1];
        // SAFETY: `at` is page-aligned and below `len`, so the page lies inside the mapping; one
        // page needs one byte of `vec`.
        let rc = unsafe {
            libc::mincore(
                addr.cast::<u8>().add(at as usize).cast(),
                page as usize,
                vec.as_mut_ptr(),
            )
        };
        rc == 0 && vec[0] & 1 == 1
    });
    // SAFETY: `addr` and `map_len` are the mapping made above, unmapped once.
    unsafe {
        libc::munmap(addr, map_len);
    }
    Some(resident)
}

/// Fills `out` with the raw file at `path` (whose length was checked to be `out.len()`) on
/// `workers` threads and returns its BLAKE3 digest. None when that cannot be done here (one
/// worker, input of one chunk or less, a thread that cannot be started): the caller then reads
/// the ordinary way, over whatever part of `out` was filled.
pub(super) fn fill_split(path: &Path, out: &mut [u8], workers: usize) -> Option<Result<FileHash>> {
    let len = out.len() as u64;
    let workers = workers.min(MAX_WORKERS);
    if workers < 2 || len <= blake3::CHUNK_LEN as u64 {
        return None;
    }
    let (tree, shares) = plan(len, workers);

    // Cut `out` at the shares' boundaries.
    let mut parts: Vec<(&[Leaf], &mut [u8])> = Vec::with_capacity(shares.len());
    let mut rest: &mut [u8] = out;
    for share in &shares {
        let bytes: u64 = share.iter().map(|(_, n)| n).sum();
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(usize::try_from(bytes).ok()?);
        parts.push((share.as_slice(), head));
        rest = tail;
    }

    // Open every worker's file before reading anything, so a failure here changes nothing.
    let mut files = Vec::with_capacity(parts.len());
    for _ in &parts {
        match File::open(path) {
            Ok(f) => {
                advise_sequential(&f);
                files.push(f);
            }
            Err(e) => return Some(Err(Error::io("open", path, e))),
        }
    }

    let results: Option<Vec<Result<Vec<ChainingValue>>>> = thread::scope(|s| {
        let mut work = parts.into_iter().zip(&files);
        let first = work.next()?;
        let mut handles = Vec::new();
        for ((share, buf), file) in work {
            let handle = thread::Builder::new()
                .name("exptrack-ckpt-read".to_owned())
                .spawn_scoped(s, move || read_share(file, path, share, buf, len))
                .ok()?;
            handles.push(handle);
        }
        let ((share, buf), file) = first;
        let mut all = vec![read_share(file, path, share, buf, len)];
        for h in handles {
            all.push(h.join().unwrap_or_else(|_| {
                Err(Error::Worker {
                    message: "checkpoint read thread panicked".to_owned(),
                })
            }));
        }
        Some(all)
    });
    // None: a thread could not be started (the scope joined the others); the caller reads again.
    let results = results?;
    let mut cvs = Vec::new();
    for r in results {
        match r {
            Ok(v) => cvs.extend(v),
            Err(e) => return Some(Err(e)),
        }
    }
    if let Err(e) = files.first().map_or(Ok(()), |f| ensure_eof(f, path, len)) {
        return Some(Err(e));
    }
    let root = tree.root(&mut cvs.into_iter())?;
    Some(Ok(FileHash::from_bytes(HashAlgo::Blake3, root.as_bytes())))
}

/// The file must end at `len` (it may not have grown since its length was checked).
fn ensure_eof(file: &File, path: &Path, len: u64) -> Result<()> {
    let mut probe = [0u8; 1];
    match file.read_at(&mut probe, len) {
        Ok(0) => Ok(()),
        Ok(_) => Err(Error::SizeMismatch {
            path: path.to_owned(),
            expected: len,
            actual: len + 1,
        }),
        Err(e) => Err(Error::io("read", path, e)),
    }
}

/// Reads one worker's leaves into `buf` (which starts at the first leaf's offset) and returns
/// their chaining values, each piece hashed right after it is read.
fn read_share(
    file: &File,
    path: &Path,
    share: &[Leaf],
    buf: &mut [u8],
    total: u64,
) -> Result<Vec<ChainingValue>> {
    let base = share.first().map_or(0, |(off, _)| *off);
    let mut cvs = Vec::with_capacity(share.len());
    for &(off, n) in share {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(off);
        let start = usize::try_from(off - base).map_err(|_| too_big(path))?;
        let end = usize::try_from(off - base + n).map_err(|_| too_big(path))?;
        let leaf = buf.get_mut(start..end).ok_or_else(|| too_big(path))?;
        let mut at = off;
        for piece in leaf.chunks_mut(PIPE) {
            file.read_exact_at(piece, at).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    Error::SizeMismatch {
                        path: path.to_owned(),
                        expected: total,
                        actual: at,
                    }
                } else {
                    Error::io("read", path, e)
                }
            })?;
            h.update(piece);
            at += piece.len() as u64;
        }
        cvs.push(h.finalize_non_root());
    }
    Ok(cvs)
}

fn too_big(path: &Path) -> Error {
    Error::io(
        "read",
        path,
        io::Error::new(io::ErrorKind::InvalidInput, "file too large for memory"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(len: usize) -> Vec<u8> {
        let mut x = 0x9e37_79b9_7f4a_7c15_u64;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn split_read(bytes: &[u8], workers: usize) -> (Vec<u8>, FileHash) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, bytes).unwrap();
        let mut out = vec![0u8; bytes.len()];
        let digest = fill_split(&path, &mut out, workers).unwrap().unwrap();
        (out, digest)
    }

    #[test]
    fn matches_blake3_for_many_lengths_and_worker_counts() {
        let chunk = blake3::CHUNK_LEN;
        let mib = 1 << 20;
        let lengths = [
            chunk + 1,
            2 * chunk,
            3 * chunk + 7,
            PIPE - 1,
            PIPE,
            PIPE + 1,
            3 * PIPE + chunk - 1,
            4 * mib,
            4 * mib + 1,
            5 * mib + 12_345,
            8 * mib - 1,
            17 * mib + 3,
        ];
        for len in lengths {
            let bytes = data(len);
            let want = HashAlgo::Blake3.digest(&bytes);
            for workers in 2..=MAX_WORKERS + 1 {
                let (out, got) = split_read(&bytes, workers);
                assert_eq!(got, want, "len {len}, {workers} workers");
                assert!(out == bytes, "len {len}, {workers} workers: bytes differ");
            }
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_file_just_written_looks_cached_and_an_evicted_one_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, data(8 << 20)).unwrap();
        let file = File::open(&path).unwrap();
        assert!(looks_cached(&file, 8 << 20));
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.sync_all().unwrap();
        crate::io::evict_from_page_cache(&path).unwrap();
        // Eviction is advisory (a file system may keep the pages): only check when it took.
        let probe = File::open(&path).unwrap();
        if !looks_cached(&probe, 8 << 20) {
            // Probing reads nothing in: the file still looks cold after a pause in which
            // readahead started by a probe would have finished.
            std::thread::sleep(std::time::Duration::from_millis(200));
            assert!(!looks_cached(&probe, 8 << 20), "the probe read the file in");
            let mut out = vec![0u8; 8 << 20];
            std::io::Read::read_exact(&mut &probe, &mut out).unwrap();
            assert!(looks_cached(&probe, 8 << 20), "read back, so cached again");
        }
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn an_empty_or_tiny_file_is_probed_without_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, b"x").unwrap();
        let file = File::open(&path).unwrap();
        assert!(looks_cached(&file, 1));
        assert!(looks_cached(&file, 0));
    }

    #[test]
    fn declines_what_it_cannot_split() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, data(blake3::CHUNK_LEN)).unwrap();
        let mut out = vec![0u8; blake3::CHUNK_LEN];
        assert!(fill_split(&path, &mut out, 2).is_none(), "one chunk");
        std::fs::write(&path, data(1 << 20)).unwrap();
        let mut big = vec![0u8; 1 << 20];
        assert!(fill_split(&path, &mut big, 1).is_none(), "one worker");
        assert!(big.iter().all(|b| *b == 0), "nothing read");
    }

    #[test]
    fn a_shorter_or_longer_file_is_a_size_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.bin");
        std::fs::write(&path, data(3 << 20)).unwrap();
        let mut out = vec![0u8; 4 << 20];
        let err = fill_split(&path, &mut out, 2).unwrap().unwrap_err();
        assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
        let mut out = vec![0u8; 2 << 20];
        let err = fill_split(&path, &mut out, 2).unwrap().unwrap_err();
        assert!(
            matches!(err, Error::SizeMismatch { expected, actual, .. } if expected == 2 << 20 && actual == expected + 1),
            "{err}"
        );
    }

    #[test]
    fn shares_are_contiguous_even_and_cover_the_file() {
        for len in [(4u64 << 20) + 1, 65 << 20, 100 << 20, (1 << 30) + 4096] {
            for workers in 2..=MAX_WORKERS {
                let (_, shares) = plan(len, workers);
                assert!(shares.len() <= workers, "len {len}");
                // Leaves are at least PIPE long, so only large files share out evenly.
                let large = len >= 64 << 20;
                let mut at = 0;
                for share in &shares {
                    let bytes: u64 = share.iter().map(|(_, n)| n).sum();
                    let even = len / workers as u64;
                    assert!(
                        !large || bytes.abs_diff(even) <= even / 4,
                        "len {len}, {workers} workers: a share of {bytes}"
                    );
                    for (off, n) in share {
                        assert_eq!(*off, at);
                        at += n;
                    }
                }
                assert_eq!(at, len);
                assert!(!large || shares.len() == workers, "len {len}");
            }
        }
    }
}
