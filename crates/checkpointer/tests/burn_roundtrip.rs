//! Model, optimizer and LR scheduler state go into one checkpoint and come back (feature `burn-flex`).
#![cfg(feature = "burn-flex")]

use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::nn::LinearConfig;
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{Device, Distribution, Tensor};
use exptrack_checkpoint::burn_support::{BurnCheckpoint, MODEL_FILE};
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};

#[path = "common/burn_net.rs"]
mod burn_net;

use burn_net::{Net, net};

fn weights(n: &Net) -> Vec<f32> {
    let mut v: Vec<f32> = n.a.weight.val().into_data().try_to_vec::<f32>().unwrap();
    v.extend(n.b.weight.val().into_data().try_to_vec::<f32>().unwrap());
    v
}

#[test]
fn model_optimizer_scheduler_round_trip() {
    let device = Device::flex().autodiff();
    let mut model = net(&device);
    let mut optim = AdamConfig::new().init();
    let mut sched = LinearLrSchedulerConfig::new(1e-2, 1e-3, 100)
        .init()
        .unwrap();
    // A few real steps so the optimizer has moments and the scheduler a position.
    for _ in 0..3 {
        let x = Tensor::<2>::random([16, 4], Distribution::Default, &device);
        let loss = model.b.forward(model.a.forward(x)).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        let lr = sched.step();
        model = optim.step(lr, model, grads);
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = CheckpointConfig {
        dir: tmp.path().to_owned(),
        ..CheckpointConfig::default()
    };
    let mut ck = ModelCheckpointer::open("burn", cfg).unwrap();
    ck.save(
        Checkpoint::new(3)
            .with_model(&model)
            .unwrap()
            .with_optimizer(&optim)
            .unwrap()
            .with_lr_scheduler_record(sched.to_record())
            .unwrap(),
    )
    .unwrap();

    let mut loaded = ck.load_latest_valid().unwrap().unwrap();
    assert!(loaded.file(MODEL_FILE).is_some());
    let fresh = loaded.load_model(net(&device)).unwrap();
    assert_eq!(weights(&fresh), weights(&model));
    let restored_optim = loaded.load_optimizer(AdamConfig::new().init()).unwrap();
    let mut restored_sched = LinearLrSchedulerConfig::new(1e-2, 1e-3, 100)
        .init()
        .unwrap()
        .load_record(loaded.lr_scheduler_record().unwrap());
    assert_eq!(
        restored_sched.step().base(),
        sched.step().base(),
        "scheduler resumes at the same position"
    );
    // The restored optimizer continues exactly like the original one.
    let x = Tensor::<2>::random([16, 4], Distribution::Default, &device);
    let step = |m: Net, mut o: burn::optim::ModuleOptimizer| {
        let loss = m.b.forward(m.a.forward(x.clone())).powi_scalar(2).mean();
        let grads = GradientsParams::from_grads(loss.backward(), &m);
        weights(&o.step(1e-3, m, grads))
    };
    assert_eq!(step(fresh, restored_optim), step(model, optim));
    // A model of another shape is an error, not a panic.
    let mut again = ck.load(3).unwrap();
    let wrong = Net {
        a: LinearConfig::new(5, 8).init(&device),
        b: LinearConfig::new(8, 1).init(&device),
    };
    assert!(again.load_model(wrong).is_err());
}
