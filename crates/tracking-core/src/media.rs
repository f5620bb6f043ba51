//! Helpers backends share to show media events: content hashes and equal-width histograms.
//!
//! ```
//! use exptrack_core::media::{Histogram, sha256_hex};
//!
//! let h = Histogram::from_values(&[0.0, 1.0, 1.0, 2.0, f64::NAN], 2);
//! assert_eq!(h.edges, vec![0.0, 1.0, 2.0]);
//! assert_eq!(h.counts, vec![1, 3]);
//! assert_eq!(h.nan, 1);
//! assert_eq!(sha256_hex(b"").len(), 64);
//! ```

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// An equal-width histogram of the finite values, the way `numpy.histogram(values, bins)` buckets
/// them (and W&B's `wandb.Histogram` shows them): `bins` buckets spanning `[min, max]`, each
/// half-open except the last, which includes `max`; when every value is equal the range is
/// `value ± 0.5`. Non-finite values are counted apart.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// Bucket edges, `counts.len() + 1` of them, increasing (empty when there is no finite
    /// value).
    pub edges: Vec<f64>,
    /// Values per bucket.
    pub counts: Vec<u64>,
    /// Finite values.
    pub count: u64,
    /// Smallest finite value (0 when none).
    pub min: f64,
    /// Largest finite value (0 when none).
    pub max: f64,
    /// Sum of the finite values.
    pub sum: f64,
    /// Sum of the squares of the finite values.
    pub sum_squares: f64,
    /// NaN values (not bucketed).
    pub nan: u64,
    /// `+inf` values (not bucketed).
    pub pos_inf: u64,
    /// `-inf` values (not bucketed).
    pub neg_inf: u64,
}

/// W&B's (and numpy's) default number of buckets.
pub const DEFAULT_BINS: usize = 64;

impl Histogram {
    /// Buckets `values` into `bins` equal-width buckets (`bins` 0 is taken as 1).
    pub fn from_values(values: &[f64], bins: usize) -> Self {
        let bins = bins.max(1);
        let mut h = Histogram {
            edges: Vec::new(),
            counts: Vec::new(),
            count: 0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            sum_squares: 0.0,
            nan: 0,
            pos_inf: 0,
            neg_inf: 0,
        };
        for &v in values {
            if v.is_nan() {
                h.nan += 1;
            } else if v == f64::INFINITY {
                h.pos_inf += 1;
            } else if v == f64::NEG_INFINITY {
                h.neg_inf += 1;
            } else {
                h.count += 1;
                h.min = h.min.min(v);
                h.max = h.max.max(v);
                h.sum += v;
                h.sum_squares += v * v;
            }
        }
        if h.count == 0 {
            h.min = 0.0;
            h.max = 0.0;
            return h;
        }
        let (lo, hi) = if h.min == h.max {
            (h.min - 0.5, h.max + 0.5)
        } else {
            (h.min, h.max)
        };
        let width = hi / bins as f64 - lo / bins as f64;
        h.edges = (0..=bins)
            .map(|i| if i == bins { hi } else { lo + width * i as f64 })
            .collect();
        h.counts = vec![0; bins];
        for &v in values.iter().filter(|v| v.is_finite()) {
            // A range so wide that its width overflows (e.g. -MAX..MAX) still buckets: the
            // position is computed in halves.
            let pos = (v / 2.0 - lo / 2.0) / (hi / 2.0 - lo / 2.0) * bins as f64;
            let i = if pos.is_finite() && pos > 0.0 {
                (pos as usize).min(bins - 1)
            } else {
                0
            };
            h.counts[i] += 1;
        }
        h
    }

    /// The histogram as a JSON document (the MLflow backend's `histograms/...json` artifacts):
    /// `{"step", "timestamp_ms", "tag", "bins" (edges), "counts", "count", "min", "max", "sum",
    /// "sum_squares", "nan", "pos_inf", "neg_inf"}`.
    pub fn to_json(&self, tag: &str, step: u64, timestamp_ms: i64) -> Value {
        json!({
            "tag": tag,
            "step": step,
            "timestamp_ms": timestamp_ms,
            "bins": self.edges,
            "counts": self.counts,
            "count": self.count,
            "min": self.min,
            "max": self.max,
            "sum": finite_or_null(self.sum),
            "sum_squares": finite_or_null(self.sum_squares),
            "nan": self.nan,
            "pos_inf": self.pos_inf,
            "neg_inf": self.neg_inf,
        })
    }
}

fn finite_or_null(v: f64) -> Value {
    serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)
}

/// Reads width, height and channel count from a PNG's IHDR chunk.
pub fn png_dimensions(png: &[u8]) -> Option<(u32, u32, u8)> {
    const SIG: [u8; 8] = [0x89, b'P', b'N', b'G', 0x0d, 0x0a, 0x1a, 0x0a];
    if png.len() < 26 || png[..8] != SIG || &png[12..16] != b"IHDR" {
        return None;
    }
    let w = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let h = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    let channels = match png[25] {
        0 => 1, // grey
        2 => 3, // RGB
        3 => 3, // palette, shown as RGB
        4 => 2, // grey + alpha
        6 => 4, // RGBA
        _ => return None,
    };
    Some((w, h, channels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_like_numpy() {
        // numpy.histogram([1, 2, 2, 3, 10], bins=3) -> counts [4, 0, 1], edges [1, 4, 7, 10]
        let h = Histogram::from_values(&[1.0, 2.0, 2.0, 3.0, 10.0], 3);
        assert_eq!(h.edges, vec![1.0, 4.0, 7.0, 10.0]);
        assert_eq!(h.counts, vec![4, 0, 1]);
        assert_eq!((h.count, h.min, h.max, h.sum), (5, 1.0, 10.0, 18.0));
        // numpy.histogram([5, 5], bins=2) -> counts [0, 2], edges [4.5, 5, 5.5]
        let h = Histogram::from_values(&[5.0, 5.0], 2);
        assert_eq!(h.edges, vec![4.5, 5.0, 5.5]);
        assert_eq!(h.counts, vec![0, 2]);
    }

    #[test]
    fn non_finite_and_extreme_values() {
        let h = Histogram::from_values(
            &[
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                -f64::MAX,
                f64::MAX,
            ],
            4,
        );
        assert_eq!((h.nan, h.pos_inf, h.neg_inf, h.count), (1, 1, 1, 2));
        assert_eq!(h.counts, vec![1, 0, 0, 1]);
        assert!(h.to_json("t", 0, 0)["sum_squares"].is_null());
        let empty = Histogram::from_values(&[], 8);
        assert!(empty.edges.is_empty() && empty.counts.is_empty());
    }
}
