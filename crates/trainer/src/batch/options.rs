//! How a batch runs: [`BatchOptions`].

use super::*;

/// How a batch runs. Build with [`BatchOptions::new`] and the setters.
#[derive(Debug, Clone, Default)]
pub struct BatchOptions {
    pub(super) runs_dir: Option<PathBuf>,
    pub(super) category: Option<String>,
    pub(super) force: bool,
    pub(super) progress: bool,
}

impl BatchOptions {
    /// Defaults: paths from each recipe, every category, completed experiments skipped, progress
    /// lines on stderr.
    pub fn new() -> Self {
        BatchOptions {
            progress: true,
            ..BatchOptions::default()
        }
    }

    /// Overrides every recipe's `[tracking].runs_dir` (the run store) and puts checkpoints in
    /// `dir/checkpoints`.
    pub fn runs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.runs_dir = Some(dir.into());
        self
    }

    /// Only the recipes of this category (a sub-directory of the recipe directory; nested
    /// categories match by prefix: `vision` selects `vision/cnn/*.toml`).
    pub fn category(mut self, category: impl Into<String>) -> Self {
        self.category = Some(category.into());
        self
    }

    /// Retrain experiments that completed before (their checkpoints are archived, a new run starts).
    pub fn force(mut self, force: bool) -> Self {
        self.force = force;
        self
    }

    /// One progress line per recipe on stderr (default on; stdout stays free for the table or
    /// the JSON).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    pub(super) fn selects(&self, category: &str) -> bool {
        match &self.category {
            None => true,
            Some(c) => {
                let c = c.trim_matches('/');
                category == c || category.starts_with(&format!("{c}/"))
            }
        }
    }
}
