//! The small burn model of the checkpointer's burn tests (two linear layers, 4 → 8 → 3).

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::Device;

#[derive(Module, Debug)]
pub struct Net {
    pub a: Linear,
    pub b: Linear,
}

/// A freshly initialized [`Net`] on `device`.
pub fn net(device: &Device) -> Net {
    Net {
        a: LinearConfig::new(4, 8).init(device),
        b: LinearConfig::new(8, 3).init(device),
    }
}
