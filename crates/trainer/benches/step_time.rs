//! TrainingManager step time vs a hand-written burn loop on the same model and data.
//!
//! One iteration = one epoch (125 optimizer steps of batch 64 on the quickstart MLP,
//! 16 → 128 → 128 → 10, AdamW, f32, CPU flex) plus one validation batch. The hand-written loop
//! does what a minimal burn loop does: build the batch, forward, backward, `GradientsParams`,
//! `optim.step`, and read the loss back once per step.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use criterion::{Criterion, criterion_group, criterion_main};
use exptrack_trainer::burn::module::Module;
use exptrack_trainer::burn::optim::GradientsParams;
use exptrack_trainer::burn::tensor::FloatDType;
use exptrack_trainer::data::{BatchContext, BatchSource, epoch_order};
use exptrack_trainer::optim::build_optimizer;
use exptrack_trainer::quickstart::{CLASSES, FEATURES, Mlp, generate_dataset};
use exptrack_trainer::{TrainModel, TrainingConfig, TrainingManager};

fn config() -> TrainingConfig {
    TrainingConfig {
        num_epochs: 1,
        batch_size: 64,
        learning_rate: 1e-3,
        log_frequency: 25,
        progress: false,
        device: "cpu".into(),
        ..TrainingConfig::default()
    }
}

fn bench(c: &mut Criterion) {
    let (train, _) = generate_dataset(8000, 1, 42).expect("dataset");
    let (_, valid) = generate_dataset(1, 64, 43).expect("dataset");
    let mut group = c.benchmark_group("epoch_125_steps");
    group.sample_size(20);

    group.bench_function("hand_written_burn_loop", |b| {
        let cfg = config();
        let device = cfg.resolve_device().expect("device").autodiff();
        let ctx = BatchContext {
            device: device.clone(),
            float_dtype: FloatDType::F32,
        };
        let vctx = BatchContext {
            device: device.clone().without_autodiff(),
            float_dtype: FloatDType::F32,
        };
        b.iter(|| {
            let mut model = Mlp::new(FEATURES, 128, CLASSES, &device);
            let mut optim = build_optimizer(&cfg);
            let order = epoch_order(train.len(), cfg.seed, 0, true);
            let mut last = 0.0f32;
            for idx in order.chunks(cfg.batch_size) {
                let out = model.step(train.batch(idx, &ctx).expect("batch"));
                let loss = out.loss;
                let grads = GradientsParams::from_grads(loss.backward(), &model);
                model = optim.step(cfg.learning_rate, model, grads);
                last = loss.into_scalar::<f32>();
            }
            let v = model.valid();
            let idx: Vec<usize> = (0..valid.len()).collect();
            let out = v.step(valid.batch(&idx, &vctx).expect("batch"));
            (last, out.loss.into_scalar::<f32>())
        })
    });

    group.bench_function("training_manager", |b| {
        b.iter(|| {
            let mut m = TrainingManager::new(config()).expect("manager");
            let model = Mlp::new(FEATURES, 128, CLASSES, m.device());
            let (_, r) = m.fit(model, &train, &valid).expect("fit");
            r.steps
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
