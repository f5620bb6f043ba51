//! What gets plotted: metric series grouped by quantity, and confusion matrices.

use std::collections::BTreeMap;

use exptrack_core::Event;
use serde_json::Value;

/// The quantities that get a chart, each with every split (train, validation, test, ...) on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Quantity {
    /// Keys whose last segment is `loss` or ends with `loss` (`train/loss`, `valid/loss`,
    /// `val_loss`, `train/epoch_loss`).
    Loss,
    /// Keys whose last segment is `accuracy`/`acc` or ends with `accuracy`/`_acc`
    /// (`valid/accuracy`, `test_accuracy`, `val_acc`).
    Accuracy,
    /// Learning rate: `lr`, `learning_rate` or ending with `_lr` (`train/lr`, `opt/group0_lr`).
    LearningRate,
}

impl Quantity {
    /// Every quantity, in chart order.
    pub const ALL: [Quantity; 3] = [Quantity::Loss, Quantity::Accuracy, Quantity::LearningRate];

    /// The chart's file stem (`loss`, `accuracy`, `lr`).
    pub fn file_stem(self) -> &'static str {
        match self {
            Quantity::Loss => "loss",
            Quantity::Accuracy => "accuracy",
            Quantity::LearningRate => "lr",
        }
    }

    /// The y-axis label.
    pub fn label(self) -> &'static str {
        match self {
            Quantity::Loss => "loss",
            Quantity::Accuracy => "accuracy",
            Quantity::LearningRate => "learning rate",
        }
    }

    /// Classifies a metric key; `None` for keys that do not belong on any chart (including
    /// everything under `system/`).
    ///
    /// ```
    /// use exptrack_plot::Quantity;
    /// assert_eq!(Quantity::of_key("train/loss"), Some(Quantity::Loss));
    /// assert_eq!(Quantity::of_key("val_accuracy"), Some(Quantity::Accuracy));
    /// assert_eq!(Quantity::of_key("train/lr"), Some(Quantity::LearningRate));
    /// assert_eq!(Quantity::of_key("train/loss_scale"), None);
    /// ```
    pub fn of_key(key: &str) -> Option<Quantity> {
        if key.starts_with("system/") {
            return None;
        }
        let name = key.rsplit('/').next().unwrap_or(key).to_ascii_lowercase();
        if name.ends_with("loss") {
            Some(Quantity::Loss)
        } else if name.ends_with("accuracy") || name == "acc" || name.ends_with("_acc") {
            Some(Quantity::Accuracy)
        } else if name == "lr" || name.ends_with("learning_rate") || name.ends_with("_lr") {
            Some(Quantity::LearningRate)
        } else {
            None
        }
    }
}

/// One metric's points, in logging order (`(step, value)`; non-finite values included).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Series {
    /// The metric key (the legend label).
    pub key: String,
    /// `(step, value)` pairs.
    pub points: Vec<(u64, f64)>,
}

impl Series {
    /// The finite points.
    pub fn finite(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.points.iter().copied().filter(|(_, v)| v.is_finite())
    }
}

/// Collects every plottable metric from a run's events, grouped by quantity; series within a
/// quantity are ordered train first, then validation, then test, then the rest by name.
pub fn collect_series(events: &[Event]) -> BTreeMap<Quantity, Vec<Series>> {
    let mut by_key: BTreeMap<String, Vec<(u64, f64)>> = BTreeMap::new();
    for ev in events {
        if let Event::Metrics { step, values, .. } = ev {
            for m in values {
                if Quantity::of_key(&m.key).is_some() {
                    by_key
                        .entry(m.key.clone())
                        .or_default()
                        .push((*step, m.value));
                }
            }
        }
    }
    let mut out: BTreeMap<Quantity, Vec<Series>> = BTreeMap::new();
    for (key, points) in by_key {
        if let Some(q) = Quantity::of_key(&key) {
            out.entry(q).or_default().push(Series { key, points });
        }
    }
    for series in out.values_mut() {
        series.sort_by(|a, b| {
            split_rank(&a.key)
                .cmp(&split_rank(&b.key))
                .then_with(|| a.key.cmp(&b.key))
        });
    }
    out
}

/// 0 train, 1 validation, 2 test, 3 other.
fn split_rank(key: &str) -> u8 {
    let k = key.to_ascii_lowercase();
    let first = k.split(['/', '_']).next().unwrap_or("");
    match first {
        "train" | "training" => 0,
        "val" | "valid" | "validation" | "eval" => 1,
        "test" => 2,
        _ => 3,
    }
}

/// The tag (Text events) and `results.json` `extra` key under which a confusion matrix is
/// recorded; any tag or key ending in `/confusion_matrix` counts too (e.g.
/// `valid/confusion_matrix`).
pub const CONFUSION_MATRIX_TAG: &str = "confusion_matrix";

/// Whether a Text tag or results key names a confusion matrix.
pub fn is_confusion_tag(tag: &str) -> bool {
    tag == CONFUSION_MATRIX_TAG || tag.ends_with("/confusion_matrix")
}

/// A confusion matrix: `counts[true_class][predicted_class]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    /// Class names (defaults to `0`, `1`, ...).
    pub labels: Vec<String>,
    /// Square matrix of counts (or rates), rows = true class, columns = predicted class.
    pub counts: Vec<Vec<f64>>,
}

impl ConfusionMatrix {
    /// A matrix with default labels `0..n`.
    pub fn new(counts: Vec<Vec<f64>>) -> Self {
        let labels = (0..counts.len()).map(|i| i.to_string()).collect();
        ConfusionMatrix { labels, counts }
    }

    /// Parses the JSON convention: either a square 2-D array of numbers, or an object
    /// `{"matrix": [[...], ...], "labels": ["cat", ...]}` (`labels` optional). Returns `None` for
    /// anything else (ragged, non-square, empty, non-numeric, wrong label count).
    pub fn from_json(v: &Value) -> Option<Self> {
        let (matrix, labels) = match v {
            Value::Array(_) => (v, None),
            Value::Object(o) => (o.get("matrix")?, o.get("labels")),
            _ => return None,
        };
        let rows = matrix.as_array()?;
        let n = rows.len();
        if n == 0 {
            return None;
        }
        let mut counts = Vec::with_capacity(n);
        for row in rows {
            let row = row.as_array()?;
            if row.len() != n {
                return None;
            }
            let row: Option<Vec<f64>> = row.iter().map(Value::as_f64).collect();
            counts.push(row?);
        }
        let mut m = ConfusionMatrix::new(counts);
        if let Some(labels) = labels {
            let labels: Option<Vec<String>> = labels
                .as_array()?
                .iter()
                .map(|l| match l {
                    Value::String(s) => Some(s.clone()),
                    Value::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .collect();
            let labels = labels?;
            if labels.len() != n {
                return None;
            }
            m.labels = labels;
        }
        Some(m)
    }

    /// Parses the text of a Text event (JSON, see [`from_json`](Self::from_json)).
    pub fn from_text(text: &str) -> Option<Self> {
        serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| Self::from_json(&v))
    }

    /// The JSON form `{"matrix": ..., "labels": ...}`, suitable for `log_text` or `set_result`.
    pub fn to_json(&self) -> Value {
        serde_json::json!({ "matrix": self.counts, "labels": self.labels })
    }

    /// Number of classes.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether the matrix has no classes (never true for a parsed one).
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }
}

/// Finds confusion matrices: `results.json` `extra` entries first, then Text events (the latest
/// step of each tag wins). Entries that do not parse are skipped with a warning.
pub fn collect_confusion(
    events: &[Event],
    extra: Option<&BTreeMap<String, Value>>,
) -> BTreeMap<String, ConfusionMatrix> {
    let mut out = BTreeMap::new();
    if let Some(extra) = extra {
        for (k, v) in extra {
            if is_confusion_tag(k) {
                match ConfusionMatrix::from_json(v) {
                    Some(m) => {
                        out.insert(k.clone(), m);
                    }
                    None => tracing::warn!("results.json {k:?} is not a square numeric matrix"),
                }
            }
        }
    }
    let mut latest: BTreeMap<&str, u64> = BTreeMap::new();
    for ev in events {
        if let Event::Text {
            step, tag, text, ..
        } = ev
            && is_confusion_tag(tag)
        {
            if latest.get(tag.as_str()).is_some_and(|s| *s > *step) {
                continue;
            }
            match ConfusionMatrix::from_text(text) {
                Some(m) => {
                    latest.insert(tag, *step);
                    out.insert(tag.clone(), m);
                }
                None => tracing::warn!("text {tag:?} at step {step} is not a square matrix"),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use exptrack_core::Metric;

    #[test]
    fn classifies_keys() {
        use Quantity::*;
        for (k, q) in [
            ("train/loss", Some(Loss)),
            ("valid/loss", Some(Loss)),
            ("val_loss", Some(Loss)),
            ("train/epoch_loss", Some(Loss)),
            ("train/loss_scale", None),
            ("valid/accuracy", Some(Accuracy)),
            ("test_accuracy", Some(Accuracy)),
            ("val_acc", Some(Accuracy)),
            ("train/lr", Some(LearningRate)),
            ("learning_rate", Some(LearningRate)),
            ("train/grad_norm", None),
            ("system/loss", None),
            ("accuracy_drop_rate", None),
        ] {
            assert_eq!(Quantity::of_key(k), q, "{k}");
        }
    }

    #[test]
    fn groups_and_orders_splits() {
        let ev = |step, kv: &[(&str, f64)]| Event::Metrics {
            step,
            timestamp_ms: 0,
            values: kv.iter().map(|(k, v)| Metric::new(*k, *v)).collect(),
        };
        let events = vec![
            ev(
                1,
                &[("valid/loss", 1.0), ("train/loss", 2.0), ("train/lr", 0.1)],
            ),
            ev(
                2,
                &[("train/loss", 1.5), ("other", 3.0), ("test/loss", 0.5)],
            ),
        ];
        let s = collect_series(&events);
        let keys: Vec<_> = s[&Quantity::Loss].iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["train/loss", "valid/loss", "test/loss"]);
        assert_eq!(s[&Quantity::Loss][0].points, vec![(1, 2.0), (2, 1.5)]);
        assert_eq!(s[&Quantity::LearningRate].len(), 1);
        assert!(!s.contains_key(&Quantity::Accuracy));
    }

    #[test]
    fn parses_confusion_json() {
        let m = ConfusionMatrix::from_text("[[1,2],[3,4]]").unwrap();
        assert_eq!(m.labels, ["0", "1"]);
        assert_eq!(m.counts, vec![vec![1.0, 2.0], vec![3.0, 4.0]]);
        let m =
            ConfusionMatrix::from_text(r#"{"matrix":[[1,0],[0,1]],"labels":["a","b"]}"#).unwrap();
        assert_eq!(m.labels, ["a", "b"]);
        assert_eq!(ConfusionMatrix::from_json(&m.to_json()), Some(m));
        for bad in [
            "[]",
            "[[1,2],[3]]",
            "[[1,2]]",
            "[[\"x\"]]",
            r#"{"matrix":[[1]],"labels":["a","b"]}"#,
            "not json",
            "3",
        ] {
            assert_eq!(ConfusionMatrix::from_text(bad), None, "{bad}");
        }
    }

    #[test]
    fn latest_confusion_text_wins() {
        let t = |step, text: &str| Event::Text {
            step,
            timestamp_ms: 0,
            tag: "valid/confusion_matrix".into(),
            text: text.into(),
        };
        let events = vec![t(5, "[[9]]"), t(2, "[[1]]"), t(7, "garbage")];
        let mut extra = BTreeMap::new();
        extra.insert(
            "confusion_matrix".to_owned(),
            serde_json::json!([[1, 2], [3, 4]]),
        );
        let c = collect_confusion(&events, Some(&extra));
        assert_eq!(c.len(), 2);
        assert_eq!(c["valid/confusion_matrix"].counts, vec![vec![9.0]]);
        assert_eq!(c["confusion_matrix"].len(), 2);
    }
}
