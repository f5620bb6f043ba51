//! Learning-rate schedules with serializable state.
//!
//! [`LrSchedule`] is stepped once per optimizer step ([`LrSchedule::next_lr`] returns the rate to
//! use for that step) and, for [`ReduceLrOnPlateau`], told every evaluation's monitored value
//! ([`LrSchedule::observe`]). Cosine, linear, step and exponential are burn's own schedulers;
//! [`ReduceLrOnPlateau`] and [`OneCycleLr`] are written here because burn 0.22 has neither.
//! An optional linear warm-up from 0 precedes any of them. Every schedule's state goes into
//! checkpoints through [`LrSchedule::state`], [`LrSchedule::burn_record`] and
//! [`LrSchedule::load_state`].

use burn::lr_scheduler::LrSchedulerRecord;
use burn::lr_scheduler::cosine::CosineAnnealingLrSchedulerConfig;
use burn::lr_scheduler::exponential::ExponentialLrSchedulerConfig;
use burn::lr_scheduler::linear::LinearLrSchedulerConfig;
use burn::lr_scheduler::module_lr_scheduler::ModuleLrScheduler;
use burn::lr_scheduler::step::StepLrSchedulerConfig;
use serde::{Deserialize, Serialize};

use crate::config::{Mode, SchedulerKind, ThresholdMode, TrainingConfig};
use crate::error::{Error, Result};

/// PyTorch's `torch.optim.lr_scheduler.ReduceLROnPlateau`: reduce the rate by `factor` when the
/// monitored value has not improved for more than `patience` evaluations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceLrOnPlateau {
    /// `min` or `max`.
    pub mode: Mode,
    /// Multiplicative reduction (`new_lr = lr * factor`).
    pub factor: f64,
    /// Evaluations with no improvement tolerated.
    pub patience: usize,
    /// Significance threshold.
    pub threshold: f64,
    /// `rel` or `abs`.
    pub threshold_mode: ThresholdMode,
    /// Evaluations to wait after a reduction.
    pub cooldown: usize,
    /// Lower bound of the rate.
    pub min_lr: f64,
    /// Reductions smaller than this are ignored.
    pub eps: f64,
    /// Current rate.
    pub lr: f64,
    /// Best value seen.
    pub best: f64,
    /// Consecutive evaluations without improvement.
    pub num_bad_epochs: usize,
    /// Remaining cooldown evaluations.
    pub cooldown_counter: usize,
}

impl ReduceLrOnPlateau {
    /// A scheduler starting at `lr` with PyTorch's defaults (factor 0.1, patience 10,
    /// threshold 1e-4 rel, cooldown 0, min_lr 0, eps 1e-8).
    pub fn new(lr: f64, mode: Mode) -> Self {
        ReduceLrOnPlateau {
            mode,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
            lr,
            best: match mode {
                Mode::Min => f64::INFINITY,
                Mode::Max => f64::NEG_INFINITY,
            },
            num_bad_epochs: 0,
            cooldown_counter: 0,
        }
    }

    fn is_better(&self, a: f64) -> bool {
        let best = self.best;
        match (self.mode, self.threshold_mode) {
            (Mode::Min, ThresholdMode::Rel) => a < best * (1.0 - self.threshold),
            (Mode::Min, ThresholdMode::Abs) => a < best - self.threshold,
            (Mode::Max, ThresholdMode::Rel) => a > best * (self.threshold + 1.0),
            (Mode::Max, ThresholdMode::Abs) => a > best + self.threshold,
        }
    }

    /// Feeds one evaluation's metric (PyTorch `step(metrics)`); returns the rate to use next.
    pub fn step(&mut self, metric: f64) -> f64 {
        if self.is_better(metric) {
            self.best = metric;
            self.num_bad_epochs = 0;
        } else {
            self.num_bad_epochs += 1;
        }
        if self.cooldown_counter > 0 {
            self.cooldown_counter -= 1;
            self.num_bad_epochs = 0;
        }
        if self.num_bad_epochs > self.patience {
            let new_lr = (self.lr * self.factor).max(self.min_lr);
            if self.lr - new_lr > self.eps {
                self.lr = new_lr;
            }
            self.cooldown_counter = self.cooldown;
            self.num_bad_epochs = 0;
        }
        self.lr
    }
}

/// PyTorch's `torch.optim.lr_scheduler.OneCycleLR` with `anneal_strategy="cos"` (learning rate
/// only; burn's optimizers do not expose momentum, so `cycle_momentum` is not reproduced).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneCycleLr {
    /// Peak rate.
    pub max_lr: f64,
    /// Total optimizer steps in the cycle.
    pub total_steps: u64,
    /// Fraction of the cycle spent increasing.
    pub pct_start: f64,
    /// `initial_lr = max_lr / div_factor`.
    pub div_factor: f64,
    /// `min_lr = initial_lr / final_div_factor`.
    pub final_div_factor: f64,
    /// PyTorch `three_phase`.
    pub three_phase: bool,
    /// Steps taken (PyTorch `last_epoch`, the next step's index).
    pub step_num: u64,
}

impl OneCycleLr {
    /// A cycle of `total_steps` steps with PyTorch's defaults (pct_start 0.3, div_factor 25,
    /// final_div_factor 1e4, two phases).
    pub fn new(max_lr: f64, total_steps: u64) -> Self {
        OneCycleLr {
            max_lr,
            total_steps,
            pct_start: 0.3,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
            step_num: 0,
        }
    }

    fn anneal_cos(start: f64, end: f64, pct: f64) -> f64 {
        end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0)
    }

    /// The rate at step `step_num` (PyTorch `get_lr`); past the end the final rate is held.
    pub fn lr_at(&self, step_num: u64) -> f64 {
        let initial = self.max_lr / self.div_factor;
        let min_lr = initial / self.final_div_factor;
        let t = self.total_steps as f64;
        let phases: Vec<(f64, f64, f64)> = if self.three_phase {
            vec![
                (self.pct_start * t - 1.0, initial, self.max_lr),
                (2.0 * self.pct_start * t - 2.0, self.max_lr, initial),
                (t - 1.0, initial, min_lr),
            ]
        } else {
            vec![
                (self.pct_start * t - 1.0, initial, self.max_lr),
                (t - 1.0, self.max_lr, min_lr),
            ]
        };
        let step = (step_num.min(self.total_steps.saturating_sub(1))) as f64;
        let mut start_step = 0.0;
        let last = phases.len() - 1;
        for (i, (end_step, start_lr, end_lr)) in phases.iter().enumerate() {
            if step <= *end_step || i == last {
                let span = end_step - start_step;
                let pct = if span > 0.0 {
                    (step - start_step) / span
                } else {
                    1.0
                };
                return Self::anneal_cos(*start_lr, *end_lr, pct);
            }
            start_step = *end_step;
        }
        min_lr
    }

    /// Returns the rate for the current step and advances.
    pub fn step(&mut self) -> f64 {
        let lr = self.lr_at(self.step_num);
        self.step_num += 1;
        lr
    }
}

#[derive(Clone)]
enum Inner {
    Constant,
    Burn(ModuleLrScheduler),
    Plateau(ReduceLrOnPlateau),
    OneCycle(OneCycleLr),
}

/// The schedule used by the [`TrainingManager`](crate::TrainingManager).
#[derive(Clone)]
pub struct LrSchedule {
    kind: SchedulerKind,
    base_lr: f64,
    warmup_steps: u64,
    steps: u64,
    last_lr: f64,
    inner: Inner,
}

impl std::fmt::Debug for LrSchedule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LrSchedule")
            .field("kind", &self.kind)
            .field("base_lr", &self.base_lr)
            .field("warmup_steps", &self.warmup_steps)
            .field("steps", &self.steps)
            .field("last_lr", &self.last_lr)
            .finish()
    }
}

/// A schedule's position and its own state (plateau counters, one-cycle step), without burn's
/// record of the burn schedulers, which a checkpoint stores beside it as burn's own
/// `LrSchedulerRecord` (`exptrack_checkpoint::burn_support`'s `scheduler.bpk`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleState {
    kind: SchedulerKind,
    steps: u64,
    last_lr: f64,
    plateau: Option<ReduceLrOnPlateau>,
    onecycle: Option<OneCycleLr>,
}

fn burn_err(e: String) -> Error {
    Error::Config(format!("scheduler: {e}"))
}

impl LrSchedule {
    /// Builds the schedule from the config for a run of `total_steps` optimizer steps.
    pub fn new(config: &TrainingConfig, total_steps: u64) -> Result<Self> {
        let o = &config.scheduler_options;
        let lr = config.learning_rate;
        let warmup = config.warmup_steps as u64;
        let after_warmup = total_steps.saturating_sub(warmup).max(1) as usize;
        let inner = match config.scheduler {
            SchedulerKind::Constant => Inner::Constant,
            SchedulerKind::Cosine => Inner::Burn(
                CosineAnnealingLrSchedulerConfig::new(lr, after_warmup)
                    .with_min_lr(o.min_lr)
                    .init()
                    .map_err(burn_err)?,
            ),
            SchedulerKind::Linear => Inner::Burn(
                LinearLrSchedulerConfig::new(lr, o.final_lr.unwrap_or(o.min_lr), after_warmup)
                    .init()
                    .map_err(burn_err)?,
            ),
            SchedulerKind::Step => Inner::Burn(
                StepLrSchedulerConfig::new(lr, o.step_size)
                    .with_gamma(o.gamma)
                    .init()
                    .map_err(burn_err)?,
            ),
            SchedulerKind::Exponential => Inner::Burn(
                ExponentialLrSchedulerConfig::new(lr, o.gamma)
                    .init()
                    .map_err(burn_err)?,
            ),
            SchedulerKind::Plateau => {
                let mode = o
                    .mode
                    .or_else(|| config.early_stopping.as_ref().map(|e| e.mode))
                    .unwrap_or(Mode::Min);
                let mut p = ReduceLrOnPlateau::new(lr, mode);
                p.factor = o.factor;
                p.patience = o.patience;
                p.threshold = o.threshold;
                p.threshold_mode = o.threshold_mode;
                p.cooldown = o.cooldown;
                p.min_lr = o.min_lr;
                p.eps = o.eps;
                Inner::Plateau(p)
            }
            SchedulerKind::OneCycle => {
                let mut c = OneCycleLr::new(o.max_lr.unwrap_or(lr), after_warmup as u64);
                c.pct_start = o.pct_start;
                c.div_factor = o.div_factor;
                c.final_div_factor = o.final_div_factor;
                c.three_phase = o.three_phase;
                Inner::OneCycle(c)
            }
        };
        Ok(LrSchedule {
            kind: config.scheduler,
            base_lr: lr,
            warmup_steps: warmup,
            steps: 0,
            last_lr: lr,
            inner,
        })
    }

    /// The rate for the next optimizer step; advances the schedule by one step.
    pub fn next_lr(&mut self) -> f64 {
        let step = self.steps;
        self.steps += 1;
        let lr = if step < self.warmup_steps {
            self.base_lr * (step + 1) as f64 / self.warmup_steps as f64
        } else {
            match &mut self.inner {
                Inner::Constant => self.base_lr,
                Inner::Burn(s) => s.step().base(),
                Inner::Plateau(p) => p.lr,
                Inner::OneCycle(c) => c.step(),
            }
        };
        self.last_lr = lr;
        lr
    }

    /// Feeds an evaluation's monitored value (only [`SchedulerKind::Plateau`] uses it).
    pub fn observe(&mut self, metric: f64) {
        if let Inner::Plateau(p) = &mut self.inner {
            p.step(metric);
        }
    }

    /// Whether this schedule wants evaluation metrics.
    pub fn wants_metric(&self) -> bool {
        matches!(self.inner, Inner::Plateau(_))
    }

    /// The rate the next [`next_lr`](Self::next_lr) will return, without advancing the schedule
    /// (what a step the loss scaler skips is logged with).
    pub fn peek_lr(&self) -> f64 {
        self.clone().next_lr()
    }

    /// The rate returned by the last [`next_lr`](Self::next_lr) (the base rate before any).
    pub fn current_lr(&self) -> f64 {
        self.last_lr
    }

    /// Optimizer steps taken.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// The schedule's own state; burn's record, for the burn schedulers, is
    /// [`burn_record`](Self::burn_record).
    pub fn state(&self) -> ScheduleState {
        ScheduleState {
            kind: self.kind,
            steps: self.steps,
            last_lr: self.last_lr,
            plateau: match &self.inner {
                Inner::Plateau(p) => Some(p.clone()),
                _ => None,
            },
            onecycle: match &self.inner {
                Inner::OneCycle(c) => Some(c.clone()),
                _ => None,
            },
        }
    }

    /// burn's scheduler record (cosine, linear, step, exponential), `None` for the schedules
    /// written here.
    pub fn burn_record(&self) -> Option<LrSchedulerRecord> {
        match &self.inner {
            Inner::Burn(s) => Some(s.to_record()),
            _ => None,
        }
    }

    /// Restores what [`state`](Self::state) and [`burn_record`](Self::burn_record) returned for
    /// the same kind of schedule.
    pub fn load_state(
        &mut self,
        state: ScheduleState,
        burn_record: Option<LrSchedulerRecord>,
    ) -> Result<()> {
        if state.kind != self.kind {
            return Err(Error::Config(format!(
                "checkpointed scheduler is {:?} but the config asks for {:?}",
                state.kind, self.kind
            )));
        }
        match (&mut self.inner, state.plateau, state.onecycle, burn_record) {
            (Inner::Burn(s), _, _, Some(record)) => *s = s.clone().load_record(record),
            (Inner::Plateau(p), Some(saved), _, _) => *p = saved,
            (Inner::OneCycle(c), _, Some(saved), _) => *c = saved,
            (Inner::Constant, _, _, _) => {}
            _ => {
                return Err(Error::Config(
                    "checkpointed scheduler state is incomplete".into(),
                ));
            }
        }
        self.steps = state.steps;
        self.last_lr = state.last_lr;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Expected values are computed from the formulas in PyTorch's documentation and source
    //! (torch/optim/lr_scheduler.py, PyTorch 2.x):
    //! - ReduceLROnPlateau: <https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.ReduceLROnPlateau.html>
    //!   `is_better` (rel, min): `a < best * (1 - threshold)`; a reduction happens when
    //!   `num_bad_epochs > patience`: `new_lr = max(lr * factor, min_lr)`, applied only if
    //!   `lr - new_lr > eps`; then `cooldown_counter = cooldown`, `num_bad_epochs = 0`; during
    //!   cooldown bad epochs are reset to 0.
    //! - OneCycleLR: <https://pytorch.org/docs/stable/generated/torch.optim.lr_scheduler.OneCycleLR.html>
    //!   `initial_lr = max_lr / div_factor`, `min_lr = initial_lr / final_div_factor`, phase ends
    //!   `pct_start * total - 1` and `total - 1`, `_annealing_cos(start, end, pct) =
    //!   end + (start - end) / 2 * (cos(pi * pct) + 1)`.
    use super::*;
    use std::f64::consts::PI;

    fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
        end + (start - end) / 2.0 * ((PI * pct).cos() + 1.0)
    }

    #[test]
    fn plateau_matches_pytorch_reference_sequence() {
        // torch: ReduceLROnPlateau(opt(lr=1.0), mode='min', factor=0.5, patience=2,
        //        threshold=0.1, threshold_mode='rel', cooldown=1, min_lr=0.2)
        let mut p = ReduceLrOnPlateau::new(1.0, Mode::Min);
        p.factor = 0.5;
        p.patience = 2;
        p.threshold = 0.1;
        p.cooldown = 1;
        p.min_lr = 0.2;
        let metrics = [
            10.0, 9.5, 9.2, 9.1, 9.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0, 8.0,
        ];
        // Hand-traced with the rules above:
        // e0 10 better(best=inf) -> best 10, bad 0                 lr 1
        // e1 9.5 < 9.0? no -> bad 1                                lr 1
        // e2 9.2 -> bad 2                                          lr 1
        // e3 9.1 -> bad 3 > 2 -> lr 0.5, cooldown 1, bad 0         lr .5
        // e4 9.0 < 9.0? no -> bad 1; cooldown 1->0, bad 0          lr .5
        // e5 8.0 < 9.0 -> best 8, bad 0                            lr .5
        // e6 8 -> bad 1; e7 -> 2; e8 -> 3 > 2 -> lr .25, cd 1      lr .25 at e8
        // e9 -> bad 1, cooldown -> 0, bad 0; e10 1; e11 2; e12 3 -> max(.125,.2)=.2 at e12
        // e13 -> cooldown; e14 -> bad 1                            lr .2
        let expected = [
            1.0, 1.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.2, 0.2, 0.2,
        ];
        for (i, (m, e)) in metrics.iter().zip(expected).enumerate() {
            let lr = p.step(*m);
            assert!((lr - e).abs() < 1e-12, "epoch {i}: lr {lr}, expected {e}");
        }
    }

    #[test]
    fn plateau_max_mode_abs_threshold_and_eps() {
        let mut p = ReduceLrOnPlateau::new(1e-8, Mode::Max);
        p.patience = 0;
        p.threshold_mode = ThresholdMode::Abs;
        p.threshold = 0.5;
        assert_eq!(p.step(1.0), 1e-8); // better than -inf
        // 1.4 is not > 1.0 + 0.5: bad 1 > 0 -> reduction of 1e-8 - 1e-9 = 9e-9 <= eps: ignored
        assert_eq!(p.step(1.4), 1e-8);
        assert_eq!(p.best, 1.0);
        assert_eq!(p.step(1.6), 1e-8);
        assert_eq!(p.best, 1.6);
    }

    #[test]
    fn onecycle_matches_pytorch_formula() {
        // torch: OneCycleLR(opt, max_lr=0.1, total_steps=100) with defaults
        let c0 = OneCycleLr::new(0.1, 100);
        let mut c = c0.clone();
        let initial = 0.1 / 25.0;
        let min_lr = initial / 1e4;
        let end1 = 0.3 * 100.0 - 1.0; // 29
        for step in 0..100u64 {
            let s = step as f64;
            let expected = if s <= end1 {
                cos_anneal(initial, 0.1, s / end1)
            } else {
                cos_anneal(0.1, min_lr, (s - end1) / (99.0 - end1))
            };
            let lr = c.step();
            assert!(
                (lr - expected).abs() < 1e-12,
                "step {step}: {lr} vs {expected}"
            );
        }
        // Spot values: start, peak, end.
        assert!((c0.lr_at(0) - 0.004).abs() < 1e-15);
        assert!((c0.lr_at(29) - 0.1).abs() < 1e-15);
        assert!((c0.lr_at(99) - 4e-7).abs() < 1e-18);
    }

    #[test]
    fn onecycle_three_phase_matches_pytorch_formula() {
        let mut c = OneCycleLr::new(1.0, 20);
        c.three_phase = true;
        c.pct_start = 0.25;
        c.div_factor = 10.0;
        c.final_div_factor = 100.0;
        let (initial, min_lr) = (0.1, 0.001);
        let (e1, e2, e3) = (4.0, 8.0, 19.0);
        for step in 0..20u64 {
            let s = step as f64;
            let expected = if s <= e1 {
                cos_anneal(initial, 1.0, s / e1)
            } else if s <= e2 {
                cos_anneal(1.0, initial, (s - e1) / (e2 - e1))
            } else {
                cos_anneal(initial, min_lr, (s - e2) / (e3 - e2))
            };
            assert!((c.step() - expected).abs() < 1e-12, "step {step}");
        }
    }

    fn cfg(kind: SchedulerKind) -> TrainingConfig {
        TrainingConfig {
            learning_rate: 0.1,
            scheduler: kind,
            ..TrainingConfig::default()
        }
    }

    #[test]
    fn warmup_ramps_then_hands_over() {
        let mut c = cfg(SchedulerKind::Cosine);
        c.warmup_steps = 4;
        let mut s = LrSchedule::new(&c, 14).unwrap();
        let lrs: Vec<f64> = (0..14).map(|_| s.next_lr()).collect();
        for (i, lr) in lrs.iter().take(4).enumerate() {
            assert!((lr - 0.1 * (i + 1) as f64 / 4.0).abs() < 1e-12);
        }
        // burn's cosine over the 10 remaining steps starts at the base rate.
        assert!((lrs[4] - 0.1).abs() < 1e-12);
        assert!((lrs[9] - 0.05).abs() < 1e-12, "{}", lrs[9]);
        assert!(lrs[13] < lrs[12]);
    }

    #[test]
    fn every_schedule_resumes_from_its_state() {
        for kind in [
            SchedulerKind::Constant,
            SchedulerKind::Cosine,
            SchedulerKind::Linear,
            SchedulerKind::Step,
            SchedulerKind::Exponential,
            SchedulerKind::Plateau,
            SchedulerKind::OneCycle,
        ] {
            let mut c = cfg(kind);
            c.warmup_steps = 2;
            c.scheduler_options.step_size = 3;
            c.scheduler_options.gamma = 0.5;
            c.scheduler_options.patience = 0;
            let mut a = LrSchedule::new(&c, 20).unwrap();
            for i in 0..7 {
                a.next_lr();
                if i % 2 == 0 {
                    a.observe(1.0);
                }
            }
            let (saved, record) = (a.state(), a.burn_record());
            let mut b = LrSchedule::new(&c, 20).unwrap();
            b.load_state(saved, record).unwrap();
            for i in 0..10 {
                if i % 3 == 0 {
                    a.observe(2.0);
                    b.observe(2.0);
                }
                let (x, y) = (a.next_lr(), b.next_lr());
                assert!((x - y).abs() < 1e-15, "{kind:?} step {i}: {x} vs {y}");
            }
        }
    }

    #[test]
    fn state_of_another_kind_is_refused() {
        let a = LrSchedule::new(&cfg(SchedulerKind::Plateau), 10).unwrap();
        let mut b = LrSchedule::new(&cfg(SchedulerKind::Cosine), 10).unwrap();
        assert!(b.load_state(a.state(), a.burn_record()).is_err());
    }
}
