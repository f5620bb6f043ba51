//! Shared helpers of the exptrack-eval tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, LoadedCheckpoint, ModelCheckpointer};
use exptrack_core::store::RunReader;
use exptrack_core::{Event, ExperimentConfig, ExperimentTracker, Resume};

/// The writer side: a real checkpointer keeping the last `keep` checkpoints (no fsync: scratch).
pub fn trainer(ckpt_dir: &Path, exp: &str, keep: Option<usize>) -> ModelCheckpointer {
    let config = CheckpointConfig {
        dir: ckpt_dir.to_owned(),
        max_checkpoints: keep,
        fsync: false,
        ..CheckpointConfig::default()
    };
    ModelCheckpointer::open(exp, config).expect("open checkpointer")
}

/// The bytes of the fake model of `step`: the step, little-endian, repeated.
pub fn model_bytes(step: u64) -> Vec<u8> {
    step.to_le_bytes().repeat(64)
}

/// A checkpoint whose model encodes its step.
pub fn checkpoint(step: u64) -> Checkpoint {
    Checkpoint::new(step)
        .epoch(step / 10)
        .metric("train/loss", 1.0 / (step as f64 + 1.0))
        .file("model.bin", model_bytes(step))
}

/// "Evaluates" the fake model: checks it encodes its step and derives metrics from it.
pub fn fake_eval(c: &LoadedCheckpoint, shift: f64) -> Result<Vec<(String, f64)>, String> {
    let bytes = c.file("model.bin").ok_or("no model.bin")?;
    if bytes != model_bytes(c.step()).as_slice() {
        return Err(format!(
            "model.bin of step {} has the wrong content",
            c.step()
        ));
    }
    let acc = 1.0 - 1.0 / (c.step() as f64 + 2.0) - shift;
    Ok(vec![
        ("accuracy".to_owned(), acc),
        ("loss".to_owned(), 1.0 - acc),
        ("entropy".to_owned(), 0.5 * (1.0 - acc)),
    ])
}

/// The tracker the watcher logs to: run id `run_id` under `runs`, resumed when it exists.
pub fn eval_tracker(runs: &Path, run_id: &str) -> ExperimentTracker {
    ExperimentTracker::builder(ExperimentConfig::named("eval-test"))
        .runs_dir(runs)
        .resume(Resume::RunId(run_id.to_owned()))
        .handle_signals(false)
        .collect_system_info(false)
        .flush_interval(Duration::from_millis(50))
        .build()
        .expect("build tracker")
}

/// The run directory of run `run_id` under `runs`.
pub fn run_dir(runs: &Path, run_id: &str) -> PathBuf {
    exptrack_core::store::list_runs(runs)
        .expect("list runs")
        .into_iter()
        .find(|r| r.metadata.run_id == run_id)
        .map(|r| r.dir)
        .unwrap_or_else(|| panic!("no run {run_id} under {}", runs.display()))
}

/// Per step, how many metrics events carry `eval/<dataset>/` keys, per dataset, read back from
/// the run's `events.jsonl` with the core's `RunReader`. Also checks each such event carries
/// every metric (accuracy, loss, entropy) of the datasets it names.
pub fn eval_event_counts(run_dir: &Path) -> BTreeMap<u64, BTreeMap<String, usize>> {
    let mut out: BTreeMap<u64, BTreeMap<String, usize>> = BTreeMap::new();
    let events = RunReader::open(run_dir)
        .expect("open run")
        .events()
        .expect("read events");
    for (_, event) in events {
        if let Event::Metrics { step, values, .. } = event {
            let mut per_ds: BTreeMap<String, usize> = BTreeMap::new();
            for m in &values {
                let mut parts = m.key.splitn(3, '/');
                if parts.next() == Some("eval")
                    && let (Some(ds), Some(_)) = (parts.next(), parts.next())
                {
                    *per_ds.entry(ds.to_owned()).or_default() += 1;
                }
            }
            for (ds, n) in per_ds {
                assert_eq!(
                    n, 3,
                    "step {step}: dataset {ds} has {n} metrics, expected 3"
                );
                *out.entry(step).or_default().entry(ds).or_default() += 1;
            }
        }
    }
    out
}
