//! Recipe batches: a directory of experiment configs ("recipes", TOML files grouped in
//! sub-directories by category) trained as one study, with completion detection.
//!
//! The caller supplies the training function, so a batch works for any model:
//!
//! ```no_run
//! use exptrack_trainer::batch::{self, BatchOptions, RecipeOutcome};
//!
//! let options = BatchOptions::new().category("baseline");
//! let report = batch::run_all("examples/recipes", &options, |recipe| {
//!     // Train `recipe.config()` here: log through `recipe.tracker_builder(..)`, checkpoint
//!     // through `recipe.checkpointer()`, and say how it ended.
//!     let tracker = recipe.tracker_builder(recipe.config().clone()).build()?;
//!     tracker.log_metrics(1, &[("valid/accuracy", 0.9)])?;
//!     let run_dir = tracker.run_dir().to_path_buf();
//!     tracker.finish(exptrack_core::RunStatus::Completed)?;
//!     Ok::<_, exptrack_core::Error>(RecipeOutcome::completed(run_dir))
//! })?;
//! print!("{}", report.table(&[]));
//! # Ok::<(), exptrack_trainer::batch::BatchError>(())
//! ```
//!
//! For each recipe, in path order, [`run_all`]:
//! - **skips** an experiment that completed before (the same config hash gives the same
//!   experiment id, and its checkpoint directory holds the completion marker, as for the
//!   quickstart), showing its earlier results, unless [`BatchOptions::force`];
//! - otherwise calls the training function, which **resumes** an interrupted experiment (the
//!   tracker reopens the unfinished run, the trainer loads the latest checkpoint);
//! - reports a **failure** (an error, a panic, an unreadable recipe) in that recipe's row and goes
//!   on with the next recipe.
//!
//! The [`BatchReport`] holds one [`RecipeRow`] per recipe: its status, and the best and final
//! value of each metric of the experiment's run read back from the local run store (the same
//! figures as `exptrack runs compare`), plus the values set with `set_result`. It renders as a
//! comparison [`table`](BatchReport::table) or as JSON ([`to_json`](BatchReport::to_json)).
//! [`status`] tells each recipe's [`RecipeState`] (completed / interrupted / not started) without
//! training; `exptrack batch status DIR` does the same from the command line.
//!
//! Paths are resolved as the quickstart does: the run store is `[tracking].runs_dir` and the
//! checkpoints `[checkpointing].dir` (relative to the working directory), unless
//! [`BatchOptions::runs_dir`] overrides both (the store at `DIR`, checkpoints in
//! `DIR/checkpoints`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
use exptrack_core::store::{self, MetricSummary, RunReader};
use exptrack_core::{ExperimentConfig, ExperimentTrackerBuilder, Resume};
use serde::Serialize;

mod error;
mod options;
mod recipe;
mod report;
mod run;
mod state;
#[cfg(test)]
mod tests;

pub use self::error::*;
pub use self::options::*;
pub use self::recipe::*;
pub use self::report::*;
pub use self::run::*;
pub use self::state::*;
