//! Evaluation: classification (accuracy, precision/recall/F1 macro and weighted, confusion
//! matrix, a classification report in scikit-learn's `output_dict` shape), regression (MSE, MAE,
//! RMSE, R²) and uncertainty (mean entropy, mean confidence, expected calibration error)
//! metrics, an [`Evaluator`] that runs a model over a dataset and logs under
//! `eval/<name>/...`, and a K-fold cross-validation helper.

use burn::tensor::{FloatDType, activation::softmax};
use serde::{Deserialize, Serialize};

use crate::data::{BatchContext, BatchSource};
use crate::error::{Error, Result};
use crate::logging::MetricSink;
use crate::model::{ModelOutput, TrainModel};

mod evaluator;
mod kfold;
mod metrics;
#[cfg(test)]
mod tests;

pub use self::evaluator::*;
pub use self::kfold::*;
pub use self::metrics::*;
