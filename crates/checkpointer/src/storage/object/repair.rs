//! What a writer's open removes: leftovers of crashed saves and deletions, once older than the
//! grace period.

use std::collections::BTreeMap;

use object_store::ObjectMeta;
use object_store::PutMode;
use object_store::path::Path as ObjPath;

use super::ObjectStorage;
use super::client::remote;
use super::inner::{Inner, PutError, old_enough};
use super::transfer;
use crate::error::Result;
use crate::format;

impl ObjectStorage {
    /// Removes leftovers older than the grace period; returns what was removed.
    pub(super) fn repair(
        &self,
        objects: &[(String, ObjectMeta)],
        markers: &BTreeMap<u64, Option<String>>,
    ) -> Result<Vec<String>> {
        let inner = &*self.inner;
        let mut removed = Vec::new();
        let leased = inner.leased_steps()?;
        // Journaled multipart uploads of crashed saves.
        for (path, meta) in objects {
            if !path.starts_with(".uploads/") || !old_enough(meta) {
                continue;
            }
            if let Ok(Some((bytes, _))) = inner.get(path)
                && let Ok(j) = serde_json::from_slice::<transfer::Journal>(&bytes)
            {
                let key = ObjPath::from(j.key.as_str());
                let _ = inner.client.block(async {
                    inner
                        .client
                        .multipart
                        .abort_multipart(&key, &j.id)
                        .await
                        .map_err(|e| remote("abort multipart upload", &j.key, e))
                });
            }
            inner.delete(path)?;
            removed.push(path.clone());
        }
        // Interrupted deletions: restore a leased one, else finish it.
        for (path, meta) in objects {
            let Some(step) = path.strip_prefix(".del-").and_then(format::parse_dir_name) else {
                continue;
            };
            if !old_enough(meta) {
                continue;
            }
            if !markers.contains_key(&step)
                && leased.contains(&step)
                && let Ok(Some((bytes, _))) = inner.get(path)
            {
                match inner.put(&Inner::marker(step), bytes.to_vec(), PutMode::Create) {
                    Ok(()) | Err(PutError::Conflict) => {}
                    Err(PutError::Other(e)) => return Err(e),
                }
            }
            inner.delete(path)?;
            removed.push(path.clone());
        }
        // Data that no marker names (crashed saves, replaced or deleted checkpoints).
        let mut orphans: BTreeMap<String, bool> = BTreeMap::new();
        for (path, meta) in objects {
            let mut parts = path.splitn(3, '/');
            let (Some(dir), Some(upload), Some(_file)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let Some(step) = format::parse_dir_name(dir) else {
                continue;
            };
            let restored = leased.contains(&step) && !markers.contains_key(&step);
            if markers.get(&step).and_then(|u| u.as_deref()) == Some(upload) || restored {
                continue;
            }
            let key = format!("{dir}/{upload}");
            let old = orphans.entry(key).or_insert(true);
            *old &= old_enough(meta);
        }
        for (prefix, old) in orphans {
            if old {
                inner.delete_tree(&prefix)?;
                removed.push(prefix);
            }
        }
        Ok(removed)
    }
}
