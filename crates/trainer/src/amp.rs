//! Mixed precision: a module mapper that casts the f32 master parameters to f16/bf16 inside
//! the forward pass (the cast is differentiable, so gradients arrive in f32 on the master
//! parameters), and a dynamic loss scaler with PyTorch `GradScaler` semantics.

use burn::module::{Module, ModuleMapper, Param};
use burn::tensor::{FloatDType, Tensor};
use serde::{Deserialize, Serialize};

/// Casts every float parameter of a module to one dtype.
#[derive(Debug, Clone, Copy)]
pub struct CastMapper {
    /// Target dtype.
    pub dtype: FloatDType,
}

impl ModuleMapper for CastMapper {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let dtype = self.dtype;
        param.map(|t| t.cast(dtype))
    }
}

/// `module` with every float parameter cast to `dtype`. On an autodiff device the casts are
/// recorded, so `GradientsParams::from_grads(loss.backward(), &master)` yields f32 gradients for
/// the master module the copy was made from.
pub fn cast_module<M: Module>(module: M, dtype: FloatDType) -> M {
    module.map(&mut CastMapper { dtype })
}

/// Dynamic loss scaling (PyTorch `torch.amp.GradScaler`): the loss is multiplied by `scale`
/// before `backward`; gradients are unscaled before clipping and the optimizer step. A step
/// whose gradients hold an inf or NaN is skipped and the scale multiplied by `backoff_factor`;
/// after `growth_interval` consecutive finite steps the scale is multiplied by `growth_factor`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    /// Current scale.
    pub scale: f64,
    /// Multiplier after `growth_interval` finite steps (2).
    pub growth_factor: f64,
    /// Multiplier after a non-finite step (0.5).
    pub backoff_factor: f64,
    /// Finite steps before growing (2000).
    pub growth_interval: u64,
    /// Consecutive finite steps since the last change.
    pub growth_tracker: u64,
    /// Steps skipped so far.
    pub skipped_steps: u64,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self::new(65536.0, 2000)
    }
}

impl LossScaler {
    /// A scaler starting at `init_scale` (PyTorch 2^16) growing every `growth_interval` (2000).
    pub fn new(init_scale: f64, growth_interval: u64) -> Self {
        LossScaler {
            scale: init_scale,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval,
            growth_tracker: 0,
            skipped_steps: 0,
        }
    }

    /// Updates the scale from whether this step's gradients were all finite (PyTorch
    /// `GradScaler.update`). Returns `true` when the optimizer step should be taken.
    pub fn update(&mut self, grads_finite: bool) -> bool {
        if grads_finite {
            self.growth_tracker += 1;
            if self.growth_tracker >= self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
            true
        } else {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
            self.skipped_steps += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_step_is_skipped_and_scale_halved() {
        let mut s = LossScaler::default();
        for _ in 0..10 {
            assert!(s.update(true));
        }
        assert!(!s.update(false));
        assert_eq!(s.scale, 32768.0);
        assert_eq!(s.growth_tracker, 0);
        assert_eq!(s.skipped_steps, 1);
    }

    #[test]
    fn two_thousand_finite_steps_double_the_scale() {
        let mut s = LossScaler::default();
        for i in 0..1999 {
            s.update(true);
            assert_eq!(s.scale, 65536.0, "grew early at step {i}");
        }
        s.update(true);
        assert_eq!(s.scale, 131072.0);
        assert_eq!(s.growth_tracker, 0);
    }
}
