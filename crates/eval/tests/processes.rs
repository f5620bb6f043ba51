//! Multi-process acceptance tests (own harness: this binary re-executes itself with
//! `EXPTRACK_EVAL_ROLE=trainer|watcher` to play each side).
//!
//! - `end_to_end_with_sigkill`: a trainer process saves checkpoints with the real
//!   `ModelCheckpointer` (keep last 5, so retention prunes) and marks the experiment completed; a
//!   watcher process evaluates them on two datasets; the parent SIGKILLs the watcher twice and
//!   restarts it. Every committed checkpoint is evaluated exactly once (read back from the eval
//!   run's `events.jsonl`), none twice, none missed, and the last watcher stops by itself.
//! - `crash_between_log_and_record`: the watcher aborts right after logging a step and before
//!   recording it; the restarted watcher recovers the step from the run log instead of evaluating
//!   it again.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_core::RunStatus;
use exptrack_eval::{BoxError, EvalState, EvalWatcher, RecordKind, STATE_FILE_NAME};

const ROLE: &str = "EXPTRACK_EVAL_ROLE";
const EXP: &str = "e2e";
const RUN_ID: &str = "async-eval";

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("child needs env {name}"))
}

fn env_u64(name: &str) -> u64 {
    env(name).parse().expect("number")
}

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("trainer") => trainer_role(),
        Ok("watcher") => watcher_role(),
        Ok(other) => panic!("unknown role {other}"),
        Err(_) => {
            let filter: Vec<String> = std::env::args()
                .skip(1)
                .filter(|a| !a.starts_with('-'))
                .collect();
            let tests: [(&str, fn()); 2] = [
                ("end_to_end_with_sigkill", end_to_end_with_sigkill),
                ("crash_between_log_and_record", crash_between_log_and_record),
            ];
            for (name, f) in tests {
                if filter.is_empty() || filter.iter().any(|p| name.contains(p.as_str())) {
                    let t = Instant::now();
                    eprintln!("test {name} ...");
                    f();
                    eprintln!("test {name} ... ok ({:.1} s)", t.elapsed().as_secs_f64());
                }
            }
        }
    }
}

/// Saves `N` checkpoints `PERIOD_MS` apart (keep last `KEEP`), appending each committed step to
/// `SAVED_LOG`, then marks the experiment completed.
fn trainer_role() {
    let dir = PathBuf::from(env("CKPT_DIR"));
    let n = env_u64("N");
    let period = Duration::from_millis(env_u64("PERIOD_MS"));
    let keep = env_u64("KEEP") as usize;
    let mut ckpt = common::trainer(&dir, EXP, Some(keep));
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(env("SAVED_LOG"))
        .expect("saved log");
    for i in 1..=n {
        let step = i * 10;
        ckpt.save(common::checkpoint(step)).expect("save");
        writeln!(log, "{step}").expect("log");
        std::thread::sleep(period);
    }
    ckpt.mark_completed(serde_json::json!({ "final_step": n * 10 }))
        .expect("mark completed");
}

/// Runs a watcher on datasets `valid` and `ood` until training completes, appending
/// `<step> <dataset>` to `EVAL_LOG` for every evaluator call.
fn watcher_role() {
    let runs = PathBuf::from(env("RUNS"));
    let dir = PathBuf::from(env("CKPT_DIR"));
    let eval_ms = Duration::from_millis(env_u64("EVAL_MS"));
    let abort_after = std::env::var("ABORT_AFTER")
        .ok()
        .map(|s| s.parse::<u64>().expect("step"));
    let eval_log = PathBuf::from(env("EVAL_LOG"));
    let tracker = common::eval_tracker(&runs, RUN_ID);
    let make = |ds: &'static str, shift: f64| {
        let eval_log = eval_log.clone();
        move |c: &LoadedCheckpoint| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&eval_log)?;
            writeln!(f, "{} {ds}", c.step())?;
            std::thread::sleep(eval_ms);
            common::fake_eval(c, shift).map_err(BoxError::from)
        }
    };
    let mut watcher = EvalWatcher::builder(&dir, EXP)
        .poll_interval(Duration::from_millis(20))
        .flush_timeout(Duration::from_secs(5))
        .dataset("valid", make("valid", 0.0))
        .dataset("ood", make("ood", 0.2))
        .tracker(&tracker)
        .abort_after_log(abort_after)
        .build()
        .expect("build watcher");
    let summary = watcher.run().expect("watcher run");
    eprintln!(
        "watcher: {:?}; evaluated {:?}",
        summary.reason,
        summary.evaluated_steps()
    );
    drop(watcher);
    tracker.finish(RunStatus::Completed).expect("finish");
}

fn spawn(role: &str, envs: &[(&str, String)]) -> Child {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.env(ROLE, role);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child")
}

fn wait_timeout(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) on our own child's pid.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0, "kill({sig})");
}

fn state(path: &Path) -> EvalState {
    EvalState::load(path)
        .expect("state file parses")
        .unwrap_or_else(|| panic!("no state file at {}", path.display()))
}

fn evaluated_count(path: &Path) -> usize {
    EvalState::load(path)
        .ok()
        .flatten()
        .map_or(0, |s| s.steps_with(RecordKind::Evaluated).len())
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Evaluator calls per step and dataset, from the children's `EVAL_LOG`.
fn eval_calls(path: &Path) -> BTreeMap<(u64, String), usize> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(' ');
        if let (Some(step), Some(ds)) = (parts.next(), parts.next()) {
            *out.entry((step.parse().expect("step"), ds.to_owned()))
                .or_default() += 1;
        }
    }
    out
}

fn end_to_end_with_sigkill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let runs = tmp.path().join("runs");
    let saved_log = tmp.path().join("saved.log");
    let eval_log = tmp.path().join("eval.log");
    let state_path = ckpt_dir.join(EXP).join(STATE_FILE_NAME);
    let n = 30u64;
    let keep = 5usize;

    let mut trainer = spawn(
        "trainer",
        &[
            ("CKPT_DIR", ckpt_dir.display().to_string()),
            ("N", n.to_string()),
            ("PERIOD_MS", "100".into()),
            ("KEEP", keep.to_string()),
            ("SAVED_LOG", saved_log.display().to_string()),
        ],
    );
    let watcher_env = [
        ("CKPT_DIR", ckpt_dir.display().to_string()),
        ("RUNS", runs.display().to_string()),
        ("EVAL_MS", "20".to_owned()),
        ("EVAL_LOG", eval_log.display().to_string()),
    ];
    let mut kills = 0;
    let mut watcher = spawn("watcher", &watcher_env);
    // Kill it twice once it has made progress, restarting it right away: first while an
    // evaluator is running (a new line in the evaluator log), then at an arbitrary instant.
    for (target, mid_eval) in [(4usize, true), (10, false)] {
        wait_for(Duration::from_secs(20), "watcher progress", || {
            evaluated_count(&state_path) >= target
        });
        if mid_eval {
            let seen = eval_calls(&eval_log).values().sum::<usize>();
            wait_for(Duration::from_secs(20), "an evaluation to start", || {
                eval_calls(&eval_log).values().sum::<usize>() > seen
            });
        } else {
            std::thread::sleep(Duration::from_millis(37));
        }
        // Pause training while no watcher is alive: "none missed" is a promise about
        // checkpoints committed while a watcher runs; with the trainer going on, retention could
        // prune checkpoints no watcher ever had a chance to see (that case is tested in
        // tests/lease.rs as missed-by-retention).
        signal(&trainer, libc::SIGSTOP);
        watcher.kill().expect("SIGKILL watcher");
        let status = watcher.wait().expect("wait");
        assert!(!status.success(), "the watcher was killed, not finished");
        kills += 1;
        std::thread::sleep(Duration::from_millis(50));
        watcher = spawn("watcher", &watcher_env);
        // Resume training once the new watcher has dealt with everything committed so far.
        wait_for(
            Duration::from_secs(20),
            "the restarted watcher to catch up",
            || {
                let saved = std::fs::read_to_string(&saved_log)
                    .unwrap_or_default()
                    .lines()
                    .count();
                EvalState::load(&state_path)
                    .ok()
                    .flatten()
                    .is_some_and(|s| s.steps.len() >= saved)
            },
        );
        signal(&trainer, libc::SIGCONT);
    }
    let t_status = wait_timeout(&mut trainer, Duration::from_secs(30), "trainer");
    assert!(t_status.success(), "trainer failed: {t_status}");
    // The last watcher stops by itself once training is completed.
    let w_status = wait_timeout(&mut watcher, Duration::from_secs(30), "watcher");
    assert!(w_status.success(), "watcher failed: {w_status}");
    assert_eq!(kills, 2);

    let saved: BTreeSet<u64> = std::fs::read_to_string(&saved_log)
        .expect("saved log")
        .lines()
        .map(|l| l.parse().expect("step"))
        .collect();
    assert_eq!(saved.len() as u64, n, "trainer committed every checkpoint");

    // Retention really pruned (keep last 5), and no lease is left behind.
    let trainer_view = common::trainer(&ckpt_dir, EXP, Some(keep));
    let left: Vec<u64> = trainer_view.list().iter().map(|c| c.step).collect();
    assert_eq!(left, (n - 4..=n).map(|i| i * 10).collect::<Vec<_>>());
    drop(trainer_view);

    let st = state(&state_path);
    let recorded: BTreeSet<u64> = st.steps.keys().copied().collect();
    // None missed: every committed checkpoint was seen and dealt with...
    assert_eq!(recorded, saved, "every committed checkpoint is recorded");
    let evaluated: BTreeSet<u64> = st.steps_with(RecordKind::Evaluated).into_iter().collect();
    let missed = st.steps_with(RecordKind::MissedByRetention);
    assert!(st.steps_with(RecordKind::Corrupt).is_empty());
    assert!(st.steps_with(RecordKind::Failed).is_empty());
    // ...and with a 500 ms checkpoint lifetime and ~40 ms evaluations, by evaluating it.
    assert!(
        missed.is_empty(),
        "checkpoints pruned before evaluation: {missed:?}"
    );

    // Exactly once: read back from the eval run's events.jsonl.
    let run = common::run_dir(&runs, RUN_ID);
    let counts = common::eval_event_counts(&run);
    let logged: BTreeSet<u64> = counts.keys().copied().collect();
    assert_eq!(logged, evaluated, "logged steps == evaluated steps");
    for (step, per_ds) in &counts {
        for ds in ["valid", "ood"] {
            assert_eq!(
                per_ds.get(ds),
                Some(&1),
                "step {step}: eval/{ds}/* logged {:?} times",
                per_ds.get(ds)
            );
        }
    }
    // The eval run was resumed by each restarted watcher and completed by the last one.
    let meta = exptrack_core::store::RunReader::open(&run)
        .expect("run")
        .metadata()
        .expect("metadata");
    assert_eq!(meta.status, RunStatus::Completed);
    let calls = eval_calls(&eval_log);
    let repeated: Vec<_> = calls.iter().filter(|(_, n)| **n > 1).collect();
    eprintln!(
        "  {} checkpoints, {} evaluated, {} evaluator calls, {} re-run after a kill mid-evaluation: {:?}; recovered: {:?}",
        saved.len(),
        evaluated.len(),
        calls.values().sum::<usize>(),
        repeated.len(),
        repeated,
        st.steps
            .iter()
            .filter(|(_, r)| r.reason.is_some())
            .map(|(s, _)| *s)
            .collect::<Vec<_>>()
    );
}

fn crash_between_log_and_record() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let runs = tmp.path().join("runs");
    let eval_log = tmp.path().join("eval.log");
    let state_path = ckpt_dir.join(EXP).join(STATE_FILE_NAME);
    {
        let mut ckpt = common::trainer(&ckpt_dir, EXP, None);
        for step in [1, 2, 3] {
            ckpt.save(common::checkpoint(step)).expect("save");
        }
        ckpt.mark_completed(serde_json::json!({}))
            .expect("complete");
    }
    let mut envs = vec![
        ("CKPT_DIR", ckpt_dir.display().to_string()),
        ("RUNS", runs.display().to_string()),
        ("EVAL_MS", "0".to_owned()),
        ("EVAL_LOG", eval_log.display().to_string()),
        ("ABORT_AFTER", "2".to_owned()),
    ];
    let mut w = spawn("watcher", &envs);
    let status = wait_timeout(&mut w, Duration::from_secs(30), "aborting watcher");
    assert!(
        !status.success(),
        "the watcher aborted after logging step 2"
    );
    let st = state(&state_path);
    assert_eq!(
        st.steps_with(RecordKind::Evaluated),
        [1],
        "2 logged, not recorded"
    );
    let run = common::run_dir(&runs, RUN_ID);
    assert_eq!(
        common::eval_event_counts(&run)
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [1, 2],
        "step 2 reached the run log before the abort"
    );

    envs.pop();
    let mut w = spawn("watcher", &envs);
    let status = wait_timeout(&mut w, Duration::from_secs(30), "restarted watcher");
    assert!(status.success(), "restarted watcher: {status}");
    let st = state(&state_path);
    assert_eq!(st.steps_with(RecordKind::Evaluated), [1, 2, 3]);
    assert_eq!(
        st.steps[&2].reason.as_deref(),
        Some("recovered from the run log")
    );
    let counts = common::eval_event_counts(&run);
    for step in [1, 2, 3] {
        for ds in ["valid", "ood"] {
            assert_eq!(counts[&step].get(ds), Some(&1), "step {step} {ds}");
        }
    }
    // Step 2 was evaluated once (by the aborted watcher), not again after the restart.
    let calls = eval_calls(&eval_log);
    for step in [1, 2, 3] {
        for ds in ["valid", "ood"] {
            assert_eq!(
                calls.get(&(step, ds.to_owned())),
                Some(&1),
                "calls {step} {ds}"
            );
        }
    }
}
