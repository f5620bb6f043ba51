//! Quickstart: trains a small classifier on generated data with tracking to a local run
//! directory (local store + TensorBoard files) and prints where to look.
//!
//! ```text
//! cargo run --release --example quickstart
//! cargo run --release --example quickstart -- --config examples/quickstart.toml
//! ```
//!
//! Options: `--config FILE` (TOML as in the README), `--runs DIR` (default `runs`),
//! `--epochs N`, `--mlflow URI` (also log to an MLflow server; needs `--features mlflow`),
//! `--wandb offline|online` (also log to W&B; needs `--features wandb`).

use std::path::PathBuf;

use exptrack::{ExperimentConfig, RunStatus};

struct Args {
    config: Option<PathBuf>,
    runs: Option<PathBuf>,
    epochs: usize,
    mlflow: Option<String>,
    wandb: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        runs: None,
        epochs: 30,
        mlflow: None,
        wandb: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--config" => args.config = Some(it.next().ok_or("--config needs a file")?.into()),
            "--runs" => args.runs = Some(it.next().ok_or("--runs needs a directory")?.into()),
            "--epochs" => {
                args.epochs = it
                    .next()
                    .ok_or("--epochs needs a number")?
                    .parse()
                    .map_err(|e| format!("--epochs: {e}"))?
            }
            "--mlflow" => args.mlflow = Some(it.next().ok_or("--mlflow needs a tracking URI")?),
            "--wandb" => {
                let mode = it.next().ok_or("--wandb needs offline or online")?;
                if mode != "offline" && mode != "online" {
                    return Err(format!("--wandb {mode:?}: expected offline or online"));
                }
                args.wandb = Some(mode);
            }
            "-h" | "--help" => {
                println!(
                    "usage: quickstart [--config FILE] [--runs DIR] [--epochs N] [--mlflow URI] [--wandb offline|online]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    Ok(args)
}

/// Two Gaussian blobs in 8 dimensions, deterministic (xorshift), labels 0/1.
fn dataset(n: usize, seed: u64) -> Vec<([f64; 8], f64)> {
    let mut s = seed | 1;
    let mut rnd = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        (s >> 11) as f64 / (1u64 << 53) as f64
    };
    let mut gauss = move || {
        let (u, v) = (rnd().max(1e-12), rnd());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    };
    (0..n)
        .map(|i| {
            let y = (i % 2) as f64;
            let mut x = [0.0; 8];
            for (d, xd) in x.iter_mut().enumerate() {
                let centre = if y > 0.5 { 0.6 } else { -0.6 } * if d % 2 == 0 { 1.0 } else { -0.5 };
                *xd = centre + gauss();
            }
            (x, y)
        })
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let mut config = match &args.config {
        Some(p) => ExperimentConfig::from_file(p)?,
        None => ExperimentConfig::named("quickstart"),
    };
    if let Some(r) = &args.runs {
        config.tracking.runs_dir = r.clone();
    }
    if let Some(uri) = &args.mlflow {
        config.tracking.use_mlflow = true;
        config.tracking.mlflow_tracking_uri = Some(uri.clone());
    }
    if let Some(mode) = &args.wandb {
        config.tracking.use_wandb = true;
        config.tracking.wandb_mode = Some(mode.clone());
    }
    let lr = 0.1;
    let tracker = exptrack::tracker(config)?.build()?;
    tracker.log_hyperparameters(&[
        ("lr", exptrack::ParamValue::from(lr)),
        ("epochs", exptrack::ParamValue::from(args.epochs)),
        ("model", exptrack::ParamValue::from("logistic regression")),
    ])?;

    let train = dataset(4000, 7);
    let valid = dataset(1000, 11);
    let mut w = [0.0f64; 8];
    let mut b = 0.0f64;
    let mut step = 0u64;
    let sigmoid = |z: f64| 1.0 / (1.0 + (-z).exp());
    let mut acc = 0.0;
    for epoch in 0..args.epochs {
        for chunk in train.chunks(64) {
            let (mut gw, mut gb, mut loss) = ([0.0; 8], 0.0, 0.0);
            for (x, y) in chunk {
                let p = sigmoid(x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b);
                loss -= y * p.max(1e-12).ln() + (1.0 - y) * (1.0 - p).max(1e-12).ln();
                for d in 0..8 {
                    gw[d] += (p - y) * x[d];
                }
                gb += p - y;
            }
            let n = chunk.len() as f64;
            for d in 0..8 {
                w[d] -= lr * gw[d] / n;
            }
            b -= lr * gb / n;
            step += 1;
            tracker.log_metrics(step, &[("train/loss", loss / n), ("train/lr", lr)])?;
        }
        let correct = valid
            .iter()
            .filter(|(x, y)| {
                let p = sigmoid(x.iter().zip(&w).map(|(a, b)| a * b).sum::<f64>() + b);
                (p > 0.5) == (*y > 0.5)
            })
            .count();
        acc = correct as f64 / valid.len() as f64;
        tracker.log_metrics(step, &[("val/accuracy", acc), ("epoch", epoch as f64)])?;
    }
    tracker.set_result("final_val_accuracy", serde_json::json!(acc))?;
    let run_dir = tracker.run_dir().to_path_buf();
    let report = tracker.finish(RunStatus::Completed)?;
    println!("final validation accuracy: {:.2}%", acc * 100.0);
    println!("run directory: {}", run_dir.display());
    println!("  events.jsonl, summary.json, results.json: the local store");
    println!(
        "  TensorBoard: tensorboard --logdir {}",
        run_dir
            .parent()
            .and_then(|p| p.parent())
            .unwrap_or(&run_dir)
            .display()
    );
    if let Some(uri) = &args.mlflow {
        println!(
            "  MLflow: {uri} (experiment {:?})",
            report
                .run_dir
                .parent()
                .and_then(|p| p.file_name())
                .unwrap_or_default()
        );
    }
    if args.wandb.as_deref() == Some("offline") {
        print_wandb_sync(&run_dir);
    }
    if !report.is_complete() {
        println!("{report}");
    }
    Ok(())
}

/// Prints the `wandb sync` command for the offline W&B run of this run.
fn print_wandb_sync(run_dir: &std::path::Path) {
    #[cfg(feature = "wandb")]
    {
        let run_id = run_dir
            .file_name()
            .map(|n| exptrack::wandb::sanitize_run_id(&n.to_string_lossy()))
            .unwrap_or_default();
        let root = std::env::var_os("WANDB_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("."))
            .join("wandb");
        let found = std::fs::read_dir(&root).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name().is_some_and(|n| {
                    let n = n.to_string_lossy();
                    n.starts_with("offline-run-") && n.ends_with(&format!("-{run_id}"))
                })
            })
        });
        match found {
            Some(dir) => println!(
                "  W&B (offline): upload with `wandb sync {}`",
                dir.display()
            ),
            None => println!("  W&B (offline): run directory under {}", root.display()),
        }
    }
    #[cfg(not(feature = "wandb"))]
    let _ = run_dir;
}
