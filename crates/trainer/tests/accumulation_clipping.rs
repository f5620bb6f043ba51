//! Gradient accumulation averages; clipping follows PyTorch.
mod common;

use common::*;
use exptrack_trainer::burn::optim::GradientsParams;
use exptrack_trainer::burn::tensor::FloatDType;
use exptrack_trainer::data::{BatchContext, BatchSource};
use exptrack_trainer::grads;
use exptrack_trainer::{OptimizerKind, TrainModel, TrainingConfig, TrainingManager};

fn one_step(batch_size: usize, accumulation: usize, init: &[u8]) -> Vec<f32> {
    let cfg = quiet(TrainingConfig {
        num_epochs: 1,
        batch_size,
        gradient_accumulation_steps: accumulation,
        optimizer: OptimizerKind::Sgd,
        learning_rate: 0.5,
        shuffle: false,
        ..TrainingConfig::default()
    });
    let mut m = TrainingManager::new(cfg).unwrap();
    let model = model_from_bytes(small_mlp(m.device(), 6), init.to_vec()).unwrap();
    let data = toy_data(8, 6, 1);
    let (model, result) = m.fit(model, &data, &data).unwrap();
    assert_eq!(result.steps, 1, "exactly one optimizer step");
    params_of(&model)
}

#[test]
fn k_micro_batches_equal_one_big_batch() {
    let m = TrainingManager::new(quiet(TrainingConfig::default())).unwrap();
    let init = model_to_bytes(&small_mlp(m.device(), 6)).unwrap();
    let before = params_of(&model_from_bytes(small_mlp(m.device(), 6), init.clone()).unwrap());
    let big = one_step(8, 1, &init);
    let micro = one_step(2, 4, &init);
    let diff = max_abs_diff(&big, &micro);
    assert!(diff < 1e-5, "accumulated update differs by {diff}");
    // And the step actually moved the weights by far more than the tolerance.
    assert!(max_abs_diff(&before, &big) > 1e-3);
}

fn grads_of() -> (exptrack_trainer::quickstart::Mlp, GradientsParams) {
    let m = TrainingManager::new(quiet(TrainingConfig::default())).unwrap();
    let device = m.device().clone();
    let model = small_mlp(&device, 6);
    let data = toy_data(12, 6, 3);
    let ctx = BatchContext {
        device,
        float_dtype: FloatDType::F32,
    };
    let out = model.step(data.batch(&(0..12).collect::<Vec<_>>(), &ctx).unwrap());
    let g = GradientsParams::from_grads(out.loss.mul_scalar(50.0).backward(), &model);
    (model, g)
}

#[test]
fn global_norm_clipping_scales_all_gradients_together() {
    let (model, g) = grads_of();
    let norm = grads::global_norm(&model, &g).unwrap();
    assert!(
        norm > 0.5,
        "test needs a norm above the threshold, got {norm}"
    );
    let (clipped, reported) = grads::clip_grad_norm(&model, g, 0.5).unwrap();
    assert!((reported - norm).abs() < 1e-9);
    let after = grads::global_norm(&model, &clipped).unwrap();
    // PyTorch: coef = max_norm / (norm + 1e-6)
    let expected = norm * 0.5 / (norm + 1e-6);
    assert!((after - expected).abs() < 1e-5, "{after} vs {expected}");
    // Below the threshold nothing changes.
    let (model2, g2) = grads_of();
    let norm2 = grads::global_norm(&model2, &g2).unwrap();
    let (unclipped, _) = grads::clip_grad_norm(&model2, g2, norm2 * 2.0).unwrap();
    assert!((grads::global_norm(&model2, &unclipped).unwrap() - norm2).abs() < 1e-5);
}

#[test]
fn value_clipping_bounds_every_element() {
    let (model, g) = grads_of();
    let clipped = grads::clip_grad_value(&model, g, 0.01);
    let sq = grads::global_norm(&model, &clipped).unwrap();
    let n = params_of(&model).len() as f64;
    assert!(sq <= 0.01 * n.sqrt() + 1e-6);
    assert!(sq > 0.0);
}

#[test]
fn clip_coefficient_matches_pytorch() {
    assert_eq!(grads::clip_coefficient(0.5, 1.0), 1.0);
    assert!((grads::clip_coefficient(4.0, 1.0) - 1.0 / (4.0 + 1e-6)).abs() < 1e-15);
}
