//! Retention: which checkpoints survive a prune.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Mode;

/// One retention rule. A checkpoint survives a prune when at least one rule keeps it; the latest,
/// the best and leased checkpoints survive regardless.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Rule {
    /// The N checkpoints with the largest steps.
    KeepLast(usize),
    /// The k best checkpoints by a metric. Checkpoints without the metric, or with NaN, never count.
    /// Ties are broken in favour of the older checkpoint (a later one must be strictly better).
    KeepBest {
        /// How many.
        k: usize,
        /// Metric name, e.g. `val_loss`.
        monitor: String,
        /// Whether smaller or larger is better.
        mode: Mode,
    },
    /// Every checkpoint whose step is a multiple of N.
    KeepEvery(u64),
}

/// A set of [`Rule`]s plus the definition of "best".
///
/// ```
/// use exptrack_checkpoint::{Mode, RetentionPolicy, Rule};
/// let policy = RetentionPolicy::new()
///     .with(Rule::KeepLast(3))
///     .with(Rule::KeepBest { k: 2, monitor: "val_loss".into(), mode: Mode::Min })
///     .best_by("val_loss", Mode::Min);
/// assert_eq!(policy.rules().len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetentionPolicy {
    rules: Vec<Rule>,
    best: Option<(String, Mode)>,
}

/// What retention needs to know about one checkpoint.
pub(crate) type Metrics = BTreeMap<String, f64>;

impl RetentionPolicy {
    /// A policy with no rules: keeps everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a rule.
    pub fn with(mut self, rule: Rule) -> Self {
        self.rules.push(rule);
        self
    }

    /// Defines the best checkpoint (never deleted) as the best by `monitor` under `mode`.
    pub fn best_by(mut self, monitor: impl Into<String>, mode: Mode) -> Self {
        self.best = Some((monitor.into(), mode));
        self
    }

    /// The rules.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The metric and mode that define the best checkpoint, if any.
    pub fn best_metric(&self) -> Option<(&str, Mode)> {
        self.best.as_ref().map(|(m, mode)| (m.as_str(), *mode))
    }

    /// The best checkpoint among `entries` (step → metrics), if a best metric is defined and any
    /// entry has a finite value for it.
    pub fn best<'a, I>(&self, entries: I) -> Option<u64>
    where
        I: IntoIterator<Item = (u64, &'a Metrics)>,
    {
        let (monitor, mode) = self.best_metric()?;
        top_k(entries, monitor, mode, 1).into_iter().next()
    }

    /// The steps this policy keeps among `entries`, including the latest and the best (leases are
    /// the caller's business).
    pub fn keep<'a, I>(&self, entries: I) -> BTreeSet<u64>
    where
        I: IntoIterator<Item = (u64, &'a Metrics)> + Clone,
    {
        let all: BTreeSet<u64> = entries.clone().into_iter().map(|(s, _)| s).collect();
        if self.rules.is_empty() {
            return all;
        }
        let mut keep = BTreeSet::new();
        if let Some(latest) = all.last() {
            keep.insert(*latest);
        }
        if let Some(best) = self.best(entries.clone()) {
            keep.insert(best);
        }
        for rule in &self.rules {
            match rule {
                Rule::KeepLast(n) => keep.extend(all.iter().rev().take(*n)),
                Rule::KeepBest { k, monitor, mode } => {
                    keep.extend(top_k(entries.clone(), monitor, *mode, *k))
                }
                Rule::KeepEvery(n) => keep.extend(all.iter().filter(|s| *n > 0 && *s % n == 0)),
            }
        }
        keep
    }
}

/// The k best steps by `monitor`: better value first, older step first among equals.
fn top_k<'a, I>(entries: I, monitor: &str, mode: Mode, k: usize) -> Vec<u64>
where
    I: IntoIterator<Item = (u64, &'a Metrics)>,
{
    let mut scored: Vec<(f64, u64)> = entries
        .into_iter()
        .filter_map(|(s, m)| {
            m.get(monitor)
                .copied()
                .filter(|v| !v.is_nan())
                .map(|v| (v, s))
        })
        .collect();
    scored.sort_by(|a, b| {
        let by_value = match mode {
            Mode::Min => a.0.total_cmp(&b.0),
            Mode::Max => b.0.total_cmp(&a.0),
        };
        by_value.then(a.1.cmp(&b.1))
    });
    scored.into_iter().take(k).map(|(_, s)| s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(v: f64) -> Metrics {
        BTreeMap::from([("loss".to_owned(), v)])
    }

    #[test]
    fn rules_combine_and_protect_latest_and_best() {
        let data: Vec<(u64, Metrics)> = vec![
            (1, m(0.1)),
            (2, m(0.5)),
            (3, m(0.4)),
            (4, m(0.3)),
            (5, m(0.9)),
            (6, m(f64::NAN)),
        ];
        let it = || data.iter().map(|(s, m)| (*s, m));
        let p = RetentionPolicy::new()
            .with(Rule::KeepLast(1))
            .best_by("loss", Mode::Min);
        assert_eq!(p.keep(it()), BTreeSet::from([1, 6]));
        let p = p.with(Rule::KeepEvery(2));
        assert_eq!(p.keep(it()), BTreeSet::from([1, 2, 4, 6]));
        let p = RetentionPolicy::new()
            .with(Rule::KeepBest {
                k: 2,
                monitor: "loss".into(),
                mode: Mode::Max,
            })
            .best_by("loss", Mode::Max);
        assert_eq!(p.keep(it()), BTreeSet::from([5, 2, 6]));
        assert_eq!(RetentionPolicy::new().keep(it()).len(), 6);
    }

    #[test]
    fn ties_prefer_the_older_checkpoint() {
        let data: Vec<(u64, Metrics)> = vec![(1, m(0.2)), (2, m(0.2)), (3, m(0.2))];
        let p = RetentionPolicy::new().best_by("loss", Mode::Min);
        assert_eq!(p.best(data.iter().map(|(s, m)| (*s, m))), Some(1));
    }
}
