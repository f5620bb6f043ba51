//! The quickstart through the trainer crate alone (local run store; the workspace's root
//! `examples/quickstart.rs` adds TensorBoard).
//!
//! ```text
//! cargo run --release -p exptrack-trainer --example trainer_quickstart -- [--config FILE] [--force] [--runs-dir DIR] [--stop-after-step N]
//! ```

use std::path::PathBuf;

use exptrack_trainer::quickstart::{QuickstartArgs, run};

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    let mut args = QuickstartArgs::default();
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => {
                args.config = Some(PathBuf::from(it.next().ok_or("--config needs a file")?))
            }
            "--runs-dir" => {
                args.runs_dir = Some(PathBuf::from(it.next().ok_or("--runs-dir needs a dir")?))
            }
            "--stop-after-step" => {
                args.stop_after_step = Some(it.next().ok_or("--stop-after-step needs N")?.parse()?)
            }
            "--force" => args.force = true,
            "--quiet" => args.quiet = true,
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    let outcome = run(args)?;
    if !outcome.already_completed {
        println!(
            "final validation accuracy {:.4} in {:.1}s",
            outcome.final_accuracy,
            outcome.elapsed.as_secs_f64()
        );
    }
    Ok(())
}
