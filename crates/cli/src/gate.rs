//! `exptrack gate RUN --metric M --min X [--max Y] [--promote MODEL@ALIAS --mlflow URI]`.

use clap::{Args, ValueEnum};
use exptrack_core::store::RunReader;
use exptrack_mlflow::{
    MlflowClient, MlflowTrackerBuilder, TAG_EXPERIMENT_ID, TAG_LOGGED_MODEL, TAG_RUN_ID,
};
use serde_json::{Value, json};

use crate::Ctx;
use crate::error::{CliError, Result, from_core};
use crate::output::num;

#[derive(Debug, Args)]
pub(crate) struct GateArgs {
    /// Run id, unique prefix, EXPERIMENT_ID/RUN_ID, or run directory.
    run: String,
    /// Metric to check: a `results.json` value (`set_result`), else a logged metric.
    #[arg(long)]
    metric: String,
    /// Fail when the value is below this.
    #[arg(long)]
    min: Option<f64>,
    /// Fail when the value is above this.
    #[arg(long)]
    max: Option<f64>,
    /// Which value of a logged metric: its last, smallest or largest.
    #[arg(long, value_enum, default_value_t = Stat::Last)]
    stat: Stat,
    /// On pass, register the run's model in MLflow as a new version of MODEL and point ALIAS at it.
    #[arg(long, value_name = "MODEL@ALIAS", requires = "mlflow")]
    promote: Option<String>,
    /// MLflow tracking URI (also MLFLOW_TRACKING_URI).
    #[arg(long, env = "MLFLOW_TRACKING_URI", value_name = "URI")]
    mlflow: Option<String>,
    /// The MLflow run id to register from (default: found by the run's exptrack tags).
    #[arg(long, value_name = "ID")]
    mlflow_run_id: Option<String>,
    /// MLflow experiment name to search (default: the run's experiment name).
    #[arg(long)]
    mlflow_experiment: Option<String>,
    /// Model source inside the MLflow run when it has no logged model: `runs:/<id>/<PATH>`.
    #[arg(long, default_value = "model", value_name = "PATH")]
    artifact_path: String,
    /// Print the outcome as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Stat {
    /// The final value.
    Last,
    /// The smallest value logged.
    Min,
    /// The largest value logged.
    Max,
}

/// Looks the metric up: `results.json` extra, then the summary (results' or summary.json).
fn metric_value(reader: &RunReader, key: &str, stat: Stat) -> Result<Option<(f64, &'static str)>> {
    let results = reader
        .results()
        .map_err(|e| from_core(e, "reading results.json"))?;
    if let Some(r) = &results
        && let Some(v) = r.extra.get(key)
    {
        let f = match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.parse().ok(),
            Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
            _ => None,
        };
        return match f {
            Some(f) => Ok(Some((f, "results.json"))),
            None => Err(CliError::usage(format!(
                "results.json value {key:?} is not a number: {v}"
            ))),
        };
    }
    let summary = match &results {
        Some(r) if r.summary.contains_key(key) => r.summary.clone(),
        _ => reader
            .summary()
            .map_err(|e| from_core(e, "reading summary.json"))?,
    };
    Ok(summary.get(key).map(|s| {
        let v = match stat {
            Stat::Last => s.last,
            Stat::Min => s.min,
            Stat::Max => s.max,
        };
        (v, "metrics")
    }))
}

pub(crate) fn gate(ctx: &Ctx, a: &GateArgs) -> Result<()> {
    if a.min.is_none() && a.max.is_none() {
        return Err(CliError::usage("give --min and/or --max"));
    }
    let promote = match &a.promote {
        None => None,
        Some(p) => match p.split_once('@') {
            Some((m, al)) if !m.is_empty() && !al.is_empty() => Some((m.to_owned(), al.to_owned())),
            _ => {
                return Err(
                    CliError::usage(format!("--promote {p:?}: expected MODEL@ALIAS"))
                        .hint("e.g. --promote mnist-classifier@champion"),
                );
            }
        },
    };
    let entry = ctx.find_run(&a.run)?;
    let reader = RunReader::open(&entry.dir).map_err(|e| from_core(e, "opening run"))?;
    let Some((value, source)) = metric_value(&reader, &a.metric, a.stat)? else {
        let mut known: Vec<String> = reader.summary().unwrap_or_default().into_keys().collect();
        if let Ok(Some(r)) = reader.results() {
            known.extend(r.extra.into_keys());
        }
        known.truncate(12);
        return Err(CliError::usage(format!(
            "run {} has no metric {:?}",
            entry.metadata.run_id, a.metric
        ))
        .hint(if known.is_empty() {
            "the run logged no metrics or results".to_owned()
        } else {
            format!("known: {}", known.join(", "))
        }));
    };
    // NaN is neither within nor outside a bound: it never passes.
    let below = a.min.is_some_and(|m| value < m);
    let above = a.max.is_some_and(|m| value > m);
    let passed = !below && !above && !value.is_nan();
    let bounds = match (a.min, a.max) {
        (Some(lo), Some(hi)) => format!("[{}, {}]", num(lo), num(hi)),
        (Some(lo), None) => format!(">= {}", num(lo)),
        (None, Some(hi)) => format!("<= {}", num(hi)),
        (None, None) => String::new(),
    };
    let line = format!(
        "{} {} = {} (from {source}) {} {bounds}",
        if passed { "PASS" } else { "FAIL" },
        a.metric,
        num(value),
        if passed { "within" } else { "outside" },
    );
    if !passed {
        if a.json {
            println!(
                "{}",
                json!({"passed": false, "metric": a.metric, "value": json_num(value), "min": a.min, "max": a.max, "run_id": entry.metadata.run_id})
            );
        } else {
            println!("{line}");
        }
        return Err(CliError::check(format!(
            "gate failed for run {}: {} = {} is {} {bounds}",
            entry.metadata.run_id,
            a.metric,
            num(value),
            if below { "below" } else { "outside" }
        ))
        .hint(if promote.is_some() {
            "the model was not promoted"
        } else {
            "the run does not meet the threshold"
        }));
    }
    if !a.json {
        println!("{line}");
    }
    let mut promoted = Value::Null;
    if let Some((model, alias)) = promote {
        let uri = a.mlflow.clone().unwrap_or_default();
        let client = MlflowTrackerBuilder::new()
            .from_env()
            .tracking_uri(uri.clone())
            .build_client()
            .map_err(|e| CliError::usage(format!("MLflow settings: {e}")))?;
        let spinner = crate::output::spinner(
            ctx.progress,
            &format!("registering {model} in MLflow and moving {alias:?}"),
        );
        let version = promote_model(&client, a, &entry.metadata, &model, &alias);
        spinner.finish_and_clear();
        let version = version?;
        if !a.json {
            println!(
                "promoted {model} version {} (source {}) to alias {alias:?}",
                version.version, version.source
            );
        }
        promoted = json!({"model": model, "alias": alias, "version": version.version, "source": version.source, "mlflow_run_id": version.run_id});
    }
    if a.json {
        println!(
            "{}",
            json!({"passed": true, "metric": a.metric, "value": json_num(value), "min": a.min, "max": a.max, "run_id": entry.metadata.run_id, "promoted": promoted})
        );
    }
    Ok(())
}

fn json_num(v: f64) -> Value {
    serde_json::Number::from_f64(v)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(num(v)))
}

fn mlflow_err(what: &str, e: exptrack_mlflow::Error) -> CliError {
    CliError::backend(format!("MLflow: {what}: {e}"))
        .hint("check --mlflow / MLFLOW_TRACKING_URI and that the server is reachable")
}

/// Finds the MLflow run, registers a version of `model` from it and sets `alias`.
fn promote_model(
    client: &MlflowClient,
    a: &GateArgs,
    md: &exptrack_core::ExperimentMetadata,
    model: &str,
    alias: &str,
) -> Result<exptrack_mlflow::ModelVersion> {
    let run = match &a.mlflow_run_id {
        Some(id) => client
            .get_run(id)
            .map_err(|e| mlflow_err(&format!("getting run {id}"), e))?,
        None => {
            let exp_name = a
                .mlflow_experiment
                .clone()
                .unwrap_or_else(|| md.experiment_name.clone());
            let exp = client
                .get_experiment_by_name(&exp_name)
                .map_err(|e| mlflow_err("looking up the experiment", e))?
                .ok_or_else(|| {
                    CliError::usage(format!("MLflow has no experiment named {exp_name:?}"))
                        .hint("sync the run first (`exptrack sync RUN --to mlflow=URI`) or pass --mlflow-experiment / --mlflow-run-id")
                })?;
            let q = |s: &str| s.replace('\'', "\\'");
            let filter = format!(
                "tags.`{TAG_RUN_ID}` = '{}' AND tags.`{TAG_EXPERIMENT_ID}` = '{}'",
                q(&md.run_id),
                q(&md.experiment_id)
            );
            let runs = client
                .search_runs(
                    &[&exp.experiment_id],
                    &filter,
                    1,
                    &["attributes.start_time DESC"],
                )
                .map_err(|e| mlflow_err("searching runs", e))?;
            runs.into_iter().next().ok_or_else(|| {
                CliError::usage(format!(
                    "no MLflow run in experiment {exp_name:?} is tagged with exptrack run {}",
                    md.run_id
                ))
                .hint("sync the run first (`exptrack sync RUN --to mlflow=URI`) or pass --mlflow-run-id")
            })?
        }
    };
    let run_id = run.info.run_id.clone();
    let logged_model = run.data.tag(TAG_LOGGED_MODEL).map(str::to_owned);
    let artifact_path = a.artifact_path.trim_matches('/').to_owned();
    let source = match &logged_model {
        Some(m) => format!("models:/{m}"),
        None => format!("runs:/{run_id}/{artifact_path}"),
    };
    // Never point an alias at a version whose source holds nothing: look first.
    let (root, rel) = match &logged_model {
        Some(m) => {
            let info = client
                .get_logged_model(m)
                .map_err(|e| mlflow_err(&format!("reading logged model {m}"), e))?;
            (info.artifact_uri, String::new())
        }
        None => (run.info.artifact_uri.clone(), artifact_path.clone()),
    };
    let files = client
        .list_artifact_files(&root, &rel, 10_000)
        .map_err(|e| mlflow_err(&format!("listing the files of {source}"), e))?;
    if files.is_empty() {
        return Err(CliError::check(format!(
            "refusing to promote {model}@{alias}: {source} holds no model (MLflow run {run_id} {}); \
             no version was created and the alias was not moved",
            match &logged_model {
                Some(_) => "has a logged model without files".to_owned(),
                None => format!("logged no model and has no files under {artifact_path:?}"),
            }
        ))
        .hint(
            "log the model during training (`tracker.log_model(model_dir, \"model\", step)`, e.g. a \
             directory written by `exptrack_eval::model::save_model_dir`), or pass --artifact-path \
             PATH where the run stored it",
        ));
    }
    if !files
        .iter()
        .any(|f| f.path.rsplit('/').next() == Some("MLmodel"))
    {
        eprintln!(
            "warning: {source} holds {} file(s) but no MLmodel file: MLflow will list the version \
             but cannot load it as an MLflow model",
            files.len()
        );
    }
    client
        .get_or_create_registered_model(model)
        .map_err(|e| mlflow_err(&format!("creating registered model {model:?}"), e))?;
    let version = client
        .create_model_version(model, &source, Some(&run_id), logged_model.as_deref())
        .map_err(|e| mlflow_err(&format!("creating a version of {model:?}"), e))?;
    client
        .set_alias(model, alias, &version.version)
        .map_err(|e| mlflow_err(&format!("setting alias {alias:?}"), e))?;
    // Read back: the alias must point at the new version.
    let check = client
        .get_model_version_by_alias(model, alias)
        .map_err(|e| mlflow_err("reading the alias back", e))?;
    match check {
        Some(v) if v.version == version.version => Ok(version),
        other => Err(CliError::backend(format!(
            "MLflow: alias {alias:?} of {model:?} points at {:?} after setting it to version {}",
            other.map(|v| v.version),
            version.version
        ))),
    }
}
