//! An object store (S3, GCS, Azure, in-memory) under `<prefix>/<experiment_id>/`.
//!
//! There is no rename, so commits use unique keys and one create-only write:
//!
//! - `ckpt-<step>/<upload>/<file>`: the files of one save (`<upload>` is unique per save), each
//!   uploaded while it is hashed; big files as multipart uploads with parallel parts, recorded in
//!   `.uploads/<upload>-<file>.json` while they run (that record is written beside the first
//!   parts and awaited before any part's acknowledgement and before the upload completes).
//! - `ckpt-<step>/checkpoint.json`: the commit marker, written last with `PutMode::Create` (a save
//!   of an existing step replaces it with `PutMode::Update` on its e-tag, atomically). A checkpoint
//!   without it does not exist for any reader; it names its `<upload>`.
//! - `registry.json`: the cache of the markers, replaced with `PutMode::Update` on its e-tag; on a
//!   conflict it is re-read and the change applied again, so concurrent writers lose no update.
//! - `leases/<step>-<pid>-<n>-<host>`: reader leases. A lease of a process on this host that is
//!   gone is stale at once; one of another host after [`LEASE_TTL`]. A dropped lease is deleted
//!   in the background (a load does not wait for it); this process waits for its own deletions
//!   before it counts leases, and before the storage is dropped.
//! - `.del-ckpt-<step>`: written before a marker is deleted (it holds the marker, so a deletion a
//!   lease interrupts can be undone), removed after the data.
//!
//! Opening as a writer removes what crashed saves and deletions left behind once it is older
//! than [`orphan_grace`] (another writer may still be uploading): data no marker names, aborted
//! multipart uploads of the journal, tombstones. Multipart uploads started just before a crash,
//! before their journal entry was written, can only be found by the bucket's own listing: set a
//! lifecycle rule (`AbortIncompleteMultipartUpload`) on the bucket for them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStoreExt, PutMode};

use super::{Delta, Doomed, Rebuild, Scan, Staged, Storage};
use crate::checkpoint::{Checkpoint, Source};
use crate::config::CheckpointConfig;
use crate::error::{Error, Result};
use crate::format::{
    self, CHECKPOINT_JSON, CheckpointInfo, FORMAT_VERSION, FileEntry, REGISTRY_JSON, RESULTS_JSON,
    Registry,
};
use crate::lease::Lease;
use crate::shared::lock;

/// Steps hidden behind a tombstone: step, marker bytes, marker version, upload id.
type Hidden = Vec<(u64, Bytes, object_store::UpdateVersion, Option<String>)>;

mod client;
mod inner;
mod repair;
mod transfer;

use client::{Client, remote};
use inner::{Inner, PutError, host_id, is_missing};

/// How long a lease of a process on another host counts without being released.
pub(crate) const LEASE_TTL: Duration = Duration::from_secs(6 * 3600);
/// How long a reader waits for a pruner that is deciding about its checkpoint.
const PRUNE_SETTLE: Duration = Duration::from_secs(10);
/// Conditional registry writes tried before giving up.
const REGISTRY_TRIES: usize = 50;

static ORPHAN_GRACE_MS: AtomicU64 = AtomicU64::new(3600 * 1000);

/// Leftovers younger than this are left alone on open (they may be another writer's upload in
/// progress). One hour by default.
pub(crate) fn orphan_grace() -> Duration {
    Duration::from_millis(ORPHAN_GRACE_MS.load(Ordering::Relaxed))
}

/// Sets [`orphan_grace`] (tests).
#[cfg_attr(not(feature = "testing"), allow(dead_code))]
pub(crate) fn set_orphan_grace(grace: Duration) {
    ORPHAN_GRACE_MS.store(
        u64::try_from(grace.as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// The checkpoints of one experiment in an object store.
pub(crate) struct ObjectStorage {
    inner: Arc<Inner>,
    /// The registry this process last wrote, with the version the store gave it: the next
    /// update tries a conditional put on it directly, without reading it first (one round trip
    /// less per save); a conflict (another writer) falls back to reading it.
    registry: std::sync::Mutex<Option<(Registry, object_store::UpdateVersion)>>,
    /// Markers that [`lease`](Storage::lease) just read, for the [`info`](Storage::info) call
    /// that follows on the same thread (a load then reads its marker once, not twice).
    fresh: std::sync::Mutex<Vec<FreshMarker>>,
}

/// A marker read under a lease: step, reading thread, when, bytes.
type FreshMarker = (u64, std::thread::ThreadId, std::time::Instant, Bytes);

/// How long a marker read under a lease stands in for a new read.
const FRESH_FOR: Duration = Duration::from_secs(1);

impl std::fmt::Debug for ObjectStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectStorage")
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

impl ObjectStorage {
    /// Connects to `url` (`scheme://bucket/prefix`) for the experiment `experiment_id`.
    pub(crate) fn open(
        url: &str,
        experiment_id: &str,
        config: &CheckpointConfig,
        _read_only: bool,
    ) -> Result<Self> {
        let (client, prefix) = Client::connect(url)?;
        let root = ObjPath::from_iter(prefix.parts().chain(ObjPath::from(experiment_id).parts()));
        Ok(ObjectStorage {
            inner: Arc::new(Inner {
                client,
                root,
                location: PathBuf::from(format!("{url}/{experiment_id}")),
                config: config.clone(),
                host: host_id(),
            }),
            registry: std::sync::Mutex::new(None),
            fresh: std::sync::Mutex::new(Vec::new()),
        })
    }

    /// The key of one file of a committed checkpoint, and its URL (for messages).
    fn file_key(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<(ObjPath, PathBuf)> {
        let upload = info
            .upload
            .as_deref()
            .ok_or_else(|| Error::InvalidMetadata {
                path: info.dir.join(CHECKPOINT_JSON),
                message: "no upload".into(),
            })?;
        let rel = format!("{}/{}", Inner::data_prefix(info.step, upload), file.name);
        Ok((self.inner.key(&rel), PathBuf::from(self.inner.url(&rel))))
    }

    fn new_upload(&self) -> String {
        format!(
            "u{}-{}-{}-{}",
            crate::now_ms(),
            self.inner.host,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Writes a tombstone (holding the marker) for each step that has a marker: what
    /// [`retire`](Self::retire) may then delete, with the marker's bytes, version and upload.
    fn hide(&self, steps: &[u64]) -> Result<Hidden> {
        let inner = &*self.inner;
        let mut hidden = Vec::new();
        for &step in steps {
            let Some((bytes, version)) = inner.get(&Inner::marker(step))? else {
                continue;
            };
            let upload = inner.parse_info(step, &bytes).ok().and_then(|i| i.upload);
            // The tombstone holds the marker, so an interrupted deletion can be undone.
            match inner.put(&Inner::tombstone(step), bytes.to_vec(), PutMode::Overwrite) {
                Ok(()) => {}
                Err(PutError::Conflict) => continue,
                Err(PutError::Other(e)) => {
                    tracing::warn!(step, error = %e, "could not delete checkpoint");
                    continue;
                }
            }
            hidden.push((step, bytes, version, upload));
        }
        Ok(hidden)
    }
}

impl Storage for ObjectStorage {
    fn location(&self) -> &Path {
        &self.inner.location
    }

    fn scan(&self, experiment_id: &str, repair: bool) -> Result<Scan> {
        let inner = &*self.inner;
        let objects = inner.list("")?;
        let steps: Vec<u64> = objects
            .iter()
            .filter_map(|(p, _)| {
                let (dir, rest) = p.split_once('/')?;
                (rest == CHECKPOINT_JSON).then_some(())?;
                format::parse_dir_name(dir)
            })
            .collect();
        let mut scan = Scan::default();
        // Markers are read concurrently (one GET each), as owned futures.
        type Fetch = std::pin::Pin<
            Box<
                dyn std::future::Future<Output = (u64, object_store::Result<Option<Bytes>>)> + Send,
            >,
        >;
        let gets: Vec<Fetch> = steps
            .iter()
            .map(|&step| {
                let store = inner.client.store.clone();
                let key = inner.key(&Inner::marker(step));
                Box::pin(async move {
                    let r = match store.get(&key).await {
                        Ok(r) => r.bytes().await.map(Some),
                        Err(e) if is_missing(&e) => Ok(None),
                        Err(e) => Err(e),
                    };
                    (step, r)
                }) as Fetch
            })
            .collect();
        let fetched: Vec<(u64, object_store::Result<Option<Bytes>>)> =
            inner.client.block(async move {
                Ok(futures_util::stream::iter(gets)
                    .buffer_unordered(16)
                    .collect::<Vec<_>>()
                    .await)
            })?;
        let fetched: Vec<(u64, Result<Option<Bytes>>)> = fetched
            .into_iter()
            .map(|(step, r)| {
                (
                    step,
                    r.map_err(|e| remote("get", &inner.url(&Inner::marker(step)), e)),
                )
            })
            .collect();
        let mut markers: BTreeMap<u64, Option<String>> = BTreeMap::new();
        for (step, got) in fetched {
            let name = format::dir_name(step);
            let info = match got {
                Ok(Some(bytes)) => inner.parse_info(step, &bytes),
                Ok(None) => continue,
                Err(e) => return Err(e),
            };
            match info {
                Ok(info) if info.experiment_id == experiment_id && info.step == step => {
                    markers.insert(step, info.upload.clone());
                    scan.entries.insert(step, info);
                }
                Ok(info) => {
                    tracing::warn!(dir = %inner.url(&name), "checkpoint belongs to another experiment or step; ignored");
                    markers.insert(step, info.upload.clone());
                    scan.report.foreign.push(name);
                }
                Err(e) => {
                    tracing::warn!(dir = %inner.url(&name), error = %e, "unreadable checkpoint.json; checkpoint ignored");
                    markers.insert(step, None);
                    scan.report.unreadable.push(name);
                }
            }
        }
        if repair {
            scan.report.removed_temp = self.repair(&objects, &markers)?;
        }
        Ok(scan)
    }

    fn read_registry(&self) -> Option<Registry> {
        let path = PathBuf::from(self.inner.url(REGISTRY_JSON));
        let parsed = self.inner.get(REGISTRY_JSON).and_then(|got| match got {
            None => Ok(None),
            Some((bytes, _)) => serde_json::from_slice::<Registry>(&bytes)
                .map_err(|source| Error::Json {
                    path: path.clone(),
                    source,
                })
                .and_then(|r| r.check(&path).map(|()| Some(r))),
        });
        match parsed {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "registry.json unreadable; rebuilding it from the checkpoints");
                None
            }
        }
    }

    fn update_registry(&self, full: &Registry, delta: &Delta, rebuild: Rebuild<'_>) -> Result<()> {
        let inner = &*self.inner;
        let path = PathBuf::from(inner.url(REGISTRY_JSON));
        let mut remembered = lock(&self.registry).take();
        for attempt in 0..REGISTRY_TRIES {
            // What we wrote last, if the store gave it an e-tag: always put (a stale copy is
            // found out by the condition, never by the comparison below).
            let from_memory = remembered.take().filter(|(_, v)| v.e_tag.is_some());
            let (current, mode, known) = match from_memory {
                Some((r, version)) => (Some(r), PutMode::Update(version), false),
                None => match inner.get(REGISTRY_JSON)? {
                    Some((bytes, version)) => (
                        serde_json::from_slice::<Registry>(&bytes)
                            .ok()
                            .filter(|r| r.check(&path).is_ok()),
                        PutMode::Update(version),
                        true,
                    ),
                    None => (None, PutMode::Create, true),
                },
            };
            let next = match &current {
                Some(r) => rebuild(delta.apply(&r.checkpoints)),
                None => full.clone(),
            };
            if known && current.as_ref() == Some(&next) {
                return Ok(());
            }
            let bytes = serde_json::to_vec_pretty(&next).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?;
            match inner.put_versioned(REGISTRY_JSON, bytes, mode) {
                Ok(version) => {
                    *lock(&self.registry) = Some((next, version));
                    return Ok(());
                }
                Err(PutError::Conflict) if !known => {
                    // Another writer changed it since: read it (no wait needed).
                    continue;
                }
                Err(PutError::Conflict) => {
                    // Another writer got there first: re-read and apply our change to theirs.
                    let jitter = (crate::now_ms() as u64 ^ std::process::id() as u64) % 20;
                    std::thread::sleep(Duration::from_millis(5 + jitter + 5 * attempt as u64));
                }
                Err(PutError::Other(e)) => return Err(e),
            }
        }
        Err(Error::Conflict {
            path: inner.url(REGISTRY_JSON),
        })
    }

    fn sync_commits(&self) -> Result<()> {
        Ok(())
    }

    fn info(&self, step: u64) -> Result<Option<CheckpointInfo>> {
        let me = std::thread::current().id();
        let fresh = {
            let mut f = lock(&self.fresh);
            f.iter()
                .position(|(s, t, _, _)| *s == step && *t == me)
                .map(|i| f.swap_remove(i))
        };
        if let Some((_, _, at, bytes)) = fresh
            && at.elapsed() < FRESH_FOR
        {
            return self.inner.parse_info(step, &bytes).map(Some);
        }
        Ok(self.inner.read_info(step)?.map(|(i, _)| i))
    }

    fn stage(&self, ckpt: Checkpoint, experiment_id: &str, is_best: bool) -> Result<Staged> {
        let inner = &*self.inner;
        let upload = self.new_upload();
        let step = ckpt.step;
        let data = Inner::data_prefix(step, &upload);
        let (compression, algo) = (inner.config.compression, inner.config.hash);
        let mut files = Vec::with_capacity(ckpt.files.len());
        let written: Result<()> = (|| {
            for (name, source) in ckpt.files {
                let key = inner.key(&format!("{data}/{name}"));
                let journal = inner.key(&format!(".uploads/{upload}-{name}.json"));
                let entry = match source {
                    Source::Bytes(b) => transfer::put_bytes(
                        &inner.client,
                        &key,
                        &journal,
                        &name,
                        b,
                        compression,
                        algo,
                    )?,
                    Source::Path(p) => transfer::put_path(
                        &inner.client,
                        &key,
                        &journal,
                        &name,
                        &p,
                        compression,
                        algo,
                    )?,
                };
                files.push(entry);
            }
            Ok(())
        })();
        let staged = Staged {
            info: CheckpointInfo {
                format_version: FORMAT_VERSION,
                experiment_id: experiment_id.to_owned(),
                step,
                epoch: ckpt.epoch,
                metrics: ckpt.metrics,
                is_best,
                created_ms: crate::now_ms(),
                files,
                extra: ckpt.extra,
                dir: inner.location.join(format::dir_name(step)),
                upload: Some(upload.clone()),
                commit_seq: ckpt.commit_seq,
            },
            token: PathBuf::from(upload),
        };
        if let Err(e) = written {
            self.discard(&staged);
            return Err(e);
        }
        Ok(staged)
    }

    fn publish(&self, staged: &Staged) -> Result<Option<Doomed>> {
        let inner = &*self.inner;
        let step = staged.info.step;
        let marker = Inner::marker(step);
        let json = serde_json::to_vec_pretty(&staged.info).map_err(|source| Error::Json {
            path: PathBuf::from(inner.url(&marker)),
            source,
        })?;
        match inner.put(&marker, json.clone(), PutMode::Create) {
            Ok(()) => return Ok(None),
            Err(PutError::Other(e)) => return Err(e),
            Err(PutError::Conflict) => {}
        }
        // The step exists: replace its marker atomically (conditional on what we read).
        let Some((bytes, version)) = inner.get(&marker)? else {
            return match inner.put(&marker, json, PutMode::Create) {
                Ok(()) => Ok(None),
                Err(PutError::Conflict) => Err(Error::Conflict {
                    path: inner.url(&marker),
                }),
                Err(PutError::Other(e)) => Err(e),
            };
        };
        let old: Option<String> = serde_json::from_slice::<CheckpointInfo>(&bytes)
            .ok()
            .and_then(|i| i.upload);
        if old == staged.info.upload {
            // Our own create, retried by the client after a lost response.
            return Ok(None);
        }
        match inner.put(&marker, json, PutMode::Update(version)) {
            Ok(()) => Ok(old.map(|u| Doomed(PathBuf::from(Inner::data_prefix(step, &u))))),
            Err(PutError::Conflict) => Err(Error::Conflict {
                path: inner.url(&marker),
            }),
            Err(PutError::Other(e)) => Err(e),
        }
    }

    fn discard(&self, staged: &Staged) {
        let upload = staged.token.to_string_lossy();
        let prefix = Inner::data_prefix(staged.info.step, &upload);
        if let Err(e) = self.inner.delete_tree(&prefix) {
            tracing::warn!(error = %e, "could not remove a failed upload; it is removed on a later open");
        }
    }

    fn retire(&self, steps: &[u64]) -> Result<Vec<(u64, Doomed)>> {
        if steps.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &*self.inner;
        // The first lease check only has to come before the markers are deleted, so its listing
        // runs beside the tombstone writes (a save with `max_checkpoints` waits one round trip
        // less).
        let (hidden, leased) = std::thread::scope(|s| {
            let listing = std::thread::Builder::new()
                .name("exptrack-ckpt-leases".to_owned())
                .spawn_scoped(s, || inner.leased_steps())
                .ok();
            let hidden = self.hide(steps);
            let leased = match listing {
                Some(h) => h.join().unwrap_or_else(|_| {
                    Err(Error::Worker {
                        message: "lease listing thread panicked".to_owned(),
                    })
                }),
                None => inner.leased_steps(),
            };
            (hidden, leased)
        });
        let hidden = hidden?;
        if hidden.is_empty() {
            return Ok(Vec::new());
        }
        let leased = leased?;
        let mut deleted = Vec::new();
        for (step, bytes, _version, upload) in hidden {
            if leased.contains(&step) {
                inner.delete(&Inner::tombstone(step))?;
                continue;
            }
            // The marker first: from here on no reader finds the checkpoint.
            inner.delete(&Inner::marker(step))?;
            deleted.push((step, bytes, upload));
        }
        let leased = inner.leased_steps()?;
        let mut retired = Vec::new();
        for (step, bytes, upload) in deleted {
            if leased.contains(&step) {
                // A reader took a lease while we were deciding: put the marker back.
                match inner.put(&Inner::marker(step), bytes.to_vec(), PutMode::Create) {
                    Ok(()) | Err(PutError::Conflict) => {}
                    Err(PutError::Other(e)) => return Err(e),
                }
                inner.delete(&Inner::tombstone(step))?;
                continue;
            }
            let doomed = match upload {
                Some(u) => format!(
                    "{}\n{}",
                    Inner::data_prefix(step, &u),
                    Inner::tombstone(step)
                ),
                None => Inner::tombstone(step),
            };
            retired.push((step, Doomed(PathBuf::from(doomed))));
        }
        Ok(retired)
    }

    fn remove(&self, doomed: &Doomed) -> Result<()> {
        // Data prefix first, then the tombstone (so a crash in between leaves the tombstone, and
        // the next open finishes the job).
        for part in doomed.0.to_string_lossy().lines() {
            if part.starts_with(".del-") {
                self.inner.delete(part)?;
            } else {
                self.inner.delete_tree(part)?;
            }
        }
        Ok(())
    }

    fn lease(&self, step: u64) -> Result<Lease> {
        let inner = &self.inner;
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let rel = format!(
            "{}/{step}-{}-{n}-{}",
            crate::lease::LEASES_DIR,
            std::process::id(),
            inner.host
        );
        match inner.put(&rel, Vec::new(), PutMode::Overwrite) {
            Ok(()) | Err(PutError::Conflict) => {}
            Err(PutError::Other(e)) => return Err(e),
        }
        // Released in the background (`Inner::release`): a load does not wait for the delete.
        let release = {
            let inner = Arc::clone(inner);
            let rel = rel.clone();
            Box::new(move || inner.release(&rel))
        };
        let lease = Lease::remote(step, inner.location.join(format::dir_name(step)), release);
        // Checked after the lease exists (see the module docs of `lease`). The marker read is
        // kept for this thread's `info` call that follows.
        let committed = || {
            let marker = inner.get(&Inner::marker(step))?;
            let found = marker.is_some();
            if let Some((bytes, _)) = marker {
                let me = std::thread::current().id();
                let mut f = lock(&self.fresh);
                f.retain(|(s, t, at, _)| !(*s == step && *t == me) && at.elapsed() < FRESH_FOR);
                f.push((step, me, std::time::Instant::now(), bytes));
            }
            Ok::<bool, Error>(found)
        };
        if committed()? {
            return Ok(lease);
        }
        let deadline = std::time::Instant::now() + PRUNE_SETTLE;
        while inner.get(&Inner::tombstone(step))?.is_some() && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(20));
            if committed()? {
                return Ok(lease);
            }
        }
        if committed()? {
            return Ok(lease);
        }
        Err(Error::NotFound {
            step,
            dir: inner.location.clone(),
        })
    }

    fn leased_steps(&self) -> BTreeSet<u64> {
        match self.inner.leased_steps() {
            Ok(s) => s,
            Err(e) => {
                // Unknown leases: nothing may be deleted on this basis, so report every step as
                // leased is not possible here; the caller's retention re-checks after hiding.
                tracing::warn!(error = %e, "could not list leases");
                BTreeSet::new()
            }
        }
    }

    fn read_file(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<Vec<u8>> {
        let (key, display) = self.file_key(info, file)?;
        transfer::get_verified(&self.inner.client, &key, file, &display)
    }

    fn verify_file(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<()> {
        let (key, display) = self.file_key(info, file)?;
        transfer::verify_streaming(&self.inner.client, &key, file, &display)
    }

    fn write_results(&self, bytes: &[u8]) -> Result<()> {
        match self
            .inner
            .put(RESULTS_JSON, bytes.to_vec(), PutMode::Overwrite)
        {
            Ok(()) => Ok(()),
            Err(PutError::Conflict) => Err(Error::Conflict {
                path: self.inner.url(RESULTS_JSON),
            }),
            Err(PutError::Other(e)) => Err(e),
        }
    }

    fn read_results(&self) -> Result<Option<serde_json::Value>> {
        match self.inner.get(RESULTS_JSON)? {
            None => Ok(None),
            Some((bytes, _)) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|source| Error::Json {
                        path: PathBuf::from(self.inner.url(RESULTS_JSON)),
                        source,
                    })
            }
        }
    }

    fn archive(&self, steps: &[u64], name: &str) -> Result<String> {
        let inner = &*self.inner;
        let dest = format!("archive/{name}");
        let copy = |rel: &str| -> Result<()> {
            let (from, to) = (inner.key(rel), inner.key(&format!("{dest}/{rel}")));
            inner.client.block(async {
                inner
                    .client
                    .store
                    .copy(&from, &to)
                    .await
                    .map_err(|e| remote("copy", &inner.url(rel), e))
            })
        };
        for &step in steps {
            let dir = format::dir_name(step);
            let objects = inner.list(&dir)?;
            for (path, _) in &objects {
                copy(path)?;
            }
            // Marker first, then the data.
            inner.delete(&Inner::marker(step))?;
            for (path, _) in &objects {
                inner.delete(path)?;
            }
        }
        for rel in [REGISTRY_JSON, RESULTS_JSON] {
            if inner.get(rel)?.is_some() {
                copy(rel)?;
                inner.delete(rel)?;
            }
        }
        Ok(inner.url(&dest))
    }
}
