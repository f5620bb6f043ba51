//! Issue 7: f32 and f16 step time and final loss of a 3-layer MLP (64 → 4096 → 4096 → 1,
//! batch 1024, MSE regression, AdamW) on a GPU, through the TrainingManager and through a raw
//! burn loop.
//!
//! For each of the four runs (raw f32, raw f16, manager f32, manager f16 AMP) a throwaway model is
//! trained for `--warmup` steps first (kernel autotuning of every new shape runs through the
//! first steps), then a fresh model with the same seed is timed over `--steps` steps; its final
//! loss is the loss of the trained model on the training batch, computed in the run's precision
//! (the manager's `valid/loss`). The raw f16 loop casts the f32 master weights to f16 inside the
//! forward pass, as the manager does, but has no loss scaling and no gradient-norm check; the
//! manager's time is the wall time of `fit`, so it also carries its end-of-run validation pass.
//! Targets: manager f16 ≤ 1.05 × raw f16, and manager f16 ≤ 0.66 × manager f32.
//!
//! ```text
//! cargo build --release -p exptrack-trainer --no-default-features --features vulkan \
//!     --example gpu_mixed_precision
//! gpu_mixed_precision [--device auto|vulkan|wgpu|cuda|cpu] [--hidden 4096] [--batch 1024]
//!                     [--steps 100] [--warmup 20] [--lr 1e-4]
//! ```
//! `scripts/gpu_check.sh` builds it and prints the command for the GPU machine.
//!
//! `--device auto` (the default) takes the first compiled GPU runtime with a hardware adapter;
//! when there is none the example exits with status 2 and says so (as does a named GPU runtime
//! without an adapter). `--device cpu --hidden 256 --batch 64 --steps 5 --warmup 1` is a smoke
//! test on the CPU of a default build.
//!
//! The last line, `RESULT {...}`, holds every figure as JSON.

use std::process::ExitCode;
use std::time::Instant;

use exptrack_trainer::amp::cast_module;
use exptrack_trainer::burn::module::Module;
use exptrack_trainer::burn::nn::{Linear, LinearConfig};
use exptrack_trainer::burn::optim::GradientsParams;
use exptrack_trainer::burn::tensor::activation::relu;
use exptrack_trainer::burn::tensor::{Device, Distribution, FloatDType, Tensor};
use exptrack_trainer::data::{BatchContext, BatchSource};
use exptrack_trainer::device::{check_precision, compiled_gpu_runtimes, detect_gpu, parse_device};
use exptrack_trainer::optim::build_optimizer;
use exptrack_trainer::{
    Error, MixedPrecision, ModelOutput, StepOutput, TrainModel, TrainingConfig, TrainingManager,
};

/// Every model of every run starts from the weights this seed gives.
const SEED: u64 = 42;
const INPUTS: usize = 64;

#[derive(Module, Debug)]
struct Mlp3 {
    a: Linear,
    b: Linear,
    c: Linear,
}

impl Mlp3 {
    fn new(hidden: usize, device: &Device) -> Self {
        Mlp3 {
            a: LinearConfig::new(INPUTS, hidden).init(device),
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

struct Args {
    device: String,
    hidden: usize,
    batch: usize,
    steps: usize,
    warmup: usize,
    lr: f64,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        device: "auto".into(),
        hidden: 4096,
        batch: 1024,
        steps: 100,
        warmup: 20,
        lr: 1e-4,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}");
        match flag.as_str() {
            "--device" => a.device = value.clone(),
            "--hidden" => a.hidden = value.parse().map_err(|e| bad(&e))?,
            "--batch" => a.batch = value.parse().map_err(|e| bad(&e))?,
            "--steps" => a.steps = value.parse().map_err(|e| bad(&e))?,
            "--warmup" => a.warmup = value.parse().map_err(|e| bad(&e))?,
            "--lr" => a.lr = value.parse().map_err(|e| bad(&e))?,
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if a.steps == 0 || a.batch == 0 || a.hidden == 0 {
        return Err("--steps, --batch and --hidden must be at least 1".into());
    }
    Ok(a)
}

/// ms/step and final loss of one configuration.
#[derive(Debug, Clone, Copy)]
struct Figures {
    ms: f64,
    loss: f64,
}

/// `n` steps of the raw loop: (cast weights and input to f16), forward, backward, AdamW step,
/// one loss readback per step (the sync point the manager has too).
fn raw_steps(model: Mlp3, data: &Batch, n: usize, lr: f64, half: bool) -> Mlp3 {
    let mut model = model;
    let mut optim = build_optimizer(&TrainingConfig::default());
    for _ in 0..n {
        let (m, x) = if half {
            (
                cast_module(model.clone(), FloatDType::F16),
                data.x.clone().cast(FloatDType::F16),
            )
        } else {
            (model.clone(), data.x.clone())
        };
        let loss = m
            .step(Batch {
                x,
                y: data.y.clone(),
            })
            .loss
            .cast(FloatDType::F32);
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optim.step(lr, model, grads);
        let _ = loss.into_scalar::<f32>();
    }
    model
}

/// The loss of `model` on the batch, without autodiff, in the run's precision (what the
/// manager reports as `valid/loss`).
fn final_loss(model: &Mlp3, data: &Batch, half: bool) -> f64 {
    let m = model.valid();
    let (m, x) = if half {
        (
            cast_module(m, FloatDType::F16),
            data.x.clone().cast(FloatDType::F16),
        )
    } else {
        (m, data.x.clone())
    };
    let loss = m.step(Batch {
        x,
        y: data.y.clone(),
    });
    f64::from(loss.loss.cast(FloatDType::F32).into_scalar::<f32>())
}

fn raw_loop(device: &Device, a: &Args, x: &Tensor<2>, y: &Tensor<2>, half: bool) -> Figures {
    let ad = device.clone().autodiff();
    let train = Batch {
        x: x.clone().to_device(&ad),
        y: y.clone().to_device(&ad),
    };
    if a.warmup > 0 {
        ad.seed(SEED);
        raw_steps(Mlp3::new(a.hidden, &ad), &train, a.warmup, a.lr, half);
    }
    ad.seed(SEED);
    let model = Mlp3::new(a.hidden, &ad);
    let t = Instant::now();
    let model = raw_steps(model, &train, a.steps, a.lr, half);
    let ms = t.elapsed().as_secs_f64() * 1e3 / a.steps as f64;
    let eval = Batch {
        x: x.clone(),
        y: y.clone(),
    };
    Figures {
        ms,
        loss: final_loss(&model, &eval, half),
    }
}

/// (figures, final loss scale, skipped steps) of the TrainingManager.
fn managed(
    runtime: &str,
    a: &Args,
    x: &Tensor<2>,
    y: &Tensor<2>,
    mp: MixedPrecision,
) -> Result<(Figures, Option<f64>, u64), Error> {
    let cfg = TrainingConfig {
        num_epochs: 1,
        batch_size: a.batch,
        learning_rate: a.lr,
        mixed_precision: mp,
        device: runtime.to_owned(),
        progress: false,
        shuffle: false,
        log_frequency: 1_000_000,
        seed: SEED,
        ..TrainingConfig::default()
    };
    let data = |batches| Fixed {
        x: x.clone(),
        y: y.clone(),
        batch: a.batch,
        batches,
    };
    if a.warmup > 0 {
        let mut m = TrainingManager::new(cfg.clone())?;
        let model = Mlp3::new(a.hidden, m.device());
        m.fit(model, &data(a.warmup), &data(1))?;
    }
    // `new` seeds the device with `SEED`, so the model starts where the raw loop's does.
    let mut m = TrainingManager::new(cfg)?;
    let model = Mlp3::new(a.hidden, m.device());
    let t = Instant::now();
    let (_, r) = m.fit(model, &data(a.steps), &data(1))?;
    let ms = t.elapsed().as_secs_f64() * 1e3 / a.steps as f64;
    let loss = r.final_metric("valid/loss").unwrap_or(f64::NAN);
    Ok((Figures { ms, loss }, r.loss_scale, r.skipped_steps))
}

fn met(ok: bool) -> &'static str {
    if ok { "met" } else { "MISSED" }
}

fn run(a: &Args, runtime: &str) -> Result<(), Error> {
    let device = parse_device(runtime)?;
    let (f16, bf16) = (
        device.supports_dtype(FloatDType::F16),
        device.supports_dtype(FloatDType::BF16),
    );
    println!("device `{runtime}` ({device:?}): supports f16 {f16}, bf16 {bf16}");
    check_precision(&device, MixedPrecision::F16)?;
    println!(
        "MLP {INPUTS} → {h} → {h} → 1, batch {b}, MSE, AdamW lr {lr:e}; per run {w} warm-up steps \
         on a throwaway model, then {s} timed steps from seed {SEED}",
        h = a.hidden,
        b = a.batch,
        lr = a.lr,
        w = a.warmup,
        s = a.steps
    );

    device.seed(SEED);
    let x = Tensor::<2>::random([a.batch, INPUTS], Distribution::Normal(0.0, 1.0), &device);
    let y = x.clone().slice([0..a.batch, 0..1]).sin();

    let raw32 = raw_loop(&device, a, &x, &y, false);
    let raw16 = raw_loop(&device, a, &x, &y, true);
    let (m32, _, _) = managed(runtime, a, &x, &y, MixedPrecision::Off)?;
    let (m16, scale, skipped) = managed(runtime, a, &x, &y, MixedPrecision::F16)?;

    println!();
    println!(
        "{:<18}{:>13}{:>13}{:>10}{:>16}{:>16}",
        "", "f32 ms/step", "f16 ms/step", "f16/f32", "final loss f32", "final loss f16"
    );
    for (name, f32_, f16_) in [
        ("raw burn loop", raw32, raw16),
        ("TrainingManager", m32, m16),
    ] {
        println!(
            "{name:<18}{:>13.3}{:>13.3}{:>10.3}{:>16.6}{:>16.6}",
            f32_.ms,
            f16_.ms,
            f16_.ms / f32_.ms,
            f32_.loss,
            f16_.loss
        );
    }
    let vs_raw16 = m16.ms / raw16.ms;
    let vs_own32 = m16.ms / m32.ms;
    println!(
        "{:<18}{:>13.3}{:>13.3}",
        "manager / raw",
        m32.ms / raw32.ms,
        vs_raw16
    );
    println!();
    println!(
        "target manager f16 <= 1.05 x raw f16:          {vs_raw16:.3} ({})",
        met(vs_raw16 <= 1.05)
    );
    println!(
        "target manager f16 <= 0.66 x manager f32:      {vs_own32:.3} ({})",
        met(vs_own32 <= 0.66)
    );
    println!(
        "manager f16 loss scale at the end: {}, skipped steps: {skipped}",
        scale.map_or("-".to_owned(), |s| s.to_string())
    );
    let result = serde_json::json!({
        "device": runtime,
        "hidden": a.hidden, "batch": a.batch, "steps": a.steps, "warmup": a.warmup, "lr": a.lr,
        "raw_f32_ms": raw32.ms, "raw_f16_ms": raw16.ms,
        "manager_f32_ms": m32.ms, "manager_f16_ms": m16.ms,
        "manager_f16_over_raw_f16": vs_raw16, "manager_f16_over_manager_f32": vs_own32,
        "raw_f32_loss": raw32.loss, "raw_f16_loss": raw16.loss,
        "manager_f32_loss": m32.loss, "manager_f16_loss": m16.loss,
        "manager_f16_loss_scale": scale, "manager_f16_skipped_steps": skipped,
    });
    println!("RESULT {result}");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = if args.device == "auto" {
        match detect_gpu() {
            Some(r) => r.to_owned(),
            None => {
                let compiled = compiled_gpu_runtimes();
                let why = if compiled.is_empty() {
                    "this build has no GPU runtime: build it with `--features vulkan` (or `wgpu`, \
                     `cuda`)"
                        .to_owned()
                } else {
                    format!(
                        "this build has {} but the machine offers no hardware adapter for them \
                         (for Vulkan: the loader libvulkan1 and the driver's ICD, see \
                         VK_DRIVER_FILES); run it on a machine with a GPU",
                        compiled.join(", ")
                    )
                };
                eprintln!(
                    "error: no GPU adapter found: {why}. In a default (CPU) build, `--device cpu \
                     --hidden 256 --batch 64 --steps 5 --warmup 1` runs a small smoke test instead."
                );
                return ExitCode::from(2);
            }
        }
    } else {
        args.device.clone()
    };
    match run(&args, &runtime) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ Error::Device { .. }) => {
            eprintln!("error: {}", exptrack_core::error::report(&e));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {}", exptrack_core::error::report(&e));
            ExitCode::FAILURE
        }
    }
}
