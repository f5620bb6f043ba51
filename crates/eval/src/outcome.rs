//! What the watcher reports: per-step [`Outcome`]s, [`Evaluated`] steps and the [`RunSummary`].

use std::collections::BTreeMap;

/// What happened to one checkpoint step in a poll.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Outcome {
    /// Evaluated on every dataset; these metrics (full keys, `eval/<dataset>/<metric>`) were
    /// logged at the checkpoint's step and flushed before the step was recorded.
    Evaluated {
        /// The logged values.
        metrics: BTreeMap<String, f64>,
    },
    /// A file failed its integrity check (or `checkpoint.json` was unreadable): skipped with a
    /// warning and recorded, never retried.
    Corrupt {
        /// The checkpointer's error.
        reason: String,
    },
    /// Retention deleted the checkpoint after it was listed and before a lease could be taken:
    /// skipped with a warning and recorded.
    MissedByRetention,
    /// Loading or an evaluator failed; it is retried on the next poll.
    Retrying {
        /// Attempts made so far.
        attempt: u32,
        /// The error.
        reason: String,
    },
    /// Loading or an evaluator failed on the last allowed attempt: skipped and recorded.
    Failed {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        reason: String,
    },
}

/// One checkpoint step dealt with by [`EvalWatcher::poll_once`](crate::EvalWatcher::poll_once).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Evaluated {
    /// The checkpoint's step (also the step the metrics are logged at).
    pub step: u64,
    /// The checkpoint's epoch, when it was loaded and has one.
    pub epoch: Option<u64>,
    /// What happened.
    pub outcome: Outcome,
}

/// Why [`EvalWatcher::run_until`](crate::EvalWatcher::run_until) returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// The training run was marked completed and every checkpoint committed before that was
    /// dealt with.
    TrainingCompleted,
    /// The stop flag was set.
    Stopped,
}

/// What [`EvalWatcher::run_until`](crate::EvalWatcher::run_until) did.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunSummary {
    /// Why it returned.
    pub reason: StopReason,
    /// Every step dealt with, in order (retries included).
    pub steps: Vec<Evaluated>,
    /// Checkpoints committed and removed (by retention, or replaced by a new save of their step)
    /// between two scans, so no scan listed them and they were never evaluated (counted from
    /// the gaps in the checkpointer's commit numbers).
    pub pruned_unseen: u64,
}

impl RunSummary {
    /// Steps that were evaluated and logged.
    pub fn evaluated_steps(&self) -> Vec<u64> {
        self.steps
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Evaluated { .. }))
            .map(|e| e.step)
            .collect()
    }

    /// How many checkpoints retention removed before the watcher could evaluate them (listed by
    /// a scan, deleted before a lease could be taken: [`Outcome::MissedByRetention`]).
    pub fn missed_by_retention(&self) -> usize {
        self.steps
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::MissedByRetention))
            .count()
    }

    /// Every checkpoint removed before it could be evaluated:
    /// [`missed_by_retention`](Self::missed_by_retention) plus
    /// [`pruned_unseen`](Self::pruned_unseen).
    pub fn removed_before_evaluation(&self) -> u64 {
        self.missed_by_retention() as u64 + self.pruned_unseen
    }

    /// One line for people: evaluated, missed by retention, corrupt and failed counts.
    pub fn describe(&self) -> String {
        let count = |f: fn(&Outcome) -> bool| self.steps.iter().filter(|e| f(&e.outcome)).count();
        let evaluated = count(|o| matches!(o, Outcome::Evaluated { .. }));
        let corrupt = count(|o| matches!(o, Outcome::Corrupt { .. }));
        let failed = count(|o| matches!(o, Outcome::Failed { .. }));
        let missed = self.removed_before_evaluation();
        let mut line = format!("{evaluated} checkpoint(s) evaluated");
        if missed > 0 {
            line.push_str(&format!(
                ", {missed} removed by retention before they could be evaluated (raise \
                 max_checkpoints or poll more often)"
            ));
        }
        if corrupt > 0 {
            line.push_str(&format!(", {corrupt} corrupt"));
        }
        if failed > 0 {
            line.push_str(&format!(", {failed} failed"));
        }
        line
    }
}
