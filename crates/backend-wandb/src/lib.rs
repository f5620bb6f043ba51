//! exptrack-wandb: work in progress.
