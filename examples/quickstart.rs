//! Quickstart: trains a burn MLP classifier on a generated dataset (no download, CPU) with
//! tracking to a local run directory (local store + TensorBoard files) and crash-safe
//! checkpoints, then prints where to look.
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --config my.toml --force
//! ```
//!
//! Rerunning after an interruption (Ctrl-C, a crash) resumes from the latest checkpoint; rerunning
//! a completed experiment prints "already completed" with the earlier results unless `--force`.
//!
//! Options:
//! - `--config FILE`: an experiment config (TOML); the built-in default is printed by
//!   `--print-config`.
//! - `--force`: retrain a completed experiment.
//! - `--runs DIR` (or `--runs-dir DIR`): root of the local store and checkpoints (default `runs`;
//!   checkpoints in object storage stay where the config puts them).
//! - `--stop-after-step N`: stop after the checkpoint at step N, as if interrupted.
//! - `--mlflow URI`: also log to an MLflow server (build with `--features mlflow`).
//! - `--wandb offline|online`: also log to W&B (build with `--features wandb`).
//!
//! Checkpoints in S3 (or an S3-compatible server): build with `--features s3` and put
//! `[checkpointing] dir = "s3://bucket/prefix"` in the config; credentials and endpoint come from
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT_URL` (and
//! `AWS_ALLOW_HTTP=true` for a local http endpoint). Interrupt and rerun: it resumes from the
//! newest checkpoint in the bucket.

use exptrack::error::Reported;
use exptrack::quickstart::{self, QuickstartArgs};

const USAGE: &str = "usage: quickstart [--config FILE] [--force] [--runs DIR] [--stop-after-step N] \
                     [--mlflow URI] [--wandb offline|online] [--quiet] [--print-config]";

fn parse_args() -> Result<QuickstartArgs, String> {
    let mut args = QuickstartArgs::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--force" => args.force = true,
            "--quiet" => args.quiet = true,
            "--runs" | "--runs-dir" => {
                args.runs_dir = Some(it.next().ok_or("--runs needs a directory")?.into())
            }
            "--stop-after-step" => {
                let n = it.next().ok_or("--stop-after-step needs a step")?;
                args.stop_after_step =
                    Some(n.parse().map_err(|e| format!("--stop-after-step: {e}"))?);
            }
            "--mlflow" => {
                let uri = it.next().ok_or("--mlflow needs a tracking URI")?;
                // `exptrack sync` reads MLFLOW_TRACKING_URI; name the URI it came from.
                args.sync_targets
                    .push(("mlflow".to_owned(), format!("mlflow={uri}")));
                args.mlflow = Some(uri);
            }
            "--wandb" => {
                let mode = it.next().ok_or("--wandb needs offline or online")?;
                if mode != "offline" && mode != "online" {
                    return Err(format!("--wandb {mode:?}: expected offline or online"));
                }
                args.wandb = Some(mode);
            }
            "--print-config" => {
                print!("{}", quickstart::DEFAULT_CONFIG);
                std::process::exit(0);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

/// Errors print as `Error: <message>: <cause>` (their `Display` and source chain), never as a
/// `Debug` dump.
fn main() -> Result<(), Reported> {
    let args = parse_args()?;
    let outcome = quickstart::run(args.clone())?;
    if outcome.already_completed {
        return Ok(());
    }
    let tensorboard = outcome.config.tracking.use_tensorboard;
    println!();
    if outcome.result.interrupted {
        println!(
            "stopped after step {} as asked; rerun the same command to resume",
            outcome.result.steps
        );
    } else {
        println!(
            "final validation accuracy: {:.2}% in {:.1} s",
            outcome.final_accuracy * 100.0,
            outcome.elapsed.as_secs_f64()
        );
    }
    if let Some(dir) = &outcome.run_dir {
        println!("run directory:  {}", dir.display());
        println!(
            "  events.jsonl, summary.json, results.json{}",
            if tensorboard {
                ", TensorBoard event files"
            } else {
                ""
            }
        );
        println!("  {}", quickstart::show_command(dir));
    }
    println!("checkpoints:    {}", outcome.checkpoint_dir.display());
    if tensorboard {
        println!(
            "TensorBoard:    tensorboard --logdir {}",
            outcome.runs_root.display()
        );
    }
    let report = outcome.finish.as_ref();
    if let Some(uri) = &args.mlflow {
        match report.and_then(|r| r.tracker("mlflow")) {
            Some(b) if b.complete => println!(
                "MLflow:         {uri} (experiment {:?})",
                outcome.config.experiment.name
            ),
            Some(b) if b.delivered_seq == 0 => println!(
                "MLflow:         nothing of this run reached {uri} (see the warning above)"
            ),
            Some(b) => println!(
                "MLflow:         {uri} has {} of {} events of this run (see the warning above)",
                b.delivered_seq, b.last_seq
            ),
            None => {}
        }
    }
    if args.wandb.is_some() {
        let wandb = report.and_then(|r| r.tracker("wandb"));
        match (wandb, args.wandb.as_deref(), &outcome.run_dir) {
            (Some(b), Some("offline"), Some(dir)) if b.complete => print_wandb_sync(dir),
            (Some(b), _, _) if !b.complete => println!(
                "W&B:            {} of {} events of this run were written (see the warning above)",
                b.delivered_seq, b.last_seq
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Prints the `wandb sync` command for the offline W&B run of this run.
fn print_wandb_sync(run_dir: &std::path::Path) {
    #[cfg(feature = "wandb")]
    {
        let run_id = run_dir
            .file_name()
            .map(|n| exptrack::wandb::sanitize_run_id(&n.to_string_lossy()))
            .unwrap_or_default();
        let root = std::env::var_os("WANDB_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from("."))
            .join("wandb");
        let found = std::fs::read_dir(&root).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("offline-run-") && n.ends_with(&format!("-{run_id}"))
                })
            })
        });
        match found {
            Some(dir) => println!("W&B (offline):  wandb sync {}", dir.display()),
            None => println!("W&B (offline):  run directory under {}", root.display()),
        }
    }
    #[cfg(not(feature = "wandb"))]
    let _ = run_dir;
}
