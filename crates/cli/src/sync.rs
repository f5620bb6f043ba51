//! `exptrack sync RUN --to mlflow=URI | wandb`.

use std::path::PathBuf;
use std::str::FromStr;

use clap::Args;
use exptrack_core::store::{RunReader, sync_run};
use exptrack_core::{Batch, EventKind, RunContext, RunStatus, Tracker, TrackerError};
use indicatif::ProgressBar;

use crate::Ctx;
use crate::error::{CliError, Result, from_core};
use crate::output;

#[derive(Debug, Args)]
pub(crate) struct SyncArgs {
    /// Run id, unique prefix, EXPERIMENT_ID/RUN_ID, or run directory.
    run: String,
    /// Backend: `mlflow=URI`, `mlflow` (URI from MLFLOW_TRACKING_URI) or `wandb` (offline
    /// unless an API key is configured; see WANDB_* variables). Repeat for several.
    #[arg(long = "to", required = true, value_name = "BACKEND")]
    to: Vec<Target>,
    /// MLflow experiment name (default: the run's experiment name).
    #[arg(long)]
    mlflow_experiment: Option<String>,
    /// W&B project (default: WANDB_PROJECT, else the experiment name).
    #[arg(long)]
    wandb_project: Option<String>,
    /// Directory for W&B's local files (default: WANDB_DIR, else the current directory).
    #[arg(long)]
    wandb_dir: Option<PathBuf>,
    /// Force W&B offline mode (write files for `wandb sync`, contact no server).
    #[arg(long)]
    wandb_offline: bool,
}

#[derive(Debug, Clone)]
enum Target {
    Mlflow(Option<String>),
    Wandb,
}

impl FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.split_once('=') {
            Some(("mlflow", uri)) if !uri.is_empty() => Ok(Target::Mlflow(Some(uri.to_owned()))),
            None if s == "mlflow" => Ok(Target::Mlflow(None)),
            None if s == "wandb" => Ok(Target::Wandb),
            _ => Err(format!(
                "unknown backend {s:?}: expected mlflow=URI, mlflow or wandb"
            )),
        }
    }
}

/// Delegates to a tracker and advances a progress bar by the events delivered.
struct Progress<'a> {
    inner: &'a mut dyn Tracker,
    pb: ProgressBar,
}

impl Tracker for Progress<'_> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn supports(&self, kind: EventKind) -> bool {
        self.inner.supports(kind)
    }
    fn open(&mut self, ctx: &RunContext) -> std::result::Result<(), TrackerError> {
        self.inner.open(ctx)
    }
    fn write(&mut self, batch: &Batch<'_>) -> std::result::Result<(), TrackerError> {
        self.inner.write(batch)?;
        self.pb.inc(batch.events.len() as u64);
        Ok(())
    }
    fn flush(&mut self) -> std::result::Result<(), TrackerError> {
        self.inner.flush()
    }
    fn close(&mut self, status: RunStatus) -> std::result::Result<(), TrackerError> {
        self.inner.close(status)
    }
    fn resume_point(&mut self) -> Option<u64> {
        self.inner.resume_point()
    }
}

pub(crate) fn sync(ctx: &Ctx, a: &SyncArgs) -> Result<()> {
    let entry = ctx.find_run(&a.run)?;
    // A run another process has open is still being delivered by its own tracker: syncing it now
    // would race that tracker (sync_run refuses too; this gives the clearer message).
    if exptrack_core::store::run_in_use(&entry.dir) {
        return Err(CliError::usage(format!(
            "run {} is open in another process (it holds {}); nothing was synced",
            entry.metadata.run_id,
            entry.dir.join(".lock").display()
        ))
        .hint(
            "its tracker is still delivering; run `exptrack sync` after that process has finished \
             the run (a crashed process releases the lock)",
        ));
    }
    let reader = RunReader::open(&entry.dir).map_err(|e| from_core(e, "opening run"))?;
    let last = reader
        .last_seq()
        .map_err(|e| from_core(e, "reading event log"))?;
    let cursors = reader
        .cursors()
        .map_err(|e| from_core(e, "reading cursors"))?;
    for target in &a.to {
        let mut tracker: Box<dyn Tracker> = match target {
            Target::Mlflow(uri) => {
                let mut b = exptrack_mlflow::MlflowTracker::builder().from_env();
                if let Some(u) = uri {
                    b = b.tracking_uri(u.clone());
                }
                if let Some(n) = &a.mlflow_experiment {
                    b = b.experiment_name(n.clone());
                }
                Box::new(b.build().map_err(|e| {
                    CliError::usage(format!("MLflow settings: {e}"))
                        .hint("give --to mlflow=http://HOST:PORT or set MLFLOW_TRACKING_URI")
                })?)
            }
            Target::Wandb => {
                let mut b = exptrack_wandb::WandbTracker::builder();
                if a.wandb_offline {
                    b = b.mode(exptrack_wandb::Mode::Offline);
                }
                if let Some(p) = &a.wandb_project {
                    b = b.project(p.clone());
                }
                if let Some(d) = &a.wandb_dir {
                    b = b.dir(d.clone());
                }
                Box::new(
                    b.from_env()
                        .build()
                        .map_err(|e| CliError::usage(format!("W&B settings: {e}")))?,
                )
            }
        };
        let name = tracker.name().to_owned();
        let from = cursors.get(&name).copied().unwrap_or(0);
        let pending = last.saturating_sub(from);
        let pb = output::bar(
            ctx.progress,
            pending,
            &format!("sync {} -> {name}", entry.metadata.run_id),
        );
        let mut wrapped = Progress {
            inner: tracker.as_mut(),
            pb: pb.clone(),
        };
        let report = sync_run(&entry.dir, &mut wrapped);
        pb.finish_and_clear();
        let report = report.map_err(|e| match e {
            exptrack_core::Error::Config(m) => CliError::usage(format!(
                "sync of run {} to {name} refused: {m}",
                entry.metadata.run_id
            )),
            e => CliError::backend(format!(
                "sync of run {} to {name} failed: {}",
                entry.metadata.run_id,
                exptrack_core::error::report(&e)
            ))
            .hint(
                "events delivered so far are recorded in cursors.json; run the same command again to resume",
            ),
        })?;
        println!(
            "{name}: delivered {} event(s) (seq {}..{}){}",
            report.delivered,
            report.from_seq,
            report.to_seq,
            if report.closed {
                format!(", run closed as {}", entry.metadata.status)
            } else {
                ", run still open (not finished locally)".to_owned()
            }
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert!(matches!(
            "mlflow=http://127.0.0.1:5000".parse::<Target>(),
            Ok(Target::Mlflow(Some(u))) if u == "http://127.0.0.1:5000"
        ));
        assert!(matches!(
            "mlflow".parse::<Target>(),
            Ok(Target::Mlflow(None))
        ));
        assert!(matches!("wandb".parse::<Target>(), Ok(Target::Wandb)));
        assert!("tensorboard".parse::<Target>().is_err());
        assert!("mlflow=".parse::<Target>().is_err());
    }
}
