//! The optimizer `[training]` asks for, and the hyperparameters a run logs.

use burn::optim::{
    AdamConfig, AdamWConfig, ModuleOptimizer, SgdConfig, decay::WeightDecayConfig,
    momentum::MomentumConfig,
};
use exptrack_core::ParamValue;

use crate::config::{OptimizerKind, TrainingConfig};
use crate::error::Result;

/// Builds the configured optimizer.
pub fn build_optimizer(c: &TrainingConfig) -> ModuleOptimizer {
    match c.optimizer {
        OptimizerKind::AdamW => AdamWConfig::new()
            .with_beta_1(c.beta1 as f32)
            .with_beta_2(c.beta2 as f32)
            .with_epsilon(c.epsilon as f32)
            .with_weight_decay(c.weight_decay as f32)
            .init(),
        OptimizerKind::Adam => AdamConfig::new()
            .with_beta_1(c.beta1 as f32)
            .with_beta_2(c.beta2 as f32)
            .with_epsilon(c.epsilon as f32)
            .with_weight_decay(
                (c.weight_decay > 0.0).then(|| WeightDecayConfig::new(c.weight_decay as f32)),
            )
            .init(),
        OptimizerKind::Sgd => SgdConfig::new()
            .with_momentum((c.momentum > 0.0).then_some(MomentumConfig {
                momentum: c.momentum,
                dampening: c.dampening,
                nesterov: c.nesterov,
            }))
            .with_weight_decay(
                (c.weight_decay > 0.0).then(|| WeightDecayConfig::new(c.weight_decay as f32)),
            )
            .init(),
    }
}

/// `[training]` as flat `training.<key>` hyperparameters (nested tables dotted).
pub(crate) fn hyperparameters(config: &TrainingConfig) -> Result<Vec<(String, ParamValue)>> {
    let mut params = Vec::new();
    flatten_params(
        "training",
        &toml::Value::Table(config.to_table()?),
        &mut params,
    );
    Ok(params)
}

fn flatten_params(prefix: &str, v: &toml::Value, out: &mut Vec<(String, ParamValue)>) {
    match v {
        toml::Value::Table(t) => {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_params(&key, v, out);
            }
        }
        toml::Value::String(s) => out.push((prefix.to_owned(), ParamValue::Str(s.clone()))),
        toml::Value::Integer(i) => out.push((prefix.to_owned(), ParamValue::Int(*i))),
        toml::Value::Float(f) => out.push((prefix.to_owned(), ParamValue::Float(*f))),
        toml::Value::Boolean(b) => out.push((prefix.to_owned(), ParamValue::Bool(*b))),
        other => out.push((prefix.to_owned(), ParamValue::Str(other.to_string()))),
    }
}
