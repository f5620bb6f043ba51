//! exptrack-http: work in progress.
