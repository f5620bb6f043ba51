//! exptrack-checkpoint: work in progress.
