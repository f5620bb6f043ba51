//! Shared helpers for the trainer's integration tests.
#![allow(dead_code)]

use exptrack_trainer::burn;
use exptrack_trainer::burn::module::{Module, ModuleVisitor, Param};
use exptrack_trainer::burn::tensor::{FloatDType, Tensor};
use exptrack_trainer::quickstart::Mlp;
use exptrack_trainer::{ClassificationData, TrainingConfig};

/// Every float parameter's values, in visiting order, as f32.
pub fn params_of<M: Module>(m: &M) -> Vec<f32> {
    struct V(Vec<f32>);
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let data = p.val().cast(FloatDType::F32).into_data();
            self.0.extend(data.try_into_vec::<f32>().unwrap());
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A small deterministic classification set: `n` items of `d` features, 3 classes.
pub fn toy_data(n: usize, d: usize, seed: u64) -> ClassificationData<2> {
    let mut x = Vec::with_capacity(n * d);
    let mut y = Vec::with_capacity(n);
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((s >> 33) as f64 / (1u64 << 31) as f64) as f32 - 0.5
    };
    for i in 0..n {
        let c = i % 3;
        for j in 0..d {
            x.push(next() + if j % 3 == c { 1.0 } else { 0.0 });
        }
        y.push(c as i64);
    }
    ClassificationData::new(x, vec![d], y, 3).unwrap()
}

/// A quiet config on the CPU.
pub fn quiet(mut c: TrainingConfig) -> TrainingConfig {
    c.progress = false;
    c.device = "cpu".into();
    c
}

/// A small MLP for the toy data.
pub fn small_mlp(device: &exptrack_trainer::burn::tensor::Device, d: usize) -> Mlp {
    Mlp::new(d, 16, 3, device)
}

/// A model's parameters as burnpack bytes (burn's module record), to start several runs from
/// the same weights.
pub fn model_to_bytes<M: Module>(model: &M) -> Result<Vec<u8>, burn::store::RecordError> {
    Ok(model.clone().into_record().into_bytes()?.to_vec())
}

/// Loads bytes written by [`model_to_bytes`] into `model` (parameter ids included).
pub fn model_from_bytes<M: Module>(
    model: M,
    bytes: Vec<u8>,
) -> Result<M, burn::store::RecordError> {
    let record = burn::store::ModuleRecord::from_bytes(burn::tensor::Bytes::from_bytes_vec(bytes))?;
    model.try_load_record(record)
}
