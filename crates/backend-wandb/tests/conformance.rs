//! exptrack-core's conformance suite, read back through wandb 0.31's `wandb leet inspect`.

mod common;

use std::path::{Path, PathBuf};

use exptrack_core::conformance::{self, ReadBack};
use exptrack_core::{RunContext, Tracker};
use exptrack_wandb::{Mode, WandbTracker};

struct LeetReader {
    py: PathBuf,
    dir: PathBuf,
}

impl ReadBack for LeetReader {
    fn scalars(&mut self, ctx: &RunContext) -> Result<Vec<(u64, String, f64)>, String> {
        let id = exptrack_wandb::sanitize_run_id(&ctx.metadata.run_id);
        let log = find_log(&self.dir.join("wandb"), &id).ok_or("no .wandb file for the run")?;
        let inspect = common::leet_inspect(&self.py, &self.dir, &log);
        if !inspect.ok {
            return Err(format!("leet inspect failed: {}", inspect.stderr));
        }
        let mut out = Vec::new();
        for r in inspect.records.iter().filter(|r| r["type"] == "history") {
            let item = r["history"]["item"]
                .as_object()
                .ok_or("history without items")?;
            let step = item["_step"].as_u64().ok_or("history row without _step")?;
            for (k, v) in item {
                if !k.starts_with('_') {
                    out.push((step, k.clone(), v.as_f64().unwrap_or(f64::NAN)));
                }
            }
        }
        Ok(out)
    }
}

fn find_log(wandb_dir: &Path, id: &str) -> Option<PathBuf> {
    std::fs::read_dir(wandb_dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().ends_with(&format!("-{id}")))
        })
        .map(|d| d.join(format!("run-{id}.wandb")))
}

#[test]
fn conformance_suite_against_wandb_leet_inspect() {
    let Some(py) = common::peer_python() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    let mut make = || -> Box<dyn Tracker> {
        Box::new(
            WandbTracker::builder()
                .mode(Mode::Offline)
                .dir(&dir)
                .build()
                .unwrap(),
        )
    };
    let mut reader = LeetReader {
        py,
        dir: tmp.path().to_owned(),
    };
    let failures = conformance::run_all(&mut make, &mut reader, tmp.path(), false);
    assert!(failures.is_empty(), "{failures:#?}");
}
