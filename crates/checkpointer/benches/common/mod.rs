//! The harness both checkpoint benches share (`mod common;`): per-benchmark iteration times kept
//! for a ratio table of medians, payload sizes from `EXPTRACK_BENCH_SIZES`, and weight-like bytes.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

/// Per-benchmark iteration times in seconds, by `(size label, benchmark name)`.
static TIMES: Mutex<BTreeMap<(String, String), Vec<f64>>> = Mutex::new(BTreeMap::new());

/// Records one iteration of benchmark `name` at size `size`.
pub fn record(size: &str, name: &str, d: Duration) {
    TIMES
        .lock()
        .unwrap()
        .entry((size.to_owned(), name.to_owned()))
        .or_default()
        .push(d.as_secs_f64());
}

/// The median of the recorded times of `name` at `size`, if it ran.
pub fn median_of(size: &str, name: &str) -> Option<f64> {
    TIMES
        .lock()
        .unwrap()
        .get(&(size.to_owned(), name.to_owned()))
        .map(|v| median(v))
}

/// The median of the per-iteration ratios `base[i] / ours[i]`, pairing the two benchmarks'
/// iterations in the order they were recorded (for benches that run one of each in turn, so
/// each pair saw the same server state). `None` if either did not run.
#[allow(dead_code)]
pub fn paired_ratio(size: &str, base: &str, ours: &str) -> Option<f64> {
    let times = TIMES.lock().unwrap();
    let b = times.get(&(size.to_owned(), base.to_owned()))?;
    let o = times.get(&(size.to_owned(), ours.to_owned()))?;
    let ratios: Vec<f64> = b.iter().zip(o).map(|(b, o)| b / o).collect();
    (!ratios.is_empty()).then(|| median(&ratios))
}

/// Every recorded time of `name` at `size`, in recording order.
#[allow(dead_code)]
pub fn times_of(size: &str, name: &str) -> Vec<f64> {
    TIMES
        .lock()
        .unwrap()
        .get(&(size.to_owned(), name.to_owned()))
        .cloned()
        .unwrap_or_default()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The size labels of `EXPTRACK_BENCH_SIZES` (`default` when unset), blanks left out.
pub fn size_labels(default: &str) -> Vec<String> {
    std::env::var("EXPTRACK_BENCH_SIZES")
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// A size label in bytes: `64M`, `2G`, `512K` or a plain number.
pub fn parse_size(s: &str) -> usize {
    let s = s.trim();
    let (num, mul) = match s.chars().last() {
        Some('K' | 'k') => (&s[..s.len() - 1], 1 << 10),
        Some('M' | 'm') => (&s[..s.len() - 1], 1 << 20),
        Some('G' | 'g') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>()
        .expect("EXPTRACK_BENCH_SIZES: sizes like 64M,512M,2G")
        * mul
}

/// Weight-like bytes: small random f32 values (zstd gets a little out of the exponents).
pub fn payload(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let f = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.2;
        v.extend_from_slice(&f.to_le_bytes());
    }
    v.truncate(len);
    v
}
