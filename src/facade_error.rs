//! The facade's error: [`FacadeError`], and [`Result`] with it.

/// `Result` with the facade's [`FacadeError`]: what every fallible `exptrack::` function returns,
/// and what `main` can return (`fn main() -> exptrack::Result<()>`).
pub type Result<T, E = FacadeError> = std::result::Result<T, E>;

/// Errors of the facade: those of the crates below it, plus a backend that is enabled in the
/// config but not compiled in, or that failed to configure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FacadeError {
    /// From the tracking core.
    #[error(transparent)]
    Core(#[from] exptrack_core::Error),
    /// From the checkpointer (feature `checkpoint`).
    #[cfg(feature = "checkpoint")]
    #[error(transparent)]
    Checkpoint(#[from] exptrack_checkpoint::Error),
    /// From the training manager (feature `trainer`).
    #[cfg(feature = "trainer")]
    #[error(transparent)]
    Trainer(#[from] exptrack_trainer::Error),
    /// `[tracking].use_X = true` but the cargo feature is off.
    #[error(
        "[tracking].{key} = true, but exptrack was built without the `{feature}` feature \
         (enable it in Cargo.toml: exptrack = {{ features = [\"{feature}\"] }})"
    )]
    NotCompiled {
        /// The config key.
        key: &'static str,
        /// The cargo feature.
        feature: &'static str,
    },
    /// `[checkpointing].dir` names an object store (`s3://`, `gs://`, `az://`) whose cargo feature
    /// is off.
    #[error(
        "[checkpointing].dir is a {scheme}:// URL, but exptrack was built without the `{feature}` \
         feature (enable it in Cargo.toml: exptrack = {{ features = [\"{feature}\"] }}; \
         examples: cargo run --example quickstart --features {feature})"
    )]
    StoreNotCompiled {
        /// The URL scheme (`s3`, `gs`, ...).
        scheme: String,
        /// The cargo feature of the facade that enables it.
        feature: &'static str,
    },
    /// A backend could not be configured.
    #[error("{backend}: {message}")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// What is wrong.
        message: String,
        /// The backend's own error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl FacadeError {
    /// A backend's configuration error, keeping it as the source.
    #[cfg_attr(not(any(feature = "mlflow", feature = "wandb")), allow(dead_code))]
    pub(crate) fn backend(
        backend: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        FacadeError::Backend {
            backend,
            message: source.to_string(),
            source: Box::new(source),
        }
    }
}
