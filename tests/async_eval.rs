//! End to end for `examples/async_eval`: the burn quickstart trains to completion (checkpoints
//! in a temporary directory), then the example's watcher evaluates its checkpoints on the
//! validation set and the shifted OOD copy, stops by itself because training completed, and a
//! restarted watcher evaluates nothing again.

#[path = "../examples/async_eval/quickstart_eval.rs"]
#[allow(dead_code)]
mod quickstart_eval;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use exptrack::quickstart::{QuickstartArgs, run};
use exptrack::{Event, RunStatus};
use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack_core::store::RunReader;
use exptrack_eval::Outcome;

use quickstart_eval::{EVAL_RUN_ID, Ended, QuickstartTarget, watch};

/// A small quickstart (4 epochs × 47 steps, a checkpoint every 40 steps, all kept) whose runs
/// and checkpoints land under `root`.
fn config(root: &Path) -> String {
    format!(
        r#"
[experiment]
name = "quickstart-async-eval"

[tracking]
runs_dir = '{runs}'

[checkpointing]
dir = '{ckpts}'
async = true
fsync = false

[training]
num_epochs = 4
batch_size = 64
learning_rate = 0.005
optimizer = "adamw"
log_frequency = 20
checkpoint_save_frequency = 40
seed = 42
device = "cpu"
progress = false

[quickstart]
train_items = 3000
valid_items = 1000
hidden = 64
"#,
        runs = root.join("runs").display(),
        ckpts = root.join("runs/checkpoints").display(),
    )
}

const WATCH_POLL: Duration = Duration::from_millis(50);

#[test]
fn every_checkpoint_evaluated_once_and_watcher_stops_when_training_completes() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("quickstart.toml");
    std::fs::write(&cfg_path, config(tmp.path())).unwrap();

    // Training: the quickstart itself, to completion.
    let trained = run(QuickstartArgs {
        config: Some(cfg_path.clone()),
        quiet: true,
        ..QuickstartArgs::default()
    })
    .unwrap();
    assert!(!trained.already_completed && !trained.result.interrupted);
    let trained_secs = started.elapsed().as_secs_f64();

    // The example's derivation agrees with the trainer's.
    let target = QuickstartTarget::resolve(Some(&cfg_path), None).unwrap();
    assert_eq!(
        target.checkpoint_dir.join(&target.experiment_id),
        trained.checkpoint_dir
    );
    let committed: Vec<u64> = ModelCheckpointer::open_read_only(
        &target.experiment_id,
        CheckpointConfig {
            dir: target.checkpoint_dir.clone(),
            ..CheckpointConfig::default()
        },
    )
    .unwrap()
    .list()
    .iter()
    .map(|c| c.step)
    .collect();
    assert!(
        committed.len() >= 4,
        "expected several checkpoints, got {committed:?}"
    );

    // The watcher, as the example runs it.
    let tracker = target
        .eval_tracker()
        .unwrap()
        .handle_signals(false)
        .build()
        .unwrap();
    let eval_run_dir = tracker.run_dir().to_path_buf();
    assert_eq!(
        eval_run_dir,
        target
            .runs_dir
            .join(target.eval_experiment_id())
            .join(EVAL_RUN_ID)
    );
    assert_ne!(Some(&eval_run_dir), trained.run_dir.as_ref());
    let mut watcher = target.watcher(&tracker, WATCH_POLL).unwrap();
    let mut seen = Vec::new();
    let ended = watch(&mut watcher, WATCH_POLL, false, |e| seen.push(e.clone())).unwrap();
    assert_eq!(
        ended,
        Ended::TrainingCompleted,
        "stopped by itself: training completed"
    );
    assert!(watcher.training_completed());
    let evaluated: Vec<u64> = seen
        .iter()
        .filter(|e| matches!(e.outcome, Outcome::Evaluated { .. }))
        .map(|e| e.step)
        .collect();
    assert_eq!(evaluated, committed, "outcomes: {seen:?}");
    drop(watcher);
    assert!(tracker.finish(RunStatus::Completed).unwrap().is_complete());

    // A restarted watcher continues the same run and evaluates nothing again.
    let tracker = target
        .eval_tracker()
        .unwrap()
        .handle_signals(false)
        .build()
        .unwrap();
    assert_eq!(tracker.run_dir(), eval_run_dir);
    let mut watcher = target.watcher(&tracker, WATCH_POLL).unwrap();
    let mut again = Vec::new();
    let ended = watch(&mut watcher, WATCH_POLL, false, |e| again.push(e.clone())).unwrap();
    assert_eq!(ended, Ended::TrainingCompleted);
    assert!(again.is_empty(), "re-evaluated: {again:?}");
    assert!(watcher.recovered().is_empty());
    drop(watcher);
    tracker.finish(RunStatus::Completed).unwrap();

    // The eval run's log: exactly one eval event per committed checkpoint, all six metrics.
    let mut per_step: BTreeMap<u64, Vec<BTreeMap<String, f64>>> = BTreeMap::new();
    for (_, event) in RunReader::open(&eval_run_dir).unwrap().events().unwrap() {
        if let Event::Metrics { step, values, .. } = event
            && values.iter().any(|m| m.key == "eval/valid/accuracy")
        {
            per_step
                .entry(step)
                .or_default()
                .push(values.into_iter().map(|m| (m.key, m.value)).collect());
        }
    }
    assert_eq!(per_step.keys().copied().collect::<Vec<_>>(), committed);
    for (step, events) in &per_step {
        assert_eq!(events.len(), 1, "step {step} logged {} times", events.len());
        for set in ["valid", "ood"] {
            for metric in ["accuracy", "loss", "entropy"] {
                let key = format!("eval/{set}/{metric}");
                let v = events[0].get(&key).copied();
                assert!(v.is_some_and(f64::is_finite), "step {step}: {key} = {v:?}");
            }
        }
    }

    let last = &per_step[committed.last().unwrap()][0];
    let (valid_acc, ood_acc) = (last["eval/valid/accuracy"], last["eval/ood/accuracy"]);
    eprintln!(
        "checkpoints {committed:?}; last: valid acc {valid_acc:.4} loss {:.4} entropy {:.4}, \
         ood acc {ood_acc:.4} loss {:.4} entropy {:.4}; trained in {trained_secs:.1}s, \
         total {:.1}s",
        last["eval/valid/loss"],
        last["eval/valid/entropy"],
        last["eval/ood/loss"],
        last["eval/ood/entropy"],
        started.elapsed().as_secs_f64()
    );
    assert!(valid_acc >= 0.9, "valid accuracy {valid_acc}");
    assert!(
        ood_acc < valid_acc,
        "ood accuracy {ood_acc} not below valid {valid_acc}"
    );
    assert!(last["eval/ood/loss"] > last["eval/valid/loss"]);
    // The evaluator agrees with the trainer's own validation of the final weights.
    assert!(
        (valid_acc - trained.final_accuracy).abs() < 0.05,
        "watcher {valid_acc} vs trainer {}",
        trained.final_accuracy
    );
}

/// `async_eval --into-training-run` (issue 16 §3): the watcher's metrics land in the training
/// run: a second TensorBoard event file in its directory, its own log under `companions/`, and
/// `plot` / the companion listing of the training run show the evaluation series.
#[test]
fn into_training_run_writes_beside_the_training_run() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg_path = tmp.path().join("quickstart.toml");
    std::fs::write(&cfg_path, config(tmp.path())).unwrap();
    let trained = run(QuickstartArgs {
        config: Some(cfg_path.clone()),
        quiet: true,
        // TensorBoard comes from the config (`[tracking] use_tensorboard`, on by default).
        ..QuickstartArgs::default()
    })
    .unwrap();
    let train_dir = trained.run_dir.clone().unwrap();

    let target = QuickstartTarget::resolve(Some(&cfg_path), None).unwrap();
    let (builder, found) = target.companion_tracker().unwrap();
    assert_eq!(found, train_dir);
    let tracker = builder
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .unwrap();
    let eval_dir = tracker.run_dir().to_path_buf();
    let mut watcher = target.watcher(&tracker, WATCH_POLL).unwrap();
    let ended = watch(&mut watcher, WATCH_POLL, false, |_| {}).unwrap();
    assert_eq!(ended, Ended::TrainingCompleted);
    drop(watcher);
    let report = tracker.finish(RunStatus::Completed).unwrap();
    assert!(report.problem_lines().is_empty(), "{report}");

    // Its own log, inside the training run's directory; the training log is untouched.
    assert_eq!(
        eval_dir,
        train_dir
            .join("companions")
            .join(&target.experiment_id)
            .join(EVAL_RUN_ID)
    );
    let train_log = std::fs::read_to_string(train_dir.join("events.jsonl")).unwrap();
    assert!(!train_log.contains("eval/valid"));
    assert!(
        std::fs::read_to_string(eval_dir.join("events.jsonl"))
            .unwrap()
            .contains("eval/ood/accuracy")
    );
    // Two event files in the training run's TensorBoard directory, both read as that run.
    let tfevents = exptrack_tensorboard::event_files(&train_dir).unwrap();
    assert_eq!(tfevents.len(), 2, "{tfevents:?}");
    let bytes: Vec<Vec<u8>> = tfevents.iter().map(|f| std::fs::read(f).unwrap()).collect();
    let has = |b: &[u8], tag: &str| b.windows(tag.len()).any(|w| w == tag.as_bytes());
    let training_file = bytes.iter().position(|b| has(b, "train/loss")).unwrap();
    let eval_file = 1 - training_file;
    assert!(!has(&bytes[training_file], "eval/valid/accuracy"));
    for t in ["eval/valid/accuracy", "eval/ood/entropy"] {
        assert!(
            has(&bytes[eval_file], t),
            "{t} not in the evaluator's event file"
        );
    }
    // plot of the training run draws the evaluation curves with the training ones.
    assert_eq!(
        exptrack_plot::companion_run_dirs(&train_dir),
        vec![eval_dir]
    );
    let plots = exptrack_plot::plot_run(&train_dir, tmp.path().join("plots")).unwrap();
    let acc = plots.iter().find(|p| p.ends_with("accuracy.svg")).unwrap();
    let svg = std::fs::read_to_string(acc).unwrap();
    assert!(
        svg.contains("eval/valid/accuracy"),
        "the accuracy chart has no eval curve"
    );
}
