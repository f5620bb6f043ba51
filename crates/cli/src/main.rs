//! `exptrack`: inspect, compare and plot runs of the local run store, manage checkpoints, replay
//! runs to MLflow or W&B, and gate/promote models in CI. See docs/cli.md.

mod batch;
mod ckpt;
mod error;
mod eval;
mod gate;
mod output;
mod runs;
mod sync;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::error::{CliError, Exit};

const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  a check failed (corrupt checkpoint, gate metric outside its threshold)
  2  usage error, or run / directory / metric not found
  3  backend or I/O error (server unreachable, unreadable files)";

/// Experiment tracking from the command line.
#[derive(Debug, Parser)]
#[command(name = "exptrack", version, about, after_help = EXIT_CODES, max_term_width = 100)]
struct Cli {
    /// Root of the local run store.
    #[arg(
        long = "dir",
        global = true,
        env = "EXPTRACK_RUNS_DIR",
        default_value = "runs",
        value_name = "DIR"
    )]
    runs_dir: PathBuf,
    /// Never show progress bars.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// List, show and compare runs.
    #[command(subcommand, after_help = EXIT_CODES)]
    Runs(RunsCmd),
    /// Plot loss, accuracy and learning-rate curves (and the confusion matrix) of a run.
    #[command(after_help = EXIT_CODES)]
    Plot(PlotArgs),
    /// Inspect, verify, prune and export checkpoints.
    #[command(subcommand, after_help = EXIT_CODES)]
    Ckpt(CkptCmd),
    /// Replay a local run (or what a backend has not received yet) to MLflow or W&B.
    #[command(after_help = EXIT_CODES)]
    Sync(sync::SyncArgs),
    /// Check a run's metric against thresholds; on pass optionally promote its model in MLflow.
    #[command(after_help = EXIT_CODES)]
    Gate(gate::GateArgs),
    /// Evaluate the model an MLflow run logged on a test set; log the report to that run.
    #[command(after_help = EXIT_CODES)]
    Eval(eval::EvalArgs),
    /// Recipe batches (experiment configs grouped by category): their state, without training.
    #[command(subcommand, after_help = EXIT_CODES)]
    Batch(BatchCmd),
}

#[derive(Debug, Subcommand)]
enum BatchCmd {
    /// List each recipe of DIR as completed / interrupted / not started.
    Status(batch::StatusArgs),
}

#[derive(Debug, Subcommand)]
enum RunsCmd {
    /// List runs, oldest first.
    List(runs::ListArgs),
    /// Show one run: metadata, config, metric summary, results, backend delivery.
    Show(runs::ShowArgs),
    /// Compare runs: config differences, final and best metrics, duration.
    Compare(runs::CompareArgs),
}

#[derive(Debug, Args)]
struct PlotArgs {
    /// Run id, unique prefix, EXPERIMENT_ID/RUN_ID, or run directory.
    run: String,
    /// Output directory (default: <run dir>/plots).
    #[arg(long, short)]
    out: Option<PathBuf>,
    /// Image width in pixels.
    #[arg(long, default_value_t = 960)]
    width: u32,
    /// Image height in pixels.
    #[arg(long, default_value_t = 600)]
    height: u32,
    /// Write PNG only.
    #[arg(long, conflicts_with = "svg_only")]
    png_only: bool,
    /// Write SVG only.
    #[arg(long)]
    svg_only: bool,
}

#[derive(Debug, Subcommand)]
enum CkptCmd {
    /// List the checkpoints of an experiment directory (or of every experiment under a root).
    List(ckpt::DirArgs),
    /// Re-hash every file of every checkpoint; exit 1 on any corruption.
    Verify(ckpt::DirArgs),
    /// Apply the retention policy (with --dry-run: only print what would be deleted).
    Prune(ckpt::PruneArgs),
    /// Copy the best checkpoint's files (verified, decompressed) to OUT.
    ExportBest(ckpt::ExportArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing();
    let result = run(cli);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(e.exit.code())
        }
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("EXPTRACK_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    use std::io::IsTerminal as _;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal, not in CI logs or captured output.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

fn run(cli: Cli) -> error::Result<()> {
    let ctx = Ctx {
        runs_dir: cli.runs_dir,
        progress: !cli.quiet,
    };
    match cli.command {
        Command::Runs(RunsCmd::List(a)) => runs::list(&ctx, &a),
        Command::Runs(RunsCmd::Show(a)) => runs::show(&ctx, &a),
        Command::Runs(RunsCmd::Compare(a)) => runs::compare(&ctx, &a),
        Command::Plot(a) => plot(&ctx, &a),
        Command::Ckpt(CkptCmd::List(a)) => ckpt::list(&a),
        Command::Ckpt(CkptCmd::Verify(a)) => ckpt::verify(&ctx, &a),
        Command::Ckpt(CkptCmd::Prune(a)) => ckpt::prune(&a),
        Command::Ckpt(CkptCmd::ExportBest(a)) => ckpt::export_best(&a),
        Command::Sync(a) => sync::sync(&ctx, &a),
        Command::Gate(a) => gate::gate(&ctx, &a),
        Command::Eval(a) => eval::eval(&ctx, &a),
        Command::Batch(BatchCmd::Status(a)) => batch::status(&a),
    }
}

/// Settings shared by every command.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// Root of the local run store.
    pub(crate) runs_dir: PathBuf,
    /// Whether progress bars may be shown (they are only drawn on a terminal).
    pub(crate) progress: bool,
}

impl Ctx {
    /// Resolves RUN (id, prefix, `experiment/run`, or directory).
    pub(crate) fn find_run(&self, id: &str) -> error::Result<exptrack_core::store::RunEntry> {
        exptrack_core::store::find_run(&self.runs_dir, id).map_err(|e| {
            let e = error::from_core(e, "finding run");
            if e.exit == Exit::Usage && e.hint.is_some() && !self.runs_dir.is_dir() {
                e.hint(format!(
                    "the runs root {} does not exist; pass --dir or set EXPTRACK_RUNS_DIR",
                    self.runs_dir.display()
                ))
            } else {
                e
            }
        })
    }
}

fn plot(ctx: &Ctx, a: &PlotArgs) -> error::Result<()> {
    let entry = ctx.find_run(&a.run)?;
    let out = a.out.clone().unwrap_or_else(|| entry.dir.join("plots"));
    let opts = exptrack_plot::PlotOptions::default()
        .size(a.width, a.height)
        .formats(!a.svg_only, !a.png_only);
    let spinner = output::spinner(ctx.progress, "plotting");
    let written = exptrack_plot::plot_run_with(&entry.dir, &out, &opts);
    spinner.finish_and_clear();
    let written = written.map_err(|e| match e {
        exptrack_plot::Error::Options(m) => CliError::usage(m),
        other => CliError::backend(format!("plotting run {}: {other}", entry.metadata.run_id)),
    })?;
    if written.is_empty() {
        return Err(CliError::usage(format!(
            "run {} has nothing to plot (no loss, accuracy or lr metrics, no confusion matrix)",
            entry.metadata.run_id
        ))
        .hint("metric keys are grouped by their last segment: train/loss, valid/accuracy, train/lr, ..."));
    }
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
