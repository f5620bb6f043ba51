//! exptrack-trainer: work in progress.
