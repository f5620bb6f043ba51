//! Safetensors export (features `burn-flex` + `safetensors`): the weights come back through burn's
//! own reader, and the real `safetensors` Python package reads them in PyTorch's layout.
#![cfg(all(feature = "burn-flex", feature = "safetensors"))]

use std::path::PathBuf;
use std::process::Command;

use burn::store::{ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore};
use burn::tensor::Device;
use exptrack_checkpoint::burn_support::{
    BurnCheckpoint, SAFETENSORS_FILE, export_safetensors, safetensors_bytes,
};
use exptrack_checkpoint::{Checkpoint, CheckpointConfig, ModelCheckpointer};

#[path = "common/burn_net.rs"]
mod burn_net;

use burn_net::{Net, net};

/// `(name, shape as burn stores it, values)` of every parameter.
fn params(n: &Net) -> Vec<(&'static str, Vec<usize>, Vec<f32>)> {
    let t = |p: burn::tensor::Tensor<2>| {
        (
            p.dims().to_vec(),
            p.into_data().try_to_vec::<f32>().unwrap(),
        )
    };
    let v = |p: burn::tensor::Tensor<1>| {
        (
            p.dims().to_vec(),
            p.into_data().try_to_vec::<f32>().unwrap(),
        )
    };
    let (aw, awv) = t(n.a.weight.val());
    let (ab, abv) = v(n.a.bias.as_ref().unwrap().val());
    let (bw, bwv) = t(n.b.weight.val());
    let (bb, bbv) = v(n.b.bias.as_ref().unwrap().val());
    vec![
        ("a.weight", aw, awv),
        ("a.bias", ab, abv),
        ("b.weight", bw, bwv),
        ("b.bias", bb, bbv),
    ]
}

/// Transposes a row-major `[rows, cols]` matrix.
fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = v[r * cols + c];
        }
    }
    out
}

#[test]
fn export_round_trips_through_burn_and_into_checkpoints() {
    let device = Device::flex();
    let model = net(&device);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("exported.safetensors");
    export_safetensors(&model, &path).unwrap();
    // Replacing an existing export is atomic and leaves no temporary behind.
    export_safetensors(&model, &path).unwrap();
    let names: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, vec!["exported.safetensors"]);

    // burn reads it back (from PyTorch's layout) into a fresh, differently initialized net.
    let mut fresh = net(&device);
    assert_ne!(params(&fresh), params(&model));
    let mut store = SafetensorsStore::from_file(&path).with_from_adapter(PyTorchToBurnAdapter);
    let applied = fresh.load_from(&mut store).unwrap();
    assert!(applied.errors.is_empty(), "{applied:?}");
    assert_eq!(params(&fresh), params(&model));

    // The same bytes go into a checkpoint as a hashed file.
    let mut ck = ModelCheckpointer::open(
        "st",
        CheckpointConfig {
            dir: tmp.path().join("ck"),
            ..CheckpointConfig::default()
        },
    )
    .unwrap();
    ck.save(Checkpoint::new(1).with_safetensors(&model).unwrap())
        .unwrap();
    assert_eq!(
        ck.load_file(1, SAFETENSORS_FILE).unwrap(),
        std::fs::read(&path).unwrap()
    );
    // Deterministic: the same weights give the same bytes, call after call.
    for _ in 0..20 {
        assert_eq!(
            safetensors_bytes(&model).unwrap(),
            std::fs::read(&path).unwrap()
        );
    }
}

#[test]
fn export_into_a_missing_directory_is_an_error_not_a_panic() {
    let device = Device::flex();
    let tmp = tempfile::tempdir().unwrap();
    let err = export_safetensors(&net(&device), tmp.path().join("no/such/dir/m.safetensors"))
        .unwrap_err();
    assert!(err.to_string().contains("no/such/dir"), "{err}");
}

fn peer_python() -> Option<PathBuf> {
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let why = match std::env::var_os("EXPTRACK_PEER_PYTHON").map(PathBuf::from) {
        None => "EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh)".to_owned(),
        Some(py) => match Command::new(&py)
            .args(["-c", "import safetensors, numpy"])
            .output()
        {
            Ok(o) if o.status.success() => return Some(py),
            Ok(o) => format!(
                "{} cannot import safetensors: {}",
                py.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => format!("cannot run {}: {e}", py.display()),
        },
    };
    assert!(!ci, "peer Python unavailable with CI=true: {why}");
    eprintln!("skipping: {why}");
    None
}

#[test]
fn python_safetensors_reads_pytorch_layout() {
    let Some(py) = peer_python() else { return };
    let device = Device::flex();
    let model = net(&device);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("m.safetensors");
    export_safetensors(&model, &path).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/py/read_safetensors.py");
    let out = Command::new(&py).arg(&script).arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let tensors = json["tensors"].as_object().unwrap();
    assert_eq!(tensors.len(), 4, "{:?}", tensors.keys().collect::<Vec<_>>());
    for (name, shape, values) in params(&model) {
        let t = &json["tensors"][name];
        assert_eq!(t["dtype"], "float32", "{name}");
        // PyTorch's Linear.weight is [out, in]; burn's is [in, out].
        let (want_shape, want) = if shape.len() == 2 {
            (
                vec![shape[1], shape[0]],
                transpose(&values, shape[0], shape[1]),
            )
        } else {
            (shape.clone(), values.clone())
        };
        let got_shape: Vec<usize> = t["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(got_shape, want_shape, "{name}");
        let got: Vec<f32> = t["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(got, want, "{name}");
    }
    assert_eq!(json["metadata"], serde_json::json!({"format": "pt"}));
}
