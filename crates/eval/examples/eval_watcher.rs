//! Asynchronous evaluation beside a training run.
//!
//! Run it in a second terminal next to a training process that saves checkpoints with
//! `ModelCheckpointer` (whose `model.bin` is the model below):
//!
//! ```text
//! cargo run -p exptrack-eval --example eval_watcher -- \
//!     --checkpoints checkpoints --experiment demo --runs runs [--poll-secs 10]
//! ```
//!
//! or let it play both sides in one process (a training thread saves checkpoints of a small
//! logistic-regression model every few steps, keeping the last 3):
//!
//! ```text
//! cargo run -p exptrack-eval --example eval_watcher -- --demo
//! ```
//!
//! The watcher evaluates every committed checkpoint on the validation set (`eval/valid/*`) and on
//! a shifted, out-of-distribution copy of it (`eval/ood/*`): accuracy, loss and predictive
//! entropy, logged at the checkpoint's step to the run `async-eval` of the same experiment (a
//! restarted watcher continues that run and evaluates nothing twice). It stops by itself when
//! the training run is marked completed; Ctrl-C stops it between checkpoints.
//!
//! The evaluator is a plain closure over the checkpoint's bytes: swap `decode` and `evaluate` for
//! your model (e.g. a burn record loaded with `exptrack_checkpoint::burn_support`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use exptrack_checkpoint::{Checkpoint, CheckpointConfig, LoadedCheckpoint, ModelCheckpointer};
use exptrack_core::{ExperimentConfig, ExperimentTracker, Resume, RunStatus};
use exptrack_eval::{BoxError, EvalWatcher, Outcome, StopReason};

/// A point and its label.
type Sample = ([f32; 2], f32);

/// Deterministic xorshift, so the example needs no RNG crate.
struct Rng(u64);

impl Rng {
    fn next_f32(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32
    }
    fn normal(&mut self) -> f32 {
        // Box-Muller.
        let (u, v) = (self.next_f32().max(1e-7), self.next_f32());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f32::consts::PI * v).cos()
    }
}

/// Two Gaussian blobs: label 1 around (1, 1), label 0 around (-1, -1).
fn dataset(seed: u64, n: usize) -> Vec<Sample> {
    let mut rng = Rng(seed);
    (0..n)
        .map(|i| {
            let y = (i % 2) as f32;
            let c = if y > 0.5 { 1.0 } else { -1.0 };
            ([c + rng.normal(), c + rng.normal()], y)
        })
        .collect()
}

/// The out-of-distribution copy: every point shifted along the first axis.
fn shifted(data: &[Sample], by: f32) -> Vec<Sample> {
    data.iter().map(|([a, b], y)| ([a + by, *b], *y)).collect()
}

/// Model file layout: three little-endian f32 (w0, w1, bias).
fn encode(w: [f32; 3]) -> Vec<u8> {
    w.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn decode(bytes: &[u8]) -> Result<[f32; 3], BoxError> {
    if bytes.len() != 12 {
        return Err(format!("model.bin has {} bytes, expected 12", bytes.len()).into());
    }
    let f = |i: usize| f32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    Ok([f(0), f(4), f(8)])
}

fn predict(w: [f32; 3], x: [f32; 2]) -> f32 {
    1.0 / (1.0 + (-(w[0] * x[0] + w[1] * x[1] + w[2])).exp())
}

/// Accuracy, binary cross-entropy and mean predictive entropy (nats).
fn evaluate(w: [f32; 3], data: &[Sample]) -> Vec<(&'static str, f64)> {
    let (mut correct, mut loss, mut entropy) = (0.0f64, 0.0f64, 0.0f64);
    for (x, y) in data {
        let p = f64::from(predict(w, *x)).clamp(1e-7, 1.0 - 1e-7);
        let y = f64::from(*y);
        correct += f64::from(u8::from((p > 0.5) == (y > 0.5)));
        loss -= y * p.ln() + (1.0 - y) * (1.0 - p).ln();
        entropy -= p * p.ln() + (1.0 - p) * (1.0 - p).ln();
    }
    let n = data.len() as f64;
    vec![
        ("accuracy", correct / n),
        ("loss", loss / n),
        ("entropy", entropy / n),
    ]
}

/// The demo's training side: SGD on logistic regression, a checkpoint every 20 steps.
fn demo_training(dir: PathBuf, experiment: String) -> Result<(), BoxError> {
    let config = CheckpointConfig {
        dir,
        max_checkpoints: Some(3),
        ..CheckpointConfig::default()
    };
    let mut ckpt = ModelCheckpointer::open(&experiment, config)?;
    let train = dataset(1, 2048);
    let mut w = [0.0f32, 0.0, -2.0];
    for step in 1..=200u64 {
        let (x, y) = train[(step as usize * 7) % train.len()];
        let g = predict(w, x) - y;
        w = [w[0] - 0.1 * g * x[0], w[1] - 0.1 * g * x[1], w[2] - 0.1 * g];
        if step % 20 == 0 {
            ckpt.save(
                Checkpoint::new(step)
                    .epoch(step / 100)
                    .file("model.bin", encode(w)),
            )?;
            std::thread::sleep(Duration::from_millis(150));
        }
    }
    ckpt.mark_completed(serde_json::json!({ "steps": 200 }))?;
    Ok(())
}

struct Args {
    checkpoints: PathBuf,
    experiment: String,
    runs: PathBuf,
    poll: Duration,
    demo: bool,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        checkpoints: PathBuf::from("checkpoints"),
        experiment: "demo".to_owned(),
        runs: PathBuf::from("runs"),
        poll: Duration::from_secs(10),
        demo: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--checkpoints" => args.checkpoints = value()?.into(),
            "--experiment" => args.experiment = value()?,
            "--runs" => args.runs = value()?.into(),
            // A clear error (never a panic) for a negative, non-finite or huge interval.
            "--poll-secs" => args.poll = exptrack_eval::parse_interval_secs(&value()?)?,
            "--demo" => args.demo = true,
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    Ok(args)
}

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    run().map_err(exptrack_core::error::Reported::boxed)
}

fn run() -> Result<(), BoxError> {
    let mut args = parse_args()?;
    let mut trainer = None;
    let _tmp;
    if args.demo {
        let tmp = std::env::temp_dir().join(format!("exptrack-async-eval-{}", std::process::id()));
        args.checkpoints = tmp.join("checkpoints");
        args.runs = tmp.join("runs");
        args.poll = Duration::from_millis(100);
        println!("demo: checkpoints and runs under {}", tmp.display());
        let (dir, exp) = (args.checkpoints.clone(), args.experiment.clone());
        trainer = Some(std::thread::spawn(move || {
            demo_training(dir, exp).map_err(|e| e.to_string())
        }));
        _tmp = Some(tmp);
    } else {
        _tmp = None;
    }

    // The eval run sits beside the training runs of the same experiment id.
    let mut config = ExperimentConfig::named(format!("{}-eval", args.experiment));
    config.experiment.id = Some(args.experiment.clone());
    let tracker = ExperimentTracker::builder(config)
        .runs_dir(&args.runs)
        .resume(Resume::RunId("async-eval".into()))
        .handle_signals(false)
        .build()?;

    let valid = Arc::new(dataset(2, 1024));
    let ood = Arc::new(shifted(&valid, 1.5));
    let mut watcher = EvalWatcher::builder(&args.checkpoints, &args.experiment)
        .poll_interval(args.poll)
        .dataset("valid", move |c: &LoadedCheckpoint| {
            let w = decode(c.file("model.bin").ok_or("no model.bin in checkpoint")?)?;
            Ok::<_, BoxError>(evaluate(w, &valid))
        })
        .dataset("ood", move |c: &LoadedCheckpoint| {
            let w = decode(c.file("model.bin").ok_or("no model.bin in checkpoint")?)?;
            Ok::<_, BoxError>(evaluate(w, &ood))
        })
        .tracker(&tracker)
        .build()?;

    // Ctrl-C: finish the checkpoint in progress, then stop.
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        if let Err(e) = ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst)) {
            eprintln!("no Ctrl-C handler: {e}");
        }
    }
    println!(
        "watching {} (experiment {}); state in {}",
        args.checkpoints.display(),
        args.experiment,
        watcher.state_path().display()
    );
    let summary = watcher.run_until(&stop)?;
    for e in &summary.steps {
        match &e.outcome {
            Outcome::Evaluated { metrics } => println!(
                "step {:>4}: valid acc {:.3}  ood acc {:.3}  ood entropy {:.3}",
                e.step,
                metrics
                    .get("eval/valid/accuracy")
                    .copied()
                    .unwrap_or(f64::NAN),
                metrics
                    .get("eval/ood/accuracy")
                    .copied()
                    .unwrap_or(f64::NAN),
                metrics.get("eval/ood/entropy").copied().unwrap_or(f64::NAN),
            ),
            other => println!("step {:>4}: {other:?}", e.step),
        }
    }
    println!("stopped: {:?}", summary.reason);
    drop(watcher);
    let status = match summary.reason {
        StopReason::TrainingCompleted => RunStatus::Completed,
        _ => RunStatus::Killed,
    };
    let report = tracker.finish(status)?;
    println!("{report}");
    if let Some(t) = trainer {
        t.join().map_err(|_| "training thread panicked")??;
    }
    Ok(())
}
