//! exptrack-tensorboard: work in progress.
