//! Unit tests of the TensorBoard tracker. The parent declares this file as `#[cfg(test)] mod tests;`, so
//! none of it is compiled into the library.

use super::*;
use exptrack_core::ExperimentMetadata;

fn ctx(dir: &Path) -> RunContext {
    RunContext {
        metadata: ExperimentMetadata::new("unit", "00ff"),
        config: Default::default(),
        run_dir: dir.to_path_buf(),
        resumed: false,
    }
}

fn metrics(step: u64) -> Event {
    Event::Metrics {
        step,
        timestamp_ms: 1,
        values: vec![Metric::new("loss", step as f64)],
    }
}

/// A full disk (`/dev/full`: every write fails with ENOSPC) is a transient error from
/// `flush`, `write` and `close`, never a panic; redelivered batches are not encoded twice.
#[cfg(target_os = "linux")]
#[test]
fn full_disk_is_a_transient_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut tb = TensorBoardTracker::builder()
        .flush_interval(Duration::from_secs(3600))
        .build();
    tb.open(&ctx(dir.path())).unwrap();
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let run = tb.run.as_mut().unwrap();
    run.writer = Some(EventFileWriter::from_open_file("/dev/full".into(), full));

    let events: Vec<Event> = (0..10).map(metrics).collect();
    let batch = Batch {
        first_seq: 0,
        events: &events,
    };
    tb.write(&batch).unwrap(); // buffered
    let pending = tb
        .run
        .as_ref()
        .unwrap()
        .writer
        .as_ref()
        .unwrap()
        .pending_bytes();
    let err = tb.flush().unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("writing event file")
    );
    // Redelivery of the same batch encodes nothing new.
    tb.write(&batch).unwrap();
    let run = tb.run.as_ref().unwrap();
    assert_eq!(run.writer.as_ref().unwrap().pending_bytes(), pending);

    // Many events: write itself drains past the threshold and reports the error.
    let big: Vec<Event> = (10..200_000).map(metrics).collect();
    let err = tb
        .write(&Batch {
            first_seq: 10,
            events: &big,
        })
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    // The buffer stays bounded while the disk is full.
    let run = tb.run.as_ref().unwrap();
    assert!(run.writer.as_ref().unwrap().pending_bytes() < 2 << 20);

    let err = tb.close(RunStatus::Failed).unwrap_err();
    assert!(err.is_transient(), "{err}");
}
