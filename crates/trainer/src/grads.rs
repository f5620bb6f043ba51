//! Operations over all of a module's gradients: global L2 norm, scaling, clipping by norm
//! (PyTorch `clip_grad_norm_`) or by value (`clip_grad_value_`), and accumulation that averages
//! over micro-batches (burn's `GradientsAccumulator` sums).

use std::marker::PhantomData;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{GradientsAccumulator, GradientsParams};
use burn::tensor::{FloatDType, Tensor};

use crate::error::{Error, Result};

struct SquaredSums<'a> {
    grads: &'a GradientsParams,
    parts: Vec<Tensor<1>>,
}

impl ModuleVisitor for SquaredSums<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            let g = g.cast(FloatDType::F32);
            self.parts.push(g.square().sum());
        }
    }
}

/// The sum of squares of every gradient of `module`'s parameters, as a one-element f32 tensor
/// on the device (no host readback). `None` when there are no gradients.
pub fn squared_norm<M: Module>(module: &M, grads: &GradientsParams) -> Option<Tensor<1>> {
    let mut v = SquaredSums {
        grads,
        parts: Vec::new(),
    };
    module.visit(&mut v);
    if v.parts.is_empty() {
        return None;
    }
    Some(Tensor::cat(v.parts, 0).sum())
}

/// Reads a one-element tensor back to the host.
pub(crate) fn read_scalars(t: Tensor<1>) -> Result<Vec<f64>> {
    let t = if t.dtype() == burn::tensor::DType::F32 {
        t
    } else {
        t.cast(FloatDType::F32)
    };
    let data = t
        .try_into_data()
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    let v: Vec<f32> = data
        .try_into_vec::<f32>()
        .map_err(|e| Error::Readback(format!("{e:?}")))?;
    Ok(v.into_iter().map(f64::from).collect())
}

/// The global L2 norm of all gradients (one host readback); 0 without gradients.
pub fn global_norm<M: Module>(module: &M, grads: &GradientsParams) -> Result<f64> {
    match squared_norm(module, grads) {
        Some(t) => Ok(read_scalars(t)?.first().copied().unwrap_or(0.0).sqrt()),
        None => Ok(0.0),
    }
}

enum Op {
    Scale(f64),
    Clamp(f64, f64),
    ScaleClamp(f64, f64, f64),
}

struct Apply<'a> {
    grads: &'a mut GradientsParams,
    op: Op,
}

impl ModuleVisitor for Apply<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            let g = match self.op {
                Op::Scale(f) => g.mul_scalar(f),
                Op::Clamp(lo, hi) => g.clamp(lo, hi),
                Op::ScaleClamp(f, lo, hi) => g.mul_scalar(f).clamp(lo, hi),
            };
            self.grads.register::<D>(param.id, g);
        }
    }
}

/// Multiplies every gradient by `factor` (a no-op for exactly 1).
pub fn scale<M: Module>(module: &M, mut grads: GradientsParams, factor: f64) -> GradientsParams {
    if factor != 1.0 {
        module.visit(&mut Apply {
            grads: &mut grads,
            op: Op::Scale(factor),
        });
    }
    grads
}

/// Multiplies every gradient by `factor`, then clamps each element to `[-clip, clip]`.
pub fn scale_and_clamp<M: Module>(
    module: &M,
    mut grads: GradientsParams,
    factor: f64,
    clip: f64,
) -> GradientsParams {
    let op = if factor == 1.0 {
        Op::Clamp(-clip, clip)
    } else {
        Op::ScaleClamp(factor, -clip, clip)
    };
    module.visit(&mut Apply {
        grads: &mut grads,
        op,
    });
    grads
}

/// PyTorch's clip coefficient: `min(1, max_norm / (total_norm + 1e-6))`.
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> f64 {
    (max_norm / (total_norm + 1e-6)).min(1.0)
}

/// `torch.nn.utils.clip_grad_norm_`: scales all gradients so their global L2 norm is at most
/// `max_norm`. Returns the gradients and the norm before clipping.
pub fn clip_grad_norm<M: Module>(
    module: &M,
    grads: GradientsParams,
    max_norm: f64,
) -> Result<(GradientsParams, f64)> {
    let norm = global_norm(module, &grads)?;
    let coef = clip_coefficient(norm, max_norm);
    Ok((scale(module, grads, coef), norm))
}

/// `torch.nn.utils.clip_grad_value_`: clamps every gradient element to `[-clip, clip]`.
pub fn clip_grad_value<M: Module>(
    module: &M,
    grads: GradientsParams,
    clip: f64,
) -> GradientsParams {
    scale_and_clamp(module, grads, 1.0, clip)
}

/// Accumulates gradients over micro-batches and returns their **mean** (Lightning / HF
/// semantics), so `k` micro-batches of size `b` give the update of one batch of size `k·b`
/// when the loss is a per-item mean.
pub struct MeanGradAccumulator<M> {
    inner: GradientsAccumulator<M>,
    count: usize,
    _model: PhantomData<M>,
}

impl<M> std::fmt::Debug for MeanGradAccumulator<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeanGradAccumulator")
            .field("count", &self.count)
            .finish()
    }
}

impl<M: Module> Default for MeanGradAccumulator<M> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M: Module> MeanGradAccumulator<M> {
    /// An empty accumulator.
    pub fn new() -> Self {
        MeanGradAccumulator {
            inner: GradientsAccumulator::new(),
            count: 0,
            _model: PhantomData,
        }
    }

    /// Adds one micro-batch's gradients.
    pub fn add(&mut self, module: &M, grads: GradientsParams) {
        self.inner.accumulate(module, grads);
        self.count += 1;
    }

    /// Micro-batches added since the last [`take_sum`](Self::take_sum).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The summed gradients and how many micro-batches they hold; divide by the count (the
    /// trainer folds that division into its single unscale/clip pass).
    pub fn take_sum(&mut self) -> (GradientsParams, usize) {
        let n = self.count;
        self.count = 0;
        (self.inner.grads(), n)
    }

    /// The mean gradients; resets the accumulator.
    pub fn take_mean(&mut self, module: &M) -> GradientsParams {
        let (g, n) = self.take_sum();
        if n <= 1 {
            g
        } else {
            scale(module, g, 1.0 / n as f64)
        }
    }
}
