//! The IDX file format of MNIST and Fashion-MNIST (<http://yann.lecun.com/exdb/mnist/>):
//! a big-endian header `0x00 0x00 <type> <ndims>`, `ndims` big-endian u32 sizes, then the data
//! row-major. Type `0x08` is unsigned bytes (the only type those datasets use); `0x09` (i8),
//! `0x0B` (i16), `0x0C` (i32), `0x0D` (f32) and `0x0E` (f64) are read too. Files ending in
//! `.gz` are not decompressed here: pass the uncompressed files.

use std::path::Path;

use crate::data::ClassificationData;
use crate::error::{Error, IoContext, Result};

/// A parsed IDX array, values widened to f32.
#[derive(Debug, Clone, PartialEq)]
pub struct IdxArray {
    /// Dimension sizes.
    pub dims: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

fn bad(msg: impl Into<String>) -> Error {
    Error::Data(format!("IDX: {}", msg.into()))
}

/// Parses IDX bytes.
pub fn parse_idx(bytes: &[u8]) -> Result<IdxArray> {
    if bytes.len() < 4 {
        return Err(bad("shorter than the 4-byte magic"));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "magic must start with two zero bytes, got {:02x} {:02x}",
            bytes[0], bytes[1]
        )));
    }
    let elem = match bytes[2] {
        0x08 | 0x09 => 1,
        0x0B => 2,
        0x0C | 0x0D => 4,
        0x0E => 8,
        t => return Err(bad(format!("unknown data type 0x{t:02x}"))),
    };
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!("truncated header ({ndims} dimensions)")));
    }
    let mut dims = Vec::with_capacity(ndims);
    let mut count: usize = 1;
    for i in 0..ndims {
        let o = 4 + 4 * i;
        let d = u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad("dimension sizes overflow"))?;
        dims.push(d);
    }
    let need = count
        .checked_mul(elem)
        .and_then(|n| n.checked_add(header))
        .ok_or_else(|| bad("size overflows"))?;
    if bytes.len() != need {
        return Err(bad(format!(
            "{} bytes, but the header {dims:?} needs {need}",
            bytes.len()
        )));
    }
    let data = &bytes[header..];
    let values: Vec<f32> = match bytes[2] {
        0x08 => data.iter().map(|&b| f32::from(b)).collect(),
        0x09 => data.iter().map(|&b| f32::from(b as i8)).collect(),
        0x0B => data
            .chunks_exact(2)
            .map(|c| f32::from(i16::from_be_bytes([c[0], c[1]])))
            .collect(),
        0x0C => data
            .chunks_exact(4)
            .map(|c| i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f32)
            .collect(),
        0x0D => data
            .chunks_exact(4)
            .map(|c| f32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => data
            .chunks_exact(8)
            .map(|c| f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) as f32)
            .collect(),
    };
    Ok(IdxArray { dims, values })
}

/// Encodes unsigned bytes as IDX (type `0x08`).
pub fn encode_idx_u8(dims: &[usize], values: &[u8]) -> Result<Vec<u8>> {
    let count: usize = dims.iter().product();
    if count != values.len() || dims.len() > 255 {
        return Err(bad(format!(
            "{} values for dimensions {dims:?}",
            values.len()
        )));
    }
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for &d in dims {
        let d = u32::try_from(d).map_err(|_| bad("dimension over u32"))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(values);
    Ok(out)
}

/// Reads an IDX file.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = std::fs::read(path).ctx("reading IDX file", path)?;
    parse_idx(&bytes).map_err(|e| Error::Data(format!("{}: {e}", path.display())))
}

/// Loads an images file (`[n, rows, cols]`, bytes scaled to `[0, 1]`) and a labels file
/// (`[n]`) as a classification set of rank-4 batches `[batch, 1, rows, cols]`.
pub fn load_image_classification(
    images: &Path,
    labels: &Path,
    num_classes: usize,
) -> Result<ClassificationData<4>> {
    let img = read_idx(images)?;
    let lab = read_idx(labels)?;
    if img.dims.len() != 3 {
        return Err(bad(format!(
            "{}: images must have 3 dimensions, got {:?}",
            images.display(),
            img.dims
        )));
    }
    if lab.dims.len() != 1 || lab.dims[0] != img.dims[0] {
        return Err(bad(format!(
            "{}: {:?} labels for {} images",
            labels.display(),
            lab.dims,
            img.dims[0]
        )));
    }
    let features: Vec<f32> = img.values.iter().map(|v| v / 255.0).collect();
    let y: Vec<i64> = lab.values.iter().map(|v| *v as i64).collect();
    ClassificationData::new(features, vec![1, img.dims[1], img.dims[2]], y, num_classes)
}

/// Loads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
/// `t10k-labels-idx1-ubyte` (the MNIST / Fashion-MNIST file names) from `dir`.
pub fn load_mnist_dir(dir: &Path) -> Result<(ClassificationData<4>, ClassificationData<4>)> {
    let train = load_image_classification(
        &dir.join("train-images-idx3-ubyte"),
        &dir.join("train-labels-idx1-ubyte"),
        10,
    )?;
    let test = load_image_classification(
        &dir.join("t10k-images-idx3-ubyte"),
        &dir.join("t10k-labels-idx1-ubyte"),
        10,
    )?;
    Ok((train, test))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn golden_bytes_round_trip() {
        let bytes = encode_idx_u8(&[2, 3], &[0, 1, 2, 253, 254, 255]).unwrap();
        assert_eq!(
            bytes,
            vec![0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 253, 254, 255]
        );
        let a = parse_idx(&bytes).unwrap();
        assert_eq!(a.dims, vec![2, 3]);
        assert_eq!(a.values, vec![0.0, 1.0, 2.0, 253.0, 254.0, 255.0]);
    }

    #[test]
    fn other_types_parse() {
        let mut b = vec![0, 0, 0x0D, 1, 0, 0, 0, 2];
        b.extend_from_slice(&1.5f32.to_be_bytes());
        b.extend_from_slice(&(-2.0f32).to_be_bytes());
        assert_eq!(parse_idx(&b).unwrap().values, vec![1.5, -2.0]);
        let b = [0, 0, 0x0B, 1, 0, 0, 0, 1, 0xFF, 0xFE];
        assert_eq!(parse_idx(&b).unwrap().values, vec![-2.0]);
    }

    #[test]
    fn malformed_files_are_errors_not_panics() {
        for b in [
            &[][..],
            &[1, 0, 8, 1][..],
            &[0, 0, 0x42, 0][..],
            &[0, 0, 8, 2, 0, 0][..],
            &[0, 0, 8, 1, 0, 0, 0, 3, 1, 2][..],
            &[0, 0, 8, 2, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF][..],
        ] {
            assert!(parse_idx(b).is_err(), "{b:?}");
        }
    }
}
