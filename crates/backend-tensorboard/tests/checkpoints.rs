//! Committed checkpoints reach TensorBoard as text at their step (tag `checkpoints`): each
//! commit's location, files with sizes and hashes, metrics and the steps retention deleted. Read
//! back with tensorboard 2.21's EventAccumulator (tests/py/read_back.py).

mod common;

use exptrack_core::{Event, EventKind, ParamValue, RunStatus, Tracker, conformance};
use exptrack_tensorboard::TensorBoardTracker;

#[test]
fn checkpoint_reports_are_text_at_their_step() {
    let Some(py) = common::peer_python(&["tensorboard", "tbparse"]) else {
        return;
    };
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "checkpoints");
    let mut events = vec![Event::Params {
        params: vec![("lr".into(), ParamValue::Float(0.01))],
    }];
    events.extend(conformance::checkpoint_run());
    let mut tb = TensorBoardTracker::new(Some(root.path().join("tb")));
    assert!(tb.supports(EventKind::Checkpoint));
    tb.open(&ctx).unwrap();
    let run_dir = tb.log_dir().unwrap().to_path_buf();
    common::write_all(&mut tb, &events, 3, 0);
    tb.close(RunStatus::Completed).unwrap();

    let out = common::run_python_json(&py, "read_back.py", &[run_dir.to_str().unwrap()]);
    let text = out["ea_text"]["checkpoints/text_summary"]
        .as_array()
        .unwrap_or_else(|| panic!("no checkpoints text: {out}"));
    let steps: Vec<u64> = text.iter().map(|t| t[0].as_u64().unwrap()).collect();
    assert_eq!(steps, [2, 4, 6], "one entry per commit, at its step");
    let md = |i: usize| text[i][1][0].as_str().unwrap().to_owned();
    let four = md(1);
    assert!(
        four.starts_with("**ckpt-000000000004** (step 4, epoch 2, best): `/ckpt/exp-1/ckpt-000000000004`, 4007 bytes"),
        "{four}"
    );
    assert!(
        four.contains(&format!("| model.bpk | 4000 | `blake3:{:064x}` |", 4)),
        "{four}"
    );
    assert!(four.contains("| optim.bpk | 7 |"), "{four}");
    assert!(four.contains("metrics: val_loss = 0.25"), "{four}");
    assert!(!four.contains("pruned"), "{four}");
    let six = md(2);
    assert!(
        six.contains("pruned (deleted by retention): ckpt-000000000002"),
        "{six}"
    );
    // The metrics are still scalars beside the text.
    assert_eq!(out["ea_scalars"]["train/loss"].as_array().unwrap().len(), 7);
}
