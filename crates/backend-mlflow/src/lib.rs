//! exptrack-mlflow: work in progress.
