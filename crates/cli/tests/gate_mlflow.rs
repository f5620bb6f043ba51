//! `exptrack sync` + `exptrack gate --promote` against a real `mlflow server` (peer venv).

mod common;

use common::*;
use exptrack_mlflow::{MlflowTrackerBuilder, TAG_LOGGED_MODEL};

/// `exptrack gate RUN --metric test_accuracy --min 0.9 --promote gate-model@champion --mlflow URI`
/// plus `extra` arguments, with `env`.
fn gate(
    run: &str,
    runs: &str,
    uri: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::process::Output {
    let mut args = vec![
        "gate",
        run,
        "--dir",
        runs,
        "--metric",
        "test_accuracy",
        "--min",
        "0.9",
        "--promote",
        "gate-model@champion",
        "--mlflow",
        uri,
    ];
    args.extend_from_slice(extra);
    exptrack_env(&args, env)
}

/// `exptrack sync RUN --dir RUNS --to mlflow=URI`, expected to succeed; returns its stdout.
fn sync(run: &str, runs: &str, uri: &str) -> String {
    let o = exptrack(&["sync", run, "--dir", runs, "--to", &format!("mlflow={uri}")]);
    assert_code(&o, 0);
    stdout(&o)
}

#[test]
fn gate_fails_below_threshold_and_promotes_above() {
    let Some(exe) = mlflow_exe() else { return };
    let server = MlflowServer::start(&exe);
    let uri = server.uri();
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let runs_s = runs.to_str().unwrap();
    let model = tmp.path().join("model.bin");
    std::fs::write(&model, vec![7u8; 2048]).unwrap();

    // Two runs of the same experiment: a weak one and a good one, each with a model file.
    let (_, weak) = make_run(
        &runs,
        &RunSpec {
            name: "gate-demo",
            results: &[("test_accuracy", serde_json::json!(0.82))],
            model_file: Some(&model),
            ..Default::default()
        },
    );
    let (_, good) = make_run(
        &runs,
        &RunSpec {
            name: "gate-demo",
            results: &[("test_accuracy", serde_json::json!(0.95))],
            model_file: Some(&model),
            ..Default::default()
        },
    );
    for id in [&weak, &good] {
        let out = sync(id, runs_s, &uri);
        assert!(out.starts_with("mlflow: delivered "), "{out}");
    }

    let client = MlflowTrackerBuilder::new()
        .tracking_uri(uri.clone())
        .build_client()
        .unwrap();
    // A second sync has nothing left to deliver.
    let out = sync(&good, runs_s, &uri);
    assert!(out.contains("delivered 0 event(s)"), "{out}");

    // Below the threshold: exit 1, nothing registered.
    let o = gate(&weak, runs_s, &uri, &[], &[]);
    assert_code(&o, 1);
    assert!(
        stdout(&o).starts_with("FAIL test_accuracy = 0.82"),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("not promoted"), "{}", stderr(&o));
    assert!(client.get_registered_model("gate-model").unwrap().is_none());

    // Above: a model version from the run's logged model, and the alias points at it.
    let o = gate(&good, runs_s, &uri, &["--json"], &[]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["passed"], true);
    let version = v["promoted"]["version"].as_str().unwrap().to_owned();
    let mlflow_run_id = v["promoted"]["mlflow_run_id"].as_str().unwrap().to_owned();

    let mv = client.get_model_version("gate-model", &version).unwrap();
    assert_eq!(mv.run_id, mlflow_run_id);
    let run = client.get_run(&mlflow_run_id).unwrap();
    assert_eq!(run.data.tag("exptrack.run_id"), Some(good.as_str()));
    // The sync delivered the metric history, once.
    let hist = client
        .get_metric_history(&mlflow_run_id, "train/loss")
        .unwrap();
    assert_eq!(hist.len(), 50);
    let logged = run
        .data
        .tag(TAG_LOGGED_MODEL)
        .expect("the run has a logged model");
    assert_eq!(mv.source, format!("models:/{logged}"));
    let by_alias = client
        .get_model_version_by_alias("gate-model", "champion")
        .unwrap()
        .expect("alias exists");
    assert_eq!(by_alias.version, version);

    // Promoting again moves the alias to the new version.
    let o = gate(&good, runs_s, &uri, &[], &[]);
    assert_code(&o, 0);
    let out = stdout(&o);
    assert!(out.contains("promoted gate-model version"), "{out}");
    let by_alias = client
        .get_model_version_by_alias("gate-model", "champion")
        .unwrap()
        .unwrap();
    assert_ne!(by_alias.version, version);
    assert!(
        out.contains(&format!("version {} ", by_alias.version)),
        "{out}"
    );

    // A run that was never synced: exit 2 with a hint to sync.
    let (_, unsynced) = make_run(
        &runs,
        &RunSpec {
            name: "gate-demo",
            results: &[("test_accuracy", serde_json::json!(0.99))],
            ..Default::default()
        },
    );
    let o = gate(&unsynced, runs_s, &uri, &[], &[]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("exptrack sync"), "{}", stderr(&o));

    // An unreachable server: exit 3.
    let dead = format!("http://127.0.0.1:{}", {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    });
    let o = gate(
        &good,
        runs_s,
        &dead,
        &[],
        &[("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")],
    );
    assert_code(&o, 3);
    assert!(stderr(&o).starts_with("error: MLflow"), "{}", stderr(&o));
}
