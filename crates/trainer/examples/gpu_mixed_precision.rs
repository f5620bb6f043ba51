//! The same model in f32 and f16 on a GPU through the TrainingManager, against raw burn loops.
//!
//! 3-layer MLP (64 → H → H → 1, H = 4096), batch 1024, MSE regression, AdamW. Warms up (kernel
//! autotuning of every new shape runs through the first steps), then reports ms/step and the
//! final loss for: raw burn f32, raw burn f16 (cast in forward), TrainingManager f32 and
//! TrainingManager f16 (dynamic loss scaling included).
//!
//! ```text
//! cargo build --release -p exptrack-trainer --features vulkan --example gpu_mixed_precision
//! target/release/examples/gpu_mixed_precision [--device vulkan] [--hidden 4096] [--batch 1024] [--steps 100] [--warmup 20]
//! ```
//! Built without a GPU feature, `--device cpu --hidden 256 --batch 64` runs a small smoke test
//! on the CPU; asking for a GPU device then explains which feature is missing.

use std::time::Instant;

use exptrack_trainer::amp::cast_module;
use exptrack_trainer::burn::module::Module;
use exptrack_trainer::burn::nn::{Linear, LinearConfig};
use exptrack_trainer::burn::optim::GradientsParams;
use exptrack_trainer::burn::tensor::activation::relu;
use exptrack_trainer::burn::tensor::{Device, Distribution, FloatDType, Tensor};
use exptrack_trainer::data::{BatchContext, BatchSource};
use exptrack_trainer::manager::build_optimizer;
use exptrack_trainer::{
    MixedPrecision, ModelOutput, StepOutput, TrainModel, TrainingConfig, TrainingManager,
};

#[derive(Module, Debug)]
struct Mlp3 {
    a: Linear,
    b: Linear,
    c: Linear,
}

impl Mlp3 {
    fn new(hidden: usize, device: &Device) -> Self {
        Mlp3 {
            a: LinearConfig::new(64, hidden).init(device),
            b: LinearConfig::new(hidden, hidden).init(device),
            c: LinearConfig::new(hidden, 1).init(device),
        }
    }
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.c
            .forward(relu(self.b.forward(relu(self.a.forward(x)))))
    }
}

#[derive(Clone)]
struct Batch {
    x: Tensor<2>,
    y: Tensor<2>,
}

impl TrainModel for Mlp3 {
    type Batch = Batch;
    fn step(&self, batch: Batch) -> StepOutput {
        let pred = self.forward(batch.x);
        let y = batch.y.cast(pred.dtype());
        let loss = (pred.clone() - y.clone()).square().mean();
        StepOutput {
            num_items: pred.dims()[0],
            loss,
            output: ModelOutput::Regression {
                predictions: pred,
                targets: y,
            },
        }
    }
}

/// One fixed batch on the device, served `batches` times (so data upload is not measured).
struct Fixed {
    x: Tensor<2>,
    y: Tensor<2>,
    batch: usize,
    batches: usize,
}

impl BatchSource for Fixed {
    type Batch = Batch;
    fn len(&self) -> usize {
        self.batch * self.batches
    }
    fn batch(&self, _indices: &[usize], ctx: &BatchContext) -> exptrack_trainer::Result<Batch> {
        let x = self.x.clone().to_device(&ctx.device);
        let x = if ctx.float_dtype == FloatDType::F32 {
            x
        } else {
            x.cast(ctx.float_dtype)
        };
        Ok(Batch {
            x,
            y: self.y.clone().to_device(&ctx.device),
        })
    }
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
        .unwrap_or_else(|| default.to_owned())
}

fn raw_loop(device: &Device, hidden: usize, data: &Fixed, steps: usize, half: bool) -> (f64, f32) {
    let ad = device.clone().autodiff();
    let mut model = Mlp3::new(hidden, &ad);
    let mut optim = build_optimizer(&TrainingConfig::default());
    let x = data.x.clone().to_device(&ad);
    let y = data.y.clone().to_device(&ad);
    let mut loss_v = 0.0;
    let mut start = Instant::now();
    let warmup = steps / 5;
    for i in 0..steps {
        if i == warmup {
            start = Instant::now();
        }
        let (m, xi) = if half {
            (
                cast_module(model.clone(), FloatDType::F16),
                x.clone().cast(FloatDType::F16),
            )
        } else {
            (model.clone(), x.clone())
        };
        let out = m.step(Batch {
            x: xi,
            y: y.clone(),
        });
        let loss = out.loss.cast(FloatDType::F32);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(1e-4, model, grads);
        loss_v = loss.into_scalar::<f32>(); // one sync per step, as in the manager
    }
    (
        start.elapsed().as_secs_f64() * 1e3 / (steps - warmup) as f64,
        loss_v,
    )
}

fn managed(
    device_name: &str,
    hidden: usize,
    data_for: &dyn Fn(usize) -> Fixed,
    warmup: usize,
    steps: usize,
    mp: MixedPrecision,
) -> Result<(f64, f64, f64), Box<dyn std::error::Error>> {
    let cfg = |n| TrainingConfig {
        num_epochs: 1,
        batch_size: data_for(1).batch,
        learning_rate: 1e-4,
        mixed_precision: mp,
        device: device_name.to_owned(),
        progress: false,
        log_frequency: 1_000_000,
        seed: n as u64,
        ..TrainingConfig::default()
    };
    // Warm-up run (autotuning), then the timed run with a fresh model.
    let mut m = TrainingManager::new(cfg(warmup))?;
    let model = Mlp3::new(hidden, m.device());
    m.fit(model, &data_for(warmup), &data_for(1))?;
    let mut m = TrainingManager::new(cfg(steps))?;
    let model = Mlp3::new(hidden, m.device());
    let t = Instant::now();
    let (_, r) = m.fit(model, &data_for(steps), &data_for(1))?;
    let ms = t.elapsed().as_secs_f64() * 1e3 / steps as f64;
    Ok((
        ms,
        r.history.last().map(|h| h.train_loss).unwrap_or(f64::NAN),
        r.loss_scale.unwrap_or(1.0),
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let device_name = arg("--device", "auto");
    let hidden: usize = arg("--hidden", "4096").parse()?;
    let batch: usize = arg("--batch", "1024").parse()?;
    let steps: usize = arg("--steps", "100").parse()?;
    let warmup: usize = arg("--warmup", "20").parse()?;
    let device = exptrack_trainer::config::parse_device(&device_name)?;
    println!(
        "device {device:?}: f16 {} bf16 {}",
        device.supports_dtype(FloatDType::F16),
        device.supports_dtype(FloatDType::BF16)
    );
    let x = Tensor::<2>::random([batch, 64], Distribution::Normal(0.0, 1.0), &device);
    let y = x.clone().slice([0..batch, 0..1]).sin();
    let data_for = |batches: usize| Fixed {
        x: x.clone(),
        y: y.clone(),
        batch,
        batches,
    };

    let (raw32, l32) = raw_loop(&device, hidden, &data_for(1), steps + warmup, false);
    println!("raw burn f32:             {raw32:8.2} ms/step  final loss {l32:.5}");
    let (raw16, l16) = raw_loop(&device, hidden, &data_for(1), steps + warmup, true);
    println!("raw burn f16 (cast):      {raw16:8.2} ms/step  final loss {l16:.5}");
    let (m32, ml32, _) = managed(
        &device_name,
        hidden,
        &data_for,
        warmup,
        steps,
        MixedPrecision::Off,
    )?;
    println!("TrainingManager f32:      {m32:8.2} ms/step  final loss {ml32:.5}");
    let (m16, ml16, scale) = managed(
        &device_name,
        hidden,
        &data_for,
        warmup,
        steps,
        MixedPrecision::F16,
    )?;
    println!(
        "TrainingManager f16 AMP:  {m16:8.2} ms/step  final loss {ml16:.5}  loss scale {scale}"
    );
    println!(
        "ratios: manager f16 / raw f16 = {:.3} (target <= 1.05); manager f16 / manager f32 = {:.3} (target <= 0.66)",
        m16 / raw16,
        m16 / m32
    );
    Ok(())
}
