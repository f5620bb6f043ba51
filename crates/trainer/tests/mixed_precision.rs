//! Mixed precision on burn's flex CPU backend: casts, loss scaling, skip-on-inf.
mod common;

use common::*;
use exptrack_trainer::amp::cast_module;
use exptrack_trainer::burn::module::{Module, ModuleVisitor, Param};
use exptrack_trainer::burn::optim::GradientsParams;
use exptrack_trainer::burn::tensor::{DType, FloatDType, Tensor};
use exptrack_trainer::data::{BatchContext, BatchSource};
use exptrack_trainer::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
use exptrack_trainer::{MemorySink, MixedPrecision, TrainModel, TrainingConfig, TrainingManager};

#[test]
fn casting_in_the_forward_gives_f32_gradients_on_the_master() {
    let m = TrainingManager::new(quiet(TrainingConfig::default())).unwrap();
    let device = m.device().clone();
    let master = small_mlp(&device, 6);
    let half = cast_module(master.clone(), FloatDType::F16);
    let data = toy_data(9, 6, 2);
    let ctx = BatchContext {
        device,
        float_dtype: FloatDType::F16,
    };
    let out = half.step(data.batch(&(0..9).collect::<Vec<_>>(), &ctx).unwrap());
    assert_eq!(out.loss.dtype(), DType::F16);
    let grads = GradientsParams::from_grads(out.loss.cast(FloatDType::F32).backward(), &master);
    struct Check<'a>(&'a GradientsParams, usize);
    impl ModuleVisitor for Check<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let g = self
                .0
                .get::<D>(p.id)
                .expect("every master parameter has a gradient");
            assert_eq!(g.dtype(), DType::F32);
            assert_eq!(p.val().dtype(), DType::F32);
            self.1 += 1;
        }
    }
    let mut c = Check(&grads, 0);
    master.visit(&mut c);
    assert_eq!(c.1, 6);
}

#[test]
fn injected_inf_gradients_skip_the_step_and_halve_the_scale() {
    let cfg = quiet(TrainingConfig {
        num_epochs: 1,
        batch_size: 8,
        shuffle: false,
        mixed_precision: MixedPrecision::F16,
        loss_scale_init: 1024.0,
        ..TrainingConfig::default()
    });
    let mut m = TrainingManager::new(cfg.clone())
        .unwrap()
        .inject_nonfinite_grads_at(vec![1]);
    let init = model_to_bytes(&small_mlp(m.device(), 6)).unwrap();
    let model = model_from_bytes(small_mlp(m.device(), 6), init.clone()).unwrap();
    let data = toy_data(16, 6, 4); // two steps: step 0 finite, step 1 injected
    let (model, result) = m.fit(model, &data, &data).unwrap();
    assert_eq!(result.steps, 2);
    assert_eq!(result.skipped_steps, 1);
    assert_eq!(result.loss_scale, Some(512.0));

    // A run over the first batch only ends at exactly the same weights: the skipped step
    // touched neither them nor the optimizer state.
    let mut one = TrainingManager::new(cfg).unwrap();
    let model1 = model_from_bytes(small_mlp(one.device(), 6), init).unwrap();
    let first = data.subset(&(0..8).collect::<Vec<_>>()).unwrap();
    let (model1, r1) = one.fit(model1, &first, &first).unwrap();
    assert_eq!(r1.steps, 1);
    assert_eq!(r1.skipped_steps, 0);
    assert_eq!(r1.loss_scale, Some(1024.0));
    assert_eq!(params_of(&model), params_of(&model1));
}

#[test]
fn a_skipped_step_does_not_advance_the_lr_schedule() {
    // Warm-up over 4 steps: applied steps use 1/4, 2/4, 3/4, 4/4 of the rate. Step 1 is skipped,
    // so it is logged with the rate it would have used and step 2 uses that rate again.
    let cfg = quiet(TrainingConfig {
        num_epochs: 1,
        batch_size: 4,
        shuffle: false,
        mixed_precision: MixedPrecision::F16,
        loss_scale_init: 1024.0,
        learning_rate: 0.1,
        warmup_steps: 4,
        log_frequency: 1,
        ..TrainingConfig::default()
    });
    let sink = MemorySink::new();
    let mut m = TrainingManager::new(cfg)
        .unwrap()
        .with_sink(sink.clone())
        .inject_nonfinite_grads_at(vec![1]);
    let model = small_mlp(m.device(), 6);
    let data = toy_data(20, 6, 4); // five steps
    let (_, result) = m.fit(model, &data, &data).unwrap();
    assert_eq!(result.steps, 5);
    assert_eq!(result.skipped_steps, 1);
    let lrs: Vec<f64> = sink
        .series("train/lr")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let expected = [0.025, 0.05, 0.05, 0.075, 0.1];
    assert_eq!(lrs.len(), expected.len(), "{lrs:?}");
    for (got, want) in lrs.iter().zip(expected) {
        assert!(
            (got - want).abs() < 1e-12,
            "lr per step {lrs:?}, expected {expected:?}"
        );
    }
}

#[test]
fn two_thousand_finite_steps_double_the_scale() {
    // bf16 has f32's range, so no overflow interferes; batch 1 → 2000 steps in one epoch.
    let cfg = quiet(TrainingConfig {
        num_epochs: 1,
        batch_size: 1,
        mixed_precision: MixedPrecision::Bf16,
        learning_rate: 1e-4,
        ..TrainingConfig::default()
    });
    let mut m = TrainingManager::new(cfg).unwrap();
    let model = small_mlp(m.device(), 3);
    let data = toy_data(2000, 3, 5);
    let small = toy_data(3, 3, 6);
    let (_, r) = m.fit(model, &data, &small).unwrap();
    assert_eq!(r.steps, 2000);
    assert_eq!(r.skipped_steps, 0);
    assert_eq!(r.loss_scale, Some(131072.0));
}

fn quickstart_accuracy(precision: MixedPrecision) -> f64 {
    let (train, valid) = generate_dataset(4000, 1000, 42).unwrap();
    let cfg = quiet(TrainingConfig {
        num_epochs: 4,
        batch_size: 64,
        learning_rate: 0.002,
        mixed_precision: precision,
        seed: 42,
        ..TrainingConfig::default()
    });
    let mut m = TrainingManager::new(cfg).unwrap();
    m.device().seed(42);
    let model = Mlp::new(FEATURES, 64, CLASSES, m.device());
    let (_, r) = m.fit(model, &train, &valid).unwrap();
    r.final_metric("valid/accuracy").unwrap()
}

#[test]
fn f16_training_reaches_the_f32_accuracy_within_one_point() {
    let f32_acc = quickstart_accuracy(MixedPrecision::Off);
    let f16_acc = quickstart_accuracy(MixedPrecision::F16);
    eprintln!("quickstart model: f32 accuracy {f32_acc:.4}, f16 accuracy {f16_acc:.4}");
    assert!(f32_acc > 0.85, "f32 baseline too weak: {f32_acc}");
    assert!(f16_acc >= f32_acc - 0.01, "f16 {f16_acc} vs f32 {f32_acc}");
}
