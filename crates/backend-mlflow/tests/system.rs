//! exptrack-core's system-metrics sampler, through the dispatcher, into a real `mlflow server`:
//! the `system/...` keys are what MLflow's "System metrics" tab shows (read back through the REST
//! API).

mod common;

use std::time::Duration;

use exptrack_core::{ExperimentConfig, ExperimentTracker, RunStatus};
use exptrack_mlflow::MlflowTracker;
use serde_json::json;

use common::shared_server;

#[test]
fn sampled_system_metrics_reach_the_system_metrics_tab() {
    let Some(server) = shared_server() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let mlflow = MlflowTracker::builder()
        .tracking_uri(server.uri())
        .experiment_name("system-metrics")
        .build()
        .unwrap();
    let t = ExperimentTracker::builder(ExperimentConfig::named("system-metrics"))
        .runs_dir(tmp.path())
        .handle_signals(false)
        .collect_system_info(false)
        .system_metrics(Duration::from_millis(20))
        .with_tracker(Box::new(mlflow))
        .build()
        .unwrap();
    for s in 0..20u64 {
        t.log_metrics(s, &[("train/loss", 1.0 / (s as f64 + 1.0))])
            .unwrap();
        std::thread::sleep(Duration::from_millis(10));
    }
    let report = t.finish(RunStatus::Completed).unwrap();
    assert!(report.problem_lines().is_empty(), "{report}");

    let exp = server.get(
        "experiments/get-by-name",
        &[("experiment_name", "system-metrics")],
    );
    let exp_id = exp["experiment"]["experiment_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let runs = server.post("runs/search", &json!({ "experiment_ids": [exp_id] }));
    let run_id = runs["runs"][0]["info"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();

    let cpu = server.history(&run_id, "system/cpu_percent");
    let mem = server.history(&run_id, "system/memory_percent");
    assert!(cpu.len() >= 3, "{cpu:?}");
    assert_eq!(cpu.len(), mem.len());
    // The sampler's own steps, counting up from 0, one per sample.
    let steps: Vec<i64> = cpu.iter().map(|(s, _, _)| *s).collect();
    assert_eq!(steps, (0..cpu.len() as i64).collect::<Vec<_>>());
    for (_, v, _) in &mem {
        let v = v.as_f64().unwrap();
        assert!(v > 0.0 && v <= 100.0, "{mem:?}");
    }
    // The training metric is still its own series, at the training steps.
    assert_eq!(server.history(&run_id, "train/loss").len(), 20);
}
