//! The core conformance suite, read back by our reader and by tensorboard's own event loader.

mod common;

use std::path::PathBuf;

use exptrack_core::RunContext;
use exptrack_core::conformance::{self, ReadBack};
use exptrack_tensorboard::proto::{event::What, summary::value::Value as V};
use exptrack_tensorboard::{TensorBoardTracker, event_files, read_event_file};

/// Reads the scalars with this crate's reader.
struct OurReader;

impl ReadBack for OurReader {
    fn scalars(&mut self, ctx: &RunContext) -> Result<Vec<(u64, String, f64)>, String> {
        let mut out = Vec::new();
        for file in event_files(&ctx.run_dir).map_err(|e| e.to_string())? {
            for r in read_event_file(&file).map_err(|e| e.to_string())?.events {
                if let Some(What::Summary(s)) = r.event.what {
                    for v in s.value {
                        if let Some(V::SimpleValue(x)) = v.value {
                            out.push((r.event.step as u64, v.tag, f64::from(x)));
                        }
                    }
                }
            }
        }
        Ok(out)
    }
}

/// Reads the scalars with tensorboard's `EventFileLoader` (Python peer).
struct TensorBoardReader(PathBuf);

impl ReadBack for TensorBoardReader {
    fn scalars(&mut self, ctx: &RunContext) -> Result<Vec<(u64, String, f64)>, String> {
        let json = common::run_python_json(&self.0, "scalars.py", &[ctx.run_dir.to_str().unwrap()]);
        Ok(json
            .as_array()
            .ok_or("not a list")?
            .iter()
            .map(|r| {
                (
                    r[0].as_u64().unwrap(),
                    r[1].as_str().unwrap().to_owned(),
                    r[2].as_f64().unwrap(),
                )
            })
            .collect())
    }
}

fn make() -> Box<dyn exptrack_core::Tracker> {
    Box::new(TensorBoardTracker::new(None))
}

#[test]
fn conformance_with_our_reader() {
    let dir = tempfile::tempdir().unwrap();
    let failures = conformance::run_all(&mut make, &mut OurReader, dir.path(), true);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn conformance_with_tensorboard_reader() {
    let Some(py) = common::peer_python(&["tensorboard"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let failures = conformance::run_all(&mut make, &mut TensorBoardReader(py), dir.path(), true);
    assert!(failures.is_empty(), "{failures:#?}");
}
