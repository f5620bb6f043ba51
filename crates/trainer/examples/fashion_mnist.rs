//! Fashion-MNIST (or MNIST) with a small CNN through the TrainingManager.
//!
//! ```text
//! cargo run --release -p exptrack-trainer --example fashion_mnist -- DIR [EPOCHS]
//! ```
//! DIR holds the four uncompressed IDX files (`train-images-idx3-ubyte`,
//! `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte`, `t10k-labels-idx1-ubyte`). Without DIR
//! the example writes a small synthetic IDX set (class-dependent stripes plus noise) to a
//! temporary directory and trains on that, so it runs offline.

use std::path::{Path, PathBuf};

use exptrack_trainer::cnn::SmallCnn;
use exptrack_trainer::eval::Evaluator;
use exptrack_trainer::idx::{encode_idx_u8, load_mnist_dir};
use exptrack_trainer::{MemorySink, TrainingConfig, TrainingManager};

/// Writes `n_train` / `n_test` 28×28 images whose class sets a stripe position.
fn write_synthetic(dir: &Path, n_train: usize, n_test: usize) -> std::io::Result<()> {
    let mut seed = 12345u64;
    let mut noise = || {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
        (seed >> 58) as u8 // 0..63
    };
    for (prefix, n) in [("train", n_train), ("t10k", n_test)] {
        let mut pixels = Vec::with_capacity(n * 784);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (i % 10) as u8;
            for r in 0..28 {
                for _c in 0..28 {
                    let on = r / 3 == class as usize % 9 || (class == 9 && r > 24);
                    pixels.push(if on { 200 } else { 0 } + noise());
                }
            }
            labels.push(class);
        }
        let imgs = encode_idx_u8(&[n, 28, 28], &pixels).map_err(std::io::Error::other)?;
        let labs = encode_idx_u8(&[n], &labels).map_err(std::io::Error::other)?;
        std::fs::write(dir.join(format!("{prefix}-images-idx3-ubyte")), imgs)?;
        std::fs::write(dir.join(format!("{prefix}-labels-idx1-ubyte")), labs)?;
    }
    Ok(())
}

/// Errors print with `Display` and their causes (`exptrack_core::error::Reported`), never `Debug`.
fn main() -> Result<(), exptrack_core::error::Reported> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let _tmp;
    let dir: PathBuf = match args.first() {
        Some(d) => PathBuf::from(d),
        None => {
            let t = tempfile::tempdir()?;
            write_synthetic(t.path(), 2000, 500)?;
            println!(
                "no directory given: training on synthetic IDX files in {}",
                t.path().display()
            );
            let p = t.path().to_path_buf();
            _tmp = t;
            p
        }
    };
    let epochs: usize = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(2);
    let (train, test) = load_mnist_dir(&dir)?;
    println!(
        "{} training and {} test images",
        train.labels().len(),
        test.labels().len()
    );

    let config = TrainingConfig {
        num_epochs: epochs,
        batch_size: 64,
        learning_rate: 1e-3,
        log_frequency: 50,
        device: "auto".into(),
        ..TrainingConfig::default()
    };
    let sink = MemorySink::new();
    let mut manager = TrainingManager::new(config)?.with_sink(sink.clone());
    let model = SmallCnn::new(28, 28, 10, manager.device());
    let (model, result) = manager.fit(model, &train, &test)?;
    let report = Evaluator::new("test").evaluate(&model, &test, manager.device())?;
    report.log(&sink, result.steps)?;
    for (k, v) in report.scalars() {
        println!("{k} = {v:.4}");
    }
    Ok(())
}
