//! Media values the way wandb 0.31's Python SDK logs them (`wandb.Image`, `wandb.Histogram`,
//! `wandb.Table`): a file under the run's `files/media/...` plus the history value that points to
//! it, which the W&B UI renders in its media panels.

use exptrack_core::media::{DEFAULT_BINS, Histogram, sha256_hex};
use serde_json::json;

/// A media file for the run's `files/` directory and the history value referring to it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MediaFile {
    /// `/`-separated path relative to `files/`, e.g. `media/images/samples/grid_9_<hash>.png`.
    pub(crate) rel_path: String,
    /// The file's content.
    pub(crate) bytes: Vec<u8>,
    /// The history value (JSON text).
    pub(crate) value_json: String,
}

/// `key` as W&B's `make_file_path_upload_safe` makes it: no leading `/`, and `.`/`..`
/// components become `_`/`__`; a `/` makes subdirectories, as with `wandb.log`.
fn safe_key(key: &str) -> String {
    let k = key.trim_start_matches('/');
    let parts: Vec<String> = k
        .split('/')
        .map(|p| match p {
            "." => "_".to_owned(),
            ".." => "__".to_owned(),
            "" => "_".to_owned(),
            p => p.replace('\\', "_"),
        })
        .collect();
    if parts.is_empty() {
        "_".to_owned()
    } else {
        parts.join("/")
    }
}

/// `wandb.Image`: `media/images/<key>_<step>_<sha256[:20]>.png` and
/// `{"_type": "image-file", "sha256", "size", "path", "format": "png", "width", "height"}`.
pub(crate) fn image(key: &str, step: u64, png: &[u8], width: u32, height: u32) -> MediaFile {
    let sha = sha256_hex(png);
    let rel_path = format!("media/images/{}_{step}_{}.png", safe_key(key), &sha[..20]);
    let value = json!({
        "_type": "image-file",
        "sha256": sha,
        "size": png.len(),
        "path": rel_path,
        "format": "png",
        "width": width,
        "height": height,
    });
    MediaFile {
        rel_path,
        bytes: png.to_vec(),
        value_json: value.to_string(),
    }
}

/// Text as a one-cell `wandb.Table` (column `text`): `media/table/<key>_<step>_<sha256[:20]>
/// .table.json` holding `{"columns": ["text"], "data": [[text]]}` and
/// `{"_type": "table-file", "sha256", "size", "path", "ncols": 1, "nrows": 1, "log_mode":
/// "IMMUTABLE"}`.
pub(crate) fn text_table(key: &str, step: u64, text: &str) -> MediaFile {
    let bytes = json!({"columns": ["text"], "data": [[text]]})
        .to_string()
        .into_bytes();
    let sha = sha256_hex(&bytes);
    let rel_path = format!(
        "media/table/{}_{step}_{}.table.json",
        safe_key(key),
        &sha[..20]
    );
    let value = json!({
        "_type": "table-file",
        "sha256": sha,
        "size": bytes.len(),
        "path": rel_path,
        "ncols": 1,
        "nrows": 1,
        "log_mode": "IMMUTABLE",
    });
    MediaFile {
        rel_path,
        bytes,
        value_json: value.to_string(),
    }
}

/// `wandb.Histogram(values)`: `{"_type": "histogram", "values": <64 counts>, "bins": <65
/// edges>}` (numpy's bucketing; non-finite values are left out, as numpy would refuse them).
/// `None` when there is no finite value.
pub(crate) fn histogram(values: &[f64]) -> Option<String> {
    let h = Histogram::from_values(values, DEFAULT_BINS);
    if h.count == 0 {
        return None;
    }
    Some(json!({"_type": "histogram", "values": h.counts, "bins": h.edges}).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_sdk() {
        let m = image("samples/grid", 9, b"png bytes", 4, 2);
        assert!(m.rel_path.starts_with("media/images/samples/grid_9_"));
        assert!(m.rel_path.ends_with(".png"));
        assert_eq!(
            m.rel_path.len(),
            "media/images/samples/grid_9_".len() + 20 + 4
        );
        let v: serde_json::Value = serde_json::from_str(&m.value_json).unwrap();
        assert_eq!(v["_type"], "image-file");
        assert_eq!(v["path"], m.rel_path.as_str());
        assert_eq!(v["size"], 9);
        assert_eq!(safe_key("/../a/./b"), "__/a/_/b");
        let t = text_table("notes", 3, "hi");
        assert_eq!(t.bytes, br#"{"columns":["text"],"data":[["hi"]]}"#);
        assert!(
            t.rel_path.starts_with("media/table/notes_3_") && t.rel_path.ends_with(".table.json")
        );
        assert!(histogram(&[f64::NAN]).is_none());
        let h: serde_json::Value = serde_json::from_str(&histogram(&[1.0, 2.0]).unwrap()).unwrap();
        assert_eq!(h["values"].as_array().unwrap().len(), 64);
        assert_eq!(h["bins"].as_array().unwrap().len(), 65);
    }
}
