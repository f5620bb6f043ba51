//! The requests every operation is made of (get, conditional put, delete, list), the key
//! layout, and leases.

use std::collections::BTreeSet;
use std::path::PathBuf;

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectMeta, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};

use super::client::{Client, remote};
use super::{LEASE_TTL, orphan_grace};
use crate::config::CheckpointConfig;
use crate::error::{Error, Result};
use crate::format::{self, CHECKPOINT_JSON, CheckpointInfo};

pub(super) struct Inner {
    pub(super) client: Client,
    /// `<prefix>/<experiment_id>`.
    pub(super) root: ObjPath,
    /// `scheme://bucket/<prefix>/<experiment_id>`, for messages and `CheckpointInfo::dir`.
    pub(super) location: PathBuf,
    pub(super) config: CheckpointConfig,
    pub(super) host: String,
}

/// Lease deletions of this process still in flight (one count for every store of the process:
/// a lease a reader dropped must not be counted by another checkpointer of the same process).
/// A released lease is deleted on the runtime, off the reader's path (one round trip less per
/// load); [`leased_steps`](Inner::leased_steps) waits for them first, so it never counts a
/// lease that was already dropped, and dropping a storage waits for them, so none is cut off
/// with its runtime.
struct Releases {
    pending: std::sync::Mutex<usize>,
    done: std::sync::Condvar,
}

/// How long [`Releases::wait`] waits for lease deletions (each one retries on its own for up to
/// three minutes; past this, a lease left behind only keeps a checkpoint a little longer).
const RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

static RELEASES: Releases = Releases {
    pending: std::sync::Mutex::new(0),
    done: std::sync::Condvar::new(),
};

impl Releases {
    fn lock(&self) -> std::sync::MutexGuard<'_, usize> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) {
        *self.lock() += 1;
    }

    fn finish(&self) {
        let mut n = self.lock();
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.done.notify_all();
        }
    }

    /// Waits until no release is in flight (at most [`RELEASE_WAIT`]).
    fn wait(&self) {
        let n = self.lock();
        let (n, timeout) = self
            .done
            .wait_timeout_while(n, RELEASE_WAIT, |n| *n > 0)
            .unwrap_or_else(|e| e.into_inner());
        if timeout.timed_out() {
            tracing::debug!(pending = *n, "lease releases still in flight");
        }
    }
}

/// Counts one release as finished when dropped: when its task ends, or when the task is
/// dropped unfinished with its runtime.
struct Finish;

impl Drop for Finish {
    fn drop(&mut self) {
        RELEASES.finish();
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The runtime goes with `client`: let the lease deletions it runs finish first.
        RELEASES.wait();
    }
}

/// A short id of this host (for lease names): 8 hex digits of its name's hash.
pub(super) fn host_id() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it or fails.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let name: &[u8] = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        &buf[..end]
    } else {
        b"unknown"
    };
    blake3::hash(name).to_hex()[..8].to_owned()
}

pub(super) fn age_ms(meta: &ObjectMeta) -> i64 {
    crate::now_ms().saturating_sub(meta.last_modified.timestamp_millis())
}

pub(super) fn old_enough(meta: &ObjectMeta) -> bool {
    age_ms(meta) >= i64::try_from(orphan_grace().as_millis()).unwrap_or(i64::MAX)
}

pub(super) fn is_missing(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::NotFound { .. })
}

pub(super) fn is_conflict(e: &object_store::Error) -> bool {
    matches!(
        e,
        object_store::Error::Precondition { .. } | object_store::Error::AlreadyExists { .. }
    )
}

impl Inner {
    pub(super) fn key(&self, rel: &str) -> ObjPath {
        ObjPath::from_iter(self.root.parts().chain(ObjPath::from(rel).parts()))
    }

    pub(super) fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.location.display())
    }

    pub(super) fn marker(step: u64) -> String {
        format!("{}/{CHECKPOINT_JSON}", format::dir_name(step))
    }

    pub(super) fn tombstone(step: u64) -> String {
        format!(".del-{}", format::dir_name(step))
    }

    pub(super) fn data_prefix(step: u64, upload: &str) -> String {
        format!("{}/{upload}", format::dir_name(step))
    }

    /// GET: the bytes and version, None when missing.
    pub(super) fn get(&self, rel: &str) -> Result<Option<(Bytes, UpdateVersion)>> {
        let key = self.key(rel);
        self.client.block(async {
            match self.client.store.get(&key).await {
                Ok(r) => {
                    let version = UpdateVersion {
                        e_tag: r.meta.e_tag.clone(),
                        version: r.meta.version.clone(),
                    };
                    let bytes = r
                        .bytes()
                        .await
                        .map_err(|e| remote("get", &self.url(rel), e))?;
                    Ok(Some((bytes, version)))
                }
                Err(e) if is_missing(&e) => Ok(None),
                Err(e) => Err(remote("get", &self.url(rel), e)),
            }
        })
    }

    pub(super) fn put(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> std::result::Result<(), PutError> {
        self.put_versioned(rel, bytes, mode).map(|_| ())
    }

    /// [`put`](Self::put), returning the version the store gave the new object.
    pub(super) fn put_versioned(
        &self,
        rel: &str,
        bytes: Vec<u8>,
        mode: PutMode,
    ) -> std::result::Result<UpdateVersion, PutError> {
        let key = self.key(rel);
        self.client
            .block(async {
                Ok(self
                    .client
                    .store
                    .put_opts(&key, PutPayload::from(bytes), PutOptions::from(mode))
                    .await)
            })
            .map_err(PutError::Other)?
            .map(|r| UpdateVersion {
                e_tag: r.e_tag,
                version: r.version,
            })
            .map_err(|e| {
                if is_conflict(&e) {
                    PutError::Conflict
                } else {
                    PutError::Other(remote("put", &self.url(rel), e))
                }
            })
    }

    pub(super) fn delete(&self, rel: &str) -> Result<()> {
        let key = self.key(rel);
        self.client.block(async {
            match self.client.store.delete(&key).await {
                Ok(()) => Ok(()),
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(remote("delete", &self.url(rel), e)),
            }
        })
    }

    /// Every object under `rel/` (everything when `rel` is empty), with its path relative to the
    /// root.
    pub(super) fn list(&self, rel: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let prefix = if rel.is_empty() {
            self.root.clone()
        } else {
            self.key(rel)
        };
        let root_parts = self.root.parts().count();
        let metas: Vec<ObjectMeta> = self.client.block(async {
            self.client
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| remote("list", &self.url(rel), e))
        })?;
        Ok(metas
            .into_iter()
            .map(|m| {
                let rel: Vec<String> = m
                    .location
                    .parts()
                    .skip(root_parts)
                    .map(|p| p.as_ref().to_owned())
                    .collect();
                (rel.join("/"), m)
            })
            .collect())
    }

    /// Deletes every object under `rel/`.
    pub(super) fn delete_tree(&self, rel: &str) -> Result<()> {
        for (path, _) in self.list(rel)? {
            self.delete(&path)?;
        }
        Ok(())
    }

    pub(super) fn parse_info(&self, step: u64, bytes: &[u8]) -> Result<CheckpointInfo> {
        let path = PathBuf::from(self.url(&Self::marker(step)));
        let mut info: CheckpointInfo =
            serde_json::from_slice(bytes).map_err(|source| Error::Json {
                path: path.clone(),
                source,
            })?;
        info.check(&path)?;
        if info.upload.is_none() {
            return Err(Error::InvalidMetadata {
                path,
                message: "no upload (not written by an object-store checkpointer)".into(),
            });
        }
        info.dir = self.location.join(format::dir_name(step));
        Ok(info)
    }

    pub(super) fn read_info(&self, step: u64) -> Result<Option<(CheckpointInfo, UpdateVersion)>> {
        match self.get(&Self::marker(step))? {
            Some((bytes, version)) => Ok(Some((self.parse_info(step, &bytes)?, version))),
            None => Ok(None),
        }
    }

    pub(super) fn lease_live(&self, name: &str, meta: &ObjectMeta) -> Option<(u64, bool)> {
        let mut parts = name.split('-');
        let (step, pid, _n, host) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let step: u64 = step.parse().ok()?;
        let pid: u32 = pid.parse().ok()?;
        let live = if host == self.host {
            pid == std::process::id() || crate::lease::pid_alive(pid)
        } else {
            age_ms(meta) < i64::try_from(LEASE_TTL.as_millis()).unwrap_or(i64::MAX)
        };
        Some((step, live))
    }

    /// Deletes the lease object `rel` in the background (see [`Releases`]).
    pub(super) fn release(&self, rel: &str) {
        // The task holds the store, never `Inner`: the runtime (in `Inner`)
        // must not be dropped on one of its own threads.
        let store = std::sync::Arc::clone(&self.client.store);
        let key = self.key(rel);
        RELEASES.start();
        let finish = Finish;
        drop(self.client.spawn(async move {
            if let Err(e) = store.delete(&key).await
                && !is_missing(&e)
            {
                tracing::debug!(error = %e, "lease not removed; it goes stale");
            }
            drop(finish);
            Ok(())
        }));
    }

    pub(super) fn leased_steps(&self) -> Result<BTreeSet<u64>> {
        RELEASES.wait();
        let mut steps = BTreeSet::new();
        for (path, meta) in self.list(crate::lease::LEASES_DIR)? {
            let Some(name) = path.rsplit('/').next() else {
                continue;
            };
            match self.lease_live(name, &meta) {
                Some((step, true)) => {
                    steps.insert(step);
                }
                Some((_, false)) => {
                    // Stale: its process is gone.
                    let _ = self.delete(&path);
                }
                None => {}
            }
        }
        Ok(steps)
    }
}

/// A conditional put's outcome other than success.
pub(super) enum PutError {
    /// The condition failed (the object exists, or changed since it was read).
    Conflict,
    Other(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ids_are_short_hex() {
        let h = host_id();
        assert_eq!(h.len(), 8);
        assert!(h.bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
