//! A small CNN for 28×28 single-channel images (MNIST / Fashion-MNIST), used by the
//! `fashion_mnist` example and its tests.

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{MaxPool2d, MaxPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d};
use burn::tensor::activation::relu;
use burn::tensor::{Device, Tensor};

use crate::data::ClassificationBatch;
use crate::model::{StepOutput, TrainModel};

/// conv(1→16, 3×3, same) → ReLU → maxpool 2 → conv(16→32, 3×3, same) → ReLU → maxpool 2 →
/// linear(32·(h/4)·(w/4) → 64) → ReLU → linear(64 → classes).
#[derive(Module, Debug)]
pub struct SmallCnn {
    conv1: Conv2d,
    conv2: Conv2d,
    pool: MaxPool2d,
    fc1: Linear,
    fc2: Linear,
}

impl SmallCnn {
    /// A CNN for `height × width` single-channel images and `classes` classes.
    pub fn new(height: usize, width: usize, classes: usize, device: &Device) -> Self {
        let conv = |i, o| {
            Conv2dConfig::new([i, o], [3, 3])
                .with_padding(PaddingConfig2d::Same)
                .init(device)
        };
        SmallCnn {
            conv1: conv(1, 16),
            conv2: conv(16, 32),
            pool: MaxPool2dConfig::new([2, 2]).init(),
            fc1: LinearConfig::new(32 * (height / 4) * (width / 4), 64).init(device),
            fc2: LinearConfig::new(64, classes).init(device),
        }
    }

    /// Logits for `[batch, 1, h, w]` images.
    pub fn forward(&self, x: Tensor<4>) -> Tensor<2> {
        let x = self.pool.forward(relu(self.conv1.forward(x)));
        let x = self.pool.forward(relu(self.conv2.forward(x)));
        let x: Tensor<2> = x.flatten(1, 3);
        self.fc2.forward(relu(self.fc1.forward(x)))
    }
}

impl TrainModel for SmallCnn {
    type Batch = ClassificationBatch<4>;

    fn step(&self, batch: Self::Batch) -> StepOutput {
        StepOutput::classification(self.forward(batch.inputs), batch.targets)
    }
}
