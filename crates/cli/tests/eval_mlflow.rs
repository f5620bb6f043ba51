//! Issue 16 §2 (and the CLI side of §4) end to end against a real `mlflow server`: train a small
//! burn MLP with live MLflow tracking, log the model as an MLflow model directory, `exptrack eval`
//! it by run id (with an ensemble of the best checkpoints), gate and promote it; the REST API shows
//! the artifacts, the model version and the alias. And the refusal: a run that logged no model is
//! neither evaluated nor promoted, and the alias stays where it was.

mod common;

use common::*;

/// `runs show` of a training run includes the series an evaluator logged into it from its own
/// companion run (`<run dir>/companions/<experiment>/<run>/`, issue 16 §3).
#[test]
fn runs_show_includes_the_companion_runs_metrics() {
    use exptrack_core::{ExperimentConfig, ExperimentTracker, Resume, RunStatus};
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("runs");
    let (dir, id) = make_run(&runs, &RunSpec::default());
    let mut cfg = ExperimentConfig::named("cli-test");
    cfg.experiment.id = Some(
        dir.parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned(),
    );
    let eval = ExperimentTracker::builder(cfg)
        .runs_dir(dir.join("companions"))
        .resume(Resume::RunId("async-eval".into()))
        .collect_system_info(false)
        .handle_signals(false)
        .build()
        .unwrap();
    eval.log_metrics(50, &[("eval/valid/accuracy", 0.875)])
        .unwrap();
    eval.finish(RunStatus::Completed).unwrap();
    let o = exptrack(&[
        "runs",
        "show",
        &id,
        "--dir",
        runs.to_str().unwrap(),
        "--json",
    ]);
    assert_code(&o, 0);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["summary"]["eval/valid/accuracy"]["last"], 0.875, "{v}");
    assert!(v["summary"]["train/loss"].is_object(), "{v}");
    // The run list is unchanged: a companion run is part of its run, not a run of its own.
    let o = exptrack(&["runs", "list", "--dir", runs.to_str().unwrap(), "--json"]);
    assert_code(&o, 0);
    let listed: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
}

#[cfg(not(feature = "eval"))]
#[test]
fn eval_without_the_feature_says_how_to_get_it() {
    let o = exptrack(&[
        "eval",
        "--mlflow",
        "http://127.0.0.1:9",
        "--run-id",
        "x",
        "--data",
        "t.csv",
    ]);
    assert_code(&o, 2);
    assert!(stderr(&o).contains("--features eval"), "{}", stderr(&o));
}

#[cfg(feature = "eval")]
mod e2e {
    use super::*;
    use std::path::Path;
    use std::sync::Arc;

    use exptrack_checkpoint::{CheckpointConfig, ModelCheckpointer};
    use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
    use exptrack_eval::{TestSet, quickstart_spec, save_model_dir};
    use exptrack_mlflow::MlflowTrackerBuilder;
    use exptrack_trainer::data::ClassificationData;
    use exptrack_trainer::quickstart::Mlp;
    use exptrack_trainer::{TrainingConfig, TrainingManager};
    use serde_json::{Value, json};

    const FEATURES: usize = 8;
    const CLASSES: usize = 4;
    const HIDDEN: usize = 32;

    /// Four Gaussian blobs in 8 dimensions (seeded xorshift + Box-Muller).
    fn blobs(seed: u64, n: usize) -> (Vec<f32>, Vec<usize>) {
        let mut s = seed | 1;
        let mut uniform = move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 11) as f64 / (1u64 << 53) as f64).max(1e-12)
        };
        let mut normal = move || {
            let (u, v) = (uniform(), uniform());
            ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        };
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for i in 0..n {
            let c = i % CLASSES;
            for f in 0..FEATURES {
                let centre = if f % CLASSES == c { 1.6 } else { 0.0 };
                x.push(centre + normal());
            }
            y.push(c);
        }
        (x, y)
    }

    fn data(seed: u64, n: usize) -> ClassificationData<2> {
        let (x, y) = blobs(seed, n);
        ClassificationData::new(
            x,
            vec![FEATURES],
            y.into_iter().map(|v| v as i64).collect(),
            CLASSES,
        )
        .unwrap()
    }

    fn config(name: &str, ckpt_dir: &Path) -> ExperimentConfig {
        let text = format!(
            r#"[experiment]
name = "{name}"
[tracking]
use_tensorboard = false
[checkpointing]
dir = "{}"
max_checkpoints = 10
[training]
num_epochs = 4
batch_size = 32
learning_rate = 0.01
optimizer = "adamw"
log_frequency = 10
checkpoint_save_frequency = 0
seed = 11
device = "cpu"
"#,
            ckpt_dir.display()
        );
        ExperimentConfig::parse(&text, "eval-e2e.toml").unwrap()
    }

    fn tracker(cfg: &ExperimentConfig, runs: &Path, uri: &str) -> ExperimentTracker {
        let mlflow = MlflowTrackerBuilder::new()
            .tracking_uri(uri)
            .build()
            .expect("mlflow tracker");
        ExperimentTracker::builder(cfg.clone())
            .runs_dir(runs)
            .with_tracker(Box::new(mlflow))
            .collect_system_info(false)
            .handle_signals(false)
            .build()
            .expect("tracker")
    }

    /// The MLflow run of an exptrack run (by its `exptrack.run_id` tag).
    fn mlflow_run_id(server: &MlflowServer, experiment: &str, run_id: &str) -> String {
        let exp = server.get(
            "experiments/get-by-name",
            &[("experiment_name", experiment)],
        );
        let exp_id = exp["experiment"]["experiment_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let found = server.post(
            "runs/search",
            &json!({"experiment_ids": [exp_id],
                    "filter": format!("tags.`exptrack.run_id` = '{run_id}'")}),
        );
        found["runs"][0]["info"]["run_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no MLflow run for {run_id}: {found}"))
            .to_owned()
    }

    /// Lists an artifact directory through the proxy, independently of the crate under test.
    fn proxy_list(server: &MlflowServer, artifact_uri: &str) -> Vec<String> {
        let path = artifact_uri.strip_prefix("mlflow-artifacts:").unwrap();
        let v: Value = exptrack_http::reqwest::blocking::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(format!(
                "{}/api/2.0/mlflow-artifacts/artifacts",
                server.uri()
            ))
            .query(&[("path", path.trim_start_matches('/'))])
            .send()
            .unwrap()
            .json()
            .unwrap();
        v["files"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|f| f["path"].as_str().unwrap().to_owned())
            .collect()
    }

    fn peer_python() -> std::path::PathBuf {
        std::path::PathBuf::from(std::env::var("EXPTRACK_PEER_PYTHON").unwrap())
    }

    #[test]
    fn train_log_model_evaluate_by_run_id_gate_and_promote_and_refuse_without_model() {
        let Some(exe) = mlflow_exe() else { return };
        let server = MlflowServer::start(&exe);
        let uri = server.uri();
        let tmp = tempfile::tempdir().unwrap();
        let runs = tmp.path().join("runs");
        let runs_s = runs.to_str().unwrap().to_owned();
        let ckpt_dir = tmp.path().join("checkpoints");
        let name = "eval16-e2e";

        // ---- train, with MLflow tracking live, and log the model directory
        let cfg = config(name, &ckpt_dir);
        let experiment_id = cfg.experiment_id();
        let t = Arc::new(tracker(&cfg, &runs, &uri));
        let exptrack_run = t.metadata().run_id.clone();
        let ckpt = ModelCheckpointer::open(
            &experiment_id,
            CheckpointConfig {
                dir: ckpt_dir.clone(),
                max_checkpoints: Some(10),
                ..CheckpointConfig::default()
            },
        )
        .unwrap();
        let mut manager = TrainingManager::new(TrainingConfig::from_experiment(&cfg).unwrap())
            .unwrap()
            .with_sink(Arc::clone(&t))
            .with_checkpointer(ckpt);
        let model = Mlp::new(FEATURES, HIDDEN, CLASSES, manager.device());
        let (model, result) = manager
            .fit(model, &data(1, 800), &data(2, 200))
            .expect("training");
        drop(manager);
        let model_dir = tmp.path().join("model");
        let spec = quickstart_spec(FEATURES, HIDDEN, CLASSES)
            .experiment_id(&experiment_id)
            .step(result.steps);
        save_model_dir(&model, &spec, &model_dir, None).unwrap();
        t.log_model(&model_dir, "model", Some(result.steps))
            .unwrap();
        let Ok(t) = Arc::try_unwrap(t) else {
            panic!("the tracker is still shared")
        };
        let report = t.finish(RunStatus::Completed).unwrap();
        assert!(
            report.tracker("mlflow").is_some_and(|b| b.complete),
            "{report}"
        );
        let run_id = mlflow_run_id(&server, name, &exptrack_run);

        // The logged model is an MLflow model directory; the real mlflow reads its MLmodel.
        let run = server.run(&run_id);
        let model_id = run["data"]["tags"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["key"] == "exptrack.logged_model_id")
            .and_then(|t| t["value"].as_str())
            .expect("the run has a logged model")
            .to_owned();
        let logged = server.get(&format!("logged-models/{model_id}"), &[]);
        let model_uri = logged["model"]["info"]["artifact_uri"]
            .as_str()
            .unwrap()
            .to_owned();
        let model_files = proxy_list(&server, &model_uri);
        for f in [
            "MLmodel",
            "model.bpk",
            "model.safetensors",
            "exptrack_model.json",
        ] {
            assert!(
                model_files.iter().any(|p| p.ends_with(f)),
                "{f} not in {model_files:?}"
            );
        }
        let mlmodel = tmp.path().join("downloaded/MLmodel");
        std::fs::create_dir_all(mlmodel.parent().unwrap()).unwrap();
        std::fs::write(&mlmodel, server.artifact(&model_uri, "MLmodel")).unwrap();
        let py = std::process::Command::new(peer_python())
            .arg("-c")
            .arg(
                "import json,sys\nfrom mlflow.models import Model\nm = Model.load(sys.argv[1])\n\
                 print(json.dumps({'flavors': sorted(m.flavors), \
                 'inputs': m.signature.inputs.to_dict(), 'outputs': m.signature.outputs.to_dict(), \
                 'weights': m.flavors['exptrack_burn'].get('weights')}))",
            )
            .arg(&mlmodel)
            .output()
            .unwrap();
        assert!(
            py.status.success(),
            "{}",
            String::from_utf8_lossy(&py.stderr)
        );
        let parsed: Value = serde_json::from_slice(&py.stdout).unwrap();
        assert_eq!(parsed["flavors"], json!(["exptrack_burn"]), "{parsed}");
        assert_eq!(parsed["weights"], "model.safetensors");
        assert_eq!(
            parsed["inputs"][0]["tensor-spec"]["shape"],
            json!([-1, FEATURES]),
            "{parsed}"
        );
        assert_eq!(
            parsed["outputs"][0]["tensor-spec"]["shape"],
            json!([-1, CLASSES]),
            "{parsed}"
        );

        // ---- evaluate by run id, with an ensemble of the best 3 checkpoints
        let (x, y) = blobs(3, 400);
        let test_set = TestSet::new(x, y, FEATURES).unwrap();
        let csv = tmp.path().join("test.csv");
        std::fs::write(&csv, test_set.to_csv()).unwrap();
        let o = exptrack(&[
            "eval",
            "--mlflow",
            &uri,
            "--run-id",
            &run_id,
            "--data",
            csv.to_str().unwrap(),
            "--ensemble",
            "3",
            "--checkpoints",
            ckpt_dir.to_str().unwrap(),
            "--json",
        ]);
        assert_code(&o, 0);
        let out: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let acc = out["metrics"]["eval/test/accuracy"].as_f64().unwrap();
        assert!(acc > 0.6, "accuracy {acc}: {out}");
        assert_eq!(out["model_source"], format!("models:/{model_id}"));
        assert_eq!(
            out["ensemble"]["members"].as_array().unwrap().len(),
            3,
            "{out}"
        );
        let ens_acc = out["ensemble"]["metrics"]["ensemble/test/accuracy"]
            .as_f64()
            .unwrap();
        assert!(ens_acc > 0.6, "{out}");

        // The REST API: the run's artifacts, the report's content, the metrics.
        let listed = server.get("artifacts/list", &[("run_id", run_id.as_str())]);
        let names: Vec<&str> = listed["files"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["path"].as_str().unwrap())
            .collect();
        for f in [
            "classification_report.json",
            "confusion_matrix.png",
            "misclassified_examples.png",
            "ensemble",
        ] {
            assert!(names.contains(&f), "{f} not in {names:?}");
        }
        let artifact_uri = run["info"]["artifact_uri"].as_str().unwrap().to_owned();
        let report: Value =
            serde_json::from_slice(&server.artifact(&artifact_uri, "classification_report.json"))
                .unwrap();
        for c in 0..CLASSES {
            let r = &report[c.to_string()];
            for k in ["precision", "recall", "f1-score"] {
                assert!(r[k].as_f64().is_some(), "class {c} {k}: {report}");
            }
            assert_eq!(r["support"], 100);
        }
        assert!(
            report["macro avg"]["f1-score"].as_f64().is_some(),
            "{report}"
        );
        assert!(
            report["weighted avg"]["recall"].as_f64().is_some(),
            "{report}"
        );
        assert!((report["accuracy"].as_f64().unwrap() - acc).abs() < 1e-12);
        for png in [
            "confusion_matrix.png",
            "misclassified_examples.png",
            "ensemble/confusion_matrix.png",
        ] {
            assert!(
                server.artifact(&artifact_uri, png).starts_with(b"\x89PNG"),
                "{png}"
            );
        }
        let hist = server.history(&run_id, "eval/test/accuracy");
        assert_eq!(hist.len(), 1, "{hist:?}");
        assert_eq!(hist[0].0, result.steps as i64);
        assert!(!server.history(&run_id, "ensemble/test/ece").is_empty());

        // ---- gate and promote: the version's source is the logged model, the alias points at it
        let o = exptrack(&[
            "gate",
            &exptrack_run,
            "--dir",
            &runs_s,
            "--metric",
            "valid/accuracy",
            "--stat",
            "max",
            "--min",
            "0.5",
            "--promote",
            "e2e-model@production",
            "--mlflow",
            &uri,
            "--json",
        ]);
        assert_code(&o, 0);
        let g: Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        let version = g["promoted"]["version"].as_str().unwrap().to_owned();
        let mv = server.get(
            "model-versions/get",
            &[("name", "e2e-model"), ("version", version.as_str())],
        );
        assert_eq!(mv["model_version"]["source"], format!("models:/{model_id}"));
        assert_eq!(mv["model_version"]["run_id"], run_id.as_str());
        let alias = server.get(
            "registered-models/alias",
            &[("name", "e2e-model"), ("alias", "production")],
        );
        assert_eq!(alias["model_version"]["version"], version.as_str());

        // ---- refusal: a run that logged no model
        let t2 = tracker(&config("eval16-e2e", &tmp.path().join("ck2")), &runs, &uri);
        t2.log_metrics(1, &[("valid/accuracy", 0.99)]).unwrap();
        let bare_exptrack = t2.metadata().run_id.clone();
        t2.finish(RunStatus::Completed).unwrap();
        let bare = mlflow_run_id(&server, name, &bare_exptrack);
        let o = exptrack(&[
            "gate",
            &bare_exptrack,
            "--dir",
            &runs_s,
            "--metric",
            "valid/accuracy",
            "--min",
            "0.5",
            "--promote",
            "e2e-model@production",
            "--mlflow",
            &uri,
        ]);
        assert_code(&o, 1);
        let err = stderr(&o);
        assert!(
            err.contains(&format!("runs:/{bare}/model")) && err.contains("holds no model"),
            "{err}"
        );
        let alias = server.get(
            "registered-models/alias",
            &[("name", "e2e-model"), ("alias", "production")],
        );
        assert_eq!(
            alias["model_version"]["version"],
            version.as_str(),
            "the alias moved"
        );
        let versions = server.get("model-versions/search", &[("filter", "name = 'e2e-model'")]);
        assert_eq!(
            versions["model_versions"].as_array().map(Vec::len),
            Some(1),
            "{versions}"
        );
        let o = exptrack(&[
            "eval",
            "--mlflow",
            &uri,
            "--run-id",
            &bare,
            "--data",
            csv.to_str().unwrap(),
        ]);
        assert_code(&o, 1);
        assert!(stderr(&o).contains("holds no model"), "{}", stderr(&o));
    }
}
