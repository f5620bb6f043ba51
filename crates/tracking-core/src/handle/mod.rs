//! The user's side: [`ExperimentTrackerBuilder`] opens a run, [`ExperimentTracker`] logs to it,
//! and the signal handler finishes open runs on Ctrl-C / SIGTERM.

mod builder;
mod experiment;
mod signals;

pub use builder::{ExperimentTrackerBuilder, Resume};
pub use experiment::ExperimentTracker;
pub(crate) use experiment::Sampler;
