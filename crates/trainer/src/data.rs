//! Data for the trainer: a [`BatchSource`] builds a batch from item indices, so the trainer owns
//! the (seeded, per-epoch) order and can resume at any position inside an epoch.

use burn::tensor::{Device, FloatDType, Int, Tensor, TensorData};

use crate::error::{Error, Result};

/// Where and in which float dtype a batch's tensors should be created.
#[derive(Debug, Clone)]
pub struct BatchContext {
    /// The training device (with autodiff while training).
    pub device: Device,
    /// f32, or the mixed-precision compute dtype for float inputs.
    pub float_dtype: FloatDType,
}

/// A dataset that turns item indices into a batch.
pub trait BatchSource: Send + Sync {
    /// The batch type the model consumes.
    type Batch;
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether there are no items.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The batch made of `indices` (in that order).
    fn batch(&self, indices: &[usize], ctx: &BatchContext) -> Result<Self::Batch>;
}

/// A classification batch: inputs of rank `D` (`[batch, ...item_shape]`) and class targets.
#[derive(Debug, Clone)]
pub struct ClassificationBatch<const D: usize> {
    /// `[batch, ...]` inputs.
    pub inputs: Tensor<D>,
    /// `[batch]` class indices.
    pub targets: Tensor<1, Int>,
}

/// An in-memory classification dataset: row-major f32 features and integer labels.
#[derive(Debug, Clone)]
pub struct ClassificationData<const D: usize> {
    features: Vec<f32>,
    item_shape: Vec<usize>,
    item_len: usize,
    labels: Vec<i64>,
    num_classes: usize,
}

impl<const D: usize> ClassificationData<D> {
    /// `features` holds `labels.len()` items of `item_shape` each (so `D = 1 + item_shape.len()`).
    pub fn new(
        features: Vec<f32>,
        item_shape: Vec<usize>,
        labels: Vec<i64>,
        num_classes: usize,
    ) -> Result<Self> {
        if item_shape.len() + 1 != D {
            return Err(Error::Data(format!(
                "item shape {item_shape:?} has rank {} but batches have rank {D}",
                item_shape.len()
            )));
        }
        let item_len: usize = item_shape.iter().product();
        if features.len() != item_len * labels.len() {
            return Err(Error::Data(format!(
                "{} features for {} items of {item_len} values",
                features.len(),
                labels.len()
            )));
        }
        if let Some(bad) = labels
            .iter()
            .find(|l| **l < 0 || **l as usize >= num_classes)
        {
            return Err(Error::Data(format!("label {bad} outside 0..{num_classes}")));
        }
        Ok(ClassificationData {
            features,
            item_shape,
            item_len,
            labels,
            num_classes,
        })
    }

    /// Number of classes.
    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    /// All labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The items at `indices` as a new dataset (for splits and K-fold).
    pub fn subset(&self, indices: &[usize]) -> Result<Self> {
        let mut features = Vec::with_capacity(indices.len() * self.item_len);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in indices {
            let row = self
                .features
                .get(i * self.item_len..(i + 1) * self.item_len)
                .ok_or_else(|| Error::Data(format!("index {i} out of range")))?;
            features.extend_from_slice(row);
            labels.push(self.labels[i]);
        }
        Self::new(features, self.item_shape.clone(), labels, self.num_classes)
    }
}

/// Zhang et al. (2017)'s label corruption: each label independently, with probability
/// `fraction`, is replaced by a class drawn uniformly from `0..num_classes` (so it may, by chance,
/// keep its true class: at `fraction = 1.0` the labels are fully random, and about
/// `fraction · (1 − 1/num_classes)` of them end up wrong). Deterministic in `seed`; the same seed
/// and fraction corrupt the same items, and a larger fraction corrupts a superset of the items a
/// smaller one does (with the same seed).
///
/// ```
/// use exptrack_trainer::data::label_corruption;
/// let clean: Vec<i64> = (0..1000).map(|i| i % 10).collect();
/// let noisy = label_corruption(&clean, 10, 0.5, 7)?;
/// let wrong = clean.iter().zip(&noisy).filter(|(a, b)| a != b).count();
/// assert!((400..500).contains(&wrong), "{wrong}"); // about 0.5 · 0.9 · 1000
/// assert_eq!(noisy, label_corruption(&clean, 10, 0.5, 7)?);
/// assert_eq!(label_corruption(&clean, 10, 0.0, 7)?, clean);
/// # Ok::<(), exptrack_trainer::Error>(())
/// ```
pub fn label_corruption(
    labels: &[i64],
    num_classes: usize,
    fraction: f64,
    seed: u64,
) -> Result<Vec<i64>> {
    use rand::{Rng, SeedableRng};
    if !(0.0..=1.0).contains(&fraction) {
        return Err(Error::Data(format!(
            "label_corruption {fraction} is outside 0.0..=1.0"
        )));
    }
    if num_classes == 0 {
        return Err(Error::Data(
            "label_corruption needs at least one class".into(),
        ));
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x1ABE_1C0F_F1A6);
    Ok(labels
        .iter()
        .map(|&label| {
            // Both draws happen for every item, so the item → (coin, class) pairing does not
            // depend on `fraction`.
            let coin: f64 = rng.random_range(0.0..1.0);
            let class = rng.random_range(0..num_classes) as i64;
            if coin < fraction { class } else { label }
        })
        .collect())
}

impl<const D: usize> ClassificationData<D> {
    /// This dataset with its labels corrupted by [`label_corruption`] (features unchanged).
    pub fn with_label_corruption(&self, fraction: f64, seed: u64) -> Result<Self> {
        let labels = label_corruption(&self.labels, self.num_classes, fraction, seed)?;
        Self::new(
            self.features.clone(),
            self.item_shape.clone(),
            labels,
            self.num_classes,
        )
    }
}

impl<const D: usize> BatchSource for ClassificationData<D> {
    type Batch = ClassificationBatch<D>;

    fn len(&self) -> usize {
        self.labels.len()
    }

    fn batch(&self, indices: &[usize], ctx: &BatchContext) -> Result<Self::Batch> {
        let mut x = Vec::with_capacity(indices.len() * self.item_len);
        let mut y = Vec::with_capacity(indices.len());
        for &i in indices {
            let row = self
                .features
                .get(i * self.item_len..(i + 1) * self.item_len)
                .ok_or_else(|| Error::Data(format!("index {i} out of range")))?;
            x.extend_from_slice(row);
            y.push(self.labels[i]);
        }
        let mut shape = Vec::with_capacity(D);
        shape.push(indices.len());
        shape.extend_from_slice(&self.item_shape);
        let inputs = Tensor::<D>::from_data(TensorData::new(x, shape), &ctx.device);
        let inputs = if ctx.float_dtype == FloatDType::F32 {
            inputs
        } else {
            inputs.cast(ctx.float_dtype)
        };
        let targets = Tensor::<1, Int>::from_data(TensorData::new(y, [indices.len()]), &ctx.device);
        Ok(ClassificationBatch { inputs, targets })
    }
}

/// The deterministic item order of an epoch: identity, or a Fisher–Yates shuffle seeded from
/// `(seed, epoch)` so a resumed run sees exactly the same order.
pub fn epoch_order(len: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    use rand::{Rng, SeedableRng};
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        let mix = seed ^ (epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut rng = rand::rngs::StdRng::seed_from_u64(mix);
        for i in (1..len).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_order_is_a_deterministic_permutation() {
        let a = epoch_order(100, 7, 3, true);
        assert_eq!(a, epoch_order(100, 7, 3, true));
        assert_ne!(a, epoch_order(100, 7, 4, true));
        let mut s = a.clone();
        s.sort_unstable();
        assert_eq!(s, (0..100).collect::<Vec<_>>());
        assert_eq!(epoch_order(5, 1, 1, false), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn label_corruption_is_seeded_nested_and_bounded() {
        let clean: Vec<i64> = (0..4000).map(|i| i % 10).collect();
        let wrong = |f: f64, seed: u64| -> Vec<bool> {
            let noisy = label_corruption(&clean, 10, f, seed).unwrap();
            assert!(noisy.iter().all(|l| (0..10).contains(l)));
            clean.iter().zip(&noisy).map(|(a, b)| a != b).collect()
        };
        let count = |w: &[bool]| w.iter().filter(|x| **x).count() as f64 / clean.len() as f64;
        assert_eq!(count(&wrong(0.0, 1)), 0.0);
        for f in [0.2, 0.5, 0.8, 1.0] {
            let c = count(&wrong(f, 1));
            assert!((c - f * 0.9).abs() < 0.03, "fraction {f}: {c} wrong");
        }
        // A larger fraction corrupts a superset of the items (same seed); another seed differs.
        let (w2, w5) = (wrong(0.2, 1), wrong(0.5, 1));
        assert!(w2.iter().zip(&w5).all(|(a, b)| !a || *b));
        assert_ne!(wrong(0.5, 2), w5);
        assert!(label_corruption(&clean, 10, 1.5, 1).is_err());
        assert!(label_corruption(&clean, 10, f64::NAN, 1).is_err());
        let data =
            ClassificationData::<2>::new(vec![0.5; 8], vec![2], vec![0, 1, 0, 1], 2).unwrap();
        let noisy = data.with_label_corruption(1.0, 3).unwrap();
        assert_eq!(noisy.len(), 4);
        assert_eq!(noisy.features, data.features);
    }

    #[test]
    fn bad_shapes_and_labels_are_refused() {
        assert!(ClassificationData::<2>::new(vec![0.0; 6], vec![3], vec![0, 1], 2).is_ok());
        assert!(ClassificationData::<2>::new(vec![0.0; 5], vec![3], vec![0, 1], 2).is_err());
        assert!(ClassificationData::<2>::new(vec![0.0; 6], vec![3], vec![0, 2], 2).is_err());
        assert!(ClassificationData::<3>::new(vec![0.0; 6], vec![3], vec![0, 1], 2).is_err());
    }
}
