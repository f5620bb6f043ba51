//! [`EventFileWriter`]: appends framed `Event` records to one event file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use exptrack_core::Metric;
use prost::Message;

use crate::encode;
use crate::error::{Error, Result};
use crate::proto;
use crate::record::{begin_record, end_record, frame_record};

/// Per-process counter that makes file names unique per writer.
static FILE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Buffered bytes above which a write first hands the buffer to the OS.
const DRAIN_THRESHOLD: usize = 1 << 20;

/// The name TensorFlow gives event files: `events.out.tfevents.<10-digit secs>.<host>.<pid>.<n>`.
pub fn event_file_name(unix_secs: u64, host: &str, pid: u32, counter: u64) -> String {
    format!("events.out.tfevents.{unix_secs:010}.{host}.{pid}.{counter}")
}

fn host_for_file_name() -> String {
    let host: String = exptrack_core::metadata::hostname()
        .chars()
        .map(|c| {
            if c == '/' || c == '\\' || c.is_control() {
                '_'
            } else {
                c
            }
        })
        .collect();
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host
    }
}

/// Appends framed `Event` records to one event file.
///
/// Records are encoded into an in-memory buffer that goes to the OS when it exceeds 1 MiB, on
/// [`flush`](Self::flush) and on drop (best effort). Writes are exact: if the OS accepts only part of
/// the buffer (disk full), the rest stays buffered and the next flush continues where it stopped,
/// so the file never contains a torn record followed by other data. A write method that returns
/// an error has not taken its event (it may be retried); an error from `flush` keeps everything
/// buffered for the next try.
#[derive(Debug)]
pub struct EventFileWriter {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already handed to the OS.
    written: usize,
    /// Length of the file: bytes it had when opened plus every byte handed to the OS since.
    file_len: u64,
}

impl EventFileWriter {
    /// Creates `dir` (and parents) and a new, uniquely named event file in it, starting with the
    /// `file_version: "brain.Event:2"` record (already handed to the OS on return).
    pub fn create(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating log directory", dir, e))?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let host = host_for_file_name();
        let pid = std::process::id();
        loop {
            let counter = FILE_COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = dir.join(event_file_name(now, &host, pid, counter));
            match OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(file) => return Self::start(path, file, 0),
                // Another process with our pid (a container sibling) got there first.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::io("creating event file", path, e)),
            }
        }
    }

    /// Opens `path` for appending (creating it if needed) and writes the file-version record.
    /// Meant for tests and tools; [`create`](Self::create) picks a proper unique name.
    pub fn create_at(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(&path)
            .map_err(|e| Error::io("creating event file", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading event file length", &path, e))?
            .len();
        Self::start(path, file, len)
    }

    fn start(path: PathBuf, file: File, file_len: u64) -> Result<Self> {
        let mut writer = EventFileWriter {
            path,
            file,
            buf: Vec::with_capacity(64 * 1024),
            written: 0,
            file_len,
        };
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        writer.write_event(&encode::file_version_event(now))?;
        writer.flush()?;
        Ok(writer)
    }

    /// A writer over an already open `file` without the file-version record (fault injection in
    /// tests, e.g. `/dev/full`).
    #[cfg(test)]
    pub(crate) fn from_open_file(path: PathBuf, file: File) -> Self {
        EventFileWriter {
            path,
            file,
            buf: Vec::new(),
            written: 0,
            file_len: 0,
        }
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of the file as far as this writer has handed bytes to the OS (after a successful
    /// [`flush`](Self::flush): every record written so far, whole).
    pub fn file_len(&self) -> u64 {
        self.file_len
    }

    /// Bytes encoded but not yet handed to the OS.
    pub fn pending_bytes(&self) -> usize {
        self.buf.len() - self.written
    }

    /// Appends one event.
    pub fn write_event(&mut self, event: &proto::Event) -> Result<()> {
        self.make_room()?;
        let start = begin_record(&mut self.buf);
        self.buf.reserve(event.encoded_len());
        // Cannot panic: a `Vec<u8>` grows as needed (and was just reserved).
        event.encode_raw(&mut self.buf);
        end_record(&mut self.buf, start);
        Ok(())
    }

    /// Appends one event with a summary holding `values` as scalars (`simple_value`, rounded to
    /// `f32`), encoded without building the message.
    pub fn write_scalars(&mut self, wall_time: f64, step: i64, values: &[Metric]) -> Result<()> {
        self.make_room()?;
        let start = begin_record(&mut self.buf);
        encode::encode_scalars_event(&mut self.buf, wall_time, step, values);
        end_record(&mut self.buf, start);
        Ok(())
    }

    /// Appends one record with arbitrary `data` (already a serialized `Event`).
    pub fn write_record(&mut self, data: &[u8]) -> Result<()> {
        self.make_room()?;
        frame_record(&mut self.buf, data);
        Ok(())
    }

    fn make_room(&mut self) -> Result<()> {
        if self.buf.len() >= DRAIN_THRESHOLD {
            self.drain()?;
        }
        Ok(())
    }

    /// Hands buffered bytes to the OS, remembering exactly how many it accepted.
    fn drain(&mut self) -> Result<()> {
        while self.written < self.buf.len() {
            match self.file.write(&self.buf[self.written..]) {
                Ok(0) => {
                    return Err(Error::io(
                        "writing event file",
                        &self.path,
                        std::io::ErrorKind::WriteZero.into(),
                    ));
                }
                Ok(n) => {
                    self.written += n;
                    self.file_len += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::io("writing event file", &self.path, e)),
            }
        }
        self.buf.clear();
        self.written = 0;
        Ok(())
    }

    /// Hands everything written so far to the OS (visible to readers) and checks that the file
    /// still exists under its name ([`Error::FileLost`] if it was deleted or replaced).
    pub fn flush(&mut self) -> Result<()> {
        self.drain()?;
        self.file
            .flush()
            .map_err(|e| Error::io("flushing event file", &self.path, e))?;
        self.check_still_there()
    }

    /// [`flush`](Self::flush), then waits until the data is on stable storage (`fsync`).
    pub fn sync(&mut self) -> Result<()> {
        self.flush()?;
        self.file
            .sync_data()
            .map_err(|e| Error::io("syncing event file", &self.path, e))
    }

    fn check_still_there(&self) -> Result<()> {
        let on_disk = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::FileLost {
                    path: self.path.clone(),
                });
            }
            Err(e) => return Err(Error::io("checking event file", &self.path, e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let open = self
                .file
                .metadata()
                .map_err(|e| Error::io("checking event file", &self.path, e))?;
            if (open.dev(), open.ino()) != (on_disk.dev(), on_disk.ino()) {
                return Err(Error::FileLost {
                    path: self.path.clone(),
                });
            }
        }
        #[cfg(not(unix))]
        let _ = on_disk;
        Ok(())
    }
}

impl Drop for EventFileWriter {
    fn drop(&mut self) {
        if self.pending_bytes() > 0
            && let Err(e) = self.drain()
        {
            tracing::warn!(error = %e, "tensorboard: buffered events lost when dropping the writer");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::read_event_file;

    #[test]
    fn file_name_format() {
        assert_eq!(
            event_file_name(42, "host", 7, 3),
            "events.out.tfevents.0000000042.host.7.3"
        );
    }

    #[test]
    fn names_are_unique_per_writer() {
        let dir = tempfile::tempdir().unwrap();
        let a = EventFileWriter::create(dir.path()).unwrap();
        let b = EventFileWriter::create(dir.path()).unwrap();
        assert_ne!(a.path(), b.path());
        let name = a.path().file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        assert!(name.starts_with("events.out.tfevents."), "{name}");
        assert_eq!(parts[3].len(), 10, "{name}");
        assert_eq!(parts[parts.len() - 2], std::process::id().to_string());
    }

    #[test]
    fn first_record_is_file_version() {
        let dir = tempfile::tempdir().unwrap();
        let w = EventFileWriter::create(dir.path()).unwrap();
        let f = read_event_file(w.path()).unwrap();
        assert_eq!(f.events.len(), 1);
        assert_eq!(
            f.events[0].event.what,
            Some(proto::event::What::FileVersion("brain.Event:2".into()))
        );
        assert!(f.events[0].event.wall_time > 1.0e9);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn full_disk_is_an_error_not_a_panic() {
        // /dev/full accepts opens and fails every write with ENOSPC.
        let err = EventFileWriter::create_at("/dev/full").unwrap_err();
        match &err {
            Error::Io { source, .. } => {
                assert_eq!(source.raw_os_error(), Some(libc_enospc()), "{err}")
            }
            other => panic!("unexpected error {other:?}"),
        }
        assert!(err.is_transient());
    }

    #[cfg(target_os = "linux")]
    fn libc_enospc() -> i32 {
        28
    }

    #[test]
    fn deleted_file_is_reported_on_flush() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("run");
        let mut w = EventFileWriter::create(&sub).unwrap();
        std::fs::remove_dir_all(&sub).unwrap();
        w.write_scalars(1.0, 1, &[Metric::new("a", 1.0)]).unwrap();
        let err = w.flush().unwrap_err();
        assert!(matches!(err, Error::FileLost { .. }), "{err:?}");
        assert!(err.is_transient());
    }

    #[test]
    fn large_writes_drain_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventFileWriter::create(dir.path()).unwrap();
        let big = proto::Event {
            wall_time: 1.0,
            step: 1,
            what: Some(proto::event::What::GraphDef(vec![7u8; 300_000])),
        };
        for _ in 0..10 {
            w.write_event(&big).unwrap();
        }
        assert!(w.pending_bytes() < 10 * 300_000);
        w.flush().unwrap();
        assert_eq!(w.pending_bytes(), 0);
        let f = read_event_file(w.path()).unwrap();
        assert_eq!(f.events.len(), 11);
        assert!(f.events[1..].iter().all(|r| r.event == big));
    }
}
