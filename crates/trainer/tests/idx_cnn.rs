//! The IDX loader on generated MNIST-layout files, and the small CNN training on them.

use exptrack_trainer::cnn::SmallCnn;
use exptrack_trainer::eval::Evaluator;
use exptrack_trainer::idx::{encode_idx_u8, load_mnist_dir};
use exptrack_trainer::{BatchSource, TrainingConfig, TrainingManager};

fn write_set(dir: &std::path::Path, prefix: &str, n: usize) {
    let mut pixels = Vec::with_capacity(n * 784);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let class = (i % 4) as u8;
        for r in 0..28 {
            for c in 0..28 {
                // class k lights rows 7k..7k+7, plus a little position-dependent texture
                let on = r / 7 == class as usize;
                pixels.push(if on {
                    230
                } else {
                    ((r * 3 + c * 5 + i) % 40) as u8
                });
            }
        }
        labels.push(class);
    }
    std::fs::write(
        dir.join(format!("{prefix}-images-idx3-ubyte")),
        encode_idx_u8(&[n, 28, 28], &pixels).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join(format!("{prefix}-labels-idx1-ubyte")),
        encode_idx_u8(&[n], &labels).unwrap(),
    )
    .unwrap();
}

#[test]
fn loads_generated_idx_files_and_trains_the_cnn() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "train", 96);
    write_set(dir.path(), "t10k", 32);
    let (train, test) = load_mnist_dir(dir.path()).unwrap();
    assert_eq!(train.len(), 96);
    assert_eq!(test.labels()[..5], [0, 1, 2, 3, 0]);

    let cfg = TrainingConfig {
        num_epochs: 3,
        batch_size: 16,
        learning_rate: 3e-3,
        progress: false,
        device: "cpu".into(),
        ..TrainingConfig::default()
    };
    let mut m = TrainingManager::new(cfg).unwrap();
    let model = SmallCnn::new(28, 28, 4, m.device());
    let (model, r) = m.fit(model, &train, &test).unwrap();
    assert_eq!(r.steps, 18);
    let report = Evaluator::new("test")
        .evaluate(&model, &test, m.device())
        .unwrap();
    let cls = report.classification.as_ref().unwrap();
    assert!(cls.accuracy > 0.9, "accuracy {}", cls.accuracy);
    assert_eq!(cls.confusion.len(), 4);
    assert!(report.scalars().iter().any(|(k, _)| k == "eval/test/ece"));
}

#[test]
fn mismatched_idx_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    write_set(dir.path(), "train", 8);
    write_set(dir.path(), "t10k", 4);
    std::fs::write(
        dir.path().join("t10k-labels-idx1-ubyte"),
        encode_idx_u8(&[3], &[0, 1, 2]).unwrap(),
    )
    .unwrap();
    let err = load_mnist_dir(dir.path()).unwrap_err().to_string();
    assert!(err.contains("labels for 4 images"), "{err}");
}
