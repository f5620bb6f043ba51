//! Cost of exptrack's burn-train logger: burn-train's own loop (`SupervisedTraining::launch`) on
//! one model and data set, with burn-train's default `FileMetricLogger` and with exptrack's
//! loggers (`Tracking::attach`, an `ExperimentTracker` writing the local store and TensorBoard),
//! alternated in the same process. Prints the median step time of each and their ratio.
//!
//! ```text
//! cargo bench --features burn-train --bench burn_train
//! cargo bench --features burn-train --bench burn_train -- --rounds 9 --epochs 2
//! ```
//!
//! Results go to stdout and to `target/burn_train_bench.json` (under `CARGO_TARGET_DIR`).

#[path = "../tests/burn_train_net/mod.rs"]
mod burn_train_net;

use std::sync::Arc;
use std::time::{Duration, Instant};

use burn_train_net::{Net, NetBatcher, loaders};
use exptrack::burn_train::Tracking;
use exptrack::trainer::burn;
use exptrack::{ExperimentConfig, ExperimentTracker, RunStatus};

use burn::optim::AdamConfig;
use burn::tensor::Device;
use burn::train::metric::{AccuracyMetric, LossMetric};
use burn::train::{Learner, SupervisedTraining};

const TRAIN_ITEMS: usize = 4096;
const VALID_ITEMS: usize = 512;
const BATCH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Variant {
    /// burn-train's default: `FileMetricLogger` under the artifact directory.
    Default,
    /// exptrack: `MetricHistory` + `TrackerLogger` → ExperimentTracker (local store + TensorBoard).
    Exptrack,
}

fn training(dir: &std::path::Path, epochs: usize) -> SupervisedTraining<Net> {
    let (train, valid) = loaders(TRAIN_ITEMS, VALID_ITEMS, BATCH, NetBatcher::default());
    SupervisedTraining::new(dir.join("artifacts"), train, valid)
        .metrics((LossMetric::new(), AccuracyMetric::new()))
        .num_epochs(epochs)
        .with_application_logger(None)
}

/// One launch; returns the wall time per training iteration.
fn round(variant: Variant, epochs: usize) -> Duration {
    let tmp = tempfile::tempdir().expect("tempdir");
    let learner = Learner::new(
        Net::new(&Device::default().autodiff()),
        AdamConfig::new().init(),
        1e-2,
    );
    let iterations = (epochs * TRAIN_ITEMS.div_ceil(BATCH)) as u32;
    match variant {
        Variant::Default => {
            let t = Instant::now();
            let result = training(tmp.path(), epochs).launch(learner);
            let elapsed = t.elapsed();
            assert!(result.error.is_none());
            elapsed / iterations
        }
        Variant::Exptrack => {
            let tracker = Arc::new(
                ExperimentTracker::builder(ExperimentConfig::named("bench"))
                    .runs_dir(tmp.path().join("runs"))
                    .with_tracker(Box::new(exptrack::tensorboard::TensorBoardTracker::new(
                        None,
                    )))
                    .collect_system_info(false)
                    .handle_signals(false)
                    .build()
                    .expect("tracker"),
            );
            let tracking = Tracking::new(Arc::clone(&tracker));
            let t = Instant::now();
            let result = tracking
                .attach(training(tmp.path(), epochs))
                .launch(learner);
            let elapsed = t.elapsed();
            assert!(result.error.is_none());
            drop(tracking);
            if let Ok(t) = Arc::try_unwrap(tracker) {
                t.finish(RunStatus::Completed).expect("finish");
            }
            elapsed / iterations
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let mut rounds = 7usize;
    let mut epochs = 2usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--rounds" => rounds = it.next().and_then(|v| v.parse().ok()).unwrap_or(rounds),
            "--epochs" => epochs = it.next().and_then(|v| v.parse().ok()).unwrap_or(epochs),
            _ => {} // cargo bench passes `--bench`
        }
    }
    // Warm-up (allocator, thread pools, page cache), not measured.
    round(Variant::Default, 1);
    round(Variant::Exptrack, 1);
    let (mut default, mut ours) = (Vec::new(), Vec::new());
    for i in 0..rounds {
        // Alternate the order so drift (thermal, other load) hits both alike.
        let order = if i % 2 == 0 {
            [Variant::Default, Variant::Exptrack]
        } else {
            [Variant::Exptrack, Variant::Default]
        };
        for v in order {
            let d = round(v, epochs);
            println!("round {i} {v:?}: {:.1} µs/step", d.as_secs_f64() * 1e6);
            match v {
                Variant::Default => default.push(d),
                Variant::Exptrack => ours.push(d),
            }
        }
    }
    // Paired ratios: the two runs of a round ran back to back, under the same machine load.
    let paired: Vec<f64> = default
        .iter()
        .zip(&ours)
        .map(|(d, o)| o.as_secs_f64() / d.as_secs_f64())
        .collect();
    let paired_median = {
        let mut p = paired.clone();
        p.sort_by(f64::total_cmp);
        p[p.len() / 2]
    };
    let (dmin, omin) = (
        default.iter().min().copied().unwrap_or_default(),
        ours.iter().min().copied().unwrap_or_default(),
    );
    let (d, o) = (median(default), median(ours));
    let ratio = o.as_secs_f64() / d.as_secs_f64();
    println!(
        "burn-train step time, {rounds} rounds × {epochs} epochs × {} steps: median \
         FileMetricLogger {:.1} µs, exptrack (TensorBoard) {:.1} µs; ratio ours/default: of \
         medians {ratio:.3}, median of paired rounds {paired_median:.3}, of minimums {:.3}",
        TRAIN_ITEMS.div_ceil(BATCH),
        d.as_secs_f64() * 1e6,
        o.as_secs_f64() * 1e6,
        omin.as_secs_f64() / dmin.as_secs_f64(),
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target"));
    let json = serde_json::json!({
        "rounds": rounds,
        "epochs": epochs,
        "steps_per_epoch": TRAIN_ITEMS.div_ceil(BATCH),
        "default_us_per_step": d.as_secs_f64() * 1e6,
        "exptrack_us_per_step": o.as_secs_f64() * 1e6,
        "ratio_of_medians": ratio,
        "median_paired_ratio": paired_median,
        "ratio_of_minimums": omin.as_secs_f64() / dmin.as_secs_f64(),
    });
    let _ = std::fs::create_dir_all(&target);
    let _ = std::fs::write(target.join("burn_train_bench.json"), json.to_string());
}
