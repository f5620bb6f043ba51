//! A small classifier written the way burn's examples write them (`TrainStep` /
//! `InferenceStep`, a `Batcher`, `DataLoaderBuilder`), for the burn-train tests and bench.
#![allow(dead_code)]

use std::sync::Arc;

use exptrack::trainer::burn;

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataloader::{DataLoader, DataLoaderBuilder};
use burn::data::dataset::InMemDataset;
use burn::module::Module;
use burn::nn::loss::CrossEntropyLossConfig;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Int, Tensor, TensorData};
use burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};

pub const FEATURES: usize = 8;
pub const CLASSES: usize = 3;

#[derive(Module, Debug)]
pub struct Net {
    a: Linear,
    b: Linear,
}

impl Net {
    pub fn new(device: &Device) -> Self {
        Net {
            a: LinearConfig::new(FEATURES, 32).init(device),
            b: LinearConfig::new(32, CLASSES).init(device),
        }
    }

    fn classify(&self, batch: Batch) -> ClassificationOutput {
        let logits = self.b.forward(relu(self.a.forward(batch.inputs)));
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Net {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> TrainOutput<ClassificationOutput> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Net {
    type Input = Batch;
    type Output = ClassificationOutput;
    fn step(&self, batch: Batch) -> ClassificationOutput {
        self.classify(batch)
    }
}

#[derive(Clone, Debug)]
pub struct Item {
    pub x: [f32; FEATURES],
    pub y: i64,
}

#[derive(Clone, Debug)]
pub struct Batch {
    pub inputs: Tensor<2>,
    pub targets: Tensor<1, Int>,
}

/// Builds batches; `hook` runs before each batch (tests use it to slow down or kill a run).
#[derive(Clone, Default)]
pub struct NetBatcher {
    pub hook: Option<Arc<dyn Fn() + Send + Sync>>,
}

impl Batcher<Item, Batch> for NetBatcher {
    fn batch(&self, items: Vec<Item>, device: &Device) -> Batch {
        if let Some(h) = &self.hook {
            h();
        }
        let n = items.len();
        let x: Vec<f32> = items.iter().flat_map(|i| i.x).collect();
        let y: Vec<i64> = items.iter().map(|i| i.y).collect();
        Batch {
            inputs: Tensor::<2>::from_data(TensorData::new(x, [n, FEATURES]), device),
            targets: Tensor::<1, Int>::from_data(TensorData::new(y, [n]), device),
        }
    }
}

/// Three Gaussian blobs, deterministic in `seed`.
pub fn items(n: usize, seed: u64) -> Vec<Item> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = move || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
    };
    (0..n)
        .map(|i| {
            let y = (i % CLASSES) as i64;
            let mut x = [0f32; FEATURES];
            for (j, v) in x.iter_mut().enumerate() {
                let centre = if j % CLASSES == y as usize { 1.5 } else { 0.0 };
                *v = centre + 2.0 * next();
            }
            Item { x, y }
        })
        .collect()
}

pub type Loader = Arc<dyn DataLoader<Batch>>;

/// `(train, valid)` loaders of `train_items` / `valid_items`, batches of `batch_size`.
pub fn loaders(
    train_items: usize,
    valid_items: usize,
    batch_size: usize,
    train_batcher: NetBatcher,
) -> (Loader, Loader) {
    let train = DataLoaderBuilder::new(train_batcher)
        .batch_size(batch_size)
        .build(InMemDataset::new(items(train_items, 1)));
    let valid = DataLoaderBuilder::new(NetBatcher::default())
        .batch_size(batch_size)
        .build(InMemDataset::new(items(valid_items, 2)));
    (train, valid)
}
