//! [`ModelCheckpointer`]: commits, the registry, retention, async saves, resume and completion.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
#[cfg(feature = "testing")]
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::thread::JoinHandle;

use exptrack_core::shutdown::WorkGuard;

use crate::checkpoint::{Checkpoint, LoadedCheckpoint};
use crate::config::CheckpointConfig;
use crate::error::{Error, IoContext, Result};
use crate::format::{CHECKPOINT_JSON, CheckpointInfo, Encoding};
use crate::io::{self, WriteOpts};
use crate::lease::Lease;
use crate::location::Location;
use crate::retention::RetentionPolicy;
use crate::shared::{Shared, lock};
use crate::storage::Storage;
use crate::storage::local::LocalStorage;

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
        let budget = Arc::new(AtomicU64::new(u64::MAX));
        let storage: Arc<dyn Storage> = match Location::from_dir(&config.dir)? {
            Location::Local(dir) => Arc::new(LocalStorage::open(
                dir.join(experiment_id),
                &config,
                read_only,
                budget.clone(),
            )?),
            #[cfg(feature = "object-store")]
            Location::Object(url) => Arc::new(crate::storage::object::ObjectStorage::open(
                &url,
                experiment_id,
                &config,
                read_only,
            )?),
            #[cfg(not(feature = "object-store"))]
            Location::Object(url) => {
                let scheme = url.split_once("://").map_or("", |(s, _)| s);
                return Err(Error::Unsupported {
                    feature: crate::location::feature_of(scheme).unwrap_or("s3"),
                    url,
                });
            }
        };
        let shared = Shared::new(storage, experiment_id, config, read_only, budget);
        shared.reconcile()?;
        Ok(ModelCheckpointer {
            shared: Arc::new(shared),
            worker: None,
        })
    }

    /// Opens the experiment at a URL or path that names it: `s3://bucket/prefix/<experiment_id>`
    /// (also `gs://`, `az://`, `file://`, or a plain directory `checkpoints/<experiment_id>`).
    /// The last path segment is the experiment id; `config.dir` is replaced by the rest. Read-only
    /// when `read_only` (as [`open_read_only`](Self::open_read_only)).
    ///
    /// ```
    /// use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
    /// # fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let tmp = tempfile::tempdir()?;
    /// let url = format!("file://{}/exp-1", tmp.path().display());
    /// let ckpt = ModelCheckpointer::open_url(&url, CheckpointConfig::default(), false)?;
    /// assert_eq!(ckpt.experiment_id(), "exp-1");
    /// # Ok(()) }
    /// ```
    pub fn open_url(url: &str, mut config: CheckpointConfig, read_only: bool) -> Result<Self> {
        let (root, id) = Location::split_experiment(url)?;
        config.dir = root.into();
        Self::open_inner(&id, config, read_only)
    }

    /// The experiment's location: the directory `<dir>/<experiment_id>`, or for an object store
    /// its URL `s3://bucket/prefix/<experiment_id>` as a path (for display; not a local file).
    pub fn experiment_dir(&self) -> &Path {
        self.shared.storage.location()
    }

    /// Whether the checkpoints live in an object store (`s3://`, `gs://`, `az://`) rather than a
    /// local directory.
    pub fn is_remote(&self) -> bool {
        !matches!(
            Location::from_dir(&self.shared.config.dir),
            Ok(Location::Local(_))
        )
    }

    /// The experiment id.
    pub fn experiment_id(&self) -> &str {
        &self.shared.experiment_id
    }

    /// The configuration in use.
    pub fn config(&self) -> &CheckpointConfig {
        &self.shared.config
    }

    /// The monitor and mode the writer recorded in `registry.json` (None without a monitor or a
    /// readable registry), e.g. for a reader that was not given the experiment's config.
    pub fn recorded_monitor(&self) -> Option<(String, crate::config::Mode)> {
        let r = self.shared.storage.read_registry()?;
        Some((r.monitor?, r.mode))
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

    /// Calls `hook` after each commit (of [`save`](Self::save) and of background saves, on the
    /// save thread) with the committed checkpoint and the steps retention deleted since the
    /// previous call (by that save or by an explicit [`prune`](Self::prune)); replaces an earlier
    /// hook. Calls come in commit order; a panicking hook is logged and the save still succeeds.
    /// [`report_to`](Self::report_to) is the usual hook.
    pub fn on_commit(&mut self, hook: impl Fn(&CheckpointInfo, &[u64]) + Send + Sync + 'static) {
        lock(&self.shared.reports).hook = Some(Arc::new(hook));
    }

    /// Whether a commit hook is set ([`on_commit`](Self::on_commit)).
    pub fn has_commit_hook(&self) -> bool {
        lock(&self.shared.reports).hook.is_some()
    }

    /// Reports every commit to `tracker` as an [`exptrack_core::Event::Checkpoint`]
    /// ([`CheckpointInfo::checkpoint_report`]: location, step, each file's name, size and hash,
    /// the metrics; never the weights). A tracker that is closed is logged at debug level.
    pub fn report_to(&mut self, tracker: exptrack_core::ExperimentTracker) {
        self.on_commit(move |info, pruned| {
            let event = exptrack_core::Event::Checkpoint(info.checkpoint_report(pruned));
            if let Err(e) = tracker.log_event(event) {
                tracing::debug!(step = info.step, error = %e, "checkpoint not reported to the tracker");
            }
        });
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
        self.shared.storage.lease(step)
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
        let storage = &*self.shared.storage;
        let loaded = io::each_file(&info.files, |f| storage.read_file(&info, f))?;
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
        self.shared.storage.read_file(&info, f)
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
        let storage = &*self.shared.storage;
        io::each_file(&info.files, |f| storage.verify_file(&info, f))?;
        Ok(())
    }

    /// Applies retention now (e.g. after leases were released). Returns the deleted steps.
    pub fn prune(&mut self) -> Result<Vec<u64>> {
        self.shared.writable()?;
        self.wait()?;
        self.shared.prune()
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
        let opts = WriteOpts {
            fsync: self.shared.config.fsync,
            drop_behind: !self.shared.config.keep_in_page_cache,
            budget: Some(self.shared.budget.clone()),
        };
        std::fs::create_dir_all(dest).ctx("create", dest)?;
        let mut info = loaded.info.clone();
        for f in &mut info.files {
            let bytes = loaded.take(&f.name)?;
            io::replace_atomic(dest, &f.name, &bytes, &opts)?;
            f.stored_size = f.size;
            f.encoding = Encoding::Raw;
        }
        let json = serde_json::to_vec_pretty(&info).map_err(|source| Error::Json {
            path: dest.join(CHECKPOINT_JSON),
            source,
        })?;
        io::replace_atomic(dest, CHECKPOINT_JSON, &json, &opts)?;
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
        let doc = serde_json::json!({ "completed_ms": crate::now_ms(), "results": results });
        let bytes = serde_json::to_vec_pretty(&doc).map_err(|source| Error::Json {
            path: self.shared.location().join(crate::RESULTS_JSON),
            source,
        })?;
        self.shared.storage.write_results(&bytes)
    }

    /// True when [`mark_completed`](Self::mark_completed) was called for this experiment.
    pub fn is_completed(&self) -> bool {
        // Like a file existence check: an unreadable results.json still marks completion.
        !matches!(self.shared.storage.read_results(), Ok(None))
    }

    /// The results stored by `mark_completed`, if completed.
    pub fn completed_results(&self) -> Result<Option<serde_json::Value>> {
        let Some(mut doc) = self.shared.storage.read_results()? else {
            return Ok(None);
        };
        Ok(Some(
            doc.get_mut("results")
                .map(serde_json::Value::take)
                .unwrap_or_default(),
        ))
    }

    /// `registry.json` as stored now (feature `testing`; it is a cache of the checkpoints).
    #[cfg(feature = "testing")]
    pub fn stored_registry(&self) -> Result<Option<serde_json::Value>> {
        match self.shared.storage.read_registry() {
            None => Ok(None),
            Some(r) => serde_json::to_value(&r)
                .map(Some)
                .map_err(|source| Error::Json {
                    path: self.shared.location().join(crate::REGISTRY_JSON),
                    source,
                }),
        }
    }

    /// Fault injection for tests (feature `testing`): after `bytes` more bytes, local writes fail
    /// with ENOSPC (None: never).
    #[cfg(feature = "testing")]
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
