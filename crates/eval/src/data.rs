//! Test sets for decoupled evaluation: float32 inputs and integer class labels, read from CSV.

use std::path::Path;

use crate::error::{Error, Result};

/// A labelled test set: `labels.len()` items of `input_len` float32 values each, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct TestSet {
    /// Row-major inputs, `len() * input_len` values.
    pub inputs: Vec<f32>,
    /// Class index per item.
    pub labels: Vec<usize>,
    /// Values per item.
    pub input_len: usize,
}

impl TestSet {
    /// A test set from its parts (`inputs.len()` must be `labels.len() * input_len`).
    pub fn new(inputs: Vec<f32>, labels: Vec<usize>, input_len: usize) -> Result<Self> {
        if input_len == 0 || inputs.len() != labels.len() * input_len {
            return Err(Error::Evaluation {
                message: format!(
                    "{} input values for {} items of {input_len}",
                    inputs.len(),
                    labels.len()
                ),
                source: None,
            });
        }
        Ok(TestSet {
            inputs,
            labels,
            input_len,
        })
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no items.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The inputs of item `i`.
    pub fn item(&self, i: usize) -> &[f32] {
        &self.inputs[i * self.input_len..(i + 1) * self.input_len]
    }

    /// Reads a CSV file: one item per line, `input_len` numbers then the integer label (the last
    /// column). A first line that does not parse as numbers is a header and skipped; empty lines
    /// and lines starting with `#` are skipped. Errors name the line.
    pub fn from_csv(path: &Path, input_len: usize) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Data {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        Self::parse_csv(&text, input_len).map_err(|message| Error::Data {
            path: path.to_owned(),
            message,
        })
    }

    fn parse_csv(text: &str, input_len: usize) -> std::result::Result<Self, String> {
        let mut inputs = Vec::new();
        let mut labels = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let parsed: std::result::Result<Vec<f32>, _> = fields[..fields.len() - 1]
                .iter()
                .map(|f| f.parse::<f32>())
                .collect();
            let label = fields[fields.len() - 1].parse::<usize>();
            // A first line with a field that is no number at all is a header.
            if n == 0 && fields.iter().any(|f| f.parse::<f64>().is_err()) {
                continue;
            }
            let (values, label) = match (parsed, label) {
                (Ok(v), Ok(l)) => (v, l),
                (Err(e), _) => return Err(format!("line {}: {e}", n + 1)),
                (_, Err(e)) => {
                    return Err(format!(
                        "line {}: the label (last column) is not a class index: {e}",
                        n + 1
                    ));
                }
            };
            if values.len() != input_len {
                return Err(format!(
                    "line {}: {} input values, the model takes {input_len} (then the label)",
                    n + 1,
                    values.len()
                ));
            }
            inputs.extend(values);
            labels.push(label);
        }
        if labels.is_empty() {
            return Err("no items".to_owned());
        }
        Ok(TestSet {
            inputs,
            labels,
            input_len,
        })
    }

    /// The CSV form [`from_csv`](Self::from_csv) reads (a header `x0,...,label`).
    pub fn to_csv(&self) -> String {
        let mut out = String::new();
        for i in 0..self.input_len {
            out.push_str(&format!("x{i},"));
        }
        out.push_str("label\n");
        for (i, label) in self.labels.iter().enumerate() {
            for v in self.item(i) {
                out.push_str(&format!("{v},"));
            }
            out.push_str(&format!("{label}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_and_errors_name_the_line() {
        let t = TestSet::new(vec![0.5, -1.0, 2.25, 3.0], vec![1, 0], 2).unwrap();
        let back = TestSet::parse_csv(&t.to_csv(), 2).unwrap();
        assert_eq!(back, t);
        let e = TestSet::parse_csv("1,2,0\n1,x,1\n", 2).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = TestSet::parse_csv("1,2,3,0\n", 2).unwrap_err();
        assert!(e.contains("3 input values"), "{e}");
        let e = TestSet::parse_csv("1,2,0.5\n", 2).unwrap_err();
        assert!(e.contains("label"), "{e}");
        assert!(TestSet::parse_csv("a,b,label\n", 2).is_err());
    }
}
