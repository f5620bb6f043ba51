//! Errors that stop a whole batch.

use super::*;

/// Errors that stop a whole batch (a failure inside one recipe is reported in its row instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BatchError {
    /// The recipe directory (or one below it) could not be read.
    #[error("reading recipe directory {}: {source}", path.display())]
    Io {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// No recipe matched (an empty directory, or a category filter that names no category).
    #[error("no recipes under {}{}", dir.display(), filter_note(filter.as_deref(), categories))]
    NoRecipes {
        /// The recipe directory.
        dir: PathBuf,
        /// The category filter, if any.
        filter: Option<String>,
        /// The categories that exist.
        categories: Vec<String>,
    },
}

pub(super) fn filter_note(filter: Option<&str>, categories: &[String]) -> String {
    match filter {
        None => String::new(),
        Some(c) if categories.is_empty() => format!(" in category {c:?} (there are no categories)"),
        Some(c) => format!(" in category {c:?} (categories: {})", categories.join(", ")),
    }
}

/// `Result` with [`BatchError`].
pub type Result<T, E = BatchError> = std::result::Result<T, E>;
