//! Golden bytes, reader corruption handling, and tracker behaviour (no Python needed).

mod common;

use std::fs;

use exptrack_core::{Batch, Event, Metric, ParamValue, RunStatus, Tracker};
use exptrack_tensorboard::proto::{self, event::What, summary::value::Value as V};
use exptrack_tensorboard::record::{frame_record, masked_crc32c};
use exptrack_tensorboard::{
    Corruption, Error, EventFileWriter, RecordReader, TensorBoardTracker, event_files,
    read_event_file,
};
use prost::Message;

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn golden_crc32c_check_value() {
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

/// Bytes produced by tensorboard 2.21's own `RecordWriter` for
/// `Event{wall_time: 1.5, step: 7, file_version: "brain.Event:2"}`.
#[test]
fn golden_framed_record_matches_tensorboard() {
    let event = proto::Event {
        wall_time: 1.5,
        step: 7,
        what: Some(What::FileVersion("brain.Event:2".into())),
    };
    let data = event.encode_to_vec();
    assert_eq!(
        data,
        hex("09 00 00 00 00 00 00 f8 3f 10 07 1a 0d 62 72 61 69 6e 2e 45 76 65 6e 74 3a 32")
    );
    let mut framed = Vec::new();
    frame_record(&mut framed, &data);
    assert_eq!(
        framed,
        hex(
            "1a 00 00 00 00 00 00 00 12 9b d8 2d 09 00 00 00 00 00 00 f8 3f 10 07 1a 0d 62 72 61 \
             69 6e 2e 45 76 65 6e 74 3a 32 da 44 64 86"
        )
    );
}

/// Bytes produced by tensorboard's `RecordWriter` for `Event{step: 3, summary: {t: 1.0}}`, here
/// written through our allocation-free scalar path.
#[test]
fn golden_scalar_record_through_writer() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.golden");
    let mut w = EventFileWriter::create_at(&path).unwrap();
    w.write_scalars(0.0, 3, &[Metric::new("t", 1.0)]).unwrap();
    w.flush().unwrap();
    let bytes = fs::read(&path).unwrap();
    let first_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize + 16;
    assert_eq!(
        &bytes[first_len..],
        hex("0e 00 00 00 00 00 00 00 c5 e5 69 3f 10 03 2a 0a 0a 08 0a 01 74 15 00 00 80 3f 3f 6f 66 b7")
            .as_slice()
    );
}

#[test]
fn golden_scalar_summary() {
    let s = proto::Summary {
        value: vec![proto::summary::Value {
            tag: "t".into(),
            value: Some(V::SimpleValue(1.0)),
            ..Default::default()
        }],
    };
    assert_eq!(s.encode_to_vec(), hex("0a 08 0a 01 74 15 00 00 80 3f"));
}

#[test]
fn golden_hparams_bytes_from_reference() {
    use exptrack_tensorboard::encode;
    // session_start_info {lr: 0.5} and session_end_info {SUCCESS}, as in the reference notes,
    // taken from the metadata content of the summaries the tracker writes.
    let content = |v: proto::summary::Value| {
        v.metadata
            .unwrap()
            .plugin_data
            .map(|p| (p.plugin_name, p.content))
            .unwrap()
    };
    let (plugin, start) = content(encode::session_start_value(
        &[("lr".into(), ParamValue::Float(0.5))],
        0.0,
    ));
    assert_eq!(plugin, "hparams");
    assert_eq!(
        start,
        hex("1a 11 0a 0f 0a 02 6c 72 12 09 11 00 00 00 00 00 00 e0 3f")
    );
    let (_, end) = content(encode::session_end_value(RunStatus::Completed, 0.0));
    assert_eq!(end, hex("22 02 08 01"));
}

fn three_record_file() -> (tempfile::TempDir, std::path::PathBuf, Vec<u64>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.out.tfevents.test");
    let mut w = EventFileWriter::create_at(&path).unwrap();
    for step in 1..=3 {
        w.write_scalars(1.0, step, &[Metric::new("loss", step as f64)])
            .unwrap();
    }
    w.flush().unwrap();
    let offsets = read_event_file(&path)
        .unwrap()
        .events
        .iter()
        .map(|r| r.offset)
        .collect();
    (dir, path, offsets)
}

#[test]
fn flipped_data_byte_reports_record_offset() {
    let (_dir, path, offsets) = three_record_file();
    assert_eq!(offsets.len(), 4);
    let mut bytes = fs::read(&path).unwrap();
    // A byte inside the data of the third record (index 2).
    bytes[offsets[2] as usize + 14] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    match read_event_file(&path).unwrap_err() {
        Error::Corrupt {
            offset, corruption, ..
        } => {
            assert_eq!(offset, offsets[2]);
            assert_eq!(corruption, Corruption::DataCrc);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The records before the bad one are still readable with the streaming reader.
    let mut reader = RecordReader::new(bytes.as_slice());
    assert_eq!(reader.next_record().unwrap().unwrap().offset, offsets[0]);
    assert_eq!(reader.next_record().unwrap().unwrap().offset, offsets[1]);
    let err = reader.next_record().unwrap_err();
    assert!(
        err.to_string()
            .contains(&format!("byte offset {}", offsets[2])),
        "{err}"
    );
    assert!(reader.next_record().unwrap().is_none());
}

#[test]
fn flipped_length_byte_reports_record_offset() {
    let (_dir, path, offsets) = three_record_file();
    let mut bytes = fs::read(&path).unwrap();
    bytes[offsets[3] as usize + 1] ^= 0x01;
    match RecordReader::new(bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .unwrap_err()
    {
        Error::Corrupt {
            offset, corruption, ..
        } => {
            assert_eq!(offset, offsets[3]);
            assert_eq!(corruption, Corruption::LengthCrc);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

#[test]
fn every_single_byte_flip_is_detected_at_its_record() {
    let (_dir, path, offsets) = three_record_file();
    let clean = fs::read(&path).unwrap();
    for i in 0..clean.len() {
        let mut bytes = clean.clone();
        bytes[i] ^= 0x10;
        let record_start = *offsets.iter().rev().find(|&&o| o as usize <= i).unwrap();
        let result: Result<Vec<_>, _> = RecordReader::new(bytes.as_slice()).collect();
        match result {
            Err(Error::Corrupt { offset, .. }) => assert_eq!(offset, record_start, "byte {i}"),
            other => panic!("flip at byte {i} not detected: {other:?}"),
        }
    }
}

#[test]
fn truncated_tail_yields_every_whole_record() {
    let (_dir, path, offsets) = three_record_file();
    let clean = fs::read(&path).unwrap();
    for cut in 0..clean.len() {
        let whole = offsets
            .iter()
            .enumerate()
            .filter(|&(i, _)| {
                let end = offsets
                    .get(i + 1)
                    .map(|&o| o as usize)
                    .unwrap_or(clean.len());
                end <= cut
            })
            .count();
        let mut reader = RecordReader::new(&clean[..cut]);
        let records: Vec<_> = (&mut reader).collect::<Result<_, _>>().unwrap();
        assert_eq!(records.len(), whole, "cut at {cut}");
        let expected_tail = if offsets.contains(&(cut as u64)) {
            None
        } else {
            Some(offsets[whole])
        };
        assert_eq!(reader.truncated_tail(), expected_tail, "cut at {cut}");
    }
    // Through the file API too.
    fs::write(&path, &clean[..clean.len() - 3]).unwrap();
    let f = read_event_file(&path).unwrap();
    assert_eq!(f.events.len(), 3);
    assert_eq!(f.truncated_tail, Some(offsets[3]));
}

#[test]
fn masked_crc_known_values() {
    // Values cross-checked against tensorboard's `masked_crc32c`.
    assert_eq!(masked_crc32c(&[0x1a, 0, 0, 0, 0, 0, 0, 0]), 0x2dd8_9b12);
}

// ---- tracker behaviour ----

fn metrics(step: u64, keys: &[&str]) -> Event {
    Event::Metrics {
        step,
        timestamp_ms: 1_700_000_000_000 + step as i64,
        values: keys
            .iter()
            .enumerate()
            .map(|(i, k)| Metric::new(*k, step as f64 + i as f64 / 10.0))
            .collect(),
    }
}

fn scalar_steps(path: &std::path::Path) -> Vec<(i64, String, f32)> {
    let mut out = Vec::new();
    for r in read_event_file(path).unwrap().events {
        if let Some(What::Summary(s)) = r.event.what {
            for v in s.value {
                if let Some(V::SimpleValue(x)) = v.value {
                    out.push((r.event.step, v.tag, x));
                }
            }
        }
    }
    out
}

#[test]
fn files_go_under_log_root_or_run_dir() {
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "layout test");
    let mut tb = TensorBoardTracker::new(Some(root.path().join("tb")));
    tb.open(&ctx).unwrap();
    let expected = root
        .path()
        .join("tb")
        .join(&ctx.metadata.experiment_id)
        .join(&ctx.metadata.run_id);
    assert_eq!(tb.log_dir(), Some(expected.as_path()));
    tb.close(RunStatus::Completed).unwrap();
    assert_eq!(event_files(&expected).unwrap().len(), 1);

    let mut tb = TensorBoardTracker::new(None);
    tb.open(&ctx).unwrap();
    assert_eq!(tb.log_dir(), Some(ctx.run_dir.as_path()));
    tb.close(RunStatus::Completed).unwrap();
    assert_eq!(event_files(&ctx.run_dir).unwrap().len(), 1);
}

#[test]
fn redelivered_batches_are_not_written_twice() {
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "redelivery");
    let mut tb = TensorBoardTracker::new(None);
    tb.open(&ctx).unwrap();
    let events: Vec<Event> = (0..10).map(|s| metrics(s, &["a"])).collect();
    tb.write(&Batch {
        first_seq: 100,
        events: &events[..6],
    })
    .unwrap();
    // The dispatcher retries from an earlier sequence number: only 106.. are new.
    tb.write(&Batch {
        first_seq: 103,
        events: &events[3..],
    })
    .unwrap();
    let file = tb.event_file().unwrap().to_path_buf();
    tb.close(RunStatus::Completed).unwrap();
    let steps: Vec<i64> = scalar_steps(&file).iter().map(|s| s.0).collect();
    assert_eq!(steps, (0..10).collect::<Vec<_>>());
}

#[test]
fn flush_makes_events_visible_and_close_is_idempotent() {
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "flush");
    let mut tb = TensorBoardTracker::builder()
        .flush_interval(std::time::Duration::from_secs(3600))
        .build();
    tb.open(&ctx).unwrap();
    let file = tb.event_file().unwrap().to_path_buf();
    tb.write(&Batch {
        first_seq: 0,
        events: &[metrics(1, &["x", "y"])],
    })
    .unwrap();
    assert_eq!(scalar_steps(&file).len(), 0, "buffered until flush");
    tb.flush().unwrap();
    assert_eq!(scalar_steps(&file).len(), 2);
    tb.close(RunStatus::Completed).unwrap();
    tb.close(RunStatus::Completed).unwrap();
    assert!(
        tb.write(&Batch {
            first_seq: 1,
            events: &[metrics(2, &["x"])]
        })
        .is_err()
    );
}

#[test]
fn write_flushes_by_itself_after_the_interval() {
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "interval");
    let mut tb = TensorBoardTracker::builder()
        .flush_interval(std::time::Duration::ZERO)
        .build();
    tb.open(&ctx).unwrap();
    let file = tb.event_file().unwrap().to_path_buf();
    tb.write(&Batch {
        first_seq: 0,
        events: &[metrics(1, &["x"])],
    })
    .unwrap();
    assert_eq!(scalar_steps(&file).len(), 1);
    tb.close(RunStatus::Completed).unwrap();
}

#[test]
fn close_without_open_is_ok() {
    let mut tb = TensorBoardTracker::new(None);
    tb.close(RunStatus::Failed).unwrap();
    assert!(tb.flush().is_ok());
}

#[test]
fn deleted_directory_is_a_transient_error_then_recovers() {
    let root = tempfile::tempdir().unwrap();
    let ctx = common::ctx(root.path(), "deleted");
    let mut tb = TensorBoardTracker::new(None);
    tb.open(&ctx).unwrap();
    tb.write(&Batch {
        first_seq: 0,
        events: &[
            Event::Params {
                params: vec![("lr".into(), ParamValue::Float(0.1))],
            },
            metrics(1, &["x"]),
        ],
    })
    .unwrap();
    fs::remove_dir_all(&ctx.run_dir).unwrap();
    let err = tb.flush().unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        std::error::Error::source(&err)
            .unwrap()
            .to_string()
            .contains("deleted"),
        "{err}"
    );
    // The next write recreates the directory and a new file, with the hparams session again.
    tb.write(&Batch {
        first_seq: 2,
        events: &[metrics(2, &["x"])],
    })
    .unwrap();
    tb.close(RunStatus::Completed).unwrap();
    let files = event_files(&ctx.run_dir).unwrap();
    assert_eq!(files.len(), 1);
    let f = read_event_file(&files[0]).unwrap();
    let tags: Vec<String> = f
        .events
        .iter()
        .filter_map(|r| match &r.event.what {
            Some(What::Summary(s)) => {
                Some(s.value.iter().map(|v| v.tag.clone()).collect::<Vec<_>>())
            }
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(
        tags,
        [
            "_hparams_/session_start_info",
            "x",
            "_hparams_/experiment",
            "_hparams_/session_end_info"
        ]
    );
}

#[cfg(unix)]
#[test]
fn unwritable_log_root_is_an_error_not_a_panic() {
    let root = tempfile::tempdir().unwrap();
    let blocker = root.path().join("file");
    fs::write(&blocker, b"not a directory").unwrap();
    let ctx = common::ctx(root.path(), "blocked");
    let mut tb = TensorBoardTracker::new(Some(blocker.join("sub")));
    let err = tb.open(&ctx).unwrap_err();
    assert!(err.is_transient(), "{err}");
    // Writing after the failed open is an error too, and close must not panic.
    assert!(
        tb.write(&Batch {
            first_seq: 0,
            events: &[metrics(1, &["x"])]
        })
        .is_err()
    );
    tb.close(RunStatus::Failed).unwrap();
}

#[test]
fn supported_kinds() {
    use exptrack_core::EventKind;
    let tb = TensorBoardTracker::new(None);
    assert_eq!(tb.name(), "tensorboard");
    for kind in EventKind::ALL {
        assert_eq!(tb.supports(kind), kind != EventKind::Artifact, "{kind}");
    }
}
