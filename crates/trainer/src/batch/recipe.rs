//! Recipe files and their discovery under a directory.

use super::*;

/// One recipe file.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub(super) path: PathBuf,
    pub(super) name: String,
    pub(super) category: String,
    pub(super) config: std::result::Result<ExperimentConfig, String>,
}

impl Recipe {
    /// Reads and parses one recipe file. `name` is its path relative to the recipe directory
    /// (`baseline/true_labels.toml`); the category is its directory part (`baseline`, or `""`
    /// for a file directly in the recipe directory). A file that does not parse is still a recipe;
    /// its [`config_error`](Self::config_error) says why, and a batch reports it as failed.
    pub fn load(path: impl Into<PathBuf>, name: impl Into<String>) -> Self {
        let path = path.into();
        let name = name.into();
        let category = category_of(&name);
        let config = ExperimentConfig::from_file(&path).map_err(|e| e.to_string());
        Recipe {
            path,
            name,
            category,
            config,
        }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path relative to the recipe directory, with `/` separators.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The category (the directory part of [`name`](Self::name)).
    pub fn category(&self) -> &str {
        &self.category
    }

    /// The parsed config, or why the file is not a valid experiment config.
    pub fn parsed(&self) -> std::result::Result<&ExperimentConfig, &str> {
        self.config.as_ref().map_err(String::as_str)
    }

    /// Why the file is not a valid experiment config, if it is not.
    pub fn config_error(&self) -> Option<&str> {
        self.config.as_ref().err().map(String::as_str)
    }

    /// The experiment id (`{name}-{12 hex of the config hash}`), when the config parsed.
    pub fn experiment_id(&self) -> Option<String> {
        self.config
            .as_ref()
            .ok()
            .map(ExperimentConfig::experiment_id)
    }
}

pub(super) fn category_of(name: &str) -> String {
    name.rfind('/')
        .map_or_else(String::new, |i| name[..i].to_owned())
}

/// Finds the recipes under `dir`: every `*.toml` file, recursively (hidden files and directories
/// skipped), sorted by relative path, filtered by [`BatchOptions::category`]. An empty result is
/// [`BatchError::NoRecipes`].
pub fn discover(dir: impl AsRef<Path>, options: &BatchOptions) -> Result<Vec<Recipe>> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    walk(dir, "", 0, &mut files)?;
    files.sort_by(|a, b| a.1.cmp(&b.1));
    let categories: BTreeSet<String> = files
        .iter()
        .map(|(_, n)| category_of(n))
        .filter(|c| !c.is_empty())
        .collect();
    let recipes: Vec<Recipe> = files
        .into_iter()
        .filter(|(_, name)| options.selects(&category_of(name)))
        .map(|(path, name)| Recipe::load(path, name))
        .collect();
    if recipes.is_empty() {
        return Err(BatchError::NoRecipes {
            dir: dir.to_path_buf(),
            filter: options.category.clone(),
            categories: categories.into_iter().collect(),
        });
    }
    Ok(recipes)
}

/// Deeper than this, directories are not searched (a symlink loop ends here).
pub(super) const MAX_DEPTH: usize = 16;

pub(super) fn walk(
    dir: &Path,
    prefix: &str,
    depth: usize,
    out: &mut Vec<(PathBuf, String)>,
) -> Result<()> {
    let io = |source| BatchError::Io {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let Ok(file_name) = entry.file_name().into_string() else {
            continue; // not UTF-8: not a name a recipe (or its category) can have
        };
        if file_name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let name = if prefix.is_empty() {
            file_name.clone()
        } else {
            format!("{prefix}/{file_name}")
        };
        // Follows symlinks; a dangling one is skipped.
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            if depth < MAX_DEPTH {
                walk(&path, &name, depth + 1, out)?;
            }
        } else if meta.is_file() && file_name.ends_with(".toml") {
            out.push((path, name));
        }
    }
    Ok(())
}
