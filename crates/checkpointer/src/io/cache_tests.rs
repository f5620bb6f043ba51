//! Unit tests (`#[cfg(test)] mod cache_tests`, declared by `io/mod.rs`; nothing here is library
//! code): what checkpoint writes and reads leave in the page cache (`keep_in_page_cache`).

use std::path::Path;

use super::split::looks_cached;
use super::*;
use crate::config::Compression;

const LEN: usize = 24 << 20;

fn data() -> Vec<u8> {
    (0..LEN).map(|i| (i * 31 % 251) as u8).collect()
}

fn opts(drop_behind: bool) -> WriteOpts {
    WriteOpts {
        fsync: true,
        drop_behind,
        budget: None,
    }
}

/// Writes `bytes` durably to `path` and returns its entry.
fn save(path: &Path, bytes: &[u8], drop_behind: bool) -> FileEntry {
    let o = opts(drop_behind);
    let (entry, unsynced) =
        write_bytes(path, "f", bytes, Compression::Off, HashAlgo::Blake3, &o).unwrap();
    sync_files(vec![unsynced], &o).unwrap();
    entry
}

fn cached(path: &Path) -> bool {
    let f = File::open(path).unwrap();
    looks_cached(&f, f.metadata().unwrap().len())
}

/// Whether this file system drops clean pages on request (tmpfs keeps them: its pages are the
/// data). Checked on a file of its own, so the assertions below only run where eviction works.
fn eviction_works(dir: &Path) -> bool {
    let probe = dir.join("probe.bin");
    save(&probe, &data()[..8 << 20], false);
    evict_from_page_cache(&probe).unwrap();
    let works = !cached(&probe);
    if !works {
        eprintln!("this file system keeps evicted pages; page-cache assertions skipped");
    }
    works
}

#[test]
fn a_durable_write_is_dropped_from_the_page_cache_unless_kept() {
    let dir = tempfile::tempdir().unwrap();
    if !eviction_works(dir.path()) {
        return;
    }
    let bytes = data();
    let dropped = dir.path().join("dropped.bin");
    let entry = save(&dropped, &bytes, true);
    assert!(
        !cached(&dropped),
        "a durable write left its file in the page cache"
    );
    let kept = dir.path().join("kept.bin");
    save(&kept, &bytes, false);
    assert!(
        cached(&kept),
        "keep_in_page_cache: the file should stay cached"
    );
    // What was dropped is on the disk: it reads back whole and verified.
    assert!(read_verified(&dropped, &entry, true).unwrap() == bytes);
}

#[test]
fn a_cold_load_drops_what_it_read_and_a_cached_file_stays() {
    let dir = tempfile::tempdir().unwrap();
    if !eviction_works(dir.path()) {
        return;
    }
    let bytes = data();
    let path = dir.path().join("f.bin");
    let entry = save(&path, &bytes, false);
    assert!(cached(&path));
    // Cached: a load (split or pipeline) keeps it cached.
    assert!(read_verified(&path, &entry, true).unwrap() == bytes);
    assert!(cached(&path), "a load evicted a file that was cached");
    // Not cached: the load reads it, verified, and leaves it out of the cache.
    evict_from_page_cache(&path).unwrap();
    assert!(read_verified(&path, &entry, true).unwrap() == bytes);
    assert!(
        !cached(&path),
        "a cold load left the file in the page cache"
    );
    verify_file(&path, &entry, true).unwrap();
    assert!(
        !cached(&path),
        "a cold verify left the file in the page cache"
    );
    // Without drop-behind a cold load caches the file as any read does.
    assert!(read_verified(&path, &entry, false).unwrap() == bytes);
    assert!(
        cached(&path),
        "keep_in_page_cache: the file should be cached after a load"
    );
}

#[test]
fn a_cold_load_through_drop_behind_still_finds_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = data();
    let path = dir.path().join("f.bin");
    let entry = save(&path, &bytes, true);
    bytes[LEN - 3] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    evict_from_page_cache(&path).unwrap();
    let err = read_verified(&path, &entry, true).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    evict_from_page_cache(&path).unwrap();
    let err = verify_file(&path, &entry, true).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}
