//! [`ModelCheckpointer`]: commits, the registry, retention, async saves, resume and completion.

use std::collections::{BTreeMap, VecDeque};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use exptrack_core::shutdown::WorkGuard;

use crate::checkpoint::{Checkpoint, LoadedCheckpoint, Source};
use crate::config::CheckpointConfig;
use crate::error::{Error, IoContext, Result};
use crate::format::{
    self, CHECKPOINT_JSON, CheckpointInfo, DEL_PREFIX, Encoding, FORMAT_VERSION, REGISTRY_JSON,
    RESULTS_JSON, Registry, RegistryEntry, TMP_PREFIX,
};
use crate::io::{self, WriteOpts};
use crate::lease::{Lease, leased_steps};
use crate::retention::RetentionPolicy;

/// What [`ModelCheckpointer::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconcileReport {
    /// Temporary files and directories of interrupted saves or deletions that were removed.
    pub removed_temp: Vec<String>,
    /// Steps present on disk but missing from `registry.json` (re-added).
    pub rebuilt: Vec<u64>,
    /// Steps listed in `registry.json` whose directory is gone (dropped).
    pub dropped: Vec<u64>,
    /// `ckpt-*` directories whose `checkpoint.json` is unreadable (left alone, not listed).
    pub unreadable: Vec<String>,
    /// `ckpt-*` directories that belong to another experiment id (left alone, not listed).
    pub foreign: Vec<String>,
}

/// What [`ModelCheckpointer::resume_or_start`] decided.
#[derive(Debug)]
pub enum Resume {
    /// No usable checkpoint: start from scratch.
    Fresh,
    /// Continue from this (verified) checkpoint.
    Resumed(Box<LoadedCheckpoint>),
    /// The experiment was marked completed; these are its results. Set `force` to restart it.
    Completed(serde_json::Value),
}

/// Crash-safe checkpoint manager for one experiment.
///
/// Checkpoints live in `<config.dir>/<experiment_id>/ckpt-<step, 12 digits>/` with `checkpoint.json`
/// beside the files; `registry.json` indexes them. Each save is written to a temporary sibling
/// directory, every file and the directory are fsynced, and it is renamed into place, so a reader
/// never sees a half-written checkpoint; retention runs only after the commit. Every file's digest is
/// computed while writing and verified on load.
///
/// One writer per experiment directory (an `flock`ed `.lock` file); any number of
/// [`open_read_only`](Self::open_read_only) readers, which should hold a [`Lease`] while reading.
///
/// ```
/// use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let tmp = tempfile::tempdir()?;
/// let table: toml::Table = toml::from_str(r#"
///     max_checkpoints = 2
///     monitor = "val_loss"
/// "#)?;
/// let mut config = CheckpointConfig::from_table(&table)?;
/// # config.dir = tmp.path().to_owned();
/// let mut ckpt = ModelCheckpointer::open("exp-1", config)?;
/// for step in 1..=4u64 {
///     let loss = [0.9, 0.3, 0.5, 0.6][step as usize - 1];
///     ckpt.save(Checkpoint::new(step).metric("val_loss", loss).file("model.bpk", vec![step as u8; 1024]))?;
/// }
/// // Kept: the last two (3, 4) and the best (2).
/// assert_eq!(ckpt.list().iter().map(|c| c.step).collect::<Vec<_>>(), [2, 3, 4]);
/// assert_eq!(ckpt.best().map(|c| c.step), Some(2));
/// let loaded = ckpt.load_latest_valid()?.ok_or("no checkpoint")?;
/// assert_eq!(loaded.file("model.bpk"), Some(&[4u8; 1024][..]));
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct ModelCheckpointer {
    shared: Arc<Shared>,
    worker: Option<Worker>,
}

#[derive(Debug)]
struct Worker {
    /// Each accepted save travels with a shutdown guard, held until it is committed or failed,
    /// so a Ctrl-C / SIGTERM exit waits for it (`exptrack_core::shutdown`).
    tx: mpsc::Sender<(Checkpoint, WorkGuard)>,
    handle: JoinHandle<()>,
}

#[derive(Debug)]
struct Shared {
    exp_dir: PathBuf,
    experiment_id: String,
    config: CheckpointConfig,
    policy: RetentionPolicy,
    read_only: bool,
    opts: WriteOpts,
    budget: Arc<AtomicU64>,
    counter: AtomicU64,
    state: Mutex<State>,
    pending: Mutex<Pending>,
    idle: Condvar,
    reapers: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug)]
struct State {
    entries: BTreeMap<u64, CheckpointInfo>,
    report: ReconcileReport,
    _lock: Option<File>,
}

#[derive(Debug, Default)]
struct Pending {
    in_flight: usize,
    errors: VecDeque<Error>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data (plain maps and counters) stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The experiment id becomes a directory name: it must pass the one rule shared with the local
/// store ([`exptrack_core::metadata::check_component`]), so an id the store derives is always
/// accepted here and one it would refuse is refused here too.
fn validate_id(id: &str) -> Result<()> {
    exptrack_core::metadata::check_component(id).map_err(|reason| Error::InvalidExperimentId {
        id: id.to_owned(),
        reason,
    })
}

impl ModelCheckpointer {
    /// Opens (creating if needed) `<config.dir>/<experiment_id>/` as its only writer and reconciles
    /// `registry.json` with the directories: temporary leftovers of interrupted saves are removed,
    /// missing entries are rebuilt from `checkpoint.json`, vanished ones dropped.
    pub fn open(experiment_id: &str, config: CheckpointConfig) -> Result<Self> {
        Self::open_inner(experiment_id, config, false)
    }

    /// Opens an experiment directory for reading only (no lock, no repairs; `save`, `prune`,
    /// `mark_completed` return [`Error::ReadOnly`]). Call [`refresh`](Self::refresh) to see checkpoints
    /// committed since, and hold a [`lease`](Self::lease) while reading one.
    pub fn open_read_only(experiment_id: &str, config: CheckpointConfig) -> Result<Self> {
        Self::open_inner(experiment_id, config, true)
    }

    fn open_inner(experiment_id: &str, config: CheckpointConfig, read_only: bool) -> Result<Self> {
        config.validate()?;
        validate_id(experiment_id)?;
        let exp_dir = config.dir.join(experiment_id);
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let opts = WriteOpts {
            fsync: config.fsync,
            budget: Some(budget.clone()),
        };
        let mut lock_file = None;
        if !read_only {
            let existed = exp_dir.is_dir();
            std::fs::create_dir_all(&exp_dir).ctx("create", &exp_dir)?;
            if !existed && config.fsync {
                io::fsync_dir(&config.dir)?;
            }
            lock_file = Some(take_lock(&exp_dir)?);
        }
        let shared = Shared {
            exp_dir,
            experiment_id: experiment_id.to_owned(),
            policy: config.policy(),
            config,
            read_only,
            opts,
            budget,
            counter: AtomicU64::new(0),
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                report: ReconcileReport::default(),
                _lock: lock_file,
            }),
            pending: Mutex::new(Pending::default()),
            idle: Condvar::new(),
            reapers: Mutex::new(Vec::new()),
        };
        shared.reconcile()?;
        Ok(ModelCheckpointer {
            shared: Arc::new(shared),
            worker: None,
        })
    }

    /// The experiment directory `<dir>/<experiment_id>`.
    pub fn experiment_dir(&self) -> &Path {
        &self.shared.exp_dir
    }

    /// The experiment id.
    pub fn experiment_id(&self) -> &str {
        &self.shared.experiment_id
    }

    /// The configuration in use.
    pub fn config(&self) -> &CheckpointConfig {
        &self.shared.config
    }

    /// The retention policy in use.
    pub fn policy(&self) -> &RetentionPolicy {
        &self.shared.policy
    }

    /// What the last open or [`refresh`](Self::refresh) found and repaired.
    pub fn reconcile_report(&self) -> ReconcileReport {
        lock(&self.shared.state).report.clone()
    }

    /// Rescans the directories (for readers watching a writer in another process).
    pub fn refresh(&self) -> Result<()> {
        self.shared.reconcile()
    }

    /// Saves a checkpoint durably and applies retention. Waits for background saves first (and
    /// returns their error, if any, without saving). Saving a step that exists replaces it atomically.
    pub fn save(&mut self, checkpoint: Checkpoint) -> Result<CheckpointInfo> {
        self.shared.writable()?;
        self.wait_saves()?;
        self.shared.save_now(checkpoint)
    }

    /// Hands a checkpoint to the background saver and returns once it is accepted; blocks only while
    /// `max_in_flight` saves are unfinished. An error of an earlier background save is returned here
    /// (and this checkpoint is not taken), or by [`wait`](Self::wait): never lost.
    pub fn save_async(&mut self, checkpoint: Checkpoint) -> Result<()> {
        self.shared.writable()?;
        checkpoint.validate()?;
        {
            let mut p = lock(&self.shared.pending);
            if let Some(e) = p.errors.pop_front() {
                return Err(e);
            }
            while p.in_flight >= self.shared.config.max_in_flight {
                p = self.shared.idle.wait(p).unwrap_or_else(|e| e.into_inner());
            }
            if let Some(e) = p.errors.pop_front() {
                return Err(e);
            }
            p.in_flight += 1;
        }
        let guard = exptrack_core::shutdown::begin_work("checkpoint save");
        let sent = self.worker().and_then(|w| {
            w.tx.send((checkpoint, guard)).map_err(|_| Error::Worker {
                message: "save thread is gone".into(),
            })
        });
        if let Err(e) = sent {
            let mut p = lock(&self.shared.pending);
            p.in_flight -= 1;
            self.shared.idle.notify_all();
            return Err(e);
        }
        Ok(())
    }

    /// `save_async` when the config says `async = true`, else `save` (returning its info).
    pub fn save_auto(&mut self, checkpoint: Checkpoint) -> Result<Option<CheckpointInfo>> {
        if self.shared.config.async_save {
            self.save_async(checkpoint).map(|()| None)
        } else {
            self.save(checkpoint).map(Some)
        }
    }

    /// Blocks until every background save (and background removal of pruned checkpoints) has
    /// finished; returns the first unreported error.
    pub fn wait(&self) -> Result<()> {
        let result = self.wait_saves();
        self.shared.join_reapers();
        result
    }

    /// Waits for background saves only; returns the first unreported error.
    fn wait_saves(&self) -> Result<()> {
        let mut p = lock(&self.shared.pending);
        while p.in_flight > 0 {
            p = self.shared.idle.wait(p).unwrap_or_else(|e| e.into_inner());
        }
        match p.errors.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn worker(&mut self) -> Result<&Worker> {
        if self.worker.is_none() {
            let (tx, rx) = mpsc::channel::<(Checkpoint, WorkGuard)>();
            let shared = Arc::clone(&self.shared);
            let handle = std::thread::Builder::new()
                .name("exptrack-ckpt-save".into())
                .spawn(move || worker_loop(&shared, rx))
                .map_err(|e| Error::Worker {
                    message: format!("cannot start save thread: {e}"),
                })?;
            self.worker = Some(Worker { tx, handle });
        }
        self.worker.as_ref().ok_or_else(|| Error::Worker {
            message: "save thread missing".into(),
        })
    }

    /// All committed checkpoints, oldest first.
    pub fn list(&self) -> Vec<CheckpointInfo> {
        lock(&self.shared.state).entries.values().cloned().collect()
    }

    /// The checkpoint with the largest step.
    pub fn latest(&self) -> Option<CheckpointInfo> {
        lock(&self.shared.state)
            .entries
            .values()
            .next_back()
            .cloned()
    }

    /// The best checkpoint by the configured `monitor` (None without a monitor).
    pub fn best(&self) -> Option<CheckpointInfo> {
        let st = lock(&self.shared.state);
        let best = self
            .shared
            .policy
            .best(st.entries.iter().map(|(s, i)| (*s, &i.metrics)))?;
        st.entries.get(&best).cloned()
    }

    /// Takes a reader lease on a step: retention (in any process) will not delete it while the lease lives.
    pub fn lease(&self, step: u64) -> Result<Lease> {
        Lease::acquire(
            &self.shared.exp_dir,
            step,
            self.shared.exp_dir.join(format::dir_name(step)),
        )
    }

    /// A lease for an internal read. A read-only handle on a file system where no lease file can be
    /// created (nothing can prune there either) reads without one.
    fn read_lease(&self, step: u64) -> Result<Option<Lease>> {
        match self.lease(step) {
            Ok(l) => Ok(Some(l)),
            Err(e @ Error::NotFound { .. }) => Err(e),
            Err(e) if self.shared.read_only => {
                tracing::debug!(step, error = %e, "reading without a lease");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Loads and verifies every file of a checkpoint (holding a lease meanwhile).
    pub fn load(&self, step: u64) -> Result<LoadedCheckpoint> {
        let _lease = self.read_lease(step)?;
        let info = self.shared.info(step)?;
        let loaded = io::each_file(&info.files, |f| {
            io::read_verified(&info.dir.join(&f.name), f)
        })?;
        let files: BTreeMap<String, Vec<u8>> = info
            .files
            .iter()
            .map(|f| f.name.clone())
            .zip(loaded)
            .collect();
        Ok(LoadedCheckpoint { info, files })
    }

    /// Loads and verifies one file of a checkpoint.
    pub fn load_file(&self, step: u64, name: &str) -> Result<Vec<u8>> {
        let _lease = self.read_lease(step)?;
        let info = self.shared.info(step)?;
        let f = info.file(name).ok_or_else(|| Error::NoSuchFile {
            step,
            name: name.to_owned(),
        })?;
        io::read_verified(&info.dir.join(name), f)
    }

    /// Loads the latest checkpoint (an error if it does not verify); None when there is none.
    pub fn load_latest(&self) -> Result<Option<LoadedCheckpoint>> {
        match self.latest() {
            Some(info) => self.load(info.step).map(Some),
            None => Ok(None),
        }
    }

    /// Loads the newest checkpoint that verifies, skipping (and logging) corrupt or unreadable ones.
    /// None when there are no checkpoints; the newest one's error when none verifies.
    pub fn load_latest_valid(&self) -> Result<Option<LoadedCheckpoint>> {
        let steps: Vec<u64> = lock(&self.shared.state)
            .entries
            .keys()
            .rev()
            .copied()
            .collect();
        let mut first_err = None;
        for step in steps {
            match self.load(step) {
                Ok(c) => return Ok(Some(c)),
                Err(e) => {
                    tracing::warn!(step, error = %e, "checkpoint does not verify; trying an older one");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(None), Err)
    }

    /// Re-hashes every file of a checkpoint without keeping it in memory. A mismatch names the file.
    pub fn verify(&self, step: u64) -> Result<()> {
        let _lease = self.read_lease(step)?;
        let info = self.shared.info(step)?;
        io::each_file(&info.files, |f| io::verify_file(&info.dir.join(&f.name), f))?;
        Ok(())
    }

    /// Applies retention now (e.g. after leases were released). Returns the deleted steps.
    pub fn prune(&mut self) -> Result<Vec<u64>> {
        self.shared.writable()?;
        self.wait()?;
        let mut st = lock(&self.shared.state);
        let deleted = self.shared.prune_locked(&mut st)?;
        if !deleted.is_empty() {
            self.shared.write_registry(&st)?;
        }
        self.shared.finish_deletes(&deleted, None);
        Ok(deleted)
    }

    /// Dry run of [`prune`](Self::prune): the steps it would delete now.
    pub fn prune_plan(&self) -> Vec<u64> {
        let st = lock(&self.shared.state);
        self.shared.victims(&st)
    }

    /// Copies the best checkpoint's files, verified and decompressed, into the directory `dest`
    /// (created if needed; each file replaced atomically), with its `checkpoint.json`. Returns its info.
    pub fn export_best(&self, dest: impl AsRef<Path>) -> Result<CheckpointInfo> {
        let dest = dest.as_ref();
        let best = self.best().ok_or_else(|| Error::Config {
            message:
                "export_best: no best checkpoint (set `monitor` and save one with that metric)"
                    .into(),
        })?;
        let mut loaded = self.load(best.step)?;
        std::fs::create_dir_all(dest).ctx("create", dest)?;
        let mut info = loaded.info.clone();
        for f in &mut info.files {
            let bytes = loaded.take(&f.name)?;
            io::replace_atomic(dest, &f.name, &bytes, &self.shared.opts)?;
            f.stored_size = f.size;
            f.encoding = Encoding::Raw;
        }
        let json = serde_json::to_vec_pretty(&info).map_err(|source| Error::Json {
            path: dest.join(CHECKPOINT_JSON),
            source,
        })?;
        io::replace_atomic(dest, CHECKPOINT_JSON, &json, &self.shared.opts)?;
        info.dir = dest.to_owned();
        Ok(info)
    }

    /// Resume point: [`Resume::Completed`] for a completed experiment (unless `config.force`, which
    /// archives its checkpoints to `archive/<ms>/` and starts fresh), else the newest checkpoint that
    /// verifies, else [`Resume::Fresh`].
    pub fn resume_or_start(&mut self) -> Result<Resume> {
        self.wait()?;
        if let Some(results) = self.completed_results()? {
            if !self.shared.config.force {
                return Ok(Resume::Completed(results));
            }
            self.shared.writable()?;
            self.shared.archive()?;
            return Ok(Resume::Fresh);
        }
        Ok(match self.load_latest_valid()? {
            Some(c) => Resume::Resumed(Box::new(c)),
            None => Resume::Fresh,
        })
    }

    /// Marks the experiment completed, storing `results` in `results.json` (atomically). Waits for
    /// background saves first.
    pub fn mark_completed(&mut self, results: serde_json::Value) -> Result<()> {
        self.shared.writable()?;
        self.wait()?;
        let doc = serde_json::json!({ "completed_ms": now_ms(), "results": results });
        let path = self.shared.exp_dir.join(RESULTS_JSON);
        let bytes =
            serde_json::to_vec_pretty(&doc).map_err(|source| Error::Json { path, source })?;
        io::replace_atomic(
            &self.shared.exp_dir,
            RESULTS_JSON,
            &bytes,
            &self.shared.opts,
        )
    }

    /// True when [`mark_completed`](Self::mark_completed) was called for this experiment.
    pub fn is_completed(&self) -> bool {
        self.shared.exp_dir.join(RESULTS_JSON).is_file()
    }

    /// The results stored by `mark_completed`, if completed.
    pub fn completed_results(&self) -> Result<Option<serde_json::Value>> {
        let path = self.shared.exp_dir.join(RESULTS_JSON);
        if !path.is_file() {
            return Ok(None);
        }
        let mut doc: serde_json::Value = format::read_json(&path)?;
        Ok(Some(
            doc.get_mut("results")
                .map(serde_json::Value::take)
                .unwrap_or_default(),
        ))
    }

    /// Fault injection for tests: after `bytes` more bytes, writes fail with ENOSPC (None: never).
    #[doc(hidden)]
    pub fn fail_writes_after(&self, bytes: Option<u64>) {
        self.shared
            .budget
            .store(bytes.unwrap_or(u64::MAX), Ordering::SeqCst);
    }
}

impl Drop for ModelCheckpointer {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            drop(w.tx);
            let _ = w.handle.join();
        }
        self.shared.join_reapers();
        let mut p = lock(&self.shared.pending);
        for e in p.errors.drain(..) {
            tracing::error!(error = %e, "background checkpoint save failed and was never reported");
        }
    }
}

fn worker_loop(shared: &Shared, rx: mpsc::Receiver<(Checkpoint, WorkGuard)>) {
    for (ckpt, _guard) in rx {
        let step = ckpt.step;
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shared.save_now(ckpt)));
        let mut p = lock(&shared.pending);
        match result {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => p.errors.push_back(Error::AsyncSave {
                step,
                source: Box::new(e),
            }),
            Err(_) => p.errors.push_back(Error::Worker {
                message: format!("save of step {step} panicked"),
            }),
        }
        p.in_flight = p.in_flight.saturating_sub(1);
        shared.idle.notify_all();
    }
}

fn take_lock(exp_dir: &Path) -> Result<File> {
    let path = exp_dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx("open", &path)?;
    #[cfg(unix)]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: valid fd owned by `file`; flock only changes the lock state of the open file.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                return Err(Error::Locked { path });
            }
            return Err(Error::io("lock", path, err));
        }
    }
    Ok(file)
}

impl Shared {
    fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                dir: self.exp_dir.clone(),
            });
        }
        Ok(())
    }

    fn tmp_suffix(&self) -> String {
        format!(
            "{}-{}",
            std::process::id(),
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// The info of a step: from memory, or (for readers) from disk if committed since the last scan.
    fn info(&self, step: u64) -> Result<CheckpointInfo> {
        if let Some(i) = lock(&self.state).entries.get(&step) {
            return Ok(i.clone());
        }
        let dir = self.exp_dir.join(format::dir_name(step));
        if !dir.join(CHECKPOINT_JSON).is_file() {
            return Err(Error::NotFound {
                step,
                dir: self.exp_dir.clone(),
            });
        }
        format::read_info(&dir)
    }

    /// Scans the experiment directory; for writers also repairs it and rewrites the registry.
    fn reconcile(&self) -> Result<()> {
        let mut report = ReconcileReport::default();
        let mut entries = BTreeMap::new();
        let rd = match std::fs::read_dir(&self.exp_dir) {
            Ok(rd) => Some(rd),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.read_only => None,
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
            if name.starts_with(TMP_PREFIX) || name.starts_with(DEL_PREFIX) {
                if self.read_only {
                    continue;
                }
                // A deletion interrupted before it finished, of a checkpoint a reader still leases: restore it.
                if let Some(step) = name.strip_prefix(DEL_PREFIX).and_then(format::del_step)
                    && leased.contains(&step)
                {
                    let back = self.exp_dir.join(format::dir_name(step));
                    if !back.exists() && std::fs::rename(&path, &back).is_ok() {
                        if let Ok(info) = self.read_info(step) {
                            entries.insert(step, info);
                        }
                        continue;
                    }
                }
                if path.is_dir() {
                    io::remove_tree(&path)?;
                } else {
                    std::fs::remove_file(&path).ctx("remove", &path)?;
                }
                report.removed_temp.push(name);
                continue;
            }
            let Some(step) = format::parse_dir_name(&name) else {
                continue;
            };
            match self.read_info(step) {
                Ok(info) if info.experiment_id == self.experiment_id && info.step == step => {
                    entries.insert(step, info);
                }
                Ok(_) => {
                    tracing::warn!(dir = %path.display(), "checkpoint belongs to another experiment or step; ignored");
                    report.foreign.push(name);
                }
                Err(e) => {
                    tracing::warn!(dir = %path.display(), error = %e, "unreadable checkpoint.json; checkpoint ignored");
                    report.unreadable.push(name);
                }
            }
        }
        let registry_path = self.exp_dir.join(REGISTRY_JSON);
        let old: Option<Registry> = if registry_path.is_file() {
            match format::read_json::<Registry>(&registry_path)
                .and_then(|r| r.check(&registry_path).map(|()| r))
            {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::warn!(error = %e, "registry.json unreadable; rebuilding it from the checkpoints");
                    None
                }
            }
        } else {
            None
        };
        let old_steps: std::collections::BTreeSet<u64> = old
            .as_ref()
            .map(|r| r.checkpoints.iter().map(|c| c.step).collect())
            .unwrap_or_default();
        report.dropped = old_steps
            .iter()
            .filter(|s| !entries.contains_key(s))
            .copied()
            .collect();
        report.rebuilt = entries
            .keys()
            .filter(|s| !old_steps.contains(s))
            .copied()
            .collect();
        let mut st = lock(&self.state);
        st.entries = entries;
        st.report = report;
        if !self.read_only && !st.report.removed_temp.is_empty() && self.config.fsync {
            io::fsync_dir(&self.exp_dir)?;
        }
        if !self.read_only && old.as_ref() != Some(&self.registry(&st)) {
            self.write_registry(&st)?;
        }
        Ok(())
    }

    fn read_info(&self, step: u64) -> Result<CheckpointInfo> {
        format::read_info(&self.exp_dir.join(format::dir_name(step)))
    }

    fn registry(&self, st: &State) -> Registry {
        let metrics = st.entries.iter().map(|(s, i)| (*s, &i.metrics));
        Registry {
            format_version: FORMAT_VERSION,
            experiment_id: self.experiment_id.clone(),
            latest: st.entries.keys().next_back().copied(),
            best: self.policy.best(metrics),
            monitor: self.policy.best_metric().map(|(m, _)| m.to_owned()),
            mode: self
                .policy
                .best_metric()
                .map(|(_, m)| m)
                .unwrap_or_default(),
            checkpoints: st.entries.values().map(RegistryEntry::from_info).collect(),
        }
    }

    fn write_registry(&self, st: &State) -> Result<()> {
        let path = self.exp_dir.join(REGISTRY_JSON);
        let bytes = serde_json::to_vec_pretty(&self.registry(st))
            .map_err(|source| Error::Json { path, source })?;
        io::replace_atomic(&self.exp_dir, REGISTRY_JSON, &bytes, &self.opts)
    }

    /// Writes a checkpoint to a temp dir, commits it, updates the registry and applies retention.
    fn save_now(&self, ckpt: Checkpoint) -> Result<CheckpointInfo> {
        self.writable()?;
        ckpt.validate()?;
        let step = ckpt.step;
        let is_best = {
            let st = lock(&self.state);
            if st.entries.contains_key(&step) && leased_steps(&self.exp_dir).contains(&step) {
                return Err(Error::Leased { step });
            }
            match self.policy.best_metric() {
                Some((monitor, mode)) => match ckpt.metrics.get(monitor).filter(|v| !v.is_nan()) {
                    None => false,
                    Some(v) => {
                        let others = st
                            .entries
                            .iter()
                            .filter(|(s, _)| **s != step)
                            .map(|(s, i)| (*s, &i.metrics));
                        match self
                            .policy
                            .best(others)
                            .and_then(|b| st.entries.get(&b))
                            .and_then(|i| i.metrics.get(monitor))
                        {
                            Some(best) => mode.better(*v, *best),
                            None => true,
                        }
                    }
                },
                None => false,
            }
        };
        let tmp = self.exp_dir.join(format!(
            "{TMP_PREFIX}{}-{}",
            format::dir_name(step),
            self.tmp_suffix()
        ));
        let written = self.write_tmp(&tmp, ckpt, is_best);
        let mut info = match written {
            Ok(info) => info,
            Err(e) => {
                let _ = io::remove_tree(&tmp);
                return Err(e);
            }
        };
        let target = self.exp_dir.join(format::dir_name(step));
        info.dir = target.clone();

        let mut st = lock(&self.state);
        let mut replaced = None;
        if target.exists() {
            if io::exchange(&tmp, &target)? {
                replaced = Some(tmp.clone());
            } else {
                let old = self.exp_dir.join(format!(
                    "{DEL_PREFIX}{}-{}",
                    format::dir_name(step),
                    self.tmp_suffix()
                ));
                std::fs::rename(&target, &old).ctx("rename", &target)?;
                std::fs::rename(&tmp, &target).ctx("rename", &target)?;
                replaced = Some(old);
            }
        } else if let Err(e) = std::fs::rename(&tmp, &target) {
            let _ = io::remove_tree(&tmp);
            return Err(Error::io("rename", &target, e));
        }
        st.entries.insert(step, info.clone());
        let deleted = self.prune_locked(&mut st)?;
        // One directory fsync (inside replace_atomic) makes the commit rename, the deletion renames
        // and the new registry durable together. registry.json is a cache: if it cannot be written the
        // checkpoint is still committed, so only the fsync is essential.
        if let Err(e) = self.write_registry(&st) {
            tracing::warn!(error = %e, "registry.json not updated (it is rebuilt on open)");
            if self.config.fsync {
                io::fsync_dir(&self.exp_dir)?;
            }
        }
        drop(st);
        self.finish_deletes(&deleted, replaced);
        Ok(info)
    }

    fn write_tmp(&self, tmp: &Path, ckpt: Checkpoint, is_best: bool) -> Result<CheckpointInfo> {
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
            experiment_id: self.experiment_id.clone(),
            step: ckpt.step,
            epoch: ckpt.epoch,
            metrics: ckpt.metrics,
            is_best,
            created_ms: now_ms(),
            files,
            extra: ckpt.extra,
            dir: PathBuf::new(),
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

    /// Steps retention would delete now.
    fn victims(&self, st: &State) -> Vec<u64> {
        let keep = self
            .policy
            .keep(st.entries.iter().map(|(s, i)| (*s, &i.metrics)));
        let leased = leased_steps(&self.exp_dir);
        st.entries
            .keys()
            .filter(|s| !keep.contains(s) && !leased.contains(s))
            .copied()
            .collect()
    }

    /// Renames the victims to `.del-*` (re-checking leases after the rename) and drops them from the
    /// entries. The caller writes the registry, then calls `finish_deletes`.
    fn prune_locked(&self, st: &mut State) -> Result<Vec<u64>> {
        let victims = self.victims(st);
        if victims.is_empty() {
            return Ok(victims);
        }
        let mut moved = Vec::new();
        for step in victims {
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
        let leased = leased_steps(&self.exp_dir);
        let mut deleted = Vec::new();
        for (step, from, to) in moved {
            if leased.contains(&step) {
                // A reader took a lease while we were deciding: put it back.
                std::fs::rename(&to, &from).ctx("rename", &to)?;
            } else {
                st.entries.remove(&step);
                deleted.push(step);
            }
        }
        Ok(deleted)
    }

    /// Removes the `.del-*` directories of deleted steps (plus `extra` paths) on a background thread,
    /// off the save's critical path; `wait()` and drop join it. Leftovers of a crash are removed on the
    /// next open.
    fn finish_deletes(&self, deleted: &[u64], extra: Option<PathBuf>) {
        let mut doomed: Vec<PathBuf> = extra.into_iter().collect();
        if !deleted.is_empty()
            && let Ok(rd) = std::fs::read_dir(&self.exp_dir)
        {
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(rest) = name.strip_prefix(DEL_PREFIX) else {
                    continue;
                };
                if format::del_step(rest).is_some_and(|s| deleted.contains(&s)) {
                    doomed.push(e.path());
                }
            }
        }
        if doomed.is_empty() {
            return;
        }
        let remove = move || {
            for path in doomed {
                if let Err(err) = io::remove_tree(&path) {
                    tracing::warn!(error = %err, "could not remove a deleted checkpoint; it is removed on the next open");
                }
            }
        };
        let mut reapers = lock(&self.reapers);
        reapers.retain(|h| !h.is_finished());
        match std::thread::Builder::new()
            .name("exptrack-ckpt-reaper".into())
            .spawn(remove)
        {
            Ok(h) => reapers.push(h),
            Err(e) => {
                tracing::warn!(error = %e, "no reaper thread; deleted checkpoints are removed on the next open")
            }
        }
    }

    /// Waits for background deletions.
    fn join_reapers(&self) {
        let handles: Vec<_> = lock(&self.reapers).drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
    }

    /// Moves every checkpoint, the registry and the results into `archive/<ms>/`.
    fn archive(&self) -> Result<()> {
        let mut st = lock(&self.state);
        let dest = self.exp_dir.join("archive").join(now_ms().to_string());
        std::fs::create_dir_all(&dest).ctx("create", &dest)?;
        for step in st.entries.keys() {
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
        st.entries.clear();
        self.write_registry(&st)?;
        tracing::info!(archive = %dest.display(), "force: completed experiment archived, starting fresh");
        Ok(())
    }
}
