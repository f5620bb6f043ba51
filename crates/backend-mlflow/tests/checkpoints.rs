//! Committed checkpoints on a real `mlflow server`, by reference: a manifest artifact per commit,
//! `checkpoints/index.json` listing those that exist, and the `exptrack.checkpoints.latest` /
//! `.best` tags; a pruned step leaves the index, a resumed run keeps listing the checkpoints of
//! before. Read back through the REST API (artifact listing, the artifact proxy, runs/get).

mod common;

use exptrack_core::conformance::{
    checkpoint_report, checkpoint_run, log_through_store, resume_and_write,
};
use exptrack_core::{Event, EventKind, Tracker};
use exptrack_mlflow::{
    CHECKPOINT_INDEX, MlflowTracker, TAG_CHECKPOINT_BEST, TAG_CHECKPOINT_LATEST, manifest_path,
};
use serde_json::{Value, json};

use common::{MlflowServer, kv, shared_server};

/// Every file under `checkpoints/` of the run's artifacts, as (path, size).
fn listed(server: &MlflowServer, run_id: &str) -> Vec<(String, i64)> {
    let v = server.get(
        "artifacts/list",
        &[("run_id", run_id), ("path", "checkpoints")],
    );
    v["files"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|f| {
            assert_ne!(f["is_dir"], json!(true), "no directories: {f}");
            (
                f["path"].as_str().unwrap().to_owned(),
                common::as_i64(&f["file_size"]),
            )
        })
        .collect()
}

fn read_json(server: &MlflowServer, artifact_uri: &str, rel: &str) -> Value {
    serde_json::from_slice(&server.artifact(artifact_uri, rel))
        .unwrap_or_else(|e| panic!("{rel} is not JSON: {e}"))
}

fn names(v: &Value) -> Vec<String> {
    v.as_object().unwrap().keys().cloned().collect()
}

#[test]
fn checkpoints_are_listed_by_reference_and_pruned_ones_leave_the_index() {
    let Some(server) = shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mlflow = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .experiment_name("checkpoints")
        .build()
        .unwrap();
    assert!(mlflow.supports(EventKind::Checkpoint));
    // Through the dispatcher and the local store, as a training run reports its commits.
    let run_dir = log_through_store(
        tmp.path(),
        "checkpoints",
        vec![Box::new(mlflow)],
        checkpoint_run(),
    )
    .unwrap();

    let exp = server.get(
        "experiments/get-by-name",
        &[("experiment_name", "checkpoints")],
    );
    let exp_id = exp["experiment"]["experiment_id"].as_str().unwrap();
    let runs = server.post("runs/search", &json!({ "experiment_ids": [exp_id] }));
    let run = &runs["runs"][0];
    let run_id = run["info"]["run_id"].as_str().unwrap().to_owned();
    let uri = run["info"]["artifact_uri"].as_str().unwrap().to_owned();

    // One small manifest per commit plus the index: the weights (4 KB and more) are not there.
    let files = listed(server, &run_id);
    let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "checkpoints/ckpt-000000000002.json",
            "checkpoints/ckpt-000000000004.json",
            "checkpoints/ckpt-000000000006.json",
            CHECKPOINT_INDEX,
        ]
    );
    for (p, size) in &files {
        assert!(*size > 0 && *size < 4000, "{p}: {size} bytes");
    }
    for step in [2, 4, 6] {
        let m = read_json(server, &uri, &manifest_path(step));
        let best = step == 4 || step == 2;
        let pruned: &[u64] = if step == 6 { &[2] } else { &[] };
        assert_eq!(
            m,
            checkpoint_report(step, best, pruned).manifest(),
            "step {step}"
        );
    }
    assert_eq!(
        read_json(server, &uri, &manifest_path(4))["files"][0]["hash"],
        format!("blake3:{:064x}", 4)
    );

    // The index lists 4 and 6; 2 was deleted by retention.
    let index = read_json(server, &uri, CHECKPOINT_INDEX);
    assert_eq!(
        names(&index["checkpoints"]),
        ["ckpt-000000000004", "ckpt-000000000006"]
    );
    assert_eq!(index["latest"], "ckpt-000000000006");
    assert_eq!(index["best"], "ckpt-000000000004");
    assert_eq!(index["pruned"], json!(["ckpt-000000000002"]));
    assert_eq!(index["checkpoints"]["ckpt-000000000006"]["size"], 6007);
    assert_eq!(
        index["checkpoints"]["ckpt-000000000004"]["location"],
        "/ckpt/exp-1/ckpt-000000000004"
    );
    let tags = kv(&server.run(&run_id), "tags");
    assert_eq!(tags[TAG_CHECKPOINT_LATEST], "ckpt-000000000006");
    assert_eq!(tags[TAG_CHECKPOINT_BEST], "ckpt-000000000004");

    // The run resumes in a new process and commits step 8, whose save deletes 4 (the best): the
    // index keeps 6 from before the resume, and no best is left.
    let mut again = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .experiment_name("checkpoints")
        .build()
        .unwrap();
    let later = [Event::Checkpoint(checkpoint_report(8, false, &[4]))];
    resume_and_write(&mut again, &run_dir, &later).unwrap();
    assert_eq!(again.run_id(), Some(run_id.as_str()), "the same MLflow run");

    let index = read_json(server, &uri, CHECKPOINT_INDEX);
    assert_eq!(
        names(&index["checkpoints"]),
        ["ckpt-000000000006", "ckpt-000000000008"]
    );
    assert_eq!(index["latest"], "ckpt-000000000008");
    assert_eq!(index["best"], Value::Null);
    assert_eq!(
        index["pruned"],
        json!(["ckpt-000000000002", "ckpt-000000000004"])
    );
    // The manifests stay: they record what was committed.
    assert_eq!(listed(server, &run_id).len(), 5);
    let tags = kv(&server.run(&run_id), "tags");
    assert_eq!(tags[TAG_CHECKPOINT_LATEST], "ckpt-000000000008");
    assert!(
        !tags.contains_key(TAG_CHECKPOINT_BEST),
        "the best checkpoint was deleted: {tags:?}"
    );
}
