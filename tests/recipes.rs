//! Recipe batches end to end: the real `recipes` example binary and the real `exptrack` command
//! (both built by `cargo test` beside this test, in `target/<profile>/`) on a batch of tiny
//! recipes in two categories:
//!
//! - the first run trains every recipe; one that fails is reported and the others go on, one is
//!   interrupted after a checkpoint (`--stop-after-step`);
//! - `exptrack batch status` shows completed / interrupted / not started without training;
//! - a rerun skips the completed recipe with its earlier results and resumes the interrupted one
//!   in the same run, from its checkpoint, without logging a step twice (the real tensorboard
//!   reader checks the event files);
//! - `--force` retrains; `--json` prints one row per recipe with the right ids and statuses;
//! - a batch SIGKILLed in the middle of a recipe resumes it on the next run;
//! - with `--mlflow` (feature `mlflow`), a real `mlflow server` has one run per experiment, the
//!   interrupted-and-resumed one included, each step once, and the table's final figures.
//!
//! Build the binaries first when running this test alone:
//! `cargo build --example recipes && cargo build -p exptrack-cli` (same features and profile);
//! without them the test says "skipping: ..." (and fails with `CI=true`). The TensorBoard check
//! needs `EXPTRACK_PEER_PYTHON` (scripts/peers.sh), under the same rule.

#[cfg(feature = "mlflow")]
#[path = "../crates/backend-mlflow/tests/common/mod.rs"]
mod mlflow_harness;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use exptrack::ExperimentConfig;
use serde_json::Value;

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn unavailable<T>(why: String) -> Option<T> {
    assert!(!ci(), "{why}");
    eprintln!("skipping: {why}");
    None
}

/// A binary built beside this test (`target/<profile>/<rel>`), or `None` after saying why.
fn built(rel: &str, how: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let profile_dir = exe.parent()?.parent()?;
    let path = profile_dir.join(format!("{rel}{}", std::env::consts::EXE_SUFFIX));
    if path.is_file() {
        return Some(path);
    }
    unavailable(format!(
        "{} is not built (run `cargo test` without --test, or `{how}` with the same features)",
        path.display()
    ))
}

fn binaries() -> Option<(PathBuf, PathBuf)> {
    let recipes = built("examples/recipes", "cargo build --example recipes")?;
    let cli = built("exptrack", "cargo build -p exptrack-cli")?;
    Some((recipes, cli))
}

/// The peer interpreter with tensorboard importable, or `None` after saying why.
fn peer_python() -> Option<PathBuf> {
    let Some(py) = std::env::var_os("EXPTRACK_PEER_PYTHON").map(PathBuf::from) else {
        return unavailable("EXPTRACK_PEER_PYTHON is not set (run scripts/peers.sh)".into());
    };
    match Command::new(&py)
        .args(["-c", "import tensorboard"])
        .output()
    {
        Ok(o) if o.status.success() => Some(py),
        Ok(o) => unavailable(format!(
            "{} cannot import tensorboard: {}",
            py.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => unavailable(format!("cannot run {}: {e}", py.display())),
    }
}

/// A tiny recipe: `epochs` epochs of 4 steps (200 items, batch 50), a checkpoint every 2 steps.
fn recipe(name: &str, epochs: u32, corruption: f64, tensorboard: bool) -> String {
    format!(
        r#"[experiment]
name = "{name}"

[tracking]
use_tensorboard = {tensorboard}

[checkpointing]
max_checkpoints = 2
fsync = false

[training]
num_epochs = {epochs}
batch_size = 50
learning_rate = 0.01
optimizer = "adam"
log_frequency = 1
checkpoint_save_frequency = 2
seed = 5
device = "cpu"
progress = false

[data]
train_items = 200
valid_items = 100
test_items = 100
features = 8
classes = 4
label_corruption = {corruption:?}

[model]
hidden = 16
"#
    )
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn run(exe: &Path, cwd: &Path, args: &[&str]) -> Output {
    Command::new(exe)
        .args(args)
        .current_dir(cwd)
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env_remove("MLFLOW_TRACKING_URI")
        .env_remove("WANDB_API_KEY")
        .env_remove("EXPTRACK_RUNS_DIR")
        .stdin(Stdio::null())
        .output()
        .expect("run binary")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn json_rows(out: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
            text(&out.stdout),
            text(&out.stderr)
        )
    });
    v.as_array().expect("a JSON array of rows").clone()
}

fn by_recipe(rows: &[Value]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r["recipe"].as_str().unwrap().to_owned(), r.clone()))
        .collect()
}

fn experiment_id(dir: &Path, rel: &str) -> String {
    ExperimentConfig::from_file(dir.join(rel))
        .unwrap()
        .experiment_id()
}

fn final_of(row: &Value, key: &str) -> f64 {
    row["metrics"][key]["final"]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} missing in {row:#}"))
}

/// `[tag → [(step, value)]]` as the real tensorboard's EventAccumulator reads `dir`.
fn tensorboard_scalars(py: &Path, dir: &Path) -> BTreeMap<String, Vec<(u64, f64)>> {
    let script = "import json, sys\n\
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator\n\
        ea = EventAccumulator(sys.argv[1], size_guidance={'scalars': 0})\n\
        ea.Reload()\n\
        print(json.dumps({t: [[e.step, e.value] for e in ea.Scalars(t)] for t in ea.Tags()['scalars']}))\n";
    let out = Command::new(py)
        .args(["-c", script])
        .arg(dir)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "EventAccumulator failed: {}",
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("json from EventAccumulator")
}

fn status_rows(cli: &Path, cwd: &Path, dir: &Path, runs: &Path) -> BTreeMap<String, Value> {
    let out = run(
        cli,
        cwd,
        &[
            "batch",
            "status",
            dir.to_str().unwrap(),
            "--runs",
            runs.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "batch status: {}", text(&out.stderr));
    by_recipe(&json_rows(&out))
}

#[test]
fn a_batch_trains_reports_failures_skips_resumes_and_retrains() {
    let Some((recipes, cli)) = binaries() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let dir = cwd.join("recipes");
    let runs = cwd.join("runs");
    write(&dir, "alpha/quick.toml", &recipe("quick", 1, 0.0, false));
    // Fails in the training function (before anything is written).
    write(&dir, "alpha/broken.toml", &recipe("broken", 1, 1.5, false));
    write(&dir, "beta/long.toml", &recipe("long", 3, 0.5, true));
    let (d, r) = (dir.to_str().unwrap(), runs.to_str().unwrap());
    let quick_id = experiment_id(&dir, "alpha/quick.toml");
    let long_id = experiment_id(&dir, "beta/long.toml");

    // Nothing has run yet.
    let st = status_rows(&cli, cwd, &dir, &runs);
    assert!(st.values().all(|r| r["state"] == "not_started"), "{st:#?}");

    // First run: quick completes (4 steps), broken fails, long stops after step 6 of 12.
    let out = run(
        &recipes,
        cwd,
        &[d, "--runs", r, "--json", "--stop-after-step", "6"],
    );
    assert_eq!(out.status.code(), Some(1), "stderr:\n{}", text(&out.stderr));
    let rows = json_rows(&out);
    let names: Vec<&str> = rows.iter().map(|r| r["recipe"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["alpha/broken.toml", "alpha/quick.toml", "beta/long.toml"]
    );
    let first = by_recipe(&rows);
    let (quick, broken, long) = (
        &first["alpha/quick.toml"],
        &first["alpha/broken.toml"],
        &first["beta/long.toml"],
    );
    assert_eq!(quick["status"], "trained", "{quick:#}");
    assert_eq!(quick["experiment_id"], quick_id.as_str());
    assert_eq!(quick["category"], "alpha");
    for key in [
        "train/accuracy",
        "valid/accuracy",
        "test/accuracy",
        "train/loss",
    ] {
        let v = final_of(quick, key);
        assert!(v.is_finite(), "{key} = {v}");
    }
    assert!(quick["metrics"]["valid/accuracy"]["best"].is_number());
    assert!(
        quick["results"]["final_train_accuracy"].is_number(),
        "{quick:#}"
    );
    assert_eq!(broken["status"], "failed");
    let why = broken["error"].as_str().unwrap();
    assert!(why.contains("label_corruption"), "{why}");
    assert_eq!(long["status"], "interrupted", "{long:#}");
    assert_eq!(long["experiment_id"], long_id.as_str());
    assert_eq!(long["metrics"]["train/loss"]["final_step"], 6);
    assert!(
        text(&out.stderr).contains("failed"),
        "{}",
        text(&out.stderr)
    );

    // The three states, without training.
    let st = status_rows(&cli, cwd, &dir, &runs);
    assert_eq!(st["alpha/quick.toml"]["state"], "completed", "{st:#?}");
    assert_eq!(st["alpha/broken.toml"]["state"], "not_started");
    assert_eq!(st["beta/long.toml"]["state"], "interrupted");
    assert_eq!(st["beta/long.toml"]["checkpoint_step"], 6);
    assert_eq!(st["beta/long.toml"]["experiment_id"], long_id.as_str());
    assert_eq!(
        st["alpha/quick.toml"]["final_metrics"]["valid/accuracy"].as_f64(),
        Some(final_of(quick, "valid/accuracy"))
    );
    // And as a table.
    let out = run(&cli, cwd, &["batch", "status", d, "--runs", r]);
    let table = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        table.contains("3 recipes: 1 completed, 1 interrupted, 1 not started"),
        "{table}"
    );
    assert!(table.contains("checkpoint at step 6"), "{table}");

    // Rerun (table output): quick is skipped with its earlier results, long resumes from step 6.
    let out = run(&recipes, cwd, &[d, "--runs", r, "--quiet"]);
    assert_eq!(out.status.code(), Some(1), "broken still fails");
    let table = text(&out.stdout);
    let stderr = text(&out.stderr);
    let line = |recipe: &str| -> String {
        table
            .lines()
            .find(|l| l.starts_with(recipe))
            .unwrap_or_else(|| panic!("no row for {recipe} in\n{table}"))
            .to_owned()
    };
    assert!(
        line("alpha/quick.toml").contains("skipped (completed earlier)"),
        "{table}"
    );
    assert!(
        line("alpha/quick.toml").contains(&format!("{:.4}", final_of(quick, "valid/accuracy"))),
        "the skipped row shows the earlier results:\n{table}"
    );
    assert!(
        line("beta/long.toml").contains("resumed from step 6"),
        "{table}"
    );
    assert!(line("alpha/broken.toml").contains("failed"), "{table}");
    assert!(table.contains("failed: alpha/broken.toml"), "{table}");
    let header = table.lines().find(|l| l.starts_with("recipe")).unwrap();
    for key in ["train/accuracy", "valid/accuracy", "test/accuracy"] {
        assert!(header.contains(key), "{header}");
    }
    assert!(stderr.contains("completed earlier"), "{stderr}");

    // --json again: both completed experiments are skipped with the same runs and figures.
    let out = run(&recipes, cwd, &[d, "--runs", r, "--json"]);
    let again = by_recipe(&json_rows(&out));
    assert_eq!(again["alpha/quick.toml"]["status"], "skipped");
    assert_eq!(again["alpha/quick.toml"]["run_id"], quick["run_id"]);
    assert_eq!(
        final_of(&again["alpha/quick.toml"], "valid/accuracy"),
        final_of(quick, "valid/accuracy")
    );
    let long2 = &again["beta/long.toml"];
    assert_eq!(long2["status"], "skipped");
    assert_eq!(long2["run_id"], long["run_id"], "resumed in the same run");
    assert_eq!(long2["metrics"]["train/loss"]["final_step"], 12);
    assert!(long2["metrics"]["train/accuracy"]["final"].is_number());

    // The real tensorboard reader: one point per step across the interruption.
    if let Some(py) = peer_python() {
        let run_dir = PathBuf::from(long2["run_dir"].as_str().unwrap());
        let scalars = tensorboard_scalars(&py, &run_dir);
        let loss = scalars
            .get("train/loss")
            .unwrap_or_else(|| panic!("no train/loss in {:?}", scalars.keys()));
        let steps: Vec<u64> = loss.iter().map(|p| p.0).collect();
        assert_eq!(steps, (1..=12).collect::<Vec<_>>(), "train/loss steps");
        let acc = &scalars["train/accuracy"];
        assert_eq!(acc.len(), 1);
        assert_eq!(acc[0].0, 12);
        assert!((acc[0].1 - final_of(long2, "train/accuracy")).abs() < 1e-6);
        // One evaluation per epoch end (the trainer's final `valid/accuracy` result, which the
        // TensorBoard backend writes as a scalar at the last step, repeats the value at 12).
        let mut valid = scalars["valid/accuracy"].clone();
        valid.dedup();
        let steps: Vec<u64> = valid.iter().map(|p| p.0).collect();
        assert_eq!(steps, [4, 8, 12], "valid/accuracy: {valid:?}");
        assert!((valid[2].1 - final_of(long2, "valid/accuracy")).abs() < 1e-6);
    }

    // --force retrains (alpha only): a new run for quick.
    let out = run(
        &recipes,
        cwd,
        &[d, "--runs", r, "--json", "--force", "--category", "alpha"],
    );
    let forced = by_recipe(&json_rows(&out));
    assert_eq!(forced.len(), 2, "{forced:#?}");
    let q = &forced["alpha/quick.toml"];
    assert_eq!(q["status"], "trained", "{q:#}");
    assert_ne!(q["run_id"], quick["run_id"]);
    assert_eq!(
        final_of(q, "valid/accuracy"),
        final_of(quick, "valid/accuracy"),
        "the same seeded recipe trains to the same figures"
    );
    let st = status_rows(&cli, cwd, &dir, &runs);
    assert_eq!(st["alpha/quick.toml"]["state"], "completed");
    assert_eq!(st["alpha/quick.toml"]["run_id"], q["run_id"]);

    // An unknown category is a usage error naming the categories.
    let out = run(&recipes, cwd, &[d, "--runs", r, "--category", "gamma"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("alpha, beta"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_batch_killed_mid_recipe_resumes_it() {
    let Some((recipes, cli)) = binaries() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let dir = cwd.join("recipes");
    let runs = cwd.join("runs");
    // Long enough (800 steps) to be killed after its first checkpoints.
    write(&dir, "slow/slow.toml", &recipe("slow", 200, 0.0, false));
    let id = experiment_id(&dir, "slow/slow.toml");
    let (d, r) = (dir.to_str().unwrap(), runs.to_str().unwrap());
    let mut child = Command::new(&recipes)
        .args([d, "--runs", r, "--quiet"])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait for a committed checkpoint past step 2, then SIGKILL.
    let ckpt_dir = runs.join("checkpoints").join(&id);
    let deadline = Instant::now() + Duration::from_secs(120);
    let committed = |d: &Path| -> Vec<u64> {
        std::fs::read_dir(d)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().join("checkpoint.json").is_file())
                    .filter_map(|e| {
                        let n = e.file_name().into_string().ok()?;
                        n.strip_prefix("ckpt-")?.parse().ok()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    loop {
        if committed(&ckpt_dir).iter().any(|s| *s >= 4) {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the batch ended before it could be killed"
        );
        assert!(Instant::now() < deadline, "no checkpoint within 120 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    let st = status_rows(&cli, cwd, &dir, &runs);
    let row = &st["slow/slow.toml"];
    assert_eq!(row["state"], "interrupted", "{row:#}");
    assert_eq!(
        row["last_run_status"], "running",
        "a killed process left its run running"
    );
    assert_eq!(row["in_use"], false);
    let at = row["checkpoint_step"].as_u64().unwrap();
    assert!((4..800).contains(&at), "{at}");

    let out = run(&recipes, cwd, &[d, "--runs", r, "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rows = by_recipe(&json_rows(&out));
    let slow = &rows["slow/slow.toml"];
    assert_eq!(slow["status"], "resumed", "{slow:#}");
    let from = slow["resumed_from_step"].as_u64().unwrap();
    assert!(
        from >= at,
        "resumed from {from}, the checkpoint was at {at}"
    );
    assert_eq!(row["run_id"], slow["run_id"], "the killed run continues");
    assert_eq!(slow["metrics"]["train/loss"]["final_step"], 800);
    // The run's log holds train/loss once per step, in order, every step included: the steps
    // replayed after the checkpoint were not logged twice, and none before it was lost (the
    // trainer syncs the tracker's log before a checkpoint can commit, so the SIGKILL right after
    // a commit cannot take the points the resumed run will not log again).
    let log = std::fs::read_to_string(
        PathBuf::from(slow["run_dir"].as_str().unwrap()).join("events.jsonl"),
    )
    .unwrap();
    let steps: Vec<u64> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["kind"] == "metrics")
        .filter(|e| {
            e["values"]
                .as_array()
                .is_some_and(|v| v.iter().any(|m| m["key"] == "train/loss"))
        })
        .map(|e| e["step"].as_u64().unwrap())
        .collect();
    assert!(steps.windows(2).all(|w| w[0] < w[1]), "{steps:?}");
    assert_eq!(steps.last(), Some(&800));
    let after: Vec<u64> = steps.iter().copied().filter(|s| *s > from).collect();
    assert_eq!(after, (from + 1..=800).collect::<Vec<_>>());
    let upto: Vec<u64> = steps.iter().copied().filter(|s| *s <= from).collect();
    assert_eq!(
        upto,
        (1..=from).collect::<Vec<_>>(),
        "steps lost before the checkpoint"
    );
}

#[cfg(feature = "mlflow")]
#[test]
fn a_batch_logs_each_experiment_to_one_mlflow_run_across_a_resume() {
    let Some((recipes, _cli)) = binaries() else {
        return;
    };
    let Some(server) = mlflow_harness::shared_server() else {
        return;
    };
    let uri = server.uri();
    let tmp = tempfile::tempdir().unwrap();
    let cwd = tmp.path();
    let dir = cwd.join("recipes");
    let runs = cwd.join("runs");
    write(
        &dir,
        "alpha/one.toml",
        &recipe("batch-mlflow-one", 1, 0.0, false),
    );
    write(
        &dir,
        "beta/two.toml",
        &recipe("batch-mlflow-two", 3, 0.2, false),
    );
    let (d, r) = (dir.to_str().unwrap(), runs.to_str().unwrap());

    let out = run(
        &recipes,
        cwd,
        &[
            d,
            "--runs",
            r,
            "--json",
            "--mlflow",
            &uri,
            "--stop-after-step",
            "6",
        ],
    );
    let first = by_recipe(&json_rows(&out));
    assert_eq!(
        first["alpha/one.toml"]["status"],
        "trained",
        "{}",
        text(&out.stderr)
    );
    assert_eq!(first["beta/two.toml"]["status"], "interrupted");
    let out = run(&recipes, cwd, &[d, "--runs", r, "--json", "--mlflow", &uri]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !text(&out.stderr).contains("warning:"),
        "{}",
        text(&out.stderr)
    );
    let second = by_recipe(&json_rows(&out));
    assert_eq!(second["alpha/one.toml"]["status"], "skipped");
    assert_eq!(second["beta/two.toml"]["status"], "resumed");

    for (recipe, name, steps) in [
        ("alpha/one.toml", "batch-mlflow-one", 4u64),
        ("beta/two.toml", "batch-mlflow-two", 12),
    ] {
        let exp = server.get("experiments/get-by-name", &[("experiment_name", name)]);
        let exp_id = exp["experiment"]["experiment_id"]
            .as_str()
            .unwrap()
            .to_owned();
        let found = server.post(
            "runs/search",
            &serde_json::json!({ "experiment_ids": [exp_id], "max_results": 10 }),
        );
        let mruns = found["runs"].as_array().cloned().unwrap_or_default();
        assert_eq!(
            mruns.len(),
            1,
            "{name}: one MLflow run, resumed in place: {found:#}"
        );
        let run_id = mruns[0]["info"]["run_id"].as_str().unwrap();
        assert_eq!(mruns[0]["info"]["status"], "FINISHED", "{name}");
        let loss: Vec<i64> = server
            .history(run_id, "train/loss")
            .iter()
            .map(|h| h.0)
            .collect();
        assert_eq!(
            loss,
            (1..=steps as i64).collect::<Vec<_>>(),
            "{name}: train/loss once per step"
        );
        let row = &second[recipe];
        for key in ["train/accuracy", "test/accuracy"] {
            let h = server.history(run_id, key);
            assert_eq!(h.len(), 1, "{name} {key}: {h:?}");
            assert_eq!(h[0].0, steps as i64);
            let v = h[0].1.as_f64().unwrap();
            assert!((v - final_of(row, key)).abs() < 1e-6, "{name} {key}: {v}");
        }
    }
}
