//! A local directory: `<dir>/<experiment_id>/ckpt-<step>/`, written to a temp sibling, fsynced and
//! renamed into place; deletions are renames to `.del-*` first; leases are files.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use exptrack_core::fsutil::LockFile;

use super::{Delta, Doomed, Rebuild, Scan, Staged, Storage};
use crate::checkpoint::{Checkpoint, Source};
use crate::config::CheckpointConfig;
use crate::error::{Error, IoContext, Result};
use crate::format::{
    self, CHECKPOINT_JSON, CheckpointInfo, DEL_PREFIX, FORMAT_VERSION, FileEntry, REGISTRY_JSON,
    RESULTS_JSON, Registry, TMP_PREFIX,
};
use crate::io::{self, WriteOpts};
use crate::lease::{Lease, leased_steps};

/// One experiment directory on a local file system.
#[derive(Debug)]
pub(crate) struct LocalStorage {
    exp_dir: PathBuf,
    config: CheckpointConfig,
    opts: WriteOpts,
    counter: AtomicU64,
    _lock: Option<LockFile>,
}

impl LocalStorage {
    /// Opens `exp_dir`; a writer creates it and takes its lock.
    pub(crate) fn open(
        exp_dir: PathBuf,
        config: &CheckpointConfig,
        read_only: bool,
        budget: Arc<AtomicU64>,
    ) -> Result<Self> {
        let opts = WriteOpts {
            fsync: config.fsync,
            drop_behind: !config.keep_in_page_cache,
            budget: Some(budget),
        };
        let mut lock = None;
        if !read_only {
            let existed = exp_dir.is_dir();
            std::fs::create_dir_all(&exp_dir).ctx("create", &exp_dir)?;
            if !existed
                && config.fsync
                && let Some(parent) = exp_dir.parent()
            {
                io::fsync_dir(parent)?;
            }
            lock = Some(take_lock(&exp_dir)?);
        }
        Ok(LocalStorage {
            exp_dir,
            config: config.clone(),
            opts,
            counter: AtomicU64::new(0),
            _lock: lock,
        })
    }

    fn tmp_suffix(&self) -> String {
        format!(
            "{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    fn read_info(&self, step: u64) -> Result<CheckpointInfo> {
        format::read_info(&self.exp_dir.join(format::dir_name(step)))
    }

    fn write_tmp(
        &self,
        tmp: &Path,
        ckpt: Checkpoint,
        experiment_id: &str,
        is_best: bool,
    ) -> Result<CheckpointInfo> {
        std::fs::create_dir(tmp).ctx("create", tmp)?;
        let compression = self.config.compression;
        let algo = self.config.hash;
        let mut files = Vec::with_capacity(ckpt.files.len());
        let mut unsynced = Vec::with_capacity(ckpt.files.len() + 1);
        for (name, source) in &ckpt.files {
            let path = tmp.join(name);
            let (entry, file) = match source {
                Source::Bytes(b) => io::write_bytes(&path, name, b, compression, algo, &self.opts)?,
                Source::Path(src) => {
                    io::write_from_path(&path, name, src, compression, algo, &self.opts)?
                }
            };
            files.push(entry);
            unsynced.push(file);
        }
        drop(ckpt.files);
        let info = CheckpointInfo {
            format_version: FORMAT_VERSION,
            experiment_id: experiment_id.to_owned(),
            step: ckpt.step,
            epoch: ckpt.epoch,
            metrics: ckpt.metrics,
            is_best,
            created_ms: exptrack_core::fsutil::now_ms(),
            files,
            extra: ckpt.extra,
            dir: PathBuf::new(),
            upload: None,
            commit_seq: ckpt.commit_seq,
        };
        let json_path = tmp.join(CHECKPOINT_JSON);
        let json = serde_json::to_vec_pretty(&info).map_err(|source| Error::Json {
            path: json_path.clone(),
            source,
        })?;
        unsynced.push(io::write_small_unsynced(&json_path, &json, &self.opts)?.0);
        // All files (data and checkpoint.json) are fsynced together, then the directory.
        io::sync_files(unsynced, &self.opts)?;
        if self.config.fsync {
            io::fsync_dir(tmp)?;
        }
        Ok(info)
    }
}

impl Storage for LocalStorage {
    fn location(&self) -> &Path {
        &self.exp_dir
    }

    fn scan(&self, experiment_id: &str, repair: bool) -> Result<Scan> {
        let mut scan = Scan::default();
        let rd = match std::fs::read_dir(&self.exp_dir) {
            Ok(rd) => Some(rd),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !repair => None,
            Err(e) => return Err(Error::io("read dir", &self.exp_dir, e)),
        };
        let leased = leased_steps(&self.exp_dir);
        let mut names: Vec<String> = rd
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok().and_then(|e| e.file_name().into_string().ok()))
            .collect();
        names.sort();
        for name in names {
            let path = self.exp_dir.join(&name);
            if name.starts_with(TMP_PREFIX)
                || name.starts_with(DEL_PREFIX)
                || io::is_atomic_temp(&name)
            {
                if !repair {
                    continue;
                }
                // A deletion interrupted before it finished, of a checkpoint a reader still leases: restore it.
                if let Some(step) = name.strip_prefix(DEL_PREFIX).and_then(format::del_step)
                    && leased.contains(&step)
                {
                    let back = self.exp_dir.join(format::dir_name(step));
                    if !back.exists() && std::fs::rename(&path, &back).is_ok() {
                        if let Ok(info) = self.read_info(step) {
                            scan.entries.insert(step, info);
                        }
                        continue;
                    }
                }
                if path.is_dir() {
                    io::remove_tree(&path)?;
                } else {
                    std::fs::remove_file(&path).ctx("remove", &path)?;
                }
                scan.report.removed_temp.push(name);
                continue;
            }
            let Some(step) = format::parse_dir_name(&name) else {
                continue;
            };
            match self.read_info(step) {
                Ok(info) if info.experiment_id == experiment_id && info.step == step => {
                    scan.entries.insert(step, info);
                }
                Ok(_) => {
                    tracing::warn!(dir = %path.display(), "checkpoint belongs to another experiment or step; ignored");
                    scan.report.foreign.push(name);
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "unreadable checkpoint.json; checkpoint ignored");
                    scan.report.unreadable.push(name);
                }
            }
        }
        if repair && !scan.report.removed_temp.is_empty() {
            self.sync_commits()?;
        }
        Ok(scan)
    }

    fn read_registry(&self) -> Option<Registry> {
        let path = self.exp_dir.join(REGISTRY_JSON);
        if !path.is_file() {
            return None;
        }
        match format::read_json::<Registry>(&path).and_then(|r| r.check(&path).map(|()| r)) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "registry.json unreadable; rebuilding it from the checkpoints");
                None
            }
        }
    }

    fn update_registry(
        &self,
        full: &Registry,
        _delta: &Delta,
        _rebuild: Rebuild<'_>,
    ) -> Result<()> {
        // One writer (the lock): its view is the registry.
        let path = self.exp_dir.join(REGISTRY_JSON);
        let bytes =
            serde_json::to_vec_pretty(full).map_err(|source| Error::Json { path, source })?;
        io::replace_atomic(&self.exp_dir, REGISTRY_JSON, &bytes, &self.opts)
    }

    fn sync_commits(&self) -> Result<()> {
        if self.config.fsync {
            io::fsync_dir(&self.exp_dir)?;
        }
        Ok(())
    }

    fn info(&self, step: u64) -> Result<Option<CheckpointInfo>> {
        let dir = self.exp_dir.join(format::dir_name(step));
        if !dir.join(CHECKPOINT_JSON).is_file() {
            return Ok(None);
        }
        format::read_info(&dir).map(Some)
    }

    fn stage(&self, ckpt: Checkpoint, experiment_id: &str, is_best: bool) -> Result<Staged> {
        let step = ckpt.step;
        let tmp = self.exp_dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            format::dir_name(step),
            self.tmp_suffix()
        ));
        match self.write_tmp(&tmp, ckpt, experiment_id, is_best) {
            Ok(mut info) => {
                info.dir = self.exp_dir.join(format::dir_name(step));
                Ok(Staged { info, token: tmp })
            }
            Err(e) => {
                let _ = io::remove_tree(&tmp);
                Err(e)
            }
        }
    }

    fn publish(&self, staged: &Staged) -> Result<Option<Doomed>> {
        let tmp = &staged.token;
        let target = &staged.info.dir;
        if target.exists() {
            if io::exchange(tmp, target)? {
                return Ok(Some(Doomed(tmp.clone())));
            }
            let old = self.exp_dir.join(format!(
                "{DEL_PREFIX}{}-{}",
                format::dir_name(staged.info.step),
                self.tmp_suffix()
            ));
            std::fs::rename(target, &old).ctx("rename", target)?;
            std::fs::rename(tmp, target).ctx("rename", target)?;
            return Ok(Some(Doomed(old)));
        }
        if let Err(e) = std::fs::rename(tmp, target) {
            let _ = io::remove_tree(tmp);
            return Err(Error::io("rename", target, e));
        }
        Ok(None)
    }

    fn discard(&self, staged: &Staged) {
        let _ = io::remove_tree(&staged.token);
    }

    fn retire(&self, steps: &[u64]) -> Result<Vec<(u64, Doomed)>> {
        let mut moved = Vec::new();
        for &step in steps {
            let from = self.exp_dir.join(format::dir_name(step));
            let to = self.exp_dir.join(format!(
                "{DEL_PREFIX}{}-{}",
                format::dir_name(step),
                self.tmp_suffix()
            ));
            match std::fs::rename(&from, &to) {
                Ok(()) => moved.push((step, from, to)),
                // Kept for now; the next prune tries again.
                Err(e) => tracing::warn!(step, error = %e, "could not delete checkpoint"),
            }
        }
        if moved.is_empty() {
            return Ok(Vec::new());
        }
        let leased = leased_steps(&self.exp_dir);
        let mut retired = Vec::new();
        for (step, from, to) in moved {
            if leased.contains(&step) {
                // A reader took a lease while we were deciding: put it back.
                std::fs::rename(&to, &from).ctx("rename", &to)?;
            } else {
                retired.push((step, Doomed(to)));
            }
        }
        Ok(retired)
    }

    fn remove(&self, doomed: &Doomed) -> Result<()> {
        io::remove_tree(&doomed.0)
    }

    fn lease(&self, step: u64) -> Result<Lease> {
        Lease::acquire(
            &self.exp_dir,
            step,
            self.exp_dir.join(format::dir_name(step)),
        )
    }

    fn leased_steps(&self) -> BTreeSet<u64> {
        leased_steps(&self.exp_dir)
    }

    fn read_file(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<Vec<u8>> {
        io::read_verified(&info.dir.join(&file.name), file, self.opts.drop_behind)
    }

    fn verify_file(&self, info: &CheckpointInfo, file: &FileEntry) -> Result<()> {
        io::verify_file(&info.dir.join(&file.name), file, self.opts.drop_behind)
    }

    fn write_results(&self, bytes: &[u8]) -> Result<()> {
        io::replace_atomic(&self.exp_dir, RESULTS_JSON, bytes, &self.opts)
    }

    fn read_results(&self) -> Result<Option<serde_json::Value>> {
        let path = self.exp_dir.join(RESULTS_JSON);
        if !path.is_file() {
            return Ok(None);
        }
        format::read_json(&path).map(Some)
    }

    fn archive(&self, steps: &[u64], name: &str) -> Result<String> {
        let dest = self.exp_dir.join("archive").join(name);
        std::fs::create_dir_all(&dest).ctx("create", &dest)?;
        for step in steps {
            let name = format::dir_name(*step);
            let from = self.exp_dir.join(&name);
            std::fs::rename(&from, dest.join(&name)).ctx("rename", &from)?;
        }
        for name in [REGISTRY_JSON, RESULTS_JSON] {
            let from = self.exp_dir.join(name);
            if from.exists() {
                std::fs::rename(&from, dest.join(name)).ctx("rename", &from)?;
            }
        }
        Ok(dest.display().to_string())
    }
}

fn take_lock(exp_dir: &Path) -> Result<LockFile> {
    let path = exp_dir.join(".lock");
    // std's advisory lock (flock on Unix): released when the file is closed or the process dies.
    match LockFile::try_acquire(&path) {
        Ok(Some(lock)) => Ok(lock),
        Ok(None) => Err(Error::Locked { path }),
        Err(e) => Err(Error::io("lock", path, e)),
    }
}
