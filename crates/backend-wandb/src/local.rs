//! The local run directory: `wandb/<offline-run|run>-YYYYMMDD_HHMMSS-<id>/` with the `.wandb`
//! transaction log and `files/`.

use std::fmt::Write as _;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};
use crate::proto::{Record, RecordType};
use crate::txlog::LogWriter;

/// An open local run directory.
#[derive(Debug)]
pub(crate) struct LocalRun {
    pub(crate) dir: PathBuf,
    pub(crate) files_dir: PathBuf,
    pub(crate) log_path: PathBuf,
    log: Option<LogWriter<BufWriter<File>>>,
    num: i64,
}

impl LocalRun {
    /// Creates `<wandb_dir>/<prefix>-<stamp>-<run_id>/` with `files/` and the log (header written),
    /// and points `latest-run` at it (not for a companion's `companion-*` directory: `latest-run`
    /// stays the owner's).
    pub(crate) fn create(
        wandb_dir: &Path,
        prefix: &str,
        stamp: &str,
        run_id: &str,
    ) -> Result<Self> {
        let dir = wandb_dir.join(format!("{prefix}-{stamp}-{run_id}"));
        let files_dir = dir.join("files");
        std::fs::create_dir_all(&files_dir)
            .map_err(|e| Error::io("creating the W&B run directory", &files_dir, e))?;
        let log_path = dir.join(format!("run-{run_id}.wandb"));
        let log = LogWriter::create(&log_path)?;
        if !prefix.starts_with(crate::companion::DIR_PREFIX) {
            link_latest(wandb_dir, &dir);
        }
        Ok(LocalRun {
            dir,
            files_dir,
            log_path,
            log: Some(log),
            num: 0,
        })
    }

    /// Appends one record (numbered consecutively from 1).
    pub(crate) fn append(&mut self, record_type: RecordType) -> Result<()> {
        let log = self.log.as_mut().ok_or(Error::NotOpen)?;
        self.num += 1;
        let record = Record {
            num: self.num,
            record_type: Some(record_type),
            uuid: String::new(),
        };
        log.write_record(&record)
            .map_err(|e| Error::io("writing the .wandb log", &self.log_path, e))
    }

    /// Hands buffered bytes to the OS.
    pub(crate) fn flush(&mut self) -> Result<()> {
        if let Some(log) = self.log.as_mut() {
            log.flush()
                .map_err(|e| Error::io("flushing the .wandb log", &self.log_path, e))?;
        }
        Ok(())
    }

    /// Flushes, syncs and closes the log. Idempotent.
    pub(crate) fn close(&mut self) -> Result<()> {
        if let Some(mut log) = self.log.take() {
            log.flush()
                .map_err(|e| Error::io("flushing the .wandb log", &self.log_path, e))?;
            log.get_ref()
                .get_ref()
                .sync_all()
                .map_err(|e| Error::io("syncing the .wandb log", &self.log_path, e))?;
        }
        Ok(())
    }

    /// Writes `files/<name>` atomically (temporary file, then rename).
    pub(crate) fn write_file(&self, name: &str, content: &[u8]) -> Result<()> {
        write_atomic(&self.files_dir, name, content)
    }

    /// Writes `<run dir>/<name>` (beside the log, not uploaded) atomically.
    pub(crate) fn write_beside(&self, name: &str, content: &[u8]) -> Result<()> {
        write_atomic(&self.dir, name, content)
    }

    /// Writes `files/<rel>` (a relative `/`-separated path; directories are created) atomically
    /// and returns its path.
    pub(crate) fn write_nested(&self, rel: &str, content: &[u8]) -> Result<PathBuf> {
        let rel = safe_relative(rel).ok_or_else(|| {
            Error::Config(format!(
                "media path {rel:?} is not a relative path inside the run"
            ))
        })?;
        let dest = self.files_dir.join(&rel);
        let (Some(parent), Some(name)) = (dest.parent(), dest.file_name()) else {
            return Err(Error::Config(format!(
                "media path {} has no file name",
                rel.display()
            )));
        };
        std::fs::create_dir_all(parent)
            .map_err(|e| Error::io("creating a W&B media directory", parent, e))?;
        write_atomic(parent, &name.to_string_lossy(), content)?;
        Ok(dest)
    }

    /// Puts a copy of `src` at `files/<name>` (a hard link when possible) and returns the
    /// `/`-separated relative path.
    pub(crate) fn add_file(&self, src: &Path, name: &str) -> Result<String> {
        let rel = safe_relative(name).ok_or_else(|| {
            Error::Config(format!(
                "artifact name {name:?} is not a relative path inside the run"
            ))
        })?;
        let dest = self.files_dir.join(&rel);
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io("creating a W&B files directory", parent, e))?;
        }
        if dest.exists() {
            std::fs::remove_file(&dest).map_err(|e| Error::io("replacing a W&B file", &dest, e))?;
        }
        if std::fs::hard_link(src, &dest).is_err() {
            std::fs::copy(src, &dest).map_err(|e| Error::io("copying an artifact", src, e))?;
        }
        Ok(rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join("/"))
    }
}

/// Writes `<dir>/<name>` atomically and durably (core's [`write_atomic`](exptrack_core::fsutil::write_atomic): a unique temporary
/// file, fsync, rename, directory fsync), so a crash leaves the old file or the new one.
fn write_atomic(dir: &Path, name: &str, content: &[u8]) -> Result<()> {
    let path = dir.join(name);
    exptrack_core::fsutil::write_atomic(&path, content)
        .map_err(|e| Error::io("replacing a W&B run file", &path, e))
}

/// `name` as a relative path without `..`, root or prefix components.
fn safe_relative(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

/// Points `wandb/latest-run` at `dir` (best effort, like wandb; unix only).
fn link_latest(wandb_dir: &Path, dir: &Path) {
    #[cfg(unix)]
    {
        let link = wandb_dir.join("latest-run");
        let _ = std::fs::remove_file(&link);
        if let Some(name) = dir.file_name() {
            let _ = std::os::unix::fs::symlink(name, &link);
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (wandb_dir, dir);
    }
}

/// Writes a minimal YAML document for W&B's `config.yaml`: `key:\n  value: <json>` per key
/// (JSON scalars and flow collections are valid YAML).
pub(crate) fn config_yaml(config: &[(String, String)]) -> String {
    let mut out = String::new();
    for (k, v) in config {
        let v = match v.as_str() {
            "NaN" => ".nan",
            "Infinity" => ".inf",
            "-Infinity" => "-.inf",
            other => other,
        };
        let _ = writeln!(out, "{}:\n    value: {v}", crate::json::str_json(k));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names() {
        assert_eq!(safe_relative("a/b.bin"), Some(PathBuf::from("a/b.bin")));
        assert_eq!(safe_relative("./a"), Some(PathBuf::from("a")));
        assert_eq!(safe_relative("../a"), None);
        assert_eq!(safe_relative("/etc/x"), None);
        assert_eq!(safe_relative(""), None);
    }

    #[test]
    fn yaml() {
        let y = config_yaml(&[
            ("lr".into(), "0.1".into()),
            ("m".into(), "{\"a\":NaN}".into()),
        ]);
        assert_eq!(
            y,
            "\"lr\":\n    value: 0.1\n\"m\":\n    value: {\"a\":NaN}\n"
        );
    }
}
