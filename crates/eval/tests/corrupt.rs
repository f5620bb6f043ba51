//! Corrupt and uncommitted checkpoints are skipped with a warning and recorded; the watcher keeps
//! going and never retries them.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use exptrack_checkpoint::LoadedCheckpoint;
use exptrack_core::RunStatus;
use exptrack_eval::{BoxError, EvalWatcher, Outcome, RecordKind};

/// Captures tracing output.
#[derive(Clone, Default)]
struct Buf(Arc<Mutex<Vec<u8>>>);

impl Write for Buf {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("buf").extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn flip_byte(path: &std::path::Path, at: usize) {
    let mut bytes = std::fs::read(path).expect("read");
    bytes[at] ^= 0x01;
    std::fs::write(path, bytes).expect("write");
}

#[test]
fn corrupt_checkpoints_are_skipped_and_recorded_uncommitted_ignored() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ckpt_dir = tmp.path().join("checkpoints");
    let exp = "corrupt";
    let exp_dir = ckpt_dir.join(exp);
    let mut trainer = common::trainer(&ckpt_dir, exp, None);
    for step in 1..=4 {
        trainer.save(common::checkpoint(step)).expect("save");
    }
    // Step 2: a flipped byte in a committed file. Step 3: checkpoint.json truncated.
    flip_byte(&exp_dir.join("ckpt-000000000002").join("model.bin"), 100);
    let json3 = exp_dir.join("ckpt-000000000003").join("checkpoint.json");
    let len = std::fs::metadata(&json3).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&json3)
        .expect("open")
        .set_len(len / 2)
        .expect("truncate");
    // An uncommitted save in progress (the checkpointer's temporary sibling directory).
    let tmp_save = exp_dir.join(".tmp-ckpt-000000000009-999999-0");
    std::fs::create_dir_all(&tmp_save).expect("tmp save");
    std::fs::write(tmp_save.join("model.bin"), b"half").expect("write");

    let buf = Buf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer({
            let buf = buf.clone();
            move || buf.clone()
        })
        .with_ansi(false)
        .finish();
    let runs = tmp.path().join("runs");
    let tracker = common::eval_tracker(&runs, "eval");
    let calls = Arc::new(Mutex::new(Vec::new()));
    let (first, second) = tracing::subscriber::with_default(subscriber, || {
        let calls = Arc::clone(&calls);
        let mut watcher = EvalWatcher::builder(&ckpt_dir, exp)
            .poll_interval(Duration::from_millis(10))
            .dataset("valid", move |c: &LoadedCheckpoint| {
                calls.lock().expect("calls").push(c.step());
                common::fake_eval(c, 0.0).map_err(BoxError::from)
            })
            .tracker(&tracker)
            .build()
            .expect("watcher");
        let first = watcher.poll_once().expect("poll 1");
        let second = watcher.poll_once().expect("poll 2");
        (first, second)
    });

    let outcomes: Vec<(u64, &Outcome)> = first.iter().map(|e| (e.step, &e.outcome)).collect();
    assert_eq!(outcomes.len(), 4, "{outcomes:?}");
    assert!(matches!(outcomes[0], (1, Outcome::Evaluated { .. })));
    assert!(
        matches!(outcomes[1], (2, Outcome::Corrupt { reason }) if reason.contains("blake3") && reason.contains("model.bin")),
        "{:?}",
        outcomes[1]
    );
    assert!(
        matches!(outcomes[2], (3, Outcome::Corrupt { reason }) if reason.contains("checkpoint.json")),
        "{:?}",
        outcomes[2]
    );
    assert!(matches!(outcomes[3], (4, Outcome::Evaluated { .. })));
    assert!(second.is_empty(), "nothing is retried: {second:?}");
    assert_eq!(
        *calls.lock().expect("calls"),
        [1, 4],
        "evaluator never saw 2, 3, 9"
    );

    let logs = String::from_utf8(buf.0.lock().expect("buf").clone()).expect("utf8");
    let warnings: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("corrupt checkpoint skipped"))
        .collect();
    assert_eq!(
        warnings.len(),
        2,
        "one warning per corrupt checkpoint:\n{logs}"
    );
    assert!(warnings[0].contains("step=2"), "{}", warnings[0]);

    let state_path = exp_dir.join(exptrack_eval::STATE_FILE_NAME);
    let state = exptrack_eval::EvalState::load(&state_path)
        .expect("state")
        .expect("exists");
    assert_eq!(state.steps_with(RecordKind::Corrupt), [2, 3]);
    assert_eq!(state.steps_with(RecordKind::Evaluated), [1, 4]);
    assert!(
        state.steps[&2]
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("blake3")),
        "the warning is recorded"
    );
    assert!(!state.steps.contains_key(&9));

    tracker.flush().expect("flush");
    let counts = common::eval_event_counts(tracker.run_dir());
    assert_eq!(counts.keys().copied().collect::<Vec<_>>(), [1, 4]);
    tracker.finish(RunStatus::Completed).expect("finish");
}
