//! Acceptance test for asynchronous evaluation across processes: the real quickstart
//! (`exptrack::quickstart::run`) trains in one OS process while the real `async_eval`
//! watcher (`examples/async_eval/quickstart_eval.rs`: `QuickstartTarget::watcher` + `watch`, as
//! the example's `main` runs them) evaluates its checkpoints in another. Retention is tight
//! (`max_checkpoints = 2`). This binary re-executes itself with `EXPTRACK_E2E_ROLE=trainer|watcher`
//! to play each side; the parent test supervises them:
//!
//! - **Kill 1, mid-evaluation**: the watcher is frozen (SIGSTOP) right after it takes a lease on a
//!   checkpoint, then SIGKILLed while it holds it; a new watcher is started.
//! - **A lease blocks retention**: the (second) watcher is frozen while it holds a lease on the
//!   newest checkpoint; the trainer commits two more checkpoints, so retention must delete the
//!   leased one — and does not (three checkpoints on disk with `max_checkpoints = 2`); the watcher
//!   then goes on and evaluates it.
//! - **Kill 2, at an arbitrary instant**; a third watcher finishes the job and stops by itself when
//!   training completes.
//!
//! Every checkpoint the trainer committed — seen through inotify on the checkpoint directory, so
//! including those retention later deleted — must end up evaluated exactly once per dataset in the
//! eval run's `events.jsonl`, recorded as evaluated in the watcher's state file, and never
//! "missed by retention"; and no checkpoint may be deleted while a live process leases it (checked
//! on the ordered inotify stream of commits, deletions and lease files).
//!
//! What the test controls, and why (see `exptrack_eval::EvalWatcher`'s guarantees): a checkpoint
//! that is committed and pruned while *no* watcher runs cannot be seen by anyone, and one that
//! retention prunes after the watcher listed it but before it leased it is legitimately
//! "missed by retention". "None missed" is a promise under the condition that a watcher is alive
//! and keeps up. So the trainer is paused (SIGSTOP) while no watcher is alive — from just before
//! a kill until the restarted watcher has caught up — and, as a guard against a stalled machine,
//! whenever a checkpoint that is neither evaluated nor leased would be deleted by the trainer's
//! next save (this guard is what stops the trainer in the lease phase; outside it, it reports
//! how often it had to step in, normally never).

#![cfg(target_os = "linux")]

#[path = "../examples/async_eval/quickstart_eval.rs"]
#[allow(dead_code)]
mod quickstart_eval;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use exptrack::quickstart::{QuickstartArgs, run};
use exptrack::{Event, RunStatus};
use exptrack_core::store::RunReader;
use exptrack_eval::{EvalState, RecordKind, STATE_FILE_NAME};

use quickstart_eval::{EVAL_RUN_ID, Ended, QuickstartTarget, watch};

const TEST_NAME: &str = "quickstart_trainer_and_watcher_processes_with_sigkills";
const ROLE: &str = "EXPTRACK_E2E_ROLE";
const CONFIG_ENV: &str = "EXPTRACK_E2E_CONFIG";
const RESULT_ENV: &str = "EXPTRACK_E2E_RESULT";

/// Retention: keep the newest two checkpoints.
const MAX_CHECKPOINTS: usize = 2;
/// 24 000 items / batch 16 = 1500 steps per epoch, a checkpoint every 750 steps (every half
/// epoch, the epoch ends included): 14 checkpoints. Small batches make many cheap steps, so the
/// checkpoints are a few hundred milliseconds apart, well above one evaluation.
const EPOCHS: u64 = 7;
const BATCH: u64 = 16;
const TRAIN_ITEMS: u64 = 24_000;
const SAVE_EVERY: u64 = 750;
const TOTAL_STEPS: u64 = EPOCHS * TRAIN_ITEMS / BATCH;
/// The watcher's poll interval.
const WATCH_POLL: Duration = Duration::from_millis(50);
/// Deadline of every wait: generous, for a loaded machine.
const LIMIT: Duration = Duration::from_secs(120);

fn config(root: &Path) -> String {
    format!(
        r#"
[experiment]
name = "quickstart-async-eval-processes"

[tracking]
runs_dir = '{runs}'

[checkpointing]
dir = '{ckpts}'
max_checkpoints = {MAX_CHECKPOINTS}
async = true
fsync = false

[training]
num_epochs = {EPOCHS}
batch_size = {BATCH}
learning_rate = 0.005
optimizer = "adamw"
log_frequency = 50
checkpoint_save_frequency = {SAVE_EVERY}
seed = 7
device = "cpu"
progress = false

[quickstart]
train_items = {TRAIN_ITEMS}
valid_items = 500
hidden = 64
"#,
        runs = root.join("runs").display(),
        ckpts = root.join("checkpoints").display(),
    )
}

#[test]
fn quickstart_trainer_and_watcher_processes_with_sigkills() {
    match std::env::var(ROLE).as_deref() {
        Ok("trainer") => trainer_role(),
        Ok("watcher") => watcher_role(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => supervise(),
    }
}

fn env_path(name: &str) -> PathBuf {
    std::env::var_os(name)
        .map(PathBuf::from)
        .unwrap_or_else(|| panic!("child needs env {name}"))
}

/// The quickstart, to completion; its result goes to `RESULT_ENV` as JSON.
fn trainer_role() {
    let outcome = run(QuickstartArgs {
        config: Some(env_path(CONFIG_ENV)),
        quiet: true,
        ..QuickstartArgs::default()
    })
    .expect("quickstart");
    assert!(!outcome.already_completed && !outcome.result.interrupted);
    std::fs::write(
        env_path(RESULT_ENV),
        serde_json::to_vec(&outcome.result).expect("result json"),
    )
    .expect("write result");
}

/// What `examples/async_eval/main.rs` does (without its argument parsing): watch until training
/// completes, printing one line per checkpoint, then finish the eval run.
fn watcher_role() {
    let target = QuickstartTarget::resolve(Some(&env_path(CONFIG_ENV)), None).expect("target");
    let tracker = target
        .eval_tracker()
        .expect("eval tracker")
        .build()
        .expect("build tracker");
    let mut watcher = target.watcher(&tracker, WATCH_POLL).expect("watcher");
    let ended = watch(&mut watcher, WATCH_POLL, false, |e| {
        println!("step {}: {:?}", e.step, e.outcome)
    })
    .expect("watch");
    drop(watcher);
    assert_eq!(ended, Ended::TrainingCompleted);
    tracker.finish(RunStatus::Completed).expect("finish");
}

// ---------------------------------------------------------------------------------------------
// Processes and signals.

fn signal(pid: u32, sig: libc::c_int) {
    let pid = libc::pid_t::try_from(pid).expect("pid");
    // SAFETY: kill(2) on a child of this test (or one that already exited and is not yet reaped).
    let rc = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        rc,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// True when every thread of `pid` is stopped (or the process is gone / a zombie).
fn all_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return true;
    };
    tasks.flatten().all(|t| {
        std::fs::read_to_string(t.path().join("stat")).map_or(true, |stat| {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].trim_start().chars().next());
            matches!(state, Some('T' | 't' | 'Z' | 'X'))
        })
    })
}

fn wait_stopped(pid: u32, what: &str) {
    let deadline = Instant::now() + LIMIT;
    while !all_stopped(pid) {
        assert!(Instant::now() < deadline, "{what} did not stop");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn wait_exit(child: &mut Child, what: &str) -> ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not exit in {LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------
// inotify on the checkpoint directory, its lease directory and a marker directory of the test.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Experiment,
    Leases,
    Markers,
}

struct Inotify {
    file: File,
    watches: BTreeMap<i32, Dir>,
}

impl Inotify {
    fn new(dirs: &[(&Path, Dir)]) -> Self {
        // SAFETY: plain syscall; the result is checked.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        assert!(
            fd >= 0,
            "inotify_init1: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor that nothing else owns.
        let file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        let mut watches = BTreeMap::new();
        for (path, dir) in dirs {
            let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("path");
            let mask = libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO;
            // SAFETY: a valid descriptor and a NUL-terminated path.
            let wd = unsafe { libc::inotify_add_watch(file.as_raw_fd(), c.as_ptr(), mask) };
            assert!(
                wd >= 0,
                "inotify_add_watch {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            watches.insert(wd, *dir);
        }
        Inotify { file, watches }
    }

    /// Waits up to `timeout` for events; returns `(dir, mask, name)` in the kernel's order.
    fn read(&mut self, timeout: Duration) -> Vec<(Dir, u32, String)> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match self.file.read(&mut buf) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("reading inotify: {e}"),
            };
            let mut i = 0;
            while i + 16 <= n {
                let word = |at: usize| {
                    u32::from_ne_bytes(buf[i + at..i + at + 4].try_into().expect("4 bytes"))
                };
                let wd = i32::from_ne_bytes(buf[i..i + 4].try_into().expect("4 bytes"));
                let (mask, len) = (word(4), word(12) as usize);
                let name = String::from_utf8_lossy(&buf[i + 16..i + 16 + len])
                    .trim_end_matches('\0')
                    .to_owned();
                if mask & libc::IN_Q_OVERFLOW != 0 {
                    // Reported with the experiment directory; the model fails on it.
                    out.push((Dir::Experiment, mask, name));
                } else if let Some(dir) = self.watches.get(&wd) {
                    out.push((*dir, mask, name));
                }
                i += 16 + len;
            }
        }
        out
    }
}

/// `ckpt-000000000125` → 125.
fn ckpt_step(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("ckpt-")?;
    (digits.len() >= 12 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// `<step>-<pid>-<n>` (a lease file) → (step, pid).
fn lease_of(name: &str) -> Option<(u64, u32)> {
    let mut parts = name.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A deletion by retention (a rename of `ckpt-<step>` away), with the live leases on that step
/// at that moment; `restored` when the pruner put it back (a lease appeared meanwhile).
#[derive(Debug)]
struct Prune {
    step: u64,
    leased_by: Vec<String>,
    restored: bool,
}

/// Freeze the watcher (SIGSTOP) when it creates a lease, once it has recorded `min_recorded`
/// steps (and, with `newest_only`, only on the newest committed checkpoint).
#[derive(Debug, Clone, Copy)]
struct Arm {
    watcher_pid: u32,
    min_recorded: usize,
    newest_only: bool,
}

#[derive(Debug, Clone)]
struct Fired {
    pid: u32,
    step: u64,
    lease: String,
}

/// The directory's history as the inotify stream shows it, plus the trainer's pause control.
#[derive(Debug, Default)]
struct Model {
    state_path: PathBuf,
    /// Every commit, in order.
    committed: Vec<u64>,
    /// `ckpt-*` directories now.
    present: BTreeSet<u64>,
    prunes: Vec<Prune>,
    /// Lease file name → (step, pid).
    leases: BTreeMap<String, (u64, u32)>,
    /// Watcher pids the test killed (their lease files are stale from then on).
    dead: BTreeSet<u32>,
    /// The watcher's state file, reread after each replacement.
    recorded: BTreeMap<u64, RecordKind>,
    markers: BTreeSet<String>,
    overflow: bool,
    registry_written: bool,
    trainer_pid: Option<u32>,
    /// Why the trainer is stopped: by the test (no watcher alive, a watcher frozen) / by the
    /// guard.
    paused_by_test: bool,
    paused_by_guard: bool,
    /// (newest step, steps at risk) each time the guard stopped the trainer.
    guard_stops: Vec<(u64, Vec<u64>)>,
    arm: Option<Arm>,
    fired: Option<Fired>,
}

impl Model {
    fn live_leases(&self, step: u64) -> Vec<String> {
        self.leases
            .iter()
            .filter(|(_, (s, pid))| *s == step && !self.dead.contains(pid))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// Checkpoints the trainer's next save would delete before the watcher dealt with them.
    fn at_risk(&self) -> Vec<u64> {
        let Some(newest) = self.present.last().copied() else {
            return Vec::new();
        };
        self.present
            .iter()
            .copied()
            .filter(|s| {
                *s < newest && !self.recorded.contains_key(s) && self.live_leases(*s).is_empty()
            })
            .collect()
    }

    fn set_pause(&mut self, by_test: Option<bool>, by_guard: Option<bool>) {
        let before = self.paused_by_test || self.paused_by_guard;
        if let Some(v) = by_test {
            self.paused_by_test = v;
        }
        if let Some(v) = by_guard {
            self.paused_by_guard = v;
        }
        let after = self.paused_by_test || self.paused_by_guard;
        if let Some(pid) = self.trainer_pid
            && before != after
        {
            signal_quiet(pid, if after { libc::SIGSTOP } else { libc::SIGCONT });
        }
    }

    fn apply(&mut self, dir: Dir, mask: u32, name: &str) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            self.overflow = true;
            return;
        }
        match dir {
            Dir::Experiment => {
                if let Some(step) = ckpt_step(name) {
                    if mask & libc::IN_MOVED_TO != 0 {
                        if self.committed.contains(&step) {
                            if let Some(p) = self.prunes.iter_mut().rev().find(|p| p.step == step) {
                                p.restored = true;
                            }
                        } else {
                            self.committed.push(step);
                        }
                        self.present.insert(step);
                    } else if mask & libc::IN_MOVED_FROM != 0 {
                        let leased_by = self.live_leases(step);
                        self.prunes.push(Prune {
                            step,
                            leased_by,
                            restored: false,
                        });
                        self.present.remove(&step);
                    }
                } else if mask & libc::IN_MOVED_TO != 0 && name == "registry.json" {
                    self.registry_written = true;
                } else if mask & libc::IN_MOVED_TO != 0
                    && name == STATE_FILE_NAME
                    && let Ok(Some(st)) = EvalState::load(&self.state_path)
                {
                    self.recorded = st.steps.iter().map(|(s, r)| (*s, r.kind)).collect();
                }
            }
            Dir::Leases => {
                let Some((step, pid)) = lease_of(name) else {
                    return;
                };
                if mask & libc::IN_CREATE != 0 {
                    self.leases.insert(name.to_owned(), (step, pid));
                    if let Some(arm) = self.arm
                        && arm.watcher_pid == pid
                        && self.recorded.len() >= arm.min_recorded
                        && (!arm.newest_only || self.present.last() == Some(&step))
                    {
                        signal_quiet(pid, libc::SIGSTOP);
                        self.arm = None;
                        self.fired = Some(Fired {
                            pid,
                            step,
                            lease: name.to_owned(),
                        });
                    }
                } else if mask & libc::IN_DELETE != 0 {
                    self.leases.remove(name);
                }
            }
            Dir::Markers => {
                if mask & libc::IN_CREATE != 0 {
                    if let Some(pid) = name.strip_prefix("killed-").and_then(|p| p.parse().ok()) {
                        self.dead.insert(pid);
                    }
                    self.markers.insert(name.to_owned());
                }
            }
        }
    }

    /// After each batch of events: the guard. It stops the trainer only right after a save has
    /// applied retention (`registry.json` is rewritten after the prune), so a lease's effect on
    /// that prune is visible on disk; it lets it go on once nothing is at risk.
    fn guard(&mut self) {
        if self.trainer_pid.is_none() {
            return;
        }
        let risk = self.at_risk();
        if std::mem::take(&mut self.registry_written) && !risk.is_empty() && !self.paused_by_guard {
            let newest = self.present.last().copied().unwrap_or(0);
            self.guard_stops.push((newest, risk.clone()));
            self.set_pause(None, Some(true));
        }
        if self.paused_by_guard && risk.is_empty() {
            self.set_pause(None, Some(false));
        }
    }
}

struct Shared {
    model: Mutex<Model>,
    changed: Condvar,
    shutdown: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Model> {
        self.model
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits until `cond` holds on the model (or panics after [`LIMIT`]); `check` runs on every
    /// wake-up (e.g. to fail early when a child died).
    fn wait_for<R>(
        &self,
        what: &str,
        mut check: impl FnMut(),
        mut cond: impl FnMut(&Model) -> Option<R>,
    ) -> R {
        let deadline = Instant::now() + LIMIT;
        let mut m = self.lock();
        loop {
            assert!(!m.overflow, "inotify queue overflowed");
            if let Some(r) = cond(&m) {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; model: committed {:?}, present {:?}, recorded {:?}, \
                 leases {:?}, paused for kill {} / by guard {}",
                m.committed,
                m.present,
                m.recorded,
                m.leases,
                m.paused_by_test,
                m.paused_by_guard
            );
            drop(m);
            check();
            m = self.lock();
            m = self
                .changed
                .wait_timeout(m, Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
    }
}

fn controller(mut inotify: Inotify, shared: Arc<Shared>) {
    while !shared.shutdown.load(Ordering::SeqCst) {
        let events = inotify.read(Duration::from_millis(50));
        if events.is_empty() {
            continue;
        }
        let mut m = shared.lock();
        for (dir, mask, name) in &events {
            m.apply(*dir, *mask, name);
        }
        m.guard();
        drop(m);
        shared.changed.notify_all();
    }
}

// ---------------------------------------------------------------------------------------------
// The supervisor.

/// This test binary again, in `role`, its stdout to `stdout`.
fn spawn_child(role: &str, tmp: &Path, cfg_path: &Path, stdout: &Path) -> Child {
    Command::new(std::env::current_exe().expect("current exe"))
        .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(CONFIG_ENV, cfg_path)
        .env(RESULT_ENV, tmp.join("result.json"))
        .stdout(Stdio::from(File::create(stdout).expect("log file")))
        .spawn()
        .expect("spawn child")
}

struct Harness {
    tmp: tempfile::TempDir,
    cfg_path: PathBuf,
    markers: PathBuf,
    shared: Arc<Shared>,
    controller: Option<JoinHandle<()>>,
    trainer: Child,
    watcher: Child,
    watcher_logs: Vec<PathBuf>,
    marker_seq: u64,
}

impl Harness {
    fn spawn_watcher(&mut self) {
        let log = self
            .tmp
            .path()
            .join(format!("watcher-{}.log", self.watcher_logs.len() + 1));
        self.watcher = spawn_child("watcher", self.tmp.path(), &self.cfg_path, &log);
        self.watcher_logs.push(log);
    }

    /// Panics when a child exited although it should still run.
    fn check_alive(trainer: &mut Child, watcher: &mut Child) {
        for (child, what) in [(trainer, "trainer"), (watcher, "watcher")] {
            if let Some(status) = child.try_wait().expect("try_wait") {
                panic!("the {what} exited early: {status}");
            }
        }
    }

    fn wait_for<R>(&mut self, what: &str, cond: impl FnMut(&Model) -> Option<R>) -> R {
        let (trainer, watcher) = (&mut self.trainer, &mut self.watcher);
        self.shared
            .wait_for(what, || Self::check_alive(trainer, watcher), cond)
    }

    /// Creates a marker file and waits until the controller has seen it: the model then reflects
    /// every file system event that happened before.
    fn marker(&mut self, name: &str) {
        self.marker_seq += 1;
        let name = format!("{name}-{}", self.marker_seq);
        File::create(self.markers.join(&name)).expect("marker");
        self.shared.wait_for(
            "a marker",
            || {},
            |m| m.markers.contains(&name).then_some(()),
        );
    }

    fn pause_trainer(&mut self) {
        self.shared.lock().set_pause(Some(true), None);
        wait_stopped(self.trainer.id(), "the trainer");
        self.marker("sync");
    }

    fn resume_trainer(&mut self) {
        self.shared.lock().set_pause(Some(false), None);
    }

    /// Freezes the watcher while it holds a lease (see [`Arm`]); returns the leased step and the
    /// lease file. Retries when the lease was gone (or, `newest_only`, a newer checkpoint had
    /// appeared) by the time the watcher stopped.
    fn freeze_watcher_holding_lease(&mut self, min_recorded: usize, newest_only: bool) -> Fired {
        let pid = self.watcher.id();
        loop {
            {
                let mut m = self.shared.lock();
                m.fired = None;
                m.arm = Some(Arm {
                    watcher_pid: pid,
                    min_recorded,
                    newest_only,
                });
            }
            let fired = self.wait_for("the watcher to take a lease", |m| m.fired.clone());
            wait_stopped(pid, "the watcher");
            self.marker("frozen");
            let still = {
                let m = self.shared.lock();
                m.leases.contains_key(&fired.lease)
                    && (!newest_only || m.present.last() == Some(&fired.step))
            };
            if still {
                return fired;
            }
            signal(pid, libc::SIGCONT);
        }
    }

    /// SIGKILLs the watcher (the trainer must be paused), marks it dead and starts a new one.
    fn kill_and_restart_watcher(&mut self) -> ExitStatus {
        let pid = self.watcher.id();
        self.watcher.kill().expect("SIGKILL the watcher");
        let status = self.watcher.wait().expect("wait");
        self.marker(&format!("killed-{pid}"));
        self.spawn_watcher();
        status
    }

    /// Waits until every checkpoint on disk is recorded in the state file.
    fn wait_caught_up(&mut self) {
        self.wait_for("the watcher to catch up", |m| {
            m.present
                .iter()
                .all(|s| m.recorded.contains_key(s))
                .then_some(())
        });
    }

    fn recorded_count(&self) -> usize {
        self.shared.lock().recorded.len()
    }

    fn newest_committed(&self) -> u64 {
        self.shared.lock().committed.last().copied().unwrap_or(0)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Never leave a stopped or running child behind.
        for child in [&mut self.trainer, &mut self.watcher] {
            if child.try_wait().ok().flatten().is_none() {
                let _ = signal_quiet(child.id(), libc::SIGCONT);
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        if let Some(h) = self.controller.take() {
            let _ = h.join();
        }
        if std::thread::panicking() {
            for log in &self.watcher_logs {
                eprintln!(
                    "--- {}:\n{}",
                    log.display(),
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            eprintln!("model: {:#?}", *self.shared.lock());
        }
    }
}

fn signal_quiet(pid: u32, sig: libc::c_int) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, sig) == 0 }
}

fn ckpt_dirs(exp_dir: &Path) -> BTreeSet<u64> {
    std::fs::read_dir(exp_dir)
        .expect("read experiment dir")
        .flatten()
        .filter_map(|e| ckpt_step(&e.file_name().to_string_lossy()))
        .collect()
}

fn supervise() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().expect("tempdir");
    let cfg_path = tmp.path().join("quickstart.toml");
    std::fs::write(&cfg_path, config(tmp.path())).expect("config");
    let target = QuickstartTarget::resolve(Some(&cfg_path), None).expect("target");
    let exp_dir = target.checkpoint_dir.join(&target.experiment_id);
    let markers = tmp.path().join("markers");
    // Created up front so that inotify sees the very first commit and lease.
    for d in [exp_dir.join("leases"), markers.clone()] {
        std::fs::create_dir_all(d).expect("mkdir");
    }
    let inotify = Inotify::new(&[
        (&exp_dir, Dir::Experiment),
        (&exp_dir.join("leases"), Dir::Leases),
        (&markers, Dir::Markers),
    ]);
    let shared = Arc::new(Shared {
        model: Mutex::new(Model {
            state_path: exp_dir.join(STATE_FILE_NAME),
            ..Model::default()
        }),
        changed: Condvar::new(),
        shutdown: AtomicBool::new(false),
    });
    let controller = {
        let shared = Arc::clone(&shared);
        std::thread::spawn(move || controller(inotify, shared))
    };

    let trainer = spawn_child(
        "trainer",
        tmp.path(),
        &cfg_path,
        &tmp.path().join("trainer.log"),
    );
    shared.lock().trainer_pid = Some(trainer.id());
    let log = tmp.path().join("watcher-1.log");
    let watcher = spawn_child("watcher", tmp.path(), &cfg_path, &log);
    let mut h = Harness {
        cfg_path,
        markers,
        shared,
        controller: Some(controller),
        trainer,
        watcher,
        watcher_logs: vec![log],
        marker_seq: 0,
        tmp,
    };

    // Kill 1: mid-evaluation, with a lease held (after two checkpoints were evaluated).
    let frozen = h.freeze_watcher_holding_lease(2, false);
    h.pause_trainer();
    assert!(
        h.newest_committed() < TOTAL_STEPS,
        "training still running at kill 1"
    );
    let killed = h.kill_and_restart_watcher();
    assert!(!killed.success(), "watcher 1 was killed: {killed}");
    assert!(
        h.shared.lock().leases.contains_key(&frozen.lease),
        "watcher 1 died holding its lease on step {}",
        frozen.step
    );
    let kill1 = (frozen.step, h.newest_committed());
    h.wait_caught_up();
    h.resume_trainer();

    // A lease blocks retention: freeze the watcher holding the newest checkpoint's lease; the
    // trainer saves twice more, then the guard stops it (the checkpoint after the leased one is
    // at risk while the watcher is frozen).
    let min = h.recorded_count() + 2;
    let frozen = h.freeze_watcher_holding_lease(min, true);
    let leased = frozen.step;
    let newer = h.wait_for("two more commits and the guard's stop", |m| {
        let newer: Vec<u64> = m
            .committed
            .iter()
            .copied()
            .filter(|s| *s > leased)
            .collect();
        (newer.len() >= 2 && m.paused_by_guard).then_some(newer)
    });
    wait_stopped(h.trainer.id(), "the trainer (guard)");
    h.marker("sync");
    {
        let m = h.shared.lock();
        let on_disk = ckpt_dirs(&exp_dir);
        assert!(
            on_disk.contains(&leased) && m.present.contains(&leased),
            "retention deleted step {leased} under a live lease; on disk {on_disk:?}"
        );
        assert!(
            on_disk.len() > MAX_CHECKPOINTS,
            "the lease kept a checkpoint beyond max_checkpoints: {on_disk:?}"
        );
        assert!(newer[1] < TOTAL_STEPS, "training still running");
    }
    let lease_phase = (leased, newer.clone(), ckpt_dirs(&exp_dir));
    // The trainer stays stopped until the watcher, going on, has caught up.
    h.shared.lock().set_pause(Some(true), None);
    signal(frozen.pid, libc::SIGCONT);
    h.wait_caught_up();
    h.resume_trainer();

    // Kill 2: at an arbitrary instant, two evaluations later.
    let min = h.recorded_count() + 2;
    h.wait_for("progress", |m| (m.recorded.len() >= min).then_some(()));
    let jitter = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() % 150);
    std::thread::sleep(Duration::from_millis(u64::from(jitter)));
    h.pause_trainer();
    assert!(
        h.newest_committed() < TOTAL_STEPS,
        "training still running at kill 2"
    );
    let kill2_newest = h.newest_committed();
    let killed = h.kill_and_restart_watcher();
    assert!(!killed.success(), "watcher 2 was killed: {killed}");
    h.wait_caught_up();
    h.resume_trainer();

    // Training completes; the third watcher stops by itself.
    let t_status = wait_exit(&mut h.trainer, "the trainer");
    assert!(t_status.success(), "trainer: {t_status}");
    h.shared.lock().trainer_pid = None;
    let w_status = wait_exit(&mut h.watcher, "the last watcher");
    assert!(w_status.success(), "last watcher: {w_status}");
    h.marker("end");

    // ----- What the trainer committed (every commit, pruned ones included).
    let m = h.shared.lock();
    let committed: BTreeSet<u64> = m.committed.iter().copied().collect();
    assert_eq!(committed.len(), m.committed.len(), "a step committed twice");
    let result: serde_json::Value =
        serde_json::from_slice(&std::fs::read(h.tmp.path().join("result.json")).expect("result"))
            .expect("result json");
    let steps = result["steps"].as_u64().expect("steps");
    assert_eq!(steps, TOTAL_STEPS);
    // The trainer saves every SAVE_EVERY steps and at every epoch end (where it validates).
    let mut expected: BTreeSet<u64> = (1..=steps / SAVE_EVERY).map(|i| i * SAVE_EVERY).collect();
    for h in result["history"].as_array().expect("history") {
        expected.insert(h["step"].as_u64().expect("step"));
    }
    assert_eq!(committed, expected, "inotify saw every commit");

    // ----- Retention did prune, and never a checkpoint under a live lease.
    let pruned: BTreeSet<u64> = m
        .prunes
        .iter()
        .filter(|p| !p.restored)
        .map(|p| p.step)
        .collect();
    let violations: Vec<&Prune> = m
        .prunes
        .iter()
        .filter(|p| !p.restored && !p.leased_by.is_empty())
        .collect();
    assert!(violations.is_empty(), "pruned under lease: {violations:?}");
    assert!(
        pruned.len() + MAX_CHECKPOINTS + 1 >= committed.len(),
        "retention pruned {pruned:?} of {committed:?}"
    );
    let left = ckpt_dirs(&exp_dir);
    assert_eq!(left, &committed - &pruned);

    // ----- The watcher's state: every committed checkpoint evaluated, none missed or skipped.
    let st = EvalState::load(&exp_dir.join(STATE_FILE_NAME))
        .expect("state")
        .expect("state file");
    assert_eq!(
        st.steps.keys().copied().collect::<BTreeSet<_>>(),
        committed,
        "every committed checkpoint is recorded"
    );
    for kind in [
        RecordKind::MissedByRetention,
        RecordKind::Corrupt,
        RecordKind::Failed,
    ] {
        assert!(st.steps_with(kind).is_empty(), "{kind:?}: {st:?}");
    }
    assert_eq!(st.steps_with(RecordKind::Evaluated).len(), committed.len());

    // ----- Exactly once per dataset, from the eval run's log.
    let run_dir = target
        .runs_dir
        .join(target.eval_experiment_id())
        .join(EVAL_RUN_ID);
    let reader = RunReader::open(&run_dir).expect("eval run");
    let mut counts: BTreeMap<(u64, &str), usize> = BTreeMap::new();
    for (_, event) in reader.events().expect("events") {
        if let Event::Metrics { step, values, .. } = event {
            for ds in ["valid", "ood"] {
                let keys: BTreeSet<String> = values
                    .iter()
                    .filter(|v| v.key.starts_with(&format!("eval/{ds}/")))
                    .map(|v| v.key.clone())
                    .collect();
                if !keys.is_empty() {
                    assert_eq!(keys.len(), 3, "step {step} {ds}: {keys:?}");
                    *counts.entry((step, ds)).or_default() += 1;
                }
            }
        }
    }
    for step in &committed {
        for ds in ["valid", "ood"] {
            assert_eq!(
                counts.get(&(*step, ds)),
                Some(&1),
                "step {step}: eval/{ds}/* logged {:?} times",
                counts.get(&(*step, ds))
            );
        }
    }
    assert_eq!(counts.len(), committed.len() * 2, "no other step logged");
    assert_eq!(
        reader.metadata().expect("metadata").status,
        RunStatus::Completed
    );

    let recovered: Vec<u64> = st
        .steps
        .iter()
        .filter(|(_, r)| r.reason.is_some())
        .map(|(s, _)| *s)
        .collect();
    eprintln!(
        "{} checkpoints committed {:?}, {} pruned by retention, left {:?}; kill 1 while leasing \
         step {} (newest {}), lease held on step {} while {:?} were committed (on disk {:?}), \
         kill 2 at newest {}; recovered from the run log: {:?}; guard stops (newest, at risk): \
         {:?}; total {:.1} s",
        committed.len(),
        committed,
        pruned.len(),
        left,
        kill1.0,
        kill1.1,
        lease_phase.0,
        lease_phase.1,
        lease_phase.2,
        kill2_newest,
        recovered,
        m.guard_stops,
        started.elapsed().as_secs_f64()
    );
}
