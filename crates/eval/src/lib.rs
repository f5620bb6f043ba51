//! exptrack-eval: work in progress.
