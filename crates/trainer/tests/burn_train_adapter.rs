//! A model written for burn-train (`TrainStep` / `InferenceStep`) trained by the TrainingManager
//! through `BurnTrainModel` (feature `burn-train`), against the same model through `TrainModel`.
mod common;

use std::sync::{Mutex, MutexGuard};

use common::*;
use exptrack_trainer::burn::module::Module;
use exptrack_trainer::burn::nn::loss::CrossEntropyLossConfig;
use exptrack_trainer::burn::nn::{Linear, LinearConfig};
use exptrack_trainer::burn::optim::GradientsParams;
use exptrack_trainer::burn::optim::ModuleOptimizer;
use exptrack_trainer::burn::optim::lr_scheduler::module_lr_scheduler::ModuleLearningRate;
use exptrack_trainer::burn::tensor::activation::relu;
use exptrack_trainer::burn::tensor::{Device, Tensor};
use exptrack_trainer::burn::train::{ClassificationOutput, InferenceStep, TrainOutput, TrainStep};
use exptrack_trainer::{
    BurnTrainModel, ClassificationBatch, ClippingKind, MixedPrecision, StepOutput, TrainModel,
    TrainingConfig, TrainingManager, TrainingResult,
};

/// A small classifier with both burn-train's traits and ours.
#[derive(Module, Debug)]
struct Net {
    a: Linear,
    b: Linear,
}

impl Net {
    fn new(inputs: usize, device: &Device) -> Self {
        Net {
            a: LinearConfig::new(inputs, 16).init(device),
            b: LinearConfig::new(16, 3).init(device),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.b.forward(relu(self.a.forward(x)))
    }
    fn classify(&self, batch: ClassificationBatch<2>) -> ClassificationOutput {
        let logits = self.forward(batch.inputs);
        let loss = CrossEntropyLossConfig::new()
            .init(&logits.device())
            .forward(logits.clone(), batch.targets.clone());
        ClassificationOutput::new(loss, logits, batch.targets)
    }
}

impl TrainStep for Net {
    type Input = ClassificationBatch<2>;
    type Output = ClassificationOutput;
    fn step(&self, batch: ClassificationBatch<2>) -> TrainOutput<ClassificationOutput> {
        let item = self.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
}

impl InferenceStep for Net {
    type Input = ClassificationBatch<2>;
    type Output = ClassificationOutput;
    fn step(&self, batch: ClassificationBatch<2>) -> ClassificationOutput {
        self.classify(batch)
    }
}

impl TrainModel for Net {
    type Batch = ClassificationBatch<2>;
    fn step(&self, batch: ClassificationBatch<2>) -> StepOutput {
        StepOutput::classification(self.forward(batch.inputs), batch.targets)
    }
}

/// burn's device RNG is process-wide: tests that compare seeded runs must not interleave.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn config(precision: MixedPrecision) -> TrainingConfig {
    quiet(TrainingConfig {
        num_epochs: 3,
        batch_size: 8,
        learning_rate: 0.01,
        gradient_accumulation_steps: 2,
        gradient_clipping: ClippingKind::Norm,
        max_grad_norm: 0.5,
        mixed_precision: precision,
        seed: 7,
        ..TrainingConfig::default()
    })
}

fn assert_learned(r: &TrainingResult) {
    let first = r.history.first().unwrap().metric("valid/loss").unwrap();
    let last = r.history.last().unwrap().metric("valid/loss").unwrap();
    assert!(last < first, "valid/loss {first} -> {last}");
    assert!(r.final_metric("valid/accuracy").is_some());
}

#[test]
fn a_burn_train_model_trains_to_the_same_weights_as_through_train_model() {
    let _serial = serial();
    let (train, valid) = (toy_data(96, 6, 1), toy_data(30, 6, 2));

    let mut m = TrainingManager::new(config(MixedPrecision::Off)).unwrap();
    let model = BurnTrainModel::new(Net::new(6, m.device()));
    let (adapted, r_adapted) = m.fit(model, &train, &valid).unwrap();
    assert_learned(&r_adapted);

    let mut m = TrainingManager::new(config(MixedPrecision::Off)).unwrap();
    let (own, r_own) = m.fit(Net::new(6, m.device()), &train, &valid).unwrap();

    let diff = max_abs_diff(&params_of(&adapted.into_inner()), &params_of(&own));
    eprintln!("max weight difference {diff}");
    assert!(diff <= 1e-6, "weights differ by {diff}");
    assert_eq!(r_adapted.steps, r_own.steps);
    for (a, b) in r_adapted.history.iter().zip(&r_own.history) {
        assert!(
            (a.train_loss - b.train_loss).abs() <= 1e-6,
            "{a:?} vs {b:?}"
        );
    }
}

#[test]
fn mixed_precision_is_refused_for_train_step_and_works_from_the_inference_loss() {
    let _serial = serial();
    let (train, valid) = (toy_data(96, 6, 1), toy_data(30, 6, 2));
    let mut m = TrainingManager::new(config(MixedPrecision::F16)).unwrap();
    let model = BurnTrainModel::new(Net::new(6, m.device()));
    let err = m.fit(model, &train, &valid).unwrap_err().to_string();
    assert!(
        err.contains("computes its own gradients") && err.contains("with_inference_loss"),
        "{err}"
    );

    let mut m = TrainingManager::new(config(MixedPrecision::F16)).unwrap();
    let model = BurnTrainModel::with_inference_loss(Net::new(6, m.device()));
    let (_, r) = m.fit(model, &train, &valid).unwrap();
    assert_learned(&r);
}

/// A burn-train model whose `optimize` does more than the optimizer step.
#[derive(Module, Debug)]
struct Clamped {
    net: Net,
}

impl TrainStep for Clamped {
    type Input = ClassificationBatch<2>;
    type Output = ClassificationOutput;
    fn step(&self, batch: ClassificationBatch<2>) -> TrainOutput<ClassificationOutput> {
        let item = self.net.classify(batch);
        TrainOutput::new(self, item.loss.backward(), item)
    }
    fn optimize(
        self,
        optim: &mut ModuleOptimizer,
        lr: ModuleLearningRate,
        grads: GradientsParams,
    ) -> Self {
        let stepped = optim.step(lr, self, grads);
        // Weight clipping after every update, as a WGAN critic does.
        let mut b = stepped.net.b;
        b.weight = b
            .weight
            .map(|w| w.inner().clamp(-0.01, 0.01).autodiff().require_grad());
        Clamped {
            net: Net {
                a: stepped.net.a,
                b,
            },
        }
    }
}

impl InferenceStep for Clamped {
    type Input = ClassificationBatch<2>;
    type Output = ClassificationOutput;
    fn step(&self, batch: ClassificationBatch<2>) -> ClassificationOutput {
        self.net.classify(batch)
    }
}

#[test]
fn train_step_optimize_is_honoured() {
    let _serial = serial();
    let (train, valid) = (toy_data(48, 6, 1), toy_data(12, 6, 2));
    let mut m = TrainingManager::new(config(MixedPrecision::Off)).unwrap();
    let model = BurnTrainModel::new(Clamped {
        net: Net::new(6, m.device()),
    });
    let (trained, _) = m.fit(model, &train, &valid).unwrap();
    let w = params_of(&trained.into_inner().net.b.weight);
    assert!(w.iter().all(|v| v.abs() <= 0.01), "{w:?}");
}
