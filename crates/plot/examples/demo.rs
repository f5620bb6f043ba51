//! Writes a synthetic training run and plots it (this is how docs/plot-example.png is made).
//!
//! `cargo run -p exptrack-plot --example demo -- OUT_DIR`

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use exptrack_plot::{ConfusionMatrix, plot_run};

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    let out = std::env::args_os()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "plots".into());
    let runs = tempfile_dir()?;
    let tracker = ExperimentTracker::builder(ExperimentConfig::named("mnist-demo"))
        .runs_dir(&runs)
        .collect_system_info(false)
        .build()?;
    let steps_per_epoch = 50u64;
    for step in 1..=500u64 {
        let x = step as f64;
        // Deterministic wiggle instead of randomness.
        let noise = ((x * 12.9898).sin() * 43758.5453).fract() * 0.08;
        let warmup = (x / 50.0).min(1.0);
        let lr = 0.002 * warmup * (0.5 * (1.0 + (std::f64::consts::PI * x / 500.0).cos()));
        tracker.log_metrics(
            step,
            &[
                ("train/loss", 2.3 * (-x / 120.0).exp() + 0.08 + noise),
                (
                    "train/accuracy",
                    0.98 - 0.88 * (-x / 90.0).exp() - noise / 4.0,
                ),
                ("train/lr", lr),
            ],
        )?;
        if step % steps_per_epoch == 0 {
            tracker.log_metrics(
                step,
                &[
                    ("valid/loss", 2.3 * (-x / 130.0).exp() + 0.12),
                    ("valid/accuracy", 0.97 - 0.85 * (-x / 100.0).exp()),
                ],
            )?;
        }
    }
    let labels: Vec<String> = (0..10).map(|d| d.to_string()).collect();
    let counts = (0..10)
        .map(|t| {
            (0..10)
                .map(|p| {
                    if t == p {
                        95.0 + f64::from((t * 7) % 5)
                    } else {
                        f64::from((t * 3 + p * 5) % 7 / 3)
                    }
                })
                .collect()
        })
        .collect();
    let cm = ConfusionMatrix { labels, counts };
    tracker.log_text(500, "confusion_matrix", &cm.to_json().to_string())?;
    let run_dir = tracker.run_dir().to_path_buf();
    for line in tracker.finish(RunStatus::Completed)?.problem_lines() {
        eprintln!("warning: {line}");
    }
    for p in plot_run(&run_dir, &out)? {
        println!("{}", p.display());
    }
    std::fs::remove_dir_all(&runs)?;
    Ok(())
}

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let d = std::env::temp_dir().join(format!("exptrack-plot-demo-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    Ok(d)
}
