//! Comparing runs' metrics: which direction is better for a metric (guessed from its key) and a
//! metric's best value, as `exptrack runs compare` and the trainer's recipe batches show them.

use super::summary::MetricSummary;

/// Last segments of metric keys for which lower is better.
const LOWER: [&str; 10] = [
    "loss",
    "error",
    "err",
    "perplexity",
    "mse",
    "mae",
    "rmse",
    "wer",
    "cer",
    "latency",
];

/// Last segments of metric keys for which higher is better.
const HIGHER: [&str; 10] = [
    "accuracy",
    "acc",
    "f1",
    "precision",
    "recall",
    "auc",
    "bleu",
    "iou",
    "score",
    "map",
];

/// Which direction is better for a metric, guessed from the last `/` segment of its key:
/// `Some(true)` when lower is better (`loss`, `error`, `wer`, ...), `Some(false)` when higher is
/// (`accuracy`, `f1`, `auc`, ...), `None` when the name says neither (`lr`, `epoch`).
///
/// A word matches the whole segment, as a `_`-separated prefix or suffix (`val_acc`,
/// `loss_total`), or, for words longer than three letters, anywhere in it (`test_accuracy_top1`).
/// The lower-is-better words are tried first.
///
/// ```
/// use exptrack_core::store::better_is_lower;
///
/// assert_eq!(better_is_lower("valid/loss"), Some(true));
/// assert_eq!(better_is_lower("val_acc"), Some(false));
/// assert_eq!(better_is_lower("train/lr"), None);
/// ```
pub fn better_is_lower(key: &str) -> Option<bool> {
    let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
    let has = |w: &str| {
        name == w
            || name.ends_with(&format!("_{w}"))
            || name.starts_with(&format!("{w}_"))
            || (w.len() > 3 && name.contains(w))
    };
    if LOWER.iter().any(|w| has(w)) {
        Some(true)
    } else if HIGHER.iter().any(|w| has(w)) {
        Some(false)
    } else {
        None
    }
}

/// A metric's best value and the step it was reached at, by the direction
/// [`better_is_lower`] guesses from `key` (its minimum or its maximum); `None` when the key names
/// no direction or that extreme is not finite (every value was NaN).
pub fn best_of(key: &str, summary: &MetricSummary) -> Option<(f64, u64)> {
    match better_is_lower(key)? {
        true if summary.min.is_finite() => Some((summary.min, summary.min_step)),
        false if summary.max.is_finite() => Some((summary.max, summary.max_step)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A summary whose minimum and maximum are `min` and `max`, at steps 2 and 1.
    fn summary(min: f64, max: f64) -> MetricSummary {
        MetricSummary {
            last: 0.5,
            min,
            max,
            count: 3,
            last_step: 3,
            min_step: 2,
            max_step: 1,
        }
    }

    #[test]
    fn direction_guess() {
        assert_eq!(better_is_lower("train/loss"), Some(true));
        assert_eq!(better_is_lower("valid/accuracy"), Some(false));
        assert_eq!(better_is_lower("test_accuracy"), Some(false));
        assert_eq!(better_is_lower("val_acc"), Some(false));
        assert_eq!(better_is_lower("eval/wer"), Some(true));
        assert_eq!(better_is_lower("train/lr"), None);
        assert_eq!(better_is_lower("train/epoch"), None);
    }

    #[test]
    fn direction_words_match_by_segment_affix_or_long_substring() {
        assert_eq!(better_is_lower("VALID/LOSS"), Some(true), "case is ignored");
        assert_eq!(better_is_lower("loss_total"), Some(true));
        assert_eq!(better_is_lower("top1accuracy"), Some(false));
        // Short words only match whole, or as a `_` prefix or suffix.
        assert_eq!(better_is_lower("macc"), None);
        // Only the last segment counts.
        assert_eq!(better_is_lower("loss/lr"), None);
        // Lower-is-better words win when both appear.
        assert_eq!(better_is_lower("accuracy_error"), Some(true));
    }

    #[test]
    fn best_follows_the_direction_and_keeps_its_step() {
        let s = summary(0.2, 0.9);
        assert_eq!(best_of("train/loss", &s), Some((0.2, 2)));
        assert_eq!(best_of("train/accuracy", &s), Some((0.9, 1)));
        assert_eq!(best_of("train/lr", &s), None);
    }

    #[test]
    fn no_best_when_every_value_was_nan() {
        // What the store keeps of a metric that was only ever NaN.
        let s = summary(f64::INFINITY, f64::NEG_INFINITY);
        assert_eq!(best_of("train/loss", &s), None);
        assert_eq!(best_of("valid/accuracy", &s), None);
    }
}
