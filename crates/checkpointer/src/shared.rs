//! The state one [`ModelCheckpointer`](crate::ModelCheckpointer) shares with its save thread: the
//! committed entries, the save path (stage, publish, retention, registry) and the reapers that
//! remove deleted data off the critical path. What depends on the medium is a [`Storage`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use crate::checkpoint::Checkpoint;
use crate::config::CheckpointConfig;
use crate::error::{Error, Result};
use crate::format::{CheckpointInfo, FORMAT_VERSION, Registry, RegistryEntry};
use crate::manager::ReconcileReport;
use crate::retention::RetentionPolicy;
use crate::storage::{Delta, Doomed, Storage};

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) experiment_id: String,
    pub(crate) config: CheckpointConfig,
    pub(crate) policy: RetentionPolicy,
    pub(crate) read_only: bool,
    /// Fault injection (feature `testing`): bytes that may still be written before ENOSPC.
    pub(crate) budget: Arc<AtomicU64>,
    pub(crate) state: Mutex<State>,
    pub(crate) pending: Mutex<Pending>,
    pub(crate) idle: Condvar,
    reapers: Mutex<Vec<JoinHandle<()>>>,
    /// The commit hook and the deletions it has not been told of yet.
    pub(crate) reports: Mutex<Reports>,
}

/// What [`ModelCheckpointer::on_commit`](crate::ModelCheckpointer::on_commit) is called with:
/// the committed checkpoint and the steps retention deleted since the previous call.
pub(crate) type CommitHook = Arc<dyn Fn(&CheckpointInfo, &[u64]) + Send + Sync>;

/// The commit hook and the steps deleted since it was last called.
#[derive(Default)]
pub(crate) struct Reports {
    pub(crate) hook: Option<CommitHook>,
    /// Steps an explicit `prune` deleted; told with the next commit.
    pub(crate) pruned: Vec<u64>,
}

impl std::fmt::Debug for Reports {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reports")
            .field("hook", &self.hook.is_some())
            .field("pruned", &self.pruned)
            .finish()
    }
}

#[derive(Debug)]
pub(crate) struct State {
    pub(crate) entries: BTreeMap<u64, CheckpointInfo>,
    pub(crate) report: ReconcileReport,
    /// The highest [`CheckpointInfo::commit_seq`] seen or assigned (0: none yet).
    pub(crate) last_seq: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Pending {
    pub(crate) in_flight: usize,
    pub(crate) errors: VecDeque<Error>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; the data (plain maps and counters) stays usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    pub(crate) fn new(
        storage: Arc<dyn Storage>,
        experiment_id: &str,
        config: CheckpointConfig,
        read_only: bool,
        budget: Arc<AtomicU64>,
    ) -> Self {
        Shared {
            storage,
            experiment_id: experiment_id.to_owned(),
            policy: config.policy(),
            config,
            read_only,
            budget,
            state: Mutex::new(State {
                entries: BTreeMap::new(),
                report: ReconcileReport::default(),
                last_seq: 0,
            }),
            pending: Mutex::new(Pending::default()),
            idle: Condvar::new(),
            reapers: Mutex::new(Vec::new()),
            reports: Mutex::new(Reports::default()),
        }
    }

    pub(crate) fn writable(&self) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly {
                dir: self.storage.location().to_owned(),
            });
        }
        Ok(())
    }

    /// The info of a step: from memory, or (for readers) from storage if committed since the last scan.
    pub(crate) fn info(&self, step: u64) -> Result<CheckpointInfo> {
        if let Some(i) = lock(&self.state).entries.get(&step) {
            return Ok(i.clone());
        }
        self.storage.info(step)?.ok_or_else(|| Error::NotFound {
            step,
            dir: self.storage.location().to_owned(),
        })
    }

    /// Scans the storage; for writers also repairs it and rewrites the registry.
    pub(crate) fn reconcile(&self) -> Result<()> {
        // The registry is read before the scan: a step it lists that the scan then misses was
        // really deleted. (Read after, a step another writer committed in between would look
        // deleted, and the reconciled registry would drop it.)
        let old = self.storage.read_registry();
        let scan = self.storage.scan(&self.experiment_id, !self.read_only)?;
        let mut report = scan.report;
        let entries = scan.entries;
        let old_steps: BTreeSet<u64> = old
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
        let delta = Delta {
            add: report
                .rebuilt
                .iter()
                .filter_map(|s| entries.get(s))
                .map(RegistryEntry::from_info)
                .collect(),
            remove: report.dropped.clone(),
        };
        // The counter never goes back: the newest commit may have been pruned (a keep-best
        // policy), so the old registry's entries count too.
        let seen = entries
            .values()
            .filter_map(|i| i.commit_seq)
            .chain(
                old.iter()
                    .flat_map(|r| r.checkpoints.iter().filter_map(|c| c.commit_seq)),
            )
            .max()
            .unwrap_or(0);
        st.last_seq = st.last_seq.max(seen);
        st.entries = entries;
        st.report = report;
        if !self.read_only {
            let full = self.registry(&st);
            if old.as_ref() != Some(&full) {
                self.write_registry(&full, &delta)?;
            }
        }
        Ok(())
    }

    /// The registry of the given entries: latest and best by the policy.
    pub(crate) fn registry_of(&self, checkpoints: Vec<RegistryEntry>) -> Registry {
        let metrics = checkpoints.iter().map(|c| (c.step, &c.metrics));
        Registry {
            format_version: FORMAT_VERSION,
            experiment_id: self.experiment_id.clone(),
            latest: checkpoints.iter().map(|c| c.step).max(),
            best: self.policy.best(metrics),
            monitor: self.policy.best_metric().map(|(m, _)| m.to_owned()),
            mode: self
                .policy
                .best_metric()
                .map(|(_, m)| m)
                .unwrap_or_default(),
            checkpoints,
        }
    }

    pub(crate) fn registry(&self, st: &State) -> Registry {
        self.registry_of(st.entries.values().map(RegistryEntry::from_info).collect())
    }

    pub(crate) fn write_registry(&self, full: &Registry, delta: &Delta) -> Result<()> {
        self.storage
            .update_registry(full, delta, &|c| self.registry_of(c))
    }

    /// Whether `ckpt` would be the best checkpoint (by the policy's monitor) among the others.
    fn is_best(&self, st: &State, ckpt: &Checkpoint) -> bool {
        let Some((monitor, mode)) = self.policy.best_metric() else {
            return false;
        };
        let Some(v) = ckpt.metrics.get(monitor).filter(|v| !v.is_nan()) else {
            return false;
        };
        let others = st
            .entries
            .iter()
            .filter(|(s, _)| **s != ckpt.step)
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

    /// Writes a checkpoint where no reader looks, commits it, updates the registry and applies
    /// retention.
    pub(crate) fn save_now(&self, mut ckpt: Checkpoint) -> Result<CheckpointInfo> {
        self.writable()?;
        ckpt.validate()?;
        let step = ckpt.step;
        let (is_best, seq) = {
            let mut st = lock(&self.state);
            if st.entries.contains_key(&step) && self.storage.leased_steps().contains(&step) {
                return Err(Error::Leased { step });
            }
            st.last_seq += 1;
            (self.is_best(&st, &ckpt), st.last_seq)
        };
        ckpt.commit_seq = Some(seq);
        // A save that fails gives its number back (when no later save took one), so readers do
        // not count a commit that never happened.
        let unassign = |st: &mut State| {
            if st.last_seq == seq {
                st.last_seq -= 1;
            }
        };
        let staged = match self.storage.stage(ckpt, &self.experiment_id, is_best) {
            Ok(s) => s,
            Err(e) => {
                unassign(&mut lock(&self.state));
                return Err(e);
            }
        };
        let mut st = lock(&self.state);
        let replaced = match self.storage.publish(&staged) {
            Ok(r) => r,
            Err(e) => {
                unassign(&mut st);
                self.storage.discard(&staged);
                return Err(e);
            }
        };
        let info = staged.info;
        st.entries.insert(step, info.clone());
        let deleted = self.prune_locked(&mut st)?;
        let delta = Delta {
            add: vec![RegistryEntry::from_info(&info)],
            remove: deleted.iter().map(|(s, _)| *s).collect(),
        };
        // One directory fsync (inside the registry's atomic replace) makes the commit rename, the
        // deletion renames and the new registry durable together. registry.json is a cache: if it
        // cannot be written the checkpoint is still committed, so only the fsync is essential.
        let full = self.registry(&st);
        if let Err(e) = self.write_registry(&full, &delta) {
            tracing::warn!(error = %e, "registry.json not updated (it is rebuilt on open)");
            self.storage.sync_commits()?;
        }
        drop(st);
        let pruned: Vec<u64> = deleted.iter().map(|(s, _)| *s).collect();
        let doomed = deleted
            .into_iter()
            .map(|(_, d)| d)
            .chain(replaced)
            .collect();
        self.finish_deletes(doomed);
        self.report_commit(&info, pruned);
        Ok(info)
    }

    /// Tells the commit hook (if any) of a commit and of the steps deleted since the last call.
    /// The hook runs outside every lock but this one, which keeps reports in commit order.
    fn report_commit(&self, info: &CheckpointInfo, mut pruned: Vec<u64>) {
        let mut r = lock(&self.reports);
        let Some(hook) = r.hook.clone() else {
            return;
        };
        let mut all = std::mem::take(&mut r.pruned);
        all.append(&mut pruned);
        all.retain(|s| *s != info.step);
        all.sort_unstable();
        all.dedup();
        let call = std::panic::AssertUnwindSafe(|| hook(info, &all));
        if std::panic::catch_unwind(call).is_err() {
            tracing::warn!(
                step = info.step,
                "the checkpoint commit hook panicked; the checkpoint is committed"
            );
        }
    }

    /// Remembers steps an explicit `prune` deleted, for the next commit's report.
    fn note_pruned(&self, steps: &[u64]) {
        let mut r = lock(&self.reports);
        if r.hook.is_some() {
            r.pruned.extend_from_slice(steps);
        }
    }

    /// Steps retention would delete now.
    pub(crate) fn victims(&self, st: &State) -> Vec<u64> {
        let keep = self
            .policy
            .keep(st.entries.iter().map(|(s, i)| (*s, &i.metrics)));
        let leased = self.storage.leased_steps();
        st.entries
            .keys()
            .filter(|s| !keep.contains(s) && !leased.contains(s))
            .copied()
            .collect()
    }

    /// Hides the victims from readers (re-checking leases) and drops them from the entries. The
    /// caller writes the registry, then calls `finish_deletes`.
    pub(crate) fn prune_locked(&self, st: &mut State) -> Result<Vec<(u64, Doomed)>> {
        let victims = self.victims(st);
        if victims.is_empty() {
            return Ok(Vec::new());
        }
        let retired = self.storage.retire(&victims)?;
        for (step, _) in &retired {
            st.entries.remove(step);
        }
        Ok(retired)
    }

    /// Applies retention now; returns the deleted steps.
    pub(crate) fn prune(&self) -> Result<Vec<u64>> {
        let mut st = lock(&self.state);
        let deleted = self.prune_locked(&mut st)?;
        let steps: Vec<u64> = deleted.iter().map(|(s, _)| *s).collect();
        if !deleted.is_empty() {
            let delta = Delta {
                add: Vec::new(),
                remove: steps.clone(),
            };
            self.write_registry(&self.registry(&st), &delta)?;
        }
        drop(st);
        self.finish_deletes(deleted.into_iter().map(|(_, d)| d).collect());
        self.note_pruned(&steps);
        Ok(steps)
    }

    /// Removes hidden data on a background thread, off the save's critical path; `wait()` and
    /// drop join it. Leftovers of a crash are removed on the next open.
    pub(crate) fn finish_deletes(&self, doomed: Vec<Doomed>) {
        if doomed.is_empty() {
            return;
        }
        let storage = Arc::clone(&self.storage);
        let run = move || {
            for d in doomed {
                if let Err(err) = storage.remove(&d) {
                    tracing::warn!(error = %err, "could not remove a deleted checkpoint; it is removed on the next open");
                }
            }
        };
        let mut reapers = lock(&self.reapers);
        reapers.retain(|h| !h.is_finished());
        match std::thread::Builder::new()
            .name("exptrack-ckpt-reaper".into())
            .spawn(run)
        {
            Ok(h) => reapers.push(h),
            Err(e) => {
                tracing::warn!(error = %e, "no reaper thread; deleted checkpoints are removed on the next open")
            }
        }
    }

    /// Waits for background deletions.
    pub(crate) fn join_reapers(&self) {
        let handles: Vec<_> = lock(&self.reapers).drain(..).collect();
        for h in handles {
            let _ = h.join();
        }
    }

    /// Moves every checkpoint, the registry and the results into `archive/<ms>/`.
    pub(crate) fn archive(&self) -> Result<()> {
        let mut st = lock(&self.state);
        let steps: Vec<u64> = st.entries.keys().copied().collect();
        let dest = self.storage.archive(&steps, &crate::now_ms().to_string())?;
        let delta = Delta {
            add: Vec::new(),
            remove: steps,
        };
        st.entries.clear();
        self.write_registry(&self.registry(&st), &delta)?;
        tracing::info!(archive = %dest, "force: completed experiment archived, starting fresh");
        Ok(())
    }

    /// The experiment location as a path (for messages).
    pub(crate) fn location(&self) -> PathBuf {
        self.storage.location().to_owned()
    }
}
