//! K-fold splits (scikit-learn's `KFold`) and a cross-validation helper.

use super::*;

/// scikit-learn `KFold` splits: `(train, valid)` index lists; the first `n % k` folds get one
/// extra item; with `shuffle` the indices are permuted with `seed` first.
pub fn kfold_indices(
    n: usize,
    k: usize,
    seed: u64,
    shuffle: bool,
) -> Result<Vec<(Vec<usize>, Vec<usize>)>> {
    if k < 2 || k > n {
        return Err(Error::Config(format!(
            "K-fold needs 2 <= k <= n, got k = {k}, n = {n}"
        )));
    }
    let order = crate::data::epoch_order(n, seed, 0, shuffle);
    let mut folds = Vec::with_capacity(k);
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        let valid: Vec<usize> = order[start..start + size].to_vec();
        let train: Vec<usize> = order[..start]
            .iter()
            .chain(&order[start + size..])
            .copied()
            .collect();
        folds.push((train, valid));
        start += size;
    }
    Ok(folds)
}

/// Per-fold metrics with their mean and (population) standard deviation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CrossValidationResult {
    /// Each fold's metrics.
    pub folds: Vec<Vec<(String, f64)>>,
    /// Mean per metric (over folds that reported it).
    pub mean: Vec<(String, f64)>,
    /// Population standard deviation per metric.
    pub std: Vec<(String, f64)>,
}

impl CrossValidationResult {
    /// Mean and std of a metric.
    pub fn summary(&self, key: &str) -> Option<(f64, f64)> {
        let m = self.mean.iter().find(|(k, _)| k == key)?.1;
        let s = self.std.iter().find(|(k, _)| k == key)?.1;
        Some((m, s))
    }

    /// Logs `cv/fold<i>/<metric>`, `cv/mean/<metric>` and `cv/std/<metric>` at step 0.
    pub fn log(&self, sink: &dyn MetricSink) -> Result<()> {
        let mut all = Vec::new();
        for (i, f) in self.folds.iter().enumerate() {
            all.extend(f.iter().map(|(k, v)| (format!("cv/fold{i}/{k}"), *v)));
        }
        all.extend(self.mean.iter().map(|(k, v)| (format!("cv/mean/{k}"), *v)));
        all.extend(self.std.iter().map(|(k, v)| (format!("cv/std/{k}"), *v)));
        sink.log_metrics(0, &all)
    }
}

/// Runs `run_fold(fold, train_indices, valid_indices)` for each of `k` folds and aggregates
/// the metrics it returns.
pub fn cross_validate<F>(
    n: usize,
    k: usize,
    seed: u64,
    mut run_fold: F,
) -> Result<CrossValidationResult>
where
    F: FnMut(usize, &[usize], &[usize]) -> Result<Vec<(String, f64)>>,
{
    let mut folds = Vec::with_capacity(k);
    for (i, (train, valid)) in kfold_indices(n, k, seed, true)?.iter().enumerate() {
        folds.push(run_fold(i, train, valid)?);
    }
    let mut keys: Vec<String> = Vec::new();
    for f in &folds {
        for (key, _) in f {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
    }
    let mut mean = Vec::new();
    let mut std = Vec::new();
    for key in keys {
        let vals: Vec<f64> = folds
            .iter()
            .filter_map(|f| f.iter().find(|(k, _)| *k == key).map(|(_, v)| *v))
            .collect();
        let m = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / vals.len() as f64;
        mean.push((key.clone(), m));
        std.push((key, var.sqrt()));
    }
    Ok(CrossValidationResult { folds, mean, std })
}
