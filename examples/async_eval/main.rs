//! Asynchronous evaluation beside the burn quickstart: run the training in one terminal and
//! this in a second one (from the same directory, with the same config):
//!
//! ```text
//! cargo run --release --example quickstart -- [--config FILE] [--runs-dir DIR]
//! cargo run --release --example async_eval -- [--config FILE] [--runs-dir DIR] [--poll-secs 2] [--once]
//! ```
//!
//! It watches the quickstart's checkpoint directory (`[checkpointing].dir`, or
//! `<DIR>/checkpoints` with `--runs-dir DIR` as the quickstart does) for the quickstart's
//! experiment id, loads the `Mlp` of every newly committed checkpoint from its model record
//! (burn, CPU) and evaluates it on the validation set (the same seed and split as training) and
//! on an out-of-distribution copy with every feature shifted. It logs `eval/valid/{accuracy,loss,
//! entropy}` and `eval/ood/{accuracy,loss,entropy}` at the checkpoint's step to the run
//! `async-eval` of the same experiment name (experiment id `<id>-eval`, so a restarted training
//! never resumes into it), through every backend the config switches on, and prints
//! one line per checkpoint. It stops by itself once the training run is completed and every
//! checkpoint committed before that was evaluated.
//!
//! Each checkpoint is evaluated once, also across restarts (the watcher's state file and the
//! run's log); a checkpoint under evaluation holds a reader lease, so retention
//! (`max_checkpoints`) never deletes it mid-evaluation. Ctrl-C finishes the run as killed;
//! starting again continues where it stopped.
//!
//! Options: `--config FILE` (default: the quickstart's built-in config), `--runs-dir DIR`
//! (overrides `[tracking].runs_dir` and the checkpoint directory, like the quickstart's),
//! `--poll-secs N` (default 2), `--once` (one poll, then exit), `--into-training-run` (log the
//! evaluation metrics into the newest training run itself instead: the same MLflow run, a
//! second event file in its TensorBoard directory, the same W&B run as a second writer (offline:
//! upload it after the training's with the command in its `exptrack-companion.json`), its own
//! local log under `<training run>/companions/`; start the training first).

mod quickstart_eval;

use std::path::PathBuf;
use std::time::Duration;

use exptrack::RunStatus;
use exptrack_eval::{BoxError, Evaluated, Outcome};

use quickstart_eval::{Ended, QuickstartTarget, watch};

struct Args {
    config: Option<PathBuf>,
    runs_dir: Option<PathBuf>,
    poll: Duration,
    once: bool,
    into_training_run: bool,
}

const USAGE: &str = "usage: async_eval [--config FILE] [--runs-dir DIR] [--poll-secs N (default 2)] [--once] [--into-training-run]";

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        config: None,
        runs_dir: None,
        poll: Duration::from_secs(2),
        once: false,
        into_training_run: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{a} needs a value ({USAGE})"))
        };
        match a.as_str() {
            "--config" => args.config = Some(value()?.into()),
            "--runs-dir" => args.runs_dir = Some(value()?.into()),
            "--poll-secs" => {
                let v = value()?;
                args.poll = exptrack_eval::parse_interval_secs(&v)
                    .map_err(|e| format!("--poll-secs: {e}"))?;
            }
            "--once" => args.once = true,
            "--into-training-run" => args.into_training_run = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} ({USAGE})").into()),
        }
    }
    Ok(args)
}

fn print_step(e: &Evaluated) {
    let epoch = e.epoch.map_or_else(|| "-".to_owned(), |x| x.to_string());
    match &e.outcome {
        Outcome::Evaluated { metrics } => {
            let m = |k: &str| metrics.get(k).copied().unwrap_or(f64::NAN);
            println!(
                "step {:>6} (epoch {epoch:>2}): valid acc {:.4} loss {:.4} entropy {:.4} | \
                 ood acc {:.4} loss {:.4} entropy {:.4}",
                e.step,
                m("eval/valid/accuracy"),
                m("eval/valid/loss"),
                m("eval/valid/entropy"),
                m("eval/ood/accuracy"),
                m("eval/ood/loss"),
                m("eval/ood/entropy"),
            );
        }
        Outcome::Corrupt { reason } => {
            println!("step {:>6}: corrupt checkpoint skipped: {reason}", e.step)
        }
        Outcome::MissedByRetention => println!(
            "step {:>6}: pruned by retention before it could be evaluated (raise max_checkpoints)",
            e.step
        ),
        Outcome::Retrying { attempt, reason } => println!(
            "step {:>6}: attempt {attempt} failed, retrying on the next poll: {reason}",
            e.step
        ),
        Outcome::Failed { attempts, reason } => println!(
            "step {:>6}: skipped after {attempts} failed attempts: {reason}",
            e.step
        ),
        other => println!("step {:>6}: {other:?}", e.step),
    }
}

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    run().map_err(exptrack_core::error::Reported::boxed)
}

fn run() -> Result<(), BoxError> {
    let args = parse_args()?;
    let target = QuickstartTarget::resolve(args.config.as_deref(), args.runs_dir.as_deref())?;
    // Ctrl-C / SIGTERM: the tracker finishes the run as killed; the watcher's state file and the
    // run log make the next start continue without repeating or skipping a checkpoint.
    let tracker = if args.into_training_run {
        let (builder, train_dir) = target.companion_tracker()?;
        println!("logging into training run {}", train_dir.display());
        builder.build()?
    } else {
        target.eval_tracker()?.build()?
    };
    let mut watcher = target.watcher(&tracker, args.poll)?;
    println!(
        "watching {} (experiment {}, every {:?}); logging to {}",
        target.checkpoint_dir.join(&target.experiment_id).display(),
        target.experiment_id,
        args.poll,
        tracker.run_dir().display()
    );
    let ended = watch(&mut watcher, args.poll, args.once, print_step)?;
    drop(watcher);
    match ended {
        Ended::TrainingCompleted => println!("training completed and every checkpoint evaluated"),
        Ended::Once => println!("one poll done (--once)"),
    }
    // Completed in both cases: this invocation did all it was asked to. A later start continues
    // the same run (and marks it running again).
    let report = tracker.finish(RunStatus::Completed)?;
    for line in report.problem_lines() {
        eprintln!("warning: {line}");
    }
    Ok(())
}
