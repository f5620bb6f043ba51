//! What a run's event files durably hold, so that a resumed run is never written twice.
//!
//! `<log dir>/.exptrack-tensorboard.json` (no "tfevents" in the name, so TensorBoard does not read
//! it) records, for the event file being written, its length and the sequence number of the last
//! event in that length:
//!
//! ```json
//! {"run_id": "…", "file": "events.out.tfevents.…", "len": 1234, "seq": 57}
//! ```
//!
//! It is rewritten atomically (and durably) on every [`Tracker::flush`] and `close`, after the
//! event file itself is fsynced, so it never claims more than the file durably holds. A process
//! killed after that may have handed more records to the file (the writer drains its buffer as it
//! goes); the next `open` of the same run cuts the file back to the recorded length and answers
//! [`Tracker::resume_point`] with the recorded sequence number, so those events are replayed from
//! the local store exactly once instead of appearing twice.
//!
//! Why this and not the alternatives: a sequence number written into the event file itself
//! would be a record every TensorBoard reader sees (and existing tools count); reading the old
//! event files back and skipping `(tag, step)` pairs already there would drop points a user
//! logged twice on purpose, cannot tell text, images or hparams apart by step, and costs a read
//! of every old file (images included) at each resume. The side file is O(1) at open and exact at
//! the granularity of events.
//!
//! [`Tracker::flush`]: exptrack_core::Tracker::flush
//! [`Tracker::resume_point`]: exptrack_core::Tracker::resume_point

use std::fs::OpenOptions;
use std::path::Path;

use serde_json::{Value, json};

use crate::error::{Error, Result};

/// Name of the progress file in a run's TensorBoard log directory.
pub(crate) const PROGRESS_FILE: &str = ".exptrack-tensorboard.json";

/// One recorded point: `file` (a name in the log directory) holds exactly the events up to `seq`
/// in its first `len` bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) run_id: String,
    pub(crate) file: String,
    pub(crate) len: u64,
    pub(crate) seq: u64,
}

impl Progress {
    /// Reads `dir`'s progress file; `None` when it is absent or unreadable (a warning says why).
    pub(crate) fn read(dir: &Path) -> Option<Progress> {
        let path = dir.join(PROGRESS_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "tensorboard: cannot read the progress file; resuming from the cursor");
                return None;
            }
        };
        let parsed = serde_json::from_slice::<Value>(&bytes).ok().and_then(|v| {
            Some(Progress {
                run_id: v.get("run_id")?.as_str()?.to_owned(),
                file: v.get("file")?.as_str()?.to_owned(),
                len: v.get("len")?.as_u64()?,
                seq: v.get("seq")?.as_u64()?,
            })
        });
        // A name read from disk is joined to the directory: it must be a plain event file name.
        let parsed = parsed.filter(|p| plain_event_file_name(&p.file));
        if parsed.is_none() {
            tracing::warn!(path = %path.display(), "tensorboard: the progress file is not valid; resuming from the cursor");
        }
        parsed
    }

    /// Replaces `dir`'s progress file atomically and durably.
    pub(crate) fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(PROGRESS_FILE);
        let doc = json!({
            "run_id": self.run_id,
            "file": self.file,
            "len": self.len,
            "seq": self.seq,
        });
        exptrack_core::fsutil::write_atomic(&path, doc.to_string().as_bytes())
            .map_err(|e| Error::io("writing progress file", &path, e))
    }

    /// Makes the recorded file hold exactly what was recorded: cuts it back to `len` (records
    /// written after the last flush by a process that then died) and fsyncs it. Returns the
    /// sequence number it then holds, or `None` when the file is missing or shorter than recorded
    /// (lost in a power failure): then nothing is cut and the cursor decides.
    pub(crate) fn restore(&self, dir: &Path) -> Result<Option<u64>> {
        let path = dir.join(&self.file);
        let file = match OpenOptions::new().write(true).open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(path = %path.display(), "tensorboard: the event file named by the progress file is gone; resuming from the cursor");
                return Ok(None);
            }
            Err(e) => return Err(Error::io("opening event file to resume", &path, e)),
        };
        let on_disk = file
            .metadata()
            .map_err(|e| Error::io("reading event file length", &path, e))?
            .len();
        if on_disk < self.len {
            tracing::warn!(
                path = %path.display(),
                on_disk,
                recorded = self.len,
                "tensorboard: event file is shorter than recorded; resuming from the cursor"
            );
            return Ok(None);
        }
        if on_disk > self.len {
            tracing::info!(
                path = %path.display(),
                cut = on_disk - self.len,
                seq = self.seq,
                "tensorboard: cutting records written after the last flush (they are replayed from the local store)"
            );
            file.set_len(self.len)
                .map_err(|e| Error::io("cutting event file back to its last flush", &path, e))?;
            file.sync_all()
                .map_err(|e| Error::io("syncing event file", &path, e))?;
        }
        Ok(Some(self.seq))
    }
}

/// Whether `name` is an event file name inside the directory (no separator, no `..`).
fn plain_event_file_name(name: &str) -> bool {
    name.contains("tfevents") && !name.contains(['/', '\\', '\0']) && !name.starts_with("..")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_cuts_back_to_the_recorded_length() {
        let dir = tempfile::tempdir().unwrap();
        let file = "events.out.tfevents.1.h.1.0";
        std::fs::write(dir.path().join(file), [7u8; 100]).unwrap();
        let p = Progress {
            run_id: "r".into(),
            file: file.into(),
            len: 60,
            seq: 9,
        };
        p.write(dir.path()).unwrap();
        assert_eq!(Progress::read(dir.path()), Some(p.clone()));
        assert_eq!(p.restore(dir.path()).unwrap(), Some(9));
        assert_eq!(std::fs::metadata(dir.path().join(file)).unwrap().len(), 60);
        // Shorter than recorded: nothing is cut, the cursor decides.
        let longer = Progress { len: 80, ..p };
        assert_eq!(longer.restore(dir.path()).unwrap(), None);
        assert_eq!(std::fs::metadata(dir.path().join(file)).unwrap().len(), 60);
    }

    #[test]
    fn a_hostile_or_broken_progress_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        for doc in [
            r#"{"run_id":"r","file":"../events.out.tfevents.1","len":1,"seq":1}"#,
            r#"{"run_id":"r","file":"/tmp/events.out.tfevents.1","len":1,"seq":1}"#,
            r#"{"run_id":"r","file":"notes.txt","len":1,"seq":1}"#,
            r#"{"run_id":"r","file":"events.out.tfevents.1","len":-1,"seq":1}"#,
            "not json",
        ] {
            std::fs::write(dir.path().join(PROGRESS_FILE), doc).unwrap();
            assert_eq!(Progress::read(dir.path()), None, "{doc}");
        }
    }
}
